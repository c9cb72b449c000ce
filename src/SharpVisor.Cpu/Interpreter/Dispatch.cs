using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.Decode;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>The interpreter's block loop: runs decoded instructions and turns statuses into events.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>
    /// Runs the block at CS:RIP, then, while nothing needs the run loop, the blocks after it
    /// (block chaining): the run loop between two blocks only checks for signals, pending
    /// interrupts or NMIs, HLT, IF going from 0 to 1 and the instruction clock's stop, and
    /// <see cref="MayChain"/> continues only when none of those would do anything, so every
    /// event is still recognized at the same block boundary and the clock stops at the same
    /// instruction. Each next block is found by <see cref="FetchBlock"/> (CS checks, execute TLB,
    /// page generation), exactly as the run loop would.
    /// </summary>
    [SkipLocalsInit]
    private Status ExecuteBlock()
    {
        var st = FetchBlock(out Block? block);
        if (st != Status.Ok) return FetchFailed(st);
        block!.Executions++;
        if (_singleInstructionBlocks && CheckExecuteBreakpoint(block.Instructions[0].IP) is var bp && bp != Status.Ok)
            return bp == Status.Fault ? RaiseException() : bp;
        while (true)
        {
            var ops = block.Ops;
            int run = block.Run, retired = ops.Length;
            _endBlock = false;
            bool tfAtStart = (_flags & Rflags.TF) != 0;
            bool ifAtStart = (_flags & Rflags.IF) != 0;
            // Taken at the start: an instruction that clears TF (POPF, IRET) still owes its trap.
            bool single = _singleInstructionBlocks;
            int k = 0;
            for (; k < run; k++)
            {
                // Pre-decoded forms run from their Uop's handler; the rest through Iced's Instruction.
                ref Uop u = ref ops[k];
                bool shadow = _interruptShadow;
                _rip = u.NextIp;
                var fn = u.Fn;
                st = fn != null ? fn(this, ref u)
                    : u.Kind == UopKind.Slow ? Execute(ref block.Instructions[k]) : ExecuteLocked(ref block.Instructions[k]);
                if (st != Status.Ok)
                {
                    // A fused pair fails only in its Jcc (the first is a register operation):
                    // the first is retired and the Jcc is the faulting instruction.
                    k += u.Fused;
                    InstructionsRetired += k;
                    return FinishInstruction(ref block.Instructions[k], st);
                }
                EndInstructionIo();
                if (shadow) _interruptShadow = false;
                if (_endBlock)
                {
                    if (_unsupported != null)
                    {
                        // The instruction overflowed the VMM output buffer (Output): it stops the VM.
                        InstructionsRetired += k;
                        return FinishInstruction(ref block.Instructions[k], Status.Exit);
                    }
                    k++;
                    if (_outputCount > 0)
                    {
                        InstructionsRetired += k;
                        // The instruction completed (OUT, an MMIO write): the #DB trap it owes
                        // (single step, breakpoint hits) is taken now, before the VMM sees the
                        // write, as the trap precedes the next instruction on silicon.
                        if (single)
                        {
                            _pendingSingleStep = tfAtStart;
                            var trap = AfterSingleStep();
                            if (trap != Status.Ok && _outputCount == 0) return trap;
                        }
                        return Status.Exit;
                    }
                    retired = k;
                    break;
                }
            }
            // Run to its end, the block retired all its instructions (a fused pair counts two).
            InstructionsRetired += retired;
            if (single)
            {
                _pendingSingleStep = tfAtStart;
                return AfterSingleStep();
            }
            if (_endBlock || !MayChain(ifAtStart)) return Status.Ok;
            st = NextBlock(ref block);
            if (st != Status.Ok) return FetchFailed(st);
            block.Executions++;
        }
    }

    /// <summary>
    /// The block at CS:RIP after <paramref name="block"/> ran to its end: a linked successor when
    /// it is what FetchBlock would return, else FetchBlock's answer (linked for next time).
    /// A link from a <see cref="Block.Linkable"/> block is valid when its RIP matches, its page
    /// generation is current (no code write since it was decoded) and the CS limit covers it:
    /// CS, the mode, CPL and the TLB are what they were when the predecessor was fetched (it
    /// cannot change them), the successor lies in the same linear and physical page as the
    /// predecessor, so FetchBlock would find the same translation and a block decoded from the
    /// same bytes in the same mode.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Status NextBlock(ref Block block)
    {
        var prev = block;
        ulong rip = _rip;
        if (prev.Linkable)
        {
            var l = prev.Link0;
            if (l == null || l.Rip != rip) l = prev.Link1;
            if (l != null && l.Rip == rip && l.Generation == PageGeneration(l.Phys) && (_mode64 || l.LastByte <= _seg[Seg.CS].Limit))
            {
                block = l;
                return Status.Ok;
            }
        }
        var st = FetchBlock(out Block? next);
        if (st != Status.Ok) return st;
        block = next!;
        if (prev.Linkable && next!.Cached && next.Bits == prev.Bits
            && ((next.Phys ^ prev.Phys) & PageMask) == 0 && next.Rip - prev.Rip == next.Phys - prev.Phys)
        {
            // Two exits per block (taken and fall-through); a third successor replaces the older.
            if (prev.Link0 == null || prev.Link0.Rip == next.Rip) prev.Link0 = next;
            else { prev.Link1 = prev.Link0; prev.Link0 = next; }
        }
        return Status.Ok;
    }

    /// <summary>
    /// Whether the run loop, given control after this block, would only call ExecuteBlock again
    /// (RunCore: signals, interrupt recognition, HLT, the instruction clock). IF set by this
    /// block is noted for the run loop exactly as it notes it itself.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool MayChain(bool ifAtStart)
    {
        if (!ifAtStart && (_flags & Rflags.IF) != 0)
        {
            _irqCheck = true;
            return false;
        }
        return !_irqCheck && !_nmiPending && !_halted && _outputCount == 0
            && InstructionsRetired < StopAtInstruction && Volatile.Read(ref _signals) == 0;
    }

    private Status FetchFailed(Status st)
    {
        EndInstructionIo();
        return st == Status.Fault ? RaiseException() : st;
    }

    /// <summary>XCHG with a memory operand is locked without a prefix (SDM Vol. 2, XCHG).</summary>
    private static bool IsImplicitlyLocked(ref Instruction ins) =>
        ins.Mnemonic == Mnemonic.Xchg && (ins.Op0Kind == OpKind.Memory || ins.Op1Kind == OpKind.Memory);

    /// <summary>
    /// A locked read-modify-write (SDM Vol. 3A §9.1.2) is atomic against every access of other
    /// vCPUs, plain stores included: its memory operand is captured and committed with a host
    /// compare-and-swap, the instruction re-running if another vCPU stored meanwhile; operands a
    /// CAS cannot cover run under the engine's AtomicLock. See LockedRmw.cs.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Status ExecuteLocked(ref Instruction ins) => ExecuteAtomic(ref ins);

    private Status FinishInstruction(ref Instruction ins, Status st)
    {
        // An instruction that named something unsupported (possibly before it faulted or asked
        // for input, e.g. a full VMM I/O buffer) stops the VM whatever else it returned.
        if (_unsupported != null) st = Status.Exit;
        switch (st)
        {
            case Status.Fault:
                EndInstructionIo();
                _rip = ins.IP;
                return RaiseException();
            case Status.NeedInput:
                _rip = ins.IP;
                return Status.NeedInput;
            default: // Exit: the instruction completed (or named what is unsupported) and leaves the engine
                EndInstructionIo();
                if (_unsupported != null)
                {
                    _rip = ins.IP;
                    _outputCount = _outputPos = 0; // the instruction did not complete: nothing of it goes out
                    SetExit(ExitReason.InternalError, $"unsupported {_unsupported} at {CsRip()}");
                    _unsupported = null;
                    return Status.Exit;
                }
                InstructionsRetired++;
                return Status.Exit;
        }
    }

    /// <summary>
    /// Delivers the exception recorded by the last faulting step, applying the double-fault rules
    /// (SDM Vol. 3A Table 6-5) and ending in a shutdown exit on a triple fault.
    /// </summary>
    internal Status RaiseException()
    {
        var st = RaiseExceptionCore();
        // Delivery is not an instruction that could be re-executed with the VMM's answer.
        return st == Status.NeedInput ? DeliveryThroughMmio() : st;
    }

    private Status RaiseExceptionCore()
    {
        byte first = _excVector;
        bool hasErr = _excHasError;
        uint err = _excError;
        var st = DeliverException(first, hasErr, err);
        if (st != Status.Fault) return st;

        byte second = _excVector;
        if (first == Vector.DF)
            return TripleFault($"{Vector.Name(second)} while delivering #DF");
        bool df = (Vector.IsContributory(first) && Vector.IsContributory(second))
            || (first == Vector.PF && (second == Vector.PF || Vector.IsContributory(second)));
        if (df)
        {
            st = DeliverException(Vector.DF, true, 0);
            if (st == Status.Fault) return TripleFault($"{Vector.Name(_excVector)} while delivering #DF (after {Vector.Name(first)}, then {Vector.Name(second)})");
            return st;
        }
        // Benign combination: the second exception is delivered instead, serially.
        hasErr = _excHasError; err = _excError;
        st = DeliverException(second, hasErr, err);
        if (st == Status.Fault)
        {
            byte third = _excVector;
            if ((Vector.IsContributory(second) && Vector.IsContributory(third)) || (second == Vector.PF && (third == Vector.PF || Vector.IsContributory(third))))
            {
                st = DeliverException(Vector.DF, true, 0);
                if (st == Status.Fault) return TripleFault($"{Vector.Name(_excVector)} while delivering #DF (after {Vector.Name(first)}, then {Vector.Name(second)}, then {Vector.Name(third)})");
                return st;
            }
            return TripleFault($"{Vector.Name(third)} while delivering {Vector.Name(second)} (after {Vector.Name(first)})");
        }
        return st;
    }

    private Status DeliverException(byte vector, bool hasErr, uint err)
    {
        if (vector < _exceptionCounts.Length) _exceptionCounts[vector]++;
        if (vector == Vector.PF) _cr2 = _pendingCr2;
        // A faulting instruction did not complete: the breakpoints its accesses hit are not
        // reported (it hits them again when it is restarted). Breakpoints.cs.
        _debugHits = 0;
        // A fault-class exception pushes RF = 1 (SDM Vol. 3B §17.3.1.1), so that IRET back to the
        // instruction does not report its instruction breakpoint again. #DB sets RF itself where
        // it is a fault (general detect) and must not for an instruction breakpoint; #DF and #MC
        // are aborts and NMI an interrupt.
        if (vector is not (Vector.DB or Vector.NMI or Vector.DF or Vector.MC)) _flags |= Rflags.RF;
        // Faults on the delivery path leave the vCPU's RIP at the faulting instruction.
        return DeliverEvent(vector, hasErr, err, EventKind.Exception);
    }

    internal Status TripleFault(string why)
    {
        SetExit(ExitReason.Shutdown, $"triple fault at {CsRip()}: {why}");
        return Status.Exit;
    }

    /// <summary>
    /// After a single-instruction block: the trap-class #DB of the instruction — single step (TF
    /// when it started: DR6.BS) and data or I/O breakpoints it hit (DR6.B0–B3, Breakpoints.cs) —
    /// as one exception. B0–B3 are rewritten with what this #DB reports, as QEMU and KVM do
    /// (SDM Vol. 3B §17.2.3: "certain debug exceptions may clear bits 0-3"); the other DR6 bits stay.
    /// </summary>
    private Status AfterSingleStep()
    {
        RecomputeSingleStep();
        uint hits = _debugHits;
        if (_pendingSingleStep || hits != 0)
        {
            ulong dr6 = (_dr[6] & ~0xFUL) | hits;
            if (_pendingSingleStep) dr6 |= Dr6Bs;
            _dr[6] = dr6;
            _pendingSingleStep = false;
            _debugHits = 0;
            return CompleteDelivery(DeliverEvent(Vector.DB, false, 0, EventKind.Exception));
        }
        return Status.Ok;
    }

    /// <summary>
    /// Before each instruction of a single-instruction block. First, breakpoint hits still pending
    /// from what ran since the last instruction boundary — an event delivery whose accesses hit
    /// (an instruction that exits with output has its trap delivered before the exit) — are delivered
    /// now as their trap (the saved RIP is this instruction, which has not run); hits of an
    /// instruction that is being re-executed with the VMM's input are dropped (it hits again).
    /// Then execute breakpoints (DR7 Ln/Gn with R/W = 00) match before the instruction runs: a
    /// fault with DR6.Bn for every enabled one at this address, unless RF is set; RF is cleared
    /// here, at the start of the instruction (SDM Vol. 3B §17.3.1.1).
    /// </summary>
    private Status CheckExecuteBreakpoint(ulong rip)
    {
        if (_debugHits != 0)
        {
            uint pending = _debugHits;
            _debugHits = 0;
            if (_inputCount == 0)
            {
                _dr[6] = (_dr[6] & ~0xFUL) | pending;
                _excVector = Vector.DB; _excHasError = false; _excError = 0;
                return Status.Fault;
            }
        }
        ulong dr7 = _dr[7];
        if ((dr7 & 0xFF) == 0 || (_flags & Rflags.RF) != 0)
        {
            _flags &= ~Rflags.RF;
            return Status.Ok;
        }
        ulong lin = _mode64 ? rip : (_seg[Seg.CS].Base + rip) & 0xFFFF_FFFF;
        uint match = 0;
        for (int n = 0; n < 4; n++)
        {
            if (!BreakpointEnabled(dr7, n) || BreakpointRw(dr7, n) != RwExecute) continue;
            if (BreakpointAddress(n) == lin) match |= 1u << n;
        }
        if (match == 0) return Status.Ok;
        _dr[6] = (_dr[6] & ~0xFUL) | match;
        _excVector = Vector.DB; _excHasError = false; _excError = 0;
        return Status.Fault;
    }

    /// <summary>TF was set when the instruction started: a #DB trap follows it.</summary>
    internal bool _pendingSingleStep;

    /// <summary>
    /// Blocks of one instruction while TF is set, any breakpoint is enabled in DR7 (every
    /// instruction is checked before and after it runs), or RF is set (the next instruction must
    /// clear it, CheckExecuteBreakpoint). Also refreshes the watched breakpoints when DR7 changed
    /// behind MOV DRn's back (a task switch clears L0–L3).
    /// </summary>
    internal void RecomputeSingleStep()
    {
        if (_dr[7] != _watchDr7) UpdateBreakpoints();
        _singleInstructionBlocks = (_flags & (Rflags.TF | Rflags.RF)) != 0 || (_dr[7] & 0xFF) != 0;
    }
}
