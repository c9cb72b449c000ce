// One KVM_EXIT_IO presented in Core's exit model (api.rst, "KVM_EXIT_IO"): KVM hands over
// `count` elements of `size` bytes at kvm_run + data_offset (count > 1 for INS/OUTS with a REP
// prefix). Core presents string I/O one element per exit, in order, so each element becomes one
// IoIn/IoOut; for IN the value the run loop stores in VcpuExit.Data is written into the element's
// slot, and KVM_RUN may be re-entered only when every element is done (KVM then copies the IN
// data to guest memory and completes the instruction).
using System.Runtime.CompilerServices;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Kvm;

internal unsafe struct PioExit
{
    private byte* _data;
    private int _size, _count, _index;
    private ushort _port;
    private bool _in;

    /// <summary>Starts presenting an I/O exit and fills <paramref name="exit"/> with its first element.</summary>
    public ExitReason Begin(VcpuExit exit, bool isIn, int size, ushort port, int count, byte* data)
    {
        _in = isIn;
        _size = size;
        _port = port;
        _count = count;
        _index = 0;
        _data = data;
        return Present(exit);
    }

    /// <summary>
    /// Completes the element the run loop has just handled (for IN, stores exit.Data into its
    /// slot) and presents the next one. False when all elements are done and KVM_RUN may resume.
    /// </summary>
    public bool Advance(VcpuExit exit, out ExitReason reason)
    {
        if (_in) Store(_data + _index * _size, exit.Data);
        if (++_index < _count)
        {
            reason = Present(exit);
            return true;
        }
        reason = ExitReason.None;
        return false;
    }

    private readonly ExitReason Present(VcpuExit exit)
    {
        exit.Address = _port;
        exit.Size = _size;
        exit.Message = null;
        if (_in)
        {
            // Unmapped ports read as all ones unless the run loop supplies a value.
            exit.Data = _size >= 8 ? ulong.MaxValue : (1UL << (8 * _size)) - 1;
            return exit.Reason = ExitReason.IoIn;
        }
        byte* p = _data + _index * _size;
        exit.Data = _size switch
        {
            1 => *p,
            2 => Unsafe.ReadUnaligned<ushort>(p),
            4 => Unsafe.ReadUnaligned<uint>(p),
            _ => Unsafe.ReadUnaligned<ulong>(p),
        };
        return exit.Reason = ExitReason.IoOut;
    }

    private readonly void Store(byte* p, ulong value)
    {
        switch (_size)
        {
            case 1: *p = (byte)value; break;
            case 2: Unsafe.WriteUnaligned(p, (ushort)value); break;
            case 4: Unsafe.WriteUnaligned(p, (uint)value); break;
            default: Unsafe.WriteUnaligned(p, value); break;
        }
    }
}
