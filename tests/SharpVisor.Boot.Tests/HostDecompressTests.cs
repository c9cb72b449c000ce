// Host-side decompression of a bzImage's payload (boot.rst payload_offset/payload_length) and
// direct entry into the vmlinux: the XZ decoder against streams made by xz(1) 5.4, synthetic
// bzImages around gzip- and xz-wrapped ELF kernels, corrupt payloads, and Debian's kernels
// when guests/fetch has put them in the cache (tests/Shared/GuestImages.cs: skipped when missing,
// a failure under CI).
using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using SharpVisor.Boot.LinuxBoot;
using SharpVisor.Boot.LinuxBoot.Compression;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using SharpVisor.Tests.Shared;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

public class HostDecompressTests
{
    // ------------------------------------------------------------------ test images

    private const ulong TextPaddr = 0x100_0000, DataPaddr = 0x140_0000, EntryPaddr = TextPaddr + 0x40;
    private const int TextSize = 0x2000, DataFileSize = 0x800, DataMemSize = 0x3000;
    private const int StubOffset = 0x200; // payload_offset: the payload follows a stub "decompressor"

    private readonly record struct Seg(ulong Paddr, byte[] Bytes, ulong MemSize);

    private static byte[] Pattern(int n, int seed)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)(i * 13 + seed + (i >> 9));
        return b;
    }

    private static readonly byte[] TextBytes = Pattern(TextSize, 1);
    private static readonly byte[] DataBytes = Pattern(DataFileSize, 77);

    /// <summary>An ELF executable (System V gABI) with PT_LOAD segments at page-aligned file offsets.</summary>
    private static byte[] MakeElf(bool is64 = true, ushort machine = 62, ulong entry = EntryPaddr, Seg[]? segs = null)
    {
        segs ??= [new Seg(TextPaddr, TextBytes, TextSize), new Seg(DataPaddr, DataBytes, DataMemSize)];
        int ehsize = is64 ? 64 : 52, phentsize = is64 ? 56 : 32;
        int offset = 0x1000;
        var offsets = new int[segs.Length];
        for (int i = 0; i < segs.Length; i++) { offsets[i] = offset; offset += (segs[i].Bytes.Length + 0xFFF) & ~0xFFF; }
        var f = new byte[offset];
        "\x7F"u8.CopyTo(f); "ELF"u8.CopyTo(f.AsSpan(1));
        f[4] = (byte)(is64 ? 2 : 1); f[5] = 1; f[6] = 1;
        W16(f, 16, 2); W16(f, 18, machine); W32(f, 20, 1);
        if (is64)
        {
            W64(f, 24, entry); W64(f, 32, (ulong)ehsize);
            W16(f, 52, (ushort)ehsize); W16(f, 54, (ushort)phentsize); W16(f, 56, (ushort)segs.Length);
        }
        else
        {
            W32(f, 24, (uint)entry); W32(f, 28, (uint)ehsize);
            W16(f, 40, (ushort)ehsize); W16(f, 42, (ushort)phentsize); W16(f, 44, (ushort)segs.Length);
        }
        for (int i = 0; i < segs.Length; i++)
        {
            int ph = ehsize + i * phentsize;
            var s = segs[i];
            ulong vaddr = (is64 ? 0xFFFF_FFFF_8000_0000UL : 0xC000_0000UL) + s.Paddr;
            W32(f, ph, 1); // PT_LOAD
            if (is64)
            {
                W32(f, ph + 4, 7); W64(f, ph + 8, (ulong)offsets[i]); W64(f, ph + 16, vaddr); W64(f, ph + 24, s.Paddr);
                W64(f, ph + 32, (ulong)s.Bytes.Length); W64(f, ph + 40, s.MemSize); W64(f, ph + 48, 0x1000);
            }
            else
            {
                W32(f, ph + 4, (uint)offsets[i]); W32(f, ph + 8, (uint)vaddr); W32(f, ph + 12, (uint)s.Paddr);
                W32(f, ph + 16, (uint)s.Bytes.Length); W32(f, ph + 20, (uint)s.MemSize); W32(f, ph + 24, 7); W32(f, ph + 28, 0x1000);
            }
            s.Bytes.CopyTo(f, offsets[i]);
        }
        return f;
    }

    private static byte[] Gzip(byte[] data)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Optimal)) gz.Write(data);
        return ms.ToArray();
    }

    /// <summary>
    /// A valid .xz stream (format 1.2.0) whose one block holds LZMA2 *uncompressed* chunks (control
    /// 1 then 2) and a CRC32 check; followed, as in a kernel, by the decompressed size.
    /// </summary>
    private static byte[] XzStored(byte[] data, bool appendSize = true)
    {
        var o = new List<byte>();
        o.AddRange(XzDecoder.HeaderMagic.ToArray());
        byte[] flags = [0, 1];
        o.AddRange(flags); o.AddRange(Le32(Crc32.Compute(flags)));
        // Block header: size byte (12/4 - 1), flags (one filter), LZMA2 id 0x21, 1 property byte (dict 8 MiB), pad, CRC32.
        byte[] bh = [2, 0x00, 0x21, 0x01, 0x12, 0, 0, 0];
        o.AddRange(bh); o.AddRange(Le32(Crc32.Compute(bh)));
        int start = o.Count;
        for (int p = 0; p < data.Length; p += 0x10000)
        {
            int n = Math.Min(0x10000, data.Length - p);
            o.Add((byte)(p == 0 ? 1 : 2)); o.Add((byte)((n - 1) >> 8)); o.Add((byte)(n - 1));
            o.AddRange(data.AsSpan(p, n).ToArray());
        }
        o.Add(0);
        int compressed = o.Count - start;
        while ((o.Count & 3) != 0) o.Add(0);
        o.AddRange(Le32(Crc32.Compute(data)));
        // Index: indicator, one record (unpadded size, uncompressed size), padding, CRC32.
        var index = new List<byte> { 0 };
        Vli(index, 1); Vli(index, (ulong)(12 + compressed + 4)); Vli(index, (ulong)data.Length);
        while ((index.Count & 3) != 0) index.Add(0);
        index.AddRange(Le32(Crc32.Compute(index.ToArray())));
        o.AddRange(index);
        var footer = new List<byte>();
        footer.AddRange(Le32((uint)(index.Count / 4 - 1))); footer.AddRange(flags);
        o.AddRange(Le32(Crc32.Compute(footer.ToArray()))); o.AddRange(footer); o.Add((byte)'Y'); o.Add((byte)'Z');
        if (appendSize) o.AddRange(Le32((uint)data.Length));
        return o.ToArray();
    }

    private static byte[] Le32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); return b; }
    private static void Vli(List<byte> o, ulong v) { while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; } o.Add((byte)v); }

    /// <summary>The synthetic bzImage of LinuxBootTests with its protected-mode part replaced by stub + payload.</summary>
    private static byte[] MakeBzImageWithPayload(byte[] payload, ushort version = 0x020F, int? declaredLength = null)
    {
        var setup = LinuxBootTests.MakeBzImage(version: version).AsSpan(0, 5 * 512).ToArray();
        var pm = new byte[(StubOffset + payload.Length + 0x40 + 15) & ~15]; // syssize counts 16-byte units
        Pattern(StubOffset, 200).CopyTo(pm, 0);
        payload.CopyTo(pm, StubOffset);
        var image = setup.Concat(pm).ToArray();
        W32(image, SetupHeader.Syssize, (uint)((pm.Length + 15) / 16));
        W32(image, SetupHeader.PayloadOffset, StubOffset);
        W32(image, SetupHeader.PayloadLength, (uint)(declaredLength ?? payload.Length));
        return image;
    }

    private static LinuxBootResult Load(GuestMemory mem, byte[] image, LinuxEntry entry = LinuxEntry.Long64, byte[]? initrd = null, bool onHost = true)
        => LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = BzImage.Parse(image, "t.bz"),
            Entry = entry,
            Initrd = initrd,
            CommandLine = "console=ttyS0",
            DecompressOnHost = onHost,
        });

    /// <summary>Walks the 4-level tables from CR3 (SDM Vol. 3A §4.5) to translate a linear address.</summary>
    private static ulong Translate(GuestMemory m, ulong cr3, ulong la)
    {
        ulong pml4e = U64(m, (cr3 & ~0xFFFUL) + ((la >> 39) & 511) * 8);
        Assert.True((pml4e & 1) != 0, "PML4E not present");
        ulong pdpte = U64(m, (pml4e & 0x000F_FFFF_FFFF_F000) + ((la >> 30) & 511) * 8);
        Assert.True((pdpte & 1) != 0, "PDPTE not present");
        ulong pde = U64(m, (pdpte & 0x000F_FFFF_FFFF_F000) + ((la >> 21) & 511) * 8);
        Assert.True((pde & 1) != 0 && (pde & 0x80) != 0, "PDE not a present 2 MiB page");
        return (pde & 0x000F_FFFF_FFE0_0000) | (la & 0x1F_FFFF);
    }

    // ------------------------------------------------------------------ the XZ decoder

    // xz --x86 --lzma2=preset=6,dict=64KiB --check=crc64 of BcjPattern(): LZMA, BCJ x86 and CRC64.
    private const string BcjXz = "/Td6WFoAAATm1rRGAgEEACEBCADSuXTL4ItpANVdACq6BAAMtPmFtKWGePcb/DIeky+ZNsrwkKWA70Qn+/ltyS8g9Z1zz3B16cCcq2hJpfMBj8YzMnvTvTGGbWoZfNa7l2nCUW6FK4dO/Mn5XVoTLRA9u4LrzmBScBB4Cfj4uhkstwxbyQChHJYXIXSIbgAt4vUtcPefwuJa2XV4N28SNtDUg4Yrtd2VucdFtp889a+TW1CHkMxz4L75JEMjB9TXYoIgVDVo3njnZwi/FCsjAvNWNkWm1CVdwMpCzvSDOLudqBqic++UZ/+EKogtmo4qrpcAAAAAAAAwCO640Qb2wAAB8QHqlgIATTCRUrHEZ/sCAAAAAARZWg==";
    // xz --block-size=2500 --lzma2=preset=6,lc=0,lp=2,pb=0,dict=4KiB --check=sha256 of WordPattern():
    // three blocks, literal position bits, a dictionary smaller than the data, SHA-256.
    private const string WordsXz = 
        "/Td6WFoAAArh+wyhAgAhAQAAAAA3J5fW4AnDAggSADEczWSGa3yJOvJ1eSDUP7hGEhi7MgpHxYroGqu0fh1k+5k5i8GwoR/fWO1WFisTbBVrX3z0Vw/Fh98A" +
        "lEE/PmDhtSLUz1NiqkQnavO43+yBCxLQOh+2rdcfLrkVuHyEmm2H9nEh/aTcOlKiBXPOyHsrsZjR8efN2RKYbP4D3CJ42fKvvXfvya0gD8VD7lXOq1CE3Vpu" +
        "iFIfkG6OHTTJl7jpJK4UeDG+b1xdAZN/UMVTlMcxAIGetQ8f8Mo/Jjma9smMU4DIsFCir7ldEDa3Qa7tIExG17cdTuUvEQc6za9DE6BK+Pk4YbAxGARKTgyP" +
        "gMj9N9YhP2VZcbjl54wp16OcmOdWp613xsuQjlLRkev3XQfy2E8vrnTVcFdebqELvgamK7FLQsEbCZmU4IPpKqONbhAspYVGwXPMEgaFbFFWUvSHinNZG+GV" +
        "HlU91+BWgSbP+ZkwE6of2dG0+H8RaaUiq5W9KtdhlRB7c/cZBK8WuqhgEcJFszW9gT3gQqZ/xjMOgHyr2lpc4vNrAAXxxgqIf7kyetdWH+YkLC3djLNAFKxo" +
        "+RNH1OIIfA41jkvDZNc4IG7qNgqQ1OZiTmjeexqBB0FO0kuWrQpyVAXyHpcvhEGUyNBbqEn2CdL+bzrHgFpAbaBDnbJ48ouRqwRykcSOlUaSO37Y9+4cucb8" +
        "5UUrPkA4gmO++QAADYXS2Oha68Ta3EY6k9/btF6Ob7TQIoQTCXfCyHrtFwcCACEBAAAAADcnl9bgCcMCABIAOeGAj7NAojgOJjgRTKnGGyYxpPuJC47WBLi9" +
        "4a/tiZcDLNWbA1hlq+E0VQA9/JsAFcojRumE7DcYKLcu7q8zElTx5EmkLM3Ni8brH9eUwQE9PMaBV2z8ekh31uAvrEMS9b31e/IM7CtbNiQxsa6Ymlk7JOp2" +
        "nWD37Tyf7xlDT8Qy5PgPKzTOkAZA3bMI5cvvin+coS/PChHSBWLEX3qu1sDTolGcEFb0FFRuaOQzExKPaZR94eimz//Vy53xrKwpExon8V1nUZW5WBJMnZfF" +
        "uFShpkQ5h5zVJRR+q5xIHzq2lpePQM+QxeE5L0odg8E4tiz92zjy2OG/Y1z5JI8j6J3440vLEpXgxgsxUVgM0M9Dez5rUP8JUKE5CXOyB/+oWuXvT/kfoOeo" +
        "tr5wWNgdG+Fp3eqdTcc7AOHJ0cFtfQz8wpKYlmWvu/qPHcC6mAqSTxdronAT+LP30wBiyScLCbIJmr0n8ICRSEBl+qXY5DRKac/ef8bWqxu1YVkJAqUM3ZBS" +
        "Vr+vfm0tiU5/42vDK5xN7aPzLxxz2t01n4E9TmZoLgRuyFjZLAG5y33r9Y9tHOJUO0vOBxlpuB/FUVLWHn55CvhY7zHQbQoLa/X6TQV5IGDRt9LSM2pngCij" +
        "Onp86lQiGmNjlV8fDw2O33+Hto39wYns/ESN8azgTkvfvYEAOQLjP3dBDSVsf5BTGXDwru7RAYKvCSmZbIxdrlDXAP0CACEBAAAAADcnl9bgA+cBARIANJxo" +
        "C34jYwfET31s1VCzqY2bCmfJHTqgfsmj5/5ROd3ejvOTnHzgId8YxSMD4AXMzo1BgSoig0qcOyLT+DWib3sVdmgwqj6hgtXtdDNIKX+TdOectMSCboKETcwr" +
        "bVdGNlbeqjywL33zu6QL2HfHrZemtYgTuaQk3hqOQN+oSSgRpLVQfh+FdU09oroZ2xF5MZLtAPCxxqE6sdhvcmtw02fUQlxT4b2PWKHAKn44ATDdM0tlbrz5" +
        "xwmstdGGHobil4qkbsnTXfTJBHDSotZ9xqid1bktLZ4txMy8BH3ZROF95A60pHf8FySapPVWl4JgLGkPTWkLS7P0ENFc7Lg/76YAAAAAEBgv3SPxCH631wR1" +
        "gTlBsQj9vJatfnFsa37ahqHbnkEAA7wExBO0BMQTtQLoBwAAQSvxD6sKhsoEAAAAAApZWg==";

    private static byte[] BcjPattern()
    {
        var d = new List<byte>();
        for (int i = 0; i < 3000; i++)
        {
            int rel = -d.Count - 6 + 0x40;
            d.Add(0x55); d.Add(0xE8); d.AddRange(BitConverter.GetBytes(rel)); d.Add(0xC3);
            d.AddRange(Encoding.ASCII.GetBytes($"fn{i % 97};"));
        }
        return d.ToArray();
    }

    private static byte[] WordPattern()
    {
        string[] words = ["kernel", "vmlinux", "payload", "decompress", "segment", "entry", "boot"];
        var d = new List<byte>();
        uint x = 7;
        while (d.Count < 6000)
        {
            x = (x * 1103515245 + 12345) & 0x7FFF_FFFF;
            d.AddRange(Encoding.ASCII.GetBytes(words[(x >> 16) % 7]));
            d.Add((byte)(0x20 + ((x >> 8) & 3)));
        }
        return d.Take(6000).ToArray();
    }

    [Fact]
    public void Xz_with_bcj_x86_and_crc64_decodes_to_what_xz_compressed()
    {
        var xz = Convert.FromBase64String(BcjXz);
        var outData = XzDecoder.Decode(xz, 0, out int end);
        Assert.Equal(xz.Length, end);
        Assert.Equal(BcjPattern(), outData);
    }

    [Fact]
    public void Xz_with_several_blocks_literal_position_bits_and_sha256_decodes()
    {
        var xz = Convert.FromBase64String(WordsXz);
        Assert.Equal(WordPattern(), XzDecoder.Decode(xz, 100, out int end));
        Assert.Equal(xz.Length, end);
    }

    [Fact]
    public void Xz_stored_chunks_decode_and_trailing_bytes_are_left_alone()
    {
        var data = Pattern(0x18000, 5); // two uncompressed LZMA2 chunks and a partial third
        var xz = XzStored(data);
        Assert.Equal(data, XzDecoder.Decode(xz, 16, out int end));
        Assert.Equal(xz.Length - 4, end);
    }

    [Fact]
    public void Xz_corruption_is_detected_by_the_check_or_the_decoder()
    {
        var xz = Convert.FromBase64String(BcjXz);
        // Every single-byte flip inside the compressed data must fail (range decoder, sizes or CRC64),
        // never produce wrong data silently and never throw anything but InvalidDataException.
        for (int i = 24; i < xz.Length - 60; i++)
        {
            var bad = (byte[])xz.Clone();
            bad[i] ^= 0x10;
            Assert.Throws<InvalidDataException>(() => XzDecoder.Decode(bad, 0, out _));
        }
        Assert.Throws<InvalidDataException>(() => XzDecoder.Decode(xz[..(xz.Length / 2)], 0, out _));
    }

    [Fact]
    public void Xz_unknown_filter_is_not_supported_rather_than_corrupt()
    {
        var xz = XzStored(Pattern(100, 1), appendSize: false);
        // Filter id 0x21 → 0x03 (Delta) in the block header, header CRC32 fixed up.
        Assert.Equal(0x21, xz[14]);
        xz[14] = 0x03;
        BinaryPrimitives.WriteUInt32LittleEndian(xz.AsSpan(20), Crc32.Compute(xz.AsSpan(12, 8)));
        Assert.Throws<NotSupportedException>(() => XzDecoder.Decode(xz, 0, out _));
    }

    [Fact]
    public void Crc_check_values_match_the_published_ones()
    {
        // The check value of each CRC over "123456789" (the .xz spec's CRC64 and the CRC-32/ISO-HDLC catalogue entry).
        Assert.Equal(0xCBF4_3926u, Crc32.Compute("123456789"u8));
        Assert.Equal(0x995D_C9BB_DF19_39FAUL, Crc64.Compute("123456789"u8));
    }

    // ------------------------------------------------------------------ loading the vmlinux

    [Theory]
    [InlineData("gzip")]
    [InlineData("xz")]
    public void Payload_segments_go_to_p_paddr_bss_is_zeroed_and_the_cpu_enters_startup_64(string format)
    {
        var elf = MakeElf();
        var image = MakeBzImageWithPayload(format == "gzip" ? Gzip(elf) : XzStored(elf));
        using var mem = Ram(64 << 20);
        // RAM as an earlier boot left it: the bss must be zeroed by the loader, not assumed zero.
        mem.Write(DataPaddr, Enumerable.Repeat((byte)0xCC, DataMemSize + 0x10).ToArray());
        var initrd = Pattern(0x5000, 9);
        var r = Load(mem, image, initrd: initrd);

        Assert.NotNull(r.Vmlinux);
        Assert.Equal(format == "gzip" ? PayloadFormat.Gzip : PayloadFormat.Xz, r.Vmlinux!.CompressedAs);
        Assert.True(r.Vmlinux.Is64Bit);
        Assert.Equal(TextBytes, Bytes(mem, TextPaddr, TextSize));
        Assert.Equal(DataBytes, Bytes(mem, DataPaddr, DataFileSize));
        Assert.All(Bytes(mem, DataPaddr + DataFileSize, DataMemSize - DataFileSize), b => Assert.Equal(0, b));
        Assert.Equal(0xCC, mem.Read<byte>(DataPaddr + DataMemSize)); // nothing past p_memsz touched
        Assert.Equal(TextPaddr, r.KernelGpa);
        Assert.Equal(DataPaddr + DataMemSize, r.KernelEnd);

        var s = r.BootCpu;
        Assert.Equal(EntryPaddr, s.Rip);
        Assert.Equal(r.BootParamsGpa, s.Rsi);
        Assert.Equal(LinuxLoader.EferLme | LinuxLoader.EferLma, s.Efer & (LinuxLoader.EferLme | LinuxLoader.EferLma));
        Assert.NotEqual(0UL, s.Cr0 & LinuxLoader.Cr0Pg);
        Assert.NotEqual(0UL, s.Cr4 & LinuxLoader.Cr4Pae);
        Assert.True(s.Cs.Long);
        Assert.Equal(0UL, s.Rflags & 0x200); // IF clear
        AssertSegmentMatchesGdt(mem, s, s.Cs);
        // The identity map covers the entry, the kernel's last byte and boot_params.
        Assert.Equal(EntryPaddr, Translate(mem, s.Cr3, EntryPaddr));
        Assert.Equal(r.KernelEnd - 1, Translate(mem, s.Cr3, r.KernelEnd - 1));
        Assert.Equal(r.BootParamsGpa, Translate(mem, s.Cr3, r.BootParamsGpa));

        // boot_params as the 64-bit protocol builds it, plus what the decompressor would leave.
        ulong bp = r.BootParamsGpa;
        Assert.Equal(SetupHeader.HdrSMagic, U32(mem, bp + SetupHeader.Header));
        Assert.Equal((uint)TextPaddr, U32(mem, bp + SetupHeader.Code32Start));
        Assert.Equal(0, mem.Read<byte>(bp + SetupHeader.LoadFlags) & SetupHeader.KaslrFlag);
        Assert.True(U32(mem, bp + SetupHeader.InitSize) >= r.KernelEnd - r.KernelGpa);
        Assert.Equal("console=ttyS0", CString(mem, U32(mem, bp + SetupHeader.CmdLinePtr)));
        Assert.Equal((uint)r.InitrdGpa, U32(mem, bp + SetupHeader.RamdiskImage));
        Assert.Equal((uint)initrd.Length, U32(mem, bp + SetupHeader.RamdiskSize));
        Assert.True(r.InitrdGpa >= r.KernelEnd);
        Assert.Equal(initrd, Bytes(mem, r.InitrdGpa, initrd.Length));
        Assert.NotEqual(0, mem.Read<byte>(bp + ZeroPage.E820Entries));
        Assert.Contains(r.Notes, n => n.Contains("decompressed on the host"));
    }

    [Fact]
    public void Elf32_vmlinux_is_entered_at_startup_32_in_flat_protected_mode_without_paging()
    {
        var elf = MakeElf(is64: false, machine: 3);
        using var mem = Ram(64 << 20);
        var r = Load(mem, MakeBzImageWithPayload(Gzip(elf)), LinuxEntry.Protected32);
        Assert.NotNull(r.Vmlinux);
        Assert.False(r.Vmlinux!.Is64Bit);
        Assert.Equal(3, r.Vmlinux.Machine);
        var s = r.BootCpu;
        Assert.Equal(EntryPaddr, s.Rip);
        Assert.Equal(r.BootParamsGpa, s.Rsi);
        Assert.Equal(1UL, s.Cr0 & 1);
        Assert.Equal(0UL, s.Cr0 & LinuxLoader.Cr0Pg);
        Assert.Equal(0UL, s.Efer & LinuxLoader.EferLma);
        Assert.True(s.Cs.DefaultBig);
        Assert.Equal(0UL, s.Cs.Base);
        Assert.Equal(0UL, s.Rflags & 0x200);
        Assert.Equal(0UL, r.Pml4Gpa);
        AssertSegmentMatchesGdt(mem, s, s.Cs);
        AssertSegmentMatchesGdt(mem, s, s.Ds);
        Assert.Equal(TextBytes, Bytes(mem, TextPaddr, TextSize));
        Assert.All(Bytes(mem, DataPaddr + DataFileSize, DataMemSize - DataFileSize), b => Assert.Equal(0, b));
    }

    [Fact]
    public void DecompressOnHost_false_keeps_the_in_guest_decompressor_path()
    {
        var image = MakeBzImageWithPayload(Gzip(MakeElf()));
        using var mem = Ram(128 << 20);
        var r = Load(mem, image, onHost: false);
        Assert.Null(r.Vmlinux);
        Assert.Equal(0x100_0000UL, r.KernelGpa);
        Assert.Equal(0x100_0000UL + LinuxLoader.Startup64Offset, r.BootCpu.Rip);
        Assert.Equal(image.AsSpan(5 * 512).ToArray(), Bytes(mem, 0x100_0000, image.Length - 5 * 512));
    }

    [Fact]
    public void Formats_without_a_host_decoder_and_old_protocols_fall_back_to_the_guest()
    {
        using var mem = Ram(128 << 20);
        byte[] zstd = [0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0, 0, 0];
        var r = Load(mem, MakeBzImageWithPayload(zstd));
        Assert.Null(r.Vmlinux);
        Assert.Equal(0x100_0200UL, r.BootCpu.Rip);
        Assert.Contains(r.Notes, n => n.Contains("Zstd") && n.Contains("decompresses itself"));

        byte[] lz4 = [0x02, 0x21, 0x4C, 0x18, 0, 0, 0, 0];
        Assert.Null(Load(mem, MakeBzImageWithPayload(lz4)).Vmlinux);

        // Before 2.08 payload_offset/payload_length are not header fields: no payload, no error.
        var old = Load(mem, MakeBzImageWithPayload(Gzip(MakeElf()), version: 0x0207), LinuxEntry.Protected32);
        Assert.Null(old.Vmlinux);
    }

    [Fact]
    public void An_elf64_payload_with_the_32_bit_entry_asked_for_boots_the_guest_decompressor()
    {
        using var mem = Ram(128 << 20);
        var r = Load(mem, MakeBzImageWithPayload(Gzip(MakeElf())), LinuxEntry.Protected32);
        Assert.Null(r.Vmlinux);
        Assert.Equal(0x100_0000UL, r.BootCpu.Rip);
        Assert.Contains(r.Notes, n => n.Contains("ELF64"));
    }

    [Fact]
    public void A_kernel_larger_than_RAM_or_an_initrd_that_does_not_fit_above_it_is_a_configuration_error()
    {
        var big = MakeElf(segs: [new Seg(TextPaddr, TextBytes, TextSize), new Seg(0x300_0000, DataBytes, 0x100_0000)]);
        using (var mem = Ram(32 << 20))
            AssertOneLine(Assert.Throws<ConfigurationException>(() => Load(mem, MakeBzImageWithPayload(Gzip(big)))), "at least 64 MiB");
        // Kernel ends at 20 MiB + 12 KiB; 24 MiB of RAM leave less than the 4 MiB initrd needs.
        using (var mem = Ram(24 << 20))
            AssertOneLine(Assert.Throws<ConfigurationException>(() => Load(mem, MakeBzImageWithPayload(Gzip(MakeElf())), initrd: new byte[4 << 20])), "does not fit");
    }

    // ------------------------------------------------------------------ corrupt payloads

    public static TheoryData<string, string> CorruptPayloads => new()
    {
        { "bad-magic", "magic of no kernel compression format" },
        { "truncated-xz", "corrupt" },
        { "flipped-gzip", "corrupt" },
        { "truncated-gzip", "corrupt" },
        { "arm-elf", "not x86-64" },
        { "elf32-x86-64", "not i386" },
        { "entry-outside", "outside every PT_LOAD" },
        { "not-elf", "not an ELF file" },
        { "past-end", "run past the protected-mode kernel" },
    };

    [Theory]
    [MemberData(nameof(CorruptPayloads))]
    public void A_corrupt_payload_is_an_image_format_error_of_one_line(string what, string message)
    {
        var elf = MakeElf();
        byte[] image = what switch
        {
            "bad-magic" => MakeBzImageWithPayload(Pattern(0x100, 3)),
            "truncated-xz" => MakeBzImageWithPayload(XzStored(elf)[..0x1800]),
            "flipped-gzip" => MakeBzImageWithPayload(Flip(Gzip(elf), 40)),
            "truncated-gzip" => MakeBzImageWithPayload(Gzip(elf)[..^30]),
            "arm-elf" => MakeBzImageWithPayload(Gzip(MakeElf(machine: 40))),
            "elf32-x86-64" => MakeBzImageWithPayload(Gzip(MakeElf(is64: false, machine: 62))),
            "entry-outside" => MakeBzImageWithPayload(Gzip(MakeElf(entry: 0x200_0000))),
            "not-elf" => MakeBzImageWithPayload(Gzip(Pattern(0x1000, 4))),
            "past-end" => MakeBzImageWithPayload(Gzip(elf), declaredLength: Gzip(elf).Length + 0x1000),
            _ => throw new ArgumentException(what),
        };
        using var mem = Ram(64 << 20);
        var e = Assert.Throws<ImageFormatException>(() => Load(mem, image));
        AssertOneLine(e, message);
        Assert.StartsWith("t.bz: ", e.Message);
    }

    private static byte[] Flip(byte[] b, int at) { var c = (byte[])b.Clone(); c[at] ^= 0x5A; return c; }

    // ------------------------------------------------------------------ Debian's kernels

    [Theory]
    [InlineData("amd64", (ushort)62)]
    [InlineData("i386", (ushort)3)]
    public void Debian_kernels_decompress_to_an_x86_vmlinux_and_load(string arch, ushort machine)
    {
        var path = GuestImages.Kernel(arch);
        var k = BzImage.Load(path);
        var v = Vmlinux.FromBzImage(k, out var note);
        Assert.True(v != null, note);
        Assert.Equal(machine, v!.Machine);
        Assert.Equal(machine == 62, v.Is64Bit);
        Assert.Equal(PayloadFormat.Xz, v.CompressedAs); // Debian builds with CONFIG_KERNEL_XZ
        // The size the kernel build appends after the stream.
        var pm = k.ProtectedModeKernel.Span;
        Assert.Equal(BinaryPrimitives.ReadUInt32LittleEndian(pm[(int)(k.PayloadOffset + k.PayloadLength - 4)..]), (uint)v.Image.Length);
        Assert.Contains(v.Segments, s => v.Entry >= s.Paddr && v.Entry < s.Paddr + s.FileSize);
        // Linked at LOAD_PHYSICAL_ADDR = pref_address, and fits the kernel's own init_size.
        Assert.Equal(k.PrefAddress, v.Start);
        Assert.True(v.End - v.Start <= k.InitSize);

        using var mem = Ram(512 << 20);
        var r = LinuxLoader.Load(mem, new LinuxBootConfig
        {
            Kernel = k,
            Entry = v.Is64Bit ? LinuxEntry.Long64 : LinuxEntry.Protected32,
            Initrd = new byte[1 << 20],
            CommandLine = "console=ttyS0",
        });
        Assert.NotNull(r.Vmlinux);
        Assert.Equal(v.Entry, r.BootCpu.Rip);
        Assert.Equal(r.BootParamsGpa, r.BootCpu.Rsi);
        Assert.Equal(v.Is64Bit, (r.BootCpu.Efer & LinuxLoader.EferLma) != 0);
        var first = v.Segments[0];
        Assert.Equal(v.Image.AsSpan((int)first.Offset, 4096).ToArray(), Bytes(mem, first.Paddr, 4096));
        Assert.True(r.InitrdGpa >= r.KernelEnd);
    }
}
