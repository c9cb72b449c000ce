// Runs x86-64 instruction bytes natively on the host CPU (Linux x86-64, System V ABI) with a
// chosen input state and captures the output state: the ground truth for differential tests of
// the software engine: for unprivileged instructions the host CPU is the reference.
//
// One private mapping per instance, laid out as
//   +0x0000  trampoline page (RX)        generated once with Iced's assembler
//   +0x1000  snippet page (RW -> RX)     the case's bytes followed by JMP to the trampoline's epilogue
//   +0x2000  context page (RW)           input/output GPRs, RFLAGS, FXSAVE images, saved host RSP
//   +0x3000  64 KiB headroom (RW)        below the window, so a signal frame pushed on the guest
//                                        stack lands in mapped memory instead of killing the process
//   +0x13000 window (RW)                 NativeLayout.WindowSize bytes of guest-visible memory
// The trampoline reaches the context page RIP-relatively, so it needs no free register at exit.
//
// How state gets in and out:
//   * x87, MXCSR and XMM0–XMM15: FXRSTOR64 of the input image, FXSAVE64 afterwards (the host's
//     image is saved and restored around the snippet, so the x87 stack is empty again and
//     MXCSR/FCW are the host's on return, as the ABI requires).
//   * RFLAGS: the input's CF PF AF ZF SF OF DF are merged into the host's current RFLAGS and
//     loaded with POPFQ on the host stack, before the GPRs are loaded with MOVs (which leave
//     flags alone). Other bits (TF, IF, AC, ID…) are the host's; the output keeps them as read.
//   * GPRs, RSP included: plain MOVs from the context page. RSP and relocated registers are
//     window offsets in the case; the harness adds the window's host address and subtracts it again.
//   * After the snippet: MOVs to the context page, then RSP := saved host RSP, then PUSHFQ/POP
//     on the host stack (so nothing is written below the guest RSP).
//
// Faults: the process cannot survive SIGFPE/SIGSEGV/SIGILL raised in native code, so every case is
// checked first by CasePreflight: faults it can prove (DIV/IDIV #DE, LOCK #UD, alignment #GP) are
// reported without running, anything it cannot prove safe is refused.
//
// Not thread-safe: one instance per thread (tests create their own).
using System.Runtime.InteropServices;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.HostCpu;

public sealed unsafe partial class HostCpu : IDisposable
{
    private const int PageSize = 0x1000;
    private const int TrampolineOffset = 0x0000, SnippetOffset = 0x1000, ContextOffset = 0x2000;
    private const int HeadroomSize = 0x10000;
    private const int WindowOffset = ContextOffset + PageSize + HeadroomSize;
    private const int MappingSize = WindowOffset + NativeLayout.WindowSize;

    // Offsets inside the context page.
    private const int CtxInGpr = 0x000, CtxInRflags = 0x080, CtxOutGpr = 0x100, CtxOutRflags = 0x180, CtxHostRsp = 0x188;
    private const int CtxInFx = 0x200, CtxOutFx = 0x400, CtxHostFx = 0x600;

    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 0x02, MapAnonymous = 0x20;

    private readonly byte* _base;
    private readonly delegate* unmanaged<void> _entry;
    private readonly ulong _epilogue;
    private readonly CasePreflight _preflight;
    private byte[]? _loadedCode; // null until the first snippet is written
    private bool _disposed;

