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
        // A machine started at a random wall time (with a fraction of a second) this century, some
        // random time after the clock's zero; NowNs stays a multiple of 100 ns (DateTime's tick).
        var startWall = new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddTicks(rng.NextInt64(0, 99L * 365 * TimeSpan.TicksPerDay));
        var clock = new ManualClock(startWall) { NowNs = rng.NextInt64(0, 1_000_000_000_000) / 100 * 100 };
        var irq = new NullIrqLine();
        var rtc = new Rtc146818(clock, irq);

        // Before the guest touches anything the calendar read through ports 0x70/0x71 is the machine
        // clock's wall time, whole seconds, and it steps exactly at the wall-clock second boundaries.
        DateTime Wall() => startWall.AddTicks(clock.NowNs / 100);
        for (int i = 0; i < 20; i++)
        {
            AssertCalendarIs(rtc, Truncate(Wall()));
            long toBoundary = TimeSpan.TicksPerSecond - Wall().Ticks % TimeSpan.TicksPerSecond;
            clock.Advance(toBoundary * 100 - 1); // 1 ns before the next second
            AssertCalendarIs(rtc, Truncate(Wall()));
            clock.Advance(1);
            Assert.Equal(0, Wall().Ticks % TimeSpan.TicksPerSecond);
            AssertCalendarIs(rtc, Wall());
            clock.Advance(rng.Next(4) switch
            {
                0 => rng.NextInt64(1, 1_000_000_000) / 100 * 100,       // within a second or two
                1 => rng.NextInt64(1, 86_400_000_000_000) / 100 * 100,  // across midnight
                _ => rng.NextInt64(1, 400L * 86_400_000_000_000) / 100 * 100, // across months and years
            });
        }

        Poke(rtc, rng, clock, 20000, 4, timed: rtc, each: () =>
        {
            // Register D always reports valid RAM and time; the IRQ line follows IRQF (register C bit 7).
            Assert.Equal(Rtc146818.RegDVrt, rtc.GetNvram(Rtc146818.RegD));
            Assert.Equal((rtc.GetNvram(Rtc146818.RegC) & Rtc146818.RegCIrqf) != 0, irq.Level);
        });
        // Every register stays readable, and the calendar is a real date in the mode the fuzz left
        // and in each of the four data modes (BCD/binary × 12/24-hour).
        for (int i = 0; i < 128; i++) { rtc.Write(0, 1, (ulong)i); rtc.Read(1, 1); }
        AssertCalendarValid(rtc);
        byte regB = In(rtc, Rtc146818.RegB);
        foreach (int mode in new[] { 0, Rtc146818.RegBDm, Rtc146818.RegB24h, Rtc146818.RegBDm | Rtc146818.RegB24h })
        {
            Out(rtc, Rtc146818.RegB, (byte)((regB & ~(Rtc146818.RegBDm | Rtc146818.RegB24h)) | mode));
            AssertCalendarValid(rtc);
        }

        // Whatever the fuzz left, the guest can set the clock the way a BIOS or Linux does (divider
        // on, SET while writing the fields, SET released) and from then on it runs with the machine
        // clock: after n whole seconds it reads the time written plus n, in every data mode.
        Out(rtc, Rtc146818.RegA, Rtc146818.DividerNormal32K | 0x06);
        Out(rtc, Rtc146818.RegB, Rtc146818.RegBSet | Rtc146818.RegB24h); // BCD, 24-hour
        var set = new DateTime(2000 + rng.Next(99), 1 + rng.Next(12), 1, 0, 0, 0).AddDays(rng.Next(31)).AddSeconds(rng.Next(86400));
        Out(rtc, Rtc146818.Century, Bcd(set.Year / 100));
        Out(rtc, Rtc146818.Year, Bcd(set.Year % 100));
        Out(rtc, Rtc146818.Month, Bcd(set.Month));
        Out(rtc, Rtc146818.DayOfMonth, Bcd(set.Day));
        Out(rtc, Rtc146818.Hours, Bcd(set.Hour));
        Out(rtc, Rtc146818.Minutes, Bcd(set.Minute));
        Out(rtc, Rtc146818.Seconds, Bcd(set.Second));
        Out(rtc, Rtc146818.DayOfWeek, Bcd((int)set.DayOfWeek + 1));
        clock.Advance(rng.NextInt64(1, 3_000_000_000)); // SET holds the time still
        AssertCalendarIs(rtc, set);
        Out(rtc, Rtc146818.RegB, Rtc146818.RegB24h);
        AssertCalendarIs(rtc, set);
        long elapsed = 0;
        foreach (int mode in new[] { Rtc146818.RegB24h, 0, Rtc146818.RegBDm, Rtc146818.RegBDm | Rtc146818.RegB24h })
        {
            Out(rtc, Rtc146818.RegB, (byte)mode);
            long n = rng.Next(3) == 0 ? rng.Next(1, 60) : rng.NextInt64(1, 40L * 86400);
            clock.Advance(n * 1_000_000_000);
            elapsed += n;
            AssertCalendarIs(rtc, set.AddSeconds(elapsed));
        }
    }

    private static DateTime Truncate(DateTime t) => new(t.Ticks - t.Ticks % TimeSpan.TicksPerSecond);

    private static byte Bcd(int v) => (byte)((v / 10) << 4 | v % 10);

    /// <summary>OUT 0x70, index; IN 0x71.</summary>
    private static byte In(Rtc146818 rtc, int index)
    {
        rtc.Write(0, 1, (ulong)index);
        return (byte)rtc.Read(1, 1);
    }

    /// <summary>OUT 0x70, index; OUT 0x71, value.</summary>
    private static void Out(Rtc146818 rtc, int index, byte value)
    {
        rtc.Write(0, 1, (ulong)index);
        rtc.Write(1, 1, value);
    }

    /// <summary>
    /// The time and date read through the ports equal <paramref name="expected"/> in the data mode
    /// register B selects (decoded per MC146818A datasheet Table 3; century from the PC's CMOS byte
    /// 0x32), and the day of week is the PC's 1 = Sunday … 7 = Saturday.
    /// </summary>
    private static void AssertCalendarIs(Rtc146818 rtc, DateTime expected)
    {
        byte regB = In(rtc, Rtc146818.RegB);
        bool binary = (regB & Rtc146818.RegBDm) != 0, hour24 = (regB & Rtc146818.RegB24h) != 0;
        int Field(int index) => binary ? In(rtc, index) : FromBcd(In(rtc, index));
        int FromBcd(byte b) => (b >> 4) * 10 + (b & 0x0F);
        byte rawHours = In(rtc, Rtc146818.Hours);
        int hours;
        if (hour24) hours = binary ? rawHours : FromBcd(rawHours);
        else
        {
            int h12 = binary ? rawHours & 0x7F : FromBcd((byte)(rawHours & 0x7F));
            hours = h12 % 12 + ((rawHours & 0x80) != 0 ? 12 : 0); // bit 7 = PM, 12 AM is midnight
        }
        var read = (Year: Field(Rtc146818.Century) * 100 + Field(Rtc146818.Year), Month: Field(Rtc146818.Month),
            Day: Field(Rtc146818.DayOfMonth), Hour: hours, Minute: Field(Rtc146818.Minutes), Second: Field(Rtc146818.Seconds),
            DayOfWeek: Field(Rtc146818.DayOfWeek));
        var want = (expected.Year, expected.Month, expected.Day, expected.Hour, expected.Minute, expected.Second,
            (int)expected.DayOfWeek + 1);
        Assert.True(read == want, $"register B {regB:X2}: read {read}, expected {want} ({expected:u})");
    }

    /// <summary>
    /// What the guest reads through ports 0x70/0x71 is a real time and date in the format register B
    /// selects (MC146818A datasheet, Table 3 "Time, Calendar and Alarm Data Modes"): BCD digits 0–9 when
    /// DM = 0, seconds/minutes 0–59, hours 0–23 (24-hour) or 1–12 with bit 7 = PM (12-hour), day of week
    /// 1–7, month 1–12, day 1 to the length of that month (century from the PC's CMOS byte 0x32).
    /// </summary>
    private static void AssertCalendarValid(Rtc146818 rtc)
    {
        byte regB = In(rtc, Rtc146818.RegB);
        bool binary = (regB & Rtc146818.RegBDm) != 0, hour24 = (regB & Rtc146818.RegB24h) != 0;
        int Number(int index, byte raw)
        {
            if (binary) return raw;
            Assert.True((raw & 0x0F) <= 9 && (raw >> 4) <= 9, $"register {index:X2} = {raw:X2}: not BCD (register B {regB:X2})");
            return (raw >> 4) * 10 + (raw & 0x0F);
        }
        int Field(int index) => Number(index, In(rtc, index));

        Assert.InRange(Field(Rtc146818.Seconds), 0, 59);
        Assert.InRange(Field(Rtc146818.Minutes), 0, 59);
        byte hours = In(rtc, Rtc146818.Hours);
        if (hour24) Assert.InRange(Number(Rtc146818.Hours, hours), 0, 23);
        else Assert.InRange(Number(Rtc146818.Hours, (byte)(hours & 0x7F)), 1, 12); // bit 7 is AM/PM
        Assert.InRange(Field(Rtc146818.DayOfWeek), 1, 7);
        Assert.InRange(Field(Rtc146818.Year), 0, 99);
        int year = Field(Rtc146818.Century) * 100 + Field(Rtc146818.Year);
        int month = Field(Rtc146818.Month);
        Assert.InRange(month, 1, 12);
        Assert.InRange(Field(Rtc146818.DayOfMonth), 1, DateTime.DaysInMonth(Math.Max(year, 1), month));
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
