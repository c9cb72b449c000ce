using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// One end-to-end test per loader through the real sharpvisor binary: a Multiboot a.out-kludge
/// kernel, a Multiboot ELF kernel (guests/test/mbelf.asm) and a bzImage (guests/test/bzimage.asm),
/// each booted with `sharpvisor run`, its console output and exit code checked. Also resets and
/// SMP as a user meets them on the command line.
/// </summary>
public class LoaderCliTests
{
    private static string Guest(string name) => GuestTests.RepoFile($"guests/test/{name}.bin");

    [Fact]
    public void MultibootAoutKludgeKernelBoots()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("modes"), "--memory", "64M");
        Assert.True(code == 33, stdout + err);
        Assert.Contains("PASS modes", stdout);
        Assert.Contains("sharpvisor: guest wrote to the debug-exit port: exit code 33", err);
    }

    [Fact]
    public void MultibootElfKernelBootsWithItsCommandLine()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("mbelf"), "--append", "hello elf", "-m", "64");
        Assert.True(code == 33, stdout + err);
        Assert.Contains("multiboot ELF: entered from the ELF e_entry, EAX=0x2BADB002", stdout);
        Assert.Contains("multiboot ELF: command line \"hello elf\"", stdout);
        Assert.Contains("PASS mbelf", stdout);
    }

    [Fact]
    public void BzImageBootsAtTheSixtyFourBitEntry()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("bzimage"), "--append", "console=ttyS0 quiet", "-m", "64");
        Assert.True(code == 33, stdout + err);
        Assert.Contains("bzimage: startup_64 reached in long mode (64-bit boot protocol)", stdout);
        Assert.Contains("bzimage: command line \"console=ttyS0 quiet\"", stdout);
        Assert.Contains("PASS bzimage", stdout);
        Assert.DoesNotContain("setup code ran", stdout);
    }

    [Fact]
    public void ResetsRebootAndAreReportedOnStderr()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("reset"), "-m", "64");
        Assert.True(code == 33, stdout + err);
        Assert.Contains("PASS reset", stdout);
        Assert.Contains("sharpvisor: guest reset (reset control register, port 0xCF9)", err);
        Assert.Contains("sharpvisor: guest reset (keyboard controller reset command 0xFE)", err);
        Assert.Contains("sharpvisor: guest reset (vCPU 0: triple fault", err);
    }

    [Fact]
    public void NoRebootEndsTheVmAtTheFirstReset()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("reset"), "-m", "64", "-no-reboot");
        Assert.Equal(0, code);
        Assert.Contains("reset: resetting through port 0xCF9", stdout);
        Assert.DoesNotContain("boot 2", stdout);
        Assert.Contains("sharpvisor: guest requested a reset (reset control register, port 0xCF9)", err);
    }

    [Fact]
    public void TripleFaultWithNoRebootExitsFour()
    {
        var (code, stdout, err) = CliTests.Cli("-kernel", Guest("triplefault"), "-m", "64", "-no-reboot");
        Assert.Equal(4, code);
        Assert.Contains("TRIPLE-FAULT-NEXT", stdout);
        Assert.Contains("triple fault", err);
        Assert.DoesNotContain("guest reset", err);
    }

    [Fact]
    public void CpusStartsEveryProcessor()
    {
        var (code, stdout, err) = CliTests.Cli("run", "--kernel", Guest("smp"), "-m", "64", "--cpus", "4");
        Assert.True(code == 33, stdout + err);
        Assert.Contains("smp: 3 application processors incremented the counter", stdout);
    }
}

/// <summary>The loader test guests on the KVM engine (plain guests: port I/O, VMM-built page tables).</summary>
public class LoaderKvmTests
{
    [Theory]
    [InlineData("bzimage", "PASS bzimage")]
    [InlineData("mbelf", "PASS mbelf")]
    public void LoaderGuestRunsOnKvm(string guest, string marker)
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");
        var serial = new CollectingSerial();
        var config = new MachineConfig
        {
            Engine = EngineKind.Kvm, MemoryBytes = 64UL << 20, KernelPath = GuestTests.RepoFile($"guests/test/{guest}.bin"),
            CommandLine = "on kvm", Com1Output = serial, NoReboot = true,
        };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var r = m.Run(cts.Token);
        Assert.True(r.ExitCode == 33, serial.Text + r.Reason);
        Assert.Contains(marker, serial.Text);
        Assert.Contains("command line \"on kvm\"", serial.Text);
    }

    private sealed class CollectingSerial : ISerialBackend
    {
        private readonly System.Text.StringBuilder _text = new();
        public string Text { get { lock (_text) return _text.ToString(); } }
        public void Write(byte value) { lock (_text) _text.Append((char)value); }
    }
}
