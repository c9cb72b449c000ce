// Spec: National Semiconductor / TI PC16550D "Universal Asynchronous Receiver/Transmitter with
// FIFOs" datasheet (register set, interrupt priorities in Table IV, FIFO and timeout rules), plus
// the PC serial-card wiring (OUT2 gates INTRPT onto the ISA IRQ line).
//
// Deliberate deviations:
// - Transmission is instantaneous: a byte written to THR goes to the backend (or, in loopback, to
//   the receiver) at once, so THR, the TX FIFO and the transmit shift register are always empty
//   again by the time the guest can look: LSR.THRE and LSR.TEMT read 1 and the TX FIFO never holds
//   data. The THRE interrupt still drops and re-rises around each THR write, so an edge-triggered
//   PIC sees one edge per byte as on hardware.
// - No line-level errors are ever received (parity, framing, break), so LSR.PE/FE/BI and LSR bit 7
//   stay 0; only overrun (OE) happens. LCR's break bit and the data format are stored and affect
//   only the character-timeout length.
// - The THRE interrupt re-arms when IER.ETBEI goes from 0 to 1 while THR is empty (observed on
//   hardware, relied on by Linux's 8250 UART_BUG_THRE/TXEN probes and by Windows; QEMU does the same).
// - The character timeout is measured on the machine clock from the last received character or
//   RBR read (4 character times at the programmed baud rate and format, stop bits 1.5 counted as 2).
//   A divisor of 0 (not allowed by the datasheet) is treated as 1.
// - In loopback mode the datasheet forces the OUT2 pin inactive, and on a PC OUT2 enables the IRQ
//   driver, so no IRQ reaches the bus while looping back (IIR still reports interrupts). External
//   input is ignored in loopback (SIN is disconnected from the receiver).

using System.Runtime.CompilerServices;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Serial;

/// <summary>Where transmitted bytes go (a console, a file, a socket). Called on the vCPU thread.</summary>
public interface ISerialBackend
{
    void Write(byte value);
}

/// <summary>A backend that drops everything.</summary>
public sealed class NullSerialBackend : ISerialBackend
{
    public void Write(byte value) { }
}

/// <summary>The 16 bytes of the receiver FIFO, as a value type so the state copies by value.</summary>
[InlineArray(Uart16550.FifoSize)]
public struct UartFifoBuffer
{
    private byte _element0;
}

/// <summary>The complete state of a <see cref="Uart16550"/>, for snapshots.</summary>
public struct Uart16550State
{
    public byte Ier, Lcr, Mcr, Fcr, Scr, Dll, Dlm;
    /// <summary>The sticky LSR error bits (OE, PE, FE, BI); DR, THRE and TEMT are derived.</summary>
    public byte LsrErrors;
    /// <summary>MSR bits 0–3 (DCTS, DDSR, TERI, DDCD).</summary>
    public byte MsrDeltas;
    /// <summary>The external modem inputs in MSR positions (CTS 4, DSR 5, RI 6, DCD 7).</summary>
    public byte ModemInputs;
    /// <summary>Last byte read from RBR: what an RBR read with nothing received returns.</summary>
    public byte Rbr;
    public bool ThrInterruptPending, TimeoutPending;
    public UartFifoBuffer RxFifo;
    public int RxHead, RxCount;
    public long LastRxActivityNs;
}

/// <summary>
/// A 16550A UART on 8 byte-wide registers (offsets 0–7). The machine maps it (COM1 0x3F8/IRQ4,
/// COM2 0x2F8/IRQ3, COM3 0x3E8, COM4 0x2E8), feeds input with <see cref="TryReceive"/> or
/// <see cref="Receive"/>, and calls <see cref="OnTime"/> at <see cref="NextDeadlineNs"/> for the
/// character timeout.
/// </summary>
public sealed class Uart16550 : IBusDevice, ITimedDevice, IByteRegisterFile
{
    public const int FifoSize = 16;
    /// <summary>The standard PC UART crystal: 1.8432 MHz, 16 clocks per bit.</summary>
    public const long InputClockHz = 1_843_200;
    public const int RegisterCount = 8;

    // Register offsets.
    private const int RegRbrThrDll = 0, RegIerDlm = 1, RegIirFcr = 2, RegLcr = 3, RegMcr = 4, RegLsr = 5, RegMsr = 6, RegScr = 7;

