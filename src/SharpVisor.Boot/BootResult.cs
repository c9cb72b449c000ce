// Common results of the boot loaders. A loader only writes bytes into GuestMemory and
// returns the register state of the boot CPU (design rule 6): it knows no engine or device.
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Boot;

/// <summary>One thing a loader placed in guest memory, for logs, tests and overlap checks.</summary>
public readonly record struct PlacedRange(string What, ulong Gpa, ulong Size)
{
    public ulong End => Gpa + Size;
    public override string ToString() => $"{What} {Gpa:x}-{End - 1:x}";
}

/// <summary>What any loader returns: the boot CPU's initial state and what lies where.</summary>
public class BootResult
{
    public required VcpuState BootCpu { get; init; }
    public required IReadOnlyList<PlacedRange> Placed { get; init; }
    /// <summary>Things the loader chose to ignore or adapt (printed by the front end).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>
/// Fixed guest-physical addresses the loaders use in low memory (below 1 MiB, all inside the
/// first e820 RAM entry 0–0x9FBFF, so the kernel sees them as ordinary RAM it may reuse once
/// it has copied what it needs):
/// <code>
/// 0x00500–0x0051F  boot GDT (null, null, __BOOT_CS 0x10, __BOOT_DS 0x18)
/// 0x01000–0x08FFF  Multiboot information area (info, mmap, module list, strings)
/// 0x07000–0x07FFF  Linux boot_params ("zero page")
/// 0x08000–0x08FEF  initial stack for the Linux entry (top 0x8FF0; the kernel makes its own)
/// 0x09000–0x0EFFF  Linux 64-bit identity page tables: PML4, PDPT, four page directories
/// 0x20000–0x2FFFF  Linux command line (cmdline_size is at most 64 KiB here)
/// 0xE0000–0xEFFFF  ACPI tables (see Acpi.AcpiTableBuilder), e820 type ACPI
/// </code>
/// The Linux and Multiboot areas overlap on purpose: a machine boots one or the other.
/// </summary>
public static class BootLayout
{
    public const ulong GdtGpa = 0x500;
    public const ulong MultibootAreaGpa = 0x1000;
    public const ulong MultibootAreaEnd = 0x9000;
    public const ulong BootParamsGpa = 0x7000;
    public const ulong LinuxStackTop = 0x8FF0;
    public const ulong PageTablesGpa = 0x9000;
    public const ulong CommandLineGpa = 0x20000;
    public const ulong CommandLineMax = 0x10000;
    public const ulong AcpiTablesGpa = 0xE0000;
    public const ulong AcpiTablesEnd = 0xF0000;
    /// <summary>Where the traditional protected-mode kernel and most loaders start: 1 MiB.</summary>
    public const ulong HighLoadGpa = 0x100000;
}

public static class BootFiles
{
    /// <summary>
    /// Reads a user-named image file (kernel, initrd, module). Every way the name can be wrong is a
    /// ConfigurationException of one line naming <paramref name="what"/> and the path: empty, missing,
    /// a directory, unreadable. (File.ReadAllBytes would throw ArgumentException for "" and
    /// UnauthorizedAccessException, i.e. "permission denied", for a directory.)
    /// </summary>
    public static byte[] Read(string path, string what)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new Core.ConfigurationException($"{what} file name is empty");
        if (Directory.Exists(path)) throw new Core.ConfigurationException($"{what} {path} is a directory, not a file");
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new Core.ConfigurationException($"{what} file not found: {path}");
        }
        catch (UnauthorizedAccessException)
        {
            throw new Core.ConfigurationException($"cannot read {what} file {path}: permission denied");
        }
        catch (Exception e) when (e is IOException or ArgumentException or NotSupportedException)
        {
            // ArgumentException/NotSupportedException: a name the OS cannot take (e.g. an embedded NUL).
            throw new Core.ConfigurationException($"cannot read {what} file {path}: {e.Message}");
        }
    }
}
