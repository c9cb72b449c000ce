using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Cpu;

/// <summary>The software engine: vCPUs interpreted in C# over one guest memory.</summary>
public sealed class SoftwareEngine : IEngine
{
    public SoftwareEngine(GuestMemory memory, CpuModel? model = null)
    {
        Memory = memory;
        Model = model ?? CpuModel.Default;
        CodePages = new CodePageMap(memory);
        memory.Written += OnMemoryWritten;
    }

    public string Name => "software";
    public GuestMemory Memory { get; }
    public CpuModel Model { get; }

    /// <summary>Pages holding decoded code, shared so one vCPU's write invalidates another's blocks.</summary>
    internal CodePageMap CodePages { get; }

    /// <summary>
    /// Writes that bypass the vCPUs (a loader, DMA from a device, a reset restoring the image)
    /// invalidate the decoded code on the pages they touch, as a vCPU's own stores do.
    /// </summary>
    private void OnMemoryWritten(ulong gpa, ulong length)
    {
        ulong end = gpa + length;
        for (ulong page = gpa & ~0xFFFUL; page < end; page += 0x1000) CodePages.NoteWrite(page);
    }

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

    /// <summary>
    /// Held by a vCPU for the duration of a locked instruction whose operand a host CAS cannot
    /// cover (CMPXCHG16B, split operands, MMIO, ROM); the others commit by CAS (LockedRmw.cs).
    /// </summary>
    internal object AtomicLock { get; } = new();

    /// <summary>Number of vCPUs in the VM (CPUID leaf 1 and 0xB report it).</summary>
    public int CpuCount { get; set; } = 1;

    public IVcpu CreateVcpu(int index) => new SoftwareVcpu(this, index);

    /// <summary>The machine keeps its memory across resets and builds a new engine on it each time.</summary>
    public void Dispose() => Memory.Written -= OnMemoryWritten;
}

/// <summary>MSRs implemented outside the CPU (the machine forwards APIC base to the local APIC).</summary>
public interface IMsrHandler
{
    bool TryRead(int vcpu, uint msr, out ulong value);
    bool TryWrite(int vcpu, uint msr, ulong value);
}
