// Differential tests of the SSE floating-point instructions (SseFloat*.cs) against the host CPU, the
// reference for unprivileged instruction semantics. The HostCpu catalogue and CaseGenerator cover integer
// forms only, so this file builds its own forms (every legacy 64-bit-mode encoding of the SSE float
// mnemonics the host can run, register and memory variants) and cases: XMM lanes drawn from the values
// where IEEE implementations differ (±0, denormals, the smallest normals, the largest finites, ±∞, QNaN
// and SNaN payloads, ties, integer-range boundaries, near-cancelling pairs), random MXCSR with every
// RC, FTZ and DAZ (exceptions masked: the native harness refuses unmasked ones, an #XM would kill the
// process), MMX sources and memory operands at aligned and misaligned addresses (the harness predicts
// #GP(0) for the aligned-only forms). Each case runs natively (HostCpu) and in the software engine
// (EngineRunner), and every register, RFLAGS, MXCSR, the x87/MMX state and the memory window must agree.
using System.Diagnostics;
using Iced.Intel;
using SharpVisor.Cpu.Tests.Differential;
using SharpVisor.HostCpu;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using Xunit;

namespace SharpVisor.Cpu.Tests;

/// <summary>Builds random cases for one SSE floating-point instruction form.</summary>
internal sealed class SseFloatCaseGenerator(int seed)
{
    private static readonly Register[] BasePool =
        [Register.RBP, Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15];

    private readonly Random _rng = new(seed);

    /// <summary>What the lanes of a form's sources hold.</summary>
    internal enum LaneKind { Single, Double, Int32 }

    public static LaneKind SourceKind(Mnemonic m)
    {
        string n = m.ToString().ToLowerInvariant();
        if (n.StartsWith("cvt", StringComparison.Ordinal))
        {
            string from = n.StartsWith("cvtt", StringComparison.Ordinal) ? n[4..6] : n[3..5];
            return from switch { "ps" or "ss" => LaneKind.Single, "pd" or "sd" => LaneKind.Double, _ => LaneKind.Int32 };
        }
        return n.EndsWith("pd", StringComparison.Ordinal) || n.EndsWith("sd", StringComparison.Ordinal) || n == "movddup"
            ? LaneKind.Double : LaneKind.Single;
    }

    public NativeCase Generate(Code code, bool memory)
    {
        for (int attempt = 0; ; attempt++)
        {
            if (TryGenerate(code, memory, out var c, out string? error)) return c;
            if (attempt > 32) throw new InvalidOperationException($"cannot encode {code}: {error}");
        }
    }

    private ulong Random64() => (ulong)_rng.NextInt64() ^ ((ulong)_rng.Next(2) << 63);

