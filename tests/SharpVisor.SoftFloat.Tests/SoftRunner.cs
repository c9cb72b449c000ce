// Runs one X87Op on the software model with the same inputs and output shape as HostX87.
using SharpVisor.SoftFloat;

namespace SharpVisor.SoftFloat.Tests;

internal static class SoftRunner
{
    /// <summary>FSW bits compared per operation: the flags plus the condition codes the SDM defines.</summary>
    public static ushort CompareMask(X87Op op) => op switch
    {
        X87Op.Prem or X87Op.Prem1 or X87Op.Com or X87Op.Ucom or X87Op.Tst or X87Op.Xam
            or X87Op.ComM64 or X87Op.IcomM32 => 0x473F,
        _ => 0x023F,
    };

    public static int MemBytes(X87Op op) => op switch
    {
        X87Op.LoadF32 or X87Op.StoreF32 or X87Op.LoadI32 or X87Op.StoreI32 or X87Op.StoreTtI32 => 4,
        X87Op.LoadF64 or X87Op.StoreF64 or X87Op.LoadI64 or X87Op.StoreI64 or X87Op.StoreTtI64 => 8,
        X87Op.LoadI16 or X87Op.StoreI16 or X87Op.StoreTtI16 => 2,
        X87Op.LoadBcd or X87Op.StoreBcd => 10,
        _ => 0,
    };

    public static bool ComparesR1(X87Op op) => op is not (X87Op.Com or X87Op.Ucom or X87Op.Tst or X87Op.Xam
        or X87Op.ComM64 or X87Op.IcomM32)
        && !IsStore(op);

    public static bool IsStore(X87Op op) => op is X87Op.StoreF32 or X87Op.StoreF64 or X87Op.StoreI16 or X87Op.StoreI32
        or X87Op.StoreI64 or X87Op.StoreTtI16 or X87Op.StoreTtI32 or X87Op.StoreTtI64 or X87Op.StoreBcd;

    public static HostResult Run(X87Op op, FpuContext ctx, Float80 a, Float80 b, ulong mem, ushort memHigh)
    {
        Float80 r1 = default, r2 = default;
        ulong outMem = mem;
        ushort outHigh = memHigh;
        switch (op)
        {
            case X87Op.Add: r1 = X87Math.Add(ctx, a, b); break;
            case X87Op.Sub: r1 = X87Math.Sub(ctx, a, b); break;
            case X87Op.Mul: r1 = X87Math.Mul(ctx, a, b); break;
            case X87Op.Div: r1 = X87Math.Div(ctx, a, b); break;
            case X87Op.Sqrt: r1 = X87Math.Sqrt(ctx, a); break;
            case X87Op.Prem: r1 = X87Math.PartialRemainder(ctx, a, b); break;
            case X87Op.Prem1: r1 = X87Math.IeeeRemainder(ctx, a, b); break;
            case X87Op.Rndint: r1 = X87Math.RoundToInteger(ctx, a); break;
            case X87Op.Scale: r1 = X87Math.Scale(ctx, a, b); break;
            case X87Op.Xtract: r1 = X87Math.Extract(ctx, a, out r2); break;
            case X87Op.Com: X87Math.Compare(ctx, a, b, quiet: false); break;
            case X87Op.Ucom: X87Math.Compare(ctx, a, b, quiet: true); break;
            case X87Op.Tst: X87Math.Test(ctx, a); break;
            case X87Op.Xam: X87Math.Examine(ctx, a); break;
            case X87Op.LoadF32: r1 = X87Math.FromFloat32(ctx, (uint)mem); break;
            case X87Op.LoadF64: r1 = X87Math.FromFloat64(ctx, mem); break;
            case X87Op.LoadI16: r1 = X87Math.FromInt64((short)mem); break;
            case X87Op.LoadI32: r1 = X87Math.FromInt64((int)mem); break;
            case X87Op.LoadI64: r1 = X87Math.FromInt64((long)mem); break;
            case X87Op.LoadBcd:
            {
                Span<byte> bcd = stackalloc byte[10];
                BitConverter.TryWriteBytes(bcd, mem);
                BitConverter.TryWriteBytes(bcd[8..], memHigh);
                r1 = X87Math.FromPackedBcd(bcd);
                break;
            }
            case X87Op.AddM32: r1 = X87Math.Add(ctx, a, X87Operand.FromFloat32((uint)mem)); break;
            case X87Op.MulM64: r1 = X87Math.Mul(ctx, a, X87Operand.FromFloat64(mem)); break;
            case X87Op.DivM32: r1 = X87Math.Div(ctx, a, X87Operand.FromFloat32((uint)mem)); break;
            case X87Op.DivrM64: r1 = X87Math.Div(ctx, X87Operand.FromFloat64(mem), a); break;
            case X87Op.SubrM32: r1 = X87Math.Sub(ctx, X87Operand.FromFloat32((uint)mem), a); break;
            case X87Op.IaddM16: r1 = X87Math.Add(ctx, a, X87Math.FromInt64((short)mem)); break;
            case X87Op.IdivM32: r1 = X87Math.Div(ctx, a, X87Math.FromInt64((int)mem)); break;
            case X87Op.ComM64: X87Math.Compare(ctx, a, X87Operand.FromFloat64(mem), quiet: false); break;
            case X87Op.IcomM32: X87Math.Compare(ctx, a, X87Math.FromInt64((int)mem), quiet: false); break;
            case X87Op.StoreF32: outMem = (mem & ~0xFFFF_FFFFUL) | X87Math.ToFloat32(ctx, a); break;
            case X87Op.StoreF64: outMem = X87Math.ToFloat64(ctx, a); break;
            case X87Op.StoreI16: outMem = (mem & ~0xFFFFUL) | (ushort)X87Math.ToInt16(ctx, a); break;
            case X87Op.StoreI32: outMem = (mem & ~0xFFFF_FFFFUL) | (uint)X87Math.ToInt32(ctx, a); break;
            case X87Op.StoreI64: outMem = (ulong)X87Math.ToInt64(ctx, a); break;
            case X87Op.StoreTtI16: outMem = (mem & ~0xFFFFUL) | (ushort)X87Math.ToInt16Truncate(ctx, a); break;
            case X87Op.StoreTtI32: outMem = (mem & ~0xFFFF_FFFFUL) | (uint)X87Math.ToInt32Truncate(ctx, a); break;
            case X87Op.StoreTtI64: outMem = (ulong)X87Math.ToInt64Truncate(ctx, a); break;
            case X87Op.StoreBcd:
            {
                Span<byte> bcd = stackalloc byte[10];
                X87Math.ToPackedBcd(ctx, a, bcd);
                outMem = BitConverter.ToUInt64(bcd);
                outHigh = BitConverter.ToUInt16(bcd[8..]);
                break;
            }
        }
        return new HostResult(r1, r2, outMem, outHigh, ctx.StatusBits);
    }
}
