// POST diagnostic port 0x80 of the IBM PC/AT: firmware writes progress codes there (a "POST card"
// shows them). Writes record the code; reads return the last code written, as boards with a
// latching POST register do. (QEMU's ioport80 reads 0xFF instead; the latched value is more useful
// when debugging firmware.) Linux also writes to 0x80 as a tiny I/O delay; that is harmless here.
using SharpVisor.Core.Bus;
using SharpVisor.Devices.Isa;

namespace SharpVisor.Devices.Misc;

public sealed class PostCodePort(Action<byte>? onCode = null) : IBusDevice, IByteRegisterFile
{
    public string Name => "post";

    public byte LastCode { get; private set; }
    public long WriteCount { get; private set; }

    // One byte-wide port: wider accesses become byte cycles (Isa/IsaByteCycles.cs), so only the low
    // byte of a wider write is a code and the upper bytes of a read float high.
    public ulong Read(ulong offset, int size) => IsaByteCycles.Read(this, offset, size);

    public void Write(ulong offset, int size, ulong value) => IsaByteCycles.Write(this, offset, size, value);

    int IByteRegisterFile.RegisterCount => 1;
    byte IByteRegisterFile.ReadRegister(int offset) => LastCode;

    void IByteRegisterFile.WriteRegister(int offset, byte value)
    {
        LastCode = value;
        WriteCount++;
        onCode?.Invoke(value);
    }
}
