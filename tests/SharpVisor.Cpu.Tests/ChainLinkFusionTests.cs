using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// The block loop's chaining (Dispatch.cs: ExecuteBlock runs on into the next block while the run
/// loop would do nothing), block links (NextBlock: the successor found without the block cache)
/// and ALU+Jcc fusion (UopHandlers.cs). Links must never outlive what they assume: code writes
/// (page generation), CR3 loads and INVLPG (the translation) end or bypass them; the instruction
/// clock must stop at the same block boundary as without chaining; fused pairs must give the
/// same state as the unfused handlers and the Iced path from random states.
/// </summary>
public class ChainLinkFusionTests
{
    private const ulong Code = 0x100000, Data = 0x200000, Idt = 0x20000, Gdt = 0x30000, Handler = 0x110000;

    private static SoftwareVcpu Vcpu(TestMachine m) => (SoftwareVcpu)m.Cpu;

    private static string Snapshot(TestMachine m)
    {
        var s = m.State();
        return $"gpr {string.Join(",", s.Gpr.Select(g => g.ToString("x")))} rip {s.Rip:x} rflags {s.Rflags:x} retired {Vcpu(m).InstructionsRetired}";
    }

    // ------------------------------------------------------------------ fusion

    /// <summary>
    /// Every condition code after every fusable first instruction (register CMP, TEST, SUB, ADD,
    /// AND, OR, XOR, ADC, SBB with register and immediate sources, INC, DEC) in each operand size,
    /// each pair ending a block, the branch outcome recorded in EDI/ESI: fused, unfused and the
    /// Iced path must end alike from 30 random register and flag states.
    /// </summary>
    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    public void Fused_pairs_match_the_unfused_and_iced_paths(int bits)
    {
        void Body(Assembler a)
        {
            int n = 0;
            for (int cc = 0; cc < 16; cc++)
            {
                foreach (int size in bits == 64 ? new[] { 1, 2, 4, 8 } : new[] { 1, 2, 4 })
                {
                    for (int form = 0; form < 20; form += 1 + (cc + size) % 3)
                    {
                        EmitFirst(a, form, size, n);
                        var skip = a.CreateLabel();
                        EmitJcc(a, cc, skip);
                        a.xor(edi, 1 << (n % 31));
                        a.rol(esi, 1); // keeps a history of the outcomes
                        a.Label(ref skip);
                        a.add(esi, edi);
                        n++;
                    }
                }
            }
            a.hlt();
        }
        for (int seed = 1; seed <= 30; seed++)
        {
            using var fused = Machine(bits, Body, seed, predecode: true, fuse: true);
            using var unfused = Machine(bits, Body, seed, predecode: true, fuse: false);
            using var iced = Machine(bits, Body, seed, predecode: false, fuse: false);
            Assert.Equal(ExitReason.Halt, fused.Run());
            Assert.Equal(ExitReason.Halt, unfused.Run());
            Assert.Equal(ExitReason.Halt, iced.Run());
            Assert.Equal(Snapshot(iced), Snapshot(unfused));
            Assert.Equal(Snapshot(iced), Snapshot(fused));
        }
    }

