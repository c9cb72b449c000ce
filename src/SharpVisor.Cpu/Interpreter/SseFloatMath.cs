// An exact software float32/float64 core for the SSE instructions (Intel SDM Vol. 1 §4.8–4.9,
// §10.2.3 MXCSR, §11.5 SIMD floating-point exceptions, Table 4-7 NaN results for SSE).
// The host FPU cannot run in the guest's rounding mode and does not report flags, so every
// operation here computes the exact result (or the exact result with a sticky bit below the
// rounding point) on integer significands and rounds it with the guest's RC:
//   * value = sig · 2^exp with sig held in a UInt128; bit 0 may be a sticky bit that stands for
//     "something non-zero below" — it is always far below the guard bit.
//   * tininess is detected after rounding (as x86 does); with #U masked UE is reported only when
//     the tiny result is also inexact; FTZ (with #U masked) turns a tiny result into a signed zero
//     with UE and PE; DAZ turns denormal sources into signed zeros without DE.
//   * NaNs: the first source's NaN wins (SNaN quieted, IE on any SNaN), invalid operations give
//     the QNaN floating-point indefinite (0xFFC00000 / 0xFFF8000000000000).
// Flags are accumulated in SseEnv.Flags; the instruction decides from them and the masks whether
// the result is written (SseFloat.cs, Commit).
using System.Numerics;

namespace SharpVisor.Cpu;

/// <summary>MXCSR bits (SDM Vol. 1 §10.2.3, Figure 10-3).</summary>
internal static class Mxcsr
{
    public const uint IE = 0x01, DE = 0x02, ZE = 0x04, OE = 0x08, UE = 0x10, PE = 0x20;
    /// <summary>Exceptions detected before the computation (SDM §11.5.2: their unmasked occurrence stops every lane).</summary>
    public const uint PreComputation = IE | DE | ZE;
    public const uint Flags = 0x3F;
    public const uint DAZ = 0x40;
    public const int MaskShift = 7;
    public const int RcShift = 13;
    public const uint FZ = 0x8000;
}

/// <summary>MXCSR.RC / ROUNDPS imm8[1:0] rounding modes.</summary>
internal static class Rc
{
    public const int Nearest = 0, Down = 1, Up = 2, TowardZero = 3;
}

/// <summary>The rounding environment of one SSE instruction and the flags it raised.</summary>
internal struct SseEnv
{
    public int Rounding;
    public bool Ftz, Daz, UnderflowMasked, OverflowMasked;
    public uint Flags;

    public SseEnv(uint mxcsr)
    {
        Rounding = (int)(mxcsr >> Mxcsr.RcShift) & 3;
        Ftz = (mxcsr & Mxcsr.FZ) != 0;
        Daz = (mxcsr & Mxcsr.DAZ) != 0;
        UnderflowMasked = (mxcsr & (Mxcsr.UE << Mxcsr.MaskShift)) != 0;
        OverflowMasked = (mxcsr & (Mxcsr.OE << Mxcsr.MaskShift)) != 0;
        Flags = 0;
    }
}

/// <summary>Binary operations of the arithmetic instructions.</summary>
internal enum SseOp : byte { Add, Sub, Mul, Div, Min, Max }

internal static class SseFloatMath
{
    // ---- format parameters: d = true for float64, false for float32
    private static int FracBits(bool d) => d ? 52 : 23;
    private static int Bias(bool d) => d ? 1023 : 127;
    private static int EMin(bool d) => d ? -1022 : -126;
    public static ulong SignBit(bool d) => d ? 1UL << 63 : 1UL << 31;
    public static ulong ExpMask(bool d) => d ? 0x7FF0_0000_0000_0000UL : 0x7F80_0000UL;
    private static ulong FracMask(bool d) => d ? (1UL << 52) - 1 : (1UL << 23) - 1;
    public static ulong QuietBit(bool d) => d ? 1UL << 51 : 1UL << 22;
    /// <summary>The QNaN floating-point indefinite (SDM Vol. 1 Table 4-3).</summary>
    public static ulong DefaultNaN(bool d) => d ? 0xFFF8_0000_0000_0000UL : 0xFFC0_0000UL;
    private static ulong Infinity(bool d, bool sign) => ExpMask(d) | (sign ? SignBit(d) : 0);
    private static ulong MaxFinite(bool d, bool sign) => (ExpMask(d) - (d ? 1UL << 52 : 1UL << 23)) | FracMask(d) | (sign ? SignBit(d) : 0);

