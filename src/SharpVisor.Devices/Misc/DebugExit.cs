// QEMU's isa-debug-exit (iobase 0xF4, iosize 4): a guest write of value v ends the VM with
// process exit status (v << 1) | 1, so a test guest can report pass/fail and never be confused
// with a normal QEMU exit of 0. As in QEMU, the value is what the access carried — a byte write
// gives its byte, a word write its word — and the offset within the 4-byte window does not matter.
// The machine decides how to stop; this device only reports the code. Reads return all ones
// (QEMU defines no read behaviour). The code is the full int; a host process exit keeps its low 8 bits.
using SharpVisor.Core.Bus;

namespace SharpVisor.Devices.Misc;

public sealed class DebugExit(Action<int> exitRequest) : IBusDevice
{
    public const int Size = 4;

    public string Name => "debug-exit";

    public ulong Read(ulong offset, int size) => BusValue.AllOnes(size);

    public void Write(ulong offset, int size, ulong value)
    {
        if (offset >= Size) return;
        exitRequest(unchecked((int)((value << 1) | 1)));
    }
}
