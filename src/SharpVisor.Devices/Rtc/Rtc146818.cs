// Motorola MC146818A real-time clock plus CMOS RAM, as wired in the IBM PC/AT and its
// descendants: index register at port 0x70 (bit 7 is the chipset's NMI mask, not an RTC bit),
// data at 0x71, IRQ 8, a 32.768 kHz time base.
//
// Follows the MC146818A datasheet: registers 0x00–0x09 (time, alarm, calendar), A (UIP, DV2–0,
// RS3–0), B (SET, PIE, AIE, UIE, SQWE, DM, 24/12, DSE), C (IRQF, PF, AF, UF; read clears) and
// D (VRT), and 114 bytes of RAM (0x0E–0x7F) that hold the PC's CMOS settings. Byte 0x32 is the
// PC century byte, kept in step with the year like an IBM BIOS would (and as QEMU does).
//
// Deliberate deviations, all invisible to Linux, SeaBIOS and DOS:
// - The calendar is kept as a count of seconds and encoded on each read, so switching DM or
//   24/12 re-encodes the current time instead of leaving stale bytes, and time bytes written with
//   out-of-range values are normalised (QEMU does the same): seconds, minutes, 24-hour hours, day,
//   month and year are clamped to the nearest valid value, 12-hour hours and the day of week are
//   taken modulo 12 and 7.
// - Day of week is an independent counter (as on the chip), kept as an offset from the date.
// - Only the 32.768 kHz time base (DV = 010) runs; the 4.194304/1.048576 MHz bases (000/001)
//   and the test modes stop the divider like the reset setting (11x). PCs use only 010.
// - DSE (daylight saving) and SQWE (square-wave pin, not wired on a PC) are stored and ignored.
// - The update cycle is modelled as: UIP rises 244 µs + 1984 µs before the second boundary,
//   and the new time, UF and the alarm check take effect at the boundary (end of the cycle).
using System.Diagnostics;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Rtc;

public sealed class Rtc146818 : IBusDevice, ITimedDevice, IByteRegisterFile
{
    // Register indices (datasheet names).
    public const int Seconds = 0x00, SecondsAlarm = 0x01, Minutes = 0x02, MinutesAlarm = 0x03,
        Hours = 0x04, HoursAlarm = 0x05, DayOfWeek = 0x06, DayOfMonth = 0x07, Month = 0x08, Year = 0x09,
        RegA = 0x0A, RegB = 0x0B, RegC = 0x0C, RegD = 0x0D;

    // PC CMOS layout (IBM AT BIOS convention, what SeaBIOS and QEMU use).
    public const int ShutdownStatus = 0x0F, BaseMemoryLow = 0x15, BaseMemoryHigh = 0x16,
        ExtendedMemoryLow = 0x17, ExtendedMemoryHigh = 0x18, ExtendedMemory2Low = 0x30, ExtendedMemory2High = 0x31,
        Century = 0x32, MemoryAbove16MLow = 0x34, MemoryAbove16MHigh = 0x35,
        MemoryAbove4G0 = 0x5B, MemoryAbove4G1 = 0x5C, MemoryAbove4G2 = 0x5D, CpuCountMinusOne = 0x5F;

    public const byte RegAUip = 0x80, RegADividerMask = 0x70, RegARateMask = 0x0F;
    public const byte DividerNormal32K = 0x20;
    public const byte RegBSet = 0x80, RegBPie = 0x40, RegBAie = 0x20, RegBUie = 0x10, RegBSqwe = 0x08,
        RegBDm = 0x04, RegB24h = 0x02, RegBDse = 0x01;
    public const byte RegCIrqf = 0x80, RegCPf = 0x40, RegCAf = 0x20, RegCUf = 0x10;
    public const byte RegDVrt = 0x80;

    public const int NvramSize = 128;
    private const long NsPerSecond = 1_000_000_000;
    /// <summary>UIP is set this long before the time registers change: tBUC 244 µs + tUC 1984 µs.</summary>
    public const long UipWindowNs = 244_000 + 1_984_000;
    private const long TimeBaseHz = 32768;
    private const long MaxSeconds = 315537897599; // 9999-12-31 23:59:59 in seconds since 0001-01-01

