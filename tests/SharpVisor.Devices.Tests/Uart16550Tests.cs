using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Serial;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>16550A behaviour through its registers (PC16550D datasheet; Linux 8250 and SeaBIOS sequences).</summary>
public sealed class Uart16550Tests
{
    // Register offsets and bits, as in Linux's include/uapi/linux/serial_reg.h.
    private const int RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

    private sealed class RecordingBackend : ISerialBackend
    {
        public readonly List<byte> Bytes = new();
        public void Write(byte value) => Bytes.Add(value);
    }

    private readonly ManualClock _clock = new();
    private readonly NullIrqLine _irq = new();
    private readonly RecordingBackend _out = new();
    private readonly Uart16550 _uart;

    public Uart16550Tests() => _uart = new Uart16550(_irq, _out, _clock);

    private byte In(int reg) => (byte)_uart.Read((ulong)reg, 1);
    private void Out(int reg, byte value) => _uart.Write((ulong)reg, 1, value);

    [Fact]
    public void ResetValues()
    {
        Assert.Equal(0x00, In(IER));
        Assert.Equal(0x01, In(IIR)); // no interrupt pending, FIFOs off
        Assert.Equal(0x00, In(LCR));
        Assert.Equal(0x00, In(MCR));
        Assert.Equal(0x60, In(LSR)); // THRE | TEMT
        Assert.Equal(0xB0, In(MSR)); // DCD | DSR | CTS of a connected line, no deltas
        Assert.False(_irq.Level);
    }

    [Fact]
    public void ScratchRegisterHoldsAnyValue()
    {
        Out(SCR, 0xA5);
        Assert.Equal(0xA5, In(SCR));
        Out(SCR, 0x5A);
        Assert.Equal(0x5A, In(SCR));
    }

    [Fact]
    public void DlabSelectsDivisorLatch()
    {
        Out(IER, 0x05);
        Out(LCR, 0x83);
        Out(DLL, 0x01);
        Out(DLM, 0x02);
        Assert.Equal(0x01, In(DLL));
        Assert.Equal(0x02, In(DLM));
        Assert.Empty(_out.Bytes); // DLL writes do not transmit
        Out(LCR, 0x03);
        Assert.Equal(0x05, In(IER)); // IER untouched by DLM write
        Assert.Equal(0x03, In(LCR));
        Out(LCR, 0x83);
        Assert.Equal(0x01, In(DLL));
    }

    [Fact]
    public void IerUpperBitsReadZero()
    {
        // Linux autoconfig: IER=0 reads 0, IER=0x0F reads 0x0F; the XScale UUE probe needs bit 6 to stay 0.
        Out(IER, 0);
        Assert.Equal(0, In(IER) & 0x0F);
        Out(IER, 0x0F);
        Assert.Equal(0x0F, In(IER));
        Out(IER, 0xFF);
        Assert.Equal(0x0F, In(IER));
    }

    [Fact]
    public void TransmitGoesToBackendInstantly()
    {
        Out(THR, (byte)'h');
        Out(THR, (byte)'i');
        Assert.Equal("hi"u8.ToArray(), _out.Bytes);
        Assert.Equal(0x60, In(LSR) & 0x60);
    }

    [Fact]
    public void EarlyConsoleInitAndPolledOutput()
    {
        // Linux early_serial8250 / SeaBIOS: 8N1, interrupts off, FIFOs off, DTR|RTS, divisor 1 (115200).
        Out(LCR, 0x03);
        Out(IER, 0x00);
        Out(FCR, 0x00);
        Out(MCR, 0x03);
        Out(LCR, 0x83);
        Out(DLL, 1);
        Out(DLM, 0);
        Out(LCR, 0x03);
        foreach (byte b in "ok\n"u8)
        {
            Assert.Equal(0x60, In(LSR) & 0x60); // SeaBIOS waits for (lsr & 0x60) == 0x60
            Out(THR, b);
        }
        Assert.Equal("ok\n"u8.ToArray(), _out.Bytes);
        Assert.False(_irq.Level);
    }

    [Fact]
    public void LoopbackMirrorsMcrIntoMsr()
    {
        // Linux autoconfig loopback test: MCR = LOOP|OUT2|RTS must read MSR status = DCD|CTS.
        Out(MCR, 0x1A);
        Assert.Equal(0x90, In(MSR) & 0xF0);
        Out(MCR, 0x15); // LOOP|OUT1|DTR → RI|DSR
        Assert.Equal(0x60, In(MSR) & 0xF0);
    }

