using Iced.Intel;

namespace SharpVisor.HostCpu.Tests;

/// <summary>Builds test snippets with Iced's assembler (position-independent code only).</summary>
internal static class Snippet
{
    public static byte[] Asm(Action<Assembler> build)
    {
        var a = new Assembler(64);
        build(a);
        var writer = new Writer();
        a.Assemble(writer, 0);
        return writer.Bytes.ToArray();
    }

    public static NativeCase Case(byte[] code, ushort relocated = 0, byte[]? window = null)
    {
        var s = NativeState.Initial();
        s.Rsp = NativeLayout.DefaultRsp;
        var c = new NativeCase { Code = code, RelocatedGprs = relocated, Window = window ?? new byte[NativeLayout.WindowSize] };
        c.Input = s;
        return c;
    }

    private sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }
}
