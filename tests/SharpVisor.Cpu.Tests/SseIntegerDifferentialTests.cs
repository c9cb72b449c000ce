// Differential tests of the MMX/SSE2–SSE4.2 integer instructions (SseInteger.cs) against the host CPU,
// the reference for unprivileged instruction semantics. Every legacy 64-bit-mode form of the integer
// mnemonics below that the host can execute is generated here (the HostCpu CaseGenerator fills only
// general-register forms), run natively by HostCpu and on the software engine by the shared EngineRunner, and
// compared in full: GPRs, RFLAGS, the memory window, XMM/MXCSR and the x87/MMX state (FCW, FSW with
// TOP, tags, ST0–ST7 including the exponent MMX writes set to all ones).
//
// Inputs lean towards the boundaries where packed arithmetic goes wrong: per-lane 0, ±1, the signed
// and unsigned extremes, 80H/7FH patterns; shift counts around the lane width and huge; imm8 over its
// whole range; strings from a small alphabet with embedded zeros and explicit lengths from −20 to 20
// and beyond for PCMPxSTRx. MMX inputs start from a random TOP and tag word, so the x87→MMX
// transition is checked too. Memory operands are 16-byte aligned three times in four; the others
// must raise #GP(0) where the SDM says so (the native harness predicts it and the engine must agree).
using System.Diagnostics;
using Iced.Intel;
using SharpVisor.HostCpu;
using Xunit;
using Decoder = Iced.Intel.Decoder;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using SharpVisor.Cpu.Tests.Differential;

namespace SharpVisor.Cpu.Tests;

public sealed class SseIntegerDifferentialTests(ITestOutputHelper output)
{
    private const int Seed = 20_250_612;
    /// <summary>
    /// Cases per form in CI: most forms are one lane operation, so 150 random boundary-heavy cases cover
    /// them; the string compares have far more paths (imm8 modes × lengths) and get more. Scale with
    /// SHARPVISOR_SIMD_CASES (cases per ordinary form); restrict with SHARPVISOR_SIMD_FORMS (a substring of the form name).
    /// </summary>
    private const int CasesPerForm = 150, CasesPerStringForm = 1500;

    private static readonly HashSet<Mnemonic> Extra =
    [
        Mnemonic.Movd, Mnemonic.Movq, Mnemonic.Movdqa, Mnemonic.Movdqu, Mnemonic.Lddqu, Mnemonic.Movntdq, Mnemonic.Movntdqa, Mnemonic.Movntq,
        Mnemonic.Maskmovq, Mnemonic.Maskmovdqu, Mnemonic.Movq2dq, Mnemonic.Movdq2q, Mnemonic.Mpsadbw, Mnemonic.Crc32,
    ];

    /// <summary>The integer mnemonics: every P* instruction of the MMX/SSE families plus the moves, MPSADBW and CRC32.</summary>
    internal static bool IsIntegerMnemonic(Mnemonic m)
    {
        if (Extra.Contains(m)) return true;
        string n = m.ToString();
        return n.StartsWith('P') && !n.StartsWith("Prefetch", StringComparison.Ordinal) && m != Mnemonic.Pause;
    }

