// Specialized handlers of the pre-decoded forms (SharpVisor issue #2, second slice).
//
// Each Uop carries a function pointer to a handler specialized, through generic struct type
// parameters, for its kind, operand size, ALU/shift operation or condition code: the JIT compiles
// one small method per combination actually used, with the size masks, register widths and the
// operation folded to constants. The block loop makes one indirect call per instruction instead of
// a switch over kinds followed by switches over size and operation inside one large method.
//
// Exactness: these handlers are the only implementation of their kinds (PredecodedPathTests and
// ChainLinkFusionTests compare them with the Iced path); kinds without a specialized handler go
// through ExecuteUop (HGeneric).
using System.Runtime.CompilerServices;
using SharpVisor.Cpu.Decode;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu.Decode
{
    /// <summary>An operand size as a type (1, 2, 4 or 8 bytes), so generic handlers fold it to a constant.</summary>
    internal interface IOpSize { static abstract int Bytes { get; } }
    internal struct Size1 : IOpSize { public static int Bytes => 1; }
    internal struct Size2 : IOpSize { public static int Bytes => 2; }
    internal struct Size4 : IOpSize { public static int Bytes => 4; }
    internal struct Size8 : IOpSize { public static int Bytes => 8; }

    /// <summary>An ALU operation as a type.</summary>
    internal interface IAluOp { static abstract AluOp Op { get; } }
    internal struct OpAdd : IAluOp { public static AluOp Op => AluOp.Add; }
    internal struct OpOr : IAluOp { public static AluOp Op => AluOp.Or; }
    internal struct OpAdc : IAluOp { public static AluOp Op => AluOp.Adc; }
    internal struct OpSbb : IAluOp { public static AluOp Op => AluOp.Sbb; }
    internal struct OpAnd : IAluOp { public static AluOp Op => AluOp.And; }
    internal struct OpSub : IAluOp { public static AluOp Op => AluOp.Sub; }
    internal struct OpXor : IAluOp { public static AluOp Op => AluOp.Xor; }
    internal struct OpCmp : IAluOp { public static AluOp Op => AluOp.Cmp; }
    internal struct OpTest : IAluOp { public static AluOp Op => AluOp.Test; }

    /// <summary>A shift operation as a type.</summary>
    internal interface IShiftOp { static abstract ShiftOp Op { get; } }
    internal struct OpShl : IShiftOp { public static ShiftOp Op => ShiftOp.Shl; }
    internal struct OpShr : IShiftOp { public static ShiftOp Op => ShiftOp.Shr; }
    internal struct OpSar : IShiftOp { public static ShiftOp Op => ShiftOp.Sar; }

    /// <summary>A condition code (the low nibble of Jcc/SETcc/CMOVcc) as a type.</summary>
    internal interface ICc { static abstract int Cc { get; } }
    internal struct CcO : ICc { public static int Cc => 0; }
    internal struct CcNo : ICc { public static int Cc => 1; }
    internal struct CcB : ICc { public static int Cc => 2; }
    internal struct CcAe : ICc { public static int Cc => 3; }
    internal struct CcE : ICc { public static int Cc => 4; }
    internal struct CcNe : ICc { public static int Cc => 5; }
    internal struct CcBe : ICc { public static int Cc => 6; }
    internal struct CcA : ICc { public static int Cc => 7; }
    internal struct CcS : ICc { public static int Cc => 8; }
    internal struct CcNs : ICc { public static int Cc => 9; }
    internal struct CcP : ICc { public static int Cc => 10; }
    internal struct CcNp : ICc { public static int Cc => 11; }
    internal struct CcL : ICc { public static int Cc => 12; }
    internal struct CcGe : ICc { public static int Cc => 13; }
    internal struct CcLe : ICc { public static int Cc => 14; }
    internal struct CcG : ICc { public static int Cc => 15; }
}

namespace SharpVisor.Cpu
{
    using unsafe Handler = delegate*<SoftwareVcpu, ref Uop, Status>;

    public sealed unsafe partial class SoftwareVcpu
    {
        // ------------------------------------------------------------------ binding

