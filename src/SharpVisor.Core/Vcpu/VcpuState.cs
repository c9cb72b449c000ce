namespace SharpVisor.Core.Vcpu;

/// <summary>
/// A segment register with its hidden descriptor cache, in the form VMX and KVM use:
/// expanded byte-granular limit and the access-rights bits of the descriptor.
/// </summary>
public struct SegmentRegister
{
    public ushort Selector;
    public ulong Base;
    /// <summary>Limit in bytes (already scaled by G).</summary>
    public uint Limit;
    /// <summary>Type (bits 0–3), S (4), DPL (5–6), P (7), AVL (12), L (13), D/B (14), G (15), unusable (16).</summary>
    public uint Attributes;

    public const uint AttrS = 1 << 4, AttrP = 1 << 7, AttrAvl = 1 << 12, AttrL = 1 << 13, AttrDb = 1 << 14, AttrG = 1 << 15, AttrUnusable = 1 << 16;

    public readonly int Type => (int)(Attributes & 0xF);
    public readonly int Dpl => (int)((Attributes >> 5) & 3);
    public readonly bool Present => (Attributes & AttrP) != 0;
    public readonly bool IsCodeOrData => (Attributes & AttrS) != 0;
    public readonly bool Long => (Attributes & AttrL) != 0;
    public readonly bool DefaultBig => (Attributes & AttrDb) != 0;
    public readonly bool Granularity => (Attributes & AttrG) != 0;
    public readonly bool Unusable => (Attributes & AttrUnusable) != 0;

    /// <summary>A real-mode segment: base = selector × 16, 64 KiB limit, read/write (code: execute/read).</summary>
    public static SegmentRegister RealMode(ushort selector, bool code = false) => new()
    {
        Selector = selector,
        Base = (ulong)selector << 4,
        Limit = 0xFFFF,
        Attributes = (code ? 0xBu : 0x3u) | AttrS | AttrP,
    };

    /// <summary>A flat protected/long-mode segment for boot protocols.</summary>
    public static SegmentRegister Flat(ushort selector, bool code, bool longMode = false) => new()
    {
        Selector = selector,
        Base = 0,
        Limit = 0xFFFF_FFFF,
        Attributes = (code ? 0xBu : 0x3u) | AttrS | AttrP | AttrG | (longMode && code ? AttrL : AttrDb),
    };

    /// <summary>A system segment (LDT type 2, busy 32/64-bit TSS type 11).</summary>
    public static SegmentRegister System(ushort selector, ulong @base, uint limit, int type) => new()
    {
        Selector = selector,
        Base = @base,
        Limit = limit,
        Attributes = (uint)type | AttrP,
    };

    public override readonly string ToString() => $"{Selector:x4} base={Base:x} limit={Limit:x} attr={Attributes:x}";
}

public struct DescriptorTableRegister
{
    public ulong Base;
    public ushort Limit;
}

/// <summary>Indices of general registers in <see cref="VcpuState.Gpr"/>, in x86 encoding order.</summary>
public static class Gpr
{
    public const int Rax = 0, Rcx = 1, Rdx = 2, Rbx = 3, Rsp = 4, Rbp = 5, Rsi = 6, Rdi = 7,
        R8 = 8, R9 = 9, R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15;
}

/// <summary>
/// Architectural register state of a vCPU as the outside sees it: what loaders set,
/// what snapshots and the debugger read, and what engines translate to and from.
/// </summary>
public sealed class VcpuState
{
    public readonly ulong[] Gpr = new ulong[16];
    public ulong Rip;
    public ulong Rflags = 0x2;
    public SegmentRegister Es, Cs, Ss, Ds, Fs, Gs, Ldtr, Tr;
    public DescriptorTableRegister Gdtr, Idtr;
    public ulong Cr0 = 0x6000_0010, Cr2, Cr3, Cr4, Cr8;
    public ulong Efer;
    public ulong ApicBase = 0xFEE0_0900;
    /// <summary>MSRs beyond the fields above (STAR, LSTAR, SYSENTER_*, KERNEL_GS_BASE, PAT, TSC …).</summary>
    public readonly Dictionary<uint, ulong> Msrs = new();
    /// <summary>
    /// x87, MMX and SSE state as the 512-byte FXSAVE64 image (SDM Vol. 1 §10.5.1, Table 10-2): the
    /// architectural exchange format (KVM's kvm_fpu and the XSAVE legacy region carry the same fields).
    /// See <see cref="FxSaveLayout"/> for the offsets.
    /// </summary>
    public readonly byte[] FxSave = FxSaveLayout.AfterReset();
    /// <summary>XCR0, the XSAVE feature mask (bit 0, x87, is always set).</summary>
    public ulong Xcr0 = 1;

