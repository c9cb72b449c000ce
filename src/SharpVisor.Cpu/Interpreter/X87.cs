// x87 instruction semantics: Intel SDM Vol. 1 ch. 8 (stack, tags, status/control words, exception
// handling §8.5–8.7) and the Vol. 2 pages of every ESC D8–DF instruction and WAIT. The arithmetic
// itself is SharpVisor.SoftFloat (X87Math), which is bit-exact with the host; this file does the
// register stack, stack faults, masked/unmasked exception responses and the pointer registers.
//
// Exception responses (SDM Vol. 1 §4.9.2, §8.5; checked against the host where it can run them):
//   * masked: the SoftFloat result (QNaN indefinite, ∞, denormal …) is delivered, the flag is sticky.
//   * unmasked #I, #Z or #D: the destination, TOP and tags are left unchanged, only that flag is set
//     (with #D the operation is not carried out, so no #P/#U/#O is reported), C1 is cleared.
//     Observed on hardware: compares still set C0/C2/C3 (or ZF/PF/CF), unordered for #I, and FLD of a
//     float32/float64 denormal with #D unmasked still pushes the value.
//   * unmasked #O/#U with a register destination: the bias-adjusted result is delivered (SoftFloat).
//   * unmasked #O/#U with a memory destination: nothing is stored, nothing popped, #P not reported.
//   * unmasked #P: the result is delivered.
//   Any unmasked exception sets FSW.ES (and B); the next waiting x87 instruction raises #MF.
// Stack faults (§8.5.1.1): #IS sets IE and SF, C1 = 1 for overflow, 0 for underflow; masked, the
// QNaN indefinite is delivered (pushed, stored, or written to the destination register) and the
// instruction's pops happen; unmasked, nothing changes.
//
// Deliberate deviations:
//   * CR0.NE = 0 (MS-DOS style FERR#/IGNNE# reporting through the PIC) is not modelled: a pending
//     exception is always reported as #MF (vector 16) on the next waiting instruction.
//   * FOP is recomputed from the decoded instruction (ESC low bits and a reconstructed ModRM byte);
//     a redundant SIB byte (a non-canonical encoding) would make the hardware's R/M field differ.
//   * FCS and FDS are deprecated (CPUID.(EAX=07H,ECX=0):EBX[13] = 1, as on current Intel processors):
//     outside real and virtual-8086 mode they are recorded and saved as 0000H; in those modes the
//     selectors are kept internally, only to form the linear FIP/FDP of the real-mode images (the
//     host could not check those: nested KVM emulates real mode without x87). FDP is updated by
//     every non-control instruction with a memory operand (EBX[6], FDP only on exceptions, is not
//     advertised).
using Iced.Intel;
using SharpVisor.Cpu.State;
using SharpVisor.SoftFloat;
using RoundingControl = SharpVisor.SoftFloat.RoundingControl;

namespace SharpVisor.Cpu;

