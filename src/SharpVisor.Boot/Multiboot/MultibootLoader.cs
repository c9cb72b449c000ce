// Multiboot (version 1) loader, Multiboot Specification 0.6.96: §3.1 OS image format
// (ELF or the a.out kludge of header flag 16), §3.2 machine state, §3.3 boot information.
// Deliberate choices:
// - ELF segments load at p_paddr, and an entry point that lies in a segment's virtual range is
//   translated to its physical address, as GRUB 2 does for higher-half kernels. ELF64 files
//   are accepted as GRUB does; the entry must still be 32-bit code.
// - Modules always start on a 4 KiB boundary (satisfies flag 0), right after the kernel.
// - The info structure, memory map, module list and strings live at 0x1000–0x8FFF
//   (BootLayout.MultibootAreaGpa); a kernel that loads there is refused, and so is one that loads
//   anywhere the e820 map it is given does not call usable RAM (as GRUB allocates only from it).
// - Flag 2 (video mode) is ignored with a note: there is no framebuffer to set up.
// - No boot_device (no BIOS disks), no ELF section headers (flags bit 5), no drives/APM/VBE.
// - A GDT matching the selectors is loaded although the spec lets GDTR be invalid, so a kernel
//   that reloads a segment register early still works.
using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot.Multiboot;

public sealed record MultibootModule(byte[] Data, string CommandLine, string Name = "module");

public sealed class MultibootConfig
{
    public required byte[] Kernel { get; init; }
    public string KernelName { get; init; } = "kernel";
    public string CommandLine { get; init; } = "";
    public IReadOnlyList<MultibootModule> Modules { get; init; } = [];
    /// <summary>Firmware ranges to add to the memory map (the ACPI tables' range).</summary>
    public IReadOnlyList<E820Entry> ExtraE820 { get; init; } = [];
}

public sealed class MultibootResult : BootResult
{
    public required MultibootHeader Header { get; init; }
    public required ulong EntryGpa { get; init; }
    public required ulong InfoGpa { get; init; }
    public required ulong KernelStart { get; init; }
    public required ulong KernelEnd { get; init; }
    public required IReadOnlyList<PlacedRange> ModuleRanges { get; init; }
}

public static class MultibootLoader
{
    public const uint BootloaderMagic = 0x2BAD_B002;
    public const string BootLoaderName = "SharpVisor";

    // multiboot_info flags (§3.3)
    public const uint InfoMemory = 1 << 0, InfoCmdline = 1 << 2, InfoMods = 1 << 3, InfoMemMap = 1 << 6, InfoBootLoaderName = 1 << 9;
    // multiboot_info field offsets
    public const int OffFlags = 0, OffMemLower = 4, OffMemUpper = 8, OffCmdline = 16, OffModsCount = 20, OffModsAddr = 24,
        OffMmapLength = 44, OffMmapAddr = 48, OffBootLoaderName = 64;
    /// <summary>The 0.6.96 structure ends at 88; the area is zeroed up to the later framebuffer fields (116).</summary>
    public const int InfoSize = 120;
    public const int MmapEntrySize = 24, ModuleEntrySize = 16;

