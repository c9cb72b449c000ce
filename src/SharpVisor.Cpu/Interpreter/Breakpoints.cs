using System.Runtime.CompilerServices;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>
/// Data and I/O breakpoints of DR0–DR3/DR7 (SDM Vol. 3B §17.2.4–17.2.5, §17.3.1.2), general
/// detect (DR7.GD, §17.3.1.3). Execute breakpoints and the single-step trap are in Dispatch.cs.
///
/// Data breakpoints (R/W = 01 write, 11 read or write) are traps: an access that overlaps the
/// aligned 1/2/4/8-byte range of an enabled breakpoint (LEN 00/01/11/10; the address bits below
/// the length are ignored) sets its bit in <see cref="_debugHits"/>, and the #DB follows the
/// instruction, with DR6.B0–B3 = the breakpoints that matched. A REP string instruction stops
/// after the iteration that hit (StringIo.cs); the #DB then points at the string instruction and
/// pushes RF = 1 (§17.3.1.1, the rule for traps between iterations), so it resumes on return.
/// Matching is on linear addresses; every data access counts, implicit ones to the GDT, LDT, IDT
/// and TSS and the pushes of an event delivery too (they go through the same slow path).
/// Instruction fetches, page walks, CLFLUSH and the VMM's own reads never match.
///
/// Cost: nothing on the TLB fast path. While a data breakpoint is armed, the 4 KiB linear pages
/// that hold its range are never entered into the read and write TLBs, so every access to them
/// takes the slow path, where <see cref="NoteDataAccess"/> compares. Arming or disarming flushes
/// the TLB once.
///
/// I/O breakpoints (R/W = 10) exist only with CR4.DE = 1; with CR4.DE = 0 the encoding is
/// undefined (§17.2.4) and this engine gives it no effect (QEMU treats it as an I/O breakpoint
/// whatever CR4.DE says). CPUID.1:EDX.DE is advertised, so a guest can set CR4.DE. The port range
/// is aligned like a data range; REP INS/OUTS trap after their first iteration (§17.3.1.2).
///
/// DR6.B0–B3 of a breakpoint that is not enabled "may or may not" be set (§17.2.3): this engine
/// sets only enabled ones (it never watches disabled breakpoints, so they cost nothing).
///
/// Deliberate deviations: a hit on the instruction after MOV SS/POP SS is not held back one
/// more instruction; a hit by an event delivery (its pushes) is delivered at the next
/// instruction boundary inside the engine, before the handler's first instruction. A hit by an
/// instruction that leaves the engine with an exit (OUT, an MMIO write) is delivered before the
/// exit, as every trap of such an instruction (ExecuteBlock).
/// </summary>
public sealed unsafe partial class SoftwareVcpu
{
    private const ulong Dr6Bd = 1UL << 13, Dr6Bs = 1UL << 14;
    private const ulong Dr7Gd = 1UL << 13;
    private const int RwExecute = 0, RwWrite = 1, RwIo = 2, RwReadWrite = 3;

    /// <summary>Breakpoints (bit n = DRn) whose condition matched during the current instruction or event delivery.</summary>
    internal uint _debugHits;
    /// <summary>Enabled data breakpoints (R/W = 01 or 11): bit n = DRn. 0 keeps every data access on its plain path.</summary>
    private uint _dataWatch;
    /// <summary>Enabled I/O breakpoints (R/W = 10); they match only while CR4.DE = 1.</summary>
    private uint _ioWatch;
    /// <summary>DR0–DR3 and DR7 as <see cref="_dataWatch"/> was computed from them (to spot a change).</summary>
    private ulong _watchDr7, _watchDr0, _watchDr1, _watchDr2, _watchDr3;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BreakpointRw(ulong dr7, int n) => (int)(dr7 >> (16 + n * 4)) & 3;

    /// <summary>LEN field → bytes: 00 → 1, 01 → 2, 10 → 8, 11 → 4 (SDM Vol. 3B §17.2.5).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BreakpointLength(ulong dr7, int n) => ((int)(dr7 >> (18 + n * 4)) & 3) switch { 0 => 1, 1 => 2, 2 => 8, _ => 4 };

    private static bool BreakpointEnabled(ulong dr7, int n) => ((dr7 >> (n * 2)) & 3) != 0;

