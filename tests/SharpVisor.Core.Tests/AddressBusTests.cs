using SharpVisor.Core;
using SharpVisor.Core.Bus;
using Xunit;

namespace SharpVisor.Core.Tests;

public class AddressBusTests
{
    private sealed class Recorder(string name) : IBusDevice
    {
        public string Name => name;
        public readonly List<(string Op, ulong Offset, int Size, ulong Value)> Log = new();
        public ulong ReadValue = 0x1122_3344_5566_7788;
        public ulong Read(ulong offset, int size) { Log.Add(("r", offset, size, 0)); return ReadValue; }
        public void Write(ulong offset, int size, ulong value) => Log.Add(("w", offset, size, value));
    }

    [Theory]
    [InlineData(1, 0xFFUL)]
    [InlineData(2, 0xFFFFUL)]
    [InlineData(4, 0xFFFF_FFFFUL)]
    [InlineData(8, ulong.MaxValue)]
    public void UnassignedReadsReturnAllOnesOfTheAccessWidth(int size, ulong expected)
    {
        var bus = new AddressBus("io");
        Assert.Equal(expected, bus.Read(0x1234, size));
        bus.Write(0x1234, size, 0);
        Assert.Equal(1, bus.UnmappedReads);
        Assert.Equal(1, bus.UnmappedWrites);
    }

    [Fact]
    public void DevicesSeeOffsetsFromTheirBasePlusBias()
    {
        var bus = new AddressBus("io");
        var kbc = new Recorder("kbc");
        bus.Map(0x60, 1, kbc);
        bus.Map(0x64, 1, kbc, offsetBias: 4);
        bus.Write(0x64, 1, 0xAA);
        bus.Read(0x60, 1);
        Assert.Equal(("w", 4UL, 1, 0xAAUL), kbc.Log[0]);
        Assert.Equal(("r", 0UL, 1, 0UL), kbc.Log[1]);
        Assert.Equal(2, bus.AccessCounts["kbc"]);
        Assert.Equal(ulong.MaxValue >> 56, bus.Read(0x61, 1)); // between the two mappings: nothing
    }

    [Fact]
    public void ReadsAreMaskedToTheAccessWidth()
    {
        var bus = new AddressBus("mmio");
        bus.Map(0x1000, 0x100, new Recorder("dev"));
        Assert.Equal(0x7788UL, bus.Read(0x1010, 2));
    }

    [Fact]
    public void OverlappingMappingsAreRefused()
    {
        var bus = new AddressBus("io");
        bus.Map(0x3F8, 8, new Recorder("com1"));
        var e = Assert.Throws<ConfigurationException>(() => bus.Map(0x3FF, 2, new Recorder("x")));
        Assert.Contains("overlaps com1", e.Message);
    }

    [Fact]
    public void LookupFindsEveryMappingAmongMany()
    {
        var bus = new AddressBus("io");
        var devs = new List<Recorder>();
        for (int k = 0; k < 50; k++)
        {
            var d = new Recorder($"d{k}");
            devs.Add(d);
            bus.Map((ulong)(k * 16), 8, d);
        }
        for (int k = 0; k < 50; k++)
        {
            bus.Write((ulong)(k * 16 + 7), 1, (ulong)k);
            Assert.Equal(("w", 7UL, 1, (ulong)k), devs[k].Log.Single());
            Assert.Equal(0xFFUL, bus.Read((ulong)(k * 16 + 8), 1)); // the gap after each device
        }
    }
}
