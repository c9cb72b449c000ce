using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Pic;
using SharpVisor.Devices.Pit;
using SharpVisor.Devices.Serial;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// Random register pokes (random offsets, odd ones included; sizes 1, 2, 4, 8 and the invalid 0, 3,
/// 16, −1; values and clock steps) into the UART, PIC and PIT:
/// a guest can never make a device throw, and a few invariants that hold on hardware stay true.
/// </summary>
public sealed class DeviceFuzzTests_A
{
    private const int Iterations = 40_000;
    private static readonly int[] Sizes = [1, 1, 1, 1, 2, 4, 8, 0, 3, 16, -1];

    private static int RandomSize(Random rng) => Sizes[rng.Next(Sizes.Length)];

    /// <summary>A read never carries more bytes than the access (none for sizes below 1, at most 8).</summary>
    private static void ReadFits(IBusDevice dev, ulong offset, int size)
    {
        ulong v = dev.Read(offset, size);
        if (size <= 0) Assert.Equal(0UL, v);
        else if (size < 8) Assert.Equal(0UL, v >> (8 * size));
    }

    private static ulong RandomValue(Random rng) => rng.Next(4) == 0 ? (ulong)rng.NextInt64() : (ulong)rng.Next(256);

    private static void StepClock(ManualClock clock, Random rng)
    {
        switch (rng.Next(8))
        {
            case 0: clock.Advance(rng.Next(1, 1000)); break; // around one PIT clock
            case 1: clock.Advance(rng.Next(1, 10_000_000)); break; // up to 10 ms
            case 2: if (rng.Next(200) == 0) clock.Advance(rng.NextInt64(1, 1L << 40)); break; // rare huge jump
            default: break;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void UartNeverThrows(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var irq = new NullIrqLine();
        var uart = new Uart16550(irq, new NullSerialBackend(), clock);
        for (int i = 0; i < Iterations; i++)
        {
            StepClock(clock, rng);
            ulong offset = (ulong)rng.Next(10);
            switch (rng.Next(10))
            {
                case 0: uart.TryReceive((byte)rng.Next(256)); break;
                case 1: uart.Receive((byte)rng.Next(256)); break;
                case 2: uart.SetModemInputs(rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(2) == 0); break;
                case 3: uart.OnTime(clock.NowNs); break;
                case 4:
                case 5:
                case 6: uart.Write(offset, RandomSize(rng), RandomValue(rng)); break;
                default: ReadFits(uart, offset, RandomSize(rng)); break;
            }
            Assert.InRange(uart.ReceiveSpace, 0, Uart16550.FifoSize);
            Assert.Equal(irq.Level, uart.IrqLevel);
            if (rng.Next(64) == 0)
            {
                // Always true here: THRE/TEMT set (instant transmission), IIR bits 4–5 zero on a 16550A.
                Assert.Equal(0x60UL, uart.Read(5, 1) & 0x60);
                Assert.Equal(0UL, uart.Read(2, 1) & 0x30);
                uart.OnTime(clock.NowNs);
                Assert.True(uart.NextDeadlineNs > clock.NowNs);
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void PicNeverThrows(int seed)
    {
        var rng = new Random(seed);
        var pic = new Pic8259();
        var intr = new NullIrqLine();
        pic.IntrOutput = intr;
        IBusDevice[] ports = [pic.Master, pic.Slave, pic.Elcr];
        for (int i = 0; i < Iterations; i++)
        {
            var dev = ports[rng.Next(ports.Length)];
            ulong offset = (ulong)rng.Next(4);
            switch (rng.Next(10))
            {
                case 0:
                case 1: pic.SetIrq(rng.Next(-2, 18), rng.Next(2) == 0); break;
                case 2: pic.GetLine(rng.Next(16)).Pulse(); break;
                case 3:
                    if (pic.HasInterrupt || rng.Next(8) == 0) pic.Acknowledge(); // the CPU acknowledges when INTR is up
                    break;
                case 4:
                case 5:
                case 6: dev.Write(offset, RandomSize(rng), RandomValue(rng)); break;
                default: ReadFits(dev, offset, RandomSize(rng)); break;
            }
            Assert.Equal(pic.HasInterrupt, intr.Level);
            Assert.Equal(0UL, pic.Elcr.Read(0, 1) & 0x07); // IRQ0–2 can never be level triggered
            Assert.Equal(0UL, pic.Elcr.Read(1, 1) & 0x21);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void PitNeverThrows(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var irq = new NullIrqLine();
        var pit = new Pit8254(clock, irq);
        // Mostly valid control words so the counters spend time in every mode.
        for (int i = 0; i < Iterations; i++)
        {
            StepClock(clock, rng);
            ulong offset = (ulong)rng.Next(6);
            switch (rng.Next(12))
            {
                case 0: pit.OnTime(clock.NowNs); break;
                case 1: pit.SpeakerPort.Write((ulong)rng.Next(2), RandomSize(rng), RandomValue(rng)); break;
                case 2: ReadFits(pit.SpeakerPort, (ulong)rng.Next(2), RandomSize(rng)); break;
                case 3:
                case 4: pit.Write(3, 1, (ulong)rng.Next(256)); break;
                case 5:
                case 6:
                case 7: pit.Write(offset, RandomSize(rng), RandomValue(rng)); break;
                default: ReadFits(pit, offset, RandomSize(rng)); break;
            }
            Assert.Equal(irq.Level, pit.Irq0Level);
            if (rng.Next(16) == 0)
            {
                pit.OnTime(clock.NowNs);
                Assert.True(pit.NextDeadlineNs > clock.NowNs, "after OnTime nothing may be overdue");
                Assert.Equal(0UL, pit.SpeakerPort.Read(0, 1) & 0xC0);
            }
        }
    }

    [Fact]
    public void PitStateSurvivesRandomSnapshots()
    {
        var rng = new Random(7);
        var clock = new ManualClock();
        var a = new Pit8254(clock, new NullIrqLine());
        var b = new Pit8254(clock, new NullIrqLine());
        for (int i = 0; i < 5000; i++)
        {
            StepClock(clock, rng);
            ulong offset = (ulong)rng.Next(4);
            if (rng.Next(3) == 0)
            {
                ulong v = (ulong)rng.Next(256);
                a.Write(offset, 1, v);
                b.Write(offset, 1, v);
            }
            else Assert.Equal(a.Read(offset, 1), b.Read(offset, 1));
            if (rng.Next(50) == 0) b.State = a.State;
        }
    }
}