    public static bool IsNaN(ulong x, bool d) => (x & ~SignBit(d)) > ExpMask(d);
    public static bool IsSNaN(ulong x, bool d) => IsNaN(x, d) && (x & QuietBit(d)) == 0;
    public static bool IsInf(ulong x, bool d) => (x & ~SignBit(d)) == ExpMask(d);
    public static bool IsZero(ulong x, bool d) => (x & ~SignBit(d)) == 0;
    public static bool IsDenormal(ulong x, bool d) => (x & ExpMask(d)) == 0 && (x & FracMask(d)) != 0;
    private static bool Sign(ulong x, bool d) => (x & SignBit(d)) != 0;
    public static ulong Quiet(ulong x, bool d) => x | QuietBit(d);

    /// <summary>A floating-point source as the operation sees it: DAZ makes a denormal a signed zero, else it raises DE.</summary>
    public static ulong Source(ulong x, bool d, ref SseEnv env)
    {
        if (IsDenormal(x, d))
        {
            if (env.Daz) return x & SignBit(d);
            env.Flags |= Mxcsr.DE;
        }
        return x;
    }

    /// <summary>DAZ only (for operations that never report DE, e.g. conversions to integer and ROUNDPS).</summary>
    public static ulong SourceNoDenormalFlag(ulong x, bool d, in SseEnv env) =>
        env.Daz && IsDenormal(x, d) ? x & SignBit(d) : x;

    /// <summary>The NaN result of a two-source operation when either is a NaN (SDM Vol. 1 Table 4-7, SSE column).</summary>
    private static ulong PropagateNaN(ulong a, ulong b, bool d, ref SseEnv env)
    {
        if (IsSNaN(a, d) || IsSNaN(b, d)) env.Flags |= Mxcsr.IE;
        return Quiet(IsNaN(a, d) ? a : b, d);
    }

    private static ulong Invalid(bool d, ref SseEnv env)
    {
        env.Flags |= Mxcsr.IE;
        return DefaultNaN(d);
    }

    /// <summary>A finite value as sig · 2^exp.</summary>
    private static void Unpack(ulong x, bool d, out int exp, out ulong sig)
    {
        int e = (int)((x & ExpMask(d)) >> FracBits(d));
        ulong f = x & FracMask(d);
        if (e == 0) { exp = EMin(d) - FracBits(d); sig = f; }
        else { exp = e - Bias(d) - FracBits(d); sig = f | (1UL << FracBits(d)); }
    }

    /// <summary>Normalizes a non-zero significand so that its top bit is bit <paramref name="top"/>.</summary>
    private static void Normalize(ref ulong sig, ref int exp, int top)
    {
        int shift = top - (63 - BitOperations.LeadingZeroCount(sig));
        if (shift > 0) { sig <<= shift; exp -= shift; }
    }

    /// <summary>
    /// sig >> shift rounded by <paramref name="rc"/> for a value of sign <paramref name="sign"/>.
    /// A negative shift is an exact left shift. The result may carry into the next power of two.
    /// </summary>
    private static UInt128 ShiftRound(UInt128 sig, int shift, bool sign, int rc, out bool inexact)
    {
        if (shift <= 0)
        {
            inexact = false;
            return sig << -shift;
        }
        UInt128 q, rem, half;
        if (shift >= 128)
        {
            // sig < 2^127 everywhere in this file, so the remainder is below one half.
            q = UInt128.Zero;
            rem = sig;
            half = UInt128.MaxValue;
        }
        else
        {
            q = sig >> shift;
            rem = sig & ((UInt128.One << shift) - 1);
            half = UInt128.One << (shift - 1);
        }
        inexact = rem != UInt128.Zero;
        if (!inexact) return q;
        bool up = rc switch
        {
            Rc.Nearest => rem > half || (rem == half && (q & UInt128.One) != UInt128.Zero),
            Rc.Down => sign,
            Rc.Up => !sign,
            _ => false,
        };
        return up ? q + UInt128.One : q;
    }

