// A small AML encoder for the DSDT (ACPI 6.5 §20.2 "AML Grammar Definition"; resource
// descriptors from §6.4 "Resource Data Types for ACPI"). Only the handful of terms the
// DSDT needs: Name, Scope, Device, Package, Buffer, integers, strings and EISA IDs.
// Output was checked against iasl's disassembler while writing (acpica-tools, not a dependency).
using System.Buffers.Binary;
using System.Text;

namespace SharpVisor.Boot.Acpi;

internal sealed class AmlWriter
{
    public const byte ZeroOp = 0x00, OneOp = 0x01, NameOp = 0x08, BytePrefix = 0x0A, WordPrefix = 0x0B,
        DWordPrefix = 0x0C, StringPrefix = 0x0D, QWordPrefix = 0x0E, ScopeOp = 0x10, BufferOp = 0x11,
        PackageOp = 0x12, ExtOpPrefix = 0x5B, DeviceOp = 0x82, RootChar = 0x5C, DualNamePrefix = 0x2E,
        MultiNamePrefix = 0x2F, OnesOp = 0xFF;

    private readonly List<byte> _bytes = new();

    public byte[] ToArray() => _bytes.ToArray();
    public int Length => _bytes.Count;

    public AmlWriter Byte(byte b) { _bytes.Add(b); return this; }
    public AmlWriter Bytes(ReadOnlySpan<byte> b) { foreach (var x in b) _bytes.Add(x); return this; }

    /// <summary>A NameString: optional leading '\', then dot-separated segments padded to four characters with '_'.</summary>
    public AmlWriter NameString(string path)
    {
        if (path.StartsWith('\\')) { Byte(RootChar); path = path[1..]; }
        var segs = path.Length == 0 ? [] : path.Split('.');
        if (segs.Length == 2) Byte(DualNamePrefix);
        else if (segs.Length > 2) Byte(MultiNamePrefix).Byte((byte)segs.Length);
        else if (segs.Length == 0) Byte(0); // NullName
        foreach (var s in segs)
        {
            if (s.Length is 0 or > 4) throw new ArgumentException($"bad AML name segment '{s}'");
            Bytes(Encoding.ASCII.GetBytes(s.PadRight(4, '_')));
        }
        return this;
    }

    public AmlWriter Integer(ulong v)
    {
        if (v == 0) return Byte(ZeroOp);
        if (v == 1) return Byte(OneOp);
        if (v <= 0xFF) return Byte(BytePrefix).Byte((byte)v);
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        if (v <= 0xFFFF) return Byte(WordPrefix).Bytes(b[..2]);
        if (v <= 0xFFFF_FFFF) return Byte(DWordPrefix).Bytes(b[..4]);
        return Byte(QWordPrefix).Bytes(b);
    }

    /// <summary>EISAID("PNP0A03") as iasl encodes it: a DWordConst of the compressed ID.</summary>
    public AmlWriter EisaId(string id)
    {
        if (id.Length != 7) throw new ArgumentException($"bad EISA id {id}");
        int mfg = ((id[0] - 0x40) << 10) | ((id[1] - 0x40) << 5) | (id[2] - 0x40);
        int product = Convert.ToInt32(id[3..], 16);
        return Byte(DWordPrefix).Byte((byte)(mfg >> 8)).Byte((byte)mfg).Byte((byte)(product >> 8)).Byte((byte)product);
    }

    public AmlWriter String(string s) => Byte(StringPrefix).Bytes(Encoding.ASCII.GetBytes(s)).Byte(0);

    public AmlWriter Name(string name, Action<AmlWriter> value)
    {
        Byte(NameOp).NameString(name);
        value(this);
        return this;
    }

    public AmlWriter Scope(string name, Action<AmlWriter> body) => Byte(ScopeOp).Sized(w => { w.NameString(name); body(w); });

    public AmlWriter Device(string name, Action<AmlWriter> body) => Byte(ExtOpPrefix).Byte(DeviceOp).Sized(w => { w.NameString(name); body(w); });

    public AmlWriter Package(params Action<AmlWriter>[] elements)
    {
        if (elements.Length > 255) throw new ArgumentException("package too long for a ByteData count");
        return Byte(PackageOp).Sized(w =>
        {
            w.Byte((byte)elements.Length);
            foreach (var e in elements) e(w);
        });
    }

