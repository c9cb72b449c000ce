using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;
using SharpVisor.SoftFloat;

namespace SharpVisor.Cpu;

/// <summary>Which rules gate an x87/MMX/SSE instruction before it runs (SDM Vol. 3 §2.5 CR0/CR4, Vol. 2 exception classes).</summary>
internal enum SimdGroup : byte
{
    /// <summary>Not an x87/MMX/SSE instruction: the main switch handles it or it is unsupported.</summary>
    None = 0,
    /// <summary>ESC D8–DF and FWAIT: #NM when CR0.EM or CR0.TS (FWAIT: TS and MP).</summary>
    X87,
    /// <summary>MMX registers only: #UD when CR0.EM, #NM when CR0.TS, #MF on a pending x87 exception; x87→MMX transition.</summary>
    Mmx,
    /// <summary>SSE-family instruction with both MMX and XMM operands: the MMX rules plus #UD when CR4.OSFXSR is clear.</summary>
    MmxSse,
    /// <summary>XMM operands: #UD when CR0.EM or !CR4.OSFXSR, #NM when CR0.TS.</summary>
    Sse,
    /// <summary>SSE-family feature on general registers only (CRC32): no FPU state, no CR0/CR4 checks.</summary>
    SseGpr,
    /// <summary>VEX/EVEX/XOP/3DNow! encodings: AVX and later are not implemented nor advertised, so #UD as on such a CPU.</summary>
    Unavailable,

    /// <summary>Flag on the MMX/SSE groups: the semantics are in SseFloat.cs (else SseInteger.cs).</summary>
    FloatFlag = 0x80,
    GroupMask = 0x7F,
}

