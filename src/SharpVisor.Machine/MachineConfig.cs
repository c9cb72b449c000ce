using SharpVisor.Devices.Serial;

namespace SharpVisor.Machine;

public enum EngineKind { Software, Kvm }

/// <summary>Everything a machine is built from; the CLI only turns arguments into this.</summary>
public sealed class MachineConfig
{
    public EngineKind Engine { get; set; } = EngineKind.Software;
    public ulong MemoryBytes { get; set; } = 512UL << 20;
    public int Cpus { get; set; } = 1;
    public string? KernelPath { get; set; }
    /// <summary>A kernel image given as bytes (the built-in demo).</summary>
    public byte[]? KernelImage { get; set; }
    public string KernelName { get; set; } = "kernel";
    public string? InitrdPath { get; set; }
    public string CommandLine { get; set; } = "";
    public List<string> Modules { get; } = new();
    /// <summary>Where COM1 output goes (the terminal by default).</summary>
    public ISerialBackend? Com1Output { get; set; }
    /// <summary>Where the debug console (port 0xE9) output goes.</summary>
    public Action<byte>? DebugConsoleOutput { get; set; }
    /// <summary>Host input for COM1 (the terminal); null for none.</summary>
    public Stream? Com1Input { get; set; }
    /// <summary>
    /// <see cref="Com1Input"/> is a person at a terminal, not a pipe or file. When the guest does
    /// not read and the input queue is full, a terminal's further bytes are dropped (as a UART
    /// overruns) so that Ctrl-A X is still seen; a pipe's reader instead waits for room, losing nothing.
    /// </summary>
    public bool Com1InputIsTerminal { get; set; }
    /// <summary>Print VMM messages (exits, unassigned accesses) to this sink.</summary>
    public Action<string>? Log { get; set; }
    /// <summary>
    /// QEMU's -no-reboot: a guest reset (port 0xCF9, the keyboard controller, a triple fault) ends
    /// the VM instead of rebooting it. Off by default, as in QEMU: the machine reboots.
    /// </summary>
    public bool NoReboot { get; set; }
    /// <summary>
    /// 0: the machine clock is host time. N > 0: guest time advances N ns per instruction of
    /// vCPU 0 (QEMU's -icount), a deterministic run; the software engine with one vCPU only.
    /// </summary>
    public long NsPerInstruction { get; set; }
    /// <summary>One-line notices the user should see while the VM runs (each guest reset and its reason).</summary>
    public Action<string>? Notice { get; set; }
}

/// <summary>How a run ended: the process exit code and one line that says why.</summary>
public sealed record MachineResult(int ExitCode, string Reason);

/// <summary>Exit codes that never collide with isa-debug-exit codes (those are always odd).</summary>
public static class ExitCodes
{
    public const int PowerOff = 0;
    public const int UsageError = 2;
    public const int TripleFault = 4;
    public const int InternalError = 6;
    /// <summary>A guest reset under -no-reboot ends the VM with 0, as QEMU does.</summary>
    public const int Reset = 0;
}