    public static MultibootResult Load(GuestMemory memory, MultibootConfig config)
    {
        string name = config.KernelName;
        var image = config.Kernel;
        var header = MultibootHeader.Parse(image, name);
        var notes = new List<string>();
        var placed = new List<PlacedRange>();
        if ((header.Flags & MultibootHeader.FlagVideoMode) != 0)
            notes.Add($"{name}: the Multiboot video mode request (flags bit 2) is ignored; no framebuffer information is passed");

        // The kernel may only load into memory the e820 map (given to it below) calls usable RAM.
        var e820 = LinuxBoot.LinuxLoader.MergeE820(PcMemoryLayout.E820(memory), config.ExtraE820, name);
        ulong e820RamEnd = 0;
        foreach (var e in e820)
            if (e.Type == E820Type.Ram) e820RamEnd = Math.Max(e820RamEnd, e.Address + e.Size);

        ulong kernelStart = ulong.MaxValue, kernelEnd = 0, entry;
        void LoadRange(ulong gpa, ReadOnlySpan<byte> bytes, ulong memSize)
        {
            if (memSize == 0) return;
            if (gpa > FourGiB || memSize > FourGiB - gpa)
                throw new ImageFormatException($"{name}: loads at 0x{gpa:x}+0x{memSize:x}, beyond the 4 GiB a 32-bit kernel can address");
            if (gpa < BootLayout.MultibootAreaEnd && BootLayout.GdtGpa < gpa + memSize)
                throw new ImageFormatException($"{name}: loads at 0x{gpa:x}-0x{gpa + memSize - 1:x}, over the boot information area 0x{BootLayout.GdtGpa:x}-0x{BootLayout.MultibootAreaEnd - 1:x}");
            if (!IsUsableRam(e820, gpa, memSize))
            {
                // Past the end of RAM more memory helps; inside it the kernel asks for a hole
                // (VGA window, option ROMs, BIOS, ACPI tables) that no amount of RAM fills.
                if (gpa + memSize > e820RamEnd)
                    throw new ConfigurationException($"{name}: loads at 0x{gpa:x}-0x{gpa + memSize - 1:x}, which is not guest RAM; give the guest more memory");
                throw new ImageFormatException($"{name}: loads at 0x{gpa:x}-0x{gpa + memSize - 1:x}, which the memory map does not give as usable RAM (VGA, ROM, BIOS or ACPI area)");
            }
            memory.Write(gpa, bytes);
            Zero(memory, gpa + (ulong)bytes.Length, memSize - (ulong)bytes.Length);
            kernelStart = Math.Min(kernelStart, gpa);
            kernelEnd = Math.Max(kernelEnd, gpa + memSize);
            placed.Add(new PlacedRange("kernel", gpa, memSize));
        }

        if (header.HasAoutKludge)
        {
            // §3.1.3: header_addr is where the header itself lands, so the file offset of load_addr
            // is the header's offset minus (header_addr - load_addr).
            if (header.HeaderAddr < header.LoadAddr || header.HeaderAddr - header.LoadAddr > (uint)header.Offset)
                throw new ImageFormatException($"{name}: Multiboot header_addr 0x{header.HeaderAddr:x} and load_addr 0x{header.LoadAddr:x} do not match the header's file offset 0x{header.Offset:x}");
            int fileOffset = header.Offset - (int)(header.HeaderAddr - header.LoadAddr);
            ulong loadSize = header.LoadEndAddr == 0 ? (ulong)(image.Length - fileOffset) : (ulong)header.LoadEndAddr - header.LoadAddr;
            if (header.LoadEndAddr != 0 && header.LoadEndAddr <= header.LoadAddr)
                throw new ImageFormatException($"{name}: Multiboot load_end_addr 0x{header.LoadEndAddr:x} is not above load_addr 0x{header.LoadAddr:x}");
            if (loadSize > (ulong)(image.Length - fileOffset))
                throw new ImageFormatException($"{name}: Multiboot load_end_addr 0x{header.LoadEndAddr:x} asks for {loadSize} bytes but the file holds {image.Length - fileOffset} from offset 0x{fileOffset:x}");
            ulong loadEnd = header.LoadAddr + loadSize;
            if (header.BssEndAddr != 0 && header.BssEndAddr < loadEnd)
                throw new ImageFormatException($"{name}: Multiboot bss_end_addr 0x{header.BssEndAddr:x} is below the end of the loaded image 0x{loadEnd:x}");
            ulong memSize = (header.BssEndAddr != 0 ? header.BssEndAddr : loadEnd) - header.LoadAddr;
            LoadRange(header.LoadAddr, image.AsSpan(fileOffset, (int)loadSize), memSize);
            entry = header.EntryAddr;
        }
        else
        {
            if (!ElfImage.IsElf(image))
                throw new ImageFormatException($"{name}: has a Multiboot header without the a.out kludge (flags bit 16) but is not an ELF file");
            var elf = new ElfImage(image, name);
            foreach (var s in elf.Segments)
                LoadRange(s.Paddr, image.AsSpan((int)s.Offset, (int)s.FileSize), s.MemSize);
            entry = elf.Entry;
            foreach (var s in elf.Segments)
                if (entry >= s.Vaddr && entry - s.Vaddr < s.MemSize) { entry = entry - s.Vaddr + s.Paddr; break; }
        }
        if (entry > uint.MaxValue)
            throw new ImageFormatException($"{name}: the entry point 0x{entry:x} is above 4 GiB; Multiboot enters in 32-bit mode");

        // The info area: a bump allocator over [MultibootAreaGpa, MultibootAreaEnd).
        var area = new byte[BootLayout.MultibootAreaEnd - BootLayout.MultibootAreaGpa];
        int used = 0;
        uint Alloc(int size, int align = 4)
        {
            used = (used + align - 1) & ~(align - 1);
            if (used + size > area.Length)
                throw new ConfigurationException($"{name}: command lines and module list do not fit in the {area.Length / 1024} KiB Multiboot information area");
            uint gpa = (uint)(BootLayout.MultibootAreaGpa + (ulong)used);
            used += size;
            return gpa;
        }
        Span<byte> At(uint gpa, int size) => area.AsSpan((int)(gpa - BootLayout.MultibootAreaGpa), size);
        uint String(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            uint gpa = Alloc(bytes.Length + 1, 1);
            bytes.CopyTo(At(gpa, bytes.Length));
            return gpa;
        }

        uint info = Alloc(InfoSize, 8);
        uint mmap = Alloc(e820.Count * MmapEntrySize, 8);
        for (int i = 0; i < e820.Count; i++)
        {
            var m = At(mmap + (uint)(i * MmapEntrySize), MmapEntrySize);
            BinaryPrimitives.WriteUInt32LittleEndian(m, MmapEntrySize - 4); // size excludes itself
            BinaryPrimitives.WriteUInt64LittleEndian(m[4..], e820[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(m[12..], e820[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(m[20..], (uint)e820[i].Type);
        }
        uint memLower = 0, memUpper = 0;
        foreach (var e in e820)
        {
            if (e.Type != E820Type.Ram) continue;
            if (e.Address == 0) memLower = (uint)Math.Min(e.Size, 640 * 1024) / 1024;
            if (e.Address == BootLayout.HighLoadGpa) memUpper = (uint)Math.Min(e.Size / 1024, uint.MaxValue);
        }

        uint modList = Alloc(Math.Max(1, config.Modules.Count) * ModuleEntrySize, 8);
        var modules = new List<PlacedRange>();
        ulong lowRamEnd = LinuxBoot.LinuxLoader.LowRamEnd(memory);
        ulong next = Align(Math.Max(kernelEnd, BootLayout.HighLoadGpa), 0x1000);
        for (int i = 0; i < config.Modules.Count; i++)
        {
            var mod = config.Modules[i];
            ulong start = next, end = start + (ulong)mod.Data.Length;
            if (end > lowRamEnd || end > uint.MaxValue)
                throw new ConfigurationException($"{mod.Name}: the module ({mod.Data.Length >> 10} KiB) does not fit in RAM after 0x{start:x}; give the guest more memory");
            memory.Write(start, mod.Data);
            var r = new PlacedRange($"module {mod.Name}", start, (ulong)mod.Data.Length);
            modules.Add(r);
            placed.Add(r);
            var e = At(modList + (uint)(i * ModuleEntrySize), ModuleEntrySize);
            BinaryPrimitives.WriteUInt32LittleEndian(e, (uint)start);
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], (uint)end);
            BinaryPrimitives.WriteUInt32LittleEndian(e[8..], String(mod.CommandLine));
            next = Align(end, 0x1000);
        }

        var inf = At(info, InfoSize);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffFlags..], InfoMemory | InfoCmdline | InfoMods | InfoMemMap | InfoBootLoaderName);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffMemLower..], memLower);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffMemUpper..], memUpper);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffCmdline..], String(config.CommandLine));
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffModsCount..], (uint)config.Modules.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffModsAddr..], modList);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffMmapLength..], (uint)(e820.Count * MmapEntrySize));
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffMmapAddr..], mmap);
        BinaryPrimitives.WriteUInt32LittleEndian(inf[OffBootLoaderName..], String(BootLoaderName));
        memory.Write(BootLayout.MultibootAreaGpa, area.AsSpan(0, used));
        placed.Add(new PlacedRange("multiboot info", BootLayout.MultibootAreaGpa, (ulong)used));

        // §3.2: EAX = 0x2BADB002, EBX = info, CS/DS/ES/FS/GS/SS flat 4 GiB, CR0.PE=1 PG=0, IF=0.
        var cpu = VcpuState.Protected32(entry);
        placed.Add(BootGdt.Write(memory, BootLayout.GdtGpa, longMode: false, cpu));
        cpu.Rax = BootloaderMagic;
        cpu.Rbx = info;
        cpu.Rflags = 0x2;

        return new MultibootResult
        {
            BootCpu = cpu, Placed = placed, Notes = notes, Header = header, EntryGpa = entry, InfoGpa = info,
            KernelStart = kernelStart, KernelEnd = kernelEnd, ModuleRanges = modules,
        };
    }

    private const ulong FourGiB = 1UL << 32;

    private static ulong Align(ulong v, ulong a) => (v + a - 1) & ~(a - 1);

    /// <summary>True when [gpa, gpa+size) is RAM, possibly across adjacent regions (false if it wraps).</summary>
    internal static bool IsRam(GuestMemory memory, ulong gpa, ulong size)
    {
        ulong end = gpa + size;
        if (end < gpa) return false;
        while (gpa < end)
        {
            if (!memory.TryFindRegion(gpa, out var r) || r.ReadOnly) return false;
            gpa = r.End;
        }
        return true;
    }

    /// <summary>True when [gpa, gpa+size) lies in e820 RAM entries (sorted; adjacent ones join up).</summary>
    private static bool IsUsableRam(List<E820Entry> e820, ulong gpa, ulong size)
    {
        ulong end = gpa + size;
        if (end < gpa) return false;
        foreach (var e in e820)
        {
            if (e.Type != E820Type.Ram || e.Address > gpa || e.Address + e.Size <= gpa) continue;
            gpa = e.Address + e.Size; // covered up to here; the rest must continue in the next entry
            if (gpa >= end) return true;
        }
        return false;
    }

    private static void Zero(GuestMemory memory, ulong gpa, ulong size)
    {
        var zeros = new byte[Math.Min(size, 1UL << 20)];
        while (size > 0)
        {
            int n = (int)Math.Min(size, (ulong)zeros.Length);
            memory.Write(gpa, zeros.AsSpan(0, n));
            gpa += (ulong)n;
            size -= (ulong)n;
        }
    }
}
