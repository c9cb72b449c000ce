// F2XM1, FYL2X, FYL2XP1, FSIN, FCOS, FSINCOS, FPTAN, FPATAN (Intel SDM Vol. 2 entries, including
// their special-operand tables). Values are computed at 256 bits (WideFloat) and rounded once at
// 64 bits by RC (PC does not apply), so they are within 1 ulp of the exact result — in fact
// correctly rounded. Deliberate deviation: the argument reduction of FSIN/FCOS/FSINCOS/FPTAN uses
// an exact π, whereas Intel hardware uses a 66-bit approximation (results differ near multiples of π).
using System.Numerics;

namespace SharpVisor.SoftFloat;

public static partial class X87Math
{
    private static readonly Float80 MinusOne = new(0xBFFF, Float80.IntegerBit);

    /// <summary>F2XM1: 2^x − 1 (defined by the SDM for −1 ≤ x ≤ 1; computed for any finite x).</summary>
    public static Float80 F2xm1(FpuContext ctx, Float80 x)
    {
        if (ScreenOperand(ctx, x, out Float80 special)) return special;
        ctx.C1 = false;
        if (x.IsZero) return x;
        if (x.IsInfinity) return x.Sign ? MinusOne : x;
        if (x == Float80.One) return x;
        if (x == MinusOne) return new Float80(0xBFFE, Float80.IntegerBit);
        if (UnbiasedExponent(x) < 0)
        {
            WideFloat y = WideFloat.From(x) * WideFloat.Ln2;
            return WideFloat.ExpM1Series(y).ToFloat80(ctx);
        }
        // Outside the architectural range the hardware result is undefined; give 2^x − 1 anyway.
        if (UnbiasedExponent(x) > 15)
        {
            return x.Sign
                ? new WideFloat(-((System.Numerics.BigInteger.One << 300) - 1), -300).ToFloat80(ctx)
                : RoundPack80(ctx, false, 0x10000, UInt128.One << 127, 64);
        }
        WideFloat wx = WideFloat.From(x);
        long n = ToInt64Truncate(new FpuContext(), x); // |x| < 2^16: exact truncation, scratch flags
        if (x.Sign && !(WideFloat.FromInt(n) - wx).IsZero) n--; // floor
        WideFloat f = wx - WideFloat.FromInt(n);
        WideFloat pow = (WideFloat.ExpM1Series(f * WideFloat.Ln2) + WideFloat.FromInt(1)).Scale((int)n);
        return (pow - WideFloat.FromInt(1)).ToFloat80(ctx);
    }

    /// <summary>FYL2X: y·log2(x), with x = ST(0), y = ST(1); the result replaces ST(1).</summary>
    public static Float80 Fyl2x(FpuContext ctx, Float80 x, Float80 y)
    {
        // Invalid operand combinations are decided before a denormal operand raises #D.
        if (ScreenOperands(ctx, x, y, false, false, out Float80 special)) return special;
        ctx.C1 = false;
        if (x.Sign && !x.IsZero) return InvalidResult(ctx);
        if ((x.IsZero && y.IsZero) || (x.IsInfinity && y.IsZero)) return InvalidResult(ctx);
        if (y.IsInfinity && CompareMagnitude(x, Float80.One) == 0 && !x.Sign) return InvalidResult(ctx);
        // As for FDIV, log2(±0) raises only #Z even when y is a denormal (observed on hardware).
        if (!x.IsZero && (x.IsDenormal || y.IsDenormal)) ctx.Raise(FpuExceptions.Denormal);
        if (x.IsZero)
        {
            if (!y.IsInfinity) ctx.Raise(FpuExceptions.ZeroDivide);
            return Float80.Infinity(!y.Sign);
        }
        if (x.IsInfinity)
        {
            if (y.IsZero) return InvalidResult(ctx);
            return Float80.Infinity(y.Sign);
        }
        int cmpOne = CompareMagnitude(x, Float80.One);
        if (y.IsInfinity)
        {
            if (cmpOne == 0) return InvalidResult(ctx);
            return Float80.Infinity(y.Sign ^ (cmpOne < 0));
        }
        if (y.IsZero || cmpOne == 0) return Float80.Zero(y.Sign ^ (cmpOne < 0));
        // log2 x = e + ln(m)/ln 2 with m in [1, 2); ln m = 2·atanh((m−1)/(m+1)).
        ulong s = NormalizedSignificand(x, out int e);
        if (s == Float80.IntegerBit) return Fyl2xPowerOfTwo(ctx, e, y);
        WideFloat m = new(s, -63);
        WideFloat one = WideFloat.FromInt(1);
        WideFloat log2 = WideFloat.FromInt(e) + WideFloat.AtanhSeries((m - one) / (m + one)).Scale(1) / WideFloat.Ln2;
        return (WideFloat.From(y) * log2).ToFloat80(ctx);
    }

