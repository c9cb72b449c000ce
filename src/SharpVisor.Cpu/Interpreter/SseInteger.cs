// MMX and SSE2/SSE3/SSSE3/SSE4.1/SSE4.2 integer instructions, legacy encodings (SDM Vol. 1 ch. 9–12,
// Vol. 2 per instruction). FpuSimd.cs has already applied the CR0/CR4 gates and does the x87→MMX
// transition after an MMX form completes; here are only the semantics and operand access.
// Operand rules followed:
//   * a 128-bit memory operand of a legacy SSE instruction must be 16-byte aligned (#GP(0)), except
//     MOVDQU, LDDQU and PCMPxSTRx (SDM Vol. 1 §11.4.1, §12.10.3; MASKMOVDQU has no memory operand in
//     Iced's sense and writes bytes); 64-bit and smaller memory operands have no alignment rule
//     (only #AC, which the memory layer applies);
//   * MMX forms read and write MMn as the significand of x87 physical register n (GetMm/SetMm);
//   * MASKMOVQ/MASKMOVDQU write only the selected bytes at DS:rDI (segment overridable); an all-zero
//     mask writes nothing and raises nothing (the SDM leaves faults then implementation-specific).
// FpuSimd.cs sends here every MMX/SSE code that is not SSE floating point (SseFloat.cs); anything
// not listed here is Unsupported.
using System.Numerics;
using System.Runtime.Intrinsics;
using Iced.Intel;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>MMX and SSE2–SSE4.2 integer instruction semantics (SDM Vol. 1 ch. 9–12).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Runs one MMX/SSE integer instruction (every SIMD code that is not SSE floating point).</summary>
    private Status ExecuteSseInteger(ref Instruction i)
    {
        switch (i.Mnemonic)
        {
            case Mnemonic.Paddb: return Packed(ref i, PackedOp.Add8);
            case Mnemonic.Paddw: return Packed(ref i, PackedOp.Add16);
            case Mnemonic.Paddd: return Packed(ref i, PackedOp.Add32);
            case Mnemonic.Paddq: return Packed(ref i, PackedOp.Add64);
            case Mnemonic.Paddsb: return Packed(ref i, PackedOp.AddSat8);
            case Mnemonic.Paddsw: return Packed(ref i, PackedOp.AddSat16);
            case Mnemonic.Paddusb: return Packed(ref i, PackedOp.AddUSat8);
            case Mnemonic.Paddusw: return Packed(ref i, PackedOp.AddUSat16);
            case Mnemonic.Psubb: return Packed(ref i, PackedOp.Sub8);
            case Mnemonic.Psubw: return Packed(ref i, PackedOp.Sub16);
            case Mnemonic.Psubd: return Packed(ref i, PackedOp.Sub32);
            case Mnemonic.Psubq: return Packed(ref i, PackedOp.Sub64);
            case Mnemonic.Psubsb: return Packed(ref i, PackedOp.SubSat8);
            case Mnemonic.Psubsw: return Packed(ref i, PackedOp.SubSat16);
            case Mnemonic.Psubusb: return Packed(ref i, PackedOp.SubUSat8);
            case Mnemonic.Psubusw: return Packed(ref i, PackedOp.SubUSat16);
            case Mnemonic.Pmullw: return Packed(ref i, PackedOp.MulLo16);
            case Mnemonic.Pmulhw: return Packed(ref i, PackedOp.MulHi16);
            case Mnemonic.Pmulhuw: return Packed(ref i, PackedOp.MulHiU16);
            case Mnemonic.Pmuludq: return Packed(ref i, PackedOp.MulUdq);
            case Mnemonic.Pmulld: return Packed(ref i, PackedOp.MulLo32);
            case Mnemonic.Pmuldq: return Packed(ref i, PackedOp.MulDq);
            case Mnemonic.Pmulhrsw: return Packed(ref i, PackedOp.MulHrs16);
            case Mnemonic.Pmaddwd: return Packed(ref i, PackedOp.MAddWd);
            case Mnemonic.Pmaddubsw: return Packed(ref i, PackedOp.MAddUbsw);
            case Mnemonic.Pavgb: return Packed(ref i, PackedOp.Avg8);
            case Mnemonic.Pavgw: return Packed(ref i, PackedOp.Avg16);
            case Mnemonic.Psadbw: return Packed(ref i, PackedOp.Sad8);
            case Mnemonic.Pminsb: return Packed(ref i, PackedOp.MinS8);
            case Mnemonic.Pminub: return Packed(ref i, PackedOp.MinU8);
            case Mnemonic.Pminsw: return Packed(ref i, PackedOp.MinS16);
            case Mnemonic.Pminuw: return Packed(ref i, PackedOp.MinU16);
            case Mnemonic.Pminsd: return Packed(ref i, PackedOp.MinS32);
            case Mnemonic.Pminud: return Packed(ref i, PackedOp.MinU32);
            case Mnemonic.Pmaxsb: return Packed(ref i, PackedOp.MaxS8);
            case Mnemonic.Pmaxub: return Packed(ref i, PackedOp.MaxU8);
            case Mnemonic.Pmaxsw: return Packed(ref i, PackedOp.MaxS16);
            case Mnemonic.Pmaxuw: return Packed(ref i, PackedOp.MaxU16);
            case Mnemonic.Pmaxsd: return Packed(ref i, PackedOp.MaxS32);
            case Mnemonic.Pmaxud: return Packed(ref i, PackedOp.MaxU32);
            case Mnemonic.Pcmpeqb: return Packed(ref i, PackedOp.CmpEq8);
            case Mnemonic.Pcmpeqw: return Packed(ref i, PackedOp.CmpEq16);
            case Mnemonic.Pcmpeqd: return Packed(ref i, PackedOp.CmpEq32);
            case Mnemonic.Pcmpeqq: return Packed(ref i, PackedOp.CmpEq64);
            case Mnemonic.Pcmpgtb: return Packed(ref i, PackedOp.CmpGt8);
            case Mnemonic.Pcmpgtw: return Packed(ref i, PackedOp.CmpGt16);
            case Mnemonic.Pcmpgtd: return Packed(ref i, PackedOp.CmpGt32);
            case Mnemonic.Pcmpgtq: return Packed(ref i, PackedOp.CmpGt64);
            case Mnemonic.Pand: return Packed(ref i, PackedOp.And);
            case Mnemonic.Pandn: return Packed(ref i, PackedOp.AndN);
            case Mnemonic.Por: return Packed(ref i, PackedOp.Or);
            case Mnemonic.Pxor: return Packed(ref i, PackedOp.Xor);
            case Mnemonic.Psllw: return Shift(ref i, PackedOp.Sll16);
            case Mnemonic.Pslld: return Shift(ref i, PackedOp.Sll32);
            case Mnemonic.Psllq: return Shift(ref i, PackedOp.Sll64);
            case Mnemonic.Psrlw: return Shift(ref i, PackedOp.Srl16);
            case Mnemonic.Psrld: return Shift(ref i, PackedOp.Srl32);
            case Mnemonic.Psrlq: return Shift(ref i, PackedOp.Srl64);
            case Mnemonic.Psraw: return Shift(ref i, PackedOp.Sra16);
            case Mnemonic.Psrad: return Shift(ref i, PackedOp.Sra32);
            case Mnemonic.Pslldq: return Shift(ref i, PackedOp.ByteShiftL);
            case Mnemonic.Psrldq: return Shift(ref i, PackedOp.ByteShiftR);
            case Mnemonic.Packsswb: return Packed(ref i, PackedOp.PackSsWb);
            case Mnemonic.Packssdw: return Packed(ref i, PackedOp.PackSsDw);
            case Mnemonic.Packuswb: return Packed(ref i, PackedOp.PackUsWb);
            case Mnemonic.Packusdw: return Packed(ref i, PackedOp.PackUsDw);
            case Mnemonic.Punpcklbw: return Packed(ref i, PackedOp.UnpackLo8);
            case Mnemonic.Punpcklwd: return Packed(ref i, PackedOp.UnpackLo16);
            case Mnemonic.Punpckldq: return Packed(ref i, PackedOp.UnpackLo32);
            case Mnemonic.Punpcklqdq: return Packed(ref i, PackedOp.UnpackLo64);
            case Mnemonic.Punpckhbw: return Packed(ref i, PackedOp.UnpackHi8);
            case Mnemonic.Punpckhwd: return Packed(ref i, PackedOp.UnpackHi16);
            case Mnemonic.Punpckhdq: return Packed(ref i, PackedOp.UnpackHi32);
            case Mnemonic.Punpckhqdq: return Packed(ref i, PackedOp.UnpackHi64);
            case Mnemonic.Pshufb: return Packed(ref i, PackedOp.Shuffle8);
            case Mnemonic.Palignr: return Packed(ref i, PackedOp.AlignR);
            case Mnemonic.Phaddw: return Packed(ref i, PackedOp.HAdd16);
            case Mnemonic.Phaddd: return Packed(ref i, PackedOp.HAdd32);
            case Mnemonic.Phaddsw: return Packed(ref i, PackedOp.HAddSat16);
            case Mnemonic.Phsubw: return Packed(ref i, PackedOp.HSub16);
            case Mnemonic.Phsubd: return Packed(ref i, PackedOp.HSub32);
            case Mnemonic.Phsubsw: return Packed(ref i, PackedOp.HSubSat16);
            case Mnemonic.Psignb: return Packed(ref i, PackedOp.Sign8);
            case Mnemonic.Psignw: return Packed(ref i, PackedOp.Sign16);
            case Mnemonic.Psignd: return Packed(ref i, PackedOp.Sign32);
            case Mnemonic.Pabsb: return Packed(ref i, PackedOp.Abs8);
            case Mnemonic.Pabsw: return Packed(ref i, PackedOp.Abs16);
            case Mnemonic.Pabsd: return Packed(ref i, PackedOp.Abs32);
            case Mnemonic.Pblendw: return Packed(ref i, PackedOp.Blend16);
            case Mnemonic.Mpsadbw: return Packed(ref i, PackedOp.Mpsadbw);
            case Mnemonic.Pshufd: return Packed(ref i, PackedOp.ShufD);
            case Mnemonic.Pshufhw: return Packed(ref i, PackedOp.ShufHw);
            case Mnemonic.Pshuflw: return Packed(ref i, PackedOp.ShufLw);
            case Mnemonic.Phminposuw: return Packed(ref i, PackedOp.MinPosU16);
            case Mnemonic.Pmovsxbw: return Packed(ref i, PackedOp.SxBw);
            case Mnemonic.Pmovsxbd: return Packed(ref i, PackedOp.SxBd);
            case Mnemonic.Pmovsxbq: return Packed(ref i, PackedOp.SxBq);
            case Mnemonic.Pmovsxwd: return Packed(ref i, PackedOp.SxWd);
            case Mnemonic.Pmovsxwq: return Packed(ref i, PackedOp.SxWq);
            case Mnemonic.Pmovsxdq: return Packed(ref i, PackedOp.SxDq);
            case Mnemonic.Pmovzxbw: return Packed(ref i, PackedOp.ZxBw);
            case Mnemonic.Pmovzxbd: return Packed(ref i, PackedOp.ZxBd);
            case Mnemonic.Pmovzxbq: return Packed(ref i, PackedOp.ZxBq);
            case Mnemonic.Pmovzxwd: return Packed(ref i, PackedOp.ZxWd);
            case Mnemonic.Pmovzxwq: return Packed(ref i, PackedOp.ZxWq);
            case Mnemonic.Pmovzxdq: return Packed(ref i, PackedOp.ZxDq);
            case Mnemonic.Pshufw: return Pshufw(ref i);
            case Mnemonic.Pblendvb:
            {
                var st = ReadSimdSource(ref i, 1, out var b);
                if (st != Status.Ok) return st;
                ref var d = ref Xmm(i.Op0Register);
                d = PackedInteger.BlendVariable(d, b, _xmm[0]);
                return Status.Ok;
            }
            case Mnemonic.Ptest: return Ptest(ref i);
            case Mnemonic.Pmovmskb:
            {
                var r = i.Op1Register;
                var v = IsMm(r) ? Vector128.CreateScalar(GetMm(r - Register.MM0)).AsByte() : _xmm[r - Register.XMM0];
                uint mask = v.ExtractMostSignificantBits();
                SetReg(i.Op0Register, IsMm(r) ? mask & 0xFF : mask);
                return Status.Ok;
            }
            case Mnemonic.Movd: case Mnemonic.Movq: return MovdMovq(ref i);
            case Mnemonic.Movdqa: case Mnemonic.Movdqu: case Mnemonic.Lddqu: case Mnemonic.Movntdqa: case Mnemonic.Movntdq:
            {
                bool aligned = NeedsAlignment(i.Mnemonic);
                if (i.Op0Kind == OpKind.Register)
                {
                    var st = ReadXmmOperand(ref i, 1, aligned, out var v);
                    if (st == Status.Ok) Xmm(i.Op0Register) = v;
                    return st;
                }
                return WriteXmmOperand(ref i, 0, aligned, Xmm(i.Op1Register));
            }
            case Mnemonic.Movntq:
                return Write(MemSeg(ref i), EffectiveAddress(ref i), 8, GetMm(i.Op1Register - Register.MM0));
            case Mnemonic.Movq2dq:
                Xmm(i.Op0Register) = Vector128.CreateScalar(GetMm(i.Op1Register - Register.MM0)).AsByte();
                return Status.Ok;
            case Mnemonic.Movdq2q:
                SetMm(i.Op0Register - Register.MM0, Xmm(i.Op1Register).AsUInt64().ToScalar());
                return Status.Ok;
            case Mnemonic.Maskmovq: case Mnemonic.Maskmovdqu: return MaskMove(ref i);
            case Mnemonic.Pinsrb: case Mnemonic.Pinsrw: case Mnemonic.Pinsrd: case Mnemonic.Pinsrq: return Insert(ref i);
            case Mnemonic.Pextrb: case Mnemonic.Pextrw: case Mnemonic.Pextrd: case Mnemonic.Pextrq: return Extract(ref i);
            case Mnemonic.Pcmpestri: case Mnemonic.Pcmpestri64: case Mnemonic.Pcmpestrm: case Mnemonic.Pcmpestrm64:
            case Mnemonic.Pcmpistri: case Mnemonic.Pcmpistrm:
                return CompareStrings(ref i);
            case Mnemonic.Crc32:
            {
                int size = OpSize(ref i, 1);
                var st = ReadOp(ref i, 1, size, out ulong v);
                if (st != Status.Ok) return st;
                SetReg(i.Op0Register, PackedInteger.Crc32((uint)GetReg(i.Op0Register), v, size));
                return Status.Ok;
            }
            default:
                return Unsupported($"instruction {FormatInstruction(ref i)}");
        }
    }

    private static bool IsMm(Register r) => r >= Register.MM0 && r <= Register.MM7;

    /// <summary>Legacy SSE 128-bit memory operands are 16-byte aligned except for these (SDM Vol. 1 §11.4.1, §12.10.3).</summary>
    private static bool NeedsAlignment(Mnemonic m) => m is not (Mnemonic.Movdqu or Mnemonic.Lddqu or Mnemonic.Pcmpestri or Mnemonic.Pcmpestri64
        or Mnemonic.Pcmpestrm or Mnemonic.Pcmpestrm64 or Mnemonic.Pcmpistri or Mnemonic.Pcmpistrm);

    /// <summary>
    /// Source operand <paramref name="n"/> in the low bytes of a vector: an XMM register, an MMX
    /// register (low quadword) or a memory operand of the instruction's memory size (16 bytes with
    /// the alignment rule, or 2–8 bytes zero-extended).
    /// </summary>
    private Status ReadSimdSource(ref Instruction i, int n, out Vector128<byte> v)
    {
        if (i.GetOpKind(n) == OpKind.Register)
        {
            var r = i.GetOpRegister(n);
            v = IsMm(r) ? Vector128.CreateScalar(GetMm(r - Register.MM0)).AsByte() : _xmm[r - Register.XMM0];
            return Status.Ok;
        }
        int size = i.MemorySize.GetSize();
        if (size == 16) return ReadXmmOperand(ref i, n, NeedsAlignment(i.Mnemonic), out v);
        var st = Read(MemSeg(ref i), EffectiveAddress(ref i), size, out ulong x);
        v = Vector128.CreateScalar(x).AsByte();
        return st;
    }

    /// <summary>dest := op(dest, source[, imm8]) for an MMX or XMM destination.</summary>
    private Status Packed(ref Instruction i, PackedOp op)
    {
        var st = ReadSimdSource(ref i, 1, out var b);
        if (st != Status.Ok) return st;
        byte imm = i.OpCount > 2 ? i.Immediate8 : (byte)0;
        var d = i.Op0Register;
        if (IsMm(d))
        {
            int n = d - Register.MM0;
            SetMm(n, MmxCompute(op, GetMm(n), b.AsUInt64().ToScalar(), imm));
        }
        else
        {
            ref var x = ref Xmm(d);
            x = PackedInteger.Compute(op, x, b, imm);
        }
        return Status.Ok;
    }

    /// <summary>Shifts: the count is imm8 or the low quadword of an MMX/XMM register or memory operand.</summary>
    private Status Shift(ref Instruction i, PackedOp op)
    {
        if (i.Op1Kind != OpKind.Immediate8) return Packed(ref i, op);
        byte imm = i.Immediate8;
        var count = Vector128.CreateScalar((ulong)imm).AsByte();
        var d = i.Op0Register;
        if (IsMm(d))
        {
            int n = d - Register.MM0;
            SetMm(n, MmxCompute(op, GetMm(n), imm, imm));
        }
        else
        {
            ref var x = ref Xmm(d);
            x = PackedInteger.Compute(op, x, count, imm);
        }
        return Status.Ok;
    }

    /// <summary>
    /// The 64-bit MMX form of <paramref name="op"/>. Lane-wise operations are the 128-bit operation's
    /// low quadword; those that mix lanes across the register are mapped onto the 128-bit ones
    /// (packs and horizontal ops see dest:source as one 128-bit input) or computed here.
    /// </summary>
    private static ulong MmxCompute(PackedOp op, ulong a, ulong b, byte imm)
    {
        Vector128<byte> r;
        switch (op)
        {
            case PackedOp.PackSsWb: case PackedOp.PackSsDw: case PackedOp.PackUsWb:
            case PackedOp.HAdd16: case PackedOp.HAdd32: case PackedOp.HAddSat16:
            case PackedOp.HSub16: case PackedOp.HSub32: case PackedOp.HSubSat16:
                r = PackedInteger.Compute(op, Vector128.Create(a, b).AsByte(), default, imm);
                break;
            case PackedOp.UnpackHi8: case PackedOp.UnpackHi16: case PackedOp.UnpackHi32:
                r = PackedInteger.Compute(op - (PackedOp.UnpackHi8 - PackedOp.UnpackLo8), Vector128.CreateScalar(a >> 32).AsByte(),
                    Vector128.CreateScalar(b >> 32).AsByte(), imm);
                break;
            case PackedOp.Shuffle8:
            {
                // PSHUFB mm: index bits 2:0 select, bit 7 zeroes.
                ulong res = 0;
                for (int k = 0; k < 8; k++)
                {
                    int sel = (int)(b >> (8 * k)) & 0xFF;
                    if ((sel & 0x80) == 0) res |= ((a >> (8 * (sel & 7))) & 0xFF) << (8 * k);
                }
                return res;
            }
            case PackedOp.AlignR:
                // (dest:source) >> imm·8, low quadword.
                return imm >= 16 ? 0 : (ulong)((((UInt128)a << 64) | b) >> (imm * 8));
            default:
                r = PackedInteger.Compute(op, Vector128.CreateScalar(a).AsByte(), Vector128.CreateScalar(b).AsByte(), imm);
                break;
        }
        return r.AsUInt64().ToScalar();
    }

    private Status Pshufw(ref Instruction i)
    {
        var st = ReadSimdSource(ref i, 1, out var b);
        if (st != Status.Ok) return st;
        ulong src = b.AsUInt64().ToScalar(), res = 0;
        byte imm = i.Immediate8;
        for (int k = 0; k < 4; k++) res |= ((src >> (16 * ((imm >> (2 * k)) & 3))) & 0xFFFF) << (16 * k);
        SetMm(i.Op0Register - Register.MM0, res);
        return Status.Ok;
    }

    /// <summary>Sets the six status flags at once (PTEST, PCMPxSTRx), leaving the lazy-flag state behind.</summary>
    private void SetStatusFlags(ulong bits)
    {
        _flags = (_flags & ~Rflags.Arith) | bits;
        _lfOp = FlagOp.None;
    }

    /// <summary>PTEST: ZF = (dest AND source) = 0, CF = (NOT dest AND source) = 0, AF/OF/PF/SF cleared.</summary>
    private Status Ptest(ref Instruction i)
    {
        var st = ReadSimdSource(ref i, 1, out var b);
        if (st != Status.Ok) return st;
        var a = Xmm(i.Op0Register);
        ulong f = 0;
        if ((a & b) == Vector128<byte>.Zero) f |= Rflags.ZF;
        if (Vector128.AndNot(b, a) == Vector128<byte>.Zero) f |= Rflags.CF;
        SetStatusFlags(f);
        return Status.Ok;
    }

    private Status MovdMovq(ref Instruction i)
    {
        switch (i.Code)
        {
            case Code.Movd_mm_rm32: case Code.Movq_mm_rm64: case Code.Movd_xmm_rm32: case Code.Movq_xmm_rm64:
            {
                int size = i.Code is Code.Movd_mm_rm32 or Code.Movd_xmm_rm32 ? 4 : 8;
                var st = ReadOp(ref i, 1, size, out ulong v);
                if (st != Status.Ok) return st;
                if (IsMm(i.Op0Register)) SetMm(i.Op0Register - Register.MM0, v);
                else Xmm(i.Op0Register) = Vector128.CreateScalar(v).AsByte(); // zero-extends to 128 bits
                return Status.Ok;
            }
            case Code.Movd_rm32_mm: case Code.Movq_rm64_mm: case Code.Movd_rm32_xmm: case Code.Movq_rm64_xmm:
            {
                int size = i.Code is Code.Movd_rm32_mm or Code.Movd_rm32_xmm ? 4 : 8;
                var r = i.Op1Register;
                ulong v = IsMm(r) ? GetMm(r - Register.MM0) : Xmm(r).AsUInt64().ToScalar();
                return WriteOp(ref i, 0, size, size == 4 ? (uint)v : v);
            }
            case Code.Movq_mm_mmm64: case Code.Movq_xmm_xmmm64:
            {
                var st = ReadSimdSource(ref i, 1, out var v);
                if (st != Status.Ok) return st;
                ulong q = v.AsUInt64().ToScalar();
                if (IsMm(i.Op0Register)) SetMm(i.Op0Register - Register.MM0, q);
                else Xmm(i.Op0Register) = Vector128.CreateScalar(q).AsByte();
                return Status.Ok;
            }
            case Code.Movq_mmm64_mm: case Code.Movq_xmmm64_xmm:
            {
                var r = i.Op1Register;
                ulong q = IsMm(r) ? GetMm(r - Register.MM0) : Xmm(r).AsUInt64().ToScalar();
                if (i.Op0Kind == OpKind.Memory) return Write(MemSeg(ref i), EffectiveAddress(ref i), 8, q);
                if (IsMm(i.Op0Register)) SetMm(i.Op0Register - Register.MM0, q);
                else Xmm(i.Op0Register) = Vector128.CreateScalar(q).AsByte(); // MOVQ xmm, xmm clears the upper quadword
                return Status.Ok;
            }
        }
        return Unsupported($"instruction {FormatInstruction(ref i)}");
    }

    /// <summary>PINSRB/W/D/Q: one element from a general register (its low bits) or memory, at imm8 modulo the element count.</summary>
    private Status Insert(ref Instruction i)
    {
        int size = i.Mnemonic switch { Mnemonic.Pinsrb => 1, Mnemonic.Pinsrw => 2, Mnemonic.Pinsrd => 4, _ => 8 };
        var st = ReadOp(ref i, 1, size, out ulong v);
        if (st != Status.Ok) return st;
        v &= SizeMask(size);
        var d = i.Op0Register;
        if (IsMm(d))
        {
            int n = d - Register.MM0, at = (i.Immediate8 & 3) * 16;
            SetMm(n, (GetMm(n) & ~(0xFFFFUL << at)) | (v << at));
            return Status.Ok;
        }
        ref var x = ref Xmm(d);
        int k = i.Immediate8 & (16 / size - 1);
        x = size switch
        {
            1 => x.WithElement(k, (byte)v),
            2 => x.AsUInt16().WithElement(k, (ushort)v).AsByte(),
            4 => x.AsUInt32().WithElement(k, (uint)v).AsByte(),
            _ => x.AsUInt64().WithElement(k, v).AsByte(),
        };
        return Status.Ok;
    }

    /// <summary>PEXTRB/W/D/Q: one element, zero-extended into a general register or stored at its own size.</summary>
    private Status Extract(ref Instruction i)
    {
        int size = i.Mnemonic switch { Mnemonic.Pextrb => 1, Mnemonic.Pextrw => 2, Mnemonic.Pextrd => 4, _ => 8 };
        // PEXTRW r, mm/xmm, imm8 (0F C5) has the register source second; the SSE4.1 forms put it second too.
        var s = i.Op1Register;
        ulong v;
        if (IsMm(s)) v = (GetMm(s - Register.MM0) >> ((i.Immediate8 & 3) * 16)) & 0xFFFF;
        else
        {
            var x = Xmm(s);
            int k = i.Immediate8 & (16 / size - 1);
            v = size switch
            {
                1 => x.GetElement(k),
                2 => x.AsUInt16().GetElement(k),
                4 => x.AsUInt32().GetElement(k),
                _ => x.AsUInt64().GetElement(k),
            };
        }
        if (i.Op0Kind == OpKind.Register)
        {
            SetReg(i.Op0Register, v); // a 32-bit register write zero-extends; a 64-bit one gets the zero-extended element
            return Status.Ok;
        }
        return Write(MemSeg(ref i), EffectiveAddress(ref i), size, v);
    }

    /// <summary>MASKMOVQ/MASKMOVDQU: store the bytes of the first register whose mask byte (second register) has bit 7 set, at seg:rDI.</summary>
    private Status MaskMove(ref Instruction i)
    {
        var dataReg = i.Op1Register;
        var maskReg = i.Op2Register;
        int size;
        Vector128<byte> data, mask;
        if (IsMm(dataReg))
        {
            size = 8;
            data = Vector128.CreateScalar(GetMm(dataReg - Register.MM0)).AsByte();
            mask = Vector128.CreateScalar(GetMm(maskReg - Register.MM0)).AsByte();
        }
        else
        {
            size = 16;
            data = Xmm(dataReg);
            mask = Xmm(maskReg);
        }
        uint select = mask.ExtractMostSignificantBits() & (uint)((1 << size) - 1);
        if (select == 0) return Status.Ok;
        ulong rdi = _gpr[7];
        ulong off = i.Op0Kind switch
        {
            OpKind.MemorySegDI => rdi & 0xFFFF,
            OpKind.MemorySegEDI => rdi & 0xFFFF_FFFF,
            _ => rdi,
        };
        var st = Linear(SegIndex(i.MemorySegment), off, size, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        // Every page of the 8/16 bytes is checked before the first byte changes, so a fault leaves memory as it was.
        st = ProbeWrite(lin, size);
        if (st != Status.Ok) return st;
        for (int k = 0; k < size; k++)
        {
            if ((select & (1u << k)) == 0) continue;
            st = WriteLinear(Wrap(lin + (ulong)k), 1, data.GetElement(k));
            if (st != Status.Ok) return st;
        }
        return Status.Ok;
    }

    /// <summary>PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM (SDM Vol. 2B §4.1 and the instruction pages).</summary>
    private Status CompareStrings(ref Instruction i)
    {
        var st = ReadSimdSource(ref i, 1, out var b);
        if (st != Status.Ok) return st;
        var a = Xmm(i.Op0Register);
        byte imm = i.Immediate8;
        var m = i.Mnemonic;
        bool words = (imm & 1) != 0;
        int max = words ? 8 : 16;
        int la, lb;
        if (m is Mnemonic.Pcmpistri or Mnemonic.Pcmpistrm)
        {
            la = PackedInteger.ImplicitLength(a, words);
            lb = PackedInteger.ImplicitLength(b, words);
        }
        else
        {
            // Explicit lengths: |EAX| and |EDX| (RAX/RDX with REX.W), saturated to the element count.
            bool wide = m is Mnemonic.Pcmpestri64 or Mnemonic.Pcmpestrm64;
            la = ExplicitLength(wide ? (long)_gpr[0] : (int)_gpr[0], max);
            lb = ExplicitLength(wide ? (long)_gpr[2] : (int)_gpr[2], max);
        }
        uint res = PackedInteger.CompareStrings(a, b, la, lb, imm);
        if (m is Mnemonic.Pcmpestri or Mnemonic.Pcmpestri64 or Mnemonic.Pcmpistri)
        {
            int index = res == 0 ? max : (imm & 0x40) != 0 ? 31 - BitOperations.LeadingZeroCount(res) : BitOperations.TrailingZeroCount(res);
            _gpr[1] = (ulong)index; // ECX (RCX with REX.W): either way the upper bits end up zero
        }
        else if ((imm & 0x40) == 0) _xmm[0] = Vector128.CreateScalar(res).AsByte();
        else
        {
            // Expanded mask: each element all ones where its IntRes2 bit is set.
            Vector128<byte> mask;
            if (words)
            {
                var bits = Vector128.Create((ushort)1, 2, 4, 8, 16, 32, 64, 128);
                mask = Vector128.Equals(Vector128.Create((ushort)res) & bits, bits).AsByte();
            }
            else
            {
                var bits = Vector128.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
                var value = Vector128.Create(Vector64.Create((byte)res), Vector64.Create((byte)(res >> 8)));
                mask = Vector128.Equals(value & bits, bits);
            }
            _xmm[0] = mask;
        }
        ulong f = 0;
        if (res != 0) f |= Rflags.CF;
        if (lb < max) f |= Rflags.ZF;
        if (la < max) f |= Rflags.SF;
        if ((res & 1) != 0) f |= Rflags.OF;
        SetStatusFlags(f);
        return Status.Ok;
    }

    private static int ExplicitLength(long v, int max)
    {
        if (v < -max || v > max) return max; // also covers long.MinValue, whose absolute value does not exist
        return (int)Math.Abs(v);
    }
}
