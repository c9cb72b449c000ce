// QEMU firmware configuration device (docs/specs/fw_cfg.rst), x86 I/O-port flavour, the way
// SeaBIOS (src/fw/paravirt.c) and Linux (drivers/firmware/qemu_fw_cfg.c) use it:
//   offset 0 (0x510) selector, written as 16 bits little-endian; a selected item reads from offset 0;
//   offset 1 (0x511) data, one byte per read, advancing through the item; past the end reads 0;
//   offsets 4–11 (0x514–0x51B) DMA address register, big-endian: a 32-bit write at 4 sets the high
//   half (and clears the low), a 32-bit write at 8 sets the low half and starts the transfer, a
//   64-bit write at 4 sets both and starts it. Reads return the signature "QEMU CFG".
// A DMA transfer reads a FWCfgDmaAccess {be32 control; be32 length; be64 address} from guest RAM:
// control bit 3 SELECT (item in bits 31–16), bit 1 READ, bit 4 WRITE, bit 2 SKIP; on completion the
// device writes control back as 0, or with bit 0 ERROR set. Every byte DMA writes is reported
// through GuestMemory.Written, so an engine caching decoded code sees it.
// Items: signature 0x0000 "QEMU", ID 0x0001 (bit 0 traditional interface, bit 1 DMA), and whatever the
// machine adds: the standard numbered items through the Set* helpers, named files through AddFile
// (selectors from 0x0020 in the order added) listed in the file directory 0x0019
// (be32 count, then per file be32 size, be16 select, be16 reserved, char name[56]).
// Numbers in items are little-endian, as QEMU's fw_cfg_add_i16/i32/i64.
//
// Deliberate deviations: no item is guest-writable (data-port writes are ignored and DMA WRITE sets
// ERROR, as QEMU does for read-only items); wider data-port reads return consecutive bytes, first byte
// lowest (QEMU rejects them); the 1-byte write to the selector port QEMU accepts as a data write is
// ignored the same way.
using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Memory;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.FwCfg;

public sealed class FwCfg : IBusDevice
{
    public const ulong SelectorOffset = 0, DataOffset = 1, DmaOffset = 4, Size = 12;

    // Item keys (fw_cfg.rst / QEMU include/standard-headers/linux/qemu_fw_cfg.h).
    public const ushort Signature = 0x00, Id = 0x01, Uuid = 0x02, RamSize = 0x03, NoGraphic = 0x04,
        NbCpus = 0x05, MachineId = 0x06, KernelAddr = 0x07, KernelSize = 0x08, KernelCmdline = 0x09,
        InitrdAddr = 0x0A, InitrdSize = 0x0B, BootDevice = 0x0C, Numa = 0x0D, BootMenu = 0x0E, MaxCpus = 0x0F,
        KernelEntry = 0x10, KernelData = 0x11, InitrdData = 0x12, CmdlineAddr = 0x13, CmdlineSize = 0x14,
        CmdlineData = 0x15, SetupAddr = 0x16, SetupSize = 0x17, SetupData = 0x18, FileDir = 0x19,
        FileFirst = 0x20, WriteChannel = 0x4000, ArchLocal = 0x8000,
        // x86 arch-local items
        AcpiTables = 0x8000, SmbiosEntries = 0x8001, Irq0Override = 0x8002, E820Table = 0x8003, Hpet = 0x8004;

    public const uint IdTraditional = 1, IdDma = 2;
    public const uint DmaCtlError = 0x01, DmaCtlRead = 0x02, DmaCtlSkip = 0x04, DmaCtlSelect = 0x08, DmaCtlWrite = 0x10;
    /// <summary>"QEMU CFG" as a big-endian 64-bit number: what reads of the DMA register return.</summary>
    public const ulong DmaSignature = 0x51454D5520434647;
    public const int FileNameSize = 56, FileEntrySize = 64;
    private const int MaxFiles = 0x4000 - FileFirst;

    private readonly GuestMemory? _memory;
    private readonly Dictionary<ushort, byte[]> _items = new();
    private readonly List<(string Name, ushort Select, int Size)> _files = new();

    private byte[]? _current; // the selected item, null when the key selects nothing
    private ushort _selector;
    private int _offset;
    private ulong _dmaAddress;

