using System.Numerics;
using System.Runtime.CompilerServices;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// Lazy arithmetic flags (the QEMU CC_OP / Bochs lazy-flags idea). An instruction that sets
/// flags records its kind, operand size, operands and result; the six status flags are
/// computed only when something reads them. This is the one flags format of the engine:
/// the translator will record the same four values.
/// </summary>
public enum FlagOp : byte
{
    /// <summary>All arithmetic flags are materialized in the flags word.</summary>
    None,
    Add, Adc, Sub, Sbb,
    /// <summary>AND/OR/XOR/TEST: CF = OF = 0, AF cleared (undefined by the SDM).</summary>
    Logic,
    /// <summary>INC/DEC: CF is taken from the flags word; the rest from dst/result.</summary>
    Inc, Dec,
    /// <summary>ZF/SF/PF from the result; CF, OF and AF from the flags word (shifts, BMI …).</summary>
    Result,
}

public sealed partial class SoftwareVcpu
{
    // The lazy state. _lfSize is 1, 2, 4 or 8.
    internal FlagOp _lfOp;
    internal int _lfSize;
    internal ulong _lfDst, _lfSrc, _lfRes;
    /// <summary>RFLAGS with the arithmetic bits valid only where <see cref="_lfOp"/> does not supply them.</summary>
    internal ulong _flags = Rflags.Reserved1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetFlags(FlagOp op, int size, ulong dst, ulong src, ulong res)
    {
        _lfOp = op; _lfSize = size; _lfDst = dst; _lfSrc = src; _lfRes = res;
    }

