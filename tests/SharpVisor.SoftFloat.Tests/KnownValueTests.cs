// Fixed expectations that do not need the host FPU: correctly rounded values (checked with mpmath
// at 300 bits), the masked responses of the SDM (QNaN indefinite, integer and BCD indefinite),
// precision control, FPREM's incomplete-reduction flag and FBLD/FBSTP round trips.
using SharpVisor.SoftFloat;
using Xunit;

namespace SharpVisor.SoftFloat.Tests;

public sealed class KnownValueTests
{
    private static Float80 F(ushort se, ulong sig) => new(se, sig);
    private static readonly Float80 One = Float80.One, Two = F(0x4000, 0x8000_0000_0000_0000), Three = F(0x4000, 0xC000_0000_0000_0000);

    [Theory]
    [InlineData(RoundingControl.NearestEven, PrecisionControl.Extended, 0xAAAA_AAAA_AAAA_AAABUL, true)]
    [InlineData(RoundingControl.TowardZero, PrecisionControl.Extended, 0xAAAA_AAAA_AAAA_AAAAUL, false)]
    [InlineData(RoundingControl.NearestEven, PrecisionControl.Single, 0xAAAA_AB00_0000_0000UL, true)]
    [InlineData(RoundingControl.Down, PrecisionControl.Double, 0xAAAA_AAAA_AAAA_A800UL, false)]
    public void OneThirdRoundsByRcAndPc(RoundingControl rc, PrecisionControl pc, ulong sig, bool c1)
    {
        var ctx = new FpuContext(rc, pc);
        Float80 r = X87Math.Div(ctx, One, Three);
        Assert.Equal(F(0x3FFD, sig), r);
        Assert.Equal(FpuExceptions.Precision, ctx.Flags);
        Assert.Equal(c1, ctx.C1);
    }

    [Fact]
    public void InvalidOperationsGiveTheQNaNIndefinite()
    {
        var ctx = new FpuContext();
        Assert.Equal(F(0xFFFF, 0xC000_0000_0000_0000), X87Math.Div(ctx, Float80.PositiveZero, Float80.NegativeZero));
        Assert.Equal(F(0xFFFF, 0xC000_0000_0000_0000), X87Math.Sub(ctx, Float80.PositiveInfinity, Float80.PositiveInfinity));
        Assert.Equal(F(0xFFFF, 0xC000_0000_0000_0000), X87Math.Add(ctx, F(0x3FFF, 0x4000_0000_0000_0000), One)); // unnormal
        Assert.Equal(FpuExceptions.Invalid, ctx.Flags);
        Assert.Equal(unchecked((int)0x8000_0000), X87Math.ToInt32(ctx, F(0x4100, 0x8000_0000_0000_0000)));
        Assert.Equal((short)-32768, X87Math.ToInt16(ctx, F(0x7FFF, 0xC000_0000_0000_0000)));
    }

    [Fact]
    public void DivideByZeroGivesSignedInfinity()
    {
        var ctx = new FpuContext();
        Assert.Equal(Float80.NegativeInfinity, X87Math.Div(ctx, One.Negate(), Float80.PositiveZero));
        Assert.Equal(FpuExceptions.ZeroDivide, ctx.Flags);
    }

    [Fact]
    public void NaNPropagationPrefersQuietThenLargerSignificand()
    {
        var ctx = new FpuContext();
        Float80 snanBig = F(0x7FFF, 0xBFFF_0000_0000_0000), qnanSmall = F(0x7FFF, 0xC000_0000_0000_0001);
        Assert.Equal(qnanSmall, X87Math.Add(ctx, snanBig, qnanSmall));
        Assert.Equal(FpuExceptions.Invalid, ctx.Flags);
        Float80 qnanBig = F(0xFFFF, 0xE000_0000_0000_0000);
        Assert.Equal(qnanBig, X87Math.Mul(ctx, qnanSmall, qnanBig));
        Assert.Equal(F(0x7FFF, 0xFFFF_0000_0000_0000), X87Math.Sqrt(ctx, snanBig)); // quieted
    }

    [Fact]
    public void SqrtTwoIsCorrectlyRounded()
    {
        var ctx = new FpuContext();
        Assert.Equal(F(0x3FFF, 0xB504_F333_F9DE_6484), X87Math.Sqrt(ctx, Two));
        Assert.Equal(FpuExceptions.Precision, ctx.Flags);
    }

    [Fact]
    public void MaskedOverflowAndUnderflowResponses()
    {
        var ctx = new FpuContext(RoundingControl.TowardZero, PrecisionControl.Single);
        Float80 big = F(0x7FFE, 0x8000_0000_0000_0000);
        Assert.Equal(F(0x7FFE, 0xFFFF_FF00_0000_0000), X87Math.Mul(ctx, big, big)); // largest 24-bit value
        Assert.Equal(FpuExceptions.Overflow | FpuExceptions.Precision, ctx.Flags);
        ctx = new FpuContext();
        Float80 tiny = F(0x0001, 0x8000_0000_0000_0001);
        Float80 half = F(0x3FFE, 0x8000_0000_0000_0000);
        Assert.Equal(F(0x0000, 0x4000_0000_0000_0000), X87Math.Mul(ctx, tiny, half)); // denormal, tie to even
        Assert.Equal(FpuExceptions.Underflow | FpuExceptions.Precision, ctx.Flags);
    }

