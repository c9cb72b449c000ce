using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Filters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace SharpVisor.Benchmarks;

internal static class BenchConfig
{
    /// <summary>
    /// Default job, fewer iterations than BenchmarkDotNet's default (each invocation is a whole
    /// guest run of a few hundred milliseconds, so its own noise is small), plus the throughput column.
    /// </summary>
    public static IConfig Create()
    {
        var config = DefaultConfig.Instance
            .AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(10).WithInvocationCount(1).WithUnrollFactor(1))
            .AddColumn(new ThroughputColumn())
            .WithOptions(ConfigOptions.JoinSummary)
            // BenchmarkDotNet rebuilds the project graph for its child process; on a busy shared
            // 2-core VM that takes longer than its default 2 minutes.
            .WithBuildTimeout(TimeSpan.FromMinutes(15));
        if (!Kvm.KvmEngine.IsAvailable(out string why))
        {
            // Skipped, not failed: the KVM benchmark needs /dev/kvm, the others do not.
            Console.WriteLine($"// KVM benchmarks skipped: {why}");
            config = config.AddFilter(new SimpleFilter(b => b.Descriptor.WorkloadMethod.Name != nameof(ExitBenchmarks.KvmOut)));
        }
        return config;
    }
}

/// <summary>
/// Operations per second from BenchmarkDotNet's mean time per operation; an operation is what the
/// benchmark's OperationsPerInvoke counts (a guest instruction, a byte copied, an exit, a boot).
/// </summary>
internal sealed class ThroughputColumn : IColumn
{
    public string Id => nameof(ThroughputColumn);
    public string ColumnName => "Ops/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Operations per second (operation: guest instruction, byte, exit or boot; see the benchmark name)";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        if (stats == null || stats.Mean <= 0) return "-";
        double perSecond = 1e9 / stats.Mean;
        return perSecond >= 1e6 ? $"{perSecond / 1e6:F1} M" : perSecond >= 1e3 ? $"{perSecond / 1e3:F1} k" : $"{perSecond:F1}";
    }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
}
