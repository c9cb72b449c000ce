using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// The four PC serial ports through the whole machine (guests/test/uarts.asm): COM1–COM4 at 0x3F8,
/// 0x2F8, 0x3E8, 0x2E8 are four 16550As that Linux's probe recognises, COM3 shares IRQ4 with COM1
/// and COM4 shares IRQ3 with COM2 as a wired OR through the 8259A, and a reset leaves no level that
/// the old board's UARTs held on a shared line.
/// </summary>
public class SerialPortsTests
{
    /// <summary>
    /// Everything the guest prints, in order. Three lines are where SharpVisor and QEMU 7.2 differ on
    /// purpose (the guest prints them instead of checking, so that it passes under QEMU too):
    /// OUT2 gates a UART's IRQ as on a PC card (QEMU: "interrupt"), and a shared line is a wired OR
    /// (QEMU: the last UART to change its level wins, "a new interrupt" and "low").
    /// </summary>
    private const string ExpectedReport =
        "COM1: 16550A\n" +
        "COM2: 16550A\n" +
        "COM3: 16550A\n" +
        "COM4: 16550A\n" +
        "IRQ4 from COM3 with OUT2 off: none\n" +
        "IRQ4: COM3 interrupts, COM1 quiet\n" +
        "IRQ4: COM1 interrupts, COM3 quiet\n" +
        "IRQ4 after COM1 raised the line COM3 held: no new interrupt\n" +
        "IRQ4 with COM3 serviced and COM1 pending: high\n" +
        "IRQ3: COM4 interrupts, COM2 quiet\n" +
        "IRQ3: COM2 interrupts, COM4 quiet\n" +
        "resetting with COM3 and COM4 asserting IRQ4 and IRQ3\n" +
        "boot 2\n" +
        "boot 2: COM1 and COM2 interrupt on IRQ4 and IRQ3\n" +
        "PASS uarts\n";

    private static (MachineResult Result, string Console, string Stats, int Resets) Run(EngineKind engine)
    {
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig
        {
            Engine = engine, MemoryBytes = 64UL << 20, KernelPath = GuestTests.RepoFile("guests/test/uarts.bin"),
            Com1Output = new NullSerialBackend(),
        };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        lock (console) return (r, console.ToString(), m.StatisticsTable(), m.Resets);
    }

    [Fact]
    public void FourUartsShareTwoIsaLinesOnTheSoftwareEngine()
    {
        var (r, text, stats, resets) = Run(EngineKind.Software);
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Equal(ExpectedReport, text);
        Assert.Equal(1, resets);
        // --stats names each port's device.
        foreach (var name in new[] { "com1", "com2", "com3", "com4" }) Assert.Contains(name, stats);
    }

    [Fact]
    public void FourUartsShareTwoIsaLinesOnKvm()
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");
        var (r, text, _, resets) = Run(EngineKind.Kvm);
        // This host's software-assisted KVM (kvm_pvm) fails to emulate the IRET that ends the
        // guest's first interrupt handler (KVM_EXIT_INTERNAL_ERROR; CrossEngineGuestTests lists the
        // same for the exceptions guest). Only there, and only after a correct report so far, skip.
        if (r.ExitCode != 33 && r.Reason.Contains("KVM_EXIT_INTERNAL_ERROR", StringComparison.Ordinal)
            && !LinuxBootTests.HardwareVirtualization(out string software))
        {
            Assert.True(ExpectedReport.StartsWith(text, StringComparison.Ordinal), text + r.Reason);
            Assert.Skip($"the KVM engine stopped: {r.Reason} ({software})");
        }
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Equal(ExpectedReport, text);
        Assert.Equal(1, resets);
    }
}
