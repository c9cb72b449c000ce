// PCI configuration mechanism #1 (PCI Local Bus Specification 3.0 §3.2.2.3.2) at ports 0xCF8–0xCFF,
// plus the PIIX3 Reset Control Register at 0xCF9 (Intel 82371SB datasheet §4.1.5).
//   offset 0, 32-bit: CONFIG_ADDRESS — bit 31 enable, bits 23–16 bus, 15–11 device, 10–8 function,
//   7–2 register. Only dword accesses reach it; reserved bits 30–24 and 1–0 read 0.
//   offsets 4–7: CONFIG_DATA — byte, word or dword of the selected dword (offset − 4 picks the byte).
//   offset 1, 8-bit: RCR — bit 1 SYS_RST, bit 2 RST_CPU; a 0→1 change of RST_CPU resets the system.
//   This is the reset register an ACPI FADT can name (I/O 0xCF9, value 0x06).
// Other byte/word accesses to 0xCF8–0xCFB (Linux's mechanism probe writes 0x01 to 0xCFB) are ignored
// and read all ones. With the enable bit clear, CONFIG_DATA reads all ones and drops writes.
using SharpVisor.Core.Bus;

namespace SharpVisor.Devices.Pci;

public sealed class PciConfigIo(PciBus bus, Action? resetRequest = null) : IBusDevice
{
    public const ulong AddressOffset = 0, ResetControlOffset = 1, DataOffset = 4, Size = 8;
    public const uint AddressEnable = 0x8000_0000;
    private const uint AddressMask = 0x80FF_FFFC;
    public const byte RcrSysRst = 0x02, RcrRstCpu = 0x04;

    private uint _address;
    private byte _rcr;

    public string Name => "pci-cfg";

    public uint ConfigAddress => _address;

    public ulong Read(ulong offset, int size)
    {
        if (offset == AddressOffset && size == 4) return _address;
        if (offset == ResetControlOffset && size == 1) return _rcr;
        if (offset >= DataOffset && offset + (ulong)size <= Size)
        {
            if ((_address & AddressEnable) == 0) return BusValue.AllOnes(size);
            Decode(out int b, out int d, out int f, out int reg);
            return bus.ReadConfig(b, d, f, reg + (int)(offset - DataOffset), size);
        }
        return BusValue.AllOnes(size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset == AddressOffset && size == 4)
        {
            _address = (uint)value & AddressMask;
            return;
        }
        if (offset == ResetControlOffset && size == 1)
        {
            byte v = (byte)(value & (RcrSysRst | RcrRstCpu));
            bool trigger = (v & RcrRstCpu) != 0 && (_rcr & RcrRstCpu) == 0;
            // RST_CPU is self-clearing once the reset happens; keep SYS_RST as written.
            _rcr = (byte)(v & RcrSysRst);
            if (trigger) resetRequest?.Invoke();
            return;
        }
        if (offset >= DataOffset && offset + (ulong)size <= Size)
        {
            if ((_address & AddressEnable) == 0) return;
            Decode(out int b, out int d, out int f, out int reg);
            bus.WriteConfig(b, d, f, reg + (int)(offset - DataOffset), size, (uint)value);
        }
        // any other access is not decoded (see the header)
    }

    private void Decode(out int busNumber, out int device, out int function, out int register)
    {
        busNumber = (int)(_address >> 16) & 0xFF;
        device = (int)(_address >> 11) & 0x1F;
        function = (int)(_address >> 8) & 0x7;
        register = (int)(_address & 0xFC);
    }
}
