// Linux x86 boot protocol loader for bzImage kernels (Documentation/arch/x86/boot.rst, the
// "32-bit boot protocol" and "64-bit boot protocol" sections; boot_params fields from
// Documentation/arch/x86/zero-page.rst). The real-mode setup code is never run: this loader
// does what it and a boot loader would have done and enters the protected-mode kernel
// directly, the way QEMU's -kernel with a 64-bit entry, Firecracker and cloud-hypervisor do.
// Deliberate choices:
// - The kernel goes to pref_address (2.10+) when set, else to 0x100000. A relocatable kernel
//   moves itself to at least LOAD_PHYSICAL_ADDR (= pref_address) anyway, so loading there
//   avoids a copy and makes the RAM check below exact: [load, load + init_size) must be RAM.
// - The initrd goes as high as possible below min(initrd_addr_max, end of RAM below 4 GiB),
//   page aligned, as QEMU does; the ext_ramdisk_* high halves are written although they are
//   zero there, so the fields are always consistent.
// - acpi_rsdp_addr (zero page 0x070, "ALL" in zero-page.rst) is set whenever ACPI tables are
//   given: kernels that predate the field treat it as padding and find the RSDP by scanning
//   0xE0000–0xFFFFF, where Acpi.AcpiTableBuilder also puts it.
// - heap_end_ptr/CAN_USE_HEAP only matter to the real-mode setup code; they get the values
//   boot.rst's sample loader uses (heap end 0xE000 past the setup code, minus 0x200).
// - screen_info is all zero by default (no VGA console: Linux's vgacon gives up when
//   orig_video_lines or _cols is 0); VgaTextConsole fills in 80×25 colour text mode.
// - DecompressOnHost (the default): when the header declares a payload (2.08+) in a format
//   with a host decoder (see Vmlinux), the vmlinux ELF inside is decompressed here and its
//   PT_LOAD segments are loaded at their p_paddr with the bss zeroed, and the CPU enters at
//   e_entry (startup_64 / startup_32 of the kernel proper) in the same state the 64-/32-bit
//   protocol gives the bzImage's own entry, as Firecracker does with a vmlinux. This skips the
//   bzImage's decompressor, which on an interpreting CPU costs billions of instructions. What
//   that decompressor leaves for the kernel proper is only the kernel at its link address and
//   boot_params (ESI/RSI); loading at p_paddr is the link address, so no relocation or KASLR
//   is applied (loadflags KASLR_FLAG is cleared so the kernel does not think it was moved).
//   An ELF whose class does not match the requested entry (ELF64 with the 32-bit protocol),
//   and payloads without a host decoder, boot through the in-guest decompressor as before.
using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot.LinuxBoot;

public enum LinuxEntry
{
    /// <summary>64-bit boot protocol: long mode, startup_64 at load address + 0x200.</summary>
    Long64,
    /// <summary>32-bit boot protocol: flat protected mode, paging off, at code32_start.</summary>
    Protected32,
}

public sealed class LinuxBootConfig
{
    public required BzImage Kernel { get; init; }
    public byte[]? Initrd { get; init; }
    public string InitrdName { get; init; } = "initrd";
    public string CommandLine { get; init; } = "";
    public LinuxEntry Entry { get; init; } = LinuxEntry.Long64;
    /// <summary>RSDP address for boot_params.acpi_rsdp_addr (from Acpi.AcpiTables), or null for none.</summary>
    public ulong? AcpiRsdpAddress { get; init; }
    /// <summary>Firmware ranges to add to the e820 map (the ACPI tables' range).</summary>
    public IReadOnlyList<E820Entry> ExtraE820 { get; init; } = [];
    /// <summary>Describe an 80×25 VGA text console in screen_info (only when the machine has VGA).</summary>
    public bool VgaTextConsole { get; init; }
    /// <summary>
    /// Decompress the bzImage's payload on the host and enter the vmlinux directly (default); false
    /// always runs the kernel's own decompressor in the guest.
    /// </summary>
    public bool DecompressOnHost { get; init; } = true;
}

