using Xunit;

namespace SharpVisor.HostCpu.Tests;

/// <summary>
/// One <see cref="HostCpu"/> per test class instance (it is not thread-safe, and xunit builds a new
/// instance for every test); a test that needs it is skipped where native execution is impossible.
/// </summary>
public abstract class HostCpuTestBase : IDisposable
{
    private readonly HostCpu? _cpu = HostFeatures.IsHostSupported ? new HostCpu() : null;

    public void Dispose()
    {
        _cpu?.Dispose();
        GC.SuppressFinalize(this);
    }

    protected HostCpu Cpu
    {
        get
        {
            if (_cpu is null) Assert.Skip("native execution needs Linux on x86-64");
            return _cpu;
        }
    }
}
