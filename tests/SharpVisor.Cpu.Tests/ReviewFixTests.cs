using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Vcpu;
using SharpVisor.SoftFloat;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Event delivery around the VMM I/O protocol, INVLPG of large pages, NMI blocking, the MMIO limits
/// of state-image instructions, and other review findings (SDM Vol. 3A ch. 4 and 6).
/// </summary>
public class ReviewFixTests
{
    private const ulong Code = 0x100000, Idt = 0x20000, Gdt = 0x30000, Handlers = 0x110000;
    /// <summary>Above the 16 MiB of RAM, inside the 1 GiB identity map: MMIO.</summary>
    private const ulong Mmio = 0x2000_0000;

    private sealed class FakeInterrupts : IInterruptSource
    {
        public readonly Queue<byte> Pending = new();
        public bool HasInterrupt => Pending.Count > 0;
        public byte Acknowledge() => Pending.Dequeue();
    }

    /// <summary>Handler for <paramref name="vector"/> at Handlers + vector * 0x10.</summary>
    private static ulong HandlerOf(int vector) => Handlers + (ulong)vector * 0x10;

    /// <summary>
    /// 64-bit mode with a GDT (0x08 code, 0x18 data) and an IDT whose vectors 0–63 are interrupt
    /// gates to <see cref="HandlerOf"/>, each a HLT unless <paramref name="handlers"/> supplies code;
    /// <paramref name="notPresent"/> lists gates with P = 0; the IDT limit covers <paramref name="idtVectors"/> vectors.
    /// </summary>
    private static TestMachine Long64(Action<Assembler> main, Dictionary<int, Action<Assembler>>? handlers = null,
        int[]? notPresent = null, int idtVectors = 64, Action<VcpuState>? adjust = null)
    {
        var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, main));
        m.Memory.Write(Gdt + 0x08, 0x00AF_9A00_0000_FFFFUL);
        m.Memory.Write(Gdt + 0x18, 0x00CF_9200_0000_FFFFUL);
        for (int v = 0; v < 64; v++)
        {
            ulong h = HandlerOf(v);
            Action<Assembler> body = handlers != null && handlers.TryGetValue(v, out var b) ? b : a => a.hlt();
            m.Memory.Write(h, TestMachine.Assemble(64, h, body));
            bool present = notPresent == null || Array.IndexOf(notPresent, v) < 0;
            ulong lo = (h & 0xFFFF) | (0x08UL << 16) | ((present ? 0x8E00UL : 0x0E00UL) << 32) | ((h >> 16) & 0xFFFF) << 48;
            m.Memory.Write(Idt + (ulong)v * 16, lo);
            m.Memory.Write(Idt + (ulong)v * 16 + 8, h >> 32);
        }
        var s = m.EnterLong64(Code);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x1F };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = (ushort)(idtVectors * 16 - 1) };
        adjust?.Invoke(s);
        m.Cpu.SetState(s);
        return m;
    }

    private static ulong StackTop(TestMachine m) => m.Memory.Read<ulong>(m.State().Rsp);

    // ------------------------------------------------------------------ faults while delivering events

    [Fact]
    public void FaultDeliveringAnExternalInterruptIsRaisedAsAnException()
    {
        // Vector 0x40 lies beyond the IDT limit: #GP with error code vector*8 + 2 (IDT) + 1 (EXT).
        using var m = Long64(a => { a.sti(); a.nop(); a.nop(); a.hlt(); }, idtVectors: 32);
        var irq = new FakeInterrupts();
        irq.Pending.Enqueue(0x40);
        m.Cpu.InterruptSource = irq;
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(HandlerOf(13) + 1, m.State().Rip);
        Assert.Equal(0x40UL * 8 + 3, StackTop(m));
    }

    [Fact]
    public void FaultDeliveringAnNmiIsRaisedAsAnException()
    {
        // The NMI gate is not present: #NP(2*8 + 2 + 1).
        using var m = Long64(a => a.hlt(), notPresent: [2]);
        m.Cpu.RequestNmi();
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(HandlerOf(11) + 1, m.State().Rip);
        Assert.Equal(2UL * 8 + 3, StackTop(m));
    }

    [Fact]
    public void FaultDeliveringTheSingleStepTrapIsRaisedAsAnException()
    {
        // POPF sets TF; the #DB trap after the next instruction finds its gate not present: #NP(1*8 + 3).
        using var m = Long64(a =>
        {
            a.pushfq();
            a.or(__qword_ptr[rsp], 0x100);
            a.popfq();
            a.nop();
            a.hlt();
        }, notPresent: [1]);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(HandlerOf(11) + 1, m.State().Rip);
        Assert.Equal(1UL * 8 + 3, StackTop(m));
    }

    [Fact]
    public void DeliveryThroughAnIdtInMmioStopsWithAReason()
    {
        // The IDT in MMIO cannot be read by a delivery (nothing re-executes to replay the answer).
        using var m = Long64(a => { a.sti(); a.nop(); a.hlt(); }, adjust: s => s.Idtr.Base = Mmio);
        var irq = new FakeInterrupts();
        irq.Pending.Enqueue(0x30);
        m.Cpu.InterruptSource = irq;
        var r = m.Cpu.Run();
        Assert.Equal(ExitReason.InternalError, r);
        Assert.Contains("interrupt delivery through MMIO", m.Cpu.Exit.Message);
    }

    // ------------------------------------------------------------------ no interrupt between an exit and its replay

    [Fact]
    public void InterruptRaisedWhileAnInputExitIsHandledWaitsForTheInstruction()
    {
        // The VMM raises an interrupt while it answers IN 0x60 (the usual case). The IN must
        // complete with that answer before the handler runs; the handler's own IN is a new exit.
        using var m = Long64(a =>
        {
            a.@in(al, 0x60);
            a.mov(bl, al);
            a.hlt();
            a.hlt(); // the interrupt wakes the first HLT and returns here
        }, handlers: new() { [0x30] = a => { a.@in(al, 0x61); a.mov(cl, al); a.iretq(); } },
        adjust: s => s.Rflags |= 0x200);
        var irq = new FakeInterrupts();
        m.Cpu.InterruptSource = irq;
        var ports = new List<ulong>();
        ExitReason r;
        while ((r = m.Cpu.Run()) == ExitReason.IoIn && ports.Count < 10)
        {
            ports.Add(m.Cpu.Exit.Address);
            if (m.Cpu.Exit.Address == 0x60) { m.Cpu.Exit.Data = 0x11; irq.Pending.Enqueue(0x30); }
            else m.Cpu.Exit.Data = 0x22;
        }
        Assert.Equal(ExitReason.Halt, r);
        Assert.Equal([0x60UL, 0x61UL], ports);
        var s = m.State();
        Assert.Equal(0x11UL, s.Rbx & 0xFF);
        Assert.Equal(0x22UL, s.Rcx & 0xFF);
        Assert.Equal(Code + 6, s.Rip); // IN imm8 (2) + MOV r8,r8 (2) + HLT + HLT
    }

    // ------------------------------------------------------------------ replay buffers

    [Fact]
    public void RepMovsFromMmioReadsEachElementOnce()
    {
        using var m = Long64(a =>
        {
            a.mov(rsi, Mmio);
            a.mov(rdi, 0x200000);
            a.mov(rcx, 20);
            a.rep.movsb();
            a.hlt();
        });
        var reads = new List<ulong>();
        ExitReason r;
        while ((r = m.Cpu.Run()) == ExitReason.MmioRead && reads.Count < 100)
        {
            reads.Add(m.Cpu.Exit.Address);
            m.Cpu.Exit.Data = (ulong)reads.Count; // 1, 2, 3, …
        }
        Assert.Equal(ExitReason.Halt, r);
        Assert.Equal(Enumerable.Range(0, 20).Select(k => Mmio + (ulong)k), reads);
        var got = new byte[21];
        m.Memory.Read(0x200000, got);
        Assert.Equal(Enumerable.Range(1, 20).Select(k => (byte)k).Append((byte)0), got);
        var s = m.State();
        Assert.Equal(0UL, s.Rcx);
        Assert.Equal(Mmio + 20, s.Rsi);
    }

    [Fact]
    public void RepeCmpsWithBothOperandsInMmioComparesMatchingElements()
    {
        // Each element needs two inputs; the comparison stops at the first difference (element 3).
        using var m = Long64(a =>
        {
            a.mov(rsi, Mmio);
            a.mov(rdi, Mmio + 0x1000);
            a.mov(rcx, 10);
            a.repe.cmpsb();
            a.hlt();
        });
        ExitReason r;
        int exits = 0;
        while ((r = m.Cpu.Run()) == ExitReason.MmioRead && exits < 100)
        {
            exits++;
            ulong off = m.Cpu.Exit.Address & 0xFFF;
            bool dst = (m.Cpu.Exit.Address & 0x1000) != 0;
            m.Cpu.Exit.Data = dst && off == 3 ? 0xEEUL : 0x40 + off;
        }
        Assert.True(r == ExitReason.Halt, m.Cpu.Exit.Message);
        Assert.Equal(8, exits);
        var s = m.State();
        Assert.Equal(6UL, s.Rcx);
        Assert.Equal(Mmio + 4, s.Rsi);
        Assert.Equal(0UL, s.Rflags & 0x40); // ZF clear: the last elements differed
    }

    public static TheoryData<string> StateImageInstructions => new() { "fxsave", "fxrstor", "fsave", "frstor", "xsave", "xrstor" };

    private static void EmitStateInstruction(Assembler a, string which)
    {
        switch (which)
        {
            case "fxsave": a.fxsave(__[rbx]); break;
            case "fxrstor": a.fxrstor(__[rbx]); break;
            case "fsave": a.fnsave(__[rbx]); break;
            case "frstor": a.frstor(__[rbx]); break;
            case "xsave": a.xsave(__[rbx]); break;
            default: a.xrstor(__[rbx]); break;
        }
    }

    [Theory]
    [MemberData(nameof(StateImageInstructions))]
    public void StateImagesInMmioStopBeforeAnyAccess(string which)
    {
        using var m = Long64(a =>
        {
            a.mov(eax, 3); a.xor(edx, edx);
            a.mov(rbx, Mmio);
            EmitStateInstruction(a, which);
            a.hlt();
        }, adjust: s => s.Cr4 |= 0x40000); // OSXSAVE
        var r = m.Cpu.Run();
        Assert.Equal(ExitReason.InternalError, r);
        Assert.Contains("MMIO", m.Cpu.Exit.Message);
        Assert.DoesNotContain("failure", m.Cpu.Exit.Message);
    }

    [Fact]
    public void FxsaveStraddlingTheEndOfRamIntoMmioChangesNothing()
    {
        // RAM ends at 16 MiB: the image starts in RAM and ends in MMIO.
        const ulong area = 0xFFFF00;
        using var m = Long64(a => { a.mov(rbx, area); a.fxsave(__[rbx]); a.hlt(); });
        for (ulong k = 0; k < 0x100; k += 8) m.Memory.Write(area + k, 0xCCCC_CCCC_CCCC_CCCCUL);
        Assert.Equal(ExitReason.InternalError, m.Cpu.Run());
        Assert.Contains("FXSAVE to MMIO", m.Cpu.Exit.Message);
        for (ulong k = 0; k < 0x100; k += 8) Assert.Equal(0xCCCC_CCCC_CCCC_CCCCUL, m.Memory.Read<ulong>(area + k));
    }

    [Fact]
    public void FxsaveLeavesBytes416To511Unchanged()
    {
        // SDM Vol. 1 Table 10-2: 416–463 reserved, 464–511 available to software; neither is written.
        const ulong area = 0x200000;
        using var m = Long64(a => { a.fninit(); a.mov(rbx, area); a.fxsave(__[rbx]); a.hlt(); });
        for (ulong k = 0; k < 512; k += 8) m.Memory.Write(area + k, 0xA5A5_A5A5_A5A5_A5A5UL);
        Assert.Equal(ExitReason.Halt, m.Run());
        for (ulong k = 416; k < 512; k += 8) Assert.Equal(0xA5A5_A5A5_A5A5_A5A5UL, m.Memory.Read<ulong>(area + k));
        Assert.Equal((ushort)0x037F, m.Memory.Read<ushort>(area)); // FCW after FNINIT
        Assert.Equal(0x1F80U, m.Memory.Read<uint>(area + 24));     // MXCSR after reset
    }

    // ------------------------------------------------------------------ INVLPG and large pages

    [Fact]
    public void InvlpgAnywhereInA2MiBPageDropsTheWholeTranslation()
    {
        // EnterLong64 maps 2 MiB pages; PDE 2 (0x400000) is at 0x12000 + 2*8. After the PDE is
        // redirected to 0x600000, INVLPG of 0x400000 must also drop the TLB piece of 0x401000.
        using var m = Long64(a =>
        {
            a.mov(rax, __qword_ptr[0x401008]);
            a.mov(rdx, 0x600083UL);
            a.mov(__qword_ptr[0x12010], rdx);
            a.invlpg(__[0x400000]);
            a.mov(rbx, __qword_ptr[0x401008]);
            a.hlt();
        });
        m.Memory.Write(0x401008UL, 0xAAAAUL);
        m.Memory.Write(0x601008UL, 0xBBBBUL);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(0xAAAAUL, s.Rax);
        Assert.Equal(0xBBBBUL, s.Rbx);
    }

    [Fact]
    public void InvlpgDropsGlobalPiecesOfALargePage()
    {
        // The same with a global 2 MiB page and CR4.PGE: INVLPG drops global entries too.
        using var m = Long64(a =>
        {
            a.mov(rax, __qword_ptr[0x5FF000]);
            a.mov(rdx, 0x600183UL);
            a.mov(__qword_ptr[0x12010], rdx);
            a.invlpg(__[0x400000]);
            a.mov(rbx, __qword_ptr[0x5FF000]);
            a.hlt();
        }, adjust: s => s.Cr4 |= 0x80); // PGE
        m.Memory.Write(0x12010UL, 0x400183UL); // G | PS | RW | P
        m.Memory.Write(0x5FF000UL, 0x1111UL);
        m.Memory.Write(0x7FF000UL, 0x2222UL);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(0x1111UL, s.Rax);
        Assert.Equal(0x2222UL, s.Rbx);
    }

    // ------------------------------------------------------------------ NMI blocking and kicks

    [Fact]
    public void RealModeIretEndsNmiBlocking()
    {
        using var m = new TestMachine();
        m.Memory.Write(0x7C00, TestMachine.Assemble(16, 0x7C00, a => { a.@out(0xE9, al); a.@out(0xE9, al); a.hlt(); }));
        m.Memory.Write(0x8000, TestMachine.Assemble(16, 0x8000, a => { a.inc(bx); a.iret(); }));
        m.Memory.Write(2 * 4, 0x0000_8000u); // IVT[2] = 0000:8000
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true); s.Rip = 0x7C00;
        s.Rsp = 0x7000;
        s.Idtr = new DescriptorTableRegister { Base = 0, Limit = 0x3FF };
        m.Cpu.SetState(s);
        m.Cpu.RequestNmi();
        Assert.Equal(ExitReason.IoOut, m.Cpu.Run());
        m.Cpu.RequestNmi();
        Assert.Equal(ExitReason.IoOut, m.Cpu.Run());
        Assert.Equal(ExitReason.Halt, m.Cpu.Run());
        Assert.Equal(2UL, m.State().Rbx & 0xFFFF);
    }

    [Fact]
    public void KickWithAPendingNmiStillLeavesTheRun()
    {
        using var m = Long64(a => { a.nop(); a.hlt(); });
        m.Cpu.Kick();
        m.Cpu.RequestNmi();
        Assert.Equal(ExitReason.Interrupted, m.Cpu.Run());
        Assert.Equal(ExitReason.Halt, m.Cpu.Run());
        Assert.Equal(HandlerOf(2) + 1, m.State().Rip); // the NMI was kept and delivered on the next run
    }

    [Fact]
    public void ClflushOfAnMmioLineReadsNothing()
    {
        using var m = Long64(a => { a.mov(rax, Mmio); a.clflush(__byte_ptr[rax]); a.hlt(); });
        Assert.Equal(ExitReason.Halt, m.Cpu.Run());
    }

    [Fact]
    public void ClflushStillFaultsOnAnUnmappedLine()
    {
        // Beyond the 1 GiB identity map: #PF (CLFLUSH is checked like a byte read).
        using var m = Long64(a => { a.mov(rax, 0x4000_0000UL); a.clflush(__byte_ptr[rax]); a.hlt(); });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(HandlerOf(14) + 1, m.State().Rip);
    }

    // ------------------------------------------------------------------ x87 precision control 01

    [Fact]
    public void ReservedPrecisionControl01RoundsTo64Bits()
    {
        // Observed on hardware: PC = 01 behaves like 11 (extended precision).
        var ctx = new FpuContext();
        ctx.LoadControlWord(0x017F);
        Assert.Equal(PrecisionControl.Extended, ctx.Precision);
        ctx.LoadControlWord(0x007F);
        Assert.Equal(PrecisionControl.Single, ctx.Precision);
    }

    [Fact]
    public void OneThirdWithPrecisionControl01HasA64BitSignificand()
    {
        using var m = Long64(a =>
        {
            a.fninit();
            a.mov(__word_ptr[0x200000], 0x017F);
            a.fldcw(__word_ptr[0x200000]);
            a.fld1();
            a.mov(__dword_ptr[0x200010], 3);
            a.fidiv(__dword_ptr[0x200010]);
            a.fstp(__tword_ptr[0x200020]);
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0xAAAA_AAAA_AAAA_AAABUL, m.Memory.Read<ulong>(0x200020));
    }

    // ------------------------------------------------------------------ MSR fields, straddling instructions

    [Fact]
    public void FastPathMsrsRoundTripThroughStateAndRdmsr()
    {
        using var m = Long64(a =>
        {
            a.mov(ecx, 0xC000_0082); a.rdmsr(); a.mov(r8d, eax); a.mov(r9d, edx);       // LSTAR
            a.mov(ecx, 0x175); a.mov(eax, 0x1234_5678); a.mov(edx, 0x9); a.wrmsr();      // SYSENTER_ESP
            a.mov(ecx, 0xC000_0103); a.mov(eax, 7); a.xor(edx, edx); a.wrmsr();         // TSC_AUX
            a.rdtscp();
            a.mov(r10, rcx);
            a.swapgs();
            a.hlt();
        }, adjust: s =>
        {
            s.Msrs[Msr.Lstar] = 0xFFFF_FFFF_8100_0000;
            s.Msrs[Msr.KernelGsBase] = 0xFFFF_8880_0000_1000;
            s.Msrs[Msr.Pat] = 0x0007_0406_0007_0406;
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(0x8100_0000UL, s.Gpr[8]);
        Assert.Equal(0xFFFF_FFFFUL, s.Gpr[9]);
        Assert.Equal(7UL, s.Gpr[10]);
        Assert.Equal(0xFFFF_8880_0000_1000UL, s.Gs.Base);
        Assert.Equal(0UL, s.Msrs[Msr.KernelGsBase]); // the old GS base
        Assert.Equal(0x9_1234_5678UL, s.Msrs[Msr.SysenterEsp]);
        Assert.Equal(7UL, s.Msrs[Msr.TscAux]);
        Assert.Equal(0x0007_0406_0007_0406UL, s.Msrs[Msr.Pat]);
    }

    [Fact]
    public void InstructionStraddlingAPageRunsCorrectlyEveryTime()
    {
        // MOV RAX, imm64 (10 bytes) starts 4 bytes before a page end, inside a loop of 1000.
        const ulong start = 0x101000 - 16;
        using var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, a => { a.mov(ecx, 1000); a.xor(ebx, ebx); a.jmp(start); }));
        var body = TestMachine.Assemble(64, start, a =>
        {
            var top = a.CreateLabel();
            a.Label(ref top);
            a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop(); a.nop();
            a.mov(rax, 0x1122_3344_5566_7788UL);
            a.add(rbx, rax);
            a.dec(ecx);
            a.jnz(top);
            a.hlt();
        });
        m.Memory.Write(start, body);
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(unchecked(0x1122_3344_5566_7788UL * 1000), m.State().Rbx);
    }

    [Fact]
    public void MovToDsInsideABlockTakesEffectForTheNextInstruction()
    {
        // Real mode: MOV DS no longer ends the block; the next load must still use the new base.
        using var m = new TestMachine();
        m.Memory.Write(0x7C00, TestMachine.Assemble(16, 0x7C00, a =>
        {
            a.mov(ax, 0x2000);
            a.mov(ds, ax);
            a.mov(bx, __word_ptr[0x10]);
            a.cli();
            a.mov(cx, __word_ptr[0x12]);
            a.hlt();
        }));
        m.Memory.Write(0x20010UL, 0xBEEF_CAFEu);
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true); s.Rip = 0x7C00;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Cpu.Run());
        var g = m.State();
        Assert.Equal(0xCAFEUL, g.Rbx & 0xFFFF);
        Assert.Equal(0xBEEFUL, g.Rcx & 0xFFFF);
    }

    // ------------------------------------------------------------------ full VMM I/O buffers

    [Fact]
    public void EnterWithMoreOutputsThanTheBufferHoldsStopsTheVm()
    {
        // ENTER 0, 31 with the stack in MMIO pushes 32 values (RBP, 30 frame pointers, the frame):
        // more than the 16 outputs one instruction may queue. The VM stops with a reason, before
        // any of them leaves, instead of the engine throwing.
        using var m = Long64(a =>
        {
            a.mov(rsp, Mmio + 0x1000);
            a.mov(rbp, 0x200000);
            a.enter(0, 31);
            a.hlt();
        });
        Assert.Equal(ExitReason.InternalError, m.Cpu.Run());
        Assert.Contains("more than 16 VMM outputs", m.Cpu.Exit.Message);
        Assert.DoesNotContain("failure", m.Cpu.Exit.Message);
        Assert.Equal(Code + 20, m.State().Rip); // at the ENTER (two 10-byte MOV r64, imm64)
    }

    [Fact]
    public void EnterWithMoreInputsThanTheBufferHoldsStopsTheVm()
    {
        // ENTER 0, 31 with RBP in MMIO reads 30 frame pointers from MMIO: the first 16 are
        // answered, the 17th stops the VM with a reason instead of overrunning the replay buffer.
        using var m = Long64(a =>
        {
            a.mov(rbp, Mmio + 0x1000);
            a.enter(0, 31);
            a.hlt();
        });
        int reads = 0;
        ExitReason r;
        while ((r = m.Cpu.Run()) == ExitReason.MmioRead && reads < 100)
        {
            reads++;
            m.Cpu.Exit.Data = 0x1000UL * (ulong)reads;
        }
        Assert.Equal(ExitReason.InternalError, r);
        Assert.Equal(16, reads);
        Assert.Contains("more than 16 VMM inputs", m.Cpu.Exit.Message);
        Assert.DoesNotContain("failure", m.Cpu.Exit.Message);
    }

    // ------------------------------------------------------------------ block boundaries

    [Fact]
    public void LgdtTakesEffectForTheNextInstructionInTheBlock()
    {
        // LGDT no longer ends the block: a segment load right after it must use the new table
        // (selector 0x28 lies beyond the old table's limit, which would be #GP).
        const ulong newGdt = 0x31000, pointer = 0x200000;
        using var m = Long64(a =>
        {
            a.lgdt(__[pointer]);
            a.mov(ax, 0x28);
            a.mov(ds, ax);
            a.mov(ebx, 1);
            a.hlt();
        });
        m.Memory.Write(newGdt + 0x08, 0x00AF_9A00_0000_FFFFUL);
        m.Memory.Write(newGdt + 0x18, 0x00CF_9200_0000_FFFFUL);
        m.Memory.Write(newGdt + 0x28, 0x00CF_9200_0000_FFFFUL);
        m.Memory.Write(pointer, (ushort)0x2F);
        m.Memory.Write(pointer + 2, newGdt);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal((ushort)0x28, s.Ds.Selector);
        Assert.Equal(1UL, s.Rbx);
        Assert.Equal(newGdt, s.Gdtr.Base);
    }

    [Fact]
    public void InvlpgAnywhereInA4MiBPageDropsTheWholeTranslation()
    {
        // 32-bit paging with CR4.PSE: PDE 1 maps 0x400000 as a 4 MiB page. After it is redirected
        // to 0x800000, INVLPG of 0x7FF000 (the last 4 KiB of the page) must drop the piece of 0x401000.
        const ulong pd = 0x10000;
        using var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(32, Code, a =>
        {
            a.mov(eax, __dword_ptr[0x401008]);
            a.mov(__dword_ptr[pd + 4], 0x800083);
            a.invlpg(__[0x7FF000]);
            a.mov(ebx, __dword_ptr[0x401008]);
            a.hlt();
        }));
        for (ulong k = 0; k < 4; k++) m.Memory.Write(pd + k * 4, (uint)((k << 22) | 0x83));
        m.Memory.Write(0x401008UL, 0xAAAAu);
        m.Memory.Write(0x801008UL, 0xBBBBu);
        var s = VcpuState.Protected32(Code);
        s.Cr0 = 0x8000_0011; // PG ET PE
        s.Cr3 = pd;
        s.Cr4 = 0x10;        // PSE
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var g = m.State();
        Assert.Equal(0xAAAAUL, g.Rax);
        Assert.Equal(0xBBBBUL, g.Rbx);
    }
}
