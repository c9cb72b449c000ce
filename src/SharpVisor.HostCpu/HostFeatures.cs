// Which Iced CpuidFeature values the host can execute, from CPUID (SDM Vol. 2A, CPUID,
// Tables 3-10/3-11 for leaf 1, leaf 7 sub-leaf 0, leaf 80000001h). Features that need OS support
// for their register state (AVX, AVX2, FMA) are taken from .NET's IsSupported, which also
// checks XCR0; F16C has no .NET IsSupported and so counts as absent. A feature not listed here counts as absent: the harness refuses such instructions
// rather than risk SIGILL, and features whose instructions would break the host process
// (FSGSBASE: WRFSBASE would move .NET's thread-local storage) are deliberately left out.
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace SharpVisor.HostCpu;

public sealed class HostFeatures
{
    private readonly HashSet<CpuidFeature> _supported = new();

    /// <summary>True when this process runs on x86-64 Linux, where the harness can execute code.</summary>
    public static bool IsHostSupported =>
        OperatingSystem.IsLinux() && System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.X64;

    public HostFeatures()
    {
        if (!X86Base.IsSupported) return;
        foreach (var f in new[]
        {
            CpuidFeature.INTEL8086, CpuidFeature.INTEL186, CpuidFeature.INTEL286, CpuidFeature.INTEL386, CpuidFeature.INTEL486,
            CpuidFeature.X64, CpuidFeature.CPUID, CpuidFeature.CMOV, CpuidFeature.CX8, CpuidFeature.FPU, CpuidFeature.FPU287,
            CpuidFeature.FPU387, CpuidFeature.MULTIBYTENOP, CpuidFeature.PAUSE, CpuidFeature.SSE, CpuidFeature.SSE2, CpuidFeature.FXSR,
        })
            _supported.Add(f); // the x86-64 baseline

        var (_, _, ecx1, edx1) = X86Base.CpuId(1, 0);
        Add(ecx1, 0, CpuidFeature.SSE3);
        Add(ecx1, 1, CpuidFeature.PCLMULQDQ);
        Add(ecx1, 9, CpuidFeature.SSSE3);
        Add(ecx1, 13, CpuidFeature.CMPXCHG16B);
        Add(ecx1, 19, CpuidFeature.SSE4_1);
        Add(ecx1, 20, CpuidFeature.SSE4_2);
        Add(ecx1, 22, CpuidFeature.MOVBE);
        Add(ecx1, 23, CpuidFeature.POPCNT);
        Add(ecx1, 25, CpuidFeature.AES);
        Add(edx1, 19, CpuidFeature.CLFSH);
        Add(edx1, 23, CpuidFeature.MMX);

        var (maxLeaf, _, _, _) = X86Base.CpuId(0, 0);
        if (maxLeaf >= 7)
        {
            var (_, ebx7, _, _) = X86Base.CpuId(7, 0);
            Add(ebx7, 3, CpuidFeature.BMI1);
            Add(ebx7, 8, CpuidFeature.BMI2);
            Add(ebx7, 19, CpuidFeature.ADX);
            Add(ebx7, 29, CpuidFeature.SHA);
        }

        var (maxExt, _, _, _) = X86Base.CpuId(unchecked((int)0x8000_0000), 0);
        if ((uint)maxExt >= 0x8000_0001)
        {
            var (_, _, ecxE, _) = X86Base.CpuId(unchecked((int)0x8000_0001), 0);
            Add(ecxE, 5, CpuidFeature.LZCNT);
            Add(ecxE, 8, CpuidFeature.PREFETCHW);
        }

        if (Avx.IsSupported) _supported.Add(CpuidFeature.AVX);
        if (Avx2.IsSupported) _supported.Add(CpuidFeature.AVX2);
        if (Fma.IsSupported) _supported.Add(CpuidFeature.FMA);
    }

    private void Add(int register, int bit, CpuidFeature feature)
    {
        if ((register & (1 << bit)) != 0) _supported.Add(feature);
    }

    public bool Has(CpuidFeature feature) => _supported.Contains(feature);

    /// <summary>True when every feature the instruction needs is present.</summary>
    public bool CanExecute(in Instruction instruction)
    {
        foreach (var f in instruction.CpuidFeatures)
            if (!_supported.Contains(f)) return false;
        return true;
    }

    public bool CanExecute(Code code)
    {
        var i = new Instruction { Code = code };
        return CanExecute(i);
    }
}
