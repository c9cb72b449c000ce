using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Code that the VMM (not a vCPU) writes into guest RAM: a loader, fw_cfg DMA, the image a reset
/// restores. GuestMemory raises Written, and the engine must drop the blocks it decoded there.
/// </summary>
public sealed class HostWriteTests
{
    private const ulong Code = 0x100000;

    private static byte[] ReturnValue(int value) => TestMachine.Assemble(64, Code, a =>
    {
        a.mov(eax, value);
        a.hlt();
    });

    [Fact]
    public void CodeRewrittenByTheHostRunsAnew()
    {
        using var m = new TestMachine();
        m.Memory.Write(Code, ReturnValue(1));
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(1ul, m.State().Rax);

        // Same address, same length, new immediate: a stale block would return 1 again.
        m.Memory.Write(Code, ReturnValue(2));
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(2ul, m.State().Rax);

        // A DMA-style write through a span, announced with NotifyWritten.
        ReturnValue(3).CopyTo(m.Memory.GetSpan(Code, 16));
        m.Memory.NotifyWritten(Code, 16);
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(3ul, m.State().Rax);
    }
}
