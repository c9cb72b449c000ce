// Spec: Intel 8254 Programmable Interval Timer datasheet (231164): ports 0–2 are counters 0–2,
// port 3 the control word register (counter select, counter latch, read-back command). PC wiring
// (IBM PC/AT technical reference): 1.193182 MHz input on all counters, GATE0/GATE1 tied high, OUT0
// drives IRQ0, GATE2 and the speaker enable come from port 0x61 bits 0 and 1, OUT2 reads back in
// port 0x61 bit 5, and bit 4 toggles with every DRAM refresh request (every 15.085 µs).
//
// Deliberate deviations:
// - Counter 1 (DRAM refresh) is an ordinary counter whose OUT goes nowhere; the port 0x61
//   refresh bit is derived from the clock instead of from OUT1.
// - No sound: the speaker data bit is stored and read back only.
// - IRQ0 edges are delivered when OnTime or a register access runs: several periods passed
//   in one late call give one edge (lost ticks, as on an overloaded host).
// - Port 0x61 bits 2–3 (parity/IOCHK check enables) are stored and read back; bits 6–7
//   (IOCHK and parity errors) always read 0.
// See PitCounter.cs for the counter-level deviations.

using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Pit;

/// <summary>The complete state of the PIT and port 0x61, for snapshots.</summary>
public struct Pit8254State
{
    public PitCounterState Counter0, Counter1, Counter2;
    /// <summary>Port 0x61 bits 0–3 as written.</summary>
    public byte Port61;
}

/// <summary>
/// The PC's 8254 at ports 0x40–0x43 (4 ports) and, through <see cref="SpeakerPort"/>, port 0x61.
/// The machine calls <see cref="OnTime"/> at <see cref="NextDeadlineNs"/> so OUT0 reaches IRQ0.
/// </summary>
public sealed class Pit8254 : IBusDevice, ITimedDevice, IByteRegisterFile
{
    /// <summary>The PC's PIT input clock (14.31818 MHz / 12).</summary>
    public const long InputFrequencyHz = 1_193_182;
    public const int PortCount = 4;
    private const int ControlPort = 3;
    private const long NsPerSecond = 1_000_000_000;
    /// <summary>Port 0x61 bit 4 toggles with each refresh request: 15.085 µs (counter 1 at 18 clocks).</summary>
    private const long RefreshToggleNs = 15_085;

    private const byte Port61Gate2 = 0x01, Port61SpeakerData = 0x02, Port61Writable = 0x0F, Port61Refresh = 0x10, Port61Out2 = 0x20;

    private readonly IClock _clock;
    private readonly IIrqLine _irq0;
    private readonly PitCounterState[] _counters = new PitCounterState[3];
    private byte _port61;
    private bool _irqLevel;
    /// <summary>The input-clock tick of the bus access in progress (scratch, not state).</summary>
    private long _accessTick;

    public Pit8254(IClock clock, IIrqLine irq0)
    {
        _clock = clock;
        _irq0 = irq0;
        SpeakerPort = new SpeakerPortDevice(this);
        Reset();
    }

    public string Name => "pit";

    /// <summary>Port 0x61 (one port): GATE2, speaker data, refresh toggle, OUT2.</summary>
    public IBusDevice SpeakerPort { get; }

    /// <summary>The level currently driven on IRQ0.</summary>
    public bool Irq0Level => _irqLevel;

    public void Reset()
    {
        // Counters are undefined until programmed: idle, no OUT edges. GATE0/1 are tied high.
        for (int i = 0; i < _counters.Length; i++) PitCounter.Init(ref _counters[i], gate: i != 2);
        _port61 = 0;
        _irqLevel = false;
        _irq0.SetLevel(false);
    }

    public Pit8254State State
    {
        get => new() { Counter0 = _counters[0], Counter1 = _counters[1], Counter2 = _counters[2], Port61 = _port61 };
        set
        {
            _counters[0] = value.Counter0;
            _counters[1] = value.Counter1;
            _counters[2] = value.Counter2;
            for (int i = 0; i < _counters.Length; i++)
            {
                ref var c = ref _counters[i];
                c.Period = Math.Max(1, c.Period);
                c.PendingPeriod = Math.Max(1, c.PendingPeriod);
            }
            _port61 = (byte)(value.Port61 & Port61Writable);
            _irqLevel = PitCounter.Out(_counters[0], NowTick);
            _irq0.SetLevel(_irqLevel);
        }
    }

    // ---- time ----

    private long NowTick => TickAt(_clock.NowNs);

    /// <summary>Input clocks elapsed at <paramref name="ns"/> (floor).</summary>
    public static long TickAt(long ns) => (long)((Int128)ns * InputFrequencyHz / NsPerSecond);

    /// <summary>The first nanosecond at which <paramref name="tick"/> has elapsed.</summary>
    public static long NsAtTick(long tick) => (long)(((Int128)tick * NsPerSecond + InputFrequencyHz - 1) / InputFrequencyHz);

