// Random single-instruction cases for every x87 form (Iced Code, ESC D8–DF and WAIT) in the HostCpu
// NativeCase format: a random register stack (tags, TOP, and values from the shared OperandGenerator
// in tests/Shared — special encodings, the exponent range's ends, rounding boundaries — aimed per
// operation at its interesting range), random FCW (RC, PC incl. the reserved 01, and with `unmasked`
// random exception masks), random condition codes and sticky flags (never a pending exception),
// random RFLAGS, and a typed memory operand at [R8 + disp] in the window.
using Iced.Intel;
using SharpVisor.HostCpu;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using SharpVisor.SoftFloat;
using SharpVisor.Tests.Shared;

namespace SharpVisor.Cpu.Tests;

internal sealed class X87CaseGenerator
{
    private readonly Random _rng;
    /// <summary>The register and memory values, drawn from the same stream as everything else here.</summary>
    private readonly OperandGenerator _values;

    public X87CaseGenerator(int seed)
    {
        _rng = new Random(seed);
        _values = new OperandGenerator(_rng);
    }

    public ushort ControlWord(bool unmasked)
    {
        int pc = _rng.Next(12) switch { 0 => 1, < 4 => 0, < 7 => 2, _ => 3 };
        int masks = 0x3F;
        if (unmasked)
            for (int b = 0; b < 6; b++)
                if (_rng.Next(3) == 0) masks &= ~(1 << b);
        int ic = _rng.Next(8) == 0 ? 0x1000 : 0; // the 287 infinity-control bit: kept, ignored
        return (ushort)(0x40 | masks | pc << 8 | _rng.Next(4) << 10 | ic);
    }

    private ulong Float32Bits()
    {
        uint exp = _rng.Next(4) switch { 0 => 0, 1 => 0xFF, _ => (uint)_rng.Next(256) };
        uint frac = (uint)_values.NextU64() & 0x7FFFFF;
        if (_rng.Next(4) == 0) frac >>= _rng.Next(23);
        return (uint)_rng.Next(2) << 31 | exp << 23 | frac;
    }

    private ulong Float64Bits()
    {
        ulong exp = _rng.Next(4) switch { 0 => 0UL, 1 => 0x7FFUL, _ => (ulong)_rng.Next(2048) };
        ulong frac = _values.NextU64() & 0xF_FFFF_FFFF_FFFF;
        if (_rng.Next(4) == 0) frac >>= _rng.Next(52);
        return (ulong)_rng.Next(2) << 63 | exp << 52 | frac;
    }

    private ulong IntegerBits(int bits)
    {
        ulong v = _rng.Next(6) switch
        {
            0 => 0,
            1 => 1UL << (bits - 1),
            2 => (1UL << (bits - 1)) - 1,
            3 => ulong.MaxValue,
            _ => _values.NextU64() >> _rng.Next(64),
        };
        return bits == 64 ? v : v & ((1UL << bits) - 1);
    }

    private static void Put(byte[] w, int at, ulong v, int bytes)
    {
        for (int k = 0; k < bytes; k++) w[at + k] = (byte)(v >> (8 * k));
    }

    private void PutFloat80(byte[] w, int at, Float80 v) => v.WriteBytes(w.AsSpan(at, 10));

    private void PutBcd(byte[] w, int at)
    {
        for (int k = 0; k < 9; k++)
        {
            int lo = _rng.Next(10), hi = _rng.Next(10);
            if (_rng.Next(40) == 0) lo = _rng.Next(16); // an invalid digit now and then
            w[at + k] = (byte)(hi << 4 | lo);
        }
        if (_rng.Next(4) == 0) w.AsSpan(at, 9 - _rng.Next(9)).Clear();
        w[at + 9] = (byte)(_rng.Next(2) << 7);
    }

    /// <summary>An x87 environment image (64-bit mode: the protected-mode layouts) with plausible fields.</summary>
    private void PutEnvironment(byte[] w, int at, bool size32, bool withRegisters)
    {
        ushort cw = (ushort)(ControlWord(unmasked: true) ^ (_rng.Next(8) == 0 ? _rng.Next(0x10000) & 0xE080 : 0));
        ushort sw = (ushort)_rng.Next(0x10000);
        if (_rng.Next(2) == 0) sw &= 0x7F7F; // no ES/B, as a saved image of a quiet FPU would have
        ushort tw = (ushort)_rng.Next(0x10000);
        if (_rng.Next(4) == 0) tw = 0xFFFF;
        int step = size32 ? 4 : 2;
        _rng.NextBytes(w.AsSpan(at, size32 ? 28 : 14));
        Put(w, at, cw, 2);
        Put(w, at + step, sw, 2);
        Put(w, at + 2 * step, tw, 2);
        if (withRegisters)
        {
            int regs = at + (size32 ? 28 : 14);
            for (int k = 0; k < 8; k++) PutFloat80(w, regs + 10 * k, _values.Operand());
        }
    }

