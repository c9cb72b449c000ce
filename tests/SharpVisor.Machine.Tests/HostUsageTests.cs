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
    /// start time is then the script's: the launcher passes the exec moment, and --stats counts
    /// from it. Here a shell waits 3 s before the exec, as a build would.
    /// </summary>
    [Fact]
    public void FirstInstructionTimeCountsFromTheLaunchersExec()
    {
        if (!File.Exists("/proc/self/stat")) Assert.Skip("no procfs on this host");
        string dll = Path.Combine(AppContext.BaseDirectory, "sharpvisor.dll");
        var psi = new System.Diagnostics.ProcessStartInfo("bash") { RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in new[] { "-c", "sleep 3; SHARPVISOR_EXEC_MS=\"$(date +%s%3N)\" exec dotnet \"$0\" run --stats --kernel \"$1\"",
                                  dll, GuestTests.RepoFile("guests/test/tpr.bin") })
            psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        p.StandardInput.Close();
        string stderr = p.StandardError.ReadToEnd(); // --stats goes to stderr
        Assert.True(p.WaitForExit(120_000));
        var first = Regex.Match(stderr, @"host: first guest instruction (\d+) ms after process start");
        Assert.True(first.Success, stderr);
        Assert.InRange(int.Parse(first.Groups[1].Value, CultureInfo.InvariantCulture), 0, 2_999);
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
        Assert.InRange(int.Parse(first.Groups[1].Value, CultureInfo.InvariantCulture), 0, (int)Environment.TickCount64);
    }
}
