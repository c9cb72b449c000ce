// 4-level (IA-32e) page tables that identity-map the first 4 GiB with 2 MiB pages
// (Intel SDM Vol. 3A §4.5, Table 4-15 "Format of a PDE that Maps a 2-MByte Page").
// 2 MiB pages rather than 1 GiB ones because 1 GiB pages need CPUID.80000001H:EDX.Page1GB,
// which a software engine or a restricted CPUID may not offer. Six 4 KiB tables in all:
// PML4, one PDPT and four page directories, consecutive from the given address.
using System.Buffers.Binary;
using SharpVisor.Core.Memory;

namespace SharpVisor.Boot.LinuxBoot;

public static class IdentityPageTables
{
    public const ulong Present = 1, Writable = 2, PageSize = 1 << 7;
    public const int TableCount = 6;
    public const ulong Size = TableCount * 0x1000;
    public const ulong MappedBytes = 4UL << 30;

    /// <summary>Writes the tables at <paramref name="pml4Gpa"/> (4 KiB aligned); returns the CR3 value.</summary>
    public static ulong Build(GuestMemory memory, ulong pml4Gpa)
    {
        if ((pml4Gpa & 0xFFF) != 0) throw new ArgumentException("page tables must be 4 KiB aligned", nameof(pml4Gpa));
        var tables = new byte[Size];
        ulong pdptGpa = pml4Gpa + 0x1000;
        ulong pdGpa = pml4Gpa + 0x2000;
        BinaryPrimitives.WriteUInt64LittleEndian(tables, pdptGpa | Present | Writable);
        for (int i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(tables.AsSpan(0x1000 + i * 8), (pdGpa + (ulong)i * 0x1000) | Present | Writable);
            for (int j = 0; j < 512; j++)
            {
                ulong page = ((ulong)i << 30) | ((ulong)j << 21);
                BinaryPrimitives.WriteUInt64LittleEndian(tables.AsSpan(0x2000 + i * 0x1000 + j * 8), page | Present | Writable | PageSize);
            }
        }
        memory.Write(pml4Gpa, tables);
        return pml4Gpa;
    }
}