    internal static List<InstructionForm> Forms(HostFeatures features)
    {
        var forms = new List<InstructionForm>();
        foreach (Code code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || !op.Mode64 || op.Encoding != EncodingKind.Legacy || !IsIntegerMnemonic(op.Mnemonic)) continue;
            bool simd = false;
            foreach (var f in code.CpuidFeatures())
                if (f is CpuidFeature.MMX or CpuidFeature.SSE or CpuidFeature.SSE2 or CpuidFeature.SSE3 or CpuidFeature.SSSE3
                    or CpuidFeature.SSE4_1 or CpuidFeature.SSE4_2) simd = true;
            if (!simd || !features.CanExecute(code)) continue;
            bool rm = false, memOnly = false;
            for (int k = 0; k < op.OpCount; k++)
            {
                var kind = op.GetOpKind(k);
                if (kind is OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.r8_or_mem
                    or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem) rm = true;
                if (kind == OpCodeOperandKind.mem) memOnly = true;
            }
            if (memOnly) forms.Add(new InstructionForm(code, true));
            else
            {
                forms.Add(new InstructionForm(code, false));
                if (rm) forms.Add(new InstructionForm(code, true));
            }
        }
        return forms;
    }

    [Fact]
    public void Every_integer_simd_form_agrees_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var clock = Stopwatch.StartNew();
        List<InstructionForm> forms;
        using (var probe = new HostCpu.HostCpu()) forms = Forms(probe.Features);
        Assert.True(forms.Count > 300, $"only {forms.Count} forms");
        int perForm = int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_SIMD_CASES"), out int env) && env > 0 ? env : CasesPerForm;
        if (Environment.GetEnvironmentVariable("SHARPVISOR_SIMD_FORMS") is { Length: > 0 } only)
            forms = forms.Where(f => f.ToString().Contains(only, StringComparison.OrdinalIgnoreCase)).ToList();

        int threads = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));
        long cases = 0, faults = 0, refused = 0;
        var problems = new List<string>();
        var unsupported = new List<string>();
        HostEngineWorkers.ForEachForm(forms.Count, threads, (host, engine, k) =>
        {
            var form = forms[k];
            var gen = new SimdCaseGenerator(unchecked(Seed * 31 + (int)form.Code * 2 + (form.Memory ? 1 : 0)));
            int shown = 0;
            int count = form.Mnemonic.ToString().StartsWith("Pcmp", StringComparison.Ordinal) && form.Mnemonic.ToString().Contains("str", StringComparison.Ordinal)
                ? perForm * (CasesPerStringForm / CasesPerForm) : perForm;
            for (int n = 0; n < count; n++)
            {
                var c = gen.Generate(form);
                var native = host.Run(c);
                if (native.Outcome == NativeOutcome.Refused)
                {
                    Interlocked.Increment(ref refused);
                    if (shown++ < 1) lock (problems) problems.Add($"{form}: refused: {native.Reason}");
                    continue;
                }
                var e = engine.Run(c);
                Interlocked.Increment(ref cases);
                if (native.Outcome == NativeOutcome.Fault) Interlocked.Increment(ref faults);
                if (e.Outcome == EngineOutcome.Unsupported)
                {
                    lock (unsupported) unsupported.Add($"{form}: {e.Message}");
                    break;
                }
                var diffs = e.Outcome == EngineOutcome.Failed
                    ? [$"engine: {e.Message}"]
                    : NativeComparer.Compare(c, native, e.State, engine.Window, e.Exception, CompareParts.All);
                if (diffs.Count > 0 && shown++ < 2)
                    lock (problems) problems.Add($"{form}: {NativeComparer.Describe(c, diffs)}");
                else if (diffs.Count > 0) shown++;
            }
        });

        string summary = $"{forms.Count} forms, {cases:N0} cases ({faults:N0} predicted faults, {refused:N0} refused), {threads} threads, {clock.Elapsed.TotalSeconds:F1} s";
        output.WriteLine(summary);
        foreach (var u in unsupported) output.WriteLine("unsupported: " + u);
        foreach (var p in problems.Take(60)) output.WriteLine(p);
        Assert.True(unsupported.Count == 0, $"{unsupported.Count} unsupported forms:\n" + string.Join("\n", unsupported.Take(40)));
        Assert.True(problems.Count == 0, $"{problems.Count} forms disagree:\n" + string.Join("\n", problems.Take(40)));
        Assert.True(faults > 0, "no misaligned case was generated");
    }
}

/// <summary>Random cases for one MMX/SSE integer form (see the file header for the value choices).</summary>
internal sealed class SimdCaseGenerator(int seed)
{
    private static readonly Register[] BasePool =
        [Register.RBP, Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15];
    private static readonly byte[] Alphabet = [0, (byte)'a', (byte)'b', (byte)'c', (byte)'z', 0x7F, 0x80, 0xFF, 0x01, (byte)'A'];

