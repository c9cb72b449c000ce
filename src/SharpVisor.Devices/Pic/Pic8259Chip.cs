// Spec: Intel 8259A Programmable Interrupt Controller datasheet (ICW1–ICW4, OCW1–OCW3, priority
// resolution, EOI and rotation commands, special mask mode, poll command), with the edge/level
// control register of the Intel PIIX/PIIX3 (ELCR1/ELCR2 at 0x4D0/0x4D1).
//
// Deliberate deviations:
// - x86 mode only: ICW4 µPM=0 (8080/8085 CALL vectors) and the ICW1 address-interval bit are
//   stored and ignored; the vector is always ICW2[7:3] plus the IR number.
// - An edge-triggered request stays latched in IRR when its line falls before the INTA cycle
//   (as QEMU and Bochs; the datasheet would report IR7). Devices here signal events with short
//   pulses, so this is what they need. A spurious IR7/IR15 is still reported when nothing is
//   left to acknowledge.
// - In special mask mode every unmasked request that is not itself in service is allowed (the
//   datasheet: "enables interrupts from all other levels (lower as well as higher) that are not
//   masked"; as Bochs).
// - BUF and M/S of ICW4 and ICW3 of the slave have no effect: the PC wiring (slave on master IR2)
//   is fixed in Pic8259.

using SharpVisor.Core.Bus;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Pic;

/// <summary>The complete state of one 8259A, for snapshots.</summary>
public struct Pic8259ChipState
{
    public byte Irr, Isr, Imr;
    /// <summary>Current level of each IR input (edge detection; level-triggered IRR follows it).</summary>
    public byte InputLevels;
    /// <summary>PIIX ELCR: 1 = that IR is level triggered.</summary>
    public byte Elcr;
    /// <summary>ICW2 bits 7–3: T7–T3 of the vector.</summary>
    public byte VectorBase;
    public byte Icw3;
    /// <summary>The IR with the lowest priority ("bottom priority"); the next one up is the highest.</summary>
    public byte LowestPriority;
    /// <summary>0 = ready (port 1 writes are OCW1); otherwise the ICW expected next (2, 3 or 4).</summary>
    public byte InitStep;
    public bool Icw4Needed, SingleMode, LevelTriggeredMode, MicroprocessorMode;
    public bool AutoEoi, RotateOnAutoEoi, SpecialFullyNested, SpecialMask, ReadIsr, Poll;
}

/// <summary>One 8259A: two byte-wide ports (offset 0 = ICW1/OCW2/OCW3 and IRR/ISR/poll, offset 1 = IMR/ICW2–4).</summary>
public sealed class Pic8259Chip : IBusDevice, IByteRegisterFile
{
    public const int PortCount = 2;

    private const byte Icw1Ic4 = 0x01, Icw1Sngl = 0x02, Icw1Ltim = 0x08, Icw1Select = 0x10;
    private const byte Ocw3Select = 0x08, Ocw3Ris = 0x01, Ocw3Rr = 0x02, Ocw3Poll = 0x04, Ocw3Smm = 0x20, Ocw3Esmm = 0x40;
    private const byte Icw4Upm = 0x01, Icw4Aeoi = 0x02, Icw4Sfnm = 0x10;
    private const byte PollInterrupt = 0x80;
    private const byte StepReady = 0, StepIcw2 = 2, StepIcw3 = 3, StepIcw4 = 4;
    private const int Ir7 = 7;

    private readonly Pic8259 _owner;
    private readonly byte _elcrMask;
    private readonly bool _isMaster;
    internal Pic8259ChipState S;

    internal Pic8259Chip(string name, Pic8259 owner, bool isMaster, byte elcrMask)
    {
        Name = name;
        _owner = owner;
        _isMaster = isMaster;
        _elcrMask = elcrMask;
        Reset();
    }

    public string Name { get; }

    internal void Reset()
    {
        // The input levels are wires, and ELCR is a PIIX register outside the 8259 core: both survive.
        byte levels = S.InputLevels, elcr = S.Elcr;
        S = default;
        S.InputLevels = levels;
        S.Elcr = elcr;
        S.LowestPriority = Ir7;
    }

    internal byte VectorBase => S.VectorBase;

    /// <summary>Lines that are level sensitive: all with ICW1.LTIM, otherwise those set in ELCR.</summary>
    private byte LevelMask => S.LevelTriggeredMode ? (byte)0xFF : S.Elcr;

    // ---- bus side ----

    // Byte-wide ports: wider accesses become byte cycles (Isa/IsaByteCycles.cs).
    public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

    public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

    int IByteRegisterFile.RegisterCount => PortCount;
    byte IByteRegisterFile.ReadRegister(int offset) => ReadPort(offset);
    void IByteRegisterFile.WriteRegister(int offset, byte value) => WritePort(offset, value);

    private byte ReadPort(int port)
    {
        if (port == 1) return S.Imr;
        if (S.Poll)
        {
            // The poll command turns this read into an interrupt acknowledge.
            S.Poll = false;
            int irq = Resolve();
            if (irq < 0) return 0;
            Intack(irq);
            _owner.Update();
            return (byte)(PollInterrupt | irq);
        }
        return S.ReadIsr ? S.Isr : S.Irr;
    }

