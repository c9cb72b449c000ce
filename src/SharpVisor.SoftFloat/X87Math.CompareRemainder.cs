// FCOM/FUCOM/FTST/FXAM (Intel SDM Vol. 2; condition codes per Vol. 1 table 8-6/8-7) and
// FPREM/FPREM1 (Vol. 2 FPREM, FPREM1: exact remainder when the exponent difference is below 64,
// otherwise a partial reduction by 2^(D−N) that sets C2 and must be repeated by software).
namespace SharpVisor.SoftFloat;

public static partial class X87Math
{
    /// <summary>FCOM (ordered: #IA on any NaN) or FUCOM (unordered: #IA only on SNaN).
    /// Sets C3/C2/C0 in the context as those instructions do and clears C1.</summary>
    public static FpuCompareResult Compare(FpuContext ctx, Float80 a, Float80 b, bool quiet) =>
        Compare(ctx, a, b, a.IsDenormal, b.IsDenormal, quiet);

    /// <summary>FCOM m32/m64/FICOM: compares st with a memory operand.</summary>
    public static FpuCompareResult Compare(FpuContext ctx, Float80 a, X87Operand b, bool quiet) =>
        Compare(ctx, a, b.Value, a.IsDenormal, b.IsDenormalSource, quiet);

    private static FpuCompareResult Compare(FpuContext ctx, Float80 a, Float80 b, bool aDen, bool bDen, bool quiet)
    {
        FpuCompareResult r = CompareCore(ctx, a, b, aDen, bDen, quiet);
        ctx.C0 = ((int)r & 0x01) != 0;
        ctx.C2 = ((int)r & 0x04) != 0;
        ctx.C3 = ((int)r & 0x40) != 0;
        ctx.C1 = false;
        return r;
    }

    private static FpuCompareResult CompareCore(FpuContext ctx, Float80 a, Float80 b, bool aDen, bool bDen, bool quiet)
    {
        if (a.IsUnsupported || b.IsUnsupported)
        {
            ctx.Raise(FpuExceptions.Invalid);
            return FpuCompareResult.Unordered;
        }
        if (a.IsNaN || b.IsNaN)
        {
            if (!quiet || a.IsSignalingNaN || b.IsSignalingNaN) ctx.Raise(FpuExceptions.Invalid);
            return FpuCompareResult.Unordered;
        }
        if (aDen || bDen) ctx.Raise(FpuExceptions.Denormal);
        int c = CompareMagnitudeSigned(a, b);
        return c == 0 ? FpuCompareResult.Equal : c < 0 ? FpuCompareResult.Less : FpuCompareResult.Greater;
    }

    /// <summary>Total order of two non-NaN supported values (zeros equal, pseudo-denormals by value).</summary>
    private static int CompareMagnitudeSigned(Float80 a, Float80 b)
    {
        if (a.IsZero && b.IsZero) return 0;
        if (a.Sign != b.Sign) return a.Sign ? -1 : 1;
        int m = CompareMagnitude(a, b);
        return a.Sign ? -m : m;
    }

    private static int CompareMagnitude(Float80 a, Float80 b)
    {
        // Exponent 0 means the same scale as exponent 1; a pseudo-denormal then orders by its J bit.
        int ea = a.Exponent == 0 ? 1 : a.Exponent, eb = b.Exponent == 0 ? 1 : b.Exponent;
        if (ea != eb) return ea < eb ? -1 : 1;
        return a.Significand.CompareTo(b.Significand);
    }

    /// <summary>FTST: compares a with +0.0 (ordered compare).</summary>
    public static FpuCompareResult Test(FpuContext ctx, Float80 a) => Compare(ctx, a, Float80.PositiveZero, quiet: false);

    /// <summary>FXAM for a non-empty register: C3/C2/C0 class code and C1 = sign. Raises nothing.</summary>
    public static void Examine(FpuContext ctx, Float80 a)
    {
        int code = a.Classify() switch
        {
            Float80Class.Unsupported => 0b000,
            Float80Class.QuietNaN or Float80Class.SignalingNaN => 0b001,
            Float80Class.Normal => 0b010,
            Float80Class.Infinity => 0b011,
            Float80Class.Zero => 0b100,
            _ => 0b110,
        };
        ctx.C3 = (code & 4) != 0;
        ctx.C2 = (code & 2) != 0;
        ctx.C0 = (code & 1) != 0;
        ctx.C1 = a.Sign;
    }

    /// <summary>FPREM: partial remainder with a truncated quotient (the 8087 fmod).</summary>
    public static Float80 PartialRemainder(FpuContext ctx, Float80 a, Float80 b) => Remainder(ctx, a, b, ieee: false);

