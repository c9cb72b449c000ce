// A float32/float64/integer memory source operand of an x87 arithmetic or compare instruction.
// The hardware screens such an operand together with the register operand (SDM Vol. 1 §4.8.3.5,
// table 4-7), so it is kept exact but NOT yet quieted: a signaling NaN stays signaling (a QNaN in
// the register then wins), and a denormal source is remembered so it raises #D only when the other
// operand does not already make the operation invalid or NaN.
namespace SharpVisor.SoftFloat;

public readonly struct X87Operand
{
    /// <summary>The exact value widened to 80 bits (SNaN kept signaling).</summary>
    public Float80 Value { get; }
    /// <summary>The memory encoding was a denormal (the widened value itself is normal).</summary>
    public bool IsDenormalSource { get; }

    private X87Operand(Float80 value, bool denormal)
    {
        Value = value;
        IsDenormalSource = denormal;
    }

    public static implicit operator X87Operand(Float80 value) => new(value, value.IsDenormal);

    public static X87Operand FromFloat32(uint bits) => Widen(bits, exponentBits: 8, fractionBits: 23);

    public static X87Operand FromFloat64(ulong bits) => Widen(bits, exponentBits: 11, fractionBits: 52);

    /// <summary>Exact widening of an IEEE 754 binary32/binary64 encoding (SDM Vol. 1 §4.2.2).</summary>
    private static X87Operand Widen(ulong bits, int exponentBits, int fractionBits)
    {
        bool sign = ((bits >> (exponentBits + fractionBits)) & 1) != 0;
        int exponentAll = (1 << exponentBits) - 1, bias = exponentAll >> 1;
        int exp = (int)((bits >> fractionBits) & (ulong)exponentAll);
        ulong frac = bits & ((1UL << fractionBits) - 1);
        int align = 63 - fractionBits; // moves the fraction's top bit just below J
        if (exp == exponentAll)
            return new(new Float80(sign, Float80.MaxExponent, Float80.IntegerBit | (frac << align)), false);
        if (exp == 0)
        {
            if (frac == 0) return new(Float80.Zero(sign), false);
            // A denormal is 0.frac·2^(1−bias): normalize so the leading one becomes J.
            int l = System.Numerics.BitOperations.LeadingZeroCount(frac);
            return new(new Float80(sign, Float80.ExponentBias - (bias - 1) - (l - align), frac << l), true);
        }
        return new(new Float80(sign, exp - bias + Float80.ExponentBias, Float80.IntegerBit | (frac << align)), false);
    }

    /// <summary>FIADD/FIMUL/FICOM… m16/m32 integer source (always exact).</summary>
    public static X87Operand FromInt(long value) => new(X87Math.FromInt64(value), false);
}
