// The part of ELF (System V ABI, "ELF-64 Object File Format" for class 2) a Multiboot loader
// needs: the file header and PT_LOAD program headers of a little-endian x86 executable.
// ELF64 images are accepted as GRUB does (the entry point must still be 32-bit code below 4 GiB).
using System.Buffers.Binary;
using SharpVisor.Core;

namespace SharpVisor.Boot.Multiboot;

internal readonly record struct ElfSegment(ulong Offset, ulong Vaddr, ulong Paddr, ulong FileSize, ulong MemSize);

internal sealed class ElfImage
{
    public const uint PtLoad = 1;
    public const ushort EtExec = 2, Em386 = 3, EmX86_64 = 62;

    public ulong Entry { get; }
    public IReadOnlyList<ElfSegment> Segments { get; }

    public static bool IsElf(ReadOnlySpan<byte> d) => d.Length >= 4 && d[0] == 0x7F && d[1] == (byte)'E' && d[2] == (byte)'L' && d[3] == (byte)'F';

    public ElfImage(ReadOnlySpan<byte> d, string name)
    {
        ImageFormatException Bad(string what) => new($"{name}: {what}");
        if (d.Length < 52) throw Bad("is too short for an ELF header");
        bool is64 = d[4] switch { 1 => false, 2 => true, _ => throw Bad($"has unknown ELF class {d[4]}") };
        if (d[5] != 1) throw Bad("is a big-endian ELF file; x86 kernels are little-endian");
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(d[16..]);
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(d[18..]);
        if (type != EtExec) throw Bad($"is an ELF file of type {type}, not an executable (ET_EXEC)");
        if (machine != (is64 ? EmX86_64 : Em386) && !(is64 && machine == Em386))
            throw Bad($"is an ELF file for machine {machine}, not x86");
        if (is64 && d.Length < 64) throw Bad("is too short for an ELF64 header");

        Entry = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(d[24..]) : BinaryPrimitives.ReadUInt32LittleEndian(d[24..]);
        ulong phoff = is64 ? BinaryPrimitives.ReadUInt64LittleEndian(d[32..]) : BinaryPrimitives.ReadUInt32LittleEndian(d[28..]);
        int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(d[(is64 ? 54 : 42)..]);
        int phnum = BinaryPrimitives.ReadUInt16LittleEndian(d[(is64 ? 56 : 44)..]);
        // In 64-bit arithmetic so no field combination can wrap around (phentsize × phnum < 2^32).
        ulong phBytes = (ulong)phentsize * (ulong)phnum;
        if (phentsize < (is64 ? 56 : 32) || phoff > (ulong)d.Length || phBytes > (ulong)d.Length - phoff)
            throw Bad("has program headers outside the file");

        var segs = new List<ElfSegment>();
        for (int i = 0; i < phnum; i++)
        {
            var p = d.Slice((int)phoff + i * phentsize, phentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(p) != PtLoad) continue;
            var s = is64
                ? new ElfSegment(U64(p, 8), U64(p, 16), U64(p, 24), U64(p, 32), U64(p, 40))
                : new ElfSegment(U32(p, 4), U32(p, 8), U32(p, 12), U32(p, 16), U32(p, 20));
            if (s.FileSize > s.MemSize) throw Bad($"has a PT_LOAD segment with p_filesz 0x{s.FileSize:x} > p_memsz 0x{s.MemSize:x}");
            if (s.Offset + s.FileSize > (ulong)d.Length || s.Offset + s.FileSize < s.Offset)
                throw Bad($"has a PT_LOAD segment at file offset 0x{s.Offset:x} running past the end of the file");
            if (s.MemSize != 0) segs.Add(s);
        }
        if (segs.Count == 0) throw Bad("has no PT_LOAD segments");
        Segments = segs;
    }

    private static ulong U32(ReadOnlySpan<byte> p, int o) => BinaryPrimitives.ReadUInt32LittleEndian(p[o..]);
    private static ulong U64(ReadOnlySpan<byte> p, int o) => BinaryPrimitives.ReadUInt64LittleEndian(p[o..]);
}
