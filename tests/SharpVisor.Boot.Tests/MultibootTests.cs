using SharpVisor.Boot.Acpi;
using SharpVisor.Boot.Multiboot;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

public class MultibootTests
{
    private const uint Magic = 0x1BADB002;

    private static void Header(byte[] b, int at, uint flags)
    {
        W32(b, at, Magic);
        W32(b, at + 4, flags);
        W32(b, at + 8, unchecked(0u - Magic - flags));
    }

    /// <summary>
    /// An ELF32 i386 executable: text at paddr 1 MiB (holding the Multiboot header), data+bss at
    /// 0x101000 (0x800 bytes of file, 0x3000 in memory) and a PT_NOTE that must be ignored.
    /// With <paramref name="virtualBase"/> the segments are linked higher-half (vaddr = paddr + base).
    /// </summary>
    internal static byte[] MakeElf32(uint flags = 0x3, uint virtualBase = 0, uint textPaddr = 0x100000)
    {
        var b = new byte[0x3000];
        b[0] = 0x7F; b[1] = (byte)'E'; b[2] = (byte)'L'; b[3] = (byte)'F';
        b[4] = 1; b[5] = 1; b[6] = 1;                      // ELFCLASS32, ELFDATA2LSB, EV_CURRENT
        W16(b, 16, 2); W16(b, 18, 3); W32(b, 20, 1);        // ET_EXEC, EM_386
        W32(b, 24, virtualBase + textPaddr + 0x10);         // e_entry
        W32(b, 28, 52);                                     // e_phoff
        W16(b, 40, 52); W16(b, 42, 32); W16(b, 44, 3);      // e_ehsize, e_phentsize, e_phnum
        void Ph(int i, uint type, uint off, uint paddr, uint filesz, uint memsz)
        {
            int p = 52 + i * 32;
            W32(b, p, type); W32(b, p + 4, off); W32(b, p + 8, virtualBase + paddr); W32(b, p + 12, paddr);
            W32(b, p + 16, filesz); W32(b, p + 20, memsz); W32(b, p + 24, 5); W32(b, p + 28, 0x1000);
        }
        Ph(0, 1, 0x1000, textPaddr, 0x1000, 0x1000);
        Ph(1, 4, 0x0, 0x0, 0x10, 0x10);                     // PT_NOTE
        Ph(2, 1, 0x2000, textPaddr + 0x1000, 0x800, 0x3000);
        for (int i = 0x1000; i < 0x2800; i++) b[i] = (byte)(i * 13 + 1);
        Header(b, 0x1000, flags);
        return b;
    }

