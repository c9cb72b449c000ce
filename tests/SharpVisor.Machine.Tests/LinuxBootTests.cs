using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using SharpVisor.Devices.Serial;
using SharpVisor.Kvm;
using SharpVisor.Machine;
using SharpVisor.Tests.Shared;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// Boots Debian's own kernels (fetched by guests/fetch, cached outside git) with the generated
/// initramfs in its scripted test mode (sharpvisor.test=1) and checks what the guest reports:
/// uname, the CPU count, an md5sum, a shell loop, /proc/interrupts, then poweroff → exit code 0.
/// </summary>
public class LinuxBootTests(ITestOutputHelper output)
{
    /// <summary>The images (tests/Shared/GuestImages.cs: a skip when guests/fetch has not been run, a failure in CI).</summary>
    private static (string Kernel, string Initrd) Images(string arch) => GuestImages.KernelAndInitrd(arch);

    private sealed class Capture : ISerialBackend
    {
        private readonly StringBuilder _text = new();
        public void Write(byte value) { lock (_text) _text.Append((char)value); }
        public override string ToString() { lock (_text) return _text.ToString(); }
    }

    /// <summary>The lines after "=== name" up to the next section marker.</summary>
    internal static string Section(string console, string name)
    {
        var m = Regex.Match(console.Replace("\r", ""), $@"^=== {name}\n(.*?)(?=^===|^SHARPVISOR-TEST-DONE)", RegexOptions.Multiline | RegexOptions.Singleline);
        return m.Success ? m.Groups[1].Value.Trim() : throw new Xunit.Sdk.XunitException($"no '=== {name}' section in the guest output:\n{Tail(console)}");
    }

    private static string Tail(string s) => s.Length > 4000 ? s[^4000..] : s;

    private (MachineResult Result, string Console, TimeSpan Wall) Boot(string arch, EngineKind engine, int cpus, TimeSpan limit, long nsPerInstruction = 0)
    {
        var (kernel, initrd) = Images(arch);
        var serial = new Capture();
        var config = new MachineConfig
        {
            Engine = engine,
            Cpus = cpus,
            MemoryBytes = 256UL << 20,
            KernelPath = kernel,
            InitrdPath = initrd,
            CommandLine = "console=ttyS0 sharpvisor.test=1 panic=-1",
            Com1Output = serial,
            NoReboot = true,
            NsPerInstruction = nsPerInstruction,
        };
        var sw = Stopwatch.StartNew();
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(limit);
        var r = m.Run(cts.Token);
        sw.Stop();
        string text = serial.ToString();
        output.WriteLine($"{arch} on {engine}, {cpus} vCPU(s): exit {r.ExitCode} ({r.Reason}) after {sw.Elapsed.TotalSeconds:F1} s wall clock");
        output.WriteLine(Tail(text));
        return (r, text, sw.Elapsed);
    }

    private static void CheckReport(string text, MachineResult r, string machine, int cpus)
    {
        Assert.True(text.Contains("SHARPVISOR-TEST-DONE"), $"the guest did not finish its test ({r.Reason}):\n{Tail(text)}");
        Assert.Equal(0, r.ExitCode);
        Assert.Matches($@"^6\.\d+\.\d+\S* {machine}$", Section(text, "uname"));
        var counts = Section(text, "cpus").Split('\n', StringSplitOptions.TrimEntries);
        Assert.Equal([cpus.ToString(), cpus.ToString()], counts);
        Assert.Equal("72d4ff27a28afbc066d5804999d5a504", Section(text, "md5"));
        Assert.Equal("499500", Section(text, "loop"));
        // The timer and the serial port interrupt lines have fired (counts are per CPU columns).
        var interrupts = Section(text, "interrupts").Split('\n');
        static long Fired(string line) => Regex.Matches(line.Split(':', 2)[1], @"\b\d+\b").Take(8).Sum(m => long.Parse(m.Value));
        var timer = interrupts.FirstOrDefault(l => Regex.IsMatch(l, @"^\s*(0|LOC):")) ?? "";
        var serial = interrupts.FirstOrDefault(l => Regex.IsMatch(l, @"^\s*4:")) ?? "";
        Assert.True(timer.Length > 0 && Fired(timer) > 0, $"no timer interrupts in /proc/interrupts:\n{string.Join('\n', interrupts)}");
        Assert.True(serial.Length > 0 && Fired(serial) > 0, $"no serial interrupts in /proc/interrupts:\n{string.Join('\n', interrupts)}");
        Assert.DoesNotContain("Kernel panic", text);
        Assert.DoesNotContain("BUG:", text);
        Assert.DoesNotContain("Oops", text);
    }

