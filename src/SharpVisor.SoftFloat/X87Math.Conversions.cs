// Loads and stores between registers and memory formats (Intel SDM Vol. 2: FLD, FST/FSTP, FILD,
// FIST/FISTP, FISTTP, FBLD, FBSTP; Vol. 1 §4.8.3.7 QNaN floating-point indefinite, §4.8.3.8 integer
// indefinite, table 4-4 packed BCD indefinite). Loads of float32/float64 are exact (denormals
// normalized, #D raised, SNaN quieted with #IA); stores round by RC at the memory format's precision
// and exponent range (PC does not apply) and an invalid operand stores the indefinite.
// Observed on hardware (and deliberate here): stores from a register never raise #D, although the
// SDM lists #D for FST; a register denormal is simply rounded.
namespace SharpVisor.SoftFloat;

public static partial class X87Math
{
    /// <summary>FILD: exact conversion from a signed integer (any of m16/m32/m64).</summary>
    public static Float80 FromInt64(long value)
    {
        if (value == 0) return Float80.PositiveZero;
        bool sign = value < 0;
        ulong mag = sign ? (ulong)-value : (ulong)value;
        int l = Lzc64(mag);
        return new Float80(sign, Bias + 63 - l, mag << l);
    }

    /// <summary>FIST/FISTP m16: rounds by RC; out of range, NaN or ∞ gives #IA and 0x8000.</summary>
    public static short ToInt16(FpuContext ctx, Float80 a) => (short)ToInteger(ctx, a, 16, truncate: false);
    public static int ToInt32(FpuContext ctx, Float80 a) => (int)ToInteger(ctx, a, 32, truncate: false);
    public static long ToInt64(FpuContext ctx, Float80 a) => ToInteger(ctx, a, 64, truncate: false);

    /// <summary>FISTTP: as FIST but always truncating (chop), regardless of RC.</summary>
    public static short ToInt16Truncate(FpuContext ctx, Float80 a) => (short)ToInteger(ctx, a, 16, truncate: true);
    public static int ToInt32Truncate(FpuContext ctx, Float80 a) => (int)ToInteger(ctx, a, 32, truncate: true);
    public static long ToInt64Truncate(FpuContext ctx, Float80 a) => ToInteger(ctx, a, 64, truncate: true);

    private static long ToInteger(FpuContext ctx, Float80 a, int bits, bool truncate)
    {
        long indefinite = bits == 64 ? long.MinValue : -(1L << (bits - 1));
        ctx.C1 = false;
        if (a.IsUnsupported || a.IsNaN || a.IsInfinity)
        {
            ctx.Raise(FpuExceptions.Invalid);
            return indefinite;
        }
        if (!RoundToUInt64(ctx, a, truncate ? RoundingControl.TowardZero : ctx.Rounding, out ulong mag, out bool inexact, out bool up))
        {
            ctx.Raise(FpuExceptions.Invalid);
            return indefinite;
        }
        ulong limit = a.Sign ? 1UL << (bits - 1) : (1UL << (bits - 1)) - 1;
        if (mag > limit)
        {
            ctx.Raise(FpuExceptions.Invalid);
            return indefinite;
        }
        if (inexact) ctx.Raise(FpuExceptions.Precision);
        ctx.C1 = up;
        return a.Sign ? (long)(0 - mag) : (long)mag;
    }

    /// <summary>Rounds |a| to an integer magnitude; false when it does not fit 64 bits.</summary>
    private static bool RoundToUInt64(FpuContext ctx, Float80 a, RoundingControl rc, out ulong mag, out bool inexact, out bool up)
    {
        mag = 0;
        inexact = up = false;
        if (a.IsZero) return true;
        int e = UnbiasedExponent(a);
        if (e > 63) return false;
        // Fixed point: integer part in the high 64 bits, fraction in the low 64.
        UInt128 v = e >= 0
            ? ((UInt128)a.Significand << 64) >> (63 - e)
            : ShiftRightJam((UInt128)a.Significand << 64, 63 - e);
        ulong intPart = (ulong)(v >> 64), frac = (ulong)v;
        if (frac != 0)
        {
            inexact = true;
            const ulong half = 1UL << 63;
            up = rc switch
            {
                RoundingControl.NearestEven => frac > half || (frac == half && (intPart & 1) != 0),
                RoundingControl.Up => !a.Sign,
                RoundingControl.Down => a.Sign,
                _ => false,
            };
            if (up)
            {
                if (intPart == ulong.MaxValue) return false;
                intPart++;
            }
        }
        mag = intPart;
        return true;
    }

    /// <summary>FLD m32: exact widening; SNaN is quieted with #IA, a denormal raises #D.</summary>
    public static Float80 FromFloat32(FpuContext ctx, uint bits) => Load(ctx, X87Operand.FromFloat32(bits));

