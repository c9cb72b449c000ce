using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// Locked read-modify-write instructions are atomic against plain stores of other processors
/// (SDM Vol. 3A §9.1.2), and a LOCK prefix does not change what an instruction computes (SDM
/// Vol. 2A, LOCK). The engine commits the operand with a host CAS and re-runs the instruction when
/// another vCPU stored into it meanwhile; split and 16-byte operands run under the engine's lock.
/// </summary>
public sealed class LockedRmwTests(ITestOutputHelper output)
{
    private const ulong CodeA = 0x100000, CodeB = 0x101000, Counter = 0x200000, Done = 0x201000;

    /// <summary>
    /// vCPU A runs N locked increments of the dword at Counter (checking each old value it gets
    /// back), vCPU B meanwhile stores k = 1, 2, … into its top byte with plain MOVs and after each
    /// store reads the byte back a few times: a locked instruction that read the dword before B's
    /// store and wrote it after (the lost update a lock alone allows) puts the old top byte back,
    /// which B sees and counts. Afterwards the low 24 bits are exactly N and the top byte is B's last k.
    /// </summary>
    [Theory]
    [InlineData("xadd", 2_000_000)]
    [InlineData("inc", 2_000_000)]
    [InlineData("cmpxchg", 1_000_000)]
    public void Locked_updates_and_plain_byte_stores_of_another_vcpu_are_never_lost(string form, int n)
    {
        using var m = new TestMachine();
        var a = m.Cpu;
        var b = m.Engine.CreateVcpu(1);
        m.Memory.Write(CodeA, TestMachine.Assemble(64, CodeA, asm => IncrementLoop(asm, form, n)));
        m.Memory.Write(CodeB, TestMachine.Assemble(64, CodeB, StoreLoop));
        var s = m.EnterLong64(CodeA);
        s.Rip = CodeB;
        s.Rsp = 0x70000;
        b.SetState(s);

        ExitReason ra = default, rb = default;
        var ta = new Thread(() => ra = RunToHalt(a));
        var tb = new Thread(() => rb = RunToHalt(b));
        ta.Start(); tb.Start();
        ta.Join(); tb.Join();
        Assert.True(ra == ExitReason.Halt, $"A: {ra} {a.Exit.Message}");
        Assert.True(rb == ExitReason.Halt, $"B: {rb} {b.Exit.Message}");

        var sa = new VcpuState(); a.GetState(sa);
        var sb = new VcpuState(); b.GetState(sb);
        uint word = m.Memory.Read<uint>(Counter);
        var va = (SoftwareVcpu)a;
        output.WriteLine($"{form}: A {n} iterations, B {sb.Rdx} stores, B saw {sb.Gpr[8]} lost stores, A saw {sa.Gpr[8]} wrong old values, "
            + $"{va._lockedRetries} CAS retries, {va._lockedUnderLock} under the lock, word {word:X8}");
        Assert.True(sb.Rdx > 1000, $"B stored only {sb.Rdx} times: the two vCPUs did not overlap");
        Assert.Equal(0UL, sa.Gpr[8]);                     // every locked op saw the value the previous left
        Assert.Equal(0UL, sb.Gpr[8]);                     // no plain store was undone
        Assert.Equal((uint)n, word & 0xFF_FFFF);
        Assert.Equal((byte)sb.Rdx, (byte)(word >> 24));
        Assert.Equal(0, va._lockedUnderLock);
    }

    private static ExitReason RunToHalt(IVcpu cpu)
    {
        using var watchdog = new Timer(_ => cpu.Kick(), null, TimeSpan.FromSeconds(120), Timeout.InfiniteTimeSpan);
        while (true)
        {
            var r = cpu.Run();
            if (r is ExitReason.IoOut or ExitReason.IoIn) continue;
            return r;
        }
    }

