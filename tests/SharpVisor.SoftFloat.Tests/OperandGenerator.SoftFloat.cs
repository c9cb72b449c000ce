// The SoftFloat tests' part of the shared operand generator (tests/Shared/OperandGenerator.cs): the
// case count setting, control words and memory operands of the HostX87 operations (X87Op).
using SharpVisor.SoftFloat.Tests;

namespace SharpVisor.Tests.Shared;

internal sealed partial class OperandGenerator
{
    /// <summary>SHARPVISOR_FPU_CASES: the total differential case count asked for, or null for the default.</summary>
    public static int? ConfiguredCaseCount() =>
        int.TryParse(Environment.GetEnvironmentVariable("SHARPVISOR_FPU_CASES"), out int n) && n > 0 ? n : null;

    /// <summary>All exceptions masked, precision 24, 53 or 64 bits, any rounding control.</summary>
    public ushort RandomControlWord() => (ushort)(0x3F | (_rng.Next(3) switch { 0 => 0, 1 => 2, _ => 3 }) << 8 | _rng.Next(4) << 10);

    public (ulong mem, ushort high) MemoryOperand(X87Op op)
    {
        switch (op)
        {
            case X87Op.LoadF32 or X87Op.AddM32 or X87Op.DivM32 or X87Op.SubrM32:
            {
                uint exp = _rng.Next(4) switch { 0 => 0, 1 => 0xFF, _ => (uint)_rng.Next(256) };
                uint frac = (uint)NextU64() & 0x7FFFFF;
                if (_rng.Next(4) == 0) frac >>= _rng.Next(23);
                return ((uint)_rng.Next(2) << 31 | exp << 23 | frac, 0);
            }
            case X87Op.LoadF64 or X87Op.MulM64 or X87Op.DivrM64 or X87Op.ComM64:
            {
                ulong exp = _rng.Next(4) switch { 0 => 0UL, 1 => 0x7FFUL, _ => (ulong)_rng.Next(2048) };
                ulong frac = NextU64() & 0xF_FFFF_FFFF_FFFF;
                if (_rng.Next(4) == 0) frac >>= _rng.Next(52);
                return ((ulong)_rng.Next(2) << 63 | exp << 52 | frac, 0);
            }
            case X87Op.LoadI16 or X87Op.LoadI32 or X87Op.LoadI64 or X87Op.IaddM16 or X87Op.IdivM32 or X87Op.IcomM32:
                return (NextU64() >> _rng.Next(64), 0);
            case X87Op.LoadBcd:
            {
                ulong lo = 0;
                for (int i = 0; i < 16; i++) lo |= (ulong)_rng.Next(10) << (4 * i);
                ushort hi = (ushort)(_rng.Next(10) | _rng.Next(10) << 4 | (_rng.Next(2) << 15));
                return (lo, hi);
            }
            default:
                return (NextU64(), (ushort)_rng.Next(0x10000));
        }
    }
}
