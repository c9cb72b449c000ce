// The pre-decoded fast path (see Decode/Uop.cs for the design and why it is exact): the classifier
// that turns an Iced Instruction into a Uop at block decode time, and the handlers that run Uops.
// Each handler mirrors the Execute handler of the same form (Alu2, IncDec, Mov, Lea, Movzx, Movsx,
// Shift, Jcc, Jmp, Call, RetNear, PushOp, PopOp, Setcc, CMOVcc, Imul) step for step.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.Decode;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

public sealed unsafe partial class SoftwareVcpu
{
    // ------------------------------------------------------------------ classifier

    /// <summary>
    /// False: every instruction runs through the Iced-based Execute (tests compare the two paths).
    /// Blocks already decoded keep their Uops, so tests set it before the first run.
    /// </summary>
    internal bool _predecode = true;

    /// <summary>False: no ALU+Jcc fusion (tests compare fused against unfused; set before the first run).</summary>
    internal bool _fuse = true;

    /// <summary>False: no block links (tests compare linked against unlinked; set before the first run).</summary>
    internal bool _link = true;

    /// <summary>Pre-decodes <paramref name="i"/> for the current mode (the block's mode).</summary>
    private Uop Predecode(ref Instruction i, ulong ipMask)
    {
        var u = new Uop { NextIp = i.NextIP & ipMask, Base = Uop.NoReg, Index = Uop.NoReg };
        if (i.HasLockPrefix || IsImplicitlyLocked(ref i))
        {
            u.Kind = UopKind.SlowLocked;
            return u;
        }
        u.Kind = _predecode ? Classify(ref i, ref u) : UopKind.Slow;
        u.Fn = Bind(ref u);
        return u;
    }