    public AmlWriter Buffer(ReadOnlySpan<byte> data)
    {
        var copy = data.ToArray();
        return Byte(BufferOp).Sized(w => w.Integer((ulong)copy.Length).Bytes(copy));
    }

    /// <summary>Writes PkgLength (which counts its own bytes) followed by what <paramref name="body"/> writes.</summary>
    private AmlWriter Sized(Action<AmlWriter> body)
    {
        var inner = new AmlWriter();
        body(inner);
        PkgLength(inner.Length);
        return Bytes(inner.ToArray());
    }

    private void PkgLength(int bodyLength)
    {
        if (bodyLength + 1 < 0x40) { Byte((byte)(bodyLength + 1)); return; }
        for (int extra = 1; extra <= 3; extra++)
        {
            int total = bodyLength + 1 + extra;
            if (total < 1 << (4 + 8 * extra))
            {
                Byte((byte)((extra << 6) | (total & 0xF)));
                for (int i = 0; i < extra; i++) Byte((byte)(total >> (4 + 8 * i)));
                return;
            }
        }
        throw new ArgumentException("AML package too large");
    }
}

/// <summary>Resource descriptors for _CRS buffers (ACPI 6.5 §6.4.2 small and §6.4.3 large items).</summary>
internal sealed class ResourceTemplate
{
    private readonly List<byte> _b = new();

    /// <summary>I/O Port Descriptor (small item 0x08, length 7), 16-bit decode.</summary>
    public ResourceTemplate Io(ushort min, ushort max, byte alignment, byte length)
    {
        _b.AddRange([0x47, 0x01, (byte)min, (byte)(min >> 8), (byte)max, (byte)(max >> 8), alignment, length]);
        return this;
    }

    /// <summary>IRQ Descriptor without the information byte (small item 0x04, length 2): edge, active high, exclusive.</summary>
    public ResourceTemplate IrqNoFlags(int irq)
    {
        ushort mask = (ushort)(1 << irq);
        _b.AddRange([0x22, (byte)mask, (byte)(mask >> 8)]);
        return this;
    }

    /// <summary>Word Address Space Descriptor (large item 0x88); a producer range with fixed min and max.</summary>
    public ResourceTemplate WordAddress(byte resourceType, byte typeFlags, ushort min, ushort max)
    {
        ushort len = (ushort)(max - min + 1);
        _b.AddRange([0x88, 13, 0, resourceType, GeneralFlagsFixedProducer, typeFlags]);
        foreach (ushort v in new ushort[] { 0, min, max, 0, len }) { _b.Add((byte)v); _b.Add((byte)(v >> 8)); }
        return this;
    }

    /// <summary>DWord Address Space Descriptor (large item 0x87).</summary>
    public ResourceTemplate DWordAddress(byte resourceType, byte typeFlags, uint min, uint max)
    {
        uint len = max - min + 1;
        _b.AddRange([0x87, 23, 0, resourceType, GeneralFlagsFixedProducer, typeFlags]);
        Span<byte> v = stackalloc byte[4];
        foreach (uint x in new uint[] { 0, min, max, 0, len })
        {
            BinaryPrimitives.WriteUInt32LittleEndian(v, x);
            foreach (var b in v) _b.Add(b);
        }
        return this;
    }

    public const byte TypeMemory = 0, TypeIo = 1, TypeBusNumber = 2;
    /// <summary>_MAF and _MIF set (fixed max, fixed min), positive decode, producer (bit 0 clear).</summary>
    public const byte GeneralFlagsFixedProducer = 0x0C;
    /// <summary>I/O type-specific flags: _RNG = entire range (ISA and non-ISA).</summary>
    public const byte IoEntireRange = 0x03;
    /// <summary>Memory type-specific flags: read/write, _MEM = cacheable.</summary>
    public const byte MemoryCacheableReadWrite = 0x03;

    /// <summary>The bytes with the End Tag (0x79) appended; checksum 0 means "treat as valid".</summary>
    public byte[] ToArray() => [.. _b, 0x79, 0x00];
}
