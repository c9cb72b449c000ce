// Intel 8042 keyboard controller of the IBM PC/AT with a PS/2 (MF2) keyboard and a PS/2 mouse
// behind it — the behaviour Linux's i8042/atkbd/psmouse drivers and SeaBIOS's ps2port.c rely on.
// Offsets: 0 = data (port 0x60), 4 = status/command (port 0x64); the machine maps both ports.
//
// Controller: command byte (0x20/0x60), self test 0xAA → 0x55, interface tests 0xAB/0xA9 → 0x00,
// 0xAD/0xAE keyboard disable/enable, 0xA7/0xA8 aux disable/enable, 0xC0 input port, 0xD0/0xD1 output
// port (bit 0 system reset, active low; bit 1 A20 gate), 0xD2/0xD3 write keyboard/aux output buffer,
// 0xD4 write to aux device, 0xDD/0xDF A20 off/on (common chipset extension), 0xF0–0xFF pulse output
// port lines (bit 0 clear = reset pulse). Status: OBF, IBF (always 0: commands complete at once),
// SYS, A2 (last write was a command), INH (1 = keyboard not inhibited), AUXB (output is mouse data).
// Translation (command byte bit 6) converts keyboard bytes from set 2 to set 1 with the 8042's
// table, including the 0xF0 break prefix, for every keyboard byte as the real part does.
//
// Keyboard: 0xFF reset → FA AA, 0xF2 identify → FA AB 83, 0xF4/0xF5/0xF6, 0xED LEDs, 0xEE echo,
// 0xF0 scancode set (get/set), 0xF3 typematic, anything else → FA. Scancodes come from the
// machine through EnqueueScancode in the keyboard's current set (ScancodeSet says which).
// Aux: a minimal standard PS/2 mouse (ID 0x00, stream mode, no wheel), so Linux's psmouse finds a
// "PS/2 Generic Mouse"; it moves only when the machine calls EnqueueMouseMovement.
//
// Deliberate deviations: bytes move through the output buffer one at a time with no serial-line
// timing; parity and time-out errors never happen; the keyboard and mouse FIFOs hold 16 bytes as on
// the devices but overflowing bytes are dropped instead of an overrun code.
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Input;

public sealed class I8042 : IBusDevice, IByteRegisterFile
{
    public const ulong DataOffset = 0, StatusCommandOffset = 4;

    // Status register bits.
    public const byte StatusObf = 0x01, StatusIbf = 0x02, StatusSys = 0x04, StatusA2 = 0x08,
        StatusInh = 0x10, StatusAuxb = 0x20, StatusTimeout = 0x40, StatusParity = 0x80;

    // Command byte bits.
    public const byte CtrKbdInt = 0x01, CtrAuxInt = 0x02, CtrSys = 0x04, CtrKbdDis = 0x10,
        CtrAuxDis = 0x20, CtrXlate = 0x40;

    // Output port bits.
    public const byte OutResetN = 0x01, OutA20 = 0x02, OutKbdObf = 0x10, OutAuxObf = 0x20;

    private const int FifoSize = 16;

    private readonly IIrqLine _irq1;
    private readonly IIrqLine? _irq12;
    private readonly Action _resetRequest;
    private readonly Action<bool> _a20Changed;

    // Controller state.
    private byte _commandByte;
    private byte _status;
    private byte _outputPort;
    private byte _outputBuffer;
    private byte _pendingCommand; // controller command waiting for its data byte, 0 = none
    private bool _irq1High, _irq12High;
    private readonly ByteFifo _controllerQueue = new(FifoSize);
    private readonly ByteFifo _auxControllerQueue = new(FifoSize); // 0xD3 loop-back bytes

    // Keyboard state.
    private readonly ByteFifo _kbdQueue = new(FifoSize);
    private byte _kbdPendingCommand;
    private bool _kbdScanning = true;
    private bool _xlateBreak; // the translator saw 0xF0

    // Mouse state.
    private readonly ByteFifo _auxQueue = new(FifoSize);
    private byte _auxPendingCommand;
    private bool _auxReporting, _auxRemote, _auxWrap, _auxScale21;
    private byte _auxResolution = 2, _auxSampleRate = 100;

