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
    /// <summary>Milliseconds since this process started, or null where the start time is unknown.</summary>
    public static double? MsSinceProcessStart()
    {
        try
        {
            // The kernel records the start in clock ticks (10 ms on Debian), so this is ±10 ms.
            using var p = Process.GetCurrentProcess();
            return (DateTime.Now - p.StartTime).TotalMilliseconds;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
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
