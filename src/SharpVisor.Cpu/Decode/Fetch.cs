using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu.Decode;
using SharpVisor.Cpu.State;

namespace SharpVisor.Cpu;

/// <summary>Instruction fetch: CS checks, the execute TLB, and the direct-mapped decoded-block cache.</summary>
public sealed unsafe partial class SoftwareVcpu
{
    private const int BlockCacheBits = 14;
    private const int MaxBlockInstructions = 64;
    private readonly Block?[] _blockCache = new Block?[1 << BlockCacheBits];
    private readonly PointerCodeReader _codeReader = new();
    private readonly ArrayCodeReader _crossReader = new();
    private readonly byte[] _crossBytes = new byte[32];
    // Decoders are bound to their reader: one set over guest pages, one over the straddle buffer.
    private Decoder? _dec16, _dec32, _dec64;
    private Decoder? _crossDec16, _crossDec32, _crossDec64;
    private readonly List<Instruction> _decodeScratch = new(MaxBlockInstructions);
    internal long _blocksDecoded;
    /// <summary>Set by instructions after which the rest of the block must not run as decoded.</summary>
    internal bool _endBlock;
    /// <summary>Single-step, or execute breakpoints armed: blocks of one instruction, checked individually.</summary>
    internal bool _singleInstructionBlocks;

    private Decoder DecoderFor(int bits) => bits switch
    {
        64 => _dec64 ??= Decoder.Create(64, _codeReader),
        32 => _dec32 ??= Decoder.Create(32, _codeReader),
        _ => _dec16 ??= Decoder.Create(16, _codeReader),
    };

    private Decoder CrossDecoderFor(int bits) => bits switch
    {
        64 => _crossDec64 ??= Decoder.Create(64, _crossReader),
        32 => _crossDec32 ??= Decoder.Create(32, _crossReader),
        _ => _crossDec16 ??= Decoder.Create(16, _crossReader),
    };

    /// <summary>Finds or decodes the block at CS:RIP.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Status FetchBlock(out Block? block)
    {
        block = null;
        ulong rip = _rip;
        ulong lin;
        ref var cs = ref _seg[Seg.CS];
        if (_mode64)
        {
            lin = rip;
            if (!IsCanonical(lin)) return GP(0);
        }
        else
        {
            if (rip > cs.Limit) return GP(0);
            lin = (cs.Base + rip) & 0xFFFF_FFFF;
        }

        ulong cls = _tlbClass == ClassSupervisorAc ? ClassSupervisor : _tlbClass;
        ref var e = ref _tlbExec[(int)((lin >> 12) & (TlbSize - 1))];
        byte* host;
        ulong phys;
        if (e.Tag == ((lin & PageMask) | cls))
        {
            host = (byte*)(e.Addend + (nint)lin);
            phys = e.PhysPage | (lin & 0xFFF);
        }
        else
        {
            var st = TranslateSlow(lin, Access.Execute, cls, out host, out phys);
            if (st != Status.Ok) return st;
            if (host == null) return FetchFromMmio(phys);
        }

        // Indexed by every address bit: blocks may start at any byte, and two that start within the same
        // four bytes (a 2-byte instruction, then a branch target after it) must not evict each other
        // on every pass of a loop (they did with phys >> 2: the 32-bit integer benchmark re-decoded a
        // block per iteration).
        int idx = (int)((phys ^ (phys >> BlockCacheBits)) & ((1 << BlockCacheBits) - 1));
        var b = _blockCache[idx];
        if (b != null && b.Phys == phys && b.Rip == rip && b.Bits == _codeBits && b.Generation == PageGeneration(phys)
            && (!_singleInstructionBlocks || b.Instructions.Length == 1) && (_mode64 || b.LastByte <= cs.Limit))
        {
            block = b;
            return Status.Ok;
        }
        return DecodeBlock(rip, lin, phys, host, idx, out block);
    }

    // Out of line: the message's string handler would otherwise be zeroed on every block.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Status FetchFromMmio(ulong phys)
    {
        Unsupported($"instruction fetch from MMIO address {phys:x}");
        return Status.Exit;
    }