    public I8042(IIrqLine irq1, Action resetRequest, Action<bool> a20Changed, IIrqLine? irq12 = null)
    {
        _irq1 = irq1;
        _irq12 = irq12;
        _resetRequest = resetRequest;
        _a20Changed = a20Changed;
        Reset();
    }

    public string Name => "i8042";

    /// <summary>Keyboard LED state from the last 0xED command: bit 0 Scroll, 1 Num, 2 Caps Lock.</summary>
    public byte Leds { get; private set; }
    /// <summary>The keyboard's scancode set (1, 2 or 3) that EnqueueScancode input must use.</summary>
    public int ScancodeSet { get; private set; } = 2;
    public byte CommandByte => _commandByte;
    public bool A20 => (_outputPort & OutA20) != 0;

    /// <summary>Controller state after power-on, as QEMU: both interrupts enabled, A20 on, reset line high.</summary>
    public void Reset()
    {
        _commandByte = CtrKbdInt | CtrAuxInt;
        _status = StatusInh | StatusA2;
        _outputPort = 0xCC | OutA20 | OutResetN; // 0xCC: keyboard clock/data lines idle high
        _pendingCommand = 0;
        _controllerQueue.Clear();
        _auxControllerQueue.Clear();
        ResetKeyboard();
        _kbdQueue.Clear();
        ResetMouse();
        _auxQueue.Clear();
        _xlateBreak = false;
        _status &= unchecked((byte)~(StatusObf | StatusAuxb));
        UpdateIrq();
    }

    private void ResetKeyboard()
    {
        _kbdScanning = true;
        ScancodeSet = 2;
        Leds = 0;
        _kbdPendingCommand = 0;
    }

    private void ResetMouse()
    {
        _auxReporting = false;
        _auxRemote = false;
        _auxWrap = false;
        _auxScale21 = false;
        _auxResolution = 2;
        _auxSampleRate = 100;
        _auxPendingCommand = 0;
    }

    // ---- machine input ------------------------------------------------------------------------

    /// <summary>A byte from the keyboard (in its current scancode set). Dropped while scanning is off.</summary>
    public void EnqueueScancode(byte code)
    {
        if (!_kbdScanning) return;
        _kbdQueue.TryEnqueue(code);
        Refill();
    }

    /// <summary>A mouse movement (standard 3-byte PS/2 packet); dropped unless the guest enabled reporting.</summary>
    public void EnqueueMouseMovement(int dx, int dy, bool left = false, bool right = false, bool middle = false)
    {
        if (!_auxReporting || _auxRemote || _auxQueue.Free < 3) return;
        dx = Math.Clamp(dx, -255, 255);
        dy = Math.Clamp(dy, -255, 255);
        byte b = (byte)(0x08 | (left ? 1 : 0) | (right ? 2 : 0) | (middle ? 4 : 0) | (dx < 0 ? 0x10 : 0) | (dy < 0 ? 0x20 : 0));
        _auxQueue.TryEnqueue(b);
        _auxQueue.TryEnqueue((byte)dx);
        _auxQueue.TryEnqueue((byte)dy);
        Refill();
    }

    // ---- bus ----------------------------------------------------------------------------------

    // Offsets 0 (data) and 4 (status/command) are byte-wide ports, 1–3 are not decoded: wider
    // accesses become byte cycles (Isa/IsaByteCycles.cs), so the bytes above a data or status read
    // float high and the upper bytes of a wide write are dropped.
    public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

    public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

    int IByteRegisterFile.RegisterCount => (int)StatusCommandOffset + 1;

    byte IByteRegisterFile.ReadRegister(int offset) => offset switch
    {
        (int)DataOffset => ReadData(),
        (int)StatusCommandOffset => _status,
        _ => IsaByteCycles.Floating,
    };

    void IByteRegisterFile.WriteRegister(int offset, byte value)
    {
        if (offset == (int)DataOffset) WriteData(value);
        else if (offset == (int)StatusCommandOffset) WriteCommand(value);
        // offsets 1–3 are not decoded by the 8042
    }

