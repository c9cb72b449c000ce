using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Descriptor tables and segment loads (SDM Vol. 3A chapter 3 and 5).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Raw 8-byte descriptor → the segment cache form (VMX/KVM access rights).</summary>
    internal static SegmentRegister FromDescriptor(ushort selector, ulong d)
    {
        ulong @base = ((d >> 16) & 0xFF_FFFF) | ((d >> 32) & 0xFF00_0000);
        uint limit = (uint)((d & 0xFFFF) | ((d >> 32) & 0xF_0000));
        uint attr = (uint)((d >> 40) & 0xF0FF);
        if ((attr & SegmentRegister.AttrG) != 0) limit = (limit << 12) | 0xFFF;
        return new SegmentRegister { Selector = selector, Base = @base, Limit = limit, Attributes = attr };
    }

    /// <summary>
    /// Reads the descriptor a selector names. Returns Fault with #GP(selector) (or the given vector)
    /// when the selector is outside its table.
    /// </summary>
    internal Status ReadDescriptor(ushort sel, out ulong desc, out ulong descAddr, byte vector = Vector.GP)
    {
        desc = 0;
        bool ldt = (sel & 4) != 0;
        ulong tableBase = ldt ? _ldtr.Base : _gdtr.Base;
        ulong tableLimit = ldt ? (_ldtr.Unusable ? 0 : _ldtr.Limit) : _gdtr.Limit;
        descAddr = tableBase + (ulong)(sel & ~7);
        if ((ldt && _ldtr.Unusable) || (ulong)(sel | 7) > tableLimit)
            return Fault(vector, (uint)(sel & 0xFFFC));
        return ReadSystem(descAddr, 8, out desc);
    }

    /// <summary>Sets the accessed bit of a code/data descriptor in memory (type bit 0).</summary>
    internal Status SetAccessed(ulong descAddr, ulong desc)
    {
        if ((desc & (1UL << 40)) != 0) return Status.Ok;
        return WriteSystem(descAddr + 5, 1, (byte)((desc >> 40) | 1));
    }

    /// <summary>
    /// The access rights of every segment register in virtual-8086 mode: present, S, DPL 3,
    /// read/write data, accessed. The SDM (Vol. 3A §20.1.1) gives base = selector × 16 and a
    /// 64-KiB limit; these rights are the ones VMX requires of all six segment registers when
    /// RFLAGS.VM = 1 (Vol. 3C, "Checks on Guest Segment Registers"), so the state this
    /// engine exports is the state KVM accepts and reports for a virtual-8086 guest.
    /// </summary>
    internal const uint V86SegmentRights = 0xF3;

    internal bool InV86 => (_flags & Rflags.VM) != 0;

    /// <summary>A segment register loaded in virtual-8086 mode (CS too): base = selector × 16, limit 0xFFFF.</summary>
    internal static SegmentRegister V86Segment(ushort sel) =>
        new() { Selector = sel, Base = (ulong)sel << 4, Limit = 0xFFFF, Attributes = V86SegmentRights };

    /// <summary>MOV/POP to a data segment register or SS, with every protected-mode check.</summary>
    internal Status LoadSegment(int seg, ushort sel)
    {
        if (InV86)
        {
            // Virtual-8086 mode: always a 64-KiB read/write segment at selector × 16 (no descriptor).
            _seg[seg] = V86Segment(sel);
            if (seg == Seg.SS) _interruptShadow = true;
            return Status.Ok;
        }
        if (!_protected)
        {
            // Real mode: base = selector × 16; limit and rights stay (unreal mode).
            ref var s = ref _seg[seg];
            s.Selector = sel;
            s.Base = (ulong)sel << 4;
            if (seg == Seg.SS) _interruptShadow = true;
            return Status.Ok;
        }
        int rpl = sel & 3;
        if ((sel & 0xFFFC) == 0)
        {
            // Null selector: allowed for data segments (and SS in 64-bit mode below CPL 3).
            if (seg == Seg.SS && !(_mode64 && _cpl != 3 && rpl == _cpl)) return GP(0);
            ref var n = ref _seg[seg];
            n.Selector = sel;
            n.Attributes = SegmentRegister.AttrUnusable;
            if (!_mode64) n.Base = 0;
            if (seg == Seg.SS) { n.Attributes |= (uint)(_cpl << 5); _interruptShadow = true; }
            return Status.Ok;
        }
        var st = ReadDescriptor(sel, out ulong d, out ulong addr);
        if (st != Status.Ok) return st;
        var desc = FromDescriptor(sel, d);
        bool s_ = desc.IsCodeOrData;
        bool code = (desc.Type & 8) != 0;
        int dpl = desc.Dpl;
        uint errSel = (uint)(sel & 0xFFFC);
        if (seg == Seg.SS)
        {
            if (rpl != _cpl || !s_ || code || (desc.Type & 2) == 0 || dpl != _cpl) return GP(errSel);
            if (!desc.Present) return Fault(Vector.SS, errSel);
        }
        else
        {
            if (!s_ || (code && (desc.Type & 2) == 0)) return GP(errSel);
            bool conforming = code && (desc.Type & 4) != 0;
            if (!conforming && (rpl > dpl || _cpl > dpl)) return GP(errSel);
            if (!desc.Present) return Fault(Vector.NP, errSel);
        }
        st = SetAccessed(addr, d);
        if (st != Status.Ok) return st;
        desc.Attributes |= 1;
        _seg[seg] = desc;
        if (seg == Seg.SS) _interruptShadow = true;
        return Status.Ok;
    }

    /// <summary>Loads a code segment during a far transfer that has already passed its checks.</summary>
    internal void CommitCs(SegmentRegister cs, int cpl)
    {
        cs.Selector = (ushort)((cs.Selector & ~3) | cpl);
        _seg[Seg.CS] = cs;
        SetCpl(cpl);
        UpdateMode();
    }

    /// <summary>
    /// Checks a code-segment descriptor as the target of a far JMP/CALL/RET/IRET or gate.
    /// Returns the vector/err via Fault on failure.
    /// </summary>
    internal Status CheckCodeDescriptor(ushort sel, out SegmentRegister cs, out ulong addr, out ulong raw)
    {
        cs = default; addr = 0; raw = 0;
        if ((sel & 0xFFFC) == 0) return GP(0);
        var st = ReadDescriptor(sel, out raw, out addr);
        if (st != Status.Ok) return st;
        cs = FromDescriptor(sel, raw);
        if (!cs.IsCodeOrData || (cs.Type & 8) == 0) return GP((uint)(sel & 0xFFFC));
        return Status.Ok;
    }

    /// <summary>After a privilege drop, data segments the new CPL may not use become null (SDM RET/IRET).</summary>
    internal void ValidateSegmentsAfterPrivilegeDrop()
    {
        foreach (int seg in (ReadOnlySpan<int>)[Seg.ES, Seg.DS, Seg.FS, Seg.GS])
        {
            ref var s = ref _seg[seg];
            if (s.Unusable && (s.Selector & 0xFFFC) == 0) continue;
            bool code = (s.Attributes & 8) != 0;
            bool conforming = code && (s.Attributes & 4) != 0;
            if ((!code || !conforming) && s.Dpl < _cpl)
            {
                s.Selector = 0;
                s.Attributes = SegmentRegister.AttrUnusable;
            }
        }
    }
}
