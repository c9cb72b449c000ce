// The differential run: generated cases of every catalogued integer form (SharpVisor.HostCpu
// InstructionForms/CaseGenerator), each executed on the host CPU and on the software engine, compared
// by NativeComparer with the SDM's undefined results masked: for unprivileged instructions the host
// CPU is the reference, so any other difference is an engine bug.
//
// Work is split into items (one per form, or chunks of a custom case source) across threads, one
// HostCpu and one EngineRunner per thread. Each item has its own generator seeded from (seed, item
// index), so a run is reproducible whatever the scheduling. For forms, phase 1 runs one case of every
// form, which tells implemented forms from unimplemented ones (the engine stops with InternalError
// "unsupported …"); phase 2 spreads the requested number of cases over the implemented forms. An
// unimplemented form is reported once and not counted as a mismatch.
//
// Pair mode (lazy flags): each case is a generated instruction A whose results are fully defined for
// its input (UndefinedFlags), followed by a generated register-only instruction B. B then reads the
// flags and registers A produced, which in the engine are still in their lazy form; the comparer
// masks B's undefined results for any input. B never names a register that holds a window address
// (their absolute values differ between host and engine) and is never DIV/IDIV (the native harness
// cannot predict #DE from values computed inside the snippet).
//
// Beyond NativeComparer, a case that faults is held to the fault rules of SDM Vol. 3A §6.5: the saved
// RIP is the faulting instruction and the instruction left no trace (GPRs other than RSP, and the
// saved RFLAGS, equal the input).
using System.Diagnostics;
using System.Text;
using Iced.Intel;
using Decoder = Iced.Intel.Decoder;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using SharpVisor.HostCpu;

namespace SharpVisor.Cpu.Tests.Differential;

internal sealed class DifferentialSummary
{
    public string Kind = "";
    public int Seed, Threads, Forms, ImplementedForms, CasesPerForm;
    public long Cases, Compared, Faults, Refused, Mismatches, EngineFailures;
    /// <summary>Pair mode: cases that got a second instruction (the others' first had undefined results).</summary>
    public long Paired;
    public CompareParts Parts;
    public bool FpStateCompared;
    /// <summary>Wall time, and CPU time of the whole process over the run (other tests may share it).</summary>
    public TimeSpan Elapsed, CpuTime;
    /// <summary>Unimplemented forms by mnemonic.</summary>
    public SortedDictionary<string, List<string>> Unimplemented { get; } = new(StringComparer.Ordinal);
    public SortedDictionary<string, long> MismatchesByForm { get; } = new(StringComparer.Ordinal);
    public SortedDictionary<string, long> FaultsByVector { get; } = new(StringComparer.Ordinal);
    public List<string> Reports { get; } = new();

    public string Format(int maxReports = 25)
    {
        var sb = new StringBuilder();
        string forms = Forms > 0 ? $"{Forms} forms ({ImplementedForms} implemented), {CasesPerForm} cases per implemented form, " : "";
        sb.AppendLine($"differential run, {Kind}: seed {Seed}, {forms}{Threads} threads, {Elapsed.TotalSeconds:F1} s wall, {CpuTime.TotalSeconds:F1} s CPU");
        sb.AppendLine($"  cases {Cases:N0}: compared {Compared:N0}, predicted faults {Faults:N0} ({string.Join(", ", FaultsByVector.Select(kv => $"{kv.Key} {kv.Value:N0}"))}), refused by the native harness {Refused:N0}{(Paired > 0 ? $", {Paired:N0} of them pairs" : "")}");
        sb.AppendLine($"  compared: {Parts}{(FpStateCompared ? "" : " (the engine does not carry VcpuState.FxSave: x87/SSE state not compared)")}");
        sb.AppendLine($"  mismatches {Mismatches:N0} (engine failures {EngineFailures:N0})");
        foreach (var kv in MismatchesByForm) sb.AppendLine($"    {kv.Key}: {kv.Value:N0}");
        int unimplemented = Unimplemented.Values.Sum(l => l.Count);
        sb.AppendLine($"  unimplemented forms {unimplemented} in {Unimplemented.Count} mnemonics");
        foreach (var kv in Unimplemented) sb.AppendLine($"    {kv.Key}: {string.Join(", ", kv.Value)}");
        foreach (var r in Reports.Take(maxReports)) sb.AppendLine(r);
        if (Reports.Count > maxReports) sb.AppendLine($"  … {Reports.Count - maxReports} more reports");
        return sb.ToString();
    }
}