    public HostCpu()
    {
        if (!HostFeatures.IsHostSupported)
            throw new PlatformNotSupportedException("HostCpu runs native code and needs Linux on x86-64");
        nint map = mmap(0, MappingSize, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (map == -1) throw new InvalidOperationException($"mmap failed, errno {Marshal.GetLastPInvokeError()}");
        _base = (byte*)map;

        var trampoline = AssembleTrampoline(out _epilogue);
        trampoline.CopyTo(new Span<byte>(_base + TrampolineOffset, PageSize));
        Protect(TrampolineOffset, ProtRead | ProtExec);
        _entry = (delegate* unmanaged<void>)(_base + TrampolineOffset);

        Features = new HostFeatures();
        MxcsrMask = ReadHostMxcsrMask();
        _preflight = new CasePreflight(Features, MxcsrMask);
    }

    /// <summary>The CPUID features of the host, as Iced names them.</summary>
    public HostFeatures Features { get; }

    /// <summary>MXCSR bits the host accepts (MXCSR_MASK from FXSAVE; 0xFFBF when the CPU reports 0).</summary>
    public uint MxcsrMask { get; }

    /// <summary>Host address of the window; registers in a case's relocation mask get this added.</summary>
    public ulong WindowBase => (ulong)(_base + WindowOffset);

    /// <summary>Host address where the snippet's first byte runs (its RIP).</summary>
    public ulong CodeAddress => (ulong)(_base + SnippetOffset);

    /// <summary>Checks a case without running it: null when it may run, else the fault or refusal result.</summary>
    public NativeResult? Check(NativeCase c) => _preflight.Check(c, WindowBase, CodeAddress);

    /// <summary>
    /// Runs the case natively, or returns the predicted fault / refusal without running.
    /// The output is window-relative like the input.
    /// </summary>
    public NativeResult Run(NativeCase c)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (c.Window.Length != NativeLayout.WindowSize)
            throw new ArgumentException($"window must be {NativeLayout.WindowSize} bytes", nameof(c));
        var verdict = _preflight.Check(c, WindowBase, CodeAddress);
        if (verdict is not null) return verdict;

        LoadSnippet(c.Code);
        c.Window.CopyTo(new Span<byte>(_base + WindowOffset, NativeLayout.WindowSize));
        ushort relocated = c.EffectiveRelocatedGprs;
        Execute(c.Input, relocated);

        byte* ctx = _base + ContextOffset;
        var output = new NativeState();
        var outGpr = new ReadOnlySpan<ulong>(ctx + CtxOutGpr, 16);
        for (int i = 0; i < 16; i++) output.Gpr[i] = outGpr[i];
        output.Rflags = *(ulong*)(ctx + CtxOutRflags);
        new ReadOnlySpan<byte>(ctx + CtxOutFx, 512).CopyTo(output.Fx);
        output.Relocate(relocated, unchecked(0 - WindowBase));
        return new NativeResult
        {
            Outcome = NativeOutcome.Completed,
            Output = output,
            Window = new ReadOnlySpan<byte>(_base + WindowOffset, NativeLayout.WindowSize).ToArray(),
        };
    }

    private void LoadSnippet(byte[] code)
    {
        if (code.Length > NativeLayout.MaxCodeLength) throw new ArgumentException("snippet too long", nameof(code));
        if (_loadedCode is not null && code.AsSpan().SequenceEqual(_loadedCode)) return;
        Protect(SnippetOffset, ProtRead | ProtWrite);
        var page = new Span<byte>(_base + SnippetOffset, PageSize);
        page.Fill(0xCC);
        code.CopyTo(page);
        // JMP rel32 back to the epilogue, right after the last snippet byte.
        ulong jmpAddress = CodeAddress + (ulong)code.Length;
        page[code.Length] = 0xE9;
        BitConverter.TryWriteBytes(page.Slice(code.Length + 1, 4), checked((int)unchecked((long)(_epilogue - (jmpAddress + 5)))));
        Protect(SnippetOffset, ProtRead | ProtExec);
        _loadedCode = (byte[])code.Clone();
    }

