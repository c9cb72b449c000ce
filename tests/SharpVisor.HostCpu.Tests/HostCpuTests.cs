using Xunit;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using static SharpVisor.HostCpu.NativeSnippet;

namespace SharpVisor.HostCpu.Tests;

/// <summary>The native harness against results fixed by the SDM.</summary>
public sealed class HostCpuTests : HostCpuTestBase
{
    private NativeResult RunCompleted(NativeCase c)
    {
        var r = Cpu.Run(c);
        Assert.True(r.Outcome == NativeOutcome.Completed, r.ToString());
        return r;
    }

    [Fact]
    public void Add32_overflow_sets_documented_flags_and_zero_extends()
    {
        var c = Case(Assemble(a => a.add(eax, ebx)));
        c.Input.Rax = 0xFFFF_FFFF_7FFF_FFFF;
        c.Input.Rbx = 1;
        var r = RunCompleted(c);
        Assert.Equal(0x8000_0000UL, r.Output.Rax); // 32-bit writes clear bits 63:32
        ulong f = r.Output.Rflags & RflagsBits.Status;
        // 7FFFFFFF + 1: signed overflow, negative, carry out of bit 3, low byte 00 has even parity.
        Assert.Equal(RflagsBits.OF | RflagsBits.SF | RflagsBits.AF | RflagsBits.PF, f);
    }

    [Fact]
    public void Sub8_borrow_preserves_upper_bits()
    {
        var c = Case(Assemble(a => a.sub(al, 1)));
        c.Input.Rax = 0x1234_5678_9ABC_DE00;
        var r = RunCompleted(c);
        Assert.Equal(0x1234_5678_9ABC_DEFFUL, r.Output.Rax);
        Assert.Equal(RflagsBits.CF | RflagsBits.SF | RflagsBits.AF | RflagsBits.PF, r.Output.Rflags & RflagsBits.Status);
    }

    [Fact]
    public void Empty_snippet_passes_every_gpr_and_settable_flag_through()
    {
        var c = Case([]);
        for (int i = 0; i < 16; i++)
            if (i != 4) c.Input.Gpr[i] = 0x0101_0101_0101_0101UL * (ulong)(i + 1) ^ 0x8000_0000_0000_0000;
        c.Input.Rflags = RflagsBits.Reserved1 | RflagsBits.Settable;
        var r = RunCompleted(c);
        for (int i = 0; i < 16; i++) Assert.Equal(c.Input.Gpr[i], r.Output.Gpr[i]);
        Assert.Equal(RflagsBits.Settable, r.Output.Rflags & RflagsBits.Settable);

        c.Input.Rflags = RflagsBits.Reserved1;
        r = RunCompleted(c);
        Assert.Equal(0UL, r.Output.Rflags & RflagsBits.Settable);
        Assert.Equal(0UL, r.Output.Rflags & RflagsBits.TF); // never set by the harness
    }

    [Fact]
    public void Pushfq_sees_the_input_flags_on_the_guest_stack()
    {
        var c = Case(Assemble(a => { a.pushfq(); a.pop(rax); }));
        c.Input.Rflags = RflagsBits.Reserved1 | RflagsBits.CF | RflagsBits.ZF | RflagsBits.DF;
        var r = RunCompleted(c);
        Assert.Equal(RflagsBits.CF | RflagsBits.ZF | RflagsBits.DF, r.Output.Rax & RflagsBits.Settable);
        Assert.Equal(NativeLayout.DefaultRsp, r.Output.Rsp);
        ulong pushed = BitConverter.ToUInt64(r.Window, (int)NativeLayout.DefaultRsp - 8);
        Assert.Equal(r.Output.Rax, pushed);
    }