    /// <summary>
    /// FYL2X for x = 2^e (e ≠ 0, y finite nonzero). Observed on hardware (a 2,000-case sweep of e, y
    /// and RC, bit-exact): for x &gt; 1 the result is y·e correctly rounded, but #P is raised even when
    /// y·e is exact (and with it #U when the result is tiny); for x &lt; 1 log2 x is held as
    /// −(|e| − 2^(⌊log2 |e|⌋ − 66)), i.e. |e| less one unit of its 67th significant bit, and y times
    /// that is rounded (never exact, so #P always; a result a hair smaller in magnitude than y·e).
    /// </summary>
    private static Float80 Fyl2xPowerOfTwo(FpuContext ctx, int e, Float80 y)
    {
        if (e > 0)
        {
            ulong ys = NormalizedSignificand(y, out int ey);
            // e ≤ 16384 < 2^15: the product has at most 79 bits, bit 127 weighing 2^(ey+16).
            UInt128 sig = ((UInt128)ys * (ulong)e) << 48;
            return RoundPack80(ctx, y.Sign, ey + 16, sig, 64, inexact: true);
        }
        int magnitude = -e, top = 31 - BitOperations.LeadingZeroCount((uint)magnitude);
        var log2 = new WideFloat(-(((BigInteger)magnitude << (66 - top)) - 1), top - 66);
        return (WideFloat.From(y) * log2).ToFloat80(ctx);
    }

    /// <summary>FYL2XP1: y·log2(x + 1), x = ST(0) (SDM range |x| &lt; 1 − √2/2), y = ST(1).</summary>
    public static Float80 Fyl2xp1(FpuContext ctx, Float80 x, Float80 y)
    {
        // Invalid operand combinations are decided before a denormal operand raises #D.
        if (ScreenOperands(ctx, x, y, false, false, out Float80 special)) return special;
        ctx.C1 = false;
        if (x.IsInfinity || (x.IsZero && y.IsInfinity)) return InvalidResult(ctx);
        if (x.Sign && CompareMagnitude(x, Float80.One) >= 0) return InvalidResult(ctx);
        if (x.IsDenormal || y.IsDenormal) ctx.Raise(FpuExceptions.Denormal);
        if (x.IsZero) return Float80.Zero(x.Sign ^ y.Sign);
        if (y.IsInfinity) return Float80.Infinity(x.Sign ^ y.Sign);
        if (y.IsZero) return Float80.Zero(x.Sign ^ y.Sign);
        WideFloat wx = WideFloat.From(x);
        WideFloat ln1p = WideFloat.AtanhSeries(wx / (WideFloat.FromInt(2) + wx)).Scale(1);
        return (WideFloat.From(y) * ln1p / WideFloat.Ln2).ToFloat80(ctx);
    }

    /// <summary>Reduces x (|x| &lt; 2^63) to r in [−π/4, π/4] and the quadrant k mod 4.</summary>
    private static (WideFloat r, int quadrant) ReduceHalfPi(Float80 x)
    {
        int e = UnbiasedExponent(x);
        if (e < -1)
            return (WideFloat.From(x), 0);
        // Fixed point with PiFixedBits fractional bits: x·2^q and π/2·2^q.
        int q = WideFloat.PiFixedBits;
        System.Numerics.BigInteger xf = new System.Numerics.BigInteger(x.Significand) << (q + e - 63);
        System.Numerics.BigInteger halfPi = WideFloat.PiFixed >> 1, quarterPi = WideFloat.PiFixed >> 2;
        System.Numerics.BigInteger k = (xf + quarterPi) / halfPi;
        System.Numerics.BigInteger rf = xf - k * halfPi;
        int quadrant = (int)(k & 3);
        WideFloat r = new(x.Sign ? -rf : rf, -q);
        if (x.Sign) quadrant = (4 - quadrant) & 3;
        return (r, quadrant);
    }

    /// <summary>Common screening for FSIN/FCOS/FSINCOS/FPTAN; true when the result is already known.
    /// |x| ≥ 2^63 leaves the operand unchanged and sets C2 (reduction incomplete).</summary>
    private static bool ScreenTrig(FpuContext ctx, Float80 x, out Float80 result, out bool outOfRange)
    {
        ctx.C2 = false;
        outOfRange = false;
        if (ScreenOperand(ctx, x, out result)) return true;
        ctx.C1 = false;
        if (x.IsInfinity)
        {
            result = InvalidResult(ctx);
            return true;
        }
        if (UnbiasedExponent(x) >= 63)
        {
            ctx.C2 = true;
            outOfRange = true;
            result = x;
            return true;
        }
        return false;
    }

