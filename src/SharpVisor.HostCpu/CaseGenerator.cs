// Random cases for one instruction form. Values lean towards the boundaries where engines get
// flags wrong: 0, 1, all ones, the signed minimum and maximum and their neighbours, single bits and
// masks below them, alternating-bit and per-byte sign patterns. Counts of shifts and rotates cover
// 0, 1, width−1, width, width+1, 31/32/63/64 and anything up to 255; initial flags are random.
//
// Memory operands are base (+ index·scale) + displacement with the base in {RBP, R8–R15}, a
// register that no form uses implicitly; its value is a window offset (listed in RelocatedGprs)
// chosen so that the access lands in the data area. RSP is never an explicit operand: the harness
// needs it to point at the window's stack area (NativeLayout.DefaultRsp).
using Iced.Intel;

namespace SharpVisor.HostCpu;

public sealed class CaseGenerator
{
    private static readonly Register[] BasePool =
        [Register.RBP, Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15];

    private readonly Random _rng;

    /// <summary>A generator whose sequence depends only on <paramref name="seed"/>, so failures reproduce.</summary>
    public CaseGenerator(int seed) => _rng = new Random(seed);

    public static bool IsSupportedOperand(OpCodeOperandKind kind) => kind switch
    {
        OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem => true,
        OpCodeOperandKind.mem => true,
        OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode => true,
        OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_rm or OpCodeOperandKind.r16_opcode => true,
        OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r32_opcode or OpCodeOperandKind.r32_vvvv => true,
        OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm or OpCodeOperandKind.r64_opcode or OpCodeOperandKind.r64_vvvv => true,
        OpCodeOperandKind.al or OpCodeOperandKind.cl or OpCodeOperandKind.ax or OpCodeOperandKind.eax or OpCodeOperandKind.rax => true,
        OpCodeOperandKind.imm8 or OpCodeOperandKind.imm8_const_1 or OpCodeOperandKind.imm8sex16 or OpCodeOperandKind.imm8sex32
            or OpCodeOperandKind.imm8sex64 or OpCodeOperandKind.imm16 or OpCodeOperandKind.imm32 or OpCodeOperandKind.imm32sex64
            or OpCodeOperandKind.imm64 => true,
        _ => false,
    };

    /// <summary>A random case of <paramref name="form"/>.</summary>
    public NativeCase Generate(InstructionForm form)
    {
        string? error = null;
        for (int attempt = 0; attempt < 64; attempt++)
            if (TryGenerate(form, out var c, ref error)) return c;
        throw new InvalidOperationException($"cannot encode a case of {form}: {error}");
    }

    /// <summary>A value of <paramref name="bits"/> bits (upper bits zero), boundary values half of the time.</summary>
    public ulong NextValue(int bits)
    {
        ulong mask = CasePreflight.Mask(bits);
        if (_rng.Next(2) == 0) return NextRandom() & mask;
        ulong signBit = 1UL << (bits - 1);
        ulong v = _rng.Next(16) switch
        {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => mask,
            4 => mask - 1,
            5 => signBit,
            6 => signBit - 1,
            7 => signBit + 1,
            8 => 1UL << _rng.Next(bits),
            9 => (1UL << _rng.Next(bits)) - 1,
            10 => 0x5555_5555_5555_5555,
            11 => 0xAAAA_AAAA_AAAA_AAAA,
            12 => 0x8080_8080_8080_8080,
            13 => 0x7F7F_7F7F_7F7F_7F7F,
            14 => ~(1UL << _rng.Next(bits)),
            _ => NextRandom(),
        };
        return v & mask;
    }

    /// <summary>A shift/rotate count for an operand of <paramref name="width"/> bits (0–255, boundaries favoured).</summary>
    public byte NextCount(int width) => _rng.Next(10) switch
    {
        0 => 0,
        1 => 1,
        2 => (byte)(width - 1),
        3 => (byte)width,
        4 => (byte)(width + 1),
        5 => (byte)(_rng.Next(2) == 0 ? 31 : 32),
        6 => (byte)(_rng.Next(2) == 0 ? 63 : 64),
        7 => (byte)_rng.Next(256),
        _ => (byte)_rng.Next(width),
    };

    private ulong NextRandom()
    {
        Span<byte> b = stackalloc byte[8];
        _rng.NextBytes(b);
        return BitConverter.ToUInt64(b);
    }