    private readonly IClock _clock;
    private readonly IIrqLine _irq;
    private readonly byte[] _cmos = new byte[NvramSize];

    private byte _index;
    private byte _regA, _regB, _regC;
    /// <summary>Calendar time in seconds since 0001-01-01 00:00:00.</summary>
    private long _seconds;
    private int _dayOfWeekAdjust;
    /// <summary>Clock time at which the divider chain started (second boundaries at origin + k·1 s).</summary>
    private long _originNs;
    private long _lastSecondTick, _lastPeriodicTick;
    private bool _irqHigh;

    public Rtc146818(IClock clock, IIrqLine irq, TimeSpan? utcOffset = null)
    {
        _clock = clock;
        _irq = irq;
        long now = clock.NowNs;
        // Wall time now = StartWallTime + NowNs; the next second boundary comes when the fraction rolls over.
        long wallTicks = clock.StartWallTime.Ticks + (utcOffset ?? TimeSpan.Zero).Ticks + now / 100;
        _seconds = Math.Clamp(wallTicks / TimeSpan.TicksPerSecond, 0, MaxSeconds);
        long fractionNs = (wallTicks % TimeSpan.TicksPerSecond) * 100;
        _originNs = now - fractionNs;
        _lastSecondTick = 0;
        _lastPeriodicTick = 0;
        _regA = DividerNormal32K | 0x06; // what SeaBIOS programs: 32.768 kHz, 1024 Hz periodic rate
        _regB = RegB24h;                 // BCD, 24-hour
        _regC = 0;
    }

    public string Name => "rtc";

    /// <summary>Bit 7 of the last index write: the PC's NMI mask (the machine may consult it).</summary>
    public bool NmiMasked { get; private set; }

    // ---- machine API --------------------------------------------------------------------------

    /// <summary>Sets a CMOS RAM byte (0x0E–0x7F) before or while the guest runs.</summary>
    public void SetNvram(int index, byte value)
    {
        if (index < RegD + 1 || index >= NvramSize)
            throw new ArgumentOutOfRangeException(nameof(index), "CMOS RAM spans 0x0E–0x7F");
        if (index == Century) { WriteRegister(index, value); return; }
        _cmos[index] = value;
    }

    public byte GetNvram(int index) => (uint)index < NvramSize ? ReadRegister(index, peek: true) : (byte)0xFF;

    /// <summary>
    /// Fills the AT BIOS memory-size fields as QEMU's pc machine does: base memory 640 KiB (0x15/0x16),
    /// extended memory above 1 MiB in KiB capped at 0xFFFF (0x17/0x18 and 0x30/0x31), memory above
    /// 16 MiB in 64 KiB units capped at 0xFFFF (0x34/0x35), memory above 4 GiB in 64 KiB units (0x5B–0x5D).
    /// </summary>
    public void SetMemorySize(ulong belowFourGiB, ulong aboveFourGiB)
    {
        SetWord(BaseMemoryLow, 640);
        ulong ext = belowFourGiB > (1 << 20) ? (belowFourGiB - (1 << 20)) >> 10 : 0;
        SetWord(ExtendedMemoryLow, (ushort)Math.Min(ext, 0xFFFF));
        SetWord(ExtendedMemory2Low, (ushort)Math.Min(ext, 0xFFFF));
        ulong above16 = belowFourGiB > (16 << 20) ? (belowFourGiB - (16 << 20)) >> 16 : 0;
        SetWord(MemoryAbove16MLow, (ushort)Math.Min(above16, 0xFFFF));
        ulong above4 = Math.Min(aboveFourGiB >> 16, 0xFF_FFFF);
        _cmos[MemoryAbove4G0] = (byte)above4;
        _cmos[MemoryAbove4G1] = (byte)(above4 >> 8);
        _cmos[MemoryAbove4G2] = (byte)(above4 >> 16);
    }

    /// <summary>CMOS 0x5F: number of CPUs minus one (SeaBIOS reads it when fw_cfg has no count).</summary>
    public void SetCpuCount(int cpus) => _cmos[CpuCountMinusOne] = (byte)Math.Clamp(cpus - 1, 0, 255);

