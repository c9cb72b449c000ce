// Register state moved in and out of a natively executed snippet.
// Layout of the FXSAVE area follows the Intel SDM Vol. 1 §10.5.1, Table 10-2 (64-bit format,
// REX.W FXSAVE64): FCW 0, FSW 2, abridged FTW 4, FOP 6, FIP 8, FDP 16, MXCSR 24, MXCSR_MASK 28,
// ST0–ST7 at 32 + 16·i (80 bits used), XMM0–XMM15 at 160 + 16·i.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace SharpVisor.HostCpu;

/// <summary>RFLAGS bit names (SDM Vol. 1 §3.4.3).</summary>
public static class RflagsBits
{
    public const ulong CF = 1UL << 0, Reserved1 = 1UL << 1, PF = 1UL << 2, AF = 1UL << 4, ZF = 1UL << 6, SF = 1UL << 7,
        TF = 1UL << 8, IF = 1UL << 9, DF = 1UL << 10, OF = 1UL << 11;

    /// <summary>The six arithmetic status flags.</summary>
    public const ulong Status = CF | PF | AF | ZF | SF | OF;

    /// <summary>
    /// The flags a test may choose: the status flags and DF. TF would trap after every
    /// instruction and AC would enable alignment checking (CR0.AM is set by Linux), so the
    /// harness keeps the host's values of every other bit.
    /// </summary>
    public const ulong Settable = Status | DF;
}

/// <summary>The 16 general registers in x86 encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15).</summary>
[InlineArray(16)]
public struct GprFile
{
    private ulong _element0;
}

/// <summary>The 512-byte FXSAVE64 image: x87, MXCSR and XMM0–XMM15.</summary>
[InlineArray(512)]
public struct FxSaveArea
{
    private byte _element0;

    public const int FcwOffset = 0, FswOffset = 2, FtwOffset = 4, FopOffset = 6, FipOffset = 8, FdpOffset = 16,
        MxcsrOffset = 24, MxcsrMaskOffset = 28, StOffset = 32, XmmOffset = 160, UsedBytes = 416;
}

/// <summary>
/// CPU state going into or coming out of a native run: GPRs, RFLAGS and the FXSAVE image.
/// A plain value type so cases can be copied and stored.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct NativeState
{
    public GprFile Gpr;
    public ulong Rflags;
    public FxSaveArea Fx;

    /// <summary>FCW after FNINIT; MXCSR after reset (SDM Vol. 1 §8.1.5, §10.2.3.1): all exceptions masked.</summary>
    public const ushort DefaultFcw = 0x037F;
    public const uint DefaultMxcsr = 0x1F80;

    /// <summary>A state with zeroed registers, RFLAGS = 2, x87 initialised (empty stack) and default MXCSR.</summary>
    public static NativeState Initial()
    {
        var s = new NativeState { Rflags = RflagsBits.Reserved1 };
        s.Fcw = DefaultFcw;
        s.Mxcsr = DefaultMxcsr;
        return s;
    }

    public ulong Rax { readonly get => Gpr[0]; set => Gpr[0] = value; }
    public ulong Rcx { readonly get => Gpr[1]; set => Gpr[1] = value; }
    public ulong Rdx { readonly get => Gpr[2]; set => Gpr[2] = value; }
    public ulong Rbx { readonly get => Gpr[3]; set => Gpr[3] = value; }
    public ulong Rsp { readonly get => Gpr[4]; set => Gpr[4] = value; }
    public ulong Rbp { readonly get => Gpr[5]; set => Gpr[5] = value; }
    public ulong Rsi { readonly get => Gpr[6]; set => Gpr[6] = value; }
    public ulong Rdi { readonly get => Gpr[7]; set => Gpr[7] = value; }

    public ushort Fcw { readonly get => Read<ushort>(FxSaveArea.FcwOffset); set => Write(FxSaveArea.FcwOffset, value); }
    public ushort Fsw { readonly get => Read<ushort>(FxSaveArea.FswOffset); set => Write(FxSaveArea.FswOffset, value); }
    /// <summary>Abridged tag word: bit i set = physical register i is valid (not empty).</summary>
    public byte Ftw { readonly get => Fx[FxSaveArea.FtwOffset]; set => Fx[FxSaveArea.FtwOffset] = value; }
    public uint Mxcsr { readonly get => Read<uint>(FxSaveArea.MxcsrOffset); set => Write(FxSaveArea.MxcsrOffset, value); }

    /// <summary>XMM register <paramref name="index"/> (0–15) as a 128-bit integer (little-endian lanes).</summary>
    public readonly UInt128 GetXmm(int index) => Read<UInt128>(FxSaveArea.XmmOffset + 16 * CheckIndex(index, 16));
    public void SetXmm(int index, UInt128 value) => Write(FxSaveArea.XmmOffset + 16 * CheckIndex(index, 16), value);

    /// <summary>
    /// x87 register ST(<paramref name="index"/>) in FXSAVE order, which is stack order (ST0 first),
    /// as the 80-bit extended value: significand in the low 64 bits, sign and exponent in bits 64–79.
    /// </summary>
    public readonly UInt128 GetSt(int index) => Read<UInt128>(FxSaveArea.StOffset + 16 * CheckIndex(index, 8)) & ((UInt128.One << 80) - 1);
    public void SetSt(int index, UInt128 value) => Write(FxSaveArea.StOffset + 16 * CheckIndex(index, 8), value & ((UInt128.One << 80) - 1));

    /// <summary>
    /// Puts <paramref name="values"/> on the x87 stack so that values[0] is ST0 and marks them valid,
    /// setting TOP accordingly (the physical register of ST(i) is (TOP + i) mod 8).
    /// </summary>
    public void SetX87Stack(ReadOnlySpan<UInt128> values)
    {
        if (values.Length > 8) throw new ArgumentOutOfRangeException(nameof(values));
        int top = (8 - values.Length) & 7;
        byte tags = 0;
        for (int i = 0; i < 8; i++) SetSt(i, 0);
        for (int i = 0; i < values.Length; i++)
        {
            SetSt(i, values[i]);
            tags |= (byte)(1 << ((top + i) & 7));
        }
        Ftw = tags;
        Fsw = (ushort)((Fsw & ~0x3800) | (top << 11));
    }

    public readonly byte[] FxBytes()
    {
        var bytes = new byte[512];
        ReadOnlySpan<byte> fx = Fx;
        fx.CopyTo(bytes);
        return bytes;
    }

    private readonly T Read<T>(int offset) where T : unmanaged
    {
        ReadOnlySpan<byte> fx = Fx;
        return MemoryMarshal.Read<T>(fx[offset..]);
    }

    private void Write<T>(int offset, T value) where T : unmanaged
    {
        Span<byte> fx = Fx;
        MemoryMarshal.Write(fx[offset..], in value);
    }

    private static int CheckIndex(int index, int count) =>
        (uint)index < (uint)count ? index : throw new ArgumentOutOfRangeException(nameof(index));

    /// <summary>Adds <paramref name="delta"/> to every GPR whose bit is set in <paramref name="gprMask"/> (bit i = register i).</summary>
    public void Relocate(ushort gprMask, ulong delta)
    {
        for (int i = 0; i < 16; i++)
            if ((gprMask & (1 << i)) != 0) Gpr[i] += delta;
    }
}
