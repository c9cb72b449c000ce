// The boot GDT both boot protocols ask for. Linux boot.rst, "32-bit boot protocol" and
// "64-bit boot protocol": a GDT with __BOOT_CS (0x10, execute/read) and __BOOT_DS (0x18,
// read/write), 4 GiB flat. Multiboot 0.6.96 §3.2 says the GDTR may be invalid, but a kernel
// that reloads a segment register before loading its own GDT then still works: the selectors
// VcpuState.Protected32 uses (0x10/0x18) are backed by matching descriptors here.
// Descriptors are written with the accessed bit set so the CPU never has to write the table.
using System.Buffers.Binary;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot;

public static class BootGdt
{
    public const ushort BootCs = 0x10;
    public const ushort BootDs = 0x18;
    /// <summary>Four 8-byte descriptors: null, unused, code, data.</summary>
    public const int Size = 4 * 8;

    /// <summary>Flat 32-bit code: base 0, limit 0xFFFFF × 4 KiB, G=1, D=1, P=1, DPL 0, type 0xB.</summary>
    public const ulong Code32 = 0x00CF_9B00_0000_FFFF;
    /// <summary>64-bit code: as <see cref="Code32"/> but L=1, D=0.</summary>
    public const ulong Code64 = 0x00AF_9B00_0000_FFFF;
    /// <summary>Flat data: base 0, 4 GiB, G=1, B=1, P=1, DPL 0, type 3 (read/write, accessed).</summary>
    public const ulong Data = 0x00CF_9300_0000_FFFF;

    /// <summary>Writes the GDT at <paramref name="gpa"/> and points <paramref name="state"/>'s GDTR at it.</summary>
    public static PlacedRange Write(GuestMemory memory, ulong gpa, bool longMode, VcpuState state)
    {
        Span<byte> gdt = stackalloc byte[Size];
        gdt.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(gdt[BootCs..], longMode ? Code64 : Code32);
        BinaryPrimitives.WriteUInt64LittleEndian(gdt[BootDs..], Data);
        memory.Write(gpa, gdt);
        state.Gdtr.Base = gpa;
        state.Gdtr.Limit = Size - 1;
        return new PlacedRange("gdt", gpa, Size);
    }
}
