// Runs a HostCpu NativeCase (SharpVisor.HostCpu/NativeCase.cs) on the software engine, so its result
// can be compared with the host CPU's by NativeComparer.
//
// The guest is a bare 64-bit long-mode machine (SDM Vol. 3A §9.8.5: CR0.PE|PG, CR4.PAE, EFER.LME|LMA,
// a 64-bit code segment), CPL 0, interrupts off:
//
//   guest-physical                       linear
//   0x1000  GDT: null, 0x08 64-bit code, 0x10 data, 0x18 64-bit TSS (unused: no IST, no ring change)
//   0x2000  IDT: 32 interrupt gates       identity, one 2 MiB page over [0, 2 MiB)
//   0x3000  one 32-byte stub per vector 0–31, then the scrub stub (slot 32)
//   0x4000  TSS
//   0x8000  PML4, PDPTs, PDs, PT
//   0x10000 the snippet: case bytes, then MOV BYTE [ScrubGpa], 0 and HLT
//   0x20000 the 8 KiB window              WindowBase (a canonical address far above 4 GiB, so a
//                                         truncated 32-bit address computation faults instead of
//                                         landing in the window by accident)
//
// Registers in NativeCase.EffectiveRelocatedGprs get WindowBase added on the way in and subtracted on
// the way out, as the native harness does with its host address. A snippet that completes halts at
// the HLT after it; an exception is delivered through the IDT to its vector's stub, which halts, so
// the vector is read back from RIP. The exception frame (SDM Vol. 3A §6.14.2) lands on the window's
// stack area, where the runner also reads the saved RIP and RFLAGS.
//
// Why every stub writes a byte into the code page: the engine caches decoded blocks by guest-physical
// address and invalidates them when the guest writes to a page holding code; host-side writes through
// GuestMemory (which is how the runner places each new snippet) are not seen by that mechanism. A guest
// store into the code page after every case makes the next snippet decode afresh. Any other end of a
// run (unsupported instruction, shutdown, timeout) runs the scrub stub on its own.
//
// Not thread-safe: one runner per thread (each has its own guest memory and engine).
using System.Buffers.Binary;
using System.Diagnostics;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.HostCpu;

namespace SharpVisor.Cpu.Tests.Differential;

internal enum EngineOutcome
{
    /// <summary>The snippet ran to its end; <see cref="EngineResult.State"/> and the window hold the result.</summary>
    Completed,
    /// <summary>An exception was delivered through the IDT; <see cref="EngineResult.Exception"/> names it.</summary>
    Fault,
    /// <summary>The engine stopped with InternalError "unsupported …": an instruction it does not implement.</summary>
    Unsupported,
    /// <summary>Anything else (engine failure, shutdown, timeout, halt in the wrong place): always a finding.</summary>
    Failed,
}

internal struct EngineResult
{
    public EngineOutcome Outcome;
    /// <summary>Output registers, window-relative like the case (for Fault: as the stub found them).</summary>
    public NativeState State;
    public X86Exception Exception;
    /// <summary>For Fault: RIP and RFLAGS saved in the exception frame; RSP after delivery (window-relative).</summary>
    public ulong FaultRip, FaultRflags, FaultRsp;
    /// <summary>The engine's message for Unsupported and Failed.</summary>
    public string? Message;
}

internal sealed class EngineRunner : IDisposable
{
    private const ulong GdtGpa = 0x1000, IdtGpa = 0x2000, StubGpa = 0x3000, TssGpa = 0x4000;
    private const ulong Pml4Gpa = 0x8000, PdptLowGpa = 0x9000, PdLowGpa = 0xA000, PdptWinGpa = 0xB000, PdWinGpa = 0xC000, PtWinGpa = 0xD000;
    private const ulong WindowGpa = 0x20000;
    private const ulong RamSize = 4 << 20;
    public const ulong CodeGpa = 0x10000;
    /// <summary>The last byte of the code page: what the stubs store to, so decoded code is invalidated.</summary>
    private const ulong ScrubGpa = CodeGpa + 0xFFF;
    /// <summary>Linear address of the window (PML4 index 255, far above 4 GiB, canonical).</summary>
    public const ulong WindowBase = 0x0000_7FD3_A5C0_0000;

    private const int StubStride = 32, VectorCount = 32, ScrubSlot = VectorCount;
    private const ushort CodeSelector = 0x08, DataSelector = 0x10, TssSelector = 0x18;