    private readonly Random _rng = new(seed);

    private ulong Random64()
    {
        Span<byte> b = stackalloc byte[8];
        _rng.NextBytes(b);
        return BitConverter.ToUInt64(b);
    }

    /// <summary>64 bits of lanes of one random width, each a boundary value half of the time.</summary>
    private ulong Lanes()
    {
        if (_rng.Next(4) == 0) return Random64();
        int bits = 8 << _rng.Next(4);
        ulong mask = bits == 64 ? ulong.MaxValue : (1UL << bits) - 1, sign = 1UL << (bits - 1);
        ulong v = 0;
        for (int at = 0; at < 64; at += bits)
        {
            ulong lane = _rng.Next(10) switch
            {
                0 => 0, 1 => 1, 2 => mask, 3 => sign, 4 => sign - 1, 5 => sign + 1, 6 => mask - 1,
                7 => (ulong)_rng.Next(3), _ => Random64(),
            };
            v |= (lane & mask) << at;
        }
        return v;
    }

    private ulong StringBytes(bool words)
    {
        ulong v = 0;
        for (int k = 0; k < 8; k++)
        {
            byte b = Alphabet[_rng.Next(Alphabet.Length)];
            if (_rng.Next(3) != 0 && b == 0) b = (byte)'a';
            if (words && (k & 1) == 1) b = _rng.Next(4) == 0 ? b : (byte)0;
            v |= (ulong)b << (8 * k);
        }
        return v;
    }

    private ulong ShiftCount() => _rng.Next(8) switch
    {
        0 => Random64(),
        1 => (ulong)_rng.Next(256),
        2 => 1UL << _rng.Next(64),
        _ => (ulong)_rng.Next(70),
    };

    public NativeCase Generate(InstructionForm form)
    {
        for (int attempt = 0; attempt < 64; attempt++)
            if (TryGenerate(form, out var c)) return c;
        throw new InvalidOperationException($"cannot encode a case of {form}");
    }

