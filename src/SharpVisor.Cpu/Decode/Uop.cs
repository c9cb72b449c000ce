// Pre-decoded forms of the hot integer instructions (SharpVisor issue #2, first slice).
//
// At block decode time each Iced Instruction also gets a Uop: an op kind naming the operand form,
// and the operands resolved to what the interpreter needs (register indices, operand size,
// immediate already masked, the memory operand's base/index/scale/displacement/segment and
// address-size mask). The block loop runs a Uop's kind directly (FastPath.cs) and everything
// else, Kind = Slow, through the Iced-based Execute as before.
//
// Exactness: a fast handler performs the same steps, in the same order, through the same memory
// primitives (Read/Write/Linear/ProbeWrite/ReadLinear/WriteLinear/Push/PopFrom/Branch) as the
// Execute handler it replaces, so faults, page-crossing accesses, MMIO exits and code-page writes
// behave identically. Anything the classifier is not sure of stays Slow: LOCK prefixes, segment,
// control and debug registers, memory-destination shifts, shifts by CL, shift counts of zero.
using Iced.Intel;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu.Decode;

internal enum UopKind : byte
{
    /// <summary>Executed by the Iced-based <c>Execute</c>.</summary>
    Slow,
    /// <summary>Executed by <c>Execute</c> under the engine's atomic lock (LOCK prefix, XCHG with memory).</summary>
    SlowLocked,
    Nop,
    // The two groups keep the RR, RI, RM, MR, MI order: FastPath.TwoOperandForm adds the form's offset.
    MovRR, MovRI, MovRM, MovMR, MovMI,
    AluRR, AluRI, AluRM, AluMR, AluMI,
    IncR, DecR,
    Lea,
    MovzxRR, MovzxRM, MovsxRR, MovsxRM,
    ShiftRI,
    Jcc, Jmp, CallRel, Ret,
    PushR, PopR,
    SetccR, CmovRR, CmovRM,
    /// <summary>IMUL r, r/m (R0 × source) and IMUL r, r/m, imm (source × Imm).</summary>
    Imul2RR, Imul2RM, Imul3RR, Imul3RM,
}

/// <summary>ALU operation of the Alu* kinds (the encoding order of the 00–3F opcodes, then TEST).</summary>
internal enum AluOp : byte { Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test }

internal enum ShiftOp : byte { Shl, Shr, Sar }

/// <summary>One pre-decoded instruction; meaningful fields depend on <see cref="Kind"/>.</summary>
internal unsafe struct Uop
{
    /// <summary>
    /// The handler specialized for this kind, operand size and operation (FastPath.cs, chosen by
    /// Bind at decode time), or null for the Slow kinds. Calling it is the one indirect branch per
    /// instruction: the handlers have no size or operation switches left.
    /// </summary>
    public delegate*<SoftwareVcpu, ref Uop, Status> Fn;
    /// <summary>RIP after the instruction, already masked to the code size.</summary>
    public ulong NextIp;
    /// <summary>Memory operand displacement (for RIP-relative operands: the absolute address).</summary>
    public ulong Disp;
    /// <summary>Immediate masked to the operand size; branch target; shift count; RET's imm16.</summary>
    public ulong Imm;
    /// <summary>Address-size mask of the memory operand: 0xFFFF, 0xFFFF_FFFF or all ones.</summary>
    public ulong AddrMask;
    public UopKind Kind;
    /// <summary><see cref="AluOp"/>, <see cref="ShiftOp"/> or condition code (low nibble of Jcc).</summary>
    public byte Op;
    /// <summary>Operand size in bytes (PUSH/POP/CALL/RET: the stack operation size).</summary>
    public byte Size;
    /// <summary>Source size of MOVZX/MOVSX; register size of PUSH/POP.</summary>
    public byte Size2;
    /// <summary>Registers: index 0–15, plus <see cref="High8"/> for AH/CH/DH/BH.</summary>
    public byte R0, R1;
    /// <summary>Memory base and index register indices, <see cref="NoReg"/> if absent.</summary>
    public byte Base, Index;
    public byte Scale;
    public byte Seg;
    /// <summary>1: the handler also runs the next Uop (a Jcc) and the block loop skips it.</summary>
    public byte Fused;

    public const byte NoReg = 0xFF, High8 = 16;
}