    [Fact]
    public void Elf_kernel_is_loaded_and_the_info_structure_filled()
    {
        using var mem = Ram(64 << 20);
        mem.Write(0x101000, Enumerable.Repeat((byte)0xEE, 0x4000).ToArray()); // dirty, to see bss zeroed
        var acpi = AcpiTableBuilder.Build(mem, new AcpiConfig());
        var elf = MakeElf32(virtualBase: 0xC000_0000);
        var mod1 = Enumerable.Range(0, 0x1234).Select(i => (byte)i).ToArray();
        var mod2 = Enumerable.Range(0, 0x100).Select(i => (byte)~i).ToArray();
        var r = MultibootLoader.Load(mem, new MultibootConfig
        {
            Kernel = elf,
            KernelName = "kernel.elf",
            CommandLine = "kernel.elf verbose",
            Modules = [new MultibootModule(mod1, "initrd.img"), new MultibootModule(mod2, "mod2 arg")],
            ExtraE820 = acpi.E820Entries,
        });

        // Segments at p_paddr, bss zeroed, nothing beyond memsz touched.
        Assert.Equal(elf[0x1000..0x2000], Bytes(mem, 0x100000, 0x1000));
        Assert.Equal(elf[0x2000..0x2800], Bytes(mem, 0x101000, 0x800));
        Assert.All(Bytes(mem, 0x101800, 0x2800), x => Assert.Equal(0, x));
        Assert.Equal(0x100000UL, r.KernelStart);
        Assert.Equal(0x104000UL, r.KernelEnd);
        // Higher-half e_entry translated to its physical address.
        Assert.Equal(0x100010UL, r.EntryGpa);

        // §3.2 machine state.
        var s = r.BootCpu;
        Assert.Equal(0x2BADB002UL, s.Rax);
        Assert.Equal(r.InfoGpa, s.Rbx);
        Assert.Equal(0x100010UL, s.Rip);
        Assert.Equal(1UL, s.Cr0 & 1);
        Assert.Equal(0UL, s.Cr0 & (1UL << 31));
        Assert.Equal(0UL, s.Rflags & (1 << 9) | (s.Rflags & (1 << 17)));   // IF and VM clear
        Assert.True(s.Cs.DefaultBig);
        foreach (var seg in new[] { s.Cs, s.Ds, s.Es, s.Fs, s.Gs, s.Ss })
        {
            Assert.Equal(0UL, seg.Base);
            Assert.Equal(0xFFFF_FFFFu, seg.Limit);
            AssertSegmentMatchesGdt(mem, s, seg);
        }

        // §3.3 boot information.
        ulong info = r.InfoGpa;
        uint flags = U32(mem, info);
        Assert.Equal(1u << 0 | 1u << 2 | 1u << 3 | 1u << 6 | 1u << 9, flags);
        Assert.Equal(639u, U32(mem, info + 4));                               // mem_lower: 0x9FC00 / 1 KiB
        Assert.Equal((uint)(((64UL << 20) - 0x100000) >> 10), U32(mem, info + 8)); // mem_upper from 1 MiB
        Assert.Equal("kernel.elf verbose", CString(mem, U32(mem, info + 16)));
        Assert.Equal("SharpVisor", CString(mem, U32(mem, info + 64)));

        Assert.Equal(2u, U32(mem, info + 20));
        ulong mods = U32(mem, info + 24);
        uint m1Start = U32(mem, mods), m1End = U32(mem, mods + 4);
        uint m2Start = U32(mem, mods + 16), m2End = U32(mem, mods + 20);
        Assert.Equal(0x104000u, m1Start);                                     // page aligned, after the kernel
        Assert.Equal(m1Start + 0x1234u, m1End);
        Assert.Equal(0u, m2Start & 0xFFF);
        Assert.True(m2Start >= m1End);
        Assert.Equal(m2Start + 0x100u, m2End);
        Assert.Equal(mod1, Bytes(mem, m1Start, mod1.Length));
        Assert.Equal(mod2, Bytes(mem, m2Start, mod2.Length));
        Assert.Equal("initrd.img", CString(mem, U32(mem, mods + 8)));
        Assert.Equal("mod2 arg", CString(mem, U32(mem, mods + 24)));

        // mmap: entries of size 20 (+4 for the size field), matching the e820 map plus ACPI.
        var expected = PcMemoryLayout.E820(mem).Concat(acpi.E820Entries).OrderBy(e => e.Address).ToList();
        uint mmapLength = U32(mem, info + 44);
        ulong mmap = U32(mem, info + 48);
        var got = new List<E820Entry>();
        for (ulong p = mmap; p < mmap + mmapLength; p += U32(mem, p) + 4)
        {
            Assert.Equal(20u, U32(mem, p));
            got.Add(new E820Entry(U64(mem, p + 4), U64(mem, p + 12), (E820Type)U32(mem, p + 20)));
        }
        Assert.Equal(expected, got);

        // The info area, GDT, kernel and modules do not overlap.
        var placed = r.Placed.OrderBy(p => p.Gpa).ToList();
        for (int i = 1; i < placed.Count; i++) Assert.True(placed[i - 1].End <= placed[i].Gpa, $"{placed[i - 1]} overlaps {placed[i]}");
        Assert.Empty(r.Notes);
    }