    /// <summary>A float32 (d = false) or float64 bit pattern, boundary values most of the time.</summary>
    public ulong FloatValue(bool d)
    {
        int frac = d ? 52 : 23, bias = d ? 1023 : 127, expMax = d ? 2047 : 255;
        ulong fracMask = (1UL << frac) - 1;
        ulong sign = _rng.Next(2) == 0 ? 0 : 1UL << (d ? 63 : 31);
        ulong Pack(int e, ulong f) => sign | ((ulong)e << frac) | (f & fracMask);
        ulong RandFrac() => _rng.Next(3) == 0 ? (Random64() & fracMask) & ~((1UL << _rng.Next(frac)) - 1) : Random64() & fracMask;
        switch (_rng.Next(18))
        {
            case 0: return sign;
            case 1: return Pack(0, Math.Max(1, RandFrac() >> _rng.Next(frac)));                    // denormal
            case 2: return Pack(1 + _rng.Next(3), RandFrac());                                     // smallest normals
            case 3: return Pack(expMax - 1 - _rng.Next(3), RandFrac());                            // largest finites
            case 4: return Pack(expMax, 0);                                                        // infinity
            case 5: return Pack(expMax, (1UL << (frac - 1)) | (RandFrac() >> 1));                  // QNaN
            case 6: return Pack(expMax, Math.Max(1, RandFrac() >> 1));                             // SNaN
            case 7: return Pack(bias + _rng.Next(-1, 3), _rng.Next(2) == 0 ? 0 : 1UL << (frac - 1)); // 0.5, 1, 1.5, 2, 3, 4 …
            case 8: return Random64() & (d ? ulong.MaxValue : 0xFFFF_FFFF);
            case 9:
            {
                // Around the int32/int64 limits, for conversions to integers.
                int k = _rng.Next(4) switch { 0 => 31, 1 => 63, 2 => 30, _ => 32 + _rng.Next(2) * 30 };
                ulong f = _rng.Next(3) switch { 0 => 0, 1 => fracMask, _ => RandFrac() >> Math.Max(0, frac - _rng.Next(frac)) };
                return Pack(bias + k - _rng.Next(2), f);
            }
            case 10: return Pack(Math.Clamp(1 + _rng.Next(-2, frac + 3), 1, expMax - 1), RandFrac()); // products/quotients that get tiny
            case 11:
            {
                // n + 0.5 ties and near-ties for rounding to integers.
                int e = bias + _rng.Next(0, 6);
                ulong f = ((Random64() & fracMask) >> (e - bias + 1) << (e - bias + 1)) | (1UL << (frac - (e - bias) - 1));
                if (_rng.Next(3) == 0) f += (ulong)_rng.Next(-1, 2);
                return Pack(e, f);
            }
            default: return Pack(bias + _rng.Next(-24, 25), RandFrac());
        }
    }

    private uint IntValue() => _rng.Next(8) switch
    {
        0 => 0,
        1 => 1,
        2 => 0x8000_0000,
        3 => 0x7FFF_FFFF,
        4 => 0xFFFF_FFFF,
        5 => (uint)(1 << _rng.Next(32)) + (uint)_rng.Next(-2, 3),
        6 => (uint)_rng.Next(-1000, 1000),
        _ => (uint)Random64(),
    };

    private ulong Long64() => _rng.Next(6) switch
    {
        0 => 1UL << 63,
        1 => (1UL << _rng.Next(64)) + (ulong)_rng.Next(-3, 4),
        2 => (ulong)(long)(int)IntValue(),
        3 => 0x7FFF_FFFF_FFFF_FFFF - (ulong)_rng.Next(1000),
        _ => Random64(),
    };

    /// <summary>16 bytes of lanes of the given kind.</summary>
    public UInt128 Vector(LaneKind kind)
    {
        // Mostly the form's own lane width; sometimes the other one, so halves of doubles get floats and so on.
        if (_rng.Next(8) == 0) kind = (LaneKind)_rng.Next(3);
        return kind switch
        {
            LaneKind.Double => new UInt128(FloatValue(true), FloatValue(true)),
            LaneKind.Single => new UInt128(FloatValue(false) << 32 | FloatValue(false), FloatValue(false) << 32 | FloatValue(false)),
            _ => new UInt128((ulong)IntValue() << 32 | IntValue(), (ulong)IntValue() << 32 | IntValue()),
        };
    }

