// Decides, before a snippet runs natively, whether it can fault or harm the host process.
// A fault in native code is fatal to the test process (SIGFPE/SIGSEGV/SIGILL/SIGBUS are not
// recoverable there), so the rule is: run only what is proven safe.
//
// Predicted faults (reported as NativeOutcome.Fault; an engine must raise the same exception):
//   * DIV/IDIV: divisor 0 or quotient out of range -> #DE (SDM Vol. 2A, DIV/IDIV "Operation").
//   * LOCK on an instruction or form that does not allow it -> #UD (SDM Vol. 2A, LOCK).
//   * UD0/UD1/UD2 -> #UD.
//   * CMPXCHG16B, legacy-SSE 128-bit and VEX aligned-move memory operands not aligned -> #GP(0)
//     (SDM Vol. 2A, CMPXCHG16B; Vol. 1 §11.4.1 / §14.9).
// Refused (NativeOutcome.Refused; the harness cannot tell):
//   * undecodable bytes, branches or any other non-sequential flow, privileged or I/O instructions,
//     instructions that may need CPL 0 (RDTSC with CR4.TSD, SMSW with UMIP…), CPUID features the
//     host lacks;
//   * writes to segment, control or debug registers; FS/GS-relative memory (.NET keeps its thread
//     state there); POPF (could set TF or AC); loads of FCW/MXCSR/x87 environment (could unmask
//     exceptions); ENTER (its nesting reads are not described by Iced's used-memory list);
//   * any memory access outside the window, or whose address depends on a register written by an
//     earlier instruction of the snippet (values are tracked only through PUSH/POP's RSP changes);
//   * x87/MMX instructions while an x87 exception is unmasked or pending, SSE/AVX while an MXCSR
//     exception is unmasked (#MF/#XM would be SIGFPE);
//   * an input MXCSR with bits outside MXCSR_MASK (the trampoline's FXRSTOR would #GP).
using System.Collections.Frozen;
using Iced.Intel;

namespace SharpVisor.HostCpu;

public sealed class CasePreflight
{
    private static readonly FrozenSet<Mnemonic> DeniedMnemonics = new[]
    {
        Mnemonic.Popf, Mnemonic.Popfd, Mnemonic.Popfq, Mnemonic.Enter,
        Mnemonic.Fldcw, Mnemonic.Fldenv, Mnemonic.Frstor, Mnemonic.Fxrstor, Mnemonic.Fxrstor64,
        Mnemonic.Ldmxcsr, Mnemonic.Vldmxcsr, Mnemonic.Xrstor, Mnemonic.Xrstor64, Mnemonic.Xrstors, Mnemonic.Xrstors64,
        Mnemonic.Wrfsbase, Mnemonic.Wrgsbase, Mnemonic.Wrpkru, Mnemonic.Xsetbv,
    }.ToFrozenSet();

    /// <summary>Legacy-SSE instructions whose 128-bit memory operand may be unaligned (SDM Vol. 1 §11.4.1, §12.1.4 for PCMPxSTRx).</summary>
    private static readonly FrozenSet<Mnemonic> UnalignedSseMnemonics = new[]
    {
        Mnemonic.Movups, Mnemonic.Movupd, Mnemonic.Movdqu, Mnemonic.Lddqu, Mnemonic.Maskmovdqu,
        Mnemonic.Pcmpestri, Mnemonic.Pcmpestri64, Mnemonic.Pcmpestrm, Mnemonic.Pcmpestrm64, Mnemonic.Pcmpistri, Mnemonic.Pcmpistrm,
    }.ToFrozenSet();

    /// <summary>VEX/EVEX moves that keep the alignment requirement.</summary>
    private static readonly FrozenSet<Mnemonic> AlignedVexMnemonics = new[]
    {
        Mnemonic.Vmovaps, Mnemonic.Vmovapd, Mnemonic.Vmovdqa, Mnemonic.Vmovntps, Mnemonic.Vmovntpd, Mnemonic.Vmovntdq, Mnemonic.Vmovntdqa,
    }.ToFrozenSet();

    private static readonly FrozenSet<CpuidFeature> X87Features = new[]
    {
        CpuidFeature.FPU, CpuidFeature.FPU287, CpuidFeature.FPU387, CpuidFeature.MMX,
    }.ToFrozenSet();

    private static readonly FrozenSet<CpuidFeature> SimdFeatures = new[]
    {
        CpuidFeature.SSE, CpuidFeature.SSE2, CpuidFeature.SSE3, CpuidFeature.SSSE3, CpuidFeature.SSE4_1, CpuidFeature.SSE4_2,
        CpuidFeature.AVX, CpuidFeature.AVX2, CpuidFeature.FMA, CpuidFeature.F16C, CpuidFeature.AES, CpuidFeature.PCLMULQDQ, CpuidFeature.SHA,
    }.ToFrozenSet();

