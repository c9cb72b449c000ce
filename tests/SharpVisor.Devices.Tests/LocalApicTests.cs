using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Apic;
using Xunit;
using static SharpVisor.Devices.Apic.LocalApic;

namespace SharpVisor.Devices.Tests;

/// <summary>Local APIC and ApicBus behaviour per Intel SDM Vol. 3A chapter 11, through the registers.</summary>
public sealed class LocalApicTests
{
    private readonly ManualClock _clock = new();
    private readonly ApicBus _bus = new();
    private readonly LocalApic _bsp;
    private readonly LocalApic _ap;
    private readonly List<int> _inits = new();
    private readonly List<(int Cpu, byte Vector)> _sipis = new();
    private readonly List<byte> _eois = new();
    private int _bspNmis, _apNmis;

    public LocalApicTests()
    {
        _bsp = new LocalApic(0, 0, _clock, bootstrapProcessor: true);
        _ap = new LocalApic(1, 1, _clock, bootstrapProcessor: false);
        _bus.Add(_bsp);
        _bus.Add(_ap);
        _bus.InitRequested = _inits.Add;
        _bus.StartupRequested = (cpu, v) => _sipis.Add((cpu, v));
        _bus.EoiBroadcast = _eois.Add;
        _bsp.Nmi = () => _bspNmis++;
        _ap.Nmi = () => _apNmis++;
    }

    private static uint R(LocalApic apic, int reg) => (uint)apic.Read((ulong)reg, 4);
    private static void W(LocalApic apic, int reg, uint value) => apic.Write((ulong)reg, 4, value);
    private static void Enable(LocalApic apic) => W(apic, RegSvr, 0x1FF);
    private static bool IrrBit(LocalApic apic, int v) => (R(apic, RegIrr + (v >> 5) * 0x10) & (1u << (v & 31))) != 0;
    private static bool IsrBit(LocalApic apic, int v) => (R(apic, RegIsr + (v >> 5) * 0x10) & (1u << (v & 31))) != 0;
    private static bool TmrBit(LocalApic apic, int v) => (R(apic, RegTmr + (v >> 5) * 0x10) & (1u << (v & 31))) != 0;

    /// <summary>Sends an IPI from <paramref name="from"/> through its ICR.</summary>
    private static void Ipi(LocalApic from, byte dest, uint icrLow)
    {
        W(from, RegIcrHigh, (uint)dest << 24);
        W(from, RegIcrLow, icrLow);
    }

    private const uint Logical = 1 << 11, Asserted = 1 << 14, LevelTrig = 1 << 15;
    private const uint ModeLowest = 1 << 8, ModeNmi = 4 << 8, ModeInit = 5 << 8, ModeStartup = 6 << 8;
    private const uint ShorthandSelf = 1 << 18, ShorthandAllIncl = 2 << 18, ShorthandAllExcl = 3 << 18;

    [Fact]
    public void Reset_values_match_the_SDM_and_QEMU()
    {
        Assert.Equal(0x0005_0014u, R(_bsp, RegVersion));
        Assert.Equal(0x0100_0000u, R(_ap, RegId));
        Assert.Equal(0xFFu, R(_bsp, RegSvr));
        Assert.Equal(0xFFFF_FFFFu, R(_bsp, RegDfr));
        Assert.Equal(0u, R(_bsp, RegLdr));
        Assert.Equal(0u, R(_bsp, RegTpr));
        foreach (int reg in new[] { RegLvtTimer, RegLvtThermal, RegLvtPerf, RegLvtLint1, RegLvtError })
            Assert.Equal(0x0001_0000u, R(_bsp, reg));
        // Virtual wire on the BSP only.
        Assert.Equal(0x700u, R(_bsp, RegLvtLint0));
        Assert.Equal(0x0001_0000u, R(_ap, RegLvtLint0));
        Assert.Equal(0xFEE0_0900UL, _bsp.ReadApicBaseMsr());
        Assert.Equal(0xFEE0_0800UL, _ap.ReadApicBaseMsr());
    }

