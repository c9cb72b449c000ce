// Building cases by hand: snippet bytes from Iced's assembler and a case with the harness's
// default input (NativeState.Initial, RSP in the middle of the window's stack area). Shared by
// every test that runs code natively, so each does not grow its own writer and setup.
using Iced.Intel;

namespace SharpVisor.HostCpu;

public static class NativeSnippet
{
    /// <summary>64-bit code assembled at RIP 0; position-independent code only (it runs at <see cref="HostCpu.CodeAddress"/>).</summary>
    public static byte[] Assemble(Action<Assembler> build)
    {
        var a = new Assembler(64);
        build(a);
        var writer = new ByteWriter();
        a.Assemble(writer, 0);
        return writer.ToArray();
    }

    /// <summary>A case of <paramref name="code"/> with the initial state, RSP = <see cref="NativeLayout.DefaultRsp"/> and a zeroed window unless one is given.</summary>
    public static NativeCase Case(byte[] code, ushort relocated = 0, byte[]? window = null)
    {
        var input = NativeState.Initial();
        input.Rsp = NativeLayout.DefaultRsp;
        return new NativeCase
        {
            Code = code,
            Input = input,
            RelocatedGprs = relocated,
            Window = window ?? new byte[NativeLayout.WindowSize],
        };
    }
}

/// <summary>Collects what Iced's encoder or assembler writes.</summary>
internal sealed class ByteWriter : CodeWriter
{
    private readonly List<byte> _bytes = new();
    public int Count => _bytes.Count;
    public override void WriteByte(byte value) => _bytes.Add(value);
    public byte[] ToArray() => _bytes.ToArray();
}