/// <summary>x87 instruction semantics (SDM Vol. 1 ch. 8, Vol. 2 instruction pages) on the SoftFloat library.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    private const ushort FswSf = 0x40, FswEs = 0x80;

    /// <summary>For each ESC instruction code: FOP with the ModRM mod and r/m fields still zero (memory
    /// forms) or the register index still to add (register forms), plus whether it reads/writes memory.</summary>
    private static readonly ushort[] s_x87Fop = BuildX87Fop();

    private static ushort[] BuildX87Fop()
    {
        var table = new ushort[Enum.GetValues<Code>().Length];
        foreach (var code in Enum.GetValues<Code>())
        {
            if (s_simdGroup[(int)code] != SimdGroup.X87 || code == Code.Wait) continue;
            var op = code.ToOpCode();
            uint opcode = op.OpCode;
            table[(int)code] = op.OpCodeLength == 2
                ? (ushort)(((opcode >> 8) & 7) << 8 | (opcode & 0xFF))
                : (ushort)((opcode & 7) << 8 | (uint)(op.GroupIndex << 3));
        }
        return table;
    }

    // ------------------------------------------------------------------ register stack

    private ref Float80 StReg(int i) => ref _fpr[(_ftop + i) & 7];

    private bool StEmpty(int i) => (_ftagValid & (1 << ((_ftop + i) & 7))) == 0;

    /// <summary>Writes ST(i) and tags it valid.</summary>
    private void SetSt(int i, Float80 v)
    {
        int p = (_ftop + i) & 7;
        _fpr[p] = v;
        _ftagValid |= (byte)(1 << p);
    }

    private void X87Push(Float80 v)
    {
        _ftop = (_ftop - 1) & 7;
        _fpr[_ftop] = v;
        _ftagValid |= (byte)(1 << _ftop);
    }

    private void X87Pop()
    {
        _ftagValid &= (byte)~(1 << _ftop);
        _ftop = (_ftop + 1) & 7;
    }

    private static int StIndex(Register r) => r - Register.ST0;

    // ------------------------------------------------------------------ exceptions

    /// <summary>Starts an operation: returns the sticky flags and clears them in the context, so the
    /// exceptions this operation raises can be told apart (they are merged by <see cref="X87Commit"/>).</summary>
    private FpuExceptions X87Begin()
    {
        var saved = _fpu.Flags;
        _fpu.Flags = FpuExceptions.None;
        return saved;
    }

    /// <summary>
    /// Merges the exceptions the operation raised into the sticky flags with the masked/unmasked rules in
    /// the header and returns whether the result is to be delivered.
    /// </summary>
    private bool X87Commit(FpuExceptions saved, bool memoryDestination = false, bool load = false)
    {
        var raised = _fpu.Flags;
        var unmasked = raised & ~_fpu.Masks & FpuExceptions.All;
        bool deliver = true;
        if ((unmasked & (FpuExceptions.Invalid | FpuExceptions.ZeroDivide)) != 0)
        {
            raised &= FpuExceptions.Invalid | FpuExceptions.ZeroDivide;
            deliver = false;
        }
        else if ((unmasked & FpuExceptions.Denormal) != 0)
        {
            raised = FpuExceptions.Denormal;
            deliver = load;
        }
        else if (memoryDestination && (unmasked & (FpuExceptions.Overflow | FpuExceptions.Underflow)) != 0)
        {
            raised &= FpuExceptions.Overflow | FpuExceptions.Underflow;
            deliver = false;
        }
        if (!deliver) _fpu.C1 = false;
        _fpu.Flags = saved | raised;
        if (unmasked != 0) _fswSfEs |= FswEs;
        return deliver;
    }

    /// <summary>Stack overflow or underflow (#IS): IE, SF, C1. True when #IA is masked (apply the masked response).</summary>
    private bool X87StackFault(bool overflow)
    {
        _fpu.Flags |= FpuExceptions.Invalid;
        _fswSfEs |= FswSf;
        _fpu.C1 = overflow;
        if ((_fpu.Masks & FpuExceptions.Invalid) != 0) return true;
        _fswSfEs |= FswEs;
        return false;
    }

    /// <summary>FLDCW/FLDENV/FRSTOR: ES (and B) follow the sticky flags the new control word leaves unmasked.</summary>
    private void X87RecomputeEs()
    {
        if ((_fpu.Flags & ~_fpu.Masks & FpuExceptions.All) != 0) _fswSfEs |= FswEs;
        else _fswSfEs &= unchecked((ushort)~FswEs);
    }

    /// <summary>The last non-control instruction (SDM Vol. 1 §8.1.8, §8.1.9): FOP, FCS:FIP, FDS:FDP.</summary>
    private void X87RecordInstruction(ref Instruction i)
    {
        int fop = s_x87Fop[(int)i.Code];
        bool memory = i.OpCount > 0 && i.Op0Kind == OpKind.Memory;
        if (memory) fop |= ModRmMemoryBits(ref i);
        else if (i.OpCount > 0 && i.Op0Kind == OpKind.Register && i.Op0Register != Register.ST0 && i.Op0Register.IsST())
            fop |= StIndex(i.Op0Register);
        else if (i.OpCount > 1 && i.Op1Kind == OpKind.Register && i.Op1Register.IsST())
            fop |= StIndex(i.Op1Register);
        _fop = (ushort)fop;
        bool real = X87RealModeLayout;
        _fcs = real ? _seg[Seg.CS].Selector : (ushort)0;
        _fip = i.IP;
        if (memory)
        {
            _fds = real ? _seg[MemSeg(ref i)].Selector : (ushort)0;
            _fdp = EffectiveAddress(ref i);
        }
    }

    /// <summary>The mod and r/m fields of the ModRM byte that encodes the memory operand (SDM Vol. 2 tables 2-1, 2-2).</summary>
    private int ModRmMemoryBits(ref Instruction i)
    {
        var b = i.MemoryBase;
        var x = i.MemoryIndex;
        int dsz = i.MemoryDisplSize;
        if (b is Register.RIP or Register.EIP) return 0b00_000_101;
        bool addr16 = b.IsGPR16() || x.IsGPR16() || (b == Register.None && x == Register.None && dsz == 2);
        if (addr16)
        {
            if (b == Register.None && x == Register.None) return 0b00_000_110;
            int rm16 = (b, x) switch
            {
                (Register.BX, Register.SI) => 0, (Register.BX, Register.DI) => 1, (Register.BP, Register.SI) => 2,
                (Register.BP, Register.DI) => 3, (Register.SI, Register.None) => 4, (Register.DI, Register.None) => 5,
                (Register.BP, Register.None) => 6, _ => 7,
            };
            return (dsz == 0 ? 0 : dsz == 1 ? 0x40 : 0x80) | rm16;
        }
        if (b == Register.None)
            return x == Register.None && !_mode64 ? 0b00_000_101 : 0b00_000_100; // disp32, or SIB with no base
        int num = (b.IsGPR64() ? b - Register.RAX : b - Register.EAX) & 7;
        int rm = x != Register.None || num == 4 ? 4 : num;
        return (dsz == 0 ? 0 : dsz == 1 ? 0x40 : 0x80) | rm;
    }

    // ------------------------------------------------------------------ dispatch

    /// <summary>Runs one x87 instruction; the CR0.EM/TS gate has already passed.</summary>
    private Status ExecuteX87(ref Instruction i)
    {
        var m = i.Mnemonic;
        // The no-wait control instructions do not look at pending exceptions (SDM Vol. 1 §8.6).
        switch (m)
        {
            case Mnemonic.Fninit: X87Init(); return Status.Ok;
            case Mnemonic.Fnclex: X87Clex(); return Status.Ok;
            case Mnemonic.Fnstcw: return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, _fcw);
            case Mnemonic.Fnstsw: return X87StoreStatus(ref i);
            case Mnemonic.Fnstenv: return X87Fstenv(ref i);
            case Mnemonic.Fnsave: return X87Fsave(ref i);
            // 8087/287 controls: the 387 and later execute them as FNOP (SDM Vol. 1 §8.3.13 / appendix).
            case Mnemonic.Fneni: case Mnemonic.Fndisi: case Mnemonic.Fnsetpm: return Status.Ok;
            // 287XL/387SL-only instructions do not exist on later processors.
            case Mnemonic.Frstpm: case Mnemonic.Fnstdw: case Mnemonic.Fnstsg: case Mnemonic.Fstdw: case Mnemonic.Fstsg:
                return UD();
        }
        // Every other ESC instruction, WAIT and the WAIT-prefixed forms take a pending unmasked exception
        // first. With CR0.NE = 0 hardware would signal FERR# instead; we always deliver #MF.
        if (X87ExceptionPending) return Fault(Vector.MF);
        switch (m)
        {
            case Mnemonic.Wait: return Status.Ok;
            case Mnemonic.Finit: X87Init(); return Status.Ok;
            case Mnemonic.Fclex: X87Clex(); return Status.Ok;
            case Mnemonic.Fstcw: return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, _fcw);
            case Mnemonic.Fstsw: return X87StoreStatus(ref i);
            case Mnemonic.Fstenv: return X87Fstenv(ref i);
            case Mnemonic.Fsave: return X87Fsave(ref i);
            case Mnemonic.Feni: case Mnemonic.Fdisi: case Mnemonic.Fsetpm: return Status.Ok;
            case Mnemonic.Fldcw:
            {
                var st = Read(MemSeg(ref i), EffectiveAddress(ref i), 2, out ulong cw);
                if (st != Status.Ok) return st;
                SetFcw((ushort)cw);
                X87RecomputeEs();
                return Status.Ok;
            }
            case Mnemonic.Fldenv: return X87Fldenv(ref i);
            case Mnemonic.Frstor: return X87Frstor(ref i);
        }

        X87RecordInstruction(ref i);
        switch (m)
        {
            case Mnemonic.Fld: return X87Load(ref i);
            case Mnemonic.Fild: return X87LoadInteger(ref i);
            case Mnemonic.Fbld: return X87LoadBcd(ref i);
            case Mnemonic.Fld1: return X87PushChecked(Float80.One);
            case Mnemonic.Fldz: return X87PushChecked(Float80.PositiveZero);
            // The constants are held with 66 bits and rounded by RC (SDM Vol. 2 FLD1/FLDL2T/…, Vol. 1 §8.3.8).
            // The values here are the round-to-nearest ones; roundedUp says whether that rounding went up.
            case Mnemonic.Fldpi: return X87LoadConstant(new Float80(0x4000, 0xC90F_DAA2_2168_C235), roundedUp: true);
            case Mnemonic.Fldl2e: return X87LoadConstant(new Float80(0x3FFF, 0xB8AA_3B29_5C17_F0BC), roundedUp: true);
            case Mnemonic.Fldl2t: return X87LoadConstant(new Float80(0x4000, 0xD49A_784B_CD1B_8AFE), roundedUp: false);
            case Mnemonic.Fldlg2: return X87LoadConstant(new Float80(0x3FFD, 0x9A20_9A84_FBCF_F799), roundedUp: true);
            case Mnemonic.Fldln2: return X87LoadConstant(new Float80(0x3FFE, 0xB172_17F7_D1CF_79AC), roundedUp: true);
            case Mnemonic.Fst: return X87Store(ref i, pop: false);
            case Mnemonic.Fstp: return X87Store(ref i, pop: true);
            case Mnemonic.Fstpnce:
                // D9 D8+i (the undocumented "FSTP1"): observed on hardware, an empty ST(0) is not a stack
                // fault — nothing is stored, the stack is just popped.
                if (StEmpty(0)) { X87Pop(); _fpu.C1 = false; return Status.Ok; }
                return X87Store(ref i, pop: true);
            case Mnemonic.Fist: return X87StoreInteger(ref i, pop: false, truncate: false);
            case Mnemonic.Fistp: return X87StoreInteger(ref i, pop: true, truncate: false);
            case Mnemonic.Fisttp: return X87StoreInteger(ref i, pop: true, truncate: true);
            case Mnemonic.Fbstp: return X87StoreBcd(ref i);
            case Mnemonic.Fxch: return X87Exchange(ref i);

            case Mnemonic.Fadd: case Mnemonic.Fiadd: return X87Arith(ref i, X87Op.Add, false);
            case Mnemonic.Faddp: return X87Arith(ref i, X87Op.Add, true);
            case Mnemonic.Fsub: case Mnemonic.Fisub: return X87Arith(ref i, X87Op.Sub, false);
            case Mnemonic.Fsubp: return X87Arith(ref i, X87Op.Sub, true);
            case Mnemonic.Fsubr: case Mnemonic.Fisubr: return X87Arith(ref i, X87Op.SubR, false);
            case Mnemonic.Fsubrp: return X87Arith(ref i, X87Op.SubR, true);
            case Mnemonic.Fmul: case Mnemonic.Fimul: return X87Arith(ref i, X87Op.Mul, false);
            case Mnemonic.Fmulp: return X87Arith(ref i, X87Op.Mul, true);
            case Mnemonic.Fdiv: case Mnemonic.Fidiv: return X87Arith(ref i, X87Op.Div, false);
            case Mnemonic.Fdivp: return X87Arith(ref i, X87Op.Div, true);
            case Mnemonic.Fdivr: case Mnemonic.Fidivr: return X87Arith(ref i, X87Op.DivR, false);
            case Mnemonic.Fdivrp: return X87Arith(ref i, X87Op.DivR, true);

            case Mnemonic.Fcom: case Mnemonic.Ficom: return X87Compare(ref i, quiet: false, pops: 0);
            case Mnemonic.Fcomp: case Mnemonic.Ficomp: return X87Compare(ref i, quiet: false, pops: 1);
            case Mnemonic.Fcompp: return X87Compare(ref i, quiet: false, pops: 2);
            case Mnemonic.Fucom: return X87Compare(ref i, quiet: true, pops: 0);
            case Mnemonic.Fucomp: return X87Compare(ref i, quiet: true, pops: 1);
            case Mnemonic.Fucompp: return X87Compare(ref i, quiet: true, pops: 2);
            case Mnemonic.Fcomi: return X87CompareFlags(ref i, quiet: false, pop: false);
            case Mnemonic.Fcomip: return X87CompareFlags(ref i, quiet: false, pop: true);
            case Mnemonic.Fucomi: return X87CompareFlags(ref i, quiet: true, pop: false);
            case Mnemonic.Fucomip: return X87CompareFlags(ref i, quiet: true, pop: true);
            case Mnemonic.Ftst: return X87Test();
            case Mnemonic.Fxam: return X87Examine();

            case Mnemonic.Fcmovb: return X87Cmov(ref i, GetCf());
            case Mnemonic.Fcmove: return X87Cmov(ref i, GetZf());
            case Mnemonic.Fcmovbe: return X87Cmov(ref i, GetCf() || GetZf());
            case Mnemonic.Fcmovu: return X87Cmov(ref i, GetPf());
            case Mnemonic.Fcmovnb: return X87Cmov(ref i, !GetCf());
            case Mnemonic.Fcmovne: return X87Cmov(ref i, !GetZf());
            case Mnemonic.Fcmovnbe: return X87Cmov(ref i, !(GetCf() || GetZf()));
            case Mnemonic.Fcmovnu: return X87Cmov(ref i, !GetPf());

            case Mnemonic.Fchs: return X87SignOp(negate: true);
            case Mnemonic.Fabs: return X87SignOp(negate: false);
            case Mnemonic.Fsqrt: return X87Unary(X87Op.Sqrt);
            case Mnemonic.Frndint: return X87Unary(X87Op.Rndint);
            case Mnemonic.F2xm1: return X87Unary(X87Op.F2xm1);
            case Mnemonic.Fsin: return X87Unary(X87Op.Sin);
            case Mnemonic.Fcos: return X87Unary(X87Op.Cos);
            case Mnemonic.Fscale: return X87Binary01(X87Op.Scale);
            case Mnemonic.Fprem: return X87Binary01(X87Op.Prem);
            case Mnemonic.Fprem1: return X87Binary01(X87Op.Prem1);
            case Mnemonic.Fyl2x: return X87Binary10(X87Op.Yl2x);
            case Mnemonic.Fyl2xp1: return X87Binary10(X87Op.Yl2xp1);
            case Mnemonic.Fpatan: return X87Binary10(X87Op.Atan);
            case Mnemonic.Fptan: case Mnemonic.Fsincos: case Mnemonic.Fxtract: return X87Expand(m);

            case Mnemonic.Fincstp: _ftop = (_ftop + 1) & 7; _fpu.C1 = false; return Status.Ok;
            case Mnemonic.Fdecstp: _ftop = (_ftop - 1) & 7; _fpu.C1 = false; return Status.Ok;
            // FFREE(P): C0–C3 are undefined by the SDM; hardware clears C1 and keeps the others.
            case Mnemonic.Ffree:
                _ftagValid &= (byte)~(1 << ((_ftop + StIndex(i.Op0Register)) & 7));
                _fpu.C1 = false;
                return Status.Ok;
            case Mnemonic.Ffreep:
                _ftagValid &= (byte)~(1 << ((_ftop + StIndex(i.Op0Register)) & 7));
                X87Pop();
                _fpu.C1 = false;
                return Status.Ok;
            case Mnemonic.Fnop: return Status.Ok;
        }
        return Unsupported($"instruction {FormatInstruction(ref i)}");
    }

    private enum X87Op : byte { Add, Sub, SubR, Mul, Div, DivR, Sqrt, Rndint, F2xm1, Sin, Cos, Scale, Prem, Prem1, Yl2x, Yl2xp1, Atan }

    /// <summary>FNCLEX: clears the exception flags, SF, ES and B; C0–C3 are left as they are.</summary>
    private void X87Clex()
    {
        _fpu.Flags = FpuExceptions.None;
        _fswSfEs = 0;
    }

    private Status X87StoreStatus(ref Instruction i)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            SetReg(Register.AX, Fsw);
            return Status.Ok;
        }
        return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, Fsw);
    }

    // ------------------------------------------------------------------ loads

    /// <summary>
    /// Pushes a constant rounded by RC. None is exact, so a directed mode gives the nearest value when it
    /// rounds the same way, else the neighbour one ulp away (the constants are positive: toward zero is down).
    /// No #P is raised for them (SDM: only #IS).
    /// </summary>
    private Status X87LoadConstant(Float80 nearest, bool roundedUp)
    {
        var rc = _fpu.Rounding;
        ulong sig = nearest.Significand;
        if (roundedUp && rc is RoundingControl.Down or RoundingControl.TowardZero) sig--;
        else if (!roundedUp && rc == RoundingControl.Up) sig++;
        return X87PushChecked(new Float80(nearest.SignExponent, sig));
    }

    /// <summary>Pushes a value; stack overflow when ST(7) is in use.</summary>
    private Status X87PushChecked(Float80 v)
    {
        _fpu.C1 = false;
        if (!StEmpty(-1))
        {
            if (X87StackFault(overflow: true)) X87Push(Float80.Indefinite);
            return Status.Ok;
        }
        X87Push(v);
        return Status.Ok;
    }

    private Status X87Load(ref Instruction i)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            _fpu.C1 = false;
            int s = StIndex(i.Op0Register);
            // Observed on hardware: an empty source is reported (underflow, C1 = 0) before a full stack.
            if (StEmpty(s))
            {
                if (X87StackFault(overflow: false)) X87Push(Float80.Indefinite);
                return Status.Ok;
            }
            if (!StEmpty(-1))
            {
                if (X87StackFault(overflow: true)) X87Push(Float80.Indefinite);
                return Status.Ok;
            }
            X87Push(StReg(s));
            return Status.Ok;
        }
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        Float80 value;
        if (i.MemorySize == MemorySize.Float80)
        {
            Span<byte> b = stackalloc byte[10];
            var st = ReadBytes(seg, ea, b);
            if (st != Status.Ok) return st;
            value = Float80.FromBytes(b); // 80-bit loads convert nothing and raise nothing (not even for an SNaN)
            return X87PushChecked(value);
        }
        var rs = Read(seg, ea, i.MemorySize == MemorySize.Float32 ? 4 : 8, out ulong raw);
        if (rs != Status.Ok) return rs;
        _fpu.C1 = false;
        if (!StEmpty(-1))
        {
            if (X87StackFault(overflow: true)) X87Push(Float80.Indefinite);
            return Status.Ok;
        }
        var saved = X87Begin();
        value = i.MemorySize == MemorySize.Float32 ? X87Math.FromFloat32(_fpu, (uint)raw) : X87Math.FromFloat64(_fpu, raw);
        if (X87Commit(saved, load: true)) X87Push(value);
        return Status.Ok;
    }

    private Status X87LoadInteger(ref Instruction i)
    {
        int size = i.MemorySize.GetSize();
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), size, out ulong raw);
        if (st != Status.Ok) return st;
        long v = size switch { 2 => (short)raw, 4 => (int)raw, _ => (long)raw };
        return X87PushChecked(X87Math.FromInt64(v));
    }

    private Status X87LoadBcd(ref Instruction i)
    {
        Span<byte> b = stackalloc byte[10];
        var st = ReadBytes(MemSeg(ref i), EffectiveAddress(ref i), b);
        if (st != Status.Ok) return st;
        return X87PushChecked(X87Math.FromPackedBcd(b));
    }

    // ------------------------------------------------------------------ stores

    private Status X87Store(ref Instruction i, bool pop)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            // FST/FSTP ST(i): a plain copy; only an empty ST(0) is an exception.
            int d = StIndex(i.Op0Register);
            _fpu.C1 = false;
            if (StEmpty(0))
            {
                if (!X87StackFault(overflow: false)) return Status.Ok;
                SetSt(d, Float80.Indefinite);
            }
            else SetSt(d, StReg(0));
            if (pop) X87Pop();
            return Status.Ok;
        }
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        var ms = i.MemorySize;
        if (ms == MemorySize.Float80)
        {
            Span<byte> b = stackalloc byte[10];
            bool empty = StEmpty(0);
            if (empty && (_fpu.Masks & FpuExceptions.Invalid) == 0)
            {
                X87StackFault(overflow: false);
                return Status.Ok;
            }
            (empty ? Float80.Indefinite : StReg(0)).WriteBytes(b);
            var ws = WriteBytes(seg, ea, b);
            if (ws != Status.Ok) return ws;
            _fpu.C1 = false;
            if (empty) X87StackFault(overflow: false);
            if (pop) X87Pop();
            return Status.Ok;
        }
        int size = ms == MemorySize.Float32 ? 4 : 8;
        if (StEmpty(0))
        {
            if ((_fpu.Masks & FpuExceptions.Invalid) != 0)
            {
                var w = Write(seg, ea, size, size == 4 ? 0xFFC0_0000UL : 0xFFF8_0000_0000_0000UL);
                if (w != Status.Ok) return w;
            }
            if (X87StackFault(overflow: false) && pop) X87Pop();
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        var v = StReg(0);
        ulong bits = size == 4 ? X87Math.ToFloat32(_fpu, v) : X87Math.ToFloat64(_fpu, v);
        // With #U unmasked, a tiny result is an underflow even when exact (SDM Vol. 1 §4.9.1.5); the
        // conversion only reports the masked case (tiny and inexact).
        if ((_fpu.Masks & FpuExceptions.Underflow) == 0 && (_fpu.Flags & (FpuExceptions.Underflow | FpuExceptions.Precision)) == 0
            && !v.IsZero && !v.IsUnsupported && v.Exponent != Float80.MaxExponent && v.Significand != 0)
        {
            int e = (v.Exponent == 0 ? 1 : v.Exponent) - System.Numerics.BitOperations.LeadingZeroCount(v.Significand) - Float80.ExponentBias;
            if (e < (size == 4 ? -126 : -1022)) _fpu.Flags |= FpuExceptions.Underflow;
        }
        return X87FinishStore(seg, ea, size, bits, saved, cc, pop);
    }

    /// <summary>Writes a store's result (unless an unmasked exception forbids it), then commits flags and pops.
    /// A faulting write leaves the FPU as it was.</summary>
    private Status X87FinishStore(int seg, ulong ea, int size, ulong bits, FpuExceptions saved, ushort cc, bool pop)
    {
        ushort sfEs = _fswSfEs;
        if (X87Commit(saved, memoryDestination: true))
        {
            var w = Write(seg, ea, size, bits);
            if (w != Status.Ok)
            {
                X87RestoreStatus(cc, sfEs);
                return w;
            }
            if (pop) X87Pop();
        }
        return Status.Ok;
    }

    /// <summary>Puts back the flags and condition codes saved with <c>_fpu.StatusBits</c>, and SF/ES, before a faulting write.</summary>
    private void X87RestoreStatus(ushort cc, ushort sfEs)
    {
        _fswSfEs = sfEs;
        _fpu.Flags = (FpuExceptions)(cc & 0x3F);
        _fpu.C0 = (cc & 0x100) != 0;
        _fpu.C1 = (cc & 0x200) != 0;
        _fpu.C2 = (cc & 0x400) != 0;
        _fpu.C3 = (cc & 0x4000) != 0;
    }

    private Status X87StoreInteger(ref Instruction i, bool pop, bool truncate)
    {
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        int size = i.MemorySize.GetSize();
        ulong indefinite = size switch { 2 => 0x8000UL, 4 => 0x8000_0000UL, _ => 0x8000_0000_0000_0000UL };
        if (StEmpty(0))
        {
            if ((_fpu.Masks & FpuExceptions.Invalid) != 0)
            {
                var w = Write(seg, ea, size, indefinite);
                if (w != Status.Ok) return w;
            }
            if (X87StackFault(overflow: false) && pop) X87Pop();
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        var v = StReg(0);
        ulong bits = (size, truncate) switch
        {
            (2, false) => (ushort)X87Math.ToInt16(_fpu, v),
            (4, false) => (uint)X87Math.ToInt32(_fpu, v),
            (_, false) => (ulong)X87Math.ToInt64(_fpu, v),
            (2, true) => (ushort)X87Math.ToInt16Truncate(_fpu, v),
            (4, true) => (uint)X87Math.ToInt32Truncate(_fpu, v),
            _ => (ulong)X87Math.ToInt64Truncate(_fpu, v),
        };
        return X87FinishStore(seg, ea, size, bits, saved, cc, pop);
    }

    private Status X87StoreBcd(ref Instruction i)
    {
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        Span<byte> b = stackalloc byte[10];
        if (StEmpty(0))
        {
            if ((_fpu.Masks & FpuExceptions.Invalid) != 0)
            {
                b[..7].Clear();
                b[7] = 0xC0; b[8] = 0xFF; b[9] = 0xFF; // the packed BCD indefinite (SDM Vol. 1 table 4-4)
                var w = WriteBytes(seg, ea, b);
                if (w != Status.Ok) return w;
            }
            if (X87StackFault(overflow: false)) X87Pop();
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits, sfEs = _fswSfEs;
        var saved = X87Begin();
        X87Math.ToPackedBcd(_fpu, StReg(0), b);
        if (X87Commit(saved, memoryDestination: true))
        {
            var w = WriteBytes(seg, ea, b);
            if (w != Status.Ok)
            {
                X87RestoreStatus(cc, sfEs);
                return w;
            }
            X87Pop();
        }
        return Status.Ok;
    }

    // ------------------------------------------------------------------ moves

    private Status X87Exchange(ref Instruction i)
    {
        int s = StIndex(i.Op1Register);
        _fpu.C1 = false;
        Float80 a = StReg(0), b = StReg(s);
        if (StEmpty(0) || StEmpty(s))
        {
            bool e0 = StEmpty(0), es = StEmpty(s);
            if (!X87StackFault(overflow: false)) return Status.Ok;
            if (e0) a = Float80.Indefinite;
            if (es) b = Float80.Indefinite;
        }
        SetSt(0, b);
        SetSt(s, a);
        return Status.Ok;
    }

    private Status X87Cmov(ref Instruction i, bool condition)
    {
        // Observed on hardware: C1 (undefined by the SDM) is left alone unless there is a stack fault.
        int s = StIndex(i.Op1Register);
        if (StEmpty(0) || StEmpty(s))
        {
            if (X87StackFault(overflow: false)) SetSt(0, Float80.Indefinite);
            return Status.Ok;
        }
        if (condition) SetSt(0, StReg(s));
        return Status.Ok;
    }

    private Status X87SignOp(bool negate)
    {
        _fpu.C1 = false;
        if (StEmpty(0))
        {
            if (X87StackFault(overflow: false)) SetSt(0, Float80.Indefinite);
            return Status.Ok;
        }
        var v = StReg(0);
        SetSt(0, negate ? v.Negate() : v.Abs());
        return Status.Ok;
    }

    // ------------------------------------------------------------------ arithmetic

    private Status ReadX87Operand(ref Instruction i, out X87Operand op)
    {
        var ms = i.MemorySize;
        int size = ms.GetSize();
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), size, out ulong v);
        op = ms switch
        {
            MemorySize.Float32 => X87Operand.FromFloat32((uint)v),
            MemorySize.Float64 => X87Operand.FromFloat64(v),
            MemorySize.Int16 => X87Operand.FromInt((short)v),
            _ => X87Operand.FromInt((int)v),
        };
        return st;
    }

    private Float80 Apply(X87Op op, Float80 a, Float80 b) => op switch
    {
        X87Op.Add => X87Math.Add(_fpu, a, b),
        X87Op.Sub => X87Math.Sub(_fpu, a, b),
        X87Op.SubR => X87Math.Sub(_fpu, b, a),
        X87Op.Mul => X87Math.Mul(_fpu, a, b),
        X87Op.Div => X87Math.Div(_fpu, a, b),
        _ => X87Math.Div(_fpu, b, a),
    };

    private Float80 Apply(X87Op op, Float80 a, X87Operand b) => op switch
    {
        X87Op.Add => X87Math.Add(_fpu, a, b),
        X87Op.Sub => X87Math.Sub(_fpu, a, b),
        X87Op.SubR => X87Math.Sub(_fpu, b, a),
        X87Op.Mul => X87Math.Mul(_fpu, a, b),
        X87Op.Div => X87Math.Div(_fpu, a, b),
        _ => X87Math.Div(_fpu, b, a),
    };

    /// <summary>FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR and their P and I forms: dest = dest op src (R: src op dest).</summary>
    private Status X87Arith(ref Instruction i, X87Op op, bool pop)
    {
        if (i.Op0Kind == OpKind.Memory)
        {
            var st = ReadX87Operand(ref i, out X87Operand src);
            if (st != Status.Ok) return st;
            _fpu.C1 = false;
            if (StEmpty(0))
            {
                if (X87StackFault(overflow: false)) SetSt(0, Float80.Indefinite);
                return Status.Ok;
            }
            var saved = X87Begin();
            var r = Apply(op, StReg(0), src);
            if (X87Commit(saved)) SetSt(0, r);
            return Status.Ok;
        }
        int d = StIndex(i.Op0Register), s = StIndex(i.Op1Register);
        _fpu.C1 = false;
        if (StEmpty(d) || StEmpty(s))
        {
            if (!X87StackFault(overflow: false)) return Status.Ok;
            SetSt(d, Float80.Indefinite);
            if (pop) X87Pop();
            return Status.Ok;
        }
        var sv = X87Begin();
        var res = Apply(op, StReg(d), StReg(s));
        if (X87Commit(sv))
        {
            SetSt(d, res);
            if (pop) X87Pop();
        }
        return Status.Ok;
    }

    /// <summary>One-operand ST(0) ← f(ST(0)): FSQRT, FRNDINT, F2XM1, FSIN, FCOS.</summary>
    private Status X87Unary(X87Op op)
    {
        _fpu.C1 = false;
        if (op is X87Op.Sin or X87Op.Cos) _fpu.C2 = false;
        if (StEmpty(0))
        {
            if (X87StackFault(overflow: false)) SetSt(0, Float80.Indefinite);
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        var a = StReg(0);
        var r = op switch
        {
            X87Op.Sqrt => X87Math.Sqrt(_fpu, a),
            X87Op.Rndint => X87Math.RoundToInteger(_fpu, a),
            X87Op.F2xm1 => X87Math.F2xm1(_fpu, a),
            X87Op.Sin => X87Math.Sin(_fpu, a),
            _ => X87Math.Cos(_fpu, a),
        };
        if (X87Commit(saved)) SetSt(0, r);
        else KeepConditionCodes(cc);
        return Status.Ok;
    }

    /// <summary>After an unmasked exception the condition codes other than C1 keep their old values.</summary>
    private void KeepConditionCodes(ushort cc)
    {
        _fpu.C0 = (cc & 0x100) != 0;
        _fpu.C2 = (cc & 0x400) != 0;
        _fpu.C3 = (cc & 0x4000) != 0;
    }

    /// <summary>ST(0) ← f(ST(0), ST(1)): FSCALE, FPREM, FPREM1.</summary>
    private Status X87Binary01(X87Op op)
    {
        _fpu.C1 = false;
        if (op != X87Op.Scale) _fpu.C2 = false;
        if (StEmpty(0) || StEmpty(1))
        {
            if (X87StackFault(overflow: false)) SetSt(0, Float80.Indefinite);
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        Float80 a = StReg(0), b = StReg(1);
        var r = op switch
        {
            X87Op.Scale => X87Math.Scale(_fpu, a, b),
            X87Op.Prem => X87Math.PartialRemainder(_fpu, a, b),
            _ => X87Math.IeeeRemainder(_fpu, a, b),
        };
        if (op == X87Op.Scale) r = ScaleStillOutOfRange(a, b, r);
        else if (r.IsNaN)
        {
            // Observed on hardware: a NaN remainder (NaN or invalid operands) leaves C0 and C3 as they
            // were; C1 and C2 are cleared.
            KeepConditionCodes(cc);
            _fpu.C1 = false;
        }
        if (X87Commit(saved)) SetSt(0, r);
        else KeepConditionCodes(cc);
        return Status.Ok;
    }

    /// <summary>
    /// FSCALE with #U or #O unmasked, when even the bias-adjusted exponent (±24576) is out of range
    /// (only FSCALE can get there): observed on hardware, the result is ±0 (underflow, C1 = 0) or ±∞
    /// (overflow, C1 = 1) whatever RC says, and #P is reported with the #U/#O.
    /// </summary>
    private Float80 ScaleStillOutOfRange(Float80 a, Float80 b, Float80 r)
    {
        var raised = _fpu.Flags & ~_fpu.Masks;
        if ((raised & (FpuExceptions.Underflow | FpuExceptions.Overflow)) == 0 || a.IsZero || a.IsInfinity || a.IsNaN || a.IsUnsupported
            || b.IsNaN || b.IsInfinity || b.IsUnsupported)
            return r;
        // Biased exponent of the exact result: a normalized, times 2^trunc(b) (clamped as X87Math does).
        int ea = (a.Exponent == 0 ? 1 : a.Exponent) - System.Numerics.BitOperations.LeadingZeroCount(a.Significand);
        int eb = (b.Exponent == 0 ? 1 : b.Exponent) - Float80.ExponentBias;
        long n = b.IsZero || eb < 0 ? 0 : eb >= 17 ? 0x20000 : (long)(b.Significand >> (63 - eb));
        long e = ea + (b.Sign ? -n : n);
        const int BiasAdjust = 0x6000;
        if ((raised & FpuExceptions.Underflow) != 0 && e + BiasAdjust < 1)
        {
            _fpu.Flags |= FpuExceptions.Precision;
            _fpu.C1 = false;
            return Float80.Zero(a.Sign);
        }
        if ((raised & FpuExceptions.Overflow) != 0 && e - BiasAdjust > Float80.MaxExponent - 1)
        {
            _fpu.Flags |= FpuExceptions.Precision;
            _fpu.C1 = true;
            return Float80.Infinity(a.Sign);
        }
        return r;
    }

    /// <summary>ST(1) ← f(ST(0), ST(1)), then pop: FYL2X, FYL2XP1, FPATAN.</summary>
    private Status X87Binary10(X87Op op)
    {
        _fpu.C1 = false;
        if (StEmpty(0) || StEmpty(1))
        {
            if (!X87StackFault(overflow: false)) return Status.Ok;
            SetSt(1, Float80.Indefinite);
            X87Pop();
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        Float80 x = StReg(0), y = StReg(1);
        var r = op switch
        {
            X87Op.Yl2x => X87Math.Fyl2x(_fpu, x, y),
            X87Op.Yl2xp1 => X87Math.Fyl2xp1(_fpu, x, y),
            _ => X87Math.Atan(_fpu, x, y),
        };
        if (X87Commit(saved))
        {
            SetSt(1, r);
            X87Pop();
        }
        else KeepConditionCodes(cc);
        return Status.Ok;
    }

    /// <summary>FPTAN, FSINCOS, FXTRACT: replace ST(0) and push a second result.</summary>
    private Status X87Expand(Mnemonic m)
    {
        _fpu.C1 = false;
        if (m != Mnemonic.Fxtract) _fpu.C2 = false;
        bool underflow = StEmpty(0);
        if (underflow || !StEmpty(-1))
        {
            // Masked response to either stack fault: ST(0) and the pushed register hold the indefinite.
            if (!X87StackFault(overflow: !underflow)) return Status.Ok;
            SetSt(0, Float80.Indefinite);
            X87Push(Float80.Indefinite);
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        var a = StReg(0);
        Float80 first, pushed;
        switch (m)
        {
            case Mnemonic.Fptan:
                first = X87Math.Tan(_fpu, a, out pushed);
                break;
            case Mnemonic.Fsincos:
                first = X87Math.SinCos(_fpu, a, out pushed);
                break;
            default:
                pushed = X87Math.Extract(_fpu, a, out first);
                break;
        }
        bool outOfRange = m != Mnemonic.Fxtract && _fpu.C2;
        if (!X87Commit(saved))
        {
            KeepConditionCodes(cc);
            return Status.Ok;
        }
        if (outOfRange) return Status.Ok; // |x| ≥ 2^63: C2 = 1, the stack is unchanged
        SetSt(0, first);
        X87Push(pushed);
        return Status.Ok;
    }

    // ------------------------------------------------------------------ compares

    private Status X87Compare(ref Instruction i, bool quiet, int pops)
    {
        X87Operand mem = default;
        bool memory = i.OpCount == 1 && i.Op0Kind == OpKind.Memory;
        if (memory)
        {
            var st = ReadX87Operand(ref i, out mem);
            if (st != Status.Ok) return st;
        }
        int s = memory ? 0 : i.OpCount >= 2 ? StIndex(i.Op1Register) : 1;
        _fpu.C1 = false;
        // Observed on hardware: the condition codes are set even when the exception is unmasked
        // (unordered for #IS/#IA); only the pops wait for a masked (or no) exception.
        if (StEmpty(0) || (!memory && StEmpty(s)))
        {
            bool masked = X87StackFault(overflow: false);
            _fpu.C0 = _fpu.C2 = _fpu.C3 = true;
            if (masked) for (int k = 0; k < pops; k++) X87Pop();
            return Status.Ok;
        }
        var saved = X87Begin();
        if (memory) X87Math.Compare(_fpu, StReg(0), mem, quiet);
        else X87Math.Compare(_fpu, StReg(0), StReg(s), quiet);
        if (X87Commit(saved))
            for (int k = 0; k < pops; k++) X87Pop();
        return Status.Ok;
    }

    /// <summary>FCOMI/FUCOMI(P): the result goes to ZF, PF, CF; OF, SF and AF are cleared; C0, C2, C3 are not changed.</summary>
    private Status X87CompareFlags(ref Instruction i, bool quiet, bool pop)
    {
        // Observed on hardware: C1 is left alone (the SDM says cleared) unless there is a stack fault,
        // and RFLAGS is set even when the exception is unmasked, as FCOM sets C0–C3.
        int s = StIndex(i.Op1Register);
        if (StEmpty(0) || StEmpty(s))
        {
            bool masked = X87StackFault(overflow: false);
            SetX87CompareFlags(FpuCompareResult.Unordered);
            if (masked && pop) X87Pop();
            return Status.Ok;
        }
        ushort cc = _fpu.StatusBits;
        var saved = X87Begin();
        var r = X87Math.Compare(_fpu, StReg(0), StReg(s), quiet);
        bool deliver = X87Commit(saved);
        KeepConditionCodes(cc);
        _fpu.C1 = (cc & 0x200) != 0;
        SetX87CompareFlags(r);
        if (deliver && pop) X87Pop();
        return Status.Ok;
    }

    private void SetX87CompareFlags(FpuCompareResult r)
    {
        MaterializeFlags();
        ulong f = _flags & ~Rflags.Arith;
        if (r == FpuCompareResult.Unordered) f |= Rflags.ZF | Rflags.PF | Rflags.CF;
        else if (r == FpuCompareResult.Less) f |= Rflags.CF;
        else if (r == FpuCompareResult.Equal) f |= Rflags.ZF;
        _flags = f;
    }

    private Status X87Test()
    {
        _fpu.C1 = false;
        if (StEmpty(0))
        {
            X87StackFault(overflow: false);
            _fpu.C0 = _fpu.C2 = _fpu.C3 = true;
            return Status.Ok;
        }
        var saved = X87Begin();
        X87Math.Test(_fpu, StReg(0));
        X87Commit(saved);
        return Status.Ok;
    }

    /// <summary>FXAM: the class of ST(0) in C3, C2, C0 and its sign in C1; "empty" is 101 (SDM FXAM table).</summary>
    private Status X87Examine()
    {
        if (StEmpty(0))
        {
            _fpu.C3 = true;
            _fpu.C2 = false;
            _fpu.C0 = true;
            _fpu.C1 = StReg(0).Sign;
            return Status.Ok;
        }
        X87Math.Examine(_fpu, StReg(0));
        return Status.Ok;
    }
}
