// Offsets of the Linux x86 real-mode setup header (Documentation/arch/x86/boot.rst,
// "The real-mode kernel header") and of struct boot_params, the "zero page"
// (Documentation/arch/x86/zero-page.rst). Offsets are from the start of the image / of
// boot_params; the setup header sits at 0x1F1 in both. Names are the kernel's.
namespace SharpVisor.Boot.LinuxBoot;

public static class SetupHeader
{
    public const int SetupSects = 0x1F1;        // u8, 0 means 4
    public const int RootFlags = 0x1F2;         // u16
    public const int Syssize = 0x1F4;           // u32 (2.04+), protected-mode size in 16-byte units
    public const int VidMode = 0x1FA;           // u16
    public const int BootFlag = 0x1FE;          // u16, 0xAA55
    public const int Jump = 0x200;              // u16; its second byte gives the header's end
    public const int Header = 0x202;            // u32, "HdrS"
    public const int Version = 0x206;           // u16, protocol version
    public const int KernelVersion = 0x20E;     // u16, pointer to a string, minus 0x200
    public const int TypeOfLoader = 0x210;      // u8
    public const int LoadFlags = 0x211;         // u8
    public const int Code32Start = 0x214;       // u32
    public const int RamdiskImage = 0x218;      // u32
    public const int RamdiskSize = 0x21C;       // u32
    public const int HeapEndPtr = 0x224;        // u16 (2.01+)
    public const int CmdLinePtr = 0x228;        // u32 (2.02+)
    public const int InitrdAddrMax = 0x22C;     // u32 (2.03+)
    public const int KernelAlignment = 0x230;   // u32 (2.05+)
    public const int RelocatableKernel = 0x234; // u8 (2.05+)
    public const int MinAlignment = 0x235;      // u8 (2.10+), log2
    public const int XLoadFlags = 0x236;        // u16 (2.12+)
    public const int CmdlineSize = 0x238;       // u32 (2.06+)
    public const int HardwareSubarch = 0x23C;   // u32 (2.07+)
    public const int PayloadOffset = 0x248;     // u32 (2.08+), from the start of the protected-mode code
    public const int PayloadLength = 0x24C;     // u32 (2.08+)
    public const int SetupData = 0x250;         // u64 (2.09+)
    public const int PrefAddress = 0x258;       // u64 (2.10+)
    public const int InitSize = 0x260;          // u32 (2.10+)
    public const int HandoverOffset = 0x264;    // u32 (2.11+)
    public const int KernelInfoOffset = 0x268;  // u32 (2.15+)
    /// <summary>End of the largest setup header defined so far (2.15).</summary>
    public const int MaxEnd = 0x26C;

    public const uint HdrSMagic = 0x5372_6448; // "HdrS" little-endian
    public const ushort BootFlagMagic = 0xAA55;

    // loadflags
    public const byte LoadedHigh = 1 << 0;
    public const byte KaslrFlag = 1 << 1;
    public const byte QuietFlag = 1 << 5;
    public const byte KeepSegments = 1 << 6;
    public const byte CanUseHeap = 1 << 7;

    // xloadflags
    public const ushort XlfKernel64 = 1 << 0;
    public const ushort XlfCanBeLoadedAbove4G = 1 << 1;
    public const ushort XlfEfiHandover32 = 1 << 2;
    public const ushort XlfEfiHandover64 = 1 << 3;
    public const ushort XlfEfiKexec = 1 << 4;
}

public static class ZeroPage
{
    public const int Size = 0x1000;
    public const int ScreenInfo = 0x000;        // struct screen_info, 0x40 bytes
    public const int AcpiRsdpAddr = 0x070;      // u64
    public const int ExtRamdiskImage = 0x0C0;   // u32, bits 63:32 of ramdisk_image
    public const int ExtRamdiskSize = 0x0C4;    // u32
    public const int ExtCmdLinePtr = 0x0C8;     // u32
    public const int AltMemK = 0x1E0;           // u32, KiB of memory above 1 MiB
    public const int E820Entries = 0x1E8;       // u8
    public const int Sentinel = 0x1EF;          // u8, must be 0 when the loader sets fields explicitly
    public const int Hdr = 0x1F1;               // struct setup_header
    public const int E820Table = 0x2D0;         // struct boot_e820_entry[128], 20 bytes each
    public const int E820Max = 128;
    public const int E820EntrySize = 20;

    // struct screen_info fields
    public const int OrigX = 0x00, OrigY = 0x01, ExtMemK = 0x02, OrigVideoPage = 0x04, OrigVideoMode = 0x06,
        OrigVideoCols = 0x07, OrigVideoEgaBx = 0x0A, OrigVideoLines = 0x0E, OrigVideoIsVga = 0x0F, OrigVideoPoints = 0x10;
}
