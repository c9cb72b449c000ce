using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// Guest resets follow QEMU: by default port 0xCF9, the keyboard controller's 0xFE command and a
/// triple fault reboot the machine (vCPUs at reset, devices at power-on, the image loaded again,
/// CMOS kept); with -no-reboot (<see cref="MachineConfig.NoReboot"/>) a reset ends the VM.
/// </summary>
public class ResetTests
{
    private static (MachineResult Result, string Console, List<string> Notices, int Resets) Boot(string guest, bool noReboot, EngineKind engine = EngineKind.Software)
    {
        var console = new System.Text.StringBuilder();
        var notices = new List<string>();
        var config = new MachineConfig
        {
            Engine = engine, MemoryBytes = 64UL << 20, KernelPath = GuestTests.RepoFile($"guests/test/{guest}.bin"),
            NoReboot = noReboot, Com1Output = new NullSerialBackend(),
        };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        config.Notice = n => { lock (notices) notices.Add(n); };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        return (r, console.ToString(), notices, m.Resets);
    }

    [Fact]
    public void EachResetRebootsTheMachineAndCmosSurvives()
    {
        var (r, text, notices, resets) = Boot("reset", noReboot: false);
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Contains("reset: boot 4: marker 0xA7 survived the triple fault", text);
        Assert.Contains("PASS reset", text);
        Assert.Equal(3, resets);
        Assert.Equal(3, notices.Count);
        Assert.Contains("port 0xCF9", notices[0]);
        Assert.Contains("keyboard controller", notices[1]);
        Assert.Contains("triple fault", notices[2]);
    }

    [Fact]
    public void WithNoRebootAResetRequestEndsTheVmWithZero()
    {
        var (r, text, notices, resets) = Boot("reset", noReboot: true);
        Assert.Equal(ExitCodes.Reset, r.ExitCode);
        Assert.Equal(0, r.ExitCode); // QEMU -no-reboot exits 0 on a reset request
        Assert.Contains("port 0xCF9", r.Reason);
        Assert.Contains("reset: resetting through port 0xCF9", text);
        Assert.DoesNotContain("boot 2", text);
        Assert.Empty(notices);
        Assert.Equal(0, resets);
    }

    [Fact]
    public void WithNoRebootATripleFaultEndsTheVmWithItsExitCode()
    {
        var (r, text, notices, _) = Boot("triplefault", noReboot: true);
        Assert.Contains("TRIPLE-FAULT-NEXT", text);
        Assert.Equal(ExitCodes.TripleFault, r.ExitCode);
        Assert.Contains("triple fault", r.Reason);
        Assert.Empty(notices);
    }

    [Fact]
    public void AGuestThatTripleFaultsOnEveryBootIsStoppedAfterAFewResets()
    {
        var (r, text, notices, resets) = Boot("triplefault", noReboot: false);
        Assert.Equal(ExitCodes.TripleFault, r.ExitCode);
        Assert.Contains("reset loop", r.Reason);
        // Each boot ran the guest again from the start.
        int boots = text.Split("TRIPLE-FAULT-NEXT").Length - 1;
        Assert.Equal(Machine.MaxQuickTripleFaults, boots);
        Assert.Equal(Machine.MaxQuickTripleFaults - 1, resets);
        Assert.Equal(Machine.MaxQuickTripleFaults - 1, notices.Count); // the last one stops instead
        Assert.All(notices, n => Assert.StartsWith("guest reset (vCPU 0: triple fault", n));
    }

    [Fact]
    public void ResetRebootsOnKvm()
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");
        var (r, text, _, resets) = Boot("reset", noReboot: false, EngineKind.Kvm);
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Equal(3, resets);
    }
}
