using SharpVisor.Core.Interrupts;
using SharpVisor.Devices.Pic;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>8259A pair behaviour through its ports (Intel 8259A datasheet, PC/AT wiring, PIIX ELCR).</summary>
public sealed class Pic8259Tests
{
    private const byte NonSpecificEoi = 0x20, ReadIrr = 0x0A, ReadIsr = 0x0B, PollCommand = 0x0C;

    private readonly Pic8259 _pic = new();
    private readonly NullIrqLine _intr = new();

    public Pic8259Tests() => _pic.IntrOutput = _intr;

    private void MasterCmd(byte v) => _pic.Master.Write(0, 1, v);
    private void MasterData(byte v) => _pic.Master.Write(1, 1, v);
    private void SlaveCmd(byte v) => _pic.Slave.Write(0, 1, v);
    private void SlaveData(byte v) => _pic.Slave.Write(1, 1, v);
    private byte MasterIn(int port) => (byte)_pic.Master.Read((ulong)port, 1);
    private byte SlaveIn(int port) => (byte)_pic.Slave.Read((ulong)port, 1);

    private byte MasterIsr() { MasterCmd(ReadIsr); return MasterIn(0); }
    private byte MasterIrr() { MasterCmd(ReadIrr); return MasterIn(0); }
    private byte SlaveIsr() { SlaveCmd(ReadIsr); return SlaveIn(0); }

    /// <summary>Linux init_8259A: vectors 0x30/0x38, slave on IR2, 8086 mode.</summary>
    private void InitLinux(byte masterIcw4 = 0x01, byte slaveIcw4 = 0x01)
    {
        MasterData(0xFF);
        SlaveData(0xFF);
        MasterCmd(0x11);
        MasterData(0x30);
        MasterData(0x04);
        MasterData(masterIcw4);
        SlaveCmd(0x11);
        SlaveData(0x38);
        SlaveData(0x02);
        SlaveData(slaveIcw4);
        MasterData(0x00);
        SlaveData(0x00);
    }

    [Fact]
    public void ImrReadsBackAsLinuxProbeExpects()
    {
        // probe_8259A: write 0xff to the master IMR and read it back.
        MasterData(0xFF);
        Assert.Equal(0xFF, MasterIn(1));
        MasterData(0x5A);
        Assert.Equal(0x5A, MasterIn(1));
        SlaveData(0xA5);
        Assert.Equal(0xA5, SlaveIn(1));
    }

