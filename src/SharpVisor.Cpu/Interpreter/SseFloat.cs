using Iced.Intel;

namespace SharpVisor.Cpu;

/// <summary>SSE–SSE4.1 floating-point instruction semantics (SDM Vol. 1 ch. 10–12).</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Runs one SSE floating-point or data-movement instruction; <paramref name="handled"/> is false when it is not one.</summary>
    private Status ExecuteSseFloat(ref Instruction i, out bool handled)
    {
        handled = false;
        return Status.Ok;
    }
}
