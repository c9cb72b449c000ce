using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// String instructions with every REP form and address size, and port I/O with IOPL and the TSS
/// I/O bitmap. I/O and data breakpoints (Breakpoints.cs) stop a REP form after the iteration that hit.
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Iterations of a REP string instruction before the engine looks at interrupts again.</summary>
    private const int RepBudget = 4096;

    private static int StringAddrSize(ref Instruction i)
    {
        for (int n = 0; n < i.OpCount; n++)
        {
            switch (i.GetOpKind(n))
            {
                case OpKind.MemorySegSI: case OpKind.MemoryESDI: return 2;
                case OpKind.MemorySegESI: case OpKind.MemoryESEDI: return 4;
                case OpKind.MemorySegRSI: case OpKind.MemoryESRDI: return 8;
            }
        }
        return 4;
    }

    private void AdvanceIndex(int reg, int asz, long delta)
    {
        ulong v = _gpr[reg] + (ulong)delta;
        _gpr[reg] = asz == 2 ? (_gpr[reg] & ~0xFFFFUL) | (v & 0xFFFF) : asz == 4 ? v & 0xFFFF_FFFF : v;
    }

    private Status StringOp(ref Instruction i, Mnemonic m)
    {
        int size = m switch
        {
            Mnemonic.Movsb or Mnemonic.Stosb or Mnemonic.Lodsb or Mnemonic.Cmpsb or Mnemonic.Scasb or Mnemonic.Insb or Mnemonic.Outsb => 1,
            Mnemonic.Movsw or Mnemonic.Stosw or Mnemonic.Lodsw or Mnemonic.Cmpsw or Mnemonic.Scasw or Mnemonic.Insw or Mnemonic.Outsw => 2,
            Mnemonic.Movsq or Mnemonic.Stosq or Mnemonic.Lodsq or Mnemonic.Cmpsq or Mnemonic.Scasq => 8,
            _ => 4,
        };
        int asz = StringAddrSize(ref i);
        ulong amask = SizeMask(asz);
        bool rep = i.HasRepPrefix || i.HasRepePrefix || i.HasRepnePrefix;
        bool cmp = m is Mnemonic.Cmpsb or Mnemonic.Cmpsw or Mnemonic.Cmpsd or Mnemonic.Cmpsq or Mnemonic.Scasb or Mnemonic.Scasw or Mnemonic.Scasd or Mnemonic.Scasq;
        long delta = (_flags & Rflags.DF) != 0 ? -size : size;
        int srcSeg = MemSeg(ref i);

        if (m is Mnemonic.Insb or Mnemonic.Insw or Mnemonic.Insd or Mnemonic.Outsb or Mnemonic.Outsw or Mnemonic.Outsd)
        {
            var pst = CheckIoPermission((ushort)_gpr[Gpr.Rdx], size);
            if (pst != Status.Ok) return pst;
        }

        bool bulk = rep && delta > 0 && m is Mnemonic.Movsb or Mnemonic.Movsw or Mnemonic.Movsd or Mnemonic.Movsq
            or Mnemonic.Stosb or Mnemonic.Stosw or Mnemonic.Stosd or Mnemonic.Stosq;
        for (int n = 0; ; n++)
        {
            if (rep && (_gpr[Gpr.Rcx] & amask) == 0) return Status.Ok;
            // After an element that produced output or consumed VMM input, stop: the output must go
            // out in order, and the replay buffer holds the inputs of this execution's elements only —
            // a later element's NeedInput would re-execute the instruction from the registers as they
            // are now, replaying the earlier element's input into the wrong element.
            // A data or I/O breakpoint hit by the element just done stops it too (its #DB trap comes
            // between iterations). Every stop between iterations sets RF (SDM Vol. 3B §17.3.1.1:
            // an event taken there pushes RF = 1), so the instruction resumes, after an interrupt
            // or not, without matching its execute breakpoint again (Breakpoints.cs); the resumed
            // instruction clears it (RecomputeSingleStep runs it as a single-instruction block).
            if (n >= RepBudget || (n > 0 && (_outputCount > 0 || _inputCount > 0 || _debugHits != 0)))
            {
                // Let interrupts and exits in; the instruction resumes where it stopped (the registers
                // already describe the elements done; ExecuteBlock then empties the replay buffer).
                _rip = i.IP;
                _endBlock = true;
                StopBetweenIterations();
                return Status.Ok;
            }
            ulong si = _gpr[Gpr.Rsi] & amask, di = _gpr[Gpr.Rdi] & amask;
            if (bulk)
            {
                int k = BulkString(m, size, srcSeg, si, di, asz, amask);
                if (k > 0)
                {
                    n += k - 1;
                    continue;
                }
            }
            Status st;
            switch (m)
            {
                case Mnemonic.Movsb: case Mnemonic.Movsw: case Mnemonic.Movsd: case Mnemonic.Movsq:
                {
                    st = Read(srcSeg, si, size, out ulong v); if (st != Status.Ok) return st;
                    st = Write(Seg.ES, di, size, v); if (st != Status.Ok) return st;
                    AdvanceIndex(Gpr.Rsi, asz, delta); AdvanceIndex(Gpr.Rdi, asz, delta);
                    break;
                }
                case Mnemonic.Stosb: case Mnemonic.Stosw: case Mnemonic.Stosd: case Mnemonic.Stosq:
                    st = Write(Seg.ES, di, size, _gpr[0] & SizeMask(size)); if (st != Status.Ok) return st;
                    AdvanceIndex(Gpr.Rdi, asz, delta);
                    break;
                case Mnemonic.Lodsb: case Mnemonic.Lodsw: case Mnemonic.Lodsd: case Mnemonic.Lodsq:
                {
                    st = Read(srcSeg, si, size, out ulong v); if (st != Status.Ok) return st;
                    SetReg(size switch { 1 => Register.AL, 2 => Register.AX, 4 => Register.EAX, _ => Register.RAX }, v);
                    AdvanceIndex(Gpr.Rsi, asz, delta);
                    break;
                }
                case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsd: case Mnemonic.Cmpsq:
                {
                    st = Read(srcSeg, si, size, out ulong a); if (st != Status.Ok) return st;
                    st = Read(Seg.ES, di, size, out ulong b); if (st != Status.Ok) return st;
                    SetFlags(FlagOp.Sub, size, a, b, (a - b) & SizeMask(size));
                    AdvanceIndex(Gpr.Rsi, asz, delta); AdvanceIndex(Gpr.Rdi, asz, delta);
                    break;
                }
                case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq:
                {
                    st = Read(Seg.ES, di, size, out ulong b); if (st != Status.Ok) return st;
                    ulong a = _gpr[0] & SizeMask(size);
                    SetFlags(FlagOp.Sub, size, a, b, (a - b) & SizeMask(size));
                    AdvanceIndex(Gpr.Rdi, asz, delta);
                    break;
                }
                case Mnemonic.Insb: case Mnemonic.Insw: case Mnemonic.Insd:
                {
                    // Probe the destination first: the port is read only when the store can complete.
                    st = Linear(Seg.ES, di, size, Access.Write, out ulong lin); if (st != Status.Ok) return st;
                    st = ProbeWrite(lin, size); if (st != Status.Ok) return st;
                    NoteIoAccess((ushort)_gpr[Gpr.Rdx], size);
                    if (!TryInput(ExitReason.IoIn, _gpr[Gpr.Rdx] & 0xFFFF, size, out ulong v)) return Status.NeedInput;
                    st = WriteLinear(lin, size, v); if (st != Status.Ok) return st;
                    AdvanceIndex(Gpr.Rdi, asz, delta);
                    EndInstructionIo(); // each element is its own VMM round trip
                    if (rep)
                    {
                        AdvanceCounter(asz);
                        if ((_gpr[Gpr.Rcx] & amask) != 0)
                        {
                            _rip = i.IP; _endBlock = true;
                            StopBetweenIterations();
                        }
                    }
                    return Status.Ok;
                }
                default: // Outs
                {
                    st = Read(srcSeg, si, size, out ulong v); if (st != Status.Ok) return st;
                    NoteIoAccess((ushort)_gpr[Gpr.Rdx], size);
                    Output(ExitReason.IoOut, _gpr[Gpr.Rdx] & 0xFFFF, size, v);
                    AdvanceIndex(Gpr.Rsi, asz, delta);
                    break;
                }
            }
            if (!rep) return Status.Ok;
            AdvanceCounter(asz);
            if (cmp)
            {
                bool zf = GetZf();
                if (i.HasRepePrefix && !zf) return Status.Ok;
                if (i.HasRepnePrefix && zf) return Status.Ok;
            }
        }
    }

    private void AdvanceCounter(int asz) => AdvanceIndex(Gpr.Rcx, asz, -1);

    /// <summary>
    /// Forward REP MOVS/STOS over RAM already in the TLB: as many elements as stay inside the
    /// current source and destination pages (and the address-size wrap) are done as one host copy
    /// or fill. Returns the element count done, or 0 when the element-by-element path must take the
    /// next element (TLB miss, MMIO, a code page — those have no write-TLB entry —, segment limit,
    /// or a destination overlapping just ahead of the source, whose byte-replicating semantics a
    /// block copy would not keep). Results are identical to the element loop.
    /// </summary>
    private int BulkString(Mnemonic m, int size, int srcSeg, ulong si, ulong di, int asz, ulong amask)
    {
        bool movs = m is Mnemonic.Movsb or Mnemonic.Movsw or Mnemonic.Movsd or Mnemonic.Movsq;
        ulong count = _gpr[Gpr.Rcx] & amask;
        if (Linear(Seg.ES, di, size, Access.Write, out ulong linD) != Status.Ok) return 0;
        ulong k = Math.Min(count, (ulong)((0x1000 - (int)(linD & 0xFFF)) / size));
        k = Math.Min(k, (amask - di + 1) / (ulong)size);
        ulong linS = 0;
        if (movs)
        {
            if (Linear(srcSeg, si, size, Access.Read, out linS) != Status.Ok) return 0;
            k = Math.Min(k, (ulong)((0x1000 - (int)(linS & 0xFFF)) / size));
            k = Math.Min(k, (amask - si + 1) / (ulong)size);
        }
        k = Math.Min(k, RepBudget);
        if (k < 2) return 0;
        int len = (int)k * size;
        // Segment limits (outside 64-bit mode) for the whole run.
        if (Linear(Seg.ES, di, len, Access.Write, out _) != Status.Ok) return 0;
        ref var wd = ref _tlbWrite[(int)((linD >> 12) & (TlbSize - 1))];
        if (wd.Tag != ((linD & PageMask) | _tlbClass)) return 0;
        byte* dst = (byte*)(wd.Addend + (nint)linD);
        if (movs)
        {
            if (Linear(srcSeg, si, len, Access.Read, out _) != Status.Ok) return 0;
            ref var rs = ref _tlbRead[(int)((linS >> 12) & (TlbSize - 1))];
            if (rs.Tag != ((linS & PageMask) | _tlbClass)) return 0;
            byte* src = (byte*)(rs.Addend + (nint)linS);
            if (dst > src && dst < src + len) return 0;
            Buffer.MemoryCopy(src, dst, len, len);
            AdvanceIndex(Gpr.Rsi, asz, len);
        }
        else
        {
            ulong v = _gpr[0];
            switch (size)
            {
                case 1: new Span<byte>(dst, len).Fill((byte)v); break;
                case 2: new Span<ushort>(dst, (int)k).Fill((ushort)v); break;
                case 4: new Span<uint>(dst, (int)k).Fill((uint)v); break;
                default: new Span<ulong>(dst, (int)k).Fill(v); break;
            }
        }
        AdvanceIndex(Gpr.Rdi, asz, len);
        AdvanceIndex(Gpr.Rcx, asz, -(long)k);
        return (int)k;
    }

    // ------------------------------------------------------------------ IN / OUT

    /// <summary>IOPL and the TSS I/O permission bitmap (SDM Vol. 1 §19.5).</summary>
    private Status CheckIoPermission(ushort port, int size)
    {
        if (!_protected || (_cpl <= Iopl && (_flags & Rflags.VM) == 0)) return Status.Ok;
        // Only a 32-bit (or 64-bit) TSS has a bitmap.
        if ((_tr.Type & 0x9) != 0x9 || _tr.Limit < 0x67) return GP(0);
        var st = ReadSystem(_tr.Base + 0x66, 2, out ulong mapBase);
        if (st != Status.Ok) return st;
        ulong byteOff = mapBase + (ulong)(port >> 3);
        if (byteOff + 1 > _tr.Limit) return GP(0);
        st = ReadSystem(_tr.Base + byteOff, 2, out ulong bits);
        if (st != Status.Ok) return st;
        ulong need = ((1UL << size) - 1) << (port & 7);
        return (bits & need) != 0 ? GP(0) : Status.Ok;
    }

    private Status In(ref Instruction i)
    {
        int size = RegSize(i.Op0Register);
        ushort port = i.Op1Kind == OpKind.Register ? (ushort)_gpr[Gpr.Rdx] : (ushort)i.Immediate8;
        var st = CheckIoPermission(port, size);
        if (st != Status.Ok) return st;
        NoteIoAccess(port, size);
        if (!TryInput(ExitReason.IoIn, port, size, out ulong v)) return Status.NeedInput;
        SetReg(i.Op0Register, v);
        return Status.Ok;
    }

    private Status Out(ref Instruction i)
    {
        int size = RegSize(i.Op1Register);
        ushort port = i.Op0Kind == OpKind.Register ? (ushort)_gpr[Gpr.Rdx] : (ushort)i.Immediate8;
        var st = CheckIoPermission(port, size);
        if (st != Status.Ok) return st;
        NoteIoAccess(port, size);
        Output(ExitReason.IoOut, port, size, GetReg(i.Op1Register));
        return Status.Ok;
    }

    /// <summary>A REP string instruction stops between iterations: RF = 1 until it resumes (see StringOp).</summary>
    private void StopBetweenIterations()
    {
        _flags |= Rflags.RF;
        RecomputeSingleStep();
    }
}