        /// <summary>The handler of a classified Uop (null for the Slow kinds).</summary>
        private static Handler Bind(ref Uop u)
        {
            int size = u.Size;
            switch (u.Kind)
            {
                case UopKind.Slow: case UopKind.SlowLocked: return null;
                case UopKind.Nop: return &HNop;
                case UopKind.MovRR: return BySize(size, &HMovRR<Size1>, &HMovRR<Size2>, &HMovRR<Size4>, &HMovRR<Size8>);
                case UopKind.MovRI: return BySize(size, &HMovRI<Size1>, &HMovRI<Size2>, &HMovRI<Size4>, &HMovRI<Size8>);
                case UopKind.MovRM: return BySize(size, &HMovRM<Size1>, &HMovRM<Size2>, &HMovRM<Size4>, &HMovRM<Size8>);
                case UopKind.MovMR: return BySize(size, &HMovMR<Size1>, &HMovMR<Size2>, &HMovMR<Size4>, &HMovMR<Size8>);
                case UopKind.MovMI: return BySize(size, &HMovMI<Size1>, &HMovMI<Size2>, &HMovMI<Size4>, &HMovMI<Size8>);
                case UopKind.AluRR: case UopKind.AluRI: case UopKind.AluRM: case UopKind.AluMR: case UopKind.AluMI:
                    return size switch
                    {
                        1 => AluBind<Size1>(u.Kind, (AluOp)u.Op),
                        2 => AluBind<Size2>(u.Kind, (AluOp)u.Op),
                        4 => AluBind<Size4>(u.Kind, (AluOp)u.Op),
                        _ => AluBind<Size8>(u.Kind, (AluOp)u.Op),
                    };
                case UopKind.IncR: return BySize(size, &HInc<Size1>, &HInc<Size2>, &HInc<Size4>, &HInc<Size8>);
                case UopKind.DecR: return BySize(size, &HDec<Size1>, &HDec<Size2>, &HDec<Size4>, &HDec<Size8>);
                case UopKind.Lea: return BySize(size, &HLea<Size1>, &HLea<Size2>, &HLea<Size4>, &HLea<Size8>);
                case UopKind.ShiftRI:
                    return (ShiftOp)u.Op switch
                    {
                        ShiftOp.Shl => BySize(size, &HShiftRI<Size1, OpShl>, &HShiftRI<Size2, OpShl>, &HShiftRI<Size4, OpShl>, &HShiftRI<Size8, OpShl>),
                        ShiftOp.Shr => BySize(size, &HShiftRI<Size1, OpShr>, &HShiftRI<Size2, OpShr>, &HShiftRI<Size4, OpShr>, &HShiftRI<Size8, OpShr>),
                        _ => BySize(size, &HShiftRI<Size1, OpSar>, &HShiftRI<Size2, OpSar>, &HShiftRI<Size4, OpSar>, &HShiftRI<Size8, OpSar>),
                    };
                case UopKind.Jcc: return ByCc<JccHandlers>(u.Op);
                case UopKind.Jmp: return &HJmp;
                default: return &HGeneric;
            }
        }

        private static Handler BySize(int size, Handler h1, Handler h2, Handler h4, Handler h8)
            => size switch { 1 => h1, 2 => h2, 4 => h4, _ => h8 };

        /// <summary>A family of handlers made for each condition code (Jcc, and the fused pairs ending in one).</summary>
        private interface ICcHandlers { static abstract Handler For<TC>() where TC : struct, ICc; }

        /// <summary>The member of family <typeparamref name="TF"/> for condition code <paramref name="cc"/>: the one table of them.</summary>
        private static Handler ByCc<TF>(int cc) where TF : struct, ICcHandlers => cc switch
        {
            0 => TF.For<CcO>(), 1 => TF.For<CcNo>(), 2 => TF.For<CcB>(), 3 => TF.For<CcAe>(),
            4 => TF.For<CcE>(), 5 => TF.For<CcNe>(), 6 => TF.For<CcBe>(), 7 => TF.For<CcA>(),
            8 => TF.For<CcS>(), 9 => TF.For<CcNs>(), 10 => TF.For<CcP>(), 11 => TF.For<CcNp>(),
            12 => TF.For<CcL>(), 13 => TF.For<CcGe>(), 14 => TF.For<CcLe>(), _ => TF.For<CcG>(),
        };

