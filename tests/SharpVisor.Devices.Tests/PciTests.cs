using SharpVisor.Devices.Pci;

using Xunit;

namespace SharpVisor.Devices.Tests;

public class PciTests
{
    private sealed class TestFunction : PciFunction
    {
        public int Writes;
        public TestFunction() : base("test", 0x1AF4, 0x1000, 1, 0x02, 0x00)
        {
            DefineBar(0, PciBarKind.Io, 32);
            DefineBar(1, PciBarKind.Memory32, 4096);
            DefineBar(2, PciBarKind.Memory64, 1UL << 33, prefetchable: true);
            SetU8(InterruptPin, 1);
        }
        protected override void OnConfigWritten(int register, int size) => Writes++;
    }

    private sealed class Rig
    {
        public readonly PciBus Bus = new();
        public readonly PciConfigIo Io;
        public readonly I440fxHostBridge Host = new();
        public readonly Piix3IsaBridge Isa = new();
        public readonly TestFunction Test = new();
        public int Resets;

        public Rig()
        {
            Io = new PciConfigIo(Bus, () => Resets++);
            Bus.Add(0, 0, Host);
            Bus.Add(1, 0, Isa);
            Bus.Add(3, 0, Test);
        }

        public void Select(int dev, int fn, int reg) => Io.Write(0, 4, 0x8000_0000u | (uint)(dev << 11) | (uint)(fn << 8) | (uint)reg);
        public uint Read32(int dev, int fn, int reg) { Select(dev, fn, reg & 0xFC); return (uint)Io.Read(4, 4); }
        public uint Read16(int dev, int fn, int reg) { Select(dev, fn, reg & 0xFC); return (uint)Io.Read(4 + (ulong)(reg & 2), 2); }
        public uint Read8(int dev, int fn, int reg) { Select(dev, fn, reg & 0xFC); return (uint)Io.Read(4 + (ulong)(reg & 3), 1); }
        public void Write32(int dev, int fn, int reg, uint v) { Select(dev, fn, reg & 0xFC); Io.Write(4, 4, v); }
        public void Write8(int dev, int fn, int reg, byte v) { Select(dev, fn, reg & 0xFC); Io.Write(4 + (ulong)(reg & 3), 1, v); }
    }

    [Fact]
    public void HostBridgeIs440fx()
    {
        var r = new Rig();
        Assert.Equal(0x1237_8086u, r.Read32(0, 0, 0));
        Assert.Equal(0x0600_0002u, r.Read32(0, 0, 0x08)); // class 06/00/00, revision 02
        Assert.Equal(0x00u, r.Read8(0, 0, 0x0E));
        Assert.Equal(0x8086u, r.Read16(0, 0, 0x00));
        Assert.Equal(0x1237u, r.Read16(0, 0, 0x02));
        Assert.Equal(0x12u, r.Read8(0, 0, 0x03));
    }

    [Fact]
    public void IsaBridgeIsMultiFunctionPiix3()
    {
        var r = new Rig();
        Assert.Equal(0x7000_8086u, r.Read32(1, 0, 0));
        Assert.Equal(0x0601u, r.Read32(1, 0, 0x08) >> 16);
        Assert.Equal(0x80u, r.Read8(1, 0, 0x0E));
    }

    [Fact]
    public void AbsentFunctionsReadAllOnes()
    {
        var r = new Rig();
        Assert.Equal(0xFFFF_FFFFu, r.Read32(5, 0, 0));
        Assert.Equal(0xFFFFu, r.Read16(1, 1, 0));
        Assert.Equal(0xFFu, r.Read8(31, 7, 0x0E));
        // bus 1 does not exist
        r.Io.Write(0, 4, 0x8001_0000);
        Assert.Equal(0xFFFF_FFFFUL, r.Io.Read(4, 4));
        r.Write32(5, 0, 0x04, 0x7); // dropped, no throw
    }

    [Fact]
    public void DisabledAddressRegisterReadsAllOnes()
    {
        var r = new Rig();
        r.Io.Write(0, 4, 0x0000_0000); // enable bit clear, 00:00.0 reg 0
        Assert.Equal(0xFFFF_FFFFUL, r.Io.Read(4, 4));
    }

    [Fact]
    public void AddressRegisterIsDwordOnlyAndMasksReservedBits()
    {
        var r = new Rig();
        r.Io.Write(0, 4, 0xFFFF_FFFF);
        Assert.Equal(0x80FF_FFFCUL, r.Io.Read(0, 4));
        r.Io.Write(0, 4, 0x8000_0000);
        r.Io.Write(3, 1, 0x01); // Linux's "outb(0x01, 0xCFB)" probe: ignored
        Assert.Equal(0x8000_0000UL, r.Io.Read(0, 4));
        Assert.Equal(0xFFFFUL, r.Io.Read(0, 2));
    }

