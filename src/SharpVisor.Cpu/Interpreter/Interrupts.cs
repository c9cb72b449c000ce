using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

internal enum EventKind : byte
{
    /// <summary>External interrupt or NMI.</summary>
    External,
    /// <summary>A processor-detected exception.</summary>
    Exception,
    /// <summary>INT n: gate DPL is checked against CPL.</summary>
    Software,
    /// <summary>INT3 and INTO: software exceptions, DPL checked too.</summary>
    SoftwareException,
}

/// <summary>
/// Interrupt and exception delivery (SDM Vol. 3A chapter 6): real-mode IVT, 32-bit IDT gates with
/// stack switches from the TSS, 64-bit IDT gates with IST, and IRET in every mode. The return
/// address is the vCPU's RIP when delivery starts (the faulting or next instruction).
/// Task gates in a 32-bit IDT switch tasks (TaskSwitch.cs). From virtual-8086 mode (Vol. 3A
/// §20.3, INT n pseudo-code INTERRUPT-FROM-VIRTUAL-8086-MODE) an interrupt or trap gate must lead
/// to a ring-0 nonconforming code segment: the handler runs on the TSS's ring-0 stack with GS, FS,
/// DS, ES, SS, ESP, EFLAGS, CS, EIP (and the error code) pushed and DS..GS null.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    internal Status DeliverEvent(byte vector, bool hasErr, uint err, EventKind kind)
    {
        _halted = false;
        if (!_protected) return DeliverReal(vector);
        uint ext = kind == EventKind.External || kind == EventKind.Exception ? 1u : 0u;
        return _longMode ? DeliverLong(vector, hasErr, err, kind, ext) : DeliverProtected(vector, hasErr, err, kind, ext);
    }

    private Status DeliverReal(byte vector)
    {
        if ((ulong)vector * 4 + 3 > _idtr.Limit) return GP((uint)vector * 8 + 2);
        var st = ReadLinearSlow(_idtr.Base + (ulong)vector * 4, 4, ClassSupervisorAc, Access.Read, out ulong ent);
        if (st != Status.Ok) return st;
        ulong sp = _gpr[Gpr.Rsp];
        ulong flags = GetRflags();
        st = PushFrame(ref sp, 2, flags, _seg[Seg.CS].Selector, _rip, false, 0);
        if (st != Status.Ok) return st;
        SetSp(sp);
        _flags = flags & ~(Rflags.IF | Rflags.TF | Rflags.AC | Rflags.RF);
        _lfOp = FlagOp.None;
        ref var cs = ref _seg[Seg.CS];
        cs.Selector = (ushort)(ent >> 16);
        cs.Base = (ulong)cs.Selector << 4;
        _rip = ent & 0xFFFF;
        UpdateMode();
        RecomputeSingleStep();
        return Status.Ok;
    }

    /// <summary>Pushes IP/CS/FLAGS (and SS:SP, error code) on the current stack, in the given width.</summary>
    private Status PushFrame(ref ulong sp, int size, ulong flags, ulong cs, ulong ip, bool hasErr, uint err)
    {
        var st = PushTo(ref sp, size, flags); if (st != Status.Ok) return st;
        st = PushTo(ref sp, size, cs); if (st != Status.Ok) return st;
        st = PushTo(ref sp, size, ip); if (st != Status.Ok) return st;
        if (hasErr) st = PushTo(ref sp, size, err);
        return st;
    }

    private Status DeliverProtected(byte vector, bool hasErr, uint err, EventKind kind, uint ext)
    {
        uint idtErr = (uint)vector * 8 + 2 + ext;
        if ((ulong)vector * 8 + 7 > _idtr.Limit) return GP(idtErr);
        var st = ReadSystem(_idtr.Base + (ulong)vector * 8, 8, out ulong gate);
        if (st != Status.Ok) return st;
        int type = (int)((gate >> 40) & 0x1F);
        int gateDpl = (int)((gate >> 45) & 3);
        bool present = (gate & (1UL << 47)) != 0;
        if (type is not (5 or 6 or 7 or 14 or 15)) return GP(idtErr);
        if ((kind == EventKind.Software || kind == EventKind.SoftwareException) && gateDpl < _cpl) return GP((uint)vector * 8 + 2);
        if (!present) return Fault(Vector.NP, idtErr);
        if (type == 5) return DeliverThroughTaskGate(gate, hasErr, err, kind, ext);

        bool gate32 = type >= 14;
        bool trap = (type & 1) != 0;
        ushort sel = (ushort)(gate >> 16);
        ulong offset = gate32 ? (gate & 0xFFFF) | ((gate >> 32) & 0xFFFF_0000) : gate & 0xFFFF;
        if ((sel & 0xFFFC) == 0) return GP(ext);
        st = ReadDescriptor(sel, out ulong raw, out _, Vector.GP);
        if (st != Status.Ok) { _excError |= ext; return st; }
        var cs = FromDescriptor(sel, raw);
        if (!cs.IsCodeOrData || (cs.Type & 8) == 0 || cs.Dpl > _cpl) return GP((uint)(sel & 0xFFFC) + ext);
        if (!cs.Present) return Fault(Vector.NP, (uint)(sel & 0xFFFC) + ext);
        bool conforming = (cs.Type & 4) != 0;
        int size = gate32 ? 4 : 2;
        // The new EIP is checked before anything is pushed, on every path (SDM INT pseudo-code):
        // a bad gate offset is #GP(EXT), never a stack fault.
        if (offset > cs.Limit) return GP(ext);
        ulong flags = GetRflags();
        if ((flags & Rflags.VM) != 0)
        {
            // Only a nonconforming ring-0 handler can serve virtual-8086 mode; any other target
            // (conforming, or DPL 1-3) is #GP(new CS selector + EXT).
            if (conforming || cs.Dpl != 0) return GP((uint)(sel & 0xFFFC) + ext);
            return DeliverFromV86(cs, offset, size, trap, flags, hasErr, err, ext);
        }
        int newCpl = conforming ? _cpl : cs.Dpl;

        if (newCpl < _cpl)
        {
            // Inter-privilege: new stack from the TSS.
            st = ReadTssStack(newCpl, out ushort newSs, out ulong newSp);
            if (st != Status.Ok) return st;
            st = CheckStackSegment(newSs, newCpl, out var ssDesc, out ulong ssAddr, out ulong ssRaw);
            if (st != Status.Ok) return st;
            ulong sp = newSp;
            ulong oldSs = _seg[Seg.SS].Selector, oldSp = _gpr[Gpr.Rsp];
            st = PushOn(ssDesc, ref sp, size, oldSs); if (st != Status.Ok) return st;
            st = PushOn(ssDesc, ref sp, size, oldSp); if (st != Status.Ok) return st;
            st = PushOn(ssDesc, ref sp, size, flags); if (st != Status.Ok) return st;
            st = PushOn(ssDesc, ref sp, size, _seg[Seg.CS].Selector); if (st != Status.Ok) return st;
            st = PushOn(ssDesc, ref sp, size, _rip); if (st != Status.Ok) return st;
            if (hasErr) { st = PushOn(ssDesc, ref sp, size, err); if (st != Status.Ok) return st; }
            SetAccessed(ssAddr, ssRaw);
            ssDesc.Attributes |= 1;
            _seg[Seg.SS] = ssDesc;
            _gpr[Gpr.Rsp] = NewStackPointer(ssDesc, newSp, sp);
        }
        else
        {
            ulong sp = _gpr[Gpr.Rsp];
            st = PushFrame(ref sp, size, flags, _seg[Seg.CS].Selector, _rip, hasErr, err);
            if (st != Status.Ok) return st;
            SetSp(sp);
        }
        _flags = flags & ~(Rflags.TF | Rflags.NT | Rflags.RF | Rflags.VM | (trap ? 0 : Rflags.IF));
        _lfOp = FlagOp.None;
        cs.Attributes |= 1;
        CommitCs(cs, newCpl);
        _rip = offset;
        RecomputeSingleStep();
        return Status.Ok;
    }

    /// <summary>
    /// ESP after pushing a frame on the stack taken from the TSS: all of it with a 32-bit SS; with
    /// a 16-bit SS, SP from the pushes and the upper half from the TSS's ESP, which the CPU loaded
    /// whole (not the interrupted program's).
    /// </summary>
    private static ulong NewStackPointer(in SegmentRegister ss, ulong tssSp, ulong sp)
        => ss.DefaultBig ? sp & 0xFFFF_FFFF : (tssSp & 0xFFFF_0000) | (sp & 0xFFFF);

    /// <summary>
    /// INTERRUPT-FROM-VIRTUAL-8086-MODE: the ring-0 SS:ESP from the TSS, the v86 segment
    /// registers and the usual frame pushed in the gate's size, DS/ES/FS/GS made null (they
    /// hold real-mode style values no protected-mode handler could use), VM/TF/RF/NT cleared.
    /// No register changes before every push and check has passed (the pushes may already have
    /// written below the new stack pointer, as on silicon when a later push faults).
    /// </summary>
    private Status DeliverFromV86(SegmentRegister cs, ulong offset, int size, bool trap, ulong flags, bool hasErr, uint err, uint ext)
    {
        var st = ReadTssStack(0, out ushort newSs, out ulong newSp);
        if (st != Status.Ok) return st;
        st = CheckStackSegment(newSs, 0, out var ssDesc, out ulong ssAddr, out ulong ssRaw);
        if (st != Status.Ok) return st;
        ulong sp = newSp;
        foreach (int seg in (ReadOnlySpan<int>)[Seg.GS, Seg.FS, Seg.DS, Seg.ES, Seg.SS])
        {
            st = PushOn(ssDesc, ref sp, size, _seg[seg].Selector);
            if (st != Status.Ok) return st;
        }
        st = PushOn(ssDesc, ref sp, size, _gpr[Gpr.Rsp] & 0xFFFF_FFFF); if (st != Status.Ok) return st;
        st = PushOn(ssDesc, ref sp, size, flags); if (st != Status.Ok) return st;
        st = PushOn(ssDesc, ref sp, size, _seg[Seg.CS].Selector); if (st != Status.Ok) return st;
        st = PushOn(ssDesc, ref sp, size, _rip); if (st != Status.Ok) return st;
        if (hasErr) { st = PushOn(ssDesc, ref sp, size, err); if (st != Status.Ok) return st; }
        SetAccessed(ssAddr, ssRaw);
        ssDesc.Attributes |= 1;
        _seg[Seg.SS] = ssDesc;
        _gpr[Gpr.Rsp] = NewStackPointer(ssDesc, newSp, sp);
        foreach (int seg in (ReadOnlySpan<int>)[Seg.ES, Seg.DS, Seg.FS, Seg.GS])
            _seg[seg] = new SegmentRegister { Attributes = SegmentRegister.AttrUnusable };
        // VM must be clear before CommitCs recomputes the mode (with it set, CPL would stay 3).
        _flags = flags & ~(Rflags.TF | Rflags.NT | Rflags.RF | Rflags.VM | (trap ? 0 : Rflags.IF));
        _lfOp = FlagOp.None;
        cs.Attributes |= 1;
        CommitCs(cs, 0);
        _rip = offset;
        RecomputeSingleStep();
        return Status.Ok;
    }

    private Status DeliverLong(byte vector, bool hasErr, uint err, EventKind kind, uint ext)
    {
        uint idtErr = (uint)vector * 8 + 2 + ext;
        if ((ulong)vector * 16 + 15 > _idtr.Limit) return GP(idtErr);
        var st = ReadSystem(_idtr.Base + (ulong)vector * 16, 8, out ulong gate);
        if (st != Status.Ok) return st;
        st = ReadSystem(_idtr.Base + (ulong)vector * 16 + 8, 8, out ulong gateHi);
        if (st != Status.Ok) return st;
        int type = (int)((gate >> 40) & 0x1F);
        int gateDpl = (int)((gate >> 45) & 3);
        if (type is not (14 or 15)) return GP(idtErr);
        if ((kind == EventKind.Software || kind == EventKind.SoftwareException) && gateDpl < _cpl) return GP((uint)vector * 8 + 2);
        if ((gate & (1UL << 47)) == 0) return Fault(Vector.NP, idtErr);
        bool trap = type == 15;
        ushort sel = (ushort)(gate >> 16);
        ulong offset = (gate & 0xFFFF) | ((gate >> 32) & 0xFFFF_0000) | (gateHi << 32);
        int ist = (int)((gate >> 32) & 7);
        if ((sel & 0xFFFC) == 0) return GP(ext);
        st = ReadDescriptor(sel, out ulong raw, out _, Vector.GP);
        if (st != Status.Ok) { _excError |= ext; return st; }
        var cs = FromDescriptor(sel, raw);
        if (!cs.IsCodeOrData || (cs.Type & 8) == 0 || cs.Dpl > _cpl || !cs.Long || cs.DefaultBig)
            return GP((uint)(sel & 0xFFFC) + ext);
        if (!cs.Present) return Fault(Vector.NP, (uint)(sel & 0xFFFC) + ext);
        if (!IsCanonical(offset)) return GP(ext);
        bool conforming = (cs.Type & 4) != 0;
        int newCpl = conforming ? _cpl : cs.Dpl;
        ulong rsp = _gpr[Gpr.Rsp];
        if (newCpl < _cpl)
        {
            st = ReadTss64(4 + (ulong)newCpl * 8, out rsp);
            if (st != Status.Ok) return st;
        }
        if (ist != 0)
        {
            st = ReadTss64(0x24 + (ulong)(ist - 1) * 8, out rsp);
            if (st != Status.Ok) return st;
        }
        if (!IsCanonical(rsp)) return Fault(Vector.SS, ext);
        rsp &= ~0xFUL;
        ulong flags = GetRflags();
        ulong cls = newCpl == 3 ? ClassUser : ClassSupervisor;
        ulong sp = rsp;
        st = PushLinear(ref sp, cls, _seg[Seg.SS].Selector); if (st != Status.Ok) return st;
        st = PushLinear(ref sp, cls, _gpr[Gpr.Rsp]); if (st != Status.Ok) return st;
        st = PushLinear(ref sp, cls, flags); if (st != Status.Ok) return st;
        st = PushLinear(ref sp, cls, _seg[Seg.CS].Selector); if (st != Status.Ok) return st;
        st = PushLinear(ref sp, cls, _rip); if (st != Status.Ok) return st;
        if (hasErr) { st = PushLinear(ref sp, cls, err); if (st != Status.Ok) return st; }
        if (newCpl < _cpl)
        {
            // SS becomes a null selector with RPL = new CPL (SDM §6.14.4).
            ref var ss = ref _seg[Seg.SS];
            ss.Selector = (ushort)newCpl;
            ss.Base = 0;
            ss.Limit = 0;
            ss.Attributes = SegmentRegister.AttrUnusable | (uint)(newCpl << 5);
        }
        _gpr[Gpr.Rsp] = sp;
        _flags = flags & ~(Rflags.TF | Rflags.NT | Rflags.RF | Rflags.VM | (trap ? 0 : Rflags.IF));
        _lfOp = FlagOp.None;
        cs.Attributes |= 1;
        CommitCs(cs, newCpl);
        _rip = offset;
        RecomputeSingleStep();
        return Status.Ok;
    }

    private Status PushLinear(ref ulong sp, ulong cls, ulong value)
    {
        sp -= 8;
        return WriteLinearSlow(sp, 8, value, cls);
    }

    private Status ReadTss64(ulong offset, out ulong value)
    {
        value = 0;
        if (offset + 7 > _tr.Limit) return Fault(Vector.TS, (uint)(_tr.Selector & 0xFFFC));
        return ReadSystem(_tr.Base + offset, 8, out value);
    }

    /// <summary>SS:ESP for privilege level <paramref name="dpl"/> from a 16- or 32-bit TSS.</summary>
    private Status ReadTssStack(int dpl, out ushort ss, out ulong sp)
    {
        ss = 0; sp = 0;
        bool tss32 = (_tr.Type & 8) != 0;
        ulong off = tss32 ? 4 + (ulong)dpl * 8 : 2 + (ulong)dpl * 4;
        int w = tss32 ? 4 : 2;
        if (off + (ulong)w + 1 + (tss32 ? 2UL : 0) > _tr.Limit) return Fault(Vector.TS, (uint)(_tr.Selector & 0xFFFC));
        var st = ReadSystem(_tr.Base + off, w, out sp);
        if (st != Status.Ok) return st;
        st = ReadSystem(_tr.Base + off + (ulong)w, 2, out ulong s);
        ss = (ushort)s;
        return st;
    }

    /// <summary>Checks a new SS for a privilege change (#TS on failure, #SS when not present).</summary>
    private Status CheckStackSegment(ushort sel, int cpl, out SegmentRegister ss, out ulong addr, out ulong raw)
    {
        ss = default; addr = 0; raw = 0;
        uint e = (uint)(sel & 0xFFFC);
        if ((sel & 0xFFFC) == 0) return Fault(Vector.TS, e);
        var st = ReadDescriptor(sel, out raw, out addr, Vector.TS);
        if (st != Status.Ok) return st;
        ss = FromDescriptor(sel, raw);
        if ((sel & 3) != cpl || ss.Dpl != cpl || !ss.IsCodeOrData || (ss.Type & 8) != 0 || (ss.Type & 2) == 0)
            return Fault(Vector.TS, e);
        if (!ss.Present) return Fault(Vector.SS, e);
        return Status.Ok;
    }

    /// <summary>Push onto a stack that is not loaded yet (inter-privilege delivery), as supervisor.</summary>
    private Status PushOn(in SegmentRegister ss, ref ulong sp, int size, ulong value)
    {
        ulong mask = ss.DefaultBig ? 0xFFFF_FFFFUL : 0xFFFF;
        sp = (sp - (ulong)size) & mask;
        return WriteLinearSlow((ss.Base + sp) & 0xFFFF_FFFF, size, value, ClassSupervisor);
    }
}
