using Iced.Intel;

namespace SharpVisor.Cpu.Decode;

/// <summary>
/// A run of decoded instructions starting at one guest-physical address, ending at a control
/// transfer, at an instruction that changes how code is fetched (CR0/CR3/CR4/EFER writes end the
/// block through the engine's end-of-block flag), or at the end of the page. Valid while the page
/// generation it was decoded under is current, it is entered at the same RIP in the same mode, and
/// (16/32-bit code) the CS limit still covers its last byte. The CS base needs no check: the
/// block is found by the physical address of CS.base + RIP, and its branch targets are offsets.
/// </summary>
internal sealed class Block
{
    public required ulong Phys;
    public required ulong Rip;
    public required int Bits;
    public required uint Generation;
    /// <summary>
    /// The offset of the block's last byte within CS (Rip + its length − 1): in 16/32-bit code a
    /// block stays valid only while the CS limit covers it, since a smaller limit loaded later
    /// (same base and size) must make the first instruction past it #GP(0).
    /// </summary>
    public required ulong LastByte;
    public required Instruction[] Instructions;
    /// <summary>The pre-decoded form of each instruction (same index as <see cref="Instructions"/>).</summary>
    public required Uop[] Ops;
    /// <summary>
    /// How many Uops the block loop calls: <see cref="Ops"/>.Length, or one less when the last two
    /// instructions (a register ALU/INC/DEC and the Jcc that ends the block) run fused as one
    /// handler call (the first of the pair has <see cref="Uop.Fused"/> set).
    /// </summary>
    public required int Run;
    /// <summary>
    /// Set when the block is in the cache and its last instruction is a pre-decoded one (a near
    /// branch, or any fast form when the block ended at the page or length limit): such a block
    /// cannot change CS, the mode, paging or the TLB (those instructions are Slow and end their
    /// blocks), so the block after it is fetched through the same translation as the block itself.
    /// </summary>
    public bool Linkable;
    /// <summary>In the block cache (not an instruction that straddles a page): may be linked to.</summary>
    public bool Cached;
    /// <summary>
    /// Successors that FetchBlock returned after this block, in the same physical page, at the
    /// same distance in RIP as in physical address (so in the same linear page as this block,
    /// whatever CS's base). Used by the block loop with their page generation and the CS limit
    /// checked again (Dispatch.cs, NextBlock).
    /// </summary>
    public Block? Link0, Link1;
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
