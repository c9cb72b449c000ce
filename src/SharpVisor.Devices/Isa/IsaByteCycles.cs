// The one access rule for devices whose registers are 8-bit I/O ports, as on the ISA bus (IBM PC/AT
// Technical Reference, "I/O channel"; the PC/AT's bus controller and today's LPC bridges both do it):
// an 8-bit device answers only byte cycles, so a 16- or 32-bit access is carried out as consecutive
// byte cycles at port, port+1, …, the lowest port in the lowest byte of the value.
// Here that means, for an access of `size` bytes at `offset` of a device with `RegisterCount`
// byte registers:
// - byte i of the access is a cycle at offset + i, in increasing order, so side effects (FIFO pops,
//   flip-flops, command sequences) happen in the order the bus would produce them;
// - a cycle at an offset the device does not decode reads 0xFF (nothing drives the data lines) and
//   a write there is dropped;
// - sizes above 8 are cut to 8 bytes (no x86 access is wider); a size of 0 or less carries nothing.
// Deliberate deviation: the bytes that fall past the device go nowhere. On a real bus they would reach
// whatever decodes the next port; the AddressBus hands the whole access to the device at its first
// port, so a device cannot forward them. No guest relies on that (x86 port I/O is at most 4 bytes and
// OSes access 8-bit ports with byte instructions).
// Internal on purpose: a register cycle outside a bus access would skip the device's per-access work
// (the PIT takes its clock tick, the UART polls its timeout, before the cycles run).
using System.Runtime.CompilerServices;

namespace SharpVisor.Devices.Isa;

/// <summary>The byte-wide registers of an ISA port device, at offsets 0 … <see cref="RegisterCount"/> − 1.</summary>
internal interface IByteRegisterFile
{
    /// <summary>Number of byte offsets the device decodes (offsets it leaves undecoded inside may read 0xFF).</summary>
    int RegisterCount { get; }

    /// <summary>One byte read cycle at <paramref name="offset"/> (0 ≤ offset &lt; RegisterCount).</summary>
    byte ReadRegister(int offset);

    /// <summary>One byte write cycle at <paramref name="offset"/> (0 ≤ offset &lt; RegisterCount).</summary>
    void WriteRegister(int offset, byte value);
}

/// <summary>Splits bus accesses into the byte cycles an ISA bus would run (see the file comment).</summary>
internal static class IsaByteCycles
{
    /// <summary>The widest access carried out: 8 bytes.</summary>
    public const int MaxCycles = 8;

    /// <summary>The value an undecoded byte cycle reads: nothing drives the bus.</summary>
    public const byte Floating = 0xFF;

    /// <summary>Number of byte cycles for an access of <paramref name="size"/> bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Cycles(int size) => size <= 0 ? 0 : Math.Min(size, MaxCycles);

    /// <summary>
    /// True when byte <paramref name="i"/> of an access at <paramref name="offset"/> reaches a register
    /// of a device with <paramref name="registerCount"/> of them (no overflow for any offset).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Decodes(ulong offset, int i, int registerCount)
        => offset < (ulong)registerCount && (ulong)i < (ulong)registerCount - offset;

    public static ulong Read<TDevice>(TDevice device, ulong offset, int size) where TDevice : IByteRegisterFile
    {
        int n = Cycles(size);
        int count = device.RegisterCount;
        ulong v = 0;
        for (int i = 0; i < n; i++)
        {
            ulong b = Decodes(offset, i, count) ? device.ReadRegister((int)offset + i) : Floating;
            v |= b << (8 * i);
        }
        return v;
    }

    public static void Write<TDevice>(TDevice device, ulong offset, int size, ulong value) where TDevice : IByteRegisterFile
    {
        int n = Cycles(size);
        int count = device.RegisterCount;
        for (int i = 0; i < n; i++)
        {
            if (Decodes(offset, i, count)) device.WriteRegister((int)offset + i, (byte)(value >> (8 * i)));
        }
    }
}