    [Fact]
    public void Push_pop_moves_through_the_stack_area()
    {
        var c = Case(Assemble(a => { a.push(rbx); a.push(rdx); a.pop(rcx); }));
        c.Input.Rbx = 0x1122_3344_5566_7788;
        c.Input.Rdx = 0xCAFE_F00D_DEAD_BEEF;
        var r = RunCompleted(c);
        Assert.Equal(0xCAFE_F00D_DEAD_BEEFUL, r.Output.Rcx);
        Assert.Equal(NativeLayout.DefaultRsp - 8, r.Output.Rsp);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(r.Window, (int)NativeLayout.DefaultRsp - 8));
    }

    [Fact]
    public void Xchg_through_memory_swaps_register_and_window()
    {
        var window = new byte[NativeLayout.WindowSize];
        BitConverter.TryWriteBytes(window.AsSpan(0x110), 0x0BAD_C0DE_0000_0001UL);
        var c = Case(Assemble(a => a.xchg(__qword_ptr[r8 + 0x10], rax)), relocated: 1 << 8, window: window);
        c.Input.Gpr[8] = 0x100;
        c.Input.Rax = 0x7777_6666_5555_4444;
        var r = RunCompleted(c);
        Assert.Equal(0x0BAD_C0DE_0000_0001UL, r.Output.Rax);
        Assert.Equal(0x7777_6666_5555_4444UL, BitConverter.ToUInt64(r.Window, 0x110));
        Assert.Equal(0x100UL, r.Output.Gpr[8]); // relocated back to a window offset
        Assert.Equal(window.AsSpan(0, 0x110).ToArray(), r.Window.AsSpan(0, 0x110).ToArray());
    }

    [Fact]
    public void Xmm_registers_and_mxcsr_round_trip()
    {
        var c = Case([]);
        for (int i = 0; i < 16; i++) c.Input.SetXmm(i, new UInt128(0xA5A5_0000_0000_0000UL + (ulong)i, 0x0123_4567_89AB_CDEFUL * (ulong)(i + 1)));
        c.Input.Mxcsr = 0x1F80 | 0x6000 | 0x8000; // round toward zero, flush to zero
        var r = RunCompleted(c);
        for (int i = 0; i < 16; i++) Assert.Equal(c.Input.GetXmm(i), r.Output.GetXmm(i));
        Assert.Equal(c.Input.Mxcsr, r.Output.Mxcsr);
    }

    [Fact]
    public void Sse_arithmetic_uses_input_xmm_and_rounding_mode()
    {
        var add = Case(Assemble(a => a.paddd(xmm1, xmm2)));
        add.Input.SetXmm(1, new UInt128(0x0000_0001_FFFF_FFFF, 0x7FFF_FFFF_0000_0010));
        add.Input.SetXmm(2, new UInt128(0x0000_0001_0000_0001, 0x0000_0001_0000_0001));
        var r = RunCompleted(add);
        Assert.Equal(new UInt128(0x0000_0002_0000_0000, 0x8000_0000_0000_0011), r.Output.GetXmm(1));

        var cvt = Case(Assemble(a => a.cvtsd2si(eax, xmm0)));
        cvt.Input.SetXmm(0, BitConverter.DoubleToUInt64Bits(2.7));
        Assert.Equal(3UL, RunCompleted(cvt).Output.Rax); // default: round to nearest
        cvt.Input.Mxcsr = NativeState.DefaultMxcsr | 0x6000; // RC = toward zero
        Assert.Equal(2UL, RunCompleted(cvt).Output.Rax);
    }

    private static readonly UInt128 X87One = (UInt128)0x3FFF << 64 | 0x8000_0000_0000_0000;
    private static readonly UInt128 X87Two = (UInt128)0x4000 << 64 | 0x8000_0000_0000_0000;
    private static readonly UInt128 X87Three = (UInt128)0x4000 << 64 | 0xC000_0000_0000_0000;

    [Fact]
    public void X87_state_round_trips_through_fxsave()
    {
        var c = Case([]);
        c.Input.SetX87Stack([X87One, X87Two]);
        c.Input.Fcw = 0x027F; // 53-bit precision, all masked
        var r = RunCompleted(c);
        Assert.Equal(X87One, r.Output.GetSt(0));
        Assert.Equal(X87Two, r.Output.GetSt(1));
        Assert.Equal(c.Input.Ftw, r.Output.Ftw);
        Assert.Equal(6, (r.Output.Fsw >> 11) & 7); // TOP
        Assert.Equal((ushort)0x027F, r.Output.Fcw);
    }

    [Fact]
    public void X87_arithmetic_runs_on_the_input_stack()
    {
        var c = Case(Assemble(a => a.fadd(st0, st1)));
        c.Input.SetX87Stack([X87One, X87Two]);
        var r = RunCompleted(c);
        Assert.Equal(X87Three, r.Output.GetSt(0));

        var push = Case(Assemble(a => { a.fld1(); a.fld1(); a.faddp(st1, st0); }));
        r = RunCompleted(push);
        Assert.Equal(X87Two, r.Output.GetSt(0));
        Assert.Equal(7, (r.Output.Fsw >> 11) & 7);
        Assert.Equal(1 << 7, r.Output.Ftw); // only physical register 7 is valid
    }

    [Fact]
    public void Division_faults_are_predicted_not_executed()
    {
        var byZero = Case(Assemble(a => a.div(rcx)));
        byZero.Input.Rcx = 0;
        var r = Cpu.Run(byZero);
        Assert.Equal(NativeOutcome.Fault, r.Outcome);
        Assert.Equal(X86Exception.DE, r.Exception);

        var overflow = Case(Assemble(a => a.idiv(ecx)));
        overflow.Input.Rax = 0x8000_0000;
        overflow.Input.Rdx = 0xFFFF_FFFF; // EDX:EAX = -2^31
        overflow.Input.Rcx = 0xFFFF_FFFF; // -1
        Assert.Equal(X86Exception.DE, Cpu.Run(overflow).Exception);

        var tooBig = Case(Assemble(a => a.div(cl)));
        tooBig.Input.Rax = 0x1000;
        tooBig.Input.Rcx = 0x10; // quotient 0x100 does not fit AL
        Assert.Equal(X86Exception.DE, Cpu.Run(tooBig).Exception);

        var fromMemory = Case(Assemble(a => a.div(__dword_ptr[r9])), relocated: 1 << 9);
        fromMemory.Input.Gpr[9] = 0x40; // window holds zeros: divisor 0
        var fm = Cpu.Run(fromMemory);
        Assert.True(fm.Exception == X86Exception.DE, fm.ToString());
    }

    [Fact]
    public void Idiv_quotient_of_signed_minimum_is_not_a_fault()
    {
        // SDM IDIV: #DE only when the quotient is outside [-2^(n-1), 2^(n-1)-1]; -128 fits.
        var c = Case(Assemble(a => a.idiv(cl)));
        c.Input.Rax = 0xFF00; // -256
        c.Input.Rcx = 2;
        var r = RunCompleted(c);
        Assert.Equal(0x0080UL, r.Output.Rax & 0xFFFF); // AH = 0 remainder, AL = -128
    }

    [Fact]
    public void Unsafe_snippets_are_refused()
    {
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.mov(rax, __qword_ptr[r8 + 0x3000])), relocated: 1 << 8)).Outcome);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.mov(rax, __qword_ptr[r8])))).Outcome); // r8 not relocated
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.hlt()))).Outcome);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.rdtsc()))).Outcome);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.popfq()))).Outcome);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case(Assemble(a => a.mov(fs, ax)))).Outcome);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case([0x64, 0x48, 0x8B, 0x04, 0x25, 0, 0, 0, 0])).Outcome); // mov rax, fs:[0]
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case([0xEB, 0x00])).Outcome); // jmp $+2
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(Case([0x48])).Outcome); // a lone REX prefix does not decode
        // The address depends on r8 after the first instruction changed it.
        var dependent = Case(Assemble(a => { a.mov(r8, rax); a.mov(rbx, __qword_ptr[r8]); }), relocated: 1 << 8);
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(dependent).Outcome);
    }

    [Fact]
    public void Architectural_ud_and_gp_are_predicted()
    {
        var lockReg = Case([0xF0, 0x01, 0xD8]); // lock add eax, ebx
        Assert.Equal(X86Exception.UD, Cpu.Run(lockReg).Exception);
        Assert.Equal(X86Exception.UD, Cpu.Run(Case([0x0F, 0x0B])).Exception); // ud2

        var unaligned = Case(Assemble(a => a.cmpxchg16b(__xmmword_ptr[r10 + 8])), relocated: 1 << 10);
        unaligned.Input.Gpr[10] = 0x100;
        Assert.Equal(X86Exception.GP, Cpu.Run(unaligned).Exception);
        var aligned = Case(Assemble(a => a.cmpxchg16b(__xmmword_ptr[r10 + 0x10])), relocated: 1 << 10);
        aligned.Input.Gpr[10] = 0x100;
        Assert.Equal(NativeOutcome.Completed, Cpu.Run(aligned).Outcome);

        var movdqa = Case(Assemble(a => a.movdqa(xmm0, __xmmword_ptr[r10 + 4])), relocated: 1 << 10);
        Assert.Equal(X86Exception.GP, Cpu.Run(movdqa).Exception);
        var movdqu = Case(Assemble(a => a.movdqu(xmm0, __xmmword_ptr[r10 + 4])), relocated: 1 << 10);
        Assert.Equal(NativeOutcome.Completed, Cpu.Run(movdqu).Outcome);
    }

    [Fact]
    public void Bt_register_offset_outside_the_window_is_refused()
    {
        var c = Case(Assemble(a => a.bts(__dword_ptr[r11], eax)), relocated: 1 << 11);
        c.Input.Gpr[11] = 0x100;
        c.Input.Rax = 0x7FFF_FFFF; // 256 MiB past the operand
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(c).Outcome);
        c.Input.Rax = 0xFFFF_FFFF; // -1: bit 31 of the dword at EA-4 (SDM BT, Table 3-2)
        var r = RunCompleted(c);
        Assert.Equal(0x80, r.Window[0x100 - 1]);
    }

    [Fact]
    public void Rep_stosb_writes_the_counted_range()
    {
        var c = Case(Assemble(a => a.rep.stosb()), relocated: 1 << 7);
        c.Input.Rdi = 0x200;
        c.Input.Rcx = 0x20;
        c.Input.Rax = 0xAB;
        var r = RunCompleted(c);
        Assert.All(r.Window.AsSpan(0x200, 0x20).ToArray(), b => Assert.Equal(0xAB, b));
        Assert.Equal(0, r.Window[0x220]);
        Assert.Equal(0x220UL, r.Output.Rdi);
        c.Input.Rcx = 0x2000; // runs past the window end
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(c).Outcome);
    }

    [Fact]
    public void Unmasked_floating_point_exceptions_are_refused()
    {
        var c = Case(Assemble(a => a.divsd(xmm0, xmm1)));
        c.Input.Mxcsr = 0x1F80 & ~0x0200u; // unmask #Z
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(c).Outcome);
        c.Input.Mxcsr = 0xFFFF_0000 | NativeState.DefaultMxcsr; // reserved bits
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(c).Outcome);
        var x87 = Case(Assemble(a => a.fld1()));
        x87.Input.Fcw = 0x037B; // #Z unmasked
        Assert.Equal(NativeOutcome.Refused, Cpu.Run(x87).Outcome);
    }

    [Fact]
    public void Snippet_runs_at_the_reported_code_address()
    {
        var c = Case([0x48, 0x8D, 0x05, 0, 0, 0, 0]);
        // LEA RAX, [RIP+0] is 7 bytes: RIP of the next instruction.
        Assert.Equal(Cpu.CodeAddress + 7, RunCompleted(c).Output.Rax);
    }
}

