using System.Runtime.CompilerServices;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Result of executing one instruction (or one step of a delivery) — faults travel as values.</summary>
internal enum Status : byte
{
    Ok,
    /// <summary>A guest exception is pending in <see cref="SoftwareVcpu._excVector"/>; RIP is rewound to the instruction.</summary>
    Fault,
    /// <summary>The instruction needs input from the VMM (IN, MMIO read): exit now and re-execute it on the next Run.</summary>
    NeedInput,
    /// <summary>The instruction completed and leaves the engine (HLT, shutdown, unsupported feature).</summary>
    Exit,
}

/// <summary>
/// One software vCPU: architectural state plus the interpreter. Split by concern into
/// partial files: LazyFlags, Mmu, Memory, Decode, Execute*, Interrupts, Segments, System.
/// </summary>
public sealed unsafe partial class SoftwareVcpu : IVcpu
{
    private readonly SoftwareEngine _engine;
    private readonly GuestMemory _memory;
    private readonly CpuModel _model;

    // ---- architectural state ----
    internal readonly ulong[] _gpr = new ulong[16];
    internal ulong _rip;
    internal readonly SegmentRegister[] _seg = new SegmentRegister[6];
    internal SegmentRegister _ldtr, _tr;
    internal DescriptorTableRegister _gdtr, _idtr;
    internal ulong _cr0, _cr2, _cr3, _cr4, _cr8, _efer;
    internal readonly ulong[] _dr = new ulong[8];
    internal ulong _tscOffset;
    /// <summary>MSRs without a field of their own (PAT, MTRRs, MISC_ENABLE, …): set rarely, read rarely.</summary>
    internal readonly Dictionary<uint, ulong> _msrs = new();
    // MSRs used by SWAPGS, the fast system calls, RDTSCP and RDPID: fields, not dictionary look-ups.
    internal ulong _msrStar, _msrLstar, _msrCstar, _msrSfmask, _msrKernelGsBase, _msrTscAux;
    internal ulong _msrSysenterCs, _msrSysenterEsp, _msrSysenterEip;

    // ---- cached mode (recomputed by UpdateMode on CS/CR0/EFER changes) ----
    internal int _cpl;
    /// <summary>16, 32 or 64: the default operand size of the code segment.</summary>
    internal int _codeBits = 16;
    internal bool _longMode;      // EFER.LMA
    internal bool _mode64;        // LMA and CS.L
    internal bool _protected;     // CR0.PE
    internal bool _paging;        // CR0.PG

    // ---- interrupt/exception bookkeeping ----
    internal byte _excVector;
    internal uint _excError;
    internal bool _excHasError;
    internal bool _interruptShadow;   // STI / MOV SS: one instruction without interrupts
    /// <summary>The interrupt controller must be asked at the next instruction boundary (see RunCore).</summary>
    internal bool _irqCheck;
    internal bool _nmiPending, _nmiBlocked;
    internal bool _halted;
    /// <summary>Requests from other threads (<see cref="SignalKick"/>, <see cref="SignalNmi"/>), taken atomically by the run loop.</summary>
    private int _signals;
    private const int SignalKick = 1, SignalNmi = 2;

    // ---- VMM I/O protocol (see Status.NeedInput) ----
    // An instruction needs at most 2 operands × 8 bytes when each byte crosses into MMIO.
    private readonly ulong[] _inputs = new ulong[16];
    private int _inputCount, _inputPos;
    private bool _awaitingInput;
    private readonly (ExitReason Reason, ulong Address, int Size, ulong Data)[] _outputs = new (ExitReason, ulong, int, ulong)[16];
    private int _outputCount, _outputPos;

    public int Index { get; }
    public VcpuExit Exit { get; } = new();
    public IInterruptSource? InterruptSource { get; set; }

