// Machine start-up: the whole machine (devices, ACPI tables, loader, engine) built around the
// demo guest that `sharpvisor demo` runs (guests/demo/demo.bin, embedded here as in the CLI),
// timed from the Machine constructor to the guest's report on the debug-exit port.
using System.Diagnostics;
using SharpVisor.Devices.Serial;
using SharpVisor.Machine;

namespace SharpVisor.Benchmarks;

internal static class DemoBoot
{
    /// <summary>The demo reports success by writing 0x10 to isa-debug-exit: (0x10 &lt;&lt; 1) | 1.</summary>
    public const int SuccessExitCode = 33;

    private static readonly Lazy<byte[]> s_image = new(() =>
    {
        using var s = typeof(DemoBoot).Assembly.GetManifestResourceStream("demo.bin")
            ?? throw new InvalidOperationException("demo.bin is not embedded in this build");
        var image = new byte[s.Length];
        s.ReadExactly(image);
        return image;
    });

    public readonly record struct Result(TimeSpan Elapsed, long GuestInstructions, long Exits);

    /// <summary>Builds a machine around the demo, runs it to completion and checks that it passed.</summary>
    public static Result Run(EngineKind engine = EngineKind.Software)
    {
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig
        {
            Engine = engine,
            MemoryBytes = 64UL << 20,
            KernelImage = s_image.Value,
            KernelName = "built-in demo",
            DebugConsoleOutput = b => { lock (console) console.Append((char)b); },
            Com1Output = new NullSerialBackend(),
        };
        var sw = Stopwatch.StartNew();
        MachineResult result;
        string stats;
        using (var machine = new Machine.Machine(config))
        {
            result = machine.Run();
            sw.Stop();
            stats = machine.StatisticsTable();
        }
        if (result.ExitCode != SuccessExitCode)
        {
            string text = console.ToString().TrimEnd();
            string last = text[(text.LastIndexOf('\n') + 1)..];
            throw new InvalidOperationException($"demo guest did not pass on the {engine} engine: exit code {result.ExitCode}; last line: {last}");
        }
        return new Result(sw.Elapsed, StatisticValue(stats, "instructions"), ExitTotal(stats));
    }

    /// <summary>Reads one "  name   value" line of Machine.StatisticsTable (the vCPU counters); -1 if absent.</summary>
    private static long StatisticValue(string table, string name)
    {
        foreach (var line in table.Split('\n'))
        {
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && parts[0] == name && long.TryParse(parts[1], out long v)) return v;
        }
        return -1;
    }

    /// <summary>Sum of the "exits by reason" section.</summary>
    private static long ExitTotal(string table)
    {
        long total = 0;
        bool inExits = false;
        foreach (var line in table.Split('\n'))
        {
            if (line.StartsWith("exits by reason", StringComparison.Ordinal)) { inExits = true; continue; }
            if (!inExits) continue;
            if (!line.StartsWith(' ')) break;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && long.TryParse(parts[1], out long v)) total += v;
        }
        return total;
    }
}

/// <summary>This process's resident memory, from /proc/self/status (Linux) or the runtime.</summary>
internal static class ProcessMemory
{
    /// <summary>(current RSS, peak RSS) in bytes; the peak is -1 where the OS does not say.</summary>
    public static (long Rss, long Peak) Read()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
        {
            long rss = -1, peak = -1;
            foreach (var line in File.ReadLines(status))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = KiB(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) peak = KiB(line);
            }
            if (rss >= 0) return (rss, peak);
        }
        using var p = Process.GetCurrentProcess();
        return (p.WorkingSet64, p.PeakWorkingSet64);
    }

    private static long KiB(string line)
    {
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
    }
}