    // Page-table entry bits (SDM Vol. 3A §4.5, Table 4-15 ff.).
    private const ulong PtePresent = 1, PteWritable = 2, PteLarge = 1 << 7;
    // CR0, CR4 and EFER bits (SDM Vol. 3A §2.5, §2.2.1).
    private const ulong Cr0Pe = 1, Cr0Mp = 2, Cr0Et = 1 << 4, Cr0Ne = 1 << 5, Cr0Wp = 1 << 16, Cr0Pg = 1UL << 31;
    private const ulong Cr4Pae = 1 << 5, Cr4Osfxsr = 1 << 9, Cr4Osxmmexcpt = 1 << 10;
    private const ulong EferLme = 1 << 8, EferLma = 1 << 10;

    /// <summary>MOV BYTE [disp32], 0 (C6 /0 with SIB base=101 index=100: absolute disp32) then HLT.</summary>
    private static readonly byte[] Tail = BuildTail();

    /// <summary>A run that is still going after this long is kicked out and reported as Failed.</summary>
    private static readonly long TimeoutTicks = Stopwatch.Frequency * 5;

    private readonly GuestMemory _memory = new();
    private readonly SoftwareEngine _engine;
    private readonly IVcpu _cpu;
    private readonly VcpuState _template;
    private readonly VcpuState _in = new(), _out = new();
    private readonly byte[] _window = new byte[NativeLayout.WindowSize];
    private readonly byte[] _code = new byte[0x1000];
    private readonly Timer _watchdog;
    private long _runStarted; // Stopwatch timestamp of the running Run(), 0 when idle

    public EngineRunner()
    {
        _memory.AddRegion(0, RamSize, "ram");
        _engine = new SoftwareEngine(_memory);
        _cpu = _engine.CreateVcpu(0);
        BuildTables();
        _template = BuildTemplate();
        FpStateRoundTrips = ProbeFpState();
        _watchdog = new Timer(_ =>
        {
            long t = Volatile.Read(ref _runStarted);
            if (t != 0 && Stopwatch.GetTimestamp() - t > TimeoutTicks) _cpu.Kick();
        }, null, 1000, 1000);
    }

    /// <summary>
    /// True when the engine carries VcpuState.FxSave through SetState/GetState, so x87/SSE state can be
    /// compared; false while that is not implemented (compare GPRs, flags and memory only).
    /// </summary>
    public bool FpStateRoundTrips { get; }

    /// <summary>The window after the last <see cref="Run"/> (valid until the next run).</summary>
    public ReadOnlySpan<byte> Window => _window;

    public EngineResult Run(NativeCase c)
    {
        if (c.Code.Length + Tail.Length > _code.Length) throw new ArgumentException("snippet too long for the code page", nameof(c));
        if (c.Window.Length != NativeLayout.WindowSize) throw new ArgumentException("window size", nameof(c));
        ushort relocated = c.EffectiveRelocatedGprs;

        // Code and window go in with host writes; see the header for why decoded code still cannot go stale.
        c.Code.CopyTo(_code, 0);
        Tail.CopyTo(_code, c.Code.Length);
        _memory.Write(CodeGpa, _code.AsSpan(0, c.Code.Length + Tail.Length));
        _memory.Write(WindowGpa, c.Window);

        _in.CopyFrom(_template);
        for (int i = 0; i < 16; i++)
            _in.Gpr[i] = c.Input.Gpr[i] + ((relocated & (1 << i)) != 0 ? WindowBase : 0);
        _in.Rflags = c.Input.Rflags;
        _in.Rip = CodeGpa;
        ((ReadOnlySpan<byte>)c.Input.Fx).CopyTo(_in.FxSave);
        _cpu.SetState(_in);

        var result = new EngineResult { Exception = X86Exception.None };
        ExitReason exit = RunToExit();
        _cpu.GetState(_out);
        _memory.Read(WindowGpa, _window);
        ulong haltedAt = _out.Rip;
        ulong endOfSnippet = CodeGpa + (ulong)(c.Code.Length + Tail.Length);

        for (int i = 0; i < 16; i++)
            result.State.Gpr[i] = _out.Gpr[i] - ((relocated & (1 << i)) != 0 ? WindowBase : 0);
        result.State.Rflags = _out.Rflags;
        if (FpStateRoundTrips) ((ReadOnlySpan<byte>)_out.FxSave).CopyTo(result.State.Fx);
        else result.State.Fx = c.Input.Fx;

        if (exit == ExitReason.Halt && haltedAt == endOfSnippet)
        {
            result.Outcome = EngineOutcome.Completed;
            return result;
        }
        if (exit == ExitReason.Halt && TryStubVector(haltedAt, out int vector))
        {
            result.Outcome = EngineOutcome.Fault;
            result.Exception = (X86Exception)vector;
            ReadFrame(vector, ref result);
            return result;
        }

        // The snippet did not reach a stub: make sure its decoded code cannot be reused.
        Scrub();
        if (exit == ExitReason.InternalError && _cpu.Exit.Message is { } m && m.StartsWith("unsupported", StringComparison.Ordinal))
        {
            result.Outcome = EngineOutcome.Unsupported;
            result.Message = m;
            return result;
        }
        result.Outcome = EngineOutcome.Failed;
        result.Message = exit == ExitReason.Halt ? $"halted at {haltedAt:x} (expected {endOfSnippet:x})" : _cpu.Exit.ToString();
        return result;
    }

