using Iced.Intel;

namespace SharpVisor.Cpu.Decode;

/// <summary>
/// A run of decoded instructions starting at one guest-physical address, ending at a control
/// transfer, at an instruction that changes how code is fetched (CR0/CR3/CR4/EFER writes end the
/// block through the engine's end-of-block flag), or at the end of the page. Valid while the page
/// generation it was decoded under is current and it is entered at the same RIP in the same mode.
/// </summary>
internal sealed class Block
{
    public required ulong Phys;
    public required ulong Rip;
    public required int Bits;
    public required uint Generation;
    public required Instruction[] Instructions;
    /// <summary>The pre-decoded form of each instruction (same index as <see cref="Instructions"/>).</summary>
    public required Uop[] Ops;
    /// <summary>Times entered (the translator's hotness counter).</summary>
    public long Executions;
}

/// <summary>Iced code reader over host memory of the guest page being decoded.</summary>
internal sealed unsafe class PointerCodeReader : CodeReader
{
    private byte* _p;
    private int _left;

    public void Reset(byte* p, int length) { _p = p; _left = length; }

    public override int ReadByte()
    {
        if (_left <= 0) return -1;
        _left--;
        return *_p++;
    }
}

/// <summary>Iced code reader over a small array (instructions that straddle pages).</summary>
internal sealed class ArrayCodeReader : CodeReader
{
    private byte[] _b = [];
    private int _pos, _len;
    public void Reset(byte[] b, int len) { _b = b; _len = len; _pos = 0; }
    public override int ReadByte() => _pos < _len ? _b[_pos++] : -1;
}
