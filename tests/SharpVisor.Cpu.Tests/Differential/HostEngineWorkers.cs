using SharpVisor.Cpu.Tests.Differential;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// The worker pool of the SIMD differential harnesses: forms are handed out one at a time to
/// threads that each own a native runner and an engine (neither is thread-safe), on 16 MiB
/// stacks; the first exception from any worker is rethrown once all have stopped.
/// </summary>
internal static class HostEngineWorkers
{
    public static void ForEachForm(int forms, int threads, Action<HostCpu.HostCpu, EngineRunner, int> body)
    {
        int next = -1;
        Exception? failure = null;
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            workers[t] = new Thread(() =>
            {
                try
                {
                    using var host = new HostCpu.HostCpu();
                    using var engine = new EngineRunner();
                    if (!engine.FpStateRoundTrips) throw new InvalidOperationException("the engine does not carry VcpuState.FxSave");
                    int k;
                    while ((k = Interlocked.Increment(ref next)) < forms && Volatile.Read(ref failure) is null)
                        body(host, engine, k);
                }
                catch (Exception ex)
                {
                    Interlocked.CompareExchange(ref failure, ex, null);
                }
            }, 16 << 20) { IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        if (failure is not null) throw new InvalidOperationException("worker failed", failure);
    }
}
