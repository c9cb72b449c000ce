// ACPI tables for direct kernel boot (no firmware): RSDP, RSDT, XSDT, FADT, FACS, MADT and a
// DSDT, following ACPI 6.5 chapter 5 (§5.2.5 RSDP, §5.2.7 RSDT, §5.2.8 XSDT, §5.2.9 FADT,
// §5.2.10 FACS, §5.2.12 MADT, §5.2.11.1 DSDT) and the AML of chapter 20.
//
// Where: 0xE0000–0xEFFFF (BootLayout.AcpiTablesGpa), reported in e820 as type 3 (ACPI). The
// RSDP is at 0xE0000, 16-byte aligned inside the 0xE0000–0xFFFFF window that OSes scan when
// no firmware hands them the address (ACPI §5.2.5.1), so kernels without acpi_rsdp_addr find it.
// 0xF0000–0xFFFFF stays free for a BIOS image.
//
// Deliberate choices:
// - FADT revision 3 (the ACPI 2.0/3.0 layout, 244 bytes), what QEMU's q35 machine has used for
//   years: Linux, the BSDs and Windows all accept it, and it has the X_ 64-bit fields and
//   RESET_REG. The 32-bit and X_ addresses hold the same values (ACPICA accepts equal pairs).
// - No SMI_CMD: ACPICA then treats the machine as already in ACPI mode; setting SCI_EN in
//   PM1_CNT at reset is the ACPI PM device's job.
// - PM timer is 24-bit unless PmTimer32Bit (FADT TMR_VAL_EXT), matching PIIX4/QEMU.
// - The power button is a fixed feature (PWR_BUTTON clear), the sleep button absent (SLP_BUTTON set).
// - \_S5 is Package {0, 0, 0, 0}: SLP_TYPa = 0. A guest powers off by writing
//   SLP_TYP = 0 with SLP_EN (bit 13) to PM1a_CNT, i.e. 0x2000 to port 0x604: S5SlpTyp below.
// - MADT: LAPIC IDs 0..n-1, IOAPIC ID n, GSI base 0; ISA IRQ0 → GSI 2 (conforming) and
//   IRQ9 (SCI) level, active high, as on PIIX4/ICH machines; NMI on LINT1 of every CPU.
// - No GPE block, no _PRT unless PCI routes are given (Linux then uses the PCI Interrupt Line).
// - No MP table (Intel MP spec 1.4): every kernel this project boots reads the MADT.
using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core;
using SharpVisor.Core.Memory;

namespace SharpVisor.Boot.Acpi;

/// <summary>A _PRT entry wiring PCI device <see cref="Slot"/>'s INTx pin (0 = INTA) straight to a GSI.</summary>
public readonly record struct PciIrqRoute(int Slot, int Pin, uint Gsi);

public sealed class AcpiConfig
{
    public int CpuCount { get; init; } = 1;
    public ulong TablesGpa { get; init; } = BootLayout.AcpiTablesGpa;
    public ulong TablesEnd { get; init; } = BootLayout.AcpiTablesEnd;
    /// <summary>Declare \_SB.PCI0 (PNP0A03) with bus 0–255, config ports 0xCF8–0xCFF and windows.</summary>
    public bool PciRootBridge { get; init; } = true;
    public IReadOnlyList<PciIrqRoute> PciIrqRoutes { get; init; } = [];
    /// <summary>First byte of the 32-bit PCI memory window (it ends below the IOAPIC).</summary>
    public uint PciMmioStart { get; init; } = (uint)PcMemoryLayout.PciHoleStart;
    /// <summary>Declare COM1 (PNP0501, 0x3F8, IRQ 4) and the RTC (PNP0B00, 0x70, IRQ 8).</summary>
    public bool LegacyIsaDevices { get; init; } = true;
    /// <summary>FADT IAPC_BOOT_ARCH 8042 flag: an i8042 keyboard controller is present.</summary>
    public bool Has8042 { get; init; } = true;
    /// <summary>MADT PCAT_COMPAT: dual 8259 PICs are present (Linux masks them when it uses the IOAPIC).</summary>
    public bool HasPic8259 { get; init; } = true;
    public bool PmTimer32Bit { get; init; }
    /// <summary>FADT RESET_REG as a system-I/O byte port (0xCF9, value 6 on PIIX/ICH); null for none.</summary>
    public ushort? ResetPort { get; init; } = 0xCF9;
    public byte ResetValue { get; init; } = 0x06;
}

