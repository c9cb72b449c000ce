// FADD/FSUB/FMUL/FDIV/FSQRT (rounded to PC), FRNDINT, FSCALE, FXTRACT (Intel SDM Vol. 2 entries of
// those instructions; Vol. 1 §8.5 for the exception cases). All results are the masked responses
// unless FpuContext.Masks unmasks #O/#U, in which case the bias-adjusted register value is produced.
namespace SharpVisor.SoftFloat;

public static partial class X87Math
{
    /// <summary>FADD: a + b rounded to the context's precision.</summary>
    public static Float80 Add(FpuContext ctx, Float80 a, Float80 b) => AddSub(ctx, a, b, false, a.IsDenormal, b.IsDenormal);

    /// <summary>FADD m32/m64/FIADD: st + memory operand.</summary>
    public static Float80 Add(FpuContext ctx, Float80 a, X87Operand b) => AddSub(ctx, a, b.Value, false, a.IsDenormal, b.IsDenormalSource);

    /// <summary>FSUB: a − b rounded to the context's precision (FSUBR is Sub(b, a)).</summary>
    public static Float80 Sub(FpuContext ctx, Float80 a, Float80 b) => AddSub(ctx, a, b, true, a.IsDenormal, b.IsDenormal);

    /// <summary>FSUB m32/m64/FISUB: st − memory operand.</summary>
    public static Float80 Sub(FpuContext ctx, Float80 a, X87Operand b) => AddSub(ctx, a, b.Value, true, a.IsDenormal, b.IsDenormalSource);

    /// <summary>FSUBR m32/m64/FISUBR: memory operand − st.</summary>
    public static Float80 Sub(FpuContext ctx, X87Operand a, Float80 b) => AddSub(ctx, a.Value, b, true, a.IsDenormalSource, b.IsDenormal);

    private static Float80 AddSub(FpuContext ctx, Float80 a, Float80 b, bool subtract, bool aDen, bool bDen)
    {
        if (ScreenOperands(ctx, a, b, aDen, bDen, out Float80 special)) return special;
        bool sa = a.Sign, sb = b.Sign ^ subtract;
        if (a.IsInfinity)
        {
            ctx.C1 = false;
            if (b.IsInfinity && sa != sb) return InvalidResult(ctx);
            return Float80.Infinity(sa);
        }
        if (b.IsInfinity)
        {
            ctx.C1 = false;
            return Float80.Infinity(sb);
        }
        if (a.IsZero && b.IsZero)
        {
            ctx.C1 = false;
            return Float80.Zero(sa == sb ? sa : ctx.Rounding == RoundingControl.Down);
        }
        int ea = UnbiasedExponent(a), eb = UnbiasedExponent(b);
        // Two bits of headroom above J so a carry never leaves the 128-bit word.
        UInt128 ma = (UInt128)a.Significand << 62, mb = (UInt128)b.Significand << 62;
        int e;
        if (ea >= eb)
        {
            mb = ShiftRightJam(mb, ea - eb);
            e = ea;
        }
        else
        {
            ma = ShiftRightJam(ma, eb - ea);
            e = eb;
        }
        UInt128 sum;
        bool sign;
        if (sa == sb)
        {
            sum = ma + mb;
            sign = sa;
        }
        else if (ma >= mb)
        {
            sum = ma - mb;
            sign = sa;
        }
        else
        {
            sum = mb - ma;
            sign = sb;
        }
        if (sum == UInt128.Zero)
        {
            // An exact zero difference is +0 except when rounding down (IEEE 754 §6.3).
            ctx.C1 = false;
            return Float80.Zero(ctx.Rounding == RoundingControl.Down);
        }
        return RoundPack80(ctx, sign, e + 2, sum, ctx.PrecisionBits);
    }

    /// <summary>FMUL: a × b rounded to the context's precision.</summary>
    public static Float80 Mul(FpuContext ctx, Float80 a, Float80 b) => Mul(ctx, a, b, a.IsDenormal, b.IsDenormal);

    /// <summary>FMUL m32/m64/FIMUL: st × memory operand.</summary>
    public static Float80 Mul(FpuContext ctx, Float80 a, X87Operand b) => Mul(ctx, a, b.Value, a.IsDenormal, b.IsDenormalSource);

    private static Float80 Mul(FpuContext ctx, Float80 a, Float80 b, bool aDen, bool bDen)
    {
        if (ScreenOperands(ctx, a, b, aDen, bDen, out Float80 special)) return special;
        bool sign = a.Sign ^ b.Sign;
        ctx.C1 = false;
        if (a.IsInfinity || b.IsInfinity)
        {
            if (a.IsZero || b.IsZero) return InvalidResult(ctx);
            return Float80.Infinity(sign);
        }
        if (a.IsZero || b.IsZero) return Float80.Zero(sign);
        UInt128 product = (UInt128)a.Significand * b.Significand;
        return RoundPack80(ctx, sign, UnbiasedExponent(a) + UnbiasedExponent(b) + 1, product, ctx.PrecisionBits);
    }

