// LZMA2 decoder (the .xz format's filter 0x21; LZMA2 chunk layout as liblzma and the Linux
// kernel's xz-embedded decode it) with the LZMA decoder inside it (Igor Pavlov's LZMA
// specification, lzma-specification.txt from the LZMA SDK: range decoder, literal coder,
// length and distance coders, the 12-state machine and the four rep distances).
// Deliberate choices:
// - Output goes into one flat growable buffer instead of a circular dictionary: a kernel is
//   decoded whole, so the buffer *is* the dictionary and a match is a copy inside it. The
//   dictionary size from the filter properties still bounds match distances, as in liblzma.
// - Positions for pos_state and the literal position bits count from the last dictionary
//   reset, as liblzma's and xz-embedded's dictionary positions do.
// - Chunk control rules follow liblzma: the first chunk must reset the dictionary, a
//   dictionary reset needs new properties before the next LZMA chunk, and an LZMA chunk must
//   consume exactly its compressed size and leave the range coder's code at zero.
// - Every inconsistency is an InvalidDataException (the BCL's "corrupt compressed data").
using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace SharpVisor.Boot.LinuxBoot.Compression;

internal sealed class Lzma2Decoder
{
    /// <summary>The largest output this decoder produces (a sanity bound for corrupt size fields).</summary>
    public const int MaxOutput = 1 << 30;

    // Probability model (11-bit probabilities, 1024 = one half).
    private const int BitModelTotalBits = 11, BitModelTotal = 1 << BitModelTotalBits, MoveBits = 5;
    private const uint TopValue = 1 << 24;
    private const int States = 12, PosStatesMax = 16, LiteralCoderSize = 0x300;
    private const int MatchMinLen = 2, EndPosModelIndex = 14, FullDistances = 128, AlignBits = 4;
    private const int PosSlotBits = 6, LenToPosStates = 4;
    // Length coder layout: choice, choice2, low[16][8], mid[16][8], high[256].
    private const int LenChoice = 0, LenChoice2 = 1, LenLow = 2, LenMid = LenLow + PosStatesMax * 8, LenHigh = LenMid + PosStatesMax * 8, LenCoderSize = LenHigh + 256;
    // Offsets of each model in the one probability array.
    private const int IsMatch = 0, IsRep = IsMatch + States * PosStatesMax, IsRepG0 = IsRep + States, IsRepG1 = IsRepG0 + States,
        IsRepG2 = IsRepG1 + States, IsRep0Long = IsRepG2 + States, PosSlot = IsRep0Long + States * PosStatesMax,
        SpecPos = PosSlot + (LenToPosStates << PosSlotBits), Align = SpecPos + FullDistances - EndPosModelIndex,
        LenCoder = Align + (1 << AlignBits), RepLenCoder = LenCoder + LenCoderSize, Literal = RepLenCoder + LenCoderSize;
    /// <summary>LZMA2 limits lc + lp to 4, so at most 16 literal coders.</summary>
    private const int ProbsSize = Literal + (LiteralCoderSize << 4);

    private readonly ushort[] _probs = new ushort[ProbsSize];
    private readonly uint _dictSize;

    private byte[] _out;
    private int _pos, _dictStart;

    private byte[] _in = [];
    private int _inPos;
    private uint _range, _code;

    private int _lc, _lp, _pb;
    private int _state;
    private uint _rep0, _rep1, _rep2, _rep3;
    private bool _needDictReset = true, _needProps = true;

    /// <param name="dictSize">From the LZMA2 filter properties.</param>
    /// <param name="output">Buffer to decode into (grown as needed); <paramref name="outputPos"/> is where to start.</param>
    public Lzma2Decoder(uint dictSize, byte[] output, int outputPos)
    {
        _dictSize = dictSize;
        _out = output;
        _pos = _dictStart = outputPos;
    }

    public byte[] Output => _out;
    public int OutputPos => _pos;

    /// <summary>LZMA2 dictionary size from its one-byte filter property (.xz format §5.3.1).</summary>
    public static uint DictSizeFromProperty(byte p)
    {
        if (p > 40) throw new InvalidDataException($"LZMA2 dictionary size property {p} is over 40");
        if (p == 40) return uint.MaxValue;
        return (2u | (p & 1u)) << (p / 2 + 11);
    }

