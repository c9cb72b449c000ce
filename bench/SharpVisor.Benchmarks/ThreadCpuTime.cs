// CPU time of the calling thread (clock_gettime(CLOCK_THREAD_CPUTIME_ID), POSIX). The shared
// 2-core VMs often run other work: wall-clock rates then drop with the load, while the rate per
// CPU-second of the vCPU thread stays close to what an idle machine gives, so quick mode prints both.
using System.Runtime.InteropServices;

namespace SharpVisor.Benchmarks;

internal static partial class ThreadCpuTime
{
    private const int ClockThreadCpuTimeId = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out Timespec ts);

    /// <summary>This thread's CPU time, or null where the clock is not available.</summary>
    public static TimeSpan? Now()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return null;
        try
        {
            if (ClockGetTime(ClockThreadCpuTimeId, out var ts) != 0) return null;
            return TimeSpan.FromTicks(ts.Seconds * TimeSpan.TicksPerSecond + ts.Nanoseconds / 100);
        }
        catch (DllNotFoundException) { return null; }
        catch (EntryPointNotFoundException) { return null; }
    }
}
