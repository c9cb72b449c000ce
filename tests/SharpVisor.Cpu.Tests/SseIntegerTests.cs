// Unit tests of the MMX/SSE integer instructions whose rules the differential run cannot show by itself:
// the 16-byte alignment rule of legacy SSE memory operands (#GP(0), SDM Vol. 1 §11.4.1, and its
// exceptions MOVDQU/LDDQU/PCMPxSTRx), MASKMOVDQU/MASKMOVQ's byte-masked store at DS:rDI, and the scalar
// fallbacks used on hosts without SSE4.1/SSE4.2, checked against the host's intrinsics.
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SharpVisor.Cpu.Tests.Differential;
using SharpVisor.HostCpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static SharpVisor.HostCpu.NativeSnippet;

namespace SharpVisor.Cpu.Tests;

public sealed class SseIntegerTests : IDisposable
{
    private readonly EngineRunner _runner = new();

    public void Dispose() => _runner.Dispose();

    private static NativeCase WithRbp(byte[] code, ulong rbp, byte[]? window = null)
    {
        var c = Case(code, relocated: 1 << 5, window: window);
        c.Input.Rbp = rbp;
        return c;
    }

    private static byte[] Pattern()
    {
        var w = new byte[NativeLayout.WindowSize];
        for (int k = 0; k < w.Length; k++) w[k] = (byte)(k * 7 + 3);
        return w;
    }

