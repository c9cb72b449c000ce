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

    public static X87Operand FromFloat32(uint bits)
    {
        bool sign = (bits >> 31) != 0;
        int exp = (int)((bits >> 23) & 0xFF);
        ulong frac = bits & 0x7FFFFF;
        if (exp == 0xFF)
            return new(new Float80(sign, Float80.MaxExponent, Float80.IntegerBit | (frac << 40)), false);
        if (exp == 0)
        {
            if (frac == 0) return new(Float80.Zero(sign), false);
            int l = System.Numerics.BitOperations.LeadingZeroCount(frac);
            return new(new Float80(sign, Float80.ExponentBias - 126 - (l - 40), frac << l), true);
        }
        return new(new Float80(sign, exp - 127 + Float80.ExponentBias, Float80.IntegerBit | (frac << 40)), false);
    }

    public static X87Operand FromFloat64(ulong bits)
    {
        bool sign = (bits >> 63) != 0;
        int exp = (int)((bits >> 52) & 0x7FF);
        ulong frac = bits & 0xF_FFFF_FFFF_FFFF;
        if (exp == 0x7FF)
            return new(new Float80(sign, Float80.MaxExponent, Float80.IntegerBit | (frac << 11)), false);
        if (exp == 0)
        {
            if (frac == 0) return new(Float80.Zero(sign), false);
            int l = System.Numerics.BitOperations.LeadingZeroCount(frac);
            return new(new Float80(sign, Float80.ExponentBias - 1022 - (l - 11), frac << l), true);
        }
        return new(new Float80(sign, exp - 1023 + Float80.ExponentBias, Float80.IntegerBit | (frac << 11)), false);
    }

    /// <summary>FIADD/FIMUL/FICOM… m16/m32 integer source (always exact).</summary>
    public static X87Operand FromInt(long value) => new(X87Math.FromInt64(value), false);
}
