// The xAPIC interrupt message router: Intel SDM Vol. 3A §11.6.2 (destination modes: physical,
// logical flat and logical cluster; broadcast 0xFF), §11.6.2.4 (lowest-priority delivery, focus
// processor), §11.6.1 (delivery modes and shorthands). It stands for the system bus between the
// local APICs, the I/O APIC and MSI-capable devices.
//
// Deliberate choices:
// - Only globally enabled local APICs (IA32_APIC_BASE[11]) receive messages.
// - Logical destination 0xFF reaches every APIC whose logical ID it matches; in cluster mode
//   cluster 0xF is the broadcast cluster. Physical 0xFF is a broadcast.
// - Lowest priority: the focus processor (vector already in IRR/ISR, focus checking enabled)
//   wins, otherwise the lowest arbitration priority (APR), ties to the lowest vCPU index. Real
//   chipsets differ here (SDM: "model specific"); Linux does not depend on which CPU wins.
// - INIT resets the target local APIC (InitReset) and then reports the vCPU index to the
//   machine, which resets the vCPU and puts it in wait-for-SIPI. An INIT level de-assert
//   (level-triggered, level 0) only resynchronises arbitration IDs and is not reported.
// - STARTUP is reported with its vector (the AP starts at vector × 0x1000); whether the vCPU is
//   waiting for SIPI, and so whether it is honoured, is the machine's business.
// - SMI is not modelled (no SMM) and is dropped.
//
// Threading: not thread safe; the machine serializes all interrupt-fabric calls.
using SharpVisor.Core;

namespace SharpVisor.Devices.Apic;

public sealed class ApicBus : IApicBus
{
    private LocalApic[] _apics = [];

    /// <summary>An INIT reached the local APIC of this vCPU index (its APIC state is already reset).</summary>
    public Action<int>? InitRequested { get; set; }

    /// <summary>A STARTUP IPI reached this vCPU index with this vector (start at vector × 0x1000).</summary>
    public Action<int, byte>? StartupRequested { get; set; }

    /// <summary>EOI of a level-triggered vector; the machine connects the I/O APIC's <see cref="IoApic.Eoi"/>.</summary>
    public Action<byte>? EoiBroadcast { get; set; }

    public IReadOnlyList<LocalApic> Apics => _apics;

    /// <summary>Attaches <paramref name="apic"/> to this bus (sets its <see cref="LocalApic.Bus"/>).</summary>
    public void Add(LocalApic apic)
    {
        foreach (var a in _apics)
            if (a.CpuIndex == apic.CpuIndex)
                throw new ConfigurationException($"apic bus: two local APICs for vCPU {apic.CpuIndex}");
        _apics = [.. _apics, apic];
        apic.Bus = this;
    }

    public void BroadcastEoi(byte vector) => EoiBroadcast?.Invoke(vector);

    /// <summary>A PCI MSI write of <paramref name="data"/> to <paramref name="address"/> (0xFEExxxxx).</summary>
    public void DeliverMsi(ulong address, uint data) => Deliver(ApicMessage.FromMsi(address, data));

    public void Deliver(in ApicMessage message)
    {
        var apics = _apics;
        switch (message.DeliveryMode)
        {
            case ApicDeliveryMode.Fixed:
                // A level-triggered de-assert carries no interrupt (only INIT uses it).
                if (message.LevelTriggered && !message.Assert) return;
                for (int i = 0; i < apics.Length; i++)
                    if (Matches(apics[i], message)) apics[i].AcceptFixed(message.Vector, message.LevelTriggered);
                break;

            case ApicDeliveryMode.LowestPriority:
                if (message.LevelTriggered && !message.Assert) return;
                LowestPriorityTarget(apics, message)?.AcceptFixed(message.Vector, message.LevelTriggered);
                break;

            case ApicDeliveryMode.Nmi:
                for (int i = 0; i < apics.Length; i++)
                    if (Matches(apics[i], message)) apics[i].AcceptNmi();
                break;

            case ApicDeliveryMode.Init:
                if (message.LevelTriggered && !message.Assert) return; // INIT level de-assert
                for (int i = 0; i < apics.Length; i++)
                {
                    if (!Matches(apics[i], message)) continue;
                    apics[i].InitReset();
                    InitRequested?.Invoke(apics[i].CpuIndex);
                }
                break;

            case ApicDeliveryMode.StartUp:
                for (int i = 0; i < apics.Length; i++)
                    if (Matches(apics[i], message)) StartupRequested?.Invoke(apics[i].CpuIndex, message.Vector);
                break;

            case ApicDeliveryMode.ExtInt:
                for (int i = 0; i < apics.Length; i++)
                    if (Matches(apics[i], message)) apics[i].AcceptExtInt();
                break;

            default:
                // SMI (no SMM) and the reserved mode: dropped.
                break;
        }
    }

    private static LocalApic? LowestPriorityTarget(LocalApic[] apics, in ApicMessage message)
    {
        LocalApic? best = null;
        int bestPriority = int.MaxValue;
        for (int i = 0; i < apics.Length; i++)
        {
            var apic = apics[i];
            if (!Matches(apic, message) || !apic.IsSoftwareEnabled) continue;
            if (apic.FocusCheckingEnabled && apic.HasVectorPendingOrInService(message.Vector)) return apic;
            int priority = apic.ArbitrationPriority & 0xF0;
            if (priority < bestPriority)
            {
                best = apic;
                bestPriority = priority;
            }
        }
        return best;
    }

    /// <summary>Does <paramref name="apic"/> accept <paramref name="message"/> by shorthand or destination?</summary>
    public static bool Matches(LocalApic apic, in ApicMessage message)
    {
        if (!apic.IsGloballyEnabled) return false;
        switch (message.Shorthand)
        {
            case ApicDestinationShorthand.Self: return apic.CpuIndex == message.SourceCpu;
            case ApicDestinationShorthand.AllIncludingSelf: return true;
            case ApicDestinationShorthand.AllExcludingSelf: return apic.CpuIndex != message.SourceCpu;
        }
        byte dest = message.Destination;
        if (!message.LogicalDestination)
            return dest == ApicMessage.Broadcast || apic.Id == dest;
        byte ldr = apic.LogicalId;
        if (apic.DestinationFormat == 0xF)
            return (dest & ldr) != 0; // flat: one bit per APIC
        // Cluster: high nibble selects the cluster (0xF = all), low nibble the APICs in it.
        bool clusterMatches = (dest >> 4) == 0xF || (dest >> 4) == (ldr >> 4);
        return clusterMatches && (dest & ldr & 0x0F) != 0;
    }
}
