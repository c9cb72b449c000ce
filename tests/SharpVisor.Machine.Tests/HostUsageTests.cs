using System.Globalization;
using System.Text.RegularExpressions;
using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>The --stats lines on the VMM's own cost: start-up time and resident memory split by owner.</summary>
public class HostUsageTests
{
    /// <summary>
    /// ./sharpvisor may build for seconds and then exec the VMM in the same process, whose kernel
    /// start time is then the script's: the launcher passes the exec moment (SHARPVISOR_EXEC_MS),
    /// and the start is taken from it only when it lies between that start time and now.
    /// </summary>
    [Theory]
    [InlineData("1700000030000", 30)]      // after the process start, before now: the exec moment
    [InlineData("1700000000000", 0)]       // at the process start: not after it, ignored
    [InlineData("1699999990000", 0)]       // before the process start: ignored
    [InlineData("1700000070000", 0)]       // after now: ignored
    [InlineData("soon", 0)]
    [InlineData("-5", 0)]
    [InlineData("99999999999999999", 0)]   // beyond DateTimeOffset's range
    [InlineData(null, 0)]
    public void StartIsTheLaunchersExecWhenItIsPlausible(string? execMs, int secondsAfterProcessStart)
    {
        var start = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000).UtcDateTime;
        var now = start.AddSeconds(60);
        Assert.Equal(start.AddSeconds(secondsAfterProcessStart), HostUsage.Start(start, now, execMs));
    }

    [Fact]
    public void StatsSplitResidentMemoryIntoGuestRamAndTheVmm()
    {
        if (!File.Exists("/proc/self/smaps")) Assert.Skip("no procfs on this host");
        string kernel = GuestTests.RepoFile("guests/demo/demo.bin");
        var config = new MachineConfig
        {
            Engine = EngineKind.Software, MemoryBytes = 64UL << 20, KernelPath = kernel,
            Com1Output = new NullSerialBackend(), DebugConsoleOutput = _ => { },
        };
        using var m = new Machine(config);
        Assert.Equal(33, m.Run(TestContext.Current.CancellationToken).ExitCode);
        string table = m.StatisticsTable();

        var res = Regex.Match(table, @"host: resident ([\d.]+) MiB = guest RAM touched ([\d.]+) MiB \+ VMM ([\d.]+) MiB");
        Assert.True(res.Success, table);
        double total = double.Parse(res.Groups[1].Value, CultureInfo.InvariantCulture);
        double guest = double.Parse(res.Groups[2].Value, CultureInfo.InvariantCulture);
        double vmm = double.Parse(res.Groups[3].Value, CultureInfo.InvariantCulture);
        // The loader wrote the whole image into guest RAM, so at least that much of it is resident;
        // the 64 MiB mapping is mostly untouched (MAP_NORESERVE, demand-zero pages).
        double image = new FileInfo(kernel).Length / 1048576.0;
        Assert.InRange(guest, image - 0.05, 32);
        Assert.True(vmm > 5, table); // a .NET process with the JIT and the engine loaded
        Assert.InRange(total - guest - vmm, -0.15, 0.15); // the three figures add up (rounding)

        var first = Regex.Match(table, @"host: first guest instruction (\d+) ms after process start");
        Assert.True(first.Success, table);
        Assert.True(long.Parse(first.Groups[1].Value, CultureInfo.InvariantCulture) >= 0, table);
    }
}
