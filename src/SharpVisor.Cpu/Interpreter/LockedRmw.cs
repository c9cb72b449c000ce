// Locked read-modify-write instructions (LOCK prefix; XCHG with a memory operand, which is locked
// without it): SDM Vol. 3A §9.1.2 — while a locked operation runs, no other processor's access to
// the operand can come between its read and its write, plain stores included. Linux depends on the
// plain-store half: qspinlock releases with a byte MOV (smp_store_release) while other CPUs run
// LOCK CMPXCHG on the whole 32-bit lock word, and an unlock lost between such an instruction's read
// and write deadlocks the guest.
//
// Method (load-linked/store-conditional over a host CAS): the instruction's memory operand is
// captured, not accessed. The first access to it reads the aligned 8-byte host word that contains
// it (one atomic load); the instruction's own reads and writes of the operand then go to that
// snapshot (ReadRmwLinear/WriteRmwLinear, Operands.cs); when the instruction finishes, the new
// word is committed with Interlocked.CompareExchange against the snapshot. If any other vCPU
// stored into the word meanwhile (any byte of it, locked or not), the CAS fails: GPRs and the
// lazy-flags state are put back as they were before the instruction and it runs again, so it
// takes effect atomically at the moment of the successful CAS. An instruction that does not write
// (CMPXCHG whose comparison fails) commits nothing: its one snapshot read is its atomic read.
//
// Covered without any lock: operands of 1, 2, 4 or 8 bytes in guest RAM that do not cross an
// 8-byte boundary (every naturally aligned operand, CMPXCHG8B at an 8-aligned address). Guest RAM
// is page-aligned host memory (GuestMemory mmaps each region), so the host word lies in the same
// guest page as the operand.
//
// Still under the engine's AtomicLock, exactly as before (locked instructions of other vCPUs
// cannot interleave with them, plain stores can): CMPXCHG16B (.NET has no portable 128-bit CAS),
// split operands (crossing an 8-byte boundary: "split locks", which Linux treats as a bug and
// hardware serves with a bus lock), and operands outside RAM (MMIO exits, ROM). Deliberate
// deviation: a lock-path instruction is not atomic against a CAS-path locked instruction of
// another vCPU on overlapping bytes (e.g. CMPXCHG16B against LOCK XADD on one of its halves); no
// guest we know mixes those, and serializing every locked instruction on one lock to cover it
// would give up the lock-free path.
//
// Self-modifying code and data breakpoints: the write permission is probed before the snapshot
// (ProbeWrite, which bumps the generation of a code page as every write does), and the host
// pointer comes from the write TLB or, on a miss (watched page, code page just written), from
// TranslateSlow for a write, which notes the code write again. A watched access is compared with
// NoteDataAccess at the captured read and write, as the slow paths do for plain accesses; a retry
// sets the same bits again.
using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>How the locked instruction now running reaches its memory operand.</summary>
    internal enum LockMode : byte
    {
        /// <summary>No locked instruction: plain accesses.</summary>
        Off,
        /// <summary>A locked instruction started; its first operand access decides between CAS and lock.</summary>
        Armed,
        /// <summary>The operand is captured in <see cref="_lkOld"/>/<see cref="_lkNew"/>; committed by CAS.</summary>
        Captured,
        /// <summary>The operand cannot be captured: plain accesses while holding the engine's AtomicLock.</summary>
        Locked,
    }

    internal LockMode _lkMode;
    /// <summary>The aligned host word holding the captured operand, and the linear address of its first byte.</summary>
    private ulong* _lkWord;
    private ulong _lkBase;
    /// <summary>The word as read (what the CAS expects) and as the instruction left it.</summary>
    private ulong _lkOld, _lkNew;
    /// <summary>The operand's guest-physical address when the write was translated on the slow path (a code page among them), else MaxValue.</summary>
    private ulong _lkGpa;
    private bool _lkDirty;

    // State before the instruction, restored when its commit fails.
    private readonly ulong[] _lkGpr = new ulong[16];
    private ulong _lkFlags, _lkDst, _lkSrc, _lkRes;
    private FlagOp _lkOp;
    private int _lkSize;

    /// <summary>Locked instructions re-run because another vCPU stored into the operand's word (diagnostics, tests).</summary>
    internal long _lockedRetries;
    /// <summary>Tests: runs between a captured instruction and its commit (to store as another vCPU would).</summary>
    internal Action? _beforeCommit;
    /// <summary>Locked instructions that ran under the AtomicLock (operand not capturable; diagnostics, tests).</summary>
    internal long _lockedUnderLock;

    /// <summary>Runs a locked instruction atomically; see the file comment.</summary>
    private Status ExecuteAtomic(ref Instruction ins)
    {
        SaveForRetry();
        while (true)
        {
            Status st;
            LockMode mode;
            _lkMode = LockMode.Armed;
            _lkDirty = false;
            try
            {
                st = ins.Mnemonic == Mnemonic.Xchg ? XchgMemory(ref ins) : Execute(ref ins);
            }
            finally
            {
                mode = _lkMode;
                _lkMode = LockMode.Off;
                if (mode == LockMode.Locked) Monitor.Exit(_engine.AtomicLock);
            }
            // A fault, or an instruction that did not store: nothing to commit.
            if (mode != LockMode.Captured || st != Status.Ok || !_lkDirty || _unsupported != null) return st;
            _beforeCommit?.Invoke();
            // Safe: _lkWord is an 8-aligned pointer into a guest RAM mapping, which lives as long as the engine.
            if (Interlocked.CompareExchange(ref *_lkWord, _lkNew, _lkOld) == _lkOld)
            {
                // The translation noted the code write before the instruction ran; another vCPU may
                // have decoded the page again since, from the bytes this commit just replaced.
                if (_lkGpa != ulong.MaxValue && NoteCodeWrite(_lkGpa)) _endBlock = true;
                return st;
            }
            _lockedRetries++;
            RestoreForRetry();
        }
    }

    private void SaveForRetry()
    {
        _gpr.AsSpan().CopyTo(_lkGpr);
        _lkFlags = _flags; _lkOp = _lfOp; _lkSize = _lfSize;
        _lkDst = _lfDst; _lkSrc = _lfSrc; _lkRes = _lfRes;
    }

    private void RestoreForRetry()
    {
        _lkGpr.AsSpan().CopyTo(_gpr);
        _flags = _lkFlags; _lfOp = _lkOp; _lfSize = _lkSize;
        _lfDst = _lkDst; _lfSrc = _lkSrc; _lfRes = _lkRes;
    }

    /// <summary>
    /// First access of a locked instruction to its operand [<paramref name="lin"/>, +<paramref name="size"/>),
    /// whose write permission was already probed: captures the host word holding it, or takes the
    /// AtomicLock when it cannot. No-op unless <see cref="_lkMode"/> is Armed.
    /// </summary>
    internal Status BeginAtomic(ulong lin, int size)
    {
        if (_lkMode != LockMode.Armed) return Status.Ok;
        ulong off = lin & 7;
        if (off + (ulong)size <= 8)
        {
            // Within one aligned 8-byte unit, so within one page.
            byte* host = null;
            _lkGpa = ulong.MaxValue;
            ref var e = ref _tlbWrite[(int)((lin >> 12) & (TlbSize - 1))];
            if (e.Tag == ((lin & PageMask) | _tlbClass)) host = (byte*)(e.Addend + (nint)lin);
            else
            {
                var st = TranslateSlow(lin, Access.Write, _tlbClass, out host, out _lkGpa);
                if (st != Status.Ok) return st; // the tables changed under us since the probe
            }
            if (host != null && ((nuint)host & 7) == off)
            {
                _lkWord = (ulong*)(host - off);
                _lkBase = lin - off;
                _lkOld = _lkNew = Volatile.Read(ref *_lkWord);
                _lkMode = LockMode.Captured;
                if (_dataWatch != 0) NoteDataAccess(lin, size, write: false); // Breakpoints.cs
                return Status.Ok;
            }
        }
        Monitor.Enter(_engine.AtomicLock);
        _lkMode = LockMode.Locked;
        _lockedUnderLock++;
        return Status.Ok;
    }

    /// <summary>A read of the locked operand (after <see cref="BeginAtomic"/>, which this calls when still Armed).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal Status AtomicRead(ulong lin, int size, out ulong v)
    {
        var st = BeginAtomic(lin, size);
        if (st != Status.Ok) { v = 0; return st; }
        if (_lkMode == LockMode.Captured)
        {
            v = (_lkNew >> CaptureShift(lin, size)) & SizeMask(size);
            return Status.Ok;
        }
        return ReadLinear(lin, size, out v);
    }

    /// <summary>A write of the locked operand: into the captured word, or plain under the lock.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal Status AtomicWrite(ulong lin, int size, ulong v)
    {
        var st = BeginAtomic(lin, size);
        if (st != Status.Ok) return st;
        if (_lkMode == LockMode.Captured)
        {
            int shift = CaptureShift(lin, size);
            ulong m = SizeMask(size) << shift;
            _lkNew = (_lkNew & ~m) | ((v << shift) & m);
            _lkDirty = true;
            if (_dataWatch != 0) NoteDataAccess(lin, size, write: true); // Breakpoints.cs
            return Status.Ok;
        }
        return WriteLinear(lin, size, v);
    }

    /// <summary>Bit position of [<paramref name="lin"/>, +<paramref name="size"/>) in the captured word.</summary>
    private int CaptureShift(ulong lin, int size)
    {
        ulong off = lin - _lkBase;
        // A locked instruction accesses only the operand it began with; anything else would be an
        // engine bug: it stops the VM naming the access (ExecuteAtomic then commits nothing)
        // rather than making the instruction silently non-atomic, and never throws into the VMM.
        if (off + (ulong)size > 8)
        {
            Unsupported($"locked access at {lin:x} outside the captured word at {_lkBase:x}");
            return 0;
        }
        return (int)(off * 8);
    }

    /// <summary>
    /// XCHG with memory (always locked, SDM Vol. 2B XCHG), through the locked-operand accessors;
    /// Execute.cs's Xchg serves the register form.
    /// </summary>
    private Status XchgMemory(ref Instruction i)
    {
        if (i.Op0Kind != OpKind.Memory && i.Op1Kind != OpKind.Memory) return Execute(ref i);
        int size = OpSize(ref i);
        var reg = i.Op0Kind == OpKind.Memory ? i.Op1Register : i.Op0Register;
        var st = Linear(MemSeg(ref i), EffectiveAddress(ref i), size, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        st = ProbeWrite(lin, size);
        if (st != Status.Ok) return st;
        st = ReadRmwLinear(lin, size, out ulong mv);
        if (st != Status.Ok) return st;
        st = WriteRmwLinear(lin, size, GetReg(reg));
        if (st != Status.Ok) return st;
        SetReg(reg, mv);
        return Status.Ok;
    }
}