    private bool TryGenerate(InstructionForm form, out NativeCase result)
    {
        result = null!;
        var op = form.Code.ToOpCode();
        var m = op.Mnemonic;
        bool strings = m is Mnemonic.Pcmpestri or Mnemonic.Pcmpestri64 or Mnemonic.Pcmpestrm or Mnemonic.Pcmpestrm64
            or Mnemonic.Pcmpistri or Mnemonic.Pcmpistrm;
        bool shift = m is Mnemonic.Psllw or Mnemonic.Pslld or Mnemonic.Psllq or Mnemonic.Psrlw or Mnemonic.Psrld or Mnemonic.Psrlq
            or Mnemonic.Psraw or Mnemonic.Psrad;

        var s = NativeState.Initial();
        for (int k = 0; k < 16; k++) s.Gpr[k] = _rng.Next(3) == 0 ? Lanes() : Random64();
        s.Rsp = NativeLayout.DefaultRsp;
        s.Rflags = RflagsBits.Reserved1 | (Random64() & RflagsBits.Status);
        bool words = false;
        for (int k = 0; k < 16; k++) s.SetXmm(k, new UInt128(Lanes(), Lanes()));
        // x87/MMX: random TOP, tags and register contents (FCW masked, no pending exception).
        int top = _rng.Next(8);
        s.Fsw = (ushort)(top << 11);
        s.Ftw = (byte)_rng.Next(256);
        for (int k = 0; k < 8; k++) s.SetSt(k, ((UInt128)(ulong)_rng.Next(0x10000) << 64) | Lanes());

        var window = new byte[NativeLayout.WindowSize];
        _rng.NextBytes(window);

        var instr = new Instruction { Code = form.Code };
        Span<bool> taken = stackalloc bool[16];
        taken[4] = true; // RSP
        taken[7] = m is Mnemonic.Maskmovq or Mnemonic.Maskmovdqu; // RDI is the implicit destination
        ushort relocated = 0;
        int memBytes = Math.Max(1, op.MemorySize.GetSize());
        ulong ea = 0;
        Register baseReg = Register.None, indexReg = Register.None;
        if (form.Memory)
        {
            baseReg = BasePool[_rng.Next(BasePool.Length)];
            taken[baseReg.GetFullRegister() - Register.RAX] = true;
            if (_rng.Next(3) == 0)
            {
                do indexReg = BasePool[_rng.Next(BasePool.Length)]; while (indexReg == baseReg);
                taken[indexReg.GetFullRegister() - Register.RAX] = true;
            }
        }
        int countOperand = -1;
        for (int k = 0; k < op.OpCount; k++)
        {
            var kind = op.GetOpKind(k);
            switch (kind)
            {
                case OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem
                    or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem when form.Memory:
                case OpCodeOperandKind.mem:
                    instr.SetOpKind(k, OpKind.Memory);
                    ea = SetMemory(ref instr, ref s, baseReg, indexReg, memBytes, ref relocated);
                    countOperand = k;
                    break;
                case OpCodeOperandKind.mm_reg or OpCodeOperandKind.mm_rm or OpCodeOperandKind.mm_or_mem:
                    Reg(ref instr, k, Register.MM0 + _rng.Next(8));
                    countOperand = k;
                    break;
                case OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm or OpCodeOperandKind.xmm_or_mem:
                    Reg(ref instr, k, Register.XMM0 + _rng.Next(16));
                    countOperand = k;
                    break;
                case OpCodeOperandKind.r8_or_mem: Reg(ref instr, k, Gpr(taken, 1)); break;
                case OpCodeOperandKind.r16_or_mem: Reg(ref instr, k, Gpr(taken, 2)); break;
                case OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r32_or_mem: Reg(ref instr, k, Gpr(taken, 4)); break;
                case OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm or OpCodeOperandKind.r64_or_mem: Reg(ref instr, k, Gpr(taken, 8)); break;
                case OpCodeOperandKind.imm8:
                {
                    byte imm = shift || m is Mnemonic.Pslldq or Mnemonic.Psrldq or Mnemonic.Palignr
                        ? (byte)(_rng.Next(4) == 0 ? _rng.Next(256) : _rng.Next(40))
                        : (byte)_rng.Next(256);
                    instr.SetOpKind(k, OpKind.Immediate8);
                    instr.Immediate8 = imm;
                    if (strings) words = (imm & 1) != 0;
                    break;
                }
                case OpCodeOperandKind.seg_rDI:
                    break; // built below with Iced's MASKMOV factory
                default:
                    throw new NotSupportedException($"{form}: operand kind {kind}");
            }
        }
        if (m is Mnemonic.Maskmovq or Mnemonic.Maskmovdqu)
        {
            var data = instr.Op1Register;
            var mask = instr.Op2Register;
            instr = m == Mnemonic.Maskmovq ? Instruction.CreateMaskmovq(64, data, mask) : Instruction.CreateMaskmovdqu(64, data, mask);
            s.Rdi = (ulong)(16 + _rng.Next(NativeLayout.DataSize - 48));
            relocated |= 1 << 7;
            // Masks: all, none, or each byte's top bit at random.
            ulong pick() => _rng.Next(6) switch { 0 => ulong.MaxValue, 1 => 0, _ => Random64() };
            if (mask is >= Register.XMM0 and <= Register.XMM15) s.SetXmm(mask - Register.XMM0, new UInt128(pick(), pick()));
            else SetMm(ref s, top, mask - Register.MM0, pick());
        }

        if (form.Memory && _rng.Next(2) == 0)
            for (int k = 0; k < Math.Min(memBytes, 16); k += 8)
                BitConverter.TryWriteBytes(window.AsSpan((int)ea + k, Math.Min(8, memBytes - k)), Lanes());

        if (shift && instr.GetOpKind(1) != OpKind.Immediate8 && countOperand == 1)
        {
            // The count operand: a small or boundary count in its low quadword most of the time.
            ulong count = ShiftCount();
            if (form.Memory) BitConverter.TryWriteBytes(window.AsSpan((int)ea, 8), count);
            else if (instr.Op1Register is >= Register.XMM0 and <= Register.XMM15) s.SetXmm(instr.Op1Register - Register.XMM0, new UInt128(Lanes(), count));
            else SetMm(ref s, top, instr.Op1Register - Register.MM0, count);
        }

        if (strings)
        {
            for (int k = 0; k < 16; k++) s.SetXmm(k, new UInt128(StringBytes(words), StringBytes(words)));
            if (form.Memory)
                for (int k = 0; k < 16; k += 8) BitConverter.TryWriteBytes(window.AsSpan((int)ea + k, 8), StringBytes(words));
            ulong Length() => _rng.Next(6) switch
            {
                0 => Random64(),
                1 => (ulong)(long)_rng.Next(int.MinValue, int.MaxValue),
                2 => unchecked((ulong)long.MinValue),
                3 => 0x8000_0000UL,
                _ => (ulong)(long)_rng.Next(-20, 21),
            };
            s.Rax = Length();
            s.Rdx = Length();
        }

        var writer = new ListWriter();
        if (!Encoder.Create(64, writer).TryEncode(instr, 0, out _, out _)) return false;
        var bytes = writer.Bytes.ToArray();
        Decoder.Create(64, new ByteArrayCodeReader(bytes)).Decode(out var back);
        if (back.Code != form.Code) return false;
        result = new NativeCase { Code = bytes, Input = s, Window = window, RelocatedGprs = relocated, Description = back.ToString() };
        return true;
    }

