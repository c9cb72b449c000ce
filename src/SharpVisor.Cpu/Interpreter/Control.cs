using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Control transfer: near/far JMP, CALL, RET, IRET, LOOP, INT n, and the stack instructions.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Near branch: the target must lie within CS (16/32-bit) or be canonical (64-bit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status Branch(ulong target)
    {
        if (_mode64)
        {
            if (!IsCanonical(target)) return GP(0);
        }
        else if (target > _seg[Seg.CS].Limit) return GP(0);
        _rip = target;
        return Status.Ok;
    }

    private ulong IpMaskForOpSize(int size) => size == 2 ? 0xFFFF : size == 4 ? 0xFFFF_FFFF : ulong.MaxValue;

    private Status Jmp(ref Instruction i)
    {
        switch (i.Op0Kind)
        {
            case OpKind.NearBranch16: case OpKind.NearBranch32: case OpKind.NearBranch64:
                return Branch(i.NearBranchTarget);
            case OpKind.FarBranch16: case OpKind.FarBranch32:
                return FarTransfer(i.FarBranchSelector, i.FarBranch32, i.Op0Kind == OpKind.FarBranch16 ? 2 : 4, call: false);
        }
        if (i.MemorySize is MemorySize.SegPtr16 or MemorySize.SegPtr32 or MemorySize.SegPtr64)
        {
            var st = ReadFarPointer(ref i, out ushort sel, out ulong off, out int osz);
            return st != Status.Ok ? st : FarTransfer(sel, off, osz, call: false);
        }
        int size = OpSize(ref i);
        var s = ReadOp(ref i, 0, size, out ulong t);
        return s != Status.Ok ? s : Branch(t);
    }

    private Status Call(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        switch (i.Op0Kind)
        {
            case OpKind.NearBranch16: case OpKind.NearBranch32: case OpKind.NearBranch64:
            {
                ulong target = i.NearBranchTarget;
                if (_mode64 ? !IsCanonical(target) : target > _seg[Seg.CS].Limit) return GP(0);
                var st = Push(size, _rip);
                if (st != Status.Ok) return st;
                _rip = target;
                return Status.Ok;
            }
            case OpKind.FarBranch16: case OpKind.FarBranch32:
                return FarTransfer(i.FarBranchSelector, i.FarBranch32, i.Op0Kind == OpKind.FarBranch16 ? 2 : 4, call: true);
        }
        if (i.MemorySize is MemorySize.SegPtr16 or MemorySize.SegPtr32 or MemorySize.SegPtr64)
        {
            var st = ReadFarPointer(ref i, out ushort sel, out ulong off, out int osz);
            return st != Status.Ok ? st : FarTransfer(sel, off, osz, call: true);
        }
        {
            int osz = OpSize(ref i);
            var st = ReadOp(ref i, 0, osz, out ulong target);
            if (st != Status.Ok) return st;
            if (_mode64 ? !IsCanonical(target) : target > _seg[Seg.CS].Limit) return GP(0);
            st = Push(size, _rip);
            if (st != Status.Ok) return st;
            _rip = target;
            return Status.Ok;
        }
    }

    private Status ReadFarPointer(ref Instruction i, out ushort sel, out ulong off, out int osz)
    {
        osz = i.MemorySize switch { MemorySize.SegPtr16 => 2, MemorySize.SegPtr32 => 4, _ => 8 };
        sel = 0;
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        var st = Read(seg, ea, osz, out off);
        if (st != Status.Ok) return st;
        st = Read(seg, ea + (ulong)osz, 2, out ulong s);
        sel = (ushort)s;
        return st;
    }

    private Status RetNear(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out ulong target);
        if (st != Status.Ok) return st;
        if (_mode64 ? !IsCanonical(target) : target > _seg[Seg.CS].Limit) return GP(0);
        if (i.OpCount == 1) sp += i.Immediate16;
        SetSp(sp);
        _rip = target;
        return Status.Ok;
    }

    // LOOPcc/JrCXZ: Iced's Code names the counter (…_CX, …_ECX, …_RCX); resolved once per Code.
    private static readonly byte[] s_counterSize = BuildCounterSizes();

    private static byte[] BuildCounterSizes()
    {
        var t = new byte[Enum.GetValues<Code>().Max(c => (int)c) + 1];
        foreach (var c in Enum.GetValues<Code>())
        {
            string n = c.ToString();
            t[(int)c] = n.EndsWith("_RCX") ? (byte)8 : n.EndsWith("_ECX") ? (byte)4 : n.EndsWith("_CX") ? (byte)2 : (byte)0;
        }
        return t;
    }

    private Status Loop(ref Instruction i, Mnemonic m)
    {
        int asz = s_counterSize[(int)i.Code];
        if (asz == 0) asz = _mode64 ? 8 : _codeBits / 8;
        ulong mask = asz == 2 ? 0xFFFF : asz == 4 ? 0xFFFF_FFFF : ulong.MaxValue;
        ulong c = (_gpr[1] - 1) & mask;
        _gpr[1] = asz == 2 ? (_gpr[1] & ~0xFFFFUL) | c : c;
        bool go = c != 0 && (m == Mnemonic.Loop || (m == Mnemonic.Loope ? GetZf() : !GetZf()));
        return go ? Branch(i.NearBranchTarget) : Status.Ok;
    }

    private Status PushOp(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        ulong v;
        if (i.Op0Kind == OpKind.Register && i.Op0Register.IsSegmentRegister())
        {
            v = _seg[SegIndex(i.Op0Register)].Selector;
            // A 32-bit push of a segment register writes only 16 bits on recent processors.
            ulong sp = _gpr[Gpr.Rsp];
            int asz = StackAddrSize;
            ulong nsp = sp - (ulong)size;
            if (asz == 2) nsp &= 0xFFFF; else if (asz == 4) nsp &= 0xFFFF_FFFF;
            var st0 = Linear(Seg.SS, nsp, size, Access.Write, out ulong lin);
            if (st0 != Status.Ok) return st0;
            st0 = ProbeWrite(lin, size);
            if (st0 != Status.Ok) return st0;
            st0 = WriteLinear(lin, 2, v);
            if (st0 != Status.Ok) return st0;
            SetSp(nsp);
            return Status.Ok;
        }
        var st = ReadOp(ref i, 0, size, out v);
        if (st != Status.Ok) return st;
        if (i.Op0Kind != OpKind.Register && i.Op0Kind != OpKind.Memory) v = i.GetImmediate(0); // sign-extended imm
        return Push(size, v & SizeMask(size));
    }

    private Status PopOp(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out ulong v);
        if (st != Status.Ok) return st;
        if (i.Op0Kind == OpKind.Register && i.Op0Register.IsSegmentRegister())
        {
            int seg = SegIndex(i.Op0Register);
            st = LoadSegment(seg, (ushort)v);
            if (st != Status.Ok) return st;
            SetSp(sp);
            if (seg == Seg.SS) _endBlock = true;
            return Status.Ok;
        }
        if (i.Op0Kind == OpKind.Register)
        {
            SetSp(sp);
            SetReg(i.Op0Register, v);
            return Status.Ok;
        }
        // POP to memory: the address is computed with the incremented stack pointer.
        ulong oldSp = _gpr[Gpr.Rsp];
        SetSp(sp);
        st = Write(MemSeg(ref i), EffectiveAddress(ref i), size, v);
        if (st != Status.Ok) _gpr[Gpr.Rsp] = oldSp;
        return st;
    }

    private Status Pusha(ref Instruction i)
    {
        int size = i.Mnemonic == Mnemonic.Pushad ? 4 : 2;
        ulong sp = _gpr[Gpr.Rsp];
        ulong origSp = sp;
        for (int r = 0; r < 8; r++)
        {
            var st = PushTo(ref sp, size, r == Gpr.Rsp ? origSp : _gpr[r]);
            if (st != Status.Ok) return st;
        }
        SetSp(sp);
        return Status.Ok;
    }

    private Status Popa(ref Instruction i)
    {
        int size = i.Mnemonic == Mnemonic.Popad ? 4 : 2;
        ulong sp = _gpr[Gpr.Rsp];
        Span<ulong> v = stackalloc ulong[8];
        for (int r = 7; r >= 0; r--)
        {
            var st = PopFrom(ref sp, size, out v[r]);
            if (st != Status.Ok) return st;
        }
        for (int r = 0; r < 8; r++)
        {
            if (r == Gpr.Rsp) continue;
            if (size == 2) _gpr[r] = (_gpr[r] & ~0xFFFFUL) | (v[r] & 0xFFFF);
            else _gpr[r] = v[r] & 0xFFFF_FFFF;
        }
        SetSp(sp);
        return Status.Ok;
    }

    private Status Enter(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        ulong alloc = i.Immediate16;
        int level = i.Immediate8_2nd & 31;
        ulong sp = _gpr[Gpr.Rsp];
        ulong bpMask = SizeMask(StackAddrSize);
        var st = PushTo(ref sp, size, _gpr[Gpr.Rbp]);
        if (st != Status.Ok) return st;
        ulong frame = sp;
        if (level > 0)
        {
            ulong bp = _gpr[Gpr.Rbp];
            for (int l = 1; l < level; l++)
            {
                bp = (bp - (ulong)size) & bpMask;
                st = Read(Seg.SS, bp, size, out ulong v);
                if (st != Status.Ok) return st;
                st = PushTo(ref sp, size, v);
                if (st != Status.Ok) return st;
            }
            st = PushTo(ref sp, size, frame);
            if (st != Status.Ok) return st;
        }
        ulong newSp = (sp - alloc) & bpMask;
        // The final stack pointer must be writable (SDM: #SS if it is outside the segment).
        st = Linear(Seg.SS, newSp, 1, Access.Write, out _);
        if (st != Status.Ok) return st;
        if (size == 2) _gpr[Gpr.Rbp] = (_gpr[Gpr.Rbp] & ~0xFFFFUL) | (frame & 0xFFFF);
        else if (size == 4) _gpr[Gpr.Rbp] = frame & 0xFFFF_FFFF;
        else _gpr[Gpr.Rbp] = frame;
        SetSp(newSp);
        return Status.Ok;
    }

    private Status Leave(ref Instruction i)
    {
        int size = StackOpSize(ref i);
        ulong sp = _gpr[Gpr.Rbp];
        var st = PopFrom(ref sp, size, out ulong bp);
        if (st != Status.Ok) return st;
        SetSp(sp);
        if (size == 2) _gpr[Gpr.Rbp] = (_gpr[Gpr.Rbp] & ~0xFFFFUL) | (bp & 0xFFFF);
        else if (size == 4) _gpr[Gpr.Rbp] = bp & 0xFFFF_FFFF;
        else _gpr[Gpr.Rbp] = bp;
        return Status.Ok;
    }

    // ------------------------------------------------------------------ flags with privilege

    private int Iopl => (int)((_flags >> Rflags.IoplShift) & 3);

    private Status Cli()
    {
        if (_protected && _cpl > Iopl) return GP(0);
        _flags &= ~Rflags.IF;
        return Status.Ok;
    }

    private Status Sti()
    {
        if (_protected && _cpl > Iopl) return GP(0);
        if ((_flags & Rflags.IF) == 0) _interruptShadow = true;
        _flags |= Rflags.IF;
        return Status.Ok;
    }

    private Status Pushf(ref Instruction i)
    {
        if ((_flags & Rflags.VM) != 0 && Iopl < 3) return GP(0);
        int size = StackOpSize(ref i);
        // VM and RF are never pushed as set.
        ulong f = GetRflags() & ~(Rflags.VM | Rflags.RF);
        return Push(size, f & SizeMask(size));
    }

    private Status Popf(ref Instruction i)
    {
        if ((_flags & Rflags.VM) != 0 && Iopl < 3) return GP(0);
        int size = StackOpSize(ref i);
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out ulong v);
        if (st != Status.Ok) return st;
        SetSp(sp);
        ulong changeable = Rflags.Arith | Rflags.TF | Rflags.DF | Rflags.NT | Rflags.AC | Rflags.ID;
        if (!_protected || _cpl == 0) changeable |= Rflags.IOPL | Rflags.IF;
        else if (_cpl <= Iopl) changeable |= Rflags.IF;
        if (size == 2) changeable &= 0xFFFF;
        ulong old = GetRflags();
        SetRflagsRaw((old & ~changeable) | (v & changeable));
        UpdateTlbClass();
        RecomputeSingleStep();
        _endBlock = true;
        return Status.Ok;
    }

    // ------------------------------------------------------------------ INT n, BOUND

    private Status SoftwareInterrupt(byte vector, EventKind kind)
    {
        if ((_flags & Rflags.VM) != 0 && Iopl < 3 && kind == EventKind.Software) return GP(0);
        var st = DeliverEvent(vector, false, 0, kind);
        _endBlock = true;
        if (st == Status.Fault)
        {
            // The fault belongs to the INT instruction (its RIP is rewound by the caller).
            return st;
        }
        if (vector < _exceptionCounts.Length && kind == EventKind.SoftwareException) _exceptionCounts[vector]++;
        return st;
    }

    private Status Bound(ref Instruction i)
    {
        int size = RegSize(i.Op0Register);
        ulong ea = EffectiveAddress(ref i);
        int seg = MemSeg(ref i);
        var st = Read(seg, ea, size, out ulong lo);
        if (st != Status.Ok) return st;
        st = Read(seg, ea + (ulong)size, size, out ulong hi);
        if (st != Status.Ok) return st;
        long idx = SignExtend(GetReg(i.Op0Register), size);
        if (idx < SignExtend(lo, size) || idx > SignExtend(hi, size)) return Fault(Vector.BR);
        return Status.Ok;
    }

    private Status LoadFarPointer(ref Instruction i, Mnemonic m)
    {
        int size = RegSize(i.Op0Register);
        ulong ea = EffectiveAddress(ref i);
        int mseg = MemSeg(ref i);
        var st = Read(mseg, ea, size, out ulong off);
        if (st != Status.Ok) return st;
        st = Read(mseg, ea + (ulong)size, 2, out ulong sel);
        if (st != Status.Ok) return st;
        int seg = m switch { Mnemonic.Lds => Seg.DS, Mnemonic.Les => Seg.ES, Mnemonic.Lfs => Seg.FS, Mnemonic.Lgs => Seg.GS, _ => Seg.SS };
        st = LoadSegment(seg, (ushort)sel);
        if (st != Status.Ok) return st;
        SetReg(i.Op0Register, off);
        return Status.Ok;
    }
}