    private byte ReadData()
    {
        // With OBF clear the last byte is read again (EMM386 and others depend on that).
        byte value = _outputBuffer;
        if ((_status & StatusObf) != 0)
        {
            _status &= unchecked((byte)~(StatusObf | StatusAuxb));
            UpdateIrq();
            Refill(); // the next waiting byte moves in at once: a new edge on IRQ1/IRQ12
        }
        return value;
    }

    private void WriteCommand(byte cmd)
    {
        _status |= StatusA2;
        _pendingCommand = 0;
        switch (cmd)
        {
            case 0x20: // read command byte
                QueueController(_commandByte);
                break;
            case 0x60: // write command byte
            case 0xD1: // write output port
            case 0xD2: // write keyboard output buffer
            case 0xD3: // write aux output buffer
            case 0xD4: // write to aux device
                _pendingCommand = cmd;
                break;
            case 0xA1: // controller firmware version (AMI); answer something harmless
                QueueController(0x00);
                break;
            case 0xA4: // password installed? 0xF1 = no
                QueueController(0xF1);
                break;
            case 0xA7:
                _commandByte |= CtrAuxDis;
                break;
            case 0xA8:
                _commandByte &= unchecked((byte)~CtrAuxDis);
                Refill();
                break;
            case 0xA9: // aux interface test: 0 = no error
            case 0xAB: // keyboard interface test: 0 = no error
                QueueController(0x00);
                break;
            case 0xAA: // self test passes and sets the system flag
                _status |= StatusSys;
                QueueController(0x55);
                break;
            case 0xAD:
                _commandByte |= CtrKbdDis;
                break;
            case 0xAE:
                _commandByte &= unchecked((byte)~CtrKbdDis);
                Refill();
                break;
            case 0xC0: // input port: bit 7 = keyboard not inhibited
                QueueController(0x80);
                break;
            case 0xD0: // read output port, with the live buffer-full bits
            {
                byte v = (byte)(_outputPort & ~(OutKbdObf | OutAuxObf));
                if ((_status & StatusObf) != 0) v |= (_status & StatusAuxb) != 0 ? OutAuxObf : OutKbdObf;
                QueueController(v);
                break;
            }
            case 0xDD:
                SetOutputPort((byte)(_outputPort & ~OutA20));
                break;
            case 0xDF:
                SetOutputPort((byte)(_outputPort | OutA20));
                break;
            case 0xE0: // test inputs: clock and data low
                QueueController(0x00);
                break;
            default:
                if (cmd >= 0xF0)
                {
                    // Pulse the output-port lines whose bit is 0; only bit 0 (reset) is wired.
                    if ((cmd & OutResetN) == 0) _resetRequest();
                }
                // Anything else is an unsupported command: the 8042 ignores it.
                break;
        }
    }

    private void WriteData(byte value)
    {
        _status &= unchecked((byte)~StatusA2);
        byte cmd = _pendingCommand;
        _pendingCommand = 0;
        switch (cmd)
        {
            case 0x60:
                _commandByte = (byte)(value & 0x7F); // bit 7 is reserved, reads 0
                _status = (byte)((_status & ~StatusSys) | (value & CtrSys));
                UpdateIrq();
                Refill();
                break;
            case 0xD1:
                SetOutputPort(value);
                break;
            case 0xD2:
                QueueController(value);
                break;
            case 0xD3:
                _auxControllerQueue.TryEnqueue(value);
                Refill();
                break;
            case 0xD4:
                // Writing to the mouse re-enables the aux clock, as on real controllers (and QEMU).
                _commandByte &= unchecked((byte)~CtrAuxDis);
                MouseCommand(value);
                Refill();
                break;
            default:
                // Sending to the keyboard re-enables the keyboard interface.
                _commandByte &= unchecked((byte)~CtrKbdDis);
                KeyboardCommand(value);
                Refill();
                break;
        }
    }