public sealed class AcpiTables
{
    public required ulong RsdpGpa { get; init; }
    public required ulong RsdtGpa { get; init; }
    public required ulong XsdtGpa { get; init; }
    public required ulong FadtGpa { get; init; }
    public required ulong FacsGpa { get; init; }
    public required ulong DsdtGpa { get; init; }
    public required ulong MadtGpa { get; init; }
    /// <summary>The whole range the tables occupy (page rounded), as reported in e820.</summary>
    public required PlacedRange Range { get; init; }
    public required IReadOnlyList<PlacedRange> Placed { get; init; }
    /// <summary>Pass to LinuxBootConfig.ExtraE820 / MultibootConfig.ExtraE820.</summary>
    public IReadOnlyList<E820Entry> E820Entries => [new E820Entry(Range.Gpa, Range.Size, E820Type.Acpi)];
}

public static class AcpiTableBuilder
{
    // The fixed-hardware register blocks the ACPI PM device must decode (system I/O space).
    public const ushort Pm1aEvtBlk = 0x600, Pm1aCntBlk = 0x604, PmTmrBlk = 0x608;
    public const byte Pm1EvtLen = 4, Pm1CntLen = 2, PmTmrLen = 4;
    public const ushort SciInt = 9;
    /// <summary>SLP_TYPa of \_S5: the PM device powers off on PM1a_CNT write with SLP_EN and this SLP_TYP.</summary>
    public const byte S5SlpTyp = 0;
    public const uint LocalApicGpa = 0xFEE0_0000, IoApicGpa = 0xFEC0_0000;
    public const byte RtcCenturyIndex = 0x32;

    public const string OemId = "SHRPVS", OemTableId = "SHARPVSR", CreatorId = "SHVZ";
    public const byte FadtRevision = 3, MadtRevision = 3, DsdtRevision = 2;
    public const int HeaderSize = 36, RsdpSize = 36, FacsSize = 64, FadtSize = 244;

    // FADT Flags (ACPI 6.5 Table 5.10)
    public const uint FlagWbinvd = 1 << 0, FlagProcC1 = 1 << 2, FlagPwrButton = 1 << 4, FlagSlpButton = 1 << 5,
        FlagTmrValExt = 1 << 8, FlagResetRegSup = 1 << 10, FlagHwReducedAcpi = 1 << 20;
    // IAPC_BOOT_ARCH (Table 5.11)
    public const ushort BootArchLegacyDevices = 1 << 0, BootArch8042 = 1 << 1;

    public static AcpiTables Build(GuestMemory memory, AcpiConfig config)
    {
        if (config.CpuCount is < 1 or > 254)
            throw new ConfigurationException($"ACPI: {config.CpuCount} CPUs; the MADT's 8-bit APIC IDs allow 1 to 254 (the IOAPIC takes the next ID)");
        ulong at = config.TablesGpa;
        if ((at & 0xF) != 0) throw new ConfigurationException($"ACPI: table base {at:x} is not 16-byte aligned");
        // The RSDT and the FADT's 32-bit fields hold table addresses: the tables live below 4 GiB.
        if (config.TablesEnd > 1UL << 32 || config.TablesEnd <= at)
            throw new ConfigurationException($"ACPI: table range {at:x}-{config.TablesEnd:x} is empty or not below 4 GiB");
        var placed = new List<PlacedRange>();
        ulong Place(string what, byte[] table, ulong align)
        {
            at = (at + align - 1) & ~(align - 1);
            ulong gpa = at;
            if (gpa + (ulong)table.Length > config.TablesEnd)
                throw new ConfigurationException($"ACPI: the tables do not fit below {config.TablesEnd:x}");
            memory.Write(gpa, table);
            placed.Add(new PlacedRange(what, gpa, (ulong)table.Length));
            at += (ulong)table.Length;
            return gpa;
        }

        // The RSDP must be written last (it holds the RSDT/XSDT addresses) but sits first.
        ulong rsdp = at;
        at += RsdpSize;
        ulong facs = Place("FACS", BuildFacs(), 64);
        ulong dsdt = Place("DSDT", BuildDsdt(config), 16);
        ulong fadt = Place("FACP", BuildFadt(config, facs, dsdt), 16);
        ulong madt = Place("APIC", BuildMadt(config), 16);
        ulong rsdt = Place("RSDT", BuildRsdt([fadt, madt]), 16);
        ulong xsdt = Place("XSDT", BuildXsdt([fadt, madt]), 16);
        memory.Write(rsdp, BuildRsdp(rsdt, xsdt));
        placed.Insert(0, new PlacedRange("RSDP", rsdp, RsdpSize));

        ulong size = (at - config.TablesGpa + 0xFFF) & ~0xFFFUL;
        return new AcpiTables
        {
            RsdpGpa = rsdp, RsdtGpa = rsdt, XsdtGpa = xsdt, FadtGpa = fadt, FacsGpa = facs, DsdtGpa = dsdt, MadtGpa = madt,
            Range = new PlacedRange("ACPI tables", config.TablesGpa, size),
            Placed = placed,
        };
    }