    private bool TryGenerate(Code code, bool memory, out NativeCase result, out string? error)
    {
        result = null!;
        var op = code.ToOpCode();
        var kind = SourceKind(op.Mnemonic);
        var state = NativeState.Initial();
        for (int k = 0; k < 16; k++) state.Gpr[k] = Random64();
        state.Rsp = NativeLayout.DefaultRsp;
        state.Rflags = RflagsBits.Reserved1 | (Random64() & RflagsBits.Status);
        for (int k = 0; k < 16; k++) state.SetXmm(k, Vector(kind));
        // Every RC, FTZ and DAZ; all exceptions masked; sticky flags usually clear so new ones show.
        uint mxcsr = 0x1F80 | (uint)_rng.Next(4) << 13 | (_rng.Next(2) == 0 ? 0x8000u : 0) | (_rng.Next(2) == 0 ? 0x40u : 0);
        if (_rng.Next(4) == 0) mxcsr |= (uint)_rng.Next(64);
        state.Mxcsr = mxcsr;
        // MMX registers (x87 physical registers with TOP = 0): integer pairs, exponent usually all ones.
        for (int k = 0; k < 8; k++)
            state.SetSt(k, new UInt128(_rng.Next(4) == 0 ? (ulong)_rng.Next(0x10000) : 0xFFFF, (ulong)IntValue() << 32 | IntValue()));
        state.Ftw = (byte)_rng.Next(256);
        var window = new byte[NativeLayout.WindowSize];
        _rng.NextBytes(window);

        var instr = new Instruction { Code = code };
        ushort relocated = 0;
        Register baseReg = BasePool[_rng.Next(BasePool.Length)];
        for (int n = 0; n < op.OpCount; n++)
        {
            switch (op.GetOpKind(n))
            {
                case OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
                    when memory:
                case OpCodeOperandKind.mem:
                {
                    instr.SetOpKind(n, OpKind.Memory);
                    int disp = _rng.Next(3) switch { 0 => 0, 1 => _rng.Next(-128, 128), _ => _rng.Next(-0x800, 0x800) };
                    int ea = 16 + _rng.Next(NativeLayout.DataSize - 64);
                    if (_rng.Next(4) != 0) ea &= ~15;
                    instr.MemoryBase = baseReg;
                    instr.MemoryIndex = Register.None;
                    instr.MemoryIndexScale = 1;
                    instr.MemoryDisplacement64 = (ulong)(long)disp;
                    instr.MemoryDisplSize = disp == 0 ? 0 : disp is >= -128 and <= 127 ? 1 : 8;
                    state.Gpr[baseReg - Register.RAX] = (ulong)(ea - disp);
                    relocated |= (ushort)(1 << (baseReg - Register.RAX));
                    var v = Vector(kind);
                    BitConverter.TryWriteBytes(window.AsSpan(ea), (ulong)v);
                    BitConverter.TryWriteBytes(window.AsSpan(ea + 8), (ulong)(v >> 64));
                    break;
                }
                case OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm or OpCodeOperandKind.xmm_or_mem:
                    SetReg(ref instr, n, Register.XMM0 + _rng.Next(16));
                    break;
                case OpCodeOperandKind.mm_reg or OpCodeOperandKind.mm_rm or OpCodeOperandKind.mm_or_mem:
                    SetReg(ref instr, n, Register.MM0 + _rng.Next(8));
                    break;
                case OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r32_or_mem:
                {
                    int g = PickGpr(baseReg);
                    SetReg(ref instr, n, Register.EAX + g);
                    if (n > 0) state.Gpr[g] = _rng.Next(2) == 0 ? IntValue() : Random64();
                    break;
                }
                case OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm or OpCodeOperandKind.r64_or_mem:
                {
                    int g = PickGpr(baseReg);
                    SetReg(ref instr, n, Register.RAX + g);
                    if (n > 0) state.Gpr[g] = Long64();
                    break;
                }
                case OpCodeOperandKind.imm8:
                    instr.SetOpKind(n, OpKind.Immediate8);
                    instr.Immediate8 = (byte)_rng.Next(256);
                    break;
                default:
                    error = $"operand kind {op.GetOpKind(n)}";
                    return false;
            }
        }
        // Near-cancelling and equal pairs: the destination's lanes copied into the source now and then.
        if (!memory && instr.OpCount >= 2 && instr.Op0Kind == OpKind.Register && instr.Op1Kind == OpKind.Register
            && instr.Op0Register.IsXMM() && instr.Op1Register.IsXMM() && _rng.Next(4) == 0)
        {
            var a = state.GetXmm(instr.Op0Register - Register.XMM0);
            if (_rng.Next(2) == 0) a ^= (UInt128)(ulong)_rng.Next(1, 4) << (kind == LaneKind.Double ? 0 : 32 * _rng.Next(2));
            state.SetXmm(instr.Op1Register - Register.XMM0, a);
        }

        var writer = new CodeWriterImpl();
        var encoder = Encoder.Create(64, writer);
        if (!encoder.TryEncode(instr, 0, out _, out error)) return false;
        var bytes = writer.ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), 0);
        decoder.Decode(out var back);
        if (back.Code != code) { error = $"encodes as {back.Code}"; return false; }
        result = new NativeCase { Code = bytes, Input = state, Window = window, RelocatedGprs = relocated, Description = back.ToString() };
        return true;
    }

    private int PickGpr(Register baseReg)
    {
        int g;
        do g = _rng.Next(16); while (g == 4 || g == baseReg - Register.RAX);
        return g;
    }

    private static void SetReg(ref Instruction instr, int n, Register r)
    {
        instr.SetOpKind(n, OpKind.Register);
        instr.SetOpRegister(n, r);
    }

    private sealed class CodeWriterImpl : CodeWriter
    {
        private readonly List<byte> _bytes = new();
        public override void WriteByte(byte value) => _bytes.Add(value);
        public byte[] ToArray() => _bytes.ToArray();
    }
}