    /// <summary>
    /// The operand form of a two-operand GPR instruction (MOV, the ALU group): register, memory or
    /// immediate source into a register, or a register or immediate into memory, each operand of
    /// one size. Returns <paramref name="rr"/> plus the form's offset (the RR, RI, RM, MR, MI
    /// order of both kind groups), or Slow.
    /// </summary>
    private UopKind TwoOperandForm(ref Instruction i, ref Uop u, UopKind rr)
    {
        if (i.OpCount != 2) return UopKind.Slow;
        var k0 = i.Op0Kind; var k1 = i.Op1Kind;
        if (k0 == OpKind.Register)
        {
            if (!IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
            u.Size = (byte)RegSize(i.Op0Register);
            if (k1 == OpKind.Register)
                return IsGprOperand(i.Op1Register, ref u.R1) && RegSize(i.Op1Register) == u.Size ? rr : UopKind.Slow;
            if (k1 == OpKind.Memory)
                return Mem(ref i, ref u) && i.MemorySize.GetSize() == u.Size ? rr + 2 : UopKind.Slow;
            if (!IsImmediate(k1)) return UopKind.Slow;
            u.Imm = i.GetImmediate(1) & SizeMask(u.Size);
            return rr + 1;
        }
        if (k0 != OpKind.Memory || !Mem(ref i, ref u)) return UopKind.Slow;
        u.Size = (byte)i.MemorySize.GetSize();
        if (u.Size is not (1 or 2 or 4 or 8)) return UopKind.Slow;
        if (k1 == OpKind.Register)
            return IsGprOperand(i.Op1Register, ref u.R1) && RegSize(i.Op1Register) == u.Size ? rr + 3 : UopKind.Slow;
        if (!IsImmediate(k1)) return UopKind.Slow;
        u.Imm = i.GetImmediate(1) & SizeMask(u.Size);
        return rr + 4;
    }

    /// <summary>The Uop kind of <paramref name="i"/> with its operands filled in, or Slow.</summary>
    private UopKind Classify(ref Instruction i, ref Uop u)
    {
        var m = i.Mnemonic;
        switch (m)
        {
            case Mnemonic.Nop: case Mnemonic.Pause: case Mnemonic.Lfence: case Mnemonic.Mfence: case Mnemonic.Sfence:
            case Mnemonic.Prefetchnta: case Mnemonic.Prefetcht0: case Mnemonic.Prefetcht1: case Mnemonic.Prefetcht2:
            case Mnemonic.Prefetchw: case Mnemonic.Prefetch: case Mnemonic.Endbr32: case Mnemonic.Endbr64:
                return UopKind.Nop;

            case Mnemonic.Mov:
                return TwoOperandForm(ref i, ref u, UopKind.MovRR);

            case Mnemonic.Add: case Mnemonic.Or: case Mnemonic.Adc: case Mnemonic.Sbb:
            case Mnemonic.And: case Mnemonic.Sub: case Mnemonic.Xor: case Mnemonic.Cmp: case Mnemonic.Test:
                u.Op = (byte)(m switch
                {
                    Mnemonic.Add => AluOp.Add, Mnemonic.Or => AluOp.Or, Mnemonic.Adc => AluOp.Adc, Mnemonic.Sbb => AluOp.Sbb,
                    Mnemonic.And => AluOp.And, Mnemonic.Sub => AluOp.Sub, Mnemonic.Xor => AluOp.Xor, Mnemonic.Cmp => AluOp.Cmp,
                    _ => AluOp.Test,
                });
                return TwoOperandForm(ref i, ref u, UopKind.AluRR);

            case Mnemonic.Inc: case Mnemonic.Dec:
                if (i.OpCount != 1 || i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)RegSize(i.Op0Register);
                return m == Mnemonic.Inc ? UopKind.IncR : UopKind.DecR;

            case Mnemonic.Lea:
                if (i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0) || i.Op1Kind != OpKind.Memory || !Mem(ref i, ref u))
                    return UopKind.Slow;
                u.Size = (byte)RegSize(i.Op0Register);
                return UopKind.Lea;

            case Mnemonic.Movzx: case Mnemonic.Movsx: case Mnemonic.Movsxd:
            {
                if (i.OpCount != 2 || i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)RegSize(i.Op0Register);
                bool zx = m == Mnemonic.Movzx;
                if (i.Op1Kind == OpKind.Register)
                {
                    if (!IsGprOperand(i.Op1Register, ref u.R1)) return UopKind.Slow;
                    u.Size2 = (byte)RegSize(i.Op1Register);
                    return zx ? UopKind.MovzxRR : UopKind.MovsxRR;
                }
                if (i.Op1Kind != OpKind.Memory || !Mem(ref i, ref u)) return UopKind.Slow;
                u.Size2 = (byte)i.MemorySize.GetSize();
                if (u.Size2 is not (1 or 2 or 4)) return UopKind.Slow;
                return zx ? UopKind.MovzxRM : UopKind.MovsxRM;
            }

            case Mnemonic.Shl: case Mnemonic.Sal: case Mnemonic.Shr: case Mnemonic.Sar:
            {
                if (i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)RegSize(i.Op0Register);
                ulong count;
                if (i.OpCount == 1) count = 1;
                else if (i.OpCount == 2 && i.Op1Kind == OpKind.Immediate8) count = i.Immediate8;
                else return UopKind.Slow; // by CL
                count &= u.Size == 8 ? 0x3FUL : 0x1FUL;
                if (count == 0) return UopKind.Slow; // flags untouched, 32-bit zero-extension: left to Shift
                u.Imm = count;
                u.Op = (byte)(m is Mnemonic.Shl or Mnemonic.Sal ? ShiftOp.Shl : m == Mnemonic.Shr ? ShiftOp.Shr : ShiftOp.Sar);
                return UopKind.ShiftRI;
            }

            case Mnemonic.Ja: case Mnemonic.Jae: case Mnemonic.Jb: case Mnemonic.Jbe: case Mnemonic.Je: case Mnemonic.Jg:
            case Mnemonic.Jge: case Mnemonic.Jl: case Mnemonic.Jle: case Mnemonic.Jne: case Mnemonic.Jno: case Mnemonic.Jnp:
            case Mnemonic.Jns: case Mnemonic.Jo: case Mnemonic.Jp: case Mnemonic.Js:
                if (!IsNearBranch(i.Op0Kind)) return UopKind.Slow;
                u.Op = (byte)ConditionOf(i.ConditionCode);
                u.Imm = i.NearBranchTarget;
                return UopKind.Jcc;

            case Mnemonic.Jmp:
                if (!IsNearBranch(i.Op0Kind)) return UopKind.Slow;
                u.Imm = i.NearBranchTarget;
                return UopKind.Jmp;

            case Mnemonic.Call:
                if (!IsNearBranch(i.Op0Kind)) return UopKind.Slow;
                u.Imm = i.NearBranchTarget;
                u.Size = (byte)StackOpSize(ref i);
                return UopKind.CallRel;

            case Mnemonic.Ret:
                u.Size = (byte)StackOpSize(ref i);
                u.Imm = i.OpCount == 1 ? i.Immediate16 : 0UL;
                return UopKind.Ret;

            case Mnemonic.Push:
                if (i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)StackOpSize(ref i);
                u.Size2 = (byte)RegSize(i.Op0Register);
                return UopKind.PushR;

            case Mnemonic.Pop:
                if (i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)StackOpSize(ref i);
                u.Size2 = (byte)RegSize(i.Op0Register);
                return UopKind.PopR;

            case Mnemonic.Seta: case Mnemonic.Setae: case Mnemonic.Setb: case Mnemonic.Setbe: case Mnemonic.Sete: case Mnemonic.Setg:
            case Mnemonic.Setge: case Mnemonic.Setl: case Mnemonic.Setle: case Mnemonic.Setne: case Mnemonic.Setno: case Mnemonic.Setnp:
            case Mnemonic.Setns: case Mnemonic.Seto: case Mnemonic.Setp: case Mnemonic.Sets:
                if (i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Op = (byte)ConditionOf(i.ConditionCode);
                return UopKind.SetccR;

            case Mnemonic.Imul:
            {
                if (i.OpCount < 2 || i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Size = (byte)RegSize(i.Op0Register);
                bool three = i.OpCount == 3;
                if (three)
                {
                    if (!IsImmediate(i.Op2Kind)) return UopKind.Slow;
                    u.Imm = i.GetImmediate(2) & SizeMask(u.Size);
                }
                if (i.Op1Kind == OpKind.Register)
                {
                    if (!IsGprOperand(i.Op1Register, ref u.R1) || RegSize(i.Op1Register) != u.Size) return UopKind.Slow;
                    return three ? UopKind.Imul3RR : UopKind.Imul2RR;
                }
                if (i.Op1Kind != OpKind.Memory || !Mem(ref i, ref u) || i.MemorySize.GetSize() != u.Size) return UopKind.Slow;
                return three ? UopKind.Imul3RM : UopKind.Imul2RM;
            }

            case Mnemonic.Cmova: case Mnemonic.Cmovae: case Mnemonic.Cmovb: case Mnemonic.Cmovbe: case Mnemonic.Cmove: case Mnemonic.Cmovg:
            case Mnemonic.Cmovge: case Mnemonic.Cmovl: case Mnemonic.Cmovle: case Mnemonic.Cmovne: case Mnemonic.Cmovno: case Mnemonic.Cmovnp:
            case Mnemonic.Cmovns: case Mnemonic.Cmovo: case Mnemonic.Cmovp: case Mnemonic.Cmovs:
                if (i.OpCount != 2 || i.Op0Kind != OpKind.Register || !IsGprOperand(i.Op0Register, ref u.R0)) return UopKind.Slow;
                u.Op = (byte)ConditionOf(i.ConditionCode);
                u.Size = (byte)RegSize(i.Op0Register);
                if (i.Op1Kind == OpKind.Register)
                    return IsGprOperand(i.Op1Register, ref u.R1) && RegSize(i.Op1Register) == u.Size ? UopKind.CmovRR : UopKind.Slow;
                return i.Op1Kind == OpKind.Memory && Mem(ref i, ref u) && i.MemorySize.GetSize() == u.Size ? UopKind.CmovRM : UopKind.Slow;
        }
        return UopKind.Slow;
    }

    private static bool IsImmediate(OpKind k) => k is OpKind.Immediate8 or OpKind.Immediate16 or OpKind.Immediate32
        or OpKind.Immediate64 or OpKind.Immediate8to16 or OpKind.Immediate8to32 or OpKind.Immediate8to64 or OpKind.Immediate32to64;

    private static bool IsNearBranch(OpKind k) => k is OpKind.NearBranch16 or OpKind.NearBranch32 or OpKind.NearBranch64;

    /// <summary>A general register (not RIP, segment, control …): its Uop encoding.</summary>
    private static bool IsGprOperand(Register r, ref byte encoded)
    {
        int idx = s_regIndex[(int)r];
        if (idx < 0) return false;
        encoded = (byte)(idx | (s_regHigh8[(int)r] ? Uop.High8 : 0));
        return true;
    }

    /// <summary>The memory operand, resolved as <see cref="EffectiveAddress"/> and <see cref="MemSeg"/> do.</summary>
    private bool Mem(ref Instruction i, ref Uop u)
    {
        u.Seg = (byte)MemSeg(ref i);
        u.Disp = i.MemoryDisplacement64;
        var b = i.MemoryBase;
        var x = i.MemoryIndex;
        int asz = 0;
        if (b == Register.RIP || b == Register.EIP)
        {
            if (x != Register.None) return false;
            u.AddrMask = b == Register.EIP ? 0xFFFF_FFFF : ulong.MaxValue;
            return true;
        }
        if (b != Register.None)
        {
            if (s_regIndex[(int)b] < 0) return false;
            asz = s_regSize[(int)b];
            u.Base = (byte)s_regIndex[(int)b];
        }
        if (x != Register.None)
        {
            if (s_regIndex[(int)x] < 0) return false; // VSIB and the like
            if (asz == 0) asz = s_regSize[(int)x];
            u.Index = (byte)s_regIndex[(int)x];
            u.Scale = (byte)i.MemoryIndexScale;
        }
        if (asz == 0) asz = i.MemoryDisplSize is 2 or 4 or 8 ? i.MemoryDisplSize : (_mode64 ? 8 : _codeBits / 8);
        u.AddrMask = asz switch { 2 => 0xFFFF, 4 => 0xFFFF_FFFF, _ => ulong.MaxValue };
        return true;
    }

    // ------------------------------------------------------------------ operand access

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ulong GprRef(int index) => ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_gpr), index);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong GetR(int r, int size)
    {
        ulong v = GprRef(r & 15);
        return size switch
        {
            8 => v,
            4 => (uint)v,
            2 => (ushort)v,
            _ => r >= Uop.High8 ? (byte)(v >> 8) : (byte)v,
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetR(int r, int size, ulong value)
    {
        ref ulong g = ref GprRef(r & 15);
        switch (size)
        {
            case 8: g = value; break;
            case 4: g = (uint)value; break; // 32-bit writes zero-extend
            case 2: g = (g & ~0xFFFFUL) | (ushort)value; break;
            default:
                if (r >= Uop.High8) g = (g & ~0xFF00UL) | ((value & 0xFF) << 8);
                else g = (g & ~0xFFUL) | (byte)value;
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Ea(ref Uop u)
    {
        ulong ea = u.Disp;
        if (u.Base != Uop.NoReg) ea += GprRef(u.Base);
        if (u.Index != Uop.NoReg) ea += GprRef(u.Index) * u.Scale;
        return ea & u.AddrMask;
    }

    // ------------------------------------------------------------------ execution

    /// <summary>Runs a pre-decoded instruction (Kind is not Slow/SlowLocked); _rip is already NextIp.</summary>
    [SkipLocalsInit]
    private Status ExecuteUop(ref Uop u)
    {
        // The kinds with a specialized handler (UopHandlers.cs Bind: MOV, the ALU group, INC/DEC,
        // LEA, shifts by an immediate, Jcc, JMP, NOP) never come here.
        switch (u.Kind)
        {
            case UopKind.MovzxRR:
                SetR(u.R0, u.Size, GetR(u.R1, u.Size2));
                return Status.Ok;
            case UopKind.MovsxRR:
                SetR(u.R0, u.Size, (ulong)SignExtend(GetR(u.R1, u.Size2), u.Size2));
                return Status.Ok;
            case UopKind.MovzxRM:
            case UopKind.MovsxRM:
            {
                var st = Read(u.Seg, Ea(ref u), u.Size2, out ulong v);
                if (st != Status.Ok) return st;
                SetR(u.R0, u.Size, u.Kind == UopKind.MovzxRM ? v : (ulong)SignExtend(v, u.Size2));
                return Status.Ok;
            }
            case UopKind.CallRel:
            {
                ulong target = u.Imm;
                if (_mode64 ? !IsCanonical(target) : target > _seg[Seg.CS].Limit) return GP(0);
                var st = Push(u.Size, _rip);
                if (st != Status.Ok) return st;
                _rip = target;
                return Status.Ok;
            }
            case UopKind.Ret:
            {
                ulong sp = _gpr[Gpr.Rsp];
                var st = PopFrom(ref sp, u.Size, out ulong target);
                if (st != Status.Ok) return st;
                if (_mode64 ? !IsCanonical(target) : target > _seg[Seg.CS].Limit) return GP(0);
                sp += u.Imm;
                SetSp(sp);
                _rip = target;
                return Status.Ok;
            }
            case UopKind.PushR:
                return Push(u.Size, GetR(u.R0, u.Size2) & SizeMask(u.Size));
            case UopKind.PopR:
            {
                ulong sp = _gpr[Gpr.Rsp];
                var st = PopFrom(ref sp, u.Size, out ulong v);
                if (st != Status.Ok) return st;
                SetSp(sp);
                SetR(u.R0, u.Size2, v);
                return Status.Ok;
            }
            case UopKind.SetccR:
                SetR(u.R0, 1, Condition(u.Op) ? 1UL : 0);
                return Status.Ok;
            case UopKind.CmovRR:
                Cmov(ref u, GetR(u.R1, u.Size));
                return Status.Ok;
            case UopKind.CmovRM:
            {
                var st = Read(u.Seg, Ea(ref u), u.Size, out ulong v); // the source is read (and may fault) either way
                if (st != Status.Ok) return st;
                Cmov(ref u, v);
                return Status.Ok;
            }
            case UopKind.Imul2RR:
                ImulTo(ref u, GetR(u.R0, u.Size), GetR(u.R1, u.Size));
                return Status.Ok;
            case UopKind.Imul3RR:
                ImulTo(ref u, GetR(u.R1, u.Size), u.Imm);
                return Status.Ok;
            case UopKind.Imul2RM:
            case UopKind.Imul3RM:
            {
                var st = Read(u.Seg, Ea(ref u), u.Size, out ulong v);
                if (st != Status.Ok) return st;
                if (u.Kind == UopKind.Imul2RM) ImulTo(ref u, GetR(u.R0, u.Size), v);
                else ImulTo(ref u, v, u.Imm);
                return Status.Ok;
            }
        }
        // Not reached: Slow kinds are dispatched by the block loop.
        return Unsupported("pre-decoded form");
    }

    /// <summary>
    /// Imul's two- and three-operand forms: the truncated signed product, CF = OF = whether it was
    /// truncated. Same results as its Int128 product: 32-bit factors fit a long product, and
    /// 64-bit ones use the high half from Math.BigMul.
    /// </summary>
    private void ImulTo(ref Uop u, ulong a, ulong b)
    {
        int size = u.Size;
        ulong r;
        bool over;
        if (size == 8)
        {
            long hi = Math.BigMul((long)a, (long)b, out long lo);
            r = (ulong)lo;
            over = hi != lo >> 63;
        }
        else
        {
            long p = SignExtend(a, size) * SignExtend(b, size);
            r = (ulong)p & SizeMask(size);
            over = p != SignExtend(r, size);
        }
        SetR(u.R0, size, r);
        SetFlagsResult(size, r, over, over);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Cmov(ref Uop u, ulong v)
    {
        if (Condition(u.Op)) SetR(u.R0, u.Size, v);
        else if (u.Size == 4) SetR(u.R0, 4, GetR(u.R0, 4)); // 32-bit CMOVcc always zero-extends
    }

    /// <summary>
    /// Alu2 with a memory destination: read-modify-write (probed for write first), or read for
    /// CMP/TEST. The per-form handlers (UopHandlers.cs) inline it with a constant op and size.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Status AluMem(AluOp op, int size, ref Uop u, ulong b)
    {
        ulong ea = Ea(ref u);
        if (op >= AluOp.Cmp)
        {
            var s = Read(u.Seg, ea, size, out ulong v);
            if (s != Status.Ok) return s;
            AluCompute(op, size, v, b);
            return Status.Ok;
        }
        var st = Linear(u.Seg, ea, size, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        st = ProbeWrite(lin, size);
        if (st != Status.Ok) return st;
        st = ReadLinear(lin, size, out ulong a);
        if (st != Status.Ok) return st;
        ulong r = AluCompute(op, size, a, b);
        return WriteLinear(lin, size, r);
    }

    /// <summary>The arithmetic of <see cref="Alu2"/>: result and lazy flags.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong AluCompute(AluOp op, int size, ulong a, ulong b)
    {
        ulong mask = SizeMask(size);
        ulong r;
        switch (op)
        {
            case AluOp.Add: r = (a + b) & mask; SetFlags(FlagOp.Add, size, a, b, r); return r;
            case AluOp.Sub: case AluOp.Cmp: r = (a - b) & mask; SetFlags(FlagOp.Sub, size, a, b, r); return r;
            case AluOp.And: case AluOp.Test: r = a & b; SetFlags(FlagOp.Logic, size, 0, 0, r); return r;
            case AluOp.Or: r = a | b; SetFlags(FlagOp.Logic, size, 0, 0, r); return r;
            case AluOp.Xor: r = a ^ b; SetFlags(FlagOp.Logic, size, 0, 0, r); return r;
            case AluOp.Adc:
            {
                ulong c = GetCf() ? 1UL : 0;
                r = (a + b + c) & mask;
                _flags = (_flags & ~Rflags.CF) | c;
                SetFlags(FlagOp.Adc, size, a, b, r);
                return r;
            }
            default: // Sbb
            {
                ulong c = GetCf() ? 1UL : 0;
                r = (a - b - c) & mask;
                _flags = (_flags & ~Rflags.CF) | c;
                SetFlags(FlagOp.Sbb, size, a, b, r);
                return r;
            }
        }
    }
}