public sealed class LinuxBootResult : BootResult
{
    public required BzImage Kernel { get; init; }
    public required ulong KernelGpa { get; init; }
    public required ulong EntryGpa { get; init; }
    public required ulong BootParamsGpa { get; init; }
    public required ulong CommandLineGpa { get; init; }
    public ulong InitrdGpa { get; init; }
    public ulong InitrdSize { get; init; }
    /// <summary>CR3 for the 64-bit entry, 0 for the 32-bit one.</summary>
    public ulong Pml4Gpa { get; init; }
    /// <summary>End of the memory the kernel owns from <see cref="KernelGpa"/> (init_size, or the vmlinux's last segment end).</summary>
    public ulong KernelEnd { get; init; }
    /// <summary>What was loaded when the payload was decompressed on the host; null when the guest decompresses the kernel.</summary>
    public VmlinuxInfo? Vmlinux { get; init; }
    public required IReadOnlyList<E820Entry> E820 { get; init; }
}

public static class LinuxLoader
{
    public const byte TypeOfLoaderUndefined = 0xFF;
    /// <summary>boot.rst sample loader: heap_end = 0xE000, heap_end_ptr = heap_end - 0x200.</summary>
    public const ushort HeapEndPtr = 0xE000 - 0x200;
    /// <summary>initrd_addr_max before protocol 2.03 (kept for completeness; 2.06 is required).</summary>
    public const uint LegacyInitrdAddrMax = 0x37FF_FFFF;
    /// <summary>startup_64 is 0x200 bytes into the protected-mode kernel (boot.rst, 64-bit boot protocol).</summary>
    public const ulong Startup64Offset = 0x200;

