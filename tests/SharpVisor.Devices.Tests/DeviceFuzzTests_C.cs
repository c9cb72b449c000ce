using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Apic;
using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// Random register pokes into the interrupt controllers (local APICs, ApicBus, I/O APIC): a guest
/// can never make them throw, and a few architectural invariants hold throughout.
/// </summary>
public sealed class InterruptControllerFuzzTests
{
    private sealed class RandomPic(Random rng) : IInterruptSource
    {
        public bool HasInterrupt => rng.Next(2) == 0;
        public byte Acknowledge() => (byte)rng.Next(256);
    }

    private static readonly int[] Sizes = [1, 2, 4, 8];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Random_pokes_never_throw(int seed)
    {
        var rng = new Random(seed);
        var clock = new ManualClock();
        var bus = new ApicBus();
        var apics = new LocalApic[3];
        for (int i = 0; i < apics.Length; i++)
        {
            apics[i] = new LocalApic(i, (byte)i, clock, bootstrapProcessor: i == 0)
            {
                Pic = i == 0 ? new RandomPic(rng) : null,
                TscToNs = tsc => (long)(tsc >> 1),
            };
            bus.Add(apics[i]);
        }
        var ioapic = new IoApic(bus);
        bus.EoiBroadcast = ioapic.Eoi;
        bus.InitRequested = _ => { };
        bus.StartupRequested = (_, _) => { };

        for (int step = 0; step < 200_000; step++)
        {
            var apic = apics[rng.Next(apics.Length)];
            int size = Sizes[rng.Next(Sizes.Length)];
            ulong value = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40);
            switch (rng.Next(14))
            {
                case 0 or 1 or 2:
                    {
                        // Mostly real register offsets, sometimes anything in (or past) the page.
                        ulong offset = rng.Next(4) == 0 ? (ulong)rng.Next(0x1100) : (ulong)(rng.Next(0x40) << 4);
                        apic.Write(offset, rng.Next(3) == 0 ? size : 4, value);
                        break;
                    }
                case 3 or 4:
                    {
                        ulong offset = (ulong)rng.Next(0x1100);
                        Assert.Equal(0UL, apic.Read(offset, size) & ~BusValue.AllOnes(size));
                        break;
                    }
                case 5:
                    ioapic.Write((ulong)(rng.Next(5) * 0x10 + (rng.Next(8) == 0 ? rng.Next(16) : 0)), size, value);
                    break;
                case 6:
                    Assert.Equal(0UL, ioapic.Read((ulong)rng.Next(0x60), size) & ~BusValue.AllOnes(size));
                    ioapic.Write(IoApic.OffsetIoRegSel, 4, (ulong)rng.Next(0x50));
                    break;
                case 7:
                    ioapic.SetIrq(rng.Next(-2, 27), rng.Next(2) == 0);
                    break;
                case 8:
                    if (apic.HasInterrupt) apic.Acknowledge();
                    else apic.Acknowledge();
                    break;
                case 9:
                    clock.Advance(rng.Next(5000));
                    foreach (var a in apics)
                        if (a.NextDeadlineNs <= clock.NowNs) a.OnTime(clock.NowNs);
                    break;
                case 10:
                    // Mostly valid base values; occasionally reserved bits (#GP, refused).
                    apic.WriteApicBaseMsr(rng.Next(8) == 0 ? value : 0xFEE0_0000UL | (rng.Next(4) == 0 ? 0UL : 0x800UL));
                    break;
                case 11:
                    apic.WriteTscDeadlineMsr(rng.Next(2) == 0 ? 0 : (ulong)rng.Next(1_000_000));
                    apic.ReadTscDeadlineMsr();
                    break;
                case 12:
                    apic.Cr8 = (byte)rng.Next(256);
                    apic.SetLint(rng.Next(-1, 3), rng.Next(2) == 0);
                    break;
                case 13:
                    bus.DeliverMsi(0xFEE0_0000UL | ((uint)rng.Next(256) << 12) | (uint)(rng.Next(16) & 0xC), (uint)rng.Next(0x10000));
                    break;
            }

            // Invariants: the version register never changes while the page is enabled, and PPR
            // is never below TPR.
            if (apic.IsGloballyEnabled)
            {
                Assert.Equal(LocalApic.VersionValue, (uint)apic.Read(LocalApic.RegVersion, 4));
                Assert.True(apic.Read(LocalApic.RegPpr, 4) >= apic.Read(LocalApic.RegTpr, 4));
            }
        }
    }

    [Fact]
    public void Interrupt_storm_from_every_pin_is_bounded_by_remote_irr()
    {
        var clock = new ManualClock();
        var bus = new ApicBus();
        var apic = new LocalApic(0, 0, clock, bootstrapProcessor: true);
        bus.Add(apic);
        var ioapic = new IoApic(bus);
        bus.EoiBroadcast = ioapic.Eoi;
        apic.Write(LocalApic.RegSvr, 4, 0x1FF);
        for (int pin = 0; pin < IoApic.PinCount; pin++)
        {
            ioapic.Write(IoApic.OffsetIoRegSel, 4, (ulong)(0x10 + 2 * pin));
            ioapic.Write(IoApic.OffsetIoWin, 4, IoApic.EntryLevelTriggered | (ulong)(0x30 + pin));
            ioapic.SetIrq(pin, true);
        }
        // Every asserted line is taken and completed; with all lines still high each EOI brings
        // exactly its own vector back (the EOI clears remote IRR and the still-high level line is
        // delivered again; IOAPIC datasheet, redirection entry bit 14), never more than 24 pending.
        var all = new uint[8];
        for (int pin = 0; pin < IoApic.PinCount; pin++) all[(0x30 + pin) >> 5] |= 1u << ((0x30 + pin) & 31);
        Assert.Equal(all, Irr(apic));
        int taken = 0;
        for (int i = 0; i < 1000 && apic.HasInterrupt; i++)
        {
            uint[] pending = Irr(apic);
            byte v = apic.Acknowledge();
            Assert.InRange(v, (byte)0x30, (byte)(0x30 + IoApic.PinCount - 1));
            uint[] inService = (uint[])pending.Clone();
            inService[v >> 5] &= ~(1u << (v & 31));
            Assert.Equal(inService, Irr(apic)); // taken into service, nothing else arrived
            Assert.Equal(Only(v), Isr(apic));
            apic.Write(LocalApic.RegEoi, 4, 0);
            Assert.Equal(new uint[8], Isr(apic)); // the EOI retired v
            Assert.Equal(pending, Irr(apic)); // v is back, and only v
            taken++;
        }
        Assert.Equal(1000, taken);

        // Nested: a higher-class edge MSI (0x60) arrives while level vector v is in service. An EOI
        // retires the highest in-service vector (SDM 11.8.5), so the first EOI clears 0x60 only: v
        // stays in service, and since 0x60 is edge-triggered (TMR clear) no EOI reaches the I/O APIC,
        // whose remote IRR keeps v from being delivered again. The second EOI retires v, and its
        // still-high line brings v back.
        const byte Msi = 0x60;
        uint[] before = Irr(apic);
        byte first = apic.Acknowledge();
        uint[] withoutFirst = (uint[])before.Clone();
        withoutFirst[first >> 5] &= ~(1u << (first & 31));
        bus.DeliverMsi(0xFEE0_0000UL, Msi);
        Assert.Equal(Msi, apic.Acknowledge());
        Assert.Equal(Or(Only(first), Only(Msi)), Isr(apic));
        apic.Write(LocalApic.RegEoi, 4, 0);
        Assert.Equal(Only(first), Isr(apic));
        Assert.Equal(withoutFirst, Irr(apic));
        Assert.False(apic.HasInterrupt); // v's class blocks every other pending vector (PPR)
        apic.Write(LocalApic.RegEoi, 4, 0);
        Assert.Equal(new uint[8], Isr(apic));
        Assert.Equal(before, Irr(apic));
        // Lowering the lines withdraws nothing already accepted: each of the 24 vectors is taken once
        // more, highest first, and none returns after its EOI.
        for (int pin = 0; pin < IoApic.PinCount; pin++) ioapic.SetIrq(pin, false);
        var drained = new List<int>();
        while (apic.HasInterrupt && drained.Count < 100)
        {
            drained.Add(apic.Acknowledge());
            apic.Write(LocalApic.RegEoi, 4, 0);
        }
        Assert.Equal(Enumerable.Range(0x30, IoApic.PinCount).Reverse(), drained);
        Assert.False(apic.HasInterrupt);
    }

    /// <summary>The local APIC's IRR as the guest reads it: eight 32-bit registers, 16 bytes apart.</summary>
    private static uint[] Irr(LocalApic apic) => Bits(apic, LocalApic.RegIrr);

    /// <summary>The local APIC's ISR, laid out like the IRR.</summary>
    private static uint[] Isr(LocalApic apic) => Bits(apic, LocalApic.RegIsr);

    private static uint[] Bits(LocalApic apic, int register)
    {
        var bits = new uint[8];
        for (int k = 0; k < 8; k++) bits[k] = (uint)apic.Read((ulong)(register + 0x10 * k), 4);
        return bits;
    }

    /// <summary>A 256-bit vector set holding only <paramref name="vector"/>.</summary>
    private static uint[] Only(int vector)
    {
        var bits = new uint[8];
        bits[vector >> 5] = 1u << (vector & 31);
        return bits;
    }

    private static uint[] Or(uint[] a, uint[] b) => a.Zip(b, (x, y) => x | y).ToArray();
}
