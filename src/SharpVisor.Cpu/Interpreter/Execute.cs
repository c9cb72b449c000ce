using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// The interpreter's dispatch. It switches on Iced's mnemonic and lets the operand kinds Iced
/// decoded (register, memory, immediate of a given width) select the form, so one handler covers
/// every encoding of an instruction; forms whose semantics differ get their own handler.
/// Anything not listed stops the VM naming the instruction and its address.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    // A thin switch: every case is one call, so the method stays small enough for the JIT to keep
    // its frame tiny and to use tiered PGO (no AggressiveOptimization); bodies live in handlers.
    [SkipLocalsInit]
    private Status Execute(ref Instruction i)
    {
        var m = i.Mnemonic;
        switch (m)
        {
            case Mnemonic.Mov: return Mov(ref i);
            case Mnemonic.Add: case Mnemonic.Or: case Mnemonic.Adc: case Mnemonic.Sbb:
            case Mnemonic.And: case Mnemonic.Sub: case Mnemonic.Xor: case Mnemonic.Cmp: case Mnemonic.Test:
                return Alu2(ref i, m);
            case Mnemonic.Inc: return IncDec(ref i, true);
            case Mnemonic.Dec: return IncDec(ref i, false);
            case Mnemonic.Neg: return NegNot(ref i, true);
            case Mnemonic.Not: return NegNot(ref i, false);
            case Mnemonic.Lea: return Lea(ref i);
            case Mnemonic.Movzx: return Movzx(ref i);
            case Mnemonic.Movsx: case Mnemonic.Movsxd: return Movsx(ref i);
            case Mnemonic.Xchg: return Xchg(ref i);
            case Mnemonic.Push: return PushOp(ref i);
            case Mnemonic.Pop: return PopOp(ref i);
            case Mnemonic.Jmp: return Jmp(ref i);
            case Mnemonic.Call: return Call(ref i);
            case Mnemonic.Ret: return RetNear(ref i);
            case Mnemonic.Ja: case Mnemonic.Jae: case Mnemonic.Jb: case Mnemonic.Jbe: case Mnemonic.Je: case Mnemonic.Jg:
            case Mnemonic.Jge: case Mnemonic.Jl: case Mnemonic.Jle: case Mnemonic.Jne: case Mnemonic.Jno: case Mnemonic.Jnp:
            case Mnemonic.Jns: case Mnemonic.Jo: case Mnemonic.Jp: case Mnemonic.Js:
                return Jcc(ref i);
            case Mnemonic.Seta: case Mnemonic.Setae: case Mnemonic.Setb: case Mnemonic.Setbe: case Mnemonic.Sete: case Mnemonic.Setg:
            case Mnemonic.Setge: case Mnemonic.Setl: case Mnemonic.Setle: case Mnemonic.Setne: case Mnemonic.Setno: case Mnemonic.Setnp:
            case Mnemonic.Setns: case Mnemonic.Seto: case Mnemonic.Setp: case Mnemonic.Sets:
                return Setcc(ref i);
            case Mnemonic.Cmova: case Mnemonic.Cmovae: case Mnemonic.Cmovb: case Mnemonic.Cmovbe: case Mnemonic.Cmove: case Mnemonic.Cmovg:
            case Mnemonic.Cmovge: case Mnemonic.Cmovl: case Mnemonic.Cmovle: case Mnemonic.Cmovne: case Mnemonic.Cmovno: case Mnemonic.Cmovnp:
            case Mnemonic.Cmovns: case Mnemonic.Cmovo: case Mnemonic.Cmovp: case Mnemonic.Cmovs:
            {
                int size = OpSize(ref i);
                var st = ReadOp(ref i, 1, size, out ulong v); // the source is read (and may fault) either way
                if (st != Status.Ok) return st;
                if (Condition(ConditionOf(i.ConditionCode))) SetReg(i.Op0Register, v);
                else if (size == 4) SetReg(i.Op0Register, GetReg(i.Op0Register)); // 32-bit CMOVcc always zero-extends
                return Status.Ok;
            }
            case Mnemonic.Shl: case Mnemonic.Sal: case Mnemonic.Shr: case Mnemonic.Sar:
            case Mnemonic.Rol: case Mnemonic.Ror: case Mnemonic.Rcl: case Mnemonic.Rcr:
                return Shift(ref i, m);
            case Mnemonic.Shld: return ShiftDouble(ref i, true);
            case Mnemonic.Shrd: return ShiftDouble(ref i, false);
            case Mnemonic.Mul: return Mul1(ref i, false);
            case Mnemonic.Imul: return Imul(ref i);
            case Mnemonic.Div: return Div(ref i, false);
            case Mnemonic.Idiv: return Div(ref i, true);
            case Mnemonic.Bt: case Mnemonic.Bts: case Mnemonic.Btr: case Mnemonic.Btc: return BitTest(ref i, m);
            case Mnemonic.Bsf: case Mnemonic.Bsr: case Mnemonic.Tzcnt: case Mnemonic.Lzcnt: case Mnemonic.Popcnt:
                return BitScan(ref i, m);
            case Mnemonic.Andn: case Mnemonic.Bextr: case Mnemonic.Blsi: case Mnemonic.Blsmsk: case Mnemonic.Blsr:
            case Mnemonic.Bzhi: case Mnemonic.Pdep: case Mnemonic.Pext: case Mnemonic.Mulx: case Mnemonic.Rorx:
            case Mnemonic.Sarx: case Mnemonic.Shlx: case Mnemonic.Shrx:
                return Bmi(ref i, m);
            case Mnemonic.Adcx: return AdcxAdox(ref i, false);
            case Mnemonic.Adox: return AdcxAdox(ref i, true);
            case Mnemonic.Xadd: return Xadd(ref i);
            case Mnemonic.Cmpxchg: return Cmpxchg(ref i);
            case Mnemonic.Cmpxchg8b: return CmpxchgDouble(ref i, false);
            case Mnemonic.Cmpxchg16b: return CmpxchgDouble(ref i, true);
            case Mnemonic.Daa: case Mnemonic.Das: case Mnemonic.Aaa: case Mnemonic.Aas: case Mnemonic.Aam: case Mnemonic.Aad:
                return Bcd(m, ref i);
            case Mnemonic.Bswap: return Bswap(ref i);
            case Mnemonic.Movbe: return Movbe(ref i);
            case Mnemonic.Cbw: SetReg(Register.AX, (ulong)(sbyte)_gpr[0]); return Status.Ok;
            case Mnemonic.Cwde: SetReg(Register.EAX, (ulong)(short)_gpr[0]); return Status.Ok;
            case Mnemonic.Cdqe: _gpr[0] = (ulong)(int)_gpr[0]; return Status.Ok;
            case Mnemonic.Cwd: SetReg(Register.DX, (short)_gpr[0] < 0 ? 0xFFFFUL : 0); return Status.Ok;
            case Mnemonic.Cdq: SetReg(Register.EDX, (int)_gpr[0] < 0 ? 0xFFFF_FFFFUL : 0); return Status.Ok;
            case Mnemonic.Cqo: _gpr[2] = (long)_gpr[0] < 0 ? ulong.MaxValue : 0; return Status.Ok;
            case Mnemonic.Lahf: return Lahf();
            case Mnemonic.Sahf: return Sahf();
            case Mnemonic.Clc: MaterializeFlags(); _flags &= ~Rflags.CF; return Status.Ok;
            case Mnemonic.Stc: MaterializeFlags(); _flags |= Rflags.CF; return Status.Ok;
            case Mnemonic.Cmc: MaterializeFlags(); _flags ^= Rflags.CF; return Status.Ok;
            case Mnemonic.Cld: _flags &= ~Rflags.DF; return Status.Ok;
            case Mnemonic.Std: _flags |= Rflags.DF; return Status.Ok;
            case Mnemonic.Cli: return Cli();
            case Mnemonic.Sti: return Sti();
            case Mnemonic.Pushf: case Mnemonic.Pushfd: case Mnemonic.Pushfq: return Pushf(ref i);
            case Mnemonic.Popf: case Mnemonic.Popfd: case Mnemonic.Popfq: return Popf(ref i);
            case Mnemonic.Pusha: case Mnemonic.Pushad: return Pusha(ref i);
            case Mnemonic.Popa: case Mnemonic.Popad: return Popa(ref i);
            case Mnemonic.Enter: return Enter(ref i);
            case Mnemonic.Leave: return Leave(ref i);
            case Mnemonic.Loop: case Mnemonic.Loope: case Mnemonic.Loopne: return Loop(ref i, m);
            case Mnemonic.Jcxz: case Mnemonic.Jecxz: case Mnemonic.Jrcxz: return Jcxz(ref i, m);
            case Mnemonic.Xlatb: return Xlatb(ref i);
            case Mnemonic.Nop: case Mnemonic.Pause: case Mnemonic.Lfence: case Mnemonic.Mfence: case Mnemonic.Sfence:
            case Mnemonic.Prefetchnta: case Mnemonic.Prefetcht0: case Mnemonic.Prefetcht1: case Mnemonic.Prefetcht2:
            case Mnemonic.Prefetchw: case Mnemonic.Prefetch: case Mnemonic.Endbr32: case Mnemonic.Endbr64:
                return Status.Ok;
            case Mnemonic.Clflush: case Mnemonic.Clflushopt: return Clflush(ref i);
            case Mnemonic.Ud0: case Mnemonic.Ud1: case Mnemonic.Ud2: case Mnemonic.INVALID:
                return UD();

            // strings
            case Mnemonic.Movsd: case Mnemonic.Cmpsd:
                // Also the SSE2 scalar-double MOVSD/CMPSD, which share Iced's mnemonic.
                return i.IsStringInstruction ? StringOp(ref i, m) : ExecuteFpuSimd(ref i);
            case Mnemonic.Movsb: case Mnemonic.Movsw: case Mnemonic.Movsq:
            case Mnemonic.Stosb: case Mnemonic.Stosw: case Mnemonic.Stosd: case Mnemonic.Stosq:
            case Mnemonic.Lodsb: case Mnemonic.Lodsw: case Mnemonic.Lodsd: case Mnemonic.Lodsq:
            case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsq:
            case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq:
            case Mnemonic.Insb: case Mnemonic.Insw: case Mnemonic.Insd:
            case Mnemonic.Outsb: case Mnemonic.Outsw: case Mnemonic.Outsd:
                return StringOp(ref i, m);

            // I/O
            case Mnemonic.In: return In(ref i);
            case Mnemonic.Out: return Out(ref i);

            // interrupts and far transfers
            case Mnemonic.Int: return SoftwareInterrupt((byte)i.Immediate8, EventKind.Software);
            case Mnemonic.Int3: return SoftwareInterrupt(Vector.BP, EventKind.SoftwareException);
            case Mnemonic.Int1: return SoftwareInterrupt(Vector.DB, EventKind.Exception);
            case Mnemonic.Into:
                return GetOf() ? SoftwareInterrupt(Vector.OF, EventKind.SoftwareException) : Status.Ok;
            case Mnemonic.Bound: return Bound(ref i);
            case Mnemonic.Iret: case Mnemonic.Iretd: case Mnemonic.Iretq: return Iret(ref i);
            case Mnemonic.Retf: return RetFar(ref i);
            case Mnemonic.Hlt: return Hlt();

            // segments
            case Mnemonic.Lds: case Mnemonic.Les: case Mnemonic.Lfs: case Mnemonic.Lgs: case Mnemonic.Lss:
                return LoadFarPointer(ref i, m);
            case Mnemonic.Swapgs: return Swapgs();
            case Mnemonic.Rdfsbase: case Mnemonic.Rdgsbase: case Mnemonic.Wrfsbase: case Mnemonic.Wrgsbase:
                return FsGsBase(ref i, m);

            // system
            case Mnemonic.Lgdt: case Mnemonic.Lidt: case Mnemonic.Sgdt: case Mnemonic.Sidt:
                return DescriptorTableOp(ref i, m);
            case Mnemonic.Lldt: return Lldt(ref i);
            case Mnemonic.Ltr: return Ltr(ref i);
            case Mnemonic.Sldt: return StoreSystemSelector(ref i, _ldtr.Selector);
            case Mnemonic.Str: return StoreSystemSelector(ref i, _tr.Selector);
            case Mnemonic.Smsw: return Smsw(ref i);
            case Mnemonic.Lmsw: return Lmsw(ref i);
            case Mnemonic.Clts: return Clts();
            case Mnemonic.Invlpg: return Invlpg(ref i);
            case Mnemonic.Invd: case Mnemonic.Wbinvd: case Mnemonic.Wbnoinvd:
                return _cpl != 0 ? GP(0) : Status.Ok;
            case Mnemonic.Lar: return LarLsl(ref i, true);
            case Mnemonic.Lsl: return LarLsl(ref i, false);
            case Mnemonic.Verr: return Verify(ref i, false);
            case Mnemonic.Verw: return Verify(ref i, true);
            case Mnemonic.Arpl: return Arpl(ref i);
            case Mnemonic.Cpuid: return Cpuid();
            case Mnemonic.Rdtsc: return Rdtsc(false);
            case Mnemonic.Rdtscp: return Rdtsc(true);
            case Mnemonic.Rdpid: return Rdpid(ref i);
            case Mnemonic.Rdrand: case Mnemonic.Rdseed: return Rdrand(ref i);
            case Mnemonic.Rdmsr: return Rdmsr();
            case Mnemonic.Wrmsr: return Wrmsr();
            case Mnemonic.Syscall: return Syscall();
            case Mnemonic.Sysret: case Mnemonic.Sysretq: return Sysret(ref i);
            case Mnemonic.Sysenter: return Sysenter();
            case Mnemonic.Sysexit: case Mnemonic.Sysexitq: return Sysexit(ref i);
            case Mnemonic.Stac: case Mnemonic.Clac: return StacClac(m);
            case Mnemonic.Movnti: return Mov(ref i);

            // x87/SSE state management
            case Mnemonic.Emms: case Mnemonic.Ldmxcsr: case Mnemonic.Stmxcsr:
            case Mnemonic.Fxsave: case Mnemonic.Fxsave64: case Mnemonic.Fxrstor: case Mnemonic.Fxrstor64:
            case Mnemonic.Xgetbv: case Mnemonic.Xsetbv:
            case Mnemonic.Xsave: case Mnemonic.Xsave64: case Mnemonic.Xsaveopt: case Mnemonic.Xsaveopt64:
            case Mnemonic.Xsavec: case Mnemonic.Xsavec64: case Mnemonic.Xrstor: case Mnemonic.Xrstor64:
            case Mnemonic.Xsaves: case Mnemonic.Xsaves64: case Mnemonic.Xrstors: case Mnemonic.Xrstors64:
                return StateManagement(ref i, m);
        }
        if (i.OpCount >= 1 && IsMovSystem(ref i)) return MovSystem(ref i);
        return ExecuteFpuSimd(ref i);
    }

    /// <summary>Iced's ConditionCode lists the conditions in encoding order after None (o = 1 … g = 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ConditionOf(ConditionCode cc) => (int)cc - 1;

    internal static string FormatInstruction(ref Instruction i)
    {
        var f = new NasmFormatter();
        var o = new StringOutput();
        f.Format(i, o);
        return o.ToStringAndReset().ToUpperInvariant();
    }

    private Status Mov(ref Instruction i)
    {
        var k0 = i.Op0Kind;
        if (k0 == OpKind.Register)
        {
            var r = i.Op0Register;
            if (r.IsSegmentRegister())
            {
                var st0 = ReadOp(ref i, 1, 2, out ulong sel);
                if (st0 != Status.Ok) return st0;
                int seg = SegIndex(r);
                if (seg == Seg.CS) return UD();
                var st1 = LoadSegment(seg, (ushort)sel);
                if (seg == Seg.SS) _endBlock = true;
                return st1;
            }
            if (r.IsCR() || r.IsDR()) return MovSystem(ref i);
            if (i.Op1Kind == OpKind.Register)
            {
                var r1 = i.Op1Register;
                if (r1.IsSegmentRegister())
                {
                    // MOV from a segment register: zero-extends into 32/64-bit registers.
                    SetReg(r, _seg[SegIndex(r1)].Selector);
                    return Status.Ok;
                }
                if (r1.IsCR() || r1.IsDR()) return MovSystem(ref i);
            }
            int size = RegSize(r);
            var st = ReadOp(ref i, 1, size, out ulong v);
            if (st != Status.Ok) return st;
            SetReg(r, v);
            return Status.Ok;
        }
        // Destination is memory.
        if (i.Op1Kind == OpKind.Register && i.Op1Register.IsSegmentRegister())
            return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, _seg[SegIndex(i.Op1Register)].Selector);
        int msize = i.MemorySize.GetSize();
        var s2 = ReadOp(ref i, 1, msize, out ulong val);
        if (s2 != Status.Ok) return s2;
        return Write(MemSeg(ref i), EffectiveAddress(ref i), msize, val);
    }

    private Status Xchg(ref Instruction i)
    {
        int size = OpSize(ref i);
        if (i.Op0Kind == OpKind.Register && i.Op1Kind == OpKind.Register)
        {
            ulong a = GetReg(i.Op0Register), b = GetReg(i.Op1Register);
            SetReg(i.Op0Register, b);
            SetReg(i.Op1Register, a);
            return Status.Ok;
        }
        // One operand is memory; Iced puts it in operand 0 or 1.
        bool memFirst = i.Op0Kind == OpKind.Memory;
        var reg = memFirst ? i.Op1Register : i.Op0Register;
        var st = Linear(MemSeg(ref i), EffectiveAddress(ref i), size, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        st = ProbeWrite(lin, size);
        if (st != Status.Ok) return st;
        st = ReadLinear(lin, size, out ulong mv);
        if (st != Status.Ok) return st;
        st = WriteLinear(lin, size, GetReg(reg));
        if (st != Status.Ok) return st;
        SetReg(reg, mv);
        return Status.Ok;
    }
}