    [Fact]
    public void Aout_kludge_loads_by_the_header_addresses()
    {
        using var mem = Ram(64 << 20);
        mem.Write(0x200000, Enumerable.Repeat((byte)0xEE, 0x2000).ToArray());
        var img = new byte[0x1000];
        for (int i = 0; i < img.Length; i++) img[i] = (byte)(i * 3 + 1);
        // Header at file offset 0x20, i.e. at 0x200020 once loaded; load 0x800 bytes, bss to 0x201000.
        Header(img, 0x20, 0x0001_0003);
        W32(img, 0x2C, 0x200020); W32(img, 0x30, 0x200000); W32(img, 0x34, 0x200800); W32(img, 0x38, 0x201000); W32(img, 0x3C, 0x200100);
        var r = MultibootLoader.Load(mem, new MultibootConfig { Kernel = img, KernelName = "aout.bin" });
        Assert.True(r.Header.HasAoutKludge);
        Assert.Equal(img[..0x800], Bytes(mem, 0x200000, 0x800));
        Assert.All(Bytes(mem, 0x200800, 0x800), x => Assert.Equal(0, x));
        Assert.Equal(0xEE, mem.Read<byte>(0x201000));
        Assert.Equal(0x200100UL, r.BootCpu.Rip);
        Assert.Equal(0x2BADB002UL, r.BootCpu.Rax);
        Assert.Equal(0u, U32(mem, r.InfoGpa + 20));   // no modules
    }

    [Fact]
    public void Aout_kludge_with_header_not_at_file_start_uses_the_offset()
    {
        using var mem = Ram(64 << 20);
        var img = new byte[0x3000];
        for (int i = 0; i < img.Length; i++) img[i] = (byte)(i * 5 + 7);
        // Header at file offset 0x1000 but load_addr names file offset 0x800 (header_addr - load_addr = 0x800).
        Header(img, 0x1000, 0x0001_0000);
        W32(img, 0x100C, 0x300800); W32(img, 0x1010, 0x300000); W32(img, 0x1014, 0); W32(img, 0x1018, 0); W32(img, 0x101C, 0x300000);
        var r = MultibootLoader.Load(mem, new MultibootConfig { Kernel = img });
        Assert.Equal(img[0x800..], Bytes(mem, 0x300000, img.Length - 0x800));   // load_end 0: the rest of the file
        Assert.Equal(0x300000UL + (ulong)(img.Length - 0x800), r.KernelEnd);
    }

    [Fact]
    public void Video_mode_request_is_ignored_with_a_note()
    {
        using var mem = Ram(64 << 20);
        var r = MultibootLoader.Load(mem, new MultibootConfig { Kernel = MakeElf32(flags: 0x7), KernelName = "v.elf" });
        Assert.Single(r.Notes);
        Assert.Contains("video", r.Notes[0]);
    }

    public static TheoryData<string, Func<byte[]>, string> BadKernels() => new()
    {
        { "no header", () => new byte[0x4000], "no Multiboot header" },
        { "bad checksum", () => { var b = MakeElf32(); W32(b, 0x1008, 0); return b; }, "no Multiboot header" },
        { "header past 8 KiB", () => { var b = new byte[0x3000]; Header(b, 0x2000, 0x10003); return b; }, "no Multiboot header" },
        { "unsupported required flag", () => MakeElf32(flags: 0x8 | 0x3), "0x8" },
        { "not ELF, no kludge", () => { var b = new byte[0x100]; Header(b, 0, 3); return b; }, "not an ELF" },
        { "ELF64 big-endian", () => { var b = MakeElf32(); b[5] = 2; return b; }, "big-endian" },
        { "ET_DYN", () => { var b = MakeElf32(); W16(b, 16, 3); return b; }, "ET_EXEC" },
        { "ARM", () => { var b = MakeElf32(); W16(b, 18, 40); return b; }, "machine 40" },
        { "segment past file", () => { var b = MakeElf32(); W32(b, 52 + 2 * 32 + 16, 0x5000); W32(b, 52 + 2 * 32 + 20, 0x5000); return b; }, "past the end" },
        { "over the info area", () => MakeElf32(textPaddr: 0x1000), "boot information area" },
        { "kludge: header_addr below load_addr", () => { var b = new byte[0x100]; Header(b, 0, 0x10000); W32(b, 12, 0x1000); W32(b, 16, 0x2000); return b; }, "header_addr" },
        { "kludge: load_end past file", () => { var b = new byte[0x100]; Header(b, 0, 0x10000); W32(b, 12, 0x100000); W32(b, 16, 0x100000); W32(b, 20, 0x200000); return b; }, "load_end_addr" },
        { "kludge: bss below load end", () => { var b = new byte[0x100]; Header(b, 0, 0x10000); W32(b, 12, 0x100000); W32(b, 16, 0x100000); W32(b, 20, 0x100080); W32(b, 24, 0x100040); return b; }, "bss_end_addr" },
    };