    private void SetOutputPort(byte value)
    {
        bool oldA20 = (_outputPort & OutA20) != 0;
        _outputPort = value;
        bool newA20 = (value & OutA20) != 0;
        if (oldA20 != newA20) _a20Changed(newA20);
        if ((value & OutResetN) == 0)
        {
            // The reset line is active low; the CPU resets, the controller keeps running with the line high again.
            _outputPort |= OutResetN;
            _resetRequest();
        }
    }

    // ---- keyboard -----------------------------------------------------------------------------

    private void KeyboardCommand(byte value)
    {
        byte pending = _kbdPendingCommand;
        _kbdPendingCommand = 0;
        switch (pending)
        {
            case 0xED: // LED bits
                Leds = (byte)(value & 0x07);
                KeyboardReply(0xFA);
                return;
            case 0xF3: // typematic rate/delay: accepted, not modelled (no key repeat is generated here)
                KeyboardReply(0xFA);
                return;
            case 0xF0:
                if (value == 0)
                {
                    KeyboardReply(0xFA);
                    KeyboardReply((byte)ScancodeSet);
                }
                else if (value <= 3)
                {
                    ScancodeSet = value;
                    KeyboardReply(0xFA);
                }
                else KeyboardReply(0xFE);
                return;
        }
        switch (value)
        {
            case 0xED:
            case 0xF0:
            case 0xF3:
                _kbdPendingCommand = value;
                KeyboardReply(0xFA);
                break;
            case 0xEE:
                KeyboardReply(0xEE);
                break;
            case 0xF2: // identify: MF2 keyboard
                KeyboardReply(0xFA);
                KeyboardReply(0xAB);
                KeyboardReply(0x83);
                break;
            case 0xF4:
                _kbdScanning = true;
                KeyboardReply(0xFA);
                break;
            case 0xF5: // default and disable
                _kbdQueue.Clear();
                ResetKeyboard();
                _kbdScanning = false;
                KeyboardReply(0xFA);
                break;
            case 0xF6: // default and enable
                _kbdQueue.Clear();
                ResetKeyboard();
                KeyboardReply(0xFA);
                break;
            case 0xFF: // reset: ACK, then BAT completion
                _kbdQueue.Clear();
                ResetKeyboard();
                KeyboardReply(0xFA);
                KeyboardReply(0xAA);
                break;
            default:
                // 0xFE (resend) and the set-3 key-type commands: acknowledged, no effect.
                KeyboardReply(0xFA);
                break;
        }
    }

    private void KeyboardReply(byte b) => _kbdQueue.TryEnqueue(b);

    // ---- mouse --------------------------------------------------------------------------------

    private void MouseCommand(byte value)
    {
        byte pending = _auxPendingCommand;
        _auxPendingCommand = 0;
        if (pending == 0xE8) { _auxResolution = (byte)(value & 3); MouseReply(0xFA); return; }
        if (pending == 0xF3) { _auxSampleRate = value; MouseReply(0xFA); return; }
        if (_auxWrap && value != 0xEC && value != 0xFF)
        {
            MouseReply(value); // wrap (echo) mode
            return;
        }
        switch (value)
        {
            case 0xE6: _auxScale21 = false; MouseReply(0xFA); break;
            case 0xE7: _auxScale21 = true; MouseReply(0xFA); break;
            case 0xE8:
            case 0xF3:
                _auxPendingCommand = value;
                MouseReply(0xFA);
                break;
            case 0xE9: // status request
                MouseReply(0xFA);
                MouseReply((byte)((_auxRemote ? 0x40 : 0) | (_auxReporting ? 0x20 : 0) | (_auxScale21 ? 0x10 : 0)));
                MouseReply(_auxResolution);
                MouseReply(_auxSampleRate);
                break;
            case 0xEA: _auxRemote = false; MouseReply(0xFA); break;
            case 0xEB: // read data: an empty movement packet
                MouseReply(0xFA);
                MouseReply(0x08); MouseReply(0x00); MouseReply(0x00);
                break;
            case 0xEC: _auxWrap = false; MouseReply(0xFA); break;
            case 0xEE: _auxWrap = true; MouseReply(0xFA); break;
            case 0xF0: _auxRemote = true; MouseReply(0xFA); break;
            case 0xF2: MouseReply(0xFA); MouseReply(0x00); break; // device ID 0: standard PS/2 mouse
            case 0xF4: _auxReporting = true; MouseReply(0xFA); break;
            case 0xF5: _auxReporting = false; MouseReply(0xFA); break;
            case 0xF6: ResetMouse(); MouseReply(0xFA); break;
            case 0xFF:
                _auxQueue.Clear();
                ResetMouse();
                MouseReply(0xFA); MouseReply(0xAA); MouseReply(0x00);
                break;
            default:
                MouseReply(0xFE); // resend: not a command this mouse knows
                break;
        }
    }

