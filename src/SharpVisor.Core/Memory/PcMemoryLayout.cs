namespace SharpVisor.Core.Memory;

/// <summary>
/// The PC guest-physical memory map: conventional RAM below 640 KiB, the legacy
/// VGA window (0xA0000–0xBFFFF, MMIO), option-ROM and BIOS space (0xC0000–0xFFFFF,
/// RAM-backed so firmware can shadow itself), extended RAM up to the PCI hole, and
/// the rest of RAM above 4 GiB.
/// </summary>
public static class PcMemoryLayout
{
    public const ulong VgaWindowStart = 0xA0000;
    public const ulong VgaWindowEnd = 0xC0000;
    public const ulong HighMemoryStart = 0x1_0000_0000;
    /// <summary>Start of the 32-bit PCI/MMIO hole (LAPIC, IOAPIC, BIOS flash live above).</summary>
    public const ulong PciHoleStart = 0xC000_0000;
    public const ulong MinimumRam = 2 << 20;

    /// <summary>Adds the RAM regions for <paramref name="ramBytes"/> of guest RAM.</summary>
    public static void AddRam(GuestMemory memory, ulong ramBytes)
    {
        if (ramBytes < MinimumRam)
            throw new ConfigurationException($"memory size {ramBytes >> 10} KiB is too small (the minimum is {MinimumRam >> 20} MiB)");
        ramBytes &= ~0xFFFUL;
        ulong below4g = Math.Min(ramBytes, PciHoleStart);
        memory.AddRegion(0, VgaWindowStart, "ram-low");
        memory.AddRegion(VgaWindowEnd, below4g - VgaWindowEnd, "ram");
        if (ramBytes > below4g)
            memory.AddRegion(HighMemoryStart, ramBytes - below4g, "ram-high");
    }

    /// <summary>The e820 map a firmware would report for this memory.</summary>
    public static IReadOnlyList<E820Entry> E820(GuestMemory memory)
    {
        var list = new List<E820Entry>();
        foreach (var r in memory.Regions)
        {
            if (r.ReadOnly) continue;
            if (r.Gpa == 0)
            {
                // The EBDA/BIOS data area stays RAM; 0x9FC00–0x9FFFF is the EBDA Linux expects reserved.
                list.Add(new E820Entry(0, 0x9FC00, E820Type.Ram));
                list.Add(new E820Entry(0x9FC00, 0x400, E820Type.Reserved));
            }
            else if (r.Gpa == VgaWindowEnd)
            {
                // 0xC0000–0xFFFFF holds option ROMs and the BIOS: reserved, not usable RAM.
                list.Add(new E820Entry(0xF0000, 0x10000, E820Type.Reserved));
                list.Add(new E820Entry(0x100000, r.End - 0x100000, E820Type.Ram));
            }
            else list.Add(new E820Entry(r.Gpa, r.Size, E820Type.Ram));
        }
        return list;
    }
}

public enum E820Type : uint { Ram = 1, Reserved = 2, Acpi = 3, Nvs = 4, Unusable = 5 }

public readonly record struct E820Entry(ulong Address, ulong Size, E820Type Type);
