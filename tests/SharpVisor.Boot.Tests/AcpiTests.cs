using System.Text;
using SharpVisor.Boot.Acpi;
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

public class AcpiTests
{
    private static byte Sum(byte[] b) { byte s = 0; foreach (var x in b) s += x; return s; }

    /// <summary>Finds the RSDP the way an OS without a firmware hint does (ACPI §5.2.5.1): 16-byte steps over 0xE0000–0xFFFFF.</summary>
    private static ulong FindRsdp(GuestMemory mem)
    {
        for (ulong a = 0xE0000; a < 0x100000; a += 16)
            if (Encoding.ASCII.GetString(Bytes(mem, a, 8)) == "RSD PTR " && Sum(Bytes(mem, a, 20)) == 0) return a;
        throw new Xunit.Sdk.XunitException("no RSDP in 0xE0000-0xFFFFF");
    }

    /// <summary>Reads a table through its header's length and checks the checksum and signature.</summary>
    private static byte[] Table(GuestMemory mem, ulong gpa, string signature)
    {
        uint len = U32(mem, gpa + 4);
        var t = Bytes(mem, gpa, (int)len);
        Assert.Equal(signature, Encoding.ASCII.GetString(t, 0, 4));
        Assert.Equal(0, Sum(t));
        Assert.Equal("SHRPVS", Encoding.ASCII.GetString(t, 10, 6));
        return t;
    }

    private static uint T32(byte[] t, int o) => BitConverter.ToUInt32(t, o);
    private static ulong T64(byte[] t, int o) => BitConverter.ToUInt64(t, o);

    private sealed record Tables(ulong Rsdp, byte[] Rsdt, byte[] Xsdt, Dictionary<string, (ulong Gpa, byte[] Data)> BySig);

    private static Tables Walk(GuestMemory mem)
    {
        ulong rsdp = FindRsdp(mem);
        var r = Bytes(mem, rsdp, 36);
        Assert.Equal(2, r[15]);                    // revision 2: ACPI 2.0+ RSDP with XSDT
        Assert.Equal(36u, T32(r, 20));
        Assert.Equal(0, Sum(r));                   // extended checksum over all 36 bytes
        var rsdt = Table(mem, T32(r, 16), "RSDT");
        var xsdt = Table(mem, T64(r, 24), "XSDT");
        Assert.Equal(0, (rsdt.Length - 36) % 4);
        Assert.Equal(0, (xsdt.Length - 36) % 8);
        Assert.Equal((rsdt.Length - 36) / 4, (xsdt.Length - 36) / 8);
        var by = new Dictionary<string, (ulong, byte[])>();
        for (int i = 0; i < (xsdt.Length - 36) / 8; i++)
        {
            ulong a = T64(xsdt, 36 + 8 * i);
            Assert.Equal(a, T32(rsdt, 36 + 4 * i));
            string sig = Encoding.ASCII.GetString(Bytes(mem, a, 4));
            by[sig] = (a, Table(mem, a, sig));
        }
        return new Tables(rsdp, rsdt, xsdt, by);
    }

    [Fact]
    public void Rsdp_xsdt_rsdt_checksum_and_point_at_fadt_and_madt()
    {
        using var mem = Ram(64 << 20);
        var a = AcpiTableBuilder.Build(mem, new AcpiConfig { CpuCount = 4 });
        var t = Walk(mem);
        Assert.Equal(a.RsdpGpa, t.Rsdp);
        Assert.Equal(0UL, t.Rsdp & 0xF);
        Assert.Equal(new[] { "APIC", "FACP" }, t.BySig.Keys.Order().ToArray());
        // Everything lies inside the range reported to e820, which lies in the BIOS hole below 1 MiB.
        foreach (var p in a.Placed) Assert.True(p.Gpa >= a.Range.Gpa && p.End <= a.Range.End, p.ToString());
        Assert.Equal(new E820Entry(0xE0000, a.Range.Size, E820Type.Acpi), Assert.Single(a.E820Entries));
        Assert.True(a.Range.End <= 0xF0000);
        var sorted = a.Placed.OrderBy(p => p.Gpa).ToList();
        for (int i = 1; i < sorted.Count; i++) Assert.True(sorted[i - 1].End <= sorted[i].Gpa, $"{sorted[i - 1]} overlaps {sorted[i]}");
    }

