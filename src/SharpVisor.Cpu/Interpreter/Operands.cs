using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Operand access over Iced's decoded operands: registers, memory (effective address), immediates.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    // Iced register → general-register index, size in bytes, and whether it is AH/CH/DH/BH.
    private static readonly sbyte[] s_regIndex;
    private static readonly byte[] s_regSize;
    private static readonly bool[] s_regHigh8;

    static SoftwareVcpu()
    {
        int n = Enum.GetValues<Register>().Max(r => (int)r) + 1;
        s_regIndex = new sbyte[n];
        s_regSize = new byte[n];
        s_regHigh8 = new bool[n];
        for (int r = 0; r < n; r++)
        {
            var reg = (Register)r;
            s_regIndex[r] = -1;
            if (reg == Register.None) continue;
            if (reg.IsGPR())
            {
                s_regIndex[r] = (sbyte)(reg.GetFullRegister() - Register.RAX);
                s_regSize[r] = (byte)reg.GetSize();
                s_regHigh8[r] = reg is Register.AH or Register.CH or Register.DH or Register.BH;
            }
            else if (reg is Register.RIP or Register.EIP) s_regSize[r] = (byte)reg.GetSize();
            else if (reg.IsSegmentRegister()) s_regSize[r] = 2;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong GetReg(Register r)
    {
        int i = s_regIndex[(int)r];
        ulong v = _gpr[i];
        return s_regSize[(int)r] switch
        {
            1 => s_regHigh8[(int)r] ? (v >> 8) & 0xFF : v & 0xFF,
            2 => v & 0xFFFF,
            4 => v & 0xFFFF_FFFF,
            _ => v,
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetReg(Register r, ulong value)
    {
        int i = s_regIndex[(int)r];
        ref ulong g = ref _gpr[i];
        switch (s_regSize[(int)r])
        {
            case 1:
                if (s_regHigh8[(int)r]) g = (g & ~0xFF00UL) | ((value & 0xFF) << 8);
                else g = (g & ~0xFFUL) | (value & 0xFF);
                break;
            case 2: g = (g & ~0xFFFFUL) | (value & 0xFFFF); break;
            case 4: g = value & 0xFFFF_FFFF; break; // 32-bit writes zero-extend
            default: g = value; break;
        }
    }

    internal static int RegSize(Register r) => s_regSize[(int)r];

    /// <summary>Address size of the instruction's memory operand in bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int AddressSize(ref Instruction i)
    {
        var b = i.MemoryBase;
        if (b != Register.None) return s_regSize[(int)b];
        var x = i.MemoryIndex;
        if (x != Register.None) return s_regSize[(int)x];
        return i.MemoryDisplSize is 2 or 4 or 8 ? i.MemoryDisplSize : 4;
    }

    /// <summary>The effective address (offset within the segment) of the memory operand.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong EffectiveAddress(ref Instruction i)
    {
        ulong ea = i.MemoryDisplacement64;
        var b = i.MemoryBase;
        int asz;
        if (b != Register.None)
        {
            asz = s_regSize[(int)b];
            if (b == Register.RIP) return ea;
            if (b == Register.EIP) return ea & 0xFFFF_FFFF;
            ea += _gpr[s_regIndex[(int)b]];
        }
        else asz = 0;
        var x = i.MemoryIndex;
        if (x != Register.None)
        {
            if (asz == 0) asz = s_regSize[(int)x];
            ea += _gpr[s_regIndex[(int)x]] * (ulong)i.MemoryIndexScale;
        }
        if (asz == 0) asz = i.MemoryDisplSize is 2 or 4 or 8 ? i.MemoryDisplSize : (_mode64 ? 8 : _codeBits / 8);
        return asz switch { 2 => ea & 0xFFFF, 4 => ea & 0xFFFF_FFFF, _ => ea };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int SegIndex(Register seg) => seg switch
    {
        Register.ES => Seg.ES, Register.CS => Seg.CS, Register.SS => Seg.SS,
        Register.DS => Seg.DS, Register.FS => Seg.FS, Register.GS => Seg.GS,
        _ => Seg.DS,
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int MemSeg(ref Instruction i) => SegIndex(i.MemorySegment);

    /// <summary>Operand size in bytes taken from operand 0 (register or memory).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int OpSize(ref Instruction i, int n = 0)
    {
        var k = i.GetOpKind(n);
        if (k == OpKind.Register) return s_regSize[(int)i.GetOpRegister(n)];
        if (k == OpKind.Memory) return i.MemorySize.GetSize();
        return k switch
        {
            OpKind.Immediate8 => 1,
            OpKind.Immediate16 or OpKind.Immediate8to16 => 2,
            OpKind.Immediate32 or OpKind.Immediate8to32 => 4,
            _ => 8,
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status ReadOp(ref Instruction i, int n, int size, out ulong v)
    {
        switch (i.GetOpKind(n))
        {
            case OpKind.Register:
                v = GetReg(i.GetOpRegister(n));
                return Status.Ok;
            case OpKind.Memory:
                return Read(MemSeg(ref i), EffectiveAddress(ref i), size, out v);
            default:
                v = i.GetImmediate(n) & SizeMask(size);
                return Status.Ok;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status WriteOp(ref Instruction i, int n, int size, ulong v)
    {
        if (i.GetOpKind(n) == OpKind.Register)
        {
            SetReg(i.GetOpRegister(n), v);
            return Status.Ok;
        }
        return Write(MemSeg(ref i), EffectiveAddress(ref i), size, v);
    }

    /// <summary>
    /// Read-modify-write destination: for memory, translates for write first (a read-only page
    /// faults with W=1 before anything is read, as on hardware) and returns the linear address.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status ReadRmw(ref Instruction i, int size, out ulong v, out ulong lin)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            lin = 0;
            v = GetReg(i.Op0Register);
            return Status.Ok;
        }
        var st = Linear(MemSeg(ref i), EffectiveAddress(ref i), size, Access.Write, out lin);
        if (st != Status.Ok) { v = 0; return st; }
        st = ProbeWrite(lin, size);
        if (st != Status.Ok) { v = 0; return st; }
        return ReadRmwLinear(lin, size, out v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status WriteRmw(ref Instruction i, int size, ulong lin, ulong v)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            SetReg(i.Op0Register, v);
            return Status.Ok;
        }
        return WriteRmwLinear(lin, size, v);
    }

    /// <summary>
    /// Read of a read-modify-write memory operand whose write was probed. Under a locked
    /// instruction it goes to the captured operand (LockedRmw.cs), so the instruction's read and
    /// write are committed as one; otherwise it is a plain read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status ReadRmwLinear(ulong lin, int size, out ulong v) =>
        _lkMode == LockMode.Off ? ReadLinear(lin, size, out v) : AtomicRead(lin, size, out v);

    /// <summary>Write of a read-modify-write memory operand; see <see cref="ReadRmwLinear"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status WriteRmwLinear(ulong lin, int size, ulong v) =>
        _lkMode == LockMode.Off ? WriteLinear(lin, size, v) : AtomicWrite(lin, size, v);

    // ------------------------------------------------------------------ stack

    /// <summary>Stack address size in bytes (SS.B, or 8 in 64-bit mode).</summary>
    internal int StackAddrSize => _mode64 ? 8 : _seg[Seg.SS].DefaultBig ? 4 : 2;

    internal void SetSp(ulong sp)
    {
        switch (StackAddrSize)
        {
            case 8: _gpr[Gpr.Rsp] = sp; break;
            case 4: _gpr[Gpr.Rsp] = sp & 0xFFFF_FFFF; break;
            default: _gpr[Gpr.Rsp] = (_gpr[Gpr.Rsp] & ~0xFFFFUL) | (sp & 0xFFFF); break;
        }
    }

    /// <summary>Pushes onto SS at a local stack pointer (committed by the caller with SetSp).</summary>
    internal Status PushTo(ref ulong sp, int size, ulong value)
    {
        int asz = StackAddrSize;
        ulong nsp = sp - (ulong)size;
        if (asz == 2) nsp &= 0xFFFF; else if (asz == 4) nsp &= 0xFFFF_FFFF;
        var st = Write(Seg.SS, nsp, size, value);
        if (st == Status.Ok) sp = nsp;
        return st;
    }

    internal Status PopFrom(ref ulong sp, int size, out ulong value)
    {
        int asz = StackAddrSize;
        ulong off = asz == 2 ? sp & 0xFFFF : asz == 4 ? sp & 0xFFFF_FFFF : sp;
        var st = Read(Seg.SS, off, size, out value);
        if (st == Status.Ok) sp = off + (ulong)size;
        return st;
    }

    internal Status Push(int size, ulong value)
    {
        ulong sp = _gpr[Gpr.Rsp];
        var st = PushTo(ref sp, size, value);
        if (st == Status.Ok) SetSp(sp);
        return st;
    }

    internal Status Pop(int size, out ulong value)
    {
        ulong sp = _gpr[Gpr.Rsp];
        var st = PopFrom(ref sp, size, out value);
        if (st == Status.Ok) SetSp(sp);
        return st;
    }

    /// <summary>Operand size of stack operations of this instruction (PUSH/POP/CALL/RET).</summary>
    internal int StackOpSize(ref Instruction i) => i.Code switch
    {
        // Iced's StackPointerIncrement counts RET's imm16 and ENTER's frame too, so these forms
        // take the size from the encoding (a 32-bit "ret 4" pops 4 bytes of return address).
        Code.Retnw or Code.Retnw_imm16 or Code.Enterw_imm16_imm8 or Code.Leavew => 2,
        Code.Retnd or Code.Retnd_imm16 or Code.Enterd_imm16_imm8 or Code.Leaved => 4,
        Code.Retnq or Code.Retnq_imm16 or Code.Enterq_imm16_imm8 or Code.Leaveq => 8,
        _ => i.StackPointerIncrement switch
        {
            -2 or 2 => 2,
            -4 or 4 => 4,
            -8 or 8 => 8,
            _ => _mode64 ? 8 : _codeBits / 8,
        },
    };
}
