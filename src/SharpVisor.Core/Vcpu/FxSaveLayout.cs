using System.Buffers.Binary;

namespace SharpVisor.Core.Vcpu;

/// <summary>
/// Offsets of the FXSAVE64 image (Intel SDM Vol. 1 §10.5.1, Table 10-2, REX.W form): the x87
/// control/status/tag words, last-instruction pointers, MXCSR, ST0–ST7 in stack order (10 bytes
/// used of 16) and XMM0–XMM15.
/// </summary>
public static class FxSaveLayout
{
    public const int Size = 512;
    public const int Fcw = 0, Fsw = 2, Ftw = 4, Fop = 6, Fip = 8, Fdp = 16, Mxcsr = 24, MxcsrMask = 28, St = 32, Xmm = 160;

    /// <summary>FCW after RESET (SDM Vol. 3 §9.1.1, Table 9-1): 0040H; FNINIT loads 037FH.</summary>
    public const ushort ResetFcw = 0x0040;
    /// <summary>MXCSR after RESET: all SIMD exceptions masked, round to nearest.</summary>
    public const uint ResetMxcsr = 0x1F80;

    /// <summary>
    /// The image after RESET: FCW 0040H, FSW 0, tag word 5555H (every register valid, holding +0.0,
    /// so the abridged tags are all ones), MXCSR 1F80H, XMM zero.
    /// </summary>
    public static byte[] AfterReset()
    {
        var fx = new byte[Size];
        BinaryPrimitives.WriteUInt16LittleEndian(fx.AsSpan(Fcw), ResetFcw);
        fx[Ftw] = 0xFF;
        BinaryPrimitives.WriteUInt32LittleEndian(fx.AsSpan(Mxcsr), ResetMxcsr);
        return fx;
    }
}
