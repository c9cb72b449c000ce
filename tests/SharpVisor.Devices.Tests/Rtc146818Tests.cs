using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Rtc;

using Xunit;

namespace SharpVisor.Devices.Tests;

public class Rtc146818Tests
{
    private const long Ms = 1_000_000, S = 1_000_000_000;

    // 2026-03-14 (a Saturday) 15:09:26.000 UTC
    private static readonly DateTime Start = new(2026, 3, 14, 15, 9, 26, DateTimeKind.Utc);

    private static (Rtc146818 rtc, ManualClock clock, NullIrqLine irq) Make(DateTime? start = null)
    {
        var clock = new ManualClock(start ?? Start);
        var irq = new NullIrqLine();
        return (new Rtc146818(clock, irq), clock, irq);
    }

    private static byte Get(Rtc146818 rtc, int index)
    {
        rtc.Write(0, 1, (ulong)index);
        return (byte)rtc.Read(1, 1);
    }

    private static void Set(Rtc146818 rtc, int index, byte value)
    {
        rtc.Write(0, 1, (ulong)index);
        rtc.Write(1, 1, value);
    }

    [Fact]
    public void ReadsStartTimeInBcd()
    {
        var (rtc, _, _) = Make();
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        Assert.Equal(0x09, Get(rtc, Rtc146818.Minutes));
        Assert.Equal(0x15, Get(rtc, Rtc146818.Hours));
        Assert.Equal(7, Get(rtc, Rtc146818.DayOfWeek)); // Saturday, Sunday = 1
        Assert.Equal(0x14, Get(rtc, Rtc146818.DayOfMonth));
        Assert.Equal(0x03, Get(rtc, Rtc146818.Month));
        Assert.Equal(0x26, Get(rtc, Rtc146818.Year));
        Assert.Equal(0x20, Get(rtc, Rtc146818.Century));
        Assert.Equal(0x02, Get(rtc, Rtc146818.RegB)); // 24-hour, BCD after power-on
    }

    [Fact]
    public void BinaryModeAnd12HourMode()
    {
        var (rtc, _, _) = Make();
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBDm | Rtc146818.RegB24h);
        Assert.Equal(26, Get(rtc, Rtc146818.Seconds));
        Assert.Equal(15, Get(rtc, Rtc146818.Hours));
        Assert.Equal(26, Get(rtc, Rtc146818.Year));
        Assert.Equal(20, Get(rtc, Rtc146818.Century));

