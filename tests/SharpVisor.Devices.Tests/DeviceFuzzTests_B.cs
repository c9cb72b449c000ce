using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Acpi;
using SharpVisor.Devices.Input;
using SharpVisor.Devices.Misc;
using SharpVisor.Devices.Pci;
using SharpVisor.Devices.Rtc;
using FwCfgDevice = SharpVisor.Devices.FwCfg.FwCfg;
using Kbc = SharpVisor.Devices.Input.I8042;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// Random register pokes (sizes 1, 2, 4 and 8 at every offset of the span, odd ones included):
/// whatever the guest does, these devices never throw, and their invariants hold after each access.
/// </summary>
public sealed class DeviceFuzzTests_B : IDisposable
{
    private static readonly int[] Sizes = [1, 2, 4, 8];
    private readonly GuestMemory _memory = new();

    public DeviceFuzzTests_B() => _memory.AddRegion(0, 0x20000, "ram");

    public void Dispose() => _memory.Dispose();

    private static void Poke(IBusDevice dev, Random rng, ManualClock clock, int iterations, int span,
        Action? each = null, ITimedDevice? timed = null)
    {
        for (int i = 0; i < iterations; i++)
        {
            ulong offset = (ulong)rng.Next(span);
            int size = Sizes[rng.Next(Sizes.Length)];
            if (rng.Next(2) == 0)
            {
                ulong v = dev.Read(offset, size);
                Assert.Equal(v, BusValue.Mask(v, size)); // never more bits than the access carries
            }
            else
            {
                // Bias toward small and all-ones values, where the interesting bits are.
                ulong value = rng.Next(4) switch
                {
                    0 => ulong.MaxValue,
                    1 => (ulong)rng.Next(256),
                    _ => (ulong)rng.NextInt64(),
                };
                dev.Write(offset, size, BusValue.Mask(value, size));
            }
            if (rng.Next(8) == 0) clock.Advance(rng.NextInt64(1, 2_000_000_000));
            if (timed != null)
            {
                long d = timed.NextDeadlineNs;
                if (d != long.MaxValue && d <= clock.NowNs + 1_000_000_000L)
                {
                    clock.NowNs = Math.Max(clock.NowNs, d);
                    timed.OnTime(clock.NowNs);
                }
            }
            each?.Invoke();
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Rtc(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var irq = new NullIrqLine();
        var rtc = new Rtc146818(clock, irq);
        Poke(rtc, rng, clock, 20000, 4, timed: rtc, each: () =>
        {
            // Register D always reports valid RAM and time; the IRQ line follows IRQF (register C bit 7).
            Assert.Equal(Rtc146818.RegDVrt, rtc.GetNvram(Rtc146818.RegD));
            Assert.Equal((rtc.GetNvram(Rtc146818.RegC) & Rtc146818.RegCIrqf) != 0, irq.Level);
        });
        // Every register stays readable, and the calendar is a real date.
        for (int i = 0; i < 128; i++) { rtc.Write(0, 1, (ulong)i); rtc.Read(1, 1); }
        Assert.InRange(rtc.CurrentTime.Year, 1, 9999);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void I8042(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var irq1 = new NullIrqLine();
        var irq12 = new NullIrqLine();
        var kbc = new I8042(irq1, () => { }, _ => { }, irq12);
        Poke(kbc, rng, clock, 20000, 8, each: () =>
        {
            if (rng.Next(16) == 0) kbc.EnqueueScancode((byte)rng.Next(256));
            if (rng.Next(32) == 0) kbc.EnqueueMouseMovement(rng.Next(-300, 300), rng.Next(-300, 300));
            // Commands complete at once (IBF never set); IRQ1/IRQ12 follow OBF, AUXB and the command byte.
            byte status = (byte)kbc.Read(Kbc.StatusCommandOffset, 1);
            Assert.Equal(0, status & Kbc.StatusIbf);
            bool full = (status & Kbc.StatusObf) != 0, aux = (status & Kbc.StatusAuxb) != 0;
            Assert.Equal(full && !aux && (kbc.CommandByte & Kbc.CtrKbdInt) != 0, irq1.Level);
            Assert.Equal(full && aux && (kbc.CommandByte & Kbc.CtrAuxInt) != 0, irq12.Level);
        });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Pci(int seed)
    {
        var rng = new Random(seed);
        var bus = new PciBus();
        bus.Add(0, 0, new I440fxHostBridge());
        bus.Add(1, 0, new Piix3IsaBridge());
        var io = new PciConfigIo(bus, () => { });
        var clock = new ManualClock();
        // Mostly valid addresses on devices 0–1 so the data window reaches real registers.
        Poke(io, rng, clock, 20000, 10, each: () =>
        {
            if (rng.Next(4) == 0)
                io.Write(0, 4, 0x8000_0000u | (uint)(rng.Next(2) << 11) | (uint)(rng.Next(8) << 8) | (uint)(rng.Next(256) & 0xFC));
        });
        // Whatever was written, the read-only identity of both functions is intact.
        io.Write(0, 4, 0x8000_0000);
        Assert.Equal(0x1237_8086UL, io.Read(4, 4));
        io.Write(0, 4, 0x8000_0800);
        Assert.Equal(0x7000_8086UL, io.Read(4, 4));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void FwCfg(int seed)
    {
        var rng = new Random(seed);
        var f = new FwCfgDevice(_memory);
        f.AddFile("etc/a", new byte[100]);
        f.SetStandardItems(1, 1, 64 << 20);
        var clock = new ManualClock();
        Poke(f, rng, clock, 20000, 14, each: () =>
        {
            if (rng.Next(8) == 0)
            {
                // A random access structure somewhere (sometimes in RAM, sometimes not), then kick DMA.
                ulong gpa = rng.Next(2) == 0 ? (ulong)rng.Next(0x20000) : (ulong)rng.NextInt64();
                if (_memory.IsRam(gpa, 16))
                {
                    var a = new byte[16];
                    rng.NextBytes(a);
                    if (rng.Next(2) == 0) a[8] = a[9] = a[10] = a[11] = a[12] = a[13] = 0; // address below 64 KiB-ish
                    _memory.Write(gpa, a);
                }
                f.Write(4, 8, System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(gpa));
            }
        });
        // The device still answers: the signature item and the DMA register signature.
        f.Write(0, 2, FwCfgDevice.Signature);
        Assert.Equal(0x554D4551UL, f.Read(1, 4)); // "QEMU"
        Assert.Equal(FwCfgDevice.DmaSignature, System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(f.Read(4, 8)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void AcpiPmBlocks(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var sci = new NullIrqLine();
        var pm = new AcpiPm(clock, sci, () => { }, 5);
        // SCI is a level: SCI_EN and any enabled status bit (ACPI §4.8.3.1).
        void Sci() => Assert.Equal((pm.Pm1Control & AcpiPm.SciEn) != 0 && (pm.Pm1Status & pm.Pm1Enable) != 0, sci.Level);
        Poke(pm.EventBlock, rng, clock, 5000, 6, Sci, timed: pm);
        Poke(pm.ControlBlock, rng, clock, 5000, 4, Sci, timed: pm);
        Poke(pm.Timer, rng, clock, 5000, 6, Sci, timed: pm);
    }

    [Theory]
    [InlineData(1)]
    public void SmallPorts(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var post = new PostCodePort();
        Poke(post, rng, clock, 2000, 4, () => Assert.Equal(post.LastCode, (byte)post.Read(0, 1)));
        var console = new DebugConsole(_ => { });
        Poke(console, rng, clock, 2000, 4, () => Assert.Equal(DebugConsole.ReadbackValue, (byte)console.Read(0, 1)));
        int exits = 0;
        Poke(new DebugExit(_ => exits++), rng, clock, 2000, 8);
        Assert.InRange(exits, 1, 2000);
    }
}
