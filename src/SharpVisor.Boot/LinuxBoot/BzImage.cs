// A parsed Linux bzImage, validated against the Linux x86 boot protocol
// (Documentation/arch/x86/boot.rst). Deliberate choices:
// - Protocol 2.06 is the oldest accepted: it is the first with cmdline_size (so long command
//   lines can be checked rather than silently cut), and it implies initrd_addr_max (2.03),
//   32-bit syssize (2.04) and kernel_alignment/relocatable_kernel (2.05). Every kernel since
//   2.6.22 (2007) speaks at least 2.06.
// - Only bzImage (LOADED_HIGH set) is accepted; zImage loads at 0x10000 and needs the
//   real-mode setup code, which this loader never runs.
// - Fields newer than the image's protocol version take the defaults boot.rst gives.
// - A non-zero pref_address must lie in 1 MiB–4 GiB: it is where LinuxLoader puts the kernel.
using System.Buffers.Binary;
using System.Text;
using SharpVisor.Core;

namespace SharpVisor.Boot.LinuxBoot;

public sealed class BzImage
{
    public const ushort MinimumProtocol = 0x0206;
    /// <summary>Kernels load at 1 MiB or above (below lie the real-mode area, VGA and the BIOS).</summary>
    public const ulong MinimumLoadAddress = 0x10_0000;
    /// <summary>… and below 4 GiB: the loader enters at a 32-bit address and RAM above is not contiguous with it.</summary>
    public const ulong MaximumLoadAddress = 0x1_0000_0000;

    public string Name { get; }
    /// <summary>The whole file.</summary>
    public ReadOnlyMemory<byte> Image { get; }
    public ushort ProtocolVersion { get; }
    /// <summary>setup_sects after the "0 means 4" rule.</summary>
    public int SetupSects { get; }
    public byte LoadFlags { get; }
    public ushort XLoadFlags { get; }
    public uint Code32Start { get; }
    public uint InitrdAddrMax { get; }
    public uint KernelAlignment { get; }
    public bool Relocatable { get; }
    public uint CmdlineSize { get; }
    public ulong PrefAddress { get; }
    /// <summary>Bytes of memory the kernel needs from its load address while it decompresses and starts.</summary>
    public uint InitSize { get; }
    /// <summary>True when init_size came from the header (2.10+), false when estimated.</summary>
    public bool InitSizeFromHeader { get; }
    public string? KernelVersion { get; }
    /// <summary>payload_offset (2.08+): where the compressed vmlinux starts in <see cref="ProtectedModeKernel"/>; 0 before 2.08.</summary>
    public uint PayloadOffset { get; }
    /// <summary>payload_length (2.08+); 0 when the header declares no payload. Not checked here (see Vmlinux.FromBzImage).</summary>
    public uint PayloadLength { get; }
    /// <summary>End offset of the setup header: 0x202 + the byte at 0x201.</summary>
    public int HeaderEnd { get; }

    public int SetupSize => (SetupSects + 1) * 512;
    public ReadOnlyMemory<byte> ProtectedModeKernel => Image[SetupSize..];
    public bool Supports64BitEntry => ProtocolVersion >= 0x020C && (XLoadFlags & SetupHeader.XlfKernel64) != 0;
    public string VersionText => $"{ProtocolVersion >> 8}.{ProtocolVersion & 0xFF:d2}";