    [Fact]
    public void LoopbackSendsTransmitterToReceiver()
    {
        Out(MCR, 0x10);
        Out(THR, 0x42);
        Assert.Empty(_out.Bytes);
        Assert.Equal(0x01, In(LSR) & 0x01);
        Assert.Equal(0x42, In(RBR));
        Assert.Equal(0x00, In(LSR) & 0x01);
        // External input is disconnected in loopback.
        Assert.Equal(0, _uart.ReceiveSpace);
        Assert.False(_uart.TryReceive(0x99));
        _uart.Receive(0x99);
        Assert.Equal(0x00, In(LSR) & 0x01);
    }

    [Fact]
    public void MsrDeltaBitsAndModemStatusInterrupt()
    {
        Out(IER, 0x08);
        Out(MCR, 0x08); // OUT2: IRQ enabled
        In(MSR);
        _uart.SetModemInputs(cts: false, dsr: true, ri: true, dcd: true);
        Assert.Equal(0x00, In(IIR) & 0x0F); // modem status interrupt, IIR id 0
        Assert.True(_irq.Level);
        Assert.Equal(0xE1, In(MSR)); // DCD|RI|DSR present, CTS dropped: DCTS
        Assert.Equal(0x01, In(IIR) & 0x0F); // reading MSR cleared it
        Assert.False(_irq.Level);
        // TERI only on the trailing edge of RI.
        _uart.SetModemInputs(cts: false, dsr: true, ri: false, dcd: true);
        Assert.Equal(0x04, In(MSR) & 0x0F);
        _uart.SetModemInputs(cts: false, dsr: true, ri: true, dcd: true);
        Assert.Equal(0x00, In(MSR) & 0x0F);
    }

    [Fact]
    public void SeaBiosDetectSerial()
    {
        // SeaBIOS detect_serial: IER=2 reads back 2 and IIR & 0x3f == 2 (THRE interrupt), then IER=0.
        Out(IER, 0x02);
        Assert.Equal(0x02, In(IER));
        Assert.Equal(0x02, In(IIR) & 0x3F);
        Out(IER, 0x00);
        Assert.Equal(0x01, In(IIR) & 0x3F);
    }

    [Fact]
    public void ThreInterruptReArmsOnIerWrite()
    {
        // Linux serial8250_do_startup UART_BUG_THRE probe.
        Out(IER, 0x02);
        byte iir1 = In(IIR);
        Out(IER, 0x00);
        Out(IER, 0x02);
        byte iir = In(IIR);
        Out(IER, 0x00);
        Assert.Equal(0, iir1 & 0x01);
        Assert.Equal(0, iir & 0x01);
        Assert.Equal(0x02, iir & 0x0F);
    }

    [Fact]
    public void IirReadClearsThreOnlyWhenReported()
    {
        Out(IER, 0x02);
        Assert.Equal(0x02, In(IIR) & 0x0F);
        Assert.Equal(0x01, In(IIR) & 0x0F); // cleared by the read
        Out(THR, 1);
        Assert.Equal(0x02, In(IIR) & 0x0F); // transmitter empty again

        // With a receive interrupt reported first, THRE survives the IIR read.
        Out(IER, 0x03);
        Out(THR, 2); // THRE pending again
        _uart.Receive(7);
        Assert.Equal(0x04, In(IIR) & 0x0F);
        In(RBR);
        Assert.Equal(0x02, In(IIR) & 0x0F);
    }

    [Fact]
    public void ThreIrqGivesAnEdgePerByteWhenOut2IsSet()
    {
        Out(MCR, 0x08);
        Out(IER, 0x02);
        Assert.True(_irq.Level);
        Assert.Equal(1, _irq.RisingEdges);
        In(IIR);
        Assert.False(_irq.Level);
        Out(THR, 0x41);
        Assert.True(_irq.Level);
        Assert.Equal(2, _irq.RisingEdges);
        Out(THR, 0x42); // not acknowledged: the line still drops and rises while THR is full
        Assert.Equal(3, _irq.RisingEdges);
    }

    [Fact]
    public void Out2GatesTheIrqLine()
    {
        Out(IER, 0x02);
        Assert.Equal(0x02, In(IIR) & 0x0F); // pending internally…
        Out(IER, 0x00);
        Out(IER, 0x02);
        Assert.False(_irq.Level); // …but OUT2 = 0 keeps the IRQ off the bus
        Out(MCR, 0x08);
        Assert.True(_irq.Level);
        Out(MCR, 0x18); // loopback forces OUT2 inactive
        Assert.False(_irq.Level);
        Assert.Equal(0x02, In(IIR) & 0x0F);
    }

