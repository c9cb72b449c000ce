using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// The pre-decoded fast path (Interpreter/FastPath.cs) against the Iced-based Execute it stands in
/// for: the same programs run with pre-decoding on and off must end in the same registers, flags,
/// memory and retired-instruction count, in 16-, 32- and 64-bit code (the host-CPU differential
/// tests cover 64-bit mode only), including a fault, an MMIO exit and a code write in the middle
/// of a block of pre-decoded instructions, whose RIP and counts are also checked against the SDM.
/// </summary>
public class PredecodedPathTests
{
    private const ulong Code = 0x100000, Data = 0x200000, Idt = 0x20000, Gdt = 0x30000, Handler = 0x110000;
    /// <summary>Real-mode code, data and stack segments (below 1 MiB).</summary>
    private const ulong RealCode = 0x80000, RealData = 0x90000, RealStack = 0x70000;
    /// <summary>Beyond the 16 MiB of RAM (and inside the 64-bit identity map): MMIO.</summary>
    private const ulong Mmio = 0x0200_0000;

    private static SoftwareVcpu Vcpu(TestMachine m) => (SoftwareVcpu)m.Cpu;

    /// <summary>Everything a run can change that the test compares between the two paths.</summary>
    private static string Snapshot(TestMachine m, ulong data0)
    {
        var s = m.State();
        var data = new byte[0x400];
        m.Memory.Read(data0, data);
        return $"gpr {string.Join(",", s.Gpr.Select(g => g.ToString("x")))} rip {s.Rip:x} rflags {s.Rflags:x} " +
               $"retired {Vcpu(m).InstructionsRetired} data {Convert.ToHexString(data)}";
    }