    private static void EmitFirst(Assembler a, int form, int size, int n)
    {
        // Operands: AX/BX/CX/DX/BP in the size's width; immediates vary with n.
        int imm = (n * 37 + 5) % 256 - 128;
        switch (size)
        {
            case 1:
                switch (form % 10)
                {
                    case 0: a.cmp(al, bl); break; case 1: a.test(cl, dl); break; case 2: a.sub(al, (sbyte)imm); break;
                    case 3: a.add(bl, cl); break; case 4: a.and(dl, (sbyte)imm); break; case 5: a.or(ah, bh); break;
                    case 6: a.adc(al, dl); break; case 7: a.sbb(cl, (sbyte)imm); break; case 8: a.inc(dl); break;
                    default: a.dec(bh); break;
                }
                break;
            case 2:
                switch (form % 10)
                {
                    case 0: a.cmp(ax, bx); break; case 1: a.test(cx, (short)imm); break; case 2: a.sub(bp, ax); break;
                    case 3: a.add(bx, (short)(imm * 129)); break; case 4: a.and(dx, cx); break; case 5: a.xor(ax, dx); break;
                    case 6: a.adc(bx, (short)imm); break; case 7: a.sbb(cx, bp); break; case 8: a.inc(ax); break;
                    default: a.dec(dx); break;
                }
                break;
            case 4:
                switch (form % 10)
                {
                    case 0: a.cmp(eax, ebx); break; case 1: a.test(ecx, imm * 0x01010101); break; case 2: a.sub(ebp, eax); break;
                    case 3: a.add(ebx, imm << 24); break; case 4: a.and(edx, ecx); break; case 5: a.xor(eax, edx); break;
                    case 6: a.adc(ebx, imm); break; case 7: a.sbb(ecx, ebp); break; case 8: a.inc(eax); break;
                    default: a.dec(edx); break;
                }
                break;
            default:
                switch (form % 10)
                {
                    case 0: a.cmp(rax, rbx); break; case 1: a.test(rcx, imm * 0x01010101); break; case 2: a.sub(rbp, rax); break;
                    case 3: a.add(rbx, imm << 24); break; case 4: a.and(rdx, rcx); break; case 5: a.xor(rax, rdx); break;
                    case 6: a.adc(rbx, imm); break; case 7: a.sbb(rcx, rbp); break; case 8: a.inc(rax); break;
                    default: a.dec(rdx); break;
                }
                break;
        }
    }

    private static void EmitJcc(Assembler a, int cc, Label l)
    {
        switch (cc)
        {
            case 0: a.jo(l); break; case 1: a.jno(l); break; case 2: a.jb(l); break; case 3: a.jae(l); break;
            case 4: a.je(l); break; case 5: a.jne(l); break; case 6: a.jbe(l); break; case 7: a.ja(l); break;
            case 8: a.js(l); break; case 9: a.jns(l); break; case 10: a.jp(l); break; case 11: a.jnp(l); break;
            case 12: a.jl(l); break; case 13: a.jge(l); break; case 14: a.jle(l); break; default: a.jg(l); break;
        }
    }

