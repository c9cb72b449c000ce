// Interrupt messages on the (xAPIC) APIC bus: Intel SDM Vol. 3A §11.6 (issuing IPIs, the ICR
// fields), §11.11 (MSI address/data format) and the 82093AA I/O APIC redirection entries, which
// carry the same fields. One record type serves IPIs, I/O APIC deliveries and MSIs so that the
// ApicBus resolves destinations in one place.
namespace SharpVisor.Devices.Apic;

/// <summary>Delivery mode field (ICR bits 8–10, redirection entry bits 8–10, MSI data bits 8–10).</summary>
public enum ApicDeliveryMode : byte
{
    Fixed = 0,
    LowestPriority = 1,
    Smi = 2,
    /// <summary>Reserved encoding; messages with it are dropped.</summary>
    Reserved3 = 3,
    Nmi = 4,
    Init = 5,
    StartUp = 6,
    ExtInt = 7,
}

/// <summary>Destination shorthand (ICR bits 18–19); I/O APIC and MSI messages always use <see cref="None"/>.</summary>
public enum ApicDestinationShorthand : byte
{
    None = 0,
    Self = 1,
    AllIncludingSelf = 2,
    AllExcludingSelf = 3,
}

/// <summary>
/// One interrupt message. <see cref="SourceCpu"/> is the vCPU index of the sending local APIC
/// (needed to resolve the Self / AllExcludingSelf shorthands) or -1 for the I/O APIC and MSIs.
/// <see cref="Destination"/> is the 8-bit xAPIC destination: an APIC ID in physical mode
/// (0xFF = broadcast) or a logical (flat or cluster) mask in logical mode.
/// </summary>
public readonly record struct ApicMessage(
    byte Vector,
    ApicDeliveryMode DeliveryMode,
    bool LogicalDestination,
    byte Destination,
    ApicDestinationShorthand Shorthand,
    bool LevelTriggered,
    bool Assert,
    int SourceCpu)
{
    /// <summary>Physical destination 0xFF addresses every local APIC (xAPIC broadcast).</summary>
    public const byte Broadcast = 0xFF;

    /// <summary>
    /// Decodes a PCI MSI write (SDM §11.11.1–11.11.2): address 0xFEExxxxx with the destination ID in
    /// bits 12–19 and the destination mode in bit 2; data with the vector in bits 0–7, the delivery
    /// mode in bits 8–10, level (assert) in bit 14 and trigger mode in bit 15. The redirection hint
    /// (address bit 3) only matters for lowest-priority arbitration and is not modelled.
    /// </summary>
    public static ApicMessage FromMsi(ulong address, uint data) => new(
        Vector: (byte)data,
        DeliveryMode: (ApicDeliveryMode)((data >> 8) & 7),
        LogicalDestination: (address & (1 << 2)) != 0,
        Destination: (byte)(address >> 12),
        Shorthand: ApicDestinationShorthand.None,
        LevelTriggered: (data & (1 << 15)) != 0,
        // Edge-triggered MSIs ignore the level bit (SDM §11.11.2); treat them as asserted.
        Assert: (data & (1 << 15)) == 0 || (data & (1 << 14)) != 0,
        SourceCpu: -1);
}

/// <summary>
/// What a local APIC or I/O APIC sends interrupt messages to: the machine's <see cref="ApicBus"/>.
/// Defined as an interface so tests and alternative routers (e.g. an in-kernel irqchip) can stand in.
/// </summary>
public interface IApicBus
{
    /// <summary>Route <paramref name="message"/> to the local APICs it addresses.</summary>
    void Deliver(in ApicMessage message);

    /// <summary>A local APIC finished (EOI) a level-triggered interrupt of <paramref name="vector"/>.</summary>
    void BroadcastEoi(byte vector);
}