    private void SetWord(int index, ushort v)
    {
        _cmos[index] = (byte)v;
        _cmos[index + 1] = (byte)(v >> 8);
    }

    /// <summary>The calendar time the guest would read now (for tests and the monitor).</summary>
    public DateTime CurrentTime
    {
        get
        {
            CatchUp(_clock.NowNs);
            return new DateTime(_seconds * TimeSpan.TicksPerSecond);
        }
    }

    // ---- bus ----------------------------------------------------------------------------------

    // Offset 0 = index (port 0x70), 1 = data (0x71), both byte wide: wider accesses become byte
    // cycles (Isa/IsaByteCycles.cs), so a word write at 0x70 sets the index and then writes the data.
    public const int PortCount = 2;

    public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

    public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

    int IByteRegisterFile.RegisterCount => PortCount;

    // The index register is write-only on PCs; QEMU and most chipsets read 0xFF.
    byte IByteRegisterFile.ReadRegister(int offset) => offset == 0 ? IsaByteCycles.Floating : ReadRegister(_index, peek: false);

    void IByteRegisterFile.WriteRegister(int offset, byte value)
    {
        if (offset == 0)
        {
            NmiMasked = (value & 0x80) != 0;
            _index = (byte)(value & 0x7F);
        }
        else WriteRegister(_index, value);
    }

    // ---- registers ----------------------------------------------------------------------------

    private byte ReadRegister(int index, bool peek)
    {
        long now = _clock.NowNs;
        CatchUp(now);
        switch (index)
        {
            case Seconds: case Minutes: case Hours: case DayOfWeek: case DayOfMonth: case Month: case Year: case Century:
                return EncodeTimeRegister(index, _seconds);
            case RegA:
                return (byte)((_regA & ~RegAUip) | (UpdateInProgress(now) ? RegAUip : 0));
            case RegB:
                return _regB;
            case RegC:
            {
                byte c = _regC;
                if (!peek)
                {
                    // Reading C clears all flags and releases IRQ (datasheet: "read clears").
                    _regC = 0;
                    UpdateIrq();
                }
                return c;
            }
            case RegD:
                return RegDVrt; // the battery is always good
            default:
                return _cmos[index];
        }
    }

    private void WriteRegister(int index, byte value)
    {
        long now = _clock.NowNs;
        CatchUp(now);
        switch (index)
        {
            case Seconds: case Minutes: case Hours: case DayOfMonth: case Month: case Year: case Century:
                SetTimeField(index, value);
                break;
            case DayOfWeek:
            {
                int wanted = DecodeNumber(value);
                int current = ComputedDayOfWeek(_seconds);
                _dayOfWeekAdjust = (((wanted - current) % 7) + 7) % 7;
                break;
            }
            case RegA:
            {
                bool wasRunning = DividerRunning;
                _regA = (byte)(value & ~RegAUip); // UIP is read-only
                if (DividerRunning && !wasRunning)
                {
                    // Leaving divider reset: the first update comes half a second later (datasheet).
                    _originNs = now - NsPerSecond / 2;
                    _lastSecondTick = 0;
                    _lastPeriodicTick = PeriodicIndex(now);
                }
                else if (DividerRunning)
                {
                    // A new rate: count periodic ticks from here on.
                    _lastPeriodicTick = PeriodicIndex(now);
                }
                break;
            }
            case RegB:
            {
                byte old = _regB;
                _regB = value;
                if ((value & RegBSet) != 0)
                {
                    // SET aborts any update cycle in progress and clears UIE (datasheet, register B bit 7).
                    _regB &= unchecked((byte)~RegBUie);
                }
                else if ((old & RegBSet) != 0)
                {
                    // SET released: the time written runs on from the next second boundary.
                    _lastSecondTick = SecondIndex(now);
                }
                UpdateIrq();
                break;
            }
            case RegC:
            case RegD:
                break; // read-only status registers; writes are ignored by the chip
            default:
                _cmos[index] = value;
                break;
        }
    }

    private bool DividerRunning => (_regA & RegADividerMask) == DividerNormal32K;
    private bool SetMode => (_regB & RegBSet) != 0;

