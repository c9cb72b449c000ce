// Quick mode (`-- --quick`): every workload once, timed with a Stopwatch after one untimed
// warm-up run (which JIT-compiles the interpreter and fills the decoded-block cache), printed
// as one Markdown table. Meant for docs/performance.md: reproducible in under a minute. The
// BenchmarkDotNet suite measures the same guests with proper statistics.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using SharpVisor.Machine;

namespace SharpVisor.Benchmarks;

internal static class QuickRun
{
    /// <summary>Workload sizes: each timed run takes a few tenths of a second on the 2-core VMs.</summary>
    public const long IntegerIterations = 1_000_000;
    public const int RealModePasses = 20;
    public const int CopyPasses = 8;
    public const int SoftwareExits = 1_000_000;
    public const int KvmExits = 20_000;
    public const int SimdStringPasses = 32;
    public const int HornerPasses = 4;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>
    /// Runs the quick table. <paramref name="only"/> (from `--only TEXT`) keeps the workloads whose
    /// name contains it and repeats each timed run <paramref name="repeat"/> times — for profiling
    /// one workload under perf or dotnet-trace.
    /// </summary>
    public static int Run(string? only = null, int repeat = 1)
    {
        bool Want(string name) => only == null || name.Contains(only, StringComparison.OrdinalIgnoreCase);
        Console.WriteLine($"SharpVisor quick benchmark — {Environment.ProcessorCount} cores, {CpuName()}, " +
                          $".NET {Environment.Version}, {RuntimeInformation.OSDescription}");
        Console.WriteLine();

        if (Want("start-up")) StartUp();
        Workloads(Want, repeat);
        return 0;
    }

    private static void StartUp()
    {
        // Start-up first, while this process has run nothing else: the RSS is the demo's alone.
        var cold = DemoBoot.Run();
        var (rss, peak) = ProcessMemory.Read();
        var warm = Enumerable.Range(0, 5).Select(_ => DemoBoot.Run().Elapsed).Order().ToArray()[2];
        Console.WriteLine("| start-up (demo guest, software engine) | figure |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| first boot in a fresh process (JIT included), Machine constructor → guest done | {Ms(cold.Elapsed)} |");
        Console.WriteLine($"| later boots in the same process (median of 5) | {Ms(warm)} |");
        Console.WriteLine($"| guest instructions / exits per boot | {N(cold.GuestInstructions)} / {N(cold.Exits)} |");
        Console.WriteLine($"| process RSS after the first boot (peak) | {Mib(rss)} ({Mib(peak)}) |");
        if (Kvm.KvmEngine.IsAvailable(out _))
        {
            try
            {
                DemoBoot.Run(EngineKind.Kvm);
                var kvm = Enumerable.Range(0, 5).Select(_ => DemoBoot.Run(EngineKind.Kvm).Elapsed).Order().ToArray()[2];
                Console.WriteLine($"| same on the KVM engine, later boots (median of 5) | {Ms(kvm)} |");
            }
            catch (InvalidOperationException e)
            {
                Console.WriteLine($"| same on the KVM engine | not measured: {e.Message} |");
            }
        }
        Console.WriteLine();
    }

    private static void Workloads(Func<string, bool> want, int repeat)
    {
        Console.WriteLine("| workload | guest instructions | wall time | guest instructions/s | per CPU-second | per unit |");
        Console.WriteLine("|---|---:|---:|---:|---:|---|");
        if (want("integer 64")) Row(SoftwareGuest.Integer64(IntegerIterations), repeat);
        if (want("integer 32")) Row(SoftwareGuest.Integer32(IntegerIterations), repeat);
        if (want("integer 16")) Row(SoftwareGuest.Integer16(RealModePasses), repeat);
        if (want("mov loop")) Row(SoftwareGuest.MovLoop64(CopyPasses), repeat, bytes: (long)CopyPasses * Layout.CopyBytes);
        if (want("rep movsb")) Row(SoftwareGuest.RepMovsb64(CopyPasses * 4), repeat);
        if (want("exit software")) Row(SoftwareGuest.OutLoop(SoftwareExits), repeat);
        if (want("sse2 strlen")) Row(SoftwareGuest.Strlen64(SimdStringPasses), repeat);
        if (want("sse2 memcmp")) Row(SoftwareGuest.Memcmp64(SimdStringPasses), repeat);
        if (want("sse2 memcpy")) Row(SoftwareGuest.Memcpy64(SimdStringPasses), repeat);
        TimeSpan? x87 = want("x87 float80 horner") ? Row(SoftwareGuest.HornerX87(HornerPasses), repeat) : null;
        TimeSpan? sse = want("sse2 double horner") ? Row(SoftwareGuest.HornerSse(HornerPasses), repeat) : null;
        if (x87 is { } x && sse is { } d)
            Console.WriteLine($"| x87 float80 ÷ SSE2 scalar double, same instruction count per element | | | | | {(x / d).ToString("F2", Inv)}× the time (fastest runs, CPU time where measurable) |");
        if (!want("exit kvm")) return;
        using (var kvm = KvmGuest.TryCreate(KvmExits, out string whyNot))
        {
            if (kvm == null) Console.WriteLine($"| OUT exit round trip (KVM) | skipped: {whyNot} | | | | |");
            else
            {
                kvm.Run(); // warm-up
                for (int k = 0; k < repeat; k++)
                {
                    // CPU time of this thread excludes the time spent in the guest and in KVM_RUN's
                    // kernel side only partly (the kernel's work is on this thread), so the wall
                    // rate is the one to quote.
                    var sw = Stopwatch.StartNew();
                    int exits = kvm.Run();
                    sw.Stop();
                    long n = exits * 3L + 2;
                    Console.WriteLine($"| OUT exit round trip (KVM) | {N(n)} | {Sec(sw.Elapsed)} | {Rate(n, sw.Elapsed)} | | {Rate(exits, sw.Elapsed)} exits/s, {Micro(sw.Elapsed, exits)} per exit |");
                }
            }
        }
    }