    [Fact]
    public void Software_disabled_apic_drops_fixed_interrupts_and_svr_enable_accepts_them()
    {
        Ipi(_bsp, 1, 0x40);
        Assert.False(IrrBit(_ap, 0x40));
        Assert.False(_ap.HasInterrupt);

        Enable(_ap);
        Assert.Equal(0x1FFu, R(_ap, RegSvr));
        Ipi(_bsp, 1, 0x40);
        Assert.True(IrrBit(_ap, 0x40));
        Assert.True(_ap.HasInterrupt);
        Assert.Equal(0x40, _ap.Acknowledge());
    }

    [Fact]
    public void Software_disable_masks_every_lvt_and_unmasking_is_ignored_while_disabled()
    {
        Enable(_bsp);
        W(_bsp, RegLvtTimer, 0x30);
        W(_bsp, RegLvtLint1, 0x400);
        Assert.Equal(0x30u, R(_bsp, RegLvtTimer));
        W(_bsp, RegSvr, 0xFF);
        Assert.Equal(0x0001_0030u, R(_bsp, RegLvtTimer));
        Assert.Equal(0x0001_0400u, R(_bsp, RegLvtLint1));
        Assert.Equal(0x0001_0700u, R(_bsp, RegLvtLint0));
        W(_bsp, RegLvtTimer, 0x31);
        Assert.Equal(0x0001_0031u, R(_bsp, RegLvtTimer));
    }

    [Fact]
    public void Tpr_masks_interrupts_at_or_below_its_priority_class()
    {
        Enable(_ap);
        W(_ap, RegTpr, 0x50);
        Assert.Equal(0x50u, R(_ap, RegPpr));
        Ipi(_bsp, 1, 0x45);
        Ipi(_bsp, 1, 0x5F); // same class as TPR: still masked
        Assert.True(IrrBit(_ap, 0x45));
        Assert.False(_ap.HasInterrupt);
        Assert.Equal(0xFF, _ap.Acknowledge()); // spurious, nothing moves to ISR
        Assert.False(IsrBit(_ap, 0x5F));

        Ipi(_bsp, 1, 0x65);
        Assert.True(_ap.HasInterrupt);
        Assert.Equal(0x65, _ap.Acknowledge());
        Assert.False(_ap.HasInterrupt);

        // CR8 is TPR[7:4]; writing it clears TPR[3:0].
        W(_ap, RegTpr, 0x5A);
        Assert.Equal(5, _ap.Cr8);
        _ap.Cr8 = 3;
        Assert.Equal(0x30u, R(_ap, RegTpr));
        // PPR is now the in-service class (0x60), above TPR.
        Assert.Equal(0x60u, R(_ap, RegPpr));
        W(_ap, RegEoi, 0);
        Assert.Equal(0x30u, R(_ap, RegPpr));
        Assert.True(_ap.HasInterrupt);
        Assert.Equal(0x5F, _ap.Acknowledge());
    }

    [Fact]
    public void Highest_irr_is_delivered_first_and_eoi_clears_the_highest_isr()
    {
        Enable(_ap);
        Ipi(_bsp, 1, 0x40);
        Ipi(_bsp, 1, 0x80);
        Assert.Equal(0x80, _ap.Acknowledge());
        Assert.True(IsrBit(_ap, 0x80));
        Assert.False(IrrBit(_ap, 0x80));
        Assert.Equal(0x80u, R(_ap, RegPpr));
        Assert.False(_ap.HasInterrupt); // 0x40 waits below the in-service class

        Ipi(_bsp, 1, 0x85); // same class as in service: not nested
        Assert.False(_ap.HasInterrupt);
        Ipi(_bsp, 1, 0x90); // higher class nests
        Assert.True(_ap.HasInterrupt);
        Assert.Equal(0x90, _ap.Acknowledge());

        W(_ap, RegEoi, 0);
        Assert.False(IsrBit(_ap, 0x90));
        Assert.True(IsrBit(_ap, 0x80));
        Assert.False(_ap.HasInterrupt);
        W(_ap, RegEoi, 0);
        Assert.Equal(0x85, _ap.Acknowledge());
        W(_ap, RegEoi, 0);
        Assert.Equal(0x40, _ap.Acknowledge());
        W(_ap, RegEoi, 0);
        Assert.Equal(0u, R(_ap, RegPpr));
        Assert.Empty(_eois); // all edge-triggered
    }

