// ACPI fixed-hardware power management registers (ACPI 6.5 §4.8.3): the PM1a event block
// (PM1_STS at +0, PM1_EN at +2), the PM1a control block (PM1_CNT, 2 bytes) and the PM timer
// (PM_TMR, 24-bit, 3.579545 MHz). Each block is its own IBusDevice so the machine can place them
// where the FADT says; the suggested layout matches QEMU's PIIX4 PM at base 0x600:
//   PM1a_EVT_BLK 0x600 (len 4), PM1a_CNT_BLK 0x604 (len 2), PM_TMR_BLK 0x608 (len 4), SCI on IRQ 9.
// PM1_STS bits are write-1-to-clear; the SCI is a level: high while SCI_EN and any (STS & EN) bit.
// Writing PM1_CNT with SLP_EN (bit 13) and SLP_TYP (bits 12–10) equal to the configured S5 value
// requests power off; other sleep types are not supported and the write is ignored (the DSDT's _S5
// must name the same SLP_TYP). SLP_EN reads 0 (write-only).
// Deliberate deviations: SCI_EN is 1 from reset — the FADT must give SMI_CMD = 0, meaning the
// platform is always in ACPI mode; no PM1b blocks, no GPE blocks, TMR_VAL_EXT = 0 (24-bit timer).
// The reset register is the PIIX3 RCR at 0xCF9 (PciConfigIo), value 0x06.
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;

namespace SharpVisor.Devices.Acpi;

public sealed class AcpiPm : ITimedDevice
{
    public const ushort TmrSts = 0x0001, BmSts = 0x0010, GblSts = 0x0020, PwrBtnSts = 0x0100,
        SlpBtnSts = 0x0200, RtcSts = 0x0400, WakSts = 0x8000;
    public const ushort TmrEn = 0x0001, GblEn = 0x0020, PwrBtnEn = 0x0100, SlpBtnEn = 0x0200, RtcEn = 0x0400;
    public const ushort SciEn = 0x0001, BmRld = 0x0002, GblRls = 0x0004, SlpTypMask = 0x1C00, SlpEn = 0x2000;
    public const int SlpTypShift = 10;
    public const long PmTimerHz = 3_579_545;
    public const int EventBlockLength = 4, ControlBlockLength = 2, TimerBlockLength = 4;

    private const ushort StsMask = TmrSts | BmSts | GblSts | PwrBtnSts | SlpBtnSts | RtcSts | WakSts;
    private const ushort EnMask = TmrEn | GblEn | PwrBtnEn | SlpBtnEn | RtcEn;
    private const ushort CntMask = SciEn | BmRld | SlpTypMask;
    private const long NsPerSecond = 1_000_000_000;

    private readonly IClock _clock;
    private readonly IIrqLine _sci;
    private readonly Action _powerOff;
    private readonly int _s5SleepType;

    private ushort _pm1Sts, _pm1En, _pm1Cnt;
    private long _lastTimerMsbPeriod; // count of bit-23 toggles seen, for TMR_STS
    private bool _sciHigh;

    /// <param name="s5SleepType">SLP_TYP value (0–7) that means S5 (soft off); must match the DSDT's _S5.</param>
    public AcpiPm(IClock clock, IIrqLine sci, Action powerOff, int s5SleepType)
    {
        if ((uint)s5SleepType > 7) throw new ArgumentOutOfRangeException(nameof(s5SleepType), "SLP_TYP is 3 bits");
        _clock = clock;
        _sci = sci;
        _powerOff = powerOff;
        _s5SleepType = s5SleepType;
        _pm1Cnt = SciEn;
        _lastTimerMsbPeriod = TimerTicks(clock.NowNs) >> 23;
        EventBlock = new EventBlockDevice(this);
        ControlBlock = new ControlBlockDevice(this);
        Timer = new TimerDevice(this);
    }

    /// <summary>PM1a_EVT_BLK: PM1_STS (offset 0, 16-bit) and PM1_EN (offset 2, 16-bit).</summary>
    public IBusDevice EventBlock { get; }
    /// <summary>PM1a_CNT_BLK: PM1_CNT (offset 0, 16-bit).</summary>
    public IBusDevice ControlBlock { get; }
    /// <summary>PM_TMR_BLK: the 24-bit timer value (offset 0, read-only, 32-bit reads).</summary>
    public IBusDevice Timer { get; }

    public ushort Pm1Status { get { CatchUp(_clock.NowNs); return _pm1Sts; } }
    public ushort Pm1Enable => _pm1En;
    public ushort Pm1Control => _pm1Cnt;

    /// <summary>The power button was pressed (the machine asks the guest to shut down gracefully).</summary>
    public void PressPowerButton()
    {
        _pm1Sts |= PwrBtnSts;
        UpdateSci();
    }

    /// <summary>Current PM timer value (24 bits).</summary>
    public uint TimerValue => (uint)(TimerTicks(_clock.NowNs) & 0xFF_FFFF);