    /// <param name="memory">Guest RAM for the DMA interface; without it the ID does not advertise DMA.</param>
    public FwCfg(GuestMemory? memory)
    {
        _memory = memory;
        _items[Signature] = "QEMU"u8.ToArray();
        SetU32(Id, IdTraditional | (memory != null ? IdDma : 0));
        RebuildDirectory();
        Select(Signature);
    }

    public string Name => "fw_cfg";

    public ushort CurrentSelector => _selector;

    // ---- machine API --------------------------------------------------------------------------

    public void SetBytes(ushort key, byte[] data)
    {
        ushort k = (ushort)(key & ~WriteChannel);
        if (k == FileDir || k == Signature || k == Id || (k & ~ArchLocal) >= FileFirst && (k & ArchLocal) == 0)
            throw new ConfigurationException($"fw_cfg item {key:x4} is managed by the device");
        _items[k] = data;
        if (_selector == k) _current = data;
    }

    public void SetU16(ushort key, ushort value) { var b = new byte[2]; BinaryPrimitives.WriteUInt16LittleEndian(b, value); SetBytes(key, b); }
    public void SetU32(ushort key, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        if (key == Id) _items[Id] = b; else SetBytes(key, b);
    }
    public void SetU64(ushort key, ulong value) { var b = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, value); SetBytes(key, b); }
    /// <summary>A NUL-terminated string item (e.g. KernelCmdline / CmdlineData).</summary>
    public void SetString(ushort key, string value) => SetBytes(key, Encoding.ASCII.GetBytes(value + "\0"));

    /// <summary>The usual x86 items: NB_CPUS, MAX_CPUS, RAM_SIZE, an empty NUMA table, BOOT_MENU.</summary>
    public void SetStandardItems(int cpus, int maxCpus, ulong ramBytes, bool bootMenu = false)
    {
        SetU16(NbCpus, (ushort)cpus);
        SetU16(MaxCpus, (ushort)maxCpus);
        SetU64(RamSize, ramBytes);
        // NUMA: le64 node count, then le64 APIC-id→node per CPU, then le64 memory per node; no nodes here.
        var numa = new byte[8 * (1 + maxCpus)];
        SetBytes(Numa, numa);
        SetU16(BootMenu, (ushort)(bootMenu ? 1 : 0));
    }

    /// <summary>Adds a named file; returns its selector (0x20 upwards in the order added).</summary>
    public ushort AddFile(string name, byte[] data)
    {
        if (Encoding.ASCII.GetByteCount(name) >= FileNameSize || name.Length == 0)
            throw new ConfigurationException($"fw_cfg file name '{name}' must be 1–{FileNameSize - 1} characters");
        foreach (var f in _files)
            if (f.Name == name) throw new ConfigurationException($"fw_cfg file '{name}' added twice");
        if (_files.Count >= MaxFiles) throw new ConfigurationException("fw_cfg has no selectors left for files");
        ushort select = (ushort)(FileFirst + _files.Count);
        _files.Add((name, select, data.Length));
        _items[select] = data;
        RebuildDirectory();
        return select;
    }

    /// <summary>The e820 map as the file "etc/e820": entries of le64 address, le64 length, le32 type (SeaBIOS reads it).</summary>
    public ushort AddE820(IReadOnlyList<E820Entry> map)
    {
        var data = new byte[20 * map.Count];
        for (int i = 0; i < map.Count; i++)
        {
            var span = data.AsSpan(20 * i);
            BinaryPrimitives.WriteUInt64LittleEndian(span, map[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(span[8..], map[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(span[16..], (uint)map[i].Type);
        }
        return AddFile("etc/e820", data);
    }

    private void RebuildDirectory()
    {
        var dir = new byte[4 + FileEntrySize * _files.Count];
        BinaryPrimitives.WriteUInt32BigEndian(dir, (uint)_files.Count);
        for (int i = 0; i < _files.Count; i++)
        {
            var e = dir.AsSpan(4 + FileEntrySize * i, FileEntrySize);
            BinaryPrimitives.WriteUInt32BigEndian(e, (uint)_files[i].Size);
            BinaryPrimitives.WriteUInt16BigEndian(e[4..], _files[i].Select);
            Encoding.ASCII.GetBytes(_files[i].Name, e[8..]);
        }
        _items[FileDir] = dir;
        if (_selector == FileDir) _current = dir;
    }

    // ---- bus ----------------------------------------------------------------------------------

    public ulong Read(ulong offset, int size)
    {
        int n = IsaByteCycles.Cycles(size);
        if (offset == SelectorOffset && n == 1 || offset == DataOffset)
        {
            // QEMU answers a byte read of either port of the pair with data.
            ulong v = 0;
            for (int i = 0; i < n; i++) v |= (ulong)ReadDataByte() << (8 * i);
            return v;
        }
        if (offset >= DmaOffset && offset + (ulong)n <= Size)
        {
            // The signature as a big-endian register: byte k of the window is byte k of "QEMU CFG".
            ulong v = 0;
            for (int i = 0; i < n; i++)
            {
                int k = (int)(offset - DmaOffset) + i;
                v |= ((DmaSignature >> (8 * (7 - k))) & 0xFF) << (8 * i);
            }
            return v;
        }
        return BusValue.AllOnes(size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset == SelectorOffset && size == 2)
        {
            Select((ushort)value);
            return;
        }
        if (_memory != null && offset == DmaOffset && size == 4)
        {
            _dmaAddress = (ulong)BinaryPrimitives.ReverseEndianness((uint)value) << 32;
            return;
        }
        if (_memory != null && offset == DmaOffset + 4 && size == 4)
        {
            _dmaAddress |= BinaryPrimitives.ReverseEndianness((uint)value);
            DmaTransfer();
            return;
        }
        if (_memory != null && offset == DmaOffset && size == 8)
        {
            _dmaAddress = BinaryPrimitives.ReverseEndianness(value);
            DmaTransfer();
            return;
        }
        // Data-port writes (no writable items) and other widths are ignored.
    }

    private void Select(ushort key)
    {
        _selector = key;
        _offset = 0;
        _current = _items.GetValueOrDefault((ushort)(key & ~WriteChannel));
    }

    private byte ReadDataByte()
    {
        var item = _current;
        if (item == null || _offset >= item.Length) return 0;
        return item[_offset++];
    }

    private void DmaTransfer()
    {
        var mem = _memory!;
        ulong accessGpa = _dmaAddress;
        _dmaAddress = 0; // QEMU resets the register before the next access
        if (!mem.IsRam(accessGpa, 16))
        {
            TryWriteControl(mem, accessGpa, DmaCtlError);
            return;
        }
        Span<byte> access = stackalloc byte[16];
        mem.Read(accessGpa, access);
        uint control = BinaryPrimitives.ReadUInt32BigEndian(access);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(access[4..]);
        ulong address = BinaryPrimitives.ReadUInt64BigEndian(access[8..]);

        if ((control & DmaCtlSelect) != 0) Select((ushort)(control >> 16));

        bool read = false, write = false;
        if ((control & DmaCtlRead) != 0) read = true;
        else if ((control & DmaCtlWrite) != 0) write = true;
        else if ((control & DmaCtlSkip) == 0) length = 0;

        uint result = 0;
        if (write && length > 0)
        {
            result = DmaCtlError; // no item accepts writes
        }
        else if (length > 0)
        {
            var item = _current;
            int available = item == null ? 0 : Math.Max(0, item.Length - _offset);
            int n = (int)Math.Min(length, (uint)available);
            if (read)
            {
                // Item bytes, then zeros for whatever lies past the end of the item.
                if (length > int.MaxValue || !mem.IsRam(address, length)) result = DmaCtlError;
                else
                {
                    var dst = mem.GetSpan(address, (int)length);
                    if (n > 0) item.AsSpan(_offset, n).CopyTo(dst);
                    dst[n..].Clear();
                    // Written through a span, not GuestMemory.Write: tell the engines (decoded code).
                    mem.NotifyWritten(address, length);
                }
            }
            if (result == 0) _offset += n;
        }
        TryWriteControl(mem, accessGpa, result);
    }

    private static void TryWriteControl(GuestMemory mem, ulong accessGpa, uint control)
    {
        if (!mem.IsRam(accessGpa, 4)) return; // nowhere to report: the guest pointed at nothing
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, control);
        mem.Write(accessGpa, b);
    }
}
