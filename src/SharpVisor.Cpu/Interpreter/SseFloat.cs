// SSE/SSE2/SSE3/SSE4.1 floating-point and floating-point data-movement instructions, legacy
// encodings (Intel SDM Vol. 1 ch. 10–12, Vol. 2 instruction pages; exception classes Vol. 2 §2.4).
// Arithmetic goes through SseFloatMath, an exact software core honouring MXCSR (RC, FTZ, DAZ, masks).
// Unmasked exceptions (SDM Vol. 1 §11.5.2): pre-computation exceptions (IE, DE, ZE) of every lane are
// found first; if any is unmasked only those flags are recorded and nothing is computed; otherwise all
// flags of all lanes are recorded and an unmasked post-computation exception (OE, UE, PE) still leaves
// every destination unchanged. Either way the instruction raises #XM (or #UD without CR4.OSXMMEXCPT).
// Alignment: 16-byte legacy memory operands must be 16-byte aligned (#GP(0)) except MOVUPS/MOVUPD;
// scalar and 64-bit memory operands never need alignment.
// Deliberate deviation: RCPPS/RCPSS/RSQRTPS/RSQRTSS are approximations whose exact bits are
// implementation-specific (SDM: relative error ≤ 1.5·2^-12); we execute the host's own instruction
// (System.Runtime.Intrinsics.X86.Sse) so the guest sees the host silicon's values, as it would under
// hardware virtualization. They do not depend on MXCSR. On a host without SSE they are Unsupported.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>SSE–SSE4.1 floating-point instruction semantics (SDM Vol. 1 ch. 10–12).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>
    /// The mnemonics <see cref="ExecuteSseFloat"/> implements, exactly its case labels: FpuSimd.cs
    /// classifies each SIMD code once at startup with it, so every instruction reaches one handler.
    /// A label missing here sends the instruction to the integer handler, which stops it as
    /// unsupported (the SSE float tests would see it), never a silent wrong result.
    /// </summary>
    internal static ReadOnlySpan<Mnemonic> SseFloatMnemonics =>
    [
        Mnemonic.Movaps, Mnemonic.Movapd, Mnemonic.Movntps, Mnemonic.Movntpd, Mnemonic.Movups, Mnemonic.Movupd, Mnemonic.Movss,
        Mnemonic.Movsd, Mnemonic.Movlps, Mnemonic.Movlpd, Mnemonic.Movhps, Mnemonic.Movhpd, Mnemonic.Movhlps, Mnemonic.Movlhps,
        Mnemonic.Movmskps, Mnemonic.Movmskpd, Mnemonic.Movddup, Mnemonic.Movsldup, Mnemonic.Movshdup, Mnemonic.Unpcklps, Mnemonic.Unpckhps,
        Mnemonic.Unpcklpd, Mnemonic.Unpckhpd, Mnemonic.Shufps, Mnemonic.Shufpd, Mnemonic.Blendps, Mnemonic.Blendpd, Mnemonic.Blendvps,
        Mnemonic.Blendvpd, Mnemonic.Andps, Mnemonic.Andpd, Mnemonic.Andnps, Mnemonic.Andnpd, Mnemonic.Orps, Mnemonic.Orpd,
        Mnemonic.Xorps, Mnemonic.Xorpd, Mnemonic.Insertps, Mnemonic.Extractps, Mnemonic.Addps, Mnemonic.Addpd, Mnemonic.Addss,
        Mnemonic.Addsd, Mnemonic.Subps, Mnemonic.Subpd, Mnemonic.Subss, Mnemonic.Subsd, Mnemonic.Mulps, Mnemonic.Mulpd,
        Mnemonic.Mulss, Mnemonic.Mulsd, Mnemonic.Divps, Mnemonic.Divpd, Mnemonic.Divss, Mnemonic.Divsd, Mnemonic.Minps,
        Mnemonic.Minpd, Mnemonic.Minss, Mnemonic.Minsd, Mnemonic.Maxps, Mnemonic.Maxpd, Mnemonic.Maxss, Mnemonic.Maxsd,
        Mnemonic.Sqrtps, Mnemonic.Sqrtpd, Mnemonic.Sqrtss, Mnemonic.Sqrtsd, Mnemonic.Roundps, Mnemonic.Roundpd, Mnemonic.Roundss,
        Mnemonic.Roundsd, Mnemonic.Rcpps, Mnemonic.Rsqrtps, Mnemonic.Rcpss, Mnemonic.Rsqrtss, Mnemonic.Addsubps, Mnemonic.Addsubpd,
        Mnemonic.Haddps, Mnemonic.Hsubps, Mnemonic.Haddpd, Mnemonic.Hsubpd, Mnemonic.Dpps, Mnemonic.Dppd, Mnemonic.Cmpps,
        Mnemonic.Cmppd, Mnemonic.Cmpss, Mnemonic.Cmpsd, Mnemonic.Comiss, Mnemonic.Ucomiss, Mnemonic.Comisd, Mnemonic.Ucomisd,
        Mnemonic.Cvtps2pd, Mnemonic.Cvtpd2ps, Mnemonic.Cvtss2sd, Mnemonic.Cvtsd2ss, Mnemonic.Cvtdq2ps, Mnemonic.Cvtps2dq, Mnemonic.Cvttps2dq,
        Mnemonic.Cvtdq2pd, Mnemonic.Cvtpd2dq, Mnemonic.Cvttpd2dq, Mnemonic.Cvtsi2ss, Mnemonic.Cvtsi2sd, Mnemonic.Cvtss2si, Mnemonic.Cvttss2si,
        Mnemonic.Cvtsd2si, Mnemonic.Cvttsd2si, Mnemonic.Cvtpi2ps, Mnemonic.Cvtps2pi, Mnemonic.Cvttps2pi, Mnemonic.Cvtpi2pd, Mnemonic.Cvtpd2pi,
        Mnemonic.Cvttpd2pi,
    ];

    /// <summary>Runs one SSE floating-point or data-movement instruction (one of <see cref="SseFloatMnemonics"/>).</summary>
    private Status ExecuteSseFloat(ref Instruction i)
    {
        switch (i.Mnemonic)
        {
            // ---- data movement
            case Mnemonic.Movaps: case Mnemonic.Movapd: case Mnemonic.Movntps: case Mnemonic.Movntpd:
                return Move128(ref i, aligned: true);
            case Mnemonic.Movups: case Mnemonic.Movupd:
                return Move128(ref i, aligned: false);
            case Mnemonic.Movss: return MoveScalar(ref i, 4);
            case Mnemonic.Movsd: return MoveScalar(ref i, 8);
            case Mnemonic.Movlps: case Mnemonic.Movlpd: return MoveHalf(ref i, high: false);
            case Mnemonic.Movhps: case Mnemonic.Movhpd: return MoveHalf(ref i, high: true);
            case Mnemonic.Movhlps:
            {
                ref var dst = ref Xmm(i.Op0Register);
                dst = dst.AsUInt64().WithElement(0, Xmm(i.Op1Register).AsUInt64().GetElement(1)).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Movlhps:
            {
                ref var dst = ref Xmm(i.Op0Register);
                dst = dst.AsUInt64().WithElement(1, Xmm(i.Op1Register).AsUInt64().GetElement(0)).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Movmskps: case Mnemonic.Movmskpd:
            {
                var v = Xmm(i.Op1Register);
                ulong mask = i.Mnemonic == Mnemonic.Movmskps
                    ? (v.AsUInt32().GetElement(0) >> 31) | (v.AsUInt32().GetElement(1) >> 31) << 1
                      | (v.AsUInt32().GetElement(2) >> 31) << 2 | (v.AsUInt32().GetElement(3) >> 31) << 3
                    : (v.AsUInt64().GetElement(0) >> 63) | (v.AsUInt64().GetElement(1) >> 63) << 1;
                SetReg(i.Op0Register, mask);
                return Status.Ok;
            }
            case Mnemonic.Movddup:
            {
                var st = ReadScalar(ref i, 1, 8, out ulong lo);
                if (st != Status.Ok) return st;
                Xmm(i.Op0Register) = Vector128.Create(lo, lo).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Movsldup: case Mnemonic.Movshdup:
            {
                var st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
                if (st != Status.Ok) return st;
                var u = s.AsUInt32();
                int k = i.Mnemonic == Mnemonic.Movshdup ? 1 : 0;
                Xmm(i.Op0Register) = Vector128.Create(u.GetElement(k), u.GetElement(k), u.GetElement(k + 2), u.GetElement(k + 2)).AsByte();
                return Status.Ok;
            }

            // ---- shuffles, blends, inserts
            case Mnemonic.Unpcklps: case Mnemonic.Unpckhps: case Mnemonic.Unpcklpd: case Mnemonic.Unpckhpd:
            case Mnemonic.Shufps: case Mnemonic.Shufpd: case Mnemonic.Blendps: case Mnemonic.Blendpd:
            case Mnemonic.Blendvps: case Mnemonic.Blendvpd:
            case Mnemonic.Andps: case Mnemonic.Andpd: case Mnemonic.Andnps: case Mnemonic.Andnpd:
            case Mnemonic.Orps: case Mnemonic.Orpd: case Mnemonic.Xorps: case Mnemonic.Xorpd:
                return Permute(ref i);
            case Mnemonic.Insertps: return Insertps(ref i);
            case Mnemonic.Extractps:
            {
                uint v = Xmm(i.Op1Register).AsUInt32().GetElement(i.Immediate8 & 3);
                return WriteOp(ref i, 0, 4, v);
            }

            // ---- arithmetic
            case Mnemonic.Addps: return Arith(ref i, SseOp.Add, false, false);
            case Mnemonic.Addpd: return Arith(ref i, SseOp.Add, true, false);
            case Mnemonic.Addss: return Arith(ref i, SseOp.Add, false, true);
            case Mnemonic.Addsd: return Arith(ref i, SseOp.Add, true, true);
            case Mnemonic.Subps: return Arith(ref i, SseOp.Sub, false, false);
            case Mnemonic.Subpd: return Arith(ref i, SseOp.Sub, true, false);
            case Mnemonic.Subss: return Arith(ref i, SseOp.Sub, false, true);
            case Mnemonic.Subsd: return Arith(ref i, SseOp.Sub, true, true);
            case Mnemonic.Mulps: return Arith(ref i, SseOp.Mul, false, false);
            case Mnemonic.Mulpd: return Arith(ref i, SseOp.Mul, true, false);
            case Mnemonic.Mulss: return Arith(ref i, SseOp.Mul, false, true);
            case Mnemonic.Mulsd: return Arith(ref i, SseOp.Mul, true, true);
            case Mnemonic.Divps: return Arith(ref i, SseOp.Div, false, false);
            case Mnemonic.Divpd: return Arith(ref i, SseOp.Div, true, false);
            case Mnemonic.Divss: return Arith(ref i, SseOp.Div, false, true);
            case Mnemonic.Divsd: return Arith(ref i, SseOp.Div, true, true);
            case Mnemonic.Minps: return Arith(ref i, SseOp.Min, false, false);
            case Mnemonic.Minpd: return Arith(ref i, SseOp.Min, true, false);
            case Mnemonic.Minss: return Arith(ref i, SseOp.Min, false, true);
            case Mnemonic.Minsd: return Arith(ref i, SseOp.Min, true, true);
            case Mnemonic.Maxps: return Arith(ref i, SseOp.Max, false, false);
            case Mnemonic.Maxpd: return Arith(ref i, SseOp.Max, true, false);
            case Mnemonic.Maxss: return Arith(ref i, SseOp.Max, false, true);
            case Mnemonic.Maxsd: return Arith(ref i, SseOp.Max, true, true);
            case Mnemonic.Sqrtps: return Unary(ref i, false, false);
            case Mnemonic.Sqrtpd: return Unary(ref i, true, false);
            case Mnemonic.Sqrtss: return Unary(ref i, false, true);
            case Mnemonic.Sqrtsd: return Unary(ref i, true, true);
            case Mnemonic.Roundps: return Unary(ref i, false, false);
            case Mnemonic.Roundpd: return Unary(ref i, true, false);
            case Mnemonic.Roundss: return Unary(ref i, false, true);
            case Mnemonic.Roundsd: return Unary(ref i, true, true);
            case Mnemonic.Rcpps: case Mnemonic.Rsqrtps: return Approximate(ref i, scalar: false);
            case Mnemonic.Rcpss: case Mnemonic.Rsqrtss: return Approximate(ref i, scalar: true);
            case Mnemonic.Addsubps: return Horizontal(ref i, false);
            case Mnemonic.Addsubpd: return Horizontal(ref i, true);
            case Mnemonic.Haddps: case Mnemonic.Hsubps: return Horizontal(ref i, false);
            case Mnemonic.Haddpd: case Mnemonic.Hsubpd: return Horizontal(ref i, true);
            case Mnemonic.Dpps: return DotProduct(ref i, false);
            case Mnemonic.Dppd: return DotProduct(ref i, true);
            case Mnemonic.Cmpps: return CompareLanes(ref i, false, false);
            case Mnemonic.Cmppd: return CompareLanes(ref i, true, false);
            case Mnemonic.Cmpss: return CompareLanes(ref i, false, true);
            case Mnemonic.Cmpsd: return CompareLanes(ref i, true, true);
            case Mnemonic.Comiss: return CompareFlags(ref i, false, signalQuiet: true);
            case Mnemonic.Ucomiss: return CompareFlags(ref i, false, signalQuiet: false);
            case Mnemonic.Comisd: return CompareFlags(ref i, true, signalQuiet: true);
            case Mnemonic.Ucomisd: return CompareFlags(ref i, true, signalQuiet: false);

            // ---- conversions (SseFloatConvert.cs)
            case Mnemonic.Cvtps2pd: case Mnemonic.Cvtpd2ps: case Mnemonic.Cvtss2sd: case Mnemonic.Cvtsd2ss:
            case Mnemonic.Cvtdq2ps: case Mnemonic.Cvtps2dq: case Mnemonic.Cvttps2dq:
            case Mnemonic.Cvtdq2pd: case Mnemonic.Cvtpd2dq: case Mnemonic.Cvttpd2dq:
            case Mnemonic.Cvtsi2ss: case Mnemonic.Cvtsi2sd:
            case Mnemonic.Cvtss2si: case Mnemonic.Cvttss2si: case Mnemonic.Cvtsd2si: case Mnemonic.Cvttsd2si:
            case Mnemonic.Cvtpi2ps: case Mnemonic.Cvtps2pi: case Mnemonic.Cvttps2pi:
            case Mnemonic.Cvtpi2pd: case Mnemonic.Cvtpd2pi: case Mnemonic.Cvttpd2pi:
                return SseConvert(ref i);
        }
        return Unsupported($"instruction {FormatInstruction(ref i)}");
    }

    // ------------------------------------------------------------------ operand helpers

    /// <summary>Lane <paramref name="k"/> of a vector as a float32 (d = false) or float64 bit pattern.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Lane(Vector128<byte> v, int k, bool d) => d ? v.AsUInt64().GetElement(k) : v.AsUInt32().GetElement(k);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> WithLane(Vector128<byte> v, int k, bool d, ulong x) =>
        d ? v.AsUInt64().WithElement(k, x).AsByte() : v.AsUInt32().WithElement(k, (uint)x).AsByte();

    /// <summary>The low <paramref name="size"/> bytes of operand n: an XMM, MMX or general register, or memory (no alignment).</summary>
    private Status ReadScalar(ref Instruction i, int n, int size, out ulong v)
    {
        if (i.GetOpKind(n) == OpKind.Register)
        {
            var r = i.GetOpRegister(n);
            if (r.IsXMM()) v = _xmm[r - Register.XMM0].AsUInt64().GetElement(0);
            else if (r.IsMM()) v = GetMm(r - Register.MM0);
            else v = GetReg(r);
            if (size == 4) v &= 0xFFFF_FFFF;
            return Status.Ok;
        }
        return Read(MemSeg(ref i), EffectiveAddress(ref i), size, out v);
    }

    /// <summary>A source operand: 128 aligned bits for packed forms, the low float/double for scalar forms.</summary>
    private Status ReadFloatSource(ref Instruction i, int n, bool scalar, bool d, out Vector128<byte> v)
    {
        if (!scalar || i.GetOpKind(n) == OpKind.Register) return ReadXmmOperand(ref i, n, aligned: true, out v);
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), d ? 8 : 4, out ulong x);
        v = Vector128.CreateScalar(x).AsByte();
        return st;
    }

    /// <summary>
    /// Records the flags of an instruction by the SDM §11.5.2 rules; false when an unmasked exception
    /// occurred, in which case no destination may be written and #XM/#UD follows.
    /// </summary>
    private bool CommitFlags(in SseEnv env)
    {
        uint unmasked = ~(_mxcsr >> Mxcsr.MaskShift) & Mxcsr.Flags;
        uint pre = env.Flags & Mxcsr.PreComputation;
        if ((pre & unmasked) != 0)
        {
            _mxcsr |= pre;
            return false;
        }
        _mxcsr |= env.Flags;
        return (env.Flags & unmasked) == 0;
    }

    // ------------------------------------------------------------------ data movement

    private Status Move128(ref Instruction i, bool aligned)
    {
        var st = ReadXmmOperand(ref i, 1, aligned, out var v);
        if (st != Status.Ok) return st;
        return WriteXmmOperand(ref i, 0, aligned, v);
    }

    /// <summary>MOVSS/MOVSD: register to register merges the low element; a load zeroes the rest; a store writes the low element.</summary>
    private Status MoveScalar(ref Instruction i, int size)
    {
        if (i.Op0Kind == OpKind.Memory)
        {
            ulong v = Xmm(i.Op1Register).AsUInt64().GetElement(0);
            return Write(MemSeg(ref i), EffectiveAddress(ref i), size, size == 4 ? v & 0xFFFF_FFFF : v);
        }
        ref var dst = ref Xmm(i.Op0Register);
        if (i.Op1Kind == OpKind.Register)
        {
            dst = WithLane(dst, 0, size == 8, Lane(Xmm(i.Op1Register), 0, size == 8));
            return Status.Ok;
        }
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), size, out ulong m);
        if (st != Status.Ok) return st;
        dst = Vector128.CreateScalar(m).AsByte();
        return Status.Ok;
    }

    /// <summary>MOVLPS/MOVLPD/MOVHPS/MOVHPD: 64-bit loads into, or stores from, one half of an XMM register.</summary>
    private Status MoveHalf(ref Instruction i, bool high)
    {
        int k = high ? 1 : 0;
        if (i.Op0Kind == OpKind.Memory)
            return Write(MemSeg(ref i), EffectiveAddress(ref i), 8, Xmm(i.Op1Register).AsUInt64().GetElement(k));
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), 8, out ulong m);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        dst = dst.AsUInt64().WithElement(k, m).AsByte();
        return Status.Ok;
    }

    /// <summary>Unpacks, shuffles, blends and the bitwise logical instructions (no floating-point exceptions).</summary>
    private Status Permute(ref Instruction i)
    {
        var st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var d = dst;
        Vector128<byte> r;
        var d32 = d.AsUInt32();
        var s32 = s.AsUInt32();
        var d64 = d.AsUInt64();
        var s64 = s.AsUInt64();
        int imm = i.Mnemonic is Mnemonic.Shufps or Mnemonic.Shufpd or Mnemonic.Blendps or Mnemonic.Blendpd ? i.Immediate8 : 0;
        switch (i.Mnemonic)
        {
            case Mnemonic.Unpcklps: r = Vector128.Create(d32[0], s32[0], d32[1], s32[1]).AsByte(); break;
            case Mnemonic.Unpckhps: r = Vector128.Create(d32[2], s32[2], d32[3], s32[3]).AsByte(); break;
            case Mnemonic.Unpcklpd: r = Vector128.Create(d64[0], s64[0]).AsByte(); break;
            case Mnemonic.Unpckhpd: r = Vector128.Create(d64[1], s64[1]).AsByte(); break;
            case Mnemonic.Shufps:
                r = Vector128.Create(d32[imm & 3], d32[(imm >> 2) & 3], s32[(imm >> 4) & 3], s32[(imm >> 6) & 3]).AsByte();
                break;
            case Mnemonic.Shufpd: r = Vector128.Create(d64[imm & 1], s64[(imm >> 1) & 1]).AsByte(); break;
            case Mnemonic.Blendps:
                r = Vector128.Create((imm & 1) != 0 ? s32[0] : d32[0], (imm & 2) != 0 ? s32[1] : d32[1],
                    (imm & 4) != 0 ? s32[2] : d32[2], (imm & 8) != 0 ? s32[3] : d32[3]).AsByte();
                break;
            case Mnemonic.Blendpd: r = Vector128.Create((imm & 1) != 0 ? s64[0] : d64[0], (imm & 2) != 0 ? s64[1] : d64[1]).AsByte(); break;
            case Mnemonic.Blendvps:
            {
                // The mask is XMM0, implicit in the legacy encoding: each element's sign bit selects the source.
                var m = _xmm[0].AsInt32();
                r = Vector128.Create(m[0] < 0 ? s32[0] : d32[0], m[1] < 0 ? s32[1] : d32[1],
                    m[2] < 0 ? s32[2] : d32[2], m[3] < 0 ? s32[3] : d32[3]).AsByte();
                break;
            }
            case Mnemonic.Blendvpd:
            {
                var m = _xmm[0].AsInt64();
                r = Vector128.Create(m[0] < 0 ? s64[0] : d64[0], m[1] < 0 ? s64[1] : d64[1]).AsByte();
                break;
            }
            case Mnemonic.Andps: case Mnemonic.Andpd: r = d & s; break;
            case Mnemonic.Andnps: case Mnemonic.Andnpd: r = ~d & s; break;
            case Mnemonic.Orps: case Mnemonic.Orpd: r = d | s; break;
            default: r = d ^ s; break; // XORPS, XORPD
        }
        dst = r;
        return Status.Ok;
    }

    /// <summary>INSERTPS (SDM Vol. 2B): imm8[7:6] source element (register form only), [5:4] destination element, [3:0] zero mask.</summary>
    private Status Insertps(ref Instruction i)
    {
        int imm = i.Immediate8;
        uint v;
        if (i.Op1Kind == OpKind.Register) v = Xmm(i.Op1Register).AsUInt32().GetElement((imm >> 6) & 3);
        else
        {
            var st = Read(MemSeg(ref i), EffectiveAddress(ref i), 4, out ulong m);
            if (st != Status.Ok) return st;
            v = (uint)m;
        }
        ref var dst = ref Xmm(i.Op0Register);
        var r = dst.AsUInt32().WithElement((imm >> 4) & 3, v);
        for (int k = 0; k < 4; k++)
            if ((imm & (1 << k)) != 0) r = r.WithElement(k, 0u);
        dst = r.AsByte();
        return Status.Ok;
    }

    // ------------------------------------------------------------------ arithmetic

    private Status Arith(ref Instruction i, SseOp op, bool d, bool scalar)
    {
        var st = ReadFloatSource(ref i, 1, scalar, d, out var src);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var env = new SseEnv(_mxcsr);
        var r = dst;
        int lanes = scalar ? 1 : d ? 2 : 4;
        for (int k = 0; k < lanes; k++)
            r = WithLane(r, k, d, SseFloatMath.Binary(op, Lane(dst, k, d), Lane(src, k, d), d, ref env));
        if (!CommitFlags(env)) return SimdFloatingPointException();
        dst = r;
        return Status.Ok;
    }

    /// <summary>SQRT and ROUND: one source, per lane; scalar forms keep the destination's upper elements.</summary>
    private Status Unary(ref Instruction i, bool d, bool scalar)
    {
        var st = ReadFloatSource(ref i, 1, scalar, d, out var src);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var env = new SseEnv(_mxcsr);
        bool round = i.Mnemonic is Mnemonic.Roundps or Mnemonic.Roundpd or Mnemonic.Roundss or Mnemonic.Roundsd;
        int imm = round ? i.Immediate8 : 0;
        // ROUND imm8 (SDM Vol. 2B ROUNDPS Table 4-18): [2] use MXCSR.RC, else [1:0]; [3] suppresses PE.
        int rc = (imm & 4) != 0 ? env.Rounding : imm & 3;
        bool suppress = (imm & 8) != 0;
        var r = dst;
        int lanes = scalar ? 1 : d ? 2 : 4;
        for (int k = 0; k < lanes; k++)
        {
            ulong a = Lane(src, k, d);
            r = WithLane(r, k, d, round ? SseFloatMath.RoundToIntegral(a, d, rc, suppress, ref env) : SseFloatMath.Sqrt(a, d, ref env));
        }
        if (!CommitFlags(env)) return SimdFloatingPointException();
        dst = r;
        return Status.Ok;
    }

    /// <summary>RCPPS/RCPSS/RSQRTPS/RSQRTSS on the host's SSE unit (see the file header).</summary>
    private Status Approximate(ref Instruction i, bool scalar)
    {
        if (!Sse.IsSupported) return Unsupported($"instruction {FormatInstruction(ref i)} (host without SSE)");
        var st = ReadFloatSource(ref i, 1, scalar, false, out var src);
        if (st != Status.Ok) return st;
        bool rcp = i.Mnemonic is Mnemonic.Rcpps or Mnemonic.Rcpss;
        var f = src.AsSingle();
        var r = rcp ? Sse.Reciprocal(f) : Sse.ReciprocalSqrt(f);
        ref var dst = ref Xmm(i.Op0Register);
        dst = scalar ? dst.AsSingle().WithElement(0, r.GetElement(0)).AsByte() : r.AsByte();
        return Status.Ok;
    }

    /// <summary>ADDSUBPS/PD, HADDPS/PD, HSUBPS/PD.</summary>
    private Status Horizontal(ref Instruction i, bool d)
    {
        var st = ReadXmmOperand(ref i, 1, aligned: true, out var src);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var a = dst;
        var env = new SseEnv(_mxcsr);
        var r = a;
        int lanes = d ? 2 : 4;
        var m = i.Mnemonic;
        if (m is Mnemonic.Addsubps or Mnemonic.Addsubpd)
        {
            // Even elements subtract, odd elements add.
            for (int k = 0; k < lanes; k++)
                r = WithLane(r, k, d, SseFloatMath.Add(Lane(a, k, d), Lane(src, k, d), d, (k & 1) == 0, ref env));
        }
        else
        {
            bool sub = m is Mnemonic.Hsubps or Mnemonic.Hsubpd;
            // The low half of the result comes from pairs of the destination, the high half from the source.
            for (int k = 0; k < lanes; k++)
            {
                var v = k < lanes / 2 ? a : src;
                int j = 2 * (k % (lanes / 2));
                r = WithLane(r, k, d, SseFloatMath.Add(Lane(v, j, d), Lane(v, j + 1, d), d, sub, ref env));
            }
        }
        if (!CommitFlags(env)) return SimdFloatingPointException();
        dst = r;
        return Status.Ok;
    }

    /// <summary>
    /// DPPS/DPPD (SDM Vol. 2A): products of the elements chosen by imm8[7:4] (others +0.0), summed, written to
    /// the elements chosen by imm8[3:0] (others +0.0). The sums are the same number in every element, but
    /// which NaN wins differs per element, as on hardware: DPPD element k is p[k] + p[k^1]; DPPS element k is
    /// (p[k^1] + p[k]) + (p[k^3] + p[k^2]) — the partner first in each pair (observed on hardware).
    /// </summary>
    private Status DotProduct(ref Instruction i, bool d)
    {
        var st = ReadXmmOperand(ref i, 1, aligned: true, out var src);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var a = dst;
        var env = new SseEnv(_mxcsr);
        int imm = i.Immediate8;
        int lanes = d ? 2 : 4;
        Span<ulong> p = stackalloc ulong[4];
        for (int k = 0; k < lanes; k++)
            p[k] = (imm & (0x10 << k)) != 0 ? SseFloatMath.Mul(Lane(a, k, d), Lane(src, k, d), d, ref env) : 0;
        var r = Vector128<byte>.Zero;
        // Each element's sum raises the same flags (addition is commutative), so computing all is harmless.
        for (int k = 0; k < lanes; k++)
        {
            ulong sum = d
                ? SseFloatMath.Add(p[k], p[k ^ 1], true, false, ref env)
                : SseFloatMath.Add(SseFloatMath.Add(p[k ^ 1], p[k], false, false, ref env),
                    SseFloatMath.Add(p[k ^ 3], p[k ^ 2], false, false, ref env), false, false, ref env);
            if ((imm & (1 << k)) != 0) r = WithLane(r, k, d, sum);
        }
        if (!CommitFlags(env)) return SimdFloatingPointException();
        dst = r;
        return Status.Ok;
    }

    private Status CompareLanes(ref Instruction i, bool d, bool scalar)
    {
        var st = ReadFloatSource(ref i, 1, scalar, d, out var src);
        if (st != Status.Ok) return st;
        ref var dst = ref Xmm(i.Op0Register);
        var env = new SseEnv(_mxcsr);
        int predicate = i.Immediate8 & 7; // legacy encodings use imm8[2:0]; bits 7:3 are reserved
        ulong ones = d ? ulong.MaxValue : 0xFFFF_FFFF;
        var r = dst;
        int lanes = scalar ? 1 : d ? 2 : 4;
        for (int k = 0; k < lanes; k++)
            r = WithLane(r, k, d, SseFloatMath.Compare(predicate, Lane(dst, k, d), Lane(src, k, d), d, ref env) ? ones : 0);
        if (!CommitFlags(env)) return SimdFloatingPointException();
        dst = r;
        return Status.Ok;
    }

    /// <summary>COMISS/UCOMISS/COMISD/UCOMISD: ZF PF CF = 111 unordered, 000 greater, 001 less, 100 equal; OF SF AF cleared.</summary>
    private Status CompareFlags(ref Instruction i, bool d, bool signalQuiet)
    {
        var st = ReadFloatSource(ref i, 1, scalar: true, d, out var src);
        if (st != Status.Ok) return st;
        var env = new SseEnv(_mxcsr);
        int c = SseFloatMath.CompareOrdered(Lane(Xmm(i.Op0Register), 0, d), Lane(src, 0, d), d, signalQuiet, ref env);
        if (!CommitFlags(env)) return SimdFloatingPointException();
        MaterializeFlags();
        _flags &= ~Rflags.Arith;
        _flags |= c switch
        {
            2 => Rflags.ZF | Rflags.PF | Rflags.CF,
            -1 => Rflags.CF,
            0 => Rflags.ZF,
            _ => 0UL,
        };
        return Status.Ok;
    }
}
