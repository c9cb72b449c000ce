// The Multiboot header (Multiboot Specification 0.6.96, §3.1): a 32-bit aligned structure in
// the first 8192 bytes of the OS image, magic 0x1BADB002, flags, and a checksum such that
// magic + flags + checksum = 0 (mod 2^32). With flags bit 16 the a.out-kludge address fields
// follow; with bit 2 the video-mode fields.
using System.Buffers.Binary;
using SharpVisor.Core;

namespace SharpVisor.Boot.Multiboot;

public sealed class MultibootHeader
{
    public const uint Magic = 0x1BAD_B002;
    public const int SearchLimit = 8192;
    public const uint FlagPageAlign = 1 << 0, FlagMemoryInfo = 1 << 1, FlagVideoMode = 1 << 2, FlagAoutKludge = 1 << 16;
    /// <summary>Bits 0–15 are requirements; these three are the ones this loader honours (video with a note).</summary>
    public const uint SupportedRequiredFlags = FlagPageAlign | FlagMemoryInfo | FlagVideoMode;

    /// <summary>File offset of the header.</summary>
    public int Offset { get; private init; }
    public uint Flags { get; private init; }
    public uint HeaderAddr { get; private init; }
    public uint LoadAddr { get; private init; }
    public uint LoadEndAddr { get; private init; }
    public uint BssEndAddr { get; private init; }
    public uint EntryAddr { get; private init; }
    public bool HasAoutKludge => (Flags & FlagAoutKludge) != 0;

    /// <summary>The first valid header (magic and checksum) in the first 8 KiB, or null.</summary>
    public static MultibootHeader? Find(ReadOnlySpan<byte> image)
    {
        int limit = Math.Min(image.Length, SearchLimit) - 12;
        for (int o = 0; o <= limit; o += 4)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(image[o..]) != Magic) continue;
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 4)..]);
            uint checksum = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 8)..]);
            if (unchecked(Magic + flags + checksum) != 0) continue;
            var h = new MultibootHeader { Offset = o, Flags = flags };
            if ((flags & FlagAoutKludge) != 0 && o + 32 <= image.Length)
            {
                return new MultibootHeader
                {
                    Offset = o, Flags = flags,
                    HeaderAddr = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 12)..]),
                    LoadAddr = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 16)..]),
                    LoadEndAddr = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 20)..]),
                    BssEndAddr = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 24)..]),
                    EntryAddr = BinaryPrimitives.ReadUInt32LittleEndian(image[(o + 28)..]),
                };
            }
            return h;
        }
        return null;
    }

    /// <summary>As <see cref="Find"/>, but a missing header is an <see cref="ImageFormatException"/>.</summary>
    public static MultibootHeader Parse(ReadOnlySpan<byte> image, string name)
    {
        var h = Find(image) ?? throw new ImageFormatException($"{name}: no Multiboot header (magic 0x1badb002 with a valid checksum) in the first 8192 bytes");
        if (h.HasAoutKludge && h.Offset + 32 > image.Length)
            throw new ImageFormatException($"{name}: the Multiboot header at 0x{h.Offset:x} is cut short before its address fields");
        uint unsupported = h.Flags & 0xFFFF & ~SupportedRequiredFlags;
        if (unsupported != 0)
            throw new ImageFormatException($"{name}: the Multiboot header requires features this loader lacks (flags 0x{unsupported:x})");
        return h;
    }
}
