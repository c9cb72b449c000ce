using SharpVisor.Core.Time;
using SharpVisor.Devices.Apic;
using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>I/O APIC behaviour per the 82093AA datasheet (version 0x20, 24 pins as QEMU), with real local APICs behind it.</summary>
public sealed class IoApicTests
{
    private readonly ManualClock _clock = new();
    private readonly ApicBus _bus = new();
    private readonly LocalApic _cpu0;
    private readonly LocalApic _cpu1;
    private readonly IoApic _ioapic;

    public IoApicTests()
    {
        _cpu0 = new LocalApic(0, 0, _clock, bootstrapProcessor: true);
        _cpu1 = new LocalApic(1, 1, _clock, bootstrapProcessor: false);
        _bus.Add(_cpu0);
        _bus.Add(_cpu1);
        _ioapic = new IoApic(_bus);
        _bus.EoiBroadcast = _ioapic.Eoi;
        _cpu0.Write(LocalApic.RegSvr, 4, 0x1FF);
        _cpu1.Write(LocalApic.RegSvr, 4, 0x1FF);
    }

    private uint Reg(byte index)
    {
        _ioapic.Write(IoApic.OffsetIoRegSel, 4, index);
        return (uint)_ioapic.Read(IoApic.OffsetIoWin, 4);
    }

    private void SetReg(byte index, uint value)
    {
        _ioapic.Write(IoApic.OffsetIoRegSel, 4, index);
        _ioapic.Write(IoApic.OffsetIoWin, 4, value);
    }

    private void Program(int pin, ulong entry)
    {
        SetReg((byte)(0x11 + 2 * pin), (uint)(entry >> 32));
        SetReg((byte)(0x10 + 2 * pin), (uint)entry);
    }

    private static bool IrrBit(LocalApic apic, int v) =>
        (apic.Read((ulong)(LocalApic.RegIrr + (v >> 5) * 0x10), 4) & (1UL << (v & 31))) != 0;

    private static void Eoi(LocalApic apic) => apic.Write(LocalApic.RegEoi, 4, 0);

    private const ulong Level = IoApic.EntryLevelTriggered, Masked = IoApic.EntryMasked;
    private static ulong Dest(byte d) => (ulong)d << 56;

    [Fact]
    public void Identification_registers()
    {
        Assert.Equal(0x0017_0020u, Reg(IoApic.RegVersion));
        Assert.Equal(0u, Reg(IoApic.RegId));
        SetReg(IoApic.RegId, 0x0200_0000);
        Assert.Equal(0x0200_0000u, Reg(IoApic.RegId));
        Assert.Equal(0x0200_0000u, Reg(IoApic.RegArbitration));
        SetReg(IoApic.RegVersion, 0);
        Assert.Equal(0x0017_0020u, Reg(IoApic.RegVersion));
        // IOREGSEL reads back.
        _ioapic.Write(IoApic.OffsetIoRegSel, 4, 0x13);
        Assert.Equal(0x13UL, _ioapic.Read(IoApic.OffsetIoRegSel, 4));
    }

    [Fact]
    public void Entries_reset_masked_and_read_only_bits_ignore_writes()
    {
        for (int pin = 0; pin < IoApic.PinCount; pin++)
        {
            Assert.Equal(0x0001_0000u, Reg((byte)(0x10 + 2 * pin)));
            Assert.Equal(0u, Reg((byte)(0x11 + 2 * pin)));
        }
        SetReg(0x10, 0xFFFF_FFFF);
        Assert.Equal(0x0001_AFFFu, Reg(0x10)); // delivery status and remote IRR stay clear
        SetReg(0x11, 0xFFFF_FFFF);
        Assert.Equal(0xFF00_0000u, Reg(0x11));
        // Beyond pin 23: nothing.
        Assert.Equal(0xFFFF_FFFFu, Reg(0x10 + 2 * 24));
    }

    [Fact]
    public void Edge_triggered_pin_delivers_on_rising_edges_only()
    {
        Program(4, Dest(1) | 0x31);
        _ioapic.SetIrq(4, true);
        Assert.True(IrrBit(_cpu1, 0x31));
        Assert.False(IrrBit(_cpu0, 0x31));
        Assert.Equal(0x31, _cpu1.Acknowledge());
        Eoi(_cpu1);

        _ioapic.SetIrq(4, true); // still high: no edge
        Assert.False(IrrBit(_cpu1, 0x31));
        _ioapic.SetIrq(4, false);
        _ioapic.SetIrq(4, true);
        Assert.True(IrrBit(_cpu1, 0x31));
        Assert.Equal(0u, Reg(0x18) & (uint)IoApic.EntryRemoteIrr);
    }

