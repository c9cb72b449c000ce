// SSE2 string primitives and floating-point arithmetic guests, in IA-32e 64-bit mode with SSE
// enabled (CR4.OSFXSR). The string loops follow glibc's x86-64 SSE2 strlen, memcmp and memmove
// (one 16-byte chunk per MOVDQA/MOVDQU; PCMPEQB + PMOVMSKB to a 16-bit mask; TEST, or CMP with
// 0xFFFF, then BSF for the position). The arithmetic guests evaluate the same Horner polynomial
// per element with x87 (float80, FLD/FST/FSTP on m64 and m80) and with SSE scalar double
// (MULSD/ADDSD/DIVSD/SQRTSD), one instruction for one instruction, so their times are a ratio.
// Every guest checks, besides its closed-form instruction count, the value it computed.
using System.Buffers.Binary;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Benchmarks;

internal sealed partial class SoftwareGuest
{
    // ------------------------------------------------------------------ SSE2 string primitives

    /// <summary>Length of the strlen guest's string: 1 MiB − 3, so the NUL is in the last of 65,536 chunks, not at its start.</summary>
    public const int StrlenLength = Layout.CopyBytes - 3;
    public const int StrlenChunks = StrlenLength / 16 + 1;

    /// <summary>
    /// strlen of a 16-byte-aligned string of <see cref="StrlenLength"/> non-zero bytes, <paramref name="passes"/>
    /// times: MOVDQA, PCMPEQB with zero, PMOVMSKB, ADD, TEST, JZ per 16-byte chunk; BSF on the
    /// last chunk's mask. The string is followed by 'x' and a second NUL, so the BSF must pick the
    /// lowest set bit. Checks: R10 = the sum of the lengths found.
    /// </summary>
    public static SoftwareGuest Strlen64(int passes)
    {
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.xor(r10d, r10d);
            a.pxor(xmm0, xmm0);
            a.Label(ref pass);
            a.mov(edi, (uint)Layout.CopySource);
            a.mov(rax, rdi);
            a.Label(ref top);
            a.movdqa(xmm1, __xmmword_ptr[rax]);
            a.pcmpeqb(xmm1, xmm0);
            a.pmovmskb(edx, xmm1);
            a.add(rax, 16);
            a.test(edx, edx);
            a.jz(top);
            a.bsf(edx, edx);
            a.lea(rax, __qword_ptr[rax + rdx - 16]);
            a.sub(rax, rdi);
            a.add(r10, rax);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        long instructions = 3 + passes * (2 + 6L * StrlenChunks + 6) + 1;
        var g = new SoftwareGuest("SSE2 strlen 1 MiB (MOVDQA/PCMPEQB/PMOVMSKB), 4 KiB pages", Unit.Instruction, instructions,
            instructions, code, Long64Simd(), fourKPages: true)
        {
            BytesPerRun = (long)passes * StrlenLength,
            ResultCheck = s =>
            {
                ulong found = s.State().Gpr[10], expected = (ulong)passes * StrlenLength;
                return found == expected ? null : $"R10 = {found}, expected {passes} × {StrlenLength} = {expected}";
            },
        };
        var text = new byte[StrlenLength + 16];
        for (int i = 0; i < StrlenLength; i++) text[i] = Pattern(i);
        text[StrlenLength] = 0;
        text[StrlenLength + 1] = (byte)'x';
        text[StrlenLength + 2] = 0;
        for (int i = StrlenLength + 3; i < text.Length; i++) text[i] = Pattern(i);
        g.Memory.Write(Layout.CopySource, text);
        return g.Verified();
    }

    /// <summary>memcmp's buffers: 1 MiB − 64 bytes, the first difference 40 bytes before the end (offset 8 in its chunk).</summary>
    public const int MemcmpLength = Layout.CopyBytes - 64;
    public const int MemcmpDifference = MemcmpLength - 40;
    /// <summary>The unaligned buffer starts 3 bytes into its page, so some MOVDQU loads straddle two pages.</summary>
    public const int MemcmpMisalign = 3;
    private const byte MemcmpA = 0x20, MemcmpB = 0x7F;