    /// <summary>FLD m64: exact widening; SNaN is quieted with #IA, a denormal raises #D.</summary>
    public static Float80 FromFloat64(FpuContext ctx, ulong bits) => Load(ctx, X87Operand.FromFloat64(bits));

    private static Float80 Load(FpuContext ctx, X87Operand m)
    {
        ctx.C1 = false;
        if (m.IsDenormalSource) ctx.Raise(FpuExceptions.Denormal);
        if (m.Value.IsSignalingNaN)
        {
            ctx.Raise(FpuExceptions.Invalid);
            return Quiet(m.Value);
        }
        return m.Value;
    }

    /// <summary>FST m32: rounds by RC to binary32; invalid operands store the indefinite 0xFFC00000.</summary>
    public static uint ToFloat32(FpuContext ctx, Float80 a)
    {
        ulong r = StoreNarrow(ctx, a, 24, 8);
        return (uint)r;
    }

    /// <summary>FST m64: rounds by RC to binary64; invalid operands store the indefinite 0xFFF8000000000000.</summary>
    public static ulong ToFloat64(FpuContext ctx, Float80 a) => StoreNarrow(ctx, a, 53, 11);

    private static ulong StoreNarrow(FpuContext ctx, Float80 a, int p, int expBits)
    {
        int fracBits = p - 1;
        int fmtBias = (1 << (expBits - 1)) - 1;
        ulong expAll = (1UL << expBits) - 1;
        ulong signBit = a.Sign ? 1UL << (expBits + fracBits) : 0;
        ctx.C1 = false;
        if (a.IsUnsupported)
        {
            ctx.Raise(FpuExceptions.Invalid);
            return (1UL << (expBits + fracBits)) | (expAll << fracBits) | (1UL << (fracBits - 1));
        }
        if (a.IsNaN)
        {
            if (a.IsSignalingNaN) ctx.Raise(FpuExceptions.Invalid);
            ulong frac = (a.Significand << 1) >> (64 - fracBits);
            return signBit | (expAll << fracBits) | frac | (1UL << (fracBits - 1));
        }
        if (a.IsInfinity) return signBit | (expAll << fracBits);
        if (a.IsZero) return signBit;
        int e = UnbiasedExponent(a);
        UInt128 sig = (UInt128)a.Significand << 64;
        int eMin = 1 - fmtBias, eMax = fmtBias;
        if (!RoundCore(ctx, a.Sign, ref e, ref sig, p, eMin, eMax, registerDestination: false))
            return signBit | (expAll << fracBits);
        ulong top = (ulong)(sig >> (128 - p)); // p bits, J at bit p-1
        ulong fracOut = top & ((1UL << fracBits) - 1);
        if ((top >> fracBits) == 0) return signBit | fracOut; // denormal or zero
        return signBit | ((ulong)(e + fmtBias) << fracBits) | fracOut;
    }

    /// <summary>FBLD: loads an 18-digit packed BCD integer (10 bytes) exactly. Invalid digits are
    /// undefined on hardware; here each nibble is taken at face value.</summary>
    public static Float80 FromPackedBcd(ReadOnlySpan<byte> bcd)
    {
        ulong v = 0;
        for (int i = 8; i >= 0; i--)
        {
            v = v * 10 + (ulong)(bcd[i] >> 4);
            v = v * 10 + (ulong)(bcd[i] & 0xF);
        }
        bool sign = (bcd[9] & 0x80) != 0;
        if (v == 0) return Float80.Zero(sign);
        int l = Lzc64(v);
        return new Float80(sign, Bias + 63 - l, v << l);
    }

    /// <summary>FBSTP: rounds by RC to an integer and stores 18 packed BCD digits; |value| ≥ 10^18,
    /// NaN, ∞ or an unsupported encoding give #IA and the packed BCD indefinite (FFFF C000… ).</summary>
    public static void ToPackedBcd(FpuContext ctx, Float80 a, Span<byte> bcd)
    {
        ctx.C1 = false;
        bool ok = !(a.IsUnsupported || a.IsNaN || a.IsInfinity);
        ulong mag = 0;
        if (ok)
        {
                ok = RoundToUInt64(ctx, a, ctx.Rounding, out mag, out bool inexact, out bool up) && mag < 1_000_000_000_000_000_000UL;
            if (ok)
            {
                if (inexact) ctx.Raise(FpuExceptions.Precision);
                ctx.C1 = up;
            }
        }
        if (!ok)
        {
            ctx.Raise(FpuExceptions.Invalid);
            bcd[..7].Clear();
            bcd[7] = 0xC0;
            bcd[8] = 0xFF;
            bcd[9] = 0xFF;
            return;
        }
        for (int i = 0; i < 9; i++)
        {
            int lo = (int)(mag % 10);
            mag /= 10;
            int hi = (int)(mag % 10);
            mag /= 10;
            bcd[i] = (byte)(hi << 4 | lo);
        }
        bcd[9] = (byte)(a.Sign ? 0x80 : 0);
    }
}
