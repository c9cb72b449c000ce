// The contract between a PCI function and the bus that holds it (PCI Local Bus Specification 3.0,
// chapter 6, "Configuration Space"). A function owns a 256-byte configuration space; the bus
// decides which function an access reaches and answers all ones where none is present.
namespace SharpVisor.Devices.Pci;

public interface IPciDevice
{
    string Name { get; }

    /// <summary>
    /// Reads <paramref name="size"/> bytes (1, 2 or 4) at byte offset <paramref name="register"/>
    /// (0–255) of the configuration space, little-endian. The access never crosses a dword.
    /// </summary>
    uint ReadConfig(int register, int size);

    /// <summary>Writes configuration space; read-only bits keep their value (write masks).</summary>
    void WriteConfig(int register, int size, uint value);
}
