using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Virtual-8086 mode without the VME extensions, against the Intel SDM Vol. 3A chapter 20
/// (§20.2: 8086-style segments, CPL 3; §20.2.7 sensitive instructions; §20.3 interrupts from
/// virtual-8086 mode) and the Vol. 2 IRET and INT n pseudo-code. The guest guests/test/vm86.asm
/// covers the rest end to end (I/O bitmap, page faults, the monitor, the task switch).
/// </summary>
public class Vm86Tests
{
    private const ulong Gdt = 0x1000, Idt = 0x2000, Tss = 0x3000, Out = 0x5000, Ring0Code = 0x8000, V86Code = 0x9000, Handlers = 0xB000;
    private const ushort KCode = 0x08, KData = 0x10, SelTss = 0x18, UCode = 0x20;
    private const ushort V86Cs = 0x0900, V86Ss = 0x0600;
    private const uint V86Sp = 0x1000, Esp0 = 0x7800;
    private const ulong VM = 1 << 17, IOPL3 = 3 << 12, IF = 1 << 9;

    /// <summary>
    /// GDT (flat ring-0 code/data, a 32-bit TSS with SS0:ESP0 = 0x10:0x7800, ring-3 code), IDT
    /// vectors 0-0x2F as DPL-3 interrupt gates to stubs that store their vector at Out and halt.
    /// The v86 code starts at 0900:0000, its stack is 0600:1000.
    /// </summary>
    private static TestMachine NewMachine()
    {
        var m = new TestMachine();
        m.Memory.Write(Gdt + KCode, 0x00CF9B000000FFFFUL);
        m.Memory.Write(Gdt + KData, 0x00CF93000000FFFFUL);
        m.Memory.Write(Gdt + SelTss, 0x67 | (Tss << 16) | 0x89UL << 40);
        m.Memory.Write(Gdt + UCode, 0x00CFFB000000FFFFUL);
        m.Memory.Write(Tss + 4, Esp0);
        m.Memory.Write(Tss + 8, (uint)KData);
        m.Memory.Write(Tss + 102, (ushort)0x68); // no I/O bitmap
        for (int v = 0; v < 0x30; v++)
        {
            ulong h = Handlers + (ulong)v * 16;
            SetGate(m, v, KCode, h, dpl: 3);
            // MOV dword [SS:Out], v; HLT. SS: from virtual-8086 mode DS..GS arrive null.
            m.Memory.Write(h, new byte[] { 0x36, 0xC7, 0x05, (byte)(Out & 0xFF), (byte)(Out >> 8), 0, 0, (byte)v, 0, 0, 0, 0xF4 });
        }
        m.Memory.Write(Out, 0xFFFF_FFFFu);
        return m;
    }

    private static void SetGate(TestMachine m, int vector, ushort selector, ulong offset, int dpl) =>
        m.Memory.Write(Idt + (ulong)vector * 8,
            (offset & 0xFFFF) | (ulong)selector << 16 | (ulong)(14 | dpl << 5 | 0x80) << 40 | ((offset >> 16) & 0xFFFF) << 48);