    /// <summary>Runs until an exit other than a stale kick; port I/O or MMIO from a snippet is a failure.</summary>
    private ExitReason RunToExit()
    {
        Volatile.Write(ref _runStarted, Stopwatch.GetTimestamp());
        try
        {
            while (true)
            {
                var r = _cpu.Run();
                // A kick meant for a previous run can arrive late; only a real timeout ends this one.
                if (r == ExitReason.Interrupted && Stopwatch.GetTimestamp() - Volatile.Read(ref _runStarted) <= TimeoutTicks) continue;
                return r;
            }
        }
        finally
        {
            Volatile.Write(ref _runStarted, 0);
        }
    }

    private void Scrub()
    {
        _in.CopyFrom(_template);
        _in.Rip = StubGpa + ScrubSlot * StubStride;
        _in.Rsp = WindowBase + NativeLayout.DefaultRsp;
        _cpu.SetState(_in);
        var r = RunToExit();
        if (r != ExitReason.Halt) throw new InvalidOperationException($"the scrub stub did not halt: {_cpu.Exit}");
    }

    private static bool TryStubVector(ulong rip, out int vector)
    {
        vector = -1;
        ulong stubEnd = (ulong)Tail.Length;
        if (rip < StubGpa + stubEnd || rip > StubGpa + (VectorCount - 1) * StubStride + stubEnd) return false;
        ulong off = rip - StubGpa - stubEnd;
        if (off % StubStride != 0) return false;
        vector = (int)(off / StubStride);
        return true;
    }

    /// <summary>Reads RIP and RFLAGS from the 64-bit exception frame (with an error code for vectors 8, 10–14, 17, 21).</summary>
    private void ReadFrame(int vector, ref EngineResult result)
    {
        bool hasError = vector is 8 or (>= 10 and <= 14) or 17 or 21;
        ulong rsp = _out.Rsp - WindowBase;
        result.FaultRsp = rsp;
        ulong at = rsp + (hasError ? 8UL : 0);
        if (at > (ulong)(_window.Length - 32)) { result.FaultRip = ulong.MaxValue; return; }
        result.FaultRip = BinaryPrimitives.ReadUInt64LittleEndian(_window.AsSpan((int)at));
        result.FaultRflags = BinaryPrimitives.ReadUInt64LittleEndian(_window.AsSpan((int)at + 16));
    }

