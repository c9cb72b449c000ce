using SharpVisor.Core.Interrupts;
using SharpVisor.Devices.Input;

using Xunit;

namespace SharpVisor.Devices.Tests;

public class I8042Tests
{
    private sealed class Rig
    {
        public readonly NullIrqLine Irq1 = new(), Irq12 = new();
        public int Resets;
        public readonly List<bool> A20 = new();
        public readonly I8042 Kbc;

        public Rig() => Kbc = new I8042(Irq1, () => Resets++, A20.Add, Irq12);

        public byte Status => (byte)Kbc.Read(4, 1);
        public void Command(byte c) => Kbc.Write(4, 1, c);
        public void Data(byte d) => Kbc.Write(0, 1, d);
        public byte ReadData() => (byte)Kbc.Read(0, 1);

        /// <summary>Like Linux's i8042_wait_read + read: the byte must be waiting.</summary>
        public byte Expect(bool aux = false)
        {
            Assert.Equal(I8042.StatusObf, Status & I8042.StatusObf);
            Assert.Equal(aux ? I8042.StatusAuxb : 0, Status & I8042.StatusAuxb);
            return ReadData();
        }

        public void ExpectEmpty() => Assert.Equal(0, Status & I8042.StatusObf);

        /// <summary>Linux i8042_command(param, cmd) for commands with one parameter byte.</summary>
        public void CommandWithParam(byte cmd, byte param)
        {
            Command(cmd);
            Assert.Equal(0, Status & I8042.StatusIbf);
            Data(param);
        }
    }

    [Fact]
    public void PowerOnStatusAndSelfTest()
    {
        var r = new Rig();
        Assert.Equal(I8042.StatusInh, r.Status & I8042.StatusInh); // not inhibited
        r.ExpectEmpty();
        Assert.Equal(0, r.Status & I8042.StatusSys);
        r.Command(0xAA);
        Assert.Equal(0x55, r.Expect());
        r.ExpectEmpty();
        Assert.Equal(I8042.StatusSys, r.Status & I8042.StatusSys);
        Assert.Equal(I8042.StatusA2, r.Status & I8042.StatusA2); // last write went to the command port
    }

    [Fact]
    public void LinuxInitSequence()
    {
        var r = new Rig();
        // i8042_flush: nothing pending.
        r.ExpectEmpty();
        // i8042_controller_selftest
        r.Command(0xAA);
        Assert.Equal(0x55, r.Expect());
        // i8042_controller_init: read CTR twice until stable
        r.Command(0x20);
        byte ctr = r.Expect();
        r.Command(0x20);
        Assert.Equal(ctr, r.Expect());
        Assert.Equal(I8042.CtrKbdInt | I8042.CtrAuxInt, ctr);
        // disable keyboard interrupt and port while probing, as Linux does
        byte newCtr = (byte)((ctr | I8042.CtrKbdDis) & ~I8042.CtrKbdInt);
        r.CommandWithParam(0x60, newCtr);
        r.Command(0x20);
        Assert.Equal(newCtr, r.Expect());

        // i8042_check_aux: loopback through the aux output buffer
        r.CommandWithParam(0xD3, 0x5A);
        Assert.Equal(0x5A, r.Expect(aux: true));
        // bit assignment test
        r.Command(0xA7);
        r.Command(0x20);
        Assert.Equal(I8042.CtrAuxDis, r.Expect() & I8042.CtrAuxDis);
        r.Command(0xA8);
        r.Command(0x20);
        Assert.Equal(0, r.Expect() & I8042.CtrAuxDis);
        // AUX interface test (used when loop fails): 0 = ok
        r.Command(0xA9);
        Assert.Equal(0x00, r.Expect());
        r.Command(0xAB);
        Assert.Equal(0x00, r.Expect());

        // enable: keyboard port and IRQ on, translation on
        r.CommandWithParam(0x60, I8042.CtrKbdInt | I8042.CtrAuxInt | I8042.CtrSys | I8042.CtrXlate);
        // atkbd probe: GET ID → FA AB 41 (0x83 translated), then reset
        r.Data(0xF2);
        Assert.True(r.Irq1.Level);
        Assert.Equal(0xFA, r.Expect());
        Assert.Equal(0xAB, r.Expect());
        Assert.Equal(0x41, r.Expect());
        r.ExpectEmpty();
        Assert.False(r.Irq1.Level);
        r.Data(0xFF);
        Assert.Equal(0xFA, r.Expect());
        Assert.Equal(0xAA, r.Expect());
        // set LEDs, enable scanning
        r.Data(0xED);
        Assert.Equal(0xFA, r.Expect());
        r.Data(0x02);
        Assert.Equal(0xFA, r.Expect());
        Assert.Equal(0x02, r.Kbc.Leds);
        r.Data(0xF4);
        Assert.Equal(0xFA, r.Expect());
        Assert.Equal(0, r.Status & I8042.StatusA2);
    }

    [Fact]
    public void IdentifyWithoutTranslationReturnsRawId()
    {
        var r = new Rig();
        r.Data(0xF2);
        Assert.Equal(0xFA, r.Expect());
        Assert.Equal(0xAB, r.Expect());
        Assert.Equal(0x83, r.Expect());
    }

