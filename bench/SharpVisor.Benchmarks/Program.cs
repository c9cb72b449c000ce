// SharpVisor benchmarks. `dotnet run -c Release --project bench/SharpVisor.Benchmarks -- --filter '*'`
// runs the BenchmarkDotNet suite; `-- --quick` runs every workload once and prints a table.
using BenchmarkDotNet.Running;

namespace SharpVisor.Benchmarks;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Contains("--quick"))
        {
            int at = Array.IndexOf(args, "--only");
            string? only = at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
            return QuickRun.Run(only, repeat: only != null ? 5 : 1);
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, BenchConfig.Create());
        return 0;
    }
}
