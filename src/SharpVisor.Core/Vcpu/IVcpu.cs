using SharpVisor.Core.Interrupts;

namespace SharpVisor.Core.Vcpu;

/// <summary>
/// One virtual CPU of either engine. <see cref="Run"/> executes guest code until the VMM
/// is needed and returns why, exactly as KVM_RUN. All members except <see cref="Kick"/>
/// and <see cref="RequestNmi"/> are called from the vCPU's own thread.
/// </summary>
public interface IVcpu : IDisposable
{
    int Index { get; }
    VcpuExit Exit { get; }

    ExitReason Run();

    void GetState(VcpuState state);
    void SetState(VcpuState state);

    /// <summary>Where external (maskable) interrupts come from; the machine sets it once.</summary>
    IInterruptSource? InterruptSource { get; set; }

    /// <summary>Thread-safe: make a running <see cref="Run"/> return <see cref="ExitReason.Interrupted"/> soon.</summary>
    void Kick();

    /// <summary>Thread-safe: raise NMI.</summary>
    void RequestNmi();

    /// <summary>Engine counters for --stats (exits by reason are counted by the machine).</summary>
    IReadOnlyDictionary<string, long> Statistics { get; }
}

/// <summary>An engine builds vCPUs for one VM over one <see cref="Memory.GuestMemory"/>.</summary>
public interface IEngine : IDisposable
{
    string Name { get; }
    IVcpu CreateVcpu(int index);
}
