using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Isa;
using SharpVisor.Devices.Pic;
using SharpVisor.Devices.Serial;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// ISA IRQ lines shared by several devices (COM1/COM3 on IRQ4, COM2/COM4 on IRQ3): the line is the
/// wired OR of its inputs, edge-triggered consumers see an edge only when the whole line rises, and a
/// rebuilt board leaves no stale level behind.
/// </summary>
public sealed class IsaIrqLinesTests
{
    /// <summary>What the controller side sees: every level it is told, and the rising edges.</summary>
    private sealed class Recorder : IIrqLine
    {
        public readonly List<bool> Calls = new();
        public bool Level { get; private set; }
        public int RisingEdges { get; private set; }
        public void SetLevel(bool high)
        {
            Calls.Add(high);
            if (high && !Level) RisingEdges++;
            Level = high;
        }
    }

    [Fact]
    public void LineStaysHighWhileAnyInputIsHigh()
    {
        var output = new Recorder();
        var line = new SharedIrqLine(output);
        var com1 = line.Connect();
        var com3 = line.Connect();

        com3.SetLevel(true);
        Assert.True(line.Level);
        com1.SetLevel(true);
        Assert.Equal(2, line.HighInputs);
        // One drops while the other is high: the line stays up.
        com3.SetLevel(false);
        Assert.True(line.Level);
        Assert.True(output.Level);
        com1.SetLevel(false);
        Assert.False(line.Level);
        Assert.False(output.Level);
        // The controller was told only the line's two changes, not the four device writes.
        Assert.Equal([true, false], output.Calls);
    }

    [Fact]
    public void EdgeConsumerSeesAnEdgeOnlyWhenTheWholeLineRises()
    {
        var output = new Recorder();
        var line = new SharedIrqLine(output);
        var a = line.Connect();
        var b = line.Connect();

        a.SetLevel(true);                   // edge 1
        b.SetLevel(true);                   // line already high: no edge
        b.Pulse();                          // a pulse under a held line is no edge either
        a.SetLevel(false);                  // b still holds the line
        b.SetLevel(false);                  // line falls
        b.SetLevel(true);                   // edge 2
        b.SetLevel(true);                   // repeated level: nothing
        b.SetLevel(false);
        a.Pulse();                          // edge 3: a pulse on a quiet line

        Assert.Equal(3, output.RisingEdges);
        Assert.Equal([true, false, true, false, true, false], output.Calls);
    }

    /// <summary>
    /// Two real UARTs on one line into a real 8259A: the PC16550D's OUT2-gated INTRPT of each UART
    /// is one input; the 8259A (edge mode) latches IRR on the line's rising edge only, and in level
    /// mode (ELCR) its IRR follows the OR of the two.
    /// </summary>
    [Fact]
    public void TwoUartsShareIrq4IntoThe8259()
    {
        const int IER = 1, IIR = 2, MCR = 4;
        const byte ReadIrr = 0x0A, Irq4 = 1 << 4;
        var clock = new ManualClock();
        var pic = new Pic8259 { IntrOutput = new NullIrqLine() };
        var lines = new IsaIrqLines((irq, level) => pic.SetIrq(irq, level));
        lines.Reset();
        var com1 = new Uart16550(lines.Connect(4), new NullSerialBackend(), clock, "com1");
        var com3 = new Uart16550(lines.Connect(4), new NullSerialBackend(), clock, "com3");
        // 8259A: ICW1 edge, ICW2 vectors 0x20, ICW3 slave on IR2, ICW4 8086 mode.
        pic.Master.Write(0, 1, 0x11);
        pic.Master.Write(1, 1, 0x20);
        pic.Master.Write(1, 1, 0x04);
        pic.Master.Write(1, 1, 0x01);
        pic.Master.Write(1, 1, unchecked((byte)~Irq4));
        byte Irr() { pic.Master.Write(0, 1, ReadIrr); return (byte)pic.Master.Read(0, 1); }

        // COM1 quiet with OUT2 on (as an OS leaves an open port), COM3 raises THRE: one edge.
        com1.Write(MCR, 1, 0x08);
        com3.Write(MCR, 1, 0x08);
        com3.Write(IER, 1, 0x02);
        Assert.True(pic.HasInterrupt);
        Assert.Equal(0x24, pic.Acknowledge());
        pic.Master.Write(0, 1, 0x20); // non-specific EOI

        // COM1 becomes active while COM3 still holds the line: no new edge (the ISR must poll both).
        com1.Write(IER, 1, 0x02);
        Assert.True(com1.IrqLevel);
        Assert.False(pic.HasInterrupt);
        Assert.Equal(0, Irr() & Irq4);

        // Level mode: IRR shows the line. COM3 is serviced (IIR read clears THRE) but COM1 holds it.
        pic.Elcr.Write(0, 1, Irq4);
        Assert.Equal(Irq4, Irr() & Irq4);
        Assert.Equal(0x02, (byte)com3.Read(IIR, 1));
        Assert.False(com3.IrqLevel);
        Assert.Equal(Irq4, Irr() & Irq4);
        Assert.Equal(0x02, (byte)com1.Read(IIR, 1));
        Assert.Equal(0, Irr() & Irq4);

        // Back to edge mode: the next rise, from either UART, is a new interrupt.
        pic.Elcr.Write(0, 1, 0);
        com1.Write(IER, 1, 0x00);
        com1.Write(IER, 1, 0x02); // ETBEI 0→1 with THR empty re-arms THRE
        Assert.True(pic.HasInterrupt);
        Assert.Equal(0x24, pic.Acknowledge());
    }

