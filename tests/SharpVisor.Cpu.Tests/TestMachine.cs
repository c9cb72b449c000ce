using Iced.Intel;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Cpu.Tests;

/// <summary>
/// A minimal harness: guest RAM, one software vCPU, a port-I/O recorder. Port 0xE9 collects
/// bytes, port 0xF4 ends the run with a code; IN returns <see cref="InValue"/>.
/// </summary>
internal sealed class TestMachine : IDisposable
{
    public GuestMemory Memory { get; } = new();
    public SoftwareEngine Engine { get; }
    public IVcpu Cpu { get; }
    public List<(ulong Port, int Size, ulong Data)> Outs { get; } = new();
    public System.Text.StringBuilder Console { get; } = new();
    public ulong InValue { get; set; } = 0x5A;
    public int? ExitCode { get; private set; }

    public TestMachine(ulong ramMiB = 16) : this(true, ramMiB) { }

    /// <param name="fpuModel">Present the x87/SSE CPU model (CPUID FPU, SSE, XSAVE, CR4.OSXSAVE allowed).</param>
    public TestMachine(bool fpuModel, ulong ramMiB = 16)
    {
        Memory.AddRegion(0, ramMiB << 20, "ram");
        Engine = new SoftwareEngine(Memory, fpuModel ? null : new CpuModel { HasFpu = false });
        Cpu = Engine.CreateVcpu(0);
    }

    public static byte[] Assemble(int bitness, ulong origin, Action<Assembler> body)
    {
        var a = new Assembler(bitness);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), origin);
        return ms.ToArray();
    }

    /// <summary>Assembles and returns the addresses the given labels ended up at.</summary>
    public static byte[] Assemble(int bitness, ulong origin, Func<Assembler, Label[]> body, out ulong[] labelAddresses)
    {
        var a = new Assembler(bitness);
        var labels = body(a);
        using var ms = new MemoryStream();
        var result = a.Assemble(new StreamCodeWriter(ms), origin, BlockEncoderOptions.ReturnNewInstructionOffsets);
        labelAddresses = labels.Select(l => result.GetLabelRIP(l)).ToArray();
        return ms.ToArray();
    }

    /// <summary>
    /// Runs until HLT, shutdown, the exit port or an error. A guest that neither exits nor
    /// finishes within <paramref name="seconds"/> is kicked out and fails the test.
    /// </summary>
    public ExitReason Run(int maxExits = 100_000, int seconds = 20)
    {
        using var watchdog = new Timer(_ => Cpu.Kick(), null, TimeSpan.FromSeconds(seconds), Timeout.InfiniteTimeSpan);
        for (int n = 0; n < maxExits; n++)
        {
            var r = Cpu.Run();
            if (r == ExitReason.Interrupted) throw new TimeoutException($"guest still running after {seconds} s");
            var e = Cpu.Exit;
            switch (r)
            {
                case ExitReason.IoOut:
                    Outs.Add((e.Address, e.Size, e.Data));
                    if (e.Address == 0xE9) Console.Append((char)(byte)e.Data);
                    if (e.Address == 0xF4) { ExitCode = (int)(((uint)e.Data << 1) | 1); return r; }
                    break;
                case ExitReason.IoIn:
                    e.Data = InValue;
                    break;
                case ExitReason.MmioRead:
                    e.Data = 0xFFFF_FFFF_FFFF_FFFF;
                    break;
                case ExitReason.MmioWrite:
                    break;
                default:
                    return r;
            }
        }
        throw new TimeoutException("guest did not finish");
    }

    /// <summary>
    /// Puts the vCPU in 64-bit mode at <paramref name="entry"/> with the first 1 GiB identity-mapped
    /// (2 MiB pages at 0x10000) and flat segments, CR4.OSFXSR|OSXMMEXCPT set as an OS would.
    /// Returns the state so a test can adjust it before <c>Cpu.SetState</c> (already applied).
    /// </summary>
    public VcpuState EnterLong64(ulong entry, ulong rsp = 0x80000)
    {
        const ulong pml4 = 0x10000;
        Memory.Write(pml4, (pml4 + 0x1000) | 3);
        Memory.Write(pml4 + 0x1000, (pml4 + 0x2000) | 3);
        for (ulong k = 0; k < 512; k++) Memory.Write(pml4 + 0x2000 + k * 8, (k << 21) | 0x83);
        var s = VcpuState.Protected32(entry);
        s.Cs = SegmentRegister.Flat(0x08, code: true, longMode: true);
        s.Cr0 = 0x8000_0033; // PG NE ET MP PE
        s.Cr3 = pml4;
        s.Cr4 = 0x20 | 0x200 | 0x400; // PAE OSFXSR OSXMMEXCPT
        s.Efer = 0x500;               // LME LMA
        s.Rsp = rsp;
        Cpu.SetState(s);
        return s;
    }

    public VcpuState State()
    {
        var s = new VcpuState();
        Cpu.GetState(s);
        return s;
    }

    public void Dispose() => Memory.Dispose();
}

