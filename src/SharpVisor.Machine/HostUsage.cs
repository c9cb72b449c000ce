using System.Diagnostics;
using System.Globalization;
using SharpVisor.Core.Memory;

namespace SharpVisor.Machine;

/// <summary>
/// What the VMM itself costs the host, for --stats: the time from process start to the first
/// guest instruction, and resident memory split into guest RAM and everything else. Linux only
/// (procfs); elsewhere the figures are reported as unknown rather than guessed.
/// </summary>
internal static class HostUsage
{
    /// <summary>
    /// Milliseconds since this process started, or null where the start time is unknown. The
    /// repository's launcher (./sharpvisor) may build before it execs the VMM in the same
    /// process; it passes the moment of the exec in SHARPVISOR_EXEC_MS (ms since the epoch),
    /// which is used when it lies between the kernel's start time and now.
    /// </summary>
    public static double? MsSinceProcessStart()
    {
        try
        {
            // The kernel records the start in clock ticks (10 ms on Debian), so this is ±10 ms.
            using var p = Process.GetCurrentProcess();
            DateTime now = DateTime.UtcNow;
            return (now - Start(p.StartTime.ToUniversalTime(), now, Environment.GetEnvironmentVariable("SHARPVISOR_EXEC_MS"))).TotalMilliseconds;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>
    /// When the VMM started: the launcher's exec moment (<paramref name="execMs"/>, ms since the
    /// epoch) when it lies after the kernel's start time and not after now, else that start time.
    /// </summary>
    internal static DateTime Start(DateTime processStartUtc, DateTime nowUtc, string? execMs)
    {
        if (long.TryParse(execMs, NumberStyles.None, CultureInfo.InvariantCulture, out long ms)
            && ms <= DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()
            && DateTimeOffset.FromUnixTimeMilliseconds(ms).UtcDateTime is var exec && exec > processStartUtc && exec <= nowUtc)
            return exec;
        return processStartUtc;
    }

    /// <summary>
    /// Resident bytes of the whole process and of the guest's RAM mappings (each region is its own
    /// mmap, found in /proc/self/smaps by its start address), or null without procfs.
    /// </summary>
    public static unsafe (long Total, long Guest)? Resident(GuestMemory memory)
    {
        try
        {
            var starts = new HashSet<ulong>();
            foreach (var r in memory.Regions) starts.Add((ulong)r.Host);
            long total = 0, guest = 0;
            bool inGuest = false;
            foreach (var line in File.ReadLines("/proc/self/smaps"))
            {
                int dash = line.IndexOf('-');
                if (dash > 0 && dash < 17 && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, null, out ulong start)
                    && line.Length > dash + 1 && Uri.IsHexDigit(line[dash + 1]))
                {
                    inGuest = starts.Contains(start);
                    continue;
                }
                if (!line.StartsWith("Rss:", StringComparison.Ordinal)) continue;
                long kb = long.Parse(line.AsSpan(4).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
                total += kb << 10;
                if (inGuest) guest += kb << 10;
            }
            return (total, guest);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }
}
