using Xunit;
using SharpVisor.Core.Vcpu;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// RDRAND (SDM Vol. 2, RDRAND: CF=1 and a random value, OF/SF/ZF/AF/PF cleared): host random
/// numbers normally; with SoftwareEngine.RandomSeed (deterministic runs) the same stream in
/// every run, so a guest that draws from it at boot behaves the same each time.
/// </summary>
public sealed class RdrandTests
{
    private const ulong Code = 0x100000;

    /// <summary>Four RDRAND RAX results, stored at 0x2000.., with RFLAGS after the last.</summary>
    private static (ulong[] Values, ulong Flags) Draw(int? seed)
    {
        using var m = new TestMachine();
        m.Engine.RandomSeed = seed;
        var code = TestMachine.Assemble(64, Code, a =>
        {
            a.mov(rax, -1L);
            a.add(rax, 1); // ZF=1, CF=1, PF=1, AF=1: RDRAND must leave CF=1 and the rest clear
            for (int k = 0; k < 4; k++)
            {
                a.rdrand(rax);
                a.mov(__qword_ptr[0x2000 + k * 8], rax);
            }
            a.pushfq();
            a.pop(rbx);
            a.hlt();
        });
        m.Memory.Write(Code, code);
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        var values = Enumerable.Range(0, 4).Select(k => m.Memory.Read<ulong>(0x2000 + (ulong)k * 8)).ToArray();
        return (values, m.State().Rbx);
    }

    [Fact]
    public void ASeededEngineGivesTheSameStreamEveryRun()
    {
        var a = Draw(1234);
        var b = Draw(1234);
        Assert.Equal(a.Values, b.Values);
        Assert.Equal(4, a.Values.Distinct().Count());
        Assert.NotEqual(a.Values, Draw(1235).Values);
    }

    [Fact]
    public void UnseededValuesDifferAndFlagsFollowTheSdm()
    {
        var (values, flags) = Draw(null);
        Assert.Equal(4, values.Distinct().Count()); // 4 equal 64-bit draws: a broken generator
        Assert.NotEqual(values, Draw(null).Values);
        const ulong cf = 1, pf = 4, af = 0x10, zf = 0x40, sf = 0x80, of = 0x800;
        Assert.Equal(cf, flags & (cf | pf | af | zf | sf | of));
    }
}
