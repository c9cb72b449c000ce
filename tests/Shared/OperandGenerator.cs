// Random Float80 operands biased to where x87 arithmetic is hard: the ends of the exponent range, the
// rounding positions of 24/53/64-bit precision, special encodings (zeros, denormals, pseudo-denormals,
// unnormals, pseudo-NaN/∞, SNaN/QNaN, ∞, ±2^63 and the 2^31 region of the integer conversions) and,
// for two-operand ops, nearby exponents (cancellation, FPREM). The one source of x87 test values for
// SharpVisor.SoftFloat.Tests (X87Math against the host x87) and SharpVisor.Cpu.Tests (X87CaseGenerator,
// every x87 form against the host CPU); linked into both projects. A project adds its own case
// builders in a partial part of this class (SoftFloat.Tests: memory operands by X87Op).
using SharpVisor.SoftFloat;

namespace SharpVisor.Tests.Shared;

internal sealed partial class OperandGenerator
{
    private readonly Random _rng;

    public OperandGenerator(int seed) : this(new Random(seed)) { }

    /// <summary>Draws from <paramref name="rng"/>, so a caller can share one reproducible stream with its own draws.</summary>
    public OperandGenerator(Random rng) => _rng = rng;

    /// <summary>Percent of <see cref="Operand"/> values taken from <see cref="Specials"/>; the next 2 % are unnormal-like.</summary>
    private const int SpecialPercent = 12, UnnormalPercent = 2;

    private static readonly Float80[] Specials =
    [
        new(0x0000, 0), new(0x8000, 0),
        new(0x7FFF, 0x8000_0000_0000_0000), new(0xFFFF, 0x8000_0000_0000_0000), // ±∞
        new(0xFFFF, 0xC000_0000_0000_0000), new(0x7FFF, 0xC000_0000_0000_0001), new(0x7FFF, 0x8000_0000_0000_0001), // QNaN indefinite, QNaN, SNaN
        new(0xFFFF, 0xA000_0000_0000_0000), new(0x7FFF, 0xFFFF_FFFF_FFFF_FFFF),
        new(0x7FFE, 0xFFFF_FFFF_FFFF_FFFF), new(0xFFFE, 0xFFFF_FFFF_FFFF_FFFF), // ±largest finite
        new(0x0001, 0x8000_0000_0000_0000), new(0x8001, 0x8000_0000_0000_0000), // ±smallest normal
        new(0x0000, 1), new(0x8000, 0x7FFF_FFFF_FFFF_FFFF), new(0x0000, 0x4000_0000_0000_0000), // denormals
        new(0x0000, 0x8000_0000_0000_0000), new(0x8000, 0xFFFF_FFFF_FFFF_FFFF), // pseudo-denormals
        new(0x3FFF, 0x8000_0000_0000_0000), new(0xBFFF, 0x8000_0000_0000_0000), new(0x4000, 0xC000_0000_0000_0000),
        new(0x3FFF, 0x4000_0000_0000_0000), new(0x1234, 0), // unnormals
        new(0x7FFF, 0), new(0x7FFF, 0x4000_0000_0000_0000), new(0xFFFF, 0x0000_0000_0000_0001), // pseudo-∞/NaN
        new(0x3FFE, 0xFFFF_FFFF_FFFF_FFFF), new(0x3FFF, 0x8000_0000_0000_0001), // either side of 1
        new(0x403E, 0x8000_0000_0000_0000), new(0xC03E, 0x8000_0000_0000_0000), new(0x401D, 0xFFFF_FFFF_0000_0000), // ±2^63, 2^31 region
    ];

    public int Next(int max) => _rng.Next(max);
    public int Next(int min, int max) => _rng.Next(min, max);
    public ulong NextU64() => (ulong)_rng.NextInt64() ^ ((ulong)_rng.Next(4) << 62);