    private bool UpdateInProgress(long now)
    {
        if (!DividerRunning || SetMode) return false;
        long intoSecond = FloorMod(now - _originNs, NsPerSecond);
        return intoSecond >= NsPerSecond - UipWindowNs;
    }

    // ---- time keeping -------------------------------------------------------------------------

    private long SecondIndex(long now) => FloorDiv(now - _originNs, NsPerSecond);

    /// <summary>Periodic rate as a power of two of 32.768 kHz cycles, or -1 for none (RS = 0).</summary>
    private int PeriodicShift
    {
        get
        {
            int rs = _regA & RegARateMask;
            if (rs == 0) return -1;
            // With the 32.768 kHz base RS 1 and 2 give 256 Hz and 128 Hz, the same as RS 8 and 9.
            if (rs <= 2) rs += 7;
            return rs - 1;
        }
    }

    private long CyclesSinceOrigin(long now)
    {
        long ns = Math.Max(0, now - _originNs);
        return (long)((Int128)ns * TimeBaseHz / NsPerSecond);
    }

    private long PeriodicIndex(long now)
    {
        int shift = PeriodicShift;
        return shift < 0 ? 0 : CyclesSinceOrigin(now) >> shift;
    }

    /// <summary>Brings flags and calendar up to <paramref name="now"/>; idempotent and tolerant of late calls.</summary>
    private void CatchUp(long now)
    {
        if (!DividerRunning) return;

        int shift = PeriodicShift;
        if (shift >= 0)
        {
            long p = CyclesSinceOrigin(now) >> shift;
            if (p > _lastPeriodicTick)
            {
                _regC |= RegCPf; // PF is set whether or not PIE is
                _lastPeriodicTick = p;
            }
        }

        long s = SecondIndex(now);
        if (s > _lastSecondTick)
        {
            long ticks = s - _lastSecondTick;
            _lastSecondTick = s;
            if (!SetMode)
            {
                long before = _seconds;
                _seconds = Math.Min(_seconds + ticks, MaxSeconds);
                _regC |= RegCUf;
                if ((_regC & RegCAf) == 0 && AlarmMatchedIn(before, ticks))
                    _regC |= RegCAf;
            }
        }
        UpdateIrq();
    }

    /// <summary>Did any second in (before, before+ticks] match the alarm? Bounded: the pattern repeats daily.</summary>
    private bool AlarmMatchedIn(long before, long ticks)
    {
        byte sa = _cmos[SecondsAlarm], ma = _cmos[MinutesAlarm], ha = _cmos[HoursAlarm];
        long n = Math.Min(ticks, 86400);
        for (long t = before + ticks - n + 1; t <= before + ticks; t++)
        {
            if (AlarmByteMatches(sa, EncodeTimeRegister(Seconds, t)) &&
                AlarmByteMatches(ma, EncodeTimeRegister(Minutes, t)) &&
                AlarmByteMatches(ha, EncodeTimeRegister(Hours, t)))
                return true;
        }
        return false;
    }

    /// <summary>An alarm byte with its two high bits set is "don't care" (datasheet, alarm registers).</summary>
    private static bool AlarmByteMatches(byte alarm, byte current) => (alarm & 0xC0) == 0xC0 || alarm == current;

    private void UpdateIrq()
    {
        // IRQF = PF·PIE + AF·AIE + UF·UIE (datasheet, register C bit 7).
        bool irqf = ((_regC & _regB) & (RegCPf | RegCAf | RegCUf)) != 0;
        if (irqf) _regC |= RegCIrqf;
        else _regC &= unchecked((byte)~RegCIrqf);
        if (irqf != _irqHigh)
        {
            _irqHigh = irqf;
            _irq.SetLevel(irqf);
        }
    }