    [Fact]
    public void ResetDropsTheOldBoardsInputsAndKeepsTheSurvivors()
    {
        var output = new Recorder();
        var line = new SharedIrqLine(output);
        var rtc = line.Connect(survivesReset: true);
        var oldUart = line.Connect();
        oldUart.SetLevel(true);

        line.Reset();
        Assert.False(oldUart.IsConnected);
        Assert.True(rtc.IsConnected);
        Assert.Equal(1, line.InputCount);
        Assert.False(line.Level);
        Assert.False(output.Level);

        // The stale device can no longer move the line; a new device's first rise is an edge.
        oldUart.SetLevel(false);
        oldUart.SetLevel(true);
        Assert.False(line.Level);
        var newUart = line.Connect();
        int edges = output.RisingEdges;
        newUart.SetLevel(true);
        Assert.Equal(edges + 1, output.RisingEdges);
        newUart.SetLevel(false);

        // A survivor left high is presented to the new controllers at once.
        rtc.SetLevel(true);
        output.Calls.Clear();
        line.Reset();
        Assert.True(line.Level);
        Assert.Equal([true], output.Calls);
        Assert.False(newUart.IsConnected);
    }

    [Fact]
    public void DisconnectWithdrawsTheInputsLevel()
    {
        var output = new Recorder();
        var line = new SharedIrqLine(output);
        var a = line.Connect();
        var b = line.Connect();
        a.SetLevel(true);
        b.SetLevel(true);
        a.Disconnect();
        Assert.True(line.Level);
        b.Disconnect();
        Assert.False(line.Level);
        Assert.False(output.Level);
        Assert.Equal(0, line.InputCount);
        a.Disconnect(); // twice: nothing
        Assert.False(output.Level);
    }

    [Fact]
    public void LinesRouteTheirOwnIrqNumber()
    {
        var seen = new List<(int, bool)>();
        var lines = new IsaIrqLines((irq, level) => seen.Add((irq, level)));
        var irq3 = lines.Connect(3);
        var irq4 = lines.Connect(4);
        irq4.SetLevel(true);
        irq3.SetLevel(true);
        irq4.SetLevel(false);
        Assert.Equal([(4, true), (3, true), (4, false)], seen);
        Assert.True(lines[3].Level);   // Connect(3) and Connect(4) went to lines 3 and 4
        Assert.False(lines[4].Level);
        Assert.Throws<ArgumentOutOfRangeException>(() => lines[16]);

        // Reset tells the controllers every line's level.
        seen.Clear();
        lines.Reset();
        Assert.Equal(IsaIrqLines.LineCount, seen.Count);
        Assert.All(seen, s => Assert.False(s.Item2));
    }

    [Fact]
    public void SetLevelAllocatesNothing()
    {
        var line = new SharedIrqLine(new NullIrqLine());
        var a = line.Connect();
        var b = line.Connect();
        a.SetLevel(true); a.SetLevel(false); // warm up (JIT)
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            a.SetLevel(true);
            b.SetLevel((i & 1) != 0);
            a.SetLevel(false);
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        Assert.True(line.Level); // b was left high by the last round
        b.SetLevel(false);
        Assert.False(line.Level);
    }
}