    private readonly HostFeatures _features;
    private readonly uint _mxcsrMask;
    private readonly InstructionInfoFactory _infoFactory = new();

    public CasePreflight(HostFeatures features, uint mxcsrMask)
    {
        _features = features;
        _mxcsrMask = mxcsrMask;
    }

    /// <summary>
    /// Null when the case may run; otherwise the predicted fault or the refusal.
    /// <paramref name="windowBase"/> is where the window will be (relocated registers get it added),
    /// <paramref name="codeAddress"/> the RIP of the first snippet byte.
    /// </summary>
    public NativeResult? Check(NativeCase c, ulong windowBase, ulong codeAddress)
    {
        if (c.Code.Length > NativeLayout.MaxCodeLength) return Refuse(c, "snippet too long");
        if ((c.Input.Mxcsr & ~_mxcsrMask) != 0) return Refuse(c, $"MXCSR {c.Input.Mxcsr:x} has bits outside MXCSR_MASK {_mxcsrMask:x}");

        var regs = c.Input;
        regs.Relocate(c.EffectiveRelocatedGprs, windowBase);
        Span<bool> known = stackalloc bool[16];
        known.Fill(true);
        bool memoryKnown = true;
        bool df = (c.Input.Rflags & RflagsBits.DF) != 0;
        bool x87Risky = (c.Input.Fcw & 0x3F) != 0x3F || (c.Input.Fsw & 0x80) != 0;
        bool simdRisky = ((c.Input.Mxcsr >> 7) & 0x3F) != 0x3F;

        var decoder = Decoder.Create(64, new ByteArrayCodeReader(c.Code), codeAddress, DecoderOptions.None);
        ulong end = codeAddress + (ulong)c.Code.Length;
        while (decoder.IP < end)
        {
            ulong at = decoder.IP - codeAddress;
            decoder.Decode(out var instr);
            if (instr.IsInvalid || instr.NextIP > end)
            {
                // Iced rejects LOCK on forms that do not allow it; the CPU raises #UD for those (SDM Vol. 2A, LOCK).
                var lax = Decoder.Create(64, new ByteArrayCodeReader(c.Code, (int)at, c.Code.Length - (int)at), codeAddress + at, DecoderOptions.NoInvalidCheck);
                lax.Decode(out var unchecked_);
                if (!unchecked_.IsInvalid && unchecked_.NextIP <= end && unchecked_.HasLockPrefix
                    && (!unchecked_.OpCode.CanUseLockPrefix || unchecked_.Op0Kind != OpKind.Memory))
                    return Fault(c, X86Exception.UD, $"+{at} {unchecked_}: LOCK not allowed here");
                return Refuse(c, $"undecodable bytes at +{at}");
            }
            var op = instr.OpCode;
            // Formatting an instruction costs microseconds and allocates: only for a verdict.
            string Where() => $"+{at} {instr}";

            if (instr.HasLockPrefix && (!op.CanUseLockPrefix || instr.Op0Kind != OpKind.Memory))
                return Fault(c, X86Exception.UD, $"{Where()}: LOCK not allowed here");
            if (instr.FlowControl == FlowControl.Exception) return Fault(c, X86Exception.UD, $"{Where()}: undefined-opcode instruction");
            if (instr.FlowControl != FlowControl.Next) return Refuse(c, $"{Where()}: changes control flow");
            if (op.IsPrivileged || !op.Cpl3 || op.MayRequireCpl0 || op.IsInputOutput) return Refuse(c, $"{Where()}: privileged or I/O");
            if (DeniedMnemonics.Contains(instr.Mnemonic)) return Refuse(c, $"{Where()}: would change host-wide state");
            if (!_features.CanExecute(instr)) return Refuse(c, $"{Where()}: host lacks a CPUID feature");
            foreach (var f in instr.CpuidFeatures)
            {
                if (x87Risky && X87Features.Contains(f)) return Refuse(c, $"{Where()}: x87 exception unmasked or pending");
                if (simdRisky && SimdFeatures.Contains(f)) return Refuse(c, $"{Where()}: MXCSR exception unmasked");
            }

            var info = _infoFactory.GetInfo(instr);
            bool writesMemory = false;
            foreach (var mem in info.GetUsedMemory())
            {
                if (mem.Access == OpAccess.NoMemAccess) continue;
                if (mem.Segment is Register.FS or Register.GS) return Refuse(c, $"{Where()}: FS/GS-relative memory");
                if (!TryAddress(mem, instr, regs, known, out ulong address))
                    return Refuse(c, $"{Where()}: address depends on a register written earlier in the snippet");
                ulong size = (ulong)mem.MemorySize.GetSize();
                if (size == 0) size = 1;

                if (instr.IsStringInstruction && (instr.HasRepPrefix || instr.HasRepnePrefix))
                {
                    if (!known[1]) return Refuse(c, $"{Where()}: repeat count written earlier in the snippet");
                    ulong count = mem.AddressSize == CodeSize.Code32 ? (uint)regs.Gpr[1] : regs.Gpr[1];
                    if (count == 0) continue;
                    if (count > NativeLayout.WindowSize) return Refuse(c, $"{Where()}: string operation leaves the window");
                    if (df) address -= (count - 1) * size;
                    size *= count;
                }
                else if (instr.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc && instr.Op1Kind == OpKind.Register)
                {
                    // Register bit offsets reach beyond the operand (SDM Vol. 2A, BT): EA + size·floor(offset / bits).
                    var bitReg = instr.Op1Register;
                    if (!known[Index(bitReg)]) return Refuse(c, $"{Where()}: bit offset written earlier in the snippet");
                    int bits = (int)size * 8;
                    long offset = SignExtend(ReadRegister(regs, bitReg), bits);
                    address += (ulong)((offset >> (int)Math.Log2(bits)) * (long)size);
                }

                if (!InWindow(address, size, windowBase)) return Refuse(c, $"{Where()}: memory at {address:x} outside the window");

                if (AlignmentFault(instr, op, size, address)) return Fault(c, X86Exception.GP, $"{Where()}: misaligned memory operand");
                if (mem.Access is OpAccess.Write or OpAccess.CondWrite or OpAccess.ReadWrite or OpAccess.ReadCondWrite)
                    writesMemory = true;
            }

            if (instr.Mnemonic is Mnemonic.Div or Mnemonic.Idiv)
            {
                var de = PredictDivide(instr, regs, known, memoryKnown, c.Window, windowBase, out string? why);
                if (why is not null) return Refuse(c, $"{Where()}: {why}");
                if (de) return Fault(c, X86Exception.DE, $"{Where()}: divisor zero or quotient too large");
            }

            // Track what later instructions may rely on.
            if (writesMemory) memoryKnown = false;
            foreach (var used in info.GetUsedRegisters())
            {
                if (used.Access is not (OpAccess.Write or OpAccess.CondWrite or OpAccess.ReadWrite or OpAccess.ReadCondWrite)) continue;
                var r = used.Register;
                if (r.IsSegmentRegister() || r.IsCR() || r.IsDR() || r.IsTR()) return Refuse(c, $"{Where()}: writes {r}");
                if (r.IsGPR())
                {
                    int idx = Index(r);
                    bool implicitRsp = idx == 4 && op.IsStackInstruction && !ExplicitlyUses(instr, r);
                    if (implicitRsp) regs.Gpr[4] += (ulong)(long)instr.StackPointerIncrement;
                    else known[idx] = false;
                }
            }
            if (instr.Mnemonic == Mnemonic.Cld) df = false;
            if (instr.Mnemonic == Mnemonic.Std) df = true;
        }
        return null;
    }