    private void WritePort(int port, byte value)
    {
        if (port == 0)
        {
            if ((value & Icw1Select) != 0) WriteIcw1(value);
            else if ((value & Ocw3Select) != 0) WriteOcw3(value);
            else WriteOcw2(value);
        }
        else
        {
            switch (S.InitStep)
            {
                case StepIcw2:
                    S.VectorBase = (byte)(value & 0xF8);
                    S.InitStep = S.SingleMode ? (S.Icw4Needed ? StepIcw4 : StepReady) : StepIcw3;
                    break;
                case StepIcw3:
                    S.Icw3 = value;
                    S.InitStep = S.Icw4Needed ? StepIcw4 : StepReady;
                    break;
                case StepIcw4:
                    S.MicroprocessorMode = (value & Icw4Upm) != 0;
                    S.AutoEoi = (value & Icw4Aeoi) != 0;
                    S.SpecialFullyNested = (value & Icw4Sfnm) != 0;
                    S.InitStep = StepReady;
                    break;
                default:
                    S.Imr = value; // OCW1
                    break;
            }
        }
        _owner.Update();
    }

    private void WriteIcw1(byte value)
    {
        // Initialization: IMR cleared, IR7 lowest priority, special mask mode off, IRR selected for
        // reading, ICW4 functions cleared. The edge-sense circuit is reset, so an edge-triggered
        // line must go low then high again to request; level-triggered IRR bits follow their lines.
        Reset();
        S.Icw4Needed = (value & Icw1Ic4) != 0;
        S.SingleMode = (value & Icw1Sngl) != 0;
        S.LevelTriggeredMode = (value & Icw1Ltim) != 0;
        S.Irr = (byte)(S.InputLevels & LevelMask);
        S.InitStep = StepIcw2;
    }

    private void WriteOcw2(byte value)
    {
        int level = value & 7;
        switch (value >> 5)
        {
            case 0b001: // non-specific EOI
                ClearHighestInService();
                break;
            case 0b011: // specific EOI
                S.Isr &= (byte)~(1 << level);
                break;
            case 0b101: // rotate on non-specific EOI
                {
                    int irq = ClearHighestInService();
                    if (irq >= 0) S.LowestPriority = (byte)irq;
                    break;
                }
            case 0b100: S.RotateOnAutoEoi = true; break;
            case 0b000: S.RotateOnAutoEoi = false; break;
            case 0b111: // rotate on specific EOI
                S.Isr &= (byte)~(1 << level);
                S.LowestPriority = (byte)level;
                break;
            case 0b110: // set priority
                S.LowestPriority = (byte)level;
                break;
            default: // 0b010: no operation
                break;
        }
    }

    private void WriteOcw3(byte value)
    {
        if ((value & Ocw3Esmm) != 0) S.SpecialMask = (value & Ocw3Smm) != 0;
        if ((value & Ocw3Poll) != 0) S.Poll = true;
        if ((value & Ocw3Rr) != 0) S.ReadIsr = (value & Ocw3Ris) != 0;
    }

    private int ClearHighestInService()
    {
        int irq = Highest(S.Isr);
        if (irq >= 0) S.Isr &= (byte)~(1 << irq);
        return irq;
    }

    internal byte Elcr
    {
        get => S.Elcr;
        set
        {
            S.Elcr = (byte)(value & _elcrMask);
            byte level = LevelMask;
            // Lines that are now level sensitive report their current level.
            S.Irr = (byte)((S.Irr & ~level) | (S.InputLevels & level));
        }
    }

    internal void RestoreState(in Pic8259ChipState state)
    {
        S = state;
        S.Elcr &= _elcrMask;
        S.LowestPriority &= 7;
    }

    // ---- lines and priority ----

    /// <summary>An IR input changes level.</summary>
    internal void SetInput(int line, bool level)
    {
        byte mask = (byte)(1 << line);
        bool wasHigh = (S.InputLevels & mask) != 0;
        if (level) S.InputLevels |= mask;
        else S.InputLevels &= (byte)~mask;

        if ((LevelMask & mask) != 0)
        {
            if (level) S.Irr |= mask;
            else S.Irr &= (byte)~mask;
        }
        else if (level && !wasHigh)
        {
            S.Irr |= mask;
        }
    }

    /// <summary>
    /// The cascade input from the slave's INT output. It is level-latched whatever the trigger mode:
    /// the slave holds INT until its INTA, so the master re-requests while the slave still has work.
    /// </summary>
    internal void SetCascadeInput(int line, bool level)
    {
        byte mask = (byte)(1 << line);
        if (level) { S.InputLevels |= mask; S.Irr |= mask; }
        else { S.InputLevels &= (byte)~mask; S.Irr &= (byte)~mask; }
    }

    /// <summary>Priority rank of an IR: 0 is the highest.</summary>
    private int Rank(int irq) => (irq - S.LowestPriority - 1) & 7;

    private int Highest(int mask)
    {
        for (int i = 1; i <= 8; i++)
        {
            int irq = (S.LowestPriority + i) & 7;
            if ((mask & (1 << irq)) != 0) return irq;
        }
        return -1;
    }

    /// <summary>The IR that would drive INT now, or -1 (the priority resolver).</summary>
    internal int Resolve()
    {
        int request = S.Irr & ~S.Imr;
        if (S.SpecialMask)
            return Highest(request & ~S.Isr);
        int best = Highest(request);
        if (best < 0) return -1;
        int current = Highest(S.Isr);
        if (current < 0) return best;
        int rb = Rank(best), rc = Rank(current);
        if (rb < rc) return best;
        // Special fully nested mode: the cascade line may interrupt again while in service, so a
        // higher-priority request on the slave gets through.
        if (rb == rc && S.SpecialFullyNested && _isMaster && best == Pic8259.CascadeLine) return best;
        return -1;
    }

    /// <summary>The INTA cycle for <paramref name="irq"/>: ISR set (or auto-EOI), edge request consumed.</summary>
    internal void Intack(int irq)
    {
        byte mask = (byte)(1 << irq);
        if (S.AutoEoi)
        {
            if (S.RotateOnAutoEoi) S.LowestPriority = (byte)irq;
        }
        else
        {
            S.Isr |= mask;
        }
        if ((LevelMask & mask) == 0) S.Irr &= (byte)~mask;
    }
}