    /// <summary>
    /// Recomputes what is watched after DR0–DR3 or DR7 changed (MOV to DRn, a task switch that
    /// clears L0–L3). When the set of watched data ranges changes, the TLB is flushed so pages
    /// that became watched leave it (and pages no longer watched may come back).
    /// </summary>
    internal void UpdateBreakpoints()
    {
        ulong dr7 = _dr[7];
        uint data = 0, io = 0;
        for (int n = 0; n < 4; n++)
        {
            if (!BreakpointEnabled(dr7, n)) continue;
            int rw = BreakpointRw(dr7, n);
            if (rw == RwWrite || rw == RwReadWrite) data |= 1u << n;
            else if (rw == RwIo) io |= 1u << n;
        }
        bool changed = data != _dataWatch
            || (data != 0 && (((dr7 ^ _watchDr7) & 0xFFFF_0000) != 0
                || _dr[0] != _watchDr0 || _dr[1] != _watchDr1 || _dr[2] != _watchDr2 || _dr[3] != _watchDr3));
        _dataWatch = data;
        _ioWatch = io;
        _watchDr7 = dr7;
        _watchDr0 = _dr[0]; _watchDr1 = _dr[1]; _watchDr2 = _dr[2]; _watchDr3 = _dr[3];
        if (changed) FlushTlb(global: true);
    }

    /// <summary>Linear address of DRn as the current mode compares it (outside long mode, 32 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong BreakpointAddress(int n) => _longMode ? _dr[n] : _dr[n] & 0xFFFF_FFFF;

    /// <summary>True when the 4 KiB linear page of <paramref name="lin"/> holds a watched data range (keep it out of the TLB).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool IsWatchedPage(ulong lin)
    {
        ulong dr7 = _dr[7];
        for (int n = 0; n < 4; n++)
        {
            if ((_dataWatch & (1u << n)) == 0) continue;
            // An aligned range of at most 8 bytes never crosses a page.
            ulong start = BreakpointAddress(n) & ~(ulong)(BreakpointLength(dr7, n) - 1);
            if ((start & PageMask) == (lin & PageMask)) return true;
        }
        return false;
    }

    /// <summary>
    /// A data access of <paramref name="size"/> bytes at <paramref name="lin"/> (not crossing a
    /// page) completed its translation: records the breakpoints whose range it overlaps.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NoteDataAccess(ulong lin, int size, bool write)
    {
        ulong dr7 = _dr[7];
        ulong last = lin + (ulong)size - 1;
        for (int n = 0; n < 4; n++)
        {
            if ((_dataWatch & (1u << n)) == 0) continue;
            if (!write && BreakpointRw(dr7, n) != RwReadWrite) continue;
            int len = BreakpointLength(dr7, n);
            ulong start = BreakpointAddress(n) & ~(ulong)(len - 1);
            if (lin <= start + (ulong)(len - 1) && start <= last) _debugHits |= 1u << n;
        }
    }

    /// <summary>IN, OUT, INS, OUTS of <paramref name="size"/> bytes at <paramref name="port"/>: records matching I/O breakpoints.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteIoAccess(ushort port, int size)
    {
        if (_ioWatch != 0) NoteIoAccessSlow(port, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NoteIoAccessSlow(ushort port, int size)
    {
        if ((_cr4 & Cr4.DE) == 0) return; // R/W = 10 is undefined without debug extensions: no effect
        ulong dr7 = _dr[7];
        ulong last = port + (ulong)size - 1;
        for (int n = 0; n < 4; n++)
        {
            if ((_ioWatch & (1u << n)) == 0) continue;
            int len = BreakpointLength(dr7, n);
            // I/O breakpoint addresses are port numbers zero-extended to the register's width.
            ulong start = _dr[n] & ~(ulong)(len - 1);
            if (port <= start + (ulong)(len - 1) && start <= last) _debugHits |= 1u << n;
        }
    }

    /// <summary>
    /// MOV to or from a debug register while DR7.GD = 1: a fault-class #DB before the MOV runs,
    /// with DR6.BD set and GD cleared so the handler can use the debug registers (§17.2.4). The
    /// frame gets RF = 1, as for every fault-class exception other than an instruction breakpoint
    /// (§17.3.1.1).
    /// </summary>
    private Status GeneralDetect()
    {
        _dr[7] &= ~Dr7Gd;
        _dr[6] |= Dr6Bd;
        _flags |= Rflags.RF;
        return Fault(Vector.DB);
    }
}
