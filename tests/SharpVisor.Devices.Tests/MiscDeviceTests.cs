using SharpVisor.Devices.Misc;

using Xunit;

namespace SharpVisor.Devices.Tests;

public class MiscDeviceTests
{
    [Fact]
    public void PostCodePortRemembersTheLastCode()
    {
        var seen = new List<byte>();
        var p = new PostCodePort(seen.Add);
        p.Write(0, 1, 0x12);
        p.Write(0, 1, 0x34);
        Assert.Equal(0x34UL, p.Read(0, 1));
        Assert.Equal(0x34, p.LastCode);
        Assert.Equal([0x12, 0x34], seen);
        Assert.Equal(2, p.WriteCount);
    }

    [Fact]
    public void DebugConsoleSendsBytesAndReadsBackE9()
    {
        var output = new List<byte>();
        var d = new DebugConsole(output.Add);
        foreach (byte b in "ok\n"u8) d.Write(0, 1, b);
        Assert.Equal("ok\n"u8.ToArray(), output.ToArray());
        Assert.Equal(0xE9UL, d.Read(0, 1));
    }

    [Theory]
    [InlineData(1, 0x00UL, 1)]
    [InlineData(1, 0x10UL, 0x21)]
    [InlineData(1, 0xFFUL, 0x1FF)]
    [InlineData(2, 0x1234UL, 0x2469)]
    [InlineData(4, 0x0000_0031UL, 0x63)]
    public void DebugExitCodeIsValueShiftedLeftOrOne(int size, ulong value, int expected)
    {
        int? code = null;
        var d = new DebugExit(c => code = c);
        d.Write(0, size, value);
        Assert.Equal(expected, code);
    }

    [Fact]
    public void DebugExitIgnoresOffsetWithinItsWindowAndReadsAllOnes()
    {
        var codes = new List<int>();
        var d = new DebugExit(codes.Add);
        d.Write(2, 1, 3);
        d.Write(4, 1, 3); // outside the 4-byte window
        Assert.Equal([7], codes);
        Assert.Equal(0xFFUL, d.Read(0, 1));
    }
}