    private static bool ExplicitlyUses(in Instruction instr, Register r)
    {
        for (int i = 0; i < instr.OpCount; i++)
            if (instr.GetOpKind(i) == OpKind.Register && instr.GetOpRegister(i).GetFullRegister() == r.GetFullRegister()) return true;
        return false;
    }

    private static bool AlignmentFault(in Instruction instr, OpCodeInfo op, ulong size, ulong address)
    {
        if (instr.Mnemonic == Mnemonic.Cmpxchg16b) return address % 16 != 0;
        if (instr.Mnemonic is Mnemonic.Fxsave or Mnemonic.Fxsave64) return address % 16 != 0;
        if (op.Encoding == EncodingKind.Legacy && size == 16 && !UnalignedSseMnemonics.Contains(instr.Mnemonic))
        {
            foreach (var f in instr.CpuidFeatures)
                if (SimdFeatures.Contains(f)) return address % 16 != 0;
        }
        if (op.Encoding != EncodingKind.Legacy && AlignedVexMnemonics.Contains(instr.Mnemonic)) return address % size != 0;
        return false;
    }

    /// <summary>True when DIV/IDIV would raise #DE; <paramref name="why"/> set when the operands are not known.</summary>
    private static bool PredictDivide(in Instruction instr, in NativeState regs, ReadOnlySpan<bool> known, bool memoryKnown,
        byte[] window, ulong windowBase, out string? why)
    {
        why = null;
        int bytes;
        ulong divisor;
        if (instr.Op0Kind == OpKind.Register)
        {
            var r = instr.Op0Register;
            if (!known[Index(r)]) { why = "divisor written earlier in the snippet"; return false; }
            bytes = r.GetSize();
            divisor = ReadRegister(regs, r);
        }
        else
        {
            if (!memoryKnown) { why = "divisor memory written earlier in the snippet"; return false; }
            bytes = instr.MemorySize.GetSize();
            ulong address = EffectiveAddress(instr, regs);
            ulong offset = address - windowBase; // the memory loop proved it is inside
            divisor = 0;
            for (int i = bytes - 1; i >= 0; i--) divisor = (divisor << 8) | window[(int)offset + i];
        }
        if (!known[0] || (bytes > 1 && !known[2])) { why = "dividend written earlier in the snippet"; return false; }
        if (divisor == 0) return true;

        int bits = bytes * 8;
        UInt128 dividend = bytes == 1
            ? (ushort)regs.Gpr[0]
            : ((UInt128)(regs.Gpr[2] & Mask(bits)) << bits) | (regs.Gpr[0] & Mask(bits));
        if (instr.Mnemonic == Mnemonic.Div) return dividend / divisor > Mask(bits);

        Int128 signedDividend = (Int128)(dividend << (128 - 2 * bits)) >> (128 - 2 * bits);
        long signedDivisor = SignExtend(divisor, bits);
        if (signedDivisor == -1 && signedDividend == Int128.MinValue) return true; // only possible for 64-bit, would trap in .NET too
        Int128 quotient = signedDividend / signedDivisor; // truncates toward zero like IDIV
        Int128 max = ((Int128)1 << (bits - 1)) - 1, min = -((Int128)1 << (bits - 1));
        return quotient > max || quotient < min;
    }

