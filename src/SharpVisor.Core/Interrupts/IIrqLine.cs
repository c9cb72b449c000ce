namespace SharpVisor.Core.Interrupts;

/// <summary>
/// An interrupt request wire from a device to an interrupt controller. Edge-triggered
/// consumers see a rising edge when the level goes from low to high.
/// </summary>
public interface IIrqLine
{
    void SetLevel(bool high);
}

public static class IrqLineExtensions
{
    /// <summary>A rising then falling edge (ISA devices signalling an edge-triggered event).</summary>
    public static void Pulse(this IIrqLine line)
    {
        line.SetLevel(true);
        line.SetLevel(false);
    }
}

/// <summary>An IRQ line that forwards level changes to a sink; the machine wires sinks to controllers.</summary>
public sealed class IrqLine(Action<bool> sink) : IIrqLine
{
    public bool Level { get; private set; }
    public void SetLevel(bool high)
    {
        Level = high;
        sink(high);
    }
}

/// <summary>A line connected to nothing; records its level (tests, unwired devices).</summary>
public sealed class NullIrqLine : IIrqLine
{
    public bool Level { get; private set; }
    public int RisingEdges { get; private set; }
    public void SetLevel(bool high)
    {
        if (high && !Level) RisingEdges++;
        Level = high;
    }
}

/// <summary>
/// What a vCPU asks for external interrupts: the local APIC of that vCPU, or the PIC
/// for the boot processor when no APIC is in use. Implemented by the machine.
/// </summary>
public interface IInterruptSource
{
    /// <summary>True when an interrupt is waiting to be accepted (maskable; IF decides).</summary>
    bool HasInterrupt { get; }
    /// <summary>The CPU accepts the interrupt (INTA cycle); returns its vector.</summary>
    byte Acknowledge();
}

/// <summary>
/// The task-priority register behind CR8 (SDM Vol. 3 §11.8.6.1): in 64-bit mode MOV to and from
/// CR8 reads and writes TPR[7:4] of the vCPU's local APIC, so the two are one register. An
/// interrupt source that is a local APIC implements this; a CPU whose source does not keeps
/// CR8 to itself.
/// </summary>
public interface ITaskPriority
{
    /// <summary>TPR[7:4]; a write clears TPR[3:0].</summary>
    byte Cr8 { get; set; }
}
