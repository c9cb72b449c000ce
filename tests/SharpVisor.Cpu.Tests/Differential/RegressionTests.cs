// Engine bugs found by the differential run, pinned with the SDM's expected result (and, where the host
// can run native code, the host's result too), so each stays fixed even if the generator stops
// producing the case.
using SharpVisor.HostCpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static SharpVisor.HostCpu.NativeSnippet;

namespace SharpVisor.Cpu.Tests.Differential;

public sealed class RegressionTests : IDisposable
{
    private readonly EngineRunner _runner = new();
    private readonly HostCpu.HostCpu? _host = HostFeatures.IsHostSupported ? new HostCpu.HostCpu() : null;

    public void Dispose()
    {
        _runner.Dispose();
        _host?.Dispose();
    }

    public static TheoryData<string> ZeroCountShifts() =>
    [
        "shl ecx, 0", "shr r14d, 32", "sar ebp, 64", "rol edx, 0", "ror r8d, 64", "rcl r12d, 32", "rcr ecx, 32",
        "shl ecx, cl", "shld eax, ebx, 0", "shrd eax, ebx, 32", "shld eax, ebx, cl",
    ];

    /// <summary>
    /// A 32-bit shift or rotate whose masked count is 0 leaves value and flags alone but still writes the
    /// register, clearing bits 63:32 (SDM Vol. 1 §3.4.1.1). The engine used to skip the write.
    /// </summary>
    [Theory]
    [MemberData(nameof(ZeroCountShifts))]
    public void Zero_count_shift_of_a_32_bit_register_clears_the_upper_half(string form)
    {
        var code = Assemble(a =>
        {
            switch (form)
            {
                case "shl ecx, 0": a.shl(ecx, 0); break;
                case "shr r14d, 32": a.shr(r14d, 32); break;
                case "sar ebp, 64": a.sar(ebp, 64); break;
                case "rol edx, 0": a.rol(edx, 0); break;
                case "ror r8d, 64": a.ror(r8d, 64); break;
                case "rcl r12d, 32": a.rcl(r12d, 32); break;
                case "rcr ecx, 32": a.rcr(ecx, 32); break;
                case "shl ecx, cl": a.shl(ecx, cl); break;
                case "shld eax, ebx, 0": a.shld(eax, ebx, 0); break;
                case "shrd eax, ebx, 32": a.shrd(eax, ebx, 32); break;
                default: a.shld(eax, ebx, cl); break;
            }
        });
        var c = Case(code);
        for (int i = 0; i < 16; i++) if (i != 4) c.Input.Gpr[i] = 0xDEAD_BEEF_0000_0000UL | (uint)(0x1111_1111 * (i + 1));
        c.Input.Rcx = 0xDEAD_BEEF_1234_5620UL; // CL = 20h: masked to 0 for 32-bit operands
        c.Input.Rflags = RflagsBits.Reserved1 | RflagsBits.CF | RflagsBits.OF | RflagsBits.ZF;
        var r = _runner.Run(c);
        Assert.Equal(EngineOutcome.Completed, r.Outcome);
        int dest = form.Split(' ')[1].TrimEnd(',') switch { "ecx" => 1, "r14d" => 14, "ebp" => 5, "edx" => 2, "r8d" => 8, "r12d" => 12, _ => 0 };
        Assert.Equal((uint)c.Input.Gpr[dest], r.State.Gpr[dest]);
        Assert.Equal(c.Input.Rflags & RflagsBits.Status, r.State.Rflags & RflagsBits.Status); // flags unaffected
        if (_host is not null)
        {
            var native = _host.Run(c);
            Assert.Empty(NativeComparer.Compare(c, native, r.State, _runner.Window, r.Exception, CompareParts.Integer));
        }
    }
}
