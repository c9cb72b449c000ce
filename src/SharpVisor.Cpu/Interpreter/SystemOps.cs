using System.Diagnostics;
using Iced.Intel;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// System instructions: control and debug registers, descriptor-table registers, LDT/TR, the
/// sensitive stores (with CR4.UMIP), LAR/LSL/VERR/VERW/ARPL, MSRs, CPUID, TSC, fast system calls.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    private static bool IsMovSystem(ref Instruction i) =>
        (i.Op0Kind == OpKind.Register && (i.Op0Register.IsCR() || i.Op0Register.IsDR()))
        || (i.OpCount > 1 && i.Op1Kind == OpKind.Register && (i.Op1Register.IsCR() || i.Op1Register.IsDR()));

    private Status MovSystem(ref Instruction i)
    {
        if (_cpl != 0) return GP(0);
        bool toSystem = i.Op0Register.IsCR() || i.Op0Register.IsDR();
        var sysReg = toSystem ? i.Op0Register : i.Op1Register;
        var gpr = toSystem ? i.Op1Register : i.Op0Register;
        if (sysReg.IsDR())
        {
            int n = sysReg - Register.DR0;
            if (n > 7) return UD(); // DR8–DR15 (REX.R) do not exist
            // DR4/DR5 are reserved with debug extensions, aliases of DR6/DR7 without (SDM Vol. 3B §17.2.2).
            if ((n == 4 || n == 5) && (_cr4 & Cr4.DE) != 0) return UD();
            if ((_dr[7] & Dr7Gd) != 0) return GeneralDetect(); // Breakpoints.cs
            if (n == 4) n = 6; else if (n == 5) n = 7;
            if (toSystem)
            {
                ulong v = GetReg(gpr);
                if (_mode64 && n >= 6 && (v >> 32) != 0) return GP(0);
                _dr[n] = n switch { 6 => (v & 0xE00F) | 0xFFFF_0FF0, 7 => (v & 0xFFFF_2BFF) | 0x400, _ => v };
                UpdateBreakpoints();
                RecomputeSingleStep();
                _endBlock = true;
            }
            else SetReg(gpr, n == 6 ? _dr[6] | 0xFFFF_0FF0 : n == 7 ? _dr[7] | 0x400 : _dr[n]);
            return Status.Ok;
        }
        int cr = sysReg - Register.CR0;
        if (!toSystem)
        {
            ulong v = cr switch { 0 => _cr0, 2 => _cr2, 3 => _cr3, 4 => _cr4, 8 => Cr8, _ => ulong.MaxValue };
            if (v == ulong.MaxValue) return UD();
            SetReg(gpr, v);
            return Status.Ok;
        }
        ulong val = GetReg(gpr);
        _endBlock = true;
        return cr switch
        {
            0 => WriteCr0(val),
            2 => SetCr2(val),
            3 => WriteCr3(val),
            4 => WriteCr4(val),
            8 => (val >> 4) != 0 ? GP(0) : SetCr8(val),
            _ => UD(),
        };
    }

    private Status SetCr2(ulong v) { _cr2 = v; return Status.Ok; }
    private Status SetCr8(ulong v) { Cr8 = v; _irqCheck = true; return Status.Ok; }

    /// <summary>
    /// CR8 is the local APIC's TPR[7:4] (SDM Vol. 3 §11.8.6.1): one register seen two ways, so a
    /// MOV to CR8 and a write of the APIC's TPR at offset 0x80 each show in the other. Without an
    /// APIC behind the interrupt source the CPU keeps the value itself.
    /// </summary>
    internal ulong Cr8
    {
        get => InterruptSource is ITaskPriority tpr ? tpr.Cr8 : _cr8;
        set
        {
            _cr8 = value & 0xF;
            if (InterruptSource is ITaskPriority tpr) tpr.Cr8 = (byte)_cr8;
        }
    }

    internal Status WriteCr0(ulong v)
    {
        if (_mode64 || _longMode) { if ((v >> 32) != 0) return GP(0); }
        v &= 0xFFFF_FFFF;
        v |= Cr0.ET;
        if ((v & Cr0.PG) != 0 && (v & Cr0.PE) == 0) return GP(0);
        if ((v & Cr0.NW) != 0 && (v & Cr0.CD) == 0) return GP(0);
        bool pgNow = (v & Cr0.PG) != 0, pgBefore = (_cr0 & Cr0.PG) != 0;
        ulong efer = _efer;
        if (pgNow && !pgBefore && (_efer & Efer.LME) != 0)
        {
            if ((_cr4 & Cr4.PAE) == 0) return GP(0);
            if (_seg[Seg.CS].Long) return GP(0);
            efer |= Efer.LMA;
        }
        if (!pgNow && pgBefore && _longMode)
        {
            if (_mode64) return GP(0);
            efer &= ~Efer.LMA;
        }
        ulong changed = _cr0 ^ v;
        _cr0 = v;
        _efer = efer;
        if ((changed & (Cr0.PG | Cr0.WP | Cr0.PE)) != 0) FlushTlb(global: true);
        UpdateMode();
        return Status.Ok;
    }

    internal Status WriteCr3(ulong v)
    {
        if (_longMode && (v >> _model.PhysicalAddressBits) != 0) return GP(0);
        _cr3 = _longMode ? v : v & 0xFFFF_FFFF;
        FlushTlb(global: false);
        return Status.Ok;
    }

    private const ulong Cr4Supported = Cr4.VME | Cr4.PVI | Cr4.TSD | Cr4.DE | Cr4.PSE | Cr4.PAE | Cr4.MCE | Cr4.PGE
        | Cr4.PCE | Cr4.OSFXSR | Cr4.OSXMMEXCPT | Cr4.UMIP | Cr4.FSGSBASE | Cr4.SMEP | Cr4.SMAP;

    internal Status WriteCr4(ulong v)
    {
        if ((v & ~Cr4Supported) != 0 && (v & ~Cr4Supported) != Cr4.OSXSAVE) return GP(0);
        // OSXSAVE exists exactly when CPUID advertises XSAVE (with the FPU).
        if ((v & Cr4.OSXSAVE) != 0 && !_model.HasFpu) return GP(0);
        if (_longMode && (v & Cr4.PAE) == 0) return GP(0);
        if ((v & (Cr4.VME | Cr4.PVI)) != 0) return Unsupported("CR4.VME/PVI (virtual-8086 mode extensions)");
        ulong changed = _cr4 ^ v;
        _cr4 = v;
        if ((changed & (Cr4.PGE | Cr4.PAE | Cr4.PSE | Cr4.SMEP | Cr4.SMAP)) != 0) FlushTlb(global: true);
        UpdateTlbClass();
        return Status.Ok;
    }

    // ------------------------------------------------------------------ GDTR / IDTR / LDTR / TR

    private Status DescriptorTableOp(ref Instruction i, Mnemonic m)
    {
        ulong ea = EffectiveAddress(ref i);
        int seg = MemSeg(ref i);
        bool store = m is Mnemonic.Sgdt or Mnemonic.Sidt;
        if (store)
        {
            if (_cpl > 0 && (_cr4 & Cr4.UMIP) != 0) return GP(0);
            var r = m == Mnemonic.Sgdt ? _gdtr : _idtr;
            var st = Write(seg, ea, 2, r.Limit);
            if (st != Status.Ok) return st;
            return Write(seg, ea + 2, _mode64 ? 8 : 4, _mode64 ? r.Base : r.Base & 0xFFFF_FFFF);
        }
        if (_cpl != 0) return GP(0);
        var s1 = Read(seg, ea, 2, out ulong limit);
        if (s1 != Status.Ok) return s1;
        s1 = Read(seg, ea + 2, _mode64 ? 8 : 4, out ulong @base);
        if (s1 != Status.Ok) return s1;
        if (_mode64 && !IsCanonical(@base)) return GP(0);
        // With a 16-bit operand size only 24 bits of the base are loaded.
        if (!_mode64 && i.CodeSize != CodeSize.Code64 && OpSizeIs16(ref i)) @base &= 0xFF_FFFF;
        var reg = new DescriptorTableRegister { Base = @base, Limit = (ushort)limit };
        if (m == Mnemonic.Lgdt) _gdtr = reg; else _idtr = reg;
        return Status.Ok;
    }

    private bool OpSizeIs16(ref Instruction i) => i.Code is Code.Lgdt_m1632_16 or Code.Lidt_m1632_16;

    private Status Lldt(ref Instruction i)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        if (_cpl != 0) return GP(0);
        var st = ReadOp(ref i, 0, 2, out ulong selv);
        if (st != Status.Ok) return st;
        ushort sel = (ushort)selv;
        if ((sel & 0xFFFC) == 0)
        {
            _ldtr = new SegmentRegister { Selector = sel, Attributes = SegmentRegister.AttrUnusable };
            return Status.Ok;
        }
        if ((sel & 4) != 0) return GP((uint)(sel & 0xFFFC));
        st = ReadDescriptor(sel, out ulong raw, out ulong addr);
        if (st != Status.Ok) return st;
        var d = FromDescriptor(sel, raw);
        if (d.IsCodeOrData || d.Type != 2) return GP((uint)(sel & 0xFFFC));
        if (!d.Present) return Fault(Vector.NP, (uint)(sel & 0xFFFC));
        if (_longMode)
        {
            st = ReadSystem(addr + 8, 8, out ulong hi);
            if (st != Status.Ok) return st;
            d.Base |= (hi & 0xFFFF_FFFF) << 32;
        }
        _ldtr = d;
        return Status.Ok;
    }

    private Status Ltr(ref Instruction i)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        if (_cpl != 0) return GP(0);
        var st = ReadOp(ref i, 0, 2, out ulong selv);
        if (st != Status.Ok) return st;
        ushort sel = (ushort)selv;
        if ((sel & 0xFFFC) == 0) return GP(0);
        if ((sel & 4) != 0) return GP((uint)(sel & 0xFFFC));
        st = ReadDescriptor(sel, out ulong raw, out ulong addr);
        if (st != Status.Ok) return st;
        var d = FromDescriptor(sel, raw);
        bool ok = !d.IsCodeOrData && (_longMode ? d.Type == 9 : d.Type is 1 or 9);
        if (!ok) return GP((uint)(sel & 0xFFFC));
        if (!d.Present) return Fault(Vector.NP, (uint)(sel & 0xFFFC));
        if (_longMode)
        {
            st = ReadSystem(addr + 8, 8, out ulong hi);
            if (st != Status.Ok) return st;
            d.Base |= (hi & 0xFFFF_FFFF) << 32;
        }
        // Mark busy in the descriptor and in the cache.
        st = WriteSystem(addr + 5, 1, (byte)((raw >> 40) | 2));
        if (st != Status.Ok) return st;
        d.Attributes |= 2;
        _tr = d;
        return Status.Ok;
    }

    private Status StoreSystemSelector(ref Instruction i, ushort sel)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        if (_cpl > 0 && (_cr4 & Cr4.UMIP) != 0) return GP(0);
        // Register destinations get the selector zero-extended; memory gets 16 bits.
        if (i.Op0Kind == OpKind.Register) { SetReg(i.Op0Register, sel); return Status.Ok; }
        return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, sel);
    }

    private Status Smsw(ref Instruction i)
    {
        if (_cpl > 0 && _protected && (_cr4 & Cr4.UMIP) != 0) return GP(0);
        if (i.Op0Kind == OpKind.Register)
        {
            // Register forms store all of CR0 that fits (upper bits of a 32-bit destination are CR0's).
            int size = RegSize(i.Op0Register);
            SetReg(i.Op0Register, size == 2 ? _cr0 & 0xFFFF : _cr0);
            return Status.Ok;
        }
        return Write(MemSeg(ref i), EffectiveAddress(ref i), 2, _cr0 & 0xFFFF);
    }

    private Status Lmsw(ref Instruction i)
    {
        if (_protected && _cpl != 0) return GP(0);
        var st = ReadOp(ref i, 0, 2, out ulong v);
        if (st != Status.Ok) return st;
        // LMSW changes PE, MP, EM, TS only, and cannot clear PE.
        ulong nv = (_cr0 & ~0xEUL) | (v & 0xF);
        if ((_cr0 & Cr0.PE) != 0) nv |= Cr0.PE;
        _endBlock = true;
        return WriteCr0(nv);
    }

    // ------------------------------------------------------------------ LAR / LSL / VERR / VERW / ARPL

    /// <summary>Reads a descriptor for LAR/LSL/VERR/VERW without faulting on a bad selector (ZF=0 instead).</summary>
    private bool TryDescriptorForQuery(ushort sel, out ulong raw, out SegmentRegister d, out Status fault)
    {
        raw = 0; d = default; fault = Status.Ok;
        if ((sel & 0xFFFC) == 0) return false;
        bool ldt = (sel & 4) != 0;
        ulong limit = ldt ? (_ldtr.Unusable ? 0 : _ldtr.Limit) : _gdtr.Limit;
        if ((ldt && _ldtr.Unusable) || (ulong)(sel | 7) > limit) return false;
        var st = ReadSystem((ldt ? _ldtr.Base : _gdtr.Base) + (ulong)(sel & ~7), 8, out raw);
        if (st != Status.Ok) { fault = st; return false; }
        d = FromDescriptor(sel, raw);
        return true;
    }

    private void SetZf(bool z)
    {
        MaterializeFlags();
        _flags = z ? _flags | Rflags.ZF : _flags & ~Rflags.ZF;
    }

    private Status LarLsl(ref Instruction i, bool lar)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        var st = ReadOp(ref i, 1, 2, out ulong selv);
        if (st != Status.Ok) return st;
        ushort sel = (ushort)selv;
        if (!TryDescriptorForQuery(sel, out ulong raw, out var d, out var fault))
        {
            if (fault != Status.Ok) return fault;
            SetZf(false);
            return Status.Ok;
        }
        bool valid;
        if (d.IsCodeOrData)
        {
            bool conformingCode = (d.Type & 0xC) == 0xC;
            valid = conformingCode || (d.Dpl >= _cpl && d.Dpl >= (sel & 3));
        }
        else
        {
            // System types valid for LAR and LSL (LAR also accepts gates), per mode.
            int t = d.Type;
            bool ok = _longMode
                ? (lar ? t is 2 or 9 or 11 or 12 : t is 2 or 9 or 11)
                : (lar ? t is 1 or 2 or 3 or 4 or 5 or 9 or 11 or 12 : t is 1 or 2 or 3 or 9 or 11);
            valid = ok && d.Dpl >= _cpl && d.Dpl >= (sel & 3);
        }
        if (!valid) { SetZf(false); return Status.Ok; }
        int size = RegSize(i.Op0Register);
        ulong result = lar ? (raw >> 32) & 0x00F0_FF00 : d.Limit;
        SetReg(i.Op0Register, size == 2 ? result & 0xFFFF : result & 0xFFFF_FFFF);
        SetZf(true);
        return Status.Ok;
    }

    private Status Verify(ref Instruction i, bool write)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        var st = ReadOp(ref i, 0, 2, out ulong selv);
        if (st != Status.Ok) return st;
        ushort sel = (ushort)selv;
        if (!TryDescriptorForQuery(sel, out _, out var d, out var fault))
        {
            if (fault != Status.Ok) return fault;
            SetZf(false);
            return Status.Ok;
        }
        bool ok = d.IsCodeOrData;
        if (ok)
        {
            bool code = (d.Type & 8) != 0, conforming = code && (d.Type & 4) != 0;
            if (!conforming && (d.Dpl < _cpl || d.Dpl < (sel & 3))) ok = false;
            else if (write) ok = !code && (d.Type & 2) != 0;
            else ok = !code || (d.Type & 2) != 0;
        }
        SetZf(ok);
        return Status.Ok;
    }

    private Status Arpl(ref Instruction i)
    {
        if (!_protected || (_flags & Rflags.VM) != 0) return UD();
        var st = ReadRmw(ref i, 2, out ulong dst, out ulong lin);
        if (st != Status.Ok) return st;
        ulong src = GetReg(i.Op1Register);
        if ((dst & 3) < (src & 3))
        {
            st = WriteRmw(ref i, 2, lin, (dst & ~3UL) | (src & 3));
            if (st != Status.Ok) return st;
            SetZf(true);
        }
        else SetZf(false);
        return Status.Ok;
    }

    // ------------------------------------------------------------------ CPUID, TSC, RDRAND

    private Status Cpuid()
    {
        _model.Cpuid((uint)_gpr[0], (uint)_gpr[1], Index, _engine.CpuCount, out uint a, out uint b, out uint c, out uint d);
        if ((uint)_gpr[0] == 1 && (_cr4 & Cr4.OSXSAVE) != 0) c |= 1u << 27;
        _gpr[0] = a; _gpr[3] = b; _gpr[1] = c; _gpr[2] = d;
        return Status.Ok;
    }

    /// <summary>
    /// The TSC: the engine's clock (the machine clock, so device timers and the TSC agree) at the
    /// model's frequency, plus the offset a WRMSR to IA32_TSC set. Without a clock, host time.
    /// </summary>
    private const uint TscAdjustMsr = 0x3B;

    private ulong ReadTsc() => TscAtNs(_engine.Clock?.NowNs ?? HostNs()) + _tscOffset;

    private static long HostNs() => (long)((Int128)Stopwatch.GetTimestamp() * 1_000_000_000 / Stopwatch.Frequency);

    private ulong TscAtNs(long ns) => (ulong)((Int128)ns * _model.TscHz / 1_000_000_000);

    /// <summary>The clock time (ns) at which this vCPU's TSC reads <paramref name="tsc"/>: for the APIC's TSC-deadline timer.</summary>
    public long TscToNs(ulong tsc)
    {
        Int128 ns = ((Int128)tsc - _tscOffset) * 1_000_000_000 / _model.TscHz;
        return ns > long.MaxValue ? long.MaxValue : ns < 0 ? 0 : (long)ns;
    }

    private Status Rdtsc(bool p)
    {
        if ((_cr4 & Cr4.TSD) != 0 && _cpl != 0 && _protected) return GP(0);
        ulong t = ReadTsc();
        _gpr[0] = t & 0xFFFF_FFFF;
        _gpr[2] = t >> 32;
        if (p) _gpr[1] = _msrTscAux & 0xFFFF_FFFF;
        return Status.Ok;
    }

    /// <summary>RDRAND's reproducible stream in a deterministic run (SoftwareEngine.RandomSeed), else null.</summary>
    private Random? _seededRandom;

    private Status Rdrand(ref Instruction i)
    {
        int size = RegSize(i.Op0Register);
        // Guests seed their own cryptography from RDRAND/RDSEED: the host's CSPRNG, unless the
        // run is meant to be reproducible.
        ulong v;
        if (_engine.RandomSeed is int seed)
        {
            _seededRandom ??= new Random(seed ^ (Index * 0x3C6EF372));
            v = ((ulong)_seededRandom.NextInt64() << 1) | (uint)_seededRandom.Next(2); // 63 bits, then bit 0
        }
        else
        {
            Span<byte> b = stackalloc byte[8];
            System.Security.Cryptography.RandomNumberGenerator.Fill(b);
            v = BitConverter.ToUInt64(b);
        }
        SetReg(i.Op0Register, v & SizeMask(size));
        MaterializeFlags();
        _flags = (_flags & ~Rflags.Arith) | Rflags.CF;
        return Status.Ok;
    }

    // ------------------------------------------------------------------ MSRs

    private Status Rdmsr()
    {
        if (_cpl != 0) return GP(0);
        uint msr = (uint)_gpr[1];
        if (!TryReadMsr(msr, out ulong v)) return GP(0);
        _gpr[0] = v & 0xFFFF_FFFF;
        _gpr[2] = v >> 32;
        return Status.Ok;
    }

    private Status Wrmsr()
    {
        if (_cpl != 0) return GP(0);
        uint msr = (uint)_gpr[1];
        ulong v = (_gpr[2] << 32) | (_gpr[0] & 0xFFFF_FFFF);
        return TryWriteMsr(msr, v);
    }

    private static bool IsMtrr(uint msr) => msr is >= 0x200 and <= 0x20F or 0x250 or 0x258 or 0x259 or (>= 0x268 and <= 0x26F) or 0x2FF;

    internal bool TryReadMsr(uint msr, out ulong v)
    {
        v = 0;
        switch (msr)
        {
            case Msr.Efer: v = _efer; return true;
            case Msr.Tsc: v = ReadTsc(); return true;
            // IA32_TSC_ADJUST (SDM Vol. 3 §17.17.3): the offset software added to the TSC.
            case TscAdjustMsr: v = _tscOffset; return true;
            case Msr.FsBase: v = _seg[Seg.FS].Base; return true;
            case Msr.GsBase: v = _seg[Seg.GS].Base; return true;
            case 0xFE: v = 0x508; return true;          // MTRRcap: 8 variable ranges, fixed ranges, WC
            case 0x17: v = 0; return true;               // IA32_PLATFORM_ID
            case 0x8B: v = 0; return true;               // IA32_BIOS_SIGN_ID (microcode revision)
            case 0x3A: v = 1; return true;               // IA32_FEATURE_CONTROL: locked, VMX off
            case Msr.MiscEnable: v = _msrs.GetValueOrDefault(msr, 1UL); return true; // fast strings
            case Msr.Pat: v = _msrs.GetValueOrDefault(msr, 0x0007_0406_0007_0406UL); return true;
            case Msr.ApicBase:
                if (_engine.PlatformMsrs is { } h && h.TryRead(Index, msr, out v)) return true;
                v = _msrs.GetValueOrDefault(msr, 0xFEE0_0000UL | (Index == 0 ? 0x900UL : 0x800UL));
                return true;
            case Msr.Star: v = _msrStar; return true;
            case Msr.Lstar: v = _msrLstar; return true;
            case Msr.Cstar: v = _msrCstar; return true;
            case Msr.Sfmask: v = _msrSfmask; return true;
            case Msr.KernelGsBase: v = _msrKernelGsBase; return true;
            case Msr.TscAux: v = _msrTscAux; return true;
            case Msr.SysenterCs: v = _msrSysenterCs; return true;
            case Msr.SysenterEsp: v = _msrSysenterEsp; return true;
            case Msr.SysenterEip: v = _msrSysenterEip; return true;
        }
        if (IsMtrr(msr)) { v = _msrs.GetValueOrDefault(msr); return true; }
        return _engine.PlatformMsrs is { } p && p.TryRead(Index, msr, out v);
    }

    internal Status TryWriteMsr(uint msr, ulong v)
    {
        switch (msr)
        {
            case Msr.Efer:
            {
                ulong allowed = Efer.SCE | Efer.LME | Efer.NXE | Efer.LMA;
                if ((v & ~allowed) != 0) return GP(0);
                if (((v ^ _efer) & Efer.LME) != 0 && _paging) return GP(0);
                ulong nv = (v & ~Efer.LMA) | (_efer & Efer.LMA);
                bool flush = ((nv ^ _efer) & Efer.NXE) != 0;
                _efer = nv;
                if (flush) FlushTlb(global: true);
                UpdateMode();
                _endBlock = true;
                return Status.Ok;
            }
            // A write to IA32_TSC changes IA32_TSC_ADJUST by the same amount, and the reverse.
            case Msr.Tsc: _tscOffset = v - (ReadTsc() - _tscOffset); return Status.Ok;
            case TscAdjustMsr: _tscOffset = v; return Status.Ok;
            case Msr.FsBase: case Msr.GsBase: case Msr.KernelGsBase: case Msr.Lstar: case Msr.Cstar:
            case Msr.SysenterEsp: case Msr.SysenterEip:
                if (!IsCanonical(v)) return GP(0);
                if (msr == Msr.FsBase) _seg[Seg.FS].Base = v;
                else if (msr == Msr.GsBase) _seg[Seg.GS].Base = v;
                else TrySetMsrField(msr, v);
                return Status.Ok;
            case Msr.Star: case Msr.Sfmask: case Msr.SysenterCs:
                TrySetMsrField(msr, msr == Msr.Sfmask ? v & 0xFFFF_FFFF : v);
                return Status.Ok;
            case Msr.TscAux:
                if ((v >> 32) != 0) return GP(0);
                _msrTscAux = v;
                return Status.Ok;
            case Msr.Pat:
                for (int b = 0; b < 8; b++)
                {
                    ulong t = (v >> (b * 8)) & 0xFF;
                    if (t is 2 or 3 or > 7) return GP(0);
                }
                _msrs[msr] = v;
                return Status.Ok;
            case Msr.MiscEnable: _msrs[msr] = v; return Status.Ok;
            case Msr.ApicBase:
                if (_engine.PlatformMsrs is { } h && h.TryWrite(Index, msr, v)) return Status.Ok;
                _msrs[msr] = v;
                return Status.Ok;
            case 0x8B: return Status.Ok; // microcode update trigger: nothing to load
        }
        if (IsMtrr(msr)) { _msrs[msr] = v; return Status.Ok; }
        if (_engine.PlatformMsrs is { } p && p.TryWrite(Index, msr, v)) return Status.Ok;
        return GP(0);
    }

    // ------------------------------------------------------------------ SWAPGS, FSGSBASE

    private Status Swapgs()
    {
        if (!_mode64) return UD();
        if (_cpl != 0) return GP(0);
        (_msrKernelGsBase, _seg[Seg.GS].Base) = (_seg[Seg.GS].Base, _msrKernelGsBase);
        return Status.Ok;
    }

    private Status FsGsBase(ref Instruction i, Mnemonic m)
    {
        if (!_mode64 || (_cr4 & Cr4.FSGSBASE) == 0) return UD();
        int seg = m is Mnemonic.Rdfsbase or Mnemonic.Wrfsbase ? Seg.FS : Seg.GS;
        if (m is Mnemonic.Rdfsbase or Mnemonic.Rdgsbase)
        {
            SetReg(i.Op0Register, _seg[seg].Base);
            return Status.Ok;
        }
        ulong v = GetReg(i.Op0Register);
        if (!IsCanonical(v)) return GP(0);
        _seg[seg].Base = v;
        return Status.Ok;
    }

    // ------------------------------------------------------------------ SYSCALL / SYSRET / SYSENTER / SYSEXIT

    private Status Syscall()
    {
        // Intel processors implement SYSCALL only in 64-bit mode.
        if (!_mode64 || (_efer & Efer.SCE) == 0) return UD();
        _endBlock = true;
        ulong star = _msrStar;
        ushort cs = (ushort)((star >> 32) & 0xFFFC);
        _gpr[Gpr.Rcx] = _rip;
        _gpr[Gpr.R11] = GetRflags() & ~Rflags.RF;
        ulong mask = _msrSfmask;
        SetRflagsRaw(GetRflags() & ~mask & ~Rflags.RF);
        _seg[Seg.CS] = new SegmentRegister { Selector = cs, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xB | SegmentRegister.AttrS | SegmentRegister.AttrP | SegmentRegister.AttrL | SegmentRegister.AttrG };
        _seg[Seg.SS] = new SegmentRegister { Selector = (ushort)(cs + 8), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0x3 | SegmentRegister.AttrS | SegmentRegister.AttrP | SegmentRegister.AttrDb | SegmentRegister.AttrG };
        SetCpl(0);
        UpdateMode();
        RecomputeSingleStep();
        _rip = _msrLstar;
        return Status.Ok;
    }

    private Status Sysret(ref Instruction i)
    {
        if (!_longMode || (_efer & Efer.SCE) == 0) return UD();
        if (_cpl != 0 || !_protected) return GP(0);
        bool to64 = i.Code == Code.Sysretq;
        if (to64 && !IsCanonical(_gpr[Gpr.Rcx])) return GP(0);
        _endBlock = true;
        ulong star = _msrStar;
        ushort baseSel = (ushort)(star >> 48);
        ushort cs = (ushort)((to64 ? baseSel + 16 : baseSel) | 3);
        _seg[Seg.CS] = new SegmentRegister
        {
            Selector = cs, Base = 0, Limit = 0xFFFF_FFFF,
            Attributes = 0xB | SegmentRegister.AttrS | SegmentRegister.AttrP | (3u << 5) | SegmentRegister.AttrG | (to64 ? SegmentRegister.AttrL : SegmentRegister.AttrDb),
        };
        // SS keeps its cached base/limit on Intel except the selector and DPL; model the documented flat SS.
        _seg[Seg.SS] = new SegmentRegister { Selector = (ushort)((baseSel + 8) | 3), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0x3 | SegmentRegister.AttrS | SegmentRegister.AttrP | (3u << 5) | SegmentRegister.AttrDb | SegmentRegister.AttrG };
        SetRflagsRaw((_gpr[Gpr.R11] & ~(Rflags.RF | Rflags.VM)) | Rflags.Reserved1);
        SetCpl(3);
        UpdateMode();
        RecomputeSingleStep();
        _rip = to64 ? _gpr[Gpr.Rcx] : _gpr[Gpr.Rcx] & 0xFFFF_FFFF;
        return Status.Ok;
    }

    private Status Sysenter()
    {
        if (!_protected) return GP(0);
        ulong csv = _msrSysenterCs;
        if ((csv & 0xFFFC) == 0) return GP(0);
        _endBlock = true;
        ushort cs = (ushort)(csv & 0xFFFC);
        bool lm = _longMode;
        _seg[Seg.CS] = new SegmentRegister { Selector = cs, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xB | SegmentRegister.AttrS | SegmentRegister.AttrP | SegmentRegister.AttrG | (lm ? SegmentRegister.AttrL : SegmentRegister.AttrDb) };
        _seg[Seg.SS] = new SegmentRegister { Selector = (ushort)(cs + 8), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0x3 | SegmentRegister.AttrS | SegmentRegister.AttrP | SegmentRegister.AttrDb | SegmentRegister.AttrG };
        _flags &= ~(Rflags.VM | Rflags.IF | Rflags.RF);
        SetCpl(0);
        UpdateMode();
        RecomputeSingleStep();
        ulong esp = _msrSysenterEsp, eip = _msrSysenterEip;
        _gpr[Gpr.Rsp] = lm ? esp : esp & 0xFFFF_FFFF;
        _rip = lm ? eip : eip & 0xFFFF_FFFF;
        return Status.Ok;
    }

    private Status Sysexit(ref Instruction i)
    {
        ulong csv = _msrSysenterCs;
        if (!_protected || _cpl != 0 || (csv & 0xFFFC) == 0) return GP(0);
        _endBlock = true;
        bool to64 = i.Code == Code.Sysexitq;
        ushort cs = (ushort)(((csv & 0xFFFC) + (to64 ? 32UL : 16UL)) | 3);
        _seg[Seg.CS] = new SegmentRegister { Selector = cs, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xB | SegmentRegister.AttrS | SegmentRegister.AttrP | (3u << 5) | SegmentRegister.AttrG | (to64 ? SegmentRegister.AttrL : SegmentRegister.AttrDb) };
        _seg[Seg.SS] = new SegmentRegister { Selector = (ushort)((cs + 8) | 3), Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0x3 | SegmentRegister.AttrS | SegmentRegister.AttrP | (3u << 5) | SegmentRegister.AttrDb | SegmentRegister.AttrG };
        SetCpl(3);
        UpdateMode();
        RecomputeSingleStep();
        _gpr[Gpr.Rsp] = to64 ? _gpr[Gpr.Rcx] : _gpr[Gpr.Rcx] & 0xFFFF_FFFF;
        _rip = to64 ? _gpr[Gpr.Rdx] : _gpr[Gpr.Rdx] & 0xFFFF_FFFF;
        return Status.Ok;
    }
}
