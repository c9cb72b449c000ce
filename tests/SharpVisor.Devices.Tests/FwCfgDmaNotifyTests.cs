using System.Buffers.Binary;
using SharpVisor.Core.Memory;
using FwCfgDevice = SharpVisor.Devices.FwCfg.FwCfg;
using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// fw_cfg DMA writes guest RAM through a span, behind the vCPUs' backs: every byte it writes must be
/// reported through <see cref="GuestMemory.Written"/> so an engine caching decoded code can drop it.
/// </summary>
public sealed class FwCfgDmaNotifyTests : IDisposable
{
    private readonly GuestMemory _memory = new();
    private readonly List<(ulong Gpa, ulong Length)> _written = new();

    public FwCfgDmaNotifyTests() => _memory.AddRegion(0, 0x10000, "ram");

    public void Dispose() => _memory.Dispose();

    private void PutAccess(ulong gpa, uint control, uint length, ulong address)
    {
        var a = new byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(a, control);
        BinaryPrimitives.WriteUInt32BigEndian(a.AsSpan(4), length);
        BinaryPrimitives.WriteUInt64BigEndian(a.AsSpan(8), address);
        _memory.Write(gpa, a);
    }

    private static bool Covers(List<(ulong Gpa, ulong Length)> list, ulong gpa, ulong length)
        => list.Any(w => w.Gpa <= gpa && gpa + length <= w.Gpa + w.Length);

    [Fact]
    public void DmaReadReportsTheDestinationAndTheControlWord()
    {
        var f = new FwCfgDevice(_memory);
        f.SetString(FwCfgDevice.KernelCmdline, "console=ttyS0");
        PutAccess(0x1000, (uint)FwCfgDevice.KernelCmdline << 16 | FwCfgDevice.DmaCtlSelect | FwCfgDevice.DmaCtlRead, 32, 0x3000);
        _memory.Written += (gpa, len) => _written.Add((gpa, len));
        // SeaBIOS: outl(be32(addr >> 32), 0x514); outl(be32(addr), 0x518).
        f.Write(FwCfgDevice.DmaOffset, 4, 0);
        f.Write(FwCfgDevice.DmaOffset + 4, 4, BinaryPrimitives.ReverseEndianness(0x1000u));

        var text = new byte[14];
        _memory.Read(0x3000, text);
        Assert.Equal("console=ttyS0\0"u8.ToArray(), text);
        Assert.True(Covers(_written, 0x3000, 32), string.Join(", ", _written));  // item bytes and the zeros after them
        Assert.True(Covers(_written, 0x1000, 4), string.Join(", ", _written));   // the control word written back as 0
    }

    [Fact]
    public void PlainWritesNotifyAndEmptyOnesDoNot()
    {
        _memory.Written += (gpa, len) => _written.Add((gpa, len));
        _memory.Write(0x2000, new byte[] { 1, 2, 3 });
        _memory.Write(0x2000, ReadOnlySpan<byte>.Empty);
        _memory.NotifyWritten(0x4000, 0);
        Assert.Equal([(0x2000UL, 3UL)], _written);
    }
}