    /// <summary>
    /// Rounds sign · sig · 2^exp (sig ≠ 0, below 2^127) to the format with the guest's rounding,
    /// overflow, underflow, FTZ rules; raises OE/UE/PE.
    /// </summary>
    public static ulong RoundPack(bool sign, int exp, UInt128 sig, bool d, ref SseEnv env)
    {
        if (sig == UInt128.Zero) return sign ? SignBit(d) : 0;
        int frac = FracBits(d), p = frac + 1, emin = EMin(d);
        int msb = 127 - (int)UInt128.LeadingZeroCount(sig);
        int e = exp + msb; // value in [2^e, 2^(e+1))
        int rc = env.Rounding;
        bool tiny = false;
        if (e < emin)
        {
            tiny = true;
            if (e == emin - 1)
            {
                // Tininess after rounding: rounded to p bits with an unbounded exponent, does it reach 2^emin?
                var full = ShiftRound(sig, e - (p - 1) - exp, sign, rc, out _);
                if (full == UInt128.One << p) tiny = false;
            }
        }
        int lsbExp = Math.Max(e, emin) - (p - 1);
        var q = ShiftRound(sig, lsbExp - exp, sign, rc, out bool inexact);
        if (q == UInt128.One << p) { q >>= 1; lsbExp++; }
        ulong signBits = sign ? SignBit(d) : 0;

        if (tiny)
        {
            if (!env.UnderflowMasked)
            {
                // Unmasked: UE whenever the result is tiny, exact or not (SDM §4.9.1.5); nothing is written.
                // PE then reflects rounding to p bits with an unbounded exponent (observed on hardware).
                ShiftRound(sig, e - (p - 1) - exp, sign, rc, out bool inexactUnbounded);
                env.Flags |= Mxcsr.UE | (inexactUnbounded ? Mxcsr.PE : 0);
                return signBits;
            }
            if (env.Ftz)
            {
                env.Flags |= Mxcsr.UE | Mxcsr.PE;
                return signBits;
            }
            if (inexact) env.Flags |= Mxcsr.UE | Mxcsr.PE;
            // q < 2^(p-1) here (a denormal) or exactly 2^(p-1) (rounded up to the smallest normal): both pack as-is.
            return signBits | (ulong)q;
        }
        int biased = lsbExp + (p - 1) + Bias(d);
        if (biased >= 2 * Bias(d) + 1)
        {
            if (!env.OverflowMasked)
            {
                env.Flags |= Mxcsr.OE | (inexact ? Mxcsr.PE : 0);
                return signBits;
            }
            env.Flags |= Mxcsr.OE | Mxcsr.PE;
            bool toInfinity = rc == Rc.Nearest || (rc == Rc.Up && !sign) || (rc == Rc.Down && sign);
            return toInfinity ? Infinity(d, sign) : MaxFinite(d, sign);
        }
        if (inexact) env.Flags |= Mxcsr.PE;
        return signBits | ((ulong)biased << frac) | ((ulong)q & FracMask(d));
    }

    // ------------------------------------------------------------------ arithmetic

    /// <summary>ADD/SUB/MUL/DIV/MIN/MAX of two sources in one lane (sources not yet screened).</summary>
    public static ulong Binary(SseOp op, ulong a, ulong b, bool d, ref SseEnv env) => op switch
    {
        SseOp.Add => Add(a, b, d, false, ref env),
        SseOp.Sub => Add(a, b, d, true, ref env),
        SseOp.Mul => Mul(a, b, d, ref env),
        SseOp.Div => Div(a, b, d, ref env),
        SseOp.Min => MinMax(a, b, d, false, ref env),
        _ => MinMax(a, b, d, true, ref env),
    };