    [Fact]
    public void Eoi_of_a_level_triggered_vector_is_broadcast()
    {
        Enable(_ap);
        _bus.Deliver(new ApicMessage(0x51, ApicDeliveryMode.Fixed, false, 1, ApicDestinationShorthand.None, LevelTriggered: true, Assert: true, SourceCpu: -1));
        _bus.Deliver(new ApicMessage(0x41, ApicDeliveryMode.Fixed, false, 1, ApicDestinationShorthand.None, LevelTriggered: false, Assert: true, SourceCpu: -1));
        Assert.True(TmrBit(_ap, 0x51));
        Assert.False(TmrBit(_ap, 0x41));
        Assert.Equal(0x51, _ap.Acknowledge());
        W(_ap, RegEoi, 0);
        Assert.Equal([0x51], _eois);
        Assert.Equal(0x41, _ap.Acknowledge());
        W(_ap, RegEoi, 0);
        Assert.Equal([0x51], _eois);
    }

    [Fact]
    public void Illegal_vectors_set_esr_bits_visible_only_after_an_esr_write()
    {
        Enable(_bsp);
        Enable(_ap);
        Ipi(_bsp, 1, 0x05); // send illegal vector
        Assert.False(IrrBit(_ap, 0x05));
        Assert.Equal(0u, R(_bsp, RegEsr));
        W(_bsp, RegEsr, 0);
        Assert.Equal(EsrSendIllegalVector, R(_bsp, RegEsr));
        W(_bsp, RegEsr, 0);
        Assert.Equal(0u, R(_bsp, RegEsr));

        // A message with an illegal vector from the bus: received illegal vector.
        _bus.Deliver(new ApicMessage(0x0E, ApicDeliveryMode.Fixed, false, 1, ApicDestinationShorthand.None, false, true, -1));
        W(_ap, RegEsr, 0);
        Assert.Equal(EsrReceivedIllegalVector, R(_ap, RegEsr));
    }

    [Fact]
    public void Reserved_register_access_sets_illegal_register_address_and_raises_the_error_lvt()
    {
        Enable(_bsp);
        W(_bsp, RegLvtError, 0xFE);
        Assert.Equal(0u, R(_bsp, 0x040)); // reserved
        Assert.True(IrrBit(_bsp, 0xFE));
        W(_bsp, RegEsr, 0);
        Assert.Equal(EsrIllegalRegisterAddress, R(_bsp, RegEsr));
        W(_bsp, 0x3F0, 1); // SELF IPI exists only in x2APIC mode
        W(_bsp, RegEsr, 0);
        Assert.Equal(EsrIllegalRegisterAddress, R(_bsp, RegEsr));
    }

    [Fact]
    public void Read_only_registers_ignore_writes()
    {
        Enable(_bsp);
        W(_bsp, RegVersion, 0);
        W(_bsp, RegPpr, 0xF0);
        W(_bsp, RegIrr, 0xFFFF_FFFF);
        Assert.Equal(VersionValue, R(_bsp, RegVersion));
        Assert.Equal(0u, R(_bsp, RegPpr));
        Assert.Equal(0u, R(_bsp, RegIrr));
        W(_bsp, RegEsr, 0);
        Assert.Equal(0u, R(_bsp, RegEsr)); // not reserved, so no error
    }

