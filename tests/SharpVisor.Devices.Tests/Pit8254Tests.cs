using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Pit;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>8254 behaviour through ports 0x40–0x43 and 0x61 (Intel 8254 datasheet; Linux and SeaBIOS sequences).</summary>
public sealed class Pit8254Tests
{
    private const int Control = 3;
    private const byte StatusOut = 0x80, StatusNullCount = 0x40;

    private readonly ManualClock _clock = new();
    private readonly NullIrqLine _irq0 = new();
    private readonly Pit8254 _pit;

    public Pit8254Tests() => _pit = new Pit8254(_clock, _irq0);

    private void Out(int port, byte value) => _pit.Write((ulong)port, 1, value);
    private byte In(int port) => (byte)_pit.Read((ulong)port, 1);
    private void Out61(byte value) => _pit.SpeakerPort.Write(0, 1, value);
    private byte In61() => (byte)_pit.SpeakerPort.Read(0, 1);

    /// <summary>Moves the clock to the instant input clock <paramref name="tick"/> has elapsed.</summary>
    private void AtTick(long tick) => _clock.NowNs = Pit8254.NsAtTick(tick);

    private void LoadLoHi(int counter, int count)
    {
        Out(counter, (byte)count);
        Out(counter, (byte)(count >> 8));
    }

    /// <summary>Read-back command for one counter's status byte.</summary>
    private byte Status(int counter)
    {
        Out(Control, (byte)(0xE0 | (2 << counter)));
        return In(counter);
    }

    /// <summary>Counter latch command, then LSB and MSB (counter programmed for LSB/MSB access).</summary>
    private int Latched(int counter)
    {
        Out(Control, (byte)(counter << 6));
        int lo = In(counter);
        return lo | In(counter) << 8;
    }

    private bool Out2 => (In61() & 0x20) != 0;

    [Fact]
    public void TickConversion()
    {
        Assert.Equal(1_193_182, Pit8254.TickAt(1_000_000_000));
        Assert.Equal(1_000_000_000, Pit8254.NsAtTick(1_193_182));
        for (long t = 0; t < 5000; t += 7) Assert.Equal(t, Pit8254.TickAt(Pit8254.NsAtTick(t)));
    }

    [Fact]
    public void ControlPortReadsFloatHigh() => Assert.Equal(0xFF, In(Control));

    [Fact]
    public void Mode0RaisesIrq0NPlusOneClocksAfterTheCountWrite()
    {
        Out(Control, 0x30); // counter 0, LSB/MSB, mode 0, binary (Linux pit_shutdown/oneshot style)
        Assert.False(_irq0.Level);
        LoadLoHi(0, 100);
        Assert.Equal(Pit8254.NsAtTick(101), _pit.NextDeadlineNs);
        AtTick(100);
        _pit.OnTime(_clock.NowNs);
        Assert.False(_irq0.Level);
        Assert.Equal(0, Status(0) & StatusOut);
        AtTick(101);
        _pit.OnTime(_clock.NowNs);
        Assert.True(_irq0.Level);
        Assert.Equal(1, _irq0.RisingEdges);
        Assert.Equal(StatusOut, Status(0) & StatusOut);
        Assert.Equal(long.MaxValue, _pit.NextDeadlineNs); // one shot
        Assert.Equal(0, Latched(0));
        AtTick(102);
        Assert.Equal(0xFFFF, Latched(0)); // keeps counting (wraps)
        Assert.True(_irq0.Level); // OUT stays high
    }

    [Fact]
    public void Mode0CountsDownOnePerClock()
    {
        Out(Control, 0x30);
        LoadLoHi(0, 100);
        AtTick(1);
        Assert.Equal(100, Latched(0));
        AtTick(11);
        Assert.Equal(90, Latched(0));
        // Unlatched LSB/MSB reads alternate and see the live count.
        AtTick(21);
        Assert.Equal(80, In(0));
        Assert.Equal(0, In(0));
    }

    [Fact]
    public void Mode0FirstByteStopsCountingSecondReloads()
    {
        Out(Control, 0x30);
        LoadLoHi(0, 1000);
        AtTick(11);
        Out(0, 50); // LSB: counting stops, OUT low
        AtTick(100);
        Assert.Equal(990, Latched(0));
        Out(0, 0); // MSB: count 50 loads on the next clock
        AtTick(101);
        Assert.Equal(50, Latched(0));
        AtTick(150);
        Assert.Equal(0, Status(0) & StatusOut);
        AtTick(151);
        Assert.Equal(StatusOut, Status(0) & StatusOut);
    }