    [Fact]
    public void DataWindowByteAndWordLanes()
    {
        var r = new Rig();
        r.Select(0, 0, 0);
        Assert.Equal(0x86UL, r.Io.Read(4, 1));
        Assert.Equal(0x80UL, r.Io.Read(5, 1));
        Assert.Equal(0x37UL, r.Io.Read(6, 1));
        Assert.Equal(0x1237UL, r.Io.Read(6, 2));
    }

    [Fact]
    public void ReadOnlyIdsIgnoreWrites()
    {
        var r = new Rig();
        r.Write32(0, 0, 0, 0xDEAD_BEEF);
        Assert.Equal(0x1237_8086u, r.Read32(0, 0, 0));
        r.Write8(3, 0, PciFunction.InterruptLine, 11);
        Assert.Equal(11u, r.Read8(3, 0, PciFunction.InterruptLine));
        r.Write8(3, 0, PciFunction.InterruptPin, 4);
        Assert.Equal(1u, r.Read8(3, 0, PciFunction.InterruptPin));
    }

    [Fact]
    public void BarSizingByWritingAllOnes()
    {
        var r = new Rig();
        r.Write32(3, 0, 0x10, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_FFE1u, r.Read32(3, 0, 0x10)); // 32 bytes of I/O
        r.Write32(3, 0, 0x14, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_F000u, r.Read32(3, 0, 0x14)); // 4 KiB memory, 32-bit, not prefetchable
        r.Write32(3, 0, 0x18, 0xFFFF_FFFF);
        r.Write32(3, 0, 0x1C, 0xFFFF_FFFF);
        Assert.Equal(0x0000_000Cu, r.Read32(3, 0, 0x18)); // 64-bit, prefetchable, 8 GiB
        Assert.Equal(0xFFFF_FFFEu, r.Read32(3, 0, 0x1C));
        // program addresses
        r.Write32(3, 0, 0x10, 0xC040);
        r.Write32(3, 0, 0x14, 0xFEBF_1000);
        r.Write32(3, 0, 0x18, 0);
        r.Write32(3, 0, 0x1C, 0x4);
        Assert.Equal(0xC040UL, r.Test.GetBarAddress(0));
        Assert.Equal(0xFEBF_1000UL, r.Test.GetBarAddress(1));
        Assert.Equal(0x4_0000_0000UL, r.Test.GetBarAddress(2));
        Assert.Equal(0u, r.Read32(3, 0, 0x20)); // undefined BAR reads 0, stays 0
        r.Write32(3, 0, 0x20, 0xFFFF_FFFF);
        Assert.Equal(0u, r.Read32(3, 0, 0x20));
        Assert.True(r.Test.Writes > 0);
    }

    [Fact]
    public void CommandRegisterWritableBitsAndStatusWriteOneToClear()
    {
        var r = new Rig();
        r.Write32(3, 0, 0x04, 0xFFFF_0007);
        Assert.Equal(0x0007u, r.Read32(3, 0, 0x04) & 0xFFFF);
        Assert.Equal(0u, r.Read32(3, 0, 0x04) >> 16); // status W1C bits were 0 and stay 0
        Assert.Equal(7, r.Test.CommandRegister);
    }

    [Fact]
    public void PirqRoutingRegisters()
    {
        var r = new Rig();
        int changes = 0;
        r.Isa.PirqRoutingChanged += () => changes++;
        Assert.Equal(0x8080_8080u, r.Read32(1, 0, 0x60));
        Assert.Equal(-1, r.Isa.GetPirqRoute(0));
        r.Write32(1, 0, 0x60, 0x0B0B_0A0A);
        Assert.Equal(10, r.Isa.GetPirqRoute(0));
        Assert.Equal(10, r.Isa.GetPirqRoute(1));
        Assert.Equal(11, r.Isa.GetPirqRoute(3));
        Assert.Equal(1, changes);
        r.Write8(1, 0, 0x61, 0x7F); // reserved bits 6–4 are not writable
        Assert.Equal(0x0Fu, r.Read8(1, 0, 0x61));
    }

    [Fact]
    public void HostBridgePamRegistersHoldWhatFirmwareWrites()
    {
        var r = new Rig();
        r.Write8(0, 0, 0x59, 0x30);
        r.Write8(0, 0, 0x5A, 0x33);
        Assert.Equal(0x30u, r.Read8(0, 0, 0x59));
        Assert.Equal(0x33u, r.Read8(0, 0, 0x5A));
    }

    [Fact]
    public void ResetControlRegisterAtCf9()
    {
        var r = new Rig();
        r.Io.Write(1, 1, 0x02); // SYS_RST alone: no reset
        Assert.Equal(0, r.Resets);
        Assert.Equal(0x02UL, r.Io.Read(1, 1));
        r.Io.Write(1, 1, 0x06); // SYS_RST | RST_CPU
        Assert.Equal(1, r.Resets);
        r.Io.Write(1, 1, 0x06);
        Assert.Equal(2, r.Resets);
    }
}
