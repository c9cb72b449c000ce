using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Acpi;

using Xunit;

namespace SharpVisor.Devices.Tests;

public class AcpiPmTests
{
    private const long S = 1_000_000_000;

    private sealed class Rig
    {
        public readonly ManualClock Clock = new();
        public readonly NullIrqLine Sci = new();
        public int PowerOffs;
        public readonly AcpiPm Pm;
        public Rig(int s5 = 5) => Pm = new AcpiPm(Clock, Sci, () => PowerOffs++, s5);
    }

    [Fact]
    public void PmTimerCountsAt3579545HzAndWrapsAt24Bits()
    {
        var r = new Rig();
        Assert.Equal(0UL, r.Pm.Timer.Read(0, 4));
        r.Clock.NowNs = S;
        Assert.Equal(3_579_545UL, r.Pm.Timer.Read(0, 4));
        r.Clock.NowNs = 5 * S;
        Assert.Equal((ulong)((5 * 3_579_545L) & 0xFF_FFFF), r.Pm.Timer.Read(0, 4));
        r.Clock.NowNs = 1000; // 3.58 ticks
        Assert.Equal(3UL, r.Pm.Timer.Read(0, 4));
        r.Pm.Timer.Write(0, 4, 0); // read-only
        Assert.Equal(3UL, r.Pm.Timer.Read(0, 4));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(0)]
    public void SleepEnableWithS5TypePowersOff(int s5)
    {
        var r = new Rig(s5);
        int otherType = s5 == 0 ? 1 : 0;
        r.Pm.ControlBlock.Write(0, 2, (ulong)((otherType << 10) | 0x2000 | 1));
        Assert.Equal(0, r.PowerOffs);
        r.Pm.ControlBlock.Write(0, 2, (ulong)(s5 << 10)); // SLP_TYP alone does nothing
        Assert.Equal(0, r.PowerOffs);
        r.Pm.ControlBlock.Write(0, 2, (ulong)((s5 << 10) | 0x2000 | 1));
        Assert.Equal(1, r.PowerOffs);
        Assert.Equal(0UL, r.Pm.ControlBlock.Read(0, 2) & 0x2000); // SLP_EN reads 0
        Assert.Equal((ulong)(s5 << 10), r.Pm.ControlBlock.Read(0, 2) & 0x1C00);
    }

    [Fact]
    public void SciEnabledFromReset()
    {
        var r = new Rig();
        Assert.Equal(1UL, r.Pm.ControlBlock.Read(0, 2) & 1);
    }

    [Fact]
    public void PowerButtonStatusRaisesSciWhenEnabledAndClearsByWritingOne()
    {
        var r = new Rig();
        r.Pm.PressPowerButton();
        Assert.False(r.Sci.Level);
        Assert.Equal((ulong)AcpiPm.PwrBtnSts, r.Pm.EventBlock.Read(0, 2) & AcpiPm.PwrBtnSts);
        r.Pm.EventBlock.Write(2, 2, AcpiPm.PwrBtnEn);
        Assert.True(r.Sci.Level);
        Assert.Equal((ulong)AcpiPm.PwrBtnEn, r.Pm.EventBlock.Read(2, 2));
        r.Pm.EventBlock.Write(0, 2, 0); // writing 0 changes nothing
        Assert.True(r.Sci.Level);
        r.Pm.EventBlock.Write(0, 2, AcpiPm.PwrBtnSts);
        Assert.False(r.Sci.Level);
        Assert.Equal(0UL, r.Pm.EventBlock.Read(0, 2) & AcpiPm.PwrBtnSts);
    }

    [Fact]
    public void TimerOverflowSetsTmrStsAndRaisesSci()
    {
        var r = new Rig();
        r.Pm.EventBlock.Write(2, 2, AcpiPm.TmrEn);
        long deadline = r.Pm.NextDeadlineNs;
        // bit 23 first changes after 2^23 ticks ≈ 2.3435 s
        Assert.InRange(deadline, 2_343_484_000, 2_343_485_000); // 8388608 / 3579545 Hz
        r.Clock.NowNs = deadline - 1000;
        r.Pm.OnTime(r.Clock.NowNs);
        Assert.False(r.Sci.Level);
        r.Clock.NowNs = deadline;
        r.Pm.OnTime(deadline);
        Assert.True(r.Sci.Level);
        Assert.Equal(1UL, r.Pm.EventBlock.Read(0, 2) & 1);
        r.Pm.EventBlock.Write(0, 2, AcpiPm.TmrSts);
        Assert.False(r.Sci.Level);
        Assert.True(r.Pm.NextDeadlineNs > deadline);
    }

    [Fact]
    public void DwordAccessToTheEventBlockCoversStatusAndEnable()
    {
        var r = new Rig();
        r.Pm.PressPowerButton();
        r.Pm.EventBlock.Write(0, 4, (ulong)AcpiPm.PwrBtnEn << 16);
        Assert.Equal(((ulong)AcpiPm.PwrBtnEn << 16) | AcpiPm.PwrBtnSts, r.Pm.EventBlock.Read(0, 4));
        Assert.True(r.Sci.Level);
    }
}