    public long NextDeadlineNs
    {
        get
        {
            // While IRQF is set the line is already high; later events only set flags, computed lazily.
            if (!DividerRunning || (_regC & RegCIrqf) != 0) return long.MaxValue;
            long next = long.MaxValue;
            int shift = PeriodicShift;
            if ((_regB & RegBPie) != 0 && shift >= 0)
            {
                long cycles = (_lastPeriodicTick + 1) << shift;
                long ns = (long)(((Int128)cycles * NsPerSecond + TimeBaseHz - 1) / TimeBaseHz);
                next = Math.Min(next, _originNs + ns);
            }
            if ((_regB & (RegBUie | RegBAie)) != 0 && !SetMode)
                next = Math.Min(next, _originNs + (_lastSecondTick + 1) * NsPerSecond);
            return next;
        }
    }

    public void OnTime(long nowNs) => CatchUp(nowNs);

    // ---- encoding -----------------------------------------------------------------------------

    private bool Binary => (_regB & RegBDm) != 0;
    private bool Hour24 => (_regB & RegB24h) != 0;

    private byte EncodeNumber(int v) => Binary ? (byte)v : (byte)(((v / 10) << 4) | (v % 10));

    private int DecodeNumber(byte v) => Binary ? v : ((v >> 4) & 0xF) * 10 + (v & 0xF);

    private int ComputedDayOfWeek(long seconds)
        => (int)new DateTime(seconds * TimeSpan.TicksPerSecond).DayOfWeek + 1; // Sunday = 1

    private byte EncodeTimeRegister(int index, long seconds)
    {
        var t = new DateTime(seconds * TimeSpan.TicksPerSecond);
        switch (index)
        {
            case Seconds: return EncodeNumber(t.Second);
            case Minutes: return EncodeNumber(t.Minute);
            case Hours:
                if (Hour24) return EncodeNumber(t.Hour);
                int h12 = t.Hour % 12 == 0 ? 12 : t.Hour % 12;
                return (byte)(EncodeNumber(h12) | (t.Hour >= 12 ? 0x80 : 0));
            case DayOfWeek: return EncodeNumber((ComputedDayOfWeek(seconds) - 1 + _dayOfWeekAdjust) % 7 + 1);
            case DayOfMonth: return EncodeNumber(t.Day);
            case Month: return EncodeNumber(t.Month);
            case Year: return EncodeNumber(t.Year % 100);
            case Century: return EncodeNumber(t.Year / 100);
            default: throw new UnreachableException();
        }
    }

    private void SetTimeField(int index, byte value)
    {
        var t = new DateTime(_seconds * TimeSpan.TicksPerSecond);
        int year = t.Year, month = t.Month, day = t.Day, hour = t.Hour, minute = t.Minute, second = t.Second;
        int dow = (ComputedDayOfWeek(_seconds) - 1 + _dayOfWeekAdjust) % 7 + 1;
        switch (index)
        {
            case Seconds: second = DecodeNumber(value); break;
            case Minutes: minute = DecodeNumber(value); break;
            case Hours:
                if (Hour24) hour = DecodeNumber(value);
                else
                {
                    int h = DecodeNumber((byte)(value & 0x7F)) % 12;
                    hour = h + ((value & 0x80) != 0 ? 12 : 0);
                }
                break;
            case DayOfMonth: day = DecodeNumber(value); break;
            case Month: month = DecodeNumber(value); break;
            case Year: year = year / 100 * 100 + Math.Clamp(DecodeNumber(value), 0, 99); break;
            case Century: year = Math.Clamp(DecodeNumber(value), 0, 99) * 100 + year % 100; break;
        }
        year = Math.Clamp(year, 1, 9999);
        month = Math.Clamp(month, 1, 12);
        day = Math.Clamp(day, 1, DateTime.DaysInMonth(year, month));
        var nt = new DateTime(year, month, day, Math.Clamp(hour, 0, 23), Math.Clamp(minute, 0, 59), Math.Clamp(second, 0, 59));
        _seconds = nt.Ticks / TimeSpan.TicksPerSecond;
        // Keep the day-of-week counter where it was: it is independent of the date on the chip.
        int computed = ComputedDayOfWeek(_seconds);
        _dayOfWeekAdjust = (((dow - computed) % 7) + 7) % 7;
    }

    private static long FloorDiv(long a, long b) => a >= 0 ? a / b : -((-a + b - 1) / b);
    private static long FloorMod(long a, long b) => a - FloorDiv(a, b) * b;
}