        private struct JccHandlers : ICcHandlers { public static Handler For<TC>() where TC : struct, ICc => &HJcc<TC>; }
        private struct FusedRR<TS, TO> : ICcHandlers where TS : struct, IOpSize where TO : struct, IAluOp
        { public static Handler For<TC>() where TC : struct, ICc => &HFusedRR<TS, TO, TC>; }
        private struct FusedRI<TS, TO> : ICcHandlers where TS : struct, IOpSize where TO : struct, IAluOp
        { public static Handler For<TC>() where TC : struct, ICc => &HFusedRI<TS, TO, TC>; }
        private struct FusedInc<TS> : ICcHandlers where TS : struct, IOpSize
        { public static Handler For<TC>() where TC : struct, ICc => &HFusedInc<TS, TC>; }
        private struct FusedDec<TS> : ICcHandlers where TS : struct, IOpSize
        { public static Handler For<TC>() where TC : struct, ICc => &HFusedDec<TS, TC>; }

        private static Handler AluBind<TS>(UopKind form, AluOp op) where TS : struct, IOpSize => op switch
        {
            AluOp.Add => AluForm<TS, OpAdd>(form),
            AluOp.Or => AluForm<TS, OpOr>(form),
            AluOp.Adc => AluForm<TS, OpAdc>(form),
            AluOp.Sbb => AluForm<TS, OpSbb>(form),
            AluOp.And => AluForm<TS, OpAnd>(form),
            AluOp.Sub => AluForm<TS, OpSub>(form),
            AluOp.Xor => AluForm<TS, OpXor>(form),
            AluOp.Cmp => AluForm<TS, OpCmp>(form),
            _ => AluForm<TS, OpTest>(form),
        };

        private static Handler AluForm<TS, TO>(UopKind form) where TS : struct, IOpSize where TO : struct, IAluOp => form switch
        {
            UopKind.AluRR => &HAluRR<TS, TO>,
            UopKind.AluRI => &HAluRI<TS, TO>,
            UopKind.AluRM => &HAluRM<TS, TO>,
            UopKind.AluMR => &HAluMR<TS, TO>,
            _ => &HAluMI<TS, TO>,
        };

        // ------------------------------------------------------------------ register access by size type

        // GetR/SetR (FastPath.cs) with the size a constant: the JIT keeps only its case.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private ulong Rd<TS>(int r) where TS : struct, IOpSize => GetR(r, TS.Bytes);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Wr<TS>(int r, ulong value) where TS : struct, IOpSize => SetR(r, TS.Bytes, value);

        // ------------------------------------------------------------------ handlers

        private static Status HGeneric(SoftwareVcpu c, ref Uop u) => c.ExecuteUop(ref u);

        private static Status HNop(SoftwareVcpu c, ref Uop u) => Status.Ok;

        private static Status HMovRR<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            c.Wr<TS>(u.R0, c.Rd<TS>(u.R1));
            return Status.Ok;
        }

