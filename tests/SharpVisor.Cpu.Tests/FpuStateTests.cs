using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// The x87/SSE state plumbing against the SDM: the FXSAVE image layout (Vol. 1 §10.5.1), the XSAVE
/// header rules (Vol. 1 §13), MXCSR reserved bits, and the CR0.EM/TS and CR4.OSFXSR/OSXSAVE gates.
/// </summary>
public class FpuStateTests
{
    private const ulong Code = 0x100000, Area = 0x200000;

    private static (TestMachine M, VcpuState S) Long(Action<Assembler> body, Action<VcpuState>? adjust = null, bool fpuModel = true)
    {
        var m = new TestMachine(fpuModel);
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, body));
        var s = m.EnterLong64(Code);
        if (adjust != null)
        {
            adjust(s);
            m.Cpu.SetState(s);
        }
        return (m, s);
    }

    private static byte[] PatternImage()
    {
        var fx = new byte[512];
        BinaryPrimitives.WriteUInt16LittleEndian(fx, 0x027F);               // FCW: PC=double, all masked
        BinaryPrimitives.WriteUInt16LittleEndian(fx.AsSpan(2), 0x3800 | 0x4101); // TOP=7, C3, C0, IE
        fx[4] = 0x80;                                                        // R7 valid (= ST0)
        BinaryPrimitives.WriteUInt16LittleEndian(fx.AsSpan(6), 0x0123);      // FOP
        BinaryPrimitives.WriteUInt64LittleEndian(fx.AsSpan(8), 0x1122334455667788);
        BinaryPrimitives.WriteUInt64LittleEndian(fx.AsSpan(16), 0x99AABBCCDDEEFF00);
        BinaryPrimitives.WriteUInt32LittleEndian(fx.AsSpan(24), 0x1F80 | 0x8040 | 0x6000); // FZ DAZ RC=toward zero
        BinaryPrimitives.WriteUInt32LittleEndian(fx.AsSpan(28), 0xFFFF);
        for (int st = 0; st < 8; st++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(fx.AsSpan(32 + 16 * st), 0x8000_0000_0000_0000UL | (uint)st);
            BinaryPrimitives.WriteUInt16LittleEndian(fx.AsSpan(40 + 16 * st), (ushort)(0x3FFF + st));
        }
        for (int x = 0; x < 16 * 16; x++) fx[160 + x] = (byte)(x * 7 + 3);
        return fx;
    }

    [Fact]
    public void Fxsave64WritesTheStateImageAndLeavesTheSoftwareBytesAlone()
    {
        var (m, _) = Long(a => { a.fxsave64(__[rdi]); a.hlt(); }, s => { PatternImage().CopyTo(s.FxSave, 0); s.Rdi = Area; });
        using var _m = m;
        var free = new byte[48];
        for (int k = 0; k < 48; k++) free[k] = (byte)(0xA0 + k);
        m.Memory.Write(Area + 464, free);
        Assert.Equal(ExitReason.Halt, m.Run());
        var saved = new byte[512];
        m.Memory.Read(Area, saved);
        var expected = PatternImage();
        Assert.Equal(expected.AsSpan(0, 416).ToArray(), saved.AsSpan(0, 416).ToArray());
        Assert.Equal(free, saved.AsSpan(464, 48).ToArray());
    }

    [Fact]
    public void FxrstorThenGetStateRoundTrips()
    {
        var (m, _) = Long(a => { a.fxrstor64(__[rdi]); a.hlt(); }, s => s.Rdi = Area);
        using var _m = m;
        m.Memory.Write(Area, PatternImage());
        Assert.Equal(ExitReason.Halt, m.Run());
        var got = m.State().FxSave;
        Assert.Equal(PatternImage().AsSpan(0, 416).ToArray(), got.AsSpan(0, 416).ToArray());
    }

    [Fact]
    public void FxrstorWithAReservedMxcsrBitIsGpAndChangesNothing()
    {
        var (m, _) = Long(a => { a.fxrstor64(__[rdi]); a.hlt(); }, s => s.Rdi = Area);
        using var _m = m;
        var image = PatternImage();
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(24), 0x10000 | 0x1F80);
        m.Memory.Write(Area, image);
        var before = m.State().FxSave;
        Assert.Equal(ExitReason.Shutdown, m.Run()); // no IDT: #GP → #DF → triple fault
        Assert.Equal(before, m.State().FxSave);
    }

    [Fact]
    public void MisalignedFxsaveIsGp()
    {
        var (m, _) = Long(a => { a.fxsave(__[rdi]); a.hlt(); }, s => s.Rdi = Area + 8);
        using var _m = m;
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#GP", m.Cpu.Exit.Message ?? "");
    }

    [Fact]
    public void LdmxcsrStmxcsrRoundTripAndReservedBitsFault()
    {
        var (m, _) = Long(a =>
        {
            a.mov(__dword_ptr[rdi], 0x7F80 | 0x40);
            a.ldmxcsr(__dword_ptr[rdi]);
            a.stmxcsr(__dword_ptr[rdi + 4]);
            a.mov(__dword_ptr[rdi + 8], 0x20000);
            a.ldmxcsr(__dword_ptr[rdi + 8]);
            a.hlt();
        }, s => s.Rdi = Area);
        using var _m = m;
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Equal(0x7FC0u, m.Memory.Read<uint>(Area + 4));
        Assert.Contains("#GP", m.Cpu.Exit.Message ?? "");
    }

    [Theory]
    [InlineData(0x4UL, 0x200UL, "#UD")]   // CR0.EM: SSE is #UD
    [InlineData(0x8UL, 0x200UL, "#NM")]   // CR0.TS: #NM
    [InlineData(0x0UL, 0x000UL, "#UD")]   // CR4.OSFXSR clear: #UD
    public void SseGateFollowsCr0AndCr4(ulong cr0Extra, ulong osfxsr, string vector)
    {
        var (m, _) = Long(a => { a.ldmxcsr(__dword_ptr[rdi]); a.hlt(); }, s =>
        {
            s.Cr0 |= cr0Extra;
            s.Cr4 = (s.Cr4 & ~0x200UL) | osfxsr;
            s.Rdi = Area;
        });
        using var _m = m;
        m.Memory.Write(Area, 0x1F80u);
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains(vector, m.Cpu.Exit.Message ?? "");
    }

    [Fact]
    public void XsaveWritesTheHeaderAndXrstorChecksIt()
    {
        var (m, _) = Long(a =>
        {
            a.mov(eax, 3); a.xor(edx, edx);
            a.xsave64(__[rdi]);
            a.xsavec64(__[rsi]);
            a.xrstor64(__[rdi]);            // standard form: accepted
            a.xrstor64(__[rsi]);            // compacted form: accepted
            a.mov(__qword_ptr[rdi + 512 + 16], 1); // a reserved header byte
            a.xrstor64(__[rdi]);            // → #GP
            a.hlt();
        }, s => { s.Cr4 |= 1UL << 18; s.Xcr0 = 3; s.Rdi = Area; s.Rsi = Area + 0x1000; PatternImage().CopyTo(s.FxSave, 0); });
        using var _m = m;
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#GP", m.Cpu.Exit.Message ?? "");
        Assert.Equal(3UL, m.Memory.Read<ulong>(Area + 512));               // XSTATE_BV
        Assert.Equal(0UL, m.Memory.Read<ulong>(Area + 520));               // XCOMP_BV (standard)
        Assert.Equal(3UL, m.Memory.Read<ulong>(Area + 0x1000 + 512));
        Assert.Equal(0x8000_0000_0000_0003UL, m.Memory.Read<ulong>(Area + 0x1000 + 520));
        Assert.Equal(PatternImage().AsSpan(160, 256).ToArray(), m.State().FxSave.AsSpan(160, 256).ToArray());
    }

    [Fact]
    public void XrstorWithAClearStateBitInitialisesTheComponent()
    {
        var (m, _) = Long(a =>
        {
            a.mov(eax, 3); a.xor(edx, edx);
            a.xrstor64(__[rdi]);
            a.hlt();
        }, s => { s.Cr4 |= 1UL << 18; s.Xcr0 = 3; s.Rdi = Area; PatternImage().CopyTo(s.FxSave, 0); });
        using var _m = m;
        // XSTATE_BV = 0: both components go to their initial configuration; MXCSR comes from memory (standard form).
        var area = new byte[576];
        BinaryPrimitives.WriteUInt32LittleEndian(area.AsSpan(24), 0x1F80);
        m.Memory.Write(Area, area);
        Assert.Equal(ExitReason.Halt, m.Run());
        var fx = m.State().FxSave;
        Assert.Equal(0x037F, BinaryPrimitives.ReadUInt16LittleEndian(fx));
        Assert.Equal(0, fx[4]);
        Assert.All(fx.AsSpan(160, 256).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void XsetbvRejectsUnsupportedComponentsAndCr4OsxsaveGatesXgetbv()
    {
        var (m, _) = Long(a =>
        {
            a.xor(ecx, ecx); a.xor(edx, edx); a.mov(eax, 7); // AVX is not implemented
            a.xsetbv();
            a.hlt();
        }, s => s.Cr4 |= 1UL << 18);
        using var _m = m;
        Assert.Equal(ExitReason.Shutdown, m.Run());
        Assert.Contains("#GP", m.Cpu.Exit.Message ?? "");

        var (m2, _) = Long(a => { a.xor(ecx, ecx); a.xgetbv(); a.hlt(); });
        using var _m2 = m2;
        Assert.Equal(ExitReason.Shutdown, m2.Run());
        Assert.Contains("#UD", m2.Cpu.Exit.Message ?? "");
    }

    [Fact]
    public void CpuidLeafDDescribesTheXsaveLayout()
    {
        var (m, _) = Long(a => { a.mov(eax, 0xD); a.xor(ecx, ecx); a.cpuid(); a.hlt(); });
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(3UL, s.Rax);     // x87 | SSE
        Assert.Equal(576UL, s.Rcx);   // 512 legacy + 64 header
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CpuidAdvertisesTheFpuUnitExactlyWhenTheModelHasIt(bool fpu)
    {
        var (m, _) = Long(a => { a.mov(eax, 1); a.cpuid(); a.hlt(); }, s => s.Cr4 |= fpu ? 1UL << 18 : 0, fpuModel: fpu);
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        // EDX: FPU(0) MMX(23) FXSR(24) SSE(25) SSE2(26); ECX: SSE3(0) SSSE3(9) SSE4.1(19) SSE4.2(20) XSAVE(26) OSXSAVE(27).
        const uint edxBits = 1u | 1u << 23 | 1u << 24 | 1u << 25 | 1u << 26;
        const uint ecxBits = 1u | 1u << 9 | 1u << 19 | 1u << 20 | 1u << 26 | 1u << 27;
        Assert.Equal(fpu ? edxBits : 0, (uint)s.Rdx & edxBits);
        Assert.Equal(fpu ? ecxBits : 0, (uint)s.Rcx & ecxBits);
        Assert.Equal(0u, (uint)s.Rcx & (1u << 28)); // AVX is not implemented, so not advertised
    }
}

/// <summary>The TSC counts the engine's clock at the model's frequency, and the APIC's TSC-deadline conversion inverts it.</summary>
public class TscClockTests
{
    [Fact]
    public void TscFollowsTheEngineClockAndTscToNsInvertsIt()
    {
        using var m = new TestMachine();
        var clock = new SharpVisor.Core.Time.ManualClock { NowNs = 1_500_000_000 };
        m.Engine.Clock = clock;
        m.Memory.Write(0x100000, TestMachine.Assemble(64, 0x100000, a => { a.rdtsc(); a.hlt(); }));
        m.EnterLong64(0x100000);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        ulong tsc = (s.Rdx << 32) | (s.Rax & 0xFFFF_FFFF);
        ulong expected = (ulong)(1_500_000_000L * m.Engine.Model.TscHz / 1_000_000_000);
        Assert.Equal(expected, tsc);
        var cpu = (SoftwareVcpu)m.Cpu;
        Assert.Equal(1_500_000_000L + 1_000, cpu.TscToNs(tsc + (ulong)(m.Engine.Model.TscHz / 1_000_000)));
    }

    [Fact]
    public void CpuidLeaf15GivesTheTscFrequencyAndTscAdjustMovesTheTsc()
    {
        using var m = new TestMachine();
        var clock = new SharpVisor.Core.Time.ManualClock { NowNs = 1_000_000_000 };
        m.Engine.Clock = clock;
        m.Memory.Write(0x100000, TestMachine.Assemble(64, 0x100000, a =>
        {
            a.mov(eax, 0x15); a.cpuid();
            a.mov(r8d, eax); a.mov(r9d, ebx); a.mov(r10d, ecx);
            a.mov(ecx, 0x3B); a.mov(eax, 1000); a.xor(edx, edx); a.wrmsr();   // IA32_TSC_ADJUST = 1000
            a.rdtsc(); a.mov(r11d, eax); a.shl(rdx, 32); a.or(r11, rdx);
            a.mov(ecx, 0x3B); a.rdmsr(); a.mov(r12d, eax);
            a.hlt();
        }));
        m.EnterLong64(0x100000);
        Assert.Equal(ExitReason.Halt, m.Run());
        var s = m.State();
        Assert.Equal(m.Engine.Model.TscHz, (long)(s.Gpr[10] * s.Gpr[9] / s.Gpr[8]));
        ulong baseTsc = (ulong)(1_000_000_000L * m.Engine.Model.TscHz / 1_000_000_000);
        Assert.Equal(baseTsc + 1000, s.Gpr[11]);
        Assert.Equal(1000UL, s.Gpr[12]);
    }
}