    /// <summary>Instructions executed (telemetry and the instruction-count clock).</summary>
    public long InstructionsRetired { get; internal set; }
    /// <summary>
    /// Run returns <see cref="ExitReason.Interrupted"/> at the first block boundary where
    /// <see cref="InstructionsRetired"/> has reached this (the instruction-count clock sets it to
    /// the next timer deadline); long.MaxValue: no limit.
    /// </summary>
    public long StopAtInstruction { get; set; } = long.MaxValue;
    private readonly Dictionary<string, long> _stats = new();
    internal readonly long[] _exceptionCounts = new long[256];
    internal long _ringTransitions;

    internal SoftwareVcpu(SoftwareEngine engine, int index)
    {
        _engine = engine;
        _memory = engine.Memory;
        _model = engine.Model;
        Index = index;
        InitMmu();
        SetState(VcpuState.AfterReset());
    }

    public IReadOnlyDictionary<string, long> Statistics
    {
        get
        {
            _stats["instructions"] = InstructionsRetired;
            _stats["ring-transitions"] = _ringTransitions;
            _stats["blocks-decoded"] = _blocksDecoded;
            _stats["tlb-misses"] = _tlbMisses;
            for (int v = 0; v < 32; v++)
                if (_exceptionCounts[v] != 0) _stats[$"exception-{v}"] = _exceptionCounts[v];
            return _stats;
        }
    }

    public void Kick() => Interlocked.Or(ref _signals, SignalKick);
    public void RequestNmi() => Interlocked.Or(ref _signals, SignalNmi);

    public void Dispose() { }

    // ------------------------------------------------------------------ state in/out

    public void GetState(VcpuState s)
    {
        Array.Copy(_gpr, s.Gpr, 16);
        s.Rip = _rip;
        s.Rflags = GetRflags();
        s.Es = _seg[Seg.ES]; s.Cs = _seg[Seg.CS]; s.Ss = _seg[Seg.SS];
        s.Ds = _seg[Seg.DS]; s.Fs = _seg[Seg.FS]; s.Gs = _seg[Seg.GS];
        s.Ldtr = _ldtr; s.Tr = _tr; s.Gdtr = _gdtr; s.Idtr = _idtr;
        s.Cr0 = _cr0; s.Cr2 = _cr2; s.Cr3 = _cr3; s.Cr4 = _cr4; s.Cr8 = Cr8; s.Efer = _efer;
        s.Msrs.Clear();
        foreach (var kv in _msrs) s.Msrs[kv.Key] = kv.Value;
        s.Msrs[Msr.Star] = _msrStar; s.Msrs[Msr.Lstar] = _msrLstar; s.Msrs[Msr.Cstar] = _msrCstar;
        s.Msrs[Msr.Sfmask] = _msrSfmask; s.Msrs[Msr.KernelGsBase] = _msrKernelGsBase; s.Msrs[Msr.TscAux] = _msrTscAux;
        s.Msrs[Msr.SysenterCs] = _msrSysenterCs; s.Msrs[Msr.SysenterEsp] = _msrSysenterEsp; s.Msrs[Msr.SysenterEip] = _msrSysenterEip;
        GetFpuState(s);
    }