    private static long TimerTicks(long nowNs) => (long)((Int128)Math.Max(0, nowNs) * PmTimerHz / NsPerSecond);

    private void CatchUp(long now)
    {
        // TMR_STS is set each time bit 23 of the counter changes (ACPI §4.8.3.3).
        long period = TimerTicks(now) >> 23;
        if (period != _lastTimerMsbPeriod)
        {
            _lastTimerMsbPeriod = period;
            _pm1Sts |= TmrSts;
        }
        UpdateSci();
    }

    private void UpdateSci()
    {
        bool level = (_pm1Cnt & SciEn) != 0 && (_pm1Sts & _pm1En & EnMask) != 0;
        if (level != _sciHigh)
        {
            _sciHigh = level;
            _sci.SetLevel(level);
        }
    }

    public long NextDeadlineNs
    {
        get
        {
            if ((_pm1En & TmrEn) == 0 || (_pm1Sts & TmrSts) != 0) return long.MaxValue;
            long nextTicks = (_lastTimerMsbPeriod + 1) << 23;
            return (long)(((Int128)nextTicks * NsPerSecond + PmTimerHz - 1) / PmTimerHz);
        }
    }

    public void OnTime(long nowNs) => CatchUp(nowNs);

    // ---- register access ----------------------------------------------------------------------

    private ushort ReadEvent16(int reg) => reg == 0 ? Pm1Status : _pm1En;

    private void WriteEvent16(int reg, ushort value)
    {
        CatchUp(_clock.NowNs);
        if (reg == 0) _pm1Sts &= (ushort)~(value & StsMask); // write 1 to clear
        else _pm1En = (ushort)(value & EnMask);
        UpdateSci();
    }

    private void WriteControl(ushort value)
    {
        _pm1Cnt = (ushort)(value & CntMask);
        UpdateSci();
        if ((value & SlpEn) != 0)
        {
            int slpTyp = (value & SlpTypMask) >> SlpTypShift;
            if (slpTyp == _s5SleepType) _powerOff();
            // Other sleep states (S1–S4) are not implemented: the request is ignored and the guest runs on.
        }
    }

    private sealed class EventBlockDevice(AcpiPm pm) : IBusDevice
    {
        public string Name => "acpi-pm1a-evt";

        public ulong Read(ulong offset, int size)
        {
            if (offset == 0 && size == 4) return pm.ReadEvent16(0) | ((ulong)pm.ReadEvent16(2) << 16);
            if ((offset == 0 || offset == 2) && size == 2) return pm.ReadEvent16((int)offset);
            if (offset < EventBlockLength && size == 1) return (ulong)(pm.ReadEvent16((int)offset & ~1) >> (8 * ((int)offset & 1))) & 0xFF;
            return BusValue.AllOnes(size);
        }

        public void Write(ulong offset, int size, ulong value)
        {
            if (offset == 0 && size == 4)
            {
                pm.WriteEvent16(0, (ushort)value);
                pm.WriteEvent16(2, (ushort)(value >> 16));
            }
            else if ((offset == 0 || offset == 2) && size == 2) pm.WriteEvent16((int)offset, (ushort)value);
            else if (offset < EventBlockLength && size == 1)
            {
                int reg = (int)offset & ~1, shift = 8 * ((int)offset & 1);
                if (reg == 0) pm.WriteEvent16(0, (ushort)((value & 0xFF) << shift)); // W1C: other byte writes 0
                else pm.WriteEvent16(2, (ushort)((pm._pm1En & ~(0xFF << shift)) | (int)((value & 0xFF) << shift)));
            }
            // other widths are not defined by ACPI; ignored
        }
    }

    private sealed class ControlBlockDevice(AcpiPm pm) : IBusDevice
    {
        public string Name => "acpi-pm1a-cnt";

        public ulong Read(ulong offset, int size)
        {
            if (offset == 0 && size == 2) return pm._pm1Cnt;
            if (offset < ControlBlockLength && size == 1) return (ulong)(pm._pm1Cnt >> (8 * (int)offset)) & 0xFF;
            return BusValue.AllOnes(size);
        }

        public void Write(ulong offset, int size, ulong value)
        {
            if (offset == 0 && (size == 2 || size == 4)) pm.WriteControl((ushort)value);
            else if (offset < ControlBlockLength && size == 1)
            {
                int shift = 8 * (int)offset;
                pm.WriteControl((ushort)((pm._pm1Cnt & ~(0xFF << shift)) | (int)((value & 0xFF) << shift)));
            }
        }
    }

    private sealed class TimerDevice(AcpiPm pm) : IBusDevice
    {
        public string Name => "acpi-pm-tmr";

        public ulong Read(ulong offset, int size)
        {
            if (offset >= TimerBlockLength || offset + (ulong)size > TimerBlockLength) return BusValue.AllOnes(size);
            ulong v = pm.TimerValue;
            pm.CatchUp(pm._clock.NowNs);
            return BusValue.Mask(v >> (8 * (int)offset), size);
        }

        public void Write(ulong offset, int size, ulong value) { } // read-only register
    }
}
