using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Cpu;

/// <summary>The software engine: vCPUs interpreted in C# over one guest memory.</summary>
public sealed class SoftwareEngine(GuestMemory memory, CpuModel? model = null) : IEngine
{
    public string Name => "software";
    public GuestMemory Memory { get; } = memory;
    public CpuModel Model { get; } = model ?? CpuModel.Default;

    /// <summary>Pages holding decoded code, shared so one vCPU's write invalidates another's blocks.</summary>
    internal CodePageMap CodePages { get; } = new(memory);

    /// <summary>
    /// Called by a vCPU for MSRs that belong to platform devices (the local APIC base); the
    /// machine installs it. Returns false when nobody handles the MSR.
    /// </summary>
    public IMsrHandler? PlatformMsrs { get; set; }

    /// <summary>
    /// The machine clock. The TSC counts it (so the TSC-deadline timer, which the machine's APIC
    /// runs on this clock, fires when the guest expects); without it the TSC counts host time.
    /// </summary>
    public SharpVisor.Core.Time.IClock? Clock { get; set; }

    /// <summary>
    /// Null: RDRAND and RDSEED return the host's cryptographic random numbers. A value: they
    /// return a reproducible stream from this seed (not secret!), for deterministic runs.
    /// </summary>
    public int? RandomSeed { get; set; }

    /// <summary>Held by a vCPU for the duration of a locked instruction (LOCK prefix, XCHG with memory).</summary>
    internal object AtomicLock { get; } = new();

    /// <summary>Number of vCPUs in the VM (CPUID leaf 1 and 0xB report it).</summary>
    public int CpuCount { get; set; } = 1;

    public IVcpu CreateVcpu(int index) => new SoftwareVcpu(this, index);

    public void Dispose() { }
}

/// <summary>MSRs implemented outside the CPU (the machine forwards APIC base to the local APIC).</summary>
public interface IMsrHandler
{
    bool TryRead(int vcpu, uint msr, out ulong value);
    bool TryWrite(int vcpu, uint msr, ulong value);
}
