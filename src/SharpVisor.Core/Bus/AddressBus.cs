namespace SharpVisor.Core.Bus;

/// <summary>
/// Dispatches accesses by address to the device mapped there; used for both the port
/// I/O space and the MMIO space. Unmapped reads return all ones and unmapped writes
/// are dropped, as on a PC; both are counted and logged once per address.
/// Thread safety: mapping happens while the machine is built; accesses from several
/// vCPU threads are serialized by the machine, not here.
/// </summary>
public sealed class AddressBus(string name, Action<string>? log = null)
{
    /// <summary>One mapped range; its access counter is the telemetry (no lookups per access).</summary>
    private sealed class Mapping(ulong start, ulong length, IBusDevice device, ulong offsetBias)
    {
        public readonly ulong Start = start, Length = length, OffsetBias = offsetBias;
        public readonly IBusDevice Device = device;
        public long Accesses;
    }

    private Mapping[] _mappings = [];
    private readonly HashSet<ulong> _loggedUnmapped = new();

    public string Name { get; } = name;
    public long UnmappedReads { get; private set; }
    public long UnmappedWrites { get; private set; }
    /// <summary>Accesses by device name, for --stats (a device mapped twice is summed).</summary>
    public IReadOnlyDictionary<string, long> AccessCounts
    {
        get
        {
            var d = new Dictionary<string, long>();
            foreach (var m in _mappings) d[m.Device.Name] = d.GetValueOrDefault(m.Device.Name) + m.Accesses;
            return d;
        }
    }

    /// <summary>Map <paramref name="device"/> at [start, start+length); the device sees offsets from 0.</summary>
    public void Map(ulong start, ulong length, IBusDevice device, ulong offsetBias = 0)
    {
        foreach (var m in _mappings)
            if (start < m.Start + m.Length && m.Start < start + length)
                throw new ConfigurationException($"{Name}: {device.Name} at {start:x} overlaps {m.Device.Name} at {m.Start:x}");
        _mappings = _mappings.Append(new Mapping(start, length, device, offsetBias)).OrderBy(m => m.Start).ToArray();
    }

    public IBusDevice? Find(ulong address, out ulong offset)
    {
        var m = FindMapping(address);
        offset = m == null ? 0 : address - m.Start + m.OffsetBias;
        return m?.Device;
    }

    private Mapping? FindMapping(ulong address)
    {
        var maps = _mappings;
        int lo = 0, hi = maps.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            var m = maps[mid];
            if (address < m.Start) hi = mid - 1;
            else if (address - m.Start >= m.Length) lo = mid + 1;
            else return m;
        }
        return null;
    }

    public ulong Read(ulong address, int size)
    {
        var m = FindMapping(address);
        if (m == null)
        {
            UnmappedReads++;
            LogOnce(address, "read");
            return BusValue.AllOnes(size);
        }
        m.Accesses++;
        return BusValue.Mask(m.Device.Read(address - m.Start + m.OffsetBias, size), size);
    }

    public void Write(ulong address, int size, ulong value)
    {
        var m = FindMapping(address);
        if (m == null)
        {
            UnmappedWrites++;
            LogOnce(address, "write");
            return;
        }
        m.Accesses++;
        m.Device.Write(address - m.Start + m.OffsetBias, size, BusValue.Mask(value, size));
    }

    private void LogOnce(ulong address, string what)
    {
        if (log != null && _loggedUnmapped.Count < 64 && _loggedUnmapped.Add(address))
            log($"{Name}: {what} of unassigned address {address:x}");
    }
}