    private byte[] AssembleTrampoline(out ulong epilogueAddress)
    {
        ulong ctx = (ulong)(_base + ContextOffset);
        ulong rip = (ulong)(_base + TrampolineOffset);
        var a = new Assembler(64);
        var epilogue = a.CreateLabel();

        MemoryOperand At(int offset) => new(Register.RIP, (long)(ctx + (ulong)offset), 8, false, Register.None);

        // System V callee-saved registers.
        a.push(rbx); a.push(rbp); a.push(r12); a.push(r13); a.push(r14); a.push(r15);
        a.AddInstruction(Instruction.Create(Code.Mov_rm64_r64, At(CtxHostRsp), Register.RSP));
        a.AddInstruction(Instruction.Create(Code.Fxsave64_m512byte, At(CtxHostFx)));
        a.AddInstruction(Instruction.Create(Code.Fxrstor64_m512byte, At(CtxInFx)));
        // RFLAGS := (host & ~Settable) | (input & Settable), through the host stack.
        a.pushfq();
        a.pop(rax);
        a.and(rax, unchecked((int)~(uint)RflagsBits.Settable));
        a.AddInstruction(Instruction.Create(Code.Mov_r64_rm64, Register.RCX, At(CtxInRflags)));
        a.and(rcx, (int)RflagsBits.Settable);
        a.or(rax, rcx);
        a.push(rax);
        a.popfq();
        // GPRs last, with MOV only, so the flags just loaded survive.
        for (int i = 0; i < 16; i++)
            a.AddInstruction(Instruction.Create(Code.Mov_r64_rm64, Register.RAX + i, At(CtxInGpr + 8 * i)));
        a.AddInstruction(Instruction.CreateBranch(Code.Jmp_rel32_64, CodeAddress));

        a.Label(ref epilogue);
        for (int i = 0; i < 16; i++)
            a.AddInstruction(Instruction.Create(Code.Mov_rm64_r64, At(CtxOutGpr + 8 * i), Register.RAX + i));
        a.AddInstruction(Instruction.Create(Code.Mov_r64_rm64, Register.RSP, At(CtxHostRsp)));
        a.pushfq();
        a.pop(rax);
        a.AddInstruction(Instruction.Create(Code.Mov_rm64_r64, At(CtxOutRflags), Register.RAX));
        a.AddInstruction(Instruction.Create(Code.Fxsave64_m512byte, At(CtxOutFx)));
        a.AddInstruction(Instruction.Create(Code.Fxrstor64_m512byte, At(CtxHostFx)));
        a.cld(); // the ABI wants DF clear on return
        a.pop(r15); a.pop(r14); a.pop(r13); a.pop(r12); a.pop(rbp); a.pop(rbx);
        a.ret();

        var writer = new ByteWriter();
        var result = a.Assemble(writer, rip, BlockEncoderOptions.ReturnNewInstructionOffsets);
        epilogueAddress = result.GetLabelRIP(epilogue);
        if (writer.Count > PageSize) throw new InvalidOperationException("trampoline does not fit a page");
        return writer.ToArray();
    }

    /// <summary>Loads the input registers (relocated to host addresses) into the context page and runs the loaded snippet.</summary>
    private void Execute(NativeState input, ushort relocated)
    {
        input.Relocate(relocated, WindowBase);
        // The context page is ours alone and 16-byte aligned: these copies stay inside it.
        byte* ctx = _base + ContextOffset;
        var inGpr = new Span<ulong>(ctx + CtxInGpr, 16);
        for (int i = 0; i < 16; i++) inGpr[i] = input.Gpr[i];
        *(ulong*)(ctx + CtxInRflags) = input.Rflags;
        ((ReadOnlySpan<byte>)input.Fx).CopyTo(new Span<byte>(ctx + CtxInFx, 512));
        _entry();
    }

    private uint ReadHostMxcsrMask()
    {
        // An empty snippet runs FXRSTOR/FXSAVE of a default state; the saved host image carries MXCSR_MASK.
        var input = NativeState.Initial();
        input.Rsp = NativeLayout.DefaultRsp;
        LoadSnippet([]);
        Execute(input, NativeLayout.RspBit);
        uint mask = *(uint*)(_base + ContextOffset + CtxHostFx + FxSaveArea.MxcsrMaskOffset);
        return mask == 0 ? 0xFFBFu : mask; // SDM Vol. 1 §11.6.6: zero means the default mask
    }

    private void Protect(int offset, int prot)
    {
        if (mprotect((nint)(_base + offset), PageSize, prot) != 0)
            throw new InvalidOperationException($"mprotect failed, errno {Marshal.GetLastPInvokeError()}");
    }

    public void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }

    ~HostCpu() => Release();

    private void Release()
    {
        if (_disposed || _base == null) return;
        _disposed = true;
        munmap((nint)_base, MappingSize);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int mprotect(nint addr, nuint length, int prot);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint addr, nuint length);
}