    /// <summary>
    /// Decodes LZMA2 chunks from <paramref name="input"/> at <paramref name="offset"/> up to and
    /// including the end marker (control byte 0); returns the offset just past it.
    /// </summary>
    public int Decode(byte[] input, int offset, int end)
    {
        _in = input;
        int p = offset;
        while (true)
        {
            if (p >= end) throw new InvalidDataException("LZMA2 data ends without an end-of-stream marker");
            byte control = input[p++];
            if (control == 0) return p;

            if (control >= 0xE0 || control == 1)
            {
                _needProps = true;
                _needDictReset = false;
                _dictStart = _pos;
            }
            else if (_needDictReset)
                throw new InvalidDataException($"LZMA2 chunk control 0x{control:x2} before the first dictionary reset");

            if (control >= 0x80)
            {
                if (end - p < 4) throw Truncated();
                int unpacked = ((control & 0x1F) << 16) + (input[p] << 8) + input[p + 1] + 1;
                int packed = (input[p + 2] << 8) + input[p + 3] + 1;
                p += 4;
                if (control >= 0xC0)
                {
                    if (p >= end) throw Truncated();
                    SetProperties(input[p++]);
                    _needProps = false;
                    ResetState();
                }
                else if (_needProps)
                    throw new InvalidDataException($"LZMA2 chunk control 0x{control:x2} without the properties a dictionary reset needs");
                else if (control >= 0xA0)
                    ResetState();
                if (packed > end - p) throw Truncated();
                Reserve(unpacked);
                DecodeLzmaChunk(p, p + packed, _pos + unpacked);
                p += packed;
            }
            else if (control <= 2)
            {
                // Uncompressed chunk: stored bytes that join the dictionary.
                if (end - p < 2) throw Truncated();
                int size = (input[p] << 8) + input[p + 1] + 1;
                p += 2;
                if (size > end - p) throw Truncated();
                Reserve(size);
                input.AsSpan(p, size).CopyTo(_out.AsSpan(_pos));
                _pos += size;
                p += size;
            }
            else
                throw new InvalidDataException($"LZMA2 chunk control byte 0x{control:x2} is reserved");
        }
    }

    private static InvalidDataException Truncated() => new("LZMA2 data is truncated");

    private void Reserve(int bytes)
    {
        if ((long)_pos + bytes <= _out.Length) return;
        long need = (long)_pos + bytes;
        if (need > MaxOutput) throw new InvalidDataException($"decompressed data would exceed {MaxOutput >> 20} MiB");
        long size = Math.Max(need, Math.Min(MaxOutput, (long)_out.Length * 2));
        Array.Resize(ref _out, (int)size);
    }

    private void SetProperties(byte props)
    {
        if (props >= 9 * 5 * 5) throw new InvalidDataException($"LZMA properties byte 0x{props:x2} is out of range");
        _lc = props % 9;
        props /= 9;
        _lp = props % 5;
        _pb = props / 5;
        if (_lc + _lp > 4) throw new InvalidDataException($"LZMA2 properties lc={_lc} lp={_lp}: lc + lp exceeds 4");
    }

    private void ResetState()
    {
        _probs.AsSpan().Fill(BitModelTotal / 2);
        _state = 0;
        _rep0 = _rep1 = _rep2 = _rep3 = 0;
    }

