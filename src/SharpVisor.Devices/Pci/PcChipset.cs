// The two PCI functions that make a PC look like QEMU's "pc" machine to firmware and Linux:
//   00:00.0 Intel 82441FX PMC (440FX host bridge), 8086:1237 rev 02, class 06/00 (host bridge);
//   00:01.0 Intel 82371SB PIIX3 PCI-to-ISA bridge, 8086:7000, class 06/01, header type multi-function.
// From the 82441FX datasheet: PAM0–PAM6 (0x59–0x5F) and SMRAM (0x72) are stored so firmware reads
// back what it wrote, but they do not change the memory map (the BIOS area is RAM-backed already).
// From the 82371SB datasheet: PIRQRC[A:D] (0x60–0x63, default 0x80 = routing disabled, bits 3–0 the
// ISA IRQ), TOM (0x69), and the ISA recovery timer (0x4C); the machine reads the PIRQ routing to wire
// PCI INTx to the ISA IRQ lines. Other chipset registers read their reset value and ignore writes.
namespace SharpVisor.Devices.Pci;

public sealed class I440fxHostBridge : PciFunction
{
    public const int Pam0 = 0x59, Pam6 = 0x5F, Smram = 0x72;

    public I440fxHostBridge() : base("i440fx", 0x8086, 0x1237, revision: 0x02, classCode: 0x06, subClass: 0x00)
    {
        SetU16(Command, CommandMemory | CommandIo);
        SetU16(Status, 0x0280); // fast back-to-back capable, medium DEVSEL timing
        for (int r = Pam0; r <= Pam6; r++) SetWriteMask(r, 1, 0xFF);
        SetWriteMask(Pam0, 1, 0x30); // PAM0 has only HIENABLE (bits 5–4, 0xF0000–0xFFFFF)
        SetU8(Smram, 0x02);
        SetWriteMask(Smram, 1, 0x78); // D_OPEN, D_CLS, D_LCK, G_SMRAME; C_BASE_SEG fixed at 010
    }
}

public sealed class Piix3IsaBridge : PciFunction
{
    public const int IsaRecovery = 0x4C, PirqRouteA = 0x60, TopOfMemory = 0x69;
    public const byte PirqDisabled = 0x80;

    public Piix3IsaBridge() : base("piix3-isa", 0x8086, 0x7000, revision: 0x00, classCode: 0x06, subClass: 0x01,
        multiFunction: true)
    {
        SetU16(Command, CommandIo | CommandMemory | CommandBusMaster);
        SetU16(Status, 0x0200); // medium DEVSEL timing
        SetU8(IsaRecovery, 0x4D);
        SetWriteMask(IsaRecovery, 1, 0xFF);
        for (int i = 0; i < 4; i++)
        {
            SetU8(PirqRouteA + i, PirqDisabled);
            SetWriteMask(PirqRouteA + i, 1, 0x8F);
        }
        SetU8(TopOfMemory, 0x02);
        SetWriteMask(TopOfMemory, 1, 0xFE);
    }

    /// <summary>
    /// The ISA IRQ that PIRQ <paramref name="pin"/> (0 = A … 3 = D) is routed to, or −1 when routing is
    /// disabled or names a reserved IRQ (0–2, 8 and 13 are not valid targets per the datasheet).
    /// </summary>
    public int GetPirqRoute(int pin)
    {
        if ((uint)pin > 3) return -1;
        uint v = ReadConfig(PirqRouteA + pin, 1);
        if ((v & PirqDisabled) != 0) return -1;
        int irq = (int)(v & 0x0F);
        return irq is < 3 or 8 or 13 ? -1 : irq;
    }

    /// <summary>Raised after the guest rewrites PIRQ routing, so the machine can rewire INTx.</summary>
    public event Action? PirqRoutingChanged;

    protected override void OnConfigWritten(int register, int size)
    {
        if (register < PirqRouteA + 4 && register + size > PirqRouteA) PirqRoutingChanged?.Invoke();
    }
}
