using System.Diagnostics;

namespace SharpVisor.Core.Time;

/// <summary>
/// The machine's notion of time in nanoseconds since the machine started. Devices read
/// time only through this, never from DateTime or Stopwatch directly.
/// </summary>
public interface IClock
{
    long NowNs { get; }
    /// <summary>Wall-clock time of the machine start, for RTC initialisation.</summary>
    DateTime StartWallTime { get; }
}

/// <summary>Host monotonic time.</summary>
public sealed class HostClock : IClock
{
    private readonly long _start = Stopwatch.GetTimestamp();
    public DateTime StartWallTime { get; } = DateTime.UtcNow;
    public long NowNs => (long)((Stopwatch.GetTimestamp() - _start) * (1e9 / Stopwatch.Frequency));
}

/// <summary>A clock moved only by its owner: tests and deterministic (instruction-counted) runs.</summary>
public sealed class ManualClock(DateTime? startWallTime = null) : IClock
{
    public long NowNs { get; set; }
    public DateTime StartWallTime { get; } = startWallTime ?? new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
    public void Advance(long ns) => NowNs += ns;
}

/// <summary>
/// A device with timed behaviour (PIT, RTC, APIC timer). The machine calls
/// <see cref="OnTime"/> when the clock reaches <see cref="NextDeadlineNs"/>, and also
/// whenever it likes; devices must tolerate being called early or late.
/// </summary>
public interface ITimedDevice
{
    /// <summary>Next time this device needs <see cref="OnTime"/>, or long.MaxValue for none.</summary>
    long NextDeadlineNs { get; }
    void OnTime(long nowNs);
}