        Set(rtc, Rtc146818.RegB, 0); // BCD, 12-hour: 15h is 3 PM
        Assert.Equal(0x83, Get(rtc, Rtc146818.Hours));
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBDm); // binary, 12-hour
        Assert.Equal(0x83, Get(rtc, Rtc146818.Hours));
    }

    [Fact]
    public void TwelveHourModeMidnightAndNoon()
    {
        var (rtc, _, _) = Make(new DateTime(2026, 1, 1, 0, 30, 0, DateTimeKind.Utc));
        Set(rtc, Rtc146818.RegB, 0);
        Assert.Equal(0x12, Get(rtc, Rtc146818.Hours)); // 12 AM
        Set(rtc, Rtc146818.Hours, 0x92);                // 12 PM
        Set(rtc, Rtc146818.RegB, Rtc146818.RegB24h);
        Assert.Equal(0x12, Get(rtc, Rtc146818.Hours));
    }

    [Fact]
    public void TimeFollowsTheClockFromAFractionalStart()
    {
        var (rtc, clock, _) = Make(Start.AddMilliseconds(600));
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        clock.Advance(399 * Ms);
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        clock.Advance(1 * Ms);
        Assert.Equal(0x27, Get(rtc, Rtc146818.Seconds));
        clock.Advance(3600 * S);
        Assert.Equal(0x16, Get(rtc, Rtc146818.Hours));
        Assert.Equal(0x27, Get(rtc, Rtc146818.Seconds));
    }

    [Fact]
    public void CalendarRollsOverYearAndCentury()
    {
        var (rtc, clock, _) = Make(new DateTime(2099, 12, 31, 23, 59, 59, DateTimeKind.Utc));
        clock.Advance(S);
        Assert.Equal(0x00, Get(rtc, Rtc146818.Year));
        Assert.Equal(0x21, Get(rtc, Rtc146818.Century));
        Assert.Equal(0x01, Get(rtc, Rtc146818.Month));
        Assert.Equal(0x01, Get(rtc, Rtc146818.DayOfMonth));
    }

    [Fact]
    public void UpdateInProgressIsSetOnlyInTheWindowBeforeTheSecondChanges()
    {
        var (rtc, clock, _) = Make();
        Assert.Equal(0, Get(rtc, Rtc146818.RegA) & 0x80);
        clock.NowNs = S - Rtc146818.UipWindowNs - 1000;
        Assert.Equal(0, Get(rtc, Rtc146818.RegA) & 0x80);
        Assert.Equal(0x26, Get(rtc, Rtc146818.RegA) & 0x7F); // divider and rate as programmed
        clock.NowNs = S - Rtc146818.UipWindowNs;
        Assert.Equal(0x80, Get(rtc, Rtc146818.RegA) & 0x80);
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds)); // old time until the update completes
        clock.NowNs = S;
        Assert.Equal(0, Get(rtc, Rtc146818.RegA) & 0x80);
        Assert.Equal(0x27, Get(rtc, Rtc146818.Seconds));
    }

    [Fact]
    public void SetBitFreezesTimeAndWrittenTimeRunsOnAfterwards()
    {
        var (rtc, clock, _) = Make();
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBSet | Rtc146818.RegB24h);
        clock.Advance(5 * S + 100 * Ms);
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        Assert.Equal(0, Get(rtc, Rtc146818.RegA) & 0x80); // no UIP while SET
        Set(rtc, Rtc146818.Seconds, 0x58);
        Set(rtc, Rtc146818.Minutes, 0x59);
        Set(rtc, Rtc146818.Hours, 0x23);
        Set(rtc, Rtc146818.DayOfMonth, 0x28);
        Set(rtc, Rtc146818.Month, 0x02);
        Set(rtc, Rtc146818.Year, 0x24);
        Set(rtc, Rtc146818.RegB, Rtc146818.RegB24h);
        clock.Advance(S);
        Assert.Equal(0x59, Get(rtc, Rtc146818.Seconds));
        clock.Advance(S);
        Assert.Equal(0x00, Get(rtc, Rtc146818.Seconds));
        Assert.Equal(0x29, Get(rtc, Rtc146818.DayOfMonth)); // 2024 is a leap year
        Assert.Equal(new DateTime(2024, 2, 29, 0, 0, 0), rtc.CurrentTime);
    }

    [Fact]
    public void DividerResetStopsTimeAndFirstUpdateComesHalfASecondLater()
    {
        var (rtc, clock, _) = Make();
        Set(rtc, Rtc146818.RegA, 0x70); // divider reset
        clock.Advance(10 * S);
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        Set(rtc, Rtc146818.RegA, 0x26);
        clock.Advance(499 * Ms);
        Assert.Equal(0x26, Get(rtc, Rtc146818.Seconds));
        clock.Advance(1 * Ms);
        Assert.Equal(0x27, Get(rtc, Rtc146818.Seconds));
    }

    /// <summary>Runs the clock to <paramref name="until"/> as the machine would, acknowledging each IRQ like a handler.</summary>
    private static int CountInterrupts(Rtc146818 rtc, ManualClock clock, NullIrqLine irq, long until, byte expectFlag)
    {
        int count = 0;
        while (rtc.NextDeadlineNs <= until)
        {
            long d = rtc.NextDeadlineNs;
            Assert.True(d > clock.NowNs);
            clock.NowNs = d;
            rtc.OnTime(d);
            if (irq.Level)
            {
                count++;
                byte c = Get(rtc, Rtc146818.RegC);
                Assert.Equal(0x80, c & 0x80);
                Assert.Equal(expectFlag, c & expectFlag);
                Assert.False(irq.Level);
            }
        }
        clock.NowNs = until;
        return count;
    }

    [Theory]
    [InlineData(6, 1024)]
    [InlineData(3, 8192)]
    [InlineData(1, 256)]
    [InlineData(15, 2)]
    public void PeriodicInterruptRate(int rs, int perSecond)
    {
        var (rtc, clock, irq) = Make();
        Set(rtc, Rtc146818.RegA, (byte)(0x20 | rs));
        Get(rtc, Rtc146818.RegC);
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBPie | Rtc146818.RegB24h);
        int n = CountInterrupts(rtc, clock, irq, 2 * S, Rtc146818.RegCPf);
        Assert.Equal(2 * perSecond, n);
    }

    [Fact]
    public void PeriodicFlagIsSetWithoutPieButNoInterrupt()
    {
        var (rtc, clock, irq) = Make();
        Get(rtc, Rtc146818.RegC);
        Assert.Equal(long.MaxValue, rtc.NextDeadlineNs);
        clock.Advance(10 * Ms);
        Assert.Equal(Rtc146818.RegCPf, Get(rtc, Rtc146818.RegC)); // PF only: no IRQF without PIE, no UF yet
        Assert.Equal(0, irq.RisingEdges);
    }

    [Fact]
    public void AlarmInterruptFiresAtTheAlarmTime()
    {
        var (rtc, clock, irq) = Make();
        Set(rtc, Rtc146818.SecondsAlarm, 0x29);
        Set(rtc, Rtc146818.MinutesAlarm, 0x09);
        Set(rtc, Rtc146818.HoursAlarm, 0x15);
        Get(rtc, Rtc146818.RegC);
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBAie | Rtc146818.RegB24h);
        clock.NowNs = 2 * S;
        rtc.OnTime(clock.NowNs);
        Assert.False(irq.Level);
        Assert.Equal(3 * S, rtc.NextDeadlineNs);
        clock.NowNs = 3 * S;
        rtc.OnTime(clock.NowNs);
        Assert.True(irq.Level);
        byte c = Get(rtc, Rtc146818.RegC);
        Assert.Equal(Rtc146818.RegCIrqf | Rtc146818.RegCPf | Rtc146818.RegCAf | Rtc146818.RegCUf, c); // PF: the 1024 Hz default rate runs
        Assert.False(irq.Level);
    }

    [Fact]
    public void AlarmDontCareBytesMatchEveryMinute()
    {
        var (rtc, clock, irq) = Make();
        Set(rtc, Rtc146818.SecondsAlarm, 0x00);
        Set(rtc, Rtc146818.MinutesAlarm, 0xC0);
        Set(rtc, Rtc146818.HoursAlarm, 0xFF);
        Get(rtc, Rtc146818.RegC);
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBAie | Rtc146818.RegB24h);
        int n = CountInterrupts(rtc, clock, irq, 180 * S, Rtc146818.RegCAf);
        Assert.Equal(3, n); // 15:10:00, 15:11:00, 15:12:00
    }

    [Fact]
    public void AlarmMatchedDuringALongGapIsNotLost()
    {
        var (rtc, clock, _) = Make();
        Set(rtc, Rtc146818.SecondsAlarm, 0x00);
        Set(rtc, Rtc146818.MinutesAlarm, 0x00);
        Set(rtc, Rtc146818.HoursAlarm, 0x03); // 03:00:00, twelve hours later
        Get(rtc, Rtc146818.RegC);
        clock.Advance(13 * 3600 * S);
        Assert.Equal(Rtc146818.RegCAf, Get(rtc, Rtc146818.RegC) & Rtc146818.RegCAf);
    }

    [Fact]
    public void UpdateEndedInterruptEverySecond()
    {
        var (rtc, clock, irq) = Make();
        Get(rtc, Rtc146818.RegC);
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBUie | Rtc146818.RegB24h);
        int n = CountInterrupts(rtc, clock, irq, 5 * S, Rtc146818.RegCUf);
        Assert.Equal(5, n);
    }

    [Fact]
    public void EnablingAnInterruptWithItsFlagAlreadySetRaisesIrq()
    {
        var (rtc, clock, irq) = Make();
        clock.Advance(S); // UF now set
        Set(rtc, Rtc146818.RegB, Rtc146818.RegBUie | Rtc146818.RegB24h);
        Assert.True(irq.Level);
        Get(rtc, Rtc146818.RegC);
        Assert.False(irq.Level);
        Assert.Equal(0, Get(rtc, Rtc146818.RegC)); // read cleared everything
    }

    [Fact]
    public void RegisterDReportsValidRamAndTime()
    {
        var (rtc, _, _) = Make();
        Assert.Equal(0x80, Get(rtc, Rtc146818.RegD));
        Set(rtc, Rtc146818.RegD, 0x00);
        Assert.Equal(0x80, Get(rtc, Rtc146818.RegD));
    }

    [Fact]
    public void NvramBytesAndNmiMask()
    {
        var (rtc, _, _) = Make();
        Set(rtc, 0x40, 0x5A);
        Assert.Equal(0x5A, Get(rtc, 0x40));
        rtc.Write(0, 1, 0x80 | 0x40);
        Assert.True(rtc.NmiMasked);
        Assert.Equal(0x5AUL, rtc.Read(1, 1));
        rtc.Write(0, 1, 0x40);
        Assert.False(rtc.NmiMasked);
        rtc.SetNvram(Rtc146818.ShutdownStatus, 0x0A);
        Assert.Equal(0x0A, Get(rtc, 0x0F));
        Assert.Equal(0xFFUL, rtc.Read(0, 1)); // index register is write-only
    }

    [Fact]
    public void MemorySizeFieldsFollowTheAtBiosLayout()
    {
        var (rtc, _, _) = Make();
        rtc.SetMemorySize(512UL << 20, 1UL << 30);
        Assert.Equal(0x80, Get(rtc, 0x15));
        Assert.Equal(0x02, Get(rtc, 0x16)); // 640 KiB
        Assert.Equal(0xFF, Get(rtc, 0x17));
        Assert.Equal(0xFF, Get(rtc, 0x18)); // capped at 0xFFFF KiB
        Assert.Equal(0xFF, Get(rtc, 0x30));
        Assert.Equal(0xFF, Get(rtc, 0x31));
        Assert.Equal(0x00, Get(rtc, 0x34));
        Assert.Equal(0x1F, Get(rtc, 0x35)); // (512 − 16) MiB / 64 KiB = 0x1F00
        Assert.Equal(0x00, Get(rtc, 0x5B));
        Assert.Equal(0x40, Get(rtc, 0x5C));
        Assert.Equal(0x00, Get(rtc, 0x5D)); // 1 GiB / 64 KiB = 0x4000

        rtc.SetMemorySize(32UL << 20, 0);
        Assert.Equal(31 * 1024, Get(rtc, 0x17) | Get(rtc, 0x18) << 8);
    }

    [Fact]
    public void CenturyByteWriteChangesTheYear()
    {
        var (rtc, _, _) = Make();
        Set(rtc, Rtc146818.Century, 0x19);
        Assert.Equal(0x19, Get(rtc, Rtc146818.Century));
        Assert.Equal(1926, rtc.CurrentTime.Year);
    }

    [Fact]
    public void DayOfWeekIsAnIndependentCounter()
    {
        var (rtc, clock, _) = Make(new DateTime(2026, 3, 14, 23, 59, 59, DateTimeKind.Utc));
        Set(rtc, Rtc146818.DayOfWeek, 0x02);
        clock.Advance(S);
        Assert.Equal(0x03, Get(rtc, Rtc146818.DayOfWeek));
    }
}
