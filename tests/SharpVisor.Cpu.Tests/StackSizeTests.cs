using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Near RET imm16 and ENTER in 32-bit code use 4-byte stack slots (SDM Vol. 2, RET and ENTER):
/// the imm16 only adds to what is released or reserved.
/// </summary>
public class StackSizeTests
{
    [Fact]
    public void RetImm16In32BitCodePopsFourBytesAndReleasesTheArguments()
    {
        using var m = new TestMachine();
        var code = TestMachine.Assemble(32, 0x100000, a =>
        {
            var f = a.CreateLabel();
            a.push(0x11111111);
            a.call(f);
            a.mov(ebx, esp);   // back here with the argument released
            a.hlt();
            a.Label(ref f);
            a.mov(ecx, __dword_ptr[esp + 4]);
            a.ret(4);
        });
        m.Memory.Write(0x100000, code);
        var s = VcpuState.Protected32(0x100000);
        s.Rsp = 0x80000;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var r = m.State();
        Assert.Equal(0x80000UL, r.Rbx);
        Assert.Equal(0x11111111UL, r.Rcx);
    }

    [Fact]
    public void EnterIn32BitCodePushesAFourByteFramePointer()
    {
        using var m = new TestMachine();
        var code = TestMachine.Assemble(32, 0x100000, a =>
        {
            a.mov(ebp, 0x12345678);
            a.enter(8, 0);
            a.mov(ebx, esp);
            a.mov(ecx, ebp);
            a.mov(edx, __dword_ptr[ebp]);
            a.leave();
            a.hlt();
        });
        m.Memory.Write(0x100000, code);
        var s = VcpuState.Protected32(0x100000);
        s.Rsp = 0x80000;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var r = m.State();
        Assert.Equal(0x80000UL - 4, r.Rcx);        // EBP = the slot holding the old EBP
        Assert.Equal(0x80000UL - 4 - 8, r.Rbx);    // ESP below the 8-byte frame
        Assert.Equal(0x12345678UL, r.Rdx);
        Assert.Equal(0x80000UL, r.Rsp);            // LEAVE restored it
        Assert.Equal(0x12345678UL, r.Rbp);
    }
}
