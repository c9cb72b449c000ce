using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// Far JMP/CALL (direct, and through call gates with the stack switch and parameter copy),
/// far RET and IRET, in real, protected and long mode (SDM Vol. 2 JMP/CALL/RET/IRET, Vol. 3A §5.8).
/// Transfers to a TSS or task gate and IRET with NT=1 go to the hardware task switch (TaskSwitch.cs).
/// Virtual-8086 mode (SDM Vol. 3A chapter 20, without the VME extensions): far JMP/CALL/RET load CS
/// real-mode style; IRET inside it is IOPL-sensitive and keeps VM and IOPL; IRET at CPL 0 with
/// VM=1 in the popped EFLAGS enters it, popping ESP, SS, ES, DS, FS and GS too.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Pushes the return address CS:IP of a far CALL in the given width.</summary>
    private Status PushFarReturn(int size)
    {
        ulong sp = _gpr[Gpr.Rsp];
        var st = PushTo(ref sp, size, _seg[Seg.CS].Selector);
        if (st != Status.Ok) return st;
        st = PushTo(ref sp, size, _rip);
        if (st == Status.Ok) SetSp(sp);
        return st;
    }

    internal Status FarTransfer(ushort sel, ulong offset, int opSize, bool call)
    {
        _endBlock = true;
        if (!_protected || InV86)
        {
            // The target must be inside the CS limit (a 32-bit offset can be beyond 64 KiB).
            ulong target = offset & IpMaskForOpSize(opSize);
            if (target > _seg[Seg.CS].Limit) return GP(0);
            if (call && PushFarReturn(opSize) is var st0 && st0 != Status.Ok) return st0;
            LoadRealStyleCs(sel);
            _rip = target;
            UpdateMode();
            return Status.Ok;
        }

        if ((sel & 0xFFFC) == 0) return GP(0);
        var s = ReadDescriptor(sel, out ulong raw, out ulong addr);
        if (s != Status.Ok) return s;
        var d = FromDescriptor(sel, raw);
        uint err = (uint)(sel & 0xFFFC);
        int rpl = sel & 3;
        if (d.IsCodeOrData)
        {
            if ((d.Type & 8) == 0) return GP(err);
            bool conforming = (d.Type & 4) != 0;
            if (conforming ? d.Dpl > _cpl : (rpl > _cpl || d.Dpl != _cpl)) return GP(err);
            if (!d.Present) return Fault(Vector.NP, err);
            bool target64 = _longMode && d.Long;
            if (!target64 && offset > d.Limit) return GP(0);
            if (target64 && !IsCanonical(offset)) return GP(0);
            if (call && PushFarReturn(opSize) is var st1 && st1 != Status.Ok) return st1;
            SetAccessed(addr, raw);
            d.Attributes |= 1;
            CommitCs(d, _cpl);
            _rip = target64 ? offset : offset & IpMaskForOpSize(opSize);
            return Status.Ok;
        }

        // System descriptor: call gate, task gate or TSS.
        int type = d.Type;
        // IA-32e mode has no task switching: a TSS or task gate there is #GP(selector) (JMP/CALL pseudo-code).
        if (type is 1 or 9 or 5) return _longMode ? GP(err) : FarTaskTransfer(sel, d, raw, call);
        bool gate64 = _longMode;
        if (!(type == 4 && !gate64) && type != 12) return GP(err);
        if (d.Dpl < _cpl || d.Dpl < rpl) return GP(err);
        if (!d.Present) return Fault(Vector.NP, err);
        ushort targetSel = (ushort)(raw >> 16);
        ulong targetOff = type == 4 ? raw & 0xFFFF : (raw & 0xFFFF) | ((raw >> 32) & 0xFFFF_0000);
        int paramCount = (int)((raw >> 32) & 0x1F);
        int gateSize = type == 4 ? 2 : 4;
        if (gate64)
        {
            var st2 = ReadSystem(addr + 8, 8, out ulong hi);
            if (st2 != Status.Ok) return st2;
            if (((hi >> 40) & 0x1F) != 0) return GP(err);
            targetOff |= hi << 32;
            gateSize = 8;
            paramCount = 0;
        }
        if ((targetSel & 0xFFFC) == 0) return GP(0);
        s = ReadDescriptor(targetSel, out ulong traw, out ulong taddr);
        if (s != Status.Ok) return s;
        var t = FromDescriptor(targetSel, traw);
        uint terr = (uint)(targetSel & 0xFFFC);
        if (!t.IsCodeOrData || (t.Type & 8) == 0 || t.Dpl > _cpl) return GP(terr);
        if (gate64 && (!t.Long || t.DefaultBig)) return GP(terr);
        if (!t.Present) return Fault(Vector.NP, terr);
        bool tConforming = (t.Type & 4) != 0;
        if (!call && !tConforming && t.Dpl != _cpl) return GP(terr);
        if (gate64 ? !IsCanonical(targetOff) : targetOff > t.Limit) return GP(0);

        if (call && !tConforming && t.Dpl < _cpl)
        {
            int newCpl = t.Dpl;
            ulong oldSs = _seg[Seg.SS].Selector, oldSp = _gpr[Gpr.Rsp];
            if (gate64)
            {
                var st3 = ReadTss64(4 + (ulong)newCpl * 8, out ulong rsp);
                if (st3 != Status.Ok) return st3;
                ulong sp = rsp;
                st3 = PushLinear(ref sp, ClassSupervisor, oldSs); if (st3 != Status.Ok) return st3;
                st3 = PushLinear(ref sp, ClassSupervisor, oldSp); if (st3 != Status.Ok) return st3;
                st3 = PushLinear(ref sp, ClassSupervisor, _seg[Seg.CS].Selector); if (st3 != Status.Ok) return st3;
                st3 = PushLinear(ref sp, ClassSupervisor, _rip); if (st3 != Status.Ok) return st3;
                ref var ss = ref _seg[Seg.SS];
                ss.Selector = (ushort)newCpl; ss.Base = 0; ss.Limit = 0;
                ss.Attributes = SegmentRegister.AttrUnusable | (uint)(newCpl << 5);
                _gpr[Gpr.Rsp] = sp;
            }
            else
            {
                var st3 = ReadTssStack(newCpl, out ushort newSs, out ulong newSp);
                if (st3 != Status.Ok) return st3;
                st3 = CheckStackSegment(newSs, newCpl, out var ssDesc, out ulong ssAddr, out ulong ssRaw);
                if (st3 != Status.Ok) return st3;
                // Parameters are copied from the old stack to the new one.
                Span<ulong> prm = stackalloc ulong[32];
                for (int k = 0; k < paramCount; k++)
                {
                    st3 = Read(Seg.SS, (oldSp + (ulong)(k * gateSize)) & SizeMask(StackAddrSize), gateSize, out prm[k]);
                    if (st3 != Status.Ok) return st3;
                }
                ulong sp = newSp;
                st3 = PushOn(ssDesc, ref sp, gateSize, oldSs); if (st3 != Status.Ok) return st3;
                st3 = PushOn(ssDesc, ref sp, gateSize, oldSp); if (st3 != Status.Ok) return st3;
                for (int k = paramCount - 1; k >= 0; k--) { st3 = PushOn(ssDesc, ref sp, gateSize, prm[k]); if (st3 != Status.Ok) return st3; }
                st3 = PushOn(ssDesc, ref sp, gateSize, _seg[Seg.CS].Selector); if (st3 != Status.Ok) return st3;
                st3 = PushOn(ssDesc, ref sp, gateSize, _rip); if (st3 != Status.Ok) return st3;
                SetAccessed(ssAddr, ssRaw);
                ssDesc.Attributes |= 1;
                _seg[Seg.SS] = ssDesc;
                _gpr[Gpr.Rsp] = ssDesc.DefaultBig ? sp & 0xFFFF_FFFF : (_gpr[Gpr.Rsp] & ~0xFFFFUL) | (sp & 0xFFFF);
            }
            SetAccessed(taddr, traw);
            t.Attributes |= 1;
            CommitCs(t, newCpl);
            _rip = targetOff;
            return Status.Ok;
        }

        if (call && PushFarReturn(gateSize) is var st4 && st4 != Status.Ok) return st4;
        SetAccessed(taddr, traw);
        t.Attributes |= 1;
        CommitCs(t, _cpl);
        _rip = targetOff;
        return Status.Ok;
    }

    private Status RetFar(ref Instruction i)
    {
        _endBlock = true;
        // The operand size comes from the form: Iced's StackPointerIncrement counts both pops
        // (and the immediate), so it cannot give the size of one slot.
        int size = i.Code switch
        {
            Code.Retfw or Code.Retfw_imm16 => 2,
            Code.Retfq or Code.Retfq_imm16 => 8,
            _ => 4,
        };
        ulong imm = i.OpCount == 1 ? i.Immediate16 : 0UL;
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out ulong ip);
        if (st != Status.Ok) return st;
        st = PopFrom(ref sp, size, out ulong csv);
        if (st != Status.Ok) return st;
        ushort sel = (ushort)csv;
        if (!_protected || InV86)
        {
            ip &= IpMaskForOpSize(size);
            if (ip > _seg[Seg.CS].Limit) return GP(0);
            LoadRealStyleCs(sel);
            _rip = ip;
            SetSp(sp + imm);
            UpdateMode();
            return Status.Ok;
        }
        st = CheckReturnCs(sel, ip, out var d, out ulong addr, out ulong raw, out bool target64);
        if (st != Status.Ok) return st;
        int rpl = sel & 3;
        sp += imm;
        if (rpl > _cpl)
        {
            // Return to an outer privilege level: SS:ESP follow on the stack.
            st = PopFrom(ref sp, size, out ulong newSp);
            if (st != Status.Ok) return st;
            st = PopFrom(ref sp, size, out ulong ssv);
            if (st != Status.Ok) return st;
            st = LoadOuterStack((ushort)ssv, rpl, target64);
            if (st != Status.Ok) return st;
            SetAccessed(addr, raw);
            d.Attributes |= 1;
            CommitCs(d, rpl);
            _rip = target64 ? ip : ip & IpMaskForOpSize(size);
            SetSp(newSp + imm);
            ValidateSegmentsAfterPrivilegeDrop();
            return Status.Ok;
        }
        SetAccessed(addr, raw);
        d.Attributes |= 1;
        CommitCs(d, _cpl);
        _rip = target64 ? ip : ip & IpMaskForOpSize(size);
        SetSp(sp);
        return Status.Ok;
    }

    /// <summary>CS of a far transfer in real mode (limit and rights stay) or virtual-8086 mode.</summary>
    private void LoadRealStyleCs(ushort sel)
    {
        if (InV86)
        {
            _seg[Seg.CS] = V86Segment(sel);
            return;
        }
        ref var cs = ref _seg[Seg.CS];
        cs.Selector = sel;
        cs.Base = (ulong)sel << 4;
    }

    /// <summary>
    /// The return CS checks shared by far RET and IRET (SDM Vol. 2 RET/IRET "return to protected
    /// mode"): a code segment, RPL not below CPL, DPL equal to RPL (conforming: not above it),
    /// present, and the return offset inside the limit (canonical for 64-bit code).
    /// </summary>
    private Status CheckReturnCs(ushort sel, ulong ip, out SegmentRegister d, out ulong addr, out ulong raw, out bool target64)
    {
        target64 = false;
        var st = CheckCodeDescriptor(sel, out d, out addr, out raw);
        if (st != Status.Ok) return st;
        int rpl = sel & 3;
        uint err = (uint)(sel & 0xFFFC);
        if (rpl < _cpl) return GP(err);
        bool conforming = (d.Type & 4) != 0;
        if (conforming ? d.Dpl > rpl : d.Dpl != rpl) return GP(err);
        if (!d.Present) return Fault(Vector.NP, err);
        target64 = _longMode && d.Long;
        if (target64 ? !IsCanonical(ip) : ip > d.Limit) return GP(0);
        return Status.Ok;
    }

    /// <summary>Loads SS for a return to privilege level <paramref name="rpl"/> (RET/IRET).</summary>
    private Status LoadOuterStack(ushort sel, int rpl, bool target64)
    {
        if ((sel & 0xFFFC) == 0)
        {
            // A null SS is allowed when returning to 64-bit code at CPL < 3.
            if (!(target64 && rpl != 3 && (sel & 3) == rpl)) return GP(0);
            ref var n = ref _seg[Seg.SS];
            n.Selector = sel; n.Base = 0; n.Limit = 0;
            n.Attributes = SegmentRegister.AttrUnusable | (uint)(rpl << 5);
            return Status.Ok;
        }
        var st = ReadDescriptor(sel, out ulong raw, out ulong addr);
        if (st != Status.Ok) return st;
        var d = FromDescriptor(sel, raw);
        uint err = (uint)(sel & 0xFFFC);
        if ((sel & 3) != rpl || !d.IsCodeOrData || (d.Type & 8) != 0 || (d.Type & 2) == 0 || d.Dpl != rpl) return GP(err);
        if (!d.Present) return Fault(Vector.SS, err);
        SetAccessed(addr, raw);
        d.Attributes |= 1;
        _seg[Seg.SS] = d;
        return Status.Ok;
    }

    private Status Iret(ref Instruction i)
    {
        _endBlock = true;
        int size = i.Mnemonic switch { Mnemonic.Iretq => 8, Mnemonic.Iretd => 4, _ => 2 };
        ulong sp = _gpr[Gpr.Rsp];
        if (!_protected)
        {
            var st0 = PopFrom(ref sp, size, out ulong ip0); if (st0 != Status.Ok) return st0;
            st0 = PopFrom(ref sp, size, out ulong cs0); if (st0 != Status.Ok) return st0;
            st0 = PopFrom(ref sp, size, out ulong fl0); if (st0 != Status.Ok) return st0;
            SetSp(sp);
            ref var cs = ref _seg[Seg.CS];
            cs.Selector = (ushort)cs0;
            cs.Base = (ulong)(ushort)cs0 << 4;
            _rip = ip0 & IpMaskForOpSize(size);
            ulong mask = size == 2 ? 0xFFFFUL : Rflags.Writable & ~(Rflags.VM | Rflags.VIF | Rflags.VIP);
            SetRflagsRaw((GetRflags() & ~mask) | (fl0 & mask));
            UpdateMode();
            // IRET ends NMI blocking in every mode (SDM Vol. 3A §6.7.1).
            _nmiBlocked = false;
            RecomputeSingleStep();
            return Status.Ok;
        }
        // Virtual-8086 mode comes before the NT check (IRET pseudo-code): NT has no meaning there.
        if (InV86) return IretInV86(size);
        if ((_flags & Rflags.NT) != 0)
        {
            if (_longMode) return GP(0);
            return TaskReturn();
        }
        var st = PopFrom(ref sp, size, out ulong ip); if (st != Status.Ok) return st;
        st = PopFrom(ref sp, size, out ulong csv); if (st != Status.Ok) return st;
        st = PopFrom(ref sp, size, out ulong fl); if (st != Status.Ok) return st;
        if (size == 2) fl = (GetRflags() & ~0xFFFFUL) | (fl & 0xFFFF);
        // Only a 32-bit IRET can pop VM=1; IA-32e mode ignores the bit (it is not changeable there).
        if (!_longMode && (fl & Rflags.VM) != 0 && _cpl == 0) return IretToV86(sp, ip, (ushort)csv, fl);
        ushort sel = (ushort)csv;
        st = CheckReturnCs(sel, ip, out var d, out ulong addr, out ulong raw, out bool target64);
        if (st != Status.Ok) return st;
        int rpl = sel & 3;
        bool popStack = rpl > _cpl || _mode64;
        ulong newSp = 0, ssv = 0;
        if (popStack)
        {
            st = PopFrom(ref sp, size, out newSp); if (st != Status.Ok) return st;
            st = PopFrom(ref sp, size, out ssv); if (st != Status.Ok) return st;
            st = LoadOuterStack((ushort)ssv, rpl, target64);
            if (st != Status.Ok) return st;
        }
        // Flag update rules: IOPL only at CPL 0, IF only when CPL <= IOPL (checked with the old CPL).
        ulong changeable = Rflags.Arith | Rflags.TF | Rflags.DF | Rflags.NT | Rflags.RF | Rflags.AC | Rflags.ID;
        if (_cpl == 0) changeable |= Rflags.IOPL | Rflags.VIF | Rflags.VIP;
        if (_cpl <= Iopl) changeable |= Rflags.IF;
        if (size == 2) changeable &= 0xFFFF;
        ulong newFlags = (GetRflags() & ~changeable) | (fl & changeable);
        int oldCpl = _cpl;
        SetAccessed(addr, raw);
        d.Attributes |= 1;
        SetRflagsRaw(newFlags);
        CommitCs(d, rpl);
        _rip = target64 ? ip : ip & IpMaskForOpSize(size);
        if (popStack)
        {
            if (_longMode) _gpr[Gpr.Rsp] = newSp; // IA-32e mode loads all 64 bits
            else SetSp(newSp);
        }
        else SetSp(sp);
        if (rpl > oldCpl) ValidateSegmentsAfterPrivilegeDrop();
        _nmiBlocked = false;
        RecomputeSingleStep();
        return Status.Ok;
    }

    /// <summary>
    /// IRET inside virtual-8086 mode (IRET pseudo-code RETURN-FROM-VIRTUAL-8086-MODE, CR4.VME=0):
    /// #GP(0) unless IOPL = 3, so that a monitor can emulate it; otherwise a real-mode style return
    /// that cannot change VM, IOPL, VIP or VIF.
    /// </summary>
    private Status IretInV86(int size)
    {
        if (Iopl < 3) return GP(0);
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out ulong ip); if (st != Status.Ok) return st;
        st = PopFrom(ref sp, size, out ulong csv); if (st != Status.Ok) return st;
        st = PopFrom(ref sp, size, out ulong fl); if (st != Status.Ok) return st;
        ip &= IpMaskForOpSize(size);
        if (ip > _seg[Seg.CS].Limit) return GP(0);
        ulong mask = (size == 2 ? 0xFFFFUL : Rflags.Writable) & ~(Rflags.VM | Rflags.IOPL | Rflags.VIP | Rflags.VIF);
        SetSp(sp);
        _seg[Seg.CS] = V86Segment((ushort)csv);
        _rip = ip;
        SetRflagsRaw((GetRflags() & ~mask) | (fl & mask));
        UpdateMode();
        _nmiBlocked = false;
        RecomputeSingleStep();
        return Status.Ok;
    }

    /// <summary>
    /// IRET at CPL 0 whose EFLAGS image has VM=1 (RETURN-TO-VIRTUAL-8086-MODE): ESP, SS, ES, DS,
    /// FS and GS follow EIP, CS and EFLAGS on the stack (32-bit slots, selectors in the low word);
    /// EFLAGS is loaded whole, every segment register real-mode style, and CPL becomes 3.
    /// </summary>
    private Status IretToV86(ulong sp, ulong ip, ushort cs, ulong fl)
    {
        // The new CS limit is 64 KiB.
        if (ip > 0xFFFF) return GP(0);
        Span<ulong> rest = stackalloc ulong[6]; // ESP, SS, ES, DS, FS, GS
        for (int k = 0; k < rest.Length; k++)
        {
            var st = PopFrom(ref sp, 4, out rest[k]);
            if (st != Status.Ok) return st;
        }
        SetRflagsRaw(fl);
        _seg[Seg.CS] = V86Segment(cs);
        _seg[Seg.SS] = V86Segment((ushort)rest[1]);
        _seg[Seg.ES] = V86Segment((ushort)rest[2]);
        _seg[Seg.DS] = V86Segment((ushort)rest[3]);
        _seg[Seg.FS] = V86Segment((ushort)rest[4]);
        _seg[Seg.GS] = V86Segment((ushort)rest[5]);
        _gpr[Gpr.Rsp] = rest[0] & 0xFFFF_FFFF;
        _rip = ip;
        UpdateMode(); // CPL 3, 16-bit code
        _nmiBlocked = false;
        RecomputeSingleStep();
        return Status.Ok;
    }
}