    public static ulong Add(ulong a, ulong b, bool d, bool subtract, ref SseEnv env)
    {
        if (IsNaN(a, d) || IsNaN(b, d)) return PropagateNaN(a, b, d, ref env);
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        if (subtract) b ^= SignBit(d);
        bool sa = Sign(a, d), sb = Sign(b, d);
        if (IsInf(a, d) || IsInf(b, d))
        {
            if (IsInf(a, d) && IsInf(b, d) && sa != sb) return Invalid(d, ref env);
            return IsInf(a, d) ? a : b;
        }
        bool za = IsZero(a, d), zb = IsZero(b, d);
        if (za && zb)
            return sa == sb ? a : (env.Rounding == Rc.Down ? SignBit(d) : 0);
        if (za) return RoundPackSource(b, d, ref env);
        if (zb) return RoundPackSource(a, d, ref env);
        Unpack(a, d, out int ea, out ulong ma);
        Unpack(b, d, out int eb, out ulong mb);
        if (ea < eb || (ea == eb && ma < mb))
        {
            (ea, eb) = (eb, ea); (ma, mb) = (mb, ma); (sa, sb) = (sb, sa);
        }
        // |a| ≥ |b|. Both at 64 extra bits of headroom; b's lost bits are jammed into bit 0.
        int diff = ea - eb;
        UInt128 wa = (UInt128)ma << 64;
        UInt128 wb = ShiftRightJam((UInt128)mb << 64, diff);
        UInt128 sum = sa == sb ? wa + wb : wa - wb;
        if (sum == UInt128.Zero) return env.Rounding == Rc.Down ? SignBit(d) : 0;
        return RoundPack(sa, ea - 64, sum, d, ref env);
    }

    /// <summary>x + 0 where x is already a representable source: only FTZ/underflow rules can change it.</summary>
    private static ulong RoundPackSource(ulong x, bool d, ref SseEnv env)
    {
        Unpack(x, d, out int e, out ulong m);
        return RoundPack(Sign(x, d), e, m, d, ref env);
    }

    private static UInt128 ShiftRightJam(UInt128 v, int count)
    {
        if (count <= 0) return v;
        if (count >= 128) return v != UInt128.Zero ? UInt128.One : UInt128.Zero;
        UInt128 lost = v & ((UInt128.One << count) - 1);
        return (v >> count) | (lost != UInt128.Zero ? UInt128.One : UInt128.Zero);
    }

    public static ulong Mul(ulong a, ulong b, bool d, ref SseEnv env)
    {
        if (IsNaN(a, d) || IsNaN(b, d)) return PropagateNaN(a, b, d, ref env);
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        bool sign = Sign(a, d) != Sign(b, d);
        if (IsInf(a, d) || IsInf(b, d))
        {
            if (IsZero(a, d) || IsZero(b, d)) return Invalid(d, ref env);
            return Infinity(d, sign);
        }
        if (IsZero(a, d) || IsZero(b, d)) return sign ? SignBit(d) : 0;
        Unpack(a, d, out int ea, out ulong ma);
        Unpack(b, d, out int eb, out ulong mb);
        return RoundPack(sign, ea + eb, (UInt128)ma * mb, d, ref env);
    }

    public static ulong Div(ulong a, ulong b, bool d, ref SseEnv env)
    {
        if (IsNaN(a, d) || IsNaN(b, d)) return PropagateNaN(a, b, d, ref env);
        bool sign = Sign(a, d) != Sign(b, d);
        if (IsZero(b, d) && !IsInf(a, d) && !IsZero(SourceNoDenormalFlag(a, d, env), d))
        {
            // x / 0 reports ZE alone: a denormal dividend does not add DE (observed on hardware).
            env.Flags |= Mxcsr.ZE;
            return Infinity(d, sign);
        }
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        bool ia = IsInf(a, d), ib = IsInf(b, d), za = IsZero(a, d), zb = IsZero(b, d);
        if ((ia && ib) || (za && zb)) return Invalid(d, ref env);
        if (ia) return Infinity(d, sign);
        if (ib || za) return sign ? SignBit(d) : 0;
        if (zb)
        {
            env.Flags |= Mxcsr.ZE;
            return Infinity(d, sign);
        }
        Unpack(a, d, out int ea, out ulong ma);
        Unpack(b, d, out int eb, out ulong mb);
        Normalize(ref ma, ref ea, 52);
        Normalize(ref mb, ref eb, 52);
        UInt128 num = (UInt128)ma << 64;
        UInt128 q = num / mb;
        if (num - q * mb != UInt128.Zero) q |= UInt128.One; // ≥ 64 quotient bits: bit 0 is far below the guard bit
        return RoundPack(sign, ea - 64 - eb, q, d, ref env);
    }