internal static class DifferentialRun
{
    private const int MaxReportsPerItem = 3;
    /// <summary>Cases per work item of a custom case source.</summary>
    private const int ChunkSize = 500;

    /// <summary>One work item and its counters; touched by one thread at a time.</summary>
    private sealed class WorkItem(int seed, InstructionForm? form)
    {
        public readonly InstructionForm? Form = form;
        public readonly CaseGenerator Generator = new(seed);
        /// <summary>Extra randomness: the second instruction in pair mode, custom case sources.</summary>
        public readonly Random Random = new(seed);
        public int Count;
        public long Cases, Compared, Faults, Refused, Mismatches, EngineFailures, Paired;
        public string? Unsupported;
        public readonly Dictionary<X86Exception, long> FaultsByVector = new();
        public readonly Dictionary<string, long> MismatchesByKey = new();
        public readonly HashSet<string> UnsupportedInstructions = new();
        public readonly List<string> Reports = new();
    }

    /// <summary>
    /// Runs about <paramref name="targetCases"/> cases of the integer forms (rounded up to a whole number
    /// per implemented form) on <paramref name="threads"/> threads.
    /// </summary>
    public static DifferentialSummary Run(long targetCases, int seed, int threads, bool pairs = false)
    {
        var clock = Stopwatch.StartNew();
        var cpuAtStart = Process.GetCurrentProcess().TotalProcessorTime;
        IReadOnlyList<InstructionForm> forms;
        using (var probe = new HostCpu.HostCpu()) forms = InstructionForms.All(probe.Features);
        var items = new WorkItem[forms.Count];
        for (int i = 0; i < items.Length; i++) items[i] = new WorkItem(ItemSeed(seed, i), forms[i]) { Count = 1 };
        InstructionForm[]? seconds = pairs ? forms.Where(f => !f.Memory && f.Mnemonic is not (Mnemonic.Div or Mnemonic.Idiv)).ToArray() : null;

        Func<WorkItem, NativeCase> make = seconds is null
            ? w => w.Generator.Generate(w.Form!.Value)
            : w => WithSecond(w, w.Generator.Generate(w.Form!.Value), seconds);
        bool fp = RunParallel(items, make, threads);
        var implemented = items.Where(s => s.Unsupported is null).ToList();
        int perForm = implemented.Count == 0 ? 0 : (int)Math.Max(1, (targetCases + implemented.Count - 1) / implemented.Count);
        foreach (var w in implemented) w.Count = perForm - 1;
        RunParallel(implemented, make, threads);

        var summary = Summarize(items, pairs ? "integer forms, instruction pairs" : "integer forms", seed, threads, fp, clock, cpuAtStart);
        summary.Forms = forms.Count;
        summary.ImplementedForms = implemented.Count;
        summary.CasesPerForm = perForm;
        return summary;
    }

    /// <summary>Runs <paramref name="count"/> cases made by <paramref name="make"/> (given a seeded Random) in chunks.</summary>
    public static DifferentialSummary RunCustom(string kind, Func<Random, NativeCase> make, long count, int seed, int threads)
    {
        var clock = Stopwatch.StartNew();
        var cpuAtStart = Process.GetCurrentProcess().TotalProcessorTime;
        var items = new List<WorkItem>();
        for (long done = 0; done < count; done += ChunkSize)
            items.Add(new WorkItem(ItemSeed(seed, items.Count), null) { Count = (int)Math.Min(ChunkSize, count - done) });
        bool fp = RunParallel(items, w => make(w.Random), threads);
        return Summarize(items, kind, seed, threads, fp, clock, cpuAtStart);
    }

    private static int ItemSeed(int seed, int index) => unchecked(seed * 7919 + index * 104729);

