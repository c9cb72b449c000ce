// The system test guests (guests/test/*.asm: each checks its results against the Intel SDM or
// the boot protocol it tests and reports PASS or FAIL) run on the software engine and on the
// KVM engine, and their reports must be identical: the debug console (port 0xE9), COM1 (the
// loader guests mbelf and bzimage report there) and the exit code. Nothing is normalised: no
// guest prints a measured figure (smp's "10 ms" is the delay it programs, not one it measures).
// MachineResult.Reason is not compared: it names the engine's own view of the end (the software
// engine names the exception chain of a triple fault, KVM only says KVM_EXIT_SHUTDOWN).
//
// Where KVM cannot run a guest's instruction the test skips, and only then:
//   - KVM is not available (no /dev/kvm, no permission): skip with KvmEngine's reason;
//   - on a software-assisted KVM (this host's /dev/kvm is kvm_pvm: no VT-x/AMD-V, see
//     LinuxBootTests.HardwareVirtualization) the run ended with KVM's own failure: a
//     KVM_EXIT_INTERNAL_ERROR / FAIL_ENTRY / UNKNOWN (MachineResult exit code 6, the reason
//     naming cs:rip; the instruction is decoded from the emulation-failure bytes), a
//     KVM_EXIT_SHUTDOWN where the software engine did not triple-fault, or the guest reporting
//     an unexpected #GP(0) at a MOV to CR0 (kvm_pvm injects #GP when a guest turns on 32-bit,
//     non-PAE paging instead of running it). Such a stop is a skip only if what the guest
//     reported before it is a prefix of the software engine's report, so a wrong result
//     before the stop still fails. On a host with hardware virtualization every guest must run
//     to its end and compare: a KVM failure there fails the test.
//   - "Plain" guests (no instruction this host's KVM is known not to run) never skip for a
//     KVM stop: they must run on the KVM engine here.
//
// What this host's KVM (kvm_pvm) does with each guest (measured):
//   modes, triplefault, reset, smp (4 vCPUs), smplock (4 vCPUs), mbelf, bzimage: run to their
//     end on KVM; reports and exit codes identical to the software engine (compared).
//   exceptions: KVM_EXIT_INTERNAL_ERROR (emulation) at the IRET that returns from
//     guest.inc's handler after the first expected trap, 0008:1006ef, before any output (skipped).
//   rings, sensitive: KVM_EXIT_INTERNAL_ERROR (emulation) at guest.inc's IRET into ring 3,
//     0008:100818, before any output (skipped).
//   taskswitch: KVM_EXIT_INTERNAL_ERROR (emulation) at the JMP FAR 0078:0 to a TSS,
//     0008:100924 (skipped).
//   paging: #GP(0) injected at the MOV CR0, EAX that turns on 32-bit paging, 0008:1010bc; the
//     guest reports it as an unexpected exception and exits 3 (skipped).
//   vm86: #GP(0) injected at the MOV CR0, EAX that turns on 32-bit paging, 0008:100944, before
//     virtual-8086 mode is entered (skipped).
//   uarts: KVM_EXIT_INTERNAL_ERROR (emulation) at the IRET that ends its first interrupt handler
//     (skipped).
//   tpr: CR8 and the APIC's TPR agree both ways, and a TPR of 4 holds a class-4 interrupt, but
//     lowering CR8 to 3 brings no KVM_EXIT_SET_TPR, so the interrupt arrives only at the next
//     exit; the guest reports it missing after the MOV (skipped).
using System.Globalization;
using System.Text.RegularExpressions;
using Iced.Intel;
using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

public partial class CrossEngineGuestTests
{
    /// <summary>A COM1 backend that keeps what the guest wrote.</summary>
    private sealed class CapturingSerial : ISerialBackend
    {
        private readonly System.Text.StringBuilder _text = new();
        public void Write(byte value) { lock (_text) _text.Append((char)value); }
        public override string ToString() { lock (_text) return _text.ToString(); }
    }