    public static ulong Sqrt(ulong a, bool d, ref SseEnv env)
    {
        if (IsNaN(a, d))
        {
            if (IsSNaN(a, d)) env.Flags |= Mxcsr.IE;
            return Quiet(a, d);
        }
        // A negative operand is invalid before any denormal check: sqrt(-denormal) reports IE alone (observed on hardware).
        ulong z = SourceNoDenormalFlag(a, d, env);
        if (IsZero(z, d)) return z;
        if (Sign(a, d)) return Invalid(d, ref env);
        a = Source(a, d, ref env);
        if (IsInf(a, d)) return a;
        Unpack(a, d, out int e, out ulong m);
        Normalize(ref m, ref e, 52);
        if ((e & 1) != 0) { m <<= 1; e--; }
        // m < 2^54; m · 2^72 < 2^126, its root has about 63 bits.
        UInt128 n = (UInt128)m << 72;
        ulong r = ISqrt(n, out bool exact);
        UInt128 root = r;
        if (!exact) root |= UInt128.One;
        return RoundPack(false, (e - 72) / 2, root, d, ref env);
    }

    /// <summary>floor(sqrt(n)) for n &lt; 2^126.</summary>
    private static ulong ISqrt(UInt128 n, out bool exact)
    {
        ulong r = (ulong)Math.Sqrt((double)n);
        if (r == 0) r = 1;
        // Two Newton steps from a 53-bit estimate are exact to within one; then fix up.
        for (int k = 0; k < 2; k++) r = (ulong)(((UInt128)r + n / r) >> 1);
        while ((UInt128)r * r > n) r--;
        while ((UInt128)(r + 1) * (r + 1) <= n) r++;
        exact = (UInt128)r * r == n;
        return r;
    }

    /// <summary>MIN/MAX: the second source on a NaN (IE for QNaN too) or on equal values (±0 included).</summary>
    public static ulong MinMax(ulong a, ulong b, bool d, bool max, ref SseEnv env)
    {
        if (IsNaN(a, d) || IsNaN(b, d))
        {
            // The second source is returned as DAZ sees it (a denormal comes back as zero; observed on hardware).
            env.Flags |= Mxcsr.IE;
            return SourceNoDenormalFlag(b, d, env);
        }
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        double x = ToDouble(a, d), y = ToDouble(b, d);
        return max ? (x > y ? a : b) : (x < y ? a : b);
    }

    /// <summary>A non-NaN value as a double (exact for both formats).</summary>
    public static double ToDouble(ulong x, bool d) =>
        d ? BitConverter.Int64BitsToDouble((long)x) : BitConverter.Int32BitsToSingle((int)(uint)x);

    /// <summary>
    /// CMPPS/CMPSS predicate imm8[2:0] (SDM Vol. 2A Table 3-1): EQ_OQ LT_OS LE_OS UNORD_Q NEQ_UQ NLT_US NLE_US ORD_Q.
    /// LT/LE/NLT/NLE signal IE on a QNaN too; all signal on an SNaN.
    /// </summary>
    public static bool Compare(int predicate, ulong a, ulong b, bool d, ref SseEnv env)
    {
        predicate &= 7;
        if (IsNaN(a, d) || IsNaN(b, d))
        {
            bool signaling = predicate is 1 or 2 or 5 or 6;
            if (signaling || IsSNaN(a, d) || IsSNaN(b, d)) env.Flags |= Mxcsr.IE;
            return predicate is 3 or 4 or 5 or 6;
        }
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        double x = ToDouble(a, d), y = ToDouble(b, d);
        return predicate switch
        {
            0 => x == y,
            1 => x < y,
            2 => x <= y,
            3 => false,
            4 => x != y,
            5 => !(x < y),
            6 => !(x <= y),
            _ => true,
        };
    }

    /// <summary>COMIS*/UCOMIS*: -1, 0, 1 or 2 (unordered). COMIS signals IE on any NaN, UCOMIS on an SNaN.</summary>
    public static int CompareOrdered(ulong a, ulong b, bool d, bool signalQuiet, ref SseEnv env)
    {
        if (IsNaN(a, d) || IsNaN(b, d))
        {
            if (signalQuiet || IsSNaN(a, d) || IsSNaN(b, d)) env.Flags |= Mxcsr.IE;
            return 2;
        }
        a = Source(a, d, ref env);
        b = Source(b, d, ref env);
        double x = ToDouble(a, d), y = ToDouble(b, d);
        return x < y ? -1 : x > y ? 1 : 0;
    }

    // ------------------------------------------------------------------ conversions

