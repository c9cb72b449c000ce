// Bochs/QEMU debug console ("debugcon", port 0xE9): every byte written goes straight to the host,
// with no UART to program — firmware (SeaBIOS with CONFIG_DEBUG_IO) and test kernels print here.
// Reads return 0xE9, the readback value Bochs defined so software can detect the port.
// A wider access is split into byte cycles like every 8-bit port here (Isa/IsaByteCycles.cs): only
// its low byte reaches the console, as with QEMU's one-byte port.
using SharpVisor.Core.Bus;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Misc;

public sealed class DebugConsole(Action<byte> sink) : IBusDevice, IByteRegisterFile
{
    public const byte ReadbackValue = 0xE9;

    public string Name => "debugcon";

    // One byte-wide port: wider accesses become byte cycles (Isa/IsaByteCycles.cs), so only the
    // low byte of a wider write is printed and the upper bytes of a read float high.
    public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

    public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

    int IByteRegisterFile.RegisterCount => 1;
    byte IByteRegisterFile.ReadRegister(int offset) => ReadbackValue;
    void IByteRegisterFile.WriteRegister(int offset, byte value) => sink(value);
}