    private void MouseReply(byte b) => _auxQueue.TryEnqueue(b);

    // ---- output buffer ------------------------------------------------------------------------

    private void QueueController(byte b)
    {
        _controllerQueue.TryEnqueue(b);
        Refill();
    }

    /// <summary>Moves the next waiting byte into the empty output buffer: controller, keyboard, then mouse.</summary>
    private void Refill()
    {
        while ((_status & StatusObf) == 0)
        {
            if (_controllerQueue.TryDequeue(out byte b))
            {
                Fill(b, aux: false);
            }
            else if (_auxControllerQueue.TryDequeue(out b))
            {
                Fill(b, aux: true);
            }
            else if ((_commandByte & CtrKbdDis) == 0 && _kbdQueue.TryDequeue(out b))
            {
                if ((_commandByte & CtrXlate) != 0)
                {
                    if (b == 0xF0) { _xlateBreak = true; continue; } // the next byte carries the break bit
                    b = TranslateSet2ToSet1[b];
                    if (_xlateBreak) { b |= 0x80; _xlateBreak = false; }
                }
                Fill(b, aux: false);
            }
            else if ((_commandByte & CtrAuxDis) == 0 && _auxQueue.TryDequeue(out b))
            {
                Fill(b, aux: true);
            }
            else break;
        }
    }

    private void Fill(byte b, bool aux)
    {
        _outputBuffer = b;
        _status |= StatusObf;
        if (aux) _status |= StatusAuxb;
        else _status &= unchecked((byte)~StatusAuxb);
        UpdateIrq();
    }

    /// <summary>IRQ1/IRQ12 follow OBF for their source when the command byte enables them (one place).</summary>
    private void UpdateIrq()
    {
        bool full = (_status & StatusObf) != 0;
        bool aux = (_status & StatusAuxb) != 0;
        bool irq1 = full && !aux && (_commandByte & CtrKbdInt) != 0;
        bool irq12 = full && aux && (_commandByte & CtrAuxInt) != 0;
        if (irq1 != _irq1High) { _irq1High = irq1; _irq1.SetLevel(irq1); }
        if (irq12 != _irq12High) { _irq12High = irq12; _irq12?.SetLevel(irq12); }
    }

    /// <summary>The 8042's set 2 → set 1 translation table (bytes 0x80 and up pass through except 0x83, 0x84).</summary>
    private static ReadOnlySpan<byte> TranslateSet2ToSet1 =>
    [
        0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59,
        0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b,
        0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d,
        0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f,
        0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61,
        0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76,
        0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f,
        0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
        0x80, 0x81, 0x82, 0x41, 0x54, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
        0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f,
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
        0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
        0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
        0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
        0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
        0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
    ];

    /// <summary>A fixed-size byte ring; no allocation after construction.</summary>
    private sealed class ByteFifo(int capacity)
    {
        private readonly byte[] _data = new byte[capacity];
        private int _head, _count;

        public int Count => _count;
        public int Free => _data.Length - _count;

        public void Clear() { _head = 0; _count = 0; }

        public bool TryEnqueue(byte b)
        {
            if (_count == _data.Length) return false;
            _data[(_head + _count) % _data.Length] = b;
            _count++;
            return true;
        }

        public bool TryDequeue(out byte b)
        {
            if (_count == 0) { b = 0; return false; }
            b = _data[_head];
            _head = (_head + 1) % _data.Length;
            _count--;
            return true;
        }
    }
}