public sealed class SseFloatDifferentialTests(ITestOutputHelper output)
{
    private const int Seed = 20_251_121;
    /// <summary>Cases per form in CI; SHARPVISOR_SSE_CASES overrides it for longer runs.</summary>
    private static int CasesPerForm =>
        int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_SSE_CASES"), out int n) && n > 0 ? n : 120;

    /// <summary>The mnemonics SseFloat*.cs implements (legacy encodings).</summary>
    internal static readonly Mnemonic[] Mnemonics =
    [
        Mnemonic.Movaps, Mnemonic.Movups, Mnemonic.Movapd, Mnemonic.Movupd, Mnemonic.Movss, Mnemonic.Movsd, Mnemonic.Movlps,
        Mnemonic.Movhps, Mnemonic.Movlpd, Mnemonic.Movhpd, Mnemonic.Movlhps, Mnemonic.Movhlps, Mnemonic.Movmskps, Mnemonic.Movmskpd,
        Mnemonic.Movntps, Mnemonic.Movntpd, Mnemonic.Movddup, Mnemonic.Movsldup, Mnemonic.Movshdup,
        Mnemonic.Unpcklps, Mnemonic.Unpckhps, Mnemonic.Unpcklpd, Mnemonic.Unpckhpd, Mnemonic.Shufps, Mnemonic.Shufpd,
        Mnemonic.Blendps, Mnemonic.Blendpd, Mnemonic.Blendvps, Mnemonic.Blendvpd, Mnemonic.Insertps, Mnemonic.Extractps,
        Mnemonic.Andps, Mnemonic.Andnps, Mnemonic.Orps, Mnemonic.Xorps, Mnemonic.Andpd, Mnemonic.Andnpd, Mnemonic.Orpd, Mnemonic.Xorpd,
        Mnemonic.Addps, Mnemonic.Addpd, Mnemonic.Addss, Mnemonic.Addsd, Mnemonic.Subps, Mnemonic.Subpd, Mnemonic.Subss, Mnemonic.Subsd,
        Mnemonic.Mulps, Mnemonic.Mulpd, Mnemonic.Mulss, Mnemonic.Mulsd, Mnemonic.Divps, Mnemonic.Divpd, Mnemonic.Divss, Mnemonic.Divsd,
        Mnemonic.Minps, Mnemonic.Minpd, Mnemonic.Minss, Mnemonic.Minsd, Mnemonic.Maxps, Mnemonic.Maxpd, Mnemonic.Maxss, Mnemonic.Maxsd,
        Mnemonic.Sqrtps, Mnemonic.Sqrtpd, Mnemonic.Sqrtss, Mnemonic.Sqrtsd,
        Mnemonic.Rcpps, Mnemonic.Rcpss, Mnemonic.Rsqrtps, Mnemonic.Rsqrtss,
        Mnemonic.Addsubps, Mnemonic.Addsubpd, Mnemonic.Haddps, Mnemonic.Haddpd, Mnemonic.Hsubps, Mnemonic.Hsubpd,
        Mnemonic.Dpps, Mnemonic.Dppd, Mnemonic.Roundps, Mnemonic.Roundpd, Mnemonic.Roundss, Mnemonic.Roundsd,
        Mnemonic.Cmpps, Mnemonic.Cmppd, Mnemonic.Cmpss, Mnemonic.Cmpsd, Mnemonic.Comiss, Mnemonic.Ucomiss, Mnemonic.Comisd, Mnemonic.Ucomisd,
        Mnemonic.Cvtps2pd, Mnemonic.Cvtpd2ps, Mnemonic.Cvtss2sd, Mnemonic.Cvtsd2ss, Mnemonic.Cvtdq2ps, Mnemonic.Cvtps2dq, Mnemonic.Cvttps2dq,
        Mnemonic.Cvtdq2pd, Mnemonic.Cvtpd2dq, Mnemonic.Cvttpd2dq, Mnemonic.Cvtsi2ss, Mnemonic.Cvtsi2sd,
        Mnemonic.Cvtss2si, Mnemonic.Cvttss2si, Mnemonic.Cvtsd2si, Mnemonic.Cvttsd2si,
        Mnemonic.Cvtpi2ps, Mnemonic.Cvtps2pi, Mnemonic.Cvttps2pi, Mnemonic.Cvtpi2pd, Mnemonic.Cvtpd2pi, Mnemonic.Cvttpd2pi,
    ];

