using System.Buffers.Binary;
using System.Text;
using SharpVisor.Boot.Acpi;
using SharpVisor.Boot.LinuxBoot;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.Tests.Shared;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

public class LinuxBootTests
{
    private const int PmSize = 0x3000;
    private const string VersionString = "6.99.0-test (builder@sharpvisor) #1 SMP";

    /// <summary>
    /// A synthetic bzImage: boot sector and setup header as boot.rst lays them out, setup sectors,
    /// then a protected-mode "kernel" of recognisable bytes.
    /// </summary>
    internal static byte[] MakeBzImage(ushort version = 0x020F, byte setupSects = 4, byte loadflags = SetupHeader.LoadedHigh,
        ushort xloadflags = SetupHeader.XlfKernel64 | SetupHeader.XlfCanBeLoadedAbove4G, ulong pref = 0x100_0000,
        uint initSize = 0x40_0000, uint initrdAddrMax = 0x7FFF_FFFF, uint cmdlineSize = 2047)
    {
        int sects = setupSects == 0 ? 4 : setupSects;
        var b = new byte[(sects + 1) * 512 + PmSize];
        b[0x1EF] = 0xFF;                      // sentinel, as in real images
        b[SetupHeader.SetupSects] = setupSects;
        W32(b, SetupHeader.Syssize, PmSize / 16);
        W16(b, SetupHeader.VidMode, 0xFFFF);
        W16(b, SetupHeader.BootFlag, 0xAA55);
        b[SetupHeader.Jump] = 0xEB;
        b[SetupHeader.Jump + 1] = (byte)(SetupHeader.MaxEnd - 0x202);
        W32(b, SetupHeader.Header, SetupHeader.HdrSMagic);
        W16(b, SetupHeader.Version, version);
        W16(b, SetupHeader.KernelVersion, 0x400 - 0x200);
        Encoding.ASCII.GetBytes(VersionString).CopyTo(b, 0x400);
        b[SetupHeader.LoadFlags] = loadflags;
        W32(b, SetupHeader.Code32Start, 0x100000);
        W32(b, SetupHeader.InitrdAddrMax, initrdAddrMax);
        W32(b, SetupHeader.KernelAlignment, 0x20_0000);
        b[SetupHeader.RelocatableKernel] = 1;
        b[SetupHeader.MinAlignment] = 21;
        W16(b, SetupHeader.XLoadFlags, xloadflags);
        W32(b, SetupHeader.CmdlineSize, cmdlineSize);
        W64(b, SetupHeader.PrefAddress, pref);
        W32(b, SetupHeader.InitSize, initSize);
        for (int i = 0; i < PmSize; i++) b[(sects + 1) * 512 + i] = (byte)(i * 7 + 3);
        return b;
    }

    private static byte[] Initrd(int size)
    {
        var d = new byte[size];
        for (int i = 0; i < size; i++) d[i] = (byte)(i ^ (i >> 8) ^ 0x5A);
        return d;
    }

    [Fact]
    public void Parse_reads_the_header_fields()
    {
        var k = BzImage.Parse(MakeBzImage(), "test.bz");
        Assert.Equal(0x020F, k.ProtocolVersion);
        Assert.Equal("2.15", k.VersionText);
        Assert.Equal(4, k.SetupSects);
        Assert.Equal(5 * 512, k.SetupSize);
        Assert.Equal(PmSize, k.ProtectedModeKernel.Length);
        Assert.True(k.Relocatable);
        Assert.Equal(0x20_0000u, k.KernelAlignment);
        Assert.Equal(0x100_0000UL, k.PrefAddress);
        Assert.Equal(0x40_0000u, k.InitSize);
        Assert.True(k.InitSizeFromHeader);
        Assert.Equal(2047u, k.CmdlineSize);
        Assert.True(k.Supports64BitEntry);
        Assert.Equal(VersionString, k.KernelVersion);
        Assert.Equal(SetupHeader.MaxEnd, k.HeaderEnd);
    }

    [Fact]
    public void Setup_sects_zero_means_four()
    {
        var k = BzImage.Parse(MakeBzImage(setupSects: 0), "t");
        Assert.Equal(4, k.SetupSects);
        Assert.Equal(PmSize, k.ProtectedModeKernel.Length);
    }

