using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// The debugregs test guest (guests/test/debugregs.asm: data and I/O breakpoints of DR0–DR7,
/// SDM Vol. 3B ch. 17) through the whole machine on the software engine; guests/check-qemu runs
/// the same binary under QEMU's TCG.
/// </summary>
public class DebugRegisterGuestTests
{
    [Fact]
    public void DebugRegisterGuestPasses()
    {
        var (r, text) = GuestTests.Boot(GuestTests.RepoFile("guests/test/debugregs.bin"));
        Assert.True(r.ExitCode == 33, text + r.Reason);
        Assert.Contains("PASS debugregs", text);
    }
}