    public void SetState(VcpuState s)
    {
        Array.Copy(s.Gpr, _gpr, 16);
        _rip = s.Rip;
        SetRflagsRaw(s.Rflags);
        _seg[Seg.ES] = s.Es; _seg[Seg.CS] = s.Cs; _seg[Seg.SS] = s.Ss;
        _seg[Seg.DS] = s.Ds; _seg[Seg.FS] = s.Fs; _seg[Seg.GS] = s.Gs;
        // In virtual-8086 mode every segment cache is selector × 16 / 64 KiB / 0xF3 whatever was
        // loaded before (the form VMX requires too): a state from a loader or snapshot that only
        // sets the selectors gets the caches the CPU would have.
        if ((s.Cr0 & Cr0.PE) != 0 && (s.Rflags & Rflags.VM) != 0)
            for (int k = 0; k < _seg.Length; k++) _seg[k] = V86Segment(_seg[k].Selector);
        _ldtr = s.Ldtr; _tr = s.Tr; _gdtr = s.Gdtr; _idtr = s.Idtr;
        _cr0 = s.Cr0 | Cr0.ET; _cr2 = s.Cr2; _cr3 = s.Cr3; _cr4 = s.Cr4; _efer = s.Efer;
        // Written through only when it differs: writing CR8 clears TPR[3:0] of the APIC.
        if (Cr8 != (s.Cr8 & 0xF)) Cr8 = s.Cr8; else _cr8 = s.Cr8 & 0xF;
        foreach (var kv in s.Msrs)
            if (!TrySetMsrField(kv.Key, kv.Value)) _msrs[kv.Key] = kv.Value;
        SetFpuState(s);
        _halted = false;
        _interruptShadow = false;
        _inputCount = _inputPos = 0; _awaitingInput = false;
        _outputCount = _outputPos = 0;
        _cpl = (_cr0 & Cr0.PE) != 0 ? s.Ss.Dpl : 0;
        UpdateMode();
        FlushTlb(global: true);
    }

    /// <summary>Stores an MSR that has a field; false for the others (they live in <see cref="_msrs"/>).</summary>
    private bool TrySetMsrField(uint msr, ulong v)
    {
        switch (msr)
        {
            case Msr.Star: _msrStar = v; return true;
            case Msr.Lstar: _msrLstar = v; return true;
            case Msr.Cstar: _msrCstar = v; return true;
            case Msr.Sfmask: _msrSfmask = v; return true;
            case Msr.KernelGsBase: _msrKernelGsBase = v; return true;
            case Msr.TscAux: _msrTscAux = v; return true;
            case Msr.SysenterCs: _msrSysenterCs = v; return true;
            case Msr.SysenterEsp: _msrSysenterEsp = v; return true;
            case Msr.SysenterEip: _msrSysenterEip = v; return true;
            default: return false;
        }
    }

    internal void SetCpl(int cpl)
    {
        if (cpl != _cpl) _ringTransitions++;
        _cpl = cpl;
        UpdateTlbClass();
    }

    /// <summary>Recomputes CPL and code size after CS, CR0 or EFER change.</summary>
    internal void UpdateMode()
    {
        _protected = (_cr0 & Cr0.PE) != 0;
        _paging = (_cr0 & Cr0.PG) != 0;
        _longMode = (_efer & Efer.LMA) != 0;
        ref var cs = ref _seg[Seg.CS];
        _mode64 = _longMode && cs.Long;
        _codeBits = _mode64 ? 64 : cs.DefaultBig ? 32 : 16;
        // CPL is its own state (it changes only through far transfers and events), except in
        // real mode (0) and virtual-8086 mode (3).
        if (!_protected) SetCpl(0);
        else if ((_flags & Rflags.VM) != 0) SetCpl(3);
        UpdateTlbClass();
    }

    // ------------------------------------------------------------------ the run loop

    public ExitReason Run()
    {
        try
        {
            return RunCore();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The one catch-all of the engine: a bug here must stop this VM cleanly, not the host.
            return SetExit(ExitReason.InternalError, $"software engine failure at {CsRip()}: {e.GetType().Name}: {e.Message}");
        }
    }