    [Theory]
    [InlineData(0x0u, 2)]
    [InlineData(0x1u, 4)]
    [InlineData(0x2u, 8)]
    [InlineData(0x3u, 16)]
    [InlineData(0x8u, 32)]
    [InlineData(0x9u, 64)]
    [InlineData(0xAu, 128)]
    [InlineData(0xBu, 1)]
    public void One_shot_timer_counts_down_at_bus_rate_over_the_divider(uint divide, int divisor)
    {
        Enable(_bsp);
        W(_bsp, RegTimerDivide, divide);
        Assert.Equal(divide, R(_bsp, RegTimerDivide));
        W(_bsp, RegLvtTimer, 0xEC);
        W(_bsp, RegTimerInitialCount, 1000);
        Assert.Equal(1000u, R(_bsp, RegTimerInitialCount));
        Assert.Equal(1000u, R(_bsp, RegTimerCurrentCount));
        Assert.Equal(1000L * divisor, _bsp.NextDeadlineNs);

        _clock.Advance(250L * divisor);
        Assert.Equal(750u, R(_bsp, RegTimerCurrentCount));
        _bsp.OnTime(_clock.NowNs);
        Assert.False(IrrBit(_bsp, 0xEC));

        _clock.Advance(750L * divisor);
        _bsp.OnTime(_clock.NowNs);
        Assert.True(IrrBit(_bsp, 0xEC));
        Assert.Equal(0u, R(_bsp, RegTimerCurrentCount));
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);
        Assert.Equal(0xEC, _bsp.Acknowledge());
        W(_bsp, RegEoi, 0);

