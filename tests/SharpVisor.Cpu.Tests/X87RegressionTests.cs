// Fixed x87 cases where the engine once differed from silicon (issue #3, "x87 exact to silicon"),
// each with the FSW and result an Intel host (Sapphire Rapids, family 6 model 143) gives. The engine
// must give them; on an x86-64 Linux host the same case also runs natively and must give them too,
// so an expectation cannot drift away from the hardware.
//   * FPREM/FPREM1 by ±∞ and FSCALE by ±0 return ST(0) as it is: a denormal ST(0) raises no #U even
//     with #U unmasked (the engine raised #U and stored the bias-adjusted value). A finite divisor or
//     a nonzero scale that truncates to 0 does go through rounding and raises #U.
//   * FYL2X with x a power of two raises #P even when y·log2 x is exact, and for x < 1 rounds a value a
//     hair smaller in magnitude than y·log2 x (the engine dropped #P and rounded the exact product).
//   * FCS/FDS are deprecated (CPUID.(EAX=07H,ECX=0):EBX[13]) and stored as 0000H.
using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.Tests.Differential;
using SharpVisor.HostCpu;
using SharpVisor.SoftFloat;
using Xunit;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

public class X87RegressionTests
{
    private const int Top = 4;

    private static Float80 F(string s)
    {
        var p = s.Split(':');
        return new Float80(Convert.ToUInt16(p[0], 16), Convert.ToUInt64(p[1], 16));
    }

    /// <summary>ST0 and ST1 valid, TOP = 4, no flags, the given control word; one instruction of <paramref name="code"/>.</summary>
    private static NativeCase Case(Code code, ushort fcw, string st0, string st1)
    {
        var s = NativeState.Initial();
        s.Rsp = NativeLayout.DefaultRsp;
        s.Rflags = RflagsBits.Reserved1;
        Float80 a = F(st0), b = F(st1);
        s.SetSt(0, (UInt128)a.SignExponent << 64 | a.Significand);
        s.SetSt(1, (UInt128)b.SignExponent << 64 | b.Significand);
        s.Ftw = (byte)(1 << Top | 1 << (Top + 1));
        s.Fcw = fcw;
        s.Fsw = Top << 11;
        var bytes = new List<byte>();
        Encoder.Create(64, new ListWriter(bytes)).Encode(Instruction.Create(code), 0);
        return new NativeCase { Code = bytes.ToArray(), Input = s, Description = $"{code} fcw={fcw:x4} st0={st0} st1={st1}" };
    }

    private static string St0(in NativeState s)
    {
        var v = s.GetSt(0);
        return $"{(ushort)(v >> 64):X4}:{(ulong)v:X16}";
    }