    [Theory]
    [InlineData("amd64", "x86_64")]
    [InlineData("i386", "i686")]
    public void DebianKernelBootsAndRunsItsTestOnTheSoftwareEngine(string arch, string machine)
    {
        var (r, text, _) = Boot(arch, EngineKind.Software, 1, TimeSpan.FromMinutes(10));
        CheckReport(text, r, machine, 1);
    }

    /// <summary>
    /// -icount shift=0: guest time is the instruction count (1 ns each), RDRAND a seeded stream.
    /// Two boots print the same kernel log, every timestamp included, and the same test report.
    /// </summary>
    [Fact]
    public void DebianKernelBootsTheSameTwiceUnderTheInstructionClock()
    {
        var first = Boot("amd64", EngineKind.Software, 1, TimeSpan.FromMinutes(10), nsPerInstruction: 1);
        CheckReport(first.Console, first.Result, "x86_64", 1);
        var second = Boot("amd64", EngineKind.Software, 1, TimeSpan.FromMinutes(10), nsPerInstruction: 1);
        Assert.Matches(@"\[\s+\d+\.\d{6}\] Linux version 6\.", first.Console);
        Assert.Equal(first.Console, second.Console);
    }

    /// <summary>SMP: the kernel starts the second vCPU with INIT/SIPI and both run its work (locked atomics across host threads).</summary>
    [Fact]
    public void DebianKernelBootsWithTwoCpusOnTheSoftwareEngine()
    {
        var (r, text, _) = Boot("amd64", EngineKind.Software, 2, TimeSpan.FromMinutes(10));
        CheckReport(text, r, "x86_64", 2);
        Assert.Contains("smp: Brought up 1 node, 2 CPUs", text);
    }

    [Fact]
    public void DebianKernelBootsAndRunsItsTestOnKvm()
    {
        if (!KvmEngine.IsAvailable(out var reason)) Assert.Skip($"KVM is not available: {reason}");
        if (!HardwareVirtualization(out reason)) Assert.Skip(reason);
        var (r, text, _) = Boot("amd64", EngineKind.Kvm, 1, TimeSpan.FromMinutes(5));
        CheckReport(text, r, "x86_64", 1);
    }

    /// <summary>
    /// Whether /dev/kvm is backed by VT-x/AMD-V. The CI and development machines here expose a
    /// software-assisted nested KVM (kvm_pvm) that emulates guest code far too slowly to boot Linux
    /// and fails on several instructions Linux needs; only hardware VT-x/AMD-V (vmx/svm) without
    /// the kvm_pvm module counts.
    /// </summary>
    internal static bool HardwareVirtualization(out string reason)
    {
        string flags = File.Exists("/proc/cpuinfo") ? File.ReadAllText("/proc/cpuinfo") : "";
        bool vmx = Regex.IsMatch(flags, @"^flags\s*:.*\b(vmx|svm)\b", RegexOptions.Multiline);
        bool pvm = Directory.Exists("/sys/module/kvm_pvm");
        if (vmx && !pvm) { reason = ""; return true; }
        reason = pvm
            ? "/dev/kvm here is kvm_pvm, a software-assisted nested hypervisor that cannot run Linux at usable speed (no VT-x/AMD-V)"
            : "the host CPU has no VT-x/AMD-V (no vmx/svm flag in /proc/cpuinfo)";
        return false;
    }
}