    /// <summary>
    /// memcmp of an unaligned buffer (MOVDQU) against an aligned one (PCMPEQB with a memory operand),
    /// glibc's SSE2 loop: MOVDQU, PCMPEQB, PMOVMSKB, CMP EDX 0xFFFF, JNE, ADD, CMP, JB per 16 bytes;
    /// at the first unequal chunk XOR with 0xFFFF and BSF find the byte, and the result is the
    /// difference of the two bytes. Checks: R10 = the sum of the offsets found, R11D = the sum of
    /// the byte differences.
    /// </summary>
    public static SoftwareGuest Memcmp64(int passes)
    {
        ulong bufA = Layout.CopySource + MemcmpMisalign, bufB = Layout.CopyDestination;
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel(); var diff = a.CreateLabel(); var done = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.xor(r10d, r10d);
            a.xor(r11d, r11d);
            a.Label(ref pass);
            a.mov(esi, (uint)bufA);
            a.mov(edi, (uint)bufB);
            a.xor(eax, eax);
            a.mov(ecx, (uint)MemcmpLength);
            a.Label(ref top);
            a.movdqu(xmm1, __xmmword_ptr[rsi + rax]);
            a.pcmpeqb(xmm1, __xmmword_ptr[rdi + rax]);
            a.pmovmskb(edx, xmm1);
            a.cmp(edx, 0xFFFF);
            a.jne(diff);
            a.add(rax, 16);
            a.cmp(rax, rcx);
            a.jb(top);
            // Equal buffers (not reached with this data): offset = length, difference 0.
            a.xor(ecx, ecx);
            a.jmp(done);
            a.Label(ref diff);
            a.xor(edx, 0xFFFF);
            a.bsf(edx, edx);
            a.add(rax, rdx);
            a.movzx(ecx, __byte_ptr[rsi + rax]);
            a.movzx(edx, __byte_ptr[rdi + rax]);
            a.sub(ecx, edx);
            a.Label(ref done);
            a.add(r10, rax);
            a.add(r11d, ecx);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        const int equalChunks = MemcmpDifference / 16;
        long instructions = 3 + passes * (4 + 8L * equalChunks + 5 + 10) + 1;
        var g = new SoftwareGuest("SSE2 memcmp 1 MiB (MOVDQU/PCMPEQB/PMOVMSKB/CMP 0xFFFF), 4 KiB pages", Unit.Instruction, instructions,
            instructions, code, Long64Simd(), fourKPages: true)
        {
            BytesPerRun = (long)passes * (equalChunks + 1) * 16,
            ResultCheck = s =>
            {
                var st = s.State();
                ulong offsets = st.Gpr[10], expectedOffsets = (ulong)passes * MemcmpDifference;
                int diffs = (int)st.Gpr[11], expectedDiffs = passes * (MemcmpA - MemcmpB);
                return offsets == expectedOffsets && diffs == expectedDiffs ? null
                    : $"R10 = {offsets}, R11D = {diffs}; expected {expectedOffsets} and {expectedDiffs}";
            },
        };
        var data = new byte[MemcmpLength];
        for (int i = 0; i < data.Length; i++) data[i] = Pattern(i);
        data[MemcmpDifference] = MemcmpA;
        g.Memory.Write(bufA, data);
        data[MemcmpDifference] = MemcmpB;
        g.Memory.Write(bufB, data);
        return g.Verified();
    }

    /// <summary>The memcpy source starts 5 bytes into its page (unaligned loads, some straddling pages); the destination is aligned.</summary>
    public const int MemcpyMisalign = 5;

