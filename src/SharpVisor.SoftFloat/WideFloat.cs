// A small arbitrary-precision binary float (BigInteger mantissa × 2^exponent, ~256 significant bits)
// used only by the x87 transcendental instructions, where the result must be within 1 ulp of the
// exact value at 64 bits: working at 256 bits and rounding once gives the correctly rounded result
// except in astronomically rare near-halfway cases. Not a hot path (hardware takes 100+ cycles too).
using System.Numerics;

namespace SharpVisor.SoftFloat;

internal readonly struct WideFloat
{
    public const int Precision = 256;
    public readonly BigInteger M;
    public readonly int E;

    public WideFloat(BigInteger m, int e)
    {
        long len = m.IsZero ? 0 : (long)BigInteger.Abs(m).GetBitLength();
        if (len > Precision)
        {
            int drop = (int)(len - Precision);
            // Truncate the magnitude (so a sticky bit added later errs in the right direction).
            m = m.Sign < 0 ? -(-m >> drop) : m >> drop;
            e += drop;
        }
        M = m;
        E = e;
    }

    public bool IsZero => M.IsZero;
    public int Sign => M.Sign;

    public static WideFloat FromInt(long v) => new(v, 0);

    public static WideFloat From(Float80 v)
    {
        BigInteger m = v.Significand;
        return new WideFloat(v.Sign ? -m : m, X87Math.UnbiasedExponent(v) - 63);
    }

    /// <summary>Rounds to a register value at 64-bit precision with the context's RC. The value is
    /// taken as an approximation of an irrational one: a sticky bit below it makes it inexact.</summary>
    public Float80 ToFloat80(FpuContext ctx)
    {
        if (M.IsZero) return Float80.PositiveZero;
        BigInteger mag = BigInteger.Abs(M);
        int len = (int)mag.GetBitLength();
        UInt128 sig;
        if (len > 127)
        {
            BigInteger top = mag >> (len - 127);
            bool sticky = !(mag - (top << (len - 127))).IsZero;
            sig = (UInt128)top | (sticky ? UInt128.One : UInt128.Zero);
        }
        else
        {
            sig = (UInt128)mag << (127 - len);
        }
        sig |= UInt128.One;
        // The top bit sits at bit 126, so bit 127 weighs 2^(E+len).
        return X87Math.RoundPack80(ctx, M.Sign < 0, E + len, sig, 64);
    }

    public static WideFloat operator -(WideFloat a) => new(-a.M, a.E);

    public static WideFloat operator +(WideFloat a, WideFloat b)
    {
        if (a.M.IsZero) return b;
        if (b.M.IsZero) return a;
        if (a.E < b.E) (a, b) = (b, a);
        int d = a.E - b.E;
        long topA = (long)BigInteger.Abs(a.M).GetBitLength() + a.E, topB = (long)BigInteger.Abs(b.M).GetBitLength() + b.E;
        if (topB < topA - 2 * Precision) return a;
        if (topA < topB - 2 * Precision) return b;
        return new WideFloat((a.M << d) + b.M, b.E);
    }

    public static WideFloat operator -(WideFloat a, WideFloat b) => a + (-b);

    public static WideFloat operator *(WideFloat a, WideFloat b) => new(a.M * b.M, a.E + b.E);

    public static WideFloat operator /(WideFloat a, WideFloat b)
    {
        int shift = 2 * Precision + 8;
        return new WideFloat((a.M << shift) / b.M, a.E - b.E - shift);
    }

    public WideFloat DivInt(long n)
    {
        // Widen the dividend so the quotient keeps the full working precision.
        int shift = Math.Max(64, Precision + 64 - (int)BigInteger.Abs(M).GetBitLength());
        return new((M << shift) / n, E - shift);
    }

    public WideFloat Scale(int k) => new(M, E + k);

    public WideFloat Abs() => new(BigInteger.Abs(M), E);

    public int CompareTo(WideFloat b) => (this - b).Sign;

    public WideFloat Sqrt()
    {
        if (M.Sign <= 0) return this;
        // Make the exponent even and the mantissa about 2·Precision bits, then integer square root.
        BigInteger m = M;
        int e = E;
        int want = 2 * Precision + 2 - (int)m.GetBitLength();
        if (want > 0) { m <<= want; e -= want; }
        if ((e & 1) != 0) { m <<= 1; e -= 1; }
        return new WideFloat(ISqrt(m), e / 2);
    }

    private static BigInteger ISqrt(BigInteger n)
    {
        BigInteger x = BigInteger.One << (int)((n.GetBitLength() + 1) / 2);
        while (true)
        {
            BigInteger y = (x + n / x) >> 1;
            if (y >= x) return x;
            x = y;
        }
    }

    public static readonly WideFloat Ln2 = ComputeLn2();

    // ln 2 = 2·atanh(1/3).
    private static WideFloat ComputeLn2() => AtanhSeries(new WideFloat(1, 0).DivInt(3)).Scale(1);

    /// <summary>π with 560 fractional bits (for reducing arguments up to 2^63).</summary>
    public static readonly BigInteger PiFixed = ComputePiFixed();
    public const int PiFixedBits = 560;

    public static WideFloat Pi => new(PiFixed, -PiFixedBits);

    // Machin: π = 16·atan(1/5) − 4·atan(1/239), computed once at a few more bits than kept.
    private static BigInteger ComputePiFixed()
    {
        const int q = 620;
        BigInteger AtanInv(int x)
        {
            BigInteger sum = 0, term = (BigInteger.One << q) / x, x2 = x * x;
            for (int k = 0; !term.IsZero; k++)
            {
                BigInteger t = term / (2 * k + 1);
                sum += (k & 1) == 0 ? t : -t;
                term /= x2;
            }
            return sum;
        }
        return (16 * AtanInv(5) - 4 * AtanInv(239)) >> (q - PiFixedBits);
    }

    /// <summary>atanh(t) = t + t³/3 + t⁵/5 + … for |t| ≤ 1/2.</summary>
    public static WideFloat AtanhSeries(WideFloat t) => OddPowerSeries(t, alternate: false);

    /// <summary>atan(t) = t − t³/3 + t⁵/5 − … for |t| ≤ 1/4.</summary>
    public static WideFloat AtanSeries(WideFloat t) => OddPowerSeries(t, alternate: true);

    /// <summary>Σ (±1)^k·t^(2k+1)/(2k+1), summed until a term no longer reaches the working precision.</summary>
    private static WideFloat OddPowerSeries(WideFloat t, bool alternate)
    {
        WideFloat t2 = alternate ? -(t * t) : t * t, power = t, sum = t;
        for (int k = 3; k < 2000; k += 2)
        {
            power *= t2;
            WideFloat term = power.DivInt(k);
            if (term.IsZero || IsNegligible(term, sum)) break;
            sum += term;
        }
        return sum;
    }

    /// <summary>e^y − 1 for |y| ≤ 1.</summary>
    public static WideFloat ExpM1Series(WideFloat y)
    {
        WideFloat term = y, sum = y;
        for (int k = 2; k < 2000; k++)
        {
            term = (term * y).DivInt(k);
            if (term.IsZero || IsNegligible(term, sum)) break;
            sum += term;
        }
        return sum;
    }

    /// <summary>sin r and cos r for |r| ≤ π/4.</summary>
    public static (WideFloat sin, WideFloat cos) SinCosSeries(WideFloat r)
    {
        WideFloat r2 = r * r;
        WideFloat sTerm = r, sSum = r;
        for (int k = 2; k < 2000; k += 2)
        {
            sTerm = -(sTerm * r2).DivInt((long)k * (k + 1));
            if (sTerm.IsZero || IsNegligible(sTerm, sSum)) break;
            sSum += sTerm;
        }
        WideFloat one = FromInt(1);
        WideFloat cTerm = one, cSum = one;
        for (int k = 1; k < 2000; k += 2)
        {
            cTerm = -(cTerm * r2).DivInt((long)k * (k + 1));
            if (cTerm.IsZero || IsNegligible(cTerm, cSum)) break;
            cSum += cTerm;
        }
        return (sSum, cSum);
    }

    private static bool IsNegligible(WideFloat term, WideFloat sum)
    {
        if (sum.IsZero) return false;
        long topT = (long)BigInteger.Abs(term.M).GetBitLength() + term.E;
        long topS = (long)BigInteger.Abs(sum.M).GetBitLength() + sum.E;
        return topT < topS - Precision - 8;
    }
}