        // One-shot: no second interrupt.
        _clock.Advance(5000L * divisor);
        _bsp.OnTime(_clock.NowNs);
        Assert.False(IrrBit(_bsp, 0xEC));
    }

    [Fact]
    public void Periodic_timer_reloads_and_fires_every_period()
    {
        Enable(_bsp);
        W(_bsp, RegTimerDivide, 0xB); // ÷1: one tick per ns
        W(_bsp, RegLvtTimer, LvtTimerPeriodic | 0xEF);
        W(_bsp, RegTimerInitialCount, 100);
        for (int period = 1; period <= 3; period++)
        {
            Assert.Equal(100L * period, _bsp.NextDeadlineNs);
            _clock.NowNs = 100L * period;
            _bsp.OnTime(_clock.NowNs);
            Assert.True(IrrBit(_bsp, 0xEF));
            Assert.Equal(100u, R(_bsp, RegTimerCurrentCount)); // reloaded
            Assert.Equal(0xEF, _bsp.Acknowledge());
            W(_bsp, RegEoi, 0);
        }
        _clock.Advance(30);
        Assert.Equal(70u, R(_bsp, RegTimerCurrentCount));

        // Writing 0 to the initial count stops it.
        W(_bsp, RegTimerInitialCount, 0);
        Assert.Equal(0u, R(_bsp, RegTimerCurrentCount));
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);
    }

    [Fact]
    public void Masked_timer_counts_but_does_not_interrupt_even_after_unmasking()
    {
        Enable(_bsp);
        W(_bsp, RegTimerDivide, 0xB);
        W(_bsp, RegLvtTimer, LvtMasked | 0xEC);
        W(_bsp, RegTimerInitialCount, 100);
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);
        _clock.Advance(40);
        Assert.Equal(60u, R(_bsp, RegTimerCurrentCount));
        _clock.Advance(100);
        W(_bsp, RegLvtTimer, 0xEC); // expiry happened while masked: lost
        _bsp.OnTime(_clock.NowNs);
        Assert.False(IrrBit(_bsp, 0xEC));
        Assert.Equal(0u, R(_bsp, RegTimerCurrentCount));
    }

    [Fact]
    public void Tsc_deadline_timer_fires_at_the_deadline_and_disarms()
    {
        Enable(_bsp);
        _bsp.TscToNs = tsc => (long)(tsc / 2); // a 2 GHz TSC
        // Outside TSC-deadline mode the MSR reads 0 and ignores writes.
        _bsp.WriteTscDeadlineMsr(1000);
        Assert.Equal(0UL, _bsp.ReadTscDeadlineMsr());

        W(_bsp, RegLvtTimer, LvtTimerTscDeadline | 0xEB);
        W(_bsp, RegTimerInitialCount, 500); // ignored in TSC-deadline mode
        Assert.Equal(0u, R(_bsp, RegTimerInitialCount));
        Assert.Equal(0u, R(_bsp, RegTimerCurrentCount));
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);

        _bsp.WriteTscDeadlineMsr(4000);
        Assert.Equal(4000UL, _bsp.ReadTscDeadlineMsr());
        Assert.Equal(2000L, _bsp.NextDeadlineNs);
        _clock.NowNs = 1999;
        _bsp.OnTime(_clock.NowNs);
        Assert.False(IrrBit(_bsp, 0xEB));
        _clock.NowNs = 2000;
        _bsp.OnTime(_clock.NowNs);
        Assert.True(IrrBit(_bsp, 0xEB));
        Assert.Equal(0UL, _bsp.ReadTscDeadlineMsr());
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);

        // A deadline in the past fires at once.
        Assert.Equal(0xEB, _bsp.Acknowledge());
        W(_bsp, RegEoi, 0);
        _bsp.WriteTscDeadlineMsr(10);
        Assert.True(IrrBit(_bsp, 0xEB));

        // Leaving TSC-deadline mode disarms.
        Assert.Equal(0xEB, _bsp.Acknowledge());
        W(_bsp, RegEoi, 0);
        _bsp.WriteTscDeadlineMsr(100_000);
        W(_bsp, RegLvtTimer, 0xEB);
        Assert.Equal(long.MaxValue, _bsp.NextDeadlineNs);
        W(_bsp, RegLvtTimer, LvtTimerTscDeadline | 0xEB);
        Assert.Equal(0UL, _bsp.ReadTscDeadlineMsr());
    }

    [Fact]
    public void Fixed_ipi_by_physical_destination_reaches_only_that_apic()
    {
        Enable(_bsp);
        Enable(_ap);
        Ipi(_bsp, 1, 0x30 | Asserted);
        Assert.True(IrrBit(_ap, 0x30));
        Assert.False(IrrBit(_bsp, 0x30));
        // Delivery status reads idle; the ICR keeps what was written.
        Assert.Equal(0x30u | Asserted, R(_bsp, RegIcrLow));
        Assert.Equal(0x0100_0000u, R(_bsp, RegIcrHigh));

        // The ID register is writable and routing follows it.
        W(_ap, RegId, 0x0700_0000);
        Ipi(_bsp, 7, 0x31 | Asserted);
        Assert.True(IrrBit(_ap, 0x31));
        // Physical 0xFF is a broadcast.
        Ipi(_ap, 0xFF, 0x32 | Asserted);
        Assert.True(IrrBit(_ap, 0x32));
        Assert.True(IrrBit(_bsp, 0x32));
    }

    [Fact]
    public void Fixed_ipi_by_logical_flat_destination()
    {
        Enable(_bsp);
        Enable(_ap);
        W(_bsp, RegLdr, 0x0100_0000);
        W(_ap, RegLdr, 0x0200_0000);
        Ipi(_bsp, 0x02, Logical | Asserted | 0x41);
        Assert.True(IrrBit(_ap, 0x41));
        Assert.False(IrrBit(_bsp, 0x41));
        Ipi(_ap, 0x03, Logical | Asserted | 0x42);
        Assert.True(IrrBit(_ap, 0x42));
        Assert.True(IrrBit(_bsp, 0x42));
        Ipi(_ap, 0x04, Logical | Asserted | 0x43);
        Assert.False(IrrBit(_ap, 0x43));
        Assert.False(IrrBit(_bsp, 0x43));
    }

    [Fact]
    public void Fixed_ipi_by_logical_cluster_destination()
    {
        Enable(_bsp);
        Enable(_ap);
        W(_bsp, RegDfr, 0x0FFF_FFFF);
        W(_ap, RegDfr, 0x0FFF_FFFF);
        Assert.Equal(0x0FFF_FFFFu, R(_ap, RegDfr));
        W(_bsp, RegLdr, 0x1100_0000); // cluster 1, member bit 0
        W(_ap, RegLdr, 0x2100_0000);  // cluster 2, member bit 0
        Ipi(_bsp, 0x21, Logical | Asserted | 0x51);
        Assert.True(IrrBit(_ap, 0x51));
        Assert.False(IrrBit(_bsp, 0x51));
        Ipi(_bsp, 0x12, Logical | Asserted | 0x52); // cluster 1, member bit 1: nobody
        Assert.False(IrrBit(_bsp, 0x52));
        Ipi(_bsp, 0xF1, Logical | Asserted | 0x53); // broadcast cluster, member bit 0
        Assert.True(IrrBit(_ap, 0x53));
        Assert.True(IrrBit(_bsp, 0x53));
    }

    [Fact]
    public void Shorthands_self_and_all_excluding_self()
    {
        Enable(_bsp);
        Enable(_ap);
        Ipi(_bsp, 1, ShorthandSelf | Asserted | 0x61);
        Assert.True(IrrBit(_bsp, 0x61));
        Assert.False(IrrBit(_ap, 0x61));
        Ipi(_bsp, 0, ShorthandAllExcl | Asserted | 0x62);
        Assert.True(IrrBit(_ap, 0x62));
        Assert.False(IrrBit(_bsp, 0x62));
        Ipi(_ap, 0, ShorthandAllIncl | Asserted | 0x63);
        Assert.True(IrrBit(_ap, 0x63));
        Assert.True(IrrBit(_bsp, 0x63));
    }

    [Fact]
    public void Lowest_priority_goes_to_the_apic_with_the_lowest_priority()
    {
        Enable(_bsp);
        Enable(_ap);
        W(_bsp, RegLdr, 0x0100_0000);
        W(_ap, RegLdr, 0x0200_0000);
        W(_bsp, RegTpr, 0x40);
        Ipi(_ap, 0x03, Logical | ModeLowest | Asserted | 0x71);
        Assert.True(IrrBit(_ap, 0x71));
        Assert.False(IrrBit(_bsp, 0x71));
        W(_bsp, RegTpr, 0x00);
        W(_ap, RegTpr, 0x40);
        W(_ap, RegSvr, 0x3FF); // focus checking off, so the AP's pending 0x71 does not make it the focus
        Ipi(_ap, 0x03, Logical | ModeLowest | Asserted | 0x71);
        Assert.True(IrrBit(_bsp, 0x71));
    }

    [Fact]
    public void Init_and_startup_ipis_are_reported_to_the_machine()
    {
        Enable(_ap);
        W(_ap, RegTpr, 0x20);
        W(_ap, RegLdr, 0x0200_0000);
        // INIT assert: the target APIC is reset (ID kept) and the machine told.
        Ipi(_bsp, 1, ModeInit | Asserted | LevelTrig);
        Assert.Equal([1], _inits);
        Assert.Equal(0u, R(_ap, RegTpr));
        Assert.Equal(0u, R(_ap, RegLdr));
        Assert.Equal(0xFFu, R(_ap, RegSvr));
        Assert.Equal(0x0100_0000u, R(_ap, RegId));
        // INIT level de-assert: not an INIT.
        Ipi(_bsp, 1, ModeInit | LevelTrig);
        Assert.Equal([1], _inits);
        // STARTUP with vector 0x9A: start at 0x9A000. Works on a software-disabled APIC.
        Ipi(_bsp, 1, ModeStartup | Asserted | 0x9A);
        Assert.Equal([(1, (byte)0x9A)], _sipis);
        Assert.Equal(0, _bspNmis);
    }

    [Fact]
    public void Nmi_ipi_reaches_the_target_vcpu()
    {
        Ipi(_bsp, 1, ModeNmi | Asserted);
        Assert.Equal(1, _apNmis);
        Assert.Equal(0, _bspNmis);
        Ipi(_ap, 0, ShorthandAllExcl | ModeNmi | Asserted);
        Assert.Equal(1, _bspNmis);
    }

    private sealed class FakePic : IInterruptSource
    {
        public bool Pending;
        public byte Vector = 0x20;
        public int Acks;
        public bool HasInterrupt => Pending;
        public byte Acknowledge() { Acks++; Pending = false; return Vector; }
    }

    [Fact]
    public void Pic_passes_through_lint0_in_extint_mode()
    {
        var pic = new FakePic { Pending = true, Vector = 0x08 };
        _bsp.Pic = pic;
        // After reset (APIC software-disabled, LINT0 virtual wire) the PIC reaches the CPU.
        Assert.True(_bsp.HasInterrupt);
        Assert.Equal(0x08, _bsp.Acknowledge());
        Assert.False(_bsp.HasInterrupt);

        // ExtINT ignores APIC priorities.
        Enable(_bsp);
        W(_bsp, RegLvtLint0, 0x700);
        W(_bsp, RegTpr, 0xF0);
        pic.Pending = true;
        Assert.True(_bsp.HasInterrupt);
        Assert.Equal(0x08, _bsp.Acknowledge());

        // Masked LINT0: no passthrough.
        W(_bsp, RegLvtLint0, LvtMasked | 0x700);
        pic.Pending = true;
        Assert.False(_bsp.HasInterrupt);
        Assert.False(_bsp.AcceptsPicInterrupts);

        // Globally disabled APIC: LINT0 is INTR, the PIC passes whatever the LVT says.
        Assert.True(_bsp.WriteApicBaseMsr(0xFEE0_0000));
        Assert.True(_bsp.AcceptsPicInterrupts);
        Assert.True(_bsp.HasInterrupt);
        Assert.Equal(0x08, _bsp.Acknowledge());
    }

    [Fact]
    public void Application_processor_does_not_take_the_pic_after_reset()
    {
        var pic = new FakePic { Pending = true };
        _ap.Pic = pic;
        Assert.False(_ap.HasInterrupt);
    }

    [Fact]
    public void Lint1_in_nmi_mode_raises_nmi_unless_masked()
    {
        Enable(_bsp);
        W(_bsp, RegLvtLint1, 0x400);
        _bsp.SetLint(1, true);
        _bsp.SetLint(1, true); // no new edge
        _bsp.SetLint(1, false);
        Assert.Equal(1, _bspNmis);
        W(_bsp, RegLvtLint1, LvtMasked | 0x400);
        _bsp.SetLint(1, true);
        Assert.Equal(1, _bspNmis);
    }

    [Fact]
    public void Level_triggered_lint0_fixed_waits_for_eoi()
    {
        Enable(_bsp);
        W(_bsp, RegLvtLint0, LvtLevelTriggered | 0x55);
        _bsp.SetLint(0, true);
        Assert.True(IrrBit(_bsp, 0x55));
        Assert.True(TmrBit(_bsp, 0x55));
        Assert.Equal(LvtRemoteIrr, R(_bsp, RegLvtLint0) & LvtRemoteIrr);
        Assert.Equal(0x55, _bsp.Acknowledge());
        _bsp.SetLint(0, true);
        Assert.False(IrrBit(_bsp, 0x55)); // remote IRR holds it
        W(_bsp, RegEoi, 0);
        Assert.True(IrrBit(_bsp, 0x55)); // still high: delivered again
        Assert.Equal(0x55, _bsp.Acknowledge());
        _bsp.SetLint(0, false);
        W(_bsp, RegEoi, 0);
        Assert.False(IrrBit(_bsp, 0x55));
        Assert.Equal(0u, R(_bsp, RegLvtLint0) & LvtRemoteIrr);
    }

    [Fact]
    public void Apic_base_msr_rejects_reserved_bits_and_x2apic_and_disable_resets_the_apic()
    {
        Assert.False(_bsp.WriteApicBaseMsr(0xFEE0_0900 | 1)); // reserved bit 0
        Assert.False(_bsp.WriteApicBaseMsr(0xFEE0_0D00));     // x2APIC enable
        Assert.Equal(0xFEE0_0900UL, _bsp.ReadApicBaseMsr());

        Enable(_bsp);
        W(_bsp, RegTpr, 0x30);
        Assert.True(_bsp.WriteApicBaseMsr(0xFEE0_0000)); // BSP bit is read-only
        Assert.Equal(0xFEE0_0100UL, _bsp.ReadApicBaseMsr());
        Assert.False(_bsp.IsGloballyEnabled);
        Assert.Equal(0xFFFF_FFFFu, R(_bsp, RegVersion)); // the page is gone
        W(_bsp, RegTpr, 0x70);                            // ignored

        // Disabled APICs receive nothing from the bus.
        Ipi(_ap, 0, 0x40 | Asserted);
        Assert.True(_bsp.WriteApicBaseMsr(0xFEE0_0800));
        Assert.Equal(0xFEE0_0900UL, _bsp.ReadApicBaseMsr());
        Assert.Equal(0u, R(_bsp, RegTpr));
        Assert.Equal(0xFFu, R(_bsp, RegSvr));
        Assert.False(IrrBit(_bsp, 0x40));
    }

    [Fact]
    public void Sub_dword_reads_return_register_bytes_and_sub_dword_writes_are_ignored()
    {
        Assert.Equal(0x14UL, _bsp.Read(RegVersion, 1));
        Assert.Equal(0x05UL, _bsp.Read(RegVersion + 2, 1));
        Assert.Equal(0x0005_0014UL, _bsp.Read(RegVersion, 8));
        Assert.Equal(0UL, _bsp.Read(RegVersion + 4, 4));
        _bsp.Write(RegTpr, 1, 0x40);
        _bsp.Write(RegTpr, 8, 0x40);
        _bsp.Write(RegTpr + 4, 4, 0x40);
        Assert.Equal(0u, R(_bsp, RegTpr));
    }

    [Fact]
    public void Msi_is_decoded_and_delivered()
    {
        Enable(_ap);
        // Address 0xFEE01000: physical destination 1; data: edge, fixed, vector 0x64.
        _bus.DeliverMsi(0xFEE0_1000, 0x0064);
        Assert.True(IrrBit(_ap, 0x64));
        Assert.False(TmrBit(_ap, 0x64));
    }

    [Fact]
    public void Ipi_wakes_the_target_vcpu()
    {
        int kicks = 0;
        _ap.InterruptRequested = () => kicks++;
        Enable(_ap);
        Ipi(_bsp, 1, 0x30 | Asserted);
        Assert.True(kicks >= 1);
    }

    [Fact]
    public void Arbitration_priority_follows_the_sdm_rule()
    {
        Enable(_ap);
        W(_ap, RegTpr, 0x30);
        Assert.Equal(0x30u, R(_ap, RegApr));
        Ipi(_bsp, 1, 0x50 | Asserted);
        Assert.Equal(0x50u, R(_ap, RegApr)); // IRR class above TPR
    }

    [Fact]
    public void Extint_message_from_the_io_apic_takes_the_vector_from_the_pic()
    {
        var pic = new FakePic { Pending = true, Vector = 0x30 };
        _ap.Pic = pic;
        Enable(_ap);
        Assert.False(_ap.HasInterrupt);
        _bus.Deliver(new ApicMessage(0, ApicDeliveryMode.ExtInt, false, 1, ApicDestinationShorthand.None, false, true, -1));
        Assert.True(_ap.HasInterrupt);
        Assert.Equal(0x30, _ap.Acknowledge());
        Assert.Equal(1, pic.Acks);
        pic.Pending = true;
        Assert.False(_ap.HasInterrupt);
    }
}

