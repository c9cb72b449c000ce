// Transcendental instructions against the host x87. Hardware documents an error below 1 ulp, and
// X87Math rounds a 256-bit value once, so results must agree within 1 ulp (64-bit precision) and
// raise the same #I/#D/#Z and C2. Trig arguments stay where Intel's 66-bit π reduction is itself
// accurate (|x| < 4, results not near a zero of the function); beyond that only flags are compared.
using SharpVisor.SoftFloat;
using SharpVisor.Tests.Shared;
using Xunit;

namespace SharpVisor.SoftFloat.Tests;

public sealed class TranscendentalHostTests
{
    public static TheoryData<X87Op> Ops() =>
        [X87Op.F2xm1, X87Op.Fyl2x, X87Op.Fyl2xp1, X87Op.Fsin, X87Op.Fcos, X87Op.Fsincos, X87Op.Fptan, X87Op.Fpatan];

    private static int Cases() => OperandGenerator.ConfiguredCaseCount() is { } n ? Math.Max(500, n / 1000) : 1000;

    private static (Float80 a, Float80 b) Operands(OperandGenerator g, X87Op op) => op switch
    {
        X87Op.F2xm1 => (g.Next(4) == 0 ? g.Operand() : g.Around(-80, -1), default),
        X87Op.Fyl2x => (g.Next(4) == 0 ? g.Operand() : g.Around(-200, 200).Abs(), g.Next(4) == 0 ? g.Operand() : g.Around(-20, 20)),
        X87Op.Fyl2xp1 => (g.Next(4) == 0 ? g.Operand() : g.Around(-70, -3), g.Next(4) == 0 ? g.Operand() : g.Around(-20, 20)),
        X87Op.Fpatan => (g.Next(3) == 0 ? g.Operand() : g.Around(-40, 40), g.Next(3) == 0 ? g.Operand() : g.Around(-40, 40)),
        _ => (g.Next(5) == 0 ? g.Operand() : g.Around(-70, 1), default),
    };

    [Theory]
    [MemberData(nameof(Ops))]
    public void WithinOneUlpOfHost(X87Op op)
    {
        if (!HostX87.IsSupported) Assert.Skip("needs an x86-64 Linux host with an x87 FPU");
        using var host = new HostX87();
        var gen = new OperandGenerator(99 + (int)op);
        var ctx = new FpuContext();
        int cases = Cases(), bad = 0, exact = 0, valueCompared = 0;
        var report = new System.Text.StringBuilder();
        for (int i = 0; i < cases; i++)
        {
            ushort cw = (ushort)(gen.RandomControlWord() | 0x300);
            (Float80 a, Float80 b) = Operands(gen, op);
            HostResult hw = host.Run(op, cw, a, b);
            ctx.LoadControlWord(cw);
            ctx.ClearFlags();
            Float80 r1, r2 = default;
            switch (op)
            {
                case X87Op.F2xm1: r1 = X87Math.F2xm1(ctx, a); break;
                case X87Op.Fyl2x: r1 = X87Math.Fyl2x(ctx, a, b); break;
                case X87Op.Fyl2xp1: r1 = X87Math.Fyl2xp1(ctx, a, b); break;
                case X87Op.Fpatan: r1 = X87Math.Atan(ctx, a, b); break;
                case X87Op.Fsin: r1 = X87Math.Sin(ctx, a); break;
                case X87Op.Fcos: r1 = X87Math.Cos(ctx, a); break;
                case X87Op.Fsincos:
                    r2 = X87Math.SinCos(ctx, a, out r1);
                    if (ctx.C2) r2 = default; // nothing pushed: only ST(0) = operand is stored
                    break;
                default:
                    r2 = X87Math.Tan(ctx, a, out r1);
                    if (ctx.C2) r1 = r2;
                    if (ctx.C2) r2 = default;
                    break;
            }
            // F2XM1 is architecturally defined for |x| ≤ 1 only; FYL2XP1 for |x| < 1 − √2/2.
            bool defined = op switch
            {
                X87Op.F2xm1 => a.Exponent < 0x3FFF || a.Exponent == 0x3FFF && a.Significand == Float80.IntegerBit || a.IsNaN || a.IsInfinity,
                X87Op.Fyl2xp1 => a.Exponent < 0x3FFD || a.IsNaN || a.IsUnsupported,
                _ => true,
            };
            if (!defined) continue;
            bool trig = op is X87Op.Fsin or X87Op.Fcos or X87Op.Fsincos or X87Op.Fptan;
            // Hardware reduces by a 66-bit π: near π/2 its tan/cos are a few ulps off, so trig values
            // are compared for |x| < 1.5 only (X87Math's values there and beyond were checked with mpmath).
            bool compareValue = !trig || a.Exponent < 0x3FFF || (a.Exponent == 0x3FFF && a.Significand < 0xC000_0000_0000_0000)
                || a.Exponent == 0x7FFF || a.IsUnsupported;
            const ushort flagMask = 0x0407; // I, D, Z, C2
            bool ok = (hw.Sw & flagMask) == (ctx.StatusBits & flagMask);
            if (compareValue)
            {
                valueCompared++;
                foreach ((Float80 h, Float80 s) in new[] { (hw.R1, r1), (hw.R2, r2) })
                {
                    bool tinyNearZero = trig && h.Exponent < 0x3FFF - 8 && !a.IsDenormal && a.Exponent > 0x3FFF - 8;
                    if (tinyNearZero) continue;
                    ok &= Float80Ulps.Distance(h, s) <= 1;
                }
                if (hw.R1 == r1 && hw.R2 == r2) exact++;
            }
            if (!ok && ++bad <= 20)
                report.AppendLine($"{op} cw={cw:X4} a={a} b={b} | host {hw.R1} {hw.R2} sw={hw.Sw & 0x47FF:X4} | soft {r1} {r2} sw={ctx.StatusBits:X4}");
        }
        TestContext.Current.SendDiagnosticMessage($"{op}: {cases} cases, {valueCompared} value-compared, {exact} bit-identical, {bad} beyond 1 ulp or flag mismatch");
        Assert.True(bad == 0, $"{bad} of {cases} differ by more than 1 ulp or in I/D/Z/C2:\n{report}");
        // Most inputs lie where the value is compared (86–100 % with these generators); far fewer means
        // the operands drifted out of the compared ranges and only flags were being checked.
        Assert.True(valueCompared >= cases * 3 / 4, $"{op}: values compared in only {valueCompared} of {cases} cases");
    }
}
