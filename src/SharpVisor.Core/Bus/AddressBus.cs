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
    private readonly record struct Mapping(ulong Start, ulong Length, IBusDevice Device, ulong OffsetBias);

    private Mapping[] _mappings = [];
    private readonly HashSet<ulong> _loggedUnmapped = new();

    public string Name { get; } = name;
    public long UnmappedReads { get; private set; }
    public long UnmappedWrites { get; private set; }
    /// <summary>Accesses by device name, for --stats.</summary>
    public Dictionary<string, long> AccessCounts { get; } = new();

    /// <summary>Map <paramref name="device"/> at [start, start+length); the device sees offsets from 0.</summary>
    public void Map(ulong start, ulong length, IBusDevice device, ulong offsetBias = 0)
    {
        foreach (var m in _mappings)
            if (start < m.Start + m.Length && m.Start < start + length)
                throw new ConfigurationException($"{Name}: {device.Name} at {start:x} overlaps {m.Device.Name} at {m.Start:x}");
        _mappings = _mappings.Append(new Mapping(start, length, device, offsetBias)).OrderBy(m => m.Start).ToArray();
        AccessCounts.TryAdd(device.Name, 0);
    }

    public IBusDevice? Find(ulong address, out ulong offset)
    {
        var maps = _mappings;
        int lo = 0, hi = maps.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            ref readonly var m = ref maps[mid];
            if (address < m.Start) hi = mid - 1;
            else if (address - m.Start >= m.Length) lo = mid + 1;
            else { offset = address - m.Start + m.OffsetBias; return m.Device; }
        }
        offset = 0;
        return null;
    }

    public ulong Read(ulong address, int size)
    {
        var dev = Find(address, out ulong offset);
        if (dev == null)
        {
            UnmappedReads++;
            LogOnce(address, "read");
            return BusValue.AllOnes(size);
        }
        Count(dev);
        return BusValue.Mask(dev.Read(offset, size), size);
    }

    public void Write(ulong address, int size, ulong value)
    {
        var dev = Find(address, out ulong offset);
        if (dev == null)
        {
            UnmappedWrites++;
            LogOnce(address, "write");
            return;
        }
        Count(dev);
        dev.Write(offset, size, BusValue.Mask(value, size));
    }

    private void Count(IBusDevice dev)
    {
        ref long c = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(AccessCounts, dev.Name, out _);
        c++;
    }

    private void LogOnce(ulong address, string what)
    {
        if (log != null && _loggedUnmapped.Count < 64 && _loggedUnmapped.Add(address))
            log($"{Name}: {what} of unassigned address {address:x}");
    }
}
