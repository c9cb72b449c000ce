// Bochs/QEMU debug console ("debugcon", port 0xE9): every byte written goes straight to the host,
// with no UART to program — firmware (SeaBIOS with CONFIG_DEBUG_IO) and test kernels print here.
// Reads return 0xE9, the readback value Bochs defined so software can detect the port.
// Only the low byte of a wider write is taken, as QEMU's one-byte port does.
using SharpVisor.Core.Bus;

namespace SharpVisor.Devices.Misc;

public sealed class DebugConsole(Action<byte> sink) : IBusDevice
{
    public const byte ReadbackValue = 0xE9;

    public string Name => "debugcon";

    public ulong Read(ulong offset, int size)
        => offset == 0 ? ReadbackValue | (BusValue.AllOnes(size) & ~0xFFUL) : BusValue.AllOnes(size);

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset == 0) sink((byte)value);
    }
}
