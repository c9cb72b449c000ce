namespace SharpVisor.Core.Bus;

/// <summary>
/// A device as seen from a bus: it knows its own register offsets and nothing of where
/// it is mapped (port base, MMIO address) or which engine runs the guest.
/// Sizes are 1, 2, 4 or 8 bytes; values are little-endian and zero-extended.
/// </summary>
public interface IBusDevice
{
    /// <summary>Short name for telemetry and messages ("uart", "pic-master").</summary>
    string Name { get; }
    ulong Read(ulong offset, int size);
    void Write(ulong offset, int size, ulong value);
}

public static class BusValue
{
    /// <summary>All ones of the access width: what a read of nothing returns on a PC.</summary>
    public static ulong AllOnes(int size) => size >= 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

    public static ulong Mask(ulong value, int size) => value & AllOnes(size);
}