    [Theory]
    // FPREM/FPREM1 by ±∞: the denormal comes back with only #D, although #U is unmasked (FCW 036F).
    [InlineData(Code.Fprem, 0x036F, "8000:000001A04C2D2A7D", "7FFF:8000000000000000", 0x2002, "8000:000001A04C2D2A7D")]
    [InlineData(Code.Fprem1, 0x036F, "8000:000001A04C2D2A7D", "FFFF:8000000000000000", 0x2002, "8000:000001A04C2D2A7D")]
    // … a pseudo-denormal is re-encoded with exponent 1.
    [InlineData(Code.Fprem, 0x036F, "0000:8000000000000003", "7FFF:8000000000000000", 0x2002, "0001:8000000000000003")]
    // … but a finite divisor larger than ST(0) leaves a tiny remainder that raises #U (bias-adjusted).
    [InlineData(Code.Fprem, 0x036F, "0000:0000000000000001", "3FFF:8000000000000000", 0xA092, "5FC2:8000000000000000")]
    // FSCALE by ±0: ST(0) unchanged, only #D.
    [InlineData(Code.Fscale, 0x036F, "0000:0000000000000001", "0000:0000000000000000", 0x2002, "0000:0000000000000001")]
    [InlineData(Code.Fscale, 0x034F, "8000:0000000000000001", "8000:0000000000000000", 0x2002, "8000:0000000000000001")]
    // … whereas a nonzero scale that truncates to 0 (0.75) rounds and raises #U.
    [InlineData(Code.Fscale, 0x036F, "0000:0000000000000003", "3FFE:C000000000000000", 0xA092, "5FC3:C000000000000000")]
    // FYL2X, x = 4, y = 1: exact 2.0, yet #P (C1 = 0). x = 2, y = 3 with #P unmasked: ES too.
    [InlineData(Code.Fyl2x, 0x037F, "4001:8000000000000000", "3FFF:8000000000000000", 0x2820, "4000:8000000000000000")]
    [InlineData(Code.Fyl2x, 0x035F, "4000:8000000000000000", "4000:C000000000000000", 0xA8A0, "4000:C000000000000000")]
    // x = 2, y denormal: the exact denormal is "inexact", so #U is raised with #U masked.
    [InlineData(Code.Fyl2x, 0x037F, "4000:8000000000000000", "0000:0000000000000001", 0x2832, "0000:0000000000000001")]
    // x = 1/8, y = 1 + 2^-63: y·(−3) is a tie at 64 bits; it goes toward zero (…01, not the even …02).
    [InlineData(Code.Fyl2x, 0x037F, "3FFC:8000000000000000", "3FFF:8000000000000001", 0x2820, "C000:C000000000000001")]
    // x = 1/2, y = 3, RC toward zero: −3 comes out as −(3 − 1 ulp).
    [InlineData(Code.Fyl2x, 0x0F7F, "3FFE:8000000000000000", "4000:C000000000000000", 0x2820, "C000:BFFFFFFFFFFFFFFF")]
    public void Matches_the_host_cpu(Code code, int fcw, string st0, string st1, int fsw, string result)
    {
        var c = Case(code, (ushort)fcw, st0, st1);
        using (var engine = new EngineRunner())
        {
            var e = engine.Run(c);
            Assert.Equal(EngineOutcome.Completed, e.Outcome);
            Assert.Equal($"fsw={fsw:X4} st0={result}", $"fsw={e.State.Fsw:X4} st0={St0(e.State)}");
        }
        if (!HostFeatures.IsHostSupported) return; // the native cross-check needs Linux on x86-64
        using var runner = new X87NativeRunner();
        var h = runner.Run(c);
        Assert.Equal($"fsw={fsw:X4} st0={result}", $"fsw={h.Output.Fsw:X4} st0={St0(h.Output)}");
    }

    [Fact]
    public void Cpuid_advertises_the_fcs_fds_deprecation_exactly_with_the_fpu()
    {
        new CpuModel().Cpuid(7, 0, 0, 1, out _, out uint ebx, out _, out _);
        Assert.Equal(1u << 13, ebx & (1u << 13));
        new CpuModel { HasFpu = false }.Cpuid(7, 0, 0, 1, out _, out ebx, out _, out _);
        Assert.Equal(0u, ebx & (1u << 13));
    }