    private const byte IerErbfi = 0x01, IerEtbei = 0x02, IerElsi = 0x04, IerEdssi = 0x08, IerMask = 0x0F;
    private const byte IirNoInterrupt = 0x01, IirRls = 0x06, IirRda = 0x04, IirCti = 0x0C, IirThre = 0x02, IirModem = 0x00, IirFifosEnabled = 0xC0;
    private const byte FcrEnable = 0x01, FcrRxReset = 0x02, FcrTxReset = 0x04, FcrDmaMode = 0x08, FcrTrigger = 0xC0;
    private const byte LcrWordLength = 0x03, LcrStopBits = 0x04, LcrParityEnable = 0x08, LcrDlab = 0x80;
    private const byte McrDtr = 0x01, McrRts = 0x02, McrOut1 = 0x04, McrOut2 = 0x08, McrLoop = 0x10, McrMask = 0x1F;
    private const byte LsrDr = 0x01, LsrOe = 0x02, LsrThre = 0x20, LsrTemt = 0x40;
    private const byte MsrDcts = 0x01, MsrDdsr = 0x02, MsrTeri = 0x04, MsrDdcd = 0x08, MsrCts = 0x10, MsrDsr = 0x20, MsrRi = 0x40, MsrDcd = 0x80;

    private readonly IIrqLine _irq;
    private readonly ISerialBackend _backend;
    private readonly IClock _clock;
    private Uart16550State _s;
    private bool _irqLevel;

    public Uart16550(IIrqLine irq, ISerialBackend backend, IClock clock, string name = "uart")
    {
        _irq = irq;
        _backend = backend;
        _clock = clock;
        Name = name;
        Reset();
    }

    public string Name { get; }

    /// <summary>The level currently driven on the IRQ line.</summary>
    public bool IrqLevel => _irqLevel;

    /// <summary>Master reset (MR pin): registers to their datasheet reset values.</summary>
    public void Reset()
    {
        _s = default;
        // The divisor latch is undefined after reset; 12 (9600 baud) is what PC BIOSes program.
        _s.Dll = 12;
        // A connected terminal: CTS, DSR and DCD asserted (as QEMU's default).
        _s.ModemInputs = MsrCts | MsrDsr | MsrDcd;
        _s.LastRxActivityNs = _clock.NowNs;
        PushIrq();
    }

    public Uart16550State State
    {
        get => _s;
        set
        {
            _s = value;
            _s.RxHead &= FifoSize - 1;
            _s.RxCount = Math.Clamp(_s.RxCount, 0, FifoSize);
            PushIrq();
        }
    }

    // ---- bus side ----

