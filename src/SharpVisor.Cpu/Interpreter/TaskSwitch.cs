using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>What started a hardware task switch: it decides busy bits, NT and the back link (SDM Vol. 3A Table 8-2).</summary>
internal enum TaskSwitchSource : byte
{
    /// <summary>JMP to a TSS or task gate: old task not busy, new busy, no link.</summary>
    Jmp,
    /// <summary>CALL to a TSS or task gate: both busy, NT set in the new task, link = old TSS.</summary>
    Call,
    /// <summary>IRET with NT=1: old task not busy, new task (the link) stays busy, NT cleared in the old task's saved EFLAGS.</summary>
    Iret,
    /// <summary>Interrupt or exception through an IDT task gate: like CALL.</summary>
    Interrupt,
}

/// <summary>
/// The 32-bit (and 16-bit) hardware task switch, Intel SDM Vol. 3A chapter 8: §8.2 TSS layouts
/// (Figure 8-2 32-bit, Figure 8-11 16-bit), §8.3 the task-switch steps and Table 8-1 (conditions
/// checked, in that order), §8.4 task linking (NT, previous-task link, busy flag); the JMP, CALL,
/// IRET and INT n pseudo-code of Vol. 2 for the checks done before the switch.
///
/// Shape: every read of the new TSS and every check that faults "in the context of the old task"
/// happens first; then the old state is saved, the busy bits and the link are written, and from
/// the commit point (TR loaded) the new task's registers are loaded and its LDTR and segment
/// descriptors qualified. A fault after the commit point is raised in the new task's context:
/// its selectors, EIP and EFLAGS are already in place (SDM §8.3 step 13, "may corrupt
/// architectural state"; such handlers are meant to be task gates).
///
/// Deliberate deviations and simplifications:
/// - The TSS debug trap flag (T, offset 100) is ignored: no #DB is raised on entry to the new task.
/// - PAE page-directory-pointer entries are not cached by this MMU, so loading CR3 from the TSS
///   never faults on them.
/// Long mode has no task switching: far JMP/CALL to a TSS or task gate give #GP(selector), a
/// task gate in a 64-bit IDT gives #GP, IRET with NT=1 gives #GP(0); those checks stay in
/// Far.cs and Interrupts.cs.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    // 32-bit TSS offsets (SDM Figure 8-2).
    private const int Tss32Cr3 = 28, Tss32Eip = 32, Tss32Eflags = 36, Tss32Gpr = 40, Tss32Es = 72, Tss32Ldt = 96;
    /// <summary>Smallest limit of a 32-bit TSS (104 bytes) and of a 16-bit TSS (44 bytes).</summary>
    private const uint Tss32MinLimit = 0x67, Tss16MinLimit = 0x2B;
    /// <summary>The old TSS must reach past its last dynamic field (GS at 92, DS at 40 in a 16-bit TSS).</summary>
    private const uint Tss32DynamicEnd = 0x5F, Tss16DynamicEnd = 0x29;
    // 16-bit TSS offsets (SDM Figure 8-11).
    private const int Tss16Ip = 14, Tss16Flags = 16, Tss16Gpr = 18, Tss16Es = 34, Tss16Ldt = 42;
    /// <summary>Type field values of TSS descriptors: available/busy, 16/32-bit.</summary>
    private const int TypeTss16Avail = 1, TypeTss16Busy = 3, TypeTss32Avail = 9, TypeTss32Busy = 11, TypeTaskGate = 5;
    /// <summary>DR7 bits the processor clears on every task switch: L0–L3 and LE (SDM §17.2.4).</summary>
    private const ulong Dr7LocalEnables = 0x155;

    /// <summary>
    /// Far JMP/CALL whose selector names a TSS (type 1/9) or a task gate (type 5), legacy protected
    /// mode only (JMP/CALL pseudo-code, TASK-GATE and TASK-STATE-SEGMENT). <paramref name="d"/> is
    /// the descriptor read for <paramref name="sel"/>.
    /// </summary>
    internal Status FarTaskTransfer(ushort sel, in SegmentRegister d, ulong raw, bool call)
    {
        uint err = (uint)(sel & 0xFFFC);
        int rpl = sel & 3;
        var source = call ? TaskSwitchSource.Call : TaskSwitchSource.Jmp;
        if (d.Dpl < _cpl || d.Dpl < rpl) return GP(err);
        if (d.Type == TypeTaskGate)
        {
            if (!d.Present) return Fault(Vector.NP, err);
            return SwitchThroughGate((ushort)(raw >> 16), source, ext: 0, hasErr: false, errorCode: 0, exception: false);
        }
        // A TSS descriptor lives only in the GDT; the available type was checked by the caller.
        if ((sel & 4) != 0) return GP(err);
        if (!d.Present) return Fault(Vector.NP, err);
        ulong descAddr = _gdtr.Base + (ulong)(sel & ~7);
        return SwitchTasks(sel, raw, descAddr, source, ext: 0, hasErr: false, errorCode: 0, exception: false);
    }

    /// <summary>
    /// Delivery of an interrupt or exception through a task gate in the 32-bit IDT (INT n
    /// pseudo-code, TASK-GATE): the gate's DPL and P were checked by the caller. An error code
    /// is pushed on the new task's stack.
    /// </summary>
    internal Status DeliverThroughTaskGate(ulong gate, bool hasErr, uint err, EventKind kind, uint ext)
        => SwitchThroughGate((ushort)(gate >> 16), TaskSwitchSource.Interrupt, ext, hasErr, err, kind == EventKind.Exception);

    /// <summary>IRET with EFLAGS.NT=1 outside long mode: return to the task in the back link (IRET TASK-RETURN).</summary>
    internal Status TaskReturn()
    {
        _endBlock = true;
        var st = ReadSystem(_tr.Base, 2, out ulong linkv);
        if (st != Status.Ok) return st;
        ushort link = (ushort)linkv;
        uint lerr = (uint)(link & 0xFFFC);
        if ((link & 4) != 0) return Fault(Vector.TS, lerr);
        if ((link & 0xFFFC) == 0) return Fault(Vector.TS, lerr);
        st = ReadDescriptor(link, out ulong raw, out ulong addr, Vector.TS);
        if (st != Status.Ok) return st;
        var d = FromDescriptor(link, raw);
        if (d.IsCodeOrData || d.Type is not (TypeTss16Busy or TypeTss32Busy)) return Fault(Vector.TS, lerr);
        if (!d.Present) return Fault(Vector.NP, lerr);
        st = SwitchTasks(link, raw, addr, TaskSwitchSource.Iret, ext: 0, hasErr: false, errorCode: 0, exception: false);
        // IRET ends NMI blocking whichever way it returns.
        if (st == Status.Ok) _nmiBlocked = false;
        return st;
    }

    /// <summary>Task gate → its TSS: the TSS must be an available TSS in the GDT (#GP/#NP with the TSS selector).</summary>
    private Status SwitchThroughGate(ushort tssSel, TaskSwitchSource source, uint ext, bool hasErr, uint errorCode, bool exception)
    {
        uint terr = (uint)(tssSel & 0xFFFC) | ext;
        if ((tssSel & 4) != 0) return GP(terr);
        var st = ReadDescriptor(tssSel, out ulong raw, out ulong addr);
        if (st != Status.Ok) return AddExt(st, ext);
        var t = FromDescriptor(tssSel, raw);
        if (t.IsCodeOrData || t.Type is not (TypeTss16Avail or TypeTss32Avail)) return GP(terr);
        if (!t.Present) return Fault(Vector.NP, terr);
        return SwitchTasks(tssSel, raw, addr, source, ext, hasErr, errorCode, exception);
    }

    /// <summary>Sets EXT in the error code of a #TS/#NP/#SS/#GP raised while delivering an external event (not #PF's).</summary>
    private Status AddExt(Status st, uint ext)
    {
        if (st == Status.Fault && _excHasError && _excVector != Vector.PF) _excError |= ext;
        return st;
    }

    /// <summary>
    /// SWITCH-TASKS (SDM §8.3): the new TSS descriptor (<paramref name="newRaw"/> at
    /// <paramref name="newDescAddr"/>, in the GDT) has passed the type, privilege and present checks.
    /// <paramref name="exception"/>: a processor exception is being delivered (see <see cref="PostCommitFault"/>).
    /// </summary>
    private Status SwitchTasks(ushort newSel, ulong newRaw, ulong newDescAddr, TaskSwitchSource source, uint ext, bool hasErr, uint errorCode, bool exception)
    {
        _endBlock = true;
        var nt = FromDescriptor(newSel, newRaw);
        bool new32 = (nt.Type & 8) != 0;
        uint newErr = (uint)(newSel & 0xFFFC) | ext;
        if (nt.Limit < (new32 ? Tss32MinLimit : Tss16MinLimit)) return Fault(Vector.TS, newErr);

        // Read the whole new task state first: a page fault here belongs to the old task.
        Span<uint> gpr = stackalloc uint[8];
        Span<ushort> sreg = stackalloc ushort[6];   // ES, CS, SS, DS, FS, GS
        uint cr3 = 0, eip, eflags;
        ushort ldt;
        Status st;
        if (new32)
        {
            st = ReadTssField(nt.Base, Tss32Cr3, 4, out cr3); if (st != Status.Ok) return st;
            st = ReadTssField(nt.Base, Tss32Eip, 4, out eip); if (st != Status.Ok) return st;
            st = ReadTssField(nt.Base, Tss32Eflags, 4, out eflags); if (st != Status.Ok) return st;
            for (int k = 0; k < 8; k++) { st = ReadTssField(nt.Base, Tss32Gpr + 4 * k, 4, out gpr[k]); if (st != Status.Ok) return st; }
            for (int k = 0; k < 6; k++)
            {
                st = ReadTssField(nt.Base, Tss32Es + 4 * k, 2, out uint s);
                if (st != Status.Ok) return st;
                sreg[k] = (ushort)s;
            }
            st = ReadTssField(nt.Base, Tss32Ldt, 2, out uint l); if (st != Status.Ok) return st;
            ldt = (ushort)l;
            // The T flag (offset 100) would raise #DB on entry to the new task: not implemented.
        }
        else
        {
            st = ReadTssField(nt.Base, Tss16Ip, 2, out eip); if (st != Status.Ok) return st;
            st = ReadTssField(nt.Base, Tss16Flags, 2, out eflags); if (st != Status.Ok) return st;
            for (int k = 0; k < 8; k++)
            {
                st = ReadTssField(nt.Base, Tss16Gpr + 2 * k, 2, out uint r);
                if (st != Status.Ok) return st;
                // The upper halves of the 32-bit registers read as ones after a switch to a
                // 16-bit TSS (not in the SDM; Bochs and QEMU both model it so).
                gpr[k] = 0xFFFF_0000 | r;
            }
            for (int k = 0; k < 4; k++)
            {
                st = ReadTssField(nt.Base, Tss16Es + 2 * k, 2, out uint s);
                if (st != Status.Ok) return st;
                sreg[k] = (ushort)s;
            }
            sreg[Seg.FS] = 0; sreg[Seg.GS] = 0; // a 16-bit TSS has no FS/GS: they become null
            st = ReadTssField(nt.Base, Tss16Ldt, 2, out uint l); if (st != Status.Ok) return st;
            ldt = (ushort)l;
        }
        // VM=1 in the new EFLAGS makes it a virtual-8086 task (§8.3 step 12; §20.2.5, "Entering Virtual-8086 Mode"): its
        // segment registers load real-mode style (LoadTaskSegments). A 16-bit TSS cannot hold VM.

        // The old TSS must hold its dynamic fields.
        bool old32 = (_tr.Type & 8) != 0;
        if (_tr.Limit < (old32 ? Tss32DynamicEnd : Tss16DynamicEnd)) return Fault(Vector.TS, (uint)(_tr.Selector & 0xFFFC) | ext);

        // Save the current task (SDM §8.3 step 10). IRET saves its EFLAGS image with NT clear.
        ulong oldFlags = GetRflags();
        if (source == TaskSwitchSource.Iret) oldFlags &= ~Rflags.NT;
        st = SaveTaskState(old32, oldFlags);
        if (st != Status.Ok) return st;

        // Busy bits and the link (Table 8-2).
        ushort oldSel = _tr.Selector;
        if (source is TaskSwitchSource.Jmp or TaskSwitchSource.Iret)
        {
            ulong oldDescAddr = _gdtr.Base + (ulong)(oldSel & ~7);
            st = ReadSystem(oldDescAddr + 5, 1, out ulong access);
            if (st != Status.Ok) return st;
            st = WriteSystem(oldDescAddr + 5, 1, access & ~2UL);
            if (st != Status.Ok) return st;
        }
        bool nest = source is TaskSwitchSource.Call or TaskSwitchSource.Interrupt;
        if (nest)
        {
            st = WriteSystem(nt.Base, 2, oldSel);
            if (st != Status.Ok) return st;
            eflags |= (uint)Rflags.NT;
        }
        if (source != TaskSwitchSource.Iret)
        {
            st = WriteSystem(newDescAddr + 5, 1, (byte)((newRaw >> 40) | 2));
            if (st != Status.Ok) return st;
        }

        // ---- commit point: TR names the new task; later faults happen in its context ----
        nt.Attributes |= 2;
        _tr = nt;
        if (new32 && _paging) WriteCr3(cr3);
        for (int k = 0; k < 8; k++) _gpr[k] = gpr[k];
        _rip = eip;
        SetRflagsRaw((eflags & Rflags.Writable) | Rflags.Reserved1);
        _cr0 |= Cr0.TS;
        _dr[7] &= ~Dr7LocalEnables;
        RecomputeSingleStep();
        st = LoadTaskSegments(sreg, ldt, ext);
        if (st == Status.Ok && hasErr)
            st = Push(new32 ? 4 : 2, errorCode);
        if (st == Status.Ok && _rip > _seg[Seg.CS].Limit)
            st = GP(ext);
        if (st == Status.Ok) return st;
        return PostCommitFault(st, exception);
    }

    /// <summary>
    /// A fault after the commit point: the new task's state is in place and the fault is raised
    /// there. An exception being delivered returns it to its caller (the double-fault rules of
    /// <see cref="RaiseException"/> apply, with RIP already the new task's); an instruction or an
    /// INT n / external interrupt has completed its task switch, so the fault is delivered now
    /// (the instruction path would otherwise rewind RIP to the old task's instruction).
    /// </summary>
    private Status PostCommitFault(Status st, bool exception)
    {
        if (st == Status.NeedInput) return Unsupported("task state or descriptor table in MMIO");
        if (st != Status.Fault || exception) return st;
        return RaiseException();
    }

    private Status ReadTssField(ulong tssBase, int offset, int size, out uint value)
    {
        var st = ReadSystem(tssBase + (ulong)offset, size, out ulong v);
        value = (uint)v;
        return st;
    }

    /// <summary>Writes EIP, EFLAGS, the general registers and the segment selectors into the current TSS.</summary>
    private Status SaveTaskState(bool tss32, ulong flags)
    {
        ulong b = _tr.Base;
        Status st;
        if (tss32)
        {
            st = WriteSystem(b + Tss32Eip, 4, _rip & 0xFFFF_FFFF); if (st != Status.Ok) return st;
            st = WriteSystem(b + Tss32Eflags, 4, flags & 0xFFFF_FFFF); if (st != Status.Ok) return st;
            for (int k = 0; k < 8; k++) { st = WriteSystem(b + Tss32Gpr + 4 * (ulong)k, 4, _gpr[k] & 0xFFFF_FFFF); if (st != Status.Ok) return st; }
            // Selectors are stored as words; the reserved upper halves are left alone.
            for (int k = 0; k < 6; k++) { st = WriteSystem(b + Tss32Es + 4 * (ulong)k, 2, _seg[k].Selector); if (st != Status.Ok) return st; }
            return Status.Ok;
        }
        st = WriteSystem(b + Tss16Ip, 2, _rip & 0xFFFF); if (st != Status.Ok) return st;
        st = WriteSystem(b + Tss16Flags, 2, flags & 0xFFFF); if (st != Status.Ok) return st;
        for (int k = 0; k < 8; k++) { st = WriteSystem(b + Tss16Gpr + 2 * (ulong)k, 2, _gpr[k] & 0xFFFF); if (st != Status.Ok) return st; }
        for (int k = 0; k < 4; k++) { st = WriteSystem(b + Tss16Es + 2 * (ulong)k, 2, _seg[k].Selector); if (st != Status.Ok) return st; }
        return Status.Ok;
    }

    /// <summary>
    /// Loads LDTR and the segment registers of the new task with the checks of Table 8-1, in its
    /// order: LDT, CS type/privilege, SS, CS present, then DS/ES/FS/GS. The visible selectors are
    /// set first, so a fault leaves them as the new task's (unusable until qualified).
    /// </summary>
    private Status LoadTaskSegments(ReadOnlySpan<ushort> sreg, ushort ldt, uint ext)
    {
        // EFLAGS is already the new task's: VM=1 means a virtual-8086 task, which runs at CPL 3.
        bool v86 = InV86;
        int newCpl = v86 ? 3 : sreg[Seg.CS] & 3;
        _ldtr = new SegmentRegister { Selector = ldt, Attributes = SegmentRegister.AttrUnusable };
        for (int k = 0; k < 6; k++)
        {
            ref var s = ref _seg[k];
            s.Selector = sreg[k];
            // CS and SS keep their old caches until qualified (delivery of a fault needs some
            // CS/SS); the data segments are unusable until loaded.
            if (k != Seg.CS && k != Seg.SS) { s.Attributes = SegmentRegister.AttrUnusable; s.Base = 0; s.Limit = 0; }
        }
        SetCpl(newCpl);

        // LDT: a GDT selector of a present LDT descriptor, or null.
        if ((ldt & 0xFFFC) != 0)
        {
            uint lerr = (uint)(ldt & 0xFFFC) | ext;
            if ((ldt & 4) != 0) return Fault(Vector.TS, lerr);
            var st0 = ReadDescriptor(ldt, out ulong lraw, out _, Vector.TS);
            if (st0 != Status.Ok) return AddExt(st0, ext);
            var ld = FromDescriptor(ldt, lraw);
            if (ld.IsCodeOrData || ld.Type != 2) return Fault(Vector.TS, lerr);
            if (!ld.Present) return Fault(Vector.TS, lerr);
            _ldtr = ld;
        }

        if (v86)
        {
            // No descriptors are read for a virtual-8086 task (Table 8-1 applies to protected-mode tasks).
            for (int k = 0; k < 6; k++) _seg[k] = V86Segment(sreg[k]);
            UpdateMode();
            return Status.Ok;
        }

        // CS: a code segment whose DPL fits its RPL (the new CPL).
        ushort csSel = sreg[Seg.CS];
        uint cerr = (uint)(csSel & 0xFFFC) | ext;
        if ((csSel & 0xFFFC) == 0) return Fault(Vector.TS, cerr);
        var st = ReadDescriptor(csSel, out ulong craw, out ulong caddr, Vector.TS);
        if (st != Status.Ok) return AddExt(st, ext);
        var cs = FromDescriptor(csSel, craw);
        if (!cs.IsCodeOrData || (cs.Type & 8) == 0) return Fault(Vector.TS, cerr);
        bool conforming = (cs.Type & 4) != 0;
        if (conforming ? cs.Dpl > newCpl : cs.Dpl != newCpl) return Fault(Vector.TS, cerr);

        // SS: a writable data segment with RPL = DPL = CPL.
        ushort ssSel = sreg[Seg.SS];
        uint serr = (uint)(ssSel & 0xFFFC) | ext;
        if ((ssSel & 0xFFFC) == 0) return Fault(Vector.TS, serr);
        st = ReadDescriptor(ssSel, out ulong sraw, out ulong saddr, Vector.TS);
        if (st != Status.Ok) return AddExt(st, ext);
        var ss = FromDescriptor(ssSel, sraw);
        if (!ss.IsCodeOrData || (ss.Type & 8) != 0 || (ss.Type & 2) == 0) return Fault(Vector.TS, serr);
        if (!ss.Present) return Fault(Vector.SS, serr);
        if (ss.Dpl != newCpl || (ssSel & 3) != newCpl) return Fault(Vector.TS, serr);

        if (!cs.Present) return Fault(Vector.NP, cerr);
        st = SetAccessed(caddr, craw); if (st != Status.Ok) return AddExt(st, ext);
        st = SetAccessed(saddr, sraw); if (st != Status.Ok) return AddExt(st, ext);
        cs.Attributes |= 1;
        ss.Attributes |= 1;
        _seg[Seg.SS] = ss;
        CommitCs(cs, newCpl);

        foreach (int seg in (ReadOnlySpan<int>)[Seg.DS, Seg.ES, Seg.FS, Seg.GS])
        {
            st = LoadTaskDataSegment(seg, sreg[seg], newCpl, ext);
            if (st != Status.Ok) return st;
        }
        return Status.Ok;
    }

    /// <summary>DS/ES/FS/GS of the new task: readable, DPL ≥ CPL and RPL unless conforming code (#TS), present (#NP).</summary>
    private Status LoadTaskDataSegment(int seg, ushort sel, int cpl, uint ext)
    {
        if ((sel & 0xFFFC) == 0) return Status.Ok; // null: already unusable
        uint err = (uint)(sel & 0xFFFC) | ext;
        var st = ReadDescriptor(sel, out ulong raw, out ulong addr, Vector.TS);
        if (st != Status.Ok) return AddExt(st, ext);
        var d = FromDescriptor(sel, raw);
        bool code = (d.Type & 8) != 0;
        if (!d.IsCodeOrData || (code && (d.Type & 2) == 0)) return Fault(Vector.TS, err);
        bool conforming = code && (d.Type & 4) != 0;
        if (!conforming && (d.Dpl < cpl || d.Dpl < (sel & 3))) return Fault(Vector.TS, err);
        if (!d.Present) return Fault(Vector.NP, err);
        st = SetAccessed(addr, raw);
        if (st != Status.Ok) return AddExt(st, ext);
        d.Attributes |= 1;
        _seg[seg] = d;
        return Status.Ok;
    }
}