    [Fact]
    public void Edge_on_a_masked_pin_is_lost()
    {
        Program(4, Masked | Dest(0) | 0x31);
        _ioapic.SetIrq(4, true);
        _ioapic.SetIrq(4, false);
        Program(4, Dest(0) | 0x31);
        Assert.False(IrrBit(_cpu0, 0x31));
    }

    [Fact]
    public void Level_triggered_pin_holds_remote_irr_until_eoi()
    {
        Program(10, Level | Dest(0) | 0x41);
        _ioapic.SetIrq(10, true);
        Assert.True(IrrBit(_cpu0, 0x41));
        Assert.NotEqual(0u, Reg(0x10 + 20) & (uint)IoApic.EntryRemoteIrr);
        Assert.Equal(0x41, _cpu0.Acknowledge());

        // Still asserted, but remote IRR blocks a second message.
        _ioapic.SetIrq(10, true);
        Assert.False(IrrBit(_cpu0, 0x41));

        // EOI through the local APIC is broadcast; the line is still high, so it comes again.
        Eoi(_cpu0);
        Assert.True(IrrBit(_cpu0, 0x41));
        Assert.NotEqual(0u, Reg(0x10 + 20) & (uint)IoApic.EntryRemoteIrr);
        Assert.Equal(0x41, _cpu0.Acknowledge());

        // The device deasserts before the EOI: remote IRR clears and nothing new arrives.
        _ioapic.SetIrq(10, false);
        Eoi(_cpu0);
        Assert.False(IrrBit(_cpu0, 0x41));
        Assert.Equal(0u, Reg(0x10 + 20) & (uint)IoApic.EntryRemoteIrr);
    }

    [Fact]
    public void Masked_level_pin_is_delivered_when_unmasked_while_asserted()
    {
        Program(11, Masked | Level | Dest(1) | 0x42);
        _ioapic.SetIrq(11, true);
        Assert.False(IrrBit(_cpu1, 0x42));
        Program(11, Level | Dest(1) | 0x42);
        Assert.True(IrrBit(_cpu1, 0x42));
    }

    [Fact]
    public void Eoi_register_at_0x40_clears_remote_irr()
    {
        Program(12, Level | Dest(0) | 0x43);
        _ioapic.SetIrq(12, true);
        _ioapic.SetIrq(12, false);
        Assert.NotEqual(0u, Reg(0x10 + 24) & (uint)IoApic.EntryRemoteIrr);
        _ioapic.Write(IoApic.OffsetEoi, 4, 0x44); // other vector: no effect
        Assert.NotEqual(0u, Reg(0x10 + 24) & (uint)IoApic.EntryRemoteIrr);
        _ioapic.Write(IoApic.OffsetEoi, 4, 0x43);
        Assert.Equal(0u, Reg(0x10 + 24) & (uint)IoApic.EntryRemoteIrr);
    }

    [Fact]
    public void Switching_to_edge_clears_remote_irr()
    {
        Program(13, Level | Dest(0) | 0x45);
        _ioapic.SetIrq(13, true);
        Assert.NotEqual(0u, Reg(0x10 + 26) & (uint)IoApic.EntryRemoteIrr);
        Program(13, Dest(0) | 0x45);
        Assert.Equal(0u, Reg(0x10 + 26) & (uint)IoApic.EntryRemoteIrr);
    }

    [Fact]
    public void Logical_destination_and_level_trigger_reach_the_local_apic_tmr()
    {
        _cpu0.Write(LocalApic.RegLdr, 4, 0x0100_0000);
        _cpu1.Write(LocalApic.RegLdr, 4, 0x0200_0000);
        Program(16, Level | IoApic.EntryLogical | Dest(0x02) | 0x61);
        _ioapic.SetIrq(16, true);
        Assert.True(IrrBit(_cpu1, 0x61));
        Assert.False(IrrBit(_cpu0, 0x61));
        Assert.NotEqual(0UL, _cpu1.Read(LocalApic.RegTmr + 0x30, 4) & (1UL << (0x61 & 31)));
    }

    [Fact]
    public void Unknown_pins_and_offsets_are_harmless()
    {
        _ioapic.SetIrq(24, true);
        _ioapic.SetIrq(-1, true);
        Assert.Equal(0xFFFF_FFFFUL, _ioapic.Read(0x20, 4));
        Assert.Equal(0xFFUL, _ioapic.Read(0x30, 1));
        // A partial IOWIN write is ignored.
        _ioapic.Write(IoApic.OffsetIoRegSel, 1, 0x10);
        _ioapic.Write(IoApic.OffsetIoWin, 1, 0x00);
        Assert.Equal(0x0001_0000u, Reg(0x10));
        // Byte reads of IOWIN return the addressed byte.
        _ioapic.Write(IoApic.OffsetIoRegSel, 1, IoApic.RegVersion);
        Assert.Equal(0x17UL, _ioapic.Read(IoApic.OffsetIoWin + 2, 1));
    }
}
