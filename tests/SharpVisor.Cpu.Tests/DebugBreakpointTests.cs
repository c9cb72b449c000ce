using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Data, I/O and general-detect debug exceptions of DR0–DR7 (SDM Vol. 3B §17.2–17.3): data
/// breakpoints are traps after the accessing instruction with DR6.Bn, match any access that
/// overlaps the LEN-aligned range, distinguish write from read/write; a REP string instruction
/// traps after the iteration that hit with RF = 1 in the frame; I/O breakpoints need CR4.DE;
/// DR4/DR5 alias DR6/DR7 only without CR4.DE; MOV DRn with DR7.GD faults with DR6.BD.
/// </summary>
public class DebugBreakpointTests
{
    private const ulong Code = 0x100000, Idt = 0x20000, Gdt = 0x30000, Handlers = 0x110000;
    /// <summary>The watched data (a page of its own) and the #DB handler's log.</summary>
    private const ulong Data = 0x200000, Log = 0x300000;
    /// <summary>Above the 16 MiB of RAM, inside the 1 GiB identity map: MMIO.</summary>
    private const ulong Mmio = 0x2000_0000;
    /// <summary>Beyond the 1 GiB identity map: not present.</summary>
    private const ulong Unmapped = 0x8000_0000;
    private const ulong Rf = 1UL << 16, Tf = 1UL << 8;
    private const ulong Bs = 1UL << 14, Bd = 1UL << 13;

    private const int Exec = 0, Write = 1, Io = 2, ReadWrite = 3;

    /// <summary>DR7 bits for breakpoint <paramref name="n"/>: L bit, R/W and LEN (bytes 1, 2, 4 or 8).</summary>
    private static ulong Dr7(int n, int rw, int len)
    {
        ulong lenBits = len switch { 1 => 0UL, 2 => 1UL, 8 => 2UL, 4 => 3UL, _ => throw new ArgumentException("len") };
        return (1UL << (n * 2)) | ((ulong)rw << (16 + n * 4)) | (lenBits << (18 + n * 4));
    }

    private static ulong HandlerOf(int vector) => Handlers + (ulong)vector * 0x100;

    /// <summary>
    /// The #DB handler: appends (saved RIP, saved RFLAGS, DR6, RCX) to the log at Log + 0x100 +
    /// 32 × count, counts at Log, clears DR6, and returns with RF set in the frame (as debuggers
    /// do, so an execute breakpoint does not match again). It touches only its stack and the log.
    /// </summary>
    private static void DbHandler(Assembler a)
    {
        a.push(rax);
        a.push(rbx);
        a.push(rdx);
        a.mov(rdx, Log);
        a.mov(rax, __qword_ptr[rdx]);
        a.shl(rax, 5);
        a.lea(rax, __[rax + rdx + 0x100]);
        a.mov(rbx, __qword_ptr[rsp + 24]);      // saved RIP (after 3 pushes)
        a.mov(__qword_ptr[rax], rbx);
        a.mov(rbx, __qword_ptr[rsp + 40]);      // saved RFLAGS
        a.mov(__qword_ptr[rax + 8], rbx);
        a.mov(rbx, dr6);
        a.mov(__qword_ptr[rax + 16], rbx);
        a.mov(__qword_ptr[rax + 24], rcx);
        a.add(__qword_ptr[rdx], 1);
        a.or(__qword_ptr[rsp + 40], (int)Rf);
        a.xor(ebx, ebx);
        a.mov(dr6, rbx);
        a.pop(rdx);
        a.pop(rbx);
        a.pop(rax);
        a.iretq();
    }