    private BzImage(string name, byte[] image)
    {
        Name = name;
        Image = image;
        var d = image.AsSpan();
        if (d.Length < SetupHeader.Header + 4)
            throw Bad($"is too short to be a bzImage ({d.Length} bytes)");
        if (U32(d, SetupHeader.Header) != SetupHeader.HdrSMagic)
            throw Bad("is not a Linux bzImage (no \"HdrS\" magic at offset 0x202)");
        if (U16(d, SetupHeader.BootFlag) != SetupHeader.BootFlagMagic)
            throw Bad("is not a Linux bzImage (boot_flag at offset 0x1fe is not 0xaa55)");

        HeaderEnd = SetupHeader.Jump + 2 + d[SetupHeader.Jump + 1];
        if (HeaderEnd < SetupHeader.Version + 2)
            throw Bad($"has a setup header ending at 0x{HeaderEnd:x}, before its version field");
        if (HeaderEnd > d.Length)
            throw Bad($"is truncated: the setup header ends at 0x{HeaderEnd:x} but the file has {d.Length} bytes");
        ProtocolVersion = U16(d, SetupHeader.Version);
        if (ProtocolVersion < MinimumProtocol)
            throw Bad($"speaks Linux boot protocol {VersionText}, older than the 2.06 this loader needs");
        if (HeaderEnd < SetupHeader.CmdlineSize + 4)
            throw Bad($"has a setup header ending at 0x{HeaderEnd:x}, too short for protocol {VersionText}");

        LoadFlags = d[SetupHeader.LoadFlags];
        if ((LoadFlags & SetupHeader.LoadedHigh) == 0)
            throw Bad("is a zImage (loadflags LOADED_HIGH clear); only bzImage kernels are supported");

        SetupSects = d[SetupHeader.SetupSects] == 0 ? 4 : d[SetupHeader.SetupSects];
        if (SetupSize >= d.Length)
            throw Bad($"is truncated: {SetupSects} setup sectors but only {d.Length} bytes in the file");
        ulong syssize = (ulong)U32(d, SetupHeader.Syssize) * 16;
        if ((ulong)(d.Length - SetupSize) < syssize)
            throw Bad($"is truncated: the protected-mode kernel should be {syssize} bytes but the file holds {d.Length - SetupSize}");

        Code32Start = U32(d, SetupHeader.Code32Start);
        InitrdAddrMax = U32(d, SetupHeader.InitrdAddrMax);
        KernelAlignment = U32(d, SetupHeader.KernelAlignment);
        Relocatable = d[SetupHeader.RelocatableKernel] != 0;
        CmdlineSize = U32(d, SetupHeader.CmdlineSize);
        if (Relocatable && (KernelAlignment == 0 || (KernelAlignment & (KernelAlignment - 1)) != 0))
            throw Bad($"has kernel_alignment 0x{KernelAlignment:x}, which is not a power of two");

        XLoadFlags = Field(d, SetupHeader.XLoadFlags, 2, 0x020C) is { } x ? (ushort)x : (ushort)0;
        PayloadOffset = (uint)(Field(d, SetupHeader.PayloadOffset, 4, 0x0208) ?? 0);
        PayloadLength = (uint)(Field(d, SetupHeader.PayloadLength, 4, 0x0208) ?? 0);
        if (Field(d, SetupHeader.InitSize, 4, 0x020A) is { } init)
        {
            InitSize = (uint)init;
            InitSizeFromHeader = true;
            PrefAddress = Field(d, SetupHeader.PrefAddress, 8, 0x020A) ?? 0;
            // LOAD_PHYSICAL_ADDR: the loader puts the kernel there, so it must be low RAM a PC has.
            if (PrefAddress != 0 && (PrefAddress < MinimumLoadAddress || PrefAddress >= MaximumLoadAddress))
                throw Bad($"has pref_address 0x{PrefAddress:x}, outside 0x{MinimumLoadAddress:x}–0x{MaximumLoadAddress - 1:x} where a kernel can be loaded");
        }
        else
        {
            // Before 2.10 the kernel does not say how much room it needs; four times the
            // compressed size covers the decompressed kernel and its buffers for real kernels.
            InitSize = (uint)Math.Min(uint.MaxValue, (ulong)(d.Length - SetupSize) * 4);
        }
        if (InitSize < (uint)(d.Length - SetupSize))
            InitSize = (uint)(d.Length - SetupSize);

        ushort kv = U16(d, SetupHeader.KernelVersion);
        if (kv != 0 && kv + 0x200 < SetupSize)
        {
            var s = d.Slice(kv + 0x200, Math.Min(256, SetupSize - (kv + 0x200)));
            int nul = s.IndexOf((byte)0);
            KernelVersion = Encoding.ASCII.GetString(nul < 0 ? s : s[..nul]);
        }
    }

    /// <summary>Parses and validates <paramref name="image"/>; <paramref name="name"/> names the file in messages.</summary>
    public static BzImage Parse(byte[] image, string name) => new(name, image);

    public static BzImage Load(string path) => Parse(BootFiles.Read(path, "kernel"), path);

    /// <summary>A header field that exists only from protocol <paramref name="since"/> and inside the header.</summary>
    private ulong? Field(ReadOnlySpan<byte> d, int offset, int size, ushort since)
    {
        if (ProtocolVersion < since || offset + size > HeaderEnd) return null;
        return size switch
        {
            2 => U16(d, offset),
            4 => U32(d, offset),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(d[offset..]),
        };
    }

    private ImageFormatException Bad(string what) => new($"{Name}: {what}");
    private static ushort U16(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt16LittleEndian(d[o..]);
    private static uint U32(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt32LittleEndian(d[o..]);
}
