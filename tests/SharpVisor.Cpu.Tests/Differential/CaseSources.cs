// Case sources beyond the HostCpu catalogue: string instructions, LOCK prefixes, stack forms.
//
// Strings: cases for the string instructions (SDM Vol. 2B: MOVS, STOS, LODS, CMPS, SCAS; Vol. 2B REP/REPE/REPNE),
// which the HostCpu catalogue does not generate: byte/word/doubleword/quadword forms, no prefix, REP
// (F3) and, for CMPS/SCAS, REPNE (F2), DF clear or set, 64-bit addresses. RSI and RDI are window
// offsets (relocated) placed so that every element of the repeated operation stays in the window;
// RCX is small (0–40). The data are drawn from a small alphabet so that REPE/REPNE comparisons end
// early as often as they run out. REPNE on MOVS/STOS/LODS is not generated: the SDM leaves it undefined.
using Iced.Intel;
using SharpVisor.HostCpu;
using static Iced.Intel.AssemblerRegisters;
using RflagsBits = SharpVisor.HostCpu.RflagsBits;

namespace SharpVisor.Cpu.Tests.Differential;

internal static class StringCases
{
    private const byte Rep = 0xF3, Repne = 0xF2, OperandSize16 = 0x66, RexW = 0x48;

    /// <summary>Opcode of the byte form; the word/dword/qword form is the next opcode.</summary>
    private static readonly byte[] ByteOpcodes = [0xA4 /* MOVSB */, 0xAA /* STOSB */, 0xAC /* LODSB */, 0xA6 /* CMPSB */, 0xAE /* SCASB */];

    public static NativeCase Make(Random rng)
    {
        int kind = rng.Next(ByteOpcodes.Length);
        bool compare = ByteOpcodes[kind] is 0xA6 or 0xAE;
        int size = 1 << rng.Next(4);
        int prefix = rng.Next(compare ? 3 : 2); // 0 none, 1 REP/REPE, 2 REPNE
        bool df = rng.Next(3) == 0;

        var code = new List<byte>();
        if (prefix == 1) code.Add(Rep);
        if (prefix == 2) code.Add(Repne);
        if (size == 2) code.Add(OperandSize16);
        if (size == 8) code.Add(RexW);
        code.Add((byte)(ByteOpcodes[kind] + (size == 1 ? 0 : 1)));

        var input = NativeState.Initial();
        Span<byte> raw = stackalloc byte[8];
        for (int i = 0; i < 16; i++) { rng.NextBytes(raw); input.Gpr[i] = BitConverter.ToUInt64(raw); }
        input.Rsp = NativeLayout.DefaultRsp;
        rng.NextBytes(raw);
        input.Rflags = RflagsBits.Reserved1 | (BitConverter.ToUInt64(raw) & RflagsBits.Status) | (df ? RflagsBits.DF : 0);

        // Element count: 0 and 1 matter, then anything up to 40; without a prefix RCX is just a bystander.
        ulong count = (ulong)(rng.Next(4) switch { 0 => 0, 1 => 1, _ => rng.Next(41) });
        if (prefix != 0) input.Rcx = count;
        ulong span = Math.Max(1, count) * (ulong)size;
        input.Rsi = Pointer(rng, span, size, df);
        input.Rdi = Pointer(rng, span, size, df);

        var window = new byte[NativeLayout.WindowSize];
        // A small alphabet (two values per byte, sometimes one) makes equal elements common.
        byte a = (byte)rng.Next(256), b = rng.Next(4) == 0 ? a : (byte)rng.Next(256);
        for (int i = 0; i < NativeLayout.DataSize; i++) window[i] = rng.Next(8) == 0 ? b : a;
        if (rng.Next(2) == 0) input.Rax = 0x0101_0101_0101_0101UL * (rng.Next(2) == 0 ? a : b); // SCAS finds it

        return new NativeCase
        {
            Code = code.ToArray(),
            Input = input,
            Window = window,
            RelocatedGprs = (1 << 6) | (1 << 7), // RSI, RDI
            Description = Convert.ToHexString(code.ToArray()),
        };
    }

    /// <summary>A data-area offset from which <paramref name="span"/> bytes can be walked up (DF=0) or down (DF=1).</summary>
    private static ulong Pointer(Random rng, ulong span, int size, bool df)
    {
        ulong low = df ? span - (ulong)size : 0;
        ulong high = df ? NativeLayout.DataSize - (ulong)size : NativeLayout.DataSize - span;
        ulong p = low + (ulong)rng.NextInt64((long)(high - low + 1));
        if (rng.Next(2) == 0) p &= ~(ulong)(size - 1); // aligned half of the time
        return Math.Max(p, low);
    }
}