    private ExitReason RunCore()
    {
        // Complete the VMM side of the previous exit.
        if (_awaitingInput)
        {
            _awaitingInput = false;
            _inputs[_inputCount++] = Exit.Data;
        }
        if (_outputPos < _outputCount) return EmitOutput();
        _outputCount = _outputPos = 0;

        // The interrupt controller is asked only when its answer can have changed: on entry (the
        // VMM handled an exit, which may have raised or acknowledged a line), when IF goes from 0
        // to 1, after CR8 writes, and after a delivery. An interrupt raised asynchronously by
        // another thread comes with a Kick, which ends this run and re-enters it. Asking on every
        // block instead cost a scan of the APIC's IRR per block.
        _irqCheck = true;
        while (true)
        {
            if (Volatile.Read(ref _signals) != 0)
            {
                // An NMI request becomes pending; a kick leaves the run even when an NMI came with it
                // (the NMI is then delivered on the next Run).
                int signals = Interlocked.Exchange(ref _signals, 0);
                if ((signals & SignalNmi) != 0) _nmiPending = true;
                if ((signals & SignalKick) != 0) return SetExit(ExitReason.Interrupted, null);
            }

            // Interrupts are recognized at instruction boundaries, and not while an instruction
            // that exited for input waits to be re-executed with it (its replay buffer would be
            // consumed by the handler instead): _irqCheck stays set until that instruction is done.
            if (!_interruptShadow && _inputCount == 0 && (_irqCheck || _nmiPending))
            {
                _irqCheck = false;
                if (_nmiPending && !_nmiBlocked)
                {
                    _nmiPending = false;
                    _halted = false;
                    _nmiBlocked = true;
                    _irqCheck = true;
                    var st = DeliverEvent(Vector.NMI, false, 0, EventKind.External);
                    if (st != Status.Ok && FinishStatus(CompleteDelivery(st)) is var r0 && r0 != ExitReason.None) return r0;
                }
                else if ((_flags & Rflags.IF) != 0 && InterruptSource is { HasInterrupt: true } src)
                {
                    _halted = false;
                    byte vector = src.Acknowledge();
                    _irqCheck = true; // another one may be pending behind it
                    var st = DeliverEvent(vector, false, 0, EventKind.External);
                    if (st != Status.Ok && FinishStatus(CompleteDelivery(st)) is var r1 && r1 != ExitReason.None) return r1;
                }
            }
            if (_halted) return SetExit(ExitReason.Halt, null);

            bool ifBefore = (_flags & Rflags.IF) != 0;
            var status = ExecuteBlock();
            if (!ifBefore && (_flags & Rflags.IF) != 0) _irqCheck = true;
            if (status != Status.Ok)
            {
                var r = FinishStatus(status);
                if (r != ExitReason.None) return r;
            }
            // The instruction-count clock's next timer deadline: leave at the first block boundary
            // past it, the same instruction in every run of the same guest.
            if (InstructionsRetired >= StopAtInstruction) return SetExit(ExitReason.Interrupted, null);
        }
    }

    /// <summary>Turns a non-Ok status into an exit (or None when the loop can go on).</summary>
    private ExitReason FinishStatus(Status st)
    {
        switch (st)
        {
            case Status.NeedInput:
                _awaitingInput = true;
                _inputPos = 0; // the re-execution replays from the first input again
                _outputCount = _outputPos = 0; // outputs of the restarted instruction will be produced again
                return Exit.Reason;
            case Status.Exit:
                // An Unsupported outside an instruction (fetch, delivery) has no instruction to rewind:
                // its exit is already set; the name must not leak into a later instruction's exit.
                _unsupported = null;
                if (_outputPos < _outputCount) return EmitOutput();
                return Exit.Reason;
            case Status.Fault:
                // Every fault is turned into a delivery (RaiseException, CompleteDelivery) before it
                // gets here; a raw one would replay the previous exit's reason, so an engine bug that
                // lets one through stops the VM with a clear message (no assertion: it would kill the
                // host process instead).
                return SetExit(ExitReason.InternalError, $"software engine failure at {CsRip()}: undelivered {Vector.Name(_excVector)}");
            default:
                if (_outputPos < _outputCount) return EmitOutput();
                return ExitReason.None;
        }
    }

    private ExitReason EmitOutput()
    {
        var o = _outputs[_outputPos++];
        Exit.Reason = o.Reason; Exit.Address = o.Address; Exit.Size = o.Size; Exit.Data = o.Data; Exit.Message = null;
        if (_outputPos == _outputCount) _outputCount = _outputPos = 0;
        return o.Reason;
    }

