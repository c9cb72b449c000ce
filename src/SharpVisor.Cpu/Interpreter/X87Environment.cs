// FSTENV/FNSTENV, FLDENV, FSAVE/FNSAVE, FRSTOR: the x87 environment image in its four layouts,
// Intel SDM Vol. 1 §8.1.10, figures 8-9 (32-bit protected mode), 8-10 (32-bit real/virtual-8086 mode),
// 8-11 (16-bit protected mode) and 8-12 (16-bit real/virtual-8086 mode); 64-bit mode uses the
// protected-mode layouts with FIP/FDP truncated to 32 bits. FSAVE appends ST(0)–ST(7), 10 bytes each.
//
// The real-mode layouts hold 20-bit (16-bit image) or 32-bit linear instruction and data pointers,
// computed as selector·16 + offset; loading such an image sets the offset to that linear value and
// the selector to 0, so a save after a load gives the same bytes. The reserved upper halves of the
// 32-bit image's 16-bit fields are written as FFFFH, as Intel processors do; they are ignored on load.
// FCS and FDS are deprecated (CPUID.(EAX=07H,ECX=0):EBX[13], SDM Vol. 1 §8.1.8): the protected-mode
// layouts store them as 0000H and loading one ignores them, as on the host CPU.
using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Cpu.State;
using SharpVisor.SoftFloat;

namespace SharpVisor.Cpu;

public sealed unsafe partial class SoftwareVcpu
{
    private const int EnvSize16 = 14, EnvSize32 = 28, StRegisterBytes = 10;

    /// <summary>Real-address and virtual-8086 mode use the real-mode layouts.</summary>
    private bool X87RealModeLayout => !_protected || (_flags & Rflags.VM) != 0;

    private static bool Env32(ref Instruction i) => i.MemorySize is MemorySize.FpuEnv28 or MemorySize.FpuState108;

