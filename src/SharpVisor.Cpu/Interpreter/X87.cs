using Iced.Intel;

namespace SharpVisor.Cpu;

/// <summary>x87 instruction semantics (SDM Vol. 1 ch. 8, Vol. 2 instruction pages) on the SoftFloat library.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    /// <summary>Runs one x87 instruction; the CR0.EM/TS gate has already passed.</summary>
    private Status ExecuteX87(ref Instruction i) => Unsupported($"instruction {FormatInstruction(ref i)}");
}