    /// <summary>CVTSS2SD / CVTSD2SS / CVTPS2PD / CVTPD2PS: between formats, rounding when narrowing.</summary>
    public static ulong Convert(ulong a, bool fromDouble, ref SseEnv env)
    {
        bool toDouble = !fromDouble;
        if (IsNaN(a, fromDouble))
        {
            if (IsSNaN(a, fromDouble)) env.Flags |= Mxcsr.IE;
            ulong sign = Sign(a, fromDouble) ? SignBit(toDouble) : 0;
            ulong payload = fromDouble ? (a & FracMask(true)) >> 29 : (a & FracMask(false)) << 29;
            return sign | ExpMask(toDouble) | QuietBit(toDouble) | payload;
        }
        a = Source(a, fromDouble, ref env);
        bool s = Sign(a, fromDouble);
        if (IsInf(a, fromDouble)) return Infinity(toDouble, s);
        if (IsZero(a, fromDouble)) return s ? SignBit(toDouble) : 0;
        Unpack(a, fromDouble, out int e, out ulong m);
        return RoundPack(s, e, m, toDouble, ref env);
    }

    /// <summary>CVTSI2SS/SD, CVTDQ2PS/PD, CVTPI2PS/PD: a signed integer, rounded by RC (PE when inexact).</summary>
    public static ulong FromInt(long value, bool d, ref SseEnv env)
    {
        if (value == 0) return 0;
        bool sign = value < 0;
        ulong mag = sign ? 0 - (ulong)value : (ulong)value;
        return RoundPack(sign, 0, mag, d, ref env);
    }

    /// <summary>
    /// CVT(T)SS2SI, CVT(T)SD2SI, CVT(T)PS2DQ, CVT(T)PD2DQ, CVT(T)PS2PI, CVT(T)PD2PI: to a signed
    /// 32/64-bit integer; NaN, infinity or out of range give IE and the integer indefinite (no PE).
    /// </summary>
    public static ulong ToInt(ulong a, bool d, int bits, bool truncate, ref SseEnv env)
    {
        ulong indefinite = bits == 64 ? 1UL << 63 : 1UL << 31;
        if (IsNaN(a, d) || IsInf(a, d))
        {
            env.Flags |= Mxcsr.IE;
            return indefinite;
        }
        a = SourceNoDenormalFlag(a, d, env);
        if (IsZero(a, d)) return 0;
        bool sign = Sign(a, d);
        Unpack(a, d, out int e, out ulong m);
        if (e + 63 - BitOperations.LeadingZeroCount(m) >= 64)
        {
            env.Flags |= Mxcsr.IE;
            return indefinite;
        }
        var q = ShiftRound(m, -e, sign, truncate ? Rc.TowardZero : env.Rounding, out bool inexact);
        UInt128 limit = sign ? UInt128.One << (bits - 1) : (UInt128.One << (bits - 1)) - 1;
        if (q > limit)
        {
            env.Flags |= Mxcsr.IE;
            return indefinite;
        }
        if (inexact) env.Flags |= Mxcsr.PE;
        ulong mag = (ulong)q;
        ulong r = sign ? 0 - mag : mag;
        return bits == 64 ? r : r & 0xFFFF_FFFF;
    }

    /// <summary>ROUNDPS/PD/SS/SD: to an integral value in the same format with mode <paramref name="rc"/>.</summary>
    public static ulong RoundToIntegral(ulong a, bool d, int rc, bool suppressPrecision, ref SseEnv env)
    {
        if (IsNaN(a, d))
        {
            if (IsSNaN(a, d)) env.Flags |= Mxcsr.IE;
            return Quiet(a, d);
        }
        a = SourceNoDenormalFlag(a, d, env);
        if (IsInf(a, d) || IsZero(a, d)) return a;
        bool sign = Sign(a, d);
        Unpack(a, d, out int e, out ulong m);
        if (e >= 0) return a; // already an integer
        var q = ShiftRound(m, -e, sign, rc, out bool inexact);
        if (inexact && !suppressPrecision) env.Flags |= Mxcsr.PE;
        if (q == UInt128.Zero) return sign ? SignBit(d) : 0;
        // An integer below 2^p: exact in the format, so RoundPack only packs it.
        var exact = new SseEnv { Rounding = Rc.Nearest, UnderflowMasked = true, OverflowMasked = true };
        return RoundPack(sign, 0, q, d, ref exact);
    }
}
