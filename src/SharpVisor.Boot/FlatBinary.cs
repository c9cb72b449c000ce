// Flat binary loader: raw bytes at a guest-physical address, entered either in real mode at
// CS:IP or in flat 32-bit protected mode (paging off). No format to follow; the choices:
// - Real mode: DS = ES = FS = GS = SS = CS (the tiny model of .COM files and boot sectors'
//   usual assumption), SP = 0xFFFE, everything else as after RESET (SDM Vol. 3 §9.1.1).
// - Protected mode: VcpuState.Protected32 with a matching GDT at 0x500, or just after the
//   binary when the binary covers 0x500.
using SharpVisor.Core;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot;

public abstract record FlatEntry
{
    private FlatEntry() { }
    /// <summary>Real mode at <paramref name="Cs"/>:<paramref name="Ip"/>.</summary>
    public sealed record RealMode(ushort Cs, ushort Ip) : FlatEntry;
    /// <summary>Flat 32-bit protected mode at <paramref name="Eip"/>, paging off.</summary>
    public sealed record Protected32(uint Eip) : FlatEntry;
}

public static class FlatBinaryLoader
{
    public const ushort RealModeStackPointer = 0xFFFE;

    public static BootResult Load(GuestMemory memory, ReadOnlySpan<byte> image, ulong gpa, FlatEntry entry, string name = "image")
    {
        if (image.IsEmpty) throw new ImageFormatException($"{name}: the file is empty");
        if (!Multiboot.MultibootLoader.IsRam(memory, gpa, (ulong)image.Length))
            throw new ConfigurationException($"{name}: {image.Length} bytes at 0x{gpa:x} do not fit in guest RAM");
        memory.Write(gpa, image);
        var placed = new List<PlacedRange> { new("image", gpa, (ulong)image.Length) };
        VcpuState cpu;
        switch (entry)
        {
            case FlatEntry.RealMode rm:
                cpu = VcpuState.AfterReset();
                cpu.Cs = SegmentRegister.RealMode(rm.Cs, code: true);
                cpu.Ds = cpu.Es = cpu.Fs = cpu.Gs = cpu.Ss = SegmentRegister.RealMode(rm.Cs);
                cpu.Rip = rm.Ip;
                cpu.Rsp = RealModeStackPointer;
                break;
            case FlatEntry.Protected32 pm:
                cpu = VcpuState.Protected32(pm.Eip);
                ulong gdt = BootLayout.GdtGpa;
                if (gdt < gpa + (ulong)image.Length && gpa < gdt + BootGdt.Size)
                    gdt = (gpa + (ulong)image.Length + 15) & ~15UL;
                if (!memory.IsRam(gdt, BootGdt.Size))
                    throw new ConfigurationException($"{name}: no RAM left for the boot GDT at 0x{gdt:x}");
                placed.Add(BootGdt.Write(memory, gdt, longMode: false, cpu));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(entry));
        }
        return new BootResult { BootCpu = cpu, Placed = placed };
    }
}