    /// <summary>FPREM1: IEEE remainder (quotient rounded to nearest even), also partial for large D.</summary>
    public static Float80 IeeeRemainder(FpuContext ctx, Float80 a, Float80 b) => Remainder(ctx, a, b, ieee: true);

    private static void SetQuotientBits(FpuContext ctx, ulong q)
    {
        ctx.C0 = (q & 4) != 0;
        ctx.C3 = (q & 2) != 0;
        ctx.C1 = (q & 1) != 0;
    }

    private static Float80 Remainder(FpuContext ctx, Float80 a, Float80 b, bool ieee)
    {
        ctx.C2 = false;
        SetQuotientBits(ctx, 0);
        // ∞ dividend or zero divisor is invalid before a denormal other operand is noticed (#D not raised).
        bool invalid = (a.IsInfinity || b.IsZero) && !a.IsNaN && !b.IsNaN && !a.IsUnsupported && !b.IsUnsupported;
        if (invalid) return InvalidResult(ctx);
        if (ScreenOperands(ctx, a, b, out Float80 special))
        {
            SetQuotientBits(ctx, 0);
            return special;
        }
        // Observed on hardware: with an infinite divisor the remainder is ST(0) as it is, without a
        // tininess check, so a denormal ST(0) raises no #U even with #U unmasked (a finite divisor
        // larger than |ST(0)| does go through rounding: see NormalizeExact below).
        if (b.IsInfinity || a.IsZero) return Unchanged(a);
        ulong sa = NormalizedSignificand(a, out int ea), sb = NormalizedSignificand(b, out int eb);
        int d = ea - eb;
        if (d < 0)
        {
            // |a| < |b|: quotient 0, except FPREM1 where |a| > |b|/2 rounds the quotient to 1.
            if (!ieee || d < -1 || sa <= sb) return NormalizeExact(ctx, a);
            // a − b·sign: magnitude 2·sb − sa in units of 2^(ea−63), sign flipped.
            UInt128 mag = ((UInt128)sb << 1) - sa;
            SetQuotientBits(ctx, 1);
            bool c1 = ctx.C1;
            Float80 r1 = RoundPack80(ctx, !a.Sign, ea - 63 + 127, mag, 64);
            ctx.C1 = c1;
            return r1;
        }
        bool sign = a.Sign;
        int n = d;
        bool partial = d >= 64;
        if (partial) n = PartialReductionBits(d);
        // A = sa·2^n, B = sb, both in units of 2^(ea−n−63); q < 2^64.
        UInt128 bigA = (UInt128)sa << n;
        UInt128 q = bigA / sb;
        ulong r = (ulong)(bigA - q * sb);
        ulong qq = (ulong)q;
        if (ieee && !partial)
        {
            // Round the quotient to nearest even: compare 2r with sb.
            UInt128 twoR = (UInt128)r << 1;
            if (twoR > sb || (twoR == sb && (qq & 1) != 0))
            {
                qq++;
                r = sb - r;
                sign = !sign;
            }
        }
        // An incomplete reduction leaves C0/C3/C1 clear on hardware (the SDM calls them undefined).
        ctx.C2 = partial;
        SetQuotientBits(ctx, partial ? 0 : qq);
        if (r == 0) return Float80.Zero(a.Sign);
        bool savedC1 = ctx.C1;
        Float80 result = RoundPack80(ctx, sign, ea - n - 63 + 127, r, 64);
        ctx.C1 = savedC1;
        return result;
    }

    /// <summary>N for an incomplete FPREM/FPREM1 (SDM: "an implementation-dependent number between
    /// 32 and 63"); this choice reproduces Intel hardware.</summary>
    private static int PartialReductionBits(int d) => (d & 31) | 32;

    /// <summary>Returns a remainder operand unchanged in value (re-encoded exactly, so a
    /// pseudo-denormal comes back in canonical form) when the finite divisor is larger: unlike the
    /// ∞-divisor case this result is checked for tininess, so a denormal with #U unmasked is
    /// bias-adjusted and raises #U, as observed on hardware.</summary>
    private static Float80 NormalizeExact(FpuContext ctx, Float80 a)
    {
        bool c1 = ctx.C1;
        if (a.IsZero || a.IsInfinity) return a;
        Float80 r = RoundPack80(ctx, a.Sign, UnbiasedExponent(a), (UInt128)a.Significand << 64, 64);
        ctx.C1 = c1;
        return r;
    }
}
