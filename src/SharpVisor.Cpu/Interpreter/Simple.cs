using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Small instructions whose handlers are a few lines each (kept out of the dispatch switch).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    private Status Lea(ref Instruction i)
    {
        SetReg(i.Op0Register, EffectiveAddress(ref i));
        return Status.Ok;
    }

    private Status Movzx(ref Instruction i)
    {
        var st = ReadOp(ref i, 1, OpSize(ref i, 1), out ulong v);
        if (st != Status.Ok) return st;
        SetReg(i.Op0Register, v);
        return Status.Ok;
    }

    private Status Movsx(ref Instruction i)
    {
        int s1 = OpSize(ref i, 1);
        var st = ReadOp(ref i, 1, s1, out ulong v);
        if (st != Status.Ok) return st;
        SetReg(i.Op0Register, (ulong)SignExtend(v, s1));
        return Status.Ok;
    }

    private Status Jcc(ref Instruction i) =>
        Condition(ConditionOf(i.ConditionCode)) ? Branch(i.NearBranchTarget) : Status.Ok;

    private Status Setcc(ref Instruction i) =>
        WriteOp(ref i, 0, 1, Condition(ConditionOf(i.ConditionCode)) ? 1UL : 0);

    private Status Bswap(ref Instruction i)
    {
        int size = RegSize(i.Op0Register);
        ulong v = GetReg(i.Op0Register);
        v = size == 8 ? BinaryPrimitives.ReverseEndianness(v)
            : size == 4 ? BinaryPrimitives.ReverseEndianness((uint)v) : 0; // 16-bit BSWAP: undefined, gives 0 on Intel
        SetReg(i.Op0Register, v);
        return Status.Ok;
    }

    private Status Movbe(ref Instruction i)
    {
        int size = OpSize(ref i);
        var st = ReadOp(ref i, 1, size, out ulong v);
        if (st != Status.Ok) return st;
        v = size switch
        {
            2 => BinaryPrimitives.ReverseEndianness((ushort)v),
            4 => BinaryPrimitives.ReverseEndianness((uint)v),
            _ => BinaryPrimitives.ReverseEndianness(v),
        };
        return WriteOp(ref i, 0, size, v);
    }

    private Status Lahf()
    {
        ulong f = GetRflags() & 0xFF;
        _gpr[0] = (_gpr[0] & ~0xFF00UL) | ((f | 2) << 8);
        return Status.Ok;
    }

    private Status Sahf()
    {
        MaterializeFlags();
        ulong ah = (_gpr[0] >> 8) & (Rflags.CF | Rflags.PF | Rflags.AF | Rflags.ZF | Rflags.SF);
        _flags = (_flags & ~(Rflags.CF | Rflags.PF | Rflags.AF | Rflags.ZF | Rflags.SF)) | ah;
        return Status.Ok;
    }

    private Status Jcxz(ref Instruction i, Mnemonic m)
    {
        ulong c = m == Mnemonic.Jcxz ? _gpr[1] & 0xFFFF : m == Mnemonic.Jecxz ? _gpr[1] & 0xFFFF_FFFF : _gpr[1];
        return c == 0 ? Branch(i.NearBranchTarget) : Status.Ok;
    }

    private Status Xlatb(ref Instruction i)
    {
        int asz = AddressSize(ref i);
        ulong ea = (_gpr[3] + (_gpr[0] & 0xFF)) & (asz == 2 ? 0xFFFFUL : asz == 4 ? 0xFFFF_FFFFUL : ulong.MaxValue);
        var st = Read(MemSeg(ref i), ea, 1, out ulong v);
        if (st != Status.Ok) return st;
        _gpr[0] = (_gpr[0] & ~0xFFUL) | v;
        return Status.Ok;
    }

    private Status Clflush(ref Instruction i)
    {
        // Must still fault like a byte read of the line (SDM: treated as a read for permissions),
        // but reads nothing: a translation only, so an MMIO line causes no read of a device register.
        var st = Linear(MemSeg(ref i), EffectiveAddress(ref i), 1, Access.Read, out ulong lin);
        if (st != Status.Ok) return st;
        return InDataTlb(lin, Access.Read) ? Status.Ok : TranslateSlow(lin, Access.Read, _tlbClass, out _, out _);
    }

    private Status Hlt()
    {
        if (_cpl != 0) return GP(0);
        _halted = true;
        _endBlock = true;
        return Status.Ok;
    }

    private Status Clts()
    {
        if (_cpl != 0) return GP(0);
        _cr0 &= ~Cr0.TS;
        return Status.Ok;
    }

    private Status Invlpg(ref Instruction i)
    {
        if (_cpl != 0) return GP(0);
        // Faults only for a non-canonical address (64-bit) or outside the segment; never #PF.
        var st = Linear(MemSeg(ref i), EffectiveAddress(ref i), 1, Access.Read, out ulong lin);
        if (st == Status.Ok) InvalidatePage(lin);
        return st;
    }

    private Status Rdpid(ref Instruction i)
    {
        SetReg(i.Op0Register, _msrTscAux);
        return Status.Ok;
    }

    private Status StacClac(Mnemonic m)
    {
        // #UD outside ring 0 (SMAP is always advertised, so the CPUID condition never applies).
        if (_cpl != 0) return UD();
        if (m == Mnemonic.Stac) _flags |= Rflags.AC; else _flags &= ~Rflags.AC;
        UpdateTlbClass();
        return Status.Ok;
    }
}
