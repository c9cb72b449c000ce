// Random operands biased to where x87 arithmetic is hard: the ends of the exponent range, the
// rounding positions of 24/53/64-bit precision, special encodings (pseudo-denormals, unnormals,
// pseudo-NaN/∞, SNaN/QNaN) and, for two-operand ops, nearby exponents (cancellation, FPREM).
using SharpVisor.SoftFloat;

namespace SharpVisor.SoftFloat.Tests;

internal sealed class OperandGenerator(int seed)
{
    private readonly Random _rng = new(seed);

    /// <summary>SHARPVISOR_FPU_CASES: the total differential case count asked for, or null for the default.</summary>
    public static int? ConfiguredCaseCount() =>
        int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_FPU_CASES"), out int n) && n > 0 ? n : null;

    private static readonly Float80[] Specials =
    [
        new(0x0000, 0), new(0x8000, 0),
        new(0x7FFF, 0x8000_0000_0000_0000), new(0xFFFF, 0x8000_0000_0000_0000),
        new(0xFFFF, 0xC000_0000_0000_0000), new(0x7FFF, 0xC000_0000_0000_0001), new(0x7FFF, 0x8000_0000_0000_0001),
        new(0xFFFF, 0xA000_0000_0000_0000), new(0x7FFF, 0xFFFF_FFFF_FFFF_FFFF),
        new(0x7FFE, 0xFFFF_FFFF_FFFF_FFFF), new(0xFFFE, 0xFFFF_FFFF_FFFF_FFFF),
        new(0x0001, 0x8000_0000_0000_0000), new(0x8001, 0x8000_0000_0000_0000),
        new(0x0000, 1), new(0x8000, 0x7FFF_FFFF_FFFF_FFFF), new(0x0000, 0x4000_0000_0000_0000),
        new(0x0000, 0x8000_0000_0000_0000), new(0x8000, 0xFFFF_FFFF_FFFF_FFFF), // pseudo-denormals
        new(0x3FFF, 0x8000_0000_0000_0000), new(0xBFFF, 0x8000_0000_0000_0000), new(0x4000, 0xC000_0000_0000_0000),
        new(0x3FFF, 0x4000_0000_0000_0000), new(0x1234, 0), // unnormals
        new(0x7FFF, 0), new(0x7FFF, 0x4000_0000_0000_0000), new(0xFFFF, 0x0000_0000_0000_0001), // pseudo-∞/NaN
        new(0x3FFE, 0xFFFF_FFFF_FFFF_FFFF), new(0x3FFF, 0x8000_0000_0000_0001),
    ];

    public int Next(int max) => _rng.Next(max);
    public int Next(int min, int max) => _rng.Next(min, max);
    public ulong NextU64() => (ulong)_rng.NextInt64() ^ ((ulong)_rng.Next(4) << 62);

    public ushort RandomControlWord() => (ushort)(0x3F | (_rng.Next(3) switch { 0 => 0, 1 => 2, _ => 3 }) << 8 | _rng.Next(4) << 10);

    /// <summary>A significand with the J bit (usually) set and bit patterns near rounding points.</summary>
    public ulong Significand()
    {
        ulong s = NextU64();
        switch (_rng.Next(8))
        {
            case 0: s = 0; break; // only J
            case 1: s = ulong.MaxValue; break;
            case 2:
            {
                // A run of equal bits below a random rounding position (24, 53, 64 bit rounding).
                int pos = _rng.Next(3) switch { 0 => 40, 1 => 11, _ => 0 } + _rng.Next(3) - 1;
                pos = Math.Clamp(pos, 1, 63);
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

    public int Exponent()
    {
        return _rng.Next(8) switch
        {
            0 => _rng.Next(0x8000),
            1 => _rng.Next(0, 70),
            2 => 0x7FFF - _rng.Next(0, 70),
            3 => 0x3FFF + _rng.Next(-200, 200),
            4 => 0x3FFF - 16382 + _rng.Next(-2, 3),
            _ => 0x3FFF + _rng.Next(-70, 70),
        };
    }

    public Float80 Operand()
    {
        int pick = _rng.Next(100);
        if (pick < 10) return Specials[_rng.Next(Specials.Length)];
        bool sign = _rng.Next(2) == 0;
        int exp = Exponent();
        ulong sig = Significand();
        if (exp == 0 && _rng.Next(4) != 0) sig >>= _rng.Next(1, 64); // denormal (sometimes pseudo-denormal)
        if (exp == 0x7FFF && _rng.Next(2) == 0) sig = Float80.IntegerBit; // ∞
        if (pick < 12 && exp != 0) sig &= ~Float80.IntegerBit; // unnormal / pseudo-∞ / pseudo-NaN
        return new Float80(sign, exp, sig);
    }

    /// <summary>A second operand: often with an exponent close to the first's.</summary>
    public Float80 Near(Float80 a, int spread)
    {
        if (_rng.Next(3) == 0 || a.Exponent == 0x7FFF) return Operand();
        int exp = Math.Clamp(a.Exponent + _rng.Next(-spread, spread + 1), 0, 0x7FFE);
        ulong sig = _rng.Next(4) == 0 ? a.Significand ^ (1UL << _rng.Next(64)) | Float80.IntegerBit : Significand();
        if (exp == 0) sig >>= _rng.Next(0, 64);
        return new Float80(_rng.Next(2) == 0, exp, sig);
    }

    /// <summary>A value in the exponent window of a narrower format or integer conversion.</summary>
    public Float80 Around(int unbiasedLow, int unbiasedHigh)
    {
        if (_rng.Next(10) == 0) return Operand();
        int exp = 0x3FFF + _rng.Next(unbiasedLow, unbiasedHigh + 1);
        return new Float80(_rng.Next(2) == 0, Math.Clamp(exp, 0, 0x7FFF), Significand());
    }

    public (ulong mem, ushort high) MemoryOperand(X87Op op)
    {
        switch (op)
        {
            case X87Op.LoadF32 or X87Op.AddM32 or X87Op.DivM32 or X87Op.SubrM32:
            {
                uint exp = _rng.Next(4) switch { 0 => 0, 1 => 0xFF, _ => (uint)_rng.Next(256) };
                uint frac = (uint)NextU64() & 0x7FFFFF;
                if (_rng.Next(4) == 0) frac >>= _rng.Next(23);
                return ((uint)_rng.Next(2) << 31 | exp << 23 | frac, 0);
            }
            case X87Op.LoadF64 or X87Op.MulM64 or X87Op.DivrM64 or X87Op.ComM64:
            {
                ulong exp = _rng.Next(4) switch { 0 => 0UL, 1 => 0x7FFUL, _ => (ulong)_rng.Next(2048) };
                ulong frac = NextU64() & 0xF_FFFF_FFFF_FFFF;
                if (_rng.Next(4) == 0) frac >>= _rng.Next(52);
                return ((ulong)_rng.Next(2) << 63 | exp << 52 | frac, 0);
            }
            case X87Op.LoadI16 or X87Op.LoadI32 or X87Op.LoadI64 or X87Op.IaddM16 or X87Op.IdivM32 or X87Op.IcomM32:
                return (NextU64() >> _rng.Next(64), 0);
            case X87Op.LoadBcd:
            {
                ulong lo = 0;
                for (int i = 0; i < 16; i++) lo |= (ulong)_rng.Next(10) << (4 * i);
                ushort hi = (ushort)(_rng.Next(10) | _rng.Next(10) << 4 | (_rng.Next(2) << 15));
                return (lo, hi);
            }
            default:
                return (NextU64(), (ushort)_rng.Next(0x10000));
        }
    }
}
