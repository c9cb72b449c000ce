// Spec: Intel 8254 Programmable Interval Timer datasheet (231164): counter modes 0–5, GATE
// behaviour per mode, count loading ("on the next CLK pulse"), BCD counting, counter latch,
// read-back status byte and the NULL COUNT flag.
//
// A counter is not stepped tick by tick: its count element (CE) and OUT are functions of the
// elapsed input clocks since the count was loaded, so time can jump by any amount. "Edges" counts
// the rising edges of OUT since the counter was last reconfigured, so a caller that looks late
// still sees that an edge happened.
//
// Deliberate deviations:
// - Mode 3 with a new count written while counting switches at the end of the current full period
//   (the datasheet: at the end of the current half-cycle).
// - Mode 1 retriggered while its pulse is running shows OUT high for the one clock before the reload.
// - Illegal counts (1 in modes 2 and 3, non-BCD digits in BCD mode) are accepted and counted with
//   the arithmetic below rather than reproducing the chip's exact misbehaviour.

namespace SharpVisor.Devices.Pit;

/// <summary>The state of one 8254 counter, for snapshots. Times are in input-clock ticks.</summary>
public struct PitCounterState
{
    /// <summary>M2–M0 as programmed (6 and 7 are modes 2 and 3).</summary>
    public byte ModeBits;
    /// <summary>RW1–RW0: 1 = LSB only, 2 = MSB only, 3 = LSB then MSB.</summary>
    public byte Access;
    public bool Bcd;
    public bool Gate;
    /// <summary>The count register (CR) as last written, in the programmed encoding.</summary>
    public ushort CountRegister;
    /// <summary>A complete count was written since the last control word.</summary>
    public bool HasCount;
    /// <summary>CE holds a count and follows the clock (for modes 1 and 5: has been triggered).</summary>
    public bool Counting;
    /// <summary>Tick at which CE was (or will be) loaded; elapsed = now − LoadTick.</summary>
    public long LoadTick;
    /// <summary>The count in CE as a number of clocks (1–65536, 1–10000 in BCD).</summary>
    public int Period;
    /// <summary>Modes 0 and 4 with GATE low: counting suspended at <see cref="PausedElapsed"/>.</summary>
    public bool Paused;
    public long PausedElapsed;
    /// <summary>OUT and the CE value (binary) while not counting.</summary>
    public bool OutIdle;
    public int IdleValue;
    /// <summary>Modes 2 and 3: a count written while counting, taking effect at <see cref="PendingTick"/>.</summary>
    public bool HasPendingCount;
    public int PendingPeriod;
    public long PendingTick;
    /// <summary>NULL COUNT is 1 until this tick (long.MaxValue: until a count is loaded).</summary>
    public long NullCountClearTick;
    public bool WriteMsbNext;
    public byte WriteLsb;
    public bool ReadMsbNext;
    public bool CountLatched, LatchedMsbNext;
    public ushort LatchedCount;
    public bool StatusLatched;
    public byte LatchedStatus;
    /// <summary>Rising OUT edges before the current configuration, and edges already signalled.</summary>
    public long EdgeBase, EdgesReported;
}

/// <summary>The behaviour of one 8254 counter, as functions over its state.</summary>
internal static class PitCounter
{
    private const int BinaryModulus = 65536, BcdModulus = 10000;

    public static void Init(ref PitCounterState c, bool gate)
    {
        c = default;
        c.Access = 3;
        c.Gate = gate;
        c.Period = BinaryModulus;
        c.NullCountClearTick = long.MaxValue;
    }

    public static int Mode(in PitCounterState c) => c.ModeBits >= 6 ? c.ModeBits - 4 : c.ModeBits;

    private static int Modulus(in PitCounterState c) => c.Bcd ? BcdModulus : BinaryModulus;

    private static long Mod(long a, long m) => ((a % m) + m) % m;

    /// <summary>The number of clocks a count register value stands for (0 means the maximum).</summary>
    public static int PeriodOf(in PitCounterState c, int cr)
    {
        if (!c.Bcd) return cr == 0 ? BinaryModulus : cr;
        int p = ((cr >> 12) & 0xF) * 1000 + ((cr >> 8) & 0xF) * 100 + ((cr >> 4) & 0xF) * 10 + (cr & 0xF);
        return p == 0 ? BcdModulus : p;
    }

