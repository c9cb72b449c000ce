// Spec: Intel 8259A datasheet (cascade operation, INTA sequence, spurious IR7) wired as in the
// PC/AT: the slave's INT output drives master IR2, ISA IRQ2 is routed to IRQ9 (slave IR1), and the
// PIIX ELCR registers (ports 0x4D0/0x4D1) choose edge or level triggering per line; IRQ0, 1, 2, 8
// and 13 are always edge triggered (their ELCR bits are reserved and read 0).
//
// Deliberate deviations: master IR2 is always the cascade, whatever ICW3 says (as QEMU); see
// Pic8259Chip.cs for the per-chip ones.

using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Pic;

/// <summary>The complete state of the master/slave pair, for snapshots.</summary>
public struct Pic8259State
{
    public Pic8259ChipState Master, Slave;
}

/// <summary>
/// The PC's two cascaded 8259As. Devices drive <see cref="SetIrq"/> (or the lines from
/// <see cref="GetLine"/>); the vCPU asks <see cref="HasInterrupt"/> and <see cref="Acknowledge"/>;
/// <see cref="IntrOutput"/> follows the master's INT pin so the machine can kick a halted vCPU.
/// Map <see cref="Master"/> at 0x20, <see cref="Slave"/> at 0xA0 (2 ports each), <see cref="Elcr"/> at 0x4D0 (2 ports).
/// </summary>
public sealed class Pic8259 : IInterruptSource
{
    public const int IrqCount = 16;
    public const int CascadeLine = 2;
    /// <summary>The slave input that ISA IRQ2 reaches on an AT (IRQ9).</summary>
    private const int Irq2Redirect = 9;
    // PIIX3 ELCR1 bits 0–2 and ELCR2 bits 0 and 5 are reserved (IRQ0–2, 8 and 13 are edge only).
    private const byte MasterElcrMask = 0xF8, SlaveElcrMask = 0xDE;
    private const int SpuriousLine = 7;

    private readonly IrqInput[] _lines = new IrqInput[IrqCount];
    private bool _intr;

    public Pic8259()
    {
        Master = new Pic8259Chip("pic-master", this, isMaster: true, MasterElcrMask);
        Slave = new Pic8259Chip("pic-slave", this, isMaster: false, SlaveElcrMask);
        Elcr = new ElcrPorts(this);
        for (int i = 0; i < IrqCount; i++) _lines[i] = new IrqInput(this, i);
    }

    public Pic8259Chip Master { get; }
    public Pic8259Chip Slave { get; }
    /// <summary>ELCR1 (offset 0, IRQ0–7) and ELCR2 (offset 1, IRQ8–15).</summary>
    public IBusDevice Elcr { get; }

    /// <summary>Follows the master's INT output; set once by the machine (e.g. to kick the vCPU on a rise).</summary>
    public IIrqLine? IntrOutput { get; set; }

    public bool HasInterrupt => _intr;

    /// <summary>An IIrqLine that drives <paramref name="irq"/> (0–15), for wiring devices.</summary>
    public IIrqLine GetLine(int irq) => _lines[irq];

    /// <summary>Sets the level of ISA IRQ <paramref name="irq"/> (0–15); other numbers are ignored.</summary>
    public void SetIrq(int irq, bool level)
    {
        if ((uint)irq >= IrqCount) return;
        if (irq == CascadeLine) irq = Irq2Redirect;
        if (irq < 8) Master.SetInput(irq, level);
        else Slave.SetInput(irq - 8, level);
        Update();
    }

    /// <summary>The INTA sequence: returns the vector and updates ISR/IRR on both chips.</summary>
    public byte Acknowledge()
    {
        int irq = Master.Resolve();
        byte vector;
        if (irq < 0)
        {
            // Nothing left to acknowledge (the request went away): the master answers IR7, no ISR bit.
            vector = (byte)(Master.VectorBase + SpuriousLine);
        }
        else if (irq == CascadeLine)
        {
            int slaveIrq = Slave.Resolve();
            if (slaveIrq < 0)
            {
                // Spurious IRQ15: the slave answers IR7 without setting ISR; the master's IR2 is in service.
                vector = (byte)(Slave.VectorBase + SpuriousLine);
            }
            else
            {
                Slave.Intack(slaveIrq);
                vector = (byte)(Slave.VectorBase + slaveIrq);
            }
            Master.Intack(irq);
        }
        else
        {
            Master.Intack(irq);
            vector = (byte)(Master.VectorBase + irq);
        }
        Update();
        return vector;
    }

    public Pic8259State GetState() => new() { Master = Master.S, Slave = Slave.S };

    public void SetState(in Pic8259State state)
    {
        Master.RestoreState(state.Master);
        Slave.RestoreState(state.Slave);
        Update();
        IntrOutput?.SetLevel(_intr);
    }

    /// <summary>Recomputes the slave's INT → master IR2 and the master's INT → INTR, in one place.</summary>
    internal void Update()
    {
        Master.SetCascadeInput(CascadeLine, Slave.Resolve() >= 0);
        bool intr = Master.Resolve() >= 0;
        if (intr == _intr) return;
        _intr = intr;
        IntrOutput?.SetLevel(intr);
    }

    private sealed class IrqInput(Pic8259 pic, int irq) : IIrqLine
    {
        public void SetLevel(bool high) => pic.SetIrq(irq, high);
    }

    /// <summary>ELCR1 and ELCR2: two byte-wide ports; wider accesses become byte cycles (Isa/IsaByteCycles.cs).</summary>
    private sealed class ElcrPorts(Pic8259 pic) : IBusDevice, IByteRegisterFile
    {
        public string Name => "elcr";

        public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

        public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

        public int RegisterCount => 2;

        public byte ReadRegister(int offset) => offset == 0 ? pic.Master.Elcr : pic.Slave.Elcr;

        public void WriteRegister(int offset, byte value)
        {
            if (offset == 0) pic.Master.Elcr = value;
            else pic.Slave.Elcr = value;
            pic.Update(); // a line that became level sensitive may now request
        }
    }
}
