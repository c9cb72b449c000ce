using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// guests/test/fpuswitch.asm on the software engine: a kernel switching x87/MMX/SSE state
/// between two tasks, lazily (CR0.TS, #NM, FXSAVE/FXRSTOR) and eagerly (XSAVE/XSAVEOPT/XRSTOR),
/// each task checking its whole state bit for bit after every switch (SDM vol. 3 §2.5, vol. 1
/// ch. 13). The guest's own checks decide PASS/FAIL; these tests also pin the counts it reports,
/// which follow from its fixed 24-entry schedule (A B B A A B A B B B A A B A A A B A B B A B A B):
/// one #NM per task step, 16 of them with an owner change, 8 with the owner unchanged.
/// </summary>
public sealed class FpuSwitchGuestTests : IClassFixture<FpuSwitchGuestTests.Run>
{
    /// <summary>One boot shared by the facts below.</summary>
    public sealed class Run
    {
        public int ExitCode { get; }
        public string Console { get; }
        public string Reason { get; }

        public Run()
        {
            var (r, text) = GuestTests.Boot(GuestTests.RepoFile("guests/test/fpuswitch.bin"));
            ExitCode = r.ExitCode;
            Reason = r.Reason ?? "";
            Console = text;
        }
    }

    private readonly Run _run;

    public FpuSwitchGuestTests(Run run) => _run = run;

    private string[] Lines => _run.Console.Split('\n', StringSplitOptions.TrimEntries);

    [Fact]
    public void GuestPassesOnTheSoftwareEngine()
    {
        Assert.True(_run.ExitCode == 33, _run.Console + _run.Reason);
        Assert.Contains("PASS fpuswitch", Lines);
    }

    [Fact]
    public void LazySwitchingTakesExactlyOneNmPerTaskStep()
    {
        Assert.Contains("lazy: 24 task steps, #NM taken: 24 (state swaps: 16, owner unchanged: 8)", Lines);
        // The first FPU/SSE instruction of step k is chosen by k mod 5 (MOVQ only where the task holds
        // MMX state); every kind must have raised #NM.
        Assert.Contains("lazy: first-touch #NM by FWAIT 6, MOVAPS 6, FNSTSW 4, STMXCSR 4, FXSAVE 2, MOVQ 2", Lines);
    }

    [Fact]
    public void XsaveLeafMatchesTheModelAndTheCompactedFormIsChecked()
    {
        // CpuModel: XCR0 = x87|SSE needs 512 + 64 bytes; XSAVEOPT and XSAVEC are advertised.
        Assert.Contains("xsave: CPUID.(EAX=0DH,ECX=0) EBX=576 ECX=576, XSAVEOPT 1, XSAVEC 1", Lines);
        Assert.Contains("xsave: compacted XRSTOR checked", Lines);
    }

    [Fact]
    public void EagerSwitchingSavesAndRestoresOnEverySwitchWithoutNm()
    {
        Assert.Contains("eager: 24 task steps + 24 kernel steps, switches: 48 (XSAVE 24, XSAVEOPT 24, XRSTOR 48), #NM taken: 0", Lines);
    }
}