    private Status DecodeBlock(ulong rip, ulong lin, ulong phys, byte* host, int cacheIndex, out Block? block)
    {
        block = null;
        int bits = _codeBits;
        ulong ipMask = bits == 64 ? ulong.MaxValue : bits == 32 ? 0xFFFF_FFFFUL : 0xFFFF;
        int pageLeft = 0x1000 - (int)(lin & 0xFFF);
        // In 16/32-bit code the CS limit also ends what may be fetched.
        ulong limitLeft = bits == 64 ? ulong.MaxValue : _seg[Seg.CS].Limit - rip + 1;
        int avail = (int)Math.Min((ulong)pageLeft, limitLeft);

        _codeReader.Reset(host, avail);
        var dec = DecoderFor(bits);
        dec.IP = rip;
        _decodeScratch.Clear();
        int max = _singleInstructionBlocks ? 1 : MaxBlockInstructions;
        int consumed = 0;
        bool cacheable = true;
        while (_decodeScratch.Count < max)
        {
            dec.Decode(out var ins);
            if (dec.LastError == DecoderError.NoMoreBytes)
            {
                if (_decodeScratch.Count > 0) break; // the straddling instruction starts the next block
                var st = DecodeStraddling(rip, lin, bits, avail, ref ins);
                if (st != Status.Ok) return st;
                cacheable = false;
                _decodeScratch.Add(ins);
                consumed += ins.Length;
                break;
            }
            _decodeScratch.Add(ins);
            consumed += ins.Length;
            if (ins.FlowControl != FlowControl.Next || ins.Code == Code.INVALID) break;
            if (EndsBlock(ref ins)) break;
            if (consumed >= avail) break;
        }
        _blocksDecoded++;
        var instructions = _decodeScratch.ToArray();
        var ops = new Uop[instructions.Length];
        for (int k = 0; k < instructions.Length; k++) ops[k] = Predecode(ref instructions[k], ipMask);
        var b = new Block
        {
            Phys = phys, Rip = rip, Bits = bits,
            LastByte = rip + (ulong)Math.Max(consumed, 1) - 1,
            Generation = PageGeneration(phys),
            Instructions = instructions,
            Ops = ops,
            Run = ops.Length - (_fuse && Fuse(ops) ? 1 : 0),
        };
        if (cacheable)
        {
            MarkCodePage(phys);
            b.Generation = PageGeneration(phys);
            b.Cached = true;
            b.Linkable = _link && ops[^1].Fn != null;
            _blockCache[cacheIndex] = b;
        }
        block = b;
        return Status.Ok;
    }

    /// <summary>An instruction crossing a page (or the CS limit): gather its bytes through both translations.</summary>
    private Status DecodeStraddling(ulong rip, ulong lin, int bits, int avail, ref Instruction ins)
    {
        int n = 0;
        ulong cls = _tlbClass == ClassSupervisorAc ? ClassSupervisor : _tlbClass;
        for (; n < 15; n++)
        {
            ulong a = Wrap(lin + (ulong)n);
            if (bits != 64 && rip + (ulong)n > _seg[Seg.CS].Limit) break;
            var st = ReadLinearSlow(a, 1, cls, Access.Execute, out ulong v);
            if (st == Status.NeedInput) { Unsupported("instruction fetch from MMIO"); return Status.Exit; }
            if (st != Status.Ok)
            {
                if (n >= avail) { EndInstructionIo(); break; } // fault beyond what is needed is reported only if needed
                return st;
            }
            _crossBytes[n] = (byte)v;
        }
        _crossReader.Reset(_crossBytes, n);
        var dec = CrossDecoderFor(bits);
        dec.IP = rip;
        dec.Decode(out ins);
        if (dec.LastError == DecoderError.NoMoreBytes)
        {
            // The bytes past the page or limit were needed but could not be fetched.
            if (bits != 64 && rip + (ulong)n > _seg[Seg.CS].Limit) return GP(0);
            var s = TranslateSlow(Wrap(lin + (ulong)n), Access.Execute, cls, out _, out _);
            return s != Status.Ok ? s : GP(0);
        }
        return Status.Ok;
    }

    /// <summary>
    /// Instructions after which fetch assumptions (paging, mode, code) or interrupt recognition
    /// (IF, the MOV/POP SS shadow) may change, decided from the encoding alone. Data-segment loads,
    /// CLI, LGDT/LIDT/LTR change neither (a descriptor table is read only by a later far transfer or
    /// delivery, which ends its block itself). Handlers whose effect depends on operands set
    /// <see cref="_endBlock"/> instead: far transfers, IRET, the fast system calls, task switches,
    /// MOV to DR, EFER writes, writes to a code page.
    /// </summary>
    private static bool EndsBlock(ref Instruction ins) => ins.Code switch
    {
        Code.Mov_cr_r32 or Code.Mov_cr_r64 or Code.Wrmsr or Code.Lmsw_rm16 or Code.Lmsw_r32m16 or Code.Lmsw_r64m16
            or Code.Invlpg_m or Code.Hlt or Code.Sti or Code.Popfw or Code.Popfd or Code.Popfq
            or Code.Popw_SS or Code.Popd_SS => true,
        Code.Mov_Sreg_rm16 or Code.Mov_Sreg_r32m16 or Code.Mov_Sreg_r64m16 => ins.Op0Register == Register.SS,
        _ => false,
    };
}