    /// <summary>FDIV: a ÷ b rounded to the context's precision (FDIVR is Div(b, a)).</summary>
    public static Float80 Div(FpuContext ctx, Float80 a, Float80 b) => Div(ctx, a, b, a.IsDenormal, b.IsDenormal);

    /// <summary>FDIV m32/m64/FIDIV: st ÷ memory operand.</summary>
    public static Float80 Div(FpuContext ctx, Float80 a, X87Operand b) => Div(ctx, a, b.Value, a.IsDenormal, b.IsDenormalSource);

    /// <summary>FDIVR m32/m64/FIDIVR: memory operand ÷ st.</summary>
    public static Float80 Div(FpuContext ctx, X87Operand a, Float80 b) => Div(ctx, a.Value, b, a.IsDenormalSource, b.IsDenormal);

    private static Float80 Div(FpuContext ctx, Float80 a, Float80 b, bool aDen, bool bDen)
    {
        // Observed on hardware: a finite nonzero ÷ 0 raises only #Z, even for a denormal dividend.
        if (b.IsZero && aDen)
        {
            ctx.C1 = false;
            ctx.Raise(FpuExceptions.ZeroDivide);
            return Float80.Infinity(a.Sign ^ b.Sign);
        }
        if (ScreenOperands(ctx, a, b, aDen, bDen, out Float80 special)) return special;
        bool sign = a.Sign ^ b.Sign;
        ctx.C1 = false;
        if (a.IsInfinity)
        {
            if (b.IsInfinity) return InvalidResult(ctx);
            return Float80.Infinity(sign);
        }
        if (b.IsInfinity) return Float80.Zero(sign);
        if (b.IsZero)
        {
            if (a.IsZero) return InvalidResult(ctx);
            ctx.Raise(FpuExceptions.ZeroDivide);
            return Float80.Infinity(sign);
        }
        if (a.IsZero) return Float80.Zero(sign);
        ulong sa = NormalizedSignificand(a, out int ea), sb = NormalizedSignificand(b, out int eb);
        UInt128 q = DivideSignificands(sa, sb);
        return RoundPack80(ctx, sign, ea - eb + 1, q, ctx.PrecisionBits);
    }

    /// <summary>(sa / sb)·2^126 truncated, with a sticky bit 0; both inputs normalized.</summary>
    private static UInt128 DivideSignificands(ulong sa, ulong sb)
    {
        UInt128 n = (UInt128)sa << 64;
        UInt128 q1 = n / sb;
        ulong r1 = (ulong)(n - q1 * sb);
        UInt128 n2 = (UInt128)r1 << 64;
        UInt128 q2 = n2 / sb;
        ulong r2 = (ulong)(n2 - q2 * sb);
        UInt128 q = (q1 << 62) | (q2 >> 2);
        if ((q2 & 3) != UInt128.Zero || r2 != 0) q |= UInt128.One;
        return q;
    }

    /// <summary>FSQRT: √a rounded to the context's precision.</summary>
    public static Float80 Sqrt(FpuContext ctx, Float80 a)
    {
        // A negative denormal is only invalid: the sign check precedes the #D check on hardware.
        if (a.Sign && a.IsDenormal) return InvalidResult(ctx);
        if (ScreenOperand(ctx, a, out Float80 special)) return special;
        ctx.C1 = false;
        if (a.IsZero) return a;
        if (a.Sign) return InvalidResult(ctx);
        if (a.IsInfinity) return a;
        ulong s = NormalizedSignificand(a, out int e);
        // a = s·2^(e-63). Radicand X = s·2^(68+odd) so that e-63-68-odd is even.
        int scaled = e - 63 - 68;
        int odd = scaled & 1;
        scaled -= odd;
        // X has 132 + odd bits, fed two at a time from the top: 67 pairs cover 134 bits.
        UInt128 root = UInt128.Zero, rem = UInt128.Zero;
        int shift = 68 + odd;
        for (int i = 66; i >= 0; i--)
        {
            int bitPos = 2 * i - shift; // position in s of the pair's low bit
            ulong pair = PairAt(s, bitPos);
            rem = (rem << 2) | pair;
            UInt128 trial = (root << 2) | UInt128.One;
            root <<= 1;
            if (rem >= trial)
            {
                rem -= trial;
                root |= UInt128.One;
            }
        }
        // √a = root·2^(scaled/2), root < 2^67; two extra zero bits leave room for the sticky bit.
        UInt128 sig = (root << 2) | (rem != UInt128.Zero ? UInt128.One : UInt128.Zero);
        return RoundPack80(ctx, false, scaled / 2 - 2 + 127, sig, ctx.PrecisionBits);
    }

