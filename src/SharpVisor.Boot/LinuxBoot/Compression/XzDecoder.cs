// .xz container decoder (The .xz File Format, version 1.2.0, tukaani.org: §2 stream header
// and footer, §3 blocks and block headers, §4 index, §5.3 filters) for what a Linux kernel
// payload holds: one stream of blocks filtered by x86 BCJ (filter 0x04, §5.3.3 "Branch/Call/
// Jump Filters for Executables") and LZMA2 (0x21), with a CRC32, CRC64 or SHA-256 check.
// Deliberate choices:
// - One stream is decoded; whatever follows it is left to the caller (a kernel payload is
//   followed by its 4-byte decompressed size, which the kernel's build appends).
// - Filters other than x86 BCJ, LZMA2 and Delta-free chains, and check types other than
//   none/CRC32/CRC64/SHA-256, are NotSupportedException: a valid file this decoder cannot
//   read (the caller falls back to another decoder), as opposed to InvalidDataException for
//   a corrupt one.
// - The index is checked against the blocks decoded (count, unpadded and uncompressed sizes)
//   and the footer against the index, as xz does; a mismatch is corruption.
using System.Buffers.Binary;
using System.Security.Cryptography;

namespace SharpVisor.Boot.LinuxBoot.Compression;

internal static class XzDecoder
{
    public static ReadOnlySpan<byte> HeaderMagic => [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00];
    private static ReadOnlySpan<byte> FooterMagic => [0x59, 0x5A];
    private const int StreamHeaderSize = 12, StreamFooterSize = 12;
    private const ulong FilterX86 = 0x04, FilterLzma2 = 0x21;
    private const byte CheckNone = 0, CheckCrc32 = 1, CheckCrc64 = 4, CheckSha256 = 10;

    /// <summary>
    /// Decodes the stream at the start of <paramref name="input"/>; <paramref name="sizeHint"/> sizes the
    /// first output buffer. Returns the decompressed bytes; <paramref name="streamEnd"/> is the offset just
    /// past the stream footer.
    /// </summary>
    public static byte[] Decode(byte[] input, int sizeHint, out int streamEnd)
    {
        if (input.Length < StreamHeaderSize + StreamFooterSize) throw new InvalidDataException("xz stream is truncated");
        if (!input.AsSpan(0, 6).SequenceEqual(HeaderMagic)) throw new InvalidDataException("no xz stream header magic");
        var flags = input.AsSpan(6, 2);
        if (Crc32.Compute(flags) != BinaryPrimitives.ReadUInt32LittleEndian(input.AsSpan(8)))
            throw new InvalidDataException("xz stream header CRC32 mismatch");
        if (flags[0] != 0 || (flags[1] & 0xF0) != 0) throw new NotSupportedException($"xz stream flags 0x{flags[0]:x2}{flags[1]:x2} are reserved");
        byte checkType = flags[1];
        int checkSize = checkType == 0 ? 0 : 4 << ((checkType - 1) / 3);
        if (checkType is not (CheckNone or CheckCrc32 or CheckCrc64 or CheckSha256))
            throw new NotSupportedException($"xz check type {checkType} is not supported");

        var output = new byte[Math.Clamp(sizeHint, 4096, Lzma2Decoder.MaxOutput)];
        int outPos = 0;
        int p = StreamHeaderSize;
        var records = new List<(ulong Unpadded, ulong Uncompressed)>();
        while (true)
        {
            if (p >= input.Length) throw new InvalidDataException("xz stream is truncated");
            if (input[p] == 0) break; // index indicator
            int blockStart = outPos;
            int headerSize = (input[p] + 1) * 4;
            if (headerSize > input.Length - p) throw new InvalidDataException("xz block header is truncated");
            var header = input.AsSpan(p, headerSize);
            if (Crc32.Compute(header[..^4]) != BinaryPrimitives.ReadUInt32LittleEndian(header[^4..]))
                throw new InvalidDataException("xz block header CRC32 mismatch");
            var (compressedSize, uncompressedSize, dictSize, bcjStart, hasBcj) = ParseBlockHeader(header);
            int dataStart = p + headerSize;

            var lzma2 = new Lzma2Decoder(dictSize, output, outPos);
            int dataEnd = lzma2.Decode(input, dataStart, input.Length);
            output = lzma2.Output;
            outPos = lzma2.OutputPos;
            ulong compressed = (ulong)(dataEnd - dataStart);
            ulong uncompressed = (ulong)(outPos - blockStart);
            if (compressedSize is { } cs && cs != compressed)
                throw new InvalidDataException($"xz block compressed size {compressed} differs from its header's {cs}");
            if (uncompressedSize is { } us && us != uncompressed)
                throw new InvalidDataException($"xz block uncompressed size {uncompressed} differs from its header's {us}");
            if (hasBcj) BcjX86.Decode(output.AsSpan(blockStart, outPos - blockStart), bcjStart);

            // Block padding to a multiple of four, then the check over the uncompressed data.
            p = dataEnd;
            while (((p - (dataStart - headerSize)) & 3) != 0)
            {
                if (p >= input.Length || input[p] != 0) throw new InvalidDataException("xz block padding is not zero");
                p++;
            }
            if (checkSize > input.Length - p) throw new InvalidDataException("xz block check is truncated");
            VerifyCheck(checkType, output.AsSpan(blockStart, outPos - blockStart), input.AsSpan(p, checkSize));
            p += checkSize;
            records.Add(((ulong)headerSize + compressed + (ulong)checkSize, uncompressed));
        }

        int indexStart = p;
        p = ReadIndex(input, p, records);
        if (input.Length - p < StreamFooterSize) throw new InvalidDataException("xz stream footer is truncated");
        var footer = input.AsSpan(p, StreamFooterSize);
        if (Crc32.Compute(footer.Slice(4, 6)) != BinaryPrimitives.ReadUInt32LittleEndian(footer))
            throw new InvalidDataException("xz stream footer CRC32 mismatch");
        if (!footer.Slice(10, 2).SequenceEqual(FooterMagic)) throw new InvalidDataException("no xz stream footer magic");
        if (!footer.Slice(8, 2).SequenceEqual(flags)) throw new InvalidDataException("xz stream footer flags differ from the header's");
        ulong backwardSize = ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(footer[4..]) + 1) * 4;
        if (backwardSize != (ulong)(p - indexStart)) throw new InvalidDataException("xz backward size does not match the index");
        streamEnd = p + StreamFooterSize;