    public ulong Rax { get => Gpr[0]; set => Gpr[0] = value; }
    public ulong Rcx { get => Gpr[1]; set => Gpr[1] = value; }
    public ulong Rdx { get => Gpr[2]; set => Gpr[2] = value; }
    public ulong Rbx { get => Gpr[3]; set => Gpr[3] = value; }
    public ulong Rsp { get => Gpr[4]; set => Gpr[4] = value; }
    public ulong Rbp { get => Gpr[5]; set => Gpr[5] = value; }
    public ulong Rsi { get => Gpr[6]; set => Gpr[6] = value; }
    public ulong Rdi { get => Gpr[7]; set => Gpr[7] = value; }

    /// <summary>The state of an x86 CPU after RESET (SDM Vol. 3 §9.1.1): real mode at F000:FFF0.</summary>
    public static VcpuState AfterReset()
    {
        var s = new VcpuState { Rip = 0xFFF0 };
        s.Cs = SegmentRegister.RealMode(0xF000, code: true);
        s.Cs.Base = 0xFFFF_0000;
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.RealMode(0);
        s.Ldtr = SegmentRegister.System(0, 0, 0xFFFF, 2);
        s.Tr = SegmentRegister.System(0, 0, 0xFFFF, 11);
        s.Gdtr.Limit = s.Idtr.Limit = 0xFFFF;
        s.Rdx = 0x600; // family/model/stepping signature in EDX after reset
        return s;
    }

    /// <summary>Flat 32-bit protected mode, paging off (Linux 32-bit boot, Multiboot).</summary>
    public static VcpuState Protected32(ulong entry)
    {
        var s = new VcpuState { Rip = entry, Cr0 = 0x11 };
        s.Cs = SegmentRegister.Flat(0x10, code: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(0x18, code: false);
        s.Ldtr = SegmentRegister.System(0, 0, 0xFFFF, 2);
        s.Tr = SegmentRegister.System(0, 0, 0xFFFF, 11);
        return s;
    }

    public VcpuState Clone()
    {
        var c = new VcpuState();
        c.CopyFrom(this);
        return c;
    }

    public void CopyFrom(VcpuState o)
    {
        Array.Copy(o.Gpr, Gpr, 16);
        Rip = o.Rip; Rflags = o.Rflags;
        Es = o.Es; Cs = o.Cs; Ss = o.Ss; Ds = o.Ds; Fs = o.Fs; Gs = o.Gs; Ldtr = o.Ldtr; Tr = o.Tr;
        Gdtr = o.Gdtr; Idtr = o.Idtr;
        Cr0 = o.Cr0; Cr2 = o.Cr2; Cr3 = o.Cr3; Cr4 = o.Cr4; Cr8 = o.Cr8; Efer = o.Efer; ApicBase = o.ApicBase;
        o.FxSave.CopyTo(FxSave, 0);
        Xcr0 = o.Xcr0;
        Msrs.Clear();
        foreach (var kv in o.Msrs) Msrs[kv.Key] = kv.Value;
    }
}

/// <summary>Architectural MSR numbers shared by engines and loaders.</summary>
public static class Msr
{
    public const uint Tsc = 0x10, ApicBase = 0x1B, MiscEnable = 0x1A0, Pat = 0x277,
        SysenterCs = 0x174, SysenterEsp = 0x175, SysenterEip = 0x176,
        Efer = 0xC000_0080, Star = 0xC000_0081, Lstar = 0xC000_0082, Cstar = 0xC000_0083, Sfmask = 0xC000_0084,
        FsBase = 0xC000_0100, GsBase = 0xC000_0101, KernelGsBase = 0xC000_0102, TscAux = 0xC000_0103;
}