    /// <summary>
    /// memcpy of 1 MiB, glibc's SSE2 forward loop: four MOVDQU loads, ADD RSI, four MOVDQA stores,
    /// ADD RDI, SUB RDX, JNZ per 64 bytes (16 bytes per load/store pair). Checks: the destination
    /// equals the source and the bytes either side of it are untouched.
    /// </summary>
    public static SoftwareGuest Memcpy64(int passes)
    {
        ulong src = Layout.CopySource + MemcpyMisalign, dst = Layout.CopyDestination;
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.Label(ref pass);
            a.mov(esi, (uint)src);
            a.mov(edi, (uint)dst);
            a.mov(edx, (uint)Layout.CopyBytes);
            a.Label(ref top);
            a.movdqu(xmm0, __xmmword_ptr[rsi]);
            a.movdqu(xmm1, __xmmword_ptr[rsi + 16]);
            a.movdqu(xmm2, __xmmword_ptr[rsi + 32]);
            a.movdqu(xmm3, __xmmword_ptr[rsi + 48]);
            a.add(rsi, 64);
            a.movdqa(__xmmword_ptr[rdi], xmm0);
            a.movdqa(__xmmword_ptr[rdi + 16], xmm1);
            a.movdqa(__xmmword_ptr[rdi + 32], xmm2);
            a.movdqa(__xmmword_ptr[rdi + 48], xmm3);
            a.add(rdi, 64);
            a.sub(rdx, 64);
            a.jnz(top);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        long instructions = 1 + passes * (3 + 12L * (Layout.CopyBytes / 64) + 2) + 1;
        var source = new byte[Layout.CopyBytes];
        for (int i = 0; i < source.Length; i++) source[i] = Pattern(i * 7 + 1);
        var g = new SoftwareGuest("SSE2 memcpy 1 MiB (MOVDQU loads, MOVDQA stores), 4 KiB pages", Unit.Instruction, instructions,
            instructions, code, Long64Simd(), fourKPages: true)
        {
            BytesPerRun = (long)passes * Layout.CopyBytes,
            ResultCheck = s =>
            {
                var copy = s.Memory.GetSpan(dst - 16, Layout.CopyBytes + 32);
                if (!copy.Slice(16, Layout.CopyBytes).SequenceEqual(source))
                    return $"destination differs from the source at offset {copy[16..].CommonPrefixLength(source)}";
                return copy[..16].ContainsAnyExcept((byte)0) || copy[^16..].ContainsAnyExcept((byte)0)
                    ? "bytes outside the destination were written" : null;
            },
        };
        g.Memory.Write(src, source);
        return g.Verified();
    }

    /// <summary>Non-zero filler bytes (1..255) that do not repeat every 16 bytes.</summary>
    private static byte Pattern(int i) => (byte)(i % 255 + 1);

    // ------------------------------------------------------------------ x87 and SSE scalar arithmetic

    /// <summary>Elements per pass of the arithmetic guests: 512 KiB of doubles in, 512 KiB out.</summary>
    public const int HornerElements = 65_536;
    /// <summary>Per element: FSQRT, three multiplies, four adds (three in the polynomial, one into the sum), one divide.</summary>
    public const int HornerFlopsPerElement = 9;
    public const int HornerInstructionsPerElement = 18;
    /// <summary>c3, c2, c1, c0, then the running sum (m80 for x87, m64 for SSE).</summary>
    private const ulong HornerConstants = Layout.IntegerData;
    private static readonly double[] HornerC = [0.3, -1.7, 2.9, 1.1];

    /// <summary>a_k = 1 + k/3: mantissas that are not short, so every operation rounds.</summary>
    private static double HornerInput(int k) => 1 + k / 3.0;

    /// <summary>
    /// The closed form of what both guests compute for a: p(√a)/√a with p(s) = c3·s³ + c2·s² + c1·s + c0,
    /// which is c3·a + c2·√a + c1 + c0/√a.
    /// </summary>
    private static double HornerClosedForm(double a)
    {
        double s = Math.Sqrt(a);
        return HornerC[0] * a + HornerC[1] * s + HornerC[2] + HornerC[3] / s;
    }

    public static long HornerInstructions(int passes, bool x87) => (x87 ? 3 : 2) + passes * (5 + (long)HornerInstructionsPerElement * HornerElements + 2) + 1;

