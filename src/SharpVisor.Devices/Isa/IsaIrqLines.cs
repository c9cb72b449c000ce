// The ISA interrupt request lines IRQ0–IRQ15 of a PC (IBM PC/AT Technical Reference, "I/O channel":
// IRQ n of the bus goes to 8259A input n; on an IOAPIC system also to IOAPIC pin n, the timer to
// pin 2, as the MADT's interrupt source override says) when several devices sit on one line, as the
// PC's COM1 and COM3 share IRQ4 and COM2 and COM4 share IRQ3.
//
// Deliberate deviations:
// - A shared line is a wired OR: it is high while any device drives it high. On a real ISA bus two
//   active drivers on one line conflict (the PC serial card's OUT2 gate exists so that only one of
//   the UARTs sharing an IRQ drives it), and QEMU hands every device on a line the same qemu_irq, so
//   the last device to change its level wins. The OR is what boards built for sharing (multi-port
//   serial cards with open-collector IRQ outputs) do and what Linux's 8250 driver expects when it
//   chains the ports on one IRQ and services them all from one handler: one device going quiet
//   never hides another's pending request. Edge-triggered consumers see a rising edge only when the
//   whole line rises, as on such a board: a second device asserting an already-high line makes no
//   new edge.
// - The line reports only changes of its OR to the controllers, not every device write; every
//   device in this project already drives its line only on changes, and the 8259A and IOAPIC
//   models react to levels and edges, not to repeated writes of the same level.
// Not thread-safe: the machine calls devices (and so the lines) under its one device lock.

using SharpVisor.Core.Interrupts;

namespace SharpVisor.Devices.Isa;

/// <summary>
/// One interrupt line that several devices drive: its level is the OR of the levels of its inputs
/// (<see cref="Connect"/> hands out one per device), and the output line given at construction follows that level.
/// </summary>
public sealed class SharedIrqLine
{
    private readonly IIrqLine _output;
    private readonly List<Input> _inputs = new();
    /// <summary>How many connected inputs are high: the line is high while this is above 0.</summary>
    private int _highInputs;

    public SharedIrqLine(IIrqLine output)
    {
        _output = output;
    }

    /// <summary>The wired-OR level: true while any connected input is high.</summary>
    public bool Level => _highInputs > 0;

    /// <summary>How many connected inputs drive the line high now.</summary>
    public int HighInputs => _highInputs;

    /// <summary>The inputs connected now.</summary>
    public int InputCount => _inputs.Count;

    /// <summary>
    /// A new input for one device, low. With <paramref name="survivesReset"/> it stays connected
    /// through <see cref="Reset"/> (a device the machine keeps across reboots, like the RTC).
    /// </summary>
    public Input Connect(bool survivesReset = false)
    {
        var input = new Input(this, survivesReset);
        _inputs.Add(input);
        return input;
    }

    /// <summary>
    /// The board was rebuilt: every input not marked to survive a reset is disconnected (its old
    /// device can no longer move the line, and a level it left high is gone), and the line's level,
    /// now the OR of the survivors, is driven to the output whatever it was, so controllers
    /// built anew for the next boot start from the true level.
    /// </summary>
    public void Reset()
    {
        _highInputs = 0;
        for (int i = _inputs.Count - 1; i >= 0; i--)
        {
            var input = _inputs[i];
            if (!input.SurvivesReset)
            {
                input.Detach();
                _inputs.RemoveAt(i);
            }
            else if (input.Level)
            {
                _highInputs++;
            }
        }
        _output.SetLevel(Level);
    }

    private void Disconnect(Input input)
    {
        if (!_inputs.Remove(input)) return;
        input.Detach();
        if (input.Level) InputChanged(high: false);
    }

    /// <summary>An input changed its level: the line moves only when the OR does.</summary>
    private void InputChanged(bool high)
    {
        bool before = _highInputs > 0;
        _highInputs += high ? 1 : -1;
        bool after = _highInputs > 0;
        if (before != after) _output.SetLevel(after);
    }

    /// <summary>
    /// The line as one device sees it: what it drives. Setting the level it already drives does
    /// nothing; once disconnected, the input still records its level but no longer moves the line.
    /// </summary>
    public sealed class Input : IIrqLine
    {
        private SharedIrqLine? _line;

        internal Input(SharedIrqLine line, bool survivesReset)
        {
            _line = line;
            SurvivesReset = survivesReset;
        }

        /// <summary>The level this device drives.</summary>
        public bool Level { get; private set; }

        /// <summary>False once <see cref="Disconnect"/> or a line <see cref="SharedIrqLine.Reset"/> took it off the line.</summary>
        public bool IsConnected => _line != null;

        internal bool SurvivesReset { get; }

        public void SetLevel(bool high)
        {
            if (high == Level) return;
            Level = high;
            _line?.InputChanged(high);
        }

        /// <summary>Takes this input off its line (the device is gone); a high level it drove is withdrawn.</summary>
        public void Disconnect() => _line?.Disconnect(this);

        internal void Detach() => _line = null;
    }
}

/// <summary>
/// The sixteen ISA IRQ lines of one machine, each a <see cref="SharedIrqLine"/>, created once and
/// routed to the interrupt controllers by the callback the machine gives (IRQ number, level).
/// </summary>
public sealed class IsaIrqLines
{
    public const int LineCount = 16;

    private readonly SharedIrqLine[] _lines = new SharedIrqLine[LineCount];

    /// <param name="route">Called with (IRQ, level) when the wired-OR level of a line changes, and
    /// for every line on <see cref="Reset"/>.</param>
    public IsaIrqLines(Action<int, bool> route)
    {
        for (int i = 0; i < LineCount; i++)
        {
            int irq = i;
            _lines[i] = new SharedIrqLine(new IrqLine(level => route(irq, level)));
        }
    }

    /// <summary>ISA IRQ <paramref name="irq"/> (0–15).</summary>
    public SharedIrqLine this[int irq] => (uint)irq < LineCount
        ? _lines[irq]
        : throw new ArgumentOutOfRangeException(nameof(irq), irq, "ISA IRQs are 0-15");

    /// <summary>A new input on ISA IRQ <paramref name="irq"/> for one device (see <see cref="SharedIrqLine.Connect"/>).</summary>
    public SharedIrqLine.Input Connect(int irq, bool survivesReset = false) => this[irq].Connect(survivesReset);

    /// <summary>
    /// A new board: <see cref="SharedIrqLine.Reset"/> on every line. Call it once the new board's
    /// interrupt controllers exist and before its devices connect.
    /// </summary>
    public void Reset()
    {
        foreach (var line in _lines) line.Reset();
    }
}