    /// <summary>RSDP revision 2 (ACPI 2.0+, 36 bytes) with both checksums.</summary>
    public static byte[] BuildRsdp(ulong rsdt, ulong xsdt)
    {
        var b = new byte[RsdpSize];
        Encoding.ASCII.GetBytes("RSD PTR ").CopyTo(b, 0);
        Encoding.ASCII.GetBytes(OemId).CopyTo(b, 9);
        b[15] = 2;
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), checked((uint)rsdt));
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(20), RsdpSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), xsdt);
        b[8] = Checksum(b.AsSpan(0, 20));
        b[32] = Checksum(b);
        return b;
    }

    public static byte[] BuildRsdt(ulong[] tables)
    {
        var b = Header("RSDT", HeaderSize + 4 * tables.Length, 1);
        for (int i = 0; i < tables.Length; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(HeaderSize + 4 * i), checked((uint)tables[i]));
        return Finish(b);
    }

    public static byte[] BuildXsdt(ulong[] tables)
    {
        var b = Header("XSDT", HeaderSize + 8 * tables.Length, 1);
        for (int i = 0; i < tables.Length; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(HeaderSize + 8 * i), tables[i]);
        return Finish(b);
    }

    /// <summary>FACS (§5.2.10): no checksum; global lock and waking vector zero.</summary>
    public static byte[] BuildFacs()
    {
        var b = new byte[FacsSize];
        Encoding.ASCII.GetBytes("FACS").CopyTo(b, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), FacsSize);
        b[32] = 2; // Version
        return b;
    }

    /// <summary>FADT revision 3 (offsets from ACPI 6.5 Table 5.9).</summary>
    public static byte[] BuildFadt(AcpiConfig config, ulong facs, ulong dsdt)
    {
        var b = Header("FACP", FadtSize, FadtRevision);
        var s = b.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s[36..], checked((uint)facs));  // FIRMWARE_CTRL
        BinaryPrimitives.WriteUInt32LittleEndian(s[40..], checked((uint)dsdt));  // DSDT
        b[45] = 0;                                                                // Preferred_PM_Profile: unspecified
        BinaryPrimitives.WriteUInt16LittleEndian(s[46..], SciInt);               // SCI_INT
        // 48 SMI_CMD, 52 ACPI_ENABLE, 53 ACPI_DISABLE: zero, no legacy mode.
        BinaryPrimitives.WriteUInt32LittleEndian(s[56..], Pm1aEvtBlk);
        BinaryPrimitives.WriteUInt32LittleEndian(s[64..], Pm1aCntBlk);
        BinaryPrimitives.WriteUInt32LittleEndian(s[76..], PmTmrBlk);
        b[88] = Pm1EvtLen;
        b[89] = Pm1CntLen;
        b[91] = PmTmrLen;
        BinaryPrimitives.WriteUInt16LittleEndian(s[96..], 0x0FFF);  // P_LVL2_LAT > 100: no C2
        BinaryPrimitives.WriteUInt16LittleEndian(s[98..], 0x0FFF);  // P_LVL3_LAT > 1000: no C3
        b[108] = RtcCenturyIndex;
        ushort bootArch = (ushort)((config.LegacyIsaDevices ? BootArchLegacyDevices : 0) | (config.Has8042 ? BootArch8042 : 0));
        BinaryPrimitives.WriteUInt16LittleEndian(s[109..], bootArch);
        uint flags = FlagWbinvd | FlagProcC1 | FlagSlpButton;
        if (config.PmTimer32Bit) flags |= FlagTmrValExt;
        if (config.ResetPort is { } resetPort)
        {
            flags |= FlagResetRegSup;
            Gas(s[116..], 8, 1, resetPort);
            b[128] = config.ResetValue;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(s[112..], flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[132..], facs);  // X_FIRMWARE_CTRL
        BinaryPrimitives.WriteUInt64LittleEndian(s[140..], dsdt);  // X_DSDT
        Gas(s[148..], Pm1EvtLen * 8, 2, Pm1aEvtBlk);                // X_PM1a_EVT_BLK
        Gas(s[172..], Pm1CntLen * 8, 2, Pm1aCntBlk);                // X_PM1a_CNT_BLK
        Gas(s[208..], PmTmrLen * 8, 3, PmTmrBlk);                   // X_PM_TMR_BLK
        return Finish(b);
    }

    /// <summary>A Generic Address Structure (§5.2.3.2) in system I/O space.</summary>
    private static void Gas(Span<byte> s, int bitWidth, byte accessSize, ulong address)
    {
        s[0] = 1;                // Address Space ID: System I/O
        s[1] = (byte)bitWidth;
        s[2] = 0;                // bit offset
        s[3] = accessSize;       // 1 byte, 2 word, 3 dword
        BinaryPrimitives.WriteUInt64LittleEndian(s[4..], address);
    }

    public static byte[] BuildMadt(AcpiConfig config)
    {
        int n = config.CpuCount;
        const int LapicLen = 8, IoApicLen = 12, OverrideLen = 10, NmiLen = 6;
        var b = Header("APIC", HeaderSize + 8 + n * LapicLen + IoApicLen + 2 * OverrideLen + NmiLen, MadtRevision);
        var s = b.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(s[36..], LocalApicGpa);
        BinaryPrimitives.WriteUInt32LittleEndian(s[40..], config.HasPic8259 ? 1u : 0u); // PCAT_COMPAT
        int o = HeaderSize + 8;
        for (int i = 0; i < n; i++)
        {
            // Processor Local APIC: UID, APIC ID, flags (Enabled).
            s[o] = 0; s[o + 1] = LapicLen; s[o + 2] = (byte)i; s[o + 3] = (byte)i;
            BinaryPrimitives.WriteUInt32LittleEndian(s[(o + 4)..], 1);
            o += LapicLen;
        }
        // I/O APIC: ID, reserved, address, GSI base.
        s[o] = 1; s[o + 1] = IoApicLen; s[o + 2] = (byte)n;
        BinaryPrimitives.WriteUInt32LittleEndian(s[(o + 4)..], IoApicGpa);
        BinaryPrimitives.WriteUInt32LittleEndian(s[(o + 8)..], 0);
        o += IoApicLen;
        o = InterruptOverride(s, o, 0, 2, 0);                       // PIT IRQ0 is wired to IOAPIC pin 2
        o = InterruptOverride(s, o, (byte)SciInt, SciInt, 0x000D);  // SCI: active high (01), level (11 << 2)
        // Local APIC NMI: all processors (0xFF), flags conforming, LINT1.
        s[o] = 4; s[o + 1] = NmiLen; s[o + 2] = 0xFF;
        BinaryPrimitives.WriteUInt16LittleEndian(s[(o + 3)..], 0);
        s[o + 5] = 1;
        return Finish(b);
    }

    private static int InterruptOverride(Span<byte> s, int o, byte source, uint gsi, ushort flags)
    {
        s[o] = 2; s[o + 1] = 10; s[o + 2] = 0; s[o + 3] = source;   // bus 0 = ISA
        BinaryPrimitives.WriteUInt32LittleEndian(s[(o + 4)..], gsi);
        BinaryPrimitives.WriteUInt16LittleEndian(s[(o + 8)..], flags);
        return o + 10;
    }

    public static byte[] BuildDsdt(AcpiConfig config)
    {
        var aml = new AmlWriter();
        // Name (_S5, Package (4) { SLP_TYPa, SLP_TYPb, reserved, reserved })
        aml.Name("_S5", w => w.Package(e => e.Integer(S5SlpTyp), e => e.Integer(S5SlpTyp), e => e.Integer(0), e => e.Integer(0)));
        if (config.PciRootBridge || config.LegacyIsaDevices)
        {
            aml.Scope("\\_SB", sb =>
            {
                if (config.PciRootBridge) PciRoot(sb, config);
                if (config.LegacyIsaDevices)
                {
                    sb.Device("COM1", d =>
                    {
                        d.Name("_HID", v => v.EisaId("PNP0501"));
                        d.Name("_UID", v => v.Integer(1));
                        d.Name("_CRS", v => v.Buffer(new ResourceTemplate().Io(0x3F8, 0x3F8, 0, 8).IrqNoFlags(4).ToArray()));
                    });
                    sb.Device("RTC", d =>
                    {
                        d.Name("_HID", v => v.EisaId("PNP0B00"));
                        d.Name("_CRS", v => v.Buffer(new ResourceTemplate().Io(0x70, 0x70, 1, 2).IrqNoFlags(8).ToArray()));
                    });
                }
            });
        }
        var body = aml.ToArray();
        var b = Header("DSDT", HeaderSize + body.Length, DsdtRevision);
        body.CopyTo(b, HeaderSize);
        return Finish(b);
    }

    private static void PciRoot(AmlWriter sb, AcpiConfig config)
    {
        sb.Device("PCI0", d =>
        {
            d.Name("_HID", v => v.EisaId("PNP0A03"));
            // No _ADR: a device object has either _HID or _ADR (ACPI 6.5 §6.1).
            d.Name("_UID", v => v.Integer(0));
            var crs = new ResourceTemplate()
                .WordAddress(ResourceTemplate.TypeBusNumber, 0, 0x00, 0xFF)
                .Io(0xCF8, 0xCF8, 1, 8)
                .WordAddress(ResourceTemplate.TypeIo, ResourceTemplate.IoEntireRange, 0x0000, 0x0CF7)
                .WordAddress(ResourceTemplate.TypeIo, ResourceTemplate.IoEntireRange, 0x0D00, 0xFFFF)
                .DWordAddress(ResourceTemplate.TypeMemory, ResourceTemplate.MemoryCacheableReadWrite, 0x000A_0000, 0x000B_FFFF)
                .DWordAddress(ResourceTemplate.TypeMemory, ResourceTemplate.MemoryCacheableReadWrite, config.PciMmioStart, IoApicGpa - 1);
            d.Name("_CRS", v => v.Buffer(crs.ToArray()));
            if (config.PciIrqRoutes.Count > 0)
            {
                var entries = config.PciIrqRoutes.Select(r => (Action<AmlWriter>)(p => p.Package(
                    e => e.Integer(((ulong)(uint)r.Slot << 16) | 0xFFFF),   // _ADR: device, any function
                    e => e.Integer((ulong)r.Pin),
                    e => e.Integer(0),                                      // Source: none, the GSI follows
                    e => e.Integer(r.Gsi)))).ToArray();
                d.Name("_PRT", v => v.Package(entries));
            }
        });
    }

    /// <summary>A zeroed table with the standard 36-byte description header filled in (checksum later).</summary>
    private static byte[] Header(string signature, int length, byte revision)
    {
        var b = new byte[length];
        Encoding.ASCII.GetBytes(signature).CopyTo(b, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)length);
        b[8] = revision;
        Encoding.ASCII.GetBytes(OemId).CopyTo(b, 10);
        Encoding.ASCII.GetBytes(OemTableId).CopyTo(b, 16);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(24), 1);   // OEM Revision
        Encoding.ASCII.GetBytes(CreatorId).CopyTo(b, 28);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(32), 1);   // Creator Revision
        return b;
    }

    private static byte[] Finish(byte[] table)
    {
        table[9] = 0;
        table[9] = Checksum(table);
        return table;
    }

    /// <summary>The byte that makes <paramref name="data"/> sum to zero modulo 256.</summary>
    public static byte Checksum(ReadOnlySpan<byte> data)
    {
        byte sum = 0;
        foreach (var x in data) sum += x;
        return (byte)(0 - sum);
    }
}