    [Fact]
    public void Fcs_and_fds_are_stored_as_zero_even_after_frstor_of_an_image_with_selectors()
    {
        // Protected mode, CS = 10H, DS = 18H (VcpuState.Protected32). FRSTOR an image whose FCS/FDS are
        // 1234H/5678H, then FNSTENV at once (no x87 instruction between) and FLD + FXSAVE.
        const ulong Entry = 0x1000, Image = 0x3000, Env = 0x3100, Fx = 0x3200, One = 0x3400;
        using var m = new TestMachine(fpuModel: true);
        m.Memory.Write(Entry, TestMachine.Assemble(32, Entry, a =>
        {
            a.frstor(__[(int)Image]);
            a.fnstenv(__[(int)Env]);
            a.fld(__dword_ptr[(int)One]);
            a.fxsave(__[(int)Fx]);
            a.hlt();
        }));
        var image = new byte[108];
        BinaryPrimitives.WriteUInt32LittleEndian(image, 0xFFFF_037F);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(8), 0xFFFF_FFFF); // all empty
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(12), 0x1111);     // FIP
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(16), 0x1234);     // FCS, FOP 0
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(20), 0x2222);     // FDP
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(24), 0x5678);     // FDS
        m.Memory.Write(Image, image);
        m.Memory.Write(One, BitConverter.GetBytes(1.0f));
        var s = VcpuState.Protected32(Entry);
        s.Cr4 |= 1UL << 9; // OSFXSR
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var env = new byte[28];
        m.Memory.Read(Env, env);
        Assert.Equal(0x1111u, BinaryPrimitives.ReadUInt32LittleEndian(env.AsSpan(12)));    // FIP kept
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(env.AsSpan(16)));         // FCS 0, FOP 0
        Assert.Equal(0x2222u, BinaryPrimitives.ReadUInt32LittleEndian(env.AsSpan(20)));    // FDP kept
        Assert.Equal(0xFFFF_0000u, BinaryPrimitives.ReadUInt32LittleEndian(env.AsSpan(24))); // FDS 0
        var fx = new byte[32];
        m.Memory.Read(Fx, fx);
        Assert.Equal((uint)One, BinaryPrimitives.ReadUInt32LittleEndian(fx.AsSpan(16)));   // FDP of the FLD
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(12)));           // FCS
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(20)));           // FDS
    }

    [Fact]
    public void Fxsave_stores_fcs_and_fds_as_zero_right_after_fxrstor_and_in_real_mode()
    {
        // Protected mode: FXRSTOR an image whose FCS/FDS are 1234H/5678H and FXSAVE at once.
        const ulong Entry = 0x1000, Image = 0x3000, Fx = 0x3400, One = 0x3800;
        using var m = new TestMachine(fpuModel: true);
        m.Memory.Write(Entry, TestMachine.Assemble(32, Entry, a =>
        {
            a.fxrstor(__[(int)Image]);
            a.fxsave(__[(int)Fx]);
            a.hlt();
        }));
        var image = new byte[512];
        BinaryPrimitives.WriteUInt16LittleEndian(image, 0x037F);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(8), 0x1111);   // FIP
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(12), 0x1234);  // FCS
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(16), 0x2222);  // FDP
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(20), 0x5678);  // FDS
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(24), 0x1F80);  // MXCSR
        m.Memory.Write(Image, image);
        var s = VcpuState.Protected32(Entry);
        s.Cr4 |= 1UL << 9; // OSFXSR
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var fx = new byte[24];
        m.Memory.Read(Fx, fx);
        Assert.Equal(0x1111u, BinaryPrimitives.ReadUInt32LittleEndian(fx.AsSpan(8)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(12)));
        Assert.Equal(0x2222u, BinaryPrimitives.ReadUInt32LittleEndian(fx.AsSpan(16)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(20)));

        // Real mode, CS = DS = 0100H: an FLD from memory, then FXSAVE: the selectors are 0 too.
        using var r = new TestMachine(fpuModel: true);
        r.Memory.Write(0x1000 + Entry, TestMachine.Assemble(16, Entry, a =>
        {
            a.fld(__dword_ptr[(int)One]);
            a.fxsave(__[(int)Fx]);
            a.hlt();
        }));
        r.Memory.Write(0x1000 + One, BitConverter.GetBytes(1.0f));
        var rs = VcpuState.AfterReset();
        rs.Rip = Entry;
        rs.Cs = SegmentRegister.RealMode(0x100, code: true);
        rs.Ds = SegmentRegister.RealMode(0x100);
        r.Cpu.SetState(rs);
        Assert.Equal(ExitReason.Halt, r.Run());
        r.Memory.Read(0x1000 + Fx, fx);
        Assert.Equal((uint)One, BinaryPrimitives.ReadUInt32LittleEndian(fx.AsSpan(16)));   // FDP: the offset
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(12)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(fx.AsSpan(20)));
    }

    private sealed class ListWriter(List<byte> bytes) : CodeWriter
    {
        public override void WriteByte(byte value) => bytes.Add(value);
    }
}