    [Theory]
    [InlineData(0x101)]
    [InlineData(0x108)]
    [InlineData(0x10F)]
    public void Misaligned_128_bit_operands_of_aligned_forms_raise_gp(int offset)
    {
        var loads = new[]
        {
            Assemble(a => a.paddb(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.movdqa(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.ptest(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.movntdqa(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.pshufd(xmm1, __xmmword_ptr[rbp], 0x1B)),
        };
        foreach (var code in loads)
        {
            var r = _runner.Run(WithRbp(code, (ulong)offset));
            Assert.Equal(EngineOutcome.Fault, r.Outcome);
            Assert.Equal(X86Exception.GP, r.Exception);
            Assert.Equal(EngineRunner.CodeGpa, r.FaultRip);
        }
        // Stores fault before any byte is written.
        foreach (var code in new[] { Assemble(a => a.movdqa(__xmmword_ptr[rbp], xmm1)), Assemble(a => a.movntdq(__xmmword_ptr[rbp], xmm1)) })
        {
            var c = WithRbp(code, (ulong)offset, Pattern());
            c.Input.SetXmm(1, UInt128.MaxValue);
            var r = _runner.Run(c);
            Assert.Equal(X86Exception.GP, r.Exception);
            Assert.True(_runner.Window[..0x1000].SequenceEqual(Pattern().AsSpan(0, 0x1000)));
        }
    }

    [Fact]
    public void Unaligned_forms_and_small_operands_accept_any_address()
    {
        var codes = new[]
        {
            Assemble(a => a.movdqu(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.lddqu(xmm1, __xmmword_ptr[rbp])),
            Assemble(a => a.pcmpestri(xmm1, __xmmword_ptr[rbp], 0x0C)),
            Assemble(a => a.pcmpistrm(xmm1, __xmmword_ptr[rbp], 0x40)),
            Assemble(a => a.pmovzxbw(xmm1, __qword_ptr[rbp])),
            Assemble(a => a.movq(xmm1, __qword_ptr[rbp])),
            Assemble(a => a.paddb(mm1, __qword_ptr[rbp])),
        };
        foreach (var code in codes)
        {
            var r = _runner.Run(WithRbp(code, 0x103, Pattern()));
            Assert.True(r.Outcome == EngineOutcome.Completed, $"{r.Outcome} {r.Exception} {r.Message}");
        }
        var load = _runner.Run(WithRbp(Assemble(a => a.movdqu(xmm1, __xmmword_ptr[rbp])), 0x103, Pattern()));
        var expected = Pattern().AsSpan(0x103, 16);
        Assert.Equal(new UInt128(BitConverter.ToUInt64(expected[8..]), BitConverter.ToUInt64(expected)), load.State.GetXmm(1));
    }

    [Fact]
    public void Maskmovdqu_writes_exactly_the_selected_bytes_at_rdi()
    {
        var c = Case(Assemble(a => a.maskmovdqu(xmm1, xmm2)), relocated: 1 << 7, window: Pattern());
        c.Input.Rdi = 0x205; // unaligned: MASKMOVDQU has no alignment rule
        c.Input.SetXmm(1, new UInt128(0x1F1E_1D1C_1B1A_1918, 0x1716_1514_1312_1110));
        // Bytes 3, 8 and 15 selected (bit 7 set); 7FH and 00H mask bytes are not.
        c.Input.SetXmm(2, new UInt128(0x8000_0000_0000_0080, 0x7F7F_7F7F_8000_007F));
        var r = _runner.Run(c);
        Assert.True(r.Outcome == EngineOutcome.Completed, $"{r.Outcome} {r.Exception} {r.Message}");
        var expected = Pattern();
        expected[0x205 + 3] = 0x13;
        expected[0x205 + 8] = 0x18;
        expected[0x205 + 15] = 0x1F;
        Assert.True(_runner.Window[..0x1000].SequenceEqual(expected.AsSpan(0, 0x1000)), "MASKMOVDQU wrote unselected bytes or missed selected ones");
        Assert.Equal(0x205UL, r.State.Rdi);
    }

    [Fact]
    public void Maskmovq_with_an_all_zero_mask_writes_nothing_and_with_all_ones_writes_eight_bytes()
    {
        var none = Case(Assemble(a => a.maskmovq(mm1, mm2)), relocated: 1 << 7, window: Pattern());
        none.Input.Rdi = 0x300;
        none.Input.SetSt(1, 0x1122_3344_5566_7788); // TOP = 0: MM1 is ST1's significand
        var r = _runner.Run(none);
        Assert.Equal(EngineOutcome.Completed, r.Outcome);
        Assert.True(_runner.Window[..0x1000].SequenceEqual(Pattern().AsSpan(0, 0x1000)));

        var all = Case(Assemble(a => a.maskmovq(mm1, mm2)), relocated: 1 << 7, window: Pattern());
        all.Input.Rdi = 0x300;
        all.Input.SetSt(1, 0x1122_3344_5566_7788);
        all.Input.SetSt(2, ulong.MaxValue);
        r = _runner.Run(all);
        Assert.Equal(EngineOutcome.Completed, r.Outcome);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(_runner.Window.Slice(0x300, 8)));
        Assert.Equal(Pattern()[0x308], _runner.Window[0x308]);
    }

    [Fact]
    public void Scalar_fallbacks_match_the_host_intrinsics()
    {
        if (!Sse41.IsSupported || !Sse42.IsSupported) Assert.Skip("the host lacks SSE4.2: nothing to compare the fallbacks with");
        var rng = new Random(7);
        Span<byte> buf = stackalloc byte[32];
        foreach (PackedOp op in Enum.GetValues<PackedOp>())
        {
            for (int n = 0; n < 600; n++)
            {
                rng.NextBytes(buf);
                // Boundary lanes a third of the time: 00, 7F/80, FF runs.
                if (n % 3 == 0) for (int k = 0; k < 32; k++) buf[k] = (byte)(rng.Next(4) switch { 0 => 0, 1 => 0x7F, 2 => 0x80, _ => 0xFF });
                var a = Vector128.Create<byte>(buf[..16]);
                var b = Vector128.Create<byte>(buf[16..]);
                byte imm = (byte)rng.Next(256);
                var host = PackedInteger.Host(op, a, b, imm);
                var soft = PackedInteger.Soft(op, a, b, imm);
                if (host != soft) Assert.Fail($"{op} a={a} b={b} imm={imm:x2}: host {host}, scalar {soft}");
            }
        }
        for (int n = 0; n < 5000; n++)
        {
            uint crc = (uint)rng.Next();
            ulong data = (ulong)rng.NextInt64();
            foreach (int size in new[] { 1, 2, 4, 8 })
                Assert.Equal(PackedInteger.Crc32(crc, data, size), PackedInteger.Crc32Soft(crc, data, size));
        }
    }

    [Fact]
    public void Crc32_of_the_standard_check_string_is_e3069283()
    {
        // CRC-32C check value (RFC 3720 §B.4 / the "123456789" catalogue entry): init FFFFFFFF, final XOR FFFFFFFF.
        uint crc = 0xFFFF_FFFF;
        foreach (byte b in "123456789"u8) crc = PackedInteger.Crc32Soft(crc, b, 1);
        Assert.Equal(0xE306_9283u, crc ^ 0xFFFF_FFFF);
    }
}