    // ---------------------------------------------------------------- range decoder

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Normalize()
    {
        if (_range < TopValue)
        {
            _range <<= 8;
            // Reading past the chunk is caught after the chunk (consumed size must match exactly);
            // past the array it reads zeros so a corrupt chunk cannot index out of bounds.
            _code = (_code << 8) | (_inPos < _in.Length ? _in[_inPos] : 0u);
            _inPos++;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Bit(int index)
    {
        ref ushort prob = ref _probs[index];
        uint bound = (_range >> BitModelTotalBits) * prob;
        uint bit;
        if (_code < bound)
        {
            _range = bound;
            prob += (ushort)((BitModelTotal - prob) >> MoveBits);
            bit = 0;
        }
        else
        {
            _range -= bound;
            _code -= bound;
            prob -= (ushort)(prob >> MoveBits);
            bit = 1;
        }
        Normalize();
        return bit;
    }

    private uint BitTree(int probs, int bits)
    {
        uint m = 1;
        for (int i = 0; i < bits; i++) m = (m << 1) | Bit(probs + (int)m);
        return m - (1u << bits);
    }

    private uint ReverseBitTree(int probs, int bits)
    {
        uint m = 1, symbol = 0;
        for (int i = 0; i < bits; i++)
        {
            uint bit = Bit(probs + (int)m);
            m = (m << 1) | bit;
            symbol |= bit << i;
        }
        return symbol;
    }

    private uint DirectBits(int count)
    {
        uint result = 0;
        for (int i = 0; i < count; i++)
        {
            _range >>= 1;
            uint bit = _code >= _range ? 1u : 0u;
            if (bit != 0) _code -= _range;
            result = (result << 1) | bit;
            Normalize();
        }
        return result;
    }

    private uint Length(int coder, int posState)
    {
        if (Bit(coder + LenChoice) == 0) return BitTree(coder + LenLow + posState * 8, 3);
        if (Bit(coder + LenChoice2) == 0) return 8 + BitTree(coder + LenMid + posState * 8, 3);
        return 16 + BitTree(coder + LenHigh, 8);
    }

    // ---------------------------------------------------------------- LZMA

    // Full optimisation from the first call: a kernel is one run of this loop (tens of MiB), so
    // tiered compilation would spend most of it in unoptimised code waiting for OSR.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DecodeLzmaChunk(int inStart, int inEnd, int outEnd)
    {
        var input = _in;
        if (input[inStart] != 0) throw new InvalidDataException("LZMA chunk does not start with a zero byte");
        _code = BinaryPrimitives.ReadUInt32BigEndian(input.AsSpan(inStart + 1));
        _range = uint.MaxValue;
        _inPos = inStart + 5;

        var output = _out;
        int pbMask = (1 << _pb) - 1, lpMask = (1 << _lp) - 1, lc = _lc;
        ulong maxDistance = _dictSize;
        while (_pos < outEnd)
        {
            int rel = _pos - _dictStart;
            int posState = rel & pbMask;
            if (Bit(IsMatch + (_state << 4) + posState) == 0)
            {
                int prev = rel > 0 ? output[_pos - 1] : 0;
                int probs = Literal + LiteralCoderSize * (((rel & lpMask) << lc) + (prev >> (8 - lc)));
                uint symbol = 1;
                if (_state < 7)
                {
                    while (symbol < 0x100) symbol = (symbol << 1) | Bit(probs + (int)symbol);
                }
                else
                {
                    uint matchByte = output[_pos - (int)_rep0 - 1];
                    while (symbol < 0x100)
                    {
                        uint matchBit = (matchByte >> 7) & 1;
                        matchByte <<= 1;
                        uint bit = Bit(probs + 0x100 + (int)(matchBit << 8) + (int)symbol);
                        symbol = (symbol << 1) | bit;
                        if (matchBit != bit)
                        {
                            while (symbol < 0x100) symbol = (symbol << 1) | Bit(probs + (int)symbol);
                            break;
                        }
                    }
                }
                output[_pos++] = (byte)symbol;
                _state = _state < 4 ? 0 : _state < 10 ? _state - 3 : _state - 6;
                continue;
            }

            uint len;
            if (Bit(IsRep + _state) != 0)
            {
                if (rel == 0) throw new InvalidDataException("LZMA repeated match before any data");
                if (Bit(IsRepG0 + _state) == 0)
                {
                    if (Bit(IsRep0Long + (_state << 4) + posState) == 0)
                    {
                        // Short rep: one byte from distance rep0.
                        if (_rep0 >= (uint)rel) throw new InvalidDataException($"LZMA short repeat distance {(ulong)_rep0 + 1} reaches before the dictionary");
                        _state = _state < 7 ? 9 : 11;
                        output[_pos] = output[_pos - (int)_rep0 - 1];
                        _pos++;
                        continue;
                    }
                }
                else
                {
                    uint dist;
                    if (Bit(IsRepG1 + _state) == 0) dist = _rep1;
                    else
                    {
                        if (Bit(IsRepG2 + _state) == 0) dist = _rep2;
                        else { dist = _rep3; _rep3 = _rep2; }
                        _rep2 = _rep1;
                    }
                    _rep1 = _rep0;
                    _rep0 = dist;
                }
                len = Length(RepLenCoder, posState);
                _state = _state < 7 ? 8 : 11;
            }
            else
            {
                _rep3 = _rep2; _rep2 = _rep1; _rep1 = _rep0;
                len = Length(LenCoder, posState);
                _state = _state < 7 ? 7 : 10;
                _rep0 = Distance(len);
                if (_rep0 == uint.MaxValue) throw new InvalidDataException("LZMA end marker inside an LZMA2 chunk");
            }

            // rep0 + 1 is the distance back; it must lie inside what this dictionary has seen.
            if ((ulong)_rep0 >= (ulong)(_pos - _dictStart) || (ulong)_rep0 >= maxDistance)
                throw new InvalidDataException($"LZMA match distance {(ulong)_rep0 + 1} reaches before the dictionary");
            int n = (int)len + MatchMinLen;
            if (n > outEnd - _pos) throw new InvalidDataException("LZMA match runs past the end of its LZMA2 chunk");
            int from = _pos - (int)_rep0 - 1;
            if (n <= _rep0 + 1)
                output.AsSpan(from, n).CopyTo(output.AsSpan(_pos));
            else
                for (int i = 0; i < n; i++) output[_pos + i] = output[from + i]; // overlapping: a run
            _pos += n;
        }

        if (_inPos != inEnd) throw new InvalidDataException($"LZMA chunk used {_inPos - inStart} bytes but declares {inEnd - inStart}");
        if (_code != 0) throw new InvalidDataException("LZMA chunk ends with a non-zero range decoder code");
    }

    private uint Distance(uint len)
    {
        int lenState = (int)Math.Min(len, LenToPosStates - 1);
        uint posSlot = BitTree(PosSlot + (lenState << PosSlotBits), PosSlotBits);
        if (posSlot < 4) return posSlot;
        int directBits = (int)(posSlot >> 1) - 1;
        uint dist = (2 | (posSlot & 1)) << directBits;
        if (posSlot < EndPosModelIndex)
            return dist + ReverseBitTree(SpecPos + (int)dist - (int)posSlot - 1, directBits);
        dist += DirectBits(directBits - AlignBits) << AlignBits;
        return dist + ReverseBitTree(Align, AlignBits);
    }
}
