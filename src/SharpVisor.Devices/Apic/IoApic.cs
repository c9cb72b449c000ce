// I/O APIC: Intel 82093AA datasheet (IOREGSEL/IOWIN, IOAPICID, IOAPICVER, IOAPICARB, the 64-bit
// redirection table entries), at version 0x20 with 24 pins as QEMU emulates it (IOAPICVER reads
// 0x00170020), including the EOI register at offset 0x40 that version-0x20 (ICH) I/O APICs have.
//
// Pins are the I/O APIC's inputs 0–23; which device drives which pin is the machine's wiring,
// and the usual PC conventions (ISA IRQ n on pin n, except ISA IRQ0 from the PIT on pin 2, and
// PCI INTx on pins 16–23) are described to the guest by the ACPI MADT writer, not here.
//
// Deliberate choices and deviations:
// - SetIrq's level is the logical assertion of the input, as the machine's IIrqLine levels are.
//   The polarity bit (13) is stored and read back but does not invert the input: active-low PCI
//   lines are already presented active-high by the machine (QEMU does the same).
// - An edge on a masked edge-triggered pin is lost (datasheet: "ignored, not held pending").
//   A masked level-triggered pin that is still asserted is delivered when it is unmasked.
// - Level-triggered Fixed/LowestPriority entries set remote IRR when delivered and do not
//   deliver again until an EOI of their vector (from a local APIC broadcast or the EOI register)
//   clears it; if the input is still asserted then, the interrupt is delivered again. NMI, SMI,
//   INIT and ExtINT entries are delivered on rising edges whatever their trigger bit, since
//   those modes are edge-only on the APIC bus. Switching an entry to edge clears remote IRR (KVM).
// - Delivery is instantaneous, so delivery status (bit 12) always reads idle.
// - Accesses: IOREGSEL takes any write size (its low byte); IOWIN and EOI take effect only as
//   32-bit writes; reads of any size return the addressed bytes of IOREGSEL or IOWIN; other
//   offsets read all ones and ignore writes. Undefined register indices read all ones.
//
// Threading: not thread safe; the machine serializes all interrupt-fabric calls.
using System.Runtime.CompilerServices;
using SharpVisor.Core.Bus;

namespace SharpVisor.Devices.Apic;

/// <summary>The 24 redirection table entries.</summary>
[InlineArray(IoApic.PinCount)]
public struct IoApicRedirectionTable
{
    private ulong _entry0;
}

/// <summary>All state of an I/O APIC, as a plain value for snapshots.</summary>
public struct IoApicState
{
    public byte Id;
    public byte IoRegSel;
    public IoApicRedirectionTable Redirection;
    /// <summary>Bit n = input level of pin n.</summary>
    public uint PinLevels;
}

public sealed class IoApic : IBusDevice
{
    public const ulong DefaultBaseAddress = 0xFEC0_0000;
    public const ulong MmioSize = 0x1000;
    public const int PinCount = 24;
    /// <summary>Version 0x20, Maximum Redirection Entry 23 in bits 16–23.</summary>
    public const uint VersionValue = 0x0017_0020;

    // MMIO offsets.
    public const ulong OffsetIoRegSel = 0x00, OffsetIoWin = 0x10, OffsetEoi = 0x40;

    // Register indices (IOREGSEL values).
    public const byte RegId = 0x00, RegVersion = 0x01, RegArbitration = 0x02, RegRedirectionTable = 0x10;

    // Redirection entry bits.
    public const ulong EntryLogical = 1UL << 11, EntryDeliveryStatus = 1UL << 12, EntryPolarityLow = 1UL << 13,
        EntryRemoteIrr = 1UL << 14, EntryLevelTriggered = 1UL << 15, EntryMasked = 1UL << 16;
    private const uint EntryLowWritable = 0x0001_AFFF; // all but delivery status and remote IRR
    private const uint EntryHighWritable = 0xFF00_0000; // destination (bits 56–63)

    private readonly IApicBus _bus;
    private IoApicState _s;

    public IoApic(IApicBus bus, byte id = 0, string name = "ioapic")
    {
        _bus = bus;
        Name = name;
        _s.Id = (byte)(id & 0xF);
        Reset();
    }

    public string Name { get; }

    public IoApicState GetState() => _s;
    public void SetState(in IoApicState state) => _s = state;

    /// <summary>Reset: every entry masked, other fields 0 (datasheet); the ID is kept.</summary>
    public void Reset()
    {
        _s.IoRegSel = 0;
        for (int i = 0; i < PinCount; i++) _s.Redirection[i] = EntryMasked;
        _s.PinLevels = 0;
    }

    /// <summary>The redirection entry of <paramref name="pin"/> (for the machine's diagnostics and tests).</summary>
    public ulong GetRedirectionEntry(int pin) => (uint)pin < PinCount ? _s.Redirection[pin] : 0;

