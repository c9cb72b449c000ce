// Benchmark guests: small programs assembled with Iced and started directly in the mode they
// measure (real mode, flat 32-bit protected mode, or IA-32e with 4-level paging), the way a
// loader leaves a CPU (VcpuState), so no mode-switch code is in the timed region. Each guest
// ends with HLT; the number of instructions it retires is a closed formula of its parameters,
// checked against SoftwareVcpu.InstructionsRetired when the workload is built.
using Iced.Intel;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu;
using SharpVisor.Cpu.State;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Benchmarks;

/// <summary>What one run of a guest measures: its unit (instruction, byte, exit) and how many.</summary>
internal enum Unit { Instruction, Byte, Exit }

/// <summary>Guest-physical layout shared by the guests (all below 16 MiB of RAM).</summary>
internal static class Layout
{
    public const ulong RamBytes = 16UL << 20;
    public const ulong Code = 0x8000;
    /// <summary>PML4, PDPT, PD, then the 4 KiB page tables for the first 16 MiB.</summary>
    public const ulong Pml4 = 0x10000;
    public const ulong IntegerData = 0x20_0000;
    /// <summary>The real-mode guest's data segment (below 1 MiB, after the page tables).</summary>
    public const ulong RealModeData = 0x2_0000;
    public const ulong CopySource = 0x40_0000, CopyDestination = 0x60_0000;
    /// <summary>1 MiB: 256 source and 256 destination pages, in disjoint sets of the 1024-entry TLB.</summary>
    public const int CopyBytes = 1 << 20;
}

/// <summary>One guest on one software vCPU, ready to be run again and again from the same start state.</summary>
internal sealed partial class SoftwareGuest : IDisposable
{
    private readonly GuestMemory _memory = new();
    private readonly SoftwareEngine _engine;
    private readonly VcpuState _start;

    public SoftwareVcpu Vcpu { get; }
    public string Name { get; }
    public Unit Unit { get; }
    /// <summary>Units (instructions, bytes copied, exits) one <see cref="Run"/> does.</summary>
    public long UnitsPerRun { get; }
    /// <summary>Guest instructions one <see cref="Run"/> retires (the closed formula of the guest).</summary>
    public long InstructionsPerRun { get; }
    /// <summary>Bytes one run scans, compares or copies, when the guest is a string primitive (else 0).</summary>
    public long BytesPerRun { get; init; }
    /// <summary>Floating-point operations one run does, when the guest is arithmetic (else 0).</summary>
    public long FlopsPerRun { get; init; }
    /// <summary>
    /// Checks what the guest computed after a run (registers, memory); returns why it is wrong or null.
    /// Null for guests whose instruction count is the whole check.
    /// </summary>
    public Func<SoftwareGuest, string?>? ResultCheck { get; init; }

    /// <summary>The guest's RAM, for writing its input data and reading its results.</summary>
    public GuestMemory Memory => _memory;

    private SoftwareGuest(string name, Unit unit, long units, long instructions, byte[] code, VcpuState start, bool fourKPages)
    {
        Name = name; Unit = unit; UnitsPerRun = units; InstructionsPerRun = instructions;
        _memory.AddRegion(0, Layout.RamBytes, "ram");
        _memory.Write(Layout.Code, code);
        WritePageTables(_memory, fourKPages);
        _engine = new SoftwareEngine(_memory);
        Vcpu = (SoftwareVcpu)_engine.CreateVcpu(0);
        _start = start;
    }

    /// <summary>Runs from the start state to HLT; returns the instructions retired. Exits other than I/O are errors.</summary>
    public long Run()
    {
        Vcpu.SetState(_start);
        long before = Vcpu.InstructionsRetired;
        while (true)
        {
            var r = Vcpu.Run();
            if (r == ExitReason.Halt) break;
            if (r == ExitReason.IoOut) continue;
            if (r == ExitReason.IoIn) { Vcpu.Exit.Data = 0; continue; }
            throw new InvalidOperationException($"{Name}: unexpected exit {Vcpu.Exit}");
        }
        return Vcpu.InstructionsRetired - before;
    }

