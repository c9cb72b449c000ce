using System.CommandLine;
using System.Diagnostics;
using SharpVisor.Core;
using SharpVisor.Machine;

namespace SharpVisor.Cli;

/// <summary>
/// The sharpvisor command line: arguments → <see cref="MachineConfig"/>, run, exit code.
/// Accepts the everyday QEMU spellings (-kernel -initrd -append -m -smp -accel -nographic
/// -serial stdio -no-reboot -device isa-debug-exit) beside its own long options.
/// </summary>
public static class Program
{
    public static int Main(string[] args) => Guarded(() =>
    {
        var parse = BuildRoot().Parse(args);
        return parse.Errors.Count > 0 ? UsageError(parse.Errors[0].Message) : parse.Invoke();
    });

    /// <summary>
    /// Runs a command body so that no failure reaches the user as a stack trace: bad input
    /// (configuration and image errors) is one line and exit code 2; any other failure, including a
    /// VmmException from the host (mmap, KVM), is one line and exit code 6.
    /// Every command action goes through this, because System.CommandLine would otherwise catch
    /// exceptions from actions itself and print them whole.
    /// </summary>
    internal static int Guarded(Func<int> body) => Guarded(body, Console.Error);

    /// <summary><see cref="Guarded(Func{int})"/> writing its one line to <paramref name="error"/> (tests).</summary>
    public static int Guarded(Func<int> body, TextWriter error)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ConfigurationException or ImageFormatException)
        {
            error.WriteLine($"sharpvisor: {e.Message}");
            return ExitCodes.UsageError;
        }
        catch (VmmException e)
        {
            error.WriteLine($"sharpvisor: {e.Message}");
            return ExitCodes.InternalError;
        }
        catch (Exception e)
        {
            error.WriteLine($"sharpvisor: internal error: {e.GetType().Name}: {e.Message}");
            return ExitCodes.InternalError;
        }
    }

    private static int UsageError(string message)
    {
        Console.Error.WriteLine($"sharpvisor: {message} (see sharpvisor --help)");
        return ExitCodes.UsageError;
    }

    private sealed class RunOptions
    {
        public readonly Option<string?> Kernel = new("--kernel", "-kernel") { Description = "Linux bzImage or Multiboot kernel to boot" };
        public readonly Option<string?> Initrd = new("--initrd", "-initrd") { Description = "initial ramdisk" };
        public readonly Option<string?> Append = new("--append", "-append") { Description = "kernel command line" };
        public readonly Option<string[]> Module = new("--module") { Description = "Multiboot module (\"FILE args\"), repeatable", AllowMultipleArgumentsPerToken = false };
        public readonly Option<string> Memory = new("--memory", "-m") { Description = "guest RAM, e.g. 512M or 2G (plain numbers are MiB)", DefaultValueFactory = _ => "512M" };
        public readonly Option<int> Cpus = new("--cpus", "-smp") { Description = "number of vCPUs", DefaultValueFactory = _ => 1 };
        public readonly Option<string> Engine = new("--engine") { Description = "software or kvm", DefaultValueFactory = _ => "software" };
        public readonly Option<string?> Accel = new("-accel") { Description = "QEMU spelling of --engine: tcg or kvm" };
        public readonly Option<bool> Stats = new("--stats") { Description = "print VMM telemetry when the VM ends" };
        public readonly Option<bool> NoGraphic = new("-nographic") { Description = "accepted for QEMU compatibility (there is no display)" };
        public readonly Option<bool> NoReboot = new("-no-reboot", "--no-reboot") { Description = "a guest reset (or triple fault) ends the VM instead of rebooting it" };
        public readonly Option<string?> Icount = new("--icount", "-icount") { Description = "deterministic run: guest time advances 2^N ns per instruction (N or shift=N, 0-10; software engine, one vCPU; the RTC starts at 2000-01-01)" };
        public readonly Option<string?> Serial = new("-serial") { Description = "accepted: stdio (COM1 is the terminal)" };
        public readonly Option<string?> Display = new("-display") { Description = "accepted: none" };
        public readonly Option<string[]> Device = new("-device") { Description = "accepted: isa-debug-exit,iobase=0xf4,iosize=4 (present by default)" };

        public void AddTo(Command c)
        {
            foreach (var o in new Option[] { Kernel, Initrd, Append, Module, Memory, Cpus, Engine, Accel, Stats, NoGraphic, NoReboot, Icount, Serial, Display, Device })
                c.Options.Add(o);
        }
    }

    private static RootCommand BuildRoot()
    {
        var root = new RootCommand("SharpVisor: an x86 virtual machine monitor (software engine or KVM)");
        var rootOpts = new RunOptions();
        rootOpts.AddTo(root);
        root.SetAction(p => Guarded(() => p.GetValue(rootOpts.Kernel) == null
            ? UsageError("no command given: use 'sharpvisor run --kernel FILE' or 'sharpvisor demo'")
            : RunCommand(p, rootOpts)));

        var run = new Command("run", "boot a kernel (Linux bzImage or Multiboot)");
        var runOpts = new RunOptions();
        runOpts.AddTo(run);
        run.SetAction(p => Guarded(() => RunCommand(p, runOpts)));
        root.Subcommands.Add(run);

        var demo = new Command("demo", "boot the built-in demo guest: mode switches, rings, sensitive instructions, system calls, page faults");
        var demoEngine = new Option<string>("--engine") { Description = "software or kvm", DefaultValueFactory = _ => "software" };
        demo.Options.Add(demoEngine);
        demo.SetAction(p => Guarded(() => DemoCommand(p.GetValue(demoEngine)!)));
        root.Subcommands.Add(demo);
        return root;
    }

    private static EngineKind ParseEngine(string? engine, string? accel)
    {
        string e = (accel ?? engine ?? "software").ToLowerInvariant();
        return e switch
        {
            "software" or "tcg" => EngineKind.Software,
            "kvm" => EngineKind.Kvm,
            _ => throw new ConfigurationException($"unknown engine '{e}' (use software or kvm)"),
        };
    }

    /// <summary>
    /// -icount as QEMU spells it: "N" or "shift=N", guest time 2^N ns per instruction (0 when
    /// absent: host time). QEMU's shift=auto adapts to host speed, which is what this option is
    /// there to avoid, so it is refused.
    /// </summary>
    internal static long ParseIcount(string? text)
    {
        if (text == null) return 0;
        string t = text.Trim();
        if (t.StartsWith("shift=", StringComparison.Ordinal)) t = t["shift=".Length..];
        if (!int.TryParse(t, System.Globalization.NumberStyles.None, null, out int shift) || shift > 10)
            throw new ConfigurationException($"bad -icount '{text}' (use shift=N with N from 0 to 10: 2^N ns per instruction)");
        return 1L << shift;
    }

    internal static ulong ParseMemory(string text)
    {
        string t = text.Trim().ToUpperInvariant();
        ulong mult = 1UL << 20;
        if (t.EndsWith("IB")) t = t[..^2];
        else if (t.EndsWith('B')) t = t[..^1];
        if (t.EndsWith('K')) { mult = 1UL << 10; t = t[..^1]; }
        else if (t.EndsWith('M')) { mult = 1UL << 20; t = t[..^1]; }
        else if (t.EndsWith('G')) { mult = 1UL << 30; t = t[..^1]; }
        else if (t.EndsWith('T')) { mult = 1UL << 40; t = t[..^1]; }
        if (!ulong.TryParse(t, out ulong n) || n == 0 || n > (1UL << 44) / mult)
            throw new ConfigurationException($"bad memory size '{text}' (use e.g. 512M or 2G)");
        return n * mult;
    }

    private static int RunCommand(ParseResult p, RunOptions o)
    {
        foreach (var d in p.GetValue(o.Device) ?? [])
            CheckDevice(d);
        string? serial = p.GetValue(o.Serial);
        if (serial != null && serial is not ("stdio" or "mon:stdio"))
            throw new ConfigurationException($"unsupported -serial '{serial}' (COM1 is always the terminal: use stdio)");
        var config = new MachineConfig
        {
            Engine = ParseEngine(p.GetValue(o.Engine), p.GetValue(o.Accel)),
            MemoryBytes = ParseMemory(p.GetValue(o.Memory)!),
            Cpus = p.GetValue(o.Cpus),
            KernelPath = p.GetValue(o.Kernel) ?? throw new ConfigurationException("no kernel given (use --kernel FILE)"),
            InitrdPath = p.GetValue(o.Initrd),
            CommandLine = p.GetValue(o.Append) ?? "",
            NoReboot = p.GetValue(o.NoReboot),
            NsPerInstruction = ParseIcount(p.GetValue(o.Icount)),
        };
        config.Modules.AddRange(p.GetValue(o.Module) ?? []);
        return Boot(config, p.GetValue(o.Stats), interactive: true);
    }

    /// <summary>-device: only the isa-debug-exit that is always present, at its usual port.</summary>
    internal static void CheckDevice(string spec)
    {
        var parts = spec.Split(',');
        bool ok = parts[0] == "isa-debug-exit";
        foreach (var kv in parts.Skip(1))
        {
            ok &= kv switch
            {
                "iobase=0xf4" or "iobase=0xF4" or "iobase=244" => true,
                _ => kv.StartsWith("iosize=", StringComparison.Ordinal),
            };
        }
        if (!ok) throw new ConfigurationException($"unsupported -device '{spec}' (only isa-debug-exit,iobase=0xf4 is available)");
    }

    private static int DemoCommand(string engine)
    {
        using var s = typeof(Program).Assembly.GetManifestResourceStream("demo.bin")
            ?? throw new VmmException("the demo guest is missing from this build");
        var image = new byte[s.Length];
        s.ReadExactly(image);
        var config = new MachineConfig
        {
            Engine = ParseEngine(engine, null),
            MemoryBytes = 64UL << 20,
            KernelImage = image,
            KernelName = "built-in demo",
        };
        Console.WriteLine($"SharpVisor demo: booting the built-in guest on the {(config.Engine == EngineKind.Kvm ? "KVM" : "software")} engine");
        int code = Boot(config, stats: true, interactive: false, explain: c => c == DemoExitNoSysret
            ? "the demo stopped early: the KVM of this host could not execute SYSRETQ (it injected #GP into the guest); the software engine runs the whole tour (sharpvisor demo)"
            : null);
        // The demo reports success through isa-debug-exit with 0x10 → 33; the command itself succeeded.
        return code == 33 ? 0 : code;
    }

    /// <summary>The demo guest's exit status when the hypervisor failed its SYSRETQ (isa-debug-exit 0x12).</summary>
    public const int DemoExitNoSysret = 37;

    /// <param name="explain">A second line for some exit codes (printed before the telemetry).</param>
    private static int Boot(MachineConfig config, bool stats, bool interactive, Func<int, string?>? explain = null)
    {
        // COM1 and the debug console share one buffered writer: their bytes stay in order, and a
        // stalled stdout drops output instead of stopping the vCPUs (which write under the machine lock).
        var output = new BufferedSerialOutput(Console.OpenStandardOutput());
        config.Com1Output = output;
        config.DebugConsoleOutput = output.Write;
        RawTerminal? raw = null;
        bool droppedReported = false;
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        try
        {
            raw = interactive && !Console.IsInputRedirected ? RawTerminal.Enter() : null;
            // A raw terminal does not turn \n into \r\n.
            var lineEnd = raw != null ? "\r\n" : "\n";
            config.Notice = message => Console.Error.Write($"sharpvisor: {message}{lineEnd}");
            if (interactive)
            {
                config.Com1Input = Console.OpenStandardInput();
                config.Com1InputIsTerminal = !Console.IsInputRedirected;
            }
            using var machine = new Machine.Machine(config);
            var result = machine.Run(cts.Token);
            // The terminal back to normal and Ctrl-C to the default first: if stdout is stalled,
            // the flush below may wait (BufferedSerialOutput.CloseTimeout), and Ctrl-C ends it.
            raw?.Dispose();
            raw = null;
            Console.CancelKeyPress -= onCancel;
            output.Dispose(); // everything the guest wrote reaches stdout before the result line
            Console.Error.WriteLine($"sharpvisor: {result.Reason}");
            if (explain?.Invoke(result.ExitCode) is { } line) Console.Error.WriteLine($"sharpvisor: {line}");
            if (stats)
            {
                Console.Error.Write(machine.StatisticsTable());
                Console.Error.WriteLine($"console output dropped (stdout too slow): {output.Dropped} bytes");
                droppedReported = true;
            }
            return result.ExitCode;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            output.Dispose(); // also when the machine failed to build or run: nothing written is lost
            raw?.Dispose();
            if (!droppedReported && output.Dropped > 0) Console.Error.WriteLine($"sharpvisor: {output.Dropped} bytes of guest console output dropped (stdout too slow)");
        }
    }

    /// <summary>Puts the terminal in raw mode (stty) for an interactive serial console, and restores it.</summary>
    private sealed class RawTerminal : IDisposable
    {
        private readonly string _saved;
        private RawTerminal(string saved) => _saved = saved;

        public static RawTerminal? Enter()
        {
            string? saved = Stty("-g");
            if (saved == null) return null;
            Stty("raw -echo");
            return new RawTerminal(saved.Trim());
        }

        private static string? Stty(string args)
        {
            try
            {
                var psi = new ProcessStartInfo("stty", args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                using var p = Process.Start(psi);
                if (p == null) return null;
                string o = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                return p.ExitCode == 0 ? o : null;
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                return null;
            }
        }

        public void Dispose() => Stty(_saved);
    }
}