    public long NextDeadlineNs
    {
        get
        {
            long t = NowTick;
            var c = _counters[0];
            PitCounter.Sync(ref c, t);
            // An edge not yet reported is already due: its own (past) time, never "now", which
            // would be later than any time the caller took before asking.
            if (PitCounter.TotalEdges(c, t) > c.EdgesReported) return 0;
            long tick = PitCounter.NextRisingEdgeTick(c, t);
            return tick == long.MaxValue ? long.MaxValue : NsAtTick(tick);
        }
    }

    public void OnTime(long nowNs) => UpdateIrq0(NowTick);

    /// <summary>OUT0 → IRQ0, computed in one place. Edges missed between calls become one pulse.</summary>
    private void UpdateIrq0(long t)
    {
        ref var c = ref _counters[0];
        PitCounter.Sync(ref c, t);
        long edges = PitCounter.TotalEdges(c, t);
        bool outLevel = PitCounter.Out(c, t);
        if (edges > c.EdgesReported)
        {
            c.EdgesReported = edges;
            if (_irqLevel) _irq0.SetLevel(false);
            _irq0.SetLevel(true);
            _irqLevel = true;
        }
        if (outLevel != _irqLevel)
        {
            _irqLevel = outLevel;
            _irq0.SetLevel(outLevel);
        }
    }

    // ---- bus side ----

    // Byte-wide ports: wider accesses become byte cycles (Isa/IsaByteCycles.cs). All cycles of one
    // access see the same input-clock tick, taken once here.
    public ulong Read(ulong offset, int size)
    {
        _accessTick = NowTick;
        UpdateIrq0(_accessTick);
        return IsaByteCycles.Read(this, offset, size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        _accessTick = NowTick;
        UpdateIrq0(_accessTick);
        IsaByteCycles.Write(this, offset, size, value);
    }

    int IByteRegisterFile.RegisterCount => PortCount;

    byte IByteRegisterFile.ReadRegister(int offset)
    {
        if (offset == ControlPort) return IsaByteCycles.Floating; // the control port is write-only: reads float
        long t = _accessTick;
        ref var c = ref _counters[offset];
        PitCounter.Sync(ref c, t);
        return PitCounter.Read(ref c, t);
    }

    void IByteRegisterFile.WriteRegister(int offset, byte value)
    {
        long t = _accessTick;
        if (offset == ControlPort) WriteControl(value, t);
        else
        {
            ref var c = ref _counters[offset];
            PitCounter.Sync(ref c, t);
            PitCounter.Write(ref c, value, t);
        }
        // OUT0 may change with each byte cycle (a mode 0 LSB write drops it): IRQ0 follows at once.
        UpdateIrq0(t);
    }

    private void WriteControl(byte value, long t)
    {
        int select = value >> 6;
        if (select == 3)
        {
            // Read-back: bit 5 = 0 latches the count, bit 4 = 0 the status, bits 1–3 select counters.
            for (int i = 0; i < _counters.Length; i++)
            {
                if ((value & (2 << i)) == 0) continue;
                ref var rc = ref _counters[i];
                PitCounter.Sync(ref rc, t);
                if ((value & 0x20) == 0) PitCounter.LatchCount(ref rc, t);
                if ((value & 0x10) == 0) PitCounter.LatchStatus(ref rc, t);
            }
            return;
        }
        ref var c = ref _counters[select];
        PitCounter.Sync(ref c, t);
        if ((value & 0x30) == 0) PitCounter.LatchCount(ref c, t);
        else PitCounter.WriteControl(ref c, value, t);
    }

    // ---- port 0x61 ----

    private byte ReadPort61()
    {
        long now = _clock.NowNs;
        long t = TickAt(now);
        UpdateIrq0(t);
        ref var c2 = ref _counters[2];
        PitCounter.Sync(ref c2, t);
        int v = _port61
            | (((now / RefreshToggleNs) & 1) != 0 ? Port61Refresh : 0)
            | (PitCounter.Out(c2, t) ? Port61Out2 : 0);
        return (byte)v;
    }

    private void WritePort61(byte value)
    {
        long t = NowTick;
        UpdateIrq0(t);
        // Bits 4–7 are read-only status.
        _port61 = (byte)(value & Port61Writable);
        ref var c2 = ref _counters[2];
        PitCounter.Sync(ref c2, t);
        PitCounter.SetGate(ref c2, (value & Port61Gate2) != 0, t);
    }

    /// <summary>Whether the speaker would sound (GATE2 and speaker data both on); no audio is produced.</summary>
    public bool SpeakerEnabled => (_port61 & (Port61Gate2 | Port61SpeakerData)) == (Port61Gate2 | Port61SpeakerData);

    /// <summary>Port 0x61: one byte-wide port; wider accesses become byte cycles (Isa/IsaByteCycles.cs).</summary>
    private sealed class SpeakerPortDevice(Pit8254 pit) : IBusDevice, IByteRegisterFile
    {
        public string Name => "port61";

        public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

        public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

        public int RegisterCount => 1;

        public byte ReadRegister(int offset) => pit.ReadPort61();

        public void WriteRegister(int offset, byte value) => pit.WritePort61(value);
    }
}