    private bool TryGenerate(InstructionForm form, out NativeCase result, ref string? error)
    {
        result = null!;
        var op = form.Code.ToOpCode();
        var mnemonic = op.Mnemonic;
        var state = NativeState.Initial();
        for (int i = 0; i < 16; i++) state.Gpr[i] = NextRandom();
        state.Rsp = NativeLayout.DefaultRsp;
        state.Rflags = RflagsBits.Reserved1 | (NextRandom() & RflagsBits.Status) | (_rng.Next(8) == 0 ? RflagsBits.DF : 0);
        for (int i = 0; i < 16; i++) state.SetXmm(i, new UInt128(NextRandom(), NextRandom()));
        var window = new byte[NativeLayout.WindowSize];
        _rng.NextBytes(window);

        var instr = new Instruction { Code = form.Code };
        Span<bool> taken = stackalloc bool[16];
        taken[4] = true; // RSP
        ushort relocated = 0;
        bool isLea = mnemonic == Mnemonic.Lea;
        Register baseReg = Register.None, indexReg = Register.None;
        ulong ea = 0;
        int memBytes = Math.Max(1, op.MemorySize.GetSize());
        bool needsMemory = form.Memory;

        if (needsMemory)
        {
            baseReg = BasePool[_rng.Next(BasePool.Length)];
            taken[CasePreflight.Index(baseReg)] = true;
            if (_rng.Next(3) == 0)
            {
                do indexReg = BasePool[_rng.Next(BasePool.Length)]; while (indexReg == baseReg);
                taken[CasePreflight.Index(indexReg)] = true;
            }
        }

        for (int i = 0; i < op.OpCount; i++)
        {
            var kind = op.GetOpKind(i);
            switch (kind)
            {
                case OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
                    when form.Memory:
                case OpCodeOperandKind.mem:
                    instr.SetOpKind(i, OpKind.Memory);
                    ea = SetMemory(ref instr, ref state, isLea, baseReg, indexReg, memBytes, ref relocated);
                    break;
                case OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode:
                    SetRegister(ref instr, ref state, i, PickRegister(taken, 1));
                    break;
                case OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_rm or OpCodeOperandKind.r16_opcode:
                    SetRegister(ref instr, ref state, i, PickRegister(taken, 2));
                    break;
                case OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r32_opcode
                    or OpCodeOperandKind.r32_vvvv:
                    SetRegister(ref instr, ref state, i, PickRegister(taken, 4));
                    break;
                case OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm or OpCodeOperandKind.r64_opcode
                    or OpCodeOperandKind.r64_vvvv:
                    SetRegister(ref instr, ref state, i, PickRegister(taken, 8));
                    break;
                case OpCodeOperandKind.al: SetRegister(ref instr, ref state, i, Register.AL); break;
                case OpCodeOperandKind.cl: SetRegister(ref instr, ref state, i, Register.CL); break;
                case OpCodeOperandKind.ax: SetRegister(ref instr, ref state, i, Register.AX); break;
                case OpCodeOperandKind.eax: SetRegister(ref instr, ref state, i, Register.EAX); break;
                case OpCodeOperandKind.rax: SetRegister(ref instr, ref state, i, Register.RAX); break;
                case OpCodeOperandKind.imm8_const_1:
                    instr.SetOpKind(i, OpKind.Immediate8);
                    instr.Immediate8 = 1;
                    break;
                case OpCodeOperandKind.imm8: SetImmediate(ref instr, i, OpKind.Immediate8, NextValue(8)); break;
                case OpCodeOperandKind.imm8sex16: SetImmediate(ref instr, i, OpKind.Immediate8to16, NextValue(8)); break;
                case OpCodeOperandKind.imm8sex32: SetImmediate(ref instr, i, OpKind.Immediate8to32, NextValue(8)); break;
                case OpCodeOperandKind.imm8sex64: SetImmediate(ref instr, i, OpKind.Immediate8to64, NextValue(8)); break;
                case OpCodeOperandKind.imm16: SetImmediate(ref instr, i, OpKind.Immediate16, NextValue(16)); break;
                case OpCodeOperandKind.imm32: SetImmediate(ref instr, i, OpKind.Immediate32, NextValue(32)); break;
                case OpCodeOperandKind.imm32sex64: SetImmediate(ref instr, i, OpKind.Immediate32to64, NextValue(32)); break;
                case OpCodeOperandKind.imm64: SetImmediate(ref instr, i, OpKind.Immediate64, NextValue(64)); break;
                default: throw new NotSupportedException($"{form}: operand kind {kind}");
            }
        }

        if (needsMemory && !isLea && _rng.Next(2) == 0)
            WriteLittleEndian(window, (int)ea, memBytes, NextValue(Math.Min(64, memBytes * 8)));

        ShapeSpecialOperands(form, ref instr, ref state, window, ea, memBytes);

        var writer = new ByteWriter();
        var encoder = Encoder.Create(64, writer);
        if (!encoder.TryEncode(instr, 0, out _, out error)) return false;
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(writer.ToArray()), 0);
        decoder.Decode(out var back);
        if (back.Code != form.Code) { error = $"encodes as {back.Code}"; return false; } // e.g. XCHG EAX,EAX would become NOP

