// POST diagnostic port 0x80 of the IBM PC/AT: firmware writes progress codes there (a "POST card"
// shows them). Writes record the code; reads return the last code written, as boards with a
// latching POST register do. (QEMU's ioport80 reads 0xFF instead; the latched value is more useful
// when debugging firmware.) Linux also writes to 0x80 as a tiny I/O delay; that is harmless here.
using SharpVisor.Core.Bus;

namespace SharpVisor.Devices.Misc;

public sealed class PostCodePort(Action<byte>? onCode = null) : IBusDevice
{
    public string Name => "post";

    public byte LastCode { get; private set; }
    public long WriteCount { get; private set; }

    public ulong Read(ulong offset, int size)
        => offset == 0 ? LastCode | (BusValue.AllOnes(size) & ~0xFFUL) : BusValue.AllOnes(size);

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset != 0) return; // only one byte is decoded
        LastCode = (byte)value;
        WriteCount++;
        onCode?.Invoke(LastCode);
    }
}