    private static VcpuState ProtectedState(ulong rip)
    {
        var s = VcpuState.Protected32(rip);
        s.Cs = SegmentRegister.Flat(KCode, code: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(KData, code: false);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x27 };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 0x30 * 8 - 1 };
        s.Tr = SegmentRegister.System(SelTss, Tss, 0x67, 11);
        s.Rsp = 0x7F00;
        return s;
    }

    /// <summary>Puts the vCPU straight into virtual-8086 mode at 0900:0000 with 16-bit <paramref name="code"/>.</summary>
    private static void StartInV86(TestMachine m, Action<Assembler> code, ulong flags)
    {
        m.Memory.Write(V86Code, TestMachine.Assemble(16, 0, code));
        var s = ProtectedState(0);
        // Only the selectors are meaningful: the caches are those of the flat protected-mode state.
        s.Cs.Selector = V86Cs; s.Ss.Selector = V86Ss;
        s.Ds.Selector = 0x0111; s.Es.Selector = 0x0222; s.Fs.Selector = 0x0333; s.Gs.Selector = 0x0444;
        s.Rsp = V86Sp;
        s.Rflags = VM | flags | 2;
        m.Cpu.SetState(s);
    }

    private static uint Frame(TestMachine m, int slot, bool errorCode = false) =>
        m.Memory.Read<uint>(m.State().Rsp + (ulong)(slot + (errorCode ? 1 : 0)) * 4);

    [Fact]
    public void StateInV86HasEightySixSegmentsAndCpl3()
    {
        using var m = NewMachine();
        StartInV86(m, a => a.hlt(), IOPL3);
        var s = m.State();
        foreach (var seg in new[] { s.Cs, s.Ss, s.Ds, s.Es, s.Fs, s.Gs })
        {
            Assert.Equal((ulong)seg.Selector << 4, seg.Base);
            Assert.Equal(0xFFFFu, seg.Limit);
            Assert.Equal(0xF3u, seg.Attributes); // present, DPL 3, read/write data, accessed
        }
        Assert.Equal(3, s.Ss.Dpl);
        Assert.NotEqual(0UL, s.Rflags & VM);
    }

    [Fact]
    public void InterruptFromV86PushesTheSegmentsAndNullsThem()
    {
        using var m = NewMachine();
        StartInV86(m, a =>
        {
            a.mov(ax, 0x1234);   // B8 34 12: decoded with 16-bit operands
            a.add(ax, ax);
            a.@int(0x20);
        }, IOPL3 | IF);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(0x20u, m.Memory.Read<uint>(Out));
        Assert.Equal(0x2468UL, s.Rax & 0xFFFF);
        Assert.Equal(KCode, s.Cs.Selector);
        Assert.Equal(KData, s.Ss.Selector);
        Assert.Equal((ulong)Esp0 - 36, s.Rsp);
        foreach (var seg in new[] { s.Ds, s.Es, s.Fs, s.Gs })
        {
            Assert.Equal(0, seg.Selector);
            Assert.True(seg.Unusable);
        }
        Assert.Equal(0UL, s.Rflags & (VM | IF)); // interrupt gate
        Assert.Equal(7u, Frame(m, 0));           // EIP after INT 0x20 (3 + 2 + 2 bytes)
        Assert.Equal(V86Cs, (ushort)Frame(m, 1));
        Assert.Equal(VM | IOPL3 | IF, Frame(m, 2) & (VM | IOPL3 | IF));
        Assert.Equal(V86Sp, Frame(m, 3));
        Assert.Equal(V86Ss, (ushort)Frame(m, 4));
        Assert.Equal(0x0222, (ushort)Frame(m, 5)); // ES
        Assert.Equal(0x0111, (ushort)Frame(m, 6)); // DS
        Assert.Equal(0x0333, (ushort)Frame(m, 7)); // FS
        Assert.Equal(0x0444, (ushort)Frame(m, 8)); // GS
    }

    /// <summary>
    /// With a 16-bit ring-0 stack segment the frame goes to SS:SP, and ESP's upper half is the
    /// TSS's ESP0 (loaded whole), not the interrupted program's.
    /// </summary>
    [Fact]
    public void InterruptOntoASixteenBitRingZeroStackKeepsTheUpperHalfOfEsp0()
    {
        using var m = NewMachine();
        const ushort Data16 = 0x28;
        m.Memory.Write(Gdt + Data16, 0x0000_9300_0000_FFFFUL); // base 0, limit 0xFFFF, 16-bit data
        m.Memory.Write(Tss + 4, 0x1234_0000u | Esp0);
        m.Memory.Write(Tss + 8, (uint)Data16);
        StartInV86(m, a => a.@int(0x20), IOPL3);
        var s = m.State();
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x2F };
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0x20u, m.Memory.Read<uint>(Out));
        Assert.Equal(Data16, m.State().Ss.Selector);
        Assert.Equal(0x1234_0000UL | (Esp0 - 36), m.State().Rsp);
        Assert.Equal(2u, m.Memory.Read<uint>(Esp0 - 36));  // EIP after INT 0x20, in the frame at SS:SP
    }

    [Fact]
    public void InterruptFromV86ToANonRingZeroHandlerIsGpWithItsSelector()
    {
        using var m = NewMachine();
        SetGate(m, 0x21, UCode, 0, dpl: 3);
        StartInV86(m, a => a.@int(0x21), IOPL3);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(13u, m.Memory.Read<uint>(Out));
        Assert.Equal((uint)UCode, Frame(m, 0));      // error code: the handler's CS selector
        Assert.Equal(0u, Frame(m, 0, errorCode: true)); // EIP of the INT
    }

    [Fact]
    public void IretAtCpl0WithVmEntersV86AndLoadsEveryRegisterFromTheStack()
    {
        using var m = NewMachine();
        m.Memory.Write(V86Code + 0x10, TestMachine.Assemble(16, 0x10, a => a.hlt()));
        m.Memory.Write(Ring0Code, TestMachine.Assemble(32, Ring0Code, a =>
        {
            a.push(0x0444);          // GS
            a.push(0x0333);          // FS
            a.push(0x0111);          // DS
            a.push(0x0222);          // ES
            a.push(V86Ss);
            a.push(0x0001_0FFE);     // ESP: all 32 bits are loaded
            a.push((int)(VM | 2));   // IOPL 0
            a.push(V86Cs);
            a.push(0x10);
            a.iretd();
        }));
        m.Cpu.SetState(ProtectedState(Ring0Code));
        Assert.Equal(ExitReason.Halt, m.Run());
        // HLT at CPL 3 is #GP(0); its frame shows the v86 state IRET established.
        Assert.Equal(13u, m.Memory.Read<uint>(Out));
        Assert.Equal(0u, Frame(m, 0));                       // error code
        Assert.Equal(0x10u, Frame(m, 0, errorCode: true));    // EIP of the HLT
        Assert.Equal(V86Cs, (ushort)Frame(m, 1, errorCode: true));
        Assert.Equal(VM | 2, Frame(m, 2, errorCode: true) & 0xFFFF_FFFF & ~0x10000UL);
        Assert.Equal(0x0001_0FFEu, Frame(m, 3, errorCode: true));
        Assert.Equal(V86Ss, (ushort)Frame(m, 4, errorCode: true));
        Assert.Equal(0x0222, (ushort)Frame(m, 5, errorCode: true));
        Assert.Equal(0x0444, (ushort)Frame(m, 8, errorCode: true));
    }

    [Fact]
    public void IretInsideV86CannotChangeVmOrIopl()
    {
        using var m = NewMachine();
        StartInV86(m, a => a.db([
            0x66, 0x6A, 0x00,                   // PUSH dword 0: the EFLAGS image (VM = 0, IOPL = 0)
            0x66, 0x68, 0x00, 0x09, 0x00, 0x00, // PUSH dword 0x0900: CS
            0x66, 0x68, 0x11, 0x00, 0x00, 0x00, // PUSH dword 0x11: EIP of the INT below
            0x66, 0xCF,                         // IRETD (at 0x0F)
            0xCD, 0x20]),                       // INT 0x20 (at 0x11)
            IOPL3);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0x20u, m.Memory.Read<uint>(Out));
        Assert.Equal(0x13u, Frame(m, 0));
        Assert.Equal(VM | IOPL3, Frame(m, 2) & (VM | IOPL3));
    }

    /// <summary>IOPL-sensitive instructions at IOPL 0 (SDM §20.2.7): #GP(0) at the instruction, without VME.</summary>
    [Theory]
    [InlineData(new byte[] { 0xFA })]             // CLI
    [InlineData(new byte[] { 0xFB })]             // STI
    [InlineData(new byte[] { 0x9C })]             // PUSHF
    [InlineData(new byte[] { 0x9D })]             // POPF
    [InlineData(new byte[] { 0xCD, 0x20 })]       // INT 0x20 (its gate has DPL 3)
    [InlineData(new byte[] { 0xCF })]             // IRET
    [InlineData(new byte[] { 0xF4 })]             // HLT: privileged
    [InlineData(new byte[] { 0x0F, 0x20, 0xC0 })] // MOV EAX, CR0: privileged
    [InlineData(new byte[] { 0x0F, 0x06 })]       // CLTS: privileged
    [InlineData(new byte[] { 0x0F, 0x32 })]       // RDMSR: privileged
    [InlineData(new byte[] { 0x66, 0xEA, 0, 0, 1, 0, 0, 0 })] // JMP FAR 0000:00010000: beyond the 64-KiB CS limit
    public void SensitiveAndPrivilegedInstructionsAreGp0(byte[] code)
    {
        using var m = NewMachine();
        StartInV86(m, a => a.db(code), 0);
        var r = m.Run();
        Assert.True(r == ExitReason.Halt, m.Cpu.Exit.Message);
        Assert.Equal(13u, m.Memory.Read<uint>(Out));
        Assert.Equal(0u, Frame(m, 0));
        Assert.Equal(0u, Frame(m, 0, errorCode: true));
    }

    /// <summary>INT1, INT3 and INTO are not IOPL-sensitive: through the IDT (DPL-3 gates here) at IOPL 0.</summary>
    [Theory]
    [InlineData(new byte[] { 0xF1 }, 1u)]                          // INT1 (ICEBP): no DPL check either
    [InlineData(new byte[] { 0xCC }, 3u)]                          // INT3
    [InlineData(new byte[] { 0xB0, 0x7F, 0x04, 0x01, 0xCE }, 4u)]  // MOV AL, 0x7F; ADD AL, 1; INTO
    public void Int3AndIntoGoThroughTheIdtAtIopl0(byte[] code, uint vector)
    {
        using var m = NewMachine();
        StartInV86(m, a => a.db(code), 0);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(vector, m.Memory.Read<uint>(Out));
        Assert.Equal((uint)code.Length, Frame(m, 0)); // a trap: EIP after the instruction
    }

    /// <summary>Protected-mode-only instructions are #UD in virtual-8086 mode (SDM Vol. 2, their exception tables).</summary>
    [Theory]
    [InlineData(new byte[] { 0x0F, 0x02, 0xC3 })] // LAR AX, BX
    [InlineData(new byte[] { 0x0F, 0x03, 0xC3 })] // LSL AX, BX
    [InlineData(new byte[] { 0x0F, 0x00, 0xE0 })] // VERR AX
    [InlineData(new byte[] { 0x0F, 0x00, 0xE8 })] // VERW AX
    [InlineData(new byte[] { 0x63, 0xC3 })]       // ARPL BX, AX
    [InlineData(new byte[] { 0x0F, 0x00, 0xC0 })] // SLDT AX
    [InlineData(new byte[] { 0x0F, 0x00, 0xC8 })] // STR AX
    [InlineData(new byte[] { 0x0F, 0x00, 0xD0 })] // LLDT AX
    [InlineData(new byte[] { 0x0F, 0x00, 0xD8 })] // LTR AX
    public void ProtectedModeOnlyInstructionsAreUd(byte[] code)
    {
        using var m = NewMachine();
        StartInV86(m, a => a.db(code), IOPL3);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(6u, m.Memory.Read<uint>(Out));
        Assert.Equal(0u, Frame(m, 0));
    }
}