    /// <summary>
    /// A: ESI counts iterations, R8 counts locked ops whose old low 24 bits were not ESI (lost or
    /// doubled increments); at the end it sets the Done byte for B and halts.
    /// </summary>
    private static void IncrementLoop(Assembler a, string form, int n)
    {
        var loop = a.CreateLabel();
        var ok = a.CreateLabel();
        var retry = a.CreateLabel();
        a.mov(rbx, Counter);
        a.xor(esi, esi);
        a.xor(r8d, r8d);
        a.mov(ecx, n);
        a.Label(ref loop);
        switch (form)
        {
            case "xadd":
                a.mov(eax, 1);
                a.@lock.xadd(__dword_ptr[rbx], eax);
                break;
            case "inc":
                // INC returns no old value: only the final count checks it.
                a.@lock.inc(__dword_ptr[rbx]);
                a.mov(eax, esi);
                break;
            default: // cmpxchg: the qspinlock pattern, read, compute, LOCK CMPXCHG, retry on change
                a.nop(); // the loop label's instruction (one label per instruction)
                a.Label(ref retry);
                a.mov(eax, __dword_ptr[rbx]);
                a.lea(edx, __[rax + 1]);
                a.@lock.cmpxchg(__dword_ptr[rbx], edx);
                a.jne(retry);
                break;
        }
        a.and(eax, 0xFF_FFFF);
        a.cmp(eax, esi);
        a.je(ok);
        a.inc(r8d);
        a.Label(ref ok);
        a.inc(esi);
        a.dec(ecx);
        a.jnz(loop);
        a.mov(__byte_ptr[rbx + (int)(Done - Counter)], 1);
        a.hlt();
    }

    /// <summary>B: RDX = k, the stores made; R8 = stores seen undone. Runs until A is done.</summary>
    private static void StoreLoop(Assembler a)
    {
        var next = a.CreateLabel();
        var spin = a.CreateLabel();
        var lost = a.CreateLabel();
        var end = a.CreateLabel();
        a.mov(rbx, Counter);
        a.xor(edx, edx);
        a.xor(r8d, r8d);
        a.Label(ref next);
        a.inc(edx);
        a.mov(__byte_ptr[rbx + 3], dl);
        a.mov(ecx, 8);
        a.Label(ref spin);
        a.cmp(__byte_ptr[rbx + 3], dl);
        a.jne(lost);
        a.dec(ecx);
        a.jnz(spin);
        a.cmp(__byte_ptr[rbx + (int)(Done - Counter)], 0);
        a.je(next);
        a.jmp(end);
        a.Label(ref lost);
        a.inc(r8d);
        a.jmp(next);
        a.Label(ref end);
        a.hlt();
    }

    // ------------------------------------------------------------------ locked = unlocked semantics

    private const ulong Code = 0x100000, Page = 0x300000;

    /// <summary>Operand placements: 8-aligned, inside one 8-byte unit, across an 8-byte boundary, across a page.</summary>
    private static readonly int[] Offsets = [0x200, 0x203, 0x206, 0xFFE];

    private static readonly string[] Forms =
    [
        "add r", "or r", "adc r", "sbb r", "and r", "sub r", "xor r", "add i", "sub i", "xor i",
        "inc", "dec", "neg", "not", "xadd", "cmpxchg=", "cmpxchg", "bts i", "btr i", "btc i", "bts r", "btr r", "btc r",
    ];

    public static TheoryData<string, int, int> Cases()
    {
        var d = new TheoryData<string, int, int>();
        foreach (var f in Forms)
            foreach (int size in new[] { 1, 2, 4, 8 })
            {
                if (f.StartsWith("bt", StringComparison.Ordinal) && size == 1) continue;
                foreach (int off in Offsets) d.Add(f, size, off);
            }
        foreach (int off in Offsets) { d.Add("cmpxchg8b=", 8, off); d.Add("cmpxchg8b", 8, off); }
        d.Add("cmpxchg16b=", 16, 0x200); d.Add("cmpxchg16b", 16, 0x200);
        return d;
    }

    /// <summary>
    /// With and without LOCK, an instruction leaves the same registers, RFLAGS and memory, whichever
    /// way the engine runs it locked (CAS for an operand inside one 8-byte unit, the lock for a
    /// split or 16-byte one, which is checked too). Then again with a store into the operand
    /// between the locked instruction and its commit, as another vCPU's would be: the instruction
    /// must re-run from its original registers and flags on the new value, exactly as the unlocked
    /// instruction does on memory that already held that store.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Locked_form_computes_what_the_unlocked_form_computes(string form, int size, int offset)
    {
        var rng = new Random(HashCode.Combine(form.GetHashCode(StringComparison.Ordinal), size, offset) & 0x7FFF_FFFF);
        ulong addr = Page + (ulong)offset;
        var mem = new byte[32];
        rng.NextBytes(mem);
        var gpr = new ulong[16];
        for (int r = 0; r < 16; r++) gpr[r] = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 63);
        gpr[3] = addr;                       // RBX: the operand
        gpr[4] = 0x80000;                    // RSP
        if (form.StartsWith("bt", StringComparison.Ordinal) && form.EndsWith('r'))
            gpr[1] = (ulong)(rng.Next(-40, 100)); // RCX: a bit offset reaching a neighbouring unit
        bool equal = form.EndsWith('=');
        if (equal)
        {
            // CMPXCHG*: make the comparison succeed (the accumulator, or EDX:EAX / RDX:RAX, equals memory).
            int half = size == 16 ? 8 : size == 8 && form.StartsWith("cmpxchg8b", StringComparison.Ordinal) ? 4 : size;
            ulong m = half == 8 ? ulong.MaxValue : (1UL << (half * 8)) - 1;
            WriteLe(mem, 8, gpr[0] & m, half);
            if (form.StartsWith("cmpxchg8b", StringComparison.Ordinal) || form.StartsWith("cmpxchg16b", StringComparison.Ordinal))
                WriteLe(mem, 8 + half, gpr[2] & m, half);
        }
        ulong rflags = 0x2 | (ulong)(rng.Next() & 0x8D5);
        byte[] body = Encode(form, size);

