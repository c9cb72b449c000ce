// The rounding environment of one x87 FPU (Intel SDM Vol. 1 §8.1.3 status word, §8.1.5 control word).
// Operations read RC/PC and the exception masks from here and accumulate the sticky exception flags
// and the condition codes they define. The engine keeps one per vCPU; there is no global state.
namespace SharpVisor.SoftFloat;

/// <summary>FCW.RC (bits 11..10).</summary>
public enum RoundingControl : byte
{
    NearestEven = 0,
    Down = 1,
    Up = 2,
    TowardZero = 3,
}

/// <summary>FCW.PC (bits 9..8); the reserved value 01 is loaded as <see cref="Single"/>.</summary>
public enum PrecisionControl : byte
{
    Single = 0,
    Double = 2,
    Extended = 3,
}

/// <summary>The six x87 exception flags at their FSW/FCW bit positions.</summary>
[Flags]
public enum FpuExceptions : ushort
{
    None = 0,
    Invalid = 0x01,
    Denormal = 0x02,
    ZeroDivide = 0x04,
    Overflow = 0x08,
    Underflow = 0x10,
    Precision = 0x20,
    All = 0x3F,
}

/// <summary>The result of a compare, as FCOM/FUCOM encode it in C3, C2, C0.</summary>
public enum FpuCompareResult : byte
{
    Greater = 0,
    Less = 1,
    Equal = 0x40,
    Unordered = 0x45,
}

public sealed class FpuContext
{
    public RoundingControl Rounding { get; set; } = RoundingControl.NearestEven;
    public PrecisionControl Precision { get; set; } = PrecisionControl.Extended;
    /// <summary>Exception masks (FCW bits 5..0); set = masked. Only O and U change a delivered result
    /// (bias-adjusted instead of masked response); for I, Z and D an unmasked exception means the
    /// caller must not write the result — it checks <see cref="UnmaskedPending"/>.</summary>
    public FpuExceptions Masks { get; set; } = FpuExceptions.All;
    /// <summary>Sticky exception flags (FSW bits 5..0), accumulated.</summary>
    public FpuExceptions Flags { get; set; }
    /// <summary>Condition codes. Arithmetic sets C1 to "rounded up"; compares set C0/C2/C3; FPREM sets all.</summary>
    public bool C0 { get; set; }
    public bool C1 { get; set; }
    public bool C2 { get; set; }
    public bool C3 { get; set; }

    public FpuContext() { }

    public FpuContext(RoundingControl rounding, PrecisionControl precision)
    {
        Rounding = rounding;
        Precision = precision;
    }

    /// <summary>Loads RC, PC and the masks from an x87 control word.</summary>
    public void LoadControlWord(ushort fcw)
    {
        Masks = (FpuExceptions)(fcw & 0x3F);
        int pc = (fcw >> 8) & 3;
        // PC = 01 is reserved (SDM Vol. 1 §8.1.5.2); observed on hardware, it rounds like 11 (64 bits).
        Precision = pc switch { 0 => PrecisionControl.Single, 2 => PrecisionControl.Double, _ => PrecisionControl.Extended };
        Rounding = (RoundingControl)((fcw >> 10) & 3);
    }

    /// <summary>Condition code bits and flags in FSW positions (C0 = bit 8, C1 = 9, C2 = 10, C3 = 14).</summary>
    public ushort StatusBits =>
        (ushort)((ushort)Flags | (C0 ? 0x100 : 0) | (C1 ? 0x200 : 0) | (C2 ? 0x400 : 0) | (C3 ? 0x4000 : 0));

    /// <summary>Exceptions raised since flags were cleared whose mask bit is clear.</summary>
    public FpuExceptions UnmaskedPending => Flags & ~Masks & FpuExceptions.All;

    public void ClearFlags()
    {
        Flags = FpuExceptions.None;
        C0 = C1 = C2 = C3 = false;
    }

    internal int PrecisionBits => Precision switch
    {
        PrecisionControl.Single => 24,
        PrecisionControl.Double => 53,
        _ => 64,
    };

    internal void Raise(FpuExceptions e) => Flags |= e;
}