    private void BuildTables()
    {
        // GDT (SDM Vol. 3A §3.4.5, §5.2.1): 64-bit code DPL 0 (L=1, D=0), writable data, 64-bit busy TSS.
        _memory.Write(GdtGpa, 0UL);
        _memory.Write(GdtGpa + 8, 0x00AF_9A00_0000_FFFFUL);
        _memory.Write(GdtGpa + 16, 0x00CF_9200_0000_FFFFUL);
        ulong tssLow = 0x67 | ((TssGpa & 0xFF_FFFF) << 16) | (0x8BUL << 40) | ((TssGpa >> 24 & 0xFF) << 56);
        _memory.Write(GdtGpa + 24, tssLow);
        _memory.Write(GdtGpa + 32, TssGpa >> 32);

        // IDT: 64-bit interrupt gates (type 14, P, DPL 0) to one stub per vector (SDM Vol. 3A §6.14.1).
        for (int v = 0; v < VectorCount; v++)
        {
            ulong target = StubGpa + (ulong)(v * StubStride);
            ulong low = (target & 0xFFFF) | ((ulong)CodeSelector << 16) | (0x8EUL << 40) | ((target >> 16 & 0xFFFF) << 48);
            _memory.Write(IdtGpa + (ulong)v * 16, low);
            _memory.Write(IdtGpa + (ulong)v * 16 + 8, target >> 32);
        }
        // Each stub (and the scrub stub after them) stores into the code page, then halts.
        for (int v = 0; v <= ScrubSlot; v++) _memory.Write(StubGpa + (ulong)(v * StubStride), Tail);

        // 4-level paging: [0, 2 MiB) identity with one large page; the window's two 4 KiB pages at WindowBase.
        _memory.Write(Pml4Gpa, PdptLowGpa | PtePresent | PteWritable);
        _memory.Write(PdptLowGpa, PdLowGpa | PtePresent | PteWritable);
        _memory.Write(PdLowGpa, 0 | PtePresent | PteWritable | PteLarge);
        ulong i4 = WindowBase >> 39 & 511, i3 = WindowBase >> 30 & 511, i2 = WindowBase >> 21 & 511, i1 = WindowBase >> 12 & 511;
        if (i4 == 0 || i1 > 510) throw new InvalidOperationException("window base collides with the identity map or crosses a page table");
        _memory.Write(Pml4Gpa + i4 * 8, PdptWinGpa | PtePresent | PteWritable);
        _memory.Write(PdptWinGpa + i3 * 8, PdWinGpa | PtePresent | PteWritable);
        _memory.Write(PdWinGpa + i2 * 8, PtWinGpa | PtePresent | PteWritable);
        for (ulong k = 0; k < NativeLayout.WindowSize / 0x1000; k++)
            _memory.Write(PtWinGpa + (i1 + k) * 8, (WindowGpa + k * 0x1000) | PtePresent | PteWritable);
    }

    private static VcpuState BuildTemplate()
    {
        var s = new VcpuState
        {
            Cr0 = Cr0Pe | Cr0Mp | Cr0Et | Cr0Ne | Cr0Wp | Cr0Pg,
            Cr3 = Pml4Gpa,
            Cr4 = Cr4Pae | Cr4Osfxsr | Cr4Osxmmexcpt,
            Efer = EferLme | EferLma,
            Rflags = 2,
        };
        s.Cs = SegmentRegister.Flat(CodeSelector, code: true, longMode: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(DataSelector, code: false);
        s.Ldtr = SegmentRegister.System(0, 0, 0xFFFF, 2);
        s.Ldtr.Attributes |= SegmentRegister.AttrUnusable;
        s.Tr = SegmentRegister.System(TssSelector, TssGpa, 0x67, 11);
        s.Gdtr = new DescriptorTableRegister { Base = GdtGpa, Limit = 5 * 8 - 1 };
        s.Idtr = new DescriptorTableRegister { Base = IdtGpa, Limit = VectorCount * 16 - 1 };
        return s;
    }

    private bool ProbeFpState()
    {
        var probe = _template.Clone();
        probe.Rip = StubGpa + ScrubSlot * StubStride;
        for (int i = 0; i < 16; i++) probe.FxSave[FxSaveLayout.Xmm + i] = (byte)(0xA0 + i); // XMM0, a value no reset state has
        _cpu.SetState(probe);
        var back = new VcpuState();
        _cpu.GetState(back);
        return back.FxSave.AsSpan(FxSaveLayout.Xmm, 16).SequenceEqual(probe.FxSave.AsSpan(FxSaveLayout.Xmm, 16));
    }

    private static byte[] BuildTail()
    {
        var t = new byte[9];
        t[0] = 0xC6; t[1] = 0x04; t[2] = 0x25; // MOV r/m8, imm8; ModRM mod=00 r/m=100 (SIB); SIB base=101 index=100
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(3), (uint)ScrubGpa);
        t[7] = 0x00;                           // imm8
        t[8] = 0xF4;                           // HLT
        return t;
    }

    public void Dispose()
    {
        _watchdog.Dispose();
        _cpu.Dispose();
        _engine.Dispose();
        _memory.Dispose();
    }
}