        if (output.Length != outPos) Array.Resize(ref output, outPos);
        return output;
    }

    private static (ulong? Compressed, ulong? Uncompressed, uint DictSize, uint BcjStart, bool HasBcj) ParseBlockHeader(ReadOnlySpan<byte> h)
    {
        byte blockFlags = h[1];
        if ((blockFlags & 0x3C) != 0) throw new NotSupportedException($"xz block flags 0x{blockFlags:x2} have reserved bits set");
        int filters = (blockFlags & 3) + 1;
        int q = 2;
        var body = h[..^4];
        ulong? compressed = (blockFlags & 0x40) != 0 ? Vli(body, ref q) : null;
        ulong? uncompressed = (blockFlags & 0x80) != 0 ? Vli(body, ref q) : null;
        uint dictSize = 0, bcjStart = 0;
        bool hasBcj = false, hasLzma2 = false;
        for (int i = 0; i < filters; i++)
        {
            ulong id = Vli(body, ref q);
            ulong propsSize = Vli(body, ref q);
            if (propsSize > (ulong)(body.Length - q)) throw new InvalidDataException("xz filter properties run past the block header");
            var props = body.Slice(q, (int)propsSize);
            q += (int)propsSize;
            bool last = i == filters - 1;
            if (id == FilterLzma2 && last)
            {
                if (props.Length != 1) throw new InvalidDataException("xz LZMA2 filter properties are not one byte");
                dictSize = Lzma2Decoder.DictSizeFromProperty(props[0]);
                hasLzma2 = true;
            }
            else if (id == FilterX86 && !last && !hasBcj)
            {
                if (props.Length == 4) bcjStart = BinaryPrimitives.ReadUInt32LittleEndian(props);
                else if (props.Length != 0) throw new InvalidDataException("xz x86 BCJ filter properties are neither 0 nor 4 bytes");
                hasBcj = true;
            }
            else throw new NotSupportedException($"xz filter 0x{id:x} in position {i + 1} of {filters} is not supported (only x86 BCJ then LZMA2)");
        }
        if (!hasLzma2) throw new NotSupportedException("xz block without an LZMA2 filter");
        foreach (byte b in body[q..])
            if (b != 0) throw new InvalidDataException("xz block header padding is not zero");
        return (compressed, uncompressed, dictSize, bcjStart, hasBcj);
    }

    /// <summary>Reads and checks the index (§4) at <paramref name="p"/>; returns the offset past it.</summary>
    private static int ReadIndex(byte[] input, int p, List<(ulong Unpadded, ulong Uncompressed)> records)
    {
        int start = p;
        var d = input.AsSpan();
        p++; // indicator
        ulong count = Vli(d, ref p);
        if (count != (ulong)records.Count) throw new InvalidDataException($"xz index lists {count} blocks but the stream has {records.Count}");
        foreach (var (unpadded, uncompressed) in records)
        {
            if (Vli(d, ref p) != unpadded || Vli(d, ref p) != uncompressed)
                throw new InvalidDataException("xz index record does not match its block");
        }
        while (((p - start) & 3) != 0)
        {
            if (p >= d.Length || d[p] != 0) throw new InvalidDataException("xz index padding is not zero");
            p++;
        }
        if (d.Length - p < 4) throw new InvalidDataException("xz index is truncated");
        if (Crc32.Compute(d[start..p]) != BinaryPrimitives.ReadUInt32LittleEndian(d[p..]))
            throw new InvalidDataException("xz index CRC32 mismatch");
        return p + 4;
    }

    /// <summary>Variable-length integer (§1.2): 7 bits a byte, little-endian, at most 9 bytes.</summary>
    private static ulong Vli(ReadOnlySpan<byte> d, ref int p)
    {
        ulong value = 0;
        for (int i = 0; i < 9; i++)
        {
            if (p >= d.Length) throw new InvalidDataException("xz integer is truncated");
            byte b = d[p++];
            value |= (ulong)(b & 0x7F) << (7 * i);
            if ((b & 0x80) == 0)
            {
                if (b == 0 && i != 0) throw new InvalidDataException("xz integer is not minimally encoded");
                return value;
            }
        }
        throw new InvalidDataException("xz integer is longer than 9 bytes");
    }

    private static void VerifyCheck(byte type, ReadOnlySpan<byte> data, ReadOnlySpan<byte> stored)
    {
        bool ok = type switch
        {
            CheckCrc32 => Crc32.Compute(data) == BinaryPrimitives.ReadUInt32LittleEndian(stored),
            CheckCrc64 => Crc64.Compute(data) == BinaryPrimitives.ReadUInt64LittleEndian(stored),
            CheckSha256 => SHA256.HashData(data).AsSpan().SequenceEqual(stored),
            _ => true,
        };
        if (!ok) throw new InvalidDataException($"xz block check ({(type == CheckCrc32 ? "CRC32" : type == CheckCrc64 ? "CRC64" : "SHA-256")}) mismatch: the data is corrupt");
    }
}

