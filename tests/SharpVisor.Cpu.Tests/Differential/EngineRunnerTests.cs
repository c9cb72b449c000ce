// The engine runner itself, on hand-built cases whose results the SDM fixes, so that a broken runner
// cannot make the differential run pass vacuously.
using Iced.Intel;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using SharpVisor.HostCpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static SharpVisor.HostCpu.NativeSnippet;

namespace SharpVisor.Cpu.Tests.Differential;

public sealed class EngineRunnerTests : IDisposable
{
    private readonly EngineRunner _runner = new();

    public void Dispose() => _runner.Dispose();

    private EngineResult RunCompleted(NativeCase c)
    {
        var r = _runner.Run(c);
        Assert.True(r.Outcome == EngineOutcome.Completed, $"{r.Outcome}: {r.Message} {r.Exception}");
        return r;
    }

    [Fact]
    public void Add32_gives_the_sdm_result_and_flags()
    {
        var c = Case(Assemble(a => a.add(eax, ebx)));
        c.Input.Rax = 0xFFFF_FFFF_7FFF_FFFF;
        c.Input.Rbx = 1;
        var r = RunCompleted(c);
        Assert.Equal(0x8000_0000UL, r.State.Rax); // 32-bit destination zero-extends
        Assert.Equal(RflagsBits.OF | RflagsBits.SF | RflagsBits.AF | RflagsBits.PF, r.State.Rflags & RflagsBits.Status);
        Assert.Equal(NativeLayout.DefaultRsp, r.State.Rsp); // RSP comes back window-relative
    }

    [Fact]
    public void Memory_operands_and_the_stack_land_in_the_window()
    {
        // RBP holds a window offset (relocated); PUSH writes below DefaultRsp in the stack area.
        var c = Case(Assemble(a => { a.mov(__qword_ptr[rbp + 0x10], rax); a.push(rbx); }), relocated: 1 << 5);
        c.Input.Rbp = 0x100;
        c.Input.Rax = 0x1122_3344_5566_7788;
        c.Input.Rbx = 0xCAFE;
        var r = RunCompleted(c);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(_runner.Window.Slice(0x110, 8)));
        Assert.Equal(0xCAFEUL, BitConverter.ToUInt64(_runner.Window.Slice((int)NativeLayout.DefaultRsp - 8, 8)));
        Assert.Equal(0x100UL, r.State.Rbp);
        Assert.Equal(NativeLayout.DefaultRsp - 8, r.State.Rsp);
    }

    [Fact]
    public void Exceptions_come_back_as_their_vector_with_the_faulting_rip()
    {
        var div = Case(Assemble(a => a.div(ecx))); // ECX = 0
        var r = _runner.Run(div);
        Assert.Equal(EngineOutcome.Fault, r.Outcome);
        Assert.Equal(X86Exception.DE, r.Exception);
        Assert.Equal(EngineRunner.CodeGpa, r.FaultRip); // #DE is a fault: RIP of the DIV itself

        var ud = _runner.Run(Case([0x0F, 0x0B])); // UD2
        Assert.Equal(EngineOutcome.Fault, ud.Outcome);
        Assert.Equal(X86Exception.UD, ud.Exception);
    }

    [Fact]
    public void Each_snippet_is_decoded_afresh_at_the_same_address()
    {
        // Same length and address, different immediates: a reused decoded block would give 1 again.
        var one = Case(Assemble(a => a.mov(eax, 1)));
        var two = Case(Assemble(a => a.mov(eax, 2)));
        Assert.Equal(1UL, RunCompleted(one).State.Rax);
        Assert.Equal(2UL, RunCompleted(two).State.Rax);
        // Also after a case that ended in an exception instead of the snippet's tail.
        Assert.Equal(EngineOutcome.Fault, _runner.Run(Case(Assemble(a => a.div(ecx)))).Outcome);
        var three = Case(Assemble(a => a.div(ebx)));
        three.Input.Rbx = 3; three.Input.Rax = 9;
        Assert.Equal(3UL, RunCompleted(three).State.Rax);
    }
}