        result = new NativeCase
        {
            Code = writer.ToArray(),
            Input = state,
            Window = window,
            RelocatedGprs = relocated,
            Description = back.ToString(),
        };
        return true;
    }

    /// <summary>Gives counts, bit offsets, control words and dividends values that exercise the interesting paths.</summary>
    private void ShapeSpecialOperands(InstructionForm form, ref Instruction instr, ref NativeState state, byte[] window, ulong ea, int memBytes)
    {
        var mnemonic = form.Mnemonic;
        int width = UndefinedFlags.Width(instr, 0);
        switch (mnemonic)
        {
            case Mnemonic.Shl or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror or Mnemonic.Rcl or Mnemonic.Rcr:
                SetCount(ref instr, ref state, 1, width);
                break;
            case Mnemonic.Shld or Mnemonic.Shrd:
                SetCount(ref instr, ref state, 2, width);
                break;
            case Mnemonic.Sarx or Mnemonic.Shlx or Mnemonic.Shrx or Mnemonic.Bzhi:
                SetCount(ref instr, ref state, 2, width);
                break;
            case Mnemonic.Rorx:
                SetCount(ref instr, ref state, 2, width);
                break;
            case Mnemonic.Bextr:
            {
                var control = instr.GetOpRegister(2);
                ulong value = (ulong)NextCount(width) | ((ulong)NextCount(width) << 8);
                state.Gpr[CasePreflight.Index(control)] = (NextRandom() & ~0xFFFFUL) | value;
                break;
            }
            case Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc when form.Memory && instr.Op1Kind == OpKind.Register:
            {
                // Keep EA + size·floor(offset/width) inside the data area.
                long low = -((long)ea - 16) * 8, high = ((long)NativeLayout.DataSize - (long)ea - 16) * 8;
                long offset = _rng.Next(3) == 0 ? _rng.Next(-2 * width, 2 * width) : _rng.NextInt64(low, high);
                offset = Math.Clamp(offset, low, high);
                var reg = instr.Op1Register;
                ulong keep = ~CasePreflight.Mask(width);
                state.Gpr[CasePreflight.Index(reg)] = (NextRandom() & keep) | ((ulong)offset & CasePreflight.Mask(width));
                break;
            }
            case Mnemonic.Cmpxchg when _rng.Next(2) == 0:
            {
                // Make the accumulator equal to the destination half of the time so both outcomes occur.
                ulong dest = form.Memory ? ReadLittleEndian(window, (int)ea, memBytes) : CasePreflight.ReadRegister(state, instr.Op0Register);
                ulong mask = CasePreflight.Mask(width);
                state.Gpr[0] = (state.Gpr[0] & ~mask) | (dest & mask);
                break;
            }
            case Mnemonic.Div or Mnemonic.Idiv when _rng.Next(4) != 0:
                ShapeDividend(mnemonic == Mnemonic.Idiv, ref instr, ref state, window, ea, width);
                break;
        }
    }

    private void ShapeDividend(bool signed, ref Instruction instr, ref NativeState state, byte[] window, ulong ea, int width)
    {
        ulong mask = CasePreflight.Mask(width);
        ulong divisor = instr.Op0Kind == OpKind.Memory ? ReadLittleEndian(window, (int)ea, width / 8) : CasePreflight.ReadRegister(state, instr.Op0Register);
        if (divisor == 0) return; // leave some #DE cases
        ulong low = width == 8 ? state.Gpr[0] & 0xFF : state.Gpr[0] & mask;
        ulong high;
        if (signed) high = (low & (1UL << (width - 1))) != 0 ? mask : 0; // sign-extended dividend: quotient fits unless MIN / -1
        else high = NextRandom() % divisor;
        if (width == 8) state.Gpr[0] = (state.Gpr[0] & ~0xFFFFUL) | (high << 8) | low;
        else state.Gpr[2] = (state.Gpr[2] & ~mask) | (high & mask);
    }

    private void SetCount(ref Instruction instr, ref NativeState state, int operand, int width)
    {
        if (operand >= instr.OpCount) return;
        byte count = NextCount(width);
        switch (instr.GetOpKind(operand))
        {
            case OpKind.Register:
                var reg = instr.GetOpRegister(operand);
                int idx = CasePreflight.Index(reg);
                state.Gpr[idx] = (state.Gpr[idx] & ~0xFFUL) | count;
                break;
            case OpKind.Immediate8 when instr.Code.ToOpCode().GetOpKind(operand) != OpCodeOperandKind.imm8_const_1:
                instr.Immediate8 = count;
                break;
        }
    }

    private ulong SetMemory(ref Instruction instr, ref NativeState state, bool isLea, Register baseReg, Register indexReg, int bytes,
        ref ushort relocated)
    {
        int scale = 1 << _rng.Next(4);
        long disp = _rng.Next(4) switch { 0 => 0, 1 => _rng.Next(-128, 128), 2 => _rng.Next(-0x800, 0x800), _ => _rng.Next(-64, 64) };
        instr.MemoryBase = baseReg;
        instr.MemoryIndex = indexReg;
        instr.MemoryIndexScale = scale;
        instr.MemoryDisplacement64 = (ulong)disp;
        instr.MemoryDisplSize = disp == 0 ? 0 : disp is >= sbyte.MinValue and <= sbyte.MaxValue ? 1 : 8; // Iced: 1 or 8 with 64-bit addressing
        if (isLea)
        {
            // LEA never touches memory: any register values, nothing relocated.
            instr.MemoryDisplacement64 = (ulong)(long)(int)NextValue(32);
            instr.MemoryDisplSize = 8;
            return 0;
        }

        ulong ea = (ulong)(NativeLayout.DataOffset + 16 + _rng.Next(NativeLayout.DataSize - 32 - bytes));
        if (_rng.Next(2) == 0) ea &= ~(ulong)(Math.Min(bytes, 16) - 1);
        ulong index = 0;
        if (indexReg != Register.None)
        {
            index = (ulong)_rng.Next(16);
            state.Gpr[CasePreflight.Index(indexReg)] = index;
        }
        state.Gpr[CasePreflight.Index(baseReg)] = ea - index * (ulong)scale - (ulong)disp;
        relocated |= (ushort)(1 << CasePreflight.Index(baseReg));
        return ea;
    }

    private void SetRegister(ref Instruction instr, ref NativeState state, int operand, Register reg)
    {
        instr.SetOpKind(operand, OpKind.Register);
        instr.SetOpRegister(operand, reg);
        int bits = reg.GetSize() * 8;
        if (reg is Register.AH or Register.CH or Register.DH or Register.BH)
        {
            int idx = reg - Register.AH;
            state.Gpr[idx] = (state.Gpr[idx] & ~0xFF00UL) | (NextValue(8) << 8);
            return;
        }
        int i = CasePreflight.Index(reg);
        ulong mask = CasePreflight.Mask(bits);
        state.Gpr[i] = (state.Gpr[i] & ~mask) | NextValue(bits);
    }

    private Register PickRegister(Span<bool> taken, int bytes)
    {
        int idx;
        do idx = _rng.Next(16); while (taken[idx]);
        return bytes switch
        {
            1 when idx < 4 && _rng.Next(5) == 0 => Register.AH + idx,
            1 => idx < 4 ? Register.AL + idx : idx < 8 ? Register.SPL + (idx - 4) : Register.R8L + (idx - 8),
            2 => Register.AX + idx,
            4 => Register.EAX + idx,
            _ => Register.RAX + idx,
        };
    }

    private static void SetImmediate(ref Instruction instr, int operand, OpKind kind, ulong value)
    {
        instr.SetOpKind(operand, kind);
        instr.SetImmediate(operand, value);
    }

    private static void WriteLittleEndian(byte[] window, int offset, int bytes, ulong value)
    {
        for (int i = 0; i < Math.Min(bytes, 8); i++) window[offset + i] = (byte)(value >> (8 * i));
    }

    private static ulong ReadLittleEndian(byte[] window, int offset, int bytes)
    {
        ulong v = 0;
        for (int i = Math.Min(bytes, 8) - 1; i >= 0; i--) v = (v << 8) | window[offset + i];
        return v;
    }
}