    /// <summary>A significand with the J bit set and bit patterns near rounding points.</summary>
    public ulong Significand()
    {
        ulong s = NextU64();
        switch (_rng.Next(8))
        {
            case 0: s = 0; break; // only J
            case 1: s = ulong.MaxValue; break;
            case 2:
            {
                // A run of equal bits below a rounding position of 24-, 53- or 64-bit precision.
                int pos = Math.Clamp((_rng.Next(3) switch { 0 => 40, 1 => 11, _ => 0 }) + _rng.Next(3) - 1, 1, 63);
                int run = _rng.Next(1, Math.Min(pos, 30) + 1);
                ulong runMask = ((1UL << run) - 1) << (pos - run);
                s = _rng.Next(2) == 0 ? s & ~runMask : s | runMask;
                break;
            }
            case 3: s &= ~((1UL << _rng.Next(64)) - 1); break; // few significant bits
            case 4: s &= 0xFFFF_FF00_0000_0000; break; // representable in 24 bits
            case 5: s &= 0xFFFF_FFFF_FFFF_F800; break; // representable in 53 bits
        }
        return s | Float80.IntegerBit;
    }

    /// <summary>A biased exponent: anywhere, near either end of the range, or near 1.</summary>
    public int Exponent() => _rng.Next(8) switch
    {
        0 => _rng.Next(0x8000),
        1 => _rng.Next(0, 70),
        2 => 0x7FFF - _rng.Next(0, 70),
        3 => 0x3FFF + _rng.Next(-200, 200),
        4 => 0x3FFF - 16382 + _rng.Next(-2, 3),
        _ => 0x3FFF + _rng.Next(-70, 70),
    };

    public Float80 Operand()
    {
        int pick = _rng.Next(100);
        if (pick < SpecialPercent) return Specials[_rng.Next(Specials.Length)];
        int exp = Exponent();
        ulong sig = Significand();
        if (exp == 0 && _rng.Next(4) != 0) sig >>= _rng.Next(1, 64); // denormal (sometimes pseudo-denormal)
        if (exp == 0x7FFF && _rng.Next(2) == 0) sig = Float80.IntegerBit; // ∞
        if (pick < SpecialPercent + UnnormalPercent && exp != 0) sig &= ~Float80.IntegerBit; // unnormal / pseudo-∞ / pseudo-NaN
        return new Float80(_rng.Next(2) == 0, exp, sig);
    }

    /// <summary>A second operand: often with an exponent within <paramref name="spread"/> of the first's.</summary>
    public Float80 Near(Float80 a, int spread)
    {
        if (_rng.Next(3) == 0 || a.Exponent == 0x7FFF) return Operand();
        int exp = Math.Clamp(a.Exponent + _rng.Next(-spread, spread + 1), 0, 0x7FFE);
        ulong sig = _rng.Next(4) == 0 ? a.Significand ^ (1UL << _rng.Next(64)) | Float80.IntegerBit : Significand();
        if (exp == 0) sig >>= _rng.Next(0, 64);
        return new Float80(_rng.Next(2) == 0, exp, sig);
    }

    /// <summary>A value with an unbiased exponent in [low, high] (a narrower format's or an integer's range), sometimes any operand.</summary>
    public Float80 Around(int unbiasedLow, int unbiasedHigh)
    {
        if (_rng.Next(10) == 0) return Operand();
        int exp = Math.Clamp(0x3FFF + _rng.Next(unbiasedLow, unbiasedHigh + 1), 0, 0x7FFF);
        return new Float80(_rng.Next(2) == 0, exp, Significand());
    }
}

/// <summary>Distances between x87 results.</summary>
internal static class Float80Ulps
{
    /// <summary>
    /// Distance in units of the 64-bit last place between two values of one sign (MaxValue for
    /// different signs or a NaN). Key: exponent·2^63 + fraction, continuous across binades and into
    /// the denormals.
    /// </summary>
    public static UInt128 Distance(Float80 a, Float80 b)
    {
        if (a == b) return 0;
        if (a.Sign != b.Sign || a.IsNaN || b.IsNaN) return UInt128.MaxValue;
        UInt128 ka = ((UInt128)(uint)a.Exponent << 63) + (a.Significand & ~Float80.IntegerBit);
        UInt128 kb = ((UInt128)(uint)b.Exponent << 63) + (b.Significand & ~Float80.IntegerBit);
        return ka > kb ? ka - kb : kb - ka;
    }
}