    private static TestMachine Machine(int bits, Action<Assembler> body, int seed, bool predecode, bool fuse)
    {
        var m = new TestMachine();
        Vcpu(m)._predecode = predecode;
        Vcpu(m)._fuse = fuse;
        const ulong realCode = 0x80000;
        m.Memory.Write(bits == 16 ? realCode : Code, TestMachine.Assemble(bits, bits == 16 ? 0 : Code, body));
        VcpuState s;
        if (bits == 64) s = m.EnterLong64(Code);
        else if (bits == 32) s = VcpuState.Protected32(Code);
        else
        {
            s = VcpuState.AfterReset();
            s.Cs = SegmentRegister.RealMode((ushort)(realCode >> 4), code: true);
            s.Rip = 0;
        }
        var rng = new Random(seed);
        for (int r = 0; r < 16; r++) s.Gpr[r] = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40);
        // Small values make equal, carry and sign cases common.
        for (int r = 0; r < 4; r++) if (rng.Next(3) == 0) s.Gpr[r] = (ulong)rng.Next(-2, 3);
        if (bits != 64) for (int r = 0; r < 16; r++) s.Gpr[r] &= 0xFFFF_FFFF;
        s.Gpr[Gpr.Rsp] = 0x8000;
        s.Rflags = 0x2 | (ulong)(rng.Next() & 0x8D5);
        m.Cpu.SetState(s);
        return m;
    }

    /// <summary>
    /// A fused CMP+JB whose branch target lies beyond the CS limit: #GP (SDM Vol. 2A, Jcc) is the
    /// Jcc's, after the CMP retired: the frame holds the Jcc's EIP and the CMP's CF, and the
    /// retired count includes the CMP.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Fused_branch_fault_retires_the_first_instruction(bool fuse)
    {
        using var m = new TestMachine();
        Vcpu(m)._fuse = fuse;
        var code = TestMachine.Assemble(32, Code, a =>
        {
            var jcc = a.CreateLabel(); var next = a.CreateLabel();
            a.mov(ecx, 5); a.inc(ecx);
            a.cmp(eax, ebx); // 1 - 2: CF = 1
            a.Label(ref jcc);
            a.jb(next); // JB rel8, displacement patched below
            a.Label(ref next);
            a.hlt();
            return [jcc];
        }, out var labels);
        int at = (int)(labels[0] - Code);
        Assert.Equal(0x72, code[at]);
        code[at + 1] = 0x7E; // target: the JB + 2 + 0x7E, beyond the CS limit below
        m.Memory.Write(Code, code);
        m.Memory.Write(Handler, new byte[] { 0xF4 });
        m.Memory.Write(Gdt + 0x10, 0x00CF_9A00_0000_FFFFUL);
        m.Memory.Write(Gdt + 0x18, 0x00CF_9200_0000_FFFFUL);
        ulong gate = (Handler & 0xFFFF) | (0x10UL << 16) | (0x8E00UL << 32) | ((Handler >> 16) & 0xFFFF) << 48;
        m.Memory.Write(Idt + 13 * 8, gate);
        var s = VcpuState.Protected32(Code);
        s.Cs.Limit = (uint)Code + 0x40; // the target lies beyond it
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x1F };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 0xFF };
        s.Gpr[Gpr.Rax] = 1; s.Gpr[Gpr.Rbx] = 2; s.Gpr[Gpr.Rsp] = 0x90000;
        m.Cpu.SetState(s);

        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(Handler + 1, e.Rip);
        Assert.Equal(6UL, e.Gpr[Gpr.Rcx]);
        Assert.Equal(0U, m.Memory.Read<uint>(0x90000 - 16));              // error code
        Assert.Equal((uint)labels[0], m.Memory.Read<uint>(0x90000 - 12)); // EIP of the JB
        Assert.Equal(1U, m.Memory.Read<uint>(0x90000 - 4) & 1);            // CF of the CMP in the saved EFLAGS
        Assert.Equal(3 + 1, Vcpu(m).InstructionsRetired);                   // MOV, INC, CMP, then the handler's HLT
    }

    // ------------------------------------------------------------------ chaining and the run loop

    /// <summary>
    /// The instruction clock (StopAtInstruction) stops at the first block boundary at or past the
    /// deadline, chaining or not: a 4-instruction first block, then 3-instruction loop blocks.
    /// </summary>
    [Theory]
    [InlineData(100, 100)]
    [InlineData(101, 103)]
    [InlineData(5, 7)]
    public void Instruction_clock_stops_at_the_same_block_boundary(long stopAt, long expected)
    {
        using var m = new TestMachine();
        var code = TestMachine.Assemble(64, Code, a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 1000);
            a.Label(ref top);
            a.add(eax, 1); a.dec(ecx); a.jnz(top);
            a.hlt();
        });
        m.Memory.Write(Code, code);
        var s = m.EnterLong64(Code);
        m.Cpu.SetState(s);
        Vcpu(m).StopAtInstruction = stopAt;
        Assert.Equal(ExitReason.Interrupted, m.Cpu.Run());
        Assert.Equal(expected, Vcpu(m).InstructionsRetired);
        Assert.Equal((ulong)((expected - 1) / 3), m.State().Gpr[Gpr.Rax]);
    }

    /// <summary>A kick from another thread ends a guest spinning in one chained block.</summary>
    [Fact]
    public async Task Kick_leaves_a_chained_loop()
    {
        using var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, a =>
        {
            var top = a.CreateLabel();
            a.Label(ref top);
            a.inc(eax); a.mov(__dword_ptr[Data], eax); a.jmp(top);
        }));
        m.EnterLong64(Code);
        var ct = TestContext.Current.CancellationToken;
        var run = Task.Run(() => m.Cpu.Run(), ct);
        // Kick once the loop is running (a kick before Run would end it at once, RAX still 0).
        var deadline = DateTime.UtcNow.AddMinutes(1); // a hang guard only
        while (m.Memory.Read<uint>(Data) == 0 && DateTime.UtcNow < deadline) await Task.Delay(1, ct);
        m.Cpu.Kick();
        var done = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(10), ct));
        Assert.Same(run, done);
        Assert.Equal(ExitReason.Interrupted, await run);
        Assert.True(m.State().Gpr[Gpr.Rax] > 0);
    }

    // ------------------------------------------------------------------ links

    /// <summary>
    /// Self-modifying code behind a link: block A jumps to block B many times (A→B linked), then
    /// the guest rewrites B's immediate; the next A→B must run the new B (page generation).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Link_to_a_rewritten_block_runs_the_new_code(bool link)
    {
        using var m = new TestMachine();
        Vcpu(m)._link = link;
        var code = TestMachine.Assemble(32, Code, a =>
        {
            var outer = a.CreateLabel(); var top = a.CreateLabel(); var b = a.CreateLabel();
            a.mov(esi, 2);
            a.Label(ref outer);
            a.mov(ecx, 50);
            a.Label(ref top);
            a.add(eax, 1); a.jmp(b);
            a.nop(); a.nop();
            a.Label(ref b);
            a.add(ebx, 1); // 83 C3 01: the immediate is rewritten to 5
            a.dec(ecx); a.jnz(top);
            a.mov(__byte_ptr[edi], 5);
            a.dec(esi); a.jnz(outer);
            a.hlt();
            return [b];
        }, out var labels);
        m.Memory.Write(Code, code);
        var s = VcpuState.Protected32(Code);
        s.Gpr[Gpr.Rdi] = labels[0] + 2; s.Gpr[Gpr.Rsp] = 0x90000;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(100UL, e.Gpr[Gpr.Rax]);
        Assert.Equal(50UL * 1 + 50 * 5, e.Gpr[Gpr.Rbx]);
    }

    /// <summary>
    /// Builds 32-bit page tables at <paramref name="pd"/> identity-mapping the first 4 MiB with
    /// 4 KiB pages, except linear page <paramref name="page"/> → <paramref name="phys"/>.
    /// </summary>
    private static void Tables(TestMachine m, ulong pd, ulong page, ulong phys)
    {
        ulong pt = pd + 0x1000;
        m.Memory.Write(pd, (uint)(pt | 3));
        for (ulong k = 0; k < 1024; k++) m.Memory.Write(pt + k * 4, (uint)((k << 12) | 3));
        m.Memory.Write(pt + (page >> 12) * 4, (uint)(phys | 3));
    }

    /// <summary>
    /// The same code at two physical pages (P1, P2) differing in one immediate, seen through one
    /// linear page: <c>L0: &lt;switch&gt;; add ebx, K; xchg eax, edx; dec ecx; jnz L0</c>. The
    /// switch (MOV CR3 or a PTE write + INVLPG) changes the page's translation between the
    /// block ending at it and the next, alternately to P2 and back to P1: the block after the
    /// switch must come from the new translation, never from a link made under the old one.
    /// </summary>
    private static ulong RunTranslationSwitch(bool link, bool viaInvlpg)
    {
        const ulong page = 0x101000, p1 = 0x101000, p2 = 0x105000, t1 = 0x10000, t2 = 0x20000;
        using var m = new TestMachine();
        Vcpu(m)._link = link;
        byte[] Program(sbyte k) => TestMachine.Assemble(32, page, a =>
        {
            var l0 = a.CreateLabel();
            a.Label(ref l0);
            if (viaInvlpg) { a.mov(__dword_ptr[edi], eax); a.invlpg(__[esi]); }
            else a.mov(cr3, eax);
            a.add(ebx, k);
            a.xchg(eax, edx);
            a.dec(ecx); a.jnz(l0);
            a.hlt();
        });
        m.Memory.Write(p1, Program(1));
        m.Memory.Write(p2, Program(0x40));
        Tables(m, t1, page, p1);
        Tables(m, t2, page, p2);
        var s = VcpuState.Protected32(page);
        s.Cr0 |= 0x8000_0000; // PG
        s.Cr3 = t1;
        s.Gpr[Gpr.Rcx] = 6; s.Gpr[Gpr.Rsp] = 0x90000;
        if (viaInvlpg)
        {
            // EAX/EDX: the PTE values for P1 and P2, written to T1's entry for the page.
            s.Gpr[Gpr.Rax] = p1 | 3; s.Gpr[Gpr.Rdx] = p2 | 3;
            s.Gpr[Gpr.Rdi] = t1 + 0x1000 + (page >> 12) * 4; s.Gpr[Gpr.Rsi] = page;
        }
        else { s.Gpr[Gpr.Rax] = t1; s.Gpr[Gpr.Rdx] = t2; }
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        return m.State().Gpr[Gpr.Rbx];
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Link_does_not_survive_a_cr3_load(bool link)
        => Assert.Equal(3UL * 1 + 3 * 0x40, RunTranslationSwitch(link, viaInvlpg: false)); // P1, P2, P1, P2, P1, P2

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Link_does_not_survive_invlpg(bool link)
        => Assert.Equal(3UL * 1 + 3 * 0x40, RunTranslationSwitch(link, viaInvlpg: true));

    /// <summary>
    /// A far JMP to the same bytes through a 32-bit and then a 16-bit code segment (base 0 both):
    /// after the second, <c>B8 01 40 90 90</c> is <c>mov ax, 0x4001; nop; nop</c>, not
    /// <c>mov eax, 0x90904001</c>; a link made after the first jump must not be used.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Link_does_not_survive_a_mode_switch(bool link)
    {
        using var m = new TestMachine();
        Vcpu(m)._link = link;
        m.Memory.Write(Gdt + 0x10, 0x00CF_9A00_0000_FFFFUL); // 32-bit code
        m.Memory.Write(Gdt + 0x18, 0x00CF_9200_0000_FFFFUL); // data
        m.Memory.Write(Gdt + 0x20, 0x000F_9A00_0000_FFFFUL); // 16-bit code, base 0, limit 1 MiB
        const ulong entry = 0x8000, target = 0x8100, far32 = 0x9000, far16 = 0x9010;
        m.Memory.Write(entry, new byte[] { 0xFF, 0x2B });   // jmp far [ebx] (m16:32)
        m.Memory.Write(target, new byte[] { 0xB8, 0x01, 0x40, 0x90, 0x90, 0xF4 });
        m.Memory.Write(far32, (uint)target); m.Memory.Write(far32 + 4, (ushort)0x10);
        m.Memory.Write(far16, (uint)target); m.Memory.Write(far16 + 4, (ushort)0x20);
        var s = VcpuState.Protected32(entry);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x27 };
        s.Gpr[Gpr.Rsp] = 0x90000;
        s.Gpr[Gpr.Rbx] = far32;
        m.Cpu.SetState(s);
        for (int pass = 0; pass < 3; pass++)
        {
            Assert.Equal(ExitReason.Halt, m.Run());
            Assert.Equal(0x9090_4001UL, m.State().Gpr[Gpr.Rax]);
            m.Cpu.SetState(s);
        }
        s.Gpr[Gpr.Rbx] = far16;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var e = m.State();
        Assert.Equal(0x20, e.Cs.Selector);
        Assert.Equal(0x4001UL, e.Gpr[Gpr.Rax]);
    }
}
