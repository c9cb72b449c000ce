// A native x87 runner for differential tests: each operation is a tiny machine-code stub
// (System V x86-64, rdi = data block) in an mmap'd page that loads operands with FLD m80/FLD m32/...,
// sets FCW with FLDCW, runs one instruction, saves FSW with FNSTSW and stores results. Every stub
// starts and ends with FNINIT so the caller's x87 state (FCW is callee-saved) is the default again.
using System.Runtime.InteropServices;
using SharpVisor.SoftFloat;

namespace SharpVisor.SoftFloat.Tests;

public enum X87Op
{
    Add, Sub, Mul, Div, Sqrt, Prem, Prem1, Rndint, Scale, Xtract, Com, Ucom, Tst, Xam,
    LoadF32, LoadF64, StoreF32, StoreF64,
    LoadI16, LoadI32, LoadI64, StoreI16, StoreI32, StoreI64, StoreTtI16, StoreTtI32, StoreTtI64,
    LoadBcd, StoreBcd,
    // Arithmetic with a memory operand: st0 op m32/m64/m16int/m32int.
    AddM32, MulM64, DivM32, DivrM64, SubrM32, IaddM16, IdivM32, ComM64, IcomM32,
    // Transcendentals (compared within 1 ulp, not bit for bit).
    F2xm1, Fyl2x, Fyl2xp1, Fsin, Fcos, Fsincos, Fptan, Fpatan,
}

public readonly record struct HostResult(Float80 R1, Float80 R2, ulong Mem, ushort MemHigh, ushort Sw);

internal sealed unsafe partial class HostX87 : IDisposable
{
    private const int OffA = 0, OffB = 16, OffR1 = 32, OffSw = 48, OffCw = 50, OffMem = 64, OffR2 = 80;
    private const int PageSize = 4096;
    private readonly byte* _code;
    private readonly byte* _data;
    private readonly nint[] _entries = new nint[Enum.GetValues<X87Op>().Length];

