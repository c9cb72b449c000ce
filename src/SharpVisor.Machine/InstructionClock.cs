using SharpVisor.Core.Time;
using SharpVisor.Cpu;

namespace SharpVisor.Machine;

/// <summary>
/// The machine clock of a deterministic run, as QEMU's -icount: guest time is the number of
/// instructions vCPU 0 has retired times a fixed step, plus the time skipped while the guest
/// halted waiting for a timer. The same guest with the same input then sees the same timer
/// interrupts at the same instructions, the same TSC and RTC readings, and prints the same
/// output in every run, however fast the host is. The RTC starts at a fixed date for the same
/// reason. One vCPU only: several vCPU threads interleave differently in every run.
/// </summary>
internal sealed class InstructionClock(long nsPerInstruction) : IClock
{
    /// <summary>The RTC's date at power-on: fixed, so a run does not depend on when it started.</summary>
    public static readonly DateTime PowerOnDate = new(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    public long NsPerInstruction { get; } = nsPerInstruction;
    public DateTime StartWallTime => PowerOnDate;

    private SoftwareVcpu? _vcpu;
    /// <summary>Instructions of vCPUs of earlier boots (a reset builds new vCPUs that count from 0).</summary>
    private long _earlierInstructions;
    private long _skippedNs;

    /// <summary>Counts <paramref name="vcpu"/> from now on (each boot's vCPU 0).</summary>
    public void Follow(SoftwareVcpu vcpu)
    {
        if (_vcpu != null) _earlierInstructions += _vcpu.InstructionsRetired;
        _vcpu = vcpu;
    }

    private long Instructions => _earlierInstructions + (_vcpu?.InstructionsRetired ?? 0);

    public long NowNs => Instructions * NsPerInstruction + _skippedNs;

    /// <summary>
    /// The halted guest waits for <paramref name="deadlineNs"/>: time jumps there at once
    /// (nothing runs in between, so nothing can tell).
    /// </summary>
    public void SkipTo(long deadlineNs)
    {
        long now = NowNs;
        if (deadlineNs > now) _skippedNs += deadlineNs - now;
    }

    /// <summary>The instruction count at which the clock reaches <paramref name="deadlineNs"/> (long.MaxValue: never).</summary>
    public long InstructionAt(long deadlineNs)
    {
        if (deadlineNs == long.MaxValue) return long.MaxValue;
        long ahead = deadlineNs - NowNs;
        if (ahead <= 0) return Instructions;
        long steps = ahead / NsPerInstruction + (ahead % NsPerInstruction != 0 ? 1 : 0); // rounded up, no overflow
        return steps > long.MaxValue - Instructions ? long.MaxValue : Instructions + steps;
    }
}