    /// <summary>
    /// x87, after FNINIT (64-bit precision, round to nearest): per element FLD m64, FSQRT, FLD ST0,
    /// Horner's rule with FMUL/FADD m64 and FMUL ST0,ST1, FDIVRP (p/s), FST m64 to the output array,
    /// then the running sum as float80 in memory: FLD m80, FADDP, FSTP m80. Checks every output
    /// against the closed form within 4e-15 relative (float80 results rounded once to double: seen
    /// 7.7e-16), and the float80 sum of a pass against the compensated sum of the closed forms
    /// within 1e-15 (seen 1.5e-16) — tight enough to fail a sum kept in double precision (3.9e-15
    /// here, as the SSE guest's sum shows).
    /// </summary>
    public static SoftwareGuest HornerX87(int passes)
    {
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel();
            a.fninit();
            a.mov(r9d, (uint)passes);
            a.mov(ebx, (uint)HornerConstants);
            a.Label(ref pass);
            a.mov(esi, (uint)Layout.CopySource);
            a.mov(edi, (uint)Layout.CopyDestination);
            a.mov(ecx, (uint)HornerElements);
            a.fldz();
            a.fstp(__tword_ptr[rbx + 32]);
            a.Label(ref top);
            a.fld(__qword_ptr[rsi]);
            a.fsqrt();
            a.fld(st0);
            a.fmul(__qword_ptr[rbx]);
            a.fadd(__qword_ptr[rbx + 8]);
            a.fmul(st0, st1);
            a.fadd(__qword_ptr[rbx + 16]);
            a.fmul(st0, st1);
            a.fadd(__qword_ptr[rbx + 24]);
            a.fdivrp(st1, st0);
            a.fst(__qword_ptr[rdi]);
            a.fld(__tword_ptr[rbx + 32]);
            a.faddp(st1, st0);
            a.fstp(__tword_ptr[rbx + 32]);
            a.add(rsi, 8);
            a.add(rdi, 8);
            a.dec(ecx);
            a.jnz(top);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        long instructions = HornerInstructions(passes, x87: true);
        var g = new SoftwareGuest("x87 float80 Horner + FSQRT + FDIV, m64/m80 operands", Unit.Instruction, instructions,
            instructions, code, Long64Simd(), fourKPages: false)
        {
            FlopsPerRun = (long)passes * HornerElements * HornerFlopsPerElement,
            ResultCheck = s =>
            {
                var outputs = s.Memory.GetSpan(Layout.CopyDestination, HornerElements * 8);
                double sum = 0, compensation = 0;
                for (int k = 0; k < HornerElements; k++)
                {
                    double expected = HornerClosedForm(HornerInput(k));
                    double got = BinaryPrimitives.ReadDoubleLittleEndian(outputs[(k * 8)..]);
                    if (!(Math.Abs(got - expected) <= 4e-15 * Math.Abs(expected)))
                        return $"element {k}: {got:R}, the closed form gives {expected:R}";
                    (sum, compensation) = KahanAdd(sum, compensation, expected);
                }
                double total = Float80ToDouble(s.Memory.GetSpan(HornerConstants + 32, 10));
                return Math.Abs(total - sum) <= 1e-15 * Math.Abs(sum) ? null
                    : $"float80 sum {total:R}, the closed forms sum to {sum:R} (relative error {Math.Abs(total - sum) / sum:E2})";
            },
        };
        WriteHornerData(g);
        return g.Verified();
    }

