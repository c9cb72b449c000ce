using System.Runtime.CompilerServices;
using SharpVisor.Core.Memory;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

internal enum Access : byte { Read = 0, Write = 1, Execute = 2 }

/// <summary>One software-TLB entry: linear page tag (with the access class in the low bits) → host pointer.</summary>
internal struct TlbEntry
{
    public ulong Tag;
    /// <summary>Host address of the page minus its linear address, so host = Addend + linear.</summary>
    public nint Addend;
    /// <summary>Guest-physical address of the page (code-page tracking needs it on fetch).</summary>
    public ulong PhysPage;
    /// <summary>
    /// Offset mask of the page the walk found (0x1F_FFFF for 2 MiB, 0x3F_FFFF for 4 MiB, 0x3FFF_FFFF
    /// for 1 GiB; 0 for 4 KiB): the TLB holds a large page as 4 KiB pieces, and INVLPG of any
    /// address in it must drop them all.
    /// </summary>
    public ulong LargeMask;
    public bool Global;
}

/// <summary>
/// The MMU (SDM Vol. 3A chapter 4): 32-bit paging with PSE, PAE and 4-level paging, accessed and
/// dirty bits, U/S, R/W with CR0.WP, NX, SMEP, SMAP (with EFLAGS.AC), reserved-bit checks,
/// global pages. A software TLB maps linear pages to host pointers for RAM; pages that are not RAM
/// (MMIO) are never cached and leave the engine as exits.
/// Deliberate deviation: PAE PDPTEs are read at walk time instead of being cached at CR3 load.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    private const int TlbBits = 10, TlbSize = 1 << TlbBits;
    private const ulong InvalidTag = ulong.MaxValue;
    private const ulong PageMask = ~0xFFFUL;

    // Access classes folded into TLB tags: what U/S and SMAP checks depended on at fill time.
    private const ulong ClassSupervisor = 0, ClassUser = 1, ClassSupervisorAc = 2;

    private readonly TlbEntry[] _tlbRead = new TlbEntry[TlbSize];
    private readonly TlbEntry[] _tlbWrite = new TlbEntry[TlbSize];
    private readonly TlbEntry[] _tlbExec = new TlbEntry[TlbSize];
    /// <summary>Class of ordinary data accesses by the current code (CPL, AC).</summary>
    internal ulong _tlbClass;
    internal long _tlbMisses;
    /// <summary>Some TLB entry may be a piece of a large page (INVLPG must then scan, see <see cref="InvalidatePage"/>).</summary>
    private bool _tlbHasLarge;

    private MemoryRegion[] _ram = [];
    /// <summary>Self-modifying and cross-modifying code detection, shared by the engine's vCPUs.</summary>
    private CodePageMap _code = null!;

    private ulong _physAddrMask;

    private void InitMmu()
    {
        _physAddrMask = (1UL << _model.PhysicalAddressBits) - 1;
        _ram = _memory.Regions.ToArray();
        _memory.RegionAdded += _ => _ram = _memory.Regions.ToArray();
        _code = _engine.CodePages;
        _code.Register(this);
    }

    /// <summary>Drops every write-TLB entry (a page just became code, possibly on another vCPU's thread).</summary>
    internal void FlushWriteTlb() => FlushArray(_tlbWrite, keepGlobal: false);

    internal void UpdateTlbClass()
    {
        _tlbClass = _cpl == 3 ? ClassUser
            : (_flags & Rflags.AC) != 0 && (_cr4 & Cr4.SMAP) != 0 ? ClassSupervisorAc : ClassSupervisor;
    }

    /// <summary>Invalidates the TLB (CR3 load: global entries survive when CR4.PGE).</summary>
    internal void FlushTlb(bool global)
    {
        bool keepGlobal = !global && (_cr4 & Cr4.PGE) != 0;
        FlushArray(_tlbRead, keepGlobal);
        FlushArray(_tlbWrite, keepGlobal);
        FlushArray(_tlbExec, keepGlobal);
        if (!keepGlobal) _tlbHasLarge = false;
    }

    private static void FlushArray(TlbEntry[] tlb, bool keepGlobal)
    {
        for (int i = 0; i < tlb.Length; i++)
            if (!keepGlobal || !tlb[i].Global) tlb[i].Tag = InvalidTag;
    }

    /// <summary>
    /// INVLPG: drops the translation of <paramref name="lin"/>, global or not. When it lies in a
    /// large page, every 4 KiB piece of that page is dropped too (SDM Vol. 3A §4.10.4.1: INVLPG
    /// invalidates the whole large-page translation), in all three arrays.
    /// </summary>
    internal void InvalidatePage(ulong lin)
    {
        int i = (int)((lin >> 12) & (TlbSize - 1));
        _tlbRead[i].Tag = _tlbWrite[i].Tag = _tlbExec[i].Tag = InvalidTag;
        if (!_tlbHasLarge) return;
        InvalidateLarge(_tlbRead, lin);
        InvalidateLarge(_tlbWrite, lin);
        InvalidateLarge(_tlbExec, lin);
    }

    private static void InvalidateLarge(TlbEntry[] tlb, ulong lin)
    {
        for (int i = 0; i < tlb.Length; i++)
        {
            ref var e = ref tlb[i];
            ulong m = e.LargeMask;
            if (m != 0 && e.Tag != InvalidTag && ((e.Tag & PageMask) & ~m) == (lin & ~m)) e.Tag = InvalidTag;
        }
    }

    /// <summary>Host pointer for a guest-physical address in RAM, or null (MMIO/unassigned).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* PhysToHost(ulong gpa)
    {
        var ram = _ram;
        for (int i = 0; i < ram.Length; i++)
        {
            ref readonly var r = ref ram[i];
            if (gpa - r.Gpa < r.Size) return r.Host + (gpa - r.Gpa);
        }
        return null;
    }

    private bool IsReadOnlyPhys(ulong gpa)
    {
        foreach (var r in _ram) if (r.Contains(gpa)) return r.ReadOnly;
        return false;
    }

    // ------------------------------------------------------------------ page walk

    /// <summary>What a successful walk found.</summary>
    private struct Walk
    {
        public ulong Phys;
        /// <summary>Offset mask of a large page, 0 for a 4 KiB page (see <see cref="TlbEntry.LargeMask"/>).</summary>
        public ulong LargeMask;
        public bool Writable, User, NoExec, Global, Dirty;
    }

    /// <summary>
    /// Translates a linear address for an access of the given kind and class. On failure sets
    /// #PF with the SDM error code and CR2 and returns <see cref="Status.Fault"/>.
    /// </summary>
    private Status WalkPageTables(ulong lin, Access access, ulong cls, out Walk w)
    {
        w = default;
        if (!_paging)
        {
            w.Phys = _longMode ? lin : lin & 0xFFFF_FFFF;
            w.Writable = w.User = true; w.Dirty = true;
            return Status.Ok;
        }
        bool user = cls == ClassUser;
        bool nxe = (_efer & Efer.NXE) != 0;
        ulong rsvdHigh = ~_physAddrMask & 0x000F_FFFF_FFFF_F000UL | (nxe ? 0 : 1UL << 63);

        // Walk, accumulating the effective rights: all levels must allow.
        bool allowW = true, allowU = true, nx = false;
        ulong entryAddr, entry;
        int level;
        ulong pageSizeMask;

        Span<ulong> touched = stackalloc ulong[4];
        int nTouched = 0;

        if ((_cr4 & Cr4.PAE) == 0)
        {
            // 32-bit paging: 2 levels of 4-byte entries, 4 MiB pages with CR4.PSE.
            entryAddr = (_cr3 & 0xFFFF_F000) + ((lin >> 22) & 0x3FF) * 4;
            entry = ReadPhys32(entryAddr);
            if ((entry & 1) == 0) return PageFault(lin, access, user, false, false);
            allowW &= (entry & 2) != 0; allowU &= (entry & 4) != 0;
            touched[nTouched++] = entryAddr;
            if ((entry & 0x80) != 0 && (_cr4 & Cr4.PSE) != 0)
            {
                // PSE-36: bits 13–20 give physical address bits 32–39.
                ulong phys = (entry & 0xFFC0_0000) | ((entry >> 13) & 0xFF) << 32;
                if ((entry & 0x0020_0000) != 0) return PageFault(lin, access, user, true, true); // bit 21 reserved
                pageSizeMask = 0x3F_FFFF;
                w.Phys = phys | (lin & pageSizeMask);
                w.LargeMask = pageSizeMask;
                level = 2;
                return FinishWalk(lin, access, cls, ref w, entryAddr, entry, allowW, allowU, false, touched[..nTouched], level);
            }
            entryAddr = (entry & 0xFFFF_F000) + ((lin >> 12) & 0x3FF) * 4;
            entry = ReadPhys32(entryAddr);
            if ((entry & 1) == 0) return PageFault(lin, access, user, false, false);
            allowW &= (entry & 2) != 0; allowU &= (entry & 4) != 0;
            w.Phys = (entry & 0xFFFF_F000) | (lin & 0xFFF);
            return FinishWalk(lin, access, cls, ref w, entryAddr, entry, allowW, allowU, false, touched[..nTouched], 1);
        }

        ulong table;
        int startLevel;
        if (_longMode)
        {
            table = _cr3 & 0x000F_FFFF_FFFF_F000UL & _physAddrMask;
            startLevel = 4;
        }
        else
        {
            // PAE: 4 PDPTEs at CR3[31:5].
            ulong pdpteAddr = (_cr3 & 0xFFFF_FFE0) + ((lin >> 30) & 3) * 8;
            ulong pdpte = ReadPhys64(pdpteAddr);
            if ((pdpte & 1) == 0) return PageFault(lin, access, user, false, false);
            // PDPTE reserved bits: 1–2, 5–8, above MAXPHYADDR, and 63 (no XD in a PDPTE).
            if ((pdpte & (0x1E6UL | (~_physAddrMask & 0x000F_FFFF_FFFF_F000UL) | (1UL << 63))) != 0)
                return PageFault(lin, access, user, true, true);
            table = pdpte & 0x000F_FFFF_FFFF_F000UL;
            startLevel = 2;
        }

        for (level = startLevel; level >= 1; level--)
        {
            int shift = 12 + 9 * (level - 1);
            entryAddr = table + ((lin >> shift) & 0x1FF) * 8;
            entry = ReadPhys64(entryAddr);
            if ((entry & 1) == 0) return PageFault(lin, access, user, false, false);
            bool large = level > 1 && (entry & 0x80) != 0;
            ulong rsvd = rsvdHigh;
            if (level == 4) rsvd |= 0x80;                                   // PS must be 0 in a PML4E
            if (large && level == 3) rsvd |= 0x3FFF_E000;                   // 1 GiB page: bits 29:13
            if (large && level == 2) rsvd |= 0x1F_E000;                     // 2 MiB page: bits 20:13
            if ((entry & rsvd) != 0) return PageFault(lin, access, user, true, true);
            allowW &= (entry & 2) != 0; allowU &= (entry & 4) != 0;
            if (nxe && (entry & (1UL << 63)) != 0) nx = true;
            if (level == 1 || large)
            {
                pageSizeMask = (1UL << shift) - 1;
                w.Phys = (entry & 0x000F_FFFF_FFFF_F000UL & ~pageSizeMask) | (lin & pageSizeMask);
                if (large) w.LargeMask = pageSizeMask;
                return FinishWalk(lin, access, cls, ref w, entryAddr, entry, allowW, allowU, nx, touched[..nTouched], level);
            }
            touched[nTouched++] = entryAddr;
            table = entry & 0x000F_FFFF_FFFF_F000UL;
        }
        throw new InvalidOperationException("unreachable page walk state");
    }

    private Status FinishWalk(ulong lin, Access access, ulong cls, ref Walk w, ulong leafAddr, ulong leaf,
        bool allowW, bool allowU, bool nx, ReadOnlySpan<ulong> upper, int level)
    {
        bool user = cls == ClassUser;
        bool write = access == Access.Write;
        bool is32 = (_cr4 & Cr4.PAE) == 0;
        // Rights (SDM §4.6).
        if (user)
        {
            if (!allowU) return PageFault(lin, access, user, true, false);
            if (write && !allowW) return PageFault(lin, access, user, true, false);
        }
        else
        {
            if (write && !allowW && (_cr0 & Cr0.WP) != 0) return PageFault(lin, access, user, true, false);
            if (allowU && access != Access.Execute && (_cr4 & Cr4.SMAP) != 0 && cls != ClassSupervisorAc)
                return PageFault(lin, access, user, true, false);
            if (allowU && access == Access.Execute && (_cr4 & Cr4.SMEP) != 0)
                return PageFault(lin, access, user, true, false);
        }
        if (access == Access.Execute && nx) return PageFault(lin, access, user, true, false);

        // Accessed flags on every level, dirty on the leaf for writes.
        foreach (var a in upper) SetPhysBits(a, 0x20, is32);
        ulong bits = 0x20 | (write ? 0x40UL : 0);
        if ((leaf & bits) != bits) SetPhysBits(leafAddr, bits, is32);
        w.Writable = allowW;
        w.User = allowU;
        w.NoExec = nx;
        w.Global = (leaf & 0x100) != 0 && (_cr4 & Cr4.PGE) != 0;
        w.Dirty = write || (leaf & 0x40) != 0;
        _ = level;
        return Status.Ok;
    }

    private Status PageFault(ulong lin, Access access, bool user, bool present, bool reserved)
    {
        uint err = (present ? 1u : 0) | (access == Access.Write ? 2u : 0) | (user ? 4u : 0) | (reserved ? 8u : 0);
        bool fetchBit = ((_cr4 & Cr4.PAE) != 0 && (_efer & Efer.NXE) != 0) || (_cr4 & Cr4.SMEP) != 0;
        if (access == Access.Execute && fetchBit) err |= 16;
        _pendingCr2 = lin;
        return Fault(Vector.PF, err);
    }

    /// <summary>CR2 is written when the #PF is delivered, not when it is detected.</summary>
    internal ulong _pendingCr2;

    private uint ReadPhys32(ulong gpa)
    {
        byte* p = PhysToHost(gpa);
        return p == null ? 0xFFFF_FFFF : *(uint*)p;
    }

    private ulong ReadPhys64(ulong gpa)
    {
        byte* p = PhysToHost(gpa);
        return p == null ? ulong.MaxValue : *(ulong*)p;
    }

    private void SetPhysBits(ulong gpa, ulong bits, bool is32)
    {
        byte* p = PhysToHost(gpa);
        if (p == null) return;
        // Atomic so another vCPU's concurrent update of the same entry is not lost.
        if (is32) Interlocked.Or(ref *(uint*)p, (uint)bits);
        else Interlocked.Or(ref *(ulong*)p, bits);
    }

    // ------------------------------------------------------------------ linear → host

    /// <summary>
    /// Slow path of a linear access: walk, fill the TLB when the page is RAM, and return the host
    /// pointer (null for MMIO with <paramref name="gpa"/> set).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal Status TranslateSlow(ulong lin, Access access, ulong cls, out byte* host, out ulong gpa)
    {
        _tlbMisses++;
        host = null;
        var st = WalkPageTables(lin, access, cls, out var w);
        if (st != Status.Ok) { gpa = 0; return st; }
        gpa = w.Phys;
        byte* page = PhysToHost(gpa & PageMask);
        if (page == null) return Status.Ok; // MMIO: never cached
        host = page + (gpa & 0xFFF);
        int idx = (int)((lin >> 12) & (TlbSize - 1));
        ulong tag = (lin & PageMask) | cls;
        ulong large = w.LargeMask;
        if (large != 0) _tlbHasLarge = true;
        nint addend = (nint)page - (nint)(lin & PageMask);
        // A page holding a watched data-breakpoint range stays out of the data TLBs: every access
        // to it comes back here and through the comparison in ReadLinearSlow/WriteLinearSlow.
        bool watched = _dataWatch != 0 && access != Access.Execute && IsWatchedPage(lin);
        switch (access)
        {
            case Access.Read:
                if (!watched) _tlbRead[idx] = new TlbEntry { Tag = tag, Addend = addend, Global = w.Global, LargeMask = large };
                break;
            case Access.Write:
                if (IsReadOnlyPhys(gpa)) { host = null; gpa = ulong.MaxValue; return Status.Ok; } // ROM: writes dropped
                if (_code.NoteWrite(gpa)) _endBlock = true; // the rest of this block may be stale
                if (watched) break;
                if (w.Dirty && !_code.HasCode(gpa))
                    _tlbWrite[idx] = new TlbEntry { Tag = tag, Addend = addend, Global = w.Global, LargeMask = large };
                // A writable page is readable too.
                _tlbRead[idx] = new TlbEntry { Tag = tag, Addend = addend, Global = w.Global, LargeMask = large };
                break;
            case Access.Execute:
                _tlbExec[idx] = new TlbEntry { Tag = tag, Addend = addend, Global = w.Global, PhysPage = gpa & PageMask, LargeMask = large };
                break;
        }
        return Status.Ok;
    }

    private void MarkCodePage(ulong gpa) => _code.Mark(gpa);

    internal uint PageGeneration(ulong gpa) => _code.Generation(gpa);

    /// <summary>A write reached <paramref name="gpa"/>: invalidates code decoded from its page; true if there was some.</summary>
    internal bool NoteCodeWrite(ulong gpa) => _code.NoteWrite(gpa);
}