    [Fact]
    public void FcrEnablesFifosAndIirShowsThem()
    {
        Out(FCR, 0x01);
        Assert.Equal(0xC0, In(IIR) & 0xC0);
        // Linux 16750 probe: FCR7_64BYTE must not show as IIR bit 5 on a 16550A.
        Out(FCR, 0x21);
        Assert.Equal(6, In(IIR) >> 5);
        Out(FCR, 0x00);
        Assert.Equal(0x00, In(IIR) & 0xC0);
    }

    [Fact]
    public void LinuxAutoconfigFindsA16550A()
    {
        // The register tests of autoconfig()/autoconfig_16550a() in drivers/tty/serial/8250/8250_port.c.
        Out(IER, 0);
        Assert.Equal(0, In(IER) & 0x0F);
        Out(IER, 0x0F);
        Assert.Equal(0x0F, In(IER) & 0x0F);
        Out(IER, 0);
        Out(MCR, 0x1A);
        Assert.Equal(0x90, In(MSR) & 0xF0);
        Out(MCR, 0);
        Out(FCR, 0x01);
        Assert.Equal(3, In(IIR) >> 6); // "16550A"
        Out(LCR, 0x80); // CONF_MODE_A: no EFR here, offset 2 still reads IIR (nonzero)
        Assert.NotEqual(0, In(IIR));
        Out(LCR, 0xBF); // CONF_MODE_B
        Assert.NotEqual(0, In(IIR));
        // 16750 test: status1 == 6 && status2 == 7 would mean 64-byte FIFOs.
        Out(LCR, 0x80);
        Out(FCR, 0x21);
        int status1 = In(IIR) >> 5;
        Out(FCR, 0x01);
        Out(LCR, 0);
        Out(FCR, 0x21);
        int status2 = In(IIR) >> 5;
        Out(FCR, 0x01);
        Assert.False(status1 == 6 && status2 == 7);
    }

    [Fact]
    public void RxFifoHolds16AndOverrunsOnThe17th()
    {
        Out(FCR, 0x07);
        for (int i = 0; i < 16; i++) Assert.True(_uart.TryReceive((byte)i));
        Assert.Equal(0, _uart.ReceiveSpace);
        Assert.False(_uart.TryReceive(99)); // refused, nothing changes
        Assert.Equal(0x00, In(LSR) & 0x02);
        _uart.Receive(100); // on the wire anyway: overrun, character lost
        Assert.Equal(0x03, In(LSR) & 0x03); // DR | OE
        Assert.Equal(0x01, In(LSR) & 0x03); // OE cleared by the LSR read
        for (int i = 0; i < 16; i++) Assert.Equal(i, In(RBR));
        Assert.Equal(0x00, In(LSR) & 0x01);
    }

    [Fact]
    public void WithoutFifoTheNewCharacterOverwritesRbr()
    {
        Assert.Equal(1, _uart.ReceiveSpace);
        _uart.Receive(1);
        Assert.Equal(0, _uart.ReceiveSpace);
        _uart.Receive(2);
        Assert.Equal(0x03, In(LSR) & 0x03);
        Assert.Equal(2, In(RBR));
    }

    [Fact]
    public void RxFifoResetEmptiesTheFifo()
    {
        Out(FCR, 0x01);
        _uart.Receive(1);
        _uart.Receive(2);
        Out(FCR, 0x03);
        Assert.Equal(0x00, In(LSR) & 0x01);
        Assert.Equal(16, _uart.ReceiveSpace);
    }

    [Theory]
    [InlineData(0x01, 1)]
    [InlineData(0x41, 4)]
    [InlineData(0x81, 8)]
    [InlineData(0xC1, 14)]
    public void ReceiveInterruptAtFifoTriggerLevel(byte fcr, int trigger)
    {
        Out(FCR, fcr);
        Out(IER, 0x01);
        Out(MCR, 0x08);
        for (int i = 0; i < trigger - 1; i++) _uart.Receive((byte)i);
        Assert.Equal(0xC1, In(IIR));
        Assert.False(_irq.Level);
        _uart.Receive(0xEE);
        Assert.Equal(0xC4, In(IIR));
        Assert.True(_irq.Level);
        In(RBR); // below the trigger level again
        Assert.Equal(0x01, In(IIR) & 0x0F);
        Assert.False(_irq.Level);
    }