    /// <summary>The register stack values for an operation, biased to where it is interesting.</summary>
    private void Operands(Mnemonic m, out Float80 st0, out Float80 st1)
    {
        st0 = _values.Operand();
        st1 = _values.Near(st0, 70);
        switch (m)
        {
            case Mnemonic.F2xm1: if (_rng.Next(4) != 0) st0 = _values.Around(-80, -1); break;
            case Mnemonic.Fyl2x:
                if (_rng.Next(4) != 0) { st0 = _values.Around(-200, 200).Abs(); st1 = _values.Around(-20, 20); }
                // x = 2^k (denormal and pseudo-denormal encodings too), where the host result is compared exactly.
                if (_rng.Next(4) == 0)
                    st0 = _rng.Next(6) == 0 ? new Float80(0, 1UL << _rng.Next(64)) : new Float80((ushort)_rng.Next(1, 0x7FFF), Float80.IntegerBit);
                break;
            case Mnemonic.Fyl2xp1: if (_rng.Next(4) != 0) { st0 = _values.Around(-70, -3); st1 = _values.Around(-20, 20); } break;
            case Mnemonic.Fpatan: if (_rng.Next(3) != 0) { st0 = _values.Around(-40, 40); st1 = _values.Around(-40, 40); } break;
            case Mnemonic.Fsin or Mnemonic.Fcos or Mnemonic.Fsincos or Mnemonic.Fptan: if (_rng.Next(5) != 0) st0 = _values.Around(-70, 1); break;
            case Mnemonic.Fscale: if (_rng.Next(2) == 0) st1 = _values.Around(-2, 16); break;
            case Mnemonic.Fprem or Mnemonic.Fprem1: st1 = _values.Near(st0, 80); break;
            case Mnemonic.Fist or Mnemonic.Fistp or Mnemonic.Fisttp or Mnemonic.Fbstp or Mnemonic.Frndint:
                if (_rng.Next(4) != 0) st0 = _values.Around(-3, 66);
                break;
            case Mnemonic.Fst or Mnemonic.Fstp:
                if (_rng.Next(3) == 0) st0 = _values.Around(-160, 130);
                else if (_rng.Next(3) == 0) st0 = _values.Around(-1090, 1030);
                break;
        }
    }

