using System.Diagnostics;
using SharpVisor.Boot;
using SharpVisor.Boot.Acpi;
using SharpVisor.Boot.LinuxBoot;
using SharpVisor.Boot.Multiboot;
using SharpVisor.Core;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Time;
using SharpVisor.Core.Vcpu;
using SharpVisor.Cpu;
using SharpVisor.Devices.Acpi;
using SharpVisor.Devices.Apic;
using SharpVisor.Devices.FwCfg;
using SharpVisor.Devices.Input;
using SharpVisor.Devices.Isa;
using SharpVisor.Devices.Misc;
using SharpVisor.Devices.Pci;
using SharpVisor.Devices.Pic;
using SharpVisor.Devices.Pit;
using SharpVisor.Devices.Rtc;
using SharpVisor.Devices.Serial;
using SharpVisor.Kvm;

namespace SharpVisor.Machine;

/// <summary>
/// A PC: guest RAM, the port and MMIO buses, the legacy devices, interrupt controllers, ACPI
/// tables, the vCPUs of one engine, and the run loop that turns exits into device calls. This is
/// the composition root: the only place that knows both engines and devices.
/// Threading: one thread per vCPU; every device access and timer happens under <see cref="_lock"/>,
/// and so does every call the engines make into the interrupt controllers from inside Run
/// (<see cref="CountingSource"/>, <see cref="PlatformMsrs"/>). Nothing waits for a vCPU thread
/// while holding <see cref="_lock"/>: the joins in <see cref="RunOneBoot"/> happen outside it, so a
/// vCPU blocked on the lock inside Run can always finish.
/// Reset: a guest reset stops every vCPU thread, and <see cref="Build"/> makes a new board (devices,
/// engine, vCPUs, tables, the image reloaded) over the same RAM and RTC/CMOS, as a PC's reset
/// line does and QEMU without -no-reboot; with <see cref="MachineConfig.NoReboot"/> it ends the VM.
/// </summary>
public sealed class Machine : IDisposable
{
    /// <summary>
    /// The reset-loop guard: this many triple faults in a row, each less than
    /// <see cref="QuickBootLimit"/> after its boot started, end the VM with the triple-fault exit
    /// code instead of resetting once more (QEMU would loop for ever).
    /// </summary>
    public const int MaxQuickTripleFaults = 3;
    public static readonly TimeSpan QuickBootLimit = TimeSpan.FromSeconds(10);
    /// <summary>
    /// The largest guest RAM: 1 TiB. Below the physical-address width of every x86-64 host KVM
    /// runs on (at least 39 bits), and within what the software CPU's per-page tables index.
    /// </summary>
    public const ulong MaxMemoryBytes = 1UL << 40;
    /// <summary>Host input bytes buffered for COM1 before the input thread waits for the guest to read.</summary>
    public const int InputQueueCapacity = 4096;

    private readonly MachineConfig _config;
    private readonly object _lock = new();
    private readonly IClock _clock;
    /// <summary>The clock when it counts instructions (MachineConfig.NsPerInstruction), else null.</summary>
    private readonly InstructionClock? _icount;
    /// <summary>One wake-up per vCPU: a halted or not-yet-started vCPU sleeps on its own event.</summary>
    private readonly ManualResetEventSlim[] _wake;
    private readonly long[] _exitCounts = new long[Enum.GetValues<ExitReason>().Length];
    private readonly long[] _vectorCounts = new long[256];
    /// <summary>
    /// The RTC/CMOS survives a reset, as on a PC where it is battery-backed: its time, and the
    /// NVRAM a guest may use to tell a warm boot from a cold one.
    /// </summary>
    private readonly Rtc146818 _rtc;
    /// <summary>
    /// The ISA IRQ lines, made once: several devices may drive one line (COM1 and COM3 on IRQ4,
    /// COM2 and COM4 on IRQ3), which is high while any of them is. Build resets them for each board.
    /// </summary>
    private readonly IsaIrqLines _isaIrqs;
    // The image files, until the first boot has placed them; from then on _bootImage reloads them.
    private byte[]? _kernelImage;
    private byte[]? _initrdImage;
    private List<MultibootModule>? _moduleImages = new();
    /// <summary>What the loader put in RAM at the first boot: a reset writes it back instead of parsing and decompressing again.</summary>
    private BootImage? _bootImage;
    /// <summary>Per vCPU, bumped under _lock by INIT and STARTUP: the run loop re-reads its start state only when this changed.</summary>
    private readonly int[] _startEpoch;
    /// <summary>Set under _lock by Dispose: kicks and the input thread stop touching the vCPUs and events.</summary>
    private volatile bool _disposed;
    private volatile MachineResult? _result;
    /// <summary>Set when the guest asked for a reset (or triple-faulted) and the VM should reboot.</summary>
    private volatile ResetRequest? _reset;
    private readonly Stopwatch _uptime = new();
    private readonly Stopwatch _bootTime = new();
    /// <summary>When vCPU 0 first entered the guest (Stopwatch timestamp; 0: not yet).</summary>
    private long _firstInstructionTicks;
    private int _quickTripleFaults;
    // Telemetry of earlier boots (each boot has its own buses and vCPUs), summed into --stats.
    private readonly Dictionary<string, long> _priorIoCounts = new(), _priorMmioCounts = new();
    /// <summary>Reads and writes of the local APIC pages, over every boot (under _lock).</summary>
    private long _localApicAccesses;
    private readonly Dictionary<string, long>[] _priorVcpuStats;

    // ---- the board: everything a reset rebuilds (see Build)
    private ITimedDevice[] _timed = null!;
    /// <summary>ServiceTimers' scratch: each device's deadline, read before the clock.</summary>
    private long[] _deadlines = null!;
    private IEngine _engine = null!;
    private IVcpu[] _vcpus = null!;
    private LocalApic[] _apics = null!;
    private Pic8259 _pic = null!;
    private IoApic _ioApic = null!;
    private ApicBus _apicBus = null!;
    private Uart16550 _com1 = null!;
    private AcpiPm _pm = null!;
    private bool[] _started = null!;
    private VcpuState?[] _pendingStart = null!;

