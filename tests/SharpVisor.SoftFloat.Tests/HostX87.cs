// The host's x87 for differential tests, run through SharpVisor.HostCpu's native harness: each
// operation is one x87 instruction assembled once, run with the operands already on the register
// stack (ST0 = a, ST1 = b, loaded with the FCW by the harness's FXRSTOR) and any memory operand at
// [R8] in the case's window; the results are read back from the harness's FXSAVE image (ST0, ST1,
// FSW) and the window. The harness refuses x87 code while an exception is unmasked (an unmasked
// fault would kill the process with SIGFPE), so callers pass control words with all six masked.
using Iced.Intel;
using SharpVisor.HostCpu;
using SharpVisor.SoftFloat;
using static Iced.Intel.AssemblerRegisters;
using Cpu = SharpVisor.HostCpu.HostCpu;

namespace SharpVisor.SoftFloat.Tests;

public enum X87Op
{
    Add, Sub, Mul, Div, Sqrt, Prem, Prem1, Rndint, Scale, Xtract, Com, Ucom, Tst, Xam,
    LoadF32, LoadF64, StoreF32, StoreF64,
    LoadI16, LoadI32, LoadI64, StoreI16, StoreI32, StoreI64, StoreTtI16, StoreTtI32, StoreTtI64,
    LoadBcd, StoreBcd,
    // Arithmetic with a memory operand: st0 op m32/m64/m16int/m32int.
    AddM32, MulM64, DivM32, DivrM64, SubrM32, IaddM16, IdivM32, ComM64, IcomM32,
    // Transcendentals (compared within 1 ulp, not bit for bit).
    F2xm1, Fyl2x, Fyl2xp1, Fsin, Fcos, Fsincos, Fptan, Fpatan,
}

/// <summary>ST0 and ST1 after the instruction, the 10 bytes at the memory operand, and FSW.</summary>
public readonly record struct HostResult(Float80 R1, Float80 R2, ulong Mem, ushort MemHigh, ushort Sw);

internal sealed class HostX87 : IDisposable
{
    /// <summary>Window offset of the memory operand (inside the harness's data area).</summary>
    private const int MemOffset = 0x100;
    private const ushort R8Bit = 1 << 8;

    private readonly Cpu _cpu = new();
    // One case per operation, assembled on first use and reused: only its input and the
    // memory operand's bytes change from run to run.
    private readonly NativeCase?[] _cases = new NativeCase?[Enum.GetValues<X87Op>().Length];

    public static bool IsSupported => HostFeatures.IsHostSupported;

    public HostResult Run(X87Op op, ushort cw, Float80 a, Float80 b, ulong mem = 0, ushort memHigh = 0)
    {
        var c = _cases[(int)op] ??= NativeSnippet.Case(NativeSnippet.Assemble(asm => Emit(asm, op)), relocated: R8Bit);
        var input = NativeState.Initial();
        input.Rsp = NativeLayout.DefaultRsp;
        input.Gpr[8] = MemOffset;
        input.Fcw = cw;
        Span<UInt128> stack = [ToRegister(a), ToRegister(b)];
        input.SetX87Stack(stack[..Operands(op)]);
        c.Input = input;
        BitConverter.TryWriteBytes(c.Window.AsSpan(MemOffset), mem);
        BitConverter.TryWriteBytes(c.Window.AsSpan(MemOffset + 8), memHigh);

        var r = _cpu.Run(c);
        if (r.Outcome != NativeOutcome.Completed)
            throw new InvalidOperationException($"{op} cw={cw:X4}: the harness did not run it ({r})");
        return new HostResult(
            FromRegister(r.Output.GetSt(0)), FromRegister(r.Output.GetSt(1)),
            BitConverter.ToUInt64(r.Window, MemOffset), BitConverter.ToUInt16(r.Window, MemOffset + 8), r.Output.Fsw);
    }