    [Fact]
    public void Fadt_describes_the_pm_block_and_hardware_model()
    {
        using var mem = Ram(64 << 20);
        var a = AcpiTableBuilder.Build(mem, new AcpiConfig());
        var f = Walk(mem).BySig["FACP"].Data;
        Assert.Equal(244, f.Length);
        Assert.Equal(3, f[8]);                                  // revision 3
        Assert.Equal(a.FacsGpa, T32(f, 36));
        Assert.Equal(a.DsdtGpa, T32(f, 40));
        Assert.Equal(a.FacsGpa, T64(f, 132));                   // X_FIRMWARE_CTRL
        Assert.Equal(a.DsdtGpa, T64(f, 140));                   // X_DSDT
        Assert.Equal(9, BitConverter.ToUInt16(f, 46));          // SCI_INT
        Assert.Equal(0u, T32(f, 48));                           // SMI_CMD: none, already in ACPI mode
        Assert.Equal(0x600u, T32(f, 56));                       // PM1a_EVT_BLK
        Assert.Equal(0x604u, T32(f, 64));                       // PM1a_CNT_BLK
        Assert.Equal(0x608u, T32(f, 76));                       // PM_TMR_BLK
        Assert.Equal(4, f[88]); Assert.Equal(2, f[89]); Assert.Equal(4, f[91]);
        uint flags = T32(f, 112);
        Assert.Equal(0u, flags & (1u << 20));                   // HW_REDUCED_ACPI off
        Assert.Equal(0u, flags & (1u << 8));                    // 24-bit PM timer
        Assert.NotEqual(0u, flags & (1u << 10));                // RESET_REG_SUP
        Assert.Equal(0x3, BitConverter.ToUInt16(f, 109));       // IAPC_BOOT_ARCH: legacy devices, 8042
        // GAS blocks: system I/O, bit widths matching the legacy lengths.
        void Gas(int o, int width, ulong addr) { Assert.Equal(1, f[o]); Assert.Equal(width, f[o + 1]); Assert.Equal(addr, T64(f, o + 4)); }
        Gas(148, 32, 0x600);
        Gas(172, 16, 0x604);
        Gas(208, 32, 0x608);
        Gas(116, 8, 0xCF9);
        Assert.Equal(6, f[128]);

        var facs = Bytes(mem, a.FacsGpa, 64);
        Assert.Equal("FACS", Encoding.ASCII.GetString(facs, 0, 4));
        Assert.Equal(64u, T32(facs, 4));
        Assert.Equal(0UL, a.FacsGpa & 63);                      // 64-byte aligned (§5.2.10)
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(16)]
    public void Madt_lists_one_lapic_per_cpu_the_ioapic_and_overrides(int cpus)
    {
        using var mem = Ram(64 << 20);
        AcpiTableBuilder.Build(mem, new AcpiConfig { CpuCount = cpus });
        var m = Walk(mem).BySig["APIC"].Data;
        Assert.Equal(0xFEE00000u, T32(m, 36));
        Assert.Equal(1u, T32(m, 40) & 1);                       // PCAT_COMPAT
        var lapics = new List<(int Uid, int Id, uint Flags)>();
        var ioapics = new List<(int Id, uint Addr, uint GsiBase)>();
        var overrides = new List<(int Bus, int Src, uint Gsi, int Flags)>();
        var nmis = new List<(int Uid, int Flags, int Lint)>();
        int o = 44;
        while (o < m.Length)
        {
            int type = m[o], len = m[o + 1];
            Assert.True(len >= 2 && o + len <= m.Length, $"entry at {o} runs past the table");
            switch (type)
            {
                case 0: Assert.Equal(8, len); lapics.Add((m[o + 2], m[o + 3], T32(m, o + 4))); break;
                case 1: Assert.Equal(12, len); ioapics.Add((m[o + 2], T32(m, o + 4), T32(m, o + 8))); break;
                case 2: Assert.Equal(10, len); overrides.Add((m[o + 2], m[o + 3], T32(m, o + 4), BitConverter.ToUInt16(m, o + 8))); break;
                case 4: Assert.Equal(6, len); nmis.Add((m[o + 2], BitConverter.ToUInt16(m, o + 3), m[o + 5])); break;
                default: Assert.Fail($"unexpected MADT entry type {type}"); break;
            }
            o += len;
        }
        Assert.Equal(m.Length, o);                              // entries fill the table exactly
        Assert.Equal(Enumerable.Range(0, cpus).Select(i => (i, i, 1u)), lapics);
        Assert.Equal((cpus, 0xFEC00000u, 0u), Assert.Single(ioapics));
        Assert.Contains((0, 0, 2u, 0), overrides);
        Assert.Contains((0, 9, 9u, 0x000D), overrides);         // active high (01), level (11)
        Assert.Equal((0xFF, 0, 1), Assert.Single(nmis));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(255)]
    public void Impossible_cpu_counts_are_refused(int cpus)
    {
        using var mem = Ram(64 << 20);
        var e = Assert.Throws<ConfigurationException>(() => AcpiTableBuilder.Build(mem, new AcpiConfig { CpuCount = cpus }));
        AssertOneLine(e, cpus.ToString());
    }