        private static Status HMovRI<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            c.Wr<TS>(u.R0, u.Imm);
            return Status.Ok;
        }

        private static Status HMovRM<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            var st = c.Read(u.Seg, c.Ea(ref u), TS.Bytes, out ulong v);
            if (st != Status.Ok) return st;
            c.Wr<TS>(u.R0, v);
            return Status.Ok;
        }

        private static Status HMovMR<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
            => c.Write(u.Seg, c.Ea(ref u), TS.Bytes, c.Rd<TS>(u.R1));

        private static Status HMovMI<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
            => c.Write(u.Seg, c.Ea(ref u), TS.Bytes, u.Imm);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void AluToReg<TS, TO>(int r0, ulong b) where TS : struct, IOpSize where TO : struct, IAluOp
        {
            ulong res = AluCompute(TO.Op, TS.Bytes, Rd<TS>(r0), b);
            if (TO.Op < AluOp.Cmp) Wr<TS>(r0, res);
        }

        private static Status HAluRR<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp
        {
            c.AluToReg<TS, TO>(u.R0, c.Rd<TS>(u.R1));
            return Status.Ok;
        }

        private static Status HAluRI<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp
        {
            c.AluToReg<TS, TO>(u.R0, u.Imm);
            return Status.Ok;
        }

        private static Status HAluRM<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp
        {
            var st = c.Read(u.Seg, c.Ea(ref u), TS.Bytes, out ulong b);
            if (st != Status.Ok) return st;
            c.AluToReg<TS, TO>(u.R0, b);
            return Status.Ok;
        }

        private static Status HAluMR<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp
            => c.AluToMem<TS, TO>(ref u, c.Rd<TS>(u.R1));

        private static Status HAluMI<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp
            => c.AluToMem<TS, TO>(ref u, u.Imm);

        /// <summary><see cref="AluMem"/> with constant size and operation.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Status AluToMem<TS, TO>(ref Uop u, ulong b) where TS : struct, IOpSize where TO : struct, IAluOp
            => AluMem(TO.Op, TS.Bytes, ref u, b);

        /// <summary>
        /// INC/DEC keep CF: it is moved into the flags word unless it is there already (after
        /// INC/DEC, shifts and materialized flags GetCf reads it from there). The commonest
        /// recorded operations are computed inline, the same formulas as <see cref="GetCf"/>.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void KeepCarry()
        {
            var op = _lfOp;
            if (op == FlagOp.Logic) _flags &= ~Rflags.CF;
            else if (op is > FlagOp.None and < FlagOp.Logic) _flags = (_flags & ~Rflags.CF) | (GetCf() ? Rflags.CF : 0);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void IncDec<TS>(int r0, bool inc) where TS : struct, IOpSize
        {
            ulong a = Rd<TS>(r0);
            ulong r = (inc ? a + 1 : a - 1) & SizeMask(TS.Bytes);
            KeepCarry();
            Wr<TS>(r0, r);
            SetFlags(inc ? FlagOp.Inc : FlagOp.Dec, TS.Bytes, a, 1, r);
        }

        private static Status HInc<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            c.IncDec<TS>(u.R0, inc: true);
            return Status.Ok;
        }

        private static Status HDec<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            c.IncDec<TS>(u.R0, inc: false);
            return Status.Ok;
        }

        private static Status HLea<TS>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize
        {
            c.Wr<TS>(u.R0, c.Ea(ref u));
            return Status.Ok;
        }

        /// <summary>SHL/SHR/SAR of a register by a non-zero immediate count (Shift's first three cases), size and operation constant.</summary>
        private static Status HShiftRI<TS, TO>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IShiftOp
        {
            int size = TS.Bytes;
            ulong a = c.Rd<TS>(u.R0);
            int bits = size * 8;
            ulong mask = SizeMask(size), sign = SignBit(size);
            int n = (int)u.Imm;
            ulong r;
            bool cf, of;
            if (TO.Op == ShiftOp.Shl)
            {
                r = n >= 64 ? 0 : (a << n) & mask;
                cf = n <= bits && ((a >> (bits - n)) & 1) != 0;
                of = ((r & sign) != 0) != cf;
            }
            else if (TO.Op == ShiftOp.Shr)
            {
                r = n >= 64 ? 0 : a >> n;
                cf = ((a >> (n - 1)) & 1) != 0;
                of = (a & sign) != 0;
            }
            else
            {
                long sa = SignExtend(a, size);
                r = (ulong)(sa >> Math.Min(n, 63)) & mask;
                cf = ((sa >> Math.Min(n - 1, 63)) & 1) != 0;
                of = false;
            }
            c.Wr<TS>(u.R0, r);
            c.SetFlagsResult(size, r, cf, of);
            return Status.Ok;
        }

        private static Status HJcc<TC>(SoftwareVcpu c, ref Uop u) where TC : struct, ICc
            => c.Cond<TC>() ? c.Branch(u.Imm) : Status.Ok;

        private static Status HJmp(SoftwareVcpu c, ref Uop u) => c.Branch(u.Imm);

        // ------------------------------------------------------------------ fused ALU + Jcc

        /// <summary>
        /// Fuses the last two instructions of a block when they are a register-only ALU operation,
        /// INC or DEC (which cannot fault, do no I/O and do not end the block) and the Jcc that
        /// ends it: the pair runs as one handler call. The handler is the two unfused handlers'
        /// bodies in sequence (lazy flags recorded, then the condition read from them), so the
        /// architectural result is the same; only the block loop's dispatch between them goes.
        /// A #GP of the branch is the Jcc's: the block loop then counts the first as retired.
        /// </summary>
        private bool Fuse(Uop[] ops)
        {
            int n = ops.Length;
            if (n < 2 || ops[n - 1].Kind != UopKind.Jcc) return false;
            ref Uop a = ref ops[n - 2];
            int cc = ops[n - 1].Op;
            Handler h = a.Kind switch
            {
                UopKind.AluRR or UopKind.AluRI => a.Size switch
                {
                    1 => FuseAlu<Size1>((AluOp)a.Op, a.Kind, cc),
                    2 => FuseAlu<Size2>((AluOp)a.Op, a.Kind, cc),
                    4 => FuseAlu<Size4>((AluOp)a.Op, a.Kind, cc),
                    _ => FuseAlu<Size8>((AluOp)a.Op, a.Kind, cc),
                },
                UopKind.IncR or UopKind.DecR => a.Size switch
                {
                    1 => FuseIncDec<Size1>(a.Kind == UopKind.IncR, cc),
                    2 => FuseIncDec<Size2>(a.Kind == UopKind.IncR, cc),
                    4 => FuseIncDec<Size4>(a.Kind == UopKind.IncR, cc),
                    _ => FuseIncDec<Size8>(a.Kind == UopKind.IncR, cc),
                },
                _ => null,
            };
            if (h == null) return false;
            a.Fn = h;
            a.Fused = 1;
            return true;
        }

        private static Handler FuseAlu<TS>(AluOp op, UopKind form, int cc) where TS : struct, IOpSize => op switch
        {
            AluOp.Add => FuseCc<TS, OpAdd>(form, cc),
            AluOp.Or => FuseCc<TS, OpOr>(form, cc),
            AluOp.Adc => FuseCc<TS, OpAdc>(form, cc),
            AluOp.Sbb => FuseCc<TS, OpSbb>(form, cc),
            AluOp.And => FuseCc<TS, OpAnd>(form, cc),
            AluOp.Sub => FuseCc<TS, OpSub>(form, cc),
            AluOp.Xor => FuseCc<TS, OpXor>(form, cc),
            AluOp.Cmp => FuseCc<TS, OpCmp>(form, cc),
            _ => FuseCc<TS, OpTest>(form, cc),
        };

        private static Handler FuseCc<TS, TO>(UopKind form, int cc) where TS : struct, IOpSize where TO : struct, IAluOp
            => form == UopKind.AluRR ? ByCc<FusedRR<TS, TO>>(cc) : ByCc<FusedRI<TS, TO>>(cc);

        private static Handler FuseIncDec<TS>(bool inc, int cc) where TS : struct, IOpSize
            => inc ? ByCc<FusedInc<TS>>(cc) : ByCc<FusedDec<TS>>(cc);

        /// <summary>The Jcc half of a fused pair: the Jcc's Uop follows the first one in the block's array.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Status FusedBranch<TC>(ref Uop first) where TC : struct, ICc
        {
            ref Uop j = ref Unsafe.Add(ref first, 1);
            _rip = j.NextIp;
            return Cond<TC>() ? Branch(j.Imm) : Status.Ok;
        }

        private static Status HFusedRR<TS, TO, TC>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp where TC : struct, ICc
        {
            c.AluToReg<TS, TO>(u.R0, c.Rd<TS>(u.R1));
            return c.FusedBranch<TC>(ref u);
        }

        private static Status HFusedRI<TS, TO, TC>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TO : struct, IAluOp where TC : struct, ICc
        {
            c.AluToReg<TS, TO>(u.R0, u.Imm);
            return c.FusedBranch<TC>(ref u);
        }

        private static Status HFusedInc<TS, TC>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TC : struct, ICc
        {
            c.IncDec<TS>(u.R0, inc: true);
            return c.FusedBranch<TC>(ref u);
        }

        private static Status HFusedDec<TS, TC>(SoftwareVcpu c, ref Uop u) where TS : struct, IOpSize where TC : struct, ICc
        {
            c.IncDec<TS>(u.R0, inc: false);
            return c.FusedBranch<TC>(ref u);
        }
    }
}