    /// <summary>Runs once and checks that the guest retired exactly the instructions its formula says.</summary>
    public SoftwareGuest Verified()
    {
        long n = Run();
        if (n != InstructionsPerRun)
            throw new InvalidOperationException($"{Name}: retired {n} instructions, the guest's formula says {InstructionsPerRun}");
        CheckResult();
        return this;
    }

    /// <summary>Throws when the last run computed a wrong result, so a wrong engine fails rather than being timed.</summary>
    public void CheckResult()
    {
        if (ResultCheck?.Invoke(this) is { } wrong)
            throw new InvalidOperationException($"{Name}: wrong result: {wrong}");
    }

    /// <summary>The vCPU's registers now (after a run: at the guest's HLT).</summary>
    public VcpuState State()
    {
        var s = new VcpuState();
        Vcpu.GetState(s);
        return s;
    }

    public void Dispose()
    {
        Vcpu.Dispose();
        _engine.Dispose();
        _memory.Dispose();
    }

    // ------------------------------------------------------------------ start states

    private static VcpuState RealMode()
    {
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true);
        s.Ds = SegmentRegister.RealMode((ushort)(Layout.RealModeData >> 4));
        s.Rip = Layout.Code;
        s.Rsp = 0x7000;
        return s;
    }

    private static VcpuState Protected32()
    {
        var s = VcpuState.Protected32(Layout.Code);
        s.Rsp = 0x7000;
        return s;
    }

    /// <summary>IA-32e, 64-bit code segment, CPL 0, paging through the tables at <see cref="Layout.Pml4"/>.</summary>
    private static VcpuState Long64()
    {
        var s = VcpuState.Protected32(Layout.Code);
        s.Cs = SegmentRegister.Flat(0x08, code: true, longMode: true);
        s.Cr0 = Cr0.PE | Cr0.ET | Cr0.NE | Cr0.WP | Cr0.PG;
        s.Cr4 = Cr4.PAE;
        s.Cr3 = Layout.Pml4;
        s.Efer = Efer.LME | Efer.LMA;
        s.Rsp = 0x7000;
        return s;
    }

    /// <summary>
    /// <see cref="Long64"/> with SSE enabled the way a 64-bit kernel leaves it (CR4.OSFXSR and
    /// OSXMMEXCPT set, CR0.MP set and EM clear), so SSE and x87 instructions run without faulting.
    /// </summary>
    private static VcpuState Long64Simd()
    {
        var s = Long64();
        s.Cr0 |= Cr0.MP;
        s.Cr4 |= Cr4.OSFXSR | Cr4.OSXMMEXCPT;
        return s;
    }

    /// <summary>
    /// Identity map of the first 16 MiB: with 2 MiB pages (the integer guests: one TLB entry
    /// covers all their data) or 4 KiB pages (the copy guests: paging traffic per 4 KiB).
    /// </summary>
    private static void WritePageTables(GuestMemory m, bool fourKPages)
    {
        const ulong present = 1, writable = 2, large = 0x80;
        ulong pdpt = Layout.Pml4 + 0x1000, pd = Layout.Pml4 + 0x2000, pts = Layout.Pml4 + 0x3000;
        m.Write(Layout.Pml4, pdpt | present | writable);
        m.Write(pdpt, pd | present | writable);
        int twoMiBPages = (int)(Layout.RamBytes >> 21);
        for (int i = 0; i < twoMiBPages; i++)
        {
            ulong pdAddr = pd + (ulong)i * 8;
            if (!fourKPages)
            {
                m.Write(pdAddr, ((ulong)i << 21) | present | writable | large);
                continue;
            }
            ulong pt = pts + (ulong)i * 0x1000;
            m.Write(pdAddr, pt | present | writable);
            for (int j = 0; j < 512; j++)
                m.Write(pt + (ulong)j * 8, ((ulong)i << 21) + ((ulong)j << 12) | present | writable);
        }
    }

    private static byte[] Assemble(int bitness, Action<Assembler> body)
    {
        var a = new Assembler(bitness);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), Layout.Code);
        return ms.ToArray();
    }

    // ------------------------------------------------------------------ the guests

    /// <summary>
    /// The integer mix: per iteration one load, one store, ALU ops (ADD, XOR, LEA, SHR, TEST,
    /// AND, INC, DEC), a data-dependent forward branch taken every other time, and the loop
    /// branch — 12 instructions on even iterations, 13 on odd ones, in blocks of 8, 5 and 4.
    /// <paramref name="iterations"/> must be even.
    /// </summary>
    public static SoftwareGuest Integer64(long iterations)
    {
        var code = Assemble(64, a =>
        {
            var top = a.CreateLabel(); var skip = a.CreateLabel();
            a.mov(rsi, Layout.IntegerData);
            a.mov(rcx, iterations);
            a.xor(eax, eax);
            a.xor(edx, edx);
            a.xor(r10d, r10d);
            a.Label(ref top);
            a.mov(rbx, __qword_ptr[rsi + rdx * 8]);
            a.add(rax, rbx);
            a.xor(rbx, rcx);
            a.lea(r8, __qword_ptr[rax + rbx * 2]);
            a.shr(r8, 3);
            a.mov(__qword_ptr[rsi + rdx * 8 + 0x800], r8);
            a.test(cl, 1);
            a.jz(skip);
            a.add(r10, r8);
            a.Label(ref skip);
            a.inc(edx);
            a.and(edx, 0xFF);
            a.dec(rcx);
            a.jnz(top);
            a.hlt();
        });
        return new SoftwareGuest("integer mix, 64-bit long mode", Unit.Instruction, IntegerInstructions(iterations),
            IntegerInstructions(iterations), code, Long64(), fourKPages: false).Verified();
    }

    /// <summary>5 set-up instructions, 12.5 per iteration on average, HLT.</summary>
    public static long IntegerInstructions(long iterations) => 5 + iterations * 12 + iterations / 2 + 1;

    /// <summary>The same integer mix in flat 32-bit protected mode (EDI for R8, EBP for R10).</summary>
    public static SoftwareGuest Integer32(long iterations)
    {
        var code = Assemble(32, a =>
        {
            var top = a.CreateLabel(); var skip = a.CreateLabel();
            a.mov(esi, (uint)Layout.IntegerData);
            a.mov(ecx, (uint)iterations);
            a.xor(eax, eax);
            a.xor(edx, edx);
            a.xor(ebp, ebp);
            a.Label(ref top);
            a.mov(ebx, __dword_ptr[esi + edx * 4]);
            a.add(eax, ebx);
            a.xor(ebx, ecx);
            a.lea(edi, __dword_ptr[eax + ebx * 2]);
            a.shr(edi, 3);
            a.mov(__dword_ptr[esi + edx * 4 + 0x800], edi);
            a.test(cl, 1);
            a.jz(skip);
            a.add(ebp, edi);
            a.Label(ref skip);
            a.inc(edx);
            a.and(edx, 0xFF);
            a.dec(ecx);
            a.jnz(top);
            a.hlt();
        });
        return new SoftwareGuest("integer mix, 32-bit protected mode", Unit.Instruction, IntegerInstructions(iterations),
            IntegerInstructions(iterations), code, Protected32(), fourKPages: false).Verified();
    }

    /// <summary>Inner iterations of the real-mode guest per outer pass (CX is 16 bits).</summary>
    public const int RealModeInner = 50_000;

    /// <summary>
    /// The integer mix in real mode with 16-bit registers: DS points at the data, DI indexes it
    /// (no scaled index in 16-bit addressing), and MOV+ADD stand in for the LEA. Per inner
    /// iteration 12 instructions, 13 when odd; <paramref name="outer"/> passes of
    /// <see cref="RealModeInner"/>.
    /// </summary>
    public static SoftwareGuest Integer16(int outer)
    {
        var code = Assemble(16, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel(); var skip = a.CreateLabel();
            a.mov(si, (ushort)outer);
            a.xor(ax, ax);
            a.xor(di, di);
            a.xor(bp, bp);
            a.Label(ref pass);
            a.mov(cx, RealModeInner);
            a.Label(ref top);
            a.mov(bx, __word_ptr[di]);
            a.add(ax, bx);
            a.xor(bx, cx);
            a.mov(dx, ax);
            a.add(dx, bx);
            a.shr(dx, 3);
            a.mov(__word_ptr[di + 0x800], dx);
            a.test(cl, 1);
            a.jz(skip);
            a.add(bp, dx);
            a.Label(ref skip);
            a.add(di, 2);
            a.and(di, 0x1FE);
            a.dec(cx);
            a.jnz(top);
            a.dec(si);
            a.jnz(pass);
            a.hlt();
        });
        long perPass = 1 + RealModeInner * 13L + RealModeInner / 2 + 2;
        long instructions = 4 + outer * perPass + 1;
        return new SoftwareGuest("integer mix, 16-bit real mode", Unit.Instruction, instructions,
            instructions, code, RealMode(), fourKPages: false).Verified();
    }

    /// <summary>REP MOVSB of 1 MiB between 4 KiB-paged buffers, <paramref name="passes"/> times (unit: byte).</summary>
    public static SoftwareGuest RepMovsb64(int passes)
    {
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.Label(ref pass);
            a.mov(esi, (uint)Layout.CopySource);
            a.mov(edi, (uint)Layout.CopyDestination);
            a.mov(ecx, (uint)Layout.CopyBytes);
            a.rep.movsb();
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        // The engine retires a REP MOVSB once per chunk of RepBudget (4096) iterations it runs
        // before looking at interrupts, so the count is 256 per MiB, not 1.
        long instructions = 1 + passes * (3 + Layout.CopyBytes / 4096 + 2) + 1;
        return new SoftwareGuest("REP MOVSB 1 MiB, 4 KiB pages", Unit.Byte, (long)passes * Layout.CopyBytes,
            instructions, code, Long64(), fourKPages: true).Verified();
    }

    /// <summary>
    /// The same copy as a plain loop of 8-byte MOVs (load, store, two ADDs, DEC, JNZ per 8 bytes);
    /// unit: instruction (bytes = instructions × 8 / 6).
    /// </summary>
    public static SoftwareGuest MovLoop64(int passes)
    {
        var code = Assemble(64, a =>
        {
            var pass = a.CreateLabel(); var top = a.CreateLabel();
            a.mov(r9d, (uint)passes);
            a.Label(ref pass);
            a.mov(esi, (uint)Layout.CopySource);
            a.mov(edi, (uint)Layout.CopyDestination);
            a.mov(ecx, (uint)(Layout.CopyBytes / 8));
            a.Label(ref top);
            a.mov(rax, __qword_ptr[rsi]);
            a.mov(__qword_ptr[rdi], rax);
            a.add(rsi, 8);
            a.add(rdi, 8);
            a.dec(ecx);
            a.jnz(top);
            a.dec(r9d);
            a.jnz(pass);
            a.hlt();
        });
        long instructions = 1 + passes * (3 + Layout.CopyBytes / 8 * 6L + 2) + 1;
        return new SoftwareGuest("MOV loop copy 1 MiB, 4 KiB pages", Unit.Instruction, instructions,
            instructions, code, Long64(), fourKPages: true).Verified();
    }

    /// <summary>
    /// Real mode: OUT to port 0x80, DEC ECX, JNZ — one I/O exit per three instructions, each
    /// leaving <see cref="IVcpu.Run"/> (unit: exit). Also used on KVM (see <see cref="ExitGuestCode"/>).
    /// </summary>
    public static SoftwareGuest OutLoop(int exits)
    {
        long instructions = 1 + exits * 3L + 1;
        return new SoftwareGuest("OUT exit round trip (software)", Unit.Exit, exits, instructions,
            ExitGuestCode(exits), RealMode(), fourKPages: false).Verified();
    }

    public static byte[] ExitGuestCode(int exits) => Assemble(16, a =>
    {
        var top = a.CreateLabel();
        a.mov(ecx, (uint)exits);
        a.Label(ref top);
        a.@out(0x80, al);
        a.dec(ecx);
        a.jnz(top);
        a.hlt();
    });

    public static VcpuState ExitGuestStart() => RealMode();
}
