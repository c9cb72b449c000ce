namespace SharpVisor.HostCpu;

/// <summary>
/// The guest-visible memory of a case: one "window" of <see cref="WindowSize"/> bytes. Registers that
/// hold addresses (always RSP, plus those in <see cref="NativeCase.RelocatedGprs"/>) carry offsets
/// into the window; whoever runs the case adds the window's base address before running and
/// subtracts it afterwards. The native harness uses a host address, an engine its own guest
/// address, so both sides see the same numbers.
/// </summary>
public static class NativeLayout
{
    public const int WindowSize = 0x2000;
    /// <summary>Data area for memory operands: [DataOffset, DataOffset + DataSize).</summary>
    public const int DataOffset = 0, DataSize = 0x1000;
    /// <summary>Stack area: [StackOffset, StackOffset + StackSize).</summary>
    public const int StackOffset = 0x1000, StackSize = 0x1000;
    /// <summary>The RSP of a generated case: the middle of the stack area, so both pushes and pops stay inside.</summary>
    public const ulong DefaultRsp = StackOffset + StackSize / 2;
    /// <summary>Bit of RSP in a GPR mask.</summary>
    public const ushort RspBit = 1 << 4;
    /// <summary>Longest snippet the harness accepts.</summary>
    public const int MaxCodeLength = 0x1000 - 16;
}

/// <summary>A snippet plus its input state and memory window. Immutable by convention once built.</summary>
public sealed class NativeCase
{
    /// <summary>64-bit code bytes; they must fall through to their end (no branches out).</summary>
    public required byte[] Code { get; init; }
    /// <summary>Input registers; RSP and the registers in <see cref="RelocatedGprs"/> are window offsets.</summary>
    public NativeState Input;
    /// <summary>Initial window contents, <see cref="NativeLayout.WindowSize"/> bytes.</summary>
    public byte[] Window { get; init; } = new byte[NativeLayout.WindowSize];
    /// <summary>GPRs (bit i = register i) holding window offsets. RSP is always relocated, whatever this says.</summary>
    public ushort RelocatedGprs { get; init; }
    /// <summary>Human-readable description (disassembly) for failure messages.</summary>
    public string Description { get; init; } = "";

    /// <summary>The relocation mask actually applied: <see cref="RelocatedGprs"/> plus RSP.</summary>
    public ushort EffectiveRelocatedGprs => (ushort)(RelocatedGprs | NativeLayout.RspBit);

    public override string ToString() => Description.Length > 0 ? Description : Convert.ToHexString(Code);
}

public enum NativeOutcome
{
    /// <summary>The snippet ran to its end; <see cref="NativeResult.Output"/> and <see cref="NativeResult.Window"/> hold the result.</summary>
    Completed,
    /// <summary>The harness proved from the SDM rules that the snippet faults, and did not run it (an engine must raise <see cref="NativeResult.Exception"/>).</summary>
    Fault,
    /// <summary>The harness cannot run the snippet safely (memory outside the window, privileged, branches, host lacks a feature…).</summary>
    Refused,
}

/// <summary>Architectural exception vectors (SDM Vol. 3 §6.15).</summary>
public enum X86Exception
{
    None = -1,
    DE = 0,
    UD = 6,
    GP = 13,
}

public sealed class NativeResult
{
    public NativeOutcome Outcome { get; init; }
    public X86Exception Exception { get; init; } = X86Exception.None;
    /// <summary>Why a case faulted or was refused.</summary>
    public string Reason { get; init; } = "";
    /// <summary>Output registers (window-relative like the input) when <see cref="Outcome"/> is Completed, else the input.</summary>
    public NativeState Output;
    /// <summary>Window contents after the run (a copy of the input window unless Completed).</summary>
    public byte[] Window { get; init; } = [];

    public override string ToString() => Outcome switch
    {
        NativeOutcome.Completed => "completed",
        NativeOutcome.Fault => $"#{Exception}: {Reason}",
        _ => $"refused: {Reason}",
    };
}
