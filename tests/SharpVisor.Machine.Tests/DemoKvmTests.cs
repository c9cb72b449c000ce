using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// The demo on the KVM engine runs as far as the host's KVM can go. A KVM that runs everything
/// gives PASS demo; this machine's software-assisted nested KVM injects #GP at the guest's
/// SYSRETQ, which the demo recognises and reports in one line with exit status 37. Anything else
/// is a failure.
/// </summary>
public class DemoKvmTests
{
    private const string StopLine = "the hypervisor could not execute SYSRET";

    [Fact]
    public void DemoRunsOrNamesWhatKvmCouldNotRun()
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig
        {
            Engine = EngineKind.Kvm, MemoryBytes = 64UL << 20, KernelPath = GuestTests.RepoFile("guests/demo/demo.bin"),
            Com1Output = new NullSerialBackend(), NoReboot = true,
        };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var r = m.Run(cts.Token);
        string text = console.ToString();
        Assert.Contains("long mode: EFER.LMA=1", text); // what any KVM runs
        if (r.ExitCode == 33)
        {
            Assert.Contains("PASS demo", text);
            return;
        }
        Assert.True(r.ExitCode == 37, text + r.Reason);
        Assert.Contains("STOP demo: #GP at the kernel's own SYSRETQ", text);
        Assert.Contains(StopLine, text);
        Assert.DoesNotContain("FAIL demo", text);
    }

    [Fact]
    public void DemoCommandOnKvmEndsWithOneClearLine()
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");
        var (code, stdout, err) = CliTests.Cli("demo", "--engine", "kvm");
        if (code == 0)
        {
            Assert.Contains("PASS demo", stdout);
            return;
        }
        Assert.True(code == Cli.Program.DemoExitNoSysret, stdout + err);
        Assert.Contains(StopLine, stdout);
        Assert.Contains("sharpvisor: the demo stopped early: the KVM of this host could not execute SYSRETQ", err);
    }
}