    private static void SetMm(ref NativeState s, int top, int mm, ulong value)
    {
        int slot = (mm - top) & 7; // MMn is physical register n, which is ST((n − TOP) mod 8)
        var old = s.GetSt(slot);
        s.SetSt(slot, (old & ~(UInt128)ulong.MaxValue) | value);
    }

    private static void Reg(ref Instruction instr, int k, Register r)
    {
        instr.SetOpKind(k, OpKind.Register);
        instr.SetOpRegister(k, r);
    }

    private Register Gpr(Span<bool> taken, int bytes)
    {
        int idx;
        do idx = _rng.Next(16); while (taken[idx]);
        return bytes switch
        {
            1 => idx < 4 && _rng.Next(5) == 0 ? Register.AH + idx : idx < 4 ? Register.AL + idx : idx < 8 ? Register.SPL + (idx - 4) : Register.R8L + (idx - 8),
            2 => Register.AX + idx,
            4 => Register.EAX + idx,
            _ => Register.RAX + idx,
        };
    }

    private ulong SetMemory(ref Instruction instr, ref NativeState s, Register baseReg, Register indexReg, int bytes, ref ushort relocated)
    {
        int scale = 1 << _rng.Next(4);
        long disp = _rng.Next(3) switch { 0 => 0, 1 => _rng.Next(-128, 128), _ => _rng.Next(-0x800, 0x800) };
        instr.MemoryBase = baseReg;
        instr.MemoryIndex = indexReg;
        instr.MemoryIndexScale = scale;
        instr.MemoryDisplacement64 = (ulong)disp;
        instr.MemoryDisplSize = disp == 0 ? 0 : disp is >= sbyte.MinValue and <= sbyte.MaxValue ? 1 : 8;
        ulong ea = (ulong)(16 + _rng.Next(NativeLayout.DataSize - 64));
        if (_rng.Next(4) != 0) ea &= ~15UL;
        ulong index = 0;
        if (indexReg != Register.None)
        {
            index = (ulong)_rng.Next(16);
            s.Gpr[indexReg.GetFullRegister() - Register.RAX] = index;
        }
        s.Gpr[baseReg.GetFullRegister() - Register.RAX] = ea - index * (ulong)scale - (ulong)disp;
        relocated |= (ushort)(1 << (baseReg.GetFullRegister() - Register.RAX));
        return ea;
    }

    private sealed class ListWriter : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }
}