    /// <summary>The input level of <paramref name="pin"/> changed (true = asserted). Unknown pins are ignored.</summary>
    public void SetIrq(int pin, bool level)
    {
        if ((uint)pin >= PinCount) return;
        uint bit = 1u << pin;
        bool wasHigh = (_s.PinLevels & bit) != 0;
        if (level) _s.PinLevels |= bit; else _s.PinLevels &= ~bit;
        ulong entry = _s.Redirection[pin];
        if (UsesRemoteIrr(entry))
        {
            if (level) Service(pin);
        }
        else if (level && !wasHigh && (entry & EntryMasked) == 0)
            Send(entry);
    }

    /// <summary>
    /// A local APIC finished a level-triggered interrupt of <paramref name="vector"/>: clear remote
    /// IRR of the entries with that vector and deliver again those whose input is still asserted.
    /// </summary>
    public void Eoi(byte vector)
    {
        for (int pin = 0; pin < PinCount; pin++)
        {
            ulong entry = _s.Redirection[pin];
            if ((entry & EntryRemoteIrr) == 0 || (byte)entry != vector) continue;
            _s.Redirection[pin] = entry & ~EntryRemoteIrr;
            Service(pin);
        }
    }

    private static bool UsesRemoteIrr(ulong entry)
    {
        var mode = (ApicDeliveryMode)((entry >> 8) & 7);
        return (entry & EntryLevelTriggered) != 0 && mode is ApicDeliveryMode.Fixed or ApicDeliveryMode.LowestPriority;
    }

    /// <summary>Delivers a level-triggered pin if it is asserted, unmasked and not awaiting EOI.</summary>
    private void Service(int pin)
    {
        ulong entry = _s.Redirection[pin];
        if ((_s.PinLevels & (1u << pin)) == 0 || (entry & (EntryMasked | EntryRemoteIrr)) != 0 || !UsesRemoteIrr(entry))
            return;
        _s.Redirection[pin] = entry | EntryRemoteIrr;
        Send(entry);
    }

    private void Send(ulong entry)
    {
        var message = new ApicMessage(
            Vector: (byte)entry,
            DeliveryMode: (ApicDeliveryMode)((entry >> 8) & 7),
            LogicalDestination: (entry & EntryLogical) != 0,
            Destination: (byte)(entry >> 56),
            Shorthand: ApicDestinationShorthand.None,
            LevelTriggered: UsesRemoteIrr(entry),
            Assert: true,
            SourceCpu: -1);
        _bus.Deliver(message);
    }

    // ---- IBusDevice ----

    public ulong Read(ulong offset, int size)
    {
        if (offset - OffsetIoRegSel < 4)
            return BusValue.Mask((ulong)_s.IoRegSel >> (int)((offset - OffsetIoRegSel) * 8), size);
        if (offset - OffsetIoWin < 4)
            return BusValue.Mask((ulong)ReadRegister(_s.IoRegSel) >> (int)((offset - OffsetIoWin) * 8), size);
        return BusValue.AllOnes(size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset == OffsetIoRegSel)
            _s.IoRegSel = (byte)value;
        else if (offset == OffsetIoWin && size == 4)
            WriteRegister(_s.IoRegSel, (uint)value);
        else if (offset == OffsetEoi && size == 4)
            Eoi((byte)value);
        // Anything else (other offsets, partial IOWIN writes) is ignored.
    }

    private uint ReadRegister(byte index)
    {
        switch (index)
        {
            case RegId: return (uint)_s.Id << 24;
            case RegVersion: return VersionValue;
            case RegArbitration: return (uint)_s.Id << 24; // loaded from the ID (datasheet)
            case >= RegRedirectionTable and < RegRedirectionTable + 2 * PinCount:
                {
                    ulong entry = _s.Redirection[(index - RegRedirectionTable) >> 1];
                    return (index & 1) == 0 ? (uint)entry : (uint)(entry >> 32);
                }
            default: return uint.MaxValue;
        }
    }

    private void WriteRegister(byte index, uint value)
    {
        switch (index)
        {
            case RegId:
                _s.Id = (byte)((value >> 24) & 0xF);
                break;
            case >= RegRedirectionTable and < RegRedirectionTable + 2 * PinCount:
                {
                    int pin = (index - RegRedirectionTable) >> 1;
                    ulong entry = _s.Redirection[pin];
                    if ((index & 1) == 0)
                    {
                        uint low = ((uint)entry & ~EntryLowWritable) | (value & EntryLowWritable);
                        entry = (entry & 0xFFFF_FFFF_0000_0000) | low;
                        if ((entry & EntryLevelTriggered) == 0) entry &= ~EntryRemoteIrr;
                    }
                    else
                        entry = (entry & 0x0000_0000_FFFF_FFFF) | ((ulong)(value & EntryHighWritable) << 32);
                    _s.Redirection[pin] = entry;
                    // Unmasking (or reprogramming) an asserted level-triggered pin delivers it.
                    Service(pin);
                    break;
                }
            default:
                // Version, arbitration and undefined indices are read-only / nothing: ignored.
                break;
        }
    }
}