    [Fact]
    public void PseudoDenormalIsAcceptedWithDenormalException()
    {
        var ctx = new FpuContext();
        Float80 pseudo = F(0x0000, 0x8000_0000_0000_0000); // same value as 0001:8000…
        Assert.Equal(F(0x0002, 0x8000_0000_0000_0000), X87Math.Add(ctx, pseudo, pseudo));
        Assert.Equal(FpuExceptions.Denormal, ctx.Flags);
    }

    [Fact]
    public void PartialRemainderSetsC2UntilComplete()
    {
        var ctx = new FpuContext();
        Float80 a = F(0x3FFF + 100, 0xC000_0000_0000_0000), b = Three;
        Float80 r = X87Math.PartialRemainder(ctx, a, b);
        Assert.True(ctx.C2);
        int rounds = 1;
        while (ctx.C2 && rounds < 10)
        {
            r = X87Math.PartialRemainder(ctx, r, b);
            rounds++;
        }
        Assert.False(ctx.C2);
        // 1.5·2^100 mod 3 = 0 (2^100 = 1 mod 3, so 3·2^99 is a multiple of 3).
        Assert.True(r.IsZero);
    }

    [Fact]
    public void IeeeRemainderRoundsQuotientToNearest()
    {
        var ctx = new FpuContext();
        // 5 rem 3: quotient 5/3 → 2, remainder −1; FPREM gives quotient 1, remainder 2.
        Float80 five = X87Math.FromInt64(5);
        Assert.Equal(One.Negate(), X87Math.IeeeRemainder(ctx, five, Three));
        Assert.True(ctx.C3 && !ctx.C1 && !ctx.C0); // Q = 2
        Assert.Equal(Two, X87Math.PartialRemainder(ctx, five, Three));
        Assert.True(ctx.C1 && !ctx.C3 && !ctx.C0); // Q = 1
    }

    [Fact]
    public void PackedBcdRoundTripAndIndefinite()
    {
        var ctx = new FpuContext();
        byte[] bcd = [0x89, 0x67, 0x45, 0x23, 0x01, 0x89, 0x67, 0x45, 0x23, 0x80];
        Float80 v = X87Math.FromPackedBcd(bcd);
        Assert.Equal(F(0xC038, 0xD056_9035_A160_4540), v); // −234567890123456789 = −0x3415A40D6858115 exactly
        var back = new byte[10];
        X87Math.ToPackedBcd(ctx, v, back);
        Assert.Equal(bcd, back);
        X87Math.ToPackedBcd(ctx, X87Math.FromInt64(1_000_000_000_000_000_000), back);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF }, back);
        Assert.True((ctx.Flags & FpuExceptions.Invalid) != 0);
    }

    [Fact]
    public void StoreToFloat32RoundsAndFlagsOverflow()
    {
        var ctx = new FpuContext();
        Assert.Equal(0x3EAAAAABu, X87Math.ToFloat32(ctx, X87Math.Div(new FpuContext(), One, Three)));
        Assert.Equal(0x7F800000u, X87Math.ToFloat32(ctx, F(0x3FFF + 128, 0x8000_0000_0000_0000)));
        Assert.True((ctx.Flags & FpuExceptions.Overflow) != 0);
        Assert.Equal(0xFFC00000u, X87Math.ToFloat32(ctx, F(0x4000, 0x4000_0000_0000_0000))); // unnormal → indefinite
    }

    [Fact]
    public void TranscendentalsAreCorrectlyRounded()
    {
        var ctx = new FpuContext();
        Float80 half = F(0x3FFE, 0x8000_0000_0000_0000);
        Assert.Equal(F(0x3FFE, 0xD76A_A478_4867_7021), X87Math.Sin(ctx, One));
        Assert.Equal(F(0x3FFE, 0x8A51_407D_A834_5C92), X87Math.Cos(ctx, One));
        Assert.Equal(F(0x3FFD, 0xD413_CCCF_E779_9211), X87Math.F2xm1(ctx, half));
        Assert.Equal(F(0x4000, 0xD49A_784B_CD1B_8AFE), X87Math.Fyl2x(ctx, X87Math.FromInt64(10), One));
        Assert.Equal(F(0x3FFE, 0x8BDA_7ADF_9A3A_5219), X87Math.Tan(ctx, half, out Float80 pushed));
        Assert.Equal(One, pushed);
        Assert.Equal(F(0x3FFE, 0xC90F_DAA2_2168_C235), X87Math.Atan(ctx, One, One)); // π/4
        Assert.Equal(F(0x4000, 0xC90F_DAA2_2168_C235), X87Math.Atan(ctx, One.Negate(), Float80.PositiveZero)); // π
    }
}
