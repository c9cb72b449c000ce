// Every x87 instruction form (each Iced Code of ESC D8–DF and WAIT that runs in 64-bit mode on the
// host) against the host CPU, the reference for unprivileged instruction semantics: X87CaseGenerator
// builds one instruction with a random register stack, control word, condition codes, flags and memory operand;
// the host runs it (the shared HostCpu harness when every exception is masked, X87NativeRunner for
// unmasked control words and for FLDCW/FLDENV/FRSTOR, which the harness refuses), the software engine
// runs it through the differential EngineRunner, and FCW, FSW, tags, ST0–ST7, RFLAGS, RAX, R8 and
// the whole memory window must agree.
//
// Not compared, by design:
//   * FIP/FDP/FOP (the host's are host addresses; they are checked by X87UnitTests instead);
//   * the FCS and FDS fields that FNSTENV/FNSAVE write, only on a host that does not deprecate them
//     (CPUID.(EAX=07H,ECX=0):EBX[13] = 0): the engine advertises the deprecation and stores 0;
//   * transcendental results (F2XM1, FYL2X, FYL2XP1, FSIN, FCOS, FSINCOS, FPTAN, FPATAN) are compared
//     within 1 ulp and without C1/#P/#U, as the SoftFloat tests do: Intel documents < 1 ulp, not exact
//     rounding, and reduces trig arguments with a 66-bit π (so trig values for |x| ≥ 1.5 and the
//     architecturally undefined ranges of F2XM1/FYL2XP1 are not compared; flags still are). FYL2X
//     with x a power of two is the exception: its value and whole FSW are compared exactly.
using System.Diagnostics;
using System.Text;
using Iced.Intel;
using SharpVisor.Cpu.Tests.Differential;
using SharpVisor.HostCpu;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using SharpVisor.SoftFloat;
using SharpVisor.Tests.Shared;
using Xunit;

namespace SharpVisor.Cpu.Tests;

public sealed class X87DifferentialTests(ITestOutputHelper output)
{
    private const int Seed = 87_2025;
    private const int MaskedCasesPerForm = 400, UnmaskedCasesPerForm = 200;
    /// <summary>
    /// ESC D8–DF and WAIT forms that run in 64-bit mode: Iced lists 161 on an SSE3 host, 158 without the
    /// three FISTTP forms (SSE3). Fewer means part of the table was lost (e.g. a filter that went wrong).
    /// </summary>
    private const int MinimumForms = 158;

