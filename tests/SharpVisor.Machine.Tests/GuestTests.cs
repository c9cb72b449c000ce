using SharpVisor.Core;
using SharpVisor.Devices.Serial;
using SharpVisor.Machine;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// Boots the repository's test guests (guests/, nasm sources beside the binaries) through the
/// whole machine and checks what they report on the debug console and the exit port.
/// </summary>
public class GuestTests
{
    internal static string RepoFile(string relative)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "SharpVisor.slnx"))) dir = dir.Parent;
        if (dir == null) throw new InvalidOperationException("repository root not found");
        return Path.Combine(dir.FullName, relative);
    }

    internal static (MachineResult Result, string Console) Boot(string kernel, EngineKind engine = EngineKind.Software, ulong memory = 64UL << 20)
    {
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig { Engine = engine, MemoryBytes = memory, KernelPath = kernel };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        config.Com1Output = new NullSerialBackend();
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        return (r, console.ToString());
    }

    [Fact]
    public void DemoGuestRunsEveryStepOnTheSoftwareEngine()
    {
        var (r, text) = Boot(RepoFile("guests/demo/demo.bin"));
        Assert.Equal(33, r.ExitCode);
        Assert.Contains("real mode: the handler returned AX=BEEF", text);
        Assert.Contains("ring 3: SMSW -> 0x00000011", text);
        Assert.Contains("error=0x00000006 (write by user, not present)", text);
        Assert.Contains("PASS demo", text);
    }

    /// <summary>
    /// --stats counts the local APIC's MMIO, which the machine routes beside the MMIO bus (by the
    /// exiting vCPU). tpr.asm makes 12 APIC accesses: SVR read and write; TPR read, write, read;
    /// ICR high and low writes; PPR read; in the handler PPR read and EOI write; TPR and PPR reads.
    /// </summary>
    [Fact]
    public void StatisticsCountTheLocalApicsMmio()
    {
        var config = new MachineConfig { MemoryBytes = 64UL << 20, KernelPath = RepoFile("guests/test/tpr.bin"), Com1Output = new NullSerialBackend() };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        Assert.True(r.ExitCode == 33, r.Reason);
        Assert.Matches(@"MMIO by device:\n  lapic +12\n", m.StatisticsTable());
    }

    /// <summary>System test guests that check their results against the SDM and report PASS.</summary>
    [Theory]
    [InlineData("modes")]
    [InlineData("paging")]
    [InlineData("sensitive")]
    [InlineData("rings")]
    [InlineData("exceptions")]
    [InlineData("taskswitch")]
    [InlineData("tpr")]
    [InlineData("vm86")]
    public void SystemTestGuestPasses(string name)
    {
        var (r, text) = Boot(RepoFile($"guests/test/{name}.bin"));
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Contains($"PASS {name}", text);
    }

    [Fact]
    public void TripleFaultEndsTheVmWithItsOwnExitCode()
    {
        var (r, text) = Boot(RepoFile("guests/test/triplefault.bin"));
        Assert.Contains("TRIPLE-FAULT-NEXT", text);
        Assert.Equal(ExitCodes.TripleFault, r.ExitCode);
        Assert.Contains("triple fault", r.Reason);
    }

    [Fact]
    public void MissingKernelIsOneClearError()
    {
        var e = Assert.Throws<ConfigurationException>(() => Boot("/nonexistent/vmlinuz"));
        Assert.Equal("kernel file not found: /nonexistent/vmlinuz", e.Message);
    }

    [Fact]
    public void CorruptKernelIsOneClearError()
    {
        string path = Path.GetTempFileName();
        File.WriteAllBytes(path, new byte[4096]);
        try
        {
            var e = Assert.ThrowsAny<VmmException>(() => Boot(path));
            Assert.DoesNotContain("\n", e.Message);
            Assert.Contains(path, e.Message);
        }
        finally { File.Delete(path); }
    }
}
