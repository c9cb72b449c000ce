using SharpVisor.Core;
using SharpVisor.Core.Memory;
using Xunit;

namespace SharpVisor.Core.Tests;

public class GuestMemoryTests
{
    [Fact]
    public void PcLayoutLeavesTheVgaWindowAndPciHoleUnbacked()
    {
        using var m = new GuestMemory();
        PcMemoryLayout.AddRam(m, 4UL << 30);
        Assert.True(m.IsRam(0x9F000, 1));
        Assert.False(m.IsRam(0xA0000, 1));
        Assert.False(m.IsRam(0xBFFFF, 1));
        Assert.True(m.IsRam(0xC0000, 1));
        Assert.True(m.IsRam(0xBFFF_F000, 0x1000));
        Assert.False(m.IsRam(0xC000_0000, 1));     // PCI hole
        Assert.True(m.IsRam(0x1_0000_0000, 1));     // the 1 GiB moved above 4 GiB
        Assert.True(m.IsRam(0x1_3FFF_FFFF, 1));
        Assert.False(m.IsRam(0x1_4000_0000, 1));
        Assert.Equal(4UL << 30, m.RamSize + 0x20000); // the VGA window's 128 KiB is not RAM
    }

    [Fact]
    public void E820MatchesTheLayout()
    {
        using var m = new GuestMemory();
        PcMemoryLayout.AddRam(m, 64UL << 20);
        var e = PcMemoryLayout.E820(m);
        Assert.Equal(new E820Entry(0, 0x9FC00, E820Type.Ram), e[0]);
        Assert.Contains(new E820Entry(0x100000, (64UL << 20) - 0x100000, E820Type.Ram), e);
        Assert.DoesNotContain(e, x => x.Type == E820Type.Ram && x.Address < 0x100000 && x.Address + x.Size > 0xA0000);
    }

    [Fact]
    public void ReadsAndWritesRoundTripAndNonRamIsAnError()
    {
        using var m = new GuestMemory();
        PcMemoryLayout.AddRam(m, 16UL << 20);
        m.Write(0x12345UL, 0xDEADBEEF_CAFEF00DUL);
        Assert.Equal(0xDEADBEEF_CAFEF00DUL, m.Read<ulong>(0x12345));
        var ex = Assert.Throws<VmmException>(() => m.Write(0xA0000UL, (byte)1));
        Assert.Contains("a0000", ex.Message);
    }

    [Fact]
    public void TooLittleMemoryIsAClearConfigurationError()
    {
        using var m = new GuestMemory();
        var e = Assert.Throws<ConfigurationException>(() => PcMemoryLayout.AddRam(m, 1UL << 20));
        Assert.Equal("memory size 1024 KiB is too small (the minimum is 2 MiB)", e.Message);
    }

    [Fact]
    public void OverlappingOrUnalignedRegionsAreRefused()
    {
        using var m = new GuestMemory();
        m.AddRegion(0, 0x10000, "a");
        Assert.Throws<ConfigurationException>(() => m.AddRegion(0x8000, 0x1000, "b"));
        Assert.Throws<ConfigurationException>(() => m.AddRegion(0x20001, 0x1000, "c"));
    }
}