    [Fact]
    public void Irq1FollowsObfOnlyWhenEnabled()
    {
        var r = new Rig();
        r.CommandWithParam(0x60, 0x00); // interrupts off
        r.Kbc.EnqueueScancode(0x1C);
        Assert.False(r.Irq1.Level);
        Assert.Equal(0x1C, r.Expect());

        r.CommandWithParam(0x60, I8042.CtrKbdInt);
        r.Kbc.EnqueueScancode(0x1C);
        r.Kbc.EnqueueScancode(0x32);
        Assert.True(r.Irq1.Level);
        Assert.Equal(1, r.Irq1.RisingEdges);
        Assert.Equal(0x1C, r.ReadData());
        Assert.True(r.Irq1.Level); // the next byte refilled the buffer: a new edge
        Assert.Equal(2, r.Irq1.RisingEdges);
        Assert.Equal(0x32, r.ReadData());
        Assert.False(r.Irq1.Level);
        Assert.False(r.Irq12.Level);
        Assert.Equal(0x32, r.ReadData()); // OBF clear: the last byte again
    }

    [Fact]
    public void TranslationConvertsSet2ToSet1WithBreakPrefix()
    {
        var r = new Rig();
        r.CommandWithParam(0x60, I8042.CtrXlate);
        r.Kbc.EnqueueScancode(0x1C); // 'A' make, set 2
        r.Kbc.EnqueueScancode(0xF0);
        r.Kbc.EnqueueScancode(0x1C); // 'A' break
        r.Kbc.EnqueueScancode(0x76); // Esc
        Assert.Equal(0x1E, r.Expect());
        Assert.Equal(0x9E, r.Expect());
        Assert.Equal(0x01, r.Expect());
        r.ExpectEmpty();
    }

    [Fact]
    public void ScancodeSetGetAndSet()
    {
        var r = new Rig();
        r.Data(0xF0); Assert.Equal(0xFA, r.Expect());
        r.Data(0x00); Assert.Equal(0xFA, r.Expect()); Assert.Equal(0x02, r.Expect());
        r.Data(0xF0); Assert.Equal(0xFA, r.Expect());
        r.Data(0x01); Assert.Equal(0xFA, r.Expect());
        Assert.Equal(1, r.Kbc.ScancodeSet);
        r.Data(0xF3); Assert.Equal(0xFA, r.Expect());
        r.Data(0x20); Assert.Equal(0xFA, r.Expect());
        r.Data(0xEE); Assert.Equal(0xEE, r.Expect());
    }

    [Fact]
    public void DisabledKeyboardHoldsBytesAndF5StopsScanning()
    {
        var r = new Rig();
        r.Command(0xAD);
        r.Kbc.EnqueueScancode(0x1C);
        r.ExpectEmpty();
        r.Command(0xAE);
        Assert.Equal(0x1C, r.Expect());
        r.Data(0xF5);
        Assert.Equal(0xFA, r.Expect());
        r.Kbc.EnqueueScancode(0x1C);
        r.ExpectEmpty();
    }

    [Fact]
    public void OutputPortControlsA20AndReset()
    {
        var r = new Rig();
        r.Command(0xD0);
        byte port = r.Expect();
        Assert.Equal(I8042.OutA20 | I8042.OutResetN, port & 0x03);
        Assert.True(r.Kbc.A20);

        r.CommandWithParam(0xD1, 0xDD); // A20 (bit 1) off, reset line (bit 0) high
        Assert.Equal([false], r.A20);
        Assert.False(r.Kbc.A20);
        r.CommandWithParam(0xD1, 0xDF);
        Assert.Equal([false, true], r.A20);
        Assert.Equal(0, r.Resets);
        r.CommandWithParam(0xD1, 0xDE); // reset line driven low
        Assert.Equal(1, r.Resets);
        r.Command(0xFE);                 // pulse reset
        Assert.Equal(2, r.Resets);
        r.Command(0xFF);                 // pulse nothing
        Assert.Equal(2, r.Resets);
        r.Command(0xDD);
        Assert.Equal([false, true, false], r.A20);
    }

    [Fact]
    public void WriteKeyboardAndAuxOutputBuffers()
    {
        var r = new Rig();
        r.CommandWithParam(0xD2, 0x42);
        Assert.True(r.Irq1.Level);
        Assert.Equal(0x42, r.Expect());
        r.CommandWithParam(0xD3, 0x43);
        Assert.True(r.Irq12.Level);
        Assert.False(r.Irq1.Level);
        Assert.Equal(0x43, r.Expect(aux: true));
        Assert.False(r.Irq12.Level);
    }

    [Fact]
    public void MouseAnswersAsAStandardPs2Mouse()
    {
        var r = new Rig();
        r.CommandWithParam(0xD4, 0xFF);
        Assert.Equal(0xFA, r.Expect(aux: true));
        Assert.Equal(0xAA, r.Expect(aux: true));
        Assert.Equal(0x00, r.Expect(aux: true));
        r.CommandWithParam(0xD4, 0xF2);
        Assert.Equal(0xFA, r.Expect(aux: true));
        Assert.Equal(0x00, r.Expect(aux: true));
        r.CommandWithParam(0xD4, 0xF3);
        Assert.Equal(0xFA, r.Expect(aux: true));
        r.CommandWithParam(0xD4, 200);
        Assert.Equal(0xFA, r.Expect(aux: true));
        r.CommandWithParam(0xD4, 0xE9);
        Assert.Equal(0xFA, r.Expect(aux: true));
        Assert.Equal(0x00, r.Expect(aux: true));
        Assert.Equal(0x02, r.Expect(aux: true));
        Assert.Equal(200, r.Expect(aux: true));
        r.CommandWithParam(0xD4, 0xF4);
        Assert.Equal(0xFA, r.Expect(aux: true));
        r.Kbc.EnqueueMouseMovement(5, -3, left: true);
        Assert.Equal(0x29, r.Expect(aux: true)); // sync bit, left button, Y negative
        Assert.Equal(5, r.Expect(aux: true));
        Assert.Equal(0xFD, r.Expect(aux: true));
    }
}
