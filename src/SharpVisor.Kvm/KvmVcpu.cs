// One KVM vCPU (Linux Documentation/virt/kvm/api.rst, "KVM_RUN" and "struct kvm_run").
// Run() turns kvm_run exits into Core's exit model:
// - KVM_EXIT_IO (PioExit.cs): string I/O (count > 1) is presented one element per exit, in order; KVM_RUN is
//   re-entered only after the last one, with the values the run loop supplied for IN already in
//   the kvm_run data area (KVM completes the instruction on re-entry).
// - KVM_EXIT_MMIO: a read is completed by copying Exit.Data into run->mmio.data before re-entry.
// - KVM_EXIT_HLT → Halt; KVM_EXIT_SHUTDOWN and KVM_EXIT_SYSTEM_EVENT → Shutdown; KVM_EXIT_INTR
//   and KVM_RUN's EINTR → Interrupted; KVM_EXIT_DEBUG → Debug; KVM_EXIT_IRQ_WINDOW_OPEN and
//   KVM_EXIT_SET_TPR (CR8 lowered) loop to inject; everything else (FAIL_ENTRY, INTERNAL_ERROR, UNKNOWN, unexpected) → InternalError
//   with one line naming the exit, its sub-reason and CS:RIP. A failing KVM_RUN, KVM_NMI or
//   KVM_INTERRUPT is an InternalError too: nothing a guest does makes Run throw.
// Interrupts without an in-kernel irqchip (api.rst, KVM_INTERRUPT): before each KVM_RUN, when
// the InterruptSource has one and the last exit said ready_for_interrupt_injection with IF set,
// the vector is acknowledged and queued with KVM_INTERRUPT; otherwise request_interrupt_window
// makes KVM exit as soon as the guest can take it. CR8 travels in kvm_run.cr8 to and from the
// InterruptSource's TPR (ITaskPriority) around every KVM_RUN. Kick: see KickSignal.cs.
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Vcpu;
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm;

public sealed unsafe class KvmVcpu : IVcpu
{
    private const int EINTR = 4, EAGAIN = 11;
    private const int ExitCounters = 64;
    private const int MaxMsrs = 64;

    /// <summary>
    /// MSRs kept in <see cref="VcpuState.Msrs"/>: Core's <see cref="Msr"/> list less the four that
    /// are fields of VcpuState (ApicBase, Efer, and the FS/GS bases held in the segment registers).
    /// Only those this KVM and CPUID accept are used (probed at creation).
    /// </summary>
    private static ReadOnlySpan<uint> MsrCandidates =>
    [
        Msr.Tsc, Msr.MiscEnable, Msr.Pat, Msr.SysenterCs, Msr.SysenterEsp, Msr.SysenterEip,
        Msr.Star, Msr.Lstar, Msr.Cstar, Msr.Sfmask, Msr.KernelGsBase, Msr.TscAux,
    ];

    private readonly int _fd;
    private readonly kvm_run* _run;
    private readonly nuint _runSize;
    private readonly int _pid;
    private readonly int _kickSignal;
    private readonly uint[] _msrs;
    private readonly long[] _exitCounts = new long[ExitCounters];
    private long _eintrCount, _interruptsInjected, _nmisInjected, _ioElements;

    // The exit being completed across Run calls.
    private enum Pending : byte { None, Io, MmioRead }
    private Pending _pending;
    private PioExit _pio;

    private int _runTid;          // Linux tid of the thread in Run (Kick signals it)
    private int _runManagedId;    // which managed thread _runTid belongs to
    private int _nmiPending;
    private int _disposed;

    public int Index { get; }
    public VcpuExit Exit { get; } = new();
    public IInterruptSource? InterruptSource { get; set; }

    internal KvmVcpu(KvmEngine engine, int index)
    {
        Index = index;
        _pid = Libc.getpid();
        _kickSignal = KickSignal.Number; // install the handler before anyone can Kick
        _fd = KvmException.Check(Libc.ioctl(engine.VmFd, KvmH.KVM_CREATE_VCPU, index), $"KVM_CREATE_VCPU({index})");
        try
        {
            _runSize = (nuint)engine.VcpuMmapSize;
            void* p = Libc.mmap(null, _runSize, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, _fd, 0);
            if (p == Libc.MAP_FAILED) KvmException.Check(-1, "mmap of kvm_run");
            _run = (kvm_run*)p;
            SetCpuid(KvmCpuid.Build(engine.SupportedCpuid, index, engine.VcpuCount));
            _msrs = ProbeMsrs();
        }
        catch
        {
            if (_run != null) Libc.munmap(_run, _runSize);
            Libc.close(_fd);
            throw;
        }
    }

