// PCI bus 0 of a PC: up to 32 devices × 8 functions, addressed by configuration mechanism #1
// (PciConfigIo) or, later, by ECAM. A bus/device/function with nothing behind it answers all ones,
// so the vendor ID reads 0xFFFF (PCI Local Bus Specification 3.0 §6.1, "Configuration Space
// Organization"). Only bus 0 exists; there are no PCI-to-PCI bridges.
namespace SharpVisor.Devices.Pci;

public sealed class PciBus
{
    public const int Devices = 32, Functions = 8;
    private readonly IPciDevice?[] _slots = new IPciDevice?[Devices * Functions];

    public void Add(int device, int function, IPciDevice pciDevice)
    {
        if ((uint)device >= Devices || (uint)function >= Functions)
            throw new ArgumentOutOfRangeException(nameof(device), $"PCI {device:x2}.{function} does not exist");
        if (_slots[device * Functions + function] is { } existing)
            throw new Core.ConfigurationException($"PCI 00:{device:x2}.{function} holds {existing.Name} already");
        _slots[device * Functions + function] = pciDevice;
    }

    public IPciDevice? Find(int bus, int device, int function)
        => bus == 0 && (uint)device < Devices && (uint)function < Functions ? _slots[device * Functions + function] : null;

    public uint ReadConfig(int bus, int device, int function, int register, int size)
    {
        var d = Find(bus, device, function);
        if (d == null) return size >= 4 ? uint.MaxValue : (1u << (8 * size)) - 1;
        return d.ReadConfig(register, size);
    }

    public void WriteConfig(int bus, int device, int function, int register, int size, uint value)
        => Find(bus, device, function)?.WriteConfig(register, size, value); // nobody there: dropped
}
