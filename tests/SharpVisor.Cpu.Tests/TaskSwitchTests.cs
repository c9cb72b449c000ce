using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// The hardware task switch against the Intel SDM Vol. 3A chapter 8: TSS layout (Figure 8-2),
/// the switch steps (§8.3, Table 8-1), task linking with NT, the previous-task link and the busy
/// flag (§8.4, Table 8-2), task gates in the GDT and the IDT, and the #TS/#GP conditions.
/// </summary>
public class TaskSwitchTests
{
    // Memory map of the test machine.
    private const ulong Gdt = 0x1000, Idt = 0x2000, TssA = 0x3000, TssB = 0x3100, TssC = 0x3200, TssD = 0x3300;
    private const ulong Out = 0x5000, CodeA = 0x8000, CodeB = 0x9000, CodeD = 0xA000, Handler = 0xB000;
    private const uint StackA = 0x7000, StackB = 0x6800, StackD = 0x6000;
    // Selectors.
    private const ushort KCode = 0x08, KData = 0x10, SelA = 0x18, SelB = 0x20, SelC = 0x28, SelD = 0x30, SelGateB = 0x38;
    private const ushort GdtLimit = 0x4F;
    // 32-bit TSS offsets (SDM Figure 8-2).
    private const ulong OffLink = 0, OffCr3 = 28, OffEip = 32, OffEflags = 36, OffEbx = 52, OffEsp = 56, OffEs = 72, OffCs = 76, OffSs = 80, OffDs = 84, OffLdt = 96;
    private const uint NT = 1 << 14;
    private const int TypeTss16Avail = 1, TypeTss16Busy = 3, TypeTss32 = 9, TypeTss32Busy = 11, TypeTaskGate = 5, TypeIntGate32 = 14;

    private static ulong SegmentDescriptor(ulong @base, uint limit, int type, int dpl = 0, bool present = true, bool system = true, int flags = 0) =>
        (limit & 0xFFFF) | ((@base & 0xFF_FFFF) << 16)
        | ((ulong)(type | (system ? 0 : 0x10) | (dpl << 5) | (present ? 0x80 : 0)) << 40)
        | ((ulong)((limit >> 16) & 0xF) << 48) | ((ulong)flags << 52) | ((@base >> 24) << 56);

    /// <summary>A GDT with flat ring-0 code/data, TSS A (the first task, loaded by LTR), TSS B, C, D and a task gate to B.</summary>
    private static TestMachine NewMachine()
    {
        var m = new TestMachine();
        m.Memory.Write(Gdt, 0UL);
        m.Memory.Write(Gdt + KCode, 0x00CF9B000000FFFFUL);
        m.Memory.Write(Gdt + KData, 0x00CF93000000FFFFUL);
        m.Memory.Write(Gdt + SelA, SegmentDescriptor(TssA, 0x67, TypeTss32));
        m.Memory.Write(Gdt + SelB, SegmentDescriptor(TssB, 0x67, TypeTss32));
        m.Memory.Write(Gdt + SelC, SegmentDescriptor(TssC, 0x67, TypeTss32));
        m.Memory.Write(Gdt + SelD, SegmentDescriptor(TssD, 0x67, TypeTss32));
        m.Memory.Write(Gdt + SelGateB, (ulong)SelB << 16 | (ulong)(TypeTaskGate | 0x80) << 40);
        InitTss(m, TssB, CodeB, StackB, ebx: 0xB0B0);
        InitTss(m, TssC, CodeB, StackB, ebx: 0xC0C0);
        InitTss(m, TssD, CodeD, StackD, ebx: 0xD0D0);
        return m;
    }

