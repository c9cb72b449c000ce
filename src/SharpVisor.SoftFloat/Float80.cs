// Float80: the x87 double extended-precision format (Intel SDM Vol. 1 §4.2.2, §8.2, table 4-3):
// 1 sign bit, 15-bit biased exponent (bias 16383), 64-bit significand whose bit 63 is the explicit
// integer bit J. Encodings that the 8087/287 accepted but the 387 and later reject (unnormals,
// pseudo-NaNs, pseudo-infinities) are classified here so operations can raise #IA on them;
// pseudo-denormals (exponent 0, J = 1) are still accepted as operands (SDM §8.2.2).
using System.Runtime.InteropServices;

namespace SharpVisor.SoftFloat;

/// <summary>The class of an 80-bit encoding as the 387+ sees it.</summary>
public enum Float80Class
{
    Zero,
    Denormal,
    PseudoDenormal,
    Normal,
    Infinity,
    QuietNaN,
    SignalingNaN,
    /// <summary>Unnormal, pseudo-NaN or pseudo-infinity: an invalid operand on the 387 and later.</summary>
    Unsupported,
}

/// <summary>An x87 80-bit value; its layout matches the 10-byte memory operand (little endian).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 2)]
public readonly struct Float80 : IEquatable<Float80>
{
    public const int ExponentBias = 0x3FFF;
    public const int MaxExponent = 0x7FFF;
    public const ulong IntegerBit = 0x8000_0000_0000_0000;
    public const ulong QuietBit = 0x4000_0000_0000_0000;

    /// <summary>The 64-bit significand, J bit included.</summary>
    public readonly ulong Significand;
    /// <summary>Bit 15 is the sign, bits 14..0 the biased exponent.</summary>
    public readonly ushort SignExponent;

    public Float80(ushort signExponent, ulong significand)
    {
        SignExponent = signExponent;
        Significand = significand;
    }

    public Float80(bool sign, int biasedExponent, ulong significand)
    {
        SignExponent = (ushort)((sign ? 0x8000 : 0) | (biasedExponent & MaxExponent));
        Significand = significand;
    }

    public bool Sign => (SignExponent & 0x8000) != 0;
    public int Exponent => SignExponent & MaxExponent;

    /// <summary>The masked-response QNaN "real indefinite": sign 1, exponent all ones, 0xC000000000000000.</summary>
    public static Float80 Indefinite => new(0xFFFF, 0xC000_0000_0000_0000);
    public static Float80 PositiveZero => new(0, 0);
    public static Float80 NegativeZero => new(0x8000, 0);
    public static Float80 PositiveInfinity => new(0x7FFF, IntegerBit);
    public static Float80 NegativeInfinity => new(0xFFFF, IntegerBit);
    public static Float80 One => new(ExponentBias, IntegerBit);

    public static Float80 Zero(bool sign) => new(sign, 0, 0);
    public static Float80 Infinity(bool sign) => new(sign, MaxExponent, IntegerBit);

    public Float80Class Classify()
    {
        int exp = Exponent;
        ulong sig = Significand;
        if (exp == 0)
        {
            if (sig == 0) return Float80Class.Zero;
            return (sig & IntegerBit) != 0 ? Float80Class.PseudoDenormal : Float80Class.Denormal;
        }
        // With a nonzero exponent the J bit must be set; otherwise it is an unnormal,
        // pseudo-infinity or pseudo-NaN, all rejected by the 387+ (SDM §8.2.2, table 8-3).
        if ((sig & IntegerBit) == 0) return Float80Class.Unsupported;
        if (exp == MaxExponent)
        {
            if ((sig << 1) == 0) return Float80Class.Infinity;
            return (sig & QuietBit) != 0 ? Float80Class.QuietNaN : Float80Class.SignalingNaN;
        }
        return Float80Class.Normal;
    }

    public bool IsNaN => Exponent == MaxExponent && (Significand & IntegerBit) != 0 && (Significand << 1) != 0;
    public bool IsSignalingNaN => IsNaN && (Significand & QuietBit) == 0;
    public bool IsInfinity => Exponent == MaxExponent && Significand == IntegerBit;
    public bool IsZero => Exponent == 0 && Significand == 0;
    /// <summary>Exponent 0 with a nonzero significand: denormal or pseudo-denormal (raises #D as an operand).</summary>
    public bool IsDenormal => Exponent == 0 && Significand != 0;
    public bool IsUnsupported => Exponent != 0 && (Significand & IntegerBit) == 0;

    public Float80 Negate() => new((ushort)(SignExponent ^ 0x8000), Significand);
    public Float80 Abs() => new((ushort)(SignExponent & 0x7FFF), Significand);

    /// <summary>Reads the 10-byte memory form.</summary>
    public static Float80 FromBytes(ReadOnlySpan<byte> bytes) =>
        new(System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]),
            System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes));

    /// <summary>Writes the 10-byte memory form.</summary>
    public void WriteBytes(Span<byte> bytes)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(bytes, Significand);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(bytes[8..], SignExponent);
    }

    public bool Equals(Float80 other) => SignExponent == other.SignExponent && Significand == other.Significand;
    public override bool Equals(object? obj) => obj is Float80 f && Equals(f);
    public override int GetHashCode() => HashCode.Combine(SignExponent, Significand);
    public static bool operator ==(Float80 a, Float80 b) => a.Equals(b);
    public static bool operator !=(Float80 a, Float80 b) => !a.Equals(b);
    public override string ToString() => $"{SignExponent:X4}:{Significand:X16}";
}