    /// <summary>Records a result whose CF/OF/AF are given explicitly (shifts, multiplies, bit ops).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetFlagsResult(int size, ulong res, bool cf, bool of, bool af = false)
    {
        _flags = (_flags & ~(Rflags.CF | Rflags.OF | Rflags.AF)) | (cf ? Rflags.CF : 0) | (of ? Rflags.OF : 0) | (af ? Rflags.AF : 0);
        _lfOp = FlagOp.Result; _lfSize = size; _lfRes = res;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong SizeMask(int size) => size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong SignBit(int size) => 1UL << (size * 8 - 1);

    internal bool GetCf()
    {
        ulong m = SizeMask(_lfSize);
        switch (_lfOp)
        {
            case FlagOp.Add: return (_lfRes & m) < (_lfDst & m);
            case FlagOp.Adc: return (_lfRes & m) < (_lfDst & m) || ((_lfRes & m) == (_lfDst & m) && CarryIn());
            case FlagOp.Sub: return (_lfDst & m) < (_lfSrc & m);
            case FlagOp.Sbb: return (_lfDst & m) < (_lfSrc & m) || ((_lfDst & m) == (_lfSrc & m) && CarryIn());
            case FlagOp.Logic: return false;
            default: return (_flags & Rflags.CF) != 0;
        }
    }

    // ADC/SBB keep their carry-in in the flags word's CF bit (set when the op was recorded).
    private bool CarryIn() => (_flags & Rflags.CF) != 0;

    internal bool GetZf() => _lfOp == FlagOp.None ? (_flags & Rflags.ZF) != 0 : (_lfRes & SizeMask(_lfSize)) == 0;
    internal bool GetSf() => _lfOp == FlagOp.None ? (_flags & Rflags.SF) != 0 : (_lfRes & SignBit(_lfSize)) != 0;
    internal bool GetPf() => _lfOp == FlagOp.None ? (_flags & Rflags.PF) != 0 : (BitOperations.PopCount((uint)(_lfRes & 0xFF)) & 1) == 0;

    internal bool GetAf() => _lfOp switch
    {
        FlagOp.Add or FlagOp.Adc or FlagOp.Sub or FlagOp.Sbb => ((_lfDst ^ _lfSrc ^ _lfRes) & 0x10) != 0,
        FlagOp.Inc => (_lfRes & 0xF) == 0,
        FlagOp.Dec => (_lfRes & 0xF) == 0xF,
        FlagOp.Logic => false,
        _ => (_flags & Rflags.AF) != 0,
    };

    internal bool GetOf()
    {
        ulong s = SignBit(_lfSize);
        switch (_lfOp)
        {
            case FlagOp.Add: case FlagOp.Adc: return ((_lfDst ^ _lfRes) & (_lfSrc ^ _lfRes) & s) != 0;
            case FlagOp.Sub: case FlagOp.Sbb: return ((_lfDst ^ _lfSrc) & (_lfDst ^ _lfRes) & s) != 0;
            case FlagOp.Inc: return (_lfRes & SizeMask(_lfSize)) == s;
            case FlagOp.Dec: return (_lfRes & SizeMask(_lfSize)) == s - 1;
            case FlagOp.Logic: return false;
            default: return (_flags & Rflags.OF) != 0;
        }
    }

    /// <summary>The architectural RFLAGS value.</summary>
    internal ulong GetRflags()
    {
        if (_lfOp == FlagOp.None) return _flags;
        ulong f = _flags & ~Rflags.Arith;
        if (GetCf()) f |= Rflags.CF;
        if (GetPf()) f |= Rflags.PF;
        if (GetAf()) f |= Rflags.AF;
        if (GetZf()) f |= Rflags.ZF;
        if (GetSf()) f |= Rflags.SF;
        if (GetOf()) f |= Rflags.OF;
        return f;
    }

    /// <summary>Materializes the lazy flags into the flags word.</summary>
    internal void MaterializeFlags()
    {
        if (_lfOp == FlagOp.None) return;
        _flags = GetRflags();
        _lfOp = FlagOp.None;
    }

    /// <summary>Sets the whole RFLAGS (no checks: callers apply privilege rules).</summary>
    internal void SetRflagsRaw(ulong value)
    {
        _flags = (value & Rflags.Writable) | Rflags.Reserved1;
        _lfOp = FlagOp.None;
    }

    /// <summary>
    /// <see cref="Condition"/> for a condition code known at compile time (the specialized Jcc
    /// handlers): after the commonest recorded operations (CMP/SUB, the logic group, any result
    /// for ZF and SF) the condition is computed inline, with the same formulas as the Get*
    /// functions it stands for; everything else goes through <see cref="Condition"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Cond<TC>() where TC : struct, Decode.ICc
    {
        int cc = TC.Cc;
        bool neg = (cc & 1) != 0;
        var op = _lfOp;
        switch (cc >> 1)
        {
            case 1: // B/AE: CF
                if (op == FlagOp.Sub) { ulong m = SizeMask(_lfSize); return ((_lfDst & m) < (_lfSrc & m)) ^ neg; }
                if (op == FlagOp.Logic) return neg;
                break;
            case 2: // E/NE: ZF
                if (op != FlagOp.None) return ((_lfRes & SizeMask(_lfSize)) == 0) ^ neg;
                break;
            case 3: // BE/A: CF or ZF
                if (op == FlagOp.Sub)
                {
                    ulong m = SizeMask(_lfSize);
                    return ((_lfDst & m) < (_lfSrc & m) || (_lfRes & m) == 0) ^ neg;
                }
                if (op == FlagOp.Logic) return ((_lfRes & SizeMask(_lfSize)) == 0) ^ neg;
                break;
            case 4: // S/NS: SF
                if (op != FlagOp.None) return ((_lfRes & SignBit(_lfSize)) != 0) ^ neg;
                break;
            case 6: // L/GE: SF != OF
            case 7: // LE/G: ZF or SF != OF
            {
                bool sf, of;
                if (op == FlagOp.Sub)
                {
                    ulong s = SignBit(_lfSize);
                    sf = (_lfRes & s) != 0;
                    of = ((_lfDst ^ _lfSrc) & (_lfDst ^ _lfRes) & s) != 0;
                }
                else if (op == FlagOp.Logic)
                {
                    sf = (_lfRes & SignBit(_lfSize)) != 0;
                    of = false;
                }
                else break;
                bool lt = sf != of;
                if ((cc >> 1) == 6) return lt ^ neg;
                return (lt || (_lfRes & SizeMask(_lfSize)) == 0) ^ neg;
            }
        }
        return Condition(cc);
    }

    /// <summary>Evaluates condition code <paramref name="cc"/> (the low nibble of Jcc/SETcc/CMOVcc).</summary>
    internal bool Condition(int cc)
    {
        bool r = (cc >> 1) switch
        {
            0 => GetOf(),
            1 => GetCf(),
            2 => GetZf(),
            3 => GetCf() || GetZf(),
            4 => GetSf(),
            5 => GetPf(),
            6 => GetSf() != GetOf(),
            _ => GetZf() || GetSf() != GetOf(),
        };
        return r ^ ((cc & 1) != 0);
    }
}