    private void X87SaveEnvironment(Span<byte> env, bool size32)
    {
        ushort cw = _fcw, sw = Fsw, tw = FullTagWord();
        int fop = _fop & 0x7FF;
        if (!X87RealModeLayout)
        {
            if (size32)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(env, 0xFFFF_0000u | cw);
                BinaryPrimitives.WriteUInt32LittleEndian(env[4..], 0xFFFF_0000u | sw);
                BinaryPrimitives.WriteUInt32LittleEndian(env[8..], 0xFFFF_0000u | tw);
                BinaryPrimitives.WriteUInt32LittleEndian(env[12..], (uint)_fip);
                BinaryPrimitives.WriteUInt32LittleEndian(env[16..], (uint)fop << 16); // FCS: 0000H
                BinaryPrimitives.WriteUInt32LittleEndian(env[20..], (uint)_fdp);
                BinaryPrimitives.WriteUInt32LittleEndian(env[24..], 0xFFFF_0000u); // FDS: 0000H
            }
            else
            {
                BinaryPrimitives.WriteUInt16LittleEndian(env, cw);
                BinaryPrimitives.WriteUInt16LittleEndian(env[2..], sw);
                BinaryPrimitives.WriteUInt16LittleEndian(env[4..], tw);
                BinaryPrimitives.WriteUInt16LittleEndian(env[6..], (ushort)_fip);
                BinaryPrimitives.WriteUInt16LittleEndian(env[8..], 0); // FCS
                BinaryPrimitives.WriteUInt16LittleEndian(env[10..], (ushort)_fdp);
                BinaryPrimitives.WriteUInt16LittleEndian(env[12..], 0); // FDS
            }
            return;
        }
        uint ip = (uint)(((ulong)_fcs << 4) + _fip), dp = (uint)(((ulong)_fds << 4) + _fdp);
        if (size32)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(env, 0xFFFF_0000u | cw);
            BinaryPrimitives.WriteUInt32LittleEndian(env[4..], 0xFFFF_0000u | sw);
            BinaryPrimitives.WriteUInt32LittleEndian(env[8..], 0xFFFF_0000u | tw);
            BinaryPrimitives.WriteUInt32LittleEndian(env[12..], 0xFFFF_0000u | (ip & 0xFFFF));
            BinaryPrimitives.WriteUInt32LittleEndian(env[16..], (ip & 0xFFFF_0000) >> 4 | (uint)fop);
            BinaryPrimitives.WriteUInt32LittleEndian(env[20..], 0xFFFF_0000u | (dp & 0xFFFF));
            BinaryPrimitives.WriteUInt32LittleEndian(env[24..], (dp & 0xFFFF_0000) >> 4);
        }
        else
        {
            BinaryPrimitives.WriteUInt16LittleEndian(env, cw);
            BinaryPrimitives.WriteUInt16LittleEndian(env[2..], sw);
            BinaryPrimitives.WriteUInt16LittleEndian(env[4..], tw);
            BinaryPrimitives.WriteUInt16LittleEndian(env[6..], (ushort)ip);
            BinaryPrimitives.WriteUInt16LittleEndian(env[8..], (ushort)((ip >> 4) & 0xF000 | (uint)fop));
            BinaryPrimitives.WriteUInt16LittleEndian(env[10..], (ushort)dp);
            BinaryPrimitives.WriteUInt16LittleEndian(env[12..], (ushort)((dp >> 4) & 0xF000));
        }
    }

    private void X87LoadEnvironment(ReadOnlySpan<byte> env, bool size32)
    {
        ushort cw, sw, tw;
        if (size32)
        {
            cw = BinaryPrimitives.ReadUInt16LittleEndian(env);
            sw = BinaryPrimitives.ReadUInt16LittleEndian(env[4..]);
            tw = BinaryPrimitives.ReadUInt16LittleEndian(env[8..]);
        }
        else
        {
            cw = BinaryPrimitives.ReadUInt16LittleEndian(env);
            sw = BinaryPrimitives.ReadUInt16LittleEndian(env[2..]);
            tw = BinaryPrimitives.ReadUInt16LittleEndian(env[4..]);
        }
        if (!X87RealModeLayout)
        {
            if (size32)
            {
                _fip = BinaryPrimitives.ReadUInt32LittleEndian(env[12..]);
                uint csOp = BinaryPrimitives.ReadUInt32LittleEndian(env[16..]);
                _fop = (ushort)((csOp >> 16) & 0x7FF);
                _fdp = BinaryPrimitives.ReadUInt32LittleEndian(env[20..]);
                _fcs = _fds = 0;
            }
            else
            {
                _fip = BinaryPrimitives.ReadUInt16LittleEndian(env[6..]);
                _fdp = BinaryPrimitives.ReadUInt16LittleEndian(env[10..]);
                _fcs = _fds = 0;
                // The 16-bit protected-mode image has no opcode field; FOP keeps its value.
            }
        }
        else if (size32)
        {
            uint ipOp = BinaryPrimitives.ReadUInt32LittleEndian(env[16..]);
            _fip = BinaryPrimitives.ReadUInt16LittleEndian(env[12..]) | (ipOp >> 12 & 0xFFFF) << 16;
            _fop = (ushort)(ipOp & 0x7FF);
            _fdp = BinaryPrimitives.ReadUInt16LittleEndian(env[20..]) | (BinaryPrimitives.ReadUInt32LittleEndian(env[24..]) >> 12 & 0xFFFF) << 16;
            _fcs = _fds = 0;
        }
        else
        {
            ushort ipOp = BinaryPrimitives.ReadUInt16LittleEndian(env[8..]);
            _fip = BinaryPrimitives.ReadUInt16LittleEndian(env[6..]) | (uint)(ipOp & 0xF000) << 4;
            _fop = (ushort)(ipOp & 0x7FF);
            _fdp = BinaryPrimitives.ReadUInt16LittleEndian(env[10..]) | (uint)(BinaryPrimitives.ReadUInt16LittleEndian(env[12..]) & 0xF000) << 4;
            _fcs = _fds = 0;
        }
        SetFcw(cw);
        Fsw = sw;
        SetFullTagWord(tw);
        X87RecomputeEs();
    }

    /// <summary>FNSTENV/FSTENV: stores the environment, then masks every exception (SDM Vol. 2 FSTENV).</summary>
    private Status X87Fstenv(ref Instruction i)
    {
        bool size32 = Env32(ref i);
        Span<byte> env = stackalloc byte[EnvSize32];
        env = env[..(size32 ? EnvSize32 : EnvSize16)];
        X87SaveEnvironment(env, size32);
        var st = WriteBytes(MemSeg(ref i), EffectiveAddress(ref i), env);
        if (st != Status.Ok) return st;
        SetFcw((ushort)(_fcw | 0x3F));
        return Status.Ok;
    }

    private Status X87Fldenv(ref Instruction i)
    {
        bool size32 = Env32(ref i);
        Span<byte> env = stackalloc byte[EnvSize32];
        env = env[..(size32 ? EnvSize32 : EnvSize16)];
        var st = ReadBytes(MemSeg(ref i), EffectiveAddress(ref i), env);
        if (st != Status.Ok) return st;
        X87LoadEnvironment(env, size32);
        return Status.Ok;
    }

    /// <summary>FNSAVE/FSAVE: environment and ST(0)–ST(7), then the FNINIT state.</summary>
    private Status X87Fsave(ref Instruction i)
    {
        bool size32 = Env32(ref i);
        int envSize = size32 ? EnvSize32 : EnvSize16;
        Span<byte> image = stackalloc byte[EnvSize32 + 8 * StRegisterBytes];
        image = image[..(envSize + 8 * StRegisterBytes)];
        var st = CheckStateImageInRam(MemSeg(ref i), EffectiveAddress(ref i), image.Length, Access.Write, 1, "FSAVE");
        if (st != Status.Ok) return st;
        X87SaveEnvironment(image, size32);
        for (int s = 0; s < 8; s++)
            StReg(s).WriteBytes(image.Slice(envSize + s * StRegisterBytes, StRegisterBytes));
        st = WriteBytes(MemSeg(ref i), EffectiveAddress(ref i), image);
        if (st != Status.Ok) return st;
        X87Init();
        return Status.Ok;
    }

    private Status X87Frstor(ref Instruction i)
    {
        bool size32 = Env32(ref i);
        int envSize = size32 ? EnvSize32 : EnvSize16;
        Span<byte> image = stackalloc byte[EnvSize32 + 8 * StRegisterBytes];
        image = image[..(envSize + 8 * StRegisterBytes)];
        var st = CheckStateImageInRam(MemSeg(ref i), EffectiveAddress(ref i), image.Length, Access.Read, 1, "FRSTOR");
        if (st != Status.Ok) return st;
        st = ReadBytes(MemSeg(ref i), EffectiveAddress(ref i), image);
        if (st != Status.Ok) return st;
        X87LoadEnvironment(image, size32);
        // ST(i) is relative to the TOP just loaded.
        for (int s = 0; s < 8; s++)
            _fpr[(_ftop + s) & 7] = Float80.FromBytes(image.Slice(envSize + s * StRegisterBytes, StRegisterBytes));
        return Status.Ok;
    }
}
