// Rounding and NaN machinery shared by every x87 operation (Intel SDM Vol. 1 §4.7-4.9, §8.5).
// Values in flight are a sign, an unbiased exponent e and a 128-bit significand whose bit 127 has
// weight 2^e; rounding keeps the top p bits (p = 24, 53 or 64 from PC) with a sticky tail.
// Tininess is detected after rounding (as the x87 does for its own registers) and, with #U masked,
// the underflow flag is raised only when the tiny result is also inexact (SDM §4.9.1.5).
// Precision control narrows only the significand; the register exponent range stays 15-bit (§8.1.5.2).
using System.Numerics;

namespace SharpVisor.SoftFloat;

/// <summary>x87 arithmetic on <see cref="Float80"/> with IEEE 754 semantics as the 387 and later implement it.</summary>
public static partial class X87Math
{
    internal const int Bias = Float80.ExponentBias;
    /// <summary>Minimum unbiased exponent of a normal double extended value.</summary>
    internal const int EMin80 = 1 - Bias;
    internal const int EMax80 = Bias;
    /// <summary>The exponent wrap used for unmasked overflow/underflow (SDM §4.9.1.4-5: 3 × 2^13).</summary>
    internal const int BiasAdjust = 0x6000;

    private static readonly UInt128 Top = UInt128.One << 127;

    internal static UInt128 ShiftRightJam(UInt128 v, int count)
    {
        if (count <= 0) return v;
        if (count >= 128) return v != UInt128.Zero ? UInt128.One : UInt128.Zero;
        UInt128 lost = v & ((UInt128.One << count) - 1);
        return (v >> count) | (lost != UInt128.Zero ? UInt128.One : UInt128.Zero);
    }

    internal static int Lzc(UInt128 v) => (int)UInt128.LeadingZeroCount(v);

    /// <summary>Unbiased exponent of J for an operand, treating exponent 0 (denormals) as the minimum.</summary>
    internal static int UnbiasedExponent(Float80 v) => (v.Exponent == 0 ? 1 : v.Exponent) - Bias;

    /// <summary>
    /// Rounds sig·2^(e-127) to p bits within [eMin, eMax]. Returns false for an overflow to infinity.
    /// On return a finite value has bit 127 set (normal, exponent e) or clear (denormal/zero at eMin).
    /// registerDestination: unmasked #O/#U deliver a bias-adjusted result (only for stack registers).
    /// inexact: the value is known to be inexact although sig holds it exactly (#P, and #U when tiny,
    /// are raised; the rounding itself is that of sig).
    /// </summary>
    internal static bool RoundCore(FpuContext ctx, bool sign, ref int e, ref UInt128 sig, int p, int eMin, int eMax, bool registerDestination,
        bool inexact = false)
    {
        ctx.C1 = false;
        if (sig == UInt128.Zero)
        {
            e = eMin;
            return true;
        }
        int lz = Lzc(sig);
        sig <<= lz;
        e -= lz;
        int drop = 128 - p;
        UInt128 lsb = UInt128.One << drop;
        UInt128 mask = lsb - 1;
        UInt128 half = lsb >> 1;
        RoundingControl rc = ctx.Rounding;
        bool tiny = false;
        if (e < eMin)
        {
            // Tiny after rounding: only a value just below 2^eMin that rounds up to it escapes.
            tiny = e < eMin - 1 || !(Increments(rc, sign, sig, mask, half, lsb) && (sig | mask) == UInt128.MaxValue);
            // Unmasked, only a result that is still tiny after rounding is bias-adjusted; one that rounds
            // up to 2^eMin is the normal minimum with #P alone, as on hardware.
            if (tiny && registerDestination && (ctx.Masks & FpuExceptions.Underflow) == 0)
            {
                ctx.Raise(FpuExceptions.Underflow);
                e += BiasAdjust;
                tiny = false;
            }
            else
            {
                sig = ShiftRightJam(sig, eMin - e);
                e = eMin;
            }
        }
        UInt128 rem = sig & mask;
        bool inc = false;
        if (rem != UInt128.Zero || inexact)
        {
            inc = Increments(rc, sign, sig, mask, half, lsb);
            ctx.Raise(tiny ? FpuExceptions.Precision | FpuExceptions.Underflow : FpuExceptions.Precision);
        }
        sig &= ~mask;
        if (inc)
        {
            sig += lsb;
            if (sig == UInt128.Zero)
            {
                sig = Top;
                e++;
            }
        }
        ctx.C1 = inc;
        if (e > eMax)
        {
            if (registerDestination && (ctx.Masks & FpuExceptions.Overflow) == 0)
            {
                ctx.Raise(FpuExceptions.Overflow);
                e -= BiasAdjust;
                return true;
            }
            ctx.Raise(FpuExceptions.Overflow | FpuExceptions.Precision);
            bool toInfinity = rc == RoundingControl.NearestEven
                || (rc == RoundingControl.Up && !sign) || (rc == RoundingControl.Down && sign);
            ctx.C1 = toInfinity;
            if (toInfinity) return false;
            e = eMax;
            sig = ~mask;
        }
        return true;
    }