    internal ExitReason SetExit(ExitReason reason, string? message)
    {
        Exit.Reason = reason; Exit.Message = message; Exit.Address = 0; Exit.Size = 0; Exit.Data = 0;
        return reason;
    }

    /// <summary>Stops the VM: the named feature is not implemented (never a silent wrong result).</summary>
    internal Status Unsupported(string what)
    {
        _unsupported = what;
        SetExit(ExitReason.InternalError, $"unsupported {what} at {CsRip()}");
        return Status.Exit;
    }

    /// <summary>Set by <see cref="Unsupported"/>: the instruction did not execute; RIP goes back to it.</summary>
    private string? _unsupported;

    /// <summary>
    /// Completes the delivery of an event that is not part of an instruction (NMI, external
    /// interrupt, the single-step trap): a fault while delivering it is raised as an exception
    /// (with the double-fault rules); input needed by the delivery (IDT, GDT or stack in MMIO)
    /// cannot be replayed, since no instruction is re-executed to ask for it again.
    /// </summary>
    internal Status CompleteDelivery(Status st)
    {
        if (st == Status.Fault) return RaiseException();
        if (st == Status.NeedInput) return DeliveryThroughMmio();
        return st;
    }

    internal Status DeliveryThroughMmio()
    {
        EndInstructionIo();
        return Unsupported("interrupt delivery through MMIO");
    }

    internal string CsRip() => $"{_seg[Seg.CS].Selector:x4}:{(_mode64 ? _rip.ToString("x16") : _rip.ToString("x8"))}";

    // ------------------------------------------------------------------ VMM I/O from instructions

    /// <summary>Input from the VMM for the current instruction: replayed value, or an exit.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal bool TryInput(ExitReason reason, ulong address, int size, out ulong value)
    {
        if (_inputPos < _inputCount)
        {
            value = _inputs[_inputPos++];
            return true;
        }
        value = 0;
        if (_inputCount == _inputs.Length)
        {
            // More inputs than any implemented instruction needs: stop the VM rather than lose one.
            // The caller returns NeedInput, which FinishInstruction turns into this exit.
            Unsupported($"more than {_inputs.Length} VMM inputs for one instruction");
            return false;
        }
        Exit.Reason = reason; Exit.Address = address; Exit.Size = size; Exit.Data = 0; Exit.Message = null;
        return false;
    }

    internal void Output(ExitReason reason, ulong address, int size, ulong data)
    {
        // An instruction produces at most 16 outputs (a page-crossing write to MMIO byte by byte,
        // or a few pushes); more would be an engine bug, which must stop the VM, never drop data.
        if (_outputCount == _outputs.Length)
        {
            // The instruction runs on, but FinishInstruction / ExecuteBlock stop the VM with this
            // exit (checked where the block ends, which this forces) instead of dropping the data.
            Unsupported($"more than {_outputs.Length} VMM outputs from one instruction");
            _endBlock = true;
            return;
        }
        _outputs[_outputCount++] = (reason, address, size, data);
        _endBlock = true; // the block stops after this instruction so the exit goes out in order
    }

    internal bool HasPendingOutput => _outputCount > 0;

    /// <summary>Called when an instruction completes or faults: its replayed inputs are used up.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void EndInstructionIo()
    {
        _inputCount = 0;
        _inputPos = 0;
    }

    internal Status Fault(byte vector)
    {
        _excVector = vector; _excHasError = false; _excError = 0;
        return Status.Fault;
    }

    internal Status Fault(byte vector, uint error)
    {
        _excVector = vector; _excHasError = true; _excError = error;
        return Status.Fault;
    }

    internal Status GP(uint error = 0) => Fault(Vector.GP, error);
    internal Status UD() => Fault(Vector.UD);
}