    private static int ToBcd(int v) => (v / 1000 % 10) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10);

    private static long Elapsed(in PitCounterState c, long t) => c.Paused ? c.PausedElapsed : t - c.LoadTick;

    /// <summary>Applies a pending modes-2/3 count whose period boundary has passed.</summary>
    public static void Sync(ref PitCounterState c, long t)
    {
        if (!c.HasPendingCount || t < c.PendingTick) return;
        c.EdgeBase += EdgesSinceLoad(c, c.PendingTick);
        c.LoadTick = c.PendingTick;
        c.Period = Math.Max(1, c.PendingPeriod);
        c.HasPendingCount = false;
    }

    /// <summary>CE in binary (0–65535, 0–9999 in BCD mode).</summary>
    public static int Value(in PitCounterState c, long t)
    {
        if (!c.Counting) return c.IdleValue;
        long e = Elapsed(c, t);
        if (e < 0) return c.IdleValue;
        long p = c.Period, m = Modulus(c);
        switch (Mode(c))
        {
            case 2:
                return (int)Mod(p - e % p, m);
            case 3:
                {
                    long ph = e % p;
                    long v;
                    if ((p & 1) == 0)
                    {
                        // Even: CE counts down by two from N in each half.
                        long k = ph < p / 2 ? ph : ph - p / 2;
                        v = p - 2 * k;
                    }
                    else
                    {
                        // Odd: high half N, N−1, N−3, …; low half N, N−3, N−5, … ((N+1)/2 and (N−1)/2 clocks).
                        long high = (p + 1) / 2;
                        if (ph < high) v = ph == 0 ? p : p + 1 - 2 * ph;
                        else { long j = ph - high; v = j == 0 ? p : p - 1 - 2 * j; }
                    }
                    return (int)Mod(v, m);
                }
            default: // 0, 1, 4, 5: count down by one and wrap
                return (int)Mod(p - e, m);
        }
    }

    public static bool Out(in PitCounterState c, long t)
    {
        if (!c.Counting) return c.OutIdle;
        long e = Elapsed(c, t);
        long p = c.Period;
        switch (Mode(c))
        {
            case 0: return e >= p;
            case 1: return e < 0 || e >= p;
            case 2: return e < 0 || e % p != p - 1;
            case 3: return e < 0 || e % p < (p + 1) / 2;
            default: return e != p; // 4, 5: low for the one clock at terminal count
        }
    }

    /// <summary>Rising edges of OUT since the current configuration started.</summary>
    public static long EdgesSinceLoad(in PitCounterState c, long t)
    {
        if (!c.Counting) return 0;
        long e = Elapsed(c, t);
        if (e < 0) return 0;
        long p = c.Period;
        return Mode(c) switch
        {
            0 or 1 => e >= p ? 1 : 0,
            2 or 3 => e / p,
            _ => e >= p + 1 ? 1 : 0,
        };
    }

    public static long TotalEdges(in PitCounterState c, long t) => c.EdgeBase + EdgesSinceLoad(c, t);

    /// <summary>The tick of the next rising edge of OUT after <paramref name="t"/>, or long.MaxValue.</summary>
    public static long NextRisingEdgeTick(in PitCounterState c, long t)
    {
        if (!c.Counting || c.Paused) return long.MaxValue;
        long e = t - c.LoadTick;
        long p = c.Period;
        switch (Mode(c))
        {
            case 0:
            case 1:
                return e < p ? c.LoadTick + p : long.MaxValue;
            case 2:
            case 3:
                return e < p ? c.LoadTick + p : c.LoadTick + (e / p + 1) * p;
            default:
                return e < p + 1 ? c.LoadTick + p + 1 : long.MaxValue;
        }
    }

    public static bool NullCount(in PitCounterState c, long t) => t < c.NullCountClearTick;

    public static byte Status(in PitCounterState c, long t) => (byte)(
        (Out(c, t) ? 0x80 : 0) | (NullCount(c, t) ? 0x40 : 0) | (c.Access << 4) | (c.ModeBits << 1) | (c.Bcd ? 1 : 0));

    private static ushort Encoded(in PitCounterState c, long t)
    {
        int v = Value(c, t);
        return (ushort)(c.Bcd ? ToBcd(v % BcdModulus) : v);
    }

    /// <summary>Stops following the clock: CE freezes at its current value; edges so far are kept.</summary>
    private static void Stop(ref PitCounterState c, long t, bool outLevel)
    {
        c.IdleValue = Value(c, t);
        c.EdgeBase += EdgesSinceLoad(c, t);
        c.Counting = false;
        c.Paused = false;
        c.HasPendingCount = false;
        c.OutIdle = outLevel;
    }

    /// <summary>CR is transferred to CE on the next clock and counting (re)starts from it.</summary>
    private static void Start(ref PitCounterState c, long t)
    {
        Stop(ref c, t, c.OutIdle);
        c.Counting = true;
        c.LoadTick = t + 1;
        c.Period = PeriodOf(c, c.CountRegister);
        if (c.NullCountClearTick > t + 1) c.NullCountClearTick = t + 1;
    }

    // ---- register operations ----

    /// <summary>A control word with RW ≠ 0: new mode; counting stops until a count is written.</summary>
    public static void WriteControl(ref PitCounterState c, byte value, long t)
    {
        // OUT after a control word: low in mode 0, high in every other mode.
        int mode = (value >> 1) & 7;
        Stop(ref c, t, outLevel: mode != 0);
        c.ModeBits = (byte)mode;
        c.Access = (byte)((value >> 4) & 3);
        c.Bcd = (value & 1) != 0;
        c.HasCount = false;
        c.NullCountClearTick = long.MaxValue;
        c.WriteMsbNext = false;
        c.ReadMsbNext = false;
        // "All control logic is reset": pending latches are dropped.
        c.CountLatched = false;
        c.LatchedMsbNext = false;
        c.StatusLatched = false;
    }

    public static void LatchCount(ref PitCounterState c, long t)
    {
        // A second latch before the first is read is ignored.
        if (c.CountLatched) return;
        c.LatchedCount = Encoded(c, t);
        c.CountLatched = true;
        c.LatchedMsbNext = false;
    }

    public static void LatchStatus(ref PitCounterState c, long t)
    {
        if (c.StatusLatched) return;
        c.LatchedStatus = Status(c, t);
        c.StatusLatched = true;
    }

    public static byte Read(ref PitCounterState c, long t)
    {
        if (c.StatusLatched)
        {
            c.StatusLatched = false;
            return c.LatchedStatus;
        }
        if (c.CountLatched)
        {
            ushort l = c.LatchedCount;
            switch (c.Access)
            {
                case 1: c.CountLatched = false; return (byte)l;
                case 2: c.CountLatched = false; return (byte)(l >> 8);
                default:
                    if (!c.LatchedMsbNext) { c.LatchedMsbNext = true; return (byte)l; }
                    c.LatchedMsbNext = false;
                    c.CountLatched = false;
                    return (byte)(l >> 8);
            }
        }
        ushort v = Encoded(c, t);
        switch (c.Access)
        {
            case 1: return (byte)v;
            case 2: return (byte)(v >> 8);
            default:
                c.ReadMsbNext = !c.ReadMsbNext;
                return c.ReadMsbNext ? (byte)v : (byte)(v >> 8);
        }
    }

    public static void Write(ref PitCounterState c, byte value, long t)
    {
        switch (c.Access)
        {
            case 1: LoadCount(ref c, value, t); break;
            case 2: LoadCount(ref c, value << 8, t); break;
            default:
                if (!c.WriteMsbNext)
                {
                    c.WriteLsb = value;
                    c.WriteMsbNext = true;
                    // Mode 0: writing the first byte stops counting and drives OUT low at once.
                    if (Mode(c) == 0) Stop(ref c, t, outLevel: false);
                }
                else
                {
                    c.WriteMsbNext = false;
                    LoadCount(ref c, c.WriteLsb | value << 8, t);
                }
                break;
        }
    }

    private static void LoadCount(ref PitCounterState c, int cr, long t)
    {
        c.CountRegister = (ushort)cr;
        c.HasCount = true;
        switch (Mode(c))
        {
            case 0:
            case 4:
                // Loaded on the next clock; restarts counting. OUT: low (mode 0) / high (mode 4).
                c.NullCountClearTick = long.MaxValue;
                Start(ref c, t);
                if (!c.Gate)
                {
                    c.Paused = true;
                    c.PausedElapsed = 0;
                }
                break;
            case 1:
            case 5:
                // Hardware triggered: CR reaches CE only on the next rising edge of GATE.
                c.NullCountClearTick = long.MaxValue;
                break;
            default: // 2, 3
                if (c.Counting)
                {
                    long e = t - c.LoadTick;
                    if (e < 0)
                    {
                        // The previous count has not reached CE yet: this one replaces it.
                        c.Period = PeriodOf(c, cr);
                    }
                    else
                    {
                        // The current period completes first; the new count takes over at its end.
                        c.HasPendingCount = true;
                        c.PendingPeriod = PeriodOf(c, cr);
                        c.PendingTick = c.LoadTick + (e / c.Period + 1) * c.Period;
                        c.NullCountClearTick = c.PendingTick;
                    }
                }
                else if (c.Gate)
                {
                    c.NullCountClearTick = long.MaxValue;
                    Start(ref c, t);
                }
                else
                {
                    c.NullCountClearTick = long.MaxValue;
                }
                break;
        }
    }

    public static void SetGate(ref PitCounterState c, bool gate, long t)
    {
        if (gate == c.Gate) return;
        c.Gate = gate;
        int mode = Mode(c);
        if (gate)
        {
            switch (mode)
            {
                case 0:
                case 4:
                    // Counting resumes where it stopped.
                    if (c.Paused)
                    {
                        c.LoadTick = t - c.PausedElapsed;
                        c.Paused = false;
                    }
                    break;
                default:
                    // Modes 1 and 5 trigger; modes 2 and 3 reload and restart. Both from CR on the next clock.
                    if (c.HasCount) Start(ref c, t);
                    break;
            }
        }
        else
        {
            switch (mode)
            {
                case 0:
                case 4:
                    if (c.Counting && !c.Paused)
                    {
                        c.PausedElapsed = Math.Max(0, t - c.LoadTick);
                        c.Paused = true;
                    }
                    break;
                case 2:
                case 3:
                    // Counting stops and OUT goes high at once.
                    if (c.Counting)
                    {
                        if (c.HasPendingCount) c.NullCountClearTick = long.MaxValue;
                        Stop(ref c, t, outLevel: true);
                    }
                    break;
                default: // 1, 5: GATE low has no effect
                    break;
            }
        }
    }
}
