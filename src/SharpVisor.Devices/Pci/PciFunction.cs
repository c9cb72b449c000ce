// A PCI function's type-0 configuration header (PCI Local Bus Specification 3.0 §6.1–6.2): vendor
// and device ID, command/status, revision and class code, header type, BARs with size probing,
// interrupt line/pin. Every byte has a write mask, so read-only fields stay put and a BAR written
// with all ones reads back ~(size − 1) with its type bits, which is how software sizes it (§6.2.5.1).
// Status bits that are "write 1 to clear" are listed in a second mask.
// Deliberate deviations: no capability list, no expansion ROM (the ROM BAR reads 0).
using System.Buffers.Binary;

namespace SharpVisor.Devices.Pci;

public enum PciBarKind { Io, Memory32, Memory64 }

public abstract class PciFunction : IPciDevice
{
    public const int ConfigSize = 256;
    // Header registers (§6.1).
    public const int VendorId = 0x00, DeviceId = 0x02, Command = 0x04, Status = 0x06, RevisionId = 0x08,
        ClassProgIf = 0x09, SubClass = 0x0A, ClassCode = 0x0B, CacheLineSize = 0x0C, LatencyTimer = 0x0D,
        HeaderType = 0x0E, Bar0 = 0x10, SubsystemVendorId = 0x2C, SubsystemId = 0x2E, RomBar = 0x30,
        InterruptLine = 0x3C, InterruptPin = 0x3D;
    public const byte HeaderTypeMultiFunction = 0x80;
    public const ushort CommandIo = 0x0001, CommandMemory = 0x0002, CommandBusMaster = 0x0004,
        CommandParity = 0x0040, CommandSerr = 0x0100, CommandIntxDisable = 0x0400;

    private readonly byte[] _config = new byte[ConfigSize];
    private readonly byte[] _writeMask = new byte[ConfigSize];
    private readonly byte[] _w1cMask = new byte[ConfigSize];
    private readonly ulong[] _barSize = new ulong[6];
    private readonly PciBarKind[] _barKind = new PciBarKind[6];

    protected PciFunction(string name, ushort vendor, ushort device, byte revision, byte classCode, byte subClass,
        byte progIf = 0, bool multiFunction = false)
    {
        Name = name;
        SetU16(VendorId, vendor);
        SetU16(DeviceId, device);
        _config[RevisionId] = revision;
        _config[ClassProgIf] = progIf;
        _config[SubClass] = subClass;
        _config[ClassCode] = classCode;
        _config[HeaderType] = multiFunction ? HeaderTypeMultiFunction : (byte)0;
        SetWriteMask(Command, 2, CommandIo | CommandMemory | CommandBusMaster | CommandParity | CommandSerr | CommandIntxDisable);
        // Status: master/target abort and parity error bits are RW1C (§6.2.3).
        SetW1cMask(Status, 2, 0xF900);
        SetWriteMask(CacheLineSize, 1, 0xFF);
        SetWriteMask(LatencyTimer, 1, 0xFF);
        SetWriteMask(InterruptLine, 1, 0xFF);
    }

    public string Name { get; }

    // ---- for subclasses -----------------------------------------------------------------------

    protected void SetU8(int register, byte value) => _config[register] = value;
    protected void SetU16(int register, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(register), value);
    protected void SetU32(int register, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(register), value);

    protected void SetWriteMask(int register, int size, uint mask)
    {
        for (int i = 0; i < size; i++) _writeMask[register + i] = (byte)(mask >> (8 * i));
    }

    protected void SetW1cMask(int register, int size, uint mask)
    {
        for (int i = 0; i < size; i++) _w1cMask[register + i] = (byte)(mask >> (8 * i));
    }

    /// <summary>Declares BAR <paramref name="index"/> (a 64-bit BAR also takes index+1). Size is a power of two.</summary>
    protected void DefineBar(int index, PciBarKind kind, ulong size, bool prefetchable = false)
    {
        if ((uint)index > 5 || size == 0 || (size & (size - 1)) != 0 || (kind == PciBarKind.Memory64 && index == 5))
            throw new ArgumentException($"bad BAR {index} of size {size:x}");
        int reg = Bar0 + 4 * index;
        _barKind[index] = kind;
        _barSize[index] = size;
        switch (kind)
        {
            case PciBarKind.Io:
                size = Math.Max(size, 4);
                SetU32(reg, 0x1);
                SetWriteMask(reg, 4, (uint)~(size - 1) & 0xFFFF_FFFC);
                break;
            case PciBarKind.Memory32:
                size = Math.Max(size, 16);
                SetU32(reg, prefetchable ? 0x8u : 0u);
                SetWriteMask(reg, 4, (uint)~(size - 1) & 0xFFFF_FFF0);
                break;
            case PciBarKind.Memory64:
                size = Math.Max(size, 16);
                SetU32(reg, 0x4u | (prefetchable ? 0x8u : 0u));
                SetWriteMask(reg, 4, (uint)~(size - 1) & 0xFFFF_FFF0);
                SetWriteMask(reg + 4, 4, (uint)(~(size - 1) >> 32));
                break;
        }
    }

    /// <summary>The address programmed into a BAR (without type bits), or 0.</summary>
    public ulong GetBarAddress(int index)
    {
        if ((uint)index > 5 || _barSize[index] == 0) return 0;
        uint lo = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(Bar0 + 4 * index));
        return _barKind[index] switch
        {
            PciBarKind.Io => lo & 0xFFFF_FFFC,
            PciBarKind.Memory32 => lo & 0xFFFF_FFF0,
            _ => (lo & 0xFFFF_FFF0) | ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(Bar0 + 4 * index + 4)) << 32),
        };
    }

    public ushort CommandRegister => BinaryPrimitives.ReadUInt16LittleEndian(_config.AsSpan(Command));

    /// <summary>Called after a guest write has been applied (BAR moved, command changed, …).</summary>
    protected virtual void OnConfigWritten(int register, int size) { }

    // ---- IPciDevice ---------------------------------------------------------------------------

    public virtual uint ReadConfig(int register, int size)
    {
        if ((uint)register >= ConfigSize || register + size > ConfigSize) return uint.MaxValue;
        uint v = 0;
        for (int i = 0; i < size; i++) v |= (uint)_config[register + i] << (8 * i);
        return v;
    }

    public virtual void WriteConfig(int register, int size, uint value)
    {
        if ((uint)register >= ConfigSize || register + size > ConfigSize) return;
        for (int i = 0; i < size; i++)
        {
            int r = register + i;
            byte b = (byte)(value >> (8 * i));
            byte old = _config[r];
            byte next = (byte)((old & ~_writeMask[r]) | (b & _writeMask[r]));
            next &= (byte)~(b & _w1cMask[r]);
            _config[r] = next;
        }
        OnConfigWritten(register, size);
    }
}
