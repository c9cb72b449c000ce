// ACPI fixed-hardware power management registers (ACPI 6.5 §4.8.3): the PM1a event block
// (PM1_STS at +0, PM1_EN at +2), the PM1a control block (PM1_CNT, 2 bytes) and the PM timer
// (PM_TMR, 24-bit, 3.579545 MHz). Each block is its own IBusDevice so the machine can place them
// where the FADT says; the suggested layout matches QEMU's PIIX4 PM at base 0x600:
//   PM1a_EVT_BLK 0x600 (len 4), PM1a_CNT_BLK 0x604 (len 2), PM_TMR_BLK 0x608 (len 4), SCI on IRQ 9.
// PM1_STS bits are write-1-to-clear; the SCI is a level: high while SCI_EN and any (STS & EN) bit.
// Writing PM1_CNT with SLP_EN (bit 13) and SLP_TYP (bits 12–10) equal to the configured S5 value
// requests power off; other sleep types are not supported and the write is ignored (the DSDT's _S5
// must name the same SLP_TYP). SLP_EN reads 0 (write-only).
// Any access width works the same way in every block: byte lane by byte lane (see "register access").
// Deliberate deviations: SCI_EN is 1 from reset — the FADT must give SMI_CMD = 0, meaning the
// platform is always in ACPI mode; no PM1b blocks, no GPE blocks, TMR_VAL_EXT = 0 (24-bit timer).
// The reset register is the PIIX3 RCR at 0xCF9 (PciConfigIo), value 0x06.
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Isa;

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
    /// <summary>PM_TMR_BLK: the 24-bit timer value (offset 0, read-only; software reads it as a dword).</summary>
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
    // The blocks are little-endian 16-bit (PM1) and 32-bit (PM_TMR) registers on the I/O bus; like
    // the 8-bit ports, any access is carried out byte lane by byte lane (Isa/IsaByteCycles.cs), so
    // every width and alignment inside a block means the same thing: a byte, word or dword access
    // reads or writes exactly the register bytes it covers, bytes past the block read 0xFF and are
    // dropped. Byte lanes compose exactly here: PM1_STS is write-1-to-clear per bit, PM1_EN and
    // PM1_CNT keep the bytes an access does not cover, and SLP_TYP and SLP_EN share PM1_CNT's high
    // byte, so a sleep request is never split.

    private byte ReadEventByte(int offset)
    {
        ushort reg = offset < 2 ? Pm1Status : _pm1En;
        return (byte)(reg >> (8 * (offset & 1)));
    }

    private void WriteEventByte(int offset, byte value)
    {
        CatchUp(_clock.NowNs);
        int shift = 8 * (offset & 1);
        if (offset < 2) _pm1Sts &= (ushort)~((value << shift) & StsMask); // write 1 to clear
        else _pm1En = (ushort)(((_pm1En & ~(0xFF << shift)) | (value << shift)) & EnMask);
        UpdateSci();
    }

    private void WriteControlByte(int offset, byte value)
    {
        int shift = 8 * offset;
        WriteControl((ushort)((_pm1Cnt & ~(0xFF << shift)) | (value << shift)));
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

    private sealed class EventBlockDevice(AcpiPm pm) : IBusDevice, IByteRegisterFile
    {
        public string Name => "acpi-pm1a-evt";
        public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);
        public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);
        public int RegisterCount => EventBlockLength;
        public byte ReadRegister(int offset) => pm.ReadEventByte(offset);
        public void WriteRegister(int offset, byte value) => pm.WriteEventByte(offset, value);
    }

    private sealed class ControlBlockDevice(AcpiPm pm) : IBusDevice, IByteRegisterFile
    {
        public string Name => "acpi-pm1a-cnt";
        public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);
        public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);
        public int RegisterCount => ControlBlockLength;
        public byte ReadRegister(int offset) => (byte)(pm._pm1Cnt >> (8 * offset));
        public void WriteRegister(int offset, byte value) => pm.WriteControlByte(offset, value);
    }

    private sealed class TimerDevice(AcpiPm pm) : IBusDevice, IByteRegisterFile
    {
        /// <summary>The timer value of the read in progress: all byte lanes of one read see one value.</summary>
        private uint _latched;

        public string Name => "acpi-pm-tmr";

        public ulong Read(ulong offset, int size)
        {
            _latched = pm.TimerValue; // bits 24–31 read 0 (TMR_VAL_EXT = 0)
            pm.CatchUp(pm._clock.NowNs);
            return IsaByteCycles.Read(this, offset, size);
        }

        public void Write(ulong offset, int size, ulong value) { } // read-only register: writes are ignored

        public int RegisterCount => TimerBlockLength;
        public byte ReadRegister(int offset) => (byte)(_latched >> (8 * offset));
        public void WriteRegister(int offset, byte value) { }
    }
}
