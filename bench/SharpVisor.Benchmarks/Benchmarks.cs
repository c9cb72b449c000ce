// The BenchmarkDotNet suite: the quick-mode guests with BenchmarkDotNet's warm-up, iterations
// and statistics. One invocation is one whole guest run; OperationsPerInvoke is the guest's
// unit count, so Mean is the time per guest instruction (per byte, per exit, per boot) and the
// Ops/s column is the rate. The constants repeat the guests' closed formulas, which the guests
// check against SoftwareVcpu.InstructionsRetired when they are built.
using BenchmarkDotNet.Attributes;
using SharpVisor.Machine;

namespace SharpVisor.Benchmarks;

/// <summary>Interpreter throughput: guest instructions per second in each mode, and copies through 4 KiB pages.</summary>
public class InterpreterBenchmarks
{
    private const long Iterations = 1_000_000;
    private const int RealModePasses = 20;
    private const int CopyPasses = 8;
    private const int IntegerInstructions = 5 + 1_000_000 * 12 + 1_000_000 / 2 + 1;
    private const int RealModeInstructions = 4 + RealModePasses * (1 + SoftwareGuest.RealModeInner * 13 + SoftwareGuest.RealModeInner / 2 + 2) + 1;
    private const int MovLoopInstructions = 1 + CopyPasses * (3 + Layout.CopyBytes / 8 * 6 + 2) + 1;
    private const int RepMovsbBytes = CopyPasses * 4 * Layout.CopyBytes;

    private SoftwareGuest _int64 = null!, _int32 = null!, _int16 = null!, _movLoop = null!, _repMovsb = null!;

    [GlobalSetup]
    public void Setup()
    {
        _int64 = Check(SoftwareGuest.Integer64(Iterations), IntegerInstructions);
        _int32 = Check(SoftwareGuest.Integer32(Iterations), IntegerInstructions);
        _int16 = Check(SoftwareGuest.Integer16(RealModePasses), RealModeInstructions);
        _movLoop = Check(SoftwareGuest.MovLoop64(CopyPasses), MovLoopInstructions);
        _repMovsb = SoftwareGuest.RepMovsb64(CopyPasses * 4);
        if (_repMovsb.UnitsPerRun != RepMovsbBytes) throw new InvalidOperationException("REP MOVSB byte count changed");
    }

    private static SoftwareGuest Check(SoftwareGuest g, long expected) => g.InstructionsPerRun == expected
        ? g : throw new InvalidOperationException($"{g.Name}: OperationsPerInvoke {expected} ≠ the guest's {g.InstructionsPerRun}");

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var g in new[] { _int64, _int32, _int16, _movLoop, _repMovsb }) g?.Dispose();
    }

    [Benchmark(OperationsPerInvoke = IntegerInstructions, Description = "Integer mix, 64-bit (op = guest instruction)")]
    public long Integer64() => _int64.Run();

    [Benchmark(OperationsPerInvoke = IntegerInstructions, Description = "Integer mix, 32-bit protected (op = guest instruction)")]
    public long Integer32() => _int32.Run();

    [Benchmark(OperationsPerInvoke = RealModeInstructions, Description = "Integer mix, 16-bit real mode (op = guest instruction)")]
    public long Integer16() => _int16.Run();

    [Benchmark(OperationsPerInvoke = MovLoopInstructions, Description = "MOV loop copy, 4 KiB pages (op = guest instruction)")]
    public long MovLoopCopy() => _movLoop.Run();

    [Benchmark(OperationsPerInvoke = RepMovsbBytes, Description = "REP MOVSB copy, 4 KiB pages (op = byte)")]
    public long RepMovsbCopy() => _repMovsb.Run();
}

/// <summary>
/// SSE2 string primitives (glibc's strlen, memcmp and memcpy loops) and the same floating-point
/// kernel in x87 float80 and SSE scalar double. The guests check their results when built.
/// </summary>
public class SimdBenchmarks
{
    private const int StringPasses = 32;
    private const int HornerPasses = 4;
    private const int StrlenBytes = StringPasses * SoftwareGuest.StrlenLength;
    private const int MemcmpBytes = StringPasses * (SoftwareGuest.MemcmpDifference / 16 + 1) * 16;
    private const int MemcpyBytes = StringPasses * Layout.CopyBytes;
    private const int HornerFlops = HornerPasses * SoftwareGuest.HornerElements * SoftwareGuest.HornerFlopsPerElement;