    /// <summary>A ready-to-run 32-bit TSS: flat ring-0 segments, EFLAGS 0x2, no LDT.</summary>
    private static void InitTss(TestMachine m, ulong tss, ulong eip, uint esp, uint ebx, ushort cs = KCode, ushort ss = KData, ushort ds = KData, uint cr3 = 0)
    {
        m.Memory.Write(tss, new byte[0x68]);
        m.Memory.Write(tss + OffCr3, cr3);
        m.Memory.Write(tss + OffEip, (uint)eip);
        m.Memory.Write(tss + OffEflags, 2u);
        m.Memory.Write(tss + OffEbx, ebx);
        m.Memory.Write(tss + OffEsp, esp);
        m.Memory.Write(tss + OffEs, (uint)KData);
        m.Memory.Write(tss + OffCs, (uint)cs);
        m.Memory.Write(tss + OffSs, (uint)ss);
        m.Memory.Write(tss + OffDs, (uint)ds);
        m.Memory.Write(tss + OffDs + 4, (uint)KData); // FS
        m.Memory.Write(tss + OffDs + 8, (uint)KData); // GS
        m.Memory.Write(tss + OffLdt, 0u);
    }

    private static void SetIdtGate(TestMachine m, int vector, ushort selector, ulong offset, int type) =>
        m.Memory.Write(Idt + (ulong)vector * 8,
            (offset & 0xFFFF) | (ulong)selector << 16 | (ulong)(type | 0x80) << 40 | ((offset >> 16) & 0xFFFF) << 48);