    /// <summary>
    /// Linux's sequence as it happens in a running VM: channel 2 used for calibration first, then
    /// channel 0 programmed for HZ = 250 minutes after the machine started, with the machine
    /// servicing the PIT whenever its deadline has passed. Every period must give an edge.
    /// </summary>
    [Theory]
    [InlineData(0L)]
    [InlineData(206_654_470_000_000L)]
    public void Mode2PeriodicEdgesLongAfterStart(long startNs)
    {
        _clock.NowNs = startNs;
        Out61(0x01);
        Out(Control, 0xB0);
        Out(2, 0xFF); Out(2, 0xFF);
        _clock.NowNs += 3_748_000_000;
        Out(Control, 0x34);
        LoadLoHi(0, 4773);
        int baseline = _irq0.RisingEdges;
        long end = _clock.NowNs + 100_000_000;
        while (_clock.NowNs < end)
        {
            long deadline = _pit.NextDeadlineNs;
            Assert.NotEqual(long.MaxValue, deadline);
            _clock.NowNs = Math.Max(_clock.NowNs + 50_000, deadline);
            _pit.OnTime(_clock.NowNs);
        }
        // 100 ms at 1193182 Hz / 4773 = 25 periods.
        Assert.InRange(_irq0.RisingEdges - baseline, 24, 26);
    }

    /// <summary>A host clock moves between reads; this one moves one nanosecond per read.</summary>
    private sealed class TickingClock : IClock
    {
        private long _ns;
        public long NowNs => ++_ns + Base;
        public long Base;
        public DateTime StartWallTime => DateTime.UnixEpoch;
    }

    /// <summary>
    /// A machine that takes the time and then asks for the deadline must find an overdue edge due.
    /// (The PIT once answered "due at the clock's current reading", always later than the caller's
    /// time, so with a real clock IRQ0 never fired again and Linux's timer check panicked.)
    /// </summary>
    [Fact]
    public void AnOverdueEdgeIsDueForACallerThatReadTheClockFirst()
    {
        var clock = new TickingClock();
        var irq = new NullIrqLine();
        var pit = new Pit8254(clock, irq);
        pit.Write(Control, 1, 0x34);
        pit.Write(0, 1, 100); pit.Write(0, 1, 0);
        clock.Base += 1_000_000; // about 12 periods later
        long now = clock.NowNs;
        Assert.True(pit.NextDeadlineNs <= now);
        int before = irq.RisingEdges;
        pit.OnTime(now);
        Assert.Equal(before + 1, irq.RisingEdges);
    }

    [Fact]
    public void Mode2PeriodicIrq0LikeLinuxHz1000()
    {
        const int latch = 1193; // (1193182 + HZ/2) / HZ
        Out(Control, 0x34);
        LoadLoHi(0, latch);
        int baseline = _irq0.RisingEdges; // OUT went high with the mode-2 control word
        long expectedEdgeTick = 1 + latch;
        for (int k = 1; k <= 10; k++)
        {
            Assert.Equal(Pit8254.NsAtTick(expectedEdgeTick), _pit.NextDeadlineNs);
            _clock.NowNs = _pit.NextDeadlineNs;
            _pit.OnTime(_clock.NowNs);
            Assert.Equal(baseline + k, _irq0.RisingEdges);
            expectedEdgeTick += latch;
        }
    }