    /// <summary>Every ESC/WAIT form the host can run in 64-bit mode.</summary>
    internal static List<Code> Forms(HostFeatures features)
    {
        var forms = new List<Code>();
        foreach (var code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || !op.Mode64 || op.Encoding != EncodingKind.Legacy) continue;
            bool x87 = code.Mnemonic() is Mnemonic.Wait or Mnemonic.Fisttp;
            foreach (var f in code.CpuidFeatures())
            {
                if (f is CpuidFeature.FPU287XL_ONLY or CpuidFeature.FPU387SL_ONLY) { x87 = false; break; }
                if (f is CpuidFeature.FPU or CpuidFeature.FPU287 or CpuidFeature.FPU387) x87 = true;
            }
            if (x87 && features.CanExecute(code)) forms.Add(code);
        }
        return forms;
    }

    private static bool Transcendental(Mnemonic m) => m is Mnemonic.F2xm1 or Mnemonic.Fyl2x or Mnemonic.Fyl2xp1 or Mnemonic.Fsin
        or Mnemonic.Fcos or Mnemonic.Fsincos or Mnemonic.Fptan or Mnemonic.Fpatan;

    private static Float80 St(in NativeState s, int i)
    {
        var v = s.GetSt(i);
        return new Float80((ushort)(v >> 64), (ulong)v);
    }

    /// <summary>Whether a transcendental's value is compared (see the header), from its input.</summary>
    private static bool CompareTranscendentalValue(Mnemonic m, Float80 a)
    {
        if (m == Mnemonic.Fyl2xp1 && a.IsInfinity) return false; // outside |x| < 1 − √2/2 as well
        if (a.Exponent == 0x7FFF || a.IsUnsupported) return true;
        return m switch
        {
            Mnemonic.F2xm1 => a.Exponent < 0x3FFF || (a.Exponent == 0x3FFF && a.Significand == Float80.IntegerBit),
            Mnemonic.Fyl2xp1 => a.Exponent < 0x3FFD,
            Mnemonic.Fsin or Mnemonic.Fcos or Mnemonic.Fsincos or Mnemonic.Fptan =>
                a.Exponent < 0x3FFF || (a.Exponent == 0x3FFF && a.Significand < 0xC000_0000_0000_0000),
            _ => true,
        };
    }

    private static bool StEmptyIn(in NativeState s, int i) => (s.Ftw & (1 << (((s.Fsw >> 11) + i) & 7))) == 0;

    /// <summary>Whether the host stores FCS/FDS as 0000H (CPUID.(EAX=07H,ECX=0):EBX[13]), as the engine does.</summary>
    private static readonly bool s_hostZeroesFcsFds =
        System.Runtime.Intrinsics.X86.X86Base.IsSupported && (System.Runtime.Intrinsics.X86.X86Base.CpuId(7, 0).Ebx & (1 << 13)) != 0;

    /// <summary>FYL2X of a finite nonzero x = 2^k (k ≠ 0) and a valid y: exact on the host, so compared exactly.</summary>
    private static bool ExactFyl2x(Mnemonic m, in NativeState input)
    {
        if (m != Mnemonic.Fyl2x || StEmptyIn(input, 0) || StEmptyIn(input, 1)) return false;
        Float80 x = St(input, 0), y = St(input, 1);
        if (x.Sign || x.Exponent == 0x7FFF || x.IsZero || x.IsUnsupported || y.Exponent == 0x7FFF || y.IsZero || y.IsUnsupported) return false;
        ulong sig = x.Significand;
        if ((sig & (sig - 1)) != 0) return false;
        return x.Exponent != 0x3FFF; // x = 1 gives ±0 and is exact anyway
    }

    /// <summary>Differences between the host's and the engine's results of a case of <paramref name="code"/>.</summary>
    internal static List<string> Compare(Code code, NativeCase c, NativeResult host, in EngineResult engine, ReadOnlySpan<byte> engineWindow)
    {
        var diffs = new List<string>();
        if (engine.Outcome != EngineOutcome.Completed)
        {
            diffs.Add($"engine: {engine.Outcome} {engine.Exception} {engine.Message}");
            return diffs;
        }
        var m = code.Mnemonic();
        var exp = host.Output;
        var act = engine.State;
        for (int g = 0; g < 16; g++)
            if (exp.Gpr[g] != act.Gpr[g]) diffs.Add($"gpr{g}: expected {exp.Gpr[g]:x16}, engine {act.Gpr[g]:x16}");
        ulong flagDelta = (exp.Rflags ^ act.Rflags) & RflagsBits.Settable;
        if (flagDelta != 0)
            diffs.Add($"rflags: expected {NativeComparer.FlagString(exp.Rflags, RflagsBits.Settable)}, engine {NativeComparer.FlagString(act.Rflags, RflagsBits.Settable)}");

        var expWindow = host.Window.AsSpan();
        if (!expWindow.SequenceEqual(engineWindow)) CompareWindow(code, c, expWindow, engineWindow, diffs);
        CompareX87(m, c, exp, act, diffs);
        return diffs;
    }

    private static void CompareWindow(Code code, NativeCase c, ReadOnlySpan<byte> expWindow, ReadOnlySpan<byte> engineWindow, List<string> diffs)
    {
        var m = code.Mnemonic();
        Span<bool> ignore = stackalloc bool[expWindow.Length];
        if (!s_hostZeroesFcsFds && m is Mnemonic.Fnstenv or Mnemonic.Fstenv or Mnemonic.Fnsave or Mnemonic.Fsave)
        {
            int at = (int)(c.Input.Gpr[8] + (ulong)(long)DecodeDisplacement(c));
            bool size32 = code.ToOpCode().MemorySize is MemorySize.FpuEnv28 or MemorySize.FpuState108;
            int fcs = at + (size32 ? 16 : 8), fds = at + (size32 ? 24 : 12);
            ignore[fcs] = ignore[fcs + 1] = ignore[fds] = ignore[fds + 1] = true;
        }
        int shown = 0;
        for (int k = 0; k < expWindow.Length && shown < 12; k++)
            if (!ignore[k] && expWindow[k] != engineWindow[k])
            {
                diffs.Add($"window[{k:x4}]: expected {expWindow[k]:x2}, engine {engineWindow[k]:x2}");
                shown++;
            }
    }

    private static void CompareX87(Mnemonic m, NativeCase c, in NativeState exp, in NativeState act, List<string> diffs)
    {
        bool transcendental = Transcendental(m) && !ExactFyl2x(m, c.Input);
        // F2XM1 and FYL2XP1 outside their architectural operand ranges: the result, flags and even
        // #IA are undefined (only the stack effect of a masked response would be comparable).
        if (m is Mnemonic.F2xm1 or Mnemonic.Fyl2xp1 && !CompareTranscendentalValue(m, St(c.Input, 0))
            && !StEmptyIn(c.Input, 0) && (m == Mnemonic.F2xm1 || !StEmptyIn(c.Input, 1))) return;
        ushort fswMask = transcendental ? unchecked((ushort)~(0x0200 | 0x20 | 0x10)) : (ushort)0xFFFF;
        if (exp.Fcw != act.Fcw) diffs.Add($"fcw: expected {exp.Fcw:x4}, engine {act.Fcw:x4}");
        if ((exp.Fsw & fswMask) != (act.Fsw & fswMask)) diffs.Add($"fsw: expected {exp.Fsw:x4}, engine {act.Fsw:x4}");
        if (exp.Ftw != act.Ftw) diffs.Add($"ftw: expected {exp.Ftw:x2}, engine {act.Ftw:x2}");
        bool compareValues = !transcendental || CompareTranscendentalValue(m, St(c.Input, 0));
        for (int k = 0; k < 8; k++)
        {
            Float80 e = St(exp, k), a = St(act, k);
            if (e == a) continue;
            if (transcendental && (!compareValues || Float80Ulps.Distance(e, a) <= 1)) continue;
            diffs.Add($"st{k}: expected {e}, engine {a}");
        }
    }

    private static long DecodeDisplacement(NativeCase c)
    {
        // FSTENV and friends may decode as WAIT followed by the no-wait form (9B REX D9 …).
        var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(c.Code));
        Instruction i;
        do d.Decode(out i); while (i.Mnemonic == Mnemonic.Wait && d.IP < (ulong)c.Code.Length);
        return (long)i.MemoryDisplacement64;
    }

    private static string DescribeInput(NativeCase c)
    {
        var s = c.Input;
        var sb = new StringBuilder();
        sb.Append($"fcw={s.Fcw:x4} fsw={s.Fsw:x4} ftw={s.Ftw:x2} flags={NativeComparer.FlagString(s.Rflags, RflagsBits.Settable)}");
        for (int k = 0; k < 8; k++) sb.Append($" st{k}={St(s, k)}");
        if (c.RelocatedGprs != 0)
        {
            var d = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(c.Code));
            Instruction i;
            do d.Decode(out i); while (i.Mnemonic == Mnemonic.Wait && d.IP < (ulong)c.Code.Length);
            int at = (int)(s.Gpr[8] + i.MemoryDisplacement64);
            int n = Math.Max(2, i.MemorySize.GetSize());
            sb.Append($" mem@{at:x}={Convert.ToHexString(c.Window, at, Math.Min(n, 32))}");
        }
        return sb.ToString();
    }

    private sealed class FormResult
    {
        public long Masked, Unmasked, RunnerChecks, Mismatches;
        public long GenTicks, HostTicks, EngineTicks, CompareTicks;
        public readonly List<string> Reports = new();
    }

    [Fact]
    public void Every_x87_form_agrees_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        double scale = double.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_X87_SCALE"), System.Globalization.CultureInfo.InvariantCulture, out double sc) ? sc : 1.0;
        // SHARPVISOR_X87_SCALE multiplies the case counts, SHARPVISOR_X87_SEED changes the seed (longer runs).
        int seed = int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_X87_SEED"), out int sd) ? sd : Seed;
        var clock = Stopwatch.StartNew();
        var cpuAtStart = Process.GetCurrentProcess().TotalProcessorTime;
        List<Code> forms;
        using (var probe = new HostCpu.HostCpu()) forms = Forms(probe.Features);
        // SHARPVISOR_X87_FORMS=Fstenv,Fcom: only the forms whose Code name contains one of these (for investigations).
        if (Environment.GetEnvironmentVariable("SHARPVISOR_X87_FORMS") is { Length: > 0 } only)
        {
            forms = forms.Where(f => only.Split(',').Any(o => f.ToString().Contains(o, StringComparison.OrdinalIgnoreCase))).ToList();
            Assert.True(forms.Count > 0, $"SHARPVISOR_X87_FORMS={only} matches no x87 form");
        }
        else
            Assert.True(forms.Count >= MinimumForms, $"only {forms.Count} x87 forms found, expected at least {MinimumForms}");
        var results = new FormResult[forms.Count];
        int next = -1;
        Exception? failure = null;
        var workers = new Thread[Math.Max(1, Environment.ProcessorCount)];
        for (int t = 0; t < workers.Length; t++)
        {
            workers[t] = new Thread(() =>
            {
                try
                {
                    using var host = new HostCpu.HostCpu();
                    using var runner = new X87NativeRunner();
                    using var engine = new EngineRunner();
                    if (!engine.FpStateRoundTrips) throw new InvalidOperationException("the engine does not carry VcpuState.FxSave");
                    int k;
                    while ((k = Interlocked.Increment(ref next)) < forms.Count)
                        results[k] = RunForm(forms[k], unchecked(seed * 31 + k * 7919), scale, host, runner, engine);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            }, 16 << 20) { IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        if (failure is not null) throw new InvalidOperationException("x87 differential worker failed", failure);

        long masked = 0, unmasked = 0, checks = 0, mismatches = 0, gen = 0, hostT = 0, eng = 0, cmp = 0;
        var report = new StringBuilder();
        for (int k = 0; k < forms.Count; k++)
        {
            var r = results[k];
            masked += r.Masked; unmasked += r.Unmasked; checks += r.RunnerChecks; mismatches += r.Mismatches;
            gen += r.GenTicks; hostT += r.HostTicks; eng += r.EngineTicks; cmp += r.CompareTicks;
            if (r.Mismatches > 0) report.AppendLine($"{forms[k]}: {r.Mismatches} mismatches");
            foreach (var line in r.Reports) report.AppendLine(line);
        }
        string summary = $"x87 differential: {forms.Count} forms, {masked:N0} cases with all exceptions masked (HostCpu harness), "
            + $"{unmasked:N0} with unmasked exceptions or FLDCW/FLDENV/FRSTOR (X87NativeRunner), {checks:N0} runner cross-checks, "
            + $"{mismatches:N0} mismatches, {clock.Elapsed.TotalSeconds:F1} s wall, {(Process.GetCurrentProcess().TotalProcessorTime - cpuAtStart).TotalSeconds:F1} s CPU (thread wall time: generate {gen / (double)Stopwatch.Frequency:F1} s, "
            + $"host {hostT / (double)Stopwatch.Frequency:F1} s, engine {eng / (double)Stopwatch.Frequency:F1} s, compare {cmp / (double)Stopwatch.Frequency:F1} s)";
        output.WriteLine(summary);
        output.WriteLine(report.ToString());
        Assert.True(mismatches == 0, summary + "\n" + report);
        // A form filter or scale that leaves nothing to compare must not pass as a clean run.
        Assert.True(masked + unmasked > 0, $"no case was compared (SHARPVISOR_X87_SCALE={scale}): {summary}");
    }

    private static FormResult RunForm(Code code, int seed, double scale, HostCpu.HostCpu host, X87NativeRunner runner, EngineRunner engine)
    {
        var r = new FormResult();
        var gen = new X87CaseGenerator(seed);
        var m = code.Mnemonic();
        bool harnessRefuses = m is Mnemonic.Fldcw or Mnemonic.Fldenv or Mnemonic.Frstor;
        int maskedCases = (int)(MaskedCasesPerForm * scale), unmaskedCases = (int)(UnmaskedCasesPerForm * scale);
        for (int n = 0; n < maskedCases + unmaskedCases; n++)
        {
            bool unmasked = n >= maskedCases;
            long t0 = Stopwatch.GetTimestamp();
            var c = gen.Generate(code, unmasked);
            long t1 = Stopwatch.GetTimestamp();
            r.GenTicks += t1 - t0;
            NativeResult native;
            if (unmasked || harnessRefuses)
            {
                native = runner.Run(c);
                r.Unmasked++;
            }
            else
            {
                native = host.Run(c);
                if (native.Outcome != NativeOutcome.Completed) throw new InvalidOperationException($"{c}: the harness did not run it: {native}");
                r.Masked++;
                if (n % 16 == 0)
                {
                    // The private runner must agree with the shared harness where both run.
                    var mine = runner.Run(c);
                    r.RunnerChecks++;
                    var cross = NativeComparer.Compare(c, native, mine.Output, mine.Window, parts: CompareParts.Flags | CompareParts.Memory | CompareParts.X87);
                    if (cross.Count > 0) throw new InvalidOperationException($"X87NativeRunner disagrees with HostCpu on {c}: {string.Join("; ", cross)}");
                }
            }
            long t2 = Stopwatch.GetTimestamp();
            r.HostTicks += t2 - t1;
            var e = engine.Run(c);
            long t3 = Stopwatch.GetTimestamp();
            r.EngineTicks += t3 - t2;
            var diffs = Compare(code, c, native, e, engine.Window);
            r.CompareTicks += Stopwatch.GetTimestamp() - t3;
            if (diffs.Count == 0) continue;
            r.Mismatches++;
            if (r.Reports.Count < 3)
                r.Reports.Add($"  {c} [{Convert.ToHexString(c.Code)}]\n    input: {DescribeInput(c)}\n    {string.Join("\n    ", diffs)}");
        }
        return r;
    }
}