    /// <summary>
    /// The same arithmetic in SSE scalar double, instruction for instruction: MOVSD, SQRTSD, MOVAPD,
    /// MULSD/ADDSD m64 and MULSD XMM1,XMM0, DIVSD, MOVSD to the output array, and the running sum
    /// in memory (MOVSD, ADDSD, MOVSD). IEEE double is exactly reproducible, so the check is
    /// bit-for-bit against the same operations on the host; each output is also within 1e-14 of
    /// the closed form.
    /// </summary>
    public static SoftwareGuest HornerSse(int passes)
    {
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.mov(ebx, (uint)HornerConstants);
            a.Label(ref pass);
            a.mov(esi, (uint)Layout.CopySource);
            a.mov(edi, (uint)Layout.CopyDestination);
            a.mov(ecx, (uint)HornerElements);
            a.xorpd(xmm2, xmm2);
            a.movsd(__qword_ptr[rbx + 32], xmm2);
            a.Label(ref top);
            a.movsd(xmm0, __qword_ptr[rsi]);
            a.sqrtsd(xmm0, xmm0);
            a.movapd(xmm1, xmm0);
            a.mulsd(xmm1, __qword_ptr[rbx]);
            a.addsd(xmm1, __qword_ptr[rbx + 8]);
            a.mulsd(xmm1, xmm0);
            a.addsd(xmm1, __qword_ptr[rbx + 16]);
            a.mulsd(xmm1, xmm0);
            a.addsd(xmm1, __qword_ptr[rbx + 24]);
            a.divsd(xmm1, xmm0);
            a.movsd(__qword_ptr[rdi], xmm1);
            a.movsd(xmm2, __qword_ptr[rbx + 32]);
            a.addsd(xmm2, xmm1);
            a.movsd(__qword_ptr[rbx + 32], xmm2);
            a.add(rsi, 8);
            a.add(rdi, 8);
            a.dec(ecx);
            a.jnz(top);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        long instructions = HornerInstructions(passes, x87: false);
        var g = new SoftwareGuest("SSE2 scalar double Horner + SQRTSD + DIVSD (same arithmetic)", Unit.Instruction, instructions,
            instructions, code, Long64Simd(), fourKPages: false)
        {
            FlopsPerRun = (long)passes * HornerElements * HornerFlopsPerElement,
            ResultCheck = s =>
            {
                var outputs = s.Memory.GetSpan(Layout.CopyDestination, HornerElements * 8);
                double sum = 0;
                for (int k = 0; k < HornerElements; k++)
                {
                    double x = Math.Sqrt(HornerInput(k));
                    double q = ((((x * HornerC[0] + HornerC[1]) * x + HornerC[2]) * x) + HornerC[3]) / x;
                    sum += q;
                    double got = BinaryPrimitives.ReadDoubleLittleEndian(outputs[(k * 8)..]);
                    if (BitConverter.DoubleToInt64Bits(got) != BitConverter.DoubleToInt64Bits(q))
                        return $"element {k}: {got:R}, the same double operations give {q:R}";
                    double closed = HornerClosedForm(HornerInput(k));
                    if (!(Math.Abs(got - closed) <= 1e-14 * Math.Abs(closed)))
                        return $"element {k}: {got:R}, the closed form gives {closed:R}";
                }
                double total = s.Memory.Read<double>(HornerConstants + 32);
                return BitConverter.DoubleToInt64Bits(total) == BitConverter.DoubleToInt64Bits(sum) ? null
                    : $"double sum {total:R}, the same additions give {sum:R}";
            },
        };
        WriteHornerData(g);
        return g.Verified();
    }

    private static void WriteHornerData(SoftwareGuest g)
    {
        var inputs = new double[HornerElements];
        for (int k = 0; k < inputs.Length; k++) inputs[k] = HornerInput(k);
        g.Memory.Write(Layout.CopySource, System.Runtime.InteropServices.MemoryMarshal.AsBytes(inputs.AsSpan()));
        for (int i = 0; i < HornerC.Length; i++) g.Memory.Write(HornerConstants + (ulong)i * 8, HornerC[i]);
    }

    private static (double Sum, double Compensation) KahanAdd(double sum, double c, double x)
    {
        double y = x - c, t = sum + y;
        return (t, (t - sum) - y);
    }

    /// <summary>A float80 (64-bit significand with explicit integer bit, 15-bit exponent) as the nearest double; NaN for NaN/∞/unnormals.</summary>
    private static double Float80ToDouble(ReadOnlySpan<byte> b)
    {
        ulong significand = BinaryPrimitives.ReadUInt64LittleEndian(b);
        int signExp = BinaryPrimitives.ReadUInt16LittleEndian(b[8..]);
        int exponent = signExp & 0x7FFF;
        if (exponent == 0x7FFF || (exponent != 0 && (significand >> 63) == 0)) return double.NaN;
        double magnitude = Math.ScaleB(significand, (exponent == 0 ? 1 : exponent) - 16383 - 63);
        return (signExp & 0x8000) != 0 ? -magnitude : magnitude;
    }
}