    [Fact]
    public void Dsdt_declares_s5_and_devices_with_exact_lengths()
    {
        using var mem = Ram(64 << 20);
        var a = AcpiTableBuilder.Build(mem, new AcpiConfig
        {
            PciIrqRoutes = [new PciIrqRoute(1, 0, 10), new PciIrqRoute(3, 2, 11)],
        });
        var d = Table(mem, a.DsdtGpa, "DSDT");
        Assert.Equal(2, d[8]);
        var names = new AmlReader(d).Parse();

        var s5 = Assert.IsType<List<object>>(names["\\_S5_"]);
        Assert.Equal(4, s5.Count);
        Assert.Equal((ulong)AcpiTableBuilder.S5SlpTyp, s5[0]);
        Assert.Equal(0UL, s5[0]);

        Assert.Equal(0x030AD041UL, names["\\_SB_.PCI0._HID"]);  // EISAID("PNP0A03")
        Assert.False(names.ContainsKey("\\_SB_.PCI0._ADR"));
        Assert.Equal(0x0105D041UL, names["\\_SB_.COM1._HID"]);  // EISAID("PNP0501")
        Assert.Equal(0x000BD041UL, names["\\_SB_.RTC_._HID"]);  // EISAID("PNP0B00")

        var prt = Assert.IsType<List<object>>(names["\\_SB_.PCI0._PRT"]);
        Assert.Equal(2, prt.Count);
        Assert.Equal(new List<object> { 0x0001FFFFUL, 0UL, 0UL, 10UL }, prt[0]);
        Assert.Equal(new List<object> { 0x0003FFFFUL, 2UL, 0UL, 11UL }, prt[1]);

        var com1 = ResourceItems(Assert.IsType<byte[]>(names["\\_SB_.COM1._CRS"]));
        Assert.Equal(new byte[] { 0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08 }, com1[0]);
        Assert.Equal(new byte[] { 0x22, 0x10, 0x00 }, com1[1]);            // IRQ 4
        var pci = ResourceItems(Assert.IsType<byte[]>(names["\\_SB_.PCI0._CRS"]));
        Assert.Contains(pci, i => i[0] == 0x87 && BitConverter.ToUInt32(i, 10) == 0xC0000000 && BitConverter.ToUInt32(i, 14) == 0xFEBFFFFF);
    }

    [Fact]
    public void Minimal_dsdt_is_just_s5()
    {
        using var mem = Ram(64 << 20);
        var a = AcpiTableBuilder.Build(mem, new AcpiConfig { PciRootBridge = false, LegacyIsaDevices = false });
        var d = Table(mem, a.DsdtGpa, "DSDT");
        // Name (_S5, Package (4) { Zero, Zero, Zero, Zero }) and nothing else.
        Assert.Equal(new byte[] { 0x08, (byte)'_', (byte)'S', (byte)'5', (byte)'_', 0x12, 0x06, 0x04, 0, 0, 0, 0 }, d[36..]);
    }

