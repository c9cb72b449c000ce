using System.Runtime.CompilerServices;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// Guest memory accesses: segmentation (limits and rights, SDM Vol. 3A §5.3–5.6; canonical checks
/// in 64-bit mode), then the TLB fast path, then the page walk; non-RAM goes out as MMIO exits.
/// Data breakpoints are compared on the slow path only (pages they watch never enter the TLB).
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsCanonical(ulong a) => ((long)a << 16 >> 16) == (long)a;

    /// <summary>Segment base + offset → linear address, with the checks of the current mode.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status Linear(int seg, ulong off, int size, Access access, out ulong lin)
    {
        if (_mode64)
        {
            lin = seg >= Seg.FS ? _seg[seg].Base + off : off;
            if (IsCanonical(lin) && IsCanonical(lin + (ulong)size - 1)) return Status.Ok;
            return seg == Seg.SS ? Fault(Vector.SS, 0) : GP(0);
        }
        ref var s = ref _seg[seg];
        lin = (s.Base + off) & 0xFFFF_FFFF;
        // Fast case: expand-up segment whose limit covers the access (rights were checked at load).
        if ((s.Attributes & (SegmentRegister.AttrUnusable | 0x4 | 0x8)) == 0 && off + (ulong)size - 1 <= s.Limit && (access != Access.Write || (s.Attributes & 2) != 0))
            return Status.Ok;
        return CheckSegmentSlow(seg, off, size, access);
    }

    private Status CheckSegmentSlow(int seg, ulong off, int size, Access access)
    {
        ref var s = ref _seg[seg];
        bool isSs = seg == Seg.SS;
        if (_protected && (_flags & Rflags.VM) == 0)
        {
            if (s.Unusable) return isSs ? Fault(Vector.SS, 0) : GP(0);
            bool code = (s.Attributes & 0x8) != 0;
            if (code)
            {
                if (access == Access.Write) return GP(0);
                if (access == Access.Read && (s.Attributes & 2) == 0) return GP(0);
            }
            else if (access == Access.Write && (s.Attributes & 2) == 0)
                return isSs ? Fault(Vector.SS, 0) : GP(0);
        }
        ulong last = off + (ulong)size - 1;
        bool expandDown = (s.Attributes & 0xC) == 0x4;
        if (expandDown)
        {
            ulong upper = s.DefaultBig ? 0xFFFF_FFFFUL : 0xFFFF;
            if (off <= s.Limit || last > upper) return isSs ? Fault(Vector.SS, 0) : GP(0);
        }
        else if (last > s.Limit) return isSs ? Fault(Vector.SS, 0) : GP(0);
        return Status.Ok;
    }

    // ------------------------------------------------------------------ linear accesses

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status ReadLinear(ulong lin, int size, out ulong value)
    {
        if ((int)(lin & 0xFFF) <= 0x1000 - size)
        {
            ref var e = ref _tlbRead[(int)((lin >> 12) & (TlbSize - 1))];
            if (e.Tag == ((lin & PageMask) | _tlbClass))
            {
                byte* p = (byte*)(e.Addend + (nint)lin);
                value = size switch { 1 => *p, 2 => *(ushort*)p, 4 => *(uint*)p, _ => *(ulong*)p };
                return Status.Ok;
            }
        }
        return ReadLinearSlow(lin, size, _tlbClass, Access.Read, out value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status WriteLinear(ulong lin, int size, ulong value)
    {
        if ((int)(lin & 0xFFF) <= 0x1000 - size)
        {
            ref var e = ref _tlbWrite[(int)((lin >> 12) & (TlbSize - 1))];
            if (e.Tag == ((lin & PageMask) | _tlbClass))
            {
                byte* p = (byte*)(e.Addend + (nint)lin);
                switch (size)
                {
                    case 1: *p = (byte)value; break;
                    case 2: *(ushort*)p = (ushort)value; break;
                    case 4: *(uint*)p = (uint)value; break;
                    default: *(ulong*)p = value; break;
                }
                return Status.Ok;
            }
        }
        return WriteLinearSlow(lin, size, value, _tlbClass);
    }

    /// <summary>
    /// Whether the page of <paramref name="lin"/> is in the read (or write) TLB for the current
    /// privilege class: then an access there needs no page walk and reaches RAM (MMIO and watched
    /// pages are never cached; a ROM page is in the read TLB only).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool InDataTlb(ulong lin, Access access)
    {
        int idx = (int)((lin >> 12) & (TlbSize - 1));
        ulong tag = (lin & PageMask) | _tlbClass;
        return access == Access.Write ? _tlbWrite[idx].Tag == tag : _tlbRead[idx].Tag == tag;
    }

    /// <summary>Checks that a write would succeed (RMW instructions probe before they read).</summary>
    internal Status ProbeWrite(ulong lin, int size)
    {
        if ((int)(lin & 0xFFF) <= 0x1000 - size)
        {
            ref var e = ref _tlbWrite[(int)((lin >> 12) & (TlbSize - 1))];
            if (e.Tag == ((lin & PageMask) | _tlbClass)) return Status.Ok;
        }
        var st = TranslateSlow(lin, Access.Write, _tlbClass, out _, out _);
        if (st != Status.Ok) return st;
        ulong last = lin + (ulong)size - 1;
        if ((last & PageMask) != (lin & PageMask))
            return TranslateSlow(last, Access.Write, _tlbClass, out _, out _);
        return Status.Ok;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal Status ReadLinearSlow(ulong lin, int size, ulong cls, Access access, out ulong value)
    {
        value = 0;
        if ((int)(lin & 0xFFF) > 0x1000 - size)
        {
            // Crosses a page: both pages must translate before anything is returned.
            for (int i = 0; i < size; i++)
            {
                var st = ReadLinearSlow(Wrap(lin + (ulong)i), 1, cls, access, out ulong b);
                if (st != Status.Ok) return st;
                value |= b << (8 * i);
            }
            return Status.Ok;
        }
        var s = TranslateSlow(lin, access, cls, out byte* host, out ulong gpa);
        if (s != Status.Ok) return s;
        if (_dataWatch != 0 && access == Access.Read) NoteDataAccess(lin, size, write: false); // Breakpoints.cs
        if (host != null)
        {
            value = size switch { 1 => *host, 2 => *(ushort*)host, 4 => *(uint*)host, _ => *(ulong*)host };
            return Status.Ok;
        }
        return TryInput(ExitReason.MmioRead, gpa, size, out value) ? Status.Ok : Status.NeedInput;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal Status WriteLinearSlow(ulong lin, int size, ulong value, ulong cls)
    {
        if ((int)(lin & 0xFFF) > 0x1000 - size)
        {
            // Probe both pages first so a fault leaves memory untouched.
            ulong second = Wrap((lin | 0xFFF) + 1);
            var st = TranslateSlow(lin, Access.Write, cls, out _, out _);
            if (st != Status.Ok) return st;
            st = TranslateSlow(second, Access.Write, cls, out _, out _);
            if (st != Status.Ok) return st;
            for (int i = 0; i < size; i++)
            {
                st = WriteLinearSlow(Wrap(lin + (ulong)i), 1, value >> (8 * i), cls);
                if (st != Status.Ok) return st;
            }
            return Status.Ok;
        }
        var s = TranslateSlow(lin, Access.Write, cls, out byte* host, out ulong gpa);
        if (s != Status.Ok) return s;
        if (_dataWatch != 0) NoteDataAccess(lin, size, write: true); // Breakpoints.cs: RAM, ROM and MMIO alike
        if (host != null)
        {
            switch (size)
            {
                case 1: *host = (byte)value; break;
                case 2: *(ushort*)host = (ushort)value; break;
                case 4: *(uint*)host = (uint)value; break;
                default: *(ulong*)host = value; break;
            }
            return Status.Ok;
        }
        if (gpa == ulong.MaxValue) return Status.Ok; // write to ROM: dropped, as on hardware
        Output(ExitReason.MmioWrite, gpa, size, value);
        return Status.Ok;
    }

    private ulong Wrap(ulong lin) => _longMode ? lin : lin & 0xFFFF_FFFF;

    // ------------------------------------------------------------------ segment:offset accesses

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status Read(int seg, ulong off, int size, out ulong value)
    {
        var st = Linear(seg, off, size, Access.Read, out ulong lin);
        if (st != Status.Ok) { value = 0; return st; }
        return ReadLinear(lin, size, out value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Status Write(int seg, ulong off, int size, ulong value)
    {
        var st = Linear(seg, off, size, Access.Write, out ulong lin);
        if (st != Status.Ok) return st;
        return WriteLinear(lin, size, value);
    }

    /// <summary>Supervisor-mode ("implicit") access to a system structure (GDT, IDT, TSS).</summary>
    internal Status ReadSystem(ulong lin, int size, out ulong value)
        => ReadLinearSlow(Wrap(lin), size, ClassSupervisorAc, Access.Read, out value);

    internal Status WriteSystem(ulong lin, int size, ulong value)
        => WriteLinearSlow(Wrap(lin), size, value, ClassSupervisorAc);

    /// <summary>Reads from linear memory on behalf of the VMM (debugger, tests); no side effects on failure.</summary>
    public bool TryReadLinear(ulong lin, Span<byte> buffer)
    {
        for (int i = 0; i < buffer.Length; i++)
        {
            if (WalkPageTables(lin + (ulong)i, Access.Read, ClassSupervisorAc, out var w) != Status.Ok) return false;
            byte* p = PhysToHost(w.Phys);
            if (p == null) return false;
            buffer[i] = *p;
        }
        return true;
    }
}