    [Theory]
    [MemberData(nameof(BadKernels))]
    public void Bad_kernels_give_one_line_image_format_errors(string what, Func<byte[]> make, string expected)
    {
        using var mem = Ram(64 << 20);
        var e = Assert.Throws<ImageFormatException>(() => MultibootLoader.Load(mem, new MultibootConfig { Kernel = make(), KernelName = "/x/mb.elf" }));
        AssertOneLine(e, "/x/mb.elf");
        Assert.True(e.Message.Contains(expected), $"{what}: '{e.Message}' lacks '{expected}'");
    }

    [Fact]
    public void Kernel_beyond_ram_is_a_configuration_error()
    {
        using var mem = Ram(4 << 20);
        var e = Assert.Throws<ConfigurationException>(() => MultibootLoader.Load(mem, new MultibootConfig { Kernel = MakeElf32(textPaddr: 0x800000), KernelName = "hi.elf" }));
        AssertOneLine(e, "hi.elf");
    }

    [Fact]
    public void Module_that_does_not_fit_is_a_configuration_error()
    {
        using var mem = Ram(4 << 20);
        var e = Assert.Throws<ConfigurationException>(() => MultibootLoader.Load(mem, new MultibootConfig
        {
            Kernel = MakeElf32(), Modules = [new MultibootModule(new byte[4 << 20], "", "big.mod")],
        }));
        AssertOneLine(e, "big.mod");
    }
}

public class MultibootElf64Tests
{
    [Fact]
    public void Elf64_kernel_with_32_bit_entry_loads_at_paddr()
    {
        // As GRUB allows: an x86-64 ELF whose Multiboot entry is 32-bit code below 4 GiB.
        var b = new byte[0x2000];
        b[0] = 0x7F; b[1] = (byte)'E'; b[2] = (byte)'L'; b[3] = (byte)'F';
        b[4] = 2; b[5] = 1; b[6] = 1;
        W16(b, 16, 2); W16(b, 18, 62); W32(b, 20, 1);
        W64(b, 24, 0x200040);                    // e_entry
        W64(b, 32, 64);                          // e_phoff
        W16(b, 52, 64); W16(b, 54, 56); W16(b, 56, 1);
        W32(b, 64, 1); W64(b, 64 + 8, 0x1000); W64(b, 64 + 16, 0x200000); W64(b, 64 + 24, 0x200000);
        W64(b, 64 + 32, 0x1000); W64(b, 64 + 40, 0x1800);
        for (int i = 0x1000; i < 0x2000; i++) b[i] = (byte)(i + 9);
        W32(b, 0x1000, 0x1BADB002); W32(b, 0x1004, 3); W32(b, 0x1008, unchecked(0u - 0x1BADB002u - 3u));
        using var mem = Ram(16 << 20);
        var r = Multiboot.MultibootLoader.Load(mem, new Multiboot.MultibootConfig { Kernel = b });
        Assert.Equal(b[0x1000..], Bytes(mem, 0x200000, 0x1000));
        Assert.Equal(0x200040UL, r.BootCpu.Rip);
        Assert.Equal(0x201800UL, r.KernelEnd);
    }
}
