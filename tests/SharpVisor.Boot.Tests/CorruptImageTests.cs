using SharpVisor.Boot.LinuxBoot;
using SharpVisor.Boot.Multiboot;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

/// <summary>
/// Truncated, garbage and absurd images: a loader either loads them or refuses them with a
/// one-line ImageFormatException / ConfigurationException naming the file. Anything else escaping
/// (IndexOutOfRange, ArgumentOutOfRange, Overflow, a plain VmmException from a guest-memory write
/// the loader did not check) fails these tests.
/// </summary>
public class CorruptImageTests
{
    private const string Name = "/images/odd";

    /// <summary>Runs <paramref name="load"/>; true when it loaded, false when it refused in the allowed way.</summary>
    private static bool LoadsOrRefuses(Action load)
    {
        try
        {
            load();
            return true;
        }
        catch (Exception e) when (e is ImageFormatException or ConfigurationException)
        {
            AssertOneLine(e, Name);
            return false;
        }
    }

    private static void LoadLinux(GuestMemory mem, byte[] image, byte[]? initrd = null, string cmdline = "console=ttyS0", LinuxEntry entry = LinuxEntry.Long64)
        => LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(image, Name), Initrd = initrd, InitrdName = Name, CommandLine = cmdline, Entry = entry,
        });

    private static void LoadMultiboot(GuestMemory mem, byte[] image)
        => MultibootLoader.Load(mem, new MultibootConfig { Kernel = image, KernelName = Name });

    // ---- Linux bzImage ----

    [Fact]
    public void Every_truncation_of_a_bzimage_is_refused_as_an_image_error()
    {
        var full = LinuxBootTests.MakeBzImage();
        using var mem = Ram(64 << 20);
        Assert.True(LoadsOrRefuses(() => LoadLinux(mem, full)));
        // syssize covers the whole protected-mode kernel, so every shorter file is truncated.
        for (int length = 0; length < full.Length; length += length < 0x400 ? 1 : 97)
        {
            var e = Assert.Throws<ImageFormatException>(() => BzImage.Parse(full[..length], Name));
            AssertOneLine(e, Name);
        }
    }

    public static TheoryData<string, Func<byte[], byte[]>, Type, string> AbsurdBzImages() => new()
    {
        { "pref_address above 4 GiB", b => { W64(b, SetupHeader.PrefAddress, 0xFFFF_FFFF_FFFF_F000); return b; }, typeof(ImageFormatException), "pref_address" },
        { "pref_address below 1 MiB", b => { W64(b, SetupHeader.PrefAddress, 0x1000); return b; }, typeof(ImageFormatException), "pref_address" },
        { "pref_address just below 4 GiB", b => { W64(b, SetupHeader.PrefAddress, 0xFFE0_0000); return b; }, typeof(ConfigurationException), "RAM below 4 GiB" },
        { "init_size 4 GiB", b => { W32(b, SetupHeader.InitSize, uint.MaxValue); return b; }, typeof(ConfigurationException), "init_size" },
        { "syssize 4 GiB", b => { W32(b, SetupHeader.Syssize, uint.MaxValue); return b; }, typeof(ImageFormatException), "truncated" },
        { "setup_sects 255", b => { b[SetupHeader.SetupSects] = 255; return b; }, typeof(ImageFormatException), "truncated" },
        { "header length 0", b => { b[SetupHeader.Jump + 1] = 0; return b; }, typeof(ImageFormatException), "before its version" },
        { "kernel_alignment 0", b => { W32(b, SetupHeader.KernelAlignment, 0); return b; }, typeof(ImageFormatException), "kernel_alignment" },
        { "initrd_addr_max 0", b => { W32(b, SetupHeader.InitrdAddrMax, 0); return b; }, typeof(ConfigurationException), "initrd" },
        { "cmdline_size 0", b => { W32(b, SetupHeader.CmdlineSize, 0); return b; }, typeof(ConfigurationException), "command line" },
    };

    [Theory]
    [MemberData(nameof(AbsurdBzImages))]
    public void Absurd_bzimage_header_fields_are_one_line_errors(string what, Func<byte[], byte[]> corrupt, Type expectedType, string expected)
    {
        using var mem = Ram(64 << 20);
        var image = corrupt(LinuxBootTests.MakeBzImage());
        var e = Assert.ThrowsAny<VmmException>(() => LoadLinux(mem, image, initrd: new byte[0x1000]));
        Assert.True(e.GetType() == expectedType, $"{what}: {e.GetType().Name}: {e.Message}");
        AssertOneLine(e, Name);
        Assert.True(e.Message.Contains(expected), $"{what}: '{e.Message}' lacks '{expected}'");
    }

    [Fact]
    public void Absurd_kernel_version_pointer_is_ignored()
    {
        var b = LinuxBootTests.MakeBzImage();
        W16(b, SetupHeader.KernelVersion, 0xFFFF);
        Assert.Null(BzImage.Parse(b, Name).KernelVersion);
    }

    [Fact]
    public void Initrd_larger_than_all_ram_is_a_configuration_error()
    {
        using var mem = Ram(32 << 20);
        var e = Assert.Throws<ConfigurationException>(() => LoadLinux(mem, LinuxBootTests.MakeBzImage(), initrd: new byte[40 << 20]));
        AssertOneLine(e, Name);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_setup_header_bytes_load_or_give_one_line_errors(int seed)
    {
        var rng = new Random(seed);
        using var mem = Ram(64 << 20);
        int loaded = 0, refused = 0;
        for (int i = 0; i < 400; i++)
        {
            var b = LinuxBootTests.MakeBzImage();
            // Scramble a few bytes of the setup header (0x1F1–0x26B), keeping the magic most of the time.
            for (int k = rng.Next(1, 6); k > 0; k--) b[rng.Next(SetupHeader.SetupSects, SetupHeader.MaxEnd)] = (byte)rng.Next(256);
            if (rng.Next(4) != 0)
            {
                W32(b, SetupHeader.Header, SetupHeader.HdrSMagic);
                W16(b, SetupHeader.BootFlag, SetupHeader.BootFlagMagic);
            }
            var entry = rng.Next(2) == 0 ? LinuxEntry.Long64 : LinuxEntry.Protected32;
            if (LoadsOrRefuses(() => LoadLinux(mem, b, initrd: new byte[rng.Next(1, 0x4000)], entry: entry))) loaded++;
            else refused++;
        }
        // Both outcomes happen: the scrambling neither always breaks nor never breaks the image.
        Assert.True(loaded > 0 && refused > 0, $"loaded {loaded}, refused {refused}");
    }

    // ---- Multiboot ----

    [Fact]
    public void Every_truncation_of_a_multiboot_elf_loads_only_when_its_segments_are_whole()
    {
        var full = MultibootTests.MakeElf32();
        using var mem = Ram(16 << 20);
        const int SegmentsEnd = 0x2800; // the data segment's file bytes end here; the rest is padding
        for (int length = 0; length <= full.Length; length += length < 0x100 ? 1 : 61)
        {
            bool loaded = LoadsOrRefuses(() => LoadMultiboot(mem, full[..length]));
            Assert.True(loaded == length >= SegmentsEnd, $"length 0x{length:x}: loaded {loaded}");
        }
    }

    /// <summary>An ELF64 kernel with one PT_LOAD of <paramref name="fileSize"/>/<paramref name="memSize"/> at <paramref name="paddr"/>.</summary>
    private static byte[] Elf64(ulong paddr = 0x200000, ulong fileSize = 0x1000, ulong memSize = 0x1800,
        ulong phoff = 64, ushort phentsize = 56, ushort phnum = 1, ulong offset = 0x1000)
    {
        var b = new byte[0x2000];
        b[0] = 0x7F; b[1] = (byte)'E'; b[2] = (byte)'L'; b[3] = (byte)'F';
        b[4] = 2; b[5] = 1; b[6] = 1;
        W16(b, 16, 2); W16(b, 18, 62); W32(b, 20, 1);
        W64(b, 24, 0x200040);
        W64(b, 32, phoff);
        W16(b, 52, 64); W16(b, 54, phentsize); W16(b, 56, phnum);
        W32(b, 64, 1); W64(b, 64 + 8, offset); W64(b, 64 + 16, paddr); W64(b, 64 + 24, paddr);
        W64(b, 64 + 32, fileSize); W64(b, 64 + 40, memSize);
        W32(b, 0x1000, 0x1BADB002); W32(b, 0x1004, 3); W32(b, 0x1008, unchecked(0u - 0x1BADB002u - 3u));
        return b;
    }

    public static TheoryData<string, Func<byte[]>, Type, string> AbsurdMultibootKernels() => new()
    {
        // phentsize × phnum overflows 32 bits and wraps back inside the file when added to phoff.
        { "phentsize × phnum wraps", () => Elf64(phoff: 0x20000, phentsize: 0xFFFF, phnum: 0xFFFF), typeof(ImageFormatException), "program headers" },
        { "phoff near 2^64", () => Elf64(phoff: 0xFFFF_FFFF_FFFF_FFC0), typeof(ImageFormatException), "program headers" },
        { "p_offset near 2^64", () => Elf64(offset: 0xFFFF_FFFF_FFFF_F000), typeof(ImageFormatException), "past the end" },
        { "p_paddr wraps past 2^64", () => Elf64(paddr: 0xFFFF_FFFF_FFFF_F000, memSize: 0x2000), typeof(ImageFormatException), "4 GiB" },
        { "p_memsz 2^64 - 1", () => Elf64(memSize: ulong.MaxValue), typeof(ImageFormatException), "4 GiB" },
        { "segment just below 4 GiB", () => Elf64(paddr: 0xFFFF_F000, memSize: 0x1000), typeof(ConfigurationException), "not guest RAM" },
        { "segment in the BIOS/ACPI hole", () => Elf64(paddr: 0xE0000), typeof(ImageFormatException), "usable RAM" },
        { "segment over the EBDA", () => MultibootTests.MakeElf32(textPaddr: 0x9E000), typeof(ImageFormatException), "usable RAM" },
        { "kludge: bss to 4 GiB", () => Kludge(load: 0xFFFF_0000, loadEnd: 0, bssEnd: 0xFFFF_FFFF), typeof(ConfigurationException), "not guest RAM" },
        { "kludge: load_end below load", () => Kludge(load: 0x10_0000, loadEnd: 0x8_0000, bssEnd: 0), typeof(ImageFormatException), "load_end_addr" },
        { "kludge: header cut short", () => { var b = Kludge(load: 0x10_0000, loadEnd: 0, bssEnd: 0); return b[..24]; }, typeof(ImageFormatException), "cut short" },
    };

    /// <summary>An a.out-kludge image: the header at file offset 0, loaded at <paramref name="load"/>.</summary>
    private static byte[] Kludge(uint load, uint loadEnd, uint bssEnd)
    {
        var b = new byte[0x100];
        const uint Flags = 0x10000;
        W32(b, 0, 0x1BADB002); W32(b, 4, Flags); W32(b, 8, unchecked(0u - 0x1BADB002u - Flags));
        W32(b, 12, load); W32(b, 16, load); W32(b, 20, loadEnd); W32(b, 24, bssEnd); W32(b, 28, load);
        return b;
    }

    [Theory]
    [MemberData(nameof(AbsurdMultibootKernels))]
    public void Absurd_multiboot_fields_are_one_line_errors(string what, Func<byte[]> make, Type expectedType, string expected)
    {
        using var mem = Ram(16 << 20);
        var e = Assert.ThrowsAny<VmmException>(() => LoadMultiboot(mem, make()));
        Assert.True(e.GetType() == expectedType, $"{what}: {e.GetType().Name}: {e.Message}");
        AssertOneLine(e, Name);
        Assert.True(e.Message.Contains(expected), $"{what}: '{e.Message}' lacks '{expected}'");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_elf_header_bytes_load_or_give_one_line_errors(int seed)
    {
        var rng = new Random(seed);
        using var mem = Ram(16 << 20);
        int loaded = 0, refused = 0;
        for (int i = 0; i < 400; i++)
        {
            var b = rng.Next(2) == 0 ? MultibootTests.MakeElf32() : Elf64();
            // Scramble the ELF header and program headers (the first 0x100 bytes).
            for (int k = rng.Next(1, 6); k > 0; k--) b[rng.Next(4, 0x100)] = (byte)rng.Next(256);
            if (LoadsOrRefuses(() => LoadMultiboot(mem, b))) loaded++;
            else refused++;
        }
        Assert.True(loaded > 0 && refused > 0, $"loaded {loaded}, refused {refused}");
    }

    // ---- flat binaries ----

    [Fact]
    public void Flat_binary_whose_range_wraps_past_2_64_is_refused()
    {
        using var mem = Ram(16 << 20);
        var e = Assert.Throws<ConfigurationException>(() =>
            FlatBinaryLoader.Load(mem, new byte[0x2000], 0xFFFF_FFFF_FFFF_F000, new FlatEntry.RealMode(0, 0), Name));
        AssertOneLine(e, Name);
    }
}