    [Fact]
    public void Load64_fills_boot_params_as_the_protocol_says()
    {
        using var mem = Ram(128 << 20);
        var image = MakeBzImage();
        var initrd = Initrd(0x12345);
        var acpi = AcpiTableBuilder.Build(mem, new AcpiConfig { CpuCount = 2 });
        var r = LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(image, "t"),
            Initrd = initrd,
            CommandLine = "console=ttyS0 root=/dev/vda",
            AcpiRsdpAddress = acpi.RsdpGpa,
            ExtraE820 = acpi.E820Entries,
        });
        ulong bp = r.BootParamsGpa;
        Assert.Equal(BootLayout.BootParamsGpa, bp);

        // Protected-mode kernel at pref_address.
        Assert.Equal(0x100_0000UL, r.KernelGpa);
        Assert.Equal(image.AsSpan(5 * 512).ToArray(), Bytes(mem, 0x100_0000, PmSize));

        // Setup header copied verbatim from 0x1F1, except the fields a loader writes.
        var hdr = Bytes(mem, bp + 0x1F1, SetupHeader.MaxEnd - 0x1F1);
        var written = new HashSet<int>();
        void Mark(int off, int n) { for (int i = 0; i < n; i++) written.Add(off + i); }
        Mark(SetupHeader.TypeOfLoader, 1); Mark(SetupHeader.LoadFlags, 1); Mark(SetupHeader.HeapEndPtr, 2);
        Mark(SetupHeader.Code32Start, 4); Mark(SetupHeader.RamdiskImage, 4); Mark(SetupHeader.RamdiskSize, 4);
        Mark(SetupHeader.CmdLinePtr, 4);
        for (int o = 0x1F1; o < SetupHeader.MaxEnd; o++)
            if (!written.Contains(o)) Assert.True(image[o] == hdr[o - 0x1F1], $"header byte 0x{o:x} not copied");
        Assert.Equal(0, mem.Read<byte>(bp + ZeroPage.Sentinel));

        Assert.Equal(0xFF, mem.Read<byte>(bp + SetupHeader.TypeOfLoader));
        byte lf = mem.Read<byte>(bp + SetupHeader.LoadFlags);
        Assert.Equal(SetupHeader.LoadedHigh | SetupHeader.CanUseHeap, lf);
        Assert.Equal(0xE000 - 0x200, U16(mem, bp + SetupHeader.HeapEndPtr));
        Assert.Equal(0x100_0000u, U32(mem, bp + SetupHeader.Code32Start));

        // Command line.
        uint cmd = U32(mem, bp + SetupHeader.CmdLinePtr);
        Assert.Equal((uint)BootLayout.CommandLineGpa, cmd);
        Assert.Equal(0u, U32(mem, bp + ZeroPage.ExtCmdLinePtr));
        Assert.Equal("console=ttyS0 root=/dev/vda", CString(mem, cmd));

        // initrd: page aligned, as high as possible below the end of RAM, above the kernel's init_size.
        ulong rdImage = U32(mem, bp + SetupHeader.RamdiskImage) | ((ulong)U32(mem, bp + ZeroPage.ExtRamdiskImage) << 32);
        ulong rdSize = U32(mem, bp + SetupHeader.RamdiskSize) | ((ulong)U32(mem, bp + ZeroPage.ExtRamdiskSize) << 32);
        Assert.Equal((ulong)initrd.Length, rdSize);
        Assert.Equal(0UL, rdImage & 0xFFF);
        Assert.True(rdImage + rdSize <= 128UL << 20);
        Assert.True(rdImage + rdSize > (128UL << 20) - 0x1000, "initrd not placed at the top of RAM");
        Assert.True(rdImage >= 0x100_0000UL + 0x40_0000UL, "initrd overlaps the kernel's init_size");
        Assert.Equal(initrd, Bytes(mem, rdImage, initrd.Length));
        Assert.Equal(rdImage, r.InitrdGpa);

        // e820: firmware map plus the ACPI range, sorted.
        var expected = PcMemoryLayout.E820(mem).Concat(acpi.E820Entries).OrderBy(e => e.Address).ToList();
        Assert.Equal(expected.Count, mem.Read<byte>(bp + ZeroPage.E820Entries));
        for (int i = 0; i < expected.Count; i++)
        {
            ulong e = bp + ZeroPage.E820Table + (ulong)(i * 20);
            Assert.Equal(expected[i], new E820Entry(U64(mem, e), U64(mem, e + 8), (E820Type)U32(mem, e + 16)));
        }
        Assert.Contains(expected, e => e.Type == E820Type.Acpi && e.Address == BootLayout.AcpiTablesGpa);

        Assert.Equal(acpi.RsdpGpa, U64(mem, bp + ZeroPage.AcpiRsdpAddr));
        Assert.Equal((uint)(((128UL << 20) - 0x100000) >> 10), U32(mem, bp + ZeroPage.AltMemK));
        // No VGA requested: orig_video_lines/cols zero so vgacon stays away.
        Assert.Equal(0, mem.Read<byte>(bp + ZeroPage.OrigVideoCols));
        Assert.Equal(0, mem.Read<byte>(bp + ZeroPage.OrigVideoLines));
    }

    [Fact]
    public void Load64_enters_long_mode_at_startup_64_with_the_boot_gdt()
    {
        using var mem = Ram(64 << 20);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "t") });
        var s = r.BootCpu;
        Assert.Equal(0x100_0200UL, s.Rip);
        Assert.Equal(r.BootParamsGpa, s.Rsi);
        Assert.Equal(0UL, s.Rbp); Assert.Equal(0UL, s.Rdi); Assert.Equal(0UL, s.Rbx);
        Assert.Equal(0UL, s.Rflags & (1 << 9)); // IF clear
        Assert.NotEqual(0UL, s.Cr0 & 1);          // PE
        Assert.NotEqual(0UL, s.Cr0 & (1UL << 31)); // PG
        Assert.NotEqual(0UL, s.Cr4 & (1 << 5));   // PAE
        Assert.Equal(0x500UL, s.Efer & 0x500);    // LME | LMA
        Assert.Equal(0x10, s.Cs.Selector);
        Assert.True(s.Cs.Long);
        Assert.False(s.Cs.DefaultBig);            // L=1 requires D=0
        foreach (var seg in new[] { s.Ds, s.Es, s.Ss }) Assert.Equal(0x18, seg.Selector);
        AssertSegmentMatchesGdt(mem, s, s.Cs);
        AssertSegmentMatchesGdt(mem, s, s.Ds);
        AssertSegmentMatchesGdt(mem, s, s.Ss);
        Assert.Equal(r.Pml4Gpa, s.Cr3);
    }

    /// <summary>Walks IA-32e paging (SDM Vol. 3A §4.5) the way the MMU does; null when not present.</summary>
    private static ulong? Walk(GuestMemory mem, ulong cr3, ulong va, out bool writable)
    {
        const ulong AddrMask = 0x000F_FFFF_FFFF_F000;
        writable = true;
        ulong table = cr3 & AddrMask;
        int[] shifts = [39, 30, 21, 12];
        for (int level = 0; level < 4; level++)
        {
            ulong e = U64(mem, table + ((va >> shifts[level]) & 0x1FF) * 8);
            if ((e & 1) == 0) return null;
            writable &= (e & 2) != 0;
            bool large = (e & 0x80) != 0;
            if (level == 0) Assert.False(large, "PS set in a PML4E");
            if (large || level == 3)
            {
                ulong pageMask = (1UL << shifts[level]) - 1;
                return (e & AddrMask & ~pageMask) | (va & pageMask);
            }
            table = e & AddrMask;
        }
        return null;
    }

    [Fact]
    public void Page_tables_identity_map_the_first_4_GiB()
    {
        using var mem = Ram(64 << 20);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "t") });
        ulong cr3 = r.BootCpu.Cr3;
        Assert.Equal(BootLayout.PageTablesGpa, cr3);
        var rnd = new Random(1234);
        var probes = new List<ulong> { 0, 0xFFF, 0x1000, 0x100_0200, r.BootParamsGpa, r.CommandLineGpa, 0x1F_FFFF, 0x20_0000,
            0xBFFF_FFFF, 0xC000_0000, 0xFEC0_0000, 0xFEE0_0000, 0xFFFF_FFFF };
        for (int i = 0; i < 2000; i++) probes.Add((ulong)rnd.NextInt64(0, 1L << 32));
        foreach (var va in probes)
        {
            Assert.Equal(va, Walk(mem, cr3, va, out bool w));
            Assert.True(w);
        }
        // Every 2 MiB page of the 4 GiB once (2048 PDEs).
        for (ulong va = 0; va < 1UL << 32; va += 1 << 21) Assert.Equal(va + 0x1234, Walk(mem, cr3, va + 0x1234, out _));
        Assert.Null(Walk(mem, cr3, 1UL << 32, out _));
        // The tables themselves lie where BootLayout says and are not overwritten by anything else placed.
        Assert.DoesNotContain(r.Placed, p => p.What != "page tables" && p.Gpa < cr3 + IdentityPageTables.Size && cr3 < p.End);
    }

    [Fact]
    public void Nothing_placed_overlaps()
    {
        using var mem = Ram(128 << 20);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "t"), Initrd = Initrd(1 << 20), CommandLine = "x" });
        var p = r.Placed.OrderBy(x => x.Gpa).ToList();
        for (int i = 1; i < p.Count; i++) Assert.True(p[i - 1].End <= p[i].Gpa, $"{p[i - 1]} overlaps {p[i]}");
    }

    [Fact]
    public void Load32_enters_flat_protected_mode_at_code32_start()
    {
        using var mem = Ram(64 << 20);
        // An i386-style kernel: no XLF_KERNEL_64, not relocatable at 1 MiB (pref_address 1 MiB).
        var r = LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(MakeBzImage(xloadflags: 0, pref: 0x100000), "t"),
            Entry = LinuxEntry.Protected32,
        });
        var s = r.BootCpu;
        Assert.Equal(0x100000UL, r.KernelGpa);
        Assert.Equal(0x100000UL, s.Rip);
        Assert.Equal(0x100000u, U32(mem, r.BootParamsGpa + SetupHeader.Code32Start));
        Assert.Equal(r.BootParamsGpa, s.Rsi);
        Assert.Equal(1UL, s.Cr0 & 1);
        Assert.Equal(0UL, s.Cr0 & (1UL << 31));
        Assert.Equal(0UL, s.Efer);
        Assert.Equal(0x10, s.Cs.Selector);
        Assert.True(s.Cs.DefaultBig);
        Assert.False(s.Cs.Long);
        AssertSegmentMatchesGdt(mem, s, s.Cs);
        AssertSegmentMatchesGdt(mem, s, s.Ds);
        Assert.Equal(0UL, r.Pml4Gpa);
    }

    [Fact]
    public void Old_kernels_without_pref_address_load_at_1_MiB()
    {
        using var mem = Ram(64 << 20);
        var image = MakeBzImage(version: 0x0206, xloadflags: 0);
        var k = BzImage.Parse(image, "t");
        Assert.Equal(0UL, k.PrefAddress);   // the field exists only from 2.10
        Assert.False(k.InitSizeFromHeader);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = k, Entry = LinuxEntry.Protected32 });
        Assert.Equal(0x100000UL, r.KernelGpa);
    }

    [Fact]
    public void Vga_text_console_fills_screen_info()
    {
        using var mem = Ram(64 << 20);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "t"), VgaTextConsole = true });
        ulong si = r.BootParamsGpa;
        Assert.Equal(3, mem.Read<byte>(si + ZeroPage.OrigVideoMode));
        Assert.Equal(80, mem.Read<byte>(si + ZeroPage.OrigVideoCols));
        Assert.Equal(25, mem.Read<byte>(si + ZeroPage.OrigVideoLines));
        Assert.Equal(1, mem.Read<byte>(si + ZeroPage.OrigVideoIsVga));
    }

    [Fact]
    public void Initrd_stays_below_initrd_addr_max()
    {
        using var mem = Ram(1UL << 30);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(MakeBzImage(initrdAddrMax: 0x1FFF_FFFF), "t"),
            Initrd = Initrd(0x3000),
        });
        Assert.Equal(0x2000_0000UL - 0x3000, r.InitrdGpa);
    }

    [Fact]
    public void Initrd_stays_below_the_pci_hole_with_more_than_3_GiB()
    {
        using var mem = Ram(4UL << 30);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "t"), Initrd = Initrd(0x1800) });
        // initrd_addr_max is 0x7FFFFFFF, lower than the 3 GiB end of low RAM.
        Assert.Equal(0x8000_0000UL - 0x2000, r.InitrdGpa);
        Assert.Contains(r.E820, e => e.Address == PcMemoryLayout.HighMemoryStart && e.Type == E820Type.Ram);
    }

    [Fact]
    public void Sixty_four_bit_entry_needs_xlf_kernel_64()
    {
        using var mem = Ram(64 << 20);
        var e = Assert.Throws<ImageFormatException>(() => LinuxLoader.Load(mem,
            new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(xloadflags: 0), "i386.bz") }));
        AssertOneLine(e, "i386.bz");
        Assert.Contains("XLF_KERNEL_64", e.Message);
    }

    public static TheoryData<string, Func<byte[], byte[]>, string> BadImages() => new()
    {
        { "empty", _ => [], "too short" },
        { "short", b => b[..0x100], "too short" },
        { "no HdrS", b => { b[0x202] = (byte)'X'; return b; }, "HdrS" },
        { "no 0xAA55", b => { b[0x1FE] = 0; return b; }, "boot_flag" },
        { "protocol 2.05", b => { W16(b, 0x206, 0x0205); return b; }, "2.05" },
        { "zImage", b => { b[0x211] = 0; return b; }, "zImage" },
        { "truncated kernel", b => b[..(b.Length - 0x100)], "truncated" },
        { "setup beyond file", b => { b[0x1F1] = 200; return b; }, "truncated" },
        { "header past end", b => { b[0x201] = 0xFF; return b[..0x280]; }, "truncated" },
        { "bad alignment", b => { W32(b, 0x230, 0x3000); return b; }, "kernel_alignment" },
        { "random bytes", b => { new Random(5).NextBytes(b); return b; }, "HdrS" },
    };

    [Theory]
    [MemberData(nameof(BadImages))]
    public void Bad_images_give_one_line_image_format_errors(string what, Func<byte[], byte[]> corrupt, string expected)
    {
        var e = Assert.Throws<ImageFormatException>(() => BzImage.Parse(corrupt(MakeBzImage()), "/guests/bad-vmlinuz"));
        AssertOneLine(e, "/guests/bad-vmlinuz");
        Assert.True(e.Message.Contains(expected), $"{what}: '{e.Message}' lacks '{expected}'");
    }

    [Fact]
    public void Kernel_larger_than_ram_is_a_configuration_error()
    {
        using var mem = Ram(16 << 20);   // pref_address is 16 MiB, init_size 4 MiB more
        var e = Assert.Throws<ConfigurationException>(() => LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = BzImage.Parse(MakeBzImage(), "big.bz") }));
        AssertOneLine(e, "big.bz");
    }

    [Fact]
    public void Initrd_larger_than_ram_is_a_configuration_error()
    {
        using var mem = Ram(32 << 20);
        var e = Assert.Throws<ConfigurationException>(() => LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(MakeBzImage(), "k"), Initrd = new byte[16 << 20], InitrdName = "huge.img",
        }));
        AssertOneLine(e, "huge.img");
    }

    [Fact]
    public void Command_line_longer_than_cmdline_size_is_refused()
    {
        using var mem = Ram(64 << 20);
        var k = BzImage.Parse(MakeBzImage(cmdlineSize: 16), "k");
        LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = k, CommandLine = new string('a', 16) });
        var e = Assert.Throws<ConfigurationException>(() => LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = k, CommandLine = new string('a', 17) }));
        AssertOneLine(e, "16");
    }

    [Fact]
    public void Missing_kernel_file_is_one_line()
    {
        var e = Assert.Throws<ConfigurationException>(() => BzImage.Load("/nonexistent/vmlinuz"));
        AssertOneLine(e, "/nonexistent/vmlinuz");
    }

    [Fact]
    public void Debian_kernel_header_is_understood()
    {
        var k = BzImage.Load(GuestImages.Kernel("amd64"));
        Assert.True(k.ProtocolVersion >= 0x020C, $"protocol {k.VersionText}");
        Assert.True(k.Supports64BitEntry);
        Assert.True(k.Relocatable);
        Assert.Equal(0x100_0000UL, k.PrefAddress);   // CONFIG_PHYSICAL_START on Debian amd64
        Assert.True(k.InitSize > k.ProtectedModeKernel.Length);
        Assert.Matches(@"^\d+\.\d+", k.KernelVersion ?? "");

        ulong ram = Math.Max(256UL << 20, (k.PrefAddress + k.InitSize + (64UL << 20)) & ~0xFFFFFUL);
        using var mem = Ram(ram);
        // The in-guest decompressor path; HostDecompressTests covers the default (vmlinux entered directly).
        var r = LinuxLoader.Load(mem, new LinuxBootConfig { Kernel = k, Initrd = Initrd(1 << 20), CommandLine = "console=ttyS0", DecompressOnHost = false });
        Assert.Equal(0x100_0200UL, r.BootCpu.Rip);
        Assert.Equal(k.ProtectedModeKernel.Span[..4096].ToArray(), Bytes(mem, r.KernelGpa, 4096));
        Assert.True(r.InitrdGpa >= r.KernelGpa + k.InitSize);
    }
}