    /// <summary>Every legacy 64-bit-mode form of <see cref="Mnemonics"/> the host can run, with register and memory variants.</summary>
    internal static List<(Code Code, bool Memory)> Forms(HostFeatures features)
    {
        var set = new HashSet<Mnemonic>(Mnemonics);
        var forms = new List<(Code, bool)>();
        foreach (Code code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || !op.Mode64 || op.Encoding != EncodingKind.Legacy || !set.Contains(op.Mnemonic)) continue;
            if (!features.CanExecute(code)) continue;
            bool rm = false, memOnly = false, xmm = false;
            for (int n = 0; n < op.OpCount; n++)
            {
                var k = op.GetOpKind(n);
                if (k is OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem) rm = true;
                if (k == OpCodeOperandKind.mem) memOnly = true;
                if (k is OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm or OpCodeOperandKind.xmm_or_mem) xmm = true;
            }
            if (!xmm) continue; // the string MOVSD/CMPSD
            if (!memOnly) forms.Add((code, false));
            if (rm || memOnly) forms.Add((code, true));
        }
        return forms;
    }

    [Fact]
    public void Every_sse_float_form_agrees_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var clock = Stopwatch.StartNew();
        List<(Code Code, bool Memory)> forms;
        using (var probe = new HostCpu.HostCpu()) forms = Forms(probe.Features);
        Assert.True(forms.Count > 150, $"only {forms.Count} forms");

        var reports = new System.Collections.Concurrent.ConcurrentBag<string>();
        var unsupported = new System.Collections.Concurrent.ConcurrentBag<string>();
        long cases = 0, compared = 0, faults = 0, refused = 0, mismatches = 0;
        int threads = Math.Clamp(Environment.ProcessorCount, 1, 16);
        HostEngineWorkers.ForEachForm(forms.Count, threads, (host, engine, k) =>
        {
            var (code, memory) = forms[k];
            var gen = new SseFloatCaseGenerator(unchecked(Seed * 7919 + (int)code * 31 + (memory ? 1 : 0)));
            int shown = 0;
            int perForm = CasesPerForm;
            for (int n = 0; n < perForm; n++)
            {
                var c = gen.Generate(code, memory);
                var native = host.Run(c);
                if (native.Outcome == NativeOutcome.Refused) { Interlocked.Increment(ref refused); continue; }
                var e = engine.Run(c);
                Interlocked.Increment(ref cases);
                if (e.Outcome == EngineOutcome.Unsupported) { unsupported.Add($"{code}{(memory ? " (mem)" : "")}: {e.Message}"); break; }
                List<string> diffs = e.Outcome == EngineOutcome.Failed
                    ? [$"engine: {e.Message}"]
                    : NativeComparer.Compare(c, native, e.State, engine.Window, e.Exception, CompareParts.All);
                if (native.Outcome == NativeOutcome.Fault) Interlocked.Increment(ref faults);
                else Interlocked.Increment(ref compared);
                if (diffs.Count == 0) continue;
                Interlocked.Increment(ref mismatches);
                if (shown++ < 3)
                    reports.Add($"{code}{(memory ? " (mem)" : "")}: {NativeComparer.Describe(c, diffs)}\n  in: mxcsr {c.Input.Mxcsr:x4} {Inputs(c)}");
            }
        });

        string summary = $"{forms.Count} forms, {cases:N0} cases ({compared:N0} compared, {faults:N0} predicted faults, {refused:N0} refused), "
            + $"{mismatches:N0} mismatches, {unsupported.Count} unsupported forms, {clock.Elapsed.TotalSeconds:F1} s on {threads} threads";
        output.WriteLine(summary);
        foreach (var u in unsupported.OrderBy(x => x)) output.WriteLine("unsupported " + u);
        var shownReports = reports.OrderBy(x => x).Take(60).ToList();
        foreach (var r in shownReports) output.WriteLine(r);
        Assert.True(mismatches == 0 && unsupported.IsEmpty,
            summary + "\n" + string.Join("\n", unsupported.OrderBy(x => x)) + "\n" + string.Join("\n", shownReports));
        Assert.True(faults > 0, "no misaligned-operand case was generated");
    }

    /// <summary>The XMM registers and memory the case's instruction reads, for failure messages.</summary>
    private static string Inputs(NativeCase c)
    {
        Decoder.Create(64, new ByteArrayCodeReader(c.Code)).Decode(out var instr);
        var sb = new System.Text.StringBuilder();
        for (int n = 0; n < instr.OpCount; n++)
        {
            if (instr.GetOpKind(n) == OpKind.Register && instr.GetOpRegister(n).IsXMM())
                sb.Append($" {instr.GetOpRegister(n)}={c.Input.GetXmm(instr.GetOpRegister(n) - Register.XMM0):x32}");
            else if (instr.GetOpKind(n) == OpKind.Register && instr.GetOpRegister(n).IsMM())
                sb.Append($" {instr.GetOpRegister(n)}={c.Input.GetSt(instr.GetOpRegister(n) - Register.MM0):x20}");
            else if (instr.GetOpKind(n) == OpKind.Register && instr.GetOpRegister(n).IsGPR())
                sb.Append($" {instr.GetOpRegister(n)}={c.Input.Gpr[instr.GetOpRegister(n).GetFullRegister() - Register.RAX]:x16}");
            else if (instr.GetOpKind(n) == OpKind.Memory)
            {
                ulong ea = c.Input.Gpr[instr.MemoryBase - Register.RAX] + instr.MemoryDisplacement64;
                if (ea + 16 <= (ulong)c.Window.Length)
                    sb.Append($" mem[{ea:x}]={Convert.ToHexString(c.Window.AsSpan((int)ea, 16).ToArray().Reverse().ToArray())}");
            }
        }
        if (instr.Mnemonic is Mnemonic.Blendvps or Mnemonic.Blendvpd) sb.Append($" xmm0={c.Input.GetXmm(0):x32}");
        return sb.ToString();
    }
}