    private SoftwareGuest _strlen = null!, _memcmp = null!, _memcpy = null!, _x87 = null!, _sse = null!;

    [GlobalSetup]
    public void Setup()
    {
        _strlen = Check(SoftwareGuest.Strlen64(StringPasses), StrlenBytes);
        _memcmp = Check(SoftwareGuest.Memcmp64(StringPasses), MemcmpBytes);
        _memcpy = Check(SoftwareGuest.Memcpy64(StringPasses), MemcpyBytes);
        _x87 = Check(SoftwareGuest.HornerX87(HornerPasses), HornerFlops);
        _sse = Check(SoftwareGuest.HornerSse(HornerPasses), HornerFlops);
    }

    private static SoftwareGuest Check(SoftwareGuest g, long expected) => Math.Max(g.BytesPerRun, g.FlopsPerRun) == expected
        ? g : throw new InvalidOperationException($"{g.Name}: OperationsPerInvoke {expected} ≠ the guest's bytes/FLOPs per run");

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var g in new[] { _strlen, _memcmp, _memcpy, _x87, _sse }) g?.Dispose();
    }

    [Benchmark(OperationsPerInvoke = StrlenBytes, Description = "SSE2 strlen, 4 KiB pages (op = byte)")]
    public long Strlen() => _strlen.Run();

    [Benchmark(OperationsPerInvoke = MemcmpBytes, Description = "SSE2 memcmp, 4 KiB pages (op = byte)")]
    public long Memcmp() => _memcmp.Run();

    [Benchmark(OperationsPerInvoke = MemcpyBytes, Description = "SSE2 memcpy, 4 KiB pages (op = byte)")]
    public long Memcpy() => _memcpy.Run();

    [Benchmark(OperationsPerInvoke = HornerFlops, Description = "x87 float80 Horner/FSQRT/FDIV (op = FLOP)")]
    public long HornerX87() => _x87.Run();

    [Benchmark(OperationsPerInvoke = HornerFlops, Description = "SSE2 scalar double Horner/SQRTSD/DIVSD (op = FLOP)")]
    public long HornerSse() => _sse.Run();
}

/// <summary>Exit round trip: OUT exits through IVcpu.Run per second, software engine and (where usable) KVM.</summary>
public class ExitBenchmarks
{
    private const int SoftwareExits = 1_000_000;
    private const int KvmExits = 20_000;
    private SoftwareGuest _software = null!;
    private KvmGuest? _kvm;
    private string _kvmWhyNot = "";

    [GlobalSetup]
    public void Setup()
    {
        _software = SoftwareGuest.OutLoop(SoftwareExits);
        _kvm = KvmGuest.TryCreate(KvmExits, out _kvmWhyNot);
        if (_kvm == null) Console.WriteLine($"// KVM exit benchmark skipped: {_kvmWhyNot}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _software?.Dispose();
        _kvm?.Dispose();
    }

    [Benchmark(OperationsPerInvoke = SoftwareExits, Description = "OUT exit round trip, software (op = exit)")]
    public long SoftwareOut() => _software.Run();

    /// <summary>Left out of the run by <see cref="BenchConfig"/> when /dev/kvm is not usable here.</summary>
    [Benchmark(OperationsPerInvoke = KvmExits, Description = "OUT exit round trip, KVM (op = exit)")]
    public int KvmOut() => _kvm?.Run() ?? throw new InvalidOperationException($"KVM is not usable here: {_kvmWhyNot}");
}

/// <summary>Machine start-up: constructor to the demo guest's completion, one boot per operation.</summary>
[MemoryDiagnoser]
public class StartupBenchmarks
{
    [Benchmark(Description = "Demo guest boot, software engine (op = boot)")]
    public long DemoSoftware() => DemoBoot.Run(EngineKind.Software).GuestInstructions;
}