    // Byte-wide registers: wider accesses become byte cycles (Isa/IsaByteCycles.cs).
    public ulong Read(ulong offset, int size)
    {
        PollTimeout();
        return IsaByteCycles.Read(this, offset, size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        PollTimeout();
        IsaByteCycles.Write(this, offset, size, value);
    }

    int IByteRegisterFile.RegisterCount => RegisterCount;
    byte IByteRegisterFile.ReadRegister(int offset) => ReadRegister(offset);
    void IByteRegisterFile.WriteRegister(int offset, byte value) => WriteRegister(offset, value);

    private byte ReadRegister(int reg)
    {
        bool dlab = (_s.Lcr & LcrDlab) != 0;
        switch (reg)
        {
            case RegRbrThrDll: return dlab ? _s.Dll : ReadRbr();
            case RegIerDlm: return dlab ? _s.Dlm : _s.Ier;
            case RegIirFcr: return ReadIir();
            case RegLcr: return _s.Lcr;
            case RegMcr: return _s.Mcr;
            case RegLsr: return ReadLsr();
            case RegMsr: return ReadMsr();
            default: return _s.Scr;
        }
    }

    private void WriteRegister(int reg, byte value)
    {
        bool dlab = (_s.Lcr & LcrDlab) != 0;
        switch (reg)
        {
            case RegRbrThrDll:
                if (dlab) _s.Dll = value;
                else Transmit(value);
                break;
            case RegIerDlm:
                if (dlab) _s.Dlm = value;
                else WriteIer(value);
                break;
            case RegIirFcr: WriteFcr(value); break;
            // Break and the data format have no effect on an instantaneous, error-free line
            // beyond the character-timeout length, which reads LCR when needed.
            case RegLcr: _s.Lcr = value; break;
            case RegMcr: WriteMcr(value); break;
            // LSR and MSR writes are factory-test functions ("not recommended" in the datasheet):
            // ignored.
            case RegLsr:
            case RegMsr: break;
            default: _s.Scr = value; break;
        }
    }

    private byte ReadRbr()
    {
        if (_s.RxCount > 0)
        {
            _s.Rbr = _s.RxFifo[_s.RxHead];
            _s.RxHead = (_s.RxHead + 1) & (FifoSize - 1);
            _s.RxCount--;
        }
        // A read restarts the timeout timer and clears a timeout indication.
        _s.LastRxActivityNs = _clock.NowNs;
        _s.TimeoutPending = false;
        UpdateIrq();
        return _s.Rbr;
    }

    private byte ReadIir()
    {
        byte id = Identify();
        byte v = (byte)(id | (FifoEnabled ? IirFifosEnabled : 0));
        // Reading IIR clears a THRE interrupt only when THRE is the one being reported.
        if (id == IirThre)
        {
            _s.ThrInterruptPending = false;
            UpdateIrq();
        }
        return v;
    }

    private byte ReadLsr()
    {
        byte v = (byte)(_s.LsrErrors | LsrThre | LsrTemt | (_s.RxCount > 0 ? LsrDr : 0));
        _s.LsrErrors = 0;
        UpdateIrq();
        return v;
    }

    private byte ReadMsr()
    {
        byte v = (byte)(ModemStatus() | _s.MsrDeltas);
        _s.MsrDeltas = 0;
        UpdateIrq();
        return v;
    }

    private void Transmit(byte value)
    {
        // THR is full for an instant: the THRE interrupt drops, so the re-rise below is a new edge.
        _s.ThrInterruptPending = false;
        UpdateIrq();
        if ((_s.Mcr & McrLoop) != 0) ReceiveCharacter(value);
        else _backend.Write(value);
        // Transmission is instantaneous: THR (and the TX FIFO) are empty again.
        _s.ThrInterruptPending = true;
        UpdateIrq();
    }

    private void WriteIer(byte value)
    {
        value &= IerMask; // bits 4–7 are always 0 on a 16550 (Linux checks this to detect the UART)
        byte changed = (byte)(_s.Ier ^ value);
        _s.Ier = value;
        // Enabling ETBEI while THR is empty raises THRE again even if it was cleared by an IIR read.
        if ((changed & IerEtbei) != 0 && (value & IerEtbei) != 0)
            _s.ThrInterruptPending = true;
        UpdateIrq();
    }

    private void WriteFcr(byte value)
    {
        bool wasEnabled = FifoEnabled;
        if ((value & FcrEnable) == 0)
        {
            // Leaving FIFO mode clears both FIFOs; other bits are not programmed without FCR0.
            if (wasEnabled) ClearRx();
            _s.Fcr = 0;
        }
        else
        {
            if (!wasEnabled || (value & FcrRxReset) != 0) ClearRx();
            // FcrTxReset: the TX FIFO is always empty (instantaneous transmission); nothing to clear.
            _s.Fcr = (byte)(value & (FcrEnable | FcrDmaMode | FcrTrigger));
        }
        UpdateIrq();
    }

    private void ClearRx()
    {
        _s.RxCount = 0;
        _s.RxHead = 0;
        _s.TimeoutPending = false;
    }

    private void WriteMcr(byte value)
    {
        byte before = ModemStatus();
        _s.Mcr = (byte)(value & McrMask);
        RecordModemChanges(before, ModemStatus());
        UpdateIrq();
    }

    // ---- machine side ----

    /// <summary>Bytes the receiver can take now without an overrun (0 in loopback mode).</summary>
    public int ReceiveSpace => (_s.Mcr & McrLoop) != 0 ? 0 : RxCapacity - _s.RxCount;

    /// <summary>
    /// Accepts a byte from outside if there is room (hardware flow control as QEMU's can_receive):
    /// returns false and changes nothing otherwise, so the caller keeps the byte.
    /// </summary>
    public bool TryReceive(byte value)
    {
        if (ReceiveSpace <= 0) return false;
        Receive(value);
        return true;
    }

    /// <summary>
    /// A character arrives on SIN whether or not there is room: when the receiver is full this is an
    /// overrun (LSR.OE; in FIFO mode the new character is lost, otherwise it overwrites RBR).
    /// Ignored in loopback mode, where SIN is disconnected.
    /// </summary>
    public void Receive(byte value)
    {
        PollTimeout();
        if ((_s.Mcr & McrLoop) != 0) return;
        ReceiveCharacter(value);
    }

    /// <summary>Sets the external modem-status inputs; changes raise the MSR delta bits.</summary>
    public void SetModemInputs(bool cts, bool dsr, bool ri, bool dcd)
    {
        byte before = ModemStatus();
        _s.ModemInputs = (byte)((cts ? MsrCts : 0) | (dsr ? MsrDsr : 0) | (ri ? MsrRi : 0) | (dcd ? MsrDcd : 0));
        RecordModemChanges(before, ModemStatus());
        UpdateIrq();
    }

    public long NextDeadlineNs =>
        TimeoutRunning ? _s.LastRxActivityNs + CharacterTimeoutNs : long.MaxValue;

    public void OnTime(long nowNs) => PollTimeout();

    /// <summary>Four character times at the current divisor and data format.</summary>
    public long CharacterTimeoutNs
    {
        get
        {
            int bits = 1 + 5 + (_s.Lcr & LcrWordLength) + ((_s.Lcr & LcrParityEnable) != 0 ? 1 : 0) + ((_s.Lcr & LcrStopBits) != 0 ? 2 : 1);
            int divisor = _s.Dll | (_s.Dlm << 8);
            if (divisor == 0) divisor = 1;
            return 4L * bits * divisor * 16 * 1_000_000_000 / InputClockHz;
        }
    }

    // ---- internals ----

    private bool FifoEnabled => (_s.Fcr & FcrEnable) != 0;
    private int RxCapacity => FifoEnabled ? FifoSize : 1;

    private int RxTriggerLevel => (_s.Fcr >> 6) switch { 0 => 1, 1 => 4, 2 => 8, _ => 14 };

    private bool TimeoutRunning => FifoEnabled && _s.RxCount > 0 && !_s.TimeoutPending;

    private void ReceiveCharacter(byte value)
    {
        if (_s.RxCount >= RxCapacity)
        {
            _s.LsrErrors |= LsrOe;
            // Without FIFOs the new character overwrites RBR; with FIFOs it is lost in the shift register.
            if (!FifoEnabled) _s.RxFifo[_s.RxHead] = value;
        }
        else
        {
            _s.RxFifo[(_s.RxHead + _s.RxCount) & (FifoSize - 1)] = value;
            _s.RxCount++;
        }
        _s.LastRxActivityNs = _clock.NowNs;
        _s.TimeoutPending = false;
        UpdateIrq();
    }

    private void PollTimeout()
    {
        if (TimeoutRunning && _clock.NowNs - _s.LastRxActivityNs >= CharacterTimeoutNs)
        {
            _s.TimeoutPending = true;
            UpdateIrq();
        }
    }

    /// <summary>MSR bits 4–7: the modem inputs, or in loopback the MCR outputs wired back.</summary>
    private byte ModemStatus()
    {
        if ((_s.Mcr & McrLoop) == 0) return _s.ModemInputs;
        int m = _s.Mcr;
        return (byte)(((m & McrRts) != 0 ? MsrCts : 0) | ((m & McrDtr) != 0 ? MsrDsr : 0)
            | ((m & McrOut1) != 0 ? MsrRi : 0) | ((m & McrOut2) != 0 ? MsrDcd : 0));
    }

    private void RecordModemChanges(byte before, byte after)
    {
        int changed = before ^ after;
        if ((changed & MsrCts) != 0) _s.MsrDeltas |= MsrDcts;
        if ((changed & MsrDsr) != 0) _s.MsrDeltas |= MsrDdsr;
        if ((changed & MsrDcd) != 0) _s.MsrDeltas |= MsrDdcd;
        // TERI: trailing edge of RI only (RI went from active to inactive).
        if ((before & MsrRi) != 0 && (after & MsrRi) == 0) _s.MsrDeltas |= MsrTeri;
    }

    /// <summary>The highest-priority pending, enabled interrupt as its IIR code (datasheet Table IV).</summary>
    private byte Identify()
    {
        if ((_s.Ier & IerElsi) != 0 && _s.LsrErrors != 0) return IirRls;
        if ((_s.Ier & IerErbfi) != 0 && _s.RxCount > 0)
        {
            if (!FifoEnabled || _s.RxCount >= RxTriggerLevel) return IirRda;
            if (_s.TimeoutPending) return IirCti;
        }
        if ((_s.Ier & IerEtbei) != 0 && _s.ThrInterruptPending) return IirThre;
        if ((_s.Ier & IerEdssi) != 0 && _s.MsrDeltas != 0) return IirModem;
        return IirNoInterrupt;
    }

    /// <summary>
    /// The one place that computes the IRQ level (as QEMU's serial_update_irq): an interrupt is
    /// pending and the OUT2 pin enables the PC's IRQ driver.
    /// </summary>
    private void UpdateIrq()
    {
        bool level = ComputeIrqLevel();
        if (level == _irqLevel) return;
        _irqLevel = level;
        _irq.SetLevel(level);
    }

    private void PushIrq()
    {
        _irqLevel = ComputeIrqLevel();
        _irq.SetLevel(_irqLevel);
    }

    private bool ComputeIrqLevel()
    {
        bool out2Active = (_s.Mcr & (McrOut2 | McrLoop)) == McrOut2;
        return out2Active && Identify() != IirNoInterrupt;
    }
}