    /// <summary>A case of <paramref name="code"/>; <paramref name="unmasked"/> allows unmasked exceptions in FCW.</summary>
    public NativeCase Generate(Code code, bool unmasked)
    {
        var op = code.ToOpCode();
        var m = op.Mnemonic;
        var s = NativeState.Initial();
        for (int g = 0; g < 16; g++) s.Gpr[g] = _values.NextU64();
        s.Rsp = NativeLayout.DefaultRsp;
        s.Rflags = RflagsBits.Reserved1 | (_values.NextU64() & RflagsBits.Status) | (_rng.Next(8) == 0 ? RflagsBits.DF : 0);

        // Register stack: TOP, tags (sometimes all empty or all full), values.
        int top = _rng.Next(8);
        int tagMode = _rng.Next(10);
        Operands(m, out Float80 st0, out Float80 st1);
        byte tags = 0;
        for (int k = 0; k < 8; k++)
        {
            bool valid = tagMode switch { 0 => false, 1 => true, _ => _rng.Next(10) < (k < 2 ? 8 : 6) };
            if (valid) tags |= (byte)(1 << ((top + k) & 7));
            var v = k == 0 ? st0 : k == 1 ? st1 : _values.Operand();
            s.SetSt(k, (UInt128)v.SignExponent << 64 | v.Significand);
        }
        s.Ftw = tags;
        ushort fcw = ControlWord(unmasked);
        // Transcendentals are compared within 1 ulp, so their #P (and with it ES) may differ: keep #P masked.
        if (m is Mnemonic.F2xm1 or Mnemonic.Fyl2x or Mnemonic.Fyl2xp1 or Mnemonic.Fsin or Mnemonic.Fcos or Mnemonic.Fsincos
            or Mnemonic.Fptan or Mnemonic.Fpatan) fcw |= 0x20;
        s.Fcw = fcw;
        int flags = _rng.Next(3) == 0 ? 0 : _rng.Next(64) & fcw & 0x3F; // sticky flags, none pending
        int cc = _rng.Next(16);
        int sw = flags | (_rng.Next(4) == 0 ? 0x40 : 0) | (cc & 1) << 8 | (cc & 2) << 8 | (cc & 4) << 8 | (cc & 8) << 11 | top << 11;
        s.Fsw = (ushort)sw;
        Span<byte> fx = s.Fx;
        BitConverter.TryWriteBytes(fx[FxSaveArea.FopOffset..], (ushort)_rng.Next(0x800));
        BitConverter.TryWriteBytes(fx[FxSaveArea.FipOffset..], _values.NextU64() >> 16);
        BitConverter.TryWriteBytes(fx[FxSaveArea.FdpOffset..], _values.NextU64() >> 16);

        var window = new byte[NativeLayout.WindowSize];
        _rng.NextBytes(window);
        ushort relocated = 0;
        var instr = new Instruction();
        bool built = false;
        switch (op.OpCount)
        {
            case 0:
                instr = Instruction.Create(code);
                built = true;
                break;
            case 1 when op.GetOpKind(0) == OpCodeOperandKind.mem:
            {
                int size = Math.Max(2, op.MemorySize.GetSize());
                int target = _rng.Next(0x40, 0x1000 - 112);
                long disp = _rng.Next(4) switch { 0 => 0, 1 => _rng.Next(-64, 64), _ => _rng.Next(-0x400, 0x400) };
                long baseOffset = target - disp;
                if (baseOffset < 0) { disp = 0; baseOffset = target; }
                s.Gpr[8] = (ulong)baseOffset;
                relocated = 1 << 8;
                instr = Instruction.Create(code, new MemoryOperand(Register.R8, disp));
                FillMemory(window, target, op.MemorySize, size);
                built = true;
                break;
            }
            case 1 when op.GetOpKind(0) == OpCodeOperandKind.sti_opcode:
                instr = Instruction.Create(code, Register.ST0 + _rng.Next(8));
                built = true;
                break;
            case 1 when op.GetOpKind(0) == OpCodeOperandKind.ax:
                instr = Instruction.Create(code, Register.AX);
                built = true;
                break;
            case 2 when op.GetOpKind(0) == OpCodeOperandKind.st0:
                instr = Instruction.Create(code, Register.ST0, Register.ST0 + _rng.Next(8));
                built = true;
                break;
            case 2 when op.GetOpKind(1) == OpCodeOperandKind.st0:
                instr = Instruction.Create(code, Register.ST0 + _rng.Next(8), Register.ST0);
                built = true;
                break;
        }
        if (!built) throw new NotSupportedException($"{code}: operands not generated");

        var writer = new BytesWriter();
        Encoder.Create(64, writer).Encode(instr, 0);
        return new NativeCase
        {
            Code = writer.ToArray(),
            Input = s,
            Window = window,
            RelocatedGprs = relocated,
            Description = instr.ToString(),
        };
    }

    private void FillMemory(byte[] w, int at, MemorySize size, int bytes)
    {
        if (_rng.Next(10) == 0) return; // random bytes
        switch (size)
        {
            case MemorySize.Float32: Put(w, at, Float32Bits(), 4); break;
            case MemorySize.Float64: Put(w, at, Float64Bits(), 8); break;
            case MemorySize.Float80: PutFloat80(w, at, _values.Operand()); break;
            case MemorySize.Int16: Put(w, at, IntegerBits(16), 2); break;
            case MemorySize.Int32: Put(w, at, IntegerBits(32), 4); break;
            case MemorySize.Int64: Put(w, at, IntegerBits(64), 8); break;
            case MemorySize.Bcd: PutBcd(w, at); break;
            case MemorySize.UInt16: Put(w, at, ControlWord(unmasked: true) ^ (ulong)(_rng.Next(6) == 0 ? _rng.Next(0x10000) : 0), 2); break;
            case MemorySize.FpuEnv14: PutEnvironment(w, at, false, false); break;
            case MemorySize.FpuEnv28: PutEnvironment(w, at, true, false); break;
            case MemorySize.FpuState94: PutEnvironment(w, at, false, true); break;
            case MemorySize.FpuState108: PutEnvironment(w, at, true, true); break;
            default: _ = bytes; break;
        }
    }

    private sealed class BytesWriter : CodeWriter
    {
        private readonly List<byte> _bytes = new();
        public override void WriteByte(byte value) => _bytes.Add(value);
        public byte[] ToArray() => _bytes.ToArray();
    }
}
