using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Far RET pops one operand-size slot each for EIP, CS (and ESP, SS when returning outward),
/// releasing the immediate's bytes of parameters on both stacks, SDM Vol. 2 RET. (A wrong slot size read ESP as the CS selector: the #GP(0x884C) the rings
/// guest once reported.)
/// </summary>
public class FarReturnTests
{
    private const ulong Gdt = 0x1000, Code = 0x8000, User = 0x9000;
    private const uint Stack = 0x7000, UserStack = 0x6000;

    [Theory]
    [InlineData(32, 0)]
    [InlineData(32, 2)]
    [InlineData(16, 0)]
    [InlineData(16, 2)]
    public void FarRetToRing3PopsOneSlotPerValue(int bits, int parameters)
    {
        using var m = new TestMachine();
        m.Memory.Write(Gdt + 0x08, bits == 32 ? 0x00CF9B000000FFFFUL : 0x00009B000000FFFFUL); // ring-0 code
        m.Memory.Write(Gdt + 0x10, 0x00CF93000000FFFFUL);                                    // ring-0 data
        m.Memory.Write(Gdt + 0x18, bits == 32 ? 0x00CFFB000000FFFFUL : 0x0000FB000000FFFFUL); // ring-3 code
        m.Memory.Write(Gdt + 0x20, 0x00CFF3000000FFFFUL);                                    // ring-3 data
        m.Memory.Write(Code, TestMachine.Assemble(bits, Code, a =>
        {
            if (bits == 32)
            {
                // Outer SS:ESP, the parameters (released by the immediate), CS:EIP.
                a.push(0x23); a.push(UserStack);
                for (int k = 0; k < parameters; k++) a.push(0x6666);
                a.push(0x1B); a.push((uint)User);
                if (parameters == 0) a.retf(); else a.retf((ushort)(parameters * 4));
            }
            else
            {
                a.push((ushort)0x23); a.push((ushort)UserStack);
                for (int k = 0; k < parameters; k++) a.push((ushort)0x6666);
                a.push((ushort)0x1B); a.push((ushort)User);
                if (parameters == 0) a.retf(); else a.retf((ushort)(parameters * 2));
            }
        }));
        m.Memory.Write(User, new byte[] { 0xF4 }); // HLT at CPL 3 → #GP; the IDT is empty → triple fault
        var s = VcpuState.Protected32(Code);
        s.Cs = SegmentRegister.Flat(0x08, code: true);
        if (bits == 16) s.Cs.Attributes &= ~(SegmentRegister.AttrDb | SegmentRegister.AttrG);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(0x10, code: false);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x27 };
        s.Rsp = Stack;
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        var st = m.State();
        Assert.Equal(0x1BUL, st.Cs.Selector);
        Assert.Equal(0x23UL, st.Ss.Selector);
        Assert.Equal(User, st.Rip);
        Assert.Equal((ulong)UserStack + (ulong)(parameters * bits / 8), st.Rsp);
    }
}
