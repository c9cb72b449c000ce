// The kernel inside a bzImage, decompressed on the host. Linux boot protocol 2.08+
// (Documentation/arch/x86/boot.rst, "payload_offset"/"payload_length"): the protected-mode
// part holds the compressed vmlinux at payload_offset, payload_length bytes, and
// "the payload may be compressed. The format of both the compressed and uncompressed data
// should be determined using the standard magic numbers" — gzip 1F 8B, bzip2 42 5A, LZMA
// 5D 00, XZ FD 37 7A 58 5A 00, LZ4 02 21, zstd 28 B5 2F FD; "the uncompressed payload is
// currently always ELF". The vmlinux is an ELF executable whose PT_LOAD segments give their
// physical load addresses (p_paddr) and whose e_entry is the physical address of startup_64
// (x86-64, arch/x86/kernel/head_64.S) or startup_32 (i386, head_32.S): arch/x86/kernel/
// vmlinux.lds.S says ENTRY(phys_startup_64) / ENTRY(phys_startup_32).
// Deliberate choices:
// - gzip (System.IO.Compression) and XZ (the decoder in Compression/) are decompressed here.
//   zstd, bzip2, LZMA, LZO and LZ4 have no host decoder (the NuGet copy this project builds
//   from holds no managed zstd or LZ4 package): those kernels decompress themselves, as
//   before, and FromBzImage says so in a note.
// - An uncompressed ELF payload is taken as it is.
// - A payload the header declares but whose magic is none of the above, a stream that is
//   truncated or fails its check, and an ELF that is not an x86 executable with its entry
//   in a PT_LOAD segment are ImageFormatException: the file is damaged, and the in-guest
//   decompressor would fail on it just the same, later and less clearly.
// - Formats whose stream does not carry the decompressed size rely on the 4 bytes the
//   kernel build appends to the payload (scripts/Makefile.lib size_append; gzip's ISIZE is
//   the same field), used only to size the output buffer.
using System.Buffers.Binary;
using System.IO.Compression;
using SharpVisor.Boot.LinuxBoot.Compression;
using SharpVisor.Boot.Multiboot;
using SharpVisor.Core;

namespace SharpVisor.Boot.LinuxBoot;

public enum PayloadFormat { None, Elf, Gzip, Xz, Zstd, Bzip2, Lzma, Lzo, Lz4 }

/// <summary>One PT_LOAD segment of a vmlinux: <c>FileSize</c> bytes from <c>Offset</c> go to <c>Paddr</c>, then zeros up to <c>MemSize</c>.</summary>
public readonly record struct VmlinuxSegment(ulong Offset, ulong Paddr, ulong FileSize, ulong MemSize)
{
    public ulong End => Paddr + MemSize;
}

/// <summary>A loaded vmlinux without its bytes.</summary>
public sealed record VmlinuxInfo(PayloadFormat CompressedAs, bool Is64Bit, ushort Machine, ulong Entry, ulong Start, ulong End, IReadOnlyList<VmlinuxSegment> Segments);

public sealed class Vmlinux
{
    public const ushort EmI386 = 3, EmX86_64 = 62;
    /// <summary>Payload sizes beyond this are corrupt headers, not kernels.</summary>
    private const int MaxDecompressed = 1 << 30;

    public string Name { get; }
    /// <summary>The decompressed ELF file.</summary>
    public byte[] Image { get; }
    public PayloadFormat CompressedAs { get; }
    public bool Is64Bit { get; }
    /// <summary>e_machine: 62 (EM_X86_64) or 3 (EM_386).</summary>
    public ushort Machine { get; }
    /// <summary>e_entry: the physical address of startup_64 or startup_32.</summary>
    public ulong Entry { get; }
    public IReadOnlyList<VmlinuxSegment> Segments { get; }
    /// <summary>Lowest p_paddr of any PT_LOAD segment.</summary>
    public ulong Start { get; }
    /// <summary>End of the highest segment in memory (p_paddr + p_memsz): the kernel's bss and brk end here.</summary>
    public ulong End { get; }