    [Fact]
    public void Mode2OutIsLowForOneClockAtCountOne()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 10);
        AtTick(9);
        Assert.Equal(2, Latched(0));
        Assert.Equal(StatusOut, Status(0) & StatusOut);
        AtTick(10);
        Assert.Equal(1, Latched(0));
        Assert.Equal(0, Status(0) & StatusOut);
        AtTick(11);
        Assert.Equal(10, Latched(0)); // reloaded
        Assert.Equal(StatusOut, Status(0) & StatusOut);
    }

    [Fact]
    public void SeaBiosTimerIs18Point2Hz()
    {
        // SeaBIOS timer_setup: mode 2, count 0 (65536).
        Out(Control, 0x34);
        Out(0, 0);
        Out(0, 0);
        Assert.Equal(Pit8254.NsAtTick(1 + 65536), _pit.NextDeadlineNs);
        Assert.InRange(_pit.NextDeadlineNs, 54_926_000, 54_927_000); // 65537 clocks / 1.193182 MHz
    }

    [Fact]
    public void LateOnTimeCoalescesMissedPeriodsIntoOneEdge()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 100);
        int baseline = _irq0.RisingEdges;
        AtTick(1 + 350);
        Assert.True(_pit.NextDeadlineNs <= _clock.NowNs); // an edge is overdue
        _pit.OnTime(_clock.NowNs);
        Assert.Equal(baseline + 1, _irq0.RisingEdges);
        Assert.Equal(Pit8254.NsAtTick(1 + 400), _pit.NextDeadlineNs);
        AtTick(1 + 400);
        _pit.OnTime(_clock.NowNs);
        Assert.Equal(baseline + 2, _irq0.RisingEdges);
    }

    [Fact]
    public void Mode2NewCountTakesEffectAtTheEndOfThePeriod()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 100);
        AtTick(50);
        LoadLoHi(0, 40);
        Assert.Equal(StatusNullCount, Status(0) & StatusNullCount);
        AtTick(100);
        Assert.Equal(1, Latched(0)); // the old period runs to its end
        AtTick(101);
        Assert.Equal(40, Latched(0));
        Assert.Equal(0, Status(0) & StatusNullCount);
        _pit.OnTime(_clock.NowNs);
        Assert.Equal(Pit8254.NsAtTick(141), _pit.NextDeadlineNs);
    }

    [Fact]
    public void Mode3EvenCountSquareWave()
    {
        Out61(0x01);
        Out(Control, 0xB6); // counter 2, LSB/MSB, mode 3 (Linux PC speaker beep)
        LoadLoHi(2, 10);
        var outs = new List<bool>();
        var values = new List<int>();
        for (long t = 1; t <= 20; t++)
        {
            AtTick(t);
            outs.Add(Out2);
            values.Add(Latched(2));
        }
        Assert.Equal([true, true, true, true, true, false, false, false, false, false,
            true, true, true, true, true, false, false, false, false, false], outs);
        Assert.Equal([10, 8, 6, 4, 2, 10, 8, 6, 4, 2, 10, 8, 6, 4, 2, 10, 8, 6, 4, 2], values);
    }

    [Fact]
    public void Mode3OddCountIsHighOneClockLonger()
    {
        Out61(0x01);
        Out(Control, 0xB6);
        LoadLoHi(2, 5);
        var outs = new List<bool>();
        var values = new List<int>();
        for (long t = 1; t <= 10; t++)
        {
            AtTick(t);
            outs.Add(Out2);
            values.Add(Latched(2));
        }
        Assert.Equal([true, true, true, false, false, true, true, true, false, false], outs);
        Assert.Equal([5, 4, 2, 5, 2, 5, 4, 2, 5, 2], values);
    }

    [Fact]
    public void Mode4StrobeLikeLinuxOneshot()
    {
        Out(Control, 0x38); // Linux pit_set_oneshot
        LoadLoHi(0, 50);
        Assert.True(_irq0.Level); // OUT high in mode 4
        AtTick(51);
        Assert.Equal(0, Status(0) & StatusOut); // low for one clock at terminal count
        AtTick(52);
        Assert.Equal(StatusOut, Status(0) & StatusOut);
        Assert.Equal(1, _irq0.RisingEdges - 1); // one strobe edge after the initial rise
        Assert.Equal(long.MaxValue, _pit.NextDeadlineNs);
    }

    [Fact]
    public void Mode4DeadlineIsTheStrobeEnd()
    {
        Out(Control, 0x38);
        LoadLoHi(0, 50);
        Assert.Equal(Pit8254.NsAtTick(52), _pit.NextDeadlineNs);
    }

    [Fact]
    public void Mode1OneShotTriggeredByGate()
    {
        Out(Control, 0xB2); // counter 2, LSB/MSB, mode 1
        LoadLoHi(2, 20);
        AtTick(9);
        Assert.True(Out2);
        Assert.Equal(StatusNullCount, Status(2) & StatusNullCount); // waits for a trigger
        Out61(0x01); // GATE2 rising edge at tick 9
        AtTick(10);
        Assert.False(Out2);
        Assert.Equal(0, Status(2) & StatusNullCount);
        Assert.Equal(20, Latched(2));
        AtTick(29);
        Assert.False(Out2);
        AtTick(30);
        Assert.True(Out2);
        // Retriggerable: a new gate edge restarts the pulse.
        Out61(0x00);
        Out61(0x01);
        AtTick(31);
        Assert.False(Out2);
        AtTick(51);
        Assert.True(Out2);
    }

    [Fact]
    public void Mode5StrobeTriggeredByGate()
    {
        Out(Control, 0xBA); // counter 2, LSB/MSB, mode 5
        LoadLoHi(2, 10);
        AtTick(100);
        Assert.True(Out2); // nothing without a trigger
        AtTick(105);
        Out61(0x01); // trigger: counting starts on the next clock
        AtTick(115);
        Assert.True(Out2);
        AtTick(116);
        Assert.False(Out2); // strobe at terminal count
        AtTick(117);
        Assert.True(Out2);
    }

    [Fact]
    public void GateLowSuspendsMode0()
    {
        Out61(0x01);
        Out(Control, 0xB0);
        LoadLoHi(2, 100);
        AtTick(21);
        Assert.Equal(80, Latched(2));
        Out61(0x00);
        AtTick(50);
        Assert.Equal(80, Latched(2));
        Out61(0x01);
        AtTick(60);
        Assert.Equal(70, Latched(2));
        AtTick(129);
        Assert.False(Out2);
        AtTick(130);
        Assert.True(Out2);
    }

    [Fact]
    public void GateLowForcesMode2OutHighAndRisingEdgeReloads()
    {
        Out61(0x01);
        Out(Control, 0xB4);
        LoadLoHi(2, 10);
        AtTick(10);
        Assert.False(Out2);
        Out61(0x00);
        Assert.True(Out2);
        AtTick(20);
        Out61(0x01);
        AtTick(21);
        Assert.Equal(10, Latched(2));
        AtTick(29);
        Assert.True(Out2);
        AtTick(30);
        Assert.False(Out2);
    }

    [Fact]
    public void BcdCounting()
    {
        Out(Control, 0x31); // mode 0, BCD
        LoadLoHi(0, 0x0100);
        AtTick(1);
        Assert.Equal(0x0100, Latched(0));
        AtTick(2);
        Assert.Equal(0x0099, Latched(0));
        AtTick(101);
        Assert.Equal(0x0000, Latched(0));
        Assert.Equal(StatusOut | 0x31, Status(0));
        AtTick(102);
        Assert.Equal(0x9999, Latched(0)); // BCD wraps at 10000

        Out(Control, 0x31);
        LoadLoHi(0, 0); // 0 = 10000 in BCD
        AtTick(103);
        Assert.Equal(0x0000, Latched(0));
        AtTick(104);
        Assert.Equal(0x9999, Latched(0));
        Assert.Equal(Pit8254.NsAtTick(103 + 10000), _pit.NextDeadlineNs);
    }

    [Fact]
    public void LsbOnlyAndMsbOnlyAccess()
    {
        Out(Control, 0x10); // counter 0, LSB only, mode 0
        Out(0, 0x34);
        AtTick(1);
        Assert.Equal(0x34, In(0));
        Assert.Equal(0x34, In(0)); // no MSB phase
        Out(Control, 0x60); // counter 1, MSB only, mode 0
        Out(1, 0x12);
        AtTick(2);
        Assert.Equal(0x12, In(1));
        Out(Control, 0x40); // latch counter 1: one read releases it
        Assert.Equal(0x12, In(1));
        AtTick(300);
        Assert.Equal(0x10, In(1)); // 0x1200 − 298
    }

    [Fact]
    public void CounterLatchHoldsUntilRead()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 1000);
        AtTick(101);
        Out(Control, 0x00);
        AtTick(201);
        Out(Control, 0x00); // ignored: the first latch has not been read
        Assert.Equal(900, In(0) | In(0) << 8);
        Assert.Equal(800, Latched(0));
    }

    [Fact]
    public void ReadBackStatusAndNullCount()
    {
        Out(Control, 0x30);
        Assert.Equal(StatusNullCount | 0x30, Status(0)); // OUT low, null count, LSB/MSB, mode 0
        LoadLoHi(0, 100);
        Assert.Equal(StatusNullCount | 0x30, Status(0)); // count not in CE until the next clock
        AtTick(1);
        Assert.Equal(0x30, Status(0));
        Out(Control, 0x7A); // counter 1, LSB/MSB, mode 5
        Assert.Equal(StatusOut | StatusNullCount | 0x3A, Status(1));
    }

    [Fact]
    public void ReadBackCountAndStatusTogether()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 500);
        Out(Control, 0x74);
        LoadLoHi(1, 300);
        AtTick(101);
        Out(Control, 0xC6); // count and status of counters 0 and 1
        AtTick(201);
        Assert.Equal(StatusOut | 0x34, In(0)); // status first
        Assert.Equal(400, In(0) | In(0) << 8);
        Assert.Equal(StatusOut | 0x34, In(1));
        Assert.Equal(200, In(1) | In(1) << 8);
        Assert.Equal(100, In(1) | In(1) << 8); // latches released: live count
    }

    [Fact]
    public void LinuxPitCalibrateTsc()
    {
        // arch/x86/kernel/tsc.c pit_calibrate_tsc(latch = CAL_LATCH, ms = 10).
        const int latch = 1193182 / (1000 / 10);
        AtTick(12345);
        Out61((byte)((In61() & ~0x02) | 0x01)); // gate high, speaker off
        Out(Control, 0xB0); // counter 2, mode 0, LSB/MSB, binary
        Out(2, latch & 0xFF);
        Out(2, latch >> 8);
        long start = _clock.NowNs;
        int polls = 0;
        while ((In61() & 0x20) == 0)
        {
            _clock.Advance(1000); // ~1 µs per IN instruction
            Assert.True(++polls < 20_000);
        }
        long elapsed = _clock.NowNs - start;
        // OUT2 rises latch + 1 clocks of the 1.193182 MHz input after the count was written (mode 0:
        // one clock to load N, then N counts), seen at the next 1 µs poll; ±1 ns for both ends
        // falling on whole nanoseconds.
        double expected = (latch + 1) * 1e9 / 1_193_182;
        Assert.InRange((double)elapsed, expected - 1, expected + 1000 + 1);
        Assert.InRange(elapsed, 9_990_000, 10_010_000);
        Assert.Equal(0x01, In61() & 0x03);
    }

    [Fact]
    public void LinuxQuickPitCalibrate()
    {
        // arch/x86/kernel/tsc.c quick_pit_calibrate: counter 2 from 0xffff, watch the MSB fall.
        Out61((byte)((In61() & ~0x02) | 0x01));
        Out(Control, 0xB0);
        Out(2, 0xFF);
        Out(2, 0xFF);
        // pit_verify_msb(0): one 16-bit read (LSB then MSB) as the delay before counting.
        In(2);
        In(2);
        for (int i = 0; i < 200; i++)
        {
            // pit_expect_msb(0xff - i): the MSB holds 0xff - i for 256 clocks.
            AtTick(1 + 256L * i + 128);
            In(2); // LSB
            Assert.Equal(0xFF - i, In(2));
        }
    }

    [Fact]
    public void SeaBiosCalibrateTsc()
    {
        // SeaBIOS calibrate_tsc: CALIBRATE_COUNT 0x800 on counter 2, poll PPCB_T2OUT.
        byte orig = In61();
        Out61((byte)((orig & ~0x02) | 0x01));
        Out(Control, 0xB0);
        Out(2, 0x00);
        Out(2, 0x08);
        long ticks = 0;
        while ((In61() & 0x20) == 0)
        {
            ticks++;
            AtTick(ticks);
        }
        Assert.Equal(0x800 + 1, ticks);
    }

    [Fact]
    public void Port61BitsAndRefreshToggle()
    {
        Out61(0x03);
        Assert.Equal(0x03, In61() & 0x0F);
        Assert.True(_pit.SpeakerEnabled);
        Out61(0xFC); // bits 4–7 are read-only
        Assert.Equal(0x0C, In61() & 0x0F);
        Assert.False(_pit.SpeakerEnabled);
        _clock.NowNs = 0;
        int r0 = In61() & 0x10;
        _clock.NowNs = 15_085;
        int r1 = In61() & 0x10;
        _clock.NowNs = 30_170;
        int r2 = In61() & 0x10;
        Assert.NotEqual(r0, r1);
        Assert.Equal(r0, r2);
        Assert.Equal(0xFFUL, _pit.SpeakerPort.Read(1, 1));
    }

    [Fact]
    public void ControlWordSetsInitialOut()
    {
        Out61(0x01);
        Out(Control, 0xB4); // mode 2: OUT high
        Assert.True(Out2);
        Out(Control, 0xB0); // mode 0: OUT low
        Assert.False(Out2);
        Out(Control, 0xB6); // mode 3: OUT high
        Assert.True(Out2);
    }

    [Fact]
    public void StateRoundTrip()
    {
        Out(Control, 0x34);
        LoadLoHi(0, 1000);
        AtTick(301);
        var copy = new Pit8254(_clock, new NullIrqLine()) { State = _pit.State };
        Assert.Equal(700, Latched(0));
        copy.Write(Control, 1, 0x00);
        Assert.Equal(700UL, copy.Read(0, 1) | copy.Read(0, 1) << 8);
        Assert.Equal(_pit.NextDeadlineNs, copy.NextDeadlineNs);
    }
}