    /// <summary>Runs every item on its own thread pool; true when every engine carried the FXSAVE state.</summary>
    private static bool RunParallel(IReadOnlyList<WorkItem> work, Func<WorkItem, NativeCase> make, int threads)
    {
        int next = -1;
        bool fpCompared = true;
        object fpLock = new();
        var workers = new Thread[threads];
        Exception? failure = null;
        for (int t = 0; t < threads; t++)
        {
            workers[t] = new Thread(() =>
            {
                try
                {
                    using var host = new HostCpu.HostCpu();
                    using var engine = new EngineRunner();
                    lock (fpLock) fpCompared &= engine.FpStateRoundTrips;
                    var parts = CompareParts.Integer | (engine.FpStateRoundTrips ? CompareParts.Sse | CompareParts.X87 : 0);
                    int k;
                    while ((k = Interlocked.Increment(ref next)) < work.Count)
                        RunItem(work[k], make, host, engine, parts);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            }, 16 << 20) { IsBackground = true, Name = $"differential-{t}" };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        if (failure is not null) throw new InvalidOperationException("differential worker failed", failure);
        return fpCompared;
    }

    private static DifferentialSummary Summarize(IEnumerable<WorkItem> items, string kind, int seed, int threads, bool fp, Stopwatch clock, TimeSpan cpuAtStart)
    {
        var summary = new DifferentialSummary
        {
            Kind = kind, Seed = seed, Threads = threads, Elapsed = clock.Elapsed, FpStateCompared = fp,
            CpuTime = Process.GetCurrentProcess().TotalProcessorTime - cpuAtStart,
            Parts = CompareParts.Integer | (fp ? CompareParts.Sse | CompareParts.X87 : 0),
        };
        foreach (var s in items)
        {
            summary.Cases += s.Cases; summary.Compared += s.Compared; summary.Faults += s.Faults; summary.Refused += s.Refused;
            summary.Mismatches += s.Mismatches; summary.EngineFailures += s.EngineFailures; summary.Paired += s.Paired;
            foreach (var kv in s.FaultsByVector)
                summary.FaultsByVector["#" + kv.Key] = summary.FaultsByVector.GetValueOrDefault("#" + kv.Key) + kv.Value;
            foreach (var kv in s.MismatchesByKey)
                summary.MismatchesByForm[kv.Key] = summary.MismatchesByForm.GetValueOrDefault(kv.Key) + kv.Value;
            summary.Reports.AddRange(s.Reports);
            if (s.Unsupported is not null && s.Form is { } form)
            {
                string key = form.Mnemonic.ToString().ToUpperInvariant();
                if (!summary.Unimplemented.TryGetValue(key, out var list)) summary.Unimplemented[key] = list = new List<string>();
                list.Add(form.ToString());
            }
            foreach (var what in s.UnsupportedInstructions)
                if (!summary.Unimplemented.ContainsKey(what)) summary.Unimplemented[what] = new List<string> { "(custom cases)" };
        }
        return summary;
    }

    private static void RunItem(WorkItem s, Func<WorkItem, NativeCase> make, HostCpu.HostCpu host, EngineRunner engine, CompareParts parts)
    {
        for (int n = 0; n < s.Count && s.Unsupported is null; n++)
        {
            var c = make(s);
            var native = host.Run(c);
            if (native.Outcome == NativeOutcome.Refused) { s.Refused++; continue; }
            var e = engine.Run(c);
            if (e.Outcome == EngineOutcome.Unsupported)
            {
                // A form stops at its first unsupported case; a custom source notes the instruction and goes on.
                if (s.Form is not null) { s.Unsupported = e.Message; return; }
                s.UnsupportedInstructions.Add(UnsupportedWhat(e.Message));
                continue;
            }
            s.Cases++;
            List<string> diffs;
            if (e.Outcome == EngineOutcome.Failed)
            {
                s.EngineFailures++;
                diffs = [$"engine: {e.Message}"];
            }
            else
            {
                diffs = NativeComparer.Compare(c, native, e.State, engine.Window, e.Exception, parts);
                if (diffs.Count == 0 && native.Outcome == NativeOutcome.Fault) CheckFault(c, e, diffs);
            }
            if (native.Outcome == NativeOutcome.Fault)
            {
                s.Faults++;
                s.FaultsByVector[native.Exception] = s.FaultsByVector.GetValueOrDefault(native.Exception) + 1;
            }
            else s.Compared++;
            if (diffs.Count == 0) continue;
            s.Mismatches++;
            string key = s.Form?.ToString() ?? FirstCode(c.Code).ToString();
            s.MismatchesByKey[key] = s.MismatchesByKey.GetValueOrDefault(key) + 1;
            if (s.Reports.Count < MaxReportsPerItem) s.Reports.Add($"{key}: {NativeComparer.Describe(c, diffs)}\n  input: {DescribeInput(c)}");
        }
    }

    /// <summary>Appends a register-only instruction to <paramref name="first"/> when its results are all defined (see the header).</summary>
    private static NativeCase WithSecond(WorkItem s, NativeCase first, InstructionForm[] seconds)
    {
        var undefined = UndefinedFlags.For(first);
        if (undefined != UndefinedBehavior.None) return first;
        for (int attempt = 0; attempt < 16; attempt++)
        {
            var second = s.Generator.Generate(seconds[s.Random.Next(seconds.Length)]);
            Decoder.Create(64, new ByteArrayCodeReader(second.Code)).Decode(out var instr);
            bool clash = false;
            for (int k = 0; k < instr.OpCount; k++)
                if (instr.GetOpKind(k) == OpKind.Register && (first.EffectiveRelocatedGprs & (1 << CasePreflight.Index(instr.GetOpRegister(k)))) != 0)
                    clash = true;
            if (clash) continue;
            s.Paired++;
            return new NativeCase
            {
                Code = [.. first.Code, .. second.Code],
                Input = first.Input,
                Window = first.Window,
                RelocatedGprs = first.RelocatedGprs,
                Description = $"{first}; {second}",
            };
        }
        return first;
    }

    /// <summary>A fault is taken before the instruction changes anything (SDM Vol. 3A §6.5, "Faults").</summary>
    private static void CheckFault(NativeCase c, EngineResult e, List<string> diffs)
    {
        if (InstructionCount(c.Code) != 1) return; // the faulting one may be a later instruction
        if (e.FaultRip != EngineRunner.CodeGpa) diffs.Add($"fault: saved RIP {e.FaultRip:x}, expected the instruction at {EngineRunner.CodeGpa:x}");
        ulong flagDelta = (e.FaultRflags ^ c.Input.Rflags) & RflagsBits.Settable;
        if (flagDelta != 0) diffs.Add($"fault: saved RFLAGS {NativeComparer.FlagString(e.FaultRflags, RflagsBits.Settable)}, input {NativeComparer.FlagString(c.Input.Rflags, RflagsBits.Settable)}");
        for (int i = 0; i < 16; i++)
            if (i != 4 && e.State.Gpr[i] != c.Input.Gpr[i])
                diffs.Add($"fault: GPR {i} changed from {c.Input.Gpr[i]:x16} to {e.State.Gpr[i]:x16}");
    }

    private static int InstructionCount(byte[] code)
    {
        var d = Decoder.Create(64, new ByteArrayCodeReader(code));
        int n = 0;
        while (d.IP < (ulong)code.Length) { d.Decode(out _); n++; }
        return n;
    }

    /// <summary>"unsupported instruction REP MOVSB at 0008:…" → "instruction REP MOVSB".</summary>
    private static string UnsupportedWhat(string? message)
    {
        string m = message ?? "";
        if (m.StartsWith("unsupported ", StringComparison.Ordinal)) m = m["unsupported ".Length..];
        int at = m.LastIndexOf(" at ", StringComparison.Ordinal);
        return at > 0 ? m[..at] : m;
    }

    private static Code FirstCode(byte[] code)
    {
        Decoder.Create(64, new ByteArrayCodeReader(code)).Decode(out var i);
        return i.Code;
    }

    private static string DescribeInput(NativeCase c)
    {
        string[] names = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
        var sb = new StringBuilder();
        for (int i = 0; i < 16; i++)
        {
            sb.Append(names[i]).Append('=').Append(c.Input.Gpr[i].ToString("x"));
            if ((c.EffectiveRelocatedGprs & (1 << i)) != 0) sb.Append("(w)");
            sb.Append(' ');
        }
        sb.Append("flags=").Append(NativeComparer.FlagString(c.Input.Rflags, RflagsBits.Settable));
        return sb.ToString();
    }
}
