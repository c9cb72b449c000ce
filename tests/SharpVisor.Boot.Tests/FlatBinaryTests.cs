using SharpVisor.Core;
using static SharpVisor.Boot.Tests.TestSupport;

namespace SharpVisor.Boot.Tests;

public class FlatBinaryTests
{
    [Fact]
    public void Real_mode_entry_sets_cs_ip_and_tiny_model_segments()
    {
        using var mem = Ram(4 << 20);
        byte[] code = [0xF4, 0xEB, 0xFD];
        var r = FlatBinaryLoader.Load(mem, code, 0x7C00, new FlatEntry.RealMode(0x07C0, 0));
        Assert.Equal(code, Bytes(mem, 0x7C00, 3));
        var s = r.BootCpu;
        Assert.Equal(0x07C0, s.Cs.Selector);
        Assert.Equal(0x7C00UL, s.Cs.Base);
        Assert.Equal(0UL, s.Rip);
        Assert.Equal(0x7C00UL, s.Ds.Base);
        Assert.Equal(0x7C00UL, s.Ss.Base);
        Assert.Equal(0UL, s.Cr0 & 1);          // PE clear
        Assert.Equal(0xFFFEUL, s.Rsp);
    }

    [Fact]
    public void Protected_entry_is_flat_32_bit_with_a_matching_gdt()
    {
        using var mem = Ram(4 << 20);
        var r = FlatBinaryLoader.Load(mem, new byte[0x100], 0x100000, new FlatEntry.Protected32(0x100000));
        var s = r.BootCpu;
        Assert.Equal(0x100000UL, s.Rip);
        Assert.Equal(1UL, s.Cr0 & 1);
        Assert.Equal(BootLayout.GdtGpa, s.Gdtr.Base);
        AssertSegmentMatchesGdt(mem, s, s.Cs);
        AssertSegmentMatchesGdt(mem, s, s.Ds);
    }

    [Fact]
    public void Gdt_moves_out_of_the_way_of_a_binary_at_zero()
    {
        using var mem = Ram(4 << 20);
        var image = Enumerable.Repeat((byte)0x90, 0x1001).ToArray();
        var r = FlatBinaryLoader.Load(mem, image, 0, new FlatEntry.Protected32(0));
        Assert.Equal(image, Bytes(mem, 0, image.Length));
        Assert.True(r.BootCpu.Gdtr.Base >= 0x1001);
        AssertSegmentMatchesGdt(mem, r.BootCpu, r.BootCpu.Cs);
    }

    [Fact]
    public void Binary_outside_ram_is_refused()
    {
        using var mem = Ram(4 << 20);
        var e = Assert.Throws<ConfigurationException>(() => FlatBinaryLoader.Load(mem, new byte[16], 0xA0000, new FlatEntry.RealMode(0xA000, 0), "vga.bin"));
        AssertOneLine(e, "vga.bin");
        Assert.Throws<ImageFormatException>(() => FlatBinaryLoader.Load(mem, [], 0x1000, new FlatEntry.RealMode(0, 0x1000), "empty.bin"));
    }
}