public sealed class LocalApicTimerRangeTests
{
    [Fact]
    public void Slowest_bus_with_the_longest_count_and_divider_keeps_a_future_deadline()
    {
        // 2^32 − 1 ticks at ÷128 on a 1 kHz bus: about 17 million years, but no overflow and no throw.
        var clock = new ManualClock();
        var apic = new LocalApic(0, 0, clock, bootstrapProcessor: true, busCycleNs: LocalApic.MaxBusCycleNs);
        apic.Write(LocalApic.RegSvr, 4, 0x1FF);
        apic.Write(LocalApic.RegTimerDivide, 4, 0xA);      // ÷128
        apic.Write(LocalApic.RegLvtTimer, 4, 0x30);
        apic.Write(LocalApic.RegTimerInitialCount, 4, uint.MaxValue);
        long expected = (long)uint.MaxValue * 128 * LocalApic.MaxBusCycleNs;
        Assert.Equal(expected, apic.NextDeadlineNs);
        clock.NowNs = expected / 2;
        Assert.Equal(uint.MaxValue - (uint)(expected / 2 / (128 * LocalApic.MaxBusCycleNs)), (uint)apic.Read(LocalApic.RegTimerCurrentCount, 4));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(LocalApic.MaxBusCycleNs + 1)]
    public void Bus_cycles_that_could_overflow_the_timer_are_refused(long busCycleNs)
        => Assert.Throws<ArgumentOutOfRangeException>(() => new LocalApic(0, 0, new ManualClock(), true, busCycleNs));
}