    private sealed record GuestRun(MachineResult Result, string DebugConsole, string Com1)
    {
        public string Report => $"debug console:\n{DebugConsole}COM1:\n{Com1}exit {Result.ExitCode}: {Result.Reason}";
    }

    private static GuestRun Run(string guest, EngineKind engine)
    {
        var console = new System.Text.StringBuilder();
        var com1 = new CapturingSerial();
        var config = new MachineConfig
        {
            Engine = engine, MemoryBytes = 64UL << 20, KernelPath = GuestTests.RepoFile($"guests/test/{guest}.bin"),
            Com1Output = com1,
            // reset.asm checks three reboots and uarts.asm one; every other guest ends the VM at its first reset.
            NoReboot = guest is not ("reset" or "uarts"),
            // smp.asm counts the processors it starts: give it some to start.
            Cpus = guest is "smp" or "smplock" ? 4 : 1,
            // mbelf.asm and bzimage.asm print their command line (LoaderCliTests uses the same).
            CommandLine = guest switch { "mbelf" => "hello elf", "bzimage" => "console=ttyS0 quiet", _ => "" },
        };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        string text;
        lock (console) text = console.ToString();
        return new GuestRun(r, text, com1.ToString());
    }

    /// <summary>
    /// Each system test guest; <paramref name="plain"/> when it uses nothing this host's
    /// software-assisted KVM is known not to run, so it must run to its end on KVM here.
    /// </summary>
    [Theory]
    [InlineData("modes", true)]
    [InlineData("triplefault", true)]
    [InlineData("reset", true)]
    [InlineData("smp", true)]
    [InlineData("smplock", true)]
    [InlineData("mbelf", true)]
    [InlineData("bzimage", true)]
    [InlineData("paging", false)]
    [InlineData("sensitive", false)]
    [InlineData("rings", false)]
    [InlineData("exceptions", false)]
    [InlineData("taskswitch", false)]
    [InlineData("vm86", false)]
    [InlineData("tpr", false)]
    [InlineData("uarts", false)]
    public void GuestReportsTheSameOnBothEngines(string guest, bool plain)
    {
        if (!Kvm.KvmEngine.IsAvailable(out string why)) Assert.Skip($"KVM not available: {why}");

        var soft = Run(guest, EngineKind.Software);
        // The reference must itself be the guest's defined end, or identical reports prove nothing.
        if (guest == "triplefault")
        {
            Assert.True(soft.Result.ExitCode == ExitCodes.TripleFault && soft.DebugConsole == "TRIPLE-FAULT-NEXT\n", soft.Report);
        }
        else
        {
            Assert.True(soft.Result.ExitCode == 33, soft.Report);
            Assert.Contains($"PASS {guest}\n", soft.DebugConsole + soft.Com1);
        }

        var kvm = Run(guest, EngineKind.Kvm);
        string? stop = KvmStop(guest, soft, kvm, out string reportedBefore);
        if (stop != null)
        {
            string line = $"{guest}: the KVM engine stopped: {stop}";
            Assert.False(LinuxBootTests.HardwareVirtualization(out string software),
                $"{line}; a KVM with hardware virtualization must run every guest\n{kvm.Report}");
            if (Directory.Exists("/sys/module/kvm_pvm")) software = "this host's /dev/kvm is kvm_pvm, a software-assisted KVM";
            Assert.False(plain, $"{line}; this guest must run on this host's KVM ({software})\n{kvm.Report}");
            Assert.True(soft.DebugConsole.StartsWith(reportedBefore, StringComparison.Ordinal) && soft.Com1.StartsWith(kvm.Com1, StringComparison.Ordinal),
                $"{line}, and before that it reported something the software engine did not\nKVM:\n{kvm.Report}\nsoftware:\n{soft.Report}");
            Assert.Skip($"{line} ({software})");
        }

        Assert.Equal(soft.DebugConsole, kvm.DebugConsole);
        Assert.Equal(soft.Com1, kvm.Com1);
        Assert.True(soft.Result.ExitCode == kvm.Result.ExitCode, $"software: {soft.Result}, KVM: {kvm.Result}");
    }