    public static LinuxBootResult Load(GuestMemory memory, LinuxBootConfig config)
    {
        var k = config.Kernel;
        var placed = new List<PlacedRange>();
        if (config.Entry == LinuxEntry.Long64 && !k.Supports64BitEntry)
            throw new ImageFormatException(k.ProtocolVersion < 0x020C
                ? $"{k.Name}: protocol {k.VersionText} has no xloadflags, so no 64-bit entry point is declared (2.12+ needed); use the 32-bit entry"
                : $"{k.Name}: xloadflags XLF_KERNEL_64 is clear, the kernel has no 64-bit entry point; use the 32-bit entry");

        ulong lowRamEnd = LowRamEnd(memory);
        var notes = new List<string>();
        var vmlinux = config.DecompressOnHost ? HostDecompressed(k, config.Entry, notes) : null;
        ulong load, kernelEnd;
        if (vmlinux != null)
        {
            load = vmlinux.Start;
            kernelEnd = vmlinux.End;
            if (load < BootLayout.HighLoadGpa)
                throw new ImageFormatException($"{k.Name}: the decompressed vmlinux loads at physical 0x{load:x}, below 1 MiB where the boot data lives");
            if (kernelEnd > lowRamEnd)
                throw new ConfigurationException(
                    $"{k.Name}: the kernel needs RAM from 0x{load:x} to 0x{kernelEnd:x} but RAM below 4 GiB ends at 0x{lowRamEnd:x}; give the guest at least {(kernelEnd + 0xFFFFF) >> 20} MiB");
            LoadSegments(memory, vmlinux, placed);
        }
        else
        {
            load = k.PrefAddress != 0 ? k.PrefAddress : BootLayout.HighLoadGpa;
            // Cannot wrap: BzImage keeps pref_address below 4 GiB and init_size is 32 bits.
            kernelEnd = load + Math.Max(k.InitSize, (ulong)k.ProtectedModeKernel.Length);
            if (kernelEnd > lowRamEnd)
                throw new ConfigurationException(
                    $"{k.Name}: the kernel needs RAM from 0x{load:x} to 0x{kernelEnd:x} (init_size {k.InitSize >> 20} MiB) but RAM below 4 GiB ends at 0x{lowRamEnd:x}; give the guest at least {(kernelEnd + 0xFFFFF) >> 20} MiB");
            memory.Write(load, k.ProtectedModeKernel.Span);
            placed.Add(new PlacedRange("kernel", load, (ulong)k.ProtectedModeKernel.Length));
        }

        var bp = new byte[ZeroPage.Size];
        var hdrEnd = Math.Min(k.HeaderEnd, SetupHeader.MaxEnd);
        k.Image.Span[ZeroPage.Hdr..hdrEnd].CopyTo(bp.AsSpan(ZeroPage.Hdr));

        bp[SetupHeader.TypeOfLoader] = TypeOfLoaderUndefined;
        bp[SetupHeader.LoadFlags] |= SetupHeader.CanUseHeap;
        W16(bp, SetupHeader.HeapEndPtr, HeapEndPtr);
        W32(bp, SetupHeader.Code32Start, checked((uint)load));
        if (vmlinux != null)
        {
            // As the decompressor leaves them: the kernel was not moved (no KASLR), and init_size,
            // which describes the kernel's footprint from its load address, covers the vmlinux.
            bp[SetupHeader.LoadFlags] &= unchecked((byte)~SetupHeader.KaslrFlag);
            if (k.ProtocolVersion >= 0x020A && BinaryPrimitives.ReadUInt32LittleEndian(bp.AsSpan(SetupHeader.InitSize)) < kernelEnd - load)
                W32(bp, SetupHeader.InitSize, checked((uint)(kernelEnd - load)));
        }

        // Command line: cmdline_size excludes the terminating NUL (boot.rst, 2.06+).
        var cmdline = Encoding.ASCII.GetBytes(config.CommandLine);
        ulong cmdlineMax = Math.Min(k.CmdlineSize, BootLayout.CommandLineMax - 1);
        if ((ulong)cmdline.Length > cmdlineMax)
            throw new ConfigurationException($"{k.Name}: the command line is {cmdline.Length} bytes but the kernel accepts at most {cmdlineMax}");
        memory.Write(BootLayout.CommandLineGpa, cmdline);
        memory.Write(BootLayout.CommandLineGpa + (ulong)cmdline.Length, (byte)0);
        placed.Add(new PlacedRange("cmdline", BootLayout.CommandLineGpa, (ulong)cmdline.Length + 1));
        W32(bp, SetupHeader.CmdLinePtr, (uint)BootLayout.CommandLineGpa);
        W32(bp, ZeroPage.ExtCmdLinePtr, (uint)(BootLayout.CommandLineGpa >> 32));

        ulong initrdGpa = 0, initrdSize = 0;
        if (config.Initrd is { Length: > 0 } initrd)
        {
            initrdSize = (ulong)initrd.Length;
            ulong max = Math.Min((ulong)k.InitrdAddrMax + 1, lowRamEnd);
            if (initrdSize > max || ((max - initrdSize) & ~0xFFFUL) < kernelEnd)
                throw new ConfigurationException(
                    $"{config.InitrdName}: the initrd ({initrdSize >> 20} MiB) does not fit between the kernel's end 0x{kernelEnd:x} and 0x{max:x}; give the guest more memory");
            initrdGpa = (max - initrdSize) & ~0xFFFUL;
            memory.Write(initrdGpa, initrd);
            placed.Add(new PlacedRange("initrd", initrdGpa, initrdSize));
        }
        W32(bp, SetupHeader.RamdiskImage, (uint)initrdGpa);
        W32(bp, SetupHeader.RamdiskSize, (uint)initrdSize);
        W32(bp, ZeroPage.ExtRamdiskImage, (uint)(initrdGpa >> 32));
        W32(bp, ZeroPage.ExtRamdiskSize, (uint)(initrdSize >> 32));

        var e820 = MergeE820(PcMemoryLayout.E820(memory), config.ExtraE820, k.Name);
        if (e820.Count > ZeroPage.E820Max)
            throw new ConfigurationException($"{k.Name}: {e820.Count} e820 entries, boot_params holds {ZeroPage.E820Max}");
        bp[ZeroPage.E820Entries] = (byte)e820.Count;
        for (int i = 0; i < e820.Count; i++)
        {
            var span = bp.AsSpan(ZeroPage.E820Table + i * ZeroPage.E820EntrySize);
            BinaryPrimitives.WriteUInt64LittleEndian(span, e820[i].Address);
            BinaryPrimitives.WriteUInt64LittleEndian(span[8..], e820[i].Size);
            BinaryPrimitives.WriteUInt32LittleEndian(span[16..], (uint)e820[i].Type);
        }
        // Legacy memory sizes, used by Linux only when there is no e820 map; KiB above 1 MiB.
        ulong extKiB = (lowRamEnd - BootLayout.HighLoadGpa) >> 10;
        W32(bp, ZeroPage.AltMemK, (uint)Math.Min(extKiB, uint.MaxValue));
        W16(bp, ZeroPage.ScreenInfo + ZeroPage.ExtMemK, (ushort)Math.Min(extKiB, 0xFFFF));

        if (config.AcpiRsdpAddress is { } rsdp)
            BinaryPrimitives.WriteUInt64LittleEndian(bp.AsSpan(ZeroPage.AcpiRsdpAddr), rsdp);

        if (config.VgaTextConsole)
        {
            var si = bp.AsSpan(ZeroPage.ScreenInfo);
            si[ZeroPage.OrigVideoMode] = 3;   // 80×25 colour text
            si[ZeroPage.OrigVideoCols] = 80;
            si[ZeroPage.OrigVideoLines] = 25;
            si[ZeroPage.OrigVideoIsVga] = 1;
            BinaryPrimitives.WriteUInt16LittleEndian(si[ZeroPage.OrigVideoPoints..], 16);
        }

        memory.Write(BootLayout.BootParamsGpa, bp);
        placed.Add(new PlacedRange("boot_params", BootLayout.BootParamsGpa, ZeroPage.Size));

        VcpuState cpu;
        ulong entry, pml4 = 0;
        if (config.Entry == LinuxEntry.Long64)
        {
            // The identity map covers 4 GiB: the kernel (below 4 GiB, checked above) and boot_params.
            entry = vmlinux?.Entry ?? load + Startup64Offset;
            pml4 = IdentityPageTables.Build(memory, BootLayout.PageTablesGpa);
            placed.Add(new PlacedRange("page tables", pml4, IdentityPageTables.Size));
            cpu = LongMode64(entry, pml4);
        }
        else
        {
            entry = vmlinux?.Entry ?? load; // startup_32 of the vmlinux, or code32_start as written above
            cpu = VcpuState.Protected32(entry);
        }
        placed.Add(BootGdt.Write(memory, BootLayout.GdtGpa, config.Entry == LinuxEntry.Long64, cpu));
        // Both protocols: ESI/RSI = boot_params; EBP, EDI, EBX zero; interrupts off (RFLAGS.IF = 0).
        cpu.Rsi = BootLayout.BootParamsGpa;
        cpu.Rsp = BootLayout.LinuxStackTop;
        cpu.Rflags = 0x2;
        CheckOverlaps(placed, k.Name);

        return new LinuxBootResult
        {
            BootCpu = cpu,
            Placed = placed,
            Kernel = k,
            KernelGpa = load,
            EntryGpa = entry,
            BootParamsGpa = BootLayout.BootParamsGpa,
            CommandLineGpa = BootLayout.CommandLineGpa,
            InitrdGpa = initrdGpa,
            InitrdSize = initrdSize,
            Pml4Gpa = pml4,
            E820 = e820,
            KernelEnd = kernelEnd,
            Vmlinux = vmlinux?.Info, // not the image: the machine keeps this result for its lifetime
            Notes = notes,
        };
    }