    private static bool Increments(RoundingControl rc, bool sign, UInt128 sig, UInt128 mask, UInt128 half, UInt128 lsb)
    {
        UInt128 rem = sig & mask;
        if (rem == UInt128.Zero) return false;
        return rc switch
        {
            RoundingControl.NearestEven => rem > half || (rem == half && (sig & lsb) != UInt128.Zero),
            RoundingControl.Up => !sign,
            RoundingControl.Down => sign,
            _ => false,
        };
    }

    /// <summary>Rounds to a register value at precision p (24/53/64) with the extended exponent range.</summary>
    internal static Float80 RoundPack80(FpuContext ctx, bool sign, int e, UInt128 sig, int p, bool inexact = false)
    {
        if (!RoundCore(ctx, sign, ref e, ref sig, p, EMin80, EMax80, registerDestination: true, inexact))
            return Float80.Infinity(sign);
        if ((sig & Top) == UInt128.Zero)
            return new Float80(sign, 0, (ulong)(sig >> 64));
        return new Float80(sign, e + Bias, (ulong)(sig >> 64));
    }

    /// <summary>
    /// A finite operand an instruction returns without arithmetic (FSCALE by ±0, FPREM/FPREM1 by ±∞):
    /// not rounded and not checked for tininess, so no #U or #P whatever the masks; a pseudo-denormal
    /// comes back re-encoded with exponent 1, as the hardware's operand normalisation leaves it.
    /// </summary>
    internal static Float80 Unchanged(Float80 a) =>
        a.Exponent == 0 && (a.Significand & Float80.IntegerBit) != 0 ? new Float80(a.Sign, 1, a.Significand) : a;

    internal static Float80 Quiet(Float80 v) => new(v.SignExponent, v.Significand | Float80.QuietBit);

    /// <summary>
    /// x87 NaN propagation (SDM Vol. 1 table 4-7): an SNaN raises #IA and is quieted; of an SNaN and a
    /// QNaN the QNaN is returned; of two NaNs of the same kind the one with the larger significand.
    /// </summary>
    internal static Float80 PropagateNaN(FpuContext ctx, Float80 a, Float80 b)
    {
        bool aNaN = a.IsNaN, bNaN = b.IsNaN;
        if (a.IsSignalingNaN || b.IsSignalingNaN) ctx.Raise(FpuExceptions.Invalid);
        if (aNaN && bNaN)
        {
            // A QNaN beats an SNaN; otherwise the larger significand wins.
            bool aQuiet = !a.IsSignalingNaN, bQuiet = !b.IsSignalingNaN;
            if (aQuiet != bQuiet) return Quiet(aQuiet ? a : b);
            ulong ma = a.Significand, mb = b.Significand;
            if (ma > mb) return Quiet(a);
            if (mb > ma) return Quiet(b);
            return Quiet(a.Sign && !b.Sign ? b : a);
        }
        return Quiet(aNaN ? a : b);
    }

    internal static Float80 InvalidResult(FpuContext ctx)
    {
        ctx.Raise(FpuExceptions.Invalid);
        ctx.C1 = false;
        return Float80.Indefinite;
    }

    /// <summary>Operand screening common to two-operand arithmetic: unsupported encodings, NaNs, denormals.</summary>
    internal static bool ScreenOperands(FpuContext ctx, Float80 a, Float80 b, out Float80 result) =>
        ScreenOperands(ctx, a, b, a.IsDenormal, b.IsDenormal, out result);

    /// <summary>As above, with denormal-ness given by the caller (a float32/float64 memory operand is
    /// normal once widened but still raises #D as a source).</summary>
    internal static bool ScreenOperands(FpuContext ctx, Float80 a, Float80 b, bool aDenormal, bool bDenormal, out Float80 result)
    {
        if (a.IsUnsupported || b.IsUnsupported)
        {
            result = InvalidResult(ctx);
            return true;
        }
        if (a.IsNaN || b.IsNaN)
        {
            ctx.C1 = false;
            result = PropagateNaN(ctx, a, b);
            return true;
        }
        if (aDenormal || bDenormal) ctx.Raise(FpuExceptions.Denormal);
        result = default;
        return false;
    }

    internal static bool ScreenOperand(FpuContext ctx, Float80 a, out Float80 result)
    {
        if (a.IsUnsupported)
        {
            result = InvalidResult(ctx);
            return true;
        }
        if (a.IsNaN)
        {
            ctx.C1 = false;
            if (a.IsSignalingNaN) ctx.Raise(FpuExceptions.Invalid);
            result = Quiet(a);
            return true;
        }
        if (a.IsDenormal) ctx.Raise(FpuExceptions.Denormal);
        result = default;
        return false;
    }

    /// <summary>The exact product of two 64-bit numbers.</summary>
    internal static UInt128 Mul64(ulong a, ulong b) => (UInt128)a * b;

    internal static int Lzc64(ulong v) => BitOperations.LeadingZeroCount(v);

    /// <summary>
    /// The significand of a finite nonzero value shifted so that J is set (denormals and
    /// pseudo-denormals normalized), and the unbiased exponent of J after that shift.
    /// </summary>
    internal static ulong NormalizedSignificand(Float80 v, out int exponent)
    {
        ulong s = v.Significand;
        int l = Lzc64(s);
        exponent = UnbiasedExponent(v) - l;
        return s << l;
    }
}