    public static bool IsSupported =>
        RuntimeInformation.ProcessArchitecture == Architecture.X64 && OperatingSystem.IsLinux();

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int mprotect(nint addr, nuint length, int prot);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint addr, nuint length);

    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;

    public HostX87()
    {
        nint page = mmap(0, PageSize, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (page == -1) throw new InvalidOperationException($"mmap failed: errno {Marshal.GetLastPInvokeError()}");
        _code = (byte*)page;
        _data = (byte*)NativeMemory.AlignedAlloc(128, 64);
        NativeMemory.Clear(_data, 128);
        var buf = new List<byte>();
        foreach (X87Op op in Enum.GetValues<X87Op>())
        {
            _entries[(int)op] = page + buf.Count;
            buf.AddRange(Stub(op));
            while (buf.Count % 16 != 0) buf.Add(0xCC);
        }
        if (buf.Count > PageSize) throw new InvalidOperationException("stubs exceed one page");
        // Safe: the page is ours, writable and large enough (checked above).
        buf.ToArray().CopyTo(new Span<byte>(_code, PageSize));
        if (mprotect(page, PageSize, ProtRead | ProtExec) != 0)
            throw new InvalidOperationException($"mprotect failed: errno {Marshal.GetLastPInvokeError()}");
    }

    // ModRM with mod = 01 (disp8), rm = 111 (rdi).
    private static byte[] Mem(byte opcode, int reg, int disp) => [opcode, (byte)(0x47 | (reg << 3)), (byte)disp];
    private static byte[] FldA => Mem(0xDB, 5, OffA);
    private static byte[] FldB => Mem(0xDB, 5, OffB);
    private static byte[] Fnstsw => Mem(0xDD, 7, OffSw);
    private static byte[] FstpR1 => Mem(0xDB, 7, OffR1);
    private static byte[] FstpR2 => Mem(0xDB, 7, OffR2);

    private static byte[] Stub(X87Op op)
    {
        var s = new List<byte> { 0xDB, 0xE3 }; // fninit
        s.AddRange(Mem(0xD9, 5, OffCw)); // fldcw
        void Binary(byte b0, byte b1) { s.AddRange(FldB); s.AddRange(FldA); s.Add(b0); s.Add(b1); s.AddRange(Fnstsw); s.AddRange(FstpR1); }
        void Unary(byte b0, byte b1) { s.AddRange(FldA); s.Add(b0); s.Add(b1); s.AddRange(Fnstsw); s.AddRange(FstpR1); }
        void Store(byte opc, int reg) { s.AddRange(FldA); s.AddRange(Mem(opc, reg, OffMem)); s.AddRange(Fnstsw); }
        void MemOp(byte opc, int reg) { s.AddRange(FldA); s.AddRange(Mem(opc, reg, OffMem)); s.AddRange(Fnstsw); s.AddRange(FstpR1); }
        void Load(byte opc, int reg) { s.AddRange(Mem(opc, reg, OffMem)); s.AddRange(Fnstsw); s.AddRange(FstpR1); }
        switch (op)
        {
            case X87Op.Add: Binary(0xD8, 0xC1); break;
            case X87Op.Sub: Binary(0xD8, 0xE1); break;
            case X87Op.Mul: Binary(0xD8, 0xC9); break;
            case X87Op.Div: Binary(0xD8, 0xF1); break;
            case X87Op.Prem: Binary(0xD9, 0xF8); break;
            case X87Op.Prem1: Binary(0xD9, 0xF5); break;
            case X87Op.Scale: Binary(0xD9, 0xFD); break;
            case X87Op.Com: Binary(0xD8, 0xD1); break;
            case X87Op.Ucom: Binary(0xDD, 0xE1); break;
            case X87Op.Sqrt: Unary(0xD9, 0xFA); break;
            case X87Op.Rndint: Unary(0xD9, 0xFC); break;
            case X87Op.Tst: Unary(0xD9, 0xE4); break;
            case X87Op.Xam: Unary(0xD9, 0xE5); break;
            case X87Op.Xtract: Unary(0xD9, 0xF4); s.AddRange(FstpR2); break;
            case X87Op.LoadF32: Load(0xD9, 0); break;
            case X87Op.LoadF64: Load(0xDD, 0); break;
            case X87Op.LoadI16: Load(0xDF, 0); break;
            case X87Op.LoadI32: Load(0xDB, 0); break;
            case X87Op.LoadI64: Load(0xDF, 5); break;
            case X87Op.LoadBcd: Load(0xDF, 4); break;
            case X87Op.StoreF32: Store(0xD9, 2); break;
            case X87Op.StoreF64: Store(0xDD, 2); break;
            case X87Op.StoreI16: Store(0xDF, 2); break;
            case X87Op.StoreI32: Store(0xDB, 2); break;
            case X87Op.StoreI64: Store(0xDF, 7); break;
            case X87Op.StoreTtI16: Store(0xDF, 1); break;
            case X87Op.StoreTtI32: Store(0xDB, 1); break;
            case X87Op.StoreTtI64: Store(0xDD, 1); break;
            case X87Op.StoreBcd: Store(0xDF, 6); break;
            case X87Op.F2xm1: Unary(0xD9, 0xF0); break;
            case X87Op.Fsin: Unary(0xD9, 0xFE); break;
            case X87Op.Fcos: Unary(0xD9, 0xFF); break;
            case X87Op.Fsincos: Unary(0xD9, 0xFB); s.AddRange(FstpR2); break;
            case X87Op.Fptan: Unary(0xD9, 0xF2); s.AddRange(FstpR2); break;
            case X87Op.Fyl2x: Binary(0xD9, 0xF1); break;
            case X87Op.Fyl2xp1: Binary(0xD9, 0xF9); break;
            case X87Op.Fpatan: Binary(0xD9, 0xF3); break;
            case X87Op.AddM32: MemOp(0xD8, 0); break;
            case X87Op.MulM64: MemOp(0xDC, 1); break;
            case X87Op.DivM32: MemOp(0xD8, 6); break;
            case X87Op.DivrM64: MemOp(0xDC, 7); break;
            case X87Op.SubrM32: MemOp(0xD8, 5); break;
            case X87Op.IaddM16: MemOp(0xDE, 0); break;
            case X87Op.IdivM32: MemOp(0xDA, 6); break;
            case X87Op.ComM64: MemOp(0xDC, 2); break;
            case X87Op.IcomM32: MemOp(0xDA, 2); break;
        }
        s.AddRange([0xDB, 0xE3, 0xC3]); // fninit; ret
        return s.ToArray();
    }

    public HostResult Run(X87Op op, ushort cw, Float80 a, Float80 b, ulong mem = 0, ushort memHigh = 0)
    {
        byte* d = _data;
        *(ulong*)(d + OffA) = a.Significand;
        *(ushort*)(d + OffA + 8) = a.SignExponent;
        *(ulong*)(d + OffB) = b.Significand;
        *(ushort*)(d + OffB + 8) = b.SignExponent;
        *(ushort*)(d + OffCw) = cw;
        *(ulong*)(d + OffMem) = mem;
        *(ushort*)(d + OffMem + 8) = memHigh;
        *(ulong*)(d + OffR1) = 0;
        *(ushort*)(d + OffR1 + 8) = 0;
        *(ulong*)(d + OffR2) = 0;
        *(ushort*)(d + OffR2 + 8) = 0;
        // Safe: the stub only touches the 128-byte data block passed in rdi and the x87 state,
        // which it resets with FNINIT before returning.
        ((delegate* unmanaged<byte*, void>)_entries[(int)op])(d);
        return new HostResult(
            new Float80(*(ushort*)(d + OffR1 + 8), *(ulong*)(d + OffR1)),
            new Float80(*(ushort*)(d + OffR2 + 8), *(ulong*)(d + OffR2)),
            *(ulong*)(d + OffMem), *(ushort*)(d + OffMem + 8), *(ushort*)(d + OffSw));
    }

    public void Dispose()
    {
        munmap((nint)_code, PageSize);
        NativeMemory.AlignedFree(_data);
    }
}
