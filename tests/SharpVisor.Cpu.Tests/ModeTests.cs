using Xunit;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

public class ModeTests
{
    [Fact]
    public void RealModeLoopAndPortIo()
    {
        using var m = new TestMachine();
        var code = TestMachine.Assemble(16, 0x7C00, a =>
        {
            var loop = a.CreateLabel();
            a.mov(cx, 5);
            a.mov(al, (byte)'a');
            a.Label(ref loop);
            a.@out(0xE9, al);
            a.inc(al);
            a.loop(loop);
            a.@in(al, 0x60);
            a.mov(bl, al);
            a.hlt();
        });
        m.Memory.Write(0x7C00, code);
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0); s.Rip = 0x7C00;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal("abcde", m.Console.ToString());
        Assert.Equal(0x5AUL, m.State().Rbx & 0xFF);
    }

    /// <summary>Real mode → 32-bit protected mode → 4-level paging long mode, reporting on port 0xE9.</summary>
    [Fact]
    public void RealToProtectedToLongMode()
    {
        using var m = new TestMachine();
        const ulong gdt = 0x1000, pml4 = 0x10000;
        // GDT: null, 32-bit code 0x08, data 0x10, 64-bit code 0x18.
        m.Memory.Write(gdt, 0UL);
        m.Memory.Write(gdt + 8, 0x00CF9A000000FFFFUL);
        m.Memory.Write(gdt + 16, 0x00CF92000000FFFFUL);
        m.Memory.Write(gdt + 24, 0x00AF9A000000FFFFUL);
        m.Memory.Write(0x2000, (ushort)31);          // GDTR image: limit, base
        m.Memory.Write(0x2002, (uint)gdt);
        // Identity map the first 1 GiB with 2 MiB pages.
        m.Memory.Write(pml4, (pml4 + 0x1000) | 3);
        m.Memory.Write(pml4 + 0x1000, (pml4 + 0x2000) | 3);
        for (ulong k = 0; k < 512; k++) m.Memory.Write(pml4 + 0x2000 + k * 8, (k << 21) | 0x83);

        var real = TestMachine.Assemble(16, 0x7C00, a =>
        {
            a.cli();
            a.lgdt(__word_ptr[0x2000]);
            a.mov(eax, cr0);
            a.or(eax, 1);
            a.mov(cr0, eax);
            a.jmp(0x08, 0x8000); // far jump into 32-bit code
        });
        var pm = TestMachine.Assemble(32, 0x8000, a =>
        {
            a.mov(ax, 0x10); a.mov(ds, ax); a.mov(ss, ax); a.mov(esp, 0x9000);
            a.mov(al, (byte)'P'); a.@out(0xE9, al);
            a.mov(eax, cr4); a.or(eax, 1 << 5); a.mov(cr4, eax);          // PAE
            a.mov(eax, (uint)pml4); a.mov(cr3, eax);
            a.mov(ecx, 0xC0000080); a.rdmsr(); a.or(eax, 1 << 8); a.wrmsr(); // EFER.LME
            a.mov(eax, cr0); a.bts(eax, 31); a.mov(cr0, eax);              // paging on → IA-32e
            a.jmp(0x18, 0x9000);
        });
        var lm = TestMachine.Assemble(64, 0x9000, a =>
        {
            a.mov(al, (byte)'L'); a.@out(0xE9, al);
            a.mov(rax, 0x1234_5678_9ABC_DEF0UL);
            a.mov(rbx, rax); a.shr(rbx, 32);
            a.mov(__qword_ptr[0x3FFF_F000], rax);  // an address near 1 GiB through the 2 MiB pages
            a.mov(rcx, __qword_ptr[0x3FFF_F000]);
            a.hlt();
        });
        m.Memory.Write(0x7C00, real); m.Memory.Write(0x8000, pm); m.Memory.Write(0x9000, lm);
        // 1 GiB of RAM is not there; map the test address onto RAM via the last 2 MiB entry.
        m.Memory.Write(pml4 + 0x2000 + 511 * 8, 0x0000_0000_0040_0000UL | 0x83);
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0); s.Rip = 0x7C00;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal("PL", m.Console.ToString());
        var st = m.State();
        Assert.Equal(0x12345678UL, st.Rbx);
        Assert.Equal(0x1234_5678_9ABC_DEF0UL, st.Rcx);
        Assert.True((st.Efer & 0x400) != 0, "EFER.LMA");
        // The dirty bit of the 2 MiB page written is set.
        Assert.NotEqual(0UL, m.Memory.Read<ulong>(pml4 + 0x2000 + 511 * 8) & 0x40);
    }

    [Fact]
    public void UnsupportedInstructionStopsWithItsNameAndAddress()
    {
        using var m = new TestMachine();
        m.Memory.Write(0x7C00, new byte[] { 0x0F, 0x01, 0xC1 }); // VMCALL
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0); s.Rip = 0x7C00;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.InternalError, m.Run());
        Assert.Matches(@"unsupported instruction VMCALL at 0000:00007c00", m.Cpu.Exit.Message);
    }

    /// <summary>
    /// A block decoded under a large CS limit is not reused once CS has a smaller limit (same base):
    /// the instruction past the new limit raises #GP(0) (here, with no IDT, a triple fault after
    /// the three INCs inside the limit).
    /// </summary>
    [Fact]
    public void CachedBlockHonoursASmallerCsLimit()
    {
        using var m = new TestMachine();
        const ulong Entry = 0x1000;
        m.Memory.Write(Entry, TestMachine.Assemble(32, Entry, a =>
        {
            for (int k = 0; k < 6; k++) a.inc(eax);  // one byte each
            a.hlt();
        }));
        var s = VcpuState.Protected32(Entry);
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(6UL, m.State().Rax);

        s = VcpuState.Protected32(Entry);
        s.Cs.Limit = (uint)Entry + 2;                 // offsets Entry..Entry+2: three INCs
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("triple fault", m.Cpu.Exit.Message);
        Assert.Equal(3UL, m.State().Rax);
        Assert.Equal(Entry + 3, m.State().Rip);
    }

    [Fact]
    public void TripleFaultIsAShutdownExit()
    {
        using var m = new TestMachine();
        // IDT limit 0: any exception cannot be delivered → #DF → triple fault.
        var code = TestMachine.Assemble(16, 0x7C00, a =>
        {
            a.lidt(__word_ptr[0x2000]);
            a.ud2();
        });
        m.Memory.Write(0x2000, new byte[6]);
        m.Memory.Write(0x7C00, code);
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0); s.Rip = 0x7C00;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("triple fault", m.Cpu.Exit.Message);
    }

    /// <summary>
    /// A store into the instruction stream takes effect for the very next instruction (the SDM's
    /// self-modifying-code rule), and code that ran before is re-decoded after it is patched.
    /// </summary>
    [Fact]
    public void SelfModifyingCodeIsSeen()
    {
        using var m = new TestMachine();
        // Assembled twice: the first pass tells where `patched` lands (its address is an operand).
        byte[] Build(uint patchedAddr, out ulong[] at) => TestMachine.Assemble(32, 0x8000, a =>
        {
            var patched = a.CreateLabel();
            var again = a.CreateLabel();
            var done = a.CreateLabel();
            a.mov(ebx, 0);
            a.mov(edi, patchedAddr);
            a.Label(ref again);
            a.mov(__byte_ptr[edi + 1], 0x42);        // rewrite the immediate of the next instruction
            a.Label(ref patched);
            a.mov(al, 0x00);
            a.add(bl, al);
            a.cmp(bl, 0x42 * 2);
            a.je(done);
            // Second pass: reset the immediate, then run the same (already decoded) code again.
            a.mov(__byte_ptr[edi + 1], 0x00);
            a.jmp(again);
            a.Label(ref done);
            a.hlt();
            return [patched];
        }, out at);
        Build(0, out var first);
        var code = Build((uint)first[0], out var second);
        Assert.Equal(first[0], second[0]);
        m.Memory.Write(0x8000, code);
        m.Cpu.SetState(VcpuState.Protected32(0x8000));
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0x84UL, m.State().Rbx & 0xFF);
    }

}