    /// <summary>Fills the data area and the registers from <paramref name="seed"/>.</summary>
    private static void Randomize(TestMachine m, VcpuState s, int seed, int bits)
    {
        var rng = new Random(seed);
        var data = new byte[0x400];
        rng.NextBytes(data);
        m.Memory.Write(bits == 16 ? RealData : Data, data);
        for (int r = 0; r < 16; r++) s.Gpr[r] = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40);
        if (bits != 64) for (int r = 0; r < 16; r++) s.Gpr[r] &= 0xFFFF_FFFF;
        // Pointers stay pointers: RSI/ESI at the data, RDI a small index, RSP a stack.
        s.Gpr[Gpr.Rsi] = bits == 16 ? 0x100 : Data + 0x100;
        s.Gpr[Gpr.Rdi] = (ulong)rng.Next(0, 8);
        s.Gpr[Gpr.Rsp] = bits == 16 ? 0x8000UL : 0x90000UL;
        s.Rflags = 0x2 | (ulong)(rng.Next() & 0x8D5); // random arithmetic flags
    }

    private static TestMachine Machine(int bits, Action<Assembler> body, int seed, bool predecode)
    {
        var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        ulong origin = bits == 16 ? 0 : Code;
        m.Memory.Write(bits == 16 ? RealCode : Code, TestMachine.Assemble(bits, origin, body));
        VcpuState s;
        if (bits == 64) s = m.EnterLong64(Code);
        else if (bits == 32) s = VcpuState.Protected32(Code);
        else
        {
            s = VcpuState.AfterReset();
            s.Cs = SegmentRegister.RealMode((ushort)(RealCode >> 4), code: true);
            s.Ds = s.Es = SegmentRegister.RealMode((ushort)(RealData >> 4));
            s.Ss = SegmentRegister.RealMode((ushort)(RealStack >> 4));
            s.Rip = 0;
        }
        Randomize(m, s, seed, bits);
        m.Cpu.SetState(s);
        return m;
    }

    /// <summary>A mix of every pre-decoded form, in the operand and address sizes of <paramref name="bits"/>-bit code.</summary>
    private static void Mix(Assembler a, int bits)
    {
        AssemblerMemoryOperand M32(int d) => bits == 16 ? __dword_ptr[si + d] : bits == 32 ? __dword_ptr[esi + edi * 4 + d] : __dword_ptr[rsi + rdi * 4 + d];
        AssemblerMemoryOperand M16(int d) => bits == 16 ? __word_ptr[si + d] : bits == 32 ? __word_ptr[esi + edi * 2 + d] : __word_ptr[rsi + rdi * 2 + d];
        AssemblerMemoryOperand M8(int d) => bits == 16 ? __byte_ptr[si + d] : bits == 32 ? __byte_ptr[esi + edi + d] : __byte_ptr[rsi + rdi + d];
        var skip1 = a.CreateLabel(); var skip2 = a.CreateLabel(); var skip3 = a.CreateLabel();
        var sub = a.CreateLabel(); var after = a.CreateLabel();
        for (int round = 0; round < 3; round++)
        {
            a.mov(eax, ebx); a.mov(cx, dx); a.mov(ah, bl); a.mov(ch, dh); a.mov(bp, 0x1234); a.mov(al, 0x5A);
            a.mov(edx, M32(4)); a.mov(bx, M16(2)); a.mov(dh, M8(1));
            a.mov(M32(16), eax); a.mov(M16(20), cx); a.mov(M8(22), ah);
            a.mov(M32(24), 0x7FFF_0001); a.mov(M16(28), 0x8001); a.mov(M8(30), 0x80);
            a.add(eax, ecx); a.adc(bx, dx); a.sbb(ah, cl); a.sub(ebp, ebx); a.and(cx, ax); a.or(dl, bh); a.xor(ebx, edx);
            a.cmp(eax, ebp); a.adc(eax, 0x7FFF_FFFF); a.sbb(cx, -3); a.test(dh, 0x81); a.add(bl, 0x7F); a.sub(ebp, 1);
            a.add(eax, M32(8)); a.sbb(cx, M16(12)); a.xor(ch, M8(13)); a.cmp(edx, M32(0)); a.test(M16(6), bx);
            a.add(M32(32), ebx); a.adc(M16(36), dx); a.sub(M8(38), al); a.or(M32(40), 0x1000_0001); a.sbb(M16(44), 5);
            a.cmp(M8(46), 0x33); a.test(M32(48), 0x4000_0000); a.and(M8(50), bh);
            a.inc(eax); a.dec(cx); a.inc(dh); a.dec(ebp);
            // Address-size wrap-around: 16-bit offsets in 32-bit registers, 32-bit addresses in 64-bit code.
            // (the registers' bits above the address size must not leak into the address).
            if (bits == 16) { a.lea(bx, __[si + 0x7FF0]); a.lea(ebp, __[bx + si + 0x7FF0]); a.mov(__dword_ptr[si + 0x100 + round * 8], ebp); }
            else { a.lea(ebx, __[eax + ecx * 8 - 0x100]); a.lea(bp, __[ebx + 0x7FFF]); }
            if (bits == 64) { a.mov(rcx, 0x1_FFFF_FFF0); a.lea(rbx, __[ecx + 0x20]); a.mov(__qword_ptr[rsi + 0x100 + round * 8], rbx); }
            a.movzx(eax, bh); a.movzx(ecx, dx); a.movsx(edx, ah); a.movsx(bx, cl); a.movzx(ebp, M16(52)); a.movsx(eax, M8(54));
            a.shl(eax, 5); a.shr(cx, 3); a.sar(dh, 2); a.shl(bl, 1); a.shr(ebp, 31); a.sar(eax, 1);
            a.imul(eax, ebx); a.seto(ah); a.imul(cx, M16(4)); a.imul(edx, ebp, 0x12345); a.imul(bx, M16(6), -7); a.imul(ebp, M32(8), 3);
            a.sete(al); a.setb(ch); a.setg(dl); a.seto(bh);
            a.cmovne(eax, ebx); a.cmovb(cx, dx); a.cmovle(ebp, M32(56)); a.cmova(edx, ecx);
            if (bits == 64) { a.push(rax); a.push(cx); a.pop(rbx); a.pop(dx); }
            else { a.push(eax); a.push(cx); a.pop(ebx); a.pop(dx); }
            a.cmp(al, ch); a.jb(skip1); a.add(eax, 3); a.Label(ref skip1);
            a.test(ebx, 0x100); a.jne(skip2); a.xor(ecx, ebx); a.Label(ref skip2);
            a.cmp(bp, dx); a.jl(skip3); a.sub(edx, eax); a.Label(ref skip3);
            skip1 = a.CreateLabel(); skip2 = a.CreateLabel(); skip3 = a.CreateLabel();
            a.nop();
        }
        if (bits == 64)
        {
            a.mov(r8, rax); a.add(r9, r8); a.adc(r10d, M32(60)); a.mov(r11, 0x1234_5678_9ABC_DEF0); a.sub(r12, -5);
            a.lea(r13, __[rsi + rdi * 8 + 0x10]); a.mov(__qword_ptr[rsi + 64], r11); a.xor(r14, __qword_ptr[rsi + 64]);
            a.add(__qword_ptr[rsi + 72], r13); a.shl(r15, 63); a.movsxd(rbx, ecx); a.movsxd(rcx, M32(80));
            a.imul(r8, r9); a.seto(cl); a.imul(rax, __qword_ptr[rsi + 8], 0x7FFF_FFFF); a.setc(dl);
            a.mov(r11, -0x100); a.imul(r12, r11, 3); a.setc(bl); a.imul(r13, __qword_ptr[rsi + 16]); a.seto(bh);
            a.push(r9); a.pop(rdx); a.cmovs(r8, rbx); a.setns(r9b); a.inc(r10); a.dec(r11w);
        }
        a.call(sub); a.jmp(after);
        a.Label(ref sub); a.add(eax, ebx); a.ret();
        a.Label(ref after);
        a.hlt();
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    public void Pre_decoded_forms_end_in_the_same_state_as_the_iced_path(int bits)
    {
        for (int seed = 1; seed <= 40; seed++)
        {
            using var fast = Machine(bits, a => Mix(a, bits), seed, predecode: true);
            using var slow = Machine(bits, a => Mix(a, bits), seed, predecode: false);
            Assert.Equal(ExitReason.Halt, fast.Run());
            Assert.Equal(ExitReason.Halt, slow.Run());
            ulong data = bits == 16 ? RealData : Data;
            Assert.Equal(Snapshot(slow, data), Snapshot(fast, data));
        }
    }

    /// <summary>
    /// A #GP (non-canonical address, SDM Vol. 3A §3.3.7.1) on the fifth instruction of a block of
    /// pre-decoded instructions: the four before it are done and retired, it and the rest are not,
    /// and the exception frame holds its RIP.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Fault_in_the_middle_of_a_block_is_exact(bool predecode)
    {
        using var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        ulong[] labels = [];
        var code = TestMachine.Assemble(64, Code, a =>
        {
            var faulting = a.CreateLabel();
            a.mov(eax, 1); a.add(eax, 2); a.mov(__qword_ptr[rsi], rax); a.inc(ecx);
            a.Label(ref faulting);
            a.mov(rdx, __qword_ptr[rbx]); // non-canonical RBX
            a.mov(eax, 99); a.inc(ecx);
            a.hlt();
            return [faulting];
        }, out labels);
        m.Memory.Write(Code, code);
        m.Memory.Write(Handler, TestMachine.Assemble(64, Handler, a => a.hlt()));
        m.Memory.Write(Gdt + 0x08, 0x00AF_9A00_0000_FFFFUL);
        ulong lo = (Handler & 0xFFFF) | (0x08UL << 16) | (0x8E00UL << 32) | ((Handler >> 16) & 0xFFFF) << 48;
        m.Memory.Write(Idt + 13 * 16, lo);
        m.Memory.Write(Idt + 13 * 16 + 8, Handler >> 32);
        var s = m.EnterLong64(Code);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0xF };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 0xFF };
        s.Gpr[Gpr.Rbx] = 0x8000_0000_0000_0000;
        s.Gpr[Gpr.Rsi] = Data;
        s.Gpr[Gpr.Rcx] = 10;
        s.Gpr[Gpr.Rdx] = 0x77;
        m.Cpu.SetState(s);

        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(Handler + 1, e.Rip);
        Assert.Equal(3UL, e.Gpr[Gpr.Rax]);
        Assert.Equal(11UL, e.Gpr[Gpr.Rcx]);
        Assert.Equal(0x77UL, e.Gpr[Gpr.Rdx]);
        Assert.Equal(3UL, m.Memory.Read<ulong>(Data));
        Assert.Equal(0UL, m.Memory.Read<ulong>(e.Rsp));          // error code
        Assert.Equal(labels[0], m.Memory.Read<ulong>(e.Rsp + 8)); // RIP of the faulting MOV
        Assert.Equal(4 + 1, Vcpu(m).InstructionsRetired);          // four before the fault, then the handler's HLT
    }

    /// <summary>
    /// Real mode: a word read at offset 0xFFFF runs past the 64 KiB segment limit, #GP (SDM Vol. 3B
    /// §20.1.4), delivered through the IVT; the saved IP is the reading instruction's.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Segment_limit_fault_in_real_mode_is_exact(bool predecode)
    {
        using var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        var code = TestMachine.Assemble(16, 0, a =>
        {
            var faulting = a.CreateLabel();
            a.mov(ax, 5); a.add(ax, bx); a.mov(__word_ptr[di], ax); a.dec(cx);
            a.Label(ref faulting);
            a.mov(dx, __word_ptr[si]); // SI = 0xFFFF
            a.mov(ax, 99);
            a.hlt();
            return [faulting];
        }, out var labels);
        m.Memory.Write(RealCode, code);
        m.Memory.Write(0x3000UL, new byte[] { 0xF4 }); // handler 0300:0000: HLT
        m.Memory.Write(13UL * 4, 0x0300_0000U);          // IVT vector 13 → 0300:0000
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode((ushort)(RealCode >> 4), code: true);
        s.Ds = SegmentRegister.RealMode((ushort)(RealData >> 4));
        s.Ss = SegmentRegister.RealMode((ushort)(RealStack >> 4));
        s.Rip = 0;
        s.Gpr[Gpr.Rsp] = 0x8000; s.Gpr[Gpr.Rsi] = 0xFFFF; s.Gpr[Gpr.Rdi] = 0x10;
        s.Gpr[Gpr.Rbx] = 7; s.Gpr[Gpr.Rcx] = 3; s.Gpr[Gpr.Rdx] = 0x55;
        m.Cpu.SetState(s);

        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(0x3000UL, e.Cs.Base);
        Assert.Equal(12UL, e.Gpr[Gpr.Rax] & 0xFFFF);
        Assert.Equal(2UL, e.Gpr[Gpr.Rcx] & 0xFFFF);
        Assert.Equal(0x55UL, e.Gpr[Gpr.Rdx] & 0xFFFF);
        Assert.Equal((ushort)12, m.Memory.Read<ushort>(RealData + 0x10));
        Assert.Equal((ushort)labels[0], m.Memory.Read<ushort>(RealStack + 0x8000 - 6)); // saved IP (then CS, FLAGS)
        Assert.Equal(4 + 1, Vcpu(m).InstructionsRetired);
    }

    /// <summary>
    /// A pre-decoded load from MMIO in the middle of a block exits with RIP at the load, the
    /// instructions before it retired; the VMM's answer then completes it and the block goes on.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Mmio_read_in_the_middle_of_a_block_exits_at_the_load(bool predecode)
    {
        using var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        var code = TestMachine.Assemble(32, Code, a =>
        {
            var load = a.CreateLabel();
            a.mov(ecx, 4); a.shl(ecx, 2); a.mov(__dword_ptr[esi], ecx);
            a.Label(ref load);
            a.add(ecx, __dword_ptr[ebx]); // EBX in MMIO
            a.mov(edx, ecx); a.inc(edx);
            a.hlt();
            return [load];
        }, out var labels);
        m.Memory.Write(Code, code);
        var s = VcpuState.Protected32(Code);
        s.Gpr[Gpr.Rsi] = Data; s.Gpr[Gpr.Rbx] = Mmio; s.Gpr[Gpr.Rsp] = 0x90000;
        m.Cpu.SetState(s);

        Assert.Equal(ExitReason.MmioRead, m.Cpu.Run());
        Assert.Equal(Mmio, m.Cpu.Exit.Address);
        Assert.Equal(4, m.Cpu.Exit.Size);
        var mid = m.State();
        Assert.Equal(labels[0], mid.Rip);
        Assert.Equal(16UL, mid.Gpr[Gpr.Rcx]);
        Assert.Equal(3, Vcpu(m).InstructionsRetired);
        m.Cpu.Exit.Data = 0x100;
        Assert.Equal(ExitReason.Halt, m.Cpu.Run());
        var e = m.State();
        Assert.Equal(0x110UL, e.Gpr[Gpr.Rcx]);
        Assert.Equal(0x111UL, e.Gpr[Gpr.Rdx]);
        Assert.Equal(3 + 3 + 1, Vcpu(m).InstructionsRetired);
    }

    /// <summary>
    /// A pre-decoded store into a later instruction of its own block (self-modifying code): the
    /// block ends after the store and the modified instruction runs as written (SDM Vol. 3A §11.6).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Store_into_the_running_block_runs_the_new_code(bool predecode)
    {
        using var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        var code = TestMachine.Assemble(32, Code, a =>
        {
            var patched = a.CreateLabel();
            a.mov(ecx, 1);
            a.mov(__byte_ptr[esi], 0x42); // ESI → the immediate of the MOV below
            a.inc(ecx);
            a.Label(ref patched);
            a.mov(eax, 0x11);
            a.add(eax, ecx);
            a.hlt();
            return [patched];
        }, out var labels);
        m.Memory.Write(Code, code);
        var s = VcpuState.Protected32(Code);
        s.Gpr[Gpr.Rsi] = labels[0] + 1; s.Gpr[Gpr.Rsp] = 0x90000;
        m.Cpu.SetState(s);

        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(0x42UL + 2, e.Gpr[Gpr.Rax]);
        Assert.Equal(6, Vcpu(m).InstructionsRetired);
    }
}
