// Packed-integer lane arithmetic for the MMX/SSE2–SSE4.2 integer instructions (SDM Vol. 2, each
// instruction's "Operation" section). Integer SIMD has one exact answer, so the host computes it:
// portable Vector128 operations where .NET defines them with the architectural result on every
// platform (add, compare, min/max, logic, shuffles with out-of-range indices giving zero), the x86
// intrinsics (Sse2/Ssse3/Sse41) where only they have it (saturation, rounding averages, packs,
// horizontal ops…), and a scalar version of each of those for hosts without SSE4.1 (.NET's
// Sse41.IsSupported implies Ssse3 and Sse2). Tests compare the scalar versions with the intrinsics.
// Deliberate deviation: none; MPSADBW is scalar everywhere (its intrinsic needs a constant imm8).
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;


namespace SharpVisor.Cpu;

/// <summary>One packed-integer operation: <c>a</c> is the destination (first source), <c>b</c> the second source.</summary>
internal enum PackedOp : byte
{
    Add8, Add16, Add32, Add64, AddSat8, AddSat16, AddUSat8, AddUSat16,
    Sub8, Sub16, Sub32, Sub64, SubSat8, SubSat16, SubUSat8, SubUSat16,
    MulLo16, MulHi16, MulHiU16, MulUdq, MulLo32, MulDq, MulHrs16, MAddWd, MAddUbsw,
    Avg8, Avg16, Sad8,
    MinS8, MinU8, MinS16, MinU16, MinS32, MinU32, MaxS8, MaxU8, MaxS16, MaxU16, MaxS32, MaxU32,
    CmpEq8, CmpEq16, CmpEq32, CmpEq64, CmpGt8, CmpGt16, CmpGt32, CmpGt64,
    And, AndN, Or, Xor,
    /// <summary>Shifts of <c>a</c> by the unsigned 64-bit count in the low quadword of <c>b</c>.</summary>
    Sll16, Sll32, Sll64, Srl16, Srl32, Srl64, Sra16, Sra32,
    /// <summary>PSLLDQ/PSRLDQ: whole-register byte shifts by imm8.</summary>
    ByteShiftL, ByteShiftR,
    PackSsWb, PackSsDw, PackUsWb, PackUsDw,
    UnpackLo8, UnpackLo16, UnpackLo32, UnpackLo64, UnpackHi8, UnpackHi16, UnpackHi32, UnpackHi64,
    Shuffle8, AlignR,
    HAdd16, HAdd32, HAddSat16, HSub16, HSub32, HSubSat16,
    Sign8, Sign16, Sign32,
    /// <summary>Unary operations of <c>b</c> (the source operand).</summary>
    Abs8, Abs16, Abs32,
    Blend16, Mpsadbw, ShufD, ShufHw, ShufLw, MinPosU16,
    SxBw, SxBd, SxBq, SxWd, SxWq, SxDq, ZxBw, ZxBd, ZxBq, ZxWd, ZxWq, ZxDq,
}

internal static class PackedInteger
{
    /// <summary>The result of <paramref name="op"/>: the host's intrinsics when it has SSE4.1, else the scalar version.</summary>
    public static Vector128<byte> Compute(PackedOp op, Vector128<byte> a, Vector128<byte> b, byte imm) =>
        Sse41.IsSupported ? Host(op, a, b, imm) : Soft(op, a, b, imm);

    /// <summary>PBLENDVB: bytes of <paramref name="b"/> where the mask byte's top bit is set, else <paramref name="a"/>.</summary>
    public static Vector128<byte> BlendVariable(Vector128<byte> a, Vector128<byte> b, Vector128<byte> mask) =>
        Vector128.ConditionalSelect(Vector128.ShiftRightArithmetic(mask.AsSByte(), 7).AsByte(), b, a);

