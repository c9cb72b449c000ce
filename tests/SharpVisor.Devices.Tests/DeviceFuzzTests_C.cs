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
        // exactly its own vector back, never more than 24 pending.
        int taken = 0;
        for (int i = 0; i < 1000 && apic.HasInterrupt; i++)
        {
            byte v = apic.Acknowledge();
            Assert.InRange(v, (byte)0x30, (byte)(0x30 + IoApic.PinCount - 1));
            apic.Write(LocalApic.RegEoi, 4, 0);
            taken++;
        }
        Assert.Equal(1000, taken);
        for (int pin = 0; pin < IoApic.PinCount; pin++) ioapic.SetIrq(pin, false);
        int drained = 0;
        while (apic.HasInterrupt && drained < 100)
        {
            apic.Acknowledge();
            apic.Write(LocalApic.RegEoi, 4, 0);
            drained++;
        }
        Assert.InRange(drained, 0, IoApic.PinCount);
        Assert.False(apic.HasInterrupt);
    }
}