    /// <summary>FSIN.</summary>
    public static Float80 Sin(FpuContext ctx, Float80 x)
    {
        if (ScreenTrig(ctx, x, out Float80 r, out _)) return r;
        if (x.IsZero) return x;
        (WideFloat sin, WideFloat cos) = SinCosQuadrant(x);
        return sin.ToFloat80(ctx);
    }

    /// <summary>FCOS.</summary>
    public static Float80 Cos(FpuContext ctx, Float80 x)
    {
        if (ScreenTrig(ctx, x, out Float80 r, out _)) return r;
        if (x.IsZero) return Float80.One;
        (WideFloat _, WideFloat cos) = SinCosQuadrant(x);
        return cos.ToFloat80(ctx);
    }

    /// <summary>FSINCOS: returns sin x (to ST(1) after the push) and cos x (new ST(0)).
    /// When C2 is set on return the operand was out of range and nothing is pushed.</summary>
    public static Float80 SinCos(FpuContext ctx, Float80 x, out Float80 cos)
    {
        if (ScreenTrig(ctx, x, out Float80 r, out _))
        {
            cos = r;
            return r;
        }
        if (x.IsZero)
        {
            cos = Float80.One;
            return x;
        }
        (WideFloat ws, WideFloat wc) = SinCosQuadrant(x);
        Float80 s = ws.ToFloat80(ctx);
        bool sinC1 = ctx.C1;
        cos = wc.ToFloat80(ctx);
        ctx.C1 |= sinC1;
        return s;
    }

    /// <summary>FPTAN: returns tan x (replaces ST(0)) and the value the instruction then pushes:
    /// 1.0, or the same NaN when the result is a NaN. When C2 is set on return the operand was out
    /// of range and nothing is pushed.</summary>
    public static Float80 Tan(FpuContext ctx, Float80 x, out Float80 pushed)
    {
        pushed = Float80.One;
        if (ScreenTrig(ctx, x, out Float80 r, out _))
        {
            if (r.IsNaN) pushed = r;
            return r;
        }
        if (x.IsZero) return x;
        (WideFloat s, WideFloat c) = SinCosQuadrant(x);
        return (s / c).ToFloat80(ctx);
    }

    private static (WideFloat sin, WideFloat cos) SinCosQuadrant(Float80 x)
    {
        (WideFloat r, int quadrant) = ReduceHalfPi(x);
        (WideFloat s, WideFloat c) = WideFloat.SinCosSeries(r);
        return quadrant switch
        {
            0 => (s, c),
            1 => (c, -s),
            2 => (-s, -c),
            _ => (-c, s),
        };
    }

    /// <summary>FPATAN: atan2(y, x) with x = ST(0), y = ST(1); the result replaces ST(1).</summary>
    public static Float80 Atan(FpuContext ctx, Float80 x, Float80 y)
    {
        if (ScreenOperands(ctx, x, y, out Float80 special)) return special;
        ctx.C1 = false;
        WideFloat pi = WideFloat.Pi;
        bool ys = y.Sign;
        WideFloat result;
        if (y.IsZero || y.IsInfinity || x.IsZero || x.IsInfinity)
        {
            if (y.IsZero)
            {
                // ±0 for x = +0 or positive; ±π for x = −0 or negative.
                if (!x.Sign) return y;
                result = pi;
            }
            else if (y.IsInfinity)
            {
                result = x.IsInfinity ? (x.Sign ? pi.Scale(-2) * WideFloat.FromInt(3) : pi.Scale(-2)) : pi.Scale(-1);
            }
            else if (x.IsZero)
            {
                result = pi.Scale(-1);
            }
            else
            {
                if (!x.Sign) return Float80.Zero(ys);
                result = pi;
            }
            return (ys ? -result : result).ToFloat80(ctx);
        }
        WideFloat wy = WideFloat.From(y).Abs(), wx = WideFloat.From(x).Abs();
        bool swap = wy.CompareTo(wx) > 0;
        WideFloat t = swap ? wx / wy : wy / wx;
        // Two half-angle steps bring t ≤ 1 down to ≤ tan(π/16) < 0.2: atan t = 2·atan(t/(1+√(1+t²))).
        WideFloat one = WideFloat.FromInt(1);
        for (int i = 0; i < 2; i++) t = t / (one + (one + t * t).Sqrt());
        WideFloat a = WideFloat.AtanSeries(t).Scale(2);
        if (swap) a = pi.Scale(-1) - a;
        if (x.Sign) a = pi - a;
        return (ys ? -a : a).ToFloat80(ctx);
    }
}
