using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core.Memory;
using FwCfgDevice = SharpVisor.Devices.FwCfg.FwCfg;

using Xunit;

namespace SharpVisor.Devices.Tests;

public sealed class FwCfgTests : IDisposable
{
    private readonly GuestMemory _memory = new();

    public FwCfgTests() => _memory.AddRegion(0, 0x10000, "ram");

    public void Dispose() => _memory.Dispose();

    private static void Select(FwCfgDevice f, ushort key) => f.Write(0, 2, key);

    private static byte[] ReadData(FwCfgDevice f, int n)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)f.Read(1, 1);
        return b;
    }

    /// <summary>What SeaBIOS's qemu_cfg_dma_transfer does: outl(be32(addr >> 32), 0x514); outl(be32(addr), 0x518).</summary>
    private static void KickDma(FwCfgDevice f, ulong accessGpa)
    {
        f.Write(4, 4, BinaryPrimitives.ReverseEndianness((uint)(accessGpa >> 32)));
        f.Write(8, 4, BinaryPrimitives.ReverseEndianness((uint)accessGpa));
    }

    private void PutAccess(ulong gpa, uint control, uint length, ulong address)
    {
        var a = new byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(a, control);
        BinaryPrimitives.WriteUInt32BigEndian(a.AsSpan(4), length);
        BinaryPrimitives.WriteUInt64BigEndian(a.AsSpan(8), address);
        _memory.Write(gpa, a);
    }

    private uint ControlAt(ulong gpa)
    {
        var b = new byte[4];
        _memory.Read(gpa, b);
        return BinaryPrimitives.ReadUInt32BigEndian(b);
    }

    [Fact]
    public void SignatureThenZerosPastTheEnd()
    {
        var f = new FwCfgDevice(_memory);
        Select(f, FwCfgDevice.Signature);
        Assert.Equal("QEMU"u8.ToArray(), ReadData(f, 4));
        Assert.Equal(new byte[3], ReadData(f, 3));
        // selecting again restarts at offset 0
        Select(f, FwCfgDevice.Signature);
        Assert.Equal((byte)'Q', (byte)f.Read(1, 1));
    }

    [Fact]
    public void SignatureIsSelectedAtReset()
    {
        var f = new FwCfgDevice(null);
        Assert.Equal("QEMU"u8.ToArray(), ReadData(f, 4));
    }

    [Fact]
    public void IdAdvertisesDmaOnlyWithGuestMemory()
    {
        var f = new FwCfgDevice(_memory);
        Select(f, FwCfgDevice.Id);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(ReadData(f, 4)));
        var g = new FwCfgDevice(null);
        Select(g, FwCfgDevice.Id);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(ReadData(g, 4)));
    }

    [Fact]
    public void StandardItemsAreLittleEndian()
    {
        var f = new FwCfgDevice(_memory);
        f.SetStandardItems(cpus: 2, maxCpus: 4, ramBytes: 256UL << 20);
        Select(f, FwCfgDevice.NbCpus);
        Assert.Equal(new byte[] { 2, 0 }, ReadData(f, 2));
        Select(f, FwCfgDevice.MaxCpus);
        Assert.Equal(new byte[] { 4, 0 }, ReadData(f, 2));
        Select(f, FwCfgDevice.RamSize);
        Assert.Equal(256UL << 20, BinaryPrimitives.ReadUInt64LittleEndian(ReadData(f, 8)));
        Select(f, FwCfgDevice.Numa);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(ReadData(f, 8)));
        Select(f, FwCfgDevice.BootMenu);
        Assert.Equal(new byte[] { 0, 0 }, ReadData(f, 2));
        f.SetString(FwCfgDevice.CmdlineData, "console=ttyS0");
        Select(f, FwCfgDevice.CmdlineData);
        Assert.Equal("console=ttyS0\0"u8.ToArray(), ReadData(f, 14));
    }

    [Fact]
    public void UnknownItemReadsZeros()
    {
        var f = new FwCfgDevice(_memory);
        Select(f, 0x1234);
        Assert.Equal(new byte[4], ReadData(f, 4));
    }

    [Fact]
    public void FileDirectoryFormat()
    {
        var f = new FwCfgDevice(_memory);
        var foo = Encoding.ASCII.GetBytes("0123456789");
        Assert.Equal(0x20, f.AddFile("etc/foo", foo));
        Assert.Equal(0x21, f.AddFile("bootorder", [1, 2, 3]));
        Select(f, FwCfgDevice.FileDir);
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32BigEndian(ReadData(f, 4)));
        var e0 = ReadData(f, 64);
        Assert.Equal(10u, BinaryPrimitives.ReadUInt32BigEndian(e0));
        Assert.Equal(0x20, BinaryPrimitives.ReadUInt16BigEndian(e0.AsSpan(4)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(e0.AsSpan(6)));
        Assert.Equal("etc/foo", Encoding.ASCII.GetString(e0, 8, 56).TrimEnd('\0'));
        var e1 = ReadData(f, 64);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(e1));
        Assert.Equal(0x21, BinaryPrimitives.ReadUInt16BigEndian(e1.AsSpan(4)));
        Assert.Equal("bootorder", Encoding.ASCII.GetString(e1, 8, 56).TrimEnd('\0'));

        Select(f, 0x20);
        Assert.Equal(foo, ReadData(f, 10));
        Assert.Equal(0, (byte)f.Read(1, 1));
    }

    [Fact]
    public void BadFileNamesAreConfigurationErrors()
    {
        var f = new FwCfgDevice(_memory);
        Assert.Throws<Core.ConfigurationException>(() => f.AddFile(new string('a', 56), []));
        f.AddFile("x", []);
        Assert.Throws<Core.ConfigurationException>(() => f.AddFile("x", []));
    }

    [Fact]
    public void DmaSelectAndReadIntoGuestMemoryZeroFillsPastTheEnd()
    {
        var f = new FwCfgDevice(_memory);
        var data = Encoding.ASCII.GetBytes("hello, guest");
        ushort sel = f.AddFile("etc/hello", data);
        _memory.Write(0x2000, Enumerable.Repeat((byte)0xAA, 32).ToArray());
        PutAccess(0x1000, ((uint)sel << 16) | FwCfgDevice.DmaCtlSelect | FwCfgDevice.DmaCtlRead, 16, 0x2000);
        KickDma(f, 0x1000);
        Assert.Equal(0u, ControlAt(0x1000));
        var got = new byte[32];
        _memory.Read(0x2000, got);
        Assert.Equal(data, got[..12]);
        Assert.Equal(new byte[4], got[12..16]);
        Assert.All(got[16..], b => Assert.Equal(0xAA, b));
    }

    [Fact]
    public void DmaSkipThenReadContinuesAtTheOffset()
    {
        var f = new FwCfgDevice(_memory);
        f.AddFile("etc/x", [10, 11, 12, 13, 14, 15]);
        PutAccess(0x1000, (0x20u << 16) | FwCfgDevice.DmaCtlSelect | FwCfgDevice.DmaCtlSkip, 2, 0);
        KickDma(f, 0x1000);
        Assert.Equal(0u, ControlAt(0x1000));
        PutAccess(0x1000, FwCfgDevice.DmaCtlRead, 3, 0x3000);
        f.Write(4, 8, BinaryPrimitives.ReverseEndianness(0x1000UL)); // one 64-bit write also starts it
        Assert.Equal(0u, ControlAt(0x1000));
        var got = new byte[3];
        _memory.Read(0x3000, got);
        Assert.Equal(new byte[] { 12, 13, 14 }, got);
        Assert.Equal(15, (byte)f.Read(1, 1)); // the data port shares the offset
    }

    [Fact]
    public void DmaToUnbackedMemoryOrWriteReportsError()
    {
        var f = new FwCfgDevice(_memory);
        PutAccess(0x1000, FwCfgDevice.DmaCtlSelect | FwCfgDevice.DmaCtlRead, 4, 0x1_0000_0000);
        KickDma(f, 0x1000);
        Assert.Equal(FwCfgDevice.DmaCtlError, ControlAt(0x1000));
        PutAccess(0x1000, FwCfgDevice.DmaCtlSelect | FwCfgDevice.DmaCtlWrite, 4, 0x2000);
        KickDma(f, 0x1000);
        Assert.Equal(FwCfgDevice.DmaCtlError, ControlAt(0x1000));
        KickDma(f, 0x7FFF_0000); // access structure itself unbacked: nothing to report, nothing thrown
    }

    [Fact]
    public void DmaRegisterReadsQemuCfgSignature()
    {
        var f = new FwCfgDevice(_memory);
        var sig = new byte[8];
        for (int i = 0; i < 8; i++) sig[i] = (byte)f.Read(4 + (ulong)i, 1);
        Assert.Equal("QEMU CFG"u8.ToArray(), sig);
        Assert.Equal(0x51454D55UL, BinaryPrimitives.ReverseEndianness((uint)f.Read(4, 4)));
    }

    [Fact]
    public void E820FileLayout()
    {
        var f = new FwCfgDevice(_memory);
        ushort sel = f.AddE820([new E820Entry(0, 0x9FC00, E820Type.Ram), new E820Entry(0x100000, 0x1F00000, E820Type.Ram)]);
        Select(f, sel);
        var b = ReadData(f, 40);
        Assert.Equal(0x100000UL, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(20)));
        Assert.Equal(0x1F00000UL, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(28)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(36)));
    }
}