    [Fact]
    public void SeaBiosInitSequenceGivesBiosVectors()
    {
        // SeaBIOS pic_setup: ICW1 0x11, ICW2 0x08 / 0x70, ICW3 0x04 / 0x02, ICW4 0x01; all masked but IRQ2.
        MasterCmd(0x11); MasterData(0x08); MasterData(0x04); MasterData(0x01);
        SlaveCmd(0x11); SlaveData(0x70); SlaveData(0x02); SlaveData(0x01);
        MasterData(0xFB);
        SlaveData(0xFF);
        Assert.Equal(0xFB, MasterIn(1));
        _pic.SetIrq(0, true);
        Assert.False(_pic.HasInterrupt);
        MasterData(0xFA);
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x08, _pic.Acknowledge());
        MasterCmd(NonSpecificEoi);
        SlaveData(0xFE);
        _pic.SetIrq(8, true);
        Assert.Equal(0x70, _pic.Acknowledge());
    }

    [Fact]
    public void Icw1ClearsMaskAndInServiceAndSelectsIrr()
    {
        InitLinux();
        _pic.SetIrq(3, true);
        _pic.Acknowledge();
        MasterData(0x55);
        MasterCmd(ReadIsr);
        MasterCmd(0x11);
        MasterData(0x30); MasterData(0x04); MasterData(0x01);
        Assert.Equal(0x00, MasterIn(1));
        Assert.Equal(0x00, MasterIn(0)); // IRR is selected again, and empty
        Assert.Equal(0x00, MasterIsr());
    }

    [Fact]
    public void InitWithoutIcw4AndSingleMode()
    {
        // ICW1 without IC4 and SNGL: ICW2 only; the next port-1 write is OCW1.
        MasterCmd(0x12);
        MasterData(0x40);
        MasterData(0xF0);
        Assert.Equal(0xF0, MasterIn(1));
        _pic.SetIrq(1, true);
        Assert.Equal(0x41, _pic.Acknowledge());
        // Cascaded without IC4: ICW2, ICW3, then OCW1.
        SlaveCmd(0x10);
        SlaveData(0x50);
        SlaveData(0x02);
        SlaveData(0x3C);
        Assert.Equal(0x3C, SlaveIn(1));
    }

    [Fact]
    public void EdgeRequestVectorsAndIsr()
    {
        InitLinux();
        _pic.SetIrq(1, true);
        Assert.True(_pic.HasInterrupt);
        Assert.True(_intr.Level);
        Assert.Equal(0x02, MasterIrr());
        Assert.Equal(0x31, _pic.Acknowledge());
        Assert.False(_intr.Level);
        Assert.Equal(0x02, MasterIsr());
        Assert.Equal(0x00, MasterIrr()); // edge request consumed by INTA
        MasterCmd(NonSpecificEoi);
        Assert.Equal(0x00, MasterIsr());
        // The line is still high: no new edge, no new interrupt.
        Assert.False(_pic.HasInterrupt);
        _pic.SetIrq(1, false);
        _pic.SetIrq(1, true);
        Assert.True(_pic.HasInterrupt);
    }

    [Fact]
    public void PulsedEdgeStaysLatched()
    {
        InitLinux();
        _pic.GetLine(4).Pulse();
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x34, _pic.Acknowledge());
    }

    [Fact]
    public void CascadeThroughMasterIr2()
    {
        InitLinux();
        _pic.SetIrq(12, true);
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x3C, _pic.Acknowledge());
        Assert.Equal(0x04, MasterIsr());
        Assert.Equal(0x10, SlaveIsr());
        SlaveCmd(NonSpecificEoi);
        MasterCmd(NonSpecificEoi);
        Assert.Equal(0x00, MasterIsr());
        Assert.Equal(0x00, SlaveIsr());
    }

    [Fact]
    public void Irq2IsRoutedToIrq9()
    {
        InitLinux();
        _pic.SetIrq(2, true);
        Assert.Equal(0x39, _pic.Acknowledge());
    }

    [Fact]
    public void MaskedRequestWaitsInIrr()
    {
        InitLinux();
        MasterData(0x02);
        _pic.SetIrq(1, true);
        Assert.False(_pic.HasInterrupt);
        Assert.Equal(0x02, MasterIrr());
        MasterData(0x00);
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x31, _pic.Acknowledge());
    }

    [Fact]
    public void FullyNestedModeBlocksEqualAndLowerPriority()
    {
        InitLinux();
        _pic.SetIrq(3, true);
        Assert.Equal(0x33, _pic.Acknowledge());
        _pic.SetIrq(5, true);
        _pic.SetIrq(3, false);
        _pic.SetIrq(3, true);
        Assert.False(_pic.HasInterrupt); // IRQ5 lower, IRQ3 equal
        _pic.SetIrq(1, true);
        Assert.True(_pic.HasInterrupt); // IRQ1 higher: nests
        Assert.Equal(0x31, _pic.Acknowledge());
        Assert.Equal(0x0A, MasterIsr());
        MasterCmd(NonSpecificEoi); // clears the highest in service: IRQ1
        Assert.Equal(0x08, MasterIsr());
        Assert.False(_pic.HasInterrupt);
        MasterCmd(NonSpecificEoi);
        Assert.Equal(0x33, _pic.Acknowledge()); // IRQ3 before IRQ5
        MasterCmd(NonSpecificEoi);
        Assert.Equal(0x35, _pic.Acknowledge());
    }

    [Fact]
    public void SpecificEoiClearsTheNamedLevel()
    {
        InitLinux();
        _pic.SetIrq(4, true);
        _pic.Acknowledge();
        _pic.SetIrq(0, true);
        _pic.Acknowledge();
        Assert.Equal(0x11, MasterIsr());
        MasterCmd(0x64); // specific EOI, level 4
        Assert.Equal(0x01, MasterIsr());
    }

    [Fact]
    public void AutoEoiLeavesIsrClear()
    {
        InitLinux(masterIcw4: 0x03);
        _pic.SetIrq(5, true);
        Assert.Equal(0x35, _pic.Acknowledge());
        Assert.Equal(0x00, MasterIsr());
        _pic.SetIrq(6, true);
        Assert.True(_pic.HasInterrupt); // nothing in service blocks it
    }

    [Fact]
    public void RotateOnNonSpecificEoiMakesServicedLevelLowest()
    {
        InitLinux();
        _pic.SetIrq(3, true);
        Assert.Equal(0x33, _pic.Acknowledge());
        MasterCmd(0xA0); // rotate on non-specific EOI: IRQ3 becomes lowest, IRQ4 highest
        _pic.SetIrq(0, true);
        _pic.SetIrq(4, true);
        Assert.Equal(0x34, _pic.Acknowledge());
        MasterCmd(0x60 | 4);
        Assert.Equal(0x30, _pic.Acknowledge());
    }

    [Fact]
    public void SetPriorityCommand()
    {
        InitLinux();
        MasterCmd(0xC4); // IRQ4 lowest → IRQ5 highest
        _pic.SetIrq(1, true);
        _pic.SetIrq(6, true);
        _pic.SetIrq(5, true);
        Assert.Equal(0x35, _pic.Acknowledge());
        MasterCmd(0x65);
        Assert.Equal(0x36, _pic.Acknowledge());
        MasterCmd(0x66);
        Assert.Equal(0x31, _pic.Acknowledge());
    }

    [Fact]
    public void RotateOnSpecificEoi()
    {
        InitLinux();
        _pic.SetIrq(6, true);
        Assert.Equal(0x36, _pic.Acknowledge());
        MasterCmd(0xE6); // specific EOI level 6 and make it lowest: IRQ7 highest
        Assert.Equal(0x00, MasterIsr());
        _pic.SetIrq(0, true);
        _pic.SetIrq(7, true);
        Assert.Equal(0x37, _pic.Acknowledge());
        Assert.Equal(0x80, MasterIsr()); // a real IRQ7, not a spurious one
    }

    [Fact]
    public void RotateInAutoEoiMode()
    {
        InitLinux(masterIcw4: 0x03);
        MasterCmd(0x80); // set rotate in automatic EOI mode
        _pic.SetIrq(1, true);
        Assert.Equal(0x31, _pic.Acknowledge()); // IRQ1 becomes lowest
        _pic.SetIrq(0, true);
        _pic.SetIrq(3, true);
        Assert.Equal(0x33, _pic.Acknowledge());
        MasterCmd(0x00); // clear rotate in automatic EOI mode
        _pic.SetIrq(4, true);
        Assert.Equal(0x34, _pic.Acknowledge()); // IRQ3 lowest now → IRQ4 highest, no rotation after
        _pic.SetIrq(5, true);
        Assert.Equal(0x35, _pic.Acknowledge());
    }

    [Fact]
    public void SpecialMaskModeEnablesLowerLevels()
    {
        InitLinux();
        _pic.SetIrq(3, true);
        Assert.Equal(0x33, _pic.Acknowledge());
        _pic.SetIrq(5, true);
        Assert.False(_pic.HasInterrupt);
        MasterData(0x08); // mask the level in service…
        MasterCmd(0x68); // …and set special mask mode
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x35, _pic.Acknowledge());
        MasterCmd(0x65);
        MasterCmd(0x48); // reset special mask mode
        _pic.SetIrq(6, true);
        Assert.False(_pic.HasInterrupt); // IRQ3 still in service blocks IRQ6 again
        MasterCmd(0x63);
        Assert.True(_pic.HasInterrupt);
    }

    [Fact]
    public void SpecialFullyNestedModeLetsTheSlaveNest()
    {
        InitLinux(masterIcw4: 0x11);
        _pic.SetIrq(10, true);
        Assert.Equal(0x3A, _pic.Acknowledge());
        _pic.SetIrq(9, true); // higher than IRQ10 on the slave, same master level (IR2)
        Assert.True(_pic.HasInterrupt);
        Assert.Equal(0x39, _pic.Acknowledge());

        var plain = new Pic8259Tests();
        plain.InitLinux();
        plain._pic.SetIrq(10, true);
        plain._pic.Acknowledge();
        plain._pic.SetIrq(9, true);
        Assert.False(plain._pic.HasInterrupt); // fully nested: IR2 in service blocks IR2
    }

    [Fact]
    public void PollCommandReadsAndAcknowledges()
    {
        InitLinux();
        MasterCmd(PollCommand);
        Assert.Equal(0x00, MasterIn(0)); // no request
        _pic.SetIrq(5, true);
        MasterCmd(PollCommand);
        Assert.Equal(0x85, MasterIn(0));
        Assert.Equal(0x20, MasterIsr()); // poll acts as INTA
        Assert.False(_pic.HasInterrupt);
        Assert.Equal(0x00, MasterIrr());
    }

    [Fact]
    public void ElcrReservedBitsReadZero()
    {
        _pic.Elcr.Write(0, 1, 0xFF);
        _pic.Elcr.Write(1, 1, 0xFF);
        Assert.Equal(0xF8UL, _pic.Elcr.Read(0, 1)); // IRQ0–2 edge only
        Assert.Equal(0xDEUL, _pic.Elcr.Read(1, 1)); // IRQ8 and IRQ13 edge only
        _pic.Elcr.Write(0, 2, 0x0C20);
        Assert.Equal(0x0C20UL, _pic.Elcr.Read(0, 2));
    }

    [Fact]
    public void LevelTriggeredLineRequestsWhileHigh()
    {
        InitLinux();
        _pic.Elcr.Write(1, 1, 0x08); // IRQ11 level triggered
        _pic.SetIrq(11, true);
        Assert.Equal(0x3B, _pic.Acknowledge());
        SlaveCmd(NonSpecificEoi);
        MasterCmd(NonSpecificEoi);
        Assert.True(_pic.HasInterrupt); // still high: requests again
        Assert.Equal(0x3B, _pic.Acknowledge());
        SlaveCmd(NonSpecificEoi);
        MasterCmd(NonSpecificEoi);
        _pic.SetIrq(11, false);
        Assert.False(_pic.HasInterrupt);
        SlaveCmd(ReadIrr);
        Assert.Equal(0x00, SlaveIn(0));
    }

    [Fact]
    public void LtimMakesEveryLineLevelTriggered()
    {
        MasterCmd(0x19); MasterData(0x30); MasterData(0x04); MasterData(0x01);
        _pic.SetIrq(5, true);
        Assert.Equal(0x35, _pic.Acknowledge());
        MasterCmd(NonSpecificEoi);
        Assert.True(_pic.HasInterrupt);
        _pic.SetIrq(5, false);
        Assert.False(_pic.HasInterrupt);
    }

    [Fact]
    public void SpuriousIrq7WhenTheRequestVanishes()
    {
        InitLinux();
        _pic.Elcr.Write(0, 1, 0x20); // IRQ5 level
        _pic.SetIrq(5, true);
        Assert.True(_pic.HasInterrupt);
        _pic.SetIrq(5, false); // gone before the INTA cycle
        Assert.Equal(0x37, _pic.Acknowledge());
        Assert.Equal(0x00, MasterIsr()); // spurious IR7 sets no ISR bit
    }

    [Fact]
    public void VanishedSlaveRequestIsSpurious()
    {
        InitLinux();
        _pic.Elcr.Write(1, 1, 0x02); // IRQ9 level
        _pic.SetIrq(9, true);
        Assert.True(_pic.HasInterrupt);
        _pic.SetIrq(9, false);
        byte vector = _pic.Acknowledge();
        // The slave's INT fell with its request, so the master itself answers IR7 (no ISR bits).
        Assert.Equal(0x37, vector);
        Assert.Equal(0x00, MasterIsr());
        Assert.Equal(0x00, SlaveIsr());
    }

    [Fact]
    public void MaskingSlaveAfterCascadeRequestLeavesNothingPending()
    {
        InitLinux();
        _pic.SetIrq(14, true);
        SlaveData(0x40);
        Assert.False(_pic.HasInterrupt);
        Assert.False(_intr.Level);
        SlaveData(0x00);
        Assert.True(_intr.Level);
        Assert.Equal(0x3E, _pic.Acknowledge());
    }

    [Fact]
    public void StateRoundTrip()
    {
        InitLinux();
        _pic.Elcr.Write(1, 1, 0x08);
        _pic.SetIrq(3, true);
        _pic.Acknowledge();
        _pic.SetIrq(6, true);
        var copy = new Pic8259();
        var intr = new NullIrqLine();
        copy.IntrOutput = intr;
        copy.SetState(_pic.GetState());
        Assert.Equal(0x08UL, copy.Elcr.Read(1, 1));
        copy.Master.Write(0, 1, ReadIsr);
        Assert.Equal(0x08UL, copy.Master.Read(0, 1));
        Assert.False(copy.HasInterrupt); // IRQ6 waits behind IRQ3
        copy.Master.Write(0, 1, NonSpecificEoi);
        Assert.True(intr.Level);
        Assert.Equal(0x36, copy.Acknowledge());
    }

    [Fact]
    public void UnusedPortsFloatHigh()
    {
        Assert.Equal(0xFFUL, _pic.Master.Read(2, 1));
        Assert.Equal(0xFFUL, _pic.Elcr.Read(2, 1));
        _pic.SetIrq(16, true); // out of range: ignored
        _pic.SetIrq(-1, true);
        Assert.False(_pic.HasInterrupt);
    }
}
