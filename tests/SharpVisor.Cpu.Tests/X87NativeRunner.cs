// A second way to run one x87 instruction natively, for what the shared HostCpu harness refuses:
// control words with unmasked exceptions, and FLDCW/FLDENV/FRSTOR (its preflight denies them as
// "host-wide state"). Both are safe when the snippet is ONE x87 instruction whose input has no
// pending exception: an exception it raises stays pending (it would only be reported as #MF by the
// next waiting x87 instruction, and none follows — FXSAVE64 does not report it) and the host's own
// x87/SSE image is put back with FXRSTOR64 right after.
//
// The snippet runs between
//   FXSAVE64 [rdi+host]; FXRSTOR64 [rdi+in]; r8, rax, RFLAGS (status flags and DF) from the context
//   <the case's code>
//   RFLAGS, rax, r8 to the context; FXSAVE64 [rdi+out]; FXRSTOR64 [rdi+host]; CLD; RET
// so the code may use r8 (the window-relative memory base), rax and the flags, and nothing else.
// Cases follow the HostCpu conventions (NativeCase, window offsets in relocated registers), so the
// results compare with NativeComparer and with the engine through EngineRunner.
using System.Runtime.InteropServices;
using Iced.Intel;
using SharpVisor.HostCpu;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

internal sealed unsafe partial class X87NativeRunner : IDisposable
{
    private const int PageSize = 0x1000, CodeOffset = 0, ContextOffset = 0x1000, WindowOffset = 0x2000;
    private const int MappingSize = WindowOffset + NativeLayout.WindowSize;
    private const int CtxHostFx = 0x000, CtxInFx = 0x200, CtxOutFx = 0x400;
    private const int CtxInR8 = 0x600, CtxInRax = 0x608, CtxInFlags = 0x610, CtxOutFlags = 0x618, CtxOutRax = 0x620, CtxOutR8 = 0x628;
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 0x02, MapAnonymous = 0x20;

    private readonly byte* _base;
    private readonly byte[] _prologue, _epilogue;
    private byte[]? _loaded;
    private bool _disposed;

    public X87NativeRunner()
    {
        if (!HostFeatures.IsHostSupported) throw new PlatformNotSupportedException("needs Linux on x86-64");
        nint map = mmap(0, MappingSize, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (map == -1) throw new InvalidOperationException($"mmap failed, errno {Marshal.GetLastPInvokeError()}");
        _base = (byte*)map;
        _prologue = NativeSnippet.Assemble(a =>
        {
            a.fxsave64(__[rdi + CtxHostFx]);
            a.fxrstor64(__[rdi + CtxInFx]);
            a.mov(r8, __qword_ptr[rdi + CtxInR8]);
            a.mov(rax, __qword_ptr[rdi + CtxInRax]);
            a.pushfq();
            a.pop(rcx);
            a.and(rcx, unchecked((int)~(uint)RflagsBits.Settable));
            a.mov(rdx, __qword_ptr[rdi + CtxInFlags]);
            a.and(rdx, (int)RflagsBits.Settable);
            a.or(rcx, rdx);
            a.push(rcx);
            a.popfq();
        });
        _epilogue = NativeSnippet.Assemble(a =>
        {
            a.pushfq();
            a.pop(rcx);
            a.mov(__qword_ptr[rdi + CtxOutFlags], rcx);
            a.mov(__qword_ptr[rdi + CtxOutRax], rax);
            a.mov(__qword_ptr[rdi + CtxOutR8], r8);
            a.fxsave64(__[rdi + CtxOutFx]);
            a.fxrstor64(__[rdi + CtxHostFx]);
            a.cld();
            a.ret();
        });
    }

    private ulong WindowBase => (ulong)(_base + WindowOffset);

    /// <summary>Runs the case; only RAX, R8 (relocated when the case says so), RFLAGS and the FXSAVE image go in and out.</summary>
    public NativeResult Run(NativeCase c)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((c.Input.Fsw & 0x80) != 0 || (c.Input.Fsw & ~c.Input.Fcw & 0x3F) != 0)
            throw new ArgumentException("an input with a pending x87 exception would fault natively", nameof(c));
        Load(c.Code);
        bool r8Relocated = (c.EffectiveRelocatedGprs & (1 << 8)) != 0;
        byte* ctx = _base + ContextOffset;
        c.Window.CopyTo(new Span<byte>(_base + WindowOffset, NativeLayout.WindowSize));
        ((ReadOnlySpan<byte>)c.Input.Fx).CopyTo(new Span<byte>(ctx + CtxInFx, 512));
        *(ulong*)(ctx + CtxInR8) = c.Input.Gpr[8] + (r8Relocated ? WindowBase : 0);
        *(ulong*)(ctx + CtxInRax) = c.Input.Gpr[0];
        *(ulong*)(ctx + CtxInFlags) = c.Input.Rflags;
        ((delegate* unmanaged<byte*, void>)(_base + CodeOffset))(ctx);

        var output = c.Input;
        output.Gpr[0] = *(ulong*)(ctx + CtxOutRax);
        output.Gpr[8] = *(ulong*)(ctx + CtxOutR8) - (r8Relocated ? WindowBase : 0);
        output.Rflags = *(ulong*)(ctx + CtxOutFlags);
        new ReadOnlySpan<byte>(ctx + CtxOutFx, 512).CopyTo(output.Fx);
        return new NativeResult
        {
            Outcome = NativeOutcome.Completed,
            Output = output,
            Window = new ReadOnlySpan<byte>(_base + WindowOffset, NativeLayout.WindowSize).ToArray(),
        };
    }

    private void Load(byte[] code)
    {
        if (_loaded is not null && code.AsSpan().SequenceEqual(_loaded)) return;
        if (_prologue.Length + code.Length + _epilogue.Length > PageSize) throw new ArgumentException("snippet too long", nameof(code));
        Protect(ProtRead | ProtWrite);
        var page = new Span<byte>(_base + CodeOffset, PageSize);
        page.Fill(0xCC);
        _prologue.CopyTo(page);
        code.CopyTo(page[_prologue.Length..]);
        _epilogue.CopyTo(page[(_prologue.Length + code.Length)..]);
        Protect(ProtRead | ProtExec);
        _loaded = (byte[])code.Clone();
    }

    private void Protect(int prot)
    {
        if (mprotect((nint)(_base + CodeOffset), PageSize, prot) != 0)
            throw new InvalidOperationException($"mprotect failed, errno {Marshal.GetLastPInvokeError()}");
    }

    public void Dispose()
    {
        if (_disposed) return;
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