    private static ulong PairAt(ulong s, int lowBit)
    {
        if (lowBit >= 64 || lowBit <= -2) return 0;
        if (lowBit < 0) return (s << 1) & 2; // only bit 0 of s lands in the pair's high bit
        return (s >> lowBit) & 3;
    }

    /// <summary>FRNDINT: rounds to an integral value by RC (not affected by PC).</summary>
    public static Float80 RoundToInteger(FpuContext ctx, Float80 a)
    {
        if (ScreenOperand(ctx, a, out Float80 special)) return special;
        ctx.C1 = false;
        if (a.IsZero || a.IsInfinity) return a;
        int e = UnbiasedExponent(a);
        if (e >= 63) return a;
        UInt128 sig = (UInt128)a.Significand << 64;
        // Integer rounding: precision p = e+1 bits for the integer part (p ≤ 0 means |a| < 1).
        int p = e + 1;
        if (p <= 0)
        {
            // Rounds to 0 or 1 depending on mode: treat as a value scaled below the unit bit.
            sig = ShiftRightJam(sig, 1 - p);
            p = 1;
            e = 0;
            bool inc = Increments(ctx.Rounding, a.Sign, sig, (UInt128.One << 127) - 1, UInt128.One << 126, UInt128.One << 127);
            ctx.Raise(FpuExceptions.Precision);
            ctx.C1 = inc;
            return inc ? new Float80(a.Sign, Bias, Float80.IntegerBit) : Float80.Zero(a.Sign);
        }
        int drop = 128 - p;
        UInt128 lsb = UInt128.One << drop, mask = lsb - 1, half = lsb >> 1;
        if ((sig & mask) == UInt128.Zero) return a;
        bool up = Increments(ctx.Rounding, a.Sign, sig, mask, half, lsb);
        ctx.Raise(FpuExceptions.Precision);
        sig &= ~mask;
        if (up)
        {
            sig += lsb;
            if (sig == UInt128.Zero)
            {
                sig = UInt128.One << 127;
                e++;
            }
        }
        ctx.C1 = up;
        return new Float80(a.Sign, e + Bias, (ulong)(sig >> 64));
    }

    /// <summary>FSCALE: a·2^trunc(b), rounded at 64 bits (PC does not apply).</summary>
    public static Float80 Scale(FpuContext ctx, Float80 a, Float80 b)
    {
        if (ScreenOperands(ctx, a, b, out Float80 special)) return special;
        ctx.C1 = false;
        if (b.IsInfinity)
        {
            if (!b.Sign)
            {
                if (a.IsZero) return InvalidResult(ctx);
                return a.IsInfinity ? a : Float80.Infinity(a.Sign);
            }
            if (a.IsInfinity) return InvalidResult(ctx);
            return Float80.Zero(a.Sign);
        }
        if (a.IsInfinity || a.IsZero) return a;
        // Observed on hardware: a zero scale returns ST(0) as it is, without rounding or a tininess
        // check, so a denormal ST(0) raises no #U even with #U unmasked (only #D). A nonzero scale
        // that truncates to 0 (0 < |b| < 1) does go through rounding and raises #U for a denormal.
        if (b.IsZero) return Unchanged(a);
        int n = TruncateScale(b);
        UInt128 sig = (UInt128)a.Significand << 64;
        return RoundPack80(ctx, a.Sign, UnbiasedExponent(a) + n, sig, 64);
    }

    /// <summary>trunc(b) clamped to a range that already over/underflows any operand.</summary>
    private static int TruncateScale(Float80 b)
    {
        int e = UnbiasedExponent(b);
        if (b.IsZero || e < 0) return 0;
        int n = e >= 17 ? 0x20000 : (int)(b.Significand >> (63 - e));
        return b.Sign ? -n : n;
    }

    /// <summary>FXTRACT: returns the significand (exponent 0x3FFF) and sets exponent to the unbiased exponent.</summary>
    public static Float80 Extract(FpuContext ctx, Float80 a, out Float80 exponent)
    {
        ctx.C1 = false;
        if (ScreenOperand(ctx, a, out Float80 special))
        {
            exponent = special;
            return special;
        }
        if (a.IsZero)
        {
            // Zero divide with masked response −∞ for the exponent (SDM FXTRACT).
            ctx.Raise(FpuExceptions.ZeroDivide);
            exponent = Float80.NegativeInfinity;
            return a;
        }
        if (a.IsInfinity)
        {
            exponent = Float80.PositiveInfinity;
            return a;
        }
        ulong s = NormalizedSignificand(a, out int e);
        exponent = FromInt64(e);
        return new Float80(a.Sign, Bias, s);
    }
}
