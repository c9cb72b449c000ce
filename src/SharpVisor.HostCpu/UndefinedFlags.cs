// Architecturally undefined results of integer instructions, per the "Flags Affected" and
// "Operation" sections of the Intel SDM Vol. 2 for each mnemonic. On the host an undefined flag
// has some concrete value; an engine may legitimately differ there, so comparisons mask them.
//
//   AND OR XOR TEST ......... AF                  (OF, CF cleared; SF ZF PF from the result)
//   MUL IMUL ................ SF ZF AF PF         (CF, OF defined)
//   DIV IDIV ................ CF OF SF ZF AF PF
//   SHL SHR SAR ............. count 0: none; else AF, OF if count > 1, CF for SHL/SHR if count ≥ width
//   ROL ROR RCL RCR ......... count 0: none; OF if count > 1           (count = count AND 1Fh/3Fh)
//   SHLD SHRD ............... count 0: none; AF, OF if count > 1; count > width (16-bit only):
//                             all six flags and the destination
//   BT BTS BTR BTC .......... OF SF AF PF         (ZF unaffected)
//   BSF BSR ................. CF OF SF AF PF; destination when the source is 0
//   LZCNT TZCNT ............. OF SF AF PF
//   ANDN BLSI BLSMSK BLSR BZHI  AF PF             BEXTR: AF SF PF
//   BSWAP r16 ............... destination
// Everything else in InstructionForms (ADD…NEG, INC/DEC, POPCNT, XADD, CMPXCHG, ADCX/ADOX, MULX,
// PDEP/PEXT, RORX/SARX/SHLX/SHRX, CMOVcc, SETcc, MOV*, XCHG, LEA, CBW…CQO, LAHF/SAHF, CLC/STC/CMC)
// defines every flag it touches. x87/SSE condition codes are not covered (mask 0).
using Iced.Intel;

namespace SharpVisor.HostCpu;

/// <summary>What an instruction leaves undefined: RFLAGS bits, GPRs (bit i = register i), memory.</summary>
public readonly record struct UndefinedBehavior(ulong Flags, ushort Gprs, bool Memory)
{
    public static readonly UndefinedBehavior None = default;

    public UndefinedBehavior Union(UndefinedBehavior other) => new(Flags | other.Flags, (ushort)(Gprs | other.Gprs), Memory || other.Memory);
}

public static class UndefinedFlags
{
    private const ulong All = RflagsBits.Status;

    /// <summary>
    /// RFLAGS bits left undefined by <paramref name="code"/>. <paramref name="count"/> is the raw
    /// count operand of shifts, rotates and SHLD/SHRD (CL or imm8, before masking); null means
    /// unknown and gives the widest mask. Other codes ignore it.
    /// </summary>
    public static ulong Mask(Code code, ulong? count = null)
    {
        var op = code.ToOpCode();
        int width = OperandWidth(op);
        return FlagsFor(op.Mnemonic, width, count);
    }