    /// <summary>How many register operands the instruction takes from the stack (ST0, then ST1).</summary>
    private static int Operands(X87Op op) => op switch
    {
        X87Op.Add or X87Op.Sub or X87Op.Mul or X87Op.Div or X87Op.Prem or X87Op.Prem1 or X87Op.Scale or X87Op.Com
            or X87Op.Ucom or X87Op.Fyl2x or X87Op.Fyl2xp1 or X87Op.Fpatan => 2,
        X87Op.LoadF32 or X87Op.LoadF64 or X87Op.LoadI16 or X87Op.LoadI32 or X87Op.LoadI64 or X87Op.LoadBcd => 0,
        _ => 1,
    };

    private static void Emit(Assembler a, X87Op op)
    {
        switch (op)
        {
            case X87Op.Add: a.fadd(st0, st1); break;
            case X87Op.Sub: a.fsub(st0, st1); break;
            case X87Op.Mul: a.fmul(st0, st1); break;
            case X87Op.Div: a.fdiv(st0, st1); break;
            case X87Op.Prem: a.fprem(); break;
            case X87Op.Prem1: a.fprem1(); break;
            case X87Op.Scale: a.fscale(); break;
            case X87Op.Com: a.fcom(st0, st1); break;
            case X87Op.Ucom: a.fucom(st0, st1); break;
            case X87Op.Sqrt: a.fsqrt(); break;
            case X87Op.Rndint: a.frndint(); break;
            case X87Op.Tst: a.ftst(); break;
            case X87Op.Xam: a.fxam(); break;
            case X87Op.Xtract: a.fxtract(); break;
            case X87Op.LoadF32: a.fld(__dword_ptr[r8]); break;
            case X87Op.LoadF64: a.fld(__qword_ptr[r8]); break;
            case X87Op.LoadI16: a.fild(__word_ptr[r8]); break;
            case X87Op.LoadI32: a.fild(__dword_ptr[r8]); break;
            case X87Op.LoadI64: a.fild(__qword_ptr[r8]); break;
            case X87Op.LoadBcd: a.fbld(__tword_ptr[r8]); break;
            case X87Op.StoreF32: a.fst(__dword_ptr[r8]); break;
            case X87Op.StoreF64: a.fst(__qword_ptr[r8]); break;
            case X87Op.StoreI16: a.fist(__word_ptr[r8]); break;
            case X87Op.StoreI32: a.fist(__dword_ptr[r8]); break;
            case X87Op.StoreI64: a.fistp(__qword_ptr[r8]); break;
            case X87Op.StoreTtI16: a.fisttp(__word_ptr[r8]); break;
            case X87Op.StoreTtI32: a.fisttp(__dword_ptr[r8]); break;
            case X87Op.StoreTtI64: a.fisttp(__qword_ptr[r8]); break;
            case X87Op.StoreBcd: a.fbstp(__tword_ptr[r8]); break;
            case X87Op.F2xm1: a.f2xm1(); break;
            case X87Op.Fsin: a.fsin(); break;
            case X87Op.Fcos: a.fcos(); break;
            case X87Op.Fsincos: a.fsincos(); break;
            case X87Op.Fptan: a.fptan(); break;
            case X87Op.Fyl2x: a.fyl2x(); break;
            case X87Op.Fyl2xp1: a.fyl2xp1(); break;
            case X87Op.Fpatan: a.fpatan(); break;
            case X87Op.AddM32: a.fadd(__dword_ptr[r8]); break;
            case X87Op.MulM64: a.fmul(__qword_ptr[r8]); break;
            case X87Op.DivM32: a.fdiv(__dword_ptr[r8]); break;
            case X87Op.DivrM64: a.fdivr(__qword_ptr[r8]); break;
            case X87Op.SubrM32: a.fsubr(__dword_ptr[r8]); break;
            case X87Op.IaddM16: a.fiadd(__word_ptr[r8]); break;
            case X87Op.IdivM32: a.fidiv(__dword_ptr[r8]); break;
            case X87Op.ComM64: a.fcom(__qword_ptr[r8]); break;
            case X87Op.IcomM32: a.ficom(__dword_ptr[r8]); break;
            default: throw new ArgumentOutOfRangeException(nameof(op), op, null);
        }
    }

    private static UInt128 ToRegister(Float80 v) => (UInt128)v.SignExponent << 64 | v.Significand;
    private static Float80 FromRegister(UInt128 v) => new((ushort)(v >> 64), (ulong)v);

    public void Dispose() => _cpu.Dispose();
}
