using SharpVisor.Core.Vcpu;

namespace SharpVisor.Kvm.Tests;

/// <summary>
/// KVM_EXIT_IO with count > 1 (REP INS/OUTS batched by KVM) over a fake kvm_run data area; the
/// KVM here emulates string I/O one element per exit, so the guest tests alone would not reach it.
/// </summary>
public sealed unsafe class PioExitTests
{
    [Fact]
    public void OutElementsArePresentedInOrder()
    {
        ushort* data = stackalloc ushort[] { 0x1111, 0x2222, 0x3333 };
        var exit = new VcpuExit();
        var pio = new PioExit();

        Assert.Equal(ExitReason.IoOut, pio.Begin(exit, isIn: false, size: 2, port: 0x1F0, count: 3, (byte*)data));
        var seen = new List<ulong> { exit.Data };
        while (pio.Advance(exit, out var r))
        {
            Assert.Equal(ExitReason.IoOut, r);
            Assert.Equal(0x1F0ul, exit.Address);
            Assert.Equal(2, exit.Size);
            seen.Add(exit.Data);
        }
        Assert.Equal([0x1111ul, 0x2222, 0x3333], seen);
    }

    [Fact]
    public void InValuesAreStoredIntoTheirSlotsInOrder()
    {
        uint* data = stackalloc uint[4];
        data[3] = 0xAAAA_AAAA; // past count: must stay untouched
        var exit = new VcpuExit();
        var pio = new PioExit();

        Assert.Equal(ExitReason.IoIn, pio.Begin(exit, isIn: true, size: 4, port: 0xCFC, count: 3, (byte*)data));
        Assert.Equal(0xFFFF_FFFFul, exit.Data); // default when the run loop does not answer
        exit.Data = 0x10;
        Assert.True(pio.Advance(exit, out var r));
        Assert.Equal(ExitReason.IoIn, r);
        exit.Data = 0x20;
        Assert.True(pio.Advance(exit, out _));
        exit.Data = 0x30;
        Assert.False(pio.Advance(exit, out _)); // all done: KVM_RUN may resume

        Assert.Equal([0x10u, 0x20u, 0x30u, 0xAAAA_AAAAu], new ReadOnlySpan<uint>(data, 4).ToArray());
    }

    [Fact]
    public void SingleElementIsDoneAfterOneAdvance()
    {
        byte value = 0;
        var exit = new VcpuExit();
        var pio = new PioExit();
        Assert.Equal(ExitReason.IoIn, pio.Begin(exit, isIn: true, size: 1, port: 0x60, count: 1, &value));
        Assert.Equal(0xFFul, exit.Data);
        exit.Data = 0x1C;
        Assert.False(pio.Advance(exit, out _));
        Assert.Equal(0x1C, value);
    }
}
