// What the native differential harness cannot run: unmasked SIMD floating-point exceptions (an #XM on
// the host would be SIGFPE), the #XM/#UD choice by CR4.OSXMMEXCPT, and alignment faults seen from the
// guest. Expected values follow SDM Vol. 1 §11.5.2 and were confirmed on an Intel host with a small C
// program that unmasked the exception, caught SIGFPE and read MXCSR from the signal frame.
using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

public class SseFloatUnitTests
{
    private const ulong Code = 0x100000, Data = 0x200000;
    private const uint MaskAll = 0x1F80, OeMask = 0x08 << 7, UeMask = 0x10 << 7, DeMask = 0x02 << 7;

    private static TestMachine Long(Action<Assembler> body, uint mxcsr, (float, float, float, float) x0, (float, float, float, float) x1,
        bool osxmmexcpt = true)
    {
        var m = new TestMachine(true);
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, body));
        var s = m.EnterLong64(Code);
        BinaryPrimitives.WriteUInt32LittleEndian(s.FxSave.AsSpan(24), mxcsr);
        WriteXmm(s, 0, x0);
        WriteXmm(s, 1, x1);
        s.Rdi = Data;
        if (!osxmmexcpt) s.Cr4 &= ~0x400UL;
        m.Cpu.SetState(s);
        return m;
    }

    private static void WriteXmm(VcpuState s, int n, (float A, float B, float C, float D) v)
    {
        var span = s.FxSave.AsSpan(160 + 16 * n);
        BinaryPrimitives.WriteSingleLittleEndian(span, v.A);
        BinaryPrimitives.WriteSingleLittleEndian(span[4..], v.B);
        BinaryPrimitives.WriteSingleLittleEndian(span[8..], v.C);
        BinaryPrimitives.WriteSingleLittleEndian(span[12..], v.D);
    }

    private static uint Mxcsr(TestMachine m) => BinaryPrimitives.ReadUInt32LittleEndian(m.State().FxSave.AsSpan(24));
    private static byte[] Xmm(TestMachine m, int n) => m.State().FxSave.AsSpan(160 + 16 * n, 16).ToArray();
    private static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    [Fact]
    public void UnmaskedPreComputationExceptionRecordsOnlyPreComputationFlagsAndWritesNothing()
    {
        // Lane 0: a denormal (DE unmasked); lane 1: FLT_MAX·2 would overflow (OE masked) but is never computed.
        using var m = Long(a => { a.mulps(xmm0, xmm1); a.hlt(); }, MaskAll & ~DeMask, (F(1), float.MaxValue, 1, 1), (1, 2, 1, 1));
        var before = Xmm(m, 0);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#XM", m.Cpu.Exit.Message ?? "");
        Assert.Equal((MaskAll & ~DeMask) | 0x02u, Mxcsr(m));
        Assert.Equal(before, Xmm(m, 0));
    }

    [Fact]
    public void WithoutOsxmmexcptAnUnmaskedExceptionIsUd()
    {
        using var m = Long(a => { a.mulps(xmm0, xmm1); a.hlt(); }, MaskAll & ~DeMask, (F(1), 1, 1, 1), (1, 1, 1, 1), osxmmexcpt: false);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#UD", m.Cpu.Exit.Message ?? "");
        Assert.DoesNotContain("#XM", m.Cpu.Exit.Message ?? "");
        Assert.Equal((MaskAll & ~DeMask) | 0x02u, Mxcsr(m));
    }

    [Fact]
    public void UnmaskedOverflowRecordsEveryLanesFlagsAndWritesNothing()
    {
        // Lane 0 overflows exactly (no PE), lane 1 has a masked denormal: OE and DE recorded.
        using var m = Long(a => { a.mulps(xmm0, xmm1); a.hlt(); }, MaskAll & ~OeMask, (float.MaxValue, F(1), 1, 1), (2, 1, 1, 1));
        var before = Xmm(m, 0);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#XM", m.Cpu.Exit.Message ?? "");
        Assert.Equal((MaskAll & ~OeMask) | 0x08u | 0x02u, Mxcsr(m));
        Assert.Equal(before, Xmm(m, 0));
    }

    [Fact]
    public void UnmaskedOverflowOfAnInexactResultAlsoRecordsPe()
    {
        using var m = Long(a => { a.mulss(xmm0, xmm1); a.hlt(); }, MaskAll & ~OeMask, (float.MaxValue, 1, 1, 1), (F(0x3FFF_FFFF), 1, 1, 1));
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Equal((MaskAll & ~OeMask) | 0x28u, Mxcsr(m));
    }

    [Fact]
    public void UnmaskedUnderflowIsReportedForAnExactTinyResultAndIgnoresFtz()
    {
        // 0.5 · 2^-126 is an exact denormal: masked underflow would raise nothing, unmasked raises UE (no PE).
        using var m = Long(a => { a.mulss(xmm0, xmm1); a.hlt(); }, (MaskAll & ~UeMask) | 0x8000, (0.5f, 1, 1, 1), (F(0x0080_0000), 1, 1, 1));
        var before = Xmm(m, 0);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Equal((MaskAll & ~UeMask) | 0x8000 | 0x10u, Mxcsr(m));
        Assert.Equal(before, Xmm(m, 0));
    }

    [Fact]
    public void UnmaskedUnderflowJudgesPeBeforeDenormalization()
    {
        // (1 + 2^-23) · 2^-127 is exact with 24 bits but loses its last bit as a denormal: UE without PE.
        using var m = Long(a => { a.mulss(xmm0, xmm1); a.hlt(); }, MaskAll & ~UeMask, (F(0x3F00_0001), 1, 1, 1), (F(0x0080_0000), 1, 1, 1));
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Equal((MaskAll & ~UeMask) | 0x10u, Mxcsr(m));
    }

    [Fact]
    public void UnmaskedPrecisionExceptionFaultsAfterRecordingPe()
    {
        uint mx = MaskAll & ~(0x20u << 7);
        using var m = Long(a => { a.mulss(xmm0, xmm1); a.hlt(); }, mx, (F(0x3F80_0001), 1, 1, 1), (F(0x3F80_0001), 1, 1, 1));
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#XM", m.Cpu.Exit.Message ?? "");
        Assert.Equal(mx | 0x20u, Mxcsr(m));
    }

    [Fact]
    public void DivisionOfADenormalByZeroIsZeAlone()
    {
        using var m = Long(a => { a.divss(xmm0, xmm1); a.hlt(); }, MaskAll, (F(1), 1, 1, 1), (0, 1, 1, 1));
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(MaskAll | 0x04u, Mxcsr(m));
        Assert.Equal(float.PositiveInfinity, BitConverter.ToSingle(Xmm(m, 0)));
    }

    [Fact]
    public void MaskedExceptionsWriteTheResultAndSetFlags()
    {
        // FTZ with masked underflow: a tiny exact result becomes +0 with UE and PE.
        using var m = Long(a => { a.mulss(xmm0, xmm1); a.hlt(); }, MaskAll | 0x8000, (0.5f, 1, 1, 1), (F(0x0080_0000), 1, 1, 1));
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(MaskAll | 0x8000 | 0x30u, Mxcsr(m));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(Xmm(m, 0)));
    }

    [Fact]
    public void MisalignedPackedOperandIsGpButMovupsAndScalarFormsAreNot()
    {
        using (var m = Long(a => { a.addps(xmm0, __[rdi + 4]); a.hlt(); }, MaskAll, (1, 1, 1, 1), (1, 1, 1, 1)))
        {
            Assert.Equal(ExitReason.Shutdown, m.Run());
            Assert.Contains("#GP", m.Cpu.Exit.Message ?? "");
        }
        using (var m = Long(a => { a.movups(xmm0, __[rdi + 4]); a.addss(xmm0, __[rdi + 4]); a.cvtps2pd(xmm1, __[rdi + 4]); a.hlt(); },
            MaskAll, (1, 1, 1, 1), (1, 1, 1, 1)))
        {
            Assert.Equal(ExitReason.Halt, m.Run());
        }
    }
}