    /// <summary>Prints one row per timed run; returns the fastest run's time (CPU time where measurable, else wall).</summary>
    private static TimeSpan Row(SoftwareGuest g, int repeat, long bytes = 0)
    {
        using (g)
        {
            g.Run(); // warm-up (the guest already ran once to verify its instruction count)
            var best = TimeSpan.MaxValue;
            for (int k = 0; k < repeat; k++)
            {
                var t = Timed(g, bytes == 0 ? g.BytesPerRun : bytes);
                g.CheckResult(); // untimed: a run that computed a wrong value must not be reported
                if (t < best) best = t;
            }
            return best;
        }
    }

    private static TimeSpan Timed(SoftwareGuest g, long bytes)
    {
        {
            var cpu0 = ThreadCpuTime.Now();
            var sw = Stopwatch.StartNew();
            long n = g.Run();
            sw.Stop();
            var cpu = ThreadCpuTime.Now() - cpu0;
            string per = g.Unit switch
            {
                Unit.Byte => $"{(sw.Elapsed.TotalNanoseconds / g.UnitsPerRun).ToString("F1", Inv)} ns per byte (the engine retires REP MOVSB once per 4 KiB chunk)",
                Unit.Exit => $"{Rate(g.UnitsPerRun, sw.Elapsed)} exits/s, {Micro(sw.Elapsed, g.UnitsPerRun)} per exit",
                _ when bytes > 0 => $"{Rate(bytes, sw.Elapsed)} bytes/s" + PerCpu(bytes, cpu, " bytes"),
                _ when g.FlopsPerRun > 0 => $"{Rate(g.FlopsPerRun, sw.Elapsed)} FLOP/s" + PerCpu(g.FlopsPerRun, cpu, " FLOP") +
                                            $", {(sw.Elapsed.TotalNanoseconds / n).ToString("F1", Inv)} ns per instruction",
                _ => $"{(sw.Elapsed.TotalNanoseconds / n).ToString("F1", Inv)} ns per instruction",
            };
            long counted = g.Unit == Unit.Byte ? g.UnitsPerRun : n;
            string rate = g.Unit == Unit.Byte ? $"{Rate(counted, sw.Elapsed)} bytes/s" : Rate(counted, sw.Elapsed);
            string cpuRate = cpu is { } c && c > TimeSpan.Zero ? Rate(counted, c) + (g.Unit == Unit.Byte ? " bytes/s" : "") : "?";
            Console.WriteLine($"| {g.Name} | {N(n)} | {Sec(sw.Elapsed)} | {rate} | {cpuRate} | {per} |");
            // On a loaded machine the wall time includes waiting for a core; the thread's CPU time does not.
            return cpu is { } used && used > TimeSpan.Zero ? used : sw.Elapsed;
        }
    }

    private static string PerCpu(long n, TimeSpan? cpu, string unit) =>
        cpu is { } c && c > TimeSpan.Zero ? $" ({Rate(n, c)}{unit} per CPU-second)" : "";

    private static string N(long n) => n.ToString("N0", Inv);
    private static string Ms(TimeSpan t) => $"{t.TotalMilliseconds.ToString("F0", Inv)} ms";
    private static string Sec(TimeSpan t) => $"{t.TotalSeconds.ToString("F3", Inv)} s";
    private static string Mib(long b) => b < 0 ? "?" : $"{(b / 1048576.0).ToString("F0", Inv)} MiB";
    private static string Micro(TimeSpan t, long n) => $"{(t.TotalNanoseconds / n / 1000).ToString("F2", Inv)} µs";

    private static string Rate(long n, TimeSpan t)
    {
        double r = n / t.TotalSeconds;
        return r >= 1e6 ? $"{(r / 1e6).ToString("F1", Inv)} M" : $"{(r / 1e3).ToString("F1", Inv)} k";
    }

    private static string CpuName()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}