    private Vmlinux(string name, byte[] image, PayloadFormat format)
    {
        Name = name;
        Image = image;
        CompressedAs = format;
        var d = image.AsSpan();
        if (!ElfImage.IsElf(d)) throw Bad("is not an ELF file (no 7F 'E' 'L' 'F' magic)");
        if (d.Length < 20) throw Bad("is too short for an ELF header");
        Is64Bit = d[4] == 2;
        Machine = BinaryPrimitives.ReadUInt16LittleEndian(d[18..]);
        if (Machine != (Is64Bit ? EmX86_64 : EmI386))
            throw Bad($"is an ELF{(Is64Bit ? "64" : "32")} file for machine {Machine}, not {(Is64Bit ? "x86-64 (62)" : "i386 (3)")}");
        var elf = new ElfImage(d, $"{name}: the decompressed vmlinux");
        Entry = elf.Entry;

        var segs = new List<VmlinuxSegment>(elf.Segments.Count);
        ulong start = ulong.MaxValue, end = 0;
        bool entryInside = false;
        foreach (var s in elf.Segments)
        {
            if (s.Paddr + s.MemSize < s.Paddr || s.Paddr + s.MemSize > BzImage.MaximumLoadAddress)
                throw Bad($"has a PT_LOAD segment at physical 0x{s.Paddr:x} (+0x{s.MemSize:x}) that does not end below 4 GiB");
            segs.Add(new VmlinuxSegment(s.Offset, s.Paddr, s.FileSize, s.MemSize));
            start = Math.Min(start, s.Paddr);
            end = Math.Max(end, s.Paddr + s.MemSize);
            if (Entry >= s.Paddr && Entry < s.Paddr + s.FileSize) entryInside = true;
        }
        segs.Sort((a, b) => a.Paddr.CompareTo(b.Paddr));
        for (int i = 1; i < segs.Count; i++)
            if (segs[i].Paddr < segs[i - 1].End)
                throw Bad($"has PT_LOAD segments overlapping at physical 0x{segs[i].Paddr:x}");
        if (!entryInside) throw Bad($"has its entry point 0x{Entry:x} outside every PT_LOAD segment's physical range");
        Segments = segs;
        Start = start;
        End = end;
    }

    public VmlinuxInfo Info => new(CompressedAs, Is64Bit, Machine, Entry, Start, End, Segments);

    private ImageFormatException Bad(string what) => new($"{Name}: the decompressed vmlinux {what}");