/// <summary>
/// Generated integer cases with a LOCK prefix put in front (SDM Vol. 2A, LOCK): allowed only on the
/// read-modify-write forms with a memory destination (ADD ADC AND BTC BTR BTS CMPXCHG DEC INC NEG NOT
/// OR SBB SUB XOR XADD XCHG), where it must not change the result; anywhere else it raises #UD.
/// </summary>
internal static class LockCases
{
    private const byte Lock = 0xF0;

    /// <summary>
    /// Two cases in three use a form that may take LOCK (its memory form), the rest any form: the #UD
    /// verdicts are slow in the native harness (it formats the instruction for its reason).
    /// </summary>
    public static Func<Random, NativeCase> For(IReadOnlyList<InstructionForm> forms)
    {
        var lockable = forms.Where(f => f.Memory && f.Code.ToOpCode().CanUseLockPrefix).ToArray();
        return rng =>
        {
            var pool = rng.Next(3) == 0 ? forms : lockable;
            return Prefixed(new CaseGenerator(rng.Next()).Generate(pool[rng.Next(pool.Count)]));
        };
    }

    private static NativeCase Prefixed(NativeCase c) =>
        new()
        {
            Code = [Lock, .. c.Code],
            Input = c.Input,
            Window = c.Window,
            RelocatedGprs = c.RelocatedGprs,
            Description = "lock " + c.Description,
        };
}

/// <summary>
/// Stack forms the catalogue leaves out (SDM Vol. 2B, PUSH, POP, LEAVE): PUSH/POP of memory addressed
/// through RSP itself (POP computes that address after incrementing RSP; PUSH before decrementing),
/// 16-bit PUSH/POP of registers and memory, PUSH of sign-extended immediates, and LEAVE with RBP in the
/// stack area (followed by MOV RAX, RBP; MOV RBP, RSP so that the popped value is compared and RBP
/// ends as a window address again). PUSHF is not generated: it would store the host's IF and the engine's, which differ.
/// </summary>
internal static class StackCases
{
    private static readonly AssemblerRegister64[] Registers = [rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    private static readonly AssemblerRegister16[] Registers16 = [ax, cx, dx, bx, bp, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w];

    public static NativeCase Make(Random rng)
    {
        int d = rng.Next(-8, 9) * (rng.Next(2) == 0 ? 8 : 2);
        int r = rng.Next(Registers.Length);
        int imm = rng.Next(4) switch { 0 => rng.Next(-128, 128), 1 => 0x7FFF_FFFF, 2 => int.MinValue, _ => rng.Next() - (1 << 30) };
        int kind = rng.Next(9);
        ushort relocated = 0;
        var code = NativeSnippet.Assemble(a =>
        {
            switch (kind)
            {
                case 0: a.push(__qword_ptr[rsp + d]); break;
                case 1: a.pop(__qword_ptr[rsp + d]); break;
                case 2: a.push(__word_ptr[rsp + d]); break;
                case 3: a.pop(__word_ptr[rsp + d]); break;
                case 4: a.push(Registers16[r]); break;
                case 5: a.pop(Registers16[r]); break;
                case 6: a.push(imm); break;
                case 7: a.db(0x66, 0x68, (byte)imm, (byte)(imm >> 8)); break; // PUSH imm16
                default:
                    // The popped RBP is an arbitrary value, but RBP is relocated (it held a window address):
                    // move it to RAX, which is compared as is, and leave a window address in RBP.
                    a.leave(); a.mov(rax, rbp); a.mov(rbp, rsp);
                    break;
            }
        });
        var c = NativeSnippet.Case(code);
        var window = c.Window;
        rng.NextBytes(window);
        Span<byte> raw = stackalloc byte[8];
        for (int i = 0; i < 16; i++)
        {
            if (i == 4) continue;
            rng.NextBytes(raw);
            c.Input.Gpr[i] = BitConverter.ToUInt64(raw);
        }
        rng.NextBytes(raw);
        c.Input.Rflags = RflagsBits.Reserved1 | (BitConverter.ToUInt64(raw) & RflagsBits.Status);
        if (kind == 8)
        {
            // LEAVE: RSP := RBP, then RBP := pop; RBP must point into the stack area.
            c.Input.Rbp = NativeLayout.DefaultRsp + (ulong)(rng.Next(-32, 33) * 8) + (ulong)(rng.Next(4) == 0 ? rng.Next(8) : 0);
            relocated = 1 << 5;
        }
        return new NativeCase { Code = c.Code, Input = c.Input, Window = window, RelocatedGprs = relocated, Description = Convert.ToHexString(code) };
    }
}
