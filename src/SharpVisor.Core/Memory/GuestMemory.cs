using System.Runtime.InteropServices;

namespace SharpVisor.Core.Memory;

/// <summary>One contiguous piece of guest-physical address space backed by host memory.</summary>
public readonly unsafe struct MemoryRegion(ulong gpa, ulong size, byte* host, bool readOnly, string name)
{
    public ulong Gpa { get; } = gpa;
    public ulong Size { get; } = size;
    /// <summary>Host address of the region's first byte; stable for the life of the <see cref="GuestMemory"/>.</summary>
    public byte* Host { get; } = host;
    public bool ReadOnly { get; } = readOnly;
    public string Name { get; } = name;
    public ulong End => Gpa + Size;
    public bool Contains(ulong gpa) => gpa - Gpa < Size;
}

/// <summary>
/// Guest RAM (and ROM) as host mappings. Each region is its own anonymous mmap so the
/// hardware engine can hand the same pages to KVM as a memory slot and the software
/// engine can reach them through host pointers. Everything not covered by a region is
/// MMIO or unassigned and leaves the engines as an exit.
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{
    private readonly List<MemoryRegion> _regions = new();
    private MemoryRegion[] _sorted = [];
    private bool _disposed;

    /// <summary>Total bytes of RAM regions (not ROM).</summary>
    public ulong RamSize { get; private set; }

    public IReadOnlyList<MemoryRegion> Regions => _sorted;

    /// <summary>Raised after a region is added (KVM registers it as a slot).</summary>
    public event Action<MemoryRegion>? RegionAdded;

    /// <summary>
    /// Raised after something other than a vCPU wrote guest memory: (gpa, length). A software
    /// engine that caches decoded code listens here, because such writes bypass its own write
    /// path. <see cref="Write(ulong, ReadOnlySpan{byte})"/> raises it itself; a device that writes
    /// through <see cref="GetSpan"/> or a host pointer (DMA) calls <see cref="NotifyWritten"/>.
    /// </summary>
    public event Action<ulong, ulong>? Written;

    /// <summary>Tells <see cref="Written"/> listeners that [gpa, gpa+length) changed behind the vCPUs' backs.</summary>
    public void NotifyWritten(ulong gpa, ulong length)
    {
        if (length != 0) Written?.Invoke(gpa, length);
    }

    /// <summary>Map a new zero-filled region at <paramref name="gpa"/>.</summary>
    public MemoryRegion AddRegion(ulong gpa, ulong size, string name, bool readOnly = false)
    {
        if (size == 0 || (gpa & 0xFFF) != 0 || (size & 0xFFF) != 0)
            throw new ConfigurationException($"memory region {name} at {gpa:x} size {size:x} is not page aligned");
        foreach (var r in _regions)
            if (gpa < r.End && r.Gpa < gpa + size)
                throw new ConfigurationException($"memory region {name} overlaps {r.Name}");
        byte* host = HostMemory.Map(size);
        var region = new MemoryRegion(gpa, size, host, readOnly, name);
        _regions.Add(region);
        _sorted = _regions.OrderBy(x => x.Gpa).ToArray();
        if (!readOnly) RamSize += size;
        RegionAdded?.Invoke(region);
        return region;
    }

    /// <summary>Finds the region holding <paramref name="gpa"/>; false for MMIO/unassigned space.</summary>
    public bool TryFindRegion(ulong gpa, out MemoryRegion region)
    {
        var regions = _sorted;
        for (int i = 0; i < regions.Length; i++)
        {
            if (regions[i].Contains(gpa)) { region = regions[i]; return true; }
        }
        region = default;
        return false;
    }

    /// <summary>Host pointer for <paramref name="gpa"/> and the bytes left in its region, or null.</summary>
    public byte* TryGetHostPointer(ulong gpa, out ulong bytesLeft)
    {
        if (TryFindRegion(gpa, out var r))
        {
            bytesLeft = r.End - gpa;
            return r.Host + (gpa - r.Gpa);
        }
        bytesLeft = 0;
        return null;
    }

    /// <summary>A span over guest memory that must lie inside one region (loaders, devices doing DMA).</summary>
    public Span<byte> GetSpan(ulong gpa, int length)
    {
        byte* p = TryGetHostPointer(gpa, out ulong left);
        if (p == null || (ulong)length > left)
            throw new VmmException($"guest range {gpa:x}+{length:x} is not backed by RAM");
        return new Span<byte>(p, length);
    }

    public bool IsRam(ulong gpa, ulong length)
    {
        byte* p = TryGetHostPointer(gpa, out ulong left);
        return p != null && length <= left;
    }

    public void Write(ulong gpa, ReadOnlySpan<byte> data)
    {
        ulong start = gpa, length = (ulong)data.Length;
        // Loader writes may cross region boundaries only where regions are adjacent.
        while (!data.IsEmpty)
        {
            byte* p = TryGetHostPointer(gpa, out ulong left);
            if (p == null) throw new VmmException($"guest address {gpa:x} is not backed by RAM");
            int n = (int)Math.Min((ulong)data.Length, left);
            data[..n].CopyTo(new Span<byte>(p, n));
            data = data[n..];
            gpa += (ulong)n;
        }
        NotifyWritten(start, length);
    }

    public void Read(ulong gpa, Span<byte> data)
    {
        while (!data.IsEmpty)
        {
            byte* p = TryGetHostPointer(gpa, out ulong left);
            if (p == null) throw new VmmException($"guest address {gpa:x} is not backed by RAM");
            int n = (int)Math.Min((ulong)data.Length, left);
            new ReadOnlySpan<byte>(p, n).CopyTo(data);
            data = data[n..];
            gpa += (ulong)n;
        }
    }

    public T Read<T>(ulong gpa) where T : unmanaged
    {
        T value = default;
        Read(gpa, new Span<byte>(&value, sizeof(T)));
        return value;
    }

    public void Write<T>(ulong gpa, T value) where T : unmanaged
        => Write(gpa, new ReadOnlySpan<byte>(&value, sizeof(T)));

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var r in _regions) HostMemory.Unmap(r.Host, r.Size);
        _regions.Clear();
        _sorted = [];
    }
}

/// <summary>Anonymous private host mappings (mmap), page aligned and zero filled.</summary>
public static unsafe partial class HostMemory
{
    private const int PROT_READ = 1, PROT_WRITE = 2;
    private const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;

    [LibraryImport("libc", SetLastError = true)]
    private static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(void* addr, nuint length);

    public static byte* Map(ulong size)
    {
        if (OperatingSystem.IsLinux())
        {
            void* p = mmap(null, (nuint)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == (void*)-1)
                throw new VmmException($"mmap of {size >> 20} MiB of guest memory failed (errno {Marshal.GetLastPInvokeError()})");
            return (byte*)p;
        }
        // Portable fallback: zeroed, 4 KiB aligned native memory.
        return (byte*)NativeMemory.AlignedAlloc((nuint)size, 4096) switch
        {
            null => throw new VmmException($"allocation of {size >> 20} MiB of guest memory failed"),
            var q => Zero(q, size),
        };
    }

    private static byte* Zero(byte* p, ulong size)
    {
        NativeMemory.Clear(p, (nuint)size);
        return p;
    }

    public static void Unmap(byte* p, ulong size)
    {
        if (OperatingSystem.IsLinux()) munmap(p, (nuint)size);
        else NativeMemory.AlignedFree(p);
    }
}