    /// <summary>Task A's code: LTR with TSS A, then <paramref name="body"/>.</summary>
    private static void LoadAndStart(TestMachine m, Func<Assembler, Label[]> body, out ulong[] labels, Action<Assembler>? taskB = null, Action<Assembler>? taskD = null, Action<Assembler>? handler = null)
    {
        m.Memory.Write(CodeA, TestMachine.Assemble(32, CodeA, a =>
        {
            a.mov(ax, SelA);
            a.ltr(ax);
            return body(a);
        }, out labels));
        if (taskB != null) m.Memory.Write(CodeB, TestMachine.Assemble(32, CodeB, taskB));
        if (taskD != null) m.Memory.Write(CodeD, TestMachine.Assemble(32, CodeD, taskD));
        if (handler != null) m.Memory.Write(Handler, TestMachine.Assemble(32, Handler, handler));
        var s = VcpuState.Protected32(CodeA);
        s.Cs = SegmentRegister.Flat(KCode, code: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(KData, code: false);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = GdtLimit };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 256 * 8 - 1 };
        s.Rsp = StackA;
        m.Cpu.SetState(s);
    }

    private static int DescriptorType(TestMachine m, ushort sel) => m.Memory.Read<byte>(Gdt + sel + 5) & 0xF;

    [Fact]
    public void JmpToTssSavesTheOldTaskAndLoadsTheNewOne()
    {
        using var m = NewMachine();
        LoadAndStart(m, a =>
        {
            var after = a.CreateLabel();
            a.mov(ebx, 0x1234);
            a.mov(esi, 0x5151);
            a.jmp(SelB, 0);
            a.Label(ref after);
            a.hlt();
            return [after];
        }, out var at, taskB: a => a.hlt());
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        // The new task's registers come from TSS B.
        Assert.Equal(SelB, s.Tr.Selector);
        Assert.Equal(TssB, s.Tr.Base);
        Assert.Equal(TypeTss32Busy, s.Tr.Type);
        Assert.Equal(CodeB + 1, s.Rip);
        Assert.Equal(0xB0B0UL, s.Rbx);
        Assert.Equal(0UL, s.Rsi);
        Assert.Equal((ulong)StackB, s.Rsp);
        Assert.Equal(KCode, s.Cs.Selector);
        Assert.Equal(KData, s.Ss.Selector);
        Assert.Equal(0UL, s.Rflags & NT); // JMP does not nest
        Assert.NotEqual(0UL, s.Cr0 & 8);  // CR0.TS
        // Busy: old task cleared, new task set; no link written by JMP.
        Assert.Equal(TypeTss32, DescriptorType(m, SelA));
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelB));
        Assert.Equal(0, m.Memory.Read<ushort>(TssB + OffLink));
        // The old task's state went into TSS A; EIP is the instruction after the JMP.
        Assert.Equal((uint)at[0], m.Memory.Read<uint>(TssA + OffEip));
        Assert.Equal(0x1234u, m.Memory.Read<uint>(TssA + OffEbx));
        Assert.Equal(0x5151u, m.Memory.Read<uint>(TssA + 64)); // ESI
        Assert.Equal(StackA, m.Memory.Read<uint>(TssA + OffEsp));
        Assert.Equal(KCode, m.Memory.Read<ushort>(TssA + OffCs));
        Assert.Equal(KData, m.Memory.Read<ushort>(TssA + OffSs));
    }

    [Fact]
    public void JmpBackResumesTheFirstTaskWhereItLeft()
    {
        using var m = NewMachine();
        LoadAndStart(m, a =>
        {
            a.mov(ebx, 0x1234);
            a.jmp(SelB, 0);
            a.mov(__dword_ptr[Out], ebx);
            a.hlt();
            return [];
        }, out _, taskB: a =>
        {
            a.mov(__dword_ptr[Out + 4], ebx);
            a.mov(ebx, 0x9999);
            a.jmp(SelA, 0);
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(SelA, s.Tr.Selector);
        Assert.Equal(0x1234u, m.Memory.Read<uint>(Out));      // restored from TSS A
        Assert.Equal(0xB0B0u, m.Memory.Read<uint>(Out + 4));  // loaded from TSS B
        Assert.Equal(0x9999u, m.Memory.Read<uint>(TssB + OffEbx)); // B's state saved by its JMP
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelA));
        Assert.Equal(TypeTss32, DescriptorType(m, SelB));
    }

    [Fact]
    public void CallNestsAndIretReturnsThroughTheLink()
    {
        using var m = NewMachine();
        LoadAndStart(m, a =>
        {
            a.mov(ebx, 0x5678);
            a.call(SelB, 0);
            a.mov(__dword_ptr[Out + 12], ebx);
            a.pushfd();
            a.pop(__dword_ptr[Out + 16]);
            a.hlt();
            return [];
        }, out _, taskB: a =>
        {
            var again = a.CreateLabel();
            a.pushfd();
            a.pop(__dword_ptr[Out]);
            a.mov(eax, __dword_ptr[TssB + OffLink]);
            a.mov(__dword_ptr[Out + 4], eax);
            a.movzx(eax, __byte_ptr[Gdt + SelA + 5]);
            a.mov(__dword_ptr[Out + 8], eax);
            a.mov(ebx, 0xBEEF);
            a.iretd();
            a.Label(ref again);
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.NotEqual(0u, m.Memory.Read<uint>(Out) & NT);               // NT set in the called task
        Assert.Equal(SelA, (ushort)m.Memory.Read<uint>(Out + 4));          // previous-task link
        Assert.Equal(TypeTss32Busy, (int)(m.Memory.Read<uint>(Out + 8) & 0xF));   // the caller stays busy
        Assert.Equal(0x5678u, m.Memory.Read<uint>(Out + 12));              // caller's EBX back
        Assert.Equal(0u, m.Memory.Read<uint>(Out + 16) & NT);             // NT as TSS A saved it
        Assert.Equal(SelA, s.Tr.Selector);
        Assert.Equal(TypeTss32, DescriptorType(m, SelB));                 // IRET: the returning task is free
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelA));
        // IRET saved B's state with NT clear, EIP after the IRET.
        Assert.Equal(0u, m.Memory.Read<uint>(TssB + OffEflags) & NT);
        Assert.Equal(0xBEEFu, m.Memory.Read<uint>(TssB + OffEbx));
    }

    [Fact]
    public void JmpThroughATaskGateInTheGdt()
    {
        using var m = NewMachine();
        LoadAndStart(m, a => { a.jmp(SelGateB, 0x1234); return []; }, out _, taskB: a => a.hlt());
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(SelB, s.Tr.Selector);
        Assert.Equal(CodeB + 1, s.Rip); // the gate's offset is ignored
        Assert.Equal(TypeTss32, DescriptorType(m, SelA));
    }

    /// <summary>An exception through an IDT task gate: saved EIP is the faulting instruction, the error code is pushed on the new task's stack.</summary>
    [Fact]
    public void ExceptionThroughATaskGatePushesItsErrorCodeOnTheNewStack()
    {
        using var m = NewMachine();
        SetIdtGate(m, 13, SelB, 0, TypeTaskGate);
        LoadAndStart(m, a =>
        {
            var fault = a.CreateLabel();
            a.mov(ax, 0x100); // beyond the GDT limit: #GP(0x100)
            a.Label(ref fault);
            a.mov(ds, ax);
            a.hlt();
            return [fault];
        }, out var at, taskB: a => a.hlt());
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(SelB, s.Tr.Selector);
        Assert.Equal((ulong)StackB - 4, s.Rsp);
        Assert.Equal(0x100u, m.Memory.Read<uint>(StackB - 4));
        Assert.NotEqual(0UL, s.Rflags & NT);
        Assert.Equal(SelA, m.Memory.Read<ushort>(TssB + OffLink));
        Assert.Equal((uint)at[0], m.Memory.Read<uint>(TssA + OffEip)); // a fault: the instruction itself
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelA));
    }

    [Fact]
    public void SoftwareInterruptThroughATaskGateAndIretBack()
    {
        using var m = NewMachine();
        SetIdtGate(m, 0x40, SelB, 0, TypeTaskGate);
        LoadAndStart(m, a =>
        {
            a.mov(ebx, 0x9ABC);
            a.@int(0x40);
            a.mov(__dword_ptr[Out], ebx);
            a.hlt();
            return [];
        }, out _, taskB: a =>
        {
            a.mov(__dword_ptr[Out + 4], esp);
            a.iretd();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0x9ABCu, m.Memory.Read<uint>(Out));
        Assert.Equal(StackB, m.Memory.Read<uint>(Out + 4)); // INT n pushes no error code
        Assert.Equal(SelA, m.State().Tr.Selector);
        Assert.Equal(TypeTss32, DescriptorType(m, SelB));
    }

    /// <summary>A TSS whose limit is below 0x67 gives #TS(new TSS) before the switch, in the old task's context.</summary>
    [Fact]
    public void TssLimitTooSmallIsTsInTheOldTask()
    {
        using var m = NewMachine();
        m.Memory.Write(Gdt + SelC, SegmentDescriptor(TssC, 0x60, TypeTss32));
        SetIdtGate(m, 10, KCode, Handler, TypeIntGate32);
        LoadAndStart(m, a =>
        {
            var call = a.CreateLabel();
            a.Label(ref call);
            a.call(SelC, 0);
            a.hlt();
            return [call];
        }, out var at, handler: a =>
        {
            a.pop(__dword_ptr[Out]);     // error code
            a.pop(__dword_ptr[Out + 4]); // EIP
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(SelC, m.Memory.Read<uint>(Out));
        Assert.Equal((uint)at[0], m.Memory.Read<uint>(Out + 4));
        var s = m.State();
        Assert.Equal(SelA, s.Tr.Selector);
        Assert.Equal(TypeTss32, DescriptorType(m, SelC));
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelA));
    }

    /// <summary>
    /// A bad SS in the new TSS is found after the commit point: #TS(SS selector) is raised in the
    /// new task's context, so the #TS task's link names the new task, whose saved EIP is its own.
    /// </summary>
    [Fact]
    public void BadStackSegmentInTheNewTaskIsTsAfterTheSwitch()
    {
        using var m = NewMachine();
        InitTss(m, TssC, CodeB, StackB, ebx: 0xC0C0, ss: KCode); // SS = a code segment
        SetIdtGate(m, 10, SelD, 0, TypeTaskGate);
        LoadAndStart(m, a => { a.jmp(SelC, 0); return []; }, out _, taskD: a => a.hlt());
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(SelD, s.Tr.Selector);
        Assert.Equal(KCode, m.Memory.Read<uint>(StackD - 4));          // error code: the SS selector
        Assert.Equal(SelC, m.Memory.Read<ushort>(TssD + OffLink));     // raised in task C
        Assert.Equal((uint)CodeB, m.Memory.Read<uint>(TssC + OffEip));  // C's state, not A's
        Assert.Equal(0xC0C0u, m.Memory.Read<uint>(TssC + OffEbx));
        Assert.Equal(TypeTss32, DescriptorType(m, SelA));
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelC));
    }

    [Fact]
    public void IretWithNtAndABadLinkIsTsWithTheLink()
    {
        using var m = NewMachine();
        m.Memory.Write(TssA + OffLink, (uint)KData); // link names a data segment
        SetIdtGate(m, 10, KCode, Handler, TypeIntGate32);
        LoadAndStart(m, a =>
        {
            var iret = a.CreateLabel();
            a.pushfd();
            a.or(__dword_ptr[esp], (int)NT);
            a.popfd();
            a.Label(ref iret);
            a.iretd();
            a.hlt();
            return [iret];
        }, out var at, handler: a =>
        {
            a.pop(__dword_ptr[Out]);
            a.pop(__dword_ptr[Out + 4]);
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(KData, m.Memory.Read<uint>(Out));
        Assert.Equal((uint)at[0], m.Memory.Read<uint>(Out + 4));
        Assert.Equal(SelA, m.State().Tr.Selector);
    }

    [Fact]
    public void JmpToABusyTssIsGp()
    {
        using var m = NewMachine();
        SetIdtGate(m, 13, KCode, Handler, TypeIntGate32);
        LoadAndStart(m, a => { a.jmp(SelA, 0); return []; }, out _, handler: a =>
        {
            a.pop(__dword_ptr[Out]);
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(SelA, m.Memory.Read<uint>(Out));
        Assert.Equal(TypeTss32Busy, DescriptorType(m, SelA));
    }

    /// <summary>With paging on, the switch loads CR3 from the new TSS (here a directory that maps 4–8 MiB onto 0–4 MiB).</summary>
    [Fact]
    public void SwitchLoadsCr3WhenPagingIsOn()
    {
        using var m = NewMachine();
        const ulong pdA = 0x10000, pdB = 0x11000;
        m.Memory.Write(pdA, 0x83UL);                 // 4 MiB page: 0 → 0
        m.Memory.Write(pdB, 0x83UL);
        m.Memory.Write(pdB + 4, 0x83UL);             // 4 MiB page: 4 MiB → 0
        m.Memory.Write(TssB + OffCr3, (uint)pdB);
        m.Memory.Write(Out + 0x100, 0xFEEDu);
        LoadAndStart(m, a => { a.jmp(SelB, 0); return []; }, out _, taskB: a =>
        {
            a.mov(eax, __dword_ptr[0x40_0000 + Out + 0x100]);
            a.hlt();
        });
        var s = m.State();
        s.Cr0 |= 0x8000_0000; s.Cr4 |= 0x10; s.Cr3 = pdA; // PG, PSE
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        s = m.State();
        Assert.Equal(pdB, s.Cr3);
        Assert.Equal(0xFEEDUL, s.Rax);
    }

    /// <summary>
    /// A 16-bit TSS (SDM Figure 8-11): IP/FLAGS/registers are words, FS and GS become null, the
    /// upper register halves read as ones (Bochs and QEMU model it so), CR3 is not loaded.
    /// </summary>
    [Fact]
    public void CallToA16BitTss()
    {
        using var m = NewMachine();
        m.Memory.Write(Gdt + SelC, SegmentDescriptor(TssC, 0x2B, TypeTss16Avail));
        m.Memory.Write(TssC, new byte[0x2C]);
        m.Memory.Write(TssC + 14, (ushort)CodeB);   // IP
        m.Memory.Write(TssC + 16, (ushort)2);       // FLAGS
        m.Memory.Write(TssC + 24, (ushort)0x1616);  // BX
        m.Memory.Write(TssC + 26, (ushort)StackB);  // SP
        m.Memory.Write(TssC + 34, KData);           // ES
        m.Memory.Write(TssC + 36, KCode);           // CS
        m.Memory.Write(TssC + 38, KData);           // SS
        m.Memory.Write(TssC + 40, KData);           // DS
        LoadAndStart(m, a => { a.call(SelC, 0); return []; }, out _, taskB: a => a.hlt());
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(SelC, s.Tr.Selector);
        Assert.Equal(TypeTss16Busy, s.Tr.Type);
        Assert.Equal(0xFFFF_1616UL, s.Rbx);
        Assert.Equal(0xFFFF_0000UL | StackB, s.Rsp);
        Assert.Equal(0, s.Fs.Selector);
        Assert.Equal(0, s.Gs.Selector);
        Assert.NotEqual(0UL, s.Rflags & NT);
        Assert.Equal(SelA, m.Memory.Read<ushort>(TssC + OffLink));
        Assert.Equal(TypeTss16Busy, DescriptorType(m, SelC));
    }

    /// <summary>IA-32e mode has no task switch: a far JMP to a TSS selector is #GP(selector).</summary>
    [Fact]
    public void FarJmpToATssInLongModeIsGp()
    {
        using var m = NewMachine();
        const ulong pml4 = 0x10000;
        m.Memory.Write(pml4, (pml4 + 0x1000) | 3);
        m.Memory.Write(pml4 + 0x1000, (pml4 + 0x2000) | 3);
        m.Memory.Write(pml4 + 0x2000, 0x83UL);       // 2 MiB identity page
        m.Memory.Write(Gdt + KCode, 0x00AF9B000000FFFFUL); // 64-bit code
        m.Memory.Write(Gdt + SelB + 8, 0UL);          // upper half of a 16-byte TSS descriptor
        // 64-bit interrupt gate for #GP at vector 13 (16 bytes).
        m.Memory.Write(Idt + 13 * 16, (Handler & 0xFFFF) | (ulong)KCode << 16 | (ulong)(TypeIntGate32 | 0x80) << 40 | ((Handler >> 16) & 0xFFFF) << 48);
        m.Memory.Write(Idt + 13 * 16 + 8, 0UL);
        m.Memory.Write(CodeA, TestMachine.Assemble(64, CodeA, a =>
        {
            a.jmp(__fword_ptr[Out + 0x200]); // far JMP m16:32
        }));
        m.Memory.Write(Out + 0x200, 0u);
        m.Memory.Write(Out + 0x204, SelB);
        m.Memory.Write(Handler, TestMachine.Assemble(64, Handler, a => { a.pop(rax); a.hlt(); }));
        var s = VcpuState.Protected32(CodeA);
        s.Cs = SegmentRegister.Flat(KCode, code: true, longMode: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(KData, code: false);
        s.Cr0 = 0x8000_0011; s.Cr3 = pml4; s.Cr4 = 0x20; s.Efer = 0x500;
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = GdtLimit };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 256 * 16 - 1 };
        s.Rsp = StackA;
        s.Tr = SegmentRegister.System(SelA, TssA, 0x67, TypeTss32Busy);
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        s = m.State();
        Assert.Equal((ulong)SelB, s.Rax);
        Assert.Equal(SelA, s.Tr.Selector);
        Assert.Equal(TypeTss32, DescriptorType(m, SelB));
    }
}