    internal static Vector128<byte> Host(PackedOp op, Vector128<byte> a, Vector128<byte> b, byte imm)
    {
        switch (op)
        {
            case PackedOp.AddSat8: return Sse2.AddSaturate(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.AddSat16: return Sse2.AddSaturate(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.AddUSat8: return Sse2.AddSaturate(a, b);
            case PackedOp.AddUSat16: return Sse2.AddSaturate(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.SubSat8: return Sse2.SubtractSaturate(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.SubSat16: return Sse2.SubtractSaturate(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.SubUSat8: return Sse2.SubtractSaturate(a, b);
            case PackedOp.SubUSat16: return Sse2.SubtractSaturate(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.MulHi16: return Sse2.MultiplyHigh(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.MulHiU16: return Sse2.MultiplyHigh(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.MulHrs16: return Ssse3.MultiplyHighRoundScale(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.MAddWd: return Sse2.MultiplyAddAdjacent(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.MAddUbsw: return Ssse3.MultiplyAddAdjacent(a, b.AsSByte()).AsByte();
            case PackedOp.Avg8: return Sse2.Average(a, b);
            case PackedOp.Avg16: return Sse2.Average(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.Sad8: return Sse2.SumAbsoluteDifferences(a, b).AsByte();
            case PackedOp.PackSsWb: return Sse2.PackSignedSaturate(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.PackSsDw: return Sse2.PackSignedSaturate(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.PackUsWb: return Sse2.PackUnsignedSaturate(a.AsInt16(), b.AsInt16());
            case PackedOp.PackUsDw: return Sse41.PackUnsignedSaturate(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.UnpackLo8: return Sse2.UnpackLow(a, b);
            case PackedOp.UnpackLo16: return Sse2.UnpackLow(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.UnpackLo32: return Sse2.UnpackLow(a.AsUInt32(), b.AsUInt32()).AsByte();
            case PackedOp.UnpackLo64: return Sse2.UnpackLow(a.AsUInt64(), b.AsUInt64()).AsByte();
            case PackedOp.UnpackHi8: return Sse2.UnpackHigh(a, b);
            case PackedOp.UnpackHi16: return Sse2.UnpackHigh(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.UnpackHi32: return Sse2.UnpackHigh(a.AsUInt32(), b.AsUInt32()).AsByte();
            case PackedOp.UnpackHi64: return Sse2.UnpackHigh(a.AsUInt64(), b.AsUInt64()).AsByte();
            case PackedOp.HAdd16: return Ssse3.HorizontalAdd(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.HAdd32: return Ssse3.HorizontalAdd(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.HAddSat16: return Ssse3.HorizontalAddSaturate(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.HSub16: return Ssse3.HorizontalSubtract(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.HSub32: return Ssse3.HorizontalSubtract(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.HSubSat16: return Ssse3.HorizontalSubtractSaturate(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.Sign8: return Ssse3.Sign(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.Sign16: return Ssse3.Sign(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.Sign32: return Ssse3.Sign(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.MinPosU16: return Sse41.MinHorizontal(b.AsUInt16()).AsByte();
            default: return Portable(op, a, b, imm);
        }
    }

    /// <summary>Operations whose portable Vector128 form is exact on every host; scalar where no vector form fits.</summary>
    private static Vector128<byte> Portable(PackedOp op, Vector128<byte> a, Vector128<byte> b, byte imm)
    {
        switch (op)
        {
            case PackedOp.Add8: return a + b;
            case PackedOp.Add16: return (a.AsUInt16() + b.AsUInt16()).AsByte();
            case PackedOp.Add32: return (a.AsUInt32() + b.AsUInt32()).AsByte();
            case PackedOp.Add64: return (a.AsUInt64() + b.AsUInt64()).AsByte();
            case PackedOp.Sub8: return a - b;
            case PackedOp.Sub16: return (a.AsUInt16() - b.AsUInt16()).AsByte();
            case PackedOp.Sub32: return (a.AsUInt32() - b.AsUInt32()).AsByte();
            case PackedOp.Sub64: return (a.AsUInt64() - b.AsUInt64()).AsByte();
            case PackedOp.MulLo16: return (a.AsUInt16() * b.AsUInt16()).AsByte();
            case PackedOp.MulLo32: return (a.AsUInt32() * b.AsUInt32()).AsByte();
            case PackedOp.MulUdq:
            {
                var lo = Vector128.Create(0xFFFF_FFFFUL);
                return ((a.AsUInt64() & lo) * (b.AsUInt64() & lo)).AsByte();
            }
            case PackedOp.MulDq:
            {
                var x = Vector128.ShiftRightArithmetic(Vector128.ShiftLeft(a.AsInt64(), 32), 32);
                var y = Vector128.ShiftRightArithmetic(Vector128.ShiftLeft(b.AsInt64(), 32), 32);
                return (x * y).AsByte();
            }
            case PackedOp.MinS8: return Vector128.Min(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.MinU8: return Vector128.Min(a, b);
            case PackedOp.MinS16: return Vector128.Min(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.MinU16: return Vector128.Min(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.MinS32: return Vector128.Min(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.MinU32: return Vector128.Min(a.AsUInt32(), b.AsUInt32()).AsByte();
            case PackedOp.MaxS8: return Vector128.Max(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.MaxU8: return Vector128.Max(a, b);
            case PackedOp.MaxS16: return Vector128.Max(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.MaxU16: return Vector128.Max(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.MaxS32: return Vector128.Max(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.MaxU32: return Vector128.Max(a.AsUInt32(), b.AsUInt32()).AsByte();
            case PackedOp.CmpEq8: return Vector128.Equals(a, b);
            case PackedOp.CmpEq16: return Vector128.Equals(a.AsUInt16(), b.AsUInt16()).AsByte();
            case PackedOp.CmpEq32: return Vector128.Equals(a.AsUInt32(), b.AsUInt32()).AsByte();
            case PackedOp.CmpEq64: return Vector128.Equals(a.AsUInt64(), b.AsUInt64()).AsByte();
            case PackedOp.CmpGt8: return Vector128.GreaterThan(a.AsSByte(), b.AsSByte()).AsByte();
            case PackedOp.CmpGt16: return Vector128.GreaterThan(a.AsInt16(), b.AsInt16()).AsByte();
            case PackedOp.CmpGt32: return Vector128.GreaterThan(a.AsInt32(), b.AsInt32()).AsByte();
            case PackedOp.CmpGt64: return Vector128.GreaterThan(a.AsInt64(), b.AsInt64()).AsByte();
            case PackedOp.And: return a & b;
            case PackedOp.AndN: return Vector128.AndNot(b, a); // PANDN: (NOT dest) AND src
            case PackedOp.Or: return a | b;
            case PackedOp.Xor: return a ^ b;
            // Shift counts are the whole low quadword of the count operand; past the lane width the
            // logical shifts give 0 and the arithmetic ones the sign (SDM PSLLW/PSRLW/PSRAW "Operation").
            case PackedOp.Sll16: return Count(b, 16, out int c) ? Vector128.ShiftLeft(a.AsUInt16(), c).AsByte() : default;
            case PackedOp.Sll32: return Count(b, 32, out c) ? Vector128.ShiftLeft(a.AsUInt32(), c).AsByte() : default;
            case PackedOp.Sll64: return Count(b, 64, out c) ? Vector128.ShiftLeft(a.AsUInt64(), c).AsByte() : default;
            case PackedOp.Srl16: return Count(b, 16, out c) ? Vector128.ShiftRightLogical(a.AsUInt16(), c).AsByte() : default;
            case PackedOp.Srl32: return Count(b, 32, out c) ? Vector128.ShiftRightLogical(a.AsUInt32(), c).AsByte() : default;
            case PackedOp.Srl64: return Count(b, 64, out c) ? Vector128.ShiftRightLogical(a.AsUInt64(), c).AsByte() : default;
            case PackedOp.Sra16: Count(b, 16, out c); return Vector128.ShiftRightArithmetic(a.AsInt16(), Math.Min(c, 15)).AsByte();
            case PackedOp.Sra32: Count(b, 32, out c); return Vector128.ShiftRightArithmetic(a.AsInt32(), Math.Min(c, 31)).AsByte();
            // Vector128.Shuffle gives 0 for an index past the last lane, which is what the byte shifts,
            // PALIGNR and PSHUFB (index bit 7) need.
            case PackedOp.ByteShiftL: return Vector128.Shuffle(a, Vector128<byte>.Indices - Vector128.Create((byte)Math.Min((int)imm, 16)));
            case PackedOp.ByteShiftR: return Vector128.Shuffle(a, Vector128<byte>.Indices + Vector128.Create((byte)Math.Min((int)imm, 16)));
            case PackedOp.AlignR:
            {
                // (a:b) >> imm·8, taking the low 16 bytes: b supplies bytes imm.., then a.
                var n = Vector128.Create((byte)Math.Min((int)imm, 32));
                var idx = Vector128<byte>.Indices + n; // 0..47: < 16 from b, 16..31 from a, else zero
                return Vector128.Shuffle(b, idx) | Vector128.Shuffle(a, idx - Vector128.Create((byte)16));
            }
            case PackedOp.Shuffle8: return Vector128.Shuffle(a, b & Vector128.Create((byte)0x8F));
            // |x| as the unsigned minimum of x and −x: exact for the most negative value too (PABSB of 80H is 80H).
            case PackedOp.Abs8: return Vector128.Min(b, (-b.AsSByte()).AsByte());
            case PackedOp.Abs16: return Vector128.Min(b.AsUInt16(), (-b.AsInt16()).AsUInt16()).AsByte();
            case PackedOp.Abs32: return Vector128.Min(b.AsUInt32(), (-b.AsInt32()).AsUInt32()).AsByte();
            case PackedOp.Blend16:
            {
                var bits = Vector128.Create((ushort)1, 2, 4, 8, 16, 32, 64, 128);
                var mask = Vector128.Equals(Vector128.Create((ushort)imm) & bits, bits);
                return Vector128.ConditionalSelect(mask.AsByte(), b, a);
            }
            case PackedOp.ShufD:
                return Vector128.Shuffle(b.AsUInt32(), Vector128.Create((uint)(imm & 3), (uint)(imm >> 2 & 3), (uint)(imm >> 4 & 3), (uint)(imm >> 6 & 3))).AsByte();
            case PackedOp.ShufLw:
                return Vector128.Shuffle(b.AsUInt16(), Vector128.Create((ushort)(imm & 3), (ushort)(imm >> 2 & 3), (ushort)(imm >> 4 & 3),
                    (ushort)(imm >> 6 & 3), 4, 5, 6, 7)).AsByte();
            case PackedOp.ShufHw:
                return Vector128.Shuffle(b.AsUInt16(), Vector128.Create((ushort)0, 1, 2, 3, (ushort)(4 + (imm & 3)), (ushort)(4 + (imm >> 2 & 3)),
                    (ushort)(4 + (imm >> 4 & 3)), (ushort)(4 + (imm >> 6 & 3)))).AsByte();
            case PackedOp.SxBw: return Vector128.WidenLower(b.AsSByte()).AsByte();
            case PackedOp.SxBd: return Vector128.WidenLower(Vector128.WidenLower(b.AsSByte())).AsByte();
            case PackedOp.SxBq: return Vector128.WidenLower(Vector128.WidenLower(Vector128.WidenLower(b.AsSByte()))).AsByte();
            case PackedOp.SxWd: return Vector128.WidenLower(b.AsInt16()).AsByte();
            case PackedOp.SxWq: return Vector128.WidenLower(Vector128.WidenLower(b.AsInt16())).AsByte();
            case PackedOp.SxDq: return Vector128.WidenLower(b.AsInt32()).AsByte();
            case PackedOp.ZxBw: return Vector128.WidenLower(b).AsByte();
            case PackedOp.ZxBd: return Vector128.WidenLower(Vector128.WidenLower(b)).AsByte();
            case PackedOp.ZxBq: return Vector128.WidenLower(Vector128.WidenLower(Vector128.WidenLower(b))).AsByte();
            case PackedOp.ZxWd: return Vector128.WidenLower(b.AsUInt16()).AsByte();
            case PackedOp.ZxWq: return Vector128.WidenLower(Vector128.WidenLower(b.AsUInt16())).AsByte();
            case PackedOp.ZxDq: return Vector128.WidenLower(b.AsUInt32()).AsByte();
            case PackedOp.Mpsadbw: return Mpsadbw(a, b, imm);
            default: return Soft(op, a, b, imm);
        }
    }

    /// <summary>The shift count from the low quadword of <paramref name="b"/>; false when it is at least <paramref name="width"/>.</summary>
    private static bool Count(Vector128<byte> b, int width, out int count)
    {
        ulong c = b.AsUInt64().ToScalar();
        count = c >= (ulong)width ? width : (int)c;
        return c < (ulong)width;
    }

    /// <summary>MPSADBW (SDM Vol. 2B): eight 4-byte SADs of a's sliding window (offset imm[2]·4) against b's block imm[1:0].</summary>
    private static Vector128<byte> Mpsadbw(Vector128<byte> a, Vector128<byte> b, byte imm)
    {
        int ao = (imm >> 2 & 1) * 4, bo = (imm & 3) * 4;
        var r = Vector128<ushort>.Zero;
        for (int k = 0; k < 8; k++)
        {
            int sum = 0;
            for (int j = 0; j < 4; j++) sum += Math.Abs(a.GetElement(ao + k + j) - b.GetElement(bo + j));
            r = r.WithElement(k, (ushort)sum);
        }
        return r.AsByte();
    }

    private static Span<T> Lanes<T>(ref Vector128<byte> v) where T : struct =>
        MemoryMarshal.Cast<byte, T>(MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref v, 1)));

    private static sbyte SatS8(int v) => (sbyte)Math.Clamp(v, sbyte.MinValue, sbyte.MaxValue);
    private static byte SatU8(int v) => (byte)Math.Clamp(v, 0, byte.MaxValue);
    private static short SatS16(int v) => (short)Math.Clamp(v, short.MinValue, short.MaxValue);
    private static ushort SatU16(int v) => (ushort)Math.Clamp(v, 0, ushort.MaxValue);

    /// <summary>Scalar versions of the operations that need x86 intrinsics (hosts without SSE4.1).</summary>
    internal static Vector128<byte> Soft(PackedOp op, Vector128<byte> a, Vector128<byte> b, byte imm)
    {
        Vector128<byte> r = default;
        switch (op)
        {
            case PackedOp.AddSat8: case PackedOp.SubSat8:
            {
                var x = Lanes<sbyte>(ref a); var y = Lanes<sbyte>(ref b); var z = Lanes<sbyte>(ref r);
                for (int k = 0; k < 16; k++) z[k] = SatS8(op == PackedOp.AddSat8 ? x[k] + y[k] : x[k] - y[k]);
                return r;
            }
            case PackedOp.AddUSat8: case PackedOp.SubUSat8:
            {
                var x = Lanes<byte>(ref a); var y = Lanes<byte>(ref b); var z = Lanes<byte>(ref r);
                for (int k = 0; k < 16; k++) z[k] = SatU8(op == PackedOp.AddUSat8 ? x[k] + y[k] : x[k] - y[k]);
                return r;
            }
            case PackedOp.AddSat16: case PackedOp.SubSat16: case PackedOp.MulHi16: case PackedOp.MulHrs16: case PackedOp.Sign16:
            {
                var x = Lanes<short>(ref a); var y = Lanes<short>(ref b); var z = Lanes<short>(ref r);
                for (int k = 0; k < 8; k++)
                    z[k] = op switch
                    {
                        PackedOp.AddSat16 => SatS16(x[k] + y[k]),
                        PackedOp.SubSat16 => SatS16(x[k] - y[k]),
                        PackedOp.MulHi16 => (short)((x[k] * y[k]) >> 16),
                        PackedOp.MulHrs16 => (short)((((x[k] * y[k]) >> 14) + 1) >> 1),
                        _ => y[k] < 0 ? (short)-x[k] : y[k] == 0 ? (short)0 : x[k],
                    };
                return r;
            }
            case PackedOp.AddUSat16: case PackedOp.SubUSat16: case PackedOp.MulHiU16: case PackedOp.Avg16:
            {
                var x = Lanes<ushort>(ref a); var y = Lanes<ushort>(ref b); var z = Lanes<ushort>(ref r);
                for (int k = 0; k < 8; k++)
                    z[k] = op switch
                    {
                        PackedOp.AddUSat16 => SatU16(x[k] + y[k]),
                        PackedOp.SubUSat16 => SatU16(x[k] - y[k]),
                        PackedOp.MulHiU16 => (ushort)((uint)(x[k] * y[k]) >> 16),
                        _ => (ushort)((x[k] + y[k] + 1) >> 1),
                    };
                return r;
            }
            case PackedOp.Avg8:
            {
                var x = Lanes<byte>(ref a); var y = Lanes<byte>(ref b); var z = Lanes<byte>(ref r);
                for (int k = 0; k < 16; k++) z[k] = (byte)((x[k] + y[k] + 1) >> 1);
                return r;
            }
            case PackedOp.Sign8:
            {
                var x = Lanes<sbyte>(ref a); var y = Lanes<sbyte>(ref b); var z = Lanes<sbyte>(ref r);
                for (int k = 0; k < 16; k++) z[k] = y[k] < 0 ? (sbyte)-x[k] : y[k] == 0 ? (sbyte)0 : x[k];
                return r;
            }
            case PackedOp.Sign32:
            {
                var x = Lanes<int>(ref a); var y = Lanes<int>(ref b); var z = Lanes<int>(ref r);
                for (int k = 0; k < 4; k++) z[k] = y[k] < 0 ? unchecked(-x[k]) : y[k] == 0 ? 0 : x[k];
                return r;
            }
            case PackedOp.MAddWd:
            {
                var x = Lanes<short>(ref a); var y = Lanes<short>(ref b); var z = Lanes<int>(ref r);
                // Only 8000H·8000H twice overflows, to 80000000H, which the wrapping add gives too.
                for (int k = 0; k < 4; k++) z[k] = unchecked(x[2 * k] * y[2 * k] + x[2 * k + 1] * y[2 * k + 1]);
                return r;
            }
            case PackedOp.MAddUbsw:
            {
                var x = Lanes<byte>(ref a); var y = Lanes<sbyte>(ref b); var z = Lanes<short>(ref r);
                for (int k = 0; k < 8; k++) z[k] = SatS16(x[2 * k] * y[2 * k] + x[2 * k + 1] * y[2 * k + 1]);
                return r;
            }
            case PackedOp.Sad8:
            {
                var x = Lanes<byte>(ref a); var y = Lanes<byte>(ref b); var z = Lanes<ulong>(ref r);
                for (int h = 0; h < 2; h++)
                {
                    int sum = 0;
                    for (int k = 0; k < 8; k++) sum += Math.Abs(x[8 * h + k] - y[8 * h + k]);
                    z[h] = (ulong)sum;
                }
                return r;
            }
            case PackedOp.PackSsWb: case PackedOp.PackUsWb:
            {
                var x = Lanes<short>(ref a); var y = Lanes<short>(ref b); var z = Lanes<byte>(ref r);
                for (int k = 0; k < 16; k++)
                {
                    int v = k < 8 ? x[k] : y[k - 8];
                    z[k] = op == PackedOp.PackSsWb ? (byte)SatS8(v) : SatU8(v);
                }
                return r;
            }
            case PackedOp.PackSsDw: case PackedOp.PackUsDw:
            {
                var x = Lanes<int>(ref a); var y = Lanes<int>(ref b); var z = Lanes<ushort>(ref r);
                for (int k = 0; k < 8; k++)
                {
                    int v = k < 4 ? x[k] : y[k - 4];
                    z[k] = op == PackedOp.PackSsDw ? (ushort)SatS16(v) : SatU16(v);
                }
                return r;
            }
            case PackedOp.UnpackLo8: case PackedOp.UnpackLo16: case PackedOp.UnpackLo32: case PackedOp.UnpackLo64:
            case PackedOp.UnpackHi8: case PackedOp.UnpackHi16: case PackedOp.UnpackHi32: case PackedOp.UnpackHi64:
            {
                int size = 1 << ((op - PackedOp.UnpackLo8) & 3);
                int from = op >= PackedOp.UnpackHi8 ? 8 : 0;
                var x = Lanes<byte>(ref a); var y = Lanes<byte>(ref b); var z = Lanes<byte>(ref r);
                for (int k = 0; k < 8 / size; k++)
                {
                    x.Slice(from + k * size, size).CopyTo(z[(2 * k * size)..]);
                    y.Slice(from + k * size, size).CopyTo(z[((2 * k + 1) * size)..]);
                }
                return r;
            }
            case PackedOp.HAdd16: case PackedOp.HAddSat16: case PackedOp.HSub16: case PackedOp.HSubSat16:
            {
                var x = Lanes<short>(ref a); var y = Lanes<short>(ref b); var z = Lanes<short>(ref r);
                for (int k = 0; k < 8; k++)
                {
                    var s = k < 4 ? x : y;
                    int p = 2 * (k & 3);
                    int v = op is PackedOp.HAdd16 or PackedOp.HAddSat16 ? s[p] + s[p + 1] : s[p] - s[p + 1];
                    z[k] = op is PackedOp.HAddSat16 or PackedOp.HSubSat16 ? SatS16(v) : (short)v;
                }
                return r;
            }
            case PackedOp.HAdd32: case PackedOp.HSub32:
            {
                var x = Lanes<int>(ref a); var y = Lanes<int>(ref b); var z = Lanes<int>(ref r);
                for (int k = 0; k < 4; k++)
                {
                    var s = k < 2 ? x : y;
                    int p = 2 * (k & 1);
                    z[k] = unchecked(op == PackedOp.HAdd32 ? s[p] + s[p + 1] : s[p] - s[p + 1]);
                }
                return r;
            }
            case PackedOp.MinPosU16:
            {
                var y = Lanes<ushort>(ref b); var z = Lanes<ushort>(ref r);
                int at = 0;
                for (int k = 1; k < 8; k++) if (y[k] < y[at]) at = k; // the lowest index wins a tie
                z[0] = y[at];
                z[1] = (ushort)at;
                return r;
            }
            default:
                return Portable(op, a, b, imm);
        }
    }

    // ------------------------------------------------------------------ CRC32 (SSE4.2)

    /// <summary>CRC32 instruction: the CRC-32C (Castagnoli, reflected polynomial 82F63B78H) of <paramref name="bytes"/> bytes of <paramref name="data"/>.</summary>
    public static uint Crc32(uint crc, ulong data, int bytes)
    {
        if (Sse42.IsSupported)
        {
            switch (bytes)
            {
                case 1: return Sse42.Crc32(crc, (byte)data);
                case 2: return Sse42.Crc32(crc, (ushort)data);
                case 4: return Sse42.Crc32(crc, (uint)data);
                default:
                    if (Sse42.X64.IsSupported) return (uint)Sse42.X64.Crc32(crc, data);
                    return Sse42.Crc32(Sse42.Crc32(crc, (uint)data), (uint)(data >> 32));
            }
        }
        return Crc32Soft(crc, data, bytes);
    }

    internal static uint Crc32Soft(uint crc, ulong data, int bytes)
    {
        for (int k = 0; k < bytes; k++)
        {
            crc ^= (byte)(data >> (8 * k));
            for (int bit = 0; bit < 8; bit++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78u : crc >> 1;
        }
        return crc;
    }

    // ------------------------------------------------------------------ PCMPxSTRx (SSE4.2)

    /// <summary>
    /// The packed compare string core (SDM Vol. 2B §4.1, "Imm8 Control Byte Operation for PCMPESTRI/
    /// PCMPESTRM/PCMPISTRI/PCMPISTRM"): IntRes2 for <paramref name="a"/> (xmm1, valid elements
    /// 0..<paramref name="la"/>−1) against <paramref name="b"/> (xmm2/m128, 0..<paramref name="lb"/>−1).
    /// </summary>
    public static uint CompareStrings(Vector128<byte> a, Vector128<byte> b, int la, int lb, byte imm)
    {
        bool words = (imm & 1) != 0;
        int n = words ? 8 : 16;
        int agg = imm >> 2 & 3;
        uint res = 0;
        switch (agg)
        {
            case 0: // equal any: b[j] is one of a's valid elements
                for (int j = 0; j < lb; j++)
                    for (int k = 0; k < la; k++)
                        if (Element(a, k, imm) == Element(b, j, imm)) { res |= 1u << j; break; }
                break;
            case 1: // ranges: a holds (low, high) pairs; invalid bounds never match
                for (int j = 0; j < lb; j++)
                {
                    int v = Element(b, j, imm);
                    for (int k = 0; k + 1 < la; k += 2)
                        if (Element(a, k, imm) <= v && v <= Element(a, k + 1, imm)) { res |= 1u << j; break; }
                }
                break;
            case 2: // equal each: both invalid counts as equal, one invalid as different
                for (int j = 0; j < n; j++)
                {
                    bool va = j < la, vb = j < lb;
                    bool eq = va && vb ? Element(a, j, imm) == Element(b, j, imm) : !va && !vb;
                    if (eq) res |= 1u << j;
                }
                break;
            default: // equal ordered: a (the needle) starts at b[j]; past the needle's end everything matches
                for (int j = 0; j < n; j++)
                {
                    bool match = true;
                    for (int k = 0; k < n - j && match; k++)
                    {
                        if (k >= la) break;
                        if (j + k >= lb) match = false;
                        else match = Element(a, k, imm) == Element(b, j + k, imm);
                    }
                    if (match) res |= 1u << j;
                }
                break;
        }
        uint all = (1u << n) - 1;
        return (imm >> 4 & 3) switch
        {
            1 => ~res & all,
            3 => res ^ ((1u << lb) - 1),
            _ => res,
        };
    }

    /// <summary>Element <paramref name="k"/> in the format imm[1:0] gives (unsigned/signed bytes/words).</summary>
    public static int Element(Vector128<byte> v, int k, byte imm) => (imm & 3) switch
    {
        0 => v.GetElement(k),
        1 => v.AsUInt16().GetElement(k),
        2 => v.AsSByte().GetElement(k),
        _ => v.AsInt16().GetElement(k),
    };

    /// <summary>Implicit length: the index of the first zero element, or the element count.</summary>
    public static int ImplicitLength(Vector128<byte> v, bool words)
    {
        var zero = words ? Vector128.Equals(v.AsUInt16(), Vector128<ushort>.Zero).AsByte() : Vector128.Equals(v, Vector128<byte>.Zero);
        uint bits = zero.ExtractMostSignificantBits();
        if (words)
        {
            uint w = 0;
            for (int k = 0; k < 8; k++) if ((bits >> (2 * k) & 1) != 0) w |= 1u << k;
            bits = w;
        }
        return bits == 0 ? (words ? 8 : 16) : BitOperations.TrailingZeroCount(bits);
    }
}