    /// <summary>
    /// One line naming how KVM itself stopped the guest (reason, cs:rip, the instruction), or null
    /// when the run ended as the guest decided. <paramref name="reportedBefore"/> is the debug
    /// console up to the stop (without a FAIL line the stop caused).
    /// </summary>
    private static string? KvmStop(string guest, GuestRun soft, GuestRun kvm, out string reportedBefore)
    {
        reportedBefore = kvm.DebugConsole;
        string reason = kvm.Result.Reason;
        if (kvm.Result.ExitCode == ExitCodes.InternalError && reason.Contains("KVM_EXIT_", StringComparison.Ordinal))
        {
            // The raw data words are replaced by the instruction they hold.
            int data = reason.IndexOf(", data ", StringComparison.Ordinal);
            return (data < 0 ? reason : reason[..data]) + Instruction(EmulationFailureBytes(reason), reason);
        }
        if (kvm.Result.ExitCode == ExitCodes.TripleFault && soft.Result.ExitCode != ExitCodes.TripleFault
            && reason.Contains("KVM_EXIT_SHUTDOWN", StringComparison.Ordinal))
            return reason;

        // Without an in-kernel APIC, KVM on VT-x ends KVM_RUN with KVM_EXIT_SET_TPR when a MOV to
        // CR8 lowers the TPR (arch/x86/kvm/vmx handle_cr), so the VMM can inject what the old
        // priority held back before the next instruction. kvm_pvm completes the MOV in the kernel
        // without that exit; the interrupt then waits for the guest's next exit.
        const string heldByCr8 = "FAIL tpr: interrupt of class 4 after MOV CR8, 3: got 0x00000000 expected 0x00000001\n";
        if (guest == "tpr" && kvm.DebugConsole.EndsWith(heldByCr8, StringComparison.Ordinal) && kvm.Result.ExitCode == 3)
        {
            reportedBefore = kvm.DebugConsole[..^heldByCr8.Length];
            return "no KVM_EXIT_SET_TPR after the MOV to CR8 that lowered the task priority, so the interrupt it unmasked was not delivered before the next instruction";
        }

        // guest.inc's 32-bit handler for an exception no test expected:
        // "FAIL <name>: unexpected exception 0x0000000D error 0x00000000 at 0x00000008:0x001010BC".
        var m = UnexpectedGp().Match(kvm.DebugConsole);
        if (!m.Success || kvm.Result.ExitCode != 3) return null;
        ushort cs = ushort.Parse(m.Groups["cs"].Value, NumberStyles.HexNumber);
        uint eip = uint.Parse(m.Groups["eip"].Value, NumberStyles.HexNumber);
        var instr = Decode(ImageBytesAt(guest, eip), eip, 32);
        if (instr is not { Code: Code.Mov_cr_r32, Op0Register: Register.CR0 }) return null;
        reportedBefore = kvm.DebugConsole[..m.Index];
        return $"KVM injected #GP(0) at {Format(instr.Value)} (cs:rip {cs:x4}:{eip:x}), the write that turns on paging";
    }

    [GeneratedRegex(@"FAIL [a-z0-9]+: unexpected exception 0x0000000D error 0x00000000 at 0x0000(?<cs>[0-9A-F]{4}):0x(?<eip>[0-9A-F]{8})\n\z")]
    private static partial Regex UnexpectedGp();

    [GeneratedRegex(@"cs:rip (?<cs>[0-9a-f]{4}):(?<rip>[0-9a-f]+) ")]
    private static partial Regex CsRip();

    [GeneratedRegex(@"KVM_INTERNAL_ERROR_EMULATION\).*, data 0x1 0x(?<d1>[0-9a-f]+) 0x(?<d2>[0-9a-f]+)")]
    private static partial Regex EmulationData();

