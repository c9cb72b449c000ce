namespace SharpVisor.Core.Vcpu;

/// <summary>Why <see cref="IVcpu.Run"/> returned: the one exit model of both engines (as KVM_RUN).</summary>
public enum ExitReason
{
    None = 0,
    /// <summary>IN/INS: the run loop stores the value in <see cref="VcpuExit.Data"/> before the next Run.</summary>
    IoIn,
    /// <summary>OUT/OUTS: <see cref="VcpuExit.Data"/> holds the value written.</summary>
    IoOut,
    /// <summary>A read of non-RAM physical memory: the run loop stores the value before the next Run.</summary>
    MmioRead,
    MmioWrite,
    /// <summary>HLT with no interrupt deliverable: wait for one, then Run again.</summary>
    Halt,
    /// <summary>The CPU shut down (triple fault); <see cref="VcpuExit.Message"/> says why.</summary>
    Shutdown,
    /// <summary>Run returned because <see cref="IVcpu.Kick"/> was called (timer, stop request, new interrupt).</summary>
    Interrupted,
    /// <summary>A debug stop (breakpoint or single step requested by the VMM).</summary>
    Debug,
    /// <summary>
    /// The engine cannot go on: an unimplemented instruction or feature, or a failure reported
    /// by KVM. <see cref="VcpuExit.Message"/> names it and where.
    /// </summary>
    InternalError,
}

/// <summary>
/// The exit record of one vCPU, reused across runs (no allocation per exit). For
/// <see cref="ExitReason.IoIn"/> and <see cref="ExitReason.MmioRead"/> the run loop fills
/// <see cref="Data"/> and the engine completes the instruction on the next Run.
/// String I/O is presented one element per exit.
/// </summary>
public sealed class VcpuExit
{
    public ExitReason Reason;
    /// <summary>Port number or guest-physical address.</summary>
    public ulong Address;
    /// <summary>Access width in bytes: 1, 2, 4 or 8.</summary>
    public int Size;
    /// <summary>Value written, or the value to return for a read.</summary>
    public ulong Data;
    /// <summary>Human-readable detail for Shutdown and InternalError.</summary>
    public string? Message;

    public override string ToString() => Reason switch
    {
        ExitReason.IoIn or ExitReason.IoOut => $"{Reason} port {Address:x} size {Size} data {Data:x}",
        ExitReason.MmioRead or ExitReason.MmioWrite => $"{Reason} gpa {Address:x} size {Size} data {Data:x}",
        _ => Message is null ? Reason.ToString() : $"{Reason}: {Message}",
    };
}
