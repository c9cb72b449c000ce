// SSE/SSE2 conversions (Intel SDM Vol. 2A CVT* pages): between float32 and float64, from signed
// integers (rounded by MXCSR.RC, PE when inexact) and to signed integers (RC or truncation; NaN,
// infinity and out-of-range values give IE and the integer indefinite 80000000H / 8000000000000000H).
// Operand widths: the packed 128-bit memory forms must be aligned; the 64-bit (CVTPS2PD, CVTDQ2PD,
// CVTPS2PI, CVTPI2P*) and scalar memory forms need no alignment. MMX operands come through GetMm/SetMm.
using System.Runtime.Intrinsics;
using Iced.Intel;

namespace SharpVisor.Cpu;

public sealed unsafe partial class SoftwareVcpu
{
    private Status SseConvert(ref Instruction i)
    {
        var env = new SseEnv(_mxcsr);
        var m = i.Mnemonic;
        Status st;
        switch (m)
        {
            case Mnemonic.Cvtps2pd:
            {
                st = ReadScalar(ref i, 1, 8, out ulong s);
                if (st != Status.Ok) return st;
                ulong r0 = SseFloatMath.Convert(s & 0xFFFF_FFFF, fromDouble: false, ref env);
                ulong r1 = SseFloatMath.Convert(s >> 32, fromDouble: false, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                Xmm(i.Op0Register) = Vector128.Create(r0, r1).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Cvtpd2ps:
            {
                st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
                if (st != Status.Ok) return st;
                ulong r0 = SseFloatMath.Convert(Lane(s, 0, true), fromDouble: true, ref env);
                ulong r1 = SseFloatMath.Convert(Lane(s, 1, true), fromDouble: true, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                Xmm(i.Op0Register) = Vector128.Create(r0 | r1 << 32, 0UL).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Cvtss2sd: case Mnemonic.Cvtsd2ss:
            {
                bool fromDouble = m == Mnemonic.Cvtsd2ss;
                st = ReadScalar(ref i, 1, fromDouble ? 8 : 4, out ulong s);
                if (st != Status.Ok) return st;
                ulong r = SseFloatMath.Convert(s, fromDouble, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                ref var dst = ref Xmm(i.Op0Register);
                dst = WithLane(dst, 0, !fromDouble, r);
                return Status.Ok;
            }
            case Mnemonic.Cvtdq2ps:
            {
                st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
                if (st != Status.Ok) return st;
                var r = Vector128<byte>.Zero;
                for (int k = 0; k < 4; k++)
                    r = WithLane(r, k, false, SseFloatMath.FromInt(s.AsInt32().GetElement(k), false, ref env));
                if (!CommitFlags(env)) return SimdFloatingPointException();
                Xmm(i.Op0Register) = r;
                return Status.Ok;
            }
            case Mnemonic.Cvtps2dq: case Mnemonic.Cvttps2dq:
            {
                st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
                if (st != Status.Ok) return st;
                bool truncate = m == Mnemonic.Cvttps2dq;
                var r = Vector128<byte>.Zero;
                for (int k = 0; k < 4; k++)
                    r = WithLane(r, k, false, SseFloatMath.ToInt(Lane(s, k, false), false, 32, truncate, ref env));
                if (!CommitFlags(env)) return SimdFloatingPointException();
                Xmm(i.Op0Register) = r;
                return Status.Ok;
            }
            case Mnemonic.Cvtdq2pd: case Mnemonic.Cvtpi2pd:
            {
                st = ReadScalar(ref i, 1, 8, out ulong s);
                if (st != Status.Ok) return st;
                // Exact: every int32 is a double.
                ulong r0 = SseFloatMath.FromInt((int)(uint)s, true, ref env);
                ulong r1 = SseFloatMath.FromInt((int)(uint)(s >> 32), true, ref env);
                Xmm(i.Op0Register) = Vector128.Create(r0, r1).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Cvtpd2dq: case Mnemonic.Cvttpd2dq: case Mnemonic.Cvtpd2pi: case Mnemonic.Cvttpd2pi:
            {
                st = ReadXmmOperand(ref i, 1, aligned: true, out var s);
                if (st != Status.Ok) return st;
                bool truncate = m is Mnemonic.Cvttpd2dq or Mnemonic.Cvttpd2pi;
                ulong r0 = SseFloatMath.ToInt(Lane(s, 0, true), true, 32, truncate, ref env);
                ulong r1 = SseFloatMath.ToInt(Lane(s, 1, true), true, 32, truncate, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                if (m is Mnemonic.Cvtpd2pi or Mnemonic.Cvttpd2pi) SetMm(i.Op0Register - Register.MM0, r0 | r1 << 32);
                else Xmm(i.Op0Register) = Vector128.Create(r0 | r1 << 32, 0UL).AsByte();
                return Status.Ok;
            }
            case Mnemonic.Cvtsi2ss: case Mnemonic.Cvtsi2sd:
            {
                int size = OpSize(ref i, 1);
                st = ReadOp(ref i, 1, size, out ulong s);
                if (st != Status.Ok) return st;
                bool d = m == Mnemonic.Cvtsi2sd;
                long value = size == 8 ? (long)s : (int)(uint)s;
                ulong r = SseFloatMath.FromInt(value, d, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                ref var dst = ref Xmm(i.Op0Register);
                dst = WithLane(dst, 0, d, r);
                return Status.Ok;
            }
            case Mnemonic.Cvtss2si: case Mnemonic.Cvttss2si: case Mnemonic.Cvtsd2si: case Mnemonic.Cvttsd2si:
            {
                bool d = m is Mnemonic.Cvtsd2si or Mnemonic.Cvttsd2si;
                st = ReadScalar(ref i, 1, d ? 8 : 4, out ulong s);
                if (st != Status.Ok) return st;
                int bits = RegSize(i.Op0Register) * 8;
                ulong r = SseFloatMath.ToInt(s, d, bits, m is Mnemonic.Cvttss2si or Mnemonic.Cvttsd2si, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                SetReg(i.Op0Register, r);
                return Status.Ok;
            }
            case Mnemonic.Cvtpi2ps:
            {
                st = ReadScalar(ref i, 1, 8, out ulong s);
                if (st != Status.Ok) return st;
                ulong r0 = SseFloatMath.FromInt((int)(uint)s, false, ref env);
                ulong r1 = SseFloatMath.FromInt((int)(uint)(s >> 32), false, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                ref var dst = ref Xmm(i.Op0Register);
                dst = dst.AsUInt64().WithElement(0, r0 | r1 << 32).AsByte();
                return Status.Ok;
            }
            default: // CVTPS2PI, CVTTPS2PI
            {
                st = ReadScalar(ref i, 1, 8, out ulong s);
                if (st != Status.Ok) return st;
                bool truncate = m == Mnemonic.Cvttps2pi;
                ulong r0 = SseFloatMath.ToInt(s & 0xFFFF_FFFF, false, 32, truncate, ref env);
                ulong r1 = SseFloatMath.ToInt(s >> 32, false, 32, truncate, ref env);
                if (!CommitFlags(env)) return SimdFloatingPointException();
                SetMm(i.Op0Register - Register.MM0, r0 | r1 << 32);
                return Status.Ok;
            }
        }
    }
}
