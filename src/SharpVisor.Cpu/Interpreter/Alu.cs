using Vector = SharpVisor.Cpu.State.Vector;
using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Integer arithmetic, logic, shifts, bit operations and multiply/divide (SDM Vol. 2).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST with any operand forms.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Status Alu2(ref Instruction i, Mnemonic m)
    {
        int size = OpSize(ref i);
        bool writes = m != Mnemonic.Cmp && m != Mnemonic.Test;
        ulong a, lin = 0;
        Status st = writes ? ReadRmw(ref i, size, out a, out lin) : ReadOp(ref i, 0, size, out a);
        if (st != Status.Ok) return st;
        st = ReadOp(ref i, 1, size, out ulong b);
        if (st != Status.Ok) return st;
        ulong mask = SizeMask(size);
        ulong r;
        switch (m)
        {
            case Mnemonic.Add: r = (a + b) & mask; SetFlags(FlagOp.Add, size, a, b, r); break;
            case Mnemonic.Sub: case Mnemonic.Cmp: r = (a - b) & mask; SetFlags(FlagOp.Sub, size, a, b, r); break;
            case Mnemonic.And: case Mnemonic.Test: r = a & b; SetFlags(FlagOp.Logic, size, 0, 0, r); break;
            case Mnemonic.Or: r = a | b; SetFlags(FlagOp.Logic, size, 0, 0, r); break;
            case Mnemonic.Xor: r = a ^ b; SetFlags(FlagOp.Logic, size, 0, 0, r); break;
            case Mnemonic.Adc:
            {
                ulong c = GetCf() ? 1UL : 0;
                r = (a + b + c) & mask;
                _flags = (_flags & ~Rflags.CF) | c;
                SetFlags(FlagOp.Adc, size, a, b, r);
                break;
            }
            default: // Sbb
            {
                ulong c = GetCf() ? 1UL : 0;
                r = (a - b - c) & mask;
                _flags = (_flags & ~Rflags.CF) | c;
                SetFlags(FlagOp.Sbb, size, a, b, r);
                break;
            }
        }
        return writes ? WriteRmw(ref i, size, lin, r) : Status.Ok;
    }

    private Status IncDec(ref Instruction i, bool inc)
    {
        int size = OpSize(ref i);
        var st = ReadRmw(ref i, size, out ulong a, out ulong lin);
        if (st != Status.Ok) return st;
        ulong r = (inc ? a + 1 : a - 1) & SizeMask(size);
        bool cf = GetCf();
        st = WriteRmw(ref i, size, lin, r);
        if (st != Status.Ok) return st;
        _flags = (_flags & ~Rflags.CF) | (cf ? Rflags.CF : 0);
        SetFlags(inc ? FlagOp.Inc : FlagOp.Dec, size, a, 1, r);
        return Status.Ok;
    }

    private Status NegNot(ref Instruction i, bool neg)
    {
        int size = OpSize(ref i);
        var st = ReadRmw(ref i, size, out ulong a, out ulong lin);
        if (st != Status.Ok) return st;
        ulong mask = SizeMask(size);
        ulong r = neg ? (0 - a) & mask : ~a & mask;
        st = WriteRmw(ref i, size, lin, r);
        if (st != Status.Ok) return st;
        if (neg) SetFlags(FlagOp.Sub, size, 0, a, r);
        return Status.Ok;
    }

    // ------------------------------------------------------------------ shifts and rotates

    private Status Shift(ref Instruction i, Mnemonic m)
    {
        int size = OpSize(ref i);
        ulong count;
        if (i.OpCount > 1)
        {
            var s1 = ReadOp(ref i, 1, 1, out count);
            if (s1 != Status.Ok) return s1;
        }
        else count = 1;
        count &= size == 8 ? 0x3FUL : 0x1FUL;
        var st = ReadRmw(ref i, size, out ulong a, out ulong lin);
        if (st != Status.Ok) return st;
        if (count == 0) return ZeroCountShift(ref i, size, a); // flags untouched (memory still probed)
        int bits = size * 8;
        ulong mask = SizeMask(size), sign = SignBit(size);
        ulong r;
        bool cf, of;
        int c = (int)count;
        switch (m)
        {
            case Mnemonic.Shl: case Mnemonic.Sal:
                r = c >= 64 ? 0 : (a << c) & mask;
                cf = c <= bits && ((a >> (bits - c)) & 1) != 0;
                of = ((r & sign) != 0) != cf;
                st = WriteRmw(ref i, size, lin, r); if (st != Status.Ok) return st;
                SetFlagsResult(size, r, cf, of);
                return Status.Ok;
            case Mnemonic.Shr:
                r = c >= 64 ? 0 : a >> c;
                cf = ((a >> (c - 1)) & 1) != 0;
                of = (a & sign) != 0;
                st = WriteRmw(ref i, size, lin, r); if (st != Status.Ok) return st;
                SetFlagsResult(size, r, cf, of);
                return Status.Ok;
            case Mnemonic.Sar:
            {
                long sa = SignExtend(a, size);
                r = (ulong)(sa >> Math.Min(c, 63)) & mask;
                cf = ((sa >> Math.Min(c - 1, 63)) & 1) != 0;
                st = WriteRmw(ref i, size, lin, r); if (st != Status.Ok) return st;
                SetFlagsResult(size, r, cf, false);
                return Status.Ok;
            }
        }
        // Rotates change only CF and OF.
        MaterializeFlags();
        bool oldCf = (_flags & Rflags.CF) != 0;
        switch (m)
        {
            case Mnemonic.Rol:
            {
                int rc = c % bits;
                r = rc == 0 ? a : ((a << rc) | (a >> (bits - rc))) & mask;
                cf = (r & 1) != 0;
                of = ((r & sign) != 0) ^ cf;
                break;
            }
            case Mnemonic.Ror:
            {
                int rc = c % bits;
                r = rc == 0 ? a : ((a >> rc) | (a << (bits - rc))) & mask;
                cf = (r & sign) != 0;
                of = ((r & sign) != 0) ^ ((r & (sign >> 1)) != 0);
                break;
            }
            case Mnemonic.Rcl:
            {
                int rc = size <= 2 ? c % (bits + 1) : c;
                r = a; cf = oldCf;
                for (int k = 0; k < rc; k++)
                {
                    bool top = (r & sign) != 0;
                    r = ((r << 1) | (cf ? 1UL : 0)) & mask;
                    cf = top;
                }
                of = ((r & sign) != 0) ^ cf;
                break;
            }
            default: // Rcr
            {
                int rc = size <= 2 ? c % (bits + 1) : c;
                r = a; cf = oldCf;
                of = ((r & sign) != 0) ^ oldCf;
                for (int k = 0; k < rc; k++)
                {
                    bool low = (r & 1) != 0;
                    r = (r >> 1) | (cf ? sign : 0);
                    cf = low;
                }
                break;
            }
        }
        st = WriteRmw(ref i, size, lin, r); if (st != Status.Ok) return st;
        _flags = (_flags & ~(Rflags.CF | Rflags.OF)) | (cf ? Rflags.CF : 0) | (of ? Rflags.OF : 0);
        return Status.Ok;
    }

    private Status ShiftDouble(ref Instruction i, bool left)
    {
        int size = OpSize(ref i);
        var st = ReadOp(ref i, 2, 1, out ulong count);
        if (st != Status.Ok) return st;
        count &= size == 8 ? 0x3FUL : 0x1FUL;
        st = ReadRmw(ref i, size, out ulong a, out ulong lin);
        if (st != Status.Ok) return st;
        ulong b = GetReg(i.Op1Register);
        if (count == 0) return ZeroCountShift(ref i, size, a);
        int bits = size * 8, c = (int)count;
        ulong mask = SizeMask(size), sign = SignBit(size);
        ulong r; bool cf;
        // A 16-bit count above 16 leaves result and flags undefined (SDM SHLD/SHRD); this
        // shifts the dest:src concatenation on, and the differential tests mask that case.
        if (left)
        {
            UInt128 v = ((UInt128)a << bits) | b;
            r = (ulong)((v << c) >> bits) & mask;
            cf = (ulong)((v << (c - 1)) >> (2 * bits - 1) & 1) != 0;
        }
        else
        {
            UInt128 v = ((UInt128)b << bits) | a;
            r = (ulong)(v >> c) & mask;
            cf = (ulong)((v >> (c - 1)) & 1) != 0;
        }
        bool of = ((r ^ a) & sign) != 0;
        st = WriteRmw(ref i, size, lin, r); if (st != Status.Ok) return st;
        SetFlagsResult(size, r, cf, of);
        return Status.Ok;
    }

    /// <summary>
    /// A shift, rotate or SHLD/SHRD whose masked count is 0 leaves the flags and the value alone, but a
    /// 32-bit register destination is still written, so bits 63:32 are cleared (SDM Vol. 1 §3.4.1.1:
    /// 32-bit operands give a 32-bit result zero-extended into the 64-bit register).
    /// Regression: found by the differential run (SHL ECX, 0 kept the upper half of RCX).
    /// </summary>
    private Status ZeroCountShift(ref Instruction i, int size, ulong value)
    {
        if (size == 4 && i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, value);
        return Status.Ok;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long SignExtend(ulong v, int size) => size switch
    {
        1 => (sbyte)v, 2 => (short)v, 4 => (int)v, _ => (long)v,
    };

    // ------------------------------------------------------------------ multiply / divide

    private Status Mul1(ref Instruction i, bool signed)
    {
        int size = OpSize(ref i);
        var st = ReadOp(ref i, 0, size, out ulong b);
        if (st != Status.Ok) return st;
        ulong a = _gpr[0] & SizeMask(size);
        ulong lo, hi; bool over;
        if (signed)
        {
            Int128 p = (Int128)SignExtend(a, size) * SignExtend(b, size);
            lo = (ulong)p & SizeMask(size);
            hi = size == 8 ? (ulong)(p >> 64) : (ulong)(p >> (size * 8)) & SizeMask(size);
            over = p != (Int128)SignExtend(lo, size);
        }
        else
        {
            UInt128 p = (UInt128)a * b;
            lo = (ulong)p & SizeMask(size);
            hi = size == 8 ? (ulong)(p >> 64) : (ulong)(p >> (size * 8)) & SizeMask(size);
            over = hi != 0;
        }
        switch (size)
        {
            case 1: _gpr[0] = (_gpr[0] & ~0xFFFFUL) | (hi << 8) | lo; break;
            case 2: SetReg(Register.AX, lo); SetReg(Register.DX, hi); break;
            case 4: SetReg(Register.EAX, lo); SetReg(Register.EDX, hi); break;
            default: _gpr[0] = lo; _gpr[2] = hi; break;
        }
        SetFlagsResult(size, lo, over, over);
        return Status.Ok;
    }

    private Status Imul(ref Instruction i)
    {
        if (i.OpCount == 1) return Mul1(ref i, true);
        int size = OpSize(ref i);
        ulong a, b;
        Status st;
        if (i.OpCount == 2)
        {
            a = GetReg(i.Op0Register);
            st = ReadOp(ref i, 1, size, out b);
        }
        else
        {
            st = ReadOp(ref i, 1, size, out a);
            if (st != Status.Ok) return st;
            st = ReadOp(ref i, 2, size, out b);
        }
        if (st != Status.Ok) return st;
        Int128 p = (Int128)SignExtend(a, size) * SignExtend(b, size);
        ulong r = (ulong)p & SizeMask(size);
        bool over = p != (Int128)SignExtend(r, size);
        SetReg(i.Op0Register, r);
        SetFlagsResult(size, r, over, over);
        return Status.Ok;
    }

    private Status Div(ref Instruction i, bool signed)
    {
        int size = OpSize(ref i);
        var st = ReadOp(ref i, 0, size, out ulong d);
        if (st != Status.Ok) return st;
        if (d == 0) return Fault(Vector.DE);
        ulong mask = SizeMask(size);
        UInt128 dividend = size switch
        {
            1 => _gpr[0] & 0xFFFF,
            2 => ((_gpr[2] & 0xFFFF) << 16) | (_gpr[0] & 0xFFFF),
            4 => ((_gpr[2] & 0xFFFF_FFFF) << 32) | (_gpr[0] & 0xFFFF_FFFF),
            _ => ((UInt128)_gpr[2] << 64) | _gpr[0],
        };
        ulong q, rem;
        if (signed)
        {
            int bits = size * 8;
            Int128 n = size == 8 ? (Int128)dividend : (Int128)(long)((ulong)dividend << (64 - 2 * bits)) >> (64 - 2 * bits);
            Int128 dv = SignExtend(d, size);
            if (n == Int128.MinValue && dv == -1) return Fault(Vector.DE);
            Int128 qq = n / dv, rr = n % dv;
            Int128 max = (Int128.One << (bits - 1)) - 1, min = -(Int128.One << (bits - 1));
            if (qq > max || qq < min) return Fault(Vector.DE);
            q = (ulong)qq & mask; rem = (ulong)rr & mask;
        }
        else
        {
            UInt128 qq = dividend / d;
            if (qq > mask) return Fault(Vector.DE);
            q = (ulong)qq; rem = (ulong)(dividend % d);
        }
        switch (size)
        {
            case 1: _gpr[0] = (_gpr[0] & ~0xFFFFUL) | (rem << 8) | q; break;
            case 2: SetReg(Register.AX, q); SetReg(Register.DX, rem); break;
            case 4: SetReg(Register.EAX, q); SetReg(Register.EDX, rem); break;
            default: _gpr[0] = q; _gpr[2] = rem; break;
        }
        // Flags are undefined after DIV/IDIV; leave them as they were.
        return Status.Ok;
    }

    // ------------------------------------------------------------------ bit operations

    private Status BitTest(ref Instruction i, Mnemonic m)
    {
        int size = OpSize(ref i);
        int bits = size * 8;
        ulong bitOff;
        bool immediate = i.Op1Kind != OpKind.Register;
        var st = ReadOp(ref i, 1, size, out bitOff);
        if (st != Status.Ok) return st;
        ulong v, lin = 0;
        int bit;
        if (i.Op0Kind == OpKind.Memory && !immediate)
        {
            // Register bit offsets address memory beyond the operand (signed, in operand-size units).
            long off = SignExtend(bitOff, size);
            long unit = off >> (size == 8 ? 6 : size == 4 ? 5 : 4);
            bit = (int)(off & (bits - 1));
            ulong ea = EffectiveAddress(ref i) + (ulong)(unit * size);
            int asz = AddressSize(ref i);
            ea = asz == 2 ? ea & 0xFFFF : asz == 4 ? ea & 0xFFFF_FFFF : ea;
            var acc = m == Mnemonic.Bt ? Access.Read : Access.Write;
            st = Linear(MemSeg(ref i), ea, size, acc, out lin);
            if (st != Status.Ok) return st;
            if (m != Mnemonic.Bt) { st = ProbeWrite(lin, size); if (st != Status.Ok) return st; }
            st = m == Mnemonic.Bt ? ReadLinear(lin, size, out v) : ReadRmwLinear(lin, size, out v);
            if (st != Status.Ok) return st;
        }
        else
        {
            bit = (int)(bitOff & (ulong)(bits - 1));
            if (m == Mnemonic.Bt) st = ReadOp(ref i, 0, size, out v);
            else st = ReadRmw(ref i, size, out v, out lin);
            if (st != Status.Ok) return st;
        }
        bool cf = ((v >> bit) & 1) != 0;
        ulong r = m switch
        {
            Mnemonic.Bts => v | (1UL << bit),
            Mnemonic.Btr => v & ~(1UL << bit),
            Mnemonic.Btc => v ^ (1UL << bit),
            _ => v,
        };
        if (m != Mnemonic.Bt)
        {
            st = i.Op0Kind == OpKind.Memory ? WriteRmwLinear(lin, size, r) : WriteOp(ref i, 0, size, r);
            if (st != Status.Ok) return st;
        }
        MaterializeFlags();
        _flags = (_flags & ~Rflags.CF) | (cf ? Rflags.CF : 0);
        return Status.Ok;
    }

    private Status BitScan(ref Instruction i, Mnemonic m)
    {
        int size = OpSize(ref i);
        var st = ReadOp(ref i, 1, size, out ulong v);
        if (st != Status.Ok) return st;
        int bits = size * 8;
        MaterializeFlags();
        ulong f = _flags & ~Rflags.Arith;
        switch (m)
        {
            case Mnemonic.Bsf:
            case Mnemonic.Bsr:
                if (v == 0) { _flags = f | Rflags.ZF; return Status.Ok; } // destination unchanged (as hardware does)
                SetReg(i.Op0Register, m == Mnemonic.Bsf ? (ulong)BitOperations.TrailingZeroCount(v) : (ulong)(63 - BitOperations.LeadingZeroCount(v)));
                _flags = f;
                return Status.Ok;
            case Mnemonic.Tzcnt:
            {
                ulong r = v == 0 ? (ulong)bits : (ulong)BitOperations.TrailingZeroCount(v);
                SetReg(i.Op0Register, r);
                _flags = f | (v == 0 ? Rflags.CF : 0) | (r == 0 ? Rflags.ZF : 0);
                return Status.Ok;
            }
            case Mnemonic.Lzcnt:
            {
                ulong r = v == 0 ? (ulong)bits : (ulong)(BitOperations.LeadingZeroCount(v) - (64 - bits));
                SetReg(i.Op0Register, r);
                _flags = f | (v == 0 ? Rflags.CF : 0) | (r == 0 ? Rflags.ZF : 0);
                return Status.Ok;
            }
            default: // Popcnt
            {
                ulong r = (ulong)BitOperations.PopCount(v);
                SetReg(i.Op0Register, r);
                _flags = f | (v == 0 ? Rflags.ZF : 0);
                return Status.Ok;
            }
        }
    }

    // ------------------------------------------------------------------ BMI1 / BMI2 / ADX

    private Status Bmi(ref Instruction i, Mnemonic m)
    {
        int size = RegSize(i.Op0Register);
        int bits = size * 8;
        ulong mask = SizeMask(size);
        ulong src1, src2 = 0;
        Status st;
        switch (m)
        {
            case Mnemonic.Andn:
            {
                src1 = GetReg(i.Op1Register);
                st = ReadOp(ref i, 2, size, out src2); if (st != Status.Ok) return st;
                ulong r = ~src1 & src2 & mask;
                SetReg(i.Op0Register, r);
                SetFlagsResult(size, r, false, false);
                return Status.Ok;
            }
            case Mnemonic.Bextr:
            {
                st = ReadOp(ref i, 1, size, out src1); if (st != Status.Ok) return st;
                ulong ctl = GetReg(i.Op2Register);
                int start = (int)(ctl & 0xFF), len = (int)((ctl >> 8) & 0xFF);
                ulong r = start >= bits ? 0 : src1 >> start;
                if (len < 64) r &= (1UL << len) - 1;
                r &= mask;
                SetReg(i.Op0Register, r);
                SetFlagsResult(size, r, false, false);
                return Status.Ok;
            }
            case Mnemonic.Blsi: case Mnemonic.Blsmsk: case Mnemonic.Blsr:
            {
                st = ReadOp(ref i, 1, size, out src1); if (st != Status.Ok) return st;
                ulong r = m switch
                {
                    Mnemonic.Blsi => (0 - src1) & src1,
                    Mnemonic.Blsmsk => (src1 - 1) ^ src1,
                    _ => (src1 - 1) & src1,
                } & mask;
                SetReg(i.Op0Register, r);
                bool cf = m == Mnemonic.Blsr || m == Mnemonic.Blsmsk ? src1 == 0 : src1 != 0;
                SetFlagsResult(size, r, cf, false);
                if (m == Mnemonic.Blsmsk) { MaterializeFlags(); _flags &= ~Rflags.ZF; }
                return Status.Ok;
            }
            case Mnemonic.Bzhi:
            {
                st = ReadOp(ref i, 1, size, out src1); if (st != Status.Ok) return st;
                int n = (int)(GetReg(i.Op2Register) & 0xFF);
                ulong r = n >= bits ? src1 : src1 & ((1UL << n) - 1);
                SetReg(i.Op0Register, r & mask);
                SetFlagsResult(size, r & mask, n > bits - 1, false);
                return Status.Ok;
            }
            case Mnemonic.Pdep: case Mnemonic.Pext:
            {
                src1 = GetReg(i.Op1Register);
                st = ReadOp(ref i, 2, size, out src2); if (st != Status.Ok) return st;
                ulong r = 0;
                if (m == Mnemonic.Pdep)
                {
                    int k = 0;
                    for (int b = 0; b < bits; b++)
                        if (((src2 >> b) & 1) != 0) { if (((src1 >> k) & 1) != 0) r |= 1UL << b; k++; }
                }
                else
                {
                    int k = 0;
                    for (int b = 0; b < bits; b++)
                        if (((src2 >> b) & 1) != 0) { if (((src1 >> b) & 1) != 0) r |= 1UL << k; k++; }
                }
                SetReg(i.Op0Register, r);
                return Status.Ok;
            }
            case Mnemonic.Mulx:
            {
                st = ReadOp(ref i, 2, size, out src2); if (st != Status.Ok) return st;
                ulong d = _gpr[2] & mask;
                UInt128 p = (UInt128)d * src2;
                ulong lo = (ulong)p & mask, hi = (ulong)(p >> bits) & mask;
                SetReg(i.Op1Register, lo);
                SetReg(i.Op0Register, hi); // if both name the same register, the high half wins
                return Status.Ok;
            }
            case Mnemonic.Rorx:
            {
                st = ReadOp(ref i, 1, size, out src1); if (st != Status.Ok) return st;
                int c = (int)(i.GetImmediate(2) & (ulong)(bits - 1));
                ulong r = c == 0 ? src1 : ((src1 >> c) | (src1 << (bits - c))) & mask;
                SetReg(i.Op0Register, r);
                return Status.Ok;
            }
            default: // Sarx Shlx Shrx
            {
                st = ReadOp(ref i, 1, size, out src1); if (st != Status.Ok) return st;
                int c = (int)(GetReg(i.Op2Register) & (ulong)(bits - 1));
                ulong r = m switch
                {
                    Mnemonic.Shlx => src1 << c,
                    Mnemonic.Shrx => src1 >> c,
                    _ => (ulong)(SignExtend(src1, size) >> c),
                } & mask;
                SetReg(i.Op0Register, r);
                return Status.Ok;
            }
        }
    }

    private Status AdcxAdox(ref Instruction i, bool overflowFlag)
    {
        int size = RegSize(i.Op0Register);
        var st = ReadOp(ref i, 1, size, out ulong b);
        if (st != Status.Ok) return st;
        MaterializeFlags();
        ulong flag = overflowFlag ? Rflags.OF : Rflags.CF;
        ulong a = GetReg(i.Op0Register);
        ulong c = (_flags & flag) != 0 ? 1UL : 0;
        UInt128 sum = (UInt128)a + b + c;
        ulong r = (ulong)sum & SizeMask(size);
        bool carry = (sum >> (size * 8)) != 0;
        SetReg(i.Op0Register, r);
        _flags = (_flags & ~flag) | (carry ? flag : 0);
        return Status.Ok;
    }

    // ------------------------------------------------------------------ exchange and compare

    private Status Xadd(ref Instruction i)
    {
        int size = OpSize(ref i);
        var st = ReadRmw(ref i, size, out ulong a, out ulong lin);
        if (st != Status.Ok) return st;
        ulong b = GetReg(i.Op1Register);
        ulong r = (a + b) & SizeMask(size);
        st = WriteRmw(ref i, size, lin, r);
        if (st != Status.Ok) return st;
        SetReg(i.Op1Register, a);
        // XADD r, r with the same register: the sum wins (the temp is written to the destination last).
        if (i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, r);
        SetFlags(FlagOp.Add, size, a, b, r);
        return Status.Ok;
    }

    private Status Cmpxchg(ref Instruction i)
    {
        int size = OpSize(ref i);
        var st = ReadRmw(ref i, size, out ulong dst, out ulong lin);
        if (st != Status.Ok) return st;
        ulong acc = _gpr[0] & SizeMask(size);
        ulong r = (acc - dst) & SizeMask(size);
        if (acc == dst)
        {
            st = WriteRmw(ref i, size, lin, GetReg(i.Op1Register));
            if (st != Status.Ok) return st;
        }
        else
        {
            // Hardware writes the unchanged value back inside its locked cycle; that store is
            // invisible except that, emulated outside such a cycle (the AtomicLock path of
            // LockedRmw.cs, or an unlocked CMPXCHG), it could undo a plain store another vCPU
            // made meanwhile (a spinlock release), so it is not repeated. On the CAS path nothing
            // is committed, which is equivalent: the captured read is the atomic read. The write
            // permission was already checked by ReadRmw. Deviation: with no write, a write data
            // breakpoint on the operand does not trigger (silicon's write-back would).
            SetReg(size switch { 1 => Register.AL, 2 => Register.AX, 4 => Register.EAX, _ => Register.RAX }, dst);
        }
        SetFlags(FlagOp.Sub, size, acc, dst, r);
        return Status.Ok;
    }

    private Status CmpxchgDouble(ref Instruction i, bool wide)
    {
        int half = wide ? 8 : 4;
        ulong ea = EffectiveAddress(ref i);
        if (wide && (ea & 0xF) != 0) return GP(0);
        var st = Linear(MemSeg(ref i), ea, half * 2, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        st = ProbeWrite(lin, half * 2);
        if (st != Status.Ok) return st;
        // Locked: the whole 8/16-byte operand is one atomic unit (LockedRmw.cs), not each half.
        st = BeginAtomic(lin, half * 2); if (st != Status.Ok) return st;
        st = ReadRmwLinear(lin, half, out ulong lo); if (st != Status.Ok) return st;
        st = ReadRmwLinear(lin + (ulong)half, half, out ulong hi); if (st != Status.Ok) return st;
        ulong m = SizeMask(half);
        bool eq = lo == (_gpr[0] & m) && hi == (_gpr[2] & m);
        MaterializeFlags();
        if (eq)
        {
            st = WriteRmwLinear(lin, half, _gpr[3] & m); if (st != Status.Ok) return st;
            st = WriteRmwLinear(lin + (ulong)half, half, _gpr[1] & m); if (st != Status.Ok) return st;
            _flags |= Rflags.ZF;
        }
        else
        {
            // No write-back of the unchanged value (see Cmpxchg); write permission was probed.
            // EDX:EAX (32-bit writes zero-extend) or RDX:RAX receive the memory value.
            _gpr[0] = lo; _gpr[2] = hi;
            _flags &= ~Rflags.ZF;
        }
        return Status.Ok;
    }

    // ------------------------------------------------------------------ BCD (legacy modes only)

    private Status Bcd(Mnemonic m, ref Instruction i)
    {
        ulong al = _gpr[0] & 0xFF, ah = (_gpr[0] >> 8) & 0xFF;
        bool cf = GetCf(), af = GetAf();
        MaterializeFlags();
        ulong f = _flags & ~Rflags.Arith;
        ulong r;
        switch (m)
        {
            case Mnemonic.Daa:
            case Mnemonic.Das:
            {
                ulong oldAl = al; bool oldCf = cf;
                bool add = m == Mnemonic.Daa;
                bool newCf = false, newAf = false;
                if ((al & 0xF) > 9 || af)
                {
                    newCf = oldCf || (add ? al + 6 > 0xFF : al < 6);
                    al = (add ? al + 6 : al - 6) & 0xFF;
                    newAf = true;
                }
                if (oldAl > 0x99 || oldCf) { al = (add ? al + 0x60 : al - 0x60) & 0xFF; newCf = true; }
                r = al;
                _gpr[0] = (_gpr[0] & ~0xFFUL) | al;
                _flags = f | (newCf ? Rflags.CF : 0) | (newAf ? Rflags.AF : 0) | Szp(r, 1);
                // OF is undefined; hardware computes it like an add/sub of the adjustment.
                return Status.Ok;
            }
            case Mnemonic.Aaa:
            case Mnemonic.Aas:
            {
                bool adj = (al & 0xF) > 9 || af;
                if (adj)
                {
                    ulong ax = _gpr[0] & 0xFFFF;
                    ax = m == Mnemonic.Aaa ? ax + 0x106 : ax - 0x106;
                    al = ax & 0xFF; ah = (ax >> 8) & 0xFF;
                }
                al &= 0xF;
                _gpr[0] = (_gpr[0] & ~0xFFFFUL) | (ah << 8) | al;
                _flags = f | (adj ? Rflags.CF | Rflags.AF : 0) | Szp(al, 1);
                return Status.Ok;
            }
            case Mnemonic.Aam:
            {
                ulong imm = i.GetImmediate(0) & 0xFF;
                if (imm == 0) return Fault(Vector.DE);
                ah = al / imm; al %= imm;
                _gpr[0] = (_gpr[0] & ~0xFFFFUL) | (ah << 8) | al;
                SetFlags(FlagOp.Logic, 1, 0, 0, al);
                return Status.Ok;
            }
            default: // Aad
            {
                ulong imm = i.GetImmediate(0) & 0xFF;
                al = (al + ah * imm) & 0xFF;
                _gpr[0] = (_gpr[0] & ~0xFFFFUL) | al;
                SetFlags(FlagOp.Logic, 1, 0, 0, al);
                return Status.Ok;
            }
        }
    }

    private static ulong Szp(ulong r, int size) =>
        ((r & SizeMask(size)) == 0 ? Rflags.ZF : 0) | ((r & SignBit(size)) != 0 ? Rflags.SF : 0)
        | ((BitOperations.PopCount((uint)(r & 0xFF)) & 1) == 0 ? Rflags.PF : 0);
}
