using System.Buffers.Binary;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot.Tests;

internal static class TestSupport
{
    public static GuestMemory Ram(ulong bytes)
    {
        var m = new GuestMemory();
        PcMemoryLayout.AddRam(m, bytes);
        return m;
    }

    public static byte[] Bytes(GuestMemory m, ulong gpa, int n)
    {
        var b = new byte[n];
        m.Read(gpa, b);
        return b;
    }

    public static ushort U16(GuestMemory m, ulong gpa) => m.Read<ushort>(gpa);
    public static uint U32(GuestMemory m, ulong gpa) => m.Read<uint>(gpa);
    public static ulong U64(GuestMemory m, ulong gpa) => m.Read<ulong>(gpa);

    public static string CString(GuestMemory m, ulong gpa)
    {
        var sb = new System.Text.StringBuilder();
        for (byte c; (c = m.Read<byte>(gpa)) != 0; gpa++) sb.Append((char)c);
        return sb.ToString();
    }

    /// <summary>The hidden-cache attributes a CPU loads from an 8-byte descriptor (SDM Vol. 3A §3.4.5).</summary>
    public static (ulong Base, uint Limit, uint Attributes) Decode(ulong d)
    {
        ulong @base = ((d >> 16) & 0xFF_FFFF) | (((d >> 56) & 0xFF) << 24);
        uint limit = (uint)((d & 0xFFFF) | (((d >> 48) & 0xF) << 16));
        uint attr = (uint)(((d >> 40) & 0xFF) | (((d >> 52) & 0xF) << 12));
        if ((attr & SegmentRegister.AttrG) != 0) limit = (limit << 12) | 0xFFF;
        return (@base, limit, attr);
    }

    /// <summary>Checks that the descriptor GDTR names for a selector matches the segment's hidden cache.</summary>
    public static void AssertSegmentMatchesGdt(GuestMemory m, VcpuState s, SegmentRegister seg)
    {
        Assert.True(seg.Selector + 7u <= s.Gdtr.Limit, $"selector {seg.Selector:x} beyond GDT limit {s.Gdtr.Limit:x}");
        var (b, l, a) = Decode(U64(m, s.Gdtr.Base + seg.Selector));
        Assert.Equal(seg.Base, b);
        Assert.Equal(seg.Limit, l);
        Assert.Equal(seg.Attributes, a);
    }

    public static void AssertOneLine(Exception e, string mustContain)
    {
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(mustContain, e.Message);
    }

    public static void W16(byte[] b, int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(o), v);
    public static void W32(byte[] b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(o), v);
    public static void W64(byte[] b, int o, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(o), v);
}
