// Differential tests of the software engine against the host CPU, the reference for unprivileged
// instruction semantics: every integer form of the HostCpu catalogue, generated cases, results compared
// with the SDM's undefined flags and results masked. A form the engine stops on as unsupported fails the
// test (it would otherwise drop out of the comparison). See DifferentialRun for the method.
using SharpVisor.HostCpu;
using Xunit;

namespace SharpVisor.Cpu.Tests.Differential;

public sealed class DifferentialTests(ITestOutputHelper output)
{
    /// <summary>Fixed so that a CI failure reproduces; the long run can change it with SHARPVISOR_DIFF_SEED.</summary>
    private const int CiSeed = 20_250_611;
    private const long CiCases = 100_000, CiPairs = 30_000, CiStrings = 20_000, CiLocks = 4_000, CiStack = 5_000;

    /// <summary>
    /// A form (or custom-case instruction) on which the engine stops as unsupported is dropped from the
    /// comparison (DifferentialRun), so without this check an engine that lost a form would still pass.
    /// </summary>
    private static void AssertNothingUnsupported(DifferentialSummary summary)
    {
        int forms = summary.Unimplemented.Values.Sum(l => l.Count);
        Assert.True(summary.Unimplemented.Count == 0,
            $"{forms} forms in {summary.Unimplemented.Count} mnemonics stopped the engine as unsupported and were not compared:\n{summary.Format()}");
    }

    [Fact]
    public void Hundred_thousand_generated_integer_cases_agree_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var summary = DifferentialRun.Run(CiCases, CiSeed, Environment.ProcessorCount);
        output.WriteLine(summary.Format());
        Assert.True(summary.Mismatches == 0, summary.Format());
        AssertNothingUnsupported(summary);
        Assert.True(summary.Cases >= CiCases, $"only {summary.Cases} cases ran");
        Assert.True(summary.Faults > 0, "no fault case was generated");
    }

    [Fact]
    public void Generated_instruction_pairs_agree_with_the_host_cpu()
    {
        // Lazy flags: the second instruction consumes what the first left (see DifferentialRun).
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var summary = DifferentialRun.Run(CiPairs, CiSeed + 2, Environment.ProcessorCount, pairs: true);
        output.WriteLine(summary.Format());
        Assert.True(summary.Mismatches == 0, summary.Format());
        AssertNothingUnsupported(summary);
        Assert.True(summary.Cases >= CiPairs, $"only {summary.Cases} cases ran");
    }

    [Fact]
    public void String_instructions_agree_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var summary = DifferentialRun.RunCustom("string instructions", StringCases.Make, CiStrings, CiSeed + 3, Environment.ProcessorCount);
        output.WriteLine(summary.Format());
        Assert.True(summary.Mismatches == 0, summary.Format());
        AssertNothingUnsupported(summary);
        Assert.True(summary.Cases >= CiStrings * 9 / 10, $"only {summary.Cases} cases ran");
    }

    [Fact]
    public void Stack_forms_agree_with_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        var summary = DifferentialRun.RunCustom("stack forms", StackCases.Make, CiStack, CiSeed + 5, Environment.ProcessorCount);
        output.WriteLine(summary.Format());
        Assert.True(summary.Mismatches == 0, summary.Format());
        AssertNothingUnsupported(summary);
        Assert.True(summary.Compared >= CiStack * 9 / 10, $"only {summary.Compared} cases compared");
    }

    [Fact]
    public void Lock_prefix_is_honoured_or_raises_ud_as_on_the_host_cpu()
    {
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        IReadOnlyList<InstructionForm> forms;
        using (var host = new HostCpu.HostCpu()) forms = InstructionForms.All(host.Features);
        var summary = DifferentialRun.RunCustom("LOCK prefix", LockCases.For(forms), CiLocks, CiSeed + 4, Environment.ProcessorCount);
        output.WriteLine(summary.Format());
        Assert.True(summary.Mismatches == 0, summary.Format());
        AssertNothingUnsupported(summary);
        Assert.True(summary.FaultsByVector.ContainsKey("#UD") && summary.Compared > CiLocks / 10, "both outcomes must occur");
    }

    /// <summary>
    /// The long run: SHARPVISOR_DIFF_CASES single-instruction cases (e.g. 10000000), a quarter as many
    /// pairs and a tenth as many string cases, seed from SHARPVISOR_DIFF_SEED if set.
    /// <c>SHARPVISOR_DIFF_CASES=10000000 dotnet test tests/SharpVisor.Cpu.Tests --filter Long_run</c>
    /// </summary>
    [Fact]
    public void Long_run_scaled_by_SHARPVISOR_DIFF_CASES()
    {
        string? cases = Environment.GetEnvironmentVariable("SHARPVISOR_DIFF_CASES");
        if (string.IsNullOrEmpty(cases)) Assert.Skip("set SHARPVISOR_DIFF_CASES (e.g. 10000000) for the long differential run");
        if (!HostFeatures.IsHostSupported) Assert.Skip("native execution needs Linux on x86-64");
        long target = long.Parse(cases, System.Globalization.CultureInfo.InvariantCulture);
        int seed = int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_DIFF_SEED"), out int s) ? s : CiSeed + 1;
        var single = DifferentialRun.Run(target, seed, Environment.ProcessorCount);
        output.WriteLine(single.Format(maxReports: 200));
        var pairs = DifferentialRun.Run(target / 4, seed + 1, Environment.ProcessorCount, pairs: true);
        output.WriteLine(pairs.Format(maxReports: 200));
        var strings = DifferentialRun.RunCustom("string instructions", StringCases.Make, target / 10, seed + 2, Environment.ProcessorCount);
        output.WriteLine(strings.Format(maxReports: 200));
        Assert.True(single.Mismatches == 0 && pairs.Mismatches == 0 && strings.Mismatches == 0,
            single.Format(maxReports: 200) + pairs.Format(maxReports: 200) + strings.Format(maxReports: 200));
        AssertNothingUnsupported(single);
        AssertNothingUnsupported(pairs);
        AssertNothingUnsupported(strings);
    }
}