    private static ulong EffectiveAddress(in Instruction instr, in NativeState regs)
    {
        ulong a = instr.MemoryDisplacement64; // for RIP-relative operands Iced stores the absolute target here
        if (instr.MemoryBase is not (Register.None or Register.RIP or Register.EIP)) a += ReadRegister(regs, instr.MemoryBase);
        if (instr.MemoryIndex != Register.None) a += ReadRegister(regs, instr.MemoryIndex) * (ulong)instr.MemoryIndexScale;
        return instr.MemoryBase.IsGPR32() || instr.MemoryIndex.IsGPR32() ? (uint)a : a;
    }

    private static bool TryAddress(in UsedMemory mem, in Instruction instr, in NativeState regs, ReadOnlySpan<bool> known, out ulong address)
    {
        address = mem.Displacement;
        if (mem.Base is Register.RIP or Register.EIP) address = mem.Displacement; // Iced gives RIP-relative targets as absolute
        else if (mem.Base != Register.None)
        {
            if (!known[Index(mem.Base)]) return false;
            address += ReadRegister(regs, mem.Base);
        }
        if (mem.Index != Register.None)
        {
            if (!mem.Index.IsGPR() || !known[Index(mem.Index)]) return false; // VSIB gathers are not handled
            address += ReadRegister(regs, mem.Index) * (ulong)mem.Scale;
        }
        if (mem.AddressSize == CodeSize.Code32) address = (uint)address;
        return true;
    }

    private static bool InWindow(ulong address, ulong size, ulong windowBase) =>
        address >= windowBase && size <= NativeLayout.WindowSize && address - windowBase <= (ulong)NativeLayout.WindowSize - size;

    /// <summary>Index (0–15) of the 64-bit register containing <paramref name="r"/>.</summary>
    public static int Index(Register r) => r.GetFullRegister() - Register.RAX;

    /// <summary>Value of a GPR of any width (AH–BH are bits 8–15).</summary>
    public static ulong ReadRegister(in NativeState s, Register r)
    {
        if (r is Register.AH or Register.CH or Register.DH or Register.BH) return (s.Gpr[r - Register.AH] >> 8) & 0xFF;
        ulong v = s.Gpr[Index(r)];
        return v & Mask(r.GetSize() * 8);
    }

    public static ulong Mask(int bits) => bits >= 64 ? ulong.MaxValue : (1UL << bits) - 1;

    public static long SignExtend(ulong value, int bits) => bits >= 64 ? (long)value : (long)(value << (64 - bits)) >> (64 - bits);

    private static NativeResult Refuse(NativeCase c, string reason) =>
        new() { Outcome = NativeOutcome.Refused, Reason = reason, Output = c.Input, Window = (byte[])c.Window.Clone() };

    private static NativeResult Fault(NativeCase c, X86Exception vector, string reason) =>
        new() { Outcome = NativeOutcome.Fault, Exception = vector, Reason = reason, Output = c.Input, Window = (byte[])c.Window.Clone() };
}