    /// <summary>
    /// The bytes of the instruction KVM failed to emulate. With suberror
    /// KVM_INTERNAL_ERROR_EMULATION and flags (data[0]) bit 0, KVM_INTERNAL_ERROR_EMULATION_FLAG_
    /// INSTRUCTION_BYTES, kvm_run.emulation_failure holds insn_size in the low byte of data[1] and
    /// the 15 instruction bytes after it (linux/kvm.h), little-endian through data[1] and data[2].
    /// </summary>
    private static byte[]? EmulationFailureBytes(string reason)
    {
        var m = EmulationData().Match(reason);
        if (!m.Success) return null;
        Span<byte> raw = stackalloc byte[16];
        BitConverter.TryWriteBytes(raw, ulong.Parse(m.Groups["d1"].Value, NumberStyles.HexNumber));
        BitConverter.TryWriteBytes(raw[8..], ulong.Parse(m.Groups["d2"].Value, NumberStyles.HexNumber));
        int size = Math.Min((int)raw[0], 15);
        return raw.Slice(1, size).ToArray();
    }

    /// <summary>
    /// ": IRET" for the failing instruction, decoded in the mode guest.inc's selector in CS
    /// stands for (0x08/0x18/0x38 32-bit, 0x28/0x48 64-bit, 0x50 16-bit); raw bytes otherwise.
    /// </summary>
    private static string Instruction(byte[]? bytes, string reason)
    {
        if (bytes is not { Length: > 0 }) return "";
        var m = CsRip().Match(reason);
        int? bitness = !m.Success ? null : (ushort.Parse(m.Groups["cs"].Value, NumberStyles.HexNumber) & ~3) switch
        {
            0x08 or 0x18 or 0x38 => 32,
            0x28 or 0x48 => 64,
            0x50 => 16,
            _ => null,
        };
        ulong rip = m.Success ? ulong.Parse(m.Groups["rip"].Value, NumberStyles.HexNumber) : 0;
        var instr = bitness is int b ? Decode(bytes, rip, b) : null;
        return instr is { } i ? $": {Format(i)}" : $": bytes {Convert.ToHexString(bytes)}";
    }

    private static Instruction? Decode(byte[] bytes, ulong ip, int bitness)
    {
        var decoder = Iced.Intel.Decoder.Create(bitness, new ByteArrayCodeReader(bytes));
        decoder.IP = ip;
        decoder.Decode(out var instr);
        return instr.IsInvalid ? null : instr;
    }

    private static string Format(Instruction instr)
    {
        var formatter = new NasmFormatter();
        formatter.Options.UppercaseMnemonics = true;
        formatter.Options.UppercaseRegisters = true;
        formatter.Options.HexPrefix = "0x";
        formatter.Options.HexSuffix = null;
        var output = new StringOutput();
        formatter.Format(instr, output);
        return output.ToStringAndReset();
    }

    /// <summary>
    /// 15 bytes of the guest image at the guest address <paramref name="address"/>: the guests are
    /// Multiboot a.out-kludge images (guest.inc), so the file maps from the header's load_addr,
    /// the header itself sitting at header_addr (Multiboot 0.6.96 §3.1.3).
    /// </summary>
    private static byte[] ImageBytesAt(string guest, uint address)
    {
        byte[] image = File.ReadAllBytes(GuestTests.RepoFile($"guests/test/{guest}.bin"));
        for (int h = 0; h + 32 <= Math.Min(image.Length, 8192); h += 4)
        {
            if (BitConverter.ToUInt32(image, h) != 0x1BADB002) continue;
            uint flags = BitConverter.ToUInt32(image, h + 4);
            if ((flags & 0x10000) == 0) return [];
            uint headerAddr = BitConverter.ToUInt32(image, h + 12), loadAddr = BitConverter.ToUInt32(image, h + 16);
            long offset = (long)address - loadAddr + (h - ((long)headerAddr - loadAddr));
            if (offset < 0 || offset >= image.Length) return [];
            return image.AsSpan((int)offset, (int)Math.Min(15, image.Length - offset)).ToArray();
        }
        return [];
    }
}