    public GuestMemory Memory { get; } = new();
    /// <summary>The port bus of the current boot (a reset builds a new one).</summary>
    public AddressBus Io { get; private set; } = null!;
    /// <summary>The MMIO bus of the current boot.</summary>
    public AddressBus Mmio { get; private set; } = null!;
    public string EngineName => _engine.Name;
    public BootResult? Boot { get; private set; }
    /// <summary>How many times the guest has been reset (rebooted) so far.</summary>
    public int Resets { get; private set; }

    private sealed record ResetRequest(string Reason, bool TripleFault);

    public Machine(MachineConfig config)
    {
        _config = config;
        if (config.Cpus < 1 || config.Cpus > 64) throw new ConfigurationException($"--cpus {config.Cpus}: must be between 1 and 64");
        if (config.MemoryBytes > MaxMemoryBytes)
            throw new ConfigurationException($"memory size {DescribeSize(config.MemoryBytes)} is too large (the maximum is {DescribeSize(MaxMemoryBytes)})");
        if (config.NsPerInstruction < 0) throw new ConfigurationException($"instruction clock step {config.NsPerInstruction} ns: must be positive");
        if (config.NsPerInstruction > 0)
        {
            // Deterministic time needs one instruction stream to count and an engine that counts.
            if (config.Engine != EngineKind.Software) throw new ConfigurationException("the instruction-count clock needs the software engine");
            if (config.Cpus != 1) throw new ConfigurationException("the instruction-count clock needs one vCPU (--cpus 1): several vCPU threads interleave differently in every run");
            _clock = _icount = new InstructionClock(config.NsPerInstruction);
        }
        else
        {
            _clock = new HostClock();
        }
        _wake = new ManualResetEventSlim[config.Cpus];
        _startEpoch = new int[config.Cpus];
        _priorVcpuStats = new Dictionary<string, long>[config.Cpus];
        for (int c = 0; c < config.Cpus; c++)
        {
            _wake[c] = new ManualResetEventSlim(false);
            _priorVcpuStats[c] = new();
        }
        try
        {
            PcMemoryLayout.AddRam(Memory, config.MemoryBytes);
            // Images are read once; the first boot snapshots what the loader placed (BootImage) and a
            // reset writes that back, as QEMU reloads its -kernel blobs.
            _kernelImage = config.KernelImage ?? BootFiles.Read(config.KernelPath ?? throw new ConfigurationException("no kernel given (use --kernel FILE)"), "kernel");
            _initrdImage = config.InitrdPath != null ? BootFiles.Read(config.InitrdPath, "initrd") : null;
            foreach (var p in config.Modules)
            {
                var parts = p.Split(' ', 2);
                _moduleImages!.Add(new MultibootModule(BootFiles.Read(parts[0], "module"), p, parts[0]));
            }
            _isaIrqs = new IsaIrqLines(RouteIsaIrq);
            // The RTC is kept across resets, and so is its input on IRQ 8.
            _rtc = new Rtc146818(_clock, _isaIrqs.Connect(8, survivesReset: true));
            ulong below4g = Math.Min(config.MemoryBytes, PcMemoryLayout.PciHoleStart);
            _rtc.SetMemorySize(below4g, config.MemoryBytes - below4g);
            _rtc.SetCpuCount(config.Cpus);
            Build();
        }
        catch
        {
            _engine?.Dispose();
            Memory.Dispose();
            foreach (var w in _wake) w.Dispose();
            _tickerWake.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Builds the board for one boot: buses, devices (at their power-on state), interrupt
    /// controllers, a fresh engine with its vCPUs (so no decoded code or TLB survives), ACPI
    /// tables and the guest image. Called at construction and on every reset; guest RAM and the
    /// RTC/CMOS carry over.
    /// </summary>
    private void Build()
    {
        var config = _config;
        var timed = new List<ITimedDevice>();
        Io = new AddressBus("io", config.Log);
        Mmio = new AddressBus("mmio", config.Log);

        // ---- interrupt controllers
        _pic = new Pic8259();
        _apicBus = new ApicBus();
        _ioApic = new IoApic(_apicBus, id: (byte)config.Cpus);
        _apicBus.EoiBroadcast = v => _ioApic.Eoi(v);
        _apics = new LocalApic[config.Cpus];
        for (int c = 0; c < config.Cpus; c++)
        {
            var apic = new LocalApic(c, (byte)c, _clock, bootstrapProcessor: c == 0);
            if (c == 0) apic.Pic = _pic;
            apic.Bus = _apicBus;
            int cpu = c;
            apic.InterruptRequested = () => KickCpu(cpu);
            _apicBus.Add(apic);
            _apics[c] = apic;
            timed.Add(apic);
        }
        _apicBus.InitRequested = cpu => OnInit(cpu);
        _apicBus.StartupRequested = (cpu, vector) => OnStartup(cpu, vector);
        // SetLint kicks vCPU 0 itself (InterruptRequested) whenever the level is an interrupt for it.
        _pic.IntrOutput = new IrqLine(level => _apics[0].SetLint(0, level));
        Io.Map(0x20, 2, _pic.Master);
        Io.Map(0xA0, 2, _pic.Slave);
        Io.Map(0x4D0, 2, _pic.Elcr);
        // The previous board's devices leave the ISA lines, whatever level they held; the new
        // controllers learn the level of each line (only the RTC's input survives).
        _isaIrqs.Reset();
        Mmio.Map(AcpiTableBuilder.IoApicGpa, 0x1000, _ioApic);
        // The local APIC page is not on the MMIO bus: each vCPU sees its own APIC there, so
        // the run loop routes that page by the exiting vCPU (see MmioRead/MmioWrite).

        // ---- legacy devices
        var pit = new Pit8254(_clock, IsaIrq(0));
        Io.Map(0x40, 4, pit);
        Io.Map(0x61, 1, pit.SpeakerPort);
        timed.Add(pit);
        Io.Map(0x70, 2, _rtc);
        timed.Add(_rtc);
        var kbc = new I8042(IsaIrq(1), () => RequestReset("keyboard controller reset command 0xFE", tripleFault: false), _ => { }, IsaIrq(12));
        Io.Map(0x60, 1, kbc);
        Io.Map(0x64, 1, kbc, offsetBias: 4);
        _com1 = new Uart16550(IsaIrq(4), config.Com1Output ?? new NullSerialBackend(), _clock, "com1");
        Io.Map(0x3F8, 8, _com1);
        timed.Add(_com1);
        // COM2–COM4 at the PC's (and QEMU's isa-serial) addresses and IRQs, COM3 sharing IRQ4 with
        // COM1 and COM4 sharing IRQ3 with COM2. They have no host input, but loopback fills their
        // receive FIFO, and its character timeout is an interrupt that time alone raises: they
        // are timed devices like COM1.
        (ushort Port, int Irq, string Name)[] others = [(0x2F8, 3, "com2"), (0x3E8, 4, "com3"), (0x2E8, 3, "com4")];
        foreach (var (port, irq, name) in others)
        {
            var uart = new Uart16550(IsaIrq(irq), new NullSerialBackend(), _clock, name);
            Io.Map(port, 8, uart);
            timed.Add(uart);
        }
        Io.Map(0x80, 1, new PostCodePort());
        Io.Map(0xE9, 1, new DebugConsole(b => config.DebugConsoleOutput?.Invoke(b)));
        Io.Map(0xF4, 4, new DebugExit(code => Stop(new MachineResult(code, $"guest wrote to the debug-exit port: exit code {code}"))));
        var pci = new PciBus();
        pci.Add(0, 0, new I440fxHostBridge());
        pci.Add(1, 0, new Piix3IsaBridge());
        Io.Map(0xCF8, 8, new PciConfigIo(pci, () => RequestReset("reset control register, port 0xCF9", tripleFault: false)));
        // The whole register block: selector and data at 0x510/0x511 and the DMA address at
        // 0x514–0x51B, which the device advertises in its ID because it has guest memory.
        var fwcfg = new FwCfg(Memory);
        Io.Map(0x510, FwCfg.Size, fwcfg);
        _pm = new AcpiPm(_clock, IsaIrq(AcpiTableBuilder.SciInt), () => Stop(new MachineResult(ExitCodes.PowerOff, "guest powered off (ACPI S5)")), AcpiTableBuilder.S5SlpTyp);
        Io.Map(AcpiTableBuilder.Pm1aEvtBlk, AcpiTableBuilder.Pm1EvtLen, _pm.EventBlock);
        Io.Map(AcpiTableBuilder.Pm1aCntBlk, AcpiTableBuilder.Pm1CntLen, _pm.ControlBlock);
        Io.Map(AcpiTableBuilder.PmTmrBlk, AcpiTableBuilder.PmTmrLen, _pm.Timer);
        timed.Add(_pm);
        _timed = timed.ToArray();
        _deadlines = new long[_timed.Length];

        // ---- engine and vCPUs
        _engine = config.Engine switch
        {
            EngineKind.Kvm => CreateKvm(),
            // A deterministic run also gives RDRAND a reproducible stream (Linux draws from it at boot).
            _ => new SoftwareEngine(Memory) { CpuCount = config.Cpus, PlatformMsrs = new PlatformMsrs(this), Clock = _clock, RandomSeed = _icount != null ? 0x5EED : null },
        };
        var vcpus = new IVcpu[config.Cpus];
        _started = new bool[config.Cpus];
        _pendingStart = new VcpuState?[config.Cpus];
        for (int c = 0; c < config.Cpus; c++)
        {
            vcpus[c] = _engine.CreateVcpu(c);
            vcpus[c].InterruptSource = new CountingSource(this, _apics[c]);
            // The TSC-deadline timer compares the guest's TSC; the software CPU says when its TSC
            // reaches a value on the machine clock. (KVM's CPUID does not offer TSC-deadline.)
            if (vcpus[c] is SoftwareVcpu sv) _apics[c].TscToNs = sv.TscToNs;
        }
        if (_icount != null) _icount.Follow((SoftwareVcpu)vcpus[0]);
        _vcpus = vcpus;
        _started[0] = true;

        // ---- tables and the guest
        var acpi = AcpiTableBuilder.Build(Memory, new AcpiConfig { CpuCount = config.Cpus });
        if (_bootImage == null)
        {
            Boot = LoadGuest(acpi);
            _bootImage = BootImage.Capture(Memory, Boot);
            // The snapshot holds everything a reset needs: drop the files' bytes.
            _kernelImage = _initrdImage = null;
            _moduleImages = null;
            // Loading left the file bytes, the decompressor's buffers and the unpacked kernel
            // (tens of MiB, on the large-object heap) for the GC; give their pages back to the
            // host now instead of carrying them for the whole run.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        }
        else
        {
            _bootImage.Restore(Memory);
        }
        _vcpus[0].SetState(Boot!.BootCpu);
        for (int c = 1; c < config.Cpus; c++)
        {
            // Application processors wait for INIT/SIPI in the wait-for-SIPI state.
            _vcpus[c].SetState(VcpuState.AfterReset());
        }
    }

    private IEngine CreateKvm()
    {
        if (!KvmEngine.IsAvailable(out string why)) throw new ConfigurationException($"--engine kvm: {why}");
        return new KvmEngine(Memory, _config.Cpus);
    }

    /// <summary>A new input on ISA IRQ <paramref name="irq"/> for one device of the board being built.</summary>
    private IIrqLine IsaIrq(int irq) => _isaIrqs.Connect(irq);

    /// <summary>Where a change of an ISA line's (wired-OR) level goes: the current board's controllers.</summary>
    private void RouteIsaIrq(int irq, bool level)
    {
        // ISA IRQ n goes to PIC input n and IOAPIC pin n, except the timer (IRQ0 → pin 2), as the MADT says.
        _pic.SetIrq(irq, level);
        _ioApic.SetIrq(irq == 0 ? 2 : irq, level);
    }

    private static string DescribeSize(ulong bytes)
        => bytes >= 1UL << 30 && bytes % (1UL << 30) == 0 ? $"{bytes >> 30} GiB" : $"{bytes >> 20} MiB";

    private BootResult LoadGuest(AcpiTables acpi)
    {
        string name = _config.KernelPath ?? _config.KernelName;
        var kernel = _kernelImage!;
        if (MultibootHeader.Find(kernel) != null)
        {
            return MultibootLoader.Load(Memory, new MultibootConfig
            {
                Kernel = kernel, KernelName = name, CommandLine = _config.CommandLine, Modules = _moduleImages!,
                ExtraE820 = acpi.E820Entries,
            });
        }
        var bz = BzImage.Parse(kernel, name);
        return LinuxLoader.Load(Memory, new LinuxBootConfig
        {
            Kernel = bz,
            Initrd = _initrdImage,
            InitrdName = _config.InitrdPath ?? "initrd",
            CommandLine = _config.CommandLine,
            Entry = bz.Supports64BitEntry ? LinuxEntry.Long64 : LinuxEntry.Protected32,
            AcpiRsdpAddress = acpi.RsdpGpa,
            ExtraE820 = acpi.E820Entries,
        });
    }

    // ------------------------------------------------------------------ running

    /// <summary>
    /// Runs the VM until it powers off, exits, faults or is cancelled. A guest reset (port 0xCF9,
    /// the keyboard controller, a triple fault) reboots the machine — every vCPU back to its reset
    /// state, devices at power-on, the image loaded again — unless <see cref="MachineConfig.NoReboot"/>
    /// is set, as QEMU without and with -no-reboot.
    /// </summary>
    public MachineResult Run(CancellationToken cancel = default)
    {
        _uptime.Start();
        using var reg = cancel.Register(() => Stop(new MachineResult(ExitCodes.PowerOff, "stopped by the user")));
        Thread? input = _config.Com1Input != null ? new Thread(InputThread) { IsBackground = true, Name = "com1-input" } : null;
        input?.Start();
        while (true)
        {
            RunOneBoot();
            if (_result != null) break;
            var reset = _reset;
            if (reset == null)
            {
                _result = new MachineResult(ExitCodes.InternalError, "all vCPUs stopped");
                break;
            }
            if (!Reboot(reset)) break;
        }
        _uptime.Stop();
        return _result!;
    }

    /// <summary>Runs the vCPU threads and the timer thread of the current board until a stop or reset.</summary>
    private void RunOneBoot()
    {
        _bootTime.Restart();
        var threads = new Thread[_vcpus.Length];
        for (int c = 0; c < _vcpus.Length; c++)
        {
            int cpu = c;
            threads[c] = new Thread(() => VcpuThread(cpu)) { IsBackground = true, Name = $"vcpu{c}" };
            threads[c].Start();
        }
        // The ticker kicks vCPUs at host-time deadlines; with the instruction clock the vCPU itself
        // stops at the deadline's instruction (StopAtInstruction), and a kick would only add exits
        // at instructions that differ from run to run.
        Thread? ticker = _icount == null ? new Thread(TimerThread) { IsBackground = true, Name = "timers" } : null;
        ticker?.Start();
        foreach (var t in threads) t.Join();
        ticker?.Join();
    }

    /// <summary>
    /// All vCPU threads have stopped for <paramref name="reset"/>: says so on the notice sink, and
    /// either rebuilds the board for the next boot (true) or, in a reset loop, ends the VM (false).
    /// </summary>
    private bool Reboot(ResetRequest reset)
    {
        // The guard: a guest that triple-faults right after every boot would otherwise loop for ever.
        _quickTripleFaults = reset.TripleFault && _bootTime.Elapsed < QuickBootLimit ? _quickTripleFaults + 1 : 0;
        if (_quickTripleFaults >= MaxQuickTripleFaults)
        {
            _result = new MachineResult(ExitCodes.TripleFault,
                $"{reset.Reason}; the guest triple-faulted {_quickTripleFaults} times in a row within {QuickBootLimit.TotalSeconds:0} s of booting: stopped a reset loop");
            return false;
        }
        _config.Notice?.Invoke($"guest reset ({reset.Reason})");
        lock (_lock)
        {
            if (_result != null) return false; // stopped (Ctrl-C) while resetting
            SaveTelemetry();
            _engine.Dispose();
            ResetRtc();
            try
            {
                Build();
            }
            catch (VmmException e)
            {
                _result = new MachineResult(ExitCodes.InternalError, $"reboot failed: {e.Message}");
                return false;
            }
            Resets++;
            _reset = null;
        }
        foreach (var w in _wake) w.Reset();
        return true;
    }

    /// <summary>
    /// What a platform reset does to the MC146818 in QEMU (hw/rtc/mc146818rtc.c, rtc_reset):
    /// periodic and alarm interrupts and the square wave off, pending flags cleared (reading
    /// register C does that and drops IRQ 8), and the shutdown status byte cleared unless it holds
    /// 0xFE (S3 resume). Time and the rest of the NVRAM stay: the chip is battery-backed.
    /// </summary>
    private void ResetRtc()
    {
        _rtc.Write(0, 1, Rtc146818.RegB);
        byte b = (byte)_rtc.Read(1, 1);
        _rtc.Write(1, 1, (byte)(b & ~(Rtc146818.RegBPie | Rtc146818.RegBAie | Rtc146818.RegBSqwe)));
        _rtc.Write(0, 1, Rtc146818.RegC);
        _rtc.Read(1, 1);
        if (_rtc.GetNvram(Rtc146818.ShutdownStatus) != 0xFE) _rtc.SetNvram(Rtc146818.ShutdownStatus, 0);
    }

    private void SaveTelemetry()
    {
        foreach (var kv in Io.AccessCounts) _priorIoCounts[kv.Key] = _priorIoCounts.GetValueOrDefault(kv.Key) + kv.Value;
        foreach (var kv in Mmio.AccessCounts) _priorMmioCounts[kv.Key] = _priorMmioCounts.GetValueOrDefault(kv.Key) + kv.Value;
        _priorIoCounts["(unassigned)"] = _priorIoCounts.GetValueOrDefault("(unassigned)") + Io.UnmappedReads + Io.UnmappedWrites;
        for (int c = 0; c < _vcpus.Length; c++)
            foreach (var kv in _vcpus[c].Statistics)
                _priorVcpuStats[c][kv.Key] = _priorVcpuStats[c].GetValueOrDefault(kv.Key) + kv.Value;
    }

    /// <summary>
    /// The guest asked for a reset (or triple-faulted). With -no-reboot the VM ends: a triple
    /// fault with its own exit code, a requested reset as a power-off (QEMU exits 0).
    /// </summary>
    private void RequestReset(string reason, bool tripleFault)
    {
        if (_config.NoReboot)
        {
            Stop(new MachineResult(tripleFault ? ExitCodes.TripleFault : ExitCodes.Reset,
                tripleFault ? reason : $"guest requested a reset ({reason})"));
            return;
        }
        lock (_stopLock) _reset ??= new ResetRequest(reason, tripleFault);
        KickAll();
    }

    /// <summary>True while the current boot runs: no stop and no reset requested.</summary>
    private bool Running => _result == null && _reset == null;

    public void Stop(MachineResult result)
    {
        lock (_stopLock)
        {
            _result ??= result;
        }
        KickAll();
    }

    private void KickAll()
    {
        // Under _lock: a reset swaps the vCPUs and disposes the old ones under it, and Dispose
        // disposes the events under it. Kick only asks (a flag, a signal): it never waits.
        lock (_lock)
        {
            if (_disposed) return;
            foreach (var v in _vcpus ?? []) v?.Kick();
            foreach (var w in _wake) w.Set();
            _tickerWake.Set();
        }
    }

    private readonly object _stopLock = new();

    /// <summary>Wakes <paramref name="cpu"/> (halted or running). Callers hold _lock.</summary>
    private void KickCpu(int cpu)
    {
        if (_disposed) return;
        _wake[cpu].Set();
        if (_vcpus != null && cpu < _vcpus.Length) _vcpus[cpu]?.Kick();
    }

    private void VcpuThread(int cpu)
    {
        try
        {
            RunVcpu(cpu);
        }
        catch (VmmException e)
        {
            Stop(new MachineResult(ExitCodes.InternalError, e.Message));
        }
        catch (Exception e)
        {
            // The one catch-all of the machine: stop cleanly with the reason.
            Stop(new MachineResult(ExitCodes.InternalError, $"vCPU {cpu} failed: {e.GetType().Name}: {e.Message}"));
        }
    }

    private void RunVcpu(int cpu)
    {
        var vcpu = _vcpus[cpu];
        var exit = vcpu.Exit;
        int halts = 0; // consecutive HLT exits: the guest halted again without taking the interrupt
        long retiredAtHalt = -2;
        bool started = false;
        int epoch = 0;
        while (Running)
        {
            // The start state changes only through INIT/STARTUP, which bump the epoch (and kick,
            // so Run returns): the lock is taken only then, not before every Run.
            if (!started || Volatile.Read(ref _startEpoch[cpu]) != epoch)
            {
                lock (_lock)
                {
                    started = _started[cpu] && _pendingStart[cpu] == null;
                    epoch = _startEpoch[cpu];
                }
                if (!started)
                {
                    WaitForStartup(cpu);
                    continue;
                }
            }
            // Only a timestamp here, on the way into the guest; StatisticsTable turns it into ms since process start.
            if (cpu == 0 && _firstInstructionTicks == 0) _firstInstructionTicks = Stopwatch.GetTimestamp();
            if (_icount != null)
                lock (_lock) SetInstructionStop(cpu);
            var reason = vcpu.Run();
            lock (_lock)
            {
                CountExit(reason);
                switch (reason)
                {
                    case ExitReason.IoIn:
                        exit.Data = Io.Read(exit.Address, exit.Size);
                        break;
                    case ExitReason.IoOut:
                        Io.Write(exit.Address, exit.Size, exit.Data);
                        break;
                    case ExitReason.MmioRead:
                        exit.Data = MmioRead(cpu, exit.Address, exit.Size);
                        break;
                    case ExitReason.MmioWrite:
                        MmioWrite(cpu, exit.Address, exit.Size, exit.Data);
                        break;
                    case ExitReason.Halt:
                        break;
                    case ExitReason.Interrupted:
                        break;
                    case ExitReason.Shutdown:
                        RequestReset($"vCPU {cpu}: {exit.Message ?? "shutdown"}", tripleFault: true);
                        return;
                    case ExitReason.InternalError:
                        Stop(new MachineResult(ExitCodes.InternalError, $"vCPU {cpu}: {exit.Message}"));
                        return;
                    default:
                        Stop(new MachineResult(ExitCodes.InternalError, $"vCPU {cpu}: unexpected exit {reason}"));
                        return;
                }
                ServiceTimers();
                PumpInput();
            }
            // A halt after guest instructions ran is a new wait, even if no exit came between (a
            // handler that acknowledged its interrupt through MSRs); only a halt with nothing run
            // since the last one means the interrupt that woke the vCPU was not taken. KVM does
            // not count instructions: there any exit in between counts as progress.
            long retired = (vcpu as SoftwareVcpu)?.InstructionsRetired ?? -1;
            bool progressed = retired != retiredAtHalt;
            if (reason == ExitReason.Halt) retiredAtHalt = retired;
            halts = reason != ExitReason.Halt ? 0 : progressed && retired >= 0 ? 1 : halts + 1;
            if (reason == ExitReason.Halt) WaitWhileHalted(cpu, interruptEndsWait: halts == 1, epoch);
        }
    }

    private void CountExit(ExitReason r) => _exitCounts[(int)r]++;

    private ulong MmioRead(int cpu, ulong gpa, int size)
    {
        if (gpa - AcpiTableBuilder.LocalApicGpa < 0x1000)
        {
            _localApicAccesses++;
            return _apics[cpu].Read(gpa - AcpiTableBuilder.LocalApicGpa, size);
        }
        return Mmio.Read(gpa, size);
    }

    private void MmioWrite(int cpu, ulong gpa, int size, ulong value)
    {
        if (gpa - AcpiTableBuilder.LocalApicGpa < 0x1000)
        {
            _localApicAccesses++;
            _apics[cpu].Write(gpa - AcpiTableBuilder.LocalApicGpa, size, value);
            return;
        }
        Mmio.Write(gpa, size, value);
    }

    /// <summary>Runs every timed device whose deadline has passed. Under _lock.</summary>
    private void ServiceTimers()
    {
        // The deadlines first, then the time: a device may answer "due now" with the clock's
        // current reading, which a time taken before asking would always precede. One clock
        // read serves every device.
        var timed = _timed;
        var deadlines = _deadlines;
        long earliest = long.MaxValue;
        for (int i = 0; i < timed.Length; i++)
        {
            long d = timed[i].NextDeadlineNs;
            deadlines[i] = d;
            if (d < earliest) earliest = d;
        }
        // The guest armed a timer that is due before the timer thread's next wake-up: wake it.
        if (earliest < _tickerTarget) _tickerWake.Set();
        if (earliest == long.MaxValue) return;
        long now = _clock.NowNs;
        if (earliest > now) return;
        for (int i = 0; i < timed.Length; i++)
            if (deadlines[i] <= now) timed[i].OnTime(now);
    }

    /// <summary>With the instruction clock: the vCPU leaves Run where the next deadline is due. Under _lock.</summary>
    private void SetInstructionStop(int cpu) =>
        ((SoftwareVcpu)_vcpus[cpu]).StopAtInstruction = _icount!.InstructionAt(NextDeadlineLocked());

    /// <summary>The earliest device deadline. Under _lock.</summary>
    private long NextDeadlineLocked()
    {
        long next = long.MaxValue;
        foreach (var d in _timed) next = Math.Min(next, d.NextDeadlineNs);
        return next;
    }

    private long NextDeadline()
    {
        lock (_lock) return NextDeadlineLocked();
    }

    /// <summary>
    /// Sleeps until an interrupt is pending for <paramref name="cpu"/> or a device deadline passes.
    /// When the vCPU halted again right after being woken for a pending interrupt, the guest has
    /// interrupts disabled (CLI; HLT): then only time (and NMI/INIT kicks) end the wait, so a
    /// halted guest never spins the host CPU. INIT or STARTUP for this vCPU (a new
    /// <paramref name="epoch"/>) ends the wait too.
    /// </summary>
    private void WaitWhileHalted(int cpu, bool interruptEndsWait, int epoch)
    {
        while (Running && Volatile.Read(ref _startEpoch[cpu]) == epoch)
        {
            long next;
            lock (_lock)
            {
                ServiceTimers();
                PumpInput();
                if (interruptEndsWait && _apics[cpu].HasInterrupt) return;
                next = interruptEndsWait ? NextDeadlineLocked() : 0;
            }
            if (!interruptEndsWait)
            {
                _wake[cpu].Wait(20);
                _wake[cpu].Reset();
                return;
            }
            if (_icount != null && next != long.MaxValue)
            {
                // Nothing runs until the next deadline: go there at once (QEMU's icount does the same).
                lock (_lock) _icount.SkipTo(next);
                continue;
            }
            long wait = next == long.MaxValue ? long.MaxValue : next - _clock.NowNs;
            int ms = wait <= 0 ? 0 : (int)Math.Clamp(wait / 1_000_000, 1, 20);
            if (ms > 0) _wake[cpu].Wait(ms);
            _wake[cpu].Reset();
        }
    }

    /// <summary>
    /// Wakes vCPUs at device deadlines so timers fire while guest code runs without exits. It
    /// sleeps until the earliest deadline (at most 10 ms, at least 1 ms: the host's sleep
    /// granularity) and is woken early when the guest arms an earlier one (ServiceTimers after
    /// an exit, a TSC-deadline WRMSR), so a timer armed mid-sleep is not late by the rest of it.
    /// </summary>
    private void TimerThread()
    {
        while (Running)
        {
            long next;
            lock (_lock)
            {
                next = NextDeadlineLocked();
                _tickerTarget = next;
                _tickerWake.Reset();
            }
            long wait = next == long.MaxValue ? long.MaxValue : next - _clock.NowNs;
            if (wait <= 0)
            {
                foreach (var v in _vcpus) v.Kick();
                Thread.Sleep(1);
                continue;
            }
            _tickerWake.Wait((int)Math.Clamp(wait / 1_000_000, 1, 10));
        }
        lock (_lock) _tickerTarget = long.MinValue; // no ticker: nothing to wake
    }

    /// <summary>The deadline the timer thread sleeps towards (under _lock); long.MinValue while it does not run.</summary>
    private long _tickerTarget = long.MinValue;
    private readonly ManualResetEventSlim _tickerWake = new(false);

    // ------------------------------------------------------------------ serial input

    // Host input waiting for COM1's receive FIFO: a ring of InputQueueCapacity bytes guarded by
    // lock(_inputRing). Lock order: _lock, then _inputRing (PumpInput); the input thread never
    // holds both, so it can wait for room without holding up a vCPU.
    private readonly byte[] _inputRing = new byte[InputQueueCapacity];
    private int _inputHead;
    /// <summary>Bytes in the ring; read without the ring lock (Volatile) so an idle pump costs one load.</summary>
    private int _inputCount;
    /// <summary>Terminal input thrown away because the ring was full (see MachineConfig.Com1InputIsTerminal).</summary>
    private long _inputDropped;

    private bool InputStopped => _result != null || _disposed;

    private void InputThread()
    {
        var s = _config.Com1Input!;
        var buf = new byte[64];
        bool ctrlA = false;
        while (!InputStopped)  // the input thread outlives resets
        {
            int n;
            try { n = s.Read(buf, 0, buf.Length); } catch { return; }
            if (n <= 0) return;
            for (int k = 0; k < n; k++)
            {
                byte b = buf[k];
                if (ctrlA)
                {
                    ctrlA = false;
                    if (b == (byte)'x' || b == (byte)'X') { Stop(new MachineResult(ExitCodes.PowerOff, "terminated by Ctrl-A X")); return; }
                    if (b != 1 && !EnqueueInput(1)) return;
                }
                else if (b == 1) { ctrlA = true; continue; }
                if (!EnqueueInput(b)) return;
            }
            lock (_lock) KickCpu(0); // under the lock: a reset may be swapping the vCPUs
        }
    }

    /// <summary>
    /// Queues one host byte for COM1. When the ring is full (the guest is not reading), a pipe's
    /// byte waits for room, so the host input is held back instead of piling up; a terminal's byte
    /// is dropped, so the input thread keeps reading and still sees Ctrl-A X (raw mode turns
    /// Ctrl-C into a plain byte, so that is the user's only way out). False when the machine stopped.
    /// </summary>
    private bool EnqueueInput(byte b)
    {
        lock (_inputRing)
        {
            while (_inputCount == _inputRing.Length)
            {
                if (InputStopped) return false;
                if (_config.Com1InputIsTerminal) { _inputDropped++; return true; }
                // PumpInput pulses when it takes bytes; the timeout notices a stop.
                Monitor.Wait(_inputRing, 50);
            }
            _inputRing[(_inputHead + _inputCount) % _inputRing.Length] = b;
            Volatile.Write(ref _inputCount, _inputCount + 1);
            return true;
        }
    }

    /// <summary>Moves queued host input into COM1's receive FIFO as far as it has room. Under _lock.</summary>
    private void PumpInput()
    {
        if (Volatile.Read(ref _inputCount) == 0) return;
        lock (_inputRing)
        {
            int moved = 0;
            while (_inputCount > 0 && _com1.ReceiveSpace > 0)
            {
                _com1.TryReceive(_inputRing[_inputHead]);
                _inputHead = (_inputHead + 1) % _inputRing.Length;
                _inputCount--;
                moved++;
            }
            if (moved > 0) Monitor.PulseAll(_inputRing);
        }
    }

    /// <summary>Host input bytes queued for COM1 and not yet in its FIFO (tests).</summary>
    internal int QueuedInput => Volatile.Read(ref _inputCount);

    /// <summary>Terminal input bytes dropped because the guest did not read them (reported in --stats).</summary>
    public long InputDropped
    {
        get { lock (_inputRing) return _inputDropped; }
    }

    // ------------------------------------------------------------------ SMP start-up

    // INIT and STARTUP arrive under _lock (from the sending vCPU's ICR write); the target's
    // thread reads _started/_pendingStart under the same lock.
    private void OnInit(int cpu)
    {
        if (cpu == 0 || cpu >= _vcpus.Length) return;
        _started[cpu] = false;
        _pendingStart[cpu] = null;
        _startEpoch[cpu]++;
        KickCpu(cpu); // a running AP stops at once and waits for STARTUP (wait-for-SIPI)
    }

    private void OnStartup(int cpu, byte vector)
    {
        if (cpu == 0 || cpu >= _vcpus.Length || _started[cpu]) return;
        // SIPI: real mode at vector × 0x1000 (CS = vector << 8, IP = 0).
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode((ushort)(vector << 8), code: true);
        s.Rip = 0;
        s.Rdx = 0x600;
        _pendingStart[cpu] = s;
        _started[cpu] = true;
        _startEpoch[cpu]++;
        KickCpu(cpu);
    }

    private void WaitForStartup(int cpu)
    {
        _wake[cpu].Wait(20);
        _wake[cpu].Reset();
        VcpuState? s;
        lock (_lock)
        {
            s = _pendingStart[cpu];
            _pendingStart[cpu] = null;
        }
        if (s != null) _vcpus[cpu].SetState(s);
    }

    // ------------------------------------------------------------------ telemetry

    /// <summary>The telemetry table for --stats, summed over every boot of this run.</summary>
    public string StatisticsTable()
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"engine: {_engine.Name}, vCPUs: {_vcpus.Length}, memory: {Memory.RamSize >> 20} MiB, run time: {_uptime.Elapsed.TotalSeconds:F2} s{(Resets > 0 ? $", resets: {Resets}" : "")}");
        sb.AppendLine("exits by reason:");
        foreach (var r in Enum.GetValues<ExitReason>().OrderByDescending(r => _exitCounts[(int)r]))
            if (_exitCounts[(int)r] > 0) sb.AppendLine($"  {r,-16} {_exitCounts[(int)r],12}");
        var io = Sum(_priorIoCounts, Io.AccessCounts);
        long unassigned = io.GetValueOrDefault("(unassigned)") + Io.UnmappedReads + Io.UnmappedWrites;
        io.Remove("(unassigned)");
        sb.AppendLine("port I/O by device:");
        foreach (var kv in io.Where(k => k.Value > 0).OrderByDescending(k => k.Value)) sb.AppendLine($"  {kv.Key,-16} {kv.Value,12}");
        if (unassigned > 0) sb.AppendLine($"  {"(unassigned)",-16} {unassigned,12}");
        sb.AppendLine("MMIO by device:");
        // The local APICs sit beside the bus (routed by the exiting vCPU), so they are counted here.
        var mmio = Sum(_priorMmioCounts, Mmio.AccessCounts);
        mmio["lapic"] = _localApicAccesses;
        foreach (var kv in mmio.Where(k => k.Value > 0).OrderByDescending(k => k.Value)) sb.AppendLine($"  {kv.Key,-16} {kv.Value,12}");
        sb.AppendLine("interrupts by vector:");
        for (int v = 0; v < 256; v++) if (_vectorCounts[v] > 0) sb.AppendLine($"  0x{v:x2}             {_vectorCounts[v],12}");
        if (InputDropped > 0) sb.AppendLine($"COM1 input dropped (guest not reading): {InputDropped} bytes");
        // The VMM's own cost: start-up to the first guest instruction, memory beyond guest RAM.
        if (_firstInstructionTicks != 0 && HostUsage.MsSinceProcessStart() is double sinceStart
            && sinceStart - Stopwatch.GetElapsedTime(_firstInstructionTicks).TotalMilliseconds is var ms)
            sb.AppendLine($"host: first guest instruction {ms:F0} ms after process start");
        if (HostUsage.Resident(Memory) is var (total, guest))
            sb.AppendLine($"host: resident {total / 1048576.0:F1} MiB = guest RAM touched {guest / 1048576.0:F1} MiB + VMM {(total - guest) / 1048576.0:F1} MiB" +
                $" (managed heap {GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0:F1} MiB)");
        for (int c = 0; c < _vcpus.Length; c++)
        {
            // Where each vCPU stopped: the first thing to know about a guest that hangs.
            var where = new VcpuState();
            _vcpus[c].GetState(where);
            sb.AppendLine($"vCPU {c} stopped at {where.Cs.Selector:x4}:{where.Rip:x} (RFLAGS {where.Rflags:x})");
            sb.AppendLine($"vCPU {c}:");
            foreach (var kv in Sum(_priorVcpuStats[c], _vcpus[c].Statistics).OrderBy(k => k.Key)) sb.AppendLine($"  {kv.Key,-24} {kv.Value,12}");
        }
        return sb.ToString();
    }

    private static Dictionary<string, long> Sum(IReadOnlyDictionary<string, long> a, IReadOnlyDictionary<string, long> b)
    {
        var d = new Dictionary<string, long>(a);
        foreach (var kv in b) d[kv.Key] = d.GetValueOrDefault(kv.Key) + kv.Value;
        return d;
    }

    /// <summary>
    /// Frees the engine, guest RAM and the wake-up events. Under _lock with <see cref="_disposed"/>
    /// set first, so the input thread (which may outlive <see cref="Run"/>, blocked on a terminal
    /// read) or a late cancellation finds the machine stopped instead of a disposed object.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _engine?.Dispose();
            Memory.Dispose();
            foreach (var w in _wake) w.Dispose();
            _tickerWake.Dispose();
        }
        lock (_inputRing) Monitor.PulseAll(_inputRing); // an input thread waiting for room sees the stop
    }

    /// <summary>
    /// The vCPU's view of its local APIC (and through it the PIC), called by the engine from
    /// inside Run, i.e. outside the run loop's lock: it takes the machine lock, as every other
    /// use of the interrupt controllers does, and counts accepted vectors for --stats.
    /// </summary>
    private sealed class CountingSource(Machine m, LocalApic apic) : IInterruptSource, ITaskPriority
    {
        public byte Cr8
        {
            get { lock (m._lock) return apic.Cr8; }
            set { lock (m._lock) apic.Cr8 = value; }
        }

        public bool HasInterrupt
        {
            get { lock (m._lock) return apic.HasInterrupt; }
        }

        public byte Acknowledge()
        {
            lock (m._lock)
            {
                byte v = apic.Acknowledge();
                m._vectorCounts[v]++;
                return v;
            }
        }
    }

    /// <summary>
    /// MSRs the CPU forwards to platform devices: the APIC base and TSC deadline. Called from
    /// inside Run, so it takes the machine lock like every other APIC access.
    /// </summary>
    private sealed class PlatformMsrs(Machine m) : IMsrHandler
    {
        public bool TryRead(int vcpu, uint msr, out ulong value)
        {
            value = 0;
            if (msr != Msr.ApicBase && msr != LocalApic.MsrTscDeadline) return false;
            lock (m._lock)
            {
                var apic = m._apics[vcpu];
                value = msr == Msr.ApicBase ? apic.ReadApicBaseMsr() : apic.ReadTscDeadlineMsr();
            }
            return true;
        }

        public bool TryWrite(int vcpu, uint msr, ulong value)
        {
            if (msr != Msr.ApicBase && msr != LocalApic.MsrTscDeadline) return false;
            lock (m._lock)
            {
                var apic = m._apics[vcpu];
                if (msr == Msr.ApicBase) return apic.WriteApicBaseMsr(value);
                apic.WriteTscDeadlineMsr(value);
                // WRMSR does not leave the vCPU: tell the timer thread if this deadline comes first.
                if (apic.NextDeadlineNs < m._tickerTarget) m._tickerWake.Set();
                // WRMSR does not leave the vCPU: move its instruction-clock stop to the new deadline.
                if (m._icount != null) m.SetInstructionStop(vcpu);
                return true;
            }
        }
    }

    /// <summary>
    /// The guest image as the loader left it in RAM at the first boot: the bytes of every range it
    /// placed (kernel, bss, initrd, modules, boot information, page tables, GDT), in 64 KiB
    /// chunks with all-zero chunks (the bss) kept as a length only. A reset writes these back, as
    /// QEMU reloads its -kernel blobs, without parsing or decompressing the kernel again. The
    /// loaders write nothing outside their placed ranges (each adds every write to it).
    /// </summary>
    private sealed class BootImage
    {
        private const int ChunkSize = 64 << 10;
        private readonly List<(ulong Gpa, byte[]? Data, int Length)> _chunks = new();
        private readonly byte[] _zeros = new byte[ChunkSize];

        public static BootImage Capture(GuestMemory memory, BootResult boot)
        {
            var image = new BootImage();
            foreach (var r in boot.Placed)
            {
                for (ulong off = 0; off < r.Size; off += ChunkSize)
                {
                    int n = (int)Math.Min(ChunkSize, r.Size - off);
                    var data = new byte[n];
                    memory.Read(r.Gpa + off, data);
                    bool zero = data.AsSpan().IndexOfAnyExcept((byte)0) < 0;
                    image._chunks.Add((r.Gpa + off, zero ? null : data, n));
                }
            }
            return image;
        }

        public void Restore(GuestMemory memory)
        {
            foreach (var (gpa, data, length) in _chunks)
                memory.Write(gpa, data ?? _zeros.AsSpan(0, length));
        }
    }
}