    /// <summary>The payload decompressed on the host when it can be and suits the entry; else null and a note why.</summary>
    private static Vmlinux? HostDecompressed(BzImage k, LinuxEntry entry, List<string> notes)
    {
        var v = Vmlinux.FromBzImage(k, out var note);
        if (v != null && v.Is64Bit != (entry == LinuxEntry.Long64))
        {
            notes.Add($"{k.Name}: the payload is an ELF{(v.Is64Bit ? "64" : "32")} vmlinux but the {(entry == LinuxEntry.Long64 ? "64" : "32")}-bit entry was asked for, so the kernel decompresses itself");
            return null;
        }
        notes.Add(note);
        return v;
    }

    /// <summary>Copies each PT_LOAD segment to p_paddr and zeroes p_memsz beyond p_filesz (the bss: RAM may hold an earlier boot's bytes).</summary>
    private static void LoadSegments(GuestMemory memory, Vmlinux v, List<PlacedRange> placed)
    {
        byte[]? zeros = null;
        foreach (var s in v.Segments)
        {
            memory.Write(s.Paddr, v.Image.AsSpan(checked((int)s.Offset), checked((int)s.FileSize)));
            ulong gpa = s.Paddr + s.FileSize, left = s.MemSize - s.FileSize;
            while (left > 0)
            {
                zeros ??= new byte[1 << 20];
                int n = (int)Math.Min(left, (ulong)zeros.Length);
                memory.Write(gpa, zeros.AsSpan(0, n));
                gpa += (ulong)n;
                left -= (ulong)n;
            }
            placed.Add(new PlacedRange("kernel", s.Paddr, s.MemSize));
        }
    }