    /// <summary>The CPUID entries set on this vCPU (KVM_GET_CPUID2), as (function, index, eax, ebx, ecx, edx).</summary>
    public IReadOnlyList<(uint Function, uint Index, uint Eax, uint Ebx, uint Ecx, uint Edx)> GetCpuid()
    {
        const int max = 256;
        int bytes = sizeof(kvm_cpuid2) + max * sizeof(kvm_cpuid_entry2);
        byte* buf = (byte*)NativeMemory.AllocZeroed((nuint)bytes);
        try
        {
            ((kvm_cpuid2*)buf)->nent = max;
            KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_CPUID2, buf), "KVM_GET_CPUID2");
            var entries = new ReadOnlySpan<kvm_cpuid_entry2>(buf + sizeof(kvm_cpuid2), (int)((kvm_cpuid2*)buf)->nent);
            var list = new List<(uint, uint, uint, uint, uint, uint)>(entries.Length);
            foreach (var e in entries) list.Add((e.function, e.index, e.eax, e.ebx, e.ecx, e.edx));
            return list;
        }
        finally
        {
            NativeMemory.Free(buf);
        }
    }

    public ExitReason Run()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        kvm_run* run = _run;

        // Complete the previous exit: the run loop has handled Exit (and filled Data for reads).
        switch (_pending)
        {
            case Pending.Io:
                if (_pio.Advance(Exit, out var next))
                {
                    _ioElements++;
                    return next;
                }
                _pending = Pending.None;
                break;
            case Pending.MmioRead:
                ulong value = Exit.Data;
                for (uint i = 0; i < run->mmio.len && i < 8; i++) run->mmio.data[i] = (byte)(value >> (int)(8 * i));
                _pending = Pending.None;
                break;
        }

        int managedId = Environment.CurrentManagedThreadId;
        if (managedId != _runManagedId)
        {
            _runManagedId = managedId;
            Volatile.Write(ref _runTid, Libc.gettid());
        }

        while (true)
        {
            string? failedIoctl = InjectEvents(run);
            if (failedIoctl is not null)
            {
                int errno = Marshal.GetLastPInvokeError();
                return InternalError($"{failedIoctl} failed: {Libc.ErrnoName(errno)} ({errno}) at {Where()}");
            }
            // Without KVM's in-kernel APIC, kvm_run.cr8 carries CR8 both ways: KVM loads it on
            // entry and stores it on every exit. Our APIC's TPR is the one register behind it.
            // Written back only when the guest changed it: a CR8 write clears TPR[3:0].
            var tpr = InterruptSource as ITaskPriority;
            byte cr8In = 0;
            if (tpr is not null) run->cr8 = cr8In = tpr.Cr8;
            int rc = Libc.ioctl(_fd, KvmH.KVM_RUN, 0);
            if (tpr is not null && (byte)(run->cr8 & 0xF) != cr8In) tpr.Cr8 = (byte)(run->cr8 & 0xF);
            if (rc < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR || errno == EAGAIN)
                {
                    _eintrCount++;
                    return Interrupted(run);
                }
                return InternalError($"KVM_RUN failed: {Libc.ErrnoName(errno)} ({errno}) at {Where()}");
            }

            uint reason = run->exit_reason;
            _exitCounts[reason < ExitCounters ? reason : ExitCounters - 1]++;
            switch (reason)
            {
                case KvmH.KVM_EXIT_IO:
                    if (run->io.count == 0) continue; // nothing to transfer (KVM does not do this; be safe)
                    _pending = Pending.Io;
                    _ioElements++;
                    return _pio.Begin(Exit, run->io.direction == KvmH.KVM_EXIT_IO_IN, run->io.size, run->io.port,
                                      (int)run->io.count, (byte*)run + run->io.data_offset);

                case KvmH.KVM_EXIT_MMIO:
                {
                    int len = (int)Math.Min(run->mmio.len, 8u);
                    Exit.Address = run->mmio.phys_addr;
                    Exit.Size = len;
                    Exit.Message = null;
                    if (run->mmio.is_write != 0)
                    {
                        ulong data = 0;
                        for (int i = 0; i < len; i++) data |= (ulong)run->mmio.data[i] << (8 * i);
                        Exit.Data = data;
                        return Exit.Reason = ExitReason.MmioWrite;
                    }
                    Exit.Data = AllOnes(len); // what a read of nothing returns, unless the run loop says otherwise
                    _pending = Pending.MmioRead;
                    return Exit.Reason = ExitReason.MmioRead;
                }

                case KvmH.KVM_EXIT_SET_TPR:
                    // The guest lowered CR8: an interrupt it masked may be deliverable now.
                    // The loop injects it (InjectEvents) and re-enters.
                    continue;

                case KvmH.KVM_EXIT_IRQ_WINDOW_OPEN:
                    continue; // InjectEvents queues the interrupt now that the guest can take it

                case KvmH.KVM_EXIT_HLT:
                    return Simple(ExitReason.Halt, null);

                case KvmH.KVM_EXIT_INTR:
                    return Interrupted(run);

                case KvmH.KVM_EXIT_DEBUG:
                    return Simple(ExitReason.Debug, null);

                case KvmH.KVM_EXIT_SHUTDOWN:
                    return Simple(ExitReason.Shutdown, $"triple fault (KVM_EXIT_SHUTDOWN) at {Where()}");

                case KvmH.KVM_EXIT_SYSTEM_EVENT:
                    return Simple(ExitReason.Shutdown, run->system_event.type switch
                    {
                        KvmH.KVM_SYSTEM_EVENT_SHUTDOWN => "guest requested power off (KVM_SYSTEM_EVENT_SHUTDOWN)",
                        KvmH.KVM_SYSTEM_EVENT_RESET => "guest requested reset (KVM_SYSTEM_EVENT_RESET)",
                        KvmH.KVM_SYSTEM_EVENT_CRASH => "guest crashed (KVM_SYSTEM_EVENT_CRASH)",
                        var t => $"KVM_EXIT_SYSTEM_EVENT type {t}",
                    });

                case KvmH.KVM_EXIT_FAIL_ENTRY:
                    return InternalError($"KVM_EXIT_FAIL_ENTRY hardware_entry_failure_reason 0x{run->fail_entry.hardware_entry_failure_reason:x} " +
                                         $"(cpu {run->fail_entry.cpu}) at {Where()}");

                case KvmH.KVM_EXIT_INTERNAL_ERROR:
                {
                    uint sub = run->@internal.suberror;
                    var msg = $"KVM_EXIT_INTERNAL_ERROR suberror {sub} ({KvmH.InternalErrorName(sub)}) at {Where()}";
                    uint n = Math.Min(run->@internal.ndata, 16u);
                    if (n > 0)
                    {
                        var data = new string[n];
                        for (int i = 0; i < n; i++) data[i] = $"0x{run->@internal.data[i]:x}";
                        msg += ", data " + string.Join(" ", data);
                    }
                    return InternalError(msg);
                }

                case KvmH.KVM_EXIT_UNKNOWN:
                    return InternalError($"KVM_EXIT_UNKNOWN hardware_exit_reason 0x{run->hw.hardware_exit_reason:x} at {Where()}");

                default:
                    return InternalError($"unhandled {KvmH.ExitName(reason)} ({reason}) at {Where()}");
            }
        }
    }

    /// <summary>
    /// Queue an NMI (KVM_NMI on the vCPU thread) or an external interrupt, or ask for an interrupt
    /// window; no allocation. Returns the name of the ioctl that failed (errno is then the last
    /// P/Invoke error), or null: Run turns a failure into InternalError instead of throwing.
    /// </summary>
    private string? InjectEvents(kvm_run* run)
    {
        if (Volatile.Read(ref _nmiPending) != 0 && Interlocked.Exchange(ref _nmiPending, 0) != 0)
        {
            if (Libc.ioctl(_fd, KvmH.KVM_NMI, 0) < 0) return "KVM_NMI";
            _nmisInjected++;
        }

        var source = InterruptSource;
        if (source is null || !source.HasInterrupt)
        {
            run->request_interrupt_window = 0;
            return null;
        }
        if (run->ready_for_interrupt_injection != 0 && run->if_flag != 0)
        {
            var irq = new kvm_interrupt { irq = source.Acknowledge() };
            if (Libc.ioctl(_fd, KvmH.KVM_INTERRUPT, &irq) < 0) return "KVM_INTERRUPT";
            _interruptsInjected++;
            // KVM holds one queued interrupt; ask to come back once it is delivered if more wait.
            run->request_interrupt_window = source.HasInterrupt ? (byte)1 : (byte)0;
        }
        else
        {
            run->request_interrupt_window = 1;
        }
        return null;
    }

    private static ulong AllOnes(int size) => size >= 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;

    private ExitReason Interrupted(kvm_run* run)
    {
        // The kick (if any) has done its work; a Kick after this point makes the next Run return at once.
        // The full fence orders this store before the caller's next loads: a kicker publishes its
        // request (a stop flag, a pending interrupt) and then sets immediate_exit = 1. Without the
        // fence the store of 0 could sit in the store buffer while the caller reads the request as
        // not yet made, then land after the kicker's 1 and erase that kick: the next KVM_RUN would
        // not return for it. With it, either the caller sees the request or the kicker's 1 wins.
        run->immediate_exit = 0;
        Interlocked.MemoryBarrier();
        return Simple(ExitReason.Interrupted, null);
    }

    private ExitReason Simple(ExitReason reason, string? message)
    {
        Exit.Address = 0;
        Exit.Size = 0;
        Exit.Data = 0;
        Exit.Message = message;
        return Exit.Reason = reason;
    }

    private ExitReason InternalError(string message) => Simple(ExitReason.InternalError, message);

    /// <summary>"cs:rip 0008:1234 (linear 1234)" for messages; never throws.</summary>
    private string Where()
    {
        kvm_regs regs;
        kvm_sregs sregs;
        if (Libc.ioctl(_fd, KvmH.KVM_GET_REGS, &regs) < 0 || Libc.ioctl(_fd, KvmH.KVM_GET_SREGS, &sregs) < 0)
            return "an unknown rip (KVM_GET_REGS failed)";
        return $"cs:rip {sregs.cs.selector:x4}:{regs.rip:x} (linear {sregs.cs.@base + regs.rip:x})";
    }

    public void Kick()
    {
        if (Volatile.Read(ref _disposed) != 0) return;
        // Order matters: immediate_exit first, so a KVM_RUN entered after the signal was
        // consumed by the handler still returns at once.
        Volatile.Write(ref _run->immediate_exit, 1);
        int tid = Volatile.Read(ref _runTid);
        if (tid != 0) Libc.tgkill(_pid, tid, _kickSignal); // ESRCH when the thread is gone: nothing to stop
    }

    public void RequestNmi()
    {
        Volatile.Write(ref _nmiPending, 1);
        Kick();
    }

    public IReadOnlyDictionary<string, long> Statistics
    {
        get
        {
            var d = new Dictionary<string, long>();
            for (uint i = 0; i < ExitCounters; i++)
            {
                long n = Volatile.Read(ref _exitCounts[i]);
                if (n != 0) d[i == ExitCounters - 1 ? "KVM_EXIT_OTHER" : KvmH.ExitName(i)] = n;
            }
            d["kvm_run_eintr"] = Volatile.Read(ref _eintrCount);
            d["io_elements"] = Volatile.Read(ref _ioElements);
            d["interrupts_injected"] = Volatile.Read(ref _interruptsInjected);
            d["nmis_injected"] = Volatile.Read(ref _nmisInjected);
            return d;
        }
    }

    // ---- state -------------------------------------------------------------------------

    public void GetState(VcpuState state)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        kvm_regs regs;
        kvm_sregs sregs;
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_REGS, &regs), "KVM_GET_REGS");
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");

        var g = state.Gpr;
        g[Gpr.Rax] = regs.rax; g[Gpr.Rcx] = regs.rcx; g[Gpr.Rdx] = regs.rdx; g[Gpr.Rbx] = regs.rbx;
        g[Gpr.Rsp] = regs.rsp; g[Gpr.Rbp] = regs.rbp; g[Gpr.Rsi] = regs.rsi; g[Gpr.Rdi] = regs.rdi;
        g[Gpr.R8] = regs.r8; g[Gpr.R9] = regs.r9; g[Gpr.R10] = regs.r10; g[Gpr.R11] = regs.r11;
        g[Gpr.R12] = regs.r12; g[Gpr.R13] = regs.r13; g[Gpr.R14] = regs.r14; g[Gpr.R15] = regs.r15;
        state.Rip = regs.rip;
        state.Rflags = regs.rflags;

        state.Cs = FromKvm(sregs.cs); state.Ds = FromKvm(sregs.ds); state.Es = FromKvm(sregs.es);
        state.Fs = FromKvm(sregs.fs); state.Gs = FromKvm(sregs.gs); state.Ss = FromKvm(sregs.ss);
        state.Tr = FromKvm(sregs.tr); state.Ldtr = FromKvm(sregs.ldt);
        state.Gdtr = new DescriptorTableRegister { Base = sregs.gdt.@base, Limit = sregs.gdt.limit };
        state.Idtr = new DescriptorTableRegister { Base = sregs.idt.@base, Limit = sregs.idt.limit };
        state.Cr0 = sregs.cr0; state.Cr2 = sregs.cr2; state.Cr3 = sregs.cr3; state.Cr4 = sregs.cr4; state.Cr8 = sregs.cr8;
        state.Efer = sregs.efer;
        state.ApicBase = sregs.apic_base;
        GetFpu(state.FxSave);

        state.Msrs.Clear();
        if (_msrs.Length == 0) return;
        byte* buf = stackalloc byte[sizeof(kvm_msrs) + MaxMsrs * sizeof(kvm_msr_entry)];
        var entries = (kvm_msr_entry*)(buf + sizeof(kvm_msrs));
        ((kvm_msrs*)buf)->nmsrs = (uint)_msrs.Length;
        for (int i = 0; i < _msrs.Length; i++) entries[i] = new kvm_msr_entry { index = _msrs[i] };
        int got = KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_MSRS, buf), "KVM_GET_MSRS");
        for (int i = 0; i < got; i++) state.Msrs[entries[i].index] = entries[i].data;
    }

    public void SetState(VcpuState state)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        kvm_sregs sregs;
        // Read first so that interrupt_bitmap (an interrupt KVM has queued) survives.
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
        sregs.cs = ToKvm(state.Cs); sregs.ds = ToKvm(state.Ds); sregs.es = ToKvm(state.Es);
        sregs.fs = ToKvm(state.Fs); sregs.gs = ToKvm(state.Gs); sregs.ss = ToKvm(state.Ss);
        sregs.tr = ToKvm(state.Tr); sregs.ldt = ToKvm(state.Ldtr);
        sregs.gdt = new kvm_dtable { @base = state.Gdtr.Base, limit = state.Gdtr.Limit };
        sregs.idt = new kvm_dtable { @base = state.Idtr.Base, limit = state.Idtr.Limit };
        sregs.cr0 = state.Cr0; sregs.cr2 = state.Cr2; sregs.cr3 = state.Cr3; sregs.cr4 = state.Cr4; sregs.cr8 = state.Cr8;
        sregs.efer = state.Efer;
        sregs.apic_base = state.ApicBase;
        // CR8 is the APIC's TPR[7:4]; KVM_RUN loads it from there (Run), so it is written there,
        // and only when it differs (a CR8 write clears TPR[3:0]), as the software engine does.
        if (InterruptSource is ITaskPriority tp && tp.Cr8 != (byte)(state.Cr8 & 0xF)) tp.Cr8 = (byte)(state.Cr8 & 0xF);
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");

        var g = state.Gpr;
        var regs = new kvm_regs
        {
            rax = g[Gpr.Rax], rcx = g[Gpr.Rcx], rdx = g[Gpr.Rdx], rbx = g[Gpr.Rbx],
            rsp = g[Gpr.Rsp], rbp = g[Gpr.Rbp], rsi = g[Gpr.Rsi], rdi = g[Gpr.Rdi],
            r8 = g[Gpr.R8], r9 = g[Gpr.R9], r10 = g[Gpr.R10], r11 = g[Gpr.R11],
            r12 = g[Gpr.R12], r13 = g[Gpr.R13], r14 = g[Gpr.R14], r15 = g[Gpr.R15],
            rip = state.Rip,
            rflags = state.Rflags,
        };
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_REGS, &regs), "KVM_SET_REGS");
        SetFpu(state.FxSave);

        if (state.Msrs.Count == 0) return;
        byte* buf = stackalloc byte[sizeof(kvm_msrs) + MaxMsrs * sizeof(kvm_msr_entry)];
        var entries = (kvm_msr_entry*)(buf + sizeof(kvm_msrs));
        int n = 0;
        foreach (var (index, value) in state.Msrs)
        {
            // These live in VcpuState fields and were set with the sregs above.
            if (index is Msr.ApicBase or Msr.Efer or Msr.FsBase or Msr.GsBase) continue;
            if (n == MaxMsrs) throw new KvmException("KVM_SET_MSRS", $"more than {MaxMsrs} MSRs in one state");
            entries[n++] = new kvm_msr_entry { index = index, data = value };
        }
        ((kvm_msrs*)buf)->nmsrs = (uint)n;
        int set = KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_MSRS, buf), "KVM_SET_MSRS");
        if (set < n)
            throw new KvmException("KVM_SET_MSRS", $"MSR 0x{entries[set].index:x} = 0x{entries[set].data:x} was rejected");
    }

    private const int KvmXsaveSize = 4096;

    /// <summary>
    /// x87/SSE state. KVM_GET_XSAVE/KVM_SET_XSAVE carry the whole legacy region in FXSAVE layout (the
    /// XSAVE standard form); KVM_GET_FPU/KVM_SET_FPU, the fallback, do not transfer MXCSR at all.
    /// </summary>
    private void GetFpu(byte[] fx)
    {
        byte* xs = stackalloc byte[KvmXsaveSize];
        if (Libc.ioctl(_fd, KvmH.KVM_GET_XSAVE, xs) == 0)
        {
            new ReadOnlySpan<byte>(xs, FxSaveLayout.Size).CopyTo(fx);
            // Components whose XSTATE_BV bit is clear are in their initial state, whatever the bytes say.
            ulong xstateBv = *(ulong*)(xs + 512);
            if ((xstateBv & 1) == 0) { fx.AsSpan(0, 24).Clear(); fx.AsSpan(32, 128).Clear(); fx[0] = 0x7F; fx[1] = 0x03; }
            if ((xstateBv & 2) == 0) fx.AsSpan(FxSaveLayout.Xmm, 256).Clear();
            return;
        }
        GetFpuLegacy(fx);
    }

    private void SetFpu(byte[] fx)
    {
        byte* xs = stackalloc byte[KvmXsaveSize];
        if (Libc.ioctl(_fd, KvmH.KVM_GET_XSAVE, xs) == 0)
        {
            new ReadOnlySpan<byte>(fx, 0, FxSaveLayout.Size - 96).CopyTo(new Span<byte>(xs, FxSaveLayout.Size - 96));
            *(ulong*)(xs + 512) |= 3; // x87 and SSE now come from the image
            KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_XSAVE, xs), "KVM_SET_XSAVE");
            return;
        }
        SetFpuLegacy(fx);
    }

    /// <summary>kvm_fpu carries the FXSAVE fields in its own order; FxSaveLayout has the image's offsets.</summary>
    private void GetFpuLegacy(byte[] fx)
    {
        kvm_fpu f;
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_GET_FPU, &f), "KVM_GET_FPU");
        Array.Clear(fx);
        var span = fx.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(span[FxSaveLayout.Fcw..], f.fcw);
        BinaryPrimitives.WriteUInt16LittleEndian(span[FxSaveLayout.Fsw..], f.fsw);
        fx[FxSaveLayout.Ftw] = f.ftwx;
        BinaryPrimitives.WriteUInt16LittleEndian(span[FxSaveLayout.Fop..], f.last_opcode);
        BinaryPrimitives.WriteUInt64LittleEndian(span[FxSaveLayout.Fip..], f.last_ip);
        BinaryPrimitives.WriteUInt64LittleEndian(span[FxSaveLayout.Fdp..], f.last_dp);
        BinaryPrimitives.WriteUInt32LittleEndian(span[FxSaveLayout.Mxcsr..], f.mxcsr);
        BinaryPrimitives.WriteUInt32LittleEndian(span[FxSaveLayout.MxcsrMask..], 0xFFFF);
        new ReadOnlySpan<byte>(f.fpr, 8 * 16).CopyTo(span[FxSaveLayout.St..]);
        new ReadOnlySpan<byte>(f.xmm, 16 * 16).CopyTo(span[FxSaveLayout.Xmm..]);
    }

    private void SetFpuLegacy(byte[] fx)
    {
        var span = (ReadOnlySpan<byte>)fx;
        var f = new kvm_fpu
        {
            fcw = BinaryPrimitives.ReadUInt16LittleEndian(span[FxSaveLayout.Fcw..]),
            fsw = BinaryPrimitives.ReadUInt16LittleEndian(span[FxSaveLayout.Fsw..]),
            ftwx = fx[FxSaveLayout.Ftw],
            last_opcode = BinaryPrimitives.ReadUInt16LittleEndian(span[FxSaveLayout.Fop..]),
            last_ip = BinaryPrimitives.ReadUInt64LittleEndian(span[FxSaveLayout.Fip..]),
            last_dp = BinaryPrimitives.ReadUInt64LittleEndian(span[FxSaveLayout.Fdp..]),
            mxcsr = BinaryPrimitives.ReadUInt32LittleEndian(span[FxSaveLayout.Mxcsr..]),
        };
        span.Slice(FxSaveLayout.St, 8 * 16).CopyTo(new Span<byte>(f.fpr, 8 * 16));
        span.Slice(FxSaveLayout.Xmm, 16 * 16).CopyTo(new Span<byte>(f.xmm, 16 * 16));
        KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_FPU, &f), "KVM_SET_FPU");
    }

    private static kvm_segment ToKvm(in SegmentRegister s)
    {
        uint a = s.Attributes;
        return new kvm_segment
        {
            @base = s.Base,
            limit = s.Limit,
            selector = s.Selector,
            type = (byte)(a & 0xF),
            s = (byte)((a >> 4) & 1),
            dpl = (byte)((a >> 5) & 3),
            present = (byte)((a >> 7) & 1),
            avl = (byte)((a >> 12) & 1),
            l = (byte)((a >> 13) & 1),
            db = (byte)((a >> 14) & 1),
            g = (byte)((a >> 15) & 1),
            unusable = (byte)((a >> 16) & 1),
        };
    }

    private static SegmentRegister FromKvm(in kvm_segment k) => new()
    {
        Selector = k.selector,
        Base = k.@base,
        Limit = k.limit,
        Attributes = (uint)(k.type & 0xF) | (uint)(k.s & 1) << 4 | (uint)(k.dpl & 3) << 5 | (uint)(k.present & 1) << 7
                     | (uint)(k.avl & 1) << 12 | (uint)(k.l & 1) << 13 | (uint)(k.db & 1) << 14 | (uint)(k.g & 1) << 15
                     | (uint)(k.unusable & 1) << 16,
    };

    // ---- setup -------------------------------------------------------------------------

    private void SetCpuid(kvm_cpuid_entry2[] entries)
    {
        int bytes = sizeof(kvm_cpuid2) + entries.Length * sizeof(kvm_cpuid_entry2);
        byte* buf = (byte*)NativeMemory.AllocZeroed((nuint)bytes);
        try
        {
            ((kvm_cpuid2*)buf)->nent = (uint)entries.Length;
            entries.AsSpan().CopyTo(new Span<kvm_cpuid_entry2>(buf + sizeof(kvm_cpuid2), entries.Length));
            KvmException.Check(Libc.ioctl(_fd, KvmH.KVM_SET_CPUID2, buf), "KVM_SET_CPUID2");
        }
        finally
        {
            NativeMemory.Free(buf);
        }
    }

    /// <summary>Which candidate MSRs KVM_GET_MSRS accepts for this vCPU (it stops at the first it rejects).</summary>
    private uint[] ProbeMsrs()
    {
        var ok = new List<uint>();
        byte* buf = stackalloc byte[sizeof(kvm_msrs) + sizeof(kvm_msr_entry)];
        foreach (uint index in MsrCandidates)
        {
            ((kvm_msrs*)buf)->nmsrs = 1;
            *(kvm_msr_entry*)(buf + sizeof(kvm_msrs)) = new kvm_msr_entry { index = index };
            if (Libc.ioctl(_fd, KvmH.KVM_GET_MSRS, buf) == 1) ok.Add(index);
        }
        return ok.ToArray();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Libc.munmap(_run, _runSize);
        Libc.close(_fd);
    }
}