    /// <summary>Splits a resource template into items and checks it ends with an End Tag exactly at its end.</summary>
    private static List<byte[]> ResourceItems(byte[] buf)
    {
        var items = new List<byte[]>();
        int p = 0;
        while (true)
        {
            Assert.True(p < buf.Length, "resource template without End Tag");
            byte tag = buf[p];
            int len = (tag & 0x80) != 0 ? 3 + BitConverter.ToUInt16(buf, p + 1) : 1 + (tag & 7);
            if ((tag & 0x80) == 0 && (tag >> 3) == 0xF) { Assert.Equal(buf.Length, p + len); return items; }
            items.Add(buf[p..(p + len)]);
            p += len;
        }
    }

    /// <summary>
    /// Just enough of an AML interpreter to read a data-only DSDT (ACPI §20.2): Name, Scope,
    /// Device, Package, Buffer, integer and string constants. Every PkgLength must end exactly
    /// where its contents end, or the test fails.
    /// </summary>
    private sealed class AmlReader(byte[] table)
    {
        private int _p = 36;
        private readonly Dictionary<string, object> _names = new();

        public Dictionary<string, object> Parse()
        {
            TermList(table.Length, "\\");
            Assert.Equal(table.Length, _p);
            return _names;
        }

        private int PkgEnd()
        {
            int start = _p, lead = table[_p++], n = lead >> 6;
            int len = n == 0 ? lead & 0x3F : lead & 0xF;
            for (int i = 0; i < n; i++) len |= table[_p++] << (4 + 8 * i);
            return start + len;
        }

        private string NameString(string scope)
        {
            bool root = false;
            if (table[_p] == 0x5C) { root = true; _p++; }
            int count = 1;
            if (table[_p] == 0x2E) { count = 2; _p++; }
            else if (table[_p] == 0x2F) { count = table[_p + 1]; _p += 2; }
            var segs = new List<string>();
            for (int i = 0; i < count; i++) { segs.Add(Encoding.ASCII.GetString(table, _p, 4)); _p += 4; }
            string path = string.Join('.', segs);
            return root ? "\\" + path : scope == "\\" ? "\\" + path : scope + "." + path;
        }

        private void TermList(int end, string scope)
        {
            while (_p < end)
            {
                byte op = table[_p++];
                switch (op)
                {
                    case 0x08: { string n = NameString(scope); _names[n] = DataObject(); break; }
                    case 0x10: { int e = PkgEnd(); string n = NameString(scope); TermList(e, n); Assert.Equal(e, _p); break; }
                    case 0x5B when table[_p] == 0x82: { _p++; int e = PkgEnd(); string n = NameString(scope); TermList(e, n); Assert.Equal(e, _p); break; }
                    default: Assert.Fail($"unexpected AML opcode 0x{op:x2} at {_p - 1}"); break;
                }
            }
            Assert.Equal(end, _p);
        }

        private object DataObject()
        {
            byte op = table[_p++];
            switch (op)
            {
                case 0x00: return 0UL;
                case 0x01: return 1UL;
                case 0xFF: return ulong.MaxValue;
                case 0x0A: return (ulong)table[_p++];
                case 0x0B: { ulong v = BitConverter.ToUInt16(table, _p); _p += 2; return v; }
                case 0x0C: { ulong v = BitConverter.ToUInt32(table, _p); _p += 4; return v; }
                case 0x0E: { ulong v = BitConverter.ToUInt64(table, _p); _p += 8; return v; }
                case 0x0D: { int z = Array.IndexOf(table, (byte)0, _p); var s = Encoding.ASCII.GetString(table, _p, z - _p); _p = z + 1; return s; }
                case 0x11:
                {
                    int e = PkgEnd();
                    var size = (ulong)DataObject();
                    Assert.Equal((ulong)(e - _p), size);
                    var b = table[_p..e];
                    _p = e;
                    return b;
                }
                case 0x12:
                {
                    int e = PkgEnd();
                    int n = table[_p++];
                    var list = new List<object>();
                    for (int i = 0; i < n; i++) list.Add(DataObject());
                    Assert.Equal(e, _p);
                    return list;
                }
                default: throw new Xunit.Sdk.XunitException($"unexpected AML data opcode 0x{op:x2} at {_p - 1}");
            }
        }
    }
}
