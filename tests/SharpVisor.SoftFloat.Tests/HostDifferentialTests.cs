// Differential tests against the host's x87 (the host CPU is the reference for X87Math): every
// operation is run natively and in X87Math on the same operands and FCW (all exceptions masked,
// every RC × PC combination) and the results, stored memory and FSW flags/condition codes must
// match bit for bit. SHARPVISOR_FPU_CASES sets the total case count (default 150,000).
using System.Text;
using Xunit;
using SharpVisor.SoftFloat;
using SharpVisor.Tests.Shared;

namespace SharpVisor.SoftFloat.Tests;

public sealed class HostDifferentialTests
{
    private const int DefaultTotalCases = 150_000;

    public static TheoryData<X87Op> AllOps()
    {
        var data = new TheoryData<X87Op>();
        foreach (X87Op op in Enum.GetValues<X87Op>())
            if (op < X87Op.F2xm1) data.Add(op);
        return data;
    }

    private static int CasesFor(X87Op op)
    {
        int total = OperandGenerator.ConfiguredCaseCount() ?? DefaultTotalCases;
        // Weight the rounding-heavy operations twice.
        int weight = op is X87Op.Add or X87Op.Sub or X87Op.Mul or X87Op.Div or X87Op.Sqrt or X87Op.Prem
            or X87Op.Prem1 or X87Op.StoreF32 or X87Op.StoreF64 or X87Op.Scale ? 2 : 1;
        int ops = (int)X87Op.F2xm1;
        return Math.Max(1000, total * weight / (ops + 10));
    }

    private static (Float80 a, Float80 b) Operands(OperandGenerator g, X87Op op)
    {
        Float80 a = g.Operand();
        switch (op)
        {
            case X87Op.Add or X87Op.Sub: return (a, g.Near(a, 70));
            case X87Op.Mul or X87Op.Div:
            {
                if (g.Next(3) != 0 || a.Exponent == 0x7FFF) return (a, g.Operand());
                // Aim the result exponent at the underflow or overflow boundary.
                int target = g.Next(2) == 0 ? g.Next(-70, 4) : 0x7FFF + g.Next(-4, 4);
                int eb = op == X87Op.Mul ? target - a.Exponent + 0x3FFF : a.Exponent - target + 0x3FFF;
                if (eb < 0 || eb > 0x7FFE) return (a, g.Operand());
                return (a, new Float80(g.Next(2) == 0, eb, g.Significand()));
            }
            case X87Op.Prem or X87Op.Prem1:
                return g.Next(3) == 0 ? (a, g.Operand()) : (a, g.Near(a, g.Next(2) == 0 ? 70 : 200));
            case X87Op.Com or X87Op.Ucom:
                return g.Next(4) == 0 ? (a, a) : (a, g.Near(a, 2));
            case X87Op.Scale:
                return (a, g.Next(2) == 0 ? X87Math.FromInt64(g.Next(-20000, 20000)) : g.Around(-3, 17));
            case X87Op.Rndint: return (g.Around(-3, 66), default);
            case X87Op.StoreF32: return (g.Around(-160, 130), default);
            case X87Op.StoreF64: return (g.Around(-1080, 1030), default);
            case X87Op.StoreI16 or X87Op.StoreTtI16: return (g.Around(-2, 17), default);
            case X87Op.StoreI32 or X87Op.StoreTtI32: return (g.Around(-2, 33), default);
            case X87Op.StoreI64 or X87Op.StoreTtI64: return (g.Around(-2, 65), default);
            case X87Op.StoreBcd: return (g.Around(-2, 62), default);
            case X87Op.AddM32 or X87Op.DivM32 or X87Op.SubrM32:
                return (g.Next(2) == 0 ? g.Around(-160, 130) : a, default);
            case X87Op.MulM64 or X87Op.DivrM64:
                return (g.Next(2) == 0 ? g.Around(-1100, 1050) : a, default);
            default: return (a, g.Operand());
        }
    }

    private static int ExpectedCoverage(X87Op op) => op switch
    {
        // I, D, O, U, P and C1 (rounded up).
        X87Op.Add or X87Op.Sub or X87Op.Mul => 0x023B,
        X87Op.Div => 0x023F,
        X87Op.Sqrt => 0x0223,
        X87Op.Scale => 0x023B,
        X87Op.StoreF32 or X87Op.StoreF64 => 0x0239,
        X87Op.StoreI16 or X87Op.StoreI32 or X87Op.StoreI64 or X87Op.StoreBcd => 0x0221,
        X87Op.Prem or X87Op.Prem1 => 0x4703,
        X87Op.Rndint => 0x0223,
        X87Op.Com or X87Op.Ucom => 0x4503,
        _ => 0,
    };

    [Theory]
    [MemberData(nameof(AllOps))]
    public void MatchesHostX87(X87Op op)
    {
        if (!HostX87.IsSupported) Assert.Skip("needs an x86-64 Linux host with an x87 FPU");
        using var host = new HostX87();
        var gen = new OperandGenerator(1234 + (int)op * 7919);
        var ctx = new FpuContext();
        int cases = CasesFor(op);
        int mismatches = 0;
        var report = new StringBuilder();
        ushort swMask = SoftRunner.CompareMask(op);
        int memBytes = SoftRunner.MemBytes(op);
        ulong memMask = memBytes >= 8 ? ulong.MaxValue : (1UL << (8 * memBytes)) - 1;
        int seen = 0;
        for (int i = 0; i < cases; i++)
        {
            ushort cw = gen.RandomControlWord();
            (Float80 a, Float80 b) = Operands(gen, op);
            (ulong mem, ushort memHigh) = gen.MemoryOperand(op);
            HostResult hw = host.Run(op, cw, a, b, mem, memHigh);
            ctx.LoadControlWord(cw);
            ctx.ClearFlags();
            HostResult sw = SoftRunner.Run(op, ctx, a, b, mem, memHigh);
            seen |= hw.Sw;
            bool same = (hw.Sw & swMask) == (sw.Sw & swMask);
            if (SoftRunner.ComparesR1(op)) same &= hw.R1 == sw.R1;
            if (op == X87Op.Xtract) same &= hw.R2 == sw.R2;
            if (SoftRunner.IsStore(op))
            {
                same &= (hw.Mem & memMask) == (sw.Mem & memMask);
                if (memBytes == 10) same &= hw.MemHigh == sw.MemHigh;
            }
            if (!same && ++mismatches <= 25)
            {
                report.AppendLine($"{op} cw={cw:X4} a={a} b={b} mem={memHigh:X4}:{mem:X16} | host r={hw.R1} r2={hw.R2} mem={hw.MemHigh:X4}:{hw.Mem:X16} sw={hw.Sw & swMask:X4} | soft r={sw.R1} r2={sw.R2} mem={sw.MemHigh:X4}:{sw.Mem:X16} sw={sw.Sw & swMask:X4}");
            }
        }
        TestContext.Current.SendDiagnosticMessage($"{op}: {cases} cases, {mismatches} mismatches, host FSW bits seen {seen:X4}");
        Assert.True(mismatches == 0, $"{mismatches} of {cases} cases differ from the host x87:\n{report}");
        // Guard the generator: the cases must reach the exceptions this operation can raise.
        int expected = ExpectedCoverage(op);
        Assert.True((seen & expected) == expected, $"{op}: operands never produced FSW bits {expected & ~seen:X4}");
    }
}
