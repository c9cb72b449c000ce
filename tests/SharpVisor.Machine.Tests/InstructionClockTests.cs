using System.Globalization;
using System.Text.RegularExpressions;
using SharpVisor.Core;
using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// The instruction-count clock (-icount shift=N, QEMU's spelling): guest time is instructions ×
/// 2^N ns, so a guest sees the same timer interrupts at the same instructions in every run.
/// guests/test/icount.asm counts loop iterations (3 instructions each) between PIT interrupts
/// 1193 input clocks apart (1193 / 1.193182 MHz = 999,847 ns) and the TSC across them.
/// </summary>
public class InstructionClockTests
{
    private const double PitPeriodNs = 1193 / 1.193182e6 * 1e9;
    /// <summary>The TSC rate this machine's CPUID leaf 0x15 advertises (the TSC counts the machine clock).</summary>
    private const double TscPerNs = 2.0;

    private static (int Code, string Console) Run(long nsPerInstruction, int cpus = 1, EngineKind engine = EngineKind.Software)
    {
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig
        {
            Engine = engine, Cpus = cpus, MemoryBytes = 16UL << 20, NsPerInstruction = nsPerInstruction,
            KernelPath = GuestTests.RepoFile("guests/test/icount.bin"), Com1Output = new NullSerialBackend(),
        };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        using var m = new Machine(config);
        var r = m.Run(TestContext.Current.CancellationToken);
        return (r.ExitCode, console.ToString());
    }

    private static long[] Intervals(string text) =>
        Regex.Matches(text, @"interval \d+: (\d+) iterations").Select(x => long.Parse(x.Groups[1].Value, CultureInfo.InvariantCulture)).ToArray();

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void EveryRunSeesTheSameTicksAtTheSameInstructions(long ns)
    {
        var first = Run(ns);
        var second = Run(ns);
        Assert.True(first.Code == 33, first.Console);
        Assert.Equal(first.Console, second.Console); // every count and the TSC, to the instruction

        // Between two ticks: the loop's iterations × 3 instructions, plus the handler's few, make
        // one PIT period of instructions (the vCPU stops at the first block boundary past the
        // deadline, so a tick is at most a block late, the same block every time).
        var counts = Intervals(first.Console);
        Assert.Equal(7, counts.Length);
        foreach (long c in counts.Skip(1))
            Assert.InRange(c * 3 * ns, PitPeriodNs - 40 * ns, PitPeriodNs);

        var tsc = Regex.Match(first.Console, @"tsc: 0x([0-9A-F]{8}) over 7 intervals");
        Assert.True(tsc.Success, first.Console);
        double ticks = long.Parse(tsc.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        Assert.InRange(ticks, 7 * PitPeriodNs * TscPerNs * 0.9999, 7 * PitPeriodNs * TscPerNs * 1.0001);
    }

    [Fact]
    public void HostTimeStillRunsTheGuest()
    {
        var (code, text) = Run(0);
        Assert.True(code == 33, text);
        Assert.Equal(7, Intervals(text).Length);
    }

    [Theory]
    [InlineData(2, EngineKind.Software, "the instruction-count clock needs one vCPU (--cpus 1): several vCPU threads interleave differently in every run")]
    [InlineData(1, EngineKind.Kvm, "the instruction-count clock needs the software engine")]
    public void OnlyOneSoftwareVcpuCanCountTime(int cpus, EngineKind engine, string message)
    {
        var e = Assert.Throws<ConfigurationException>(() => Run(1, cpus, engine));
        Assert.Equal(message, e.Message);
    }

    [Theory]
    [InlineData("shift=auto")]
    [InlineData("11")]
    [InlineData("-1")]
    public void BadIcountIsOneLineAndExitCode2(string value)
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", GuestTests.RepoFile("guests/test/icount.bin"), "-icount", value);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Equal($"sharpvisor: bad -icount '{value}' (use shift=N with N from 0 to 10: 2^N ns per instruction)", err.Trim());
    }
}