    [Fact]
    public void CharacterTimeoutAfterFourCharacterTimes()
    {
        // 115200 8N1: 10 bits × 16 / 1.8432 MHz = 86.8 µs per character.
        Out(LCR, 0x83);
        Out(DLL, 1);
        Out(DLM, 0);
        Out(LCR, 0x03);
        Out(FCR, 0x81); // trigger at 8
        Out(IER, 0x01);
        Out(MCR, 0x08);
        _uart.Receive((byte)'a');
        long timeout = 4 * 10 * 16 * 1_000_000_000L / 1_843_200;
        Assert.Equal(timeout, _uart.CharacterTimeoutNs);
        Assert.Equal(timeout, _uart.NextDeadlineNs);
        _clock.Advance(timeout - 1);
        _uart.OnTime(_clock.NowNs);
        Assert.Equal(0xC1, In(IIR));
        _clock.Advance(1);
        _uart.OnTime(_clock.NowNs);
        Assert.True(_irq.Level);
        Assert.Equal(0xCC, In(IIR));
        Assert.Equal(long.MaxValue, _uart.NextDeadlineNs);
        Assert.Equal((byte)'a', In(RBR));
        Assert.Equal(0xC1, In(IIR));
        Assert.False(_irq.Level);
    }

    [Fact]
    public void NewCharacterRestartsTheTimeoutTimer()
    {
        Out(FCR, 0xC1);
        Out(IER, 0x01);
        _uart.Receive(1);
        long timeout = _uart.CharacterTimeoutNs;
        _clock.Advance(timeout / 2);
        _uart.Receive(2);
        _clock.Advance(timeout / 2 + 1);
        Assert.Equal(0xC1, In(IIR)); // only half a timeout since the last character
        _clock.Advance(timeout / 2);
        Assert.Equal(0xCC, In(IIR)); // register reads notice the timeout without OnTime
    }

    [Fact]
    public void InterruptPriorityOrder()
    {
        // RLS > RDA > THRE > modem status (datasheet Table IV).
        Out(IER, 0x0F);
        _uart.SetModemInputs(cts: false, dsr: false, ri: false, dcd: false);
        _uart.Receive(1);
        _uart.Receive(2); // overrun
        Assert.Equal(0x06, In(IIR) & 0x0F);
        In(LSR);
        Assert.Equal(0x04, In(IIR) & 0x0F);
        In(RBR);
        Assert.Equal(0x02, In(IIR) & 0x0F);
        Assert.Equal(0x00, In(IIR) & 0x0F); // THRE cleared by the read above; modem status next
        In(MSR);
        Assert.Equal(0x01, In(IIR) & 0x0F);
    }

    [Fact]
    public void ReceiveRaisesIrqWhenEnabled()
    {
        Out(MCR, 0x0B);
        Out(IER, 0x01);
        Assert.False(_irq.Level);
        Assert.True(_uart.TryReceive(0x55));
        Assert.True(_irq.Level);
        Assert.Equal(0x55, In(RBR));
        Assert.False(_irq.Level);
    }

    [Fact]
    public void WideAccessIsSplitIntoByteCycles()
    {
        Out(SCR, 0x12);
        // A 16-bit read at offset 6 reads MSR then SCR; beyond offset 7 reads float high.
        Assert.Equal(0x12B0UL, _uart.Read(6, 2));
        Assert.Equal(0xFFFF_FF12UL, _uart.Read(7, 4));
        _uart.Write(3, 2, 0x0B03); // LCR = 3, MCR = 0x0B
        Assert.Equal(0x03, In(LCR));
        Assert.Equal(0x0B, In(MCR));
    }

    [Fact]
    public void StateRoundTrip()
    {
        Out(FCR, 0x81);
        Out(SCR, 0x77);
        Out(LCR, 0x1B);
        foreach (byte b in "snap"u8) _uart.Receive(b);
        var state = _uart.State;

        var irq2 = new NullIrqLine();
        var copy = new Uart16550(irq2, new NullSerialBackend(), _clock) { State = state };
        foreach (byte b in "snap"u8) Assert.Equal(b, (byte)copy.Read(RBR, 1));
        Assert.Equal(0x77UL, copy.Read(SCR, 1));
        Assert.Equal(0x1BUL, copy.Read(LCR, 1));
        Assert.Equal(0xC0UL, copy.Read(IIR, 1) & 0xC0);
        // The original is unaffected (state is a value).
        Assert.Equal((byte)'s', In(RBR));
    }
}