    /// <summary>
    /// Undefined results of every instruction in the case's snippet. The first instruction is
    /// judged from the input state (counts, BSF/BSR sources); later ones, whose inputs the harness
    /// does not know, get the widest mask for their form.
    /// </summary>
    public static UndefinedBehavior For(NativeCase c)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(c.Code), 0, DecoderOptions.None);
        var result = UndefinedBehavior.None;
        bool first = true;
        while (decoder.IP < (ulong)c.Code.Length)
        {
            decoder.Decode(out var instr);
            if (instr.IsInvalid) break;
            result = result.Union(first ? For(instr, c.Input, c.Window) : Widest(instr));
            first = false;
        }
        return result;
    }

    /// <summary>
    /// Undefined results of one instruction given its window-relative input state and window
    /// (memory operands are read at base + index·scale + disp taken as a window offset).
    /// </summary>
    public static UndefinedBehavior For(in Instruction instr, in NativeState input, ReadOnlySpan<byte> window)
    {
        var mnemonic = instr.Mnemonic;
        int width = Width(instr, 0);
        ulong? count = null;
        if (IsShiftOrRotate(mnemonic)) count = OperandValue(instr, 1, input, window);
        else if (mnemonic is Mnemonic.Shld or Mnemonic.Shrd) count = OperandValue(instr, 2, input, window);

        ulong flags = FlagsFor(mnemonic, width, count);
        ushort gprs = 0;
        bool memory = false;

        bool destinationUndefined = mnemonic switch
        {
            Mnemonic.Bsf or Mnemonic.Bsr => OperandValue(instr, 1, input, window) is 0,
            Mnemonic.Shld or Mnemonic.Shrd => width == 16 && count is { } n && (n & 0x1F) > 16,
            Mnemonic.Bswap => width == 16,
            _ => false,
        };
        if (destinationUndefined)
        {
            if (instr.Op0Kind == OpKind.Register) gprs |= (ushort)(1 << CasePreflight.Index(instr.Op0Register));
            else memory = true;
        }
        return new UndefinedBehavior(flags, gprs, memory);
    }

    private static UndefinedBehavior Widest(in Instruction instr)
    {
        int width = Width(instr, 0);
        ulong flags = FlagsFor(instr.Mnemonic, width, null);
        bool destination = instr.Mnemonic is Mnemonic.Bsf or Mnemonic.Bsr || (instr.Mnemonic is Mnemonic.Shld or Mnemonic.Shrd && width == 16)
            || (instr.Mnemonic == Mnemonic.Bswap && width == 16);
        if (!destination) return new UndefinedBehavior(flags, 0, false);
        return instr.Op0Kind == OpKind.Register
            ? new UndefinedBehavior(flags, (ushort)(1 << CasePreflight.Index(instr.Op0Register)), false)
            : new UndefinedBehavior(flags, 0, true);
    }

    private static ulong FlagsFor(Mnemonic mnemonic, int width, ulong? count)
    {
        const ulong CF = RflagsBits.CF, PF = RflagsBits.PF, AF = RflagsBits.AF, ZF = RflagsBits.ZF, SF = RflagsBits.SF, OF = RflagsBits.OF;
        ulong countMask = width == 64 ? 0x3FUL : 0x1FUL;
        // Unknown count: assume a count that makes the most flags undefined.
        ulong masked = count is { } c ? c & countMask : ulong.MaxValue;
        switch (mnemonic)
        {
            case Mnemonic.And or Mnemonic.Or or Mnemonic.Xor or Mnemonic.Test:
                return AF;
            case Mnemonic.Mul or Mnemonic.Imul:
                return SF | ZF | AF | PF;
            case Mnemonic.Div or Mnemonic.Idiv:
                return All;
            case Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar:
                if (masked == 0) return 0;
                ulong shift = AF;
                if (masked > 1) shift |= OF;
                if (mnemonic != Mnemonic.Sar && masked >= (ulong)width) shift |= CF;
                return shift;
            case Mnemonic.Rol or Mnemonic.Ror or Mnemonic.Rcl or Mnemonic.Rcr:
                return masked is 0 or 1 ? 0 : OF;
            case Mnemonic.Shld or Mnemonic.Shrd:
                if (masked == 0) return 0;
                if (masked > (ulong)width) return All;
                return masked > 1 ? AF | OF : AF;
            case Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc:
                return OF | SF | AF | PF;
            case Mnemonic.Bsf or Mnemonic.Bsr:
                return CF | OF | SF | AF | PF;
            case Mnemonic.Lzcnt or Mnemonic.Tzcnt:
                return OF | SF | AF | PF;
            case Mnemonic.Andn or Mnemonic.Blsi or Mnemonic.Blsmsk or Mnemonic.Blsr or Mnemonic.Bzhi:
                return AF | PF;
            case Mnemonic.Bextr:
                return AF | SF | PF;
            default:
                return 0;
        }
    }

    private static bool IsShiftOrRotate(Mnemonic m) =>
        m is Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror or Mnemonic.Rcl or Mnemonic.Rcr;

    private static int OperandWidth(OpCodeInfo op)
    {
        var m = op.MemorySize;
        int size = m.GetSize();
        if (size is 1 or 2 or 4 or 8) return size * 8;
        return op.OperandSize switch { 16 => 16, 32 => 32, 64 => 64, _ => op.Op0Kind is OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r8_reg ? 8 : 32 };
    }

    /// <summary>Width in bits of operand <paramref name="operand"/>.</summary>
    internal static int Width(in Instruction instr, int operand)
    {
        return instr.GetOpKind(operand) switch
        {
            OpKind.Register => instr.GetOpRegister(operand).GetSize() * 8,
            OpKind.Memory => instr.MemorySize.GetSize() * 8,
            _ => 64,
        };
    }

    /// <summary>The value of an explicit operand (register, immediate or window memory) before execution; null if unreadable.</summary>
    internal static ulong? OperandValue(in Instruction instr, int operand, in NativeState input, ReadOnlySpan<byte> window)
    {
        if (operand >= instr.OpCount) return null;
        switch (instr.GetOpKind(operand))
        {
            case OpKind.Register:
                return CasePreflight.ReadRegister(input, instr.GetOpRegister(operand));
            case OpKind.Immediate8:
            case OpKind.Immediate16:
            case OpKind.Immediate32:
            case OpKind.Immediate64:
            case OpKind.Immediate8to16:
            case OpKind.Immediate8to32:
            case OpKind.Immediate8to64:
            case OpKind.Immediate32to64:
                return instr.GetImmediate(operand);
            case OpKind.Memory:
                ulong offset = instr.MemoryDisplacement64;
                if (instr.MemoryBase != Register.None) offset += CasePreflight.ReadRegister(input, instr.MemoryBase);
                if (instr.MemoryIndex != Register.None) offset += CasePreflight.ReadRegister(input, instr.MemoryIndex) * (ulong)instr.MemoryIndexScale;
                int bytes = instr.MemorySize.GetSize();
                if (bytes is < 1 or > 8 || offset > (ulong)(window.Length - bytes)) return null;
                ulong v = 0;
                for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | window[(int)offset + i];
                return v;
            default:
                return null;
        }
    }
}