/// <summary>
/// The x87/MMX/SSE register file, the gate every such instruction passes (CR0.EM/TS/MP, CR4.OSFXSR,
/// pending x87 exceptions), operand access for 16-byte and larger memory operands, and the state
/// management instructions (FXSAVE/FXRSTOR, XSAVE family, XGETBV/XSETBV, LDMXCSR/STMXCSR, EMMS).
/// Instruction semantics live in X87.cs, SseFloat.cs and SseInteger.cs.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    // ---- x87 (SDM Vol. 1 ch. 8) ----
    /// <summary>Physical registers R0–R7; ST(i) is R[(TOP + i) mod 8]. MMX register i aliases R[i]'s significand.</summary>
    internal readonly Float80[] _fpr = new Float80[8];
    internal int _ftop;
    /// <summary>Abridged tag word: bit p set = physical register p is not empty.</summary>
    internal byte _ftagValid = 0xFF;
    /// <summary>FCW as the guest reads it; <see cref="_fpu"/> mirrors RC, PC and the masks.</summary>
    internal ushort _fcw = FxSaveLayout.ResetFcw;
    /// <summary>Sticky exception flags (FSW 5..0) and C0–C3 live here, with the rounding environment.</summary>
    internal readonly FpuContext _fpu = new();
    /// <summary>FSW bits not kept elsewhere: SF (bit 6) and ES (bit 7). B (bit 15) mirrors ES.</summary>
    internal ushort _fswSfEs;
    /// <summary>Last non-control instruction: opcode (11 bits), CS:IP and DS:operand pointer.</summary>
    internal ushort _fop, _fcs, _fds;
    internal ulong _fip, _fdp;

    // ---- SSE (SDM Vol. 1 ch. 10–12) ----
    internal readonly Vector128<byte>[] _xmm = new Vector128<byte>[16];
    internal uint _mxcsr = FxSaveLayout.ResetMxcsr;
    /// <summary>MXCSR bits that exist (DAZ included); writing any other bit is #GP(0).</summary>
    internal const uint MxcsrMask = 0xFFFF;

    // ---- XSAVE (SDM Vol. 1 ch. 13) ----
    internal ulong _xcr0 = 1;
    /// <summary>State components the engine implements: x87 (bit 0) and SSE (bit 1).</summary>
    internal const ulong XcrSupported = 3;
    internal const int XsaveAreaSize = 512 + 64;

    private static readonly SimdGroup[] s_simdGroup = BuildSimdGroups();

    private static SimdGroup[] BuildSimdGroups()
    {
        var table = new SimdGroup[Enum.GetValues<Code>().Length];
        foreach (var code in Enum.GetValues<Code>())
        {
            var enc = code.Encoding();
            if (enc is EncodingKind.VEX or EncodingKind.EVEX or EncodingKind.XOP or EncodingKind.MVEX or EncodingKind.D3NOW)
            {
                table[(int)code] = SimdGroup.Unavailable;
                continue;
            }
            var features = code.CpuidFeatures();
            bool fpu = false, simd = false;
            foreach (var f in features)
            {
                if (f is CpuidFeature.FPU or CpuidFeature.FPU287 or CpuidFeature.FPU387 or CpuidFeature.FPU287XL_ONLY or CpuidFeature.FPU387SL_ONLY)
                    fpu = true;
                if (f is CpuidFeature.MMX or CpuidFeature.SSE or CpuidFeature.SSE2 or CpuidFeature.SSE3 or CpuidFeature.SSSE3
                    or CpuidFeature.SSE4_1 or CpuidFeature.SSE4_2)
                    simd = true;
            }
            var m = code.Mnemonic();
            if (m is Mnemonic.Fisttp or Mnemonic.Wait) fpu = true; // FISTTP is listed under SSE3; it is an ESC instruction
            if (fpu) { table[(int)code] = SimdGroup.X87; continue; }
            if (!simd) continue;
            var op = code.ToOpCode();
            bool mm = false, xmm = false;
            for (int n = 0; n < op.OpCount; n++)
            {
                var k = op.GetOpKind(n);
                if (k is OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.mm_reg or OpCodeOperandKind.mm_rm) mm = true;
                if (k is OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm) xmm = true;
            }
            table[(int)code] = mm && xmm ? SimdGroup.MmxSse : mm ? SimdGroup.Mmx : xmm ? SimdGroup.Sse : SimdGroup.SseGpr;
            if (SseFloatMnemonics.Contains(m)) table[(int)code] |= SimdGroup.FloatFlag;
        }
        return table;
    }

    /// <summary>
    /// Entry from the main switch for instructions it does not list: x87, MMX and SSE go through
    /// the CR0/CR4 gate to their semantics; anything else is unsupported.
    /// </summary>
    private Status ExecuteFpuSimd(ref Instruction i)
    {
        var entry = s_simdGroup[(int)i.Code];
        bool sseFloat = (entry & SimdGroup.FloatFlag) != 0;
        var group = entry & SimdGroup.GroupMask;
        switch (group)
        {
            case SimdGroup.X87:
                if (i.Mnemonic == Mnemonic.Wait)
                {
                    if ((_cr0 & (Cr0.TS | Cr0.MP)) == (Cr0.TS | Cr0.MP)) return Fault(Vector.NM);
                }
                else if ((_cr0 & (Cr0.EM | Cr0.TS)) != 0) return Fault(Vector.NM);
                return ExecuteX87(ref i);
            case SimdGroup.Mmx:
            case SimdGroup.MmxSse:
            {
                if ((_cr0 & Cr0.EM) != 0) return UD();
                if (group == SimdGroup.MmxSse && (_cr4 & Cr4.OSFXSR) == 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                if (X87ExceptionPending) return Fault(Vector.MF);
                var st = sseFloat ? ExecuteSseFloat(ref i) : ExecuteSseInteger(ref i);
                // Any MMX instruction makes the x87 stack the MMX view (SDM Vol. 1 §9.5.1): TOP = 0, all
                // tags valid. CVTPI2PS/CVTPI2PD with a memory source touch no MMX register and, on
                // hardware, leave the x87 state alone.
                if (st == Status.Ok && !(i.Mnemonic is Mnemonic.Cvtpi2ps or Mnemonic.Cvtpi2pd && i.Op1Kind == OpKind.Memory))
                {
                    _ftop = 0;
                    _ftagValid = 0xFF;
                }
                return st;
            }
            case SimdGroup.Sse:
                if ((_cr0 & Cr0.EM) != 0 || (_cr4 & Cr4.OSFXSR) == 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                return sseFloat ? ExecuteSseFloat(ref i) : ExecuteSseInteger(ref i);
            case SimdGroup.SseGpr:
                return sseFloat ? ExecuteSseFloat(ref i) : ExecuteSseInteger(ref i);
            case SimdGroup.Unavailable:
                return UD();
        }
        return Unsupported($"instruction {FormatInstruction(ref i)}");
    }

    /// <summary>FSW.ES: an unmasked x87 exception waits for the next waiting x87/MMX instruction (#MF).</summary>
    internal bool X87ExceptionPending => (_fswSfEs & 0x80) != 0;

    // ------------------------------------------------------------------ x87 register views

    /// <summary>FSW as FNSTSW reads it.</summary>
    internal ushort Fsw
    {
        get
        {
            int es = _fswSfEs & 0x80;
            return (ushort)(_fpu.StatusBits | (_fswSfEs & 0xC0) | (_ftop << 11) | (es << 8));
        }
        set
        {
            _fpu.Flags = (FpuExceptions)(value & 0x3F);
            _fpu.C0 = (value & 0x100) != 0;
            _fpu.C1 = (value & 0x200) != 0;
            _fpu.C2 = (value & 0x400) != 0;
            _fpu.C3 = (value & 0x4000) != 0;
            _ftop = (value >> 11) & 7;
            _fswSfEs = (ushort)(value & 0xC0);
        }
    }

    /// <summary>Loads FCW. Bit 6 reads as one and bits 13–15 as zero on current processors.</summary>
    internal void SetFcw(ushort value)
    {
        _fcw = (ushort)((value & 0x1F3F) | 0x40);
        _fpu.LoadControlWord(_fcw);
    }

    /// <summary>The full 16-bit tag word (FSTENV/FSAVE): 00 valid, 01 zero, 10 special, 11 empty per physical register.</summary>
    internal ushort FullTagWord()
    {
        int tw = 0;
        for (int p = 0; p < 8; p++)
        {
            int tag;
            if ((_ftagValid & (1 << p)) == 0) tag = 3;
            else
            {
                var f = _fpr[p];
                if (f.IsZero) tag = 1;
                else if (f.Exponent == Float80.MaxExponent || f.Exponent == 0 || (f.Significand & Float80.IntegerBit) == 0) tag = 2;
                else tag = 0;
            }
            tw |= tag << (2 * p);
        }
        return (ushort)tw;
    }

    /// <summary>Loads a full tag word: only "empty" versus "not empty" is kept, as on hardware (the rest is recomputed).</summary>
    internal void SetFullTagWord(ushort tw)
    {
        byte valid = 0;
        for (int p = 0; p < 8; p++)
            if (((tw >> (2 * p)) & 3) != 3) valid |= (byte)(1 << p);
        _ftagValid = valid;
    }

    /// <summary>FNINIT's state (SDM Vol. 1 §8.1.10 / FINIT): FCW 037FH, FSW 0, all empty, pointers cleared.</summary>
    internal void X87Init()
    {
        SetFcw(0x037F);
        Fsw = 0;
        _ftagValid = 0;
        _fop = 0; _fip = 0; _fdp = 0; _fcs = 0; _fds = 0;
    }

    /// <summary>MMX register <paramref name="n"/>: the significand of physical register n.</summary>
    internal ulong GetMm(int n) => _fpr[n].Significand;

    /// <summary>Writing an MMX register sets the exponent field to all ones (SDM Vol. 1 §9.5.1).</summary>
    internal void SetMm(int n, ulong value) => _fpr[n] = new Float80(0xFFFF, value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ref Vector128<byte> Xmm(Register r) => ref _xmm[r - Register.XMM0];

    /// <summary>The SIMD floating-point exception: #XM when CR4.OSXMMEXCPT is set, else #UD (SDM Vol. 3 §6.15, interrupt 19).</summary>
    internal Status SimdFloatingPointException() => (_cr4 & Cr4.OSXMMEXCPT) != 0 ? Fault(Vector.XM) : UD();

    // ------------------------------------------------------------------ wide memory operands

    /// <summary>
    /// Reads <paramref name="dst"/>.Length bytes at seg:off. With <paramref name="alignment"/> &gt; 1, a linear
    /// address that is not a multiple of it is #GP(0) (SSE aligned forms, FXSAVE 16, XSAVE 64).
    /// </summary>
    internal Status ReadBytes(int seg, ulong off, Span<byte> dst, int alignment = 1)
    {
        var st = Linear(seg, off, dst.Length, Access.Read, out ulong lin);
        if (st != Status.Ok) return st;
        if (alignment > 1 && (lin & (ulong)(alignment - 1)) != 0) return GP(0);
        int pos = 0;
        for (; pos + 8 <= dst.Length; pos += 8)
        {
            st = ReadLinear(Wrap(lin + (ulong)pos), 8, out ulong v);
            if (st != Status.Ok) return st;
            BinaryPrimitives.WriteUInt64LittleEndian(dst[pos..], v);
        }
        for (; pos < dst.Length; pos++)
        {
            st = ReadLinear(Wrap(lin + (ulong)pos), 1, out ulong v);
            if (st != Status.Ok) return st;
            dst[pos] = (byte)v;
        }
        return Status.Ok;
    }

    /// <summary>Writes <paramref name="src"/> at seg:off, all or nothing: every page is checked before the first byte changes.</summary>
    internal Status WriteBytes(int seg, ulong off, ReadOnlySpan<byte> src, int alignment = 1)
    {
        var st = Linear(seg, off, src.Length, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        if (alignment > 1 && (lin & (ulong)(alignment - 1)) != 0) return GP(0);
        st = ProbeWrite(lin, src.Length);
        if (st != Status.Ok) return st;
        int pos = 0;
        for (; pos + 8 <= src.Length; pos += 8)
        {
            st = WriteLinear(Wrap(lin + (ulong)pos), 8, BinaryPrimitives.ReadUInt64LittleEndian(src[pos..]));
            if (st != Status.Ok) return st;
        }
        for (; pos < src.Length; pos++)
        {
            st = WriteLinear(Wrap(lin + (ulong)pos), 1, src[pos]);
            if (st != Status.Ok) return st;
        }
        return Status.Ok;
    }

    /// <summary>
    /// State images (FSAVE/FRSTOR 94–108 bytes, FXSAVE/FXRSTOR 512, XSAVE/XRSTOR 576) need more VMM
    /// round trips than one instruction's replay buffers hold when they are not in RAM, and no
    /// device has such registers: an image outside RAM stops the VM before anything changes.
    /// Also applies the segment and alignment checks (so their faults come first, as on hardware).
    /// Writes to ROM are fine: they are dropped.
    /// </summary>
    internal Status CheckStateImageInRam(int seg, ulong off, int length, Access access, int alignment, string what)
    {
        var st = Linear(seg, off, length, access, out ulong lin);
        if (st != Status.Ok) return st;
        if (alignment > 1 && (lin & (ulong)(alignment - 1)) != 0) return GP(0);
        ulong lastPage = Wrap(lin + (ulong)length - 1) & PageMask;
        for (ulong a = lin; ; a = Wrap((a & PageMask) + 0x1000))
        {
            // A TLB hit is RAM already (every context switch saves and restores an image: no walk).
            if (!InDataTlb(a, access))
            {
                st = TranslateSlow(a, access, _tlbClass, out byte* host, out ulong gpa);
                if (st != Status.Ok) return st;
                if (host == null && gpa != ulong.MaxValue)
                    return Unsupported($"{what} {(access == Access.Write ? "to" : "from")} MMIO");
            }
            if ((a & PageMask) == lastPage) return Status.Ok;
        }
    }

    /// <summary>Operand <paramref name="n"/> as 128 bits: an XMM register or a 16-byte memory operand.</summary>
    internal Status ReadXmmOperand(ref Instruction i, int n, bool aligned, out Vector128<byte> value)
    {
        if (i.GetOpKind(n) == OpKind.Register)
        {
            value = _xmm[i.GetOpRegister(n) - Register.XMM0];
            return Status.Ok;
        }
        Span<byte> buf = stackalloc byte[16];
        var st = ReadBytes(MemSeg(ref i), EffectiveAddress(ref i), buf, aligned ? 16 : 1);
        value = st == Status.Ok ? Vector128.Create<byte>(buf) : default;
        return st;
    }

    /// <summary>Writes 128 bits to operand <paramref name="n"/> (XMM register or 16-byte memory).</summary>
    internal Status WriteXmmOperand(ref Instruction i, int n, bool aligned, Vector128<byte> value)
    {
        if (i.GetOpKind(n) == OpKind.Register)
        {
            _xmm[i.GetOpRegister(n) - Register.XMM0] = value;
            return Status.Ok;
        }
        Span<byte> buf = stackalloc byte[16];
        value.CopyTo(buf);
        return WriteBytes(MemSeg(ref i), EffectiveAddress(ref i), buf, aligned ? 16 : 1);
    }

    // ------------------------------------------------------------------ state management instructions

    /// <summary>FXSAVE/FXRSTOR, XSAVE family, XGETBV/XSETBV, LDMXCSR/STMXCSR, EMMS.</summary>
    private Status StateManagement(ref Instruction i, Mnemonic m)
    {
        switch (m)
        {
            case Mnemonic.Emms:
                if ((_cr0 & Cr0.EM) != 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                if (X87ExceptionPending) return Fault(Vector.MF);
                _ftagValid = 0;
                return Status.Ok;
            case Mnemonic.Ldmxcsr: case Mnemonic.Stmxcsr:
            {
                if ((_cr0 & Cr0.EM) != 0 || (_cr4 & Cr4.OSFXSR) == 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                if (m == Mnemonic.Stmxcsr) return Write(MemSeg(ref i), EffectiveAddress(ref i), 4, _mxcsr);
                var st = Read(MemSeg(ref i), EffectiveAddress(ref i), 4, out ulong v);
                if (st != Status.Ok) return st;
                if ((v & ~(ulong)MxcsrMask) != 0) return GP(0);
                _mxcsr = (uint)v;
                return Status.Ok;
            }
            case Mnemonic.Fxsave: case Mnemonic.Fxsave64: case Mnemonic.Fxrstor: case Mnemonic.Fxrstor64:
            {
                if ((_cr0 & (Cr0.EM)) != 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                bool fx64 = m is Mnemonic.Fxsave64 or Mnemonic.Fxrstor64;
                Span<byte> area = stackalloc byte[512];
                int seg = MemSeg(ref i);
                ulong ea = EffectiveAddress(ref i);
                bool save = m is Mnemonic.Fxsave or Mnemonic.Fxsave64;
                var st = CheckStateImageInRam(seg, ea, area.Length, save ? Access.Write : Access.Read, 16, save ? "FXSAVE" : "FXRSTOR");
                if (st != Status.Ok) return st;
                if (save)
                {
                    // Only the saved state is written (SDM Vol. 1 Table 10-2): bytes 416–463 are reserved
                    // and 464–511 available to software, both left unchanged; so are the XMM8–15 slots
                    // (288–415) outside 64-bit mode. Nothing needs to be read first.
                    SaveFx(area, fx64);
                    return WriteBytes(seg, ea, area[..(_mode64 ? 416 : 288)], 16);
                }
                st = ReadBytes(seg, ea, area, 16);
                if (st != Status.Ok) return st;
                return LoadFx(area, fx64);
            }
            case Mnemonic.Xgetbv:
                if ((_cr4 & Cr4.OSXSAVE) == 0) return UD();
                if ((uint)_gpr[1] != 0) return GP(0);
                _gpr[0] = _xcr0 & 0xFFFF_FFFF;
                _gpr[2] = _xcr0 >> 32;
                return Status.Ok;
            case Mnemonic.Xsetbv:
            {
                if ((_cr4 & Cr4.OSXSAVE) == 0) return UD();
                if (_cpl != 0 || (uint)_gpr[1] != 0) return GP(0);
                ulong v = (_gpr[2] << 32) | (_gpr[0] & 0xFFFF_FFFF);
                if ((v & 1) == 0 || (v & ~XcrSupported) != 0) return GP(0);
                _xcr0 = v;
                return Status.Ok;
            }
            case Mnemonic.Xsave: case Mnemonic.Xsave64: case Mnemonic.Xsaveopt: case Mnemonic.Xsaveopt64:
            case Mnemonic.Xsavec: case Mnemonic.Xsavec64:
            case Mnemonic.Xrstor: case Mnemonic.Xrstor64:
                if ((_cr4 & Cr4.OSXSAVE) == 0) return UD();
                if ((_cr0 & Cr0.TS) != 0) return Fault(Vector.NM);
                return m is Mnemonic.Xrstor or Mnemonic.Xrstor64 ? Xrstor(ref i) : Xsave(ref i, m);
            default:
                // XSAVES/XRSTORS are not advertised (CPUID.(EAX=0DH,ECX=1):EAX[3] = 0).
                return UD();
        }
    }

    /// <summary>Writes the legacy 512-byte region (bytes 0–463) in the 32-bit (FXSAVE) or 64-bit (FXSAVE64) layout.</summary>
    internal void SaveFx(Span<byte> area, bool fx64)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(area, _fcw);
        BinaryPrimitives.WriteUInt16LittleEndian(area[2..], Fsw);
        area[4] = _ftagValid;
        area[5] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(area[6..], _fop);
        if (fx64)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(area[8..], _fip);
            BinaryPrimitives.WriteUInt64LittleEndian(area[16..], _fdp);
        }
        else
        {
            // FCS and FDS are deprecated (CPUID.(7,0):EBX[13], which CpuModel advertises): stored
            // as 0 in every mode. The engine keeps the selectors only for the real-mode FSTENV and
            // FSAVE images, whose pointers are linear (X87Environment.cs).
            BinaryPrimitives.WriteUInt32LittleEndian(area[8..], (uint)_fip);
            BinaryPrimitives.WriteUInt32LittleEndian(area[12..], 0);
            BinaryPrimitives.WriteUInt32LittleEndian(area[16..], (uint)_fdp);
            BinaryPrimitives.WriteUInt32LittleEndian(area[20..], 0);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(area[24..], _mxcsr);
        BinaryPrimitives.WriteUInt32LittleEndian(area[28..], MxcsrMask);
        for (int s = 0; s < 8; s++)
        {
            var slot = area.Slice(32 + 16 * s, 16);
            slot.Clear();
            _fpr[(_ftop + s) & 7].WriteBytes(slot);
        }
        // With CR4.OSFXSR clear the XMM registers and MXCSR may or may not be saved; we save them.
        int xmmCount = _mode64 ? 16 : 8;
        for (int x = 0; x < 16; x++)
        {
            var slot = area.Slice(160 + 16 * x, 16);
            if (x < xmmCount) _xmm[x].CopyTo(slot);
        }
    }

    /// <summary>Loads the legacy region; a reserved MXCSR bit is #GP(0) before anything changes.</summary>
    internal Status LoadFx(ReadOnlySpan<byte> area, bool fx64)
    {
        uint mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(area[24..]);
        if ((mxcsr & ~MxcsrMask) != 0) return GP(0);
        LoadX87(area, fx64);
        // Processors restore XMM and MXCSR whether or not CR4.OSFXSR is set (the SDM leaves it
        // implementation-specific); so do we.
        _mxcsr = mxcsr;
        int xmmCount = _mode64 ? 16 : 8;
        for (int x = 0; x < xmmCount; x++)
            _xmm[x] = Vector128.Create<byte>(area.Slice(160 + 16 * x, 16));
        return Status.Ok;
    }

    private void LoadX87(ReadOnlySpan<byte> area, bool fx64)
    {
        SetFcw(BinaryPrimitives.ReadUInt16LittleEndian(area));
        Fsw = BinaryPrimitives.ReadUInt16LittleEndian(area[2..]);
        _ftagValid = area[4];
        _fop = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(area[6..]) & 0x7FF);
        if (fx64)
        {
            _fip = BinaryPrimitives.ReadUInt64LittleEndian(area[8..]);
            _fdp = BinaryPrimitives.ReadUInt64LittleEndian(area[16..]);
            _fcs = _fds = 0;
        }
        else
        {
            _fip = BinaryPrimitives.ReadUInt32LittleEndian(area[8..]);
            _fcs = BinaryPrimitives.ReadUInt16LittleEndian(area[12..]);
            _fdp = BinaryPrimitives.ReadUInt32LittleEndian(area[16..]);
            _fds = BinaryPrimitives.ReadUInt16LittleEndian(area[20..]);
        }
        for (int s = 0; s < 8; s++)
            _fpr[(_ftop + s) & 7] = Float80.FromBytes(area.Slice(32 + 16 * s, 10));
    }

    private void InitX87Component()
    {
        X87Init();
        for (int p = 0; p < 8; p++) _fpr[p] = default;
    }

    /// <summary>XSAVE/XSAVEOPT (standard form) and XSAVEC (compacted form). Components 0 and 1 have the same place in both.</summary>
    private Status Xsave(ref Instruction i, Mnemonic m)
    {
        bool compacted = m is Mnemonic.Xsavec or Mnemonic.Xsavec64;
        bool fx64 = m is Mnemonic.Xsave64 or Mnemonic.Xsaveopt64 or Mnemonic.Xsavec64;
        ulong rfbm = _xcr0 & ((_gpr[2] << 32) | (_gpr[0] & 0xFFFF_FFFF));
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        Span<byte> area = stackalloc byte[XsaveAreaSize];
        var st = CheckStateImageInRam(seg, ea, area.Length, Access.Write, 64, "XSAVE");
        if (st != Status.Ok) return st;
        st = ReadBytes(seg, ea, area, 64);
        if (st != Status.Ok) return st;
        Span<byte> legacy = stackalloc byte[512];
        area[..512].CopyTo(legacy);
        SaveFx(legacy, fx64);
        // The x87 component is bytes 0–23 and 32–159; the SSE component is 160–415. MXCSR (24–31) is
        // saved with either SSE or AVX requested (SDM Vol. 1 §13.7).
        if ((rfbm & 1) != 0)
        {
            legacy[..24].CopyTo(area);
            legacy[32..160].CopyTo(area[32..]);
        }
        if ((rfbm & 2) != 0)
        {
            legacy[24..32].CopyTo(area[24..]);
            legacy[160..416].CopyTo(area[160..]);
        }
        // XINUSE is tracked conservatively as "in use" for every implemented component, which the
        // SDM permits (§13.6); so XSTATE_BV gets every requested bit.
        var header = area[512..];
        ulong xstateBv = BinaryPrimitives.ReadUInt64LittleEndian(header);
        if (compacted)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(header, rfbm);
            BinaryPrimitives.WriteUInt64LittleEndian(header[8..], (1UL << 63) | rfbm);
        }
        else
            BinaryPrimitives.WriteUInt64LittleEndian(header, (xstateBv & ~rfbm) | rfbm);
        return WriteBytes(seg, ea, area, 64);
    }

    private Status Xrstor(ref Instruction i)
    {
        bool fx64 = i.Mnemonic == Mnemonic.Xrstor64;
        ulong rfbm = _xcr0 & ((_gpr[2] << 32) | (_gpr[0] & 0xFFFF_FFFF));
        int seg = MemSeg(ref i);
        ulong ea = EffectiveAddress(ref i);
        Span<byte> area = stackalloc byte[XsaveAreaSize];
        var st = CheckStateImageInRam(seg, ea, area.Length, Access.Read, 64, "XRSTOR");
        if (st != Status.Ok) return st;
        st = ReadBytes(seg, ea, area, 64);
        if (st != Status.Ok) return st;
        var header = area[512..];
        ulong xstateBv = BinaryPrimitives.ReadUInt64LittleEndian(header);
        ulong xcompBv = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        bool compacted = (xcompBv >> 63) != 0;
        // Header checks (SDM Vol. 1 §13.8): #GP(0) on any violation, before state changes.
        if (compacted)
        {
            if ((xcompBv & ~(1UL << 63) & ~_xcr0) != 0 || (xstateBv & ~xcompBv) != 0) return GP(0);
            for (int b = 16; b < 64; b++) if (header[b] != 0) return GP(0);
        }
        else
        {
            if ((xstateBv & ~_xcr0) != 0 || xcompBv != 0) return GP(0);
            for (int b = 16; b < 64; b++) if (header[b] != 0) return GP(0);
        }
        bool loadMxcsr = compacted ? (rfbm & xstateBv & 2) != 0 : (rfbm & 6) != 0;
        uint mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(area[24..]);
        if (loadMxcsr && (mxcsr & ~MxcsrMask) != 0) return GP(0);

        if ((rfbm & 1) != 0)
        {
            if ((xstateBv & 1) != 0)
                LoadX87(area, fx64);
            else InitX87Component();
        }
        if ((rfbm & 2) != 0)
        {
            int xmmCount = _mode64 ? 16 : 8;
            for (int x = 0; x < xmmCount; x++)
                _xmm[x] = (xstateBv & 2) != 0 ? Vector128.Create<byte>(area.Slice(160 + 16 * x, 16)) : default;
        }
        if (loadMxcsr) _mxcsr = mxcsr;
        else if (compacted && (rfbm & 2) != 0) _mxcsr = FxSaveLayout.ResetMxcsr;
        return Status.Ok;
    }

    // ------------------------------------------------------------------ VcpuState exchange

    private void GetFpuState(VcpuState s)
    {
        SaveFx(s.FxSave, fx64: true);
        // SaveFx writes the registers of the current mode; the exchange image always carries all 16.
        for (int x = 0; x < 16; x++) _xmm[x].CopyTo(s.FxSave.AsSpan(160 + 16 * x, 16));
        s.Xcr0 = _xcr0;
    }

    private void SetFpuState(VcpuState s)
    {
        var fx = s.FxSave;
        uint mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(fx.AsSpan(24));
        SetFcw(BinaryPrimitives.ReadUInt16LittleEndian(fx));
        Fsw = BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(2));
        _ftagValid = fx[4];
        _fop = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(6)) & 0x7FF);
        _fip = BinaryPrimitives.ReadUInt64LittleEndian(fx.AsSpan(8));
        _fdp = BinaryPrimitives.ReadUInt64LittleEndian(fx.AsSpan(16));
        for (int st = 0; st < 8; st++)
            _fpr[(_ftop + st) & 7] = Float80.FromBytes(fx.AsSpan(32 + 16 * st, 10));
        for (int x = 0; x < 16; x++)
            _xmm[x] = Vector128.Create<byte>(fx.AsSpan(160 + 16 * x, 16));
        _mxcsr = mxcsr & MxcsrMask;
        _xcr0 = (s.Xcr0 & XcrSupported) | 1;
    }
}