        var plain = RunOnce(body, gpr, rflags, addr, mem, out _, out _);
        var locked = RunOnce([0xF0, .. body], gpr, rflags, addr, mem, out var underLock, out _);
        AssertSame(plain, locked, "locked");
        bool split = size == 16 || (offset & 7) + size > 8;
        // BT* with a register bit offset address another word than the operand's (from RCX).
        bool btReg = form.StartsWith("bt", StringComparison.Ordinal) && form.EndsWith(" r", StringComparison.Ordinal);
        if (!btReg) Assert.Equal(split, underLock > 0);

        // A store into the operand's word between the instruction and its commit.
        var raced = RunOnce([0xF0, .. body], gpr, rflags, addr, mem, out _, out bool stored, raceAt: addr);
        // Every captured form that always writes must have reached the commit (the race hook ran).
        if (!split && !btReg && !form.StartsWith("cmpxchg", StringComparison.Ordinal)) Assert.True(stored, $"{form}: the race hook never ran");
        if (!stored) return; // the lock path, or nothing written (failed compare): no commit to race
        var mem2 = (byte[])mem.Clone();
        mem2[8] ^= 0x5A;
        var reference = RunOnce(body, gpr, rflags, addr, mem2, out _, out _);
        AssertSame(reference, raced, "raced");
    }

    private static void WriteLe(byte[] b, int at, ulong v, int n)
    {
        for (int k = 0; k < n; k++) b[at + k] = (byte)(v >> (8 * k));
    }

    private static byte[] Encode(string form, int size) => TestMachine.Assemble(64, Code, a =>
    {
        AssemblerMemoryOperand mem = size switch
        {
            1 => __byte_ptr[rbx], 2 => __word_ptr[rbx], 4 => __dword_ptr[rbx], 8 => __qword_ptr[rbx], _ => __xmmword_ptr[rbx],
        };
        string op = form.TrimEnd('=');
        switch (op)
        {
            case "cmpxchg8b": a.cmpxchg8b(__qword_ptr[rbx]); return;
            case "cmpxchg16b": a.cmpxchg16b(__xmmword_ptr[rbx]); return;
            case "inc": a.inc(mem); return;
            case "dec": a.dec(mem); return;
            case "neg": a.neg(mem); return;
            case "not": a.not(mem); return;
        }
        switch (size)
        {
            case 1: Emit8(a, op, __byte_ptr[rbx]); break;
            case 2: Emit16(a, op, __word_ptr[rbx]); break;
            case 4: Emit32(a, op, __dword_ptr[rbx]); break;
            default: Emit64(a, op, __qword_ptr[rbx]); break;
        }
    });

    private static void Emit8(Assembler a, string op, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case "add r": a.add(m, cl); break; case "or r": a.or(m, cl); break; case "adc r": a.adc(m, cl); break;
            case "sbb r": a.sbb(m, cl); break; case "and r": a.and(m, cl); break; case "sub r": a.sub(m, cl); break;
            case "xor r": a.xor(m, cl); break; case "add i": a.add(m, 0x7F); break; case "sub i": a.sub(m, 0x81 - 0x100); break;
            case "xor i": a.xor(m, 0x5A); break; case "xadd": a.xadd(m, cl); break; case "cmpxchg": a.cmpxchg(m, cl); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit16(Assembler a, string op, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case "add r": a.add(m, cx); break; case "or r": a.or(m, cx); break; case "adc r": a.adc(m, cx); break;
            case "sbb r": a.sbb(m, cx); break; case "and r": a.and(m, cx); break; case "sub r": a.sub(m, cx); break;
            case "xor r": a.xor(m, cx); break; case "add i": a.add(m, 0x7FFF); break; case "sub i": a.sub(m, -3); break;
            case "xor i": a.xor(m, 0x5A5A); break; case "xadd": a.xadd(m, cx); break; case "cmpxchg": a.cmpxchg(m, cx); break;
            case "bts i": a.bts(m, 13); break; case "btr i": a.btr(m, 6); break; case "btc i": a.btc(m, 15); break;
            case "bts r": a.bts(m, cx); break; case "btr r": a.btr(m, cx); break; case "btc r": a.btc(m, cx); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit32(Assembler a, string op, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case "add r": a.add(m, ecx); break; case "or r": a.or(m, ecx); break; case "adc r": a.adc(m, ecx); break;
            case "sbb r": a.sbb(m, ecx); break; case "and r": a.and(m, ecx); break; case "sub r": a.sub(m, ecx); break;
            case "xor r": a.xor(m, ecx); break; case "add i": a.add(m, 0x7FFF_0001); break; case "sub i": a.sub(m, -3); break;
            case "xor i": a.xor(m, 0x5A5A_5A5A); break; case "xadd": a.xadd(m, ecx); break; case "cmpxchg": a.cmpxchg(m, ecx); break;
            case "bts i": a.bts(m, 29); break; case "btr i": a.btr(m, 6); break; case "btc i": a.btc(m, 31); break;
            case "bts r": a.bts(m, ecx); break; case "btr r": a.btr(m, ecx); break; case "btc r": a.btc(m, ecx); break;
            default: throw new ArgumentException(op);
        }
    }

    private static void Emit64(Assembler a, string op, AssemblerMemoryOperand m)
    {
        switch (op)
        {
            case "add r": a.add(m, rcx); break; case "or r": a.or(m, rcx); break; case "adc r": a.adc(m, rcx); break;
            case "sbb r": a.sbb(m, rcx); break; case "and r": a.and(m, rcx); break; case "sub r": a.sub(m, rcx); break;
            case "xor r": a.xor(m, rcx); break; case "add i": a.add(m, 0x7FFF_0001); break; case "sub i": a.sub(m, -3); break;
            case "xor i": a.xor(m, -0x5A5A_5A5B); break; case "xadd": a.xadd(m, rcx); break; case "cmpxchg": a.cmpxchg(m, rcx); break;
            case "bts i": a.bts(m, 61); break; case "btr i": a.btr(m, 6); break; case "btc i": a.btc(m, 40); break;
            case "bts r": a.bts(m, rcx); break; case "btr r": a.btr(m, rcx); break; case "btc r": a.btc(m, rcx); break;
            default: throw new ArgumentException(op);
        }
    }

    /// <summary>Rip is relative to the end of the code (1 after its HLT), so the prefix does not count.</summary>
    private sealed record Outcome(ExitReason Exit, ulong[] Gpr, ulong Rip, ulong Rflags, byte[] Memory);

    /// <summary>
    /// Runs <paramref name="body"/> then HLT with the given registers and the 32 bytes at
    /// <paramref name="addr"/> − 8. With <paramref name="raceAt"/>, the first commit of a captured
    /// locked instruction is preceded by a store flipping bits of the byte there.
    /// </summary>
    private static Outcome RunOnce(byte[] body, ulong[] gpr, ulong rflags, ulong addr, byte[] mem,
        out long underLock, out bool stored, ulong? raceAt = null)
    {
        using var m = new TestMachine();
        m.Memory.Write(Code, [.. body, 0xF4]);
        m.Memory.Write(addr - 8, mem);
        var s = m.EnterLong64(Code);
        for (int r = 0; r < 16; r++) s.Gpr[r] = gpr[r];
        s.Rflags = rflags;
        m.Cpu.SetState(s);
        var v = (SoftwareVcpu)m.Cpu;
        bool fired = false;
        if (raceAt is ulong at)
            v._beforeCommit = () =>
            {
                if (fired) return;
                fired = true;
                m.Memory.Write(at, (byte)(m.Memory.Read<byte>(at) ^ 0x5A));
            };
        var exit = m.Run();
        var st = m.State();
        var after = new byte[mem.Length];
        for (int k = 0; k < after.Length; k++) after[k] = m.Memory.Read<byte>(addr - 8 + (ulong)k);
        underLock = v._lockedUnderLock;
        stored = fired;
        return new Outcome(exit, [.. st.Gpr], st.Rip - Code - (ulong)body.Length, st.Rflags, after); // RIP past the HLT: 1
    }

    private static void AssertSame(Outcome expected, Outcome actual, string what)
    {
        Assert.Equal(ExitReason.Halt, expected.Exit);
        Assert.True(expected.Exit == actual.Exit, $"{what}: exit {actual.Exit}, expected {expected.Exit}");
        Assert.True(expected.Rip == actual.Rip, $"{what}: RIP {actual.Rip:X}, expected {expected.Rip:X}");
        for (int r = 0; r < 16; r++)
            Assert.True(expected.Gpr[r] == actual.Gpr[r], $"{what}: GPR {r} = {actual.Gpr[r]:X16}, expected {expected.Gpr[r]:X16}");
        Assert.True(expected.Rflags == actual.Rflags, $"{what}: RFLAGS {actual.Rflags:X}, expected {expected.Rflags:X}");
        Assert.Equal(Convert.ToHexString(expected.Memory), Convert.ToHexString(actual.Memory));
    }

    // ------------------------------------------------------------------ code writes and data breakpoints

    /// <summary>
    /// A locked instruction that writes the immediate of the next instruction in its own block:
    /// the CAS path notes the code write like any store, so the next instruction runs as modified
    /// (SDM Vol. 3A §9.1.3: a write to the next instruction is seen by it on the same processor).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Locked_write_to_the_next_instruction_is_executed(bool xchg)
    {
        using var m = new TestMachine();
        ulong immAt = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            ulong target = immAt;
            var code = TestMachine.Assemble(64, Code, a =>
            {
                var mov = a.CreateLabel();
                a.mov(rbx, target);
                a.mov(edx, 0x77);
                if (xchg) a.xchg(__byte_ptr[rbx], dl);
                else a.@lock.add(__byte_ptr[rbx], 1);
                a.Label(ref mov);
                a.mov(eax, 0x11);
                a.hlt();
                return [mov];
            }, out var labels);
            immAt = labels[0] + 1; // B8 imm32
            if (pass == 1) m.Memory.Write(Code, code);
        }
        m.EnterLong64(Code);
        Assert.Equal(ExitReason.Halt, m.Run());
        var st = m.State();
        Assert.Equal(xchg ? 0x77UL : 0x12UL, st.Rax);
        if (xchg) Assert.Equal(0x11UL, st.Rdx);
        Assert.Equal(0, ((SoftwareVcpu)m.Cpu)._lockedUnderLock);
    }

    /// <summary>
    /// A data breakpoint on a locked operand traps after the instruction with DR6.B0 (SDM Vol. 3B
    /// §17.2.4), and one on another dword of the same watched page does not.
    /// </summary>
    [Theory]
    [InlineData(0, true)]
    [InlineData(8, false)]
    public void Data_breakpoint_on_a_locked_operand_traps(int drOffset, bool hits)
    {
        const ulong Idt = 0x20000, Gdt = 0x30000, DbHandler = 0x110000;
        using var m = new TestMachine();
        m.Memory.Write(Code, TestMachine.Assemble(64, Code, a =>
        {
            a.mov(rax, Page + (ulong)drOffset);
            a.mov(dr0, rax);
            a.mov(rax, 1UL | (1UL << 16) | (3UL << 18)); // L0, R/W = 01 (write), LEN = 11 (4 bytes)
            a.mov(dr7, rax);
            a.mov(rbx, Page);
            a.@lock.add(__dword_ptr[rbx], 1);
            a.nop();
            a.hlt();
        }));
        var handler = TestMachine.Assemble(64, DbHandler, a => { a.mov(rax, dr6); a.hlt(); });
        m.Memory.Write(DbHandler, handler);
        m.Memory.Write(Gdt + 0x08, 0x00AF_9A00_0000_FFFFUL);
        ulong gate = (DbHandler & 0xFFFF) | (0x08UL << 16) | (0x8E00UL << 32) | ((DbHandler >> 16) & 0xFFFF) << 48;
        m.Memory.Write(Idt + 16, gate);
        m.Memory.Write(Page, 41u);
        var s = m.EnterLong64(Code);
        s.Gdtr = new DescriptorTableRegister { Base = Gdt, Limit = 0x0F };
        s.Idtr = new DescriptorTableRegister { Base = Idt, Limit = 2 * 16 - 1 };
        m.Cpu.SetState(s);
        Assert.Equal(ExitReason.Halt, m.Run());
        var st = m.State();
        Assert.Equal(42u, m.Memory.Read<uint>(Page));
        if (hits)
        {
            Assert.Equal(DbHandler + (ulong)handler.Length, st.Rip);
            Assert.Equal(1UL, st.Rax & 0xF); // DR6.B0
        }
        else Assert.Equal(Code, st.Rip & ~0xFFFUL); // the HLT at the end
        Assert.Equal(0, ((SoftwareVcpu)m.Cpu)._lockedUnderLock);
    }
}