    /// <summary>
    /// 64-bit mode with a GDT (0x08 code) and an IDT of interrupt gates: #DB logs and returns,
    /// every other vector halts at <see cref="HandlerOf"/>.
    /// </summary>
    private static TestMachine Long64(Action<Assembler> main, Action<VcpuState>? adjust = null)
    {
        var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, main));
        m.Memory.Write(Gdt + 0x08, 0x00AF_9A00_0000_FFFFUL);
        m.Memory.Write(Gdt + 0x18, 0x00CF_9200_0000_FFFFUL);
        for (int v = 0; v < 32; v++)
        {
            ulong h = HandlerOf(v);
            m.Memory.Write(h, TestMachine.Assemble(64, h, v == 1 ? DbHandler : a => a.hlt()));
            ulong lo = (h & 0xFFFF) | (0x08UL << 16) | (0x8E00UL << 32) | ((h >> 16) & 0xFFFF) << 48;
            m.Memory.Write(Idt + (ulong)v * 16, lo);
            m.Memory.Write(Idt + (ulong)v * 16 + 8, h >> 32);
        }
        var s = m.EnterLong64(Code);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x1F };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 32 * 16 - 1 };
        adjust?.Invoke(s);
        m.Cpu.SetState(s);
        return m;
    }

    private readonly record struct DbEvent(ulong Rip, ulong Rflags, ulong Dr6, ulong Rcx);

    private static List<DbEvent> Events(TestMachine m)
    {
        var list = new List<DbEvent>();
        ulong count = m.Memory.Read<ulong>(Log);
        for (ulong k = 0; k < count && k < 64; k++)
        {
            ulong e = Log + 0x100 + k * 32;
            list.Add(new DbEvent(m.Memory.Read<ulong>(e), m.Memory.Read<ulong>(e + 8), m.Memory.Read<ulong>(e + 16), m.Memory.Read<ulong>(e + 24)));
        }
        return list;
    }

    /// <summary>Arms breakpoint <paramref name="n"/> at <paramref name="address"/> with DR7 = <paramref name="control"/>.</summary>
    private static void Arm(Assembler a, ulong address, ulong control, int n = 0)
    {
        a.mov(rax, address);
        switch (n)
        {
            case 0: a.mov(dr0, rax); break;
            case 1: a.mov(dr1, rax); break;
            case 2: a.mov(dr2, rax); break;
            default: a.mov(dr3, rax); break;
        }
        a.mov(rax, control);
        a.mov(dr7, rax);
    }

    /// <summary>Runs to the final HLT; fails on any other exception (their handlers halt elsewhere).</summary>
    private static void RunToEnd(TestMachine m, ulong endRip)
    {
        var r = m.Run();
        Assert.True(r == ExitReason.Halt, $"{r}: {m.Cpu.Exit.Message}");
        Assert.Equal(endRip, m.State().Rip);
    }

    /// <summary>Assembles <paramref name="body"/> between an end label check: returns the label addresses.</summary>
    private static TestMachine Build(Func<Assembler, Label[]> body, out ulong[] labels, Action<VcpuState>? adjust = null)
    {
        byte[] bytes = TestMachine.Assemble(64, Code, body, out labels);
        var m = Long64(_ => { }, adjust);
        m.Memory.Write(Code, bytes);
        return m;
    }

    // ------------------------------------------------------------------ data breakpoints: kind and length

    public static TheoryData<int, int, int, int, bool> Accesses => new()
    {
        // len, DR0 offset from Data, access offset, access size, hits
        { 1, 0, 0, 1, true },
        { 1, 0, 1, 1, false },
        { 1, 1, 0, 2, true },      // a word over Data..Data+1 covers the byte at Data+1
        { 2, 1, 0, 1, true },      // DR0 bit 0 is ignored: the range is Data..Data+1
        { 2, 0, 2, 1, false },
        { 4, 3, 0, 1, true },      // range Data..Data+3
        { 4, 0, 3, 1, true },
        { 4, 0, 4, 1, false },
        { 4, 4, 2, 4, true },      // an unaligned dword over Data+2..Data+5 straddles into Data+4..Data+7
        { 4, 4, 0, 4, false },
        { 8, 5, 7, 1, true },      // range Data..Data+7
        { 8, 8, 7, 1, false },
        { 8, 8, 4, 8, true },      // an unaligned qword over Data+4..Data+11 into Data+8..Data+15
    };

    [Theory]
    [MemberData(nameof(Accesses))]
    public void WriteBreakpointTrapsAfterAnOverlappingWrite(int len, int drOffset, int offset, int size, bool hits)
    {
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Data + (ulong)drOffset, Dr7(0, Write, len));
            a.mov(rbx, Data + (ulong)offset);
            a.mov(rax, 0x1122_3344_5566_7788UL);
            switch (size)
            {
                case 1: a.mov(__byte_ptr[rbx], al); break;
                case 2: a.mov(__word_ptr[rbx], ax); break;
                case 4: a.mov(__dword_ptr[rbx], eax); break;
                default: a.mov(__qword_ptr[rbx], rax); break;
            }
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var ev = Events(m);
        if (!hits)
        {
            Assert.Empty(ev);
            return;
        }
        var e = Assert.Single(ev);
        Assert.Equal(l[0], e.Rip);               // a trap: the saved RIP is the next instruction
        Assert.Equal(1UL, e.Dr6 & 0xF);           // B0
        Assert.Equal(0UL, e.Dr6 & Bs);
        Assert.Equal(0UL, e.Rflags & Rf);
        Assert.Equal(0x88UL, m.Memory.Read<byte>(Data + (ulong)offset)); // the write happened before the trap
    }

    [Theory]
    [InlineData(Write, false)]
    [InlineData(ReadWrite, true)]
    public void ReadTriggersOnlyAReadWriteBreakpoint(int rw, bool hits)
    {
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Data + 4, Dr7(0, rw, 4));
            a.mov(rbx, Data);
            a.mov(eax, __dword_ptr[rbx + 6]);     // reads Data+6..Data+9: overlaps Data+4..Data+7
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var ev = Events(m);
        if (!hits) { Assert.Empty(ev); return; }
        var e = Assert.Single(ev);
        Assert.Equal(l[0], e.Rip);
        Assert.Equal(1UL, e.Dr6 & 0xF);
    }

    [Fact]
    public void ReadModifyWriteTrapsOnceWithEveryMatchingBreakpoint()
    {
        // ADD [Data], 1 reads and writes: one #DB after it, with B1 (write) and B3 (read/write);
        // breakpoint 2 watches other bytes.
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(rax, Data); a.mov(dr1, rax);
            a.mov(rax, Data + 8); a.mov(dr2, rax);
            a.mov(rax, Data + 2); a.mov(dr3, rax);
            a.mov(rax, Dr7(1, Write, 1) | Dr7(2, Write, 4) | Dr7(3, ReadWrite, 4));
            a.mov(dr7, rax);
            a.mov(rbx, Data);
            a.add(__dword_ptr[rbx], 1);
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);
        Assert.Equal(0b1010UL, e.Dr6 & 0xF);
        Assert.Equal(1U, m.Memory.Read<uint>(Data));
    }

    [Fact]
    public void PushTrapsOnAWatchedStackSlot()
    {
        const ulong rsp = 0x80000;
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, rsp - 8, Dr7(0, Write, 8));
            a.mov(rax, 0x1234);
            a.push(rax);
            a.Label(ref after);
            a.pop(rax);                          // a read: no #DB from a write breakpoint
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);
        Assert.Equal(1UL, e.Dr6 & 0xF);
        Assert.Equal(0x1234UL, m.Memory.Read<ulong>(rsp - 8));
    }

    [Fact]
    public void AccessCrossingIntoAWatchedPageTraps()
    {
        // A qword at Data+0xFFC crosses into the next page, whose first byte is watched.
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Data + 0x1000, Dr7(0, Write, 1));
            a.mov(rbx, Data + 0xFFC);
            a.mov(__qword_ptr[rbx], rbx);
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);
    }

    [Fact]
    public void EveryAccessToAWatchedPageIsCheckedAfterTheTlbHeldIt()
    {
        // The page is in the TLB (read and written) before the breakpoint is armed; arming must
        // take it out and keep it out (each access traps, not only the first after arming), and
        // disarming must let accesses run again without #DB.
        using var m = Build(a =>
        {
            var after1 = a.CreateLabel();
            var after2 = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(rbx, Data);
            a.mov(__qword_ptr[rbx + 0x100], rbx);
            a.mov(rcx, __qword_ptr[rbx + 0x100]);
            Arm(a, Data + 0x100, Dr7(0, ReadWrite, 8));
            a.mov(rcx, __qword_ptr[rbx + 0x100]);
            a.Label(ref after1);
            a.mov(edx, __dword_ptr[rbx + 0x104]); // a second read: still not from the TLB
            a.Label(ref after2);
            a.mov(rdx, __qword_ptr[rbx + 0x108]); // same page, outside the range
            a.xor(eax, eax);
            a.mov(dr7, rax);
            a.mov(__qword_ptr[rbx + 0x100], rax);
            a.Label(ref end);
            a.hlt();
            return [after1, after2, end];
        }, out var l);
        RunToEnd(m, l[2] + 1);
        var ev = Events(m);
        Assert.Equal([l[0], l[1]], ev.Select(e => e.Rip));
    }

    [Fact]
    public void ReadFromMmioReportsOnceAfterTheVmmAnswered()
    {
        // The read exits for the VMM's answer and re-executes: one #DB, after the instruction.
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Mmio, Dr7(0, ReadWrite, 4));
            a.mov(rbx, Mmio);
            a.mov(eax, __dword_ptr[rbx]);
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);
        Assert.Equal(0xFFFF_FFFFUL, m.State().Rax);
    }

    [Fact]
    public void FaultingInstructionReportsNoBreakpoint()
    {
        // MOVSB reads the watched byte, then its store to an unmapped page faults: #PF only.
        using var m = Build(a =>
        {
            var mov = a.CreateLabel();
            Arm(a, Data, Dr7(0, ReadWrite, 1));
            a.mov(rsi, Data);
            a.mov(rdi, Unmapped);
            a.Label(ref mov);
            a.movsb();
            a.hlt();
            return [mov];
        }, out var l);
        var r = m.Run();
        Assert.Equal(ExitReason.Halt, r);
        Assert.Equal(HandlerOf(14) + 1, m.State().Rip);
        Assert.Empty(Events(m));
        Assert.Equal(l[0], m.Memory.Read<ulong>(m.State().Rsp + 8)); // #PF frame: error code, then RIP
    }

    // ------------------------------------------------------------------ REP string instructions

    [Fact]
    public void RepMovsbTrapsAfterTheIterationThatHitAndResumes()
    {
        using var m = Build(a =>
        {
            var movs = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(rbx, Data + 0x800);
            for (int k = 0; k < 16; k++) a.mov(__byte_ptr[rbx + k], (byte)(0x40 + k));
            Arm(a, Data + 5, Dr7(0, Write, 1));
            a.mov(rsi, Data + 0x800);
            a.mov(rdi, Data);
            a.mov(ecx, 16);
            a.Label(ref movs);
            a.rep.movsb();
            a.Label(ref end);
            a.hlt();
            return [movs, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);        // between iterations: the string instruction again
        Assert.Equal(10UL, e.Rcx);         // elements 0..5 done
        Assert.Equal(Rf, e.Rflags & Rf);   // RF = 1 for a trap between iterations
        Assert.Equal(1UL, e.Dr6 & 0xF);
        var s = m.State();
        Assert.Equal(0UL, s.Rcx);
        var got = new byte[16];
        m.Memory.Read(Data, got);
        Assert.Equal(Enumerable.Range(0x40, 16).Select(k => (byte)k), got);
    }

    [Fact]
    public void RepStosTrapOnTheLastIterationPointsAfterTheInstruction()
    {
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Data + 28, Dr7(0, Write, 4));
            a.mov(rdi, Data);
            a.mov(ecx, 8);
            a.mov(eax, 0xAABBCCDD);
            a.rep.stosd();
            a.Label(ref after);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);
        Assert.Equal(0UL, e.Rcx);
        Assert.Equal(0UL, e.Rflags & Rf);
    }

    [Fact]
    public void RepResumedAfterADataTrapDoesNotMatchItsExecuteBreakpointAgain()
    {
        // DR1 is an execute breakpoint on the REP MOVSB, DR0 watches an element: #DB (fault,
        // B1) before it, then the data trap (B0) between iterations, then nothing more.
        using var m = Build(a =>
        {
            var movs = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(rax, Data + 3); a.mov(dr0, rax);
            a.lea(rax, __[movs]); a.mov(dr1, rax);
            a.mov(rax, Dr7(0, Write, 1) | Dr7(1, Exec, 1));
            a.mov(dr7, rax);
            a.mov(rsi, Data + 0x800);
            a.mov(rdi, Data);
            a.mov(ecx, 8);
            a.Label(ref movs);
            a.rep.movsb();
            a.Label(ref end);
            a.hlt();
            return [movs, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var ev = Events(m);
        Assert.Equal(2, ev.Count);
        Assert.Equal((l[0], 0b10UL, 8UL, 0UL), (ev[0].Rip, ev[0].Dr6 & 0xF, ev[0].Rcx, ev[0].Rflags & Rf));
        Assert.Equal((l[0], 0b01UL, 4UL, Rf), (ev[1].Rip, ev[1].Dr6 & 0xF, ev[1].Rcx, ev[1].Rflags & Rf));
    }

    [Fact]
    public void LongRepResumedAfterAnEngineStopDoesNotMatchItsExecuteBreakpointAgain()
    {
        // A REP STOSB of 10,000 bytes stops between iterations for the engine's own reasons (its
        // iteration budget, letting interrupts in). A stop between iterations sets RF (an event
        // taken there pushes RF = 1), so the execute breakpoint on the instruction is reported
        // once, before the first iteration, not again at each resumption.
        using var m = Build(a =>
        {
            var stos = a.CreateLabel();
            var end = a.CreateLabel();
            a.lea(rax, __[stos]); a.mov(dr1, rax);
            a.mov(rax, Dr7(1, Exec, 1));
            a.mov(dr7, rax);
            a.mov(rdi, Data);
            a.mov(ecx, 10_000);
            a.Label(ref stos);
            a.rep.stosb();
            a.Label(ref end);
            a.hlt();
            return [stos, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal((l[0], 0b10UL, 10_000UL), (e.Rip, e.Dr6 & 0xF, e.Rcx));
        Assert.Equal(0UL, m.State().Rcx);
        Assert.Equal(0UL, m.State().Rflags & Rf);
    }

    // ------------------------------------------------------------------ TF, RF, GD

    [Fact]
    public void SingleStepAndDataBreakpointOfOneInstructionAreOneDebugException()
    {
        using var m = Build(a =>
        {
            var after = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, Data, Dr7(0, Write, 1));
            a.mov(rbx, Data);
            a.pushfq();
            a.or(__qword_ptr[rsp], (int)Tf);
            a.popfq();
            a.mov(__byte_ptr[rbx], 1);            // TF is set when it starts: BS and B0 together
            a.Label(ref after);
            a.nop();
            a.pushfq();
            a.and(__qword_ptr[rsp], ~(int)Tf);
            a.popfq();                           // TF set when it starts: it traps too
            a.Label(ref end);
            a.hlt();
            return [after, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        // The handler returns with TF still set: the four instructions after the MOV single-step.
        var ev = Events(m);
        Assert.Equal(5, ev.Count);
        Assert.Equal(l[0], ev[0].Rip);
        Assert.Equal(Bs | 1, ev[0].Dr6 & (Bs | 0xF));
        Assert.Equal(Tf, ev[0].Rflags & Tf);
        Assert.All(ev.Skip(1), e => Assert.Equal(Bs, e.Dr6 & (Bs | 0xF))); // single steps report BS alone
        Assert.Equal(l[1], ev[4].Rip);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MovDrWithGeneralDetectFaultsOnceWithBd(bool write)
    {
        using var m = Build(a =>
        {
            var mov = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(rax, 0x2000UL);                // DR7.GD
            a.mov(dr7, rax);
            a.mov(rax, 0x5555);
            a.Label(ref mov);
            if (write) a.mov(dr0, rax); else a.mov(rcx, dr7);
            if (write) a.mov(rdx, dr0);          // the write ran after the #DB
            a.Label(ref end);
            a.hlt();
            return [mov, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var e = Assert.Single(Events(m));
        Assert.Equal(l[0], e.Rip);            // a fault: the MOV again, which then runs (GD is clear)
        Assert.Equal(Bd, e.Dr6 & Bd);
        Assert.Equal(Rf, e.Rflags & Rf);      // fault-class #DB other than an instruction breakpoint
        var s = m.State();
        if (!write) Assert.Equal(0x400UL, s.Rcx); // DR7 with GD cleared by the #DB
        else Assert.Equal(0x5555UL, s.Rdx);
    }

    [Fact]
    public void SingleStepTrapsAfterAnOutThatLeavesTheEngine()
    {
        // OUT ends its block with the port write for the VMM: the single-step #DB it owes must
        // still follow it (with RIP after the OUT), before the next instruction runs.
        using var m = Build(a =>
        {
            var afterOut = a.CreateLabel();
            var end = a.CreateLabel();
            a.mov(edx, 0x80);
            a.pushfq();
            a.or(__qword_ptr[rsp], (int)Tf);
            a.popfq();
            a.@out(dx, al);                       // TF set when it starts
            a.Label(ref afterOut);
            a.pushfq();
            a.and(__qword_ptr[rsp], ~(int)Tf);
            a.popfq();
            a.Label(ref end);
            a.hlt();
            return [afterOut, end];
        }, out var l);
        RunToEnd(m, l[1] + 1);
        var ev = Events(m);
        Assert.True(ev.Count == 4, $"OUT at {l[0]:x}: #DB at " + string.Join(", ", ev.Select(e => $"{e.Rip:x} dr6 {e.Dr6:x}"))); // OUT, PUSHF, AND, POPF
        Assert.Equal(l[0], ev[0].Rip);
        Assert.Equal(Bs, ev[0].Dr6 & (Bs | 0xF));
        Assert.Single(m.Outs, o => o.Port == 0x80);
    }

    /// <summary>
    /// SDM Vol. 3B §17.3.1.1: every fault-class exception but an instruction breakpoint pushes
    /// RF = 1; traps (INT3, INTO) push the RF they find, 0 here.
    /// </summary>
    [Theory]
    [InlineData(6, false, true)]   // UD2: #UD, a fault
    [InlineData(13, true, true)]   // a non-canonical load: #GP(0), a fault with an error code
    [InlineData(0, false, true)]   // DIV by zero: #DE
    [InlineData(3, false, false)]  // INT3: #BP, a trap
    public void FaultFramesCarryTheResumeFlag(int vector, bool errorCode, bool rf)
    {
        using var m = Build(a =>
        {
            var at = a.CreateLabel();
            a.xor(ecx, ecx);
            a.mov(rax, 0x8000_0000_0000_0000UL);
            a.Label(ref at);
            switch (vector)
            {
                case 6: a.ud2(); break;
                case 13: a.mov(rbx, __qword_ptr[rax]); break;
                case 0: a.div(ecx); break;
                default: a.int3(); break;
            }
            a.hlt();
            return [at];
        }, out var l);
        var r = m.Run();
        Assert.True(r == ExitReason.Halt, $"{r}: {m.Cpu.Exit.Message}");
        var s = m.State();
        Assert.Equal(HandlerOf(vector) + 1, s.Rip);
        ulong frame = s.Gpr[4] + (errorCode ? 8UL : 0UL);
        Assert.Equal(vector == 3 ? l[0] + 1 : l[0], m.Memory.Read<ulong>(frame));
        Assert.Equal(rf ? Rf : 0, m.Memory.Read<ulong>(frame + 16) & Rf);
        Assert.Equal(0UL, s.Rflags & Rf); // delivery clears it in the handler
    }

    // ------------------------------------------------------------------ I/O breakpoints, DR4/DR5

    [Theory]
    [InlineData(true, 0x80, true)]
    [InlineData(true, 0x81, true)]   // LEN 2: ports 0x80..0x81
    [InlineData(true, 0x82, false)]
    [InlineData(false, 0x80, false)] // R/W = 10 without CR4.DE: undefined, no effect here
    public void IoBreakpointTrapsAfterInAndOutWithDebugExtensions(bool de, int port, bool hits)
    {
        using var m = Build(a =>
        {
            var afterOut = a.CreateLabel();
            var afterIn = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, 0x81, Dr7(0, Io, 2));
            a.mov(edx, port);
            a.@out(dx, al);
            a.Label(ref afterOut);
            a.@in(al, dx);
            a.Label(ref afterIn);
            a.nop();
            a.Label(ref end);
            a.hlt();
            return [afterOut, afterIn, end];
        }, out var l, s => { if (de) s.Cr4 |= 8; });
        RunToEnd(m, l[2] + 1);
        var ev = Events(m);
        if (!hits) { Assert.Empty(ev); return; }
        Assert.Equal(2, ev.Count);
        Assert.Equal(l[0], ev[0].Rip);
        Assert.Equal(l[1], ev[1].Rip);
        Assert.All(ev, e => Assert.Equal(1UL, e.Dr6 & 0xF));
    }

    [Fact]
    public void RepOutsbTrapsAfterItsFirstIteration()
    {
        using var m = Build(a =>
        {
            var outs = a.CreateLabel();
            var end = a.CreateLabel();
            Arm(a, 0x80, Dr7(0, Io, 1));
            a.mov(edx, 0x80);
            a.mov(rsi, Data);
            a.mov(ecx, 3);
            a.Label(ref outs);
            a.rep.outsb();
            a.Label(ref end);
            a.hlt();
            return [outs, end];
        }, out var l, s => s.Cr4 |= 8);
        RunToEnd(m, l[1] + 1);
        var ev = Events(m);
        // Each iteration accesses the port: a trap after each, the last one after the instruction.
        Assert.Equal(3, ev.Count);
        Assert.Equal((l[0], 2UL, Rf), (ev[0].Rip, ev[0].Rcx, ev[0].Rflags & Rf));
        Assert.Equal((l[0], 1UL, Rf), (ev[1].Rip, ev[1].Rcx, ev[1].Rflags & Rf));
        Assert.Equal((l[1], 0UL, 0UL), (ev[2].Rip, ev[2].Rcx, ev[2].Rflags & Rf));
        Assert.Equal(3, m.Outs.Count(o => o.Port == 0x80));
    }

    [Fact]
    public void Dr4AndDr5AliasDr6AndDr7WithoutDebugExtensions()
    {
        using var m = Build(a =>
        {
            var end = a.CreateLabel();
            a.mov(rax, 0x1UL);
            a.mov(dr6, rax);
            a.mov(rbx, dr4);                     // DR6
            a.mov(rax, Dr7(2, Write, 4));
            a.mov(dr5, rax);                     // DR7
            a.mov(rcx, dr7);
            a.xor(eax, eax);
            a.mov(dr7, rax);
            a.Label(ref end);
            a.hlt();
            return [end];
        }, out var l);
        RunToEnd(m, l[0] + 1);
        var s = m.State();
        Assert.Equal(0xFFFF_0FF1UL, s.Rbx);
        Assert.Equal(Dr7(2, Write, 4) | 0x400, s.Rcx);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Dr4AndDr5AreUndefinedOpcodesWithDebugExtensions(bool useDr5)
    {
        using var m = Build(a =>
        {
            var mov = a.CreateLabel();
            a.Label(ref mov);
            if (useDr5) a.mov(dr5, rax); else a.mov(rax, dr4);
            a.hlt();
            return [mov];
        }, out var l, s => s.Cr4 |= 8);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(HandlerOf(6) + 1, m.State().Rip);
        Assert.Equal(l[0], m.Memory.Read<ulong>(m.State().Rsp));
    }
}
