using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// REP MOVS/STOS over many pages (the engine copies whole page runs at once) must give exactly
/// what the SDM's element-by-element definition gives, including the overlapping-copy idiom.
/// </summary>
public class RepStringTests
{
    private const ulong Code = 0x100000, Src = 0x200000, Dst = 0x300000;

    private static TestMachine Run(Action<Assembler> body, Action<TestMachine>? prepare = null)
    {
        var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, a => { body(a); a.hlt(); }));
        prepare?.Invoke(m);
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        return m;
    }

    [Fact]
    public void RepStosqFillsAcrossPagesAndUpdatesRegisters()
    {
        using var m = Run(a =>
        {
            a.mov(rdi, Dst + 0x7F8);   // starts 8 bytes before a page end
            a.mov(rcx, 3001);
            a.mov(rax, 0x1122334455667788);
            a.rep.stosq();
        });
        var s = m.State();
        Assert.Equal(0UL, s.Rcx);
        Assert.Equal(Dst + 0x7F8 + 3001 * 8, s.Rdi);
        Assert.Equal(0x1122334455667788UL, m.Memory.Read<ulong>(Dst + 0x7F8));
        Assert.Equal(0x1122334455667788UL, m.Memory.Read<ulong>(Dst + 0x7F8 + 3000 * 8));
        Assert.Equal(0UL, m.Memory.Read<ulong>(Dst + 0x7F8 + 3001 * 8));
        Assert.Equal(0UL, m.Memory.Read<ulong>(Dst + 0x7F0));
    }

    [Fact]
    public void RepMovsbCopiesUnalignedRunsAcrossPages()
    {
        var data = new byte[20000];
        new Random(7).NextBytes(data);
        using var m = Run(a =>
        {
            a.mov(rsi, Src + 5);
            a.mov(rdi, Dst + 0xFFD);
            a.mov(rcx, 19000);
            a.rep.movsb();
        }, t => t.Memory.Write(Src, data));
        var got = new byte[19000];
        m.Memory.Read(Dst + 0xFFD, got);
        Assert.Equal(data.AsSpan(5, 19000).ToArray(), got);
        var s = m.State();
        Assert.Equal(Src + 5 + 19000, s.Rsi);
        Assert.Equal(Dst + 0xFFD + 19000, s.Rdi);
    }

    [Fact]
    public void OverlappingForwardCopyReplicatesThePattern()
    {
        // MOVSB with RDI = RSI + 3 copies each byte after it was written: "abc" repeats.
        using var m = Run(a =>
        {
            a.mov(rsi, Src);
            a.mov(rdi, Src + 3);
            a.mov(rcx, 9000);
            a.rep.movsb();
        }, t => t.Memory.Write(Src, "abc"u8.ToArray()));
        var got = new byte[9003];
        m.Memory.Read(Src, got);
        for (int k = 0; k < got.Length; k++) Assert.Equal("abc"[k % 3], (char)got[k]);
    }

    [Fact]
    public void AddressSize32FormCountsWithEcxAndEdi()
    {
        // With a 32-bit address size the instruction uses EDI and ECX (upper halves zeroed on write).
        using var m = Run(a =>
        {
            a.mov(edi, 0x3000);
            a.mov(ecx, 0x2000);
            a.mov(eax, 0x5A);
            a.db(0x67); a.rep.stosb();   // addr32 rep stosb
        });
        var s = m.State();
        Assert.Equal(0x5000UL, s.Rdi);
        Assert.Equal(0UL, s.Rcx);
        Assert.Equal(0x5A, m.Memory.Read<byte>(0x4FFF));
        Assert.Equal(0, m.Memory.Read<byte>(0x5000));
    }
}
