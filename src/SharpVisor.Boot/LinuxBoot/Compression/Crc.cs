// The two checksums the .xz format uses (The .xz File Format 1.2.0, §3.4 "Check" and §6
// "Cyclic Redundancy Checks"): CRC32 with the reflected polynomial 0xEDB88320 (the one of
// gzip and Ethernet) and CRC64 with the reflected ECMA-182 polynomial 0xC96C5795D7870F42.
// Both start from all ones and are inverted at the end. Table driven, one byte at a time:
// a kernel's tens of MiB take a fraction of a second, and the BCL has no public CRC32/64
// (System.IO.Hashing is a separate package the NuGet copy here does not hold).
namespace SharpVisor.Boot.LinuxBoot.Compression;

internal static class Crc32
{
    private const uint Polynomial = 0xEDB8_8320;
    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var table = Table;
        uint crc = ~0u;
        foreach (byte b in data) crc = table[(byte)(crc ^ b)] ^ (crc >> 8);
        return ~crc;
    }
}

internal static class Crc64
{
    private const ulong Polynomial = 0xC96C_5795_D787_0F42;
    private static readonly ulong[] Table = BuildTable();

    private static ulong[] BuildTable()
    {
        var t = new ulong[256];
        for (uint i = 0; i < 256; i++)
        {
            ulong c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            t[i] = c;
        }
        return t;
    }

    public static ulong Compute(ReadOnlySpan<byte> data)
    {
        var table = Table;
        ulong crc = ~0UL;
        foreach (byte b in data) crc = table[(byte)(crc ^ b)] ^ (crc >> 8);
        return ~crc;
    }
}