    /// <summary>The format of a payload by its magic number (boot.rst, payload_offset).</summary>
    public static PayloadFormat Identify(ReadOnlySpan<byte> p)
    {
        if (p.StartsWith(XzDecoder.HeaderMagic)) return PayloadFormat.Xz;
        if (p.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B])) return PayloadFormat.Gzip;
        if (p.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD])) return PayloadFormat.Zstd;
        if (p.StartsWith((ReadOnlySpan<byte>)[0x7F, (byte)'E', (byte)'L', (byte)'F'])) return PayloadFormat.Elf;
        if (p.StartsWith("BZh"u8)) return PayloadFormat.Bzip2;
        if (p.StartsWith((ReadOnlySpan<byte>)[0x5D, 0x00, 0x00])) return PayloadFormat.Lzma;
        if (p.StartsWith((ReadOnlySpan<byte>)[0x89, (byte)'L', (byte)'Z', (byte)'O'])) return PayloadFormat.Lzo;
        // The kernel's LZ4 uses the legacy frame (lz4 -l): magic 0x184C2102 little-endian.
        if (p.StartsWith((ReadOnlySpan<byte>)[0x02, 0x21, 0x4C, 0x18])) return PayloadFormat.Lz4;
        return PayloadFormat.None;
    }

    /// <summary>
    /// Decompresses the bzImage's payload. Returns null, with <paramref name="note"/> saying why,
    /// when the image has no payload (protocol before 2.08 or payload_length 0) or one in a format
    /// with no host decoder; throws ImageFormatException for a damaged payload.
    /// </summary>
    public static Vmlinux? FromBzImage(BzImage k, out string note)
    {
        if (k.PayloadLength == 0)
        {
            note = k.ProtocolVersion < 0x0208
                ? $"{k.Name}: protocol {k.VersionText} declares no payload (2.08+ needed), so the kernel decompresses itself"
                : $"{k.Name}: the setup header declares no payload, so the kernel decompresses itself";
            return null;
        }
        var pm = k.ProtectedModeKernel;
        if ((ulong)k.PayloadOffset + k.PayloadLength > (ulong)pm.Length)
            throw new ImageFormatException(
                $"{k.Name}: payload_offset 0x{k.PayloadOffset:x} + payload_length 0x{k.PayloadLength:x} run past the protected-mode kernel's 0x{pm.Length:x} bytes");
        var payload = pm.Slice((int)k.PayloadOffset, (int)k.PayloadLength).Span;
        var format = Identify(payload);
        byte[] elf;
        try
        {
            switch (format)
            {
                case PayloadFormat.Elf:
                    elf = payload.ToArray();
                    break;
                case PayloadFormat.Gzip:
                    elf = Gunzip(payload);
                    break;
                case PayloadFormat.Xz:
                    elf = XzDecoder.Decode(payload.ToArray(), SizeHint(payload), out _);
                    break;
                case PayloadFormat.None:
                    throw new ImageFormatException(
                        $"{k.Name}: the payload at 0x{k.PayloadOffset:x} starts with {Convert.ToHexString(payload[..Math.Min(6, payload.Length)])}, the magic of no kernel compression format");
                default:
                    note = $"{k.Name}: {format} payload has no host decoder, so the kernel decompresses itself";
                    return null;
            }
        }
        catch (InvalidDataException e)
        {
            throw new ImageFormatException($"{k.Name}: the {format} payload is corrupt ({e.Message})");
        }
        catch (NotSupportedException e)
        {
            note = $"{k.Name}: {format} payload uses a feature this host decoder lacks ({e.Message}), so the kernel decompresses itself";
            return null;
        }
        var v = new Vmlinux(k.Name, elf, format);
        note = $"{k.Name}: {format} payload decompressed on the host ({elf.Length >> 10} KiB ELF{(v.Is64Bit ? "64" : "32")} vmlinux)";
        return v;
    }

    /// <summary>Parses an already decompressed vmlinux ELF (tests, and kernels given as vmlinux).</summary>
    public static Vmlinux Parse(byte[] elf, string name) => new(name, elf, PayloadFormat.Elf);

    /// <summary>The 4 bytes after the stream: the decompressed size, as the kernel build appends it.</summary>
    private static int SizeHint(ReadOnlySpan<byte> payload)
        => payload.Length < 4 ? 0 : (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(payload[^4..]), MaxDecompressed);

    private static byte[] Gunzip(ReadOnlySpan<byte> payload)
    {
        using var input = new MemoryStream(payload.ToArray(), writable: false);
        using var gz = new GZipStream(input, CompressionMode.Decompress);
        using var output = new MemoryStream(Math.Max(SizeHint(payload), 4096));
        var buf = new byte[1 << 16];
        int n;
        while ((n = gz.Read(buf, 0, buf.Length)) > 0)
        {
            if (output.Length + n > MaxDecompressed) throw new InvalidDataException($"decompressed data would exceed {MaxDecompressed >> 20} MiB");
            output.Write(buf, 0, n);
        }
        if (output.Length == 0) throw new InvalidDataException("the gzip stream holds no data");
        var elf = output.Length == output.Capacity ? output.GetBuffer() : output.ToArray();
        // The member trailer (RFC 1952 §2.3.1: CRC32, ISIZE) is the payload's last 8 bytes. Checked
        // here because a DeflateStream cut short may end quietly instead of failing.
        if (payload.Length < 18
            || BinaryPrimitives.ReadUInt32LittleEndian(payload[^4..]) != (uint)elf.Length
            || BinaryPrimitives.ReadUInt32LittleEndian(payload[^8..]) != Crc32.Compute(elf))
            throw new InvalidDataException("the gzip trailer's CRC32 or size does not match the data: truncated or damaged");
        return elf;
    }
}