    /// <summary>Nothing the loader placed may overlap anything else it placed.</summary>
    private static void CheckOverlaps(List<PlacedRange> placed, string name)
    {
        for (int i = 0; i < placed.Count; i++)
            for (int j = i + 1; j < placed.Count; j++)
                if (placed[i].Gpa < placed[j].End && placed[j].Gpa < placed[i].End)
                    throw new ConfigurationException($"{name}: {placed[i]} overlaps {placed[j]}");
    }

    /// <summary>
    /// 64-bit mode with paging as boot.rst's 64-bit protocol asks: CR0.PE|PG, CR4.PAE,
    /// EFER.LME|LMA, CS = __BOOT_CS (L=1), DS/ES/SS = __BOOT_DS, CR3 = the identity map.
    /// </summary>
    public static VcpuState LongMode64(ulong entry, ulong cr3)
    {
        var s = VcpuState.Protected32(entry);
        s.Cs = SegmentRegister.Flat(BootGdt.BootCs, code: true, longMode: true);
        s.Cr0 = Cr0Pe | Cr0Et | Cr0Pg;
        s.Cr3 = cr3;
        s.Cr4 = Cr4Pae;
        s.Efer = EferLme | EferLma;
        return s;
    }

    public const ulong Cr0Pe = 1, Cr0Et = 1 << 4, Cr0Pg = 1UL << 31, Cr4Pae = 1 << 5, EferLme = 1 << 8, EferLma = 1 << 10;

    /// <summary>End of the RAM that starts at 1 MiB (the top of low RAM below the PCI hole).</summary>
    internal static ulong LowRamEnd(GuestMemory memory)
    {
        if (!memory.TryFindRegion(BootLayout.HighLoadGpa, out var r) || r.ReadOnly)
            throw new ConfigurationException("guest memory has no RAM at 1 MiB; add it with PcMemoryLayout.AddRam first");
        ulong end = r.End;
        // Adjacent regions count as one stretch of RAM.
        while (end < PcMemoryLayout.HighMemoryStart && memory.TryFindRegion(end, out var next) && !next.ReadOnly)
            end = next.End;
        return Math.Min(end, PcMemoryLayout.HighMemoryStart);
    }

    /// <summary>The firmware map plus extra ranges, sorted; an extra range may not overlap another entry.</summary>
    public static List<E820Entry> MergeE820(IReadOnlyList<E820Entry> baseMap, IReadOnlyList<E820Entry> extra, string what)
    {
        var list = new List<E820Entry>(baseMap);
        foreach (var e in extra)
        {
            foreach (var o in list)
                if (e.Address < o.Address + o.Size && o.Address < e.Address + e.Size)
                    throw new ConfigurationException($"{what}: e820 range {e.Address:x}+{e.Size:x} ({e.Type}) overlaps {o.Address:x}+{o.Size:x} ({o.Type})");
            list.Add(e);
        }
        list.Sort((a, b) => a.Address.CompareTo(b.Address));
        return list;
    }

    private static void W16(byte[] b, int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(o), v);
    private static void W32(byte[] b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(o), v);
}