/// <summary>
/// The x86 BCJ decoder (.xz format §5.3.3; the algorithm of the LZMA SDK's x86 branch
/// converter): E8/E9 (CALL/JMP rel32) targets that the encoder turned from relative into
/// absolute addresses are turned back. <c>prevMask</c> remembers which of the previous bytes
/// were E8/E9 candidates so that false positives inside instructions are handled the same way
/// the encoder handled them.
/// </summary>
internal static class BcjX86
{
    private static ReadOnlySpan<bool> MaskToAllowed => [true, true, true, false, true, false, false, false];
    private static ReadOnlySpan<byte> MaskToBitNumber => [0, 1, 2, 2, 3, 3, 3, 3];

    private static bool IsMsByte(byte b) => b == 0x00 || b == 0xFF;

    /// <summary>Decodes a whole filtered block in place; <paramref name="startOffset"/> is the filter's start offset property.</summary>
    public static void Decode(Span<byte> buf, uint startOffset)
    {
        if (buf.Length < 5) return;
        uint nowPos = startOffset;
        uint prevMask = 0;
        uint prevPos = nowPos - 5;
        int limit = buf.Length - 5;
        int i = 0;
        while (i <= limit)
        {
            byte b = buf[i];
            if (b != 0xE8 && b != 0xE9) { i++; continue; }

            uint offset = nowPos + (uint)i - prevPos;
            prevPos = nowPos + (uint)i;
            if (offset > 5) prevMask = 0;
            else
                for (uint k = 0; k < offset; k++) { prevMask &= 0x77; prevMask <<= 1; }

            b = buf[i + 4];
            if (IsMsByte(b) && MaskToAllowed[(int)((prevMask >> 1) & 7)] && (prevMask >> 1) < 0x10)
            {
                uint src = BinaryPrimitives.ReadUInt32LittleEndian(buf[(i + 1)..]);
                uint dest;
                while (true)
                {
                    dest = src - (nowPos + (uint)i + 5);
                    if (prevMask == 0) break;
                    int bit = MaskToBitNumber[(int)(prevMask >> 1)];
                    b = (byte)(dest >> (24 - bit * 8));
                    if (!IsMsByte(b)) break;
                    src = dest ^ ((1u << (32 - bit * 8)) - 1);
                }
                // Bits 31..25 copy bit 24: a rel32 within ±16 MiB, as the encoder only converts those.
                dest &= 0x01FF_FFFF;
                if ((dest & 0x0100_0000) != 0) dest |= 0xFF00_0000;
                BinaryPrimitives.WriteUInt32LittleEndian(buf[(i + 1)..], dest);
                i += 5;
                prevMask = 0;
            }
            else
            {
                i++;
                prevMask |= 1;
                if (IsMsByte(b)) prevMask |= 0x10;
            }
        }
    }
}
