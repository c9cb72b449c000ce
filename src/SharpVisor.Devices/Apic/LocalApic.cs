// Local APIC in xAPIC mode: Intel SDM Vol. 3A chapter 11 (register map Table 11-1, priorities
// §11.8.3, EOI §11.8.5, ESR §11.5.3, timer §11.5.4, IPIs §11.6, power-up/INIT state §11.4.7,
// IA32_APIC_BASE §11.4.4). Identifies as QEMU's and KVM's xAPIC does: version 0x14 with
// Max LVT Entry = 5, so the version register reads 0x00050014. x2APIC is not offered.
//
// Deliberate choices and deviations (each one what QEMU/KVM do, so guests see a familiar APIC):
// - Accesses: reads of 1, 2, 4 or 8 bytes return the bytes of the 32-bit register at that offset
//   (bytes 4–15 of each 16-byte slot read 0); writes take effect only as aligned 32-bit stores,
//   others are ignored (the SDM requires aligned 32-bit accesses; smaller ones are model specific).
// - Reserved registers read 0 and set ESR "illegal register address", as the SDM describes; they
//   do not read all ones, because the page is the APIC's, not an unassigned bus address.
// - While the APIC is globally disabled (IA32_APIC_BASE[11] = 0) the page reads all ones and
//   ignores writes, and LINT0/LINT1 act as the CPU's INTR/NMI pins (SDM §11.4.3).
// - At reset the bootstrap processor's LVT LINT0 is ExtINT and unmasked (0x700), standing in for
//   the firmware's virtual-wire setup (MP spec §3.6.2.2), as QEMU and KVM do; so a guest that never
//   touches the APIC takes 8259 interrupts. 8259 interrupts pass through when the APIC is globally
//   disabled or LINT0 is unmasked in ExtINT mode, whatever the software-enable bit; writing SVR
//   with the enable bit clear masks every LVT (SDM §11.4.7.2), which ends the passthrough.
// - A software-disabled APIC drops fixed and lowest-priority interrupts (KVM); it still takes
//   NMI, INIT and STARTUP.
// - The LVT CMCI register (0x2F0) is kept as plain storage although Max LVT Entry = 5 does not
//   advertise it: nothing raises machine-check interrupts here.
// - Thermal and performance-counter LVTs are stored but never fire (no sensors, no PMU). SMI is
//   not modelled (no SMM): SMI messages and LVTs in SMI mode are dropped.
// - The timer counts at one tick per bus cycle (1 ns by default: QEMU and KVM use a 1 GHz bus).
//   Current count is computed from the clock, not stored. Changing the divide configuration while
//   the timer runs re-reads the elapsed time at the new divider (QEMU); the SDM leaves it undefined.
//   LVT timer mode 11b (reserved) counts as one-shot.
// - EOI-broadcast suppression and directed EOI are not offered (version bit 24 clear, SVR bit 12
//   not writable): every EOI of a level-triggered vector is broadcast to the I/O APICs.
//
// Threading: not thread safe. The machine serializes every call into the interrupt fabric
// (local APICs, ApicBus, I/O APIC, PIC), as AddressBus does for devices.
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;

namespace SharpVisor.Devices.Apic;

/// <summary>256 vector bits as eight 32-bit words, the layout of ISR, TMR and IRR.</summary>
[InlineArray(8)]
public struct ApicVectorBits
{
    private uint _word0;

    public bool Get(int vector) => (Words[vector >> 5] & (1u << (vector & 31))) != 0;
    public void Set(int vector) => Words[vector >> 5] |= 1u << (vector & 31);
    public void Clear(int vector) => Words[vector >> 5] &= ~(1u << (vector & 31));

    /// <summary>The highest vector whose bit is set, or -1.</summary>
    public int Highest()
    {
        var w = Words;
        for (int i = 7; i >= 0; i--)
            if (w[i] != 0) return (i << 5) + 31 - BitOperations.LeadingZeroCount(w[i]);
        return -1;
    }

    private Span<uint> Words => MemoryMarshal.CreateSpan(ref _word0, 8);
}

/// <summary>The seven LVT registers, indexed by <see cref="LocalApic.LvtIndex"/> values.</summary>
[InlineArray(7)]
public struct ApicLvtRegisters
{
    private uint _lvt0;
}

/// <summary>All state of a local APIC, as a plain value for snapshots.</summary>
public struct LocalApicState
{
    public ulong ApicBase;
    public byte Id;
    public byte Tpr;
    public byte Ldr;
    /// <summary>DFR bits 28–31: 0xF flat, 0x0 cluster.</summary>
    public byte DfrModel;
    public uint Svr;
    public ApicVectorBits Isr, Tmr, Irr;
    /// <summary>What ESR reads (errors latched at the last ESR write).</summary>
    public uint Esr;
    /// <summary>Errors detected since the last ESR write, not yet visible.</summary>
    public uint EsrPending;
    public uint IcrLow, IcrHigh;
    public ApicLvtRegisters Lvt;
    public uint TimerInitialCount;
    public uint TimerDivide;
    /// <summary>Clock time at which the current one-shot/periodic count started.</summary>
    public long TimerStartNs;
    public bool TimerArmed;
    /// <summary>IA32_TSC_DEADLINE; 0 = disarmed.</summary>
    public ulong TscDeadline;
    /// <summary>An ExtINT message arrived (I/O APIC pin in ExtINT mode): ask the PIC for the vector.</summary>
    public bool ExtIntPending;
    /// <summary>Bit 0 = LINT0 input level, bit 1 = LINT1.</summary>
    public byte LintLevels;
}

public sealed class LocalApic : IBusDevice, IInterruptSource, ITaskPriority, ITimedDevice
{
    /// <summary>Where the page lives after reset (IA32_APIC_BASE default).</summary>
    public const ulong DefaultBaseAddress = 0xFEE0_0000;
    public const ulong MmioSize = 0x1000;
    /// <summary>Version 0x14 (integrated xAPIC), Max LVT Entry 5 in bits 16–23.</summary>
    public const uint VersionValue = 0x0005_0014;

    // Register offsets (SDM Table 11-1).
    public const int RegId = 0x020, RegVersion = 0x030, RegTpr = 0x080, RegApr = 0x090, RegPpr = 0x0A0,
        RegEoi = 0x0B0, RegRrd = 0x0C0, RegLdr = 0x0D0, RegDfr = 0x0E0, RegSvr = 0x0F0,
        RegIsr = 0x100, RegTmr = 0x180, RegIrr = 0x200, RegEsr = 0x280, RegLvtCmci = 0x2F0,
        RegIcrLow = 0x300, RegIcrHigh = 0x310, RegLvtTimer = 0x320, RegLvtThermal = 0x330,
        RegLvtPerf = 0x340, RegLvtLint0 = 0x350, RegLvtLint1 = 0x360, RegLvtError = 0x370,
        RegTimerInitialCount = 0x380, RegTimerCurrentCount = 0x390, RegTimerDivide = 0x3E0;

    /// <summary>Indices into <see cref="LocalApicState.Lvt"/>.</summary>
    public static class LvtIndex
    {
        public const int Cmci = 0, Timer = 1, Thermal = 2, Perf = 3, Lint0 = 4, Lint1 = 5, Error = 6;
    }

    // IA32_APIC_BASE bits (SDM §11.4.4).
    public const ulong ApicBaseBsp = 1UL << 8, ApicBaseX2Apic = 1UL << 10, ApicBaseGlobalEnable = 1UL << 11;
    private const ulong ApicBaseAddressMask = 0x000F_FFFF_FFFF_F000;

    // SVR bits.
    public const uint SvrSoftwareEnable = 1u << 8, SvrFocusCheckingDisabled = 1u << 9;
    private const uint SvrWritable = 0x3FF;

    // LVT bits.
    public const uint LvtMasked = 1u << 16, LvtDeliveryStatus = 1u << 12, LvtPolarityLow = 1u << 13,
        LvtRemoteIrr = 1u << 14, LvtLevelTriggered = 1u << 15;
    public const uint LvtTimerPeriodic = 1u << 17, LvtTimerTscDeadline = 2u << 17;
    private const uint LvtTimerModeMask = 3u << 17;
    private const uint LvtResetValue = LvtMasked;
    /// <summary>BSP LINT0 after reset: ExtINT, unmasked (virtual wire; see the file comment).</summary>
    public const uint Lint0VirtualWire = (uint)ApicDeliveryMode.ExtInt << 8;

    // ICR bits.
    private const uint IcrLowWritable = 0x000C_CFFF; // vector, mode, dest mode, level, trigger, shorthand
    private const uint IcrLogical = 1u << 11, IcrAssert = 1u << 14, IcrLevelTriggered = 1u << 15;

    // ESR bits (SDM Figure 11-9).
    public const uint EsrSendAccept = 1u << 2, EsrReceiveAccept = 1u << 3, EsrRedirectableIpi = 1u << 4,
        EsrSendIllegalVector = 1u << 5, EsrReceivedIllegalVector = 1u << 6, EsrIllegalRegisterAddress = 1u << 7;

    /// <summary>The slowest APIC timer input accepted: 1 kHz (2^32 × 128 × 1 ms still fits in a long of ns).</summary>
    public const long MaxBusCycleNs = 1_000_000;

    /// <summary>MSR number of IA32_TSC_DEADLINE.</summary>
    public const uint MsrTscDeadline = 0x6E0;

    private readonly IClock _clock;
    private readonly long _busCycleNs;
    private readonly byte _initialId;
    private readonly bool _bootstrapProcessor;
    private LocalApicState _s;
    private bool _deliveringError;

    /// <param name="cpuIndex">The vCPU this APIC belongs to (stable; used for shorthands and reports).</param>
    /// <param name="apicId">Initial APIC ID (what CPUID and the MP/ACPI tables report).</param>
    /// <param name="clock">Time for the APIC timer.</param>
    /// <param name="bootstrapProcessor">Sets IA32_APIC_BASE.BSP and the virtual-wire LINT0.</param>
    /// <param name="busCycleNs">Nanoseconds per APIC timer tick before the divider (1 = 1 GHz bus).</param>
    public LocalApic(int cpuIndex, byte apicId, IClock clock, bool bootstrapProcessor, long busCycleNs = 1)
    {
        // Bounded so that initial count × divider × bus cycle (the timer period) fits in a long.
        if (busCycleNs is <= 0 or > MaxBusCycleNs)
            throw new ArgumentOutOfRangeException(nameof(busCycleNs), $"the APIC bus cycle must be 1–{MaxBusCycleNs} ns");
        CpuIndex = cpuIndex;
        _initialId = apicId;
        _clock = clock;
        _bootstrapProcessor = bootstrapProcessor;
        _busCycleNs = busCycleNs;
        Name = $"lapic{cpuIndex}";
        Reset();
    }

    public string Name { get; }
    public int CpuIndex { get; }

    /// <summary>Where IPIs go and where EOIs of level-triggered vectors are broadcast. <see cref="ApicBus.Add"/> sets it.</summary>
    public IApicBus? Bus { get; set; }

    /// <summary>The 8259 PIC behind LINT0 (ExtINT), normally only on the BSP.</summary>
    public IInterruptSource? Pic { get; set; }

    /// <summary>Raise NMI on this APIC's vCPU (LINT1 in NMI mode, NMI IPIs); e.g. <c>vcpu.RequestNmi</c>.</summary>
    public Action? Nmi { get; set; }

    /// <summary>
    /// Called when an interrupt arrives from outside the vCPU's own instruction stream (an IPI, the
    /// I/O APIC, the timer, LINT): the machine kicks or wakes the vCPU so it looks at <see cref="HasInterrupt"/>.
    /// </summary>
    public Action? InterruptRequested { get; set; }

    /// <summary>
    /// Converts a TSC value to clock nanoseconds for TSC-deadline mode. The machine supplies the
    /// engine's TSC relation; the default assumes a 1 GHz TSC that started at clock time 0.
    /// </summary>
    public Func<ulong, long>? TscToNs { get; set; }

    public byte Id => _s.Id;
    public byte LogicalId => _s.Ldr;
    /// <summary>DFR model: 0xF flat, 0x0 cluster.</summary>
    public byte DestinationFormat => _s.DfrModel;
    public bool IsGloballyEnabled => (_s.ApicBase & ApicBaseGlobalEnable) != 0;
    public bool IsSoftwareEnabled => (_s.Svr & SvrSoftwareEnable) != 0;
    public bool IsBootstrapProcessor => _bootstrapProcessor;
    /// <summary>Physical address of the page as the guest set it in IA32_APIC_BASE (the machine maps it).</summary>
    public ulong BaseAddress => _s.ApicBase & ApicBaseAddressMask;

    /// <summary>True when 8259 interrupts reach the CPU through this APIC (QEMU's apic_accept_pic_intr).</summary>
    public bool AcceptsPicInterrupts
    {
        get
        {
            if (!IsGloballyEnabled) return true;
            uint lint0 = _s.Lvt[LvtIndex.Lint0];
            return (lint0 & LvtMasked) == 0 && LvtMode(lint0) == ApicDeliveryMode.ExtInt;
        }
    }

    public LocalApicState GetState() => _s;
    public void SetState(in LocalApicState state) => _s = state;

    /// <summary>Power-up / RESET state (SDM §11.4.7.1).</summary>
    public void Reset()
    {
        _s = default;
        _s.ApicBase = DefaultBaseAddress | ApicBaseGlobalEnable | (_bootstrapProcessor ? ApicBaseBsp : 0);
        _s.Id = _initialId;
        ResetRegisters();
    }

    /// <summary>
    /// INIT (SDM §11.4.7.3): like power-up except that the APIC ID and IA32_APIC_BASE are kept.
    /// <see cref="ApicBus"/> calls it for INIT IPIs before reporting them to the machine.
    /// </summary>
    public void InitReset() => ResetRegisters();

    private void ResetRegisters()
    {
        _s.Tpr = 0;
        _s.Ldr = 0;
        _s.DfrModel = 0xF;
        _s.Svr = 0xFF;
        _s.Isr = default;
        _s.Tmr = default;
        _s.Irr = default;
        _s.Esr = _s.EsrPending = 0;
        _s.IcrLow = _s.IcrHigh = 0;
        for (int i = 0; i < 7; i++) _s.Lvt[i] = LvtResetValue;
        if (_bootstrapProcessor) _s.Lvt[LvtIndex.Lint0] = Lint0VirtualWire;
        _s.TimerInitialCount = 0;
        _s.TimerDivide = 0;
        _s.TimerStartNs = 0;
        _s.TimerArmed = false;
        _s.TscDeadline = 0;
        _s.ExtIntPending = false;
    }

    // ---- MSRs and CR8 (called by the engine through the machine) ----

    /// <summary>RDMSR 0x1B.</summary>
    public ulong ReadApicBaseMsr() => _s.ApicBase;

    /// <summary>
    /// WRMSR 0x1B. Returns false when the value is invalid and the CPU must raise #GP: reserved bits,
    /// or x2APIC enable (bit 10), which CPUID does not advertise. The BSP flag is read-only here.
    /// Clearing the global enable bit returns the APIC to its power-up state (SDM §11.4.3 allows
    /// this); setting it again enables it in that state. A new base address is recorded in
    /// <see cref="BaseAddress"/>; the machine keeps the page mapped where it was (Linux never moves it).
    /// </summary>
    public bool WriteApicBaseMsr(ulong value)
    {
        const ulong writable = ApicBaseAddressMask | ApicBaseGlobalEnable;
        if ((value & ~(writable | ApicBaseBsp)) != 0) return false;
        bool enable = (value & ApicBaseGlobalEnable) != 0;
        if (IsGloballyEnabled && !enable)
        {
            _s.Id = _initialId;
            ResetRegisters();
        }
        _s.ApicBase = (value & writable) | (_s.ApicBase & ApicBaseBsp);
        // Disabling hands LINT0 to the PIC directly; the vCPU may now have an interrupt.
        InterruptRequested?.Invoke();
        return true;
    }

    /// <summary>RDMSR 0x6E0: the armed deadline in TSC-deadline mode, 0 otherwise (SDM §11.5.4.1).</summary>
    public ulong ReadTscDeadlineMsr()
    {
        if (TimerModeOf(_s.Lvt[LvtIndex.Timer]) != TimerMode.TscDeadline) return 0;
        UpdateTimer(_clock.NowNs);
        return _s.TscDeadline;
    }

    /// <summary>WRMSR 0x6E0: arms (non-zero) or disarms (zero) the deadline; ignored outside TSC-deadline mode.</summary>
    public void WriteTscDeadlineMsr(ulong value)
    {
        if (TimerModeOf(_s.Lvt[LvtIndex.Timer]) != TimerMode.TscDeadline) return;
        _s.TscDeadline = value;
        // A deadline already in the past fires at once.
        UpdateTimer(_clock.NowNs);
    }

    /// <summary>CR8 = TPR[7:4] (SDM §11.8.6.1); a CR8 write clears TPR[3:0].</summary>
    public byte Cr8
    {
        get => (byte)(_s.Tpr >> 4);
        set => _s.Tpr = (byte)((value & 0xF) << 4);
    }

    // ---- interrupt inputs ----

    /// <summary>
    /// A fixed (or arbitrated lowest-priority) interrupt from the APIC bus. Vectors 0–15 are
    /// illegal: they set ESR "received illegal vector" and are not accepted.
    /// </summary>
    public void AcceptFixed(byte vector, bool levelTriggered)
    {
        if (!IsGloballyEnabled || !IsSoftwareEnabled) return;
        AcceptLocal(vector, levelTriggered);
    }

    /// <summary>An NMI message from the APIC bus.</summary>
    public void AcceptNmi()
    {
        if (!IsGloballyEnabled) return;
        Nmi?.Invoke();
    }

    /// <summary>An ExtINT message (I/O APIC pin in ExtINT mode): the vector will come from the PIC.</summary>
    public void AcceptExtInt()
    {
        if (!IsGloballyEnabled) return;
        _s.ExtIntPending = true;
        InterruptRequested?.Invoke();
    }

    /// <summary>
    /// The level of the LINT0 (<paramref name="pin"/> 0) or LINT1 (1) input, delivered as its LVT
    /// says. The 8259 in ExtINT mode is polled through <see cref="Pic"/> and needs no call here,
    /// but a PIC output wired to LINT0 may call it so the vCPU is kicked.
    /// </summary>
    public void SetLint(int pin, bool level)
    {
        if ((uint)pin > 1) return;
        byte bit = (byte)(1 << pin);
        bool wasHigh = (_s.LintLevels & bit) != 0;
        _s.LintLevels = (byte)(level ? _s.LintLevels | bit : _s.LintLevels & ~bit);
        bool risingEdge = level && !wasHigh;
        if (!IsGloballyEnabled)
        {
            // Globally disabled: LINT0 is INTR (the PIC is polled), LINT1 is NMI (SDM §11.4.3).
            if (pin == 1) { if (risingEdge) Nmi?.Invoke(); }
            else if (level) InterruptRequested?.Invoke();
            return;
        }
        int index = pin == 0 ? LvtIndex.Lint0 : LvtIndex.Lint1;
        uint lvt = _s.Lvt[index];
        if ((lvt & LvtMasked) != 0) return;
        switch (LvtMode(lvt))
        {
            case ApicDeliveryMode.Fixed:
                if ((lvt & LvtLevelTriggered) != 0)
                {
                    if (level) DeliverLevelLint(index);
                }
                else if (risingEdge) AcceptLocal((byte)lvt, levelTriggered: false);
                break;
            case ApicDeliveryMode.Nmi:
                if (risingEdge) Nmi?.Invoke();
                break;
            case ApicDeliveryMode.ExtInt:
                if (level) InterruptRequested?.Invoke();
                break;
            default:
                // SMI, INIT and reserved modes on LINT are not modelled.
                break;
        }
    }

    private void DeliverLevelLint(int index)
    {
        uint lvt = _s.Lvt[index];
        if ((lvt & LvtRemoteIrr) != 0) return; // still in service: wait for EOI (SDM §11.5.1 remote IRR)
        _s.Lvt[index] = lvt | LvtRemoteIrr;
        AcceptLocal((byte)lvt, levelTriggered: true);
    }

    // ---- IInterruptSource ----

    public bool HasInterrupt
    {
        get
        {
            if ((AcceptsPicInterrupts || _s.ExtIntPending) && Pic is { HasInterrupt: true }) return true;
            if (!IsGloballyEnabled || !IsSoftwareEnabled) return false;
            int irrv = _s.Irr.Highest();
            return irrv >= 0 && (irrv & 0xF0) > (ProcessorPriority & 0xF0);
        }
    }

    /// <summary>
    /// INTA: ExtINT from the PIC first (it bypasses priorities), then the highest IRR vector above
    /// PPR moves to ISR. With nothing deliverable the spurious vector (SVR[7:0]) is returned and no
    /// ISR bit is set (SDM §11.9).
    /// </summary>
    public byte Acknowledge()
    {
        if ((AcceptsPicInterrupts || _s.ExtIntPending) && Pic is { HasInterrupt: true } pic)
        {
            _s.ExtIntPending = false;
            return pic.Acknowledge();
        }
        byte spurious = (byte)_s.Svr;
        if (!IsGloballyEnabled || !IsSoftwareEnabled) return spurious;
        int irrv = _s.Irr.Highest();
        if (irrv < 0 || (irrv & 0xF0) <= (ProcessorPriority & 0xF0)) return spurious;
        _s.Irr.Clear(irrv);
        _s.Isr.Set(irrv);
        return (byte)irrv;
    }

    /// <summary>PPR (SDM §11.8.3.1).</summary>
    public byte ProcessorPriority
    {
        get
        {
            int isrv = Math.Max(_s.Isr.Highest(), 0);
            return (_s.Tpr >> 4) >= (isrv >> 4) ? _s.Tpr : (byte)(isrv & 0xF0);
        }
    }

    /// <summary>APR (SDM §11.8.3.1, Figure 11-15), used for lowest-priority arbitration.</summary>
    public byte ArbitrationPriority
    {
        get
        {
            int isrv = Math.Max(_s.Isr.Highest(), 0);
            int irrv = Math.Max(_s.Irr.Highest(), 0);
            int tprClass = _s.Tpr >> 4;
            if (tprClass >= irrv >> 4 && tprClass > isrv >> 4) return _s.Tpr;
            return (byte)Math.Max(_s.Tpr & 0xF0, Math.Max(isrv & 0xF0, irrv & 0xF0));
        }
    }

    /// <summary>True when <paramref name="vector"/> is in this APIC's IRR or ISR (focus processor test, §11.6.2.4).</summary>
    public bool HasVectorPendingOrInService(byte vector) => _s.Irr.Get(vector) || _s.Isr.Get(vector);

    public bool FocusCheckingEnabled => (_s.Svr & SvrFocusCheckingDisabled) == 0;

    // ---- ITimedDevice ----

    public long NextDeadlineNs
    {
        get
        {
            if (!IsGloballyEnabled) return long.MaxValue;
            uint lvt = _s.Lvt[LvtIndex.Timer];
            // A masked timer needs no wake-ups: its count is computed from the clock, and the
            // register write that unmasks it first settles what expired meanwhile (undelivered).
            if ((lvt & LvtMasked) != 0) return long.MaxValue;
            if (TimerModeOf(lvt) == TimerMode.TscDeadline)
                return _s.TscDeadline == 0 ? long.MaxValue : DeadlineNs(_s.TscDeadline);
            if (!_s.TimerArmed || _s.TimerInitialCount == 0) return long.MaxValue;
            return _s.TimerStartNs + TimerPeriodNs;
        }
    }

    public void OnTime(long nowNs) => UpdateTimer(nowNs);

    private enum TimerMode { OneShot, Periodic, TscDeadline }

    private static TimerMode TimerModeOf(uint lvt) => (lvt & LvtTimerModeMask) switch
    {
        LvtTimerPeriodic => TimerMode.Periodic,
        LvtTimerTscDeadline => TimerMode.TscDeadline,
        _ => TimerMode.OneShot,
    };

    /// <summary>Divide configuration bits 0, 1 and 3 → shift: 000b = ÷2 … 110b = ÷128, 111b = ÷1 (SDM Figure 11-10).</summary>
    private int DivideShift
    {
        get
        {
            uint d = _s.TimerDivide;
            uint v = (d & 3) | ((d >> 1) & 4);
            return (int)((v + 1) & 7);
        }
    }

    private long TickNs => _busCycleNs << DivideShift;
    private long TimerPeriodNs => _s.TimerInitialCount * TickNs;

    private long DeadlineNs(ulong tsc) => TscToNs is { } f ? f(tsc) : (long)Math.Min(tsc, (ulong)long.MaxValue);

    /// <summary>Processes every expiry up to <paramref name="nowNs"/> under the current LVT settings.</summary>
    private void UpdateTimer(long nowNs)
    {
        if (!IsGloballyEnabled) return;
        uint lvt = _s.Lvt[LvtIndex.Timer];
        var mode = TimerModeOf(lvt);
        if (mode == TimerMode.TscDeadline)
        {
            if (_s.TscDeadline == 0 || nowNs < DeadlineNs(_s.TscDeadline)) return;
            // The timer disarms itself and clears IA32_TSC_DEADLINE when it fires (§11.5.4.1).
            _s.TscDeadline = 0;
            FireTimer();
            return;
        }
        if (!_s.TimerArmed || _s.TimerInitialCount == 0) return;
        long period = TimerPeriodNs;
        if (nowNs - _s.TimerStartNs < period) return;
        if (mode == TimerMode.Periodic)
        {
            // Missed periods collapse into one interrupt, as one IRR bit would hold them.
            long periods = (nowNs - _s.TimerStartNs) / period;
            _s.TimerStartNs += periods * period;
        }
        else _s.TimerArmed = false;
        FireTimer();
    }

    private void FireTimer()
    {
        uint lvt = _s.Lvt[LvtIndex.Timer];
        if ((lvt & LvtMasked) != 0) return;
        AcceptLocal((byte)lvt, levelTriggered: false);
    }

    private uint CurrentCount(long nowNs)
    {
        var mode = TimerModeOf(_s.Lvt[LvtIndex.Timer]);
        if (mode == TimerMode.TscDeadline || !_s.TimerArmed || _s.TimerInitialCount == 0) return 0;
        long elapsedTicks = Math.Max(nowNs - _s.TimerStartNs, 0) / TickNs;
        if (mode == TimerMode.Periodic)
            return (uint)(_s.TimerInitialCount - elapsedTicks % _s.TimerInitialCount);
        return elapsedTicks >= _s.TimerInitialCount ? 0 : (uint)(_s.TimerInitialCount - elapsedTicks);
    }

    // ---- local delivery and errors ----

    /// <summary>
    /// Puts a fixed interrupt in the IRR: locally generated ones (timer, error, LINT) and, through
    /// <see cref="AcceptFixed"/>, bus messages. Vectors 0–15 are illegal (ESR, not accepted).
    /// </summary>
    private void AcceptLocal(byte vector, bool levelTriggered)
    {
        if (vector < 16)
        {
            RecordError(EsrReceivedIllegalVector);
            return;
        }
        _s.Irr.Set(vector);
        if (levelTriggered) _s.Tmr.Set(vector); else _s.Tmr.Clear(vector);
        InterruptRequested?.Invoke();
    }

    /// <summary>Latches an error for the next ESR write and raises the LVT Error interrupt (SDM §11.5.3).</summary>
    private void RecordError(uint bit)
    {
        _s.EsrPending |= bit;
        uint lvt = _s.Lvt[LvtIndex.Error];
        // The guard stops an illegal error vector from recursing through another error.
        if ((lvt & LvtMasked) != 0 || _deliveringError) return;
        _deliveringError = true;
        AcceptLocal((byte)lvt, levelTriggered: false);
        _deliveringError = false;
    }

    private static ApicDeliveryMode LvtMode(uint lvt) => (ApicDeliveryMode)((lvt >> 8) & 7);

    private void Eoi()
    {
        int vector = _s.Isr.Highest();
        if (vector < 0) return;
        _s.Isr.Clear(vector);
        if (_s.Tmr.Get(vector)) Bus?.BroadcastEoi((byte)vector);
        // Level-triggered fixed LINT inputs wait for this EOI (remote IRR), then re-deliver if still high.
        for (int pin = 0; pin < 2; pin++)
        {
            int index = pin == 0 ? LvtIndex.Lint0 : LvtIndex.Lint1;
            uint lvt = _s.Lvt[index];
            if ((lvt & LvtRemoteIrr) == 0 || (byte)lvt != vector) continue;
            _s.Lvt[index] = lvt & ~LvtRemoteIrr;
            if ((_s.LintLevels & (1 << pin)) != 0 && (lvt & LvtMasked) == 0) DeliverLevelLint(index);
        }
    }

    // ---- IBusDevice ----

    public ulong Read(ulong offset, int size)
    {
        if (!IsGloballyEnabled || offset >= MmioSize) return BusValue.AllOnes(size);
        int byteInSlot = (int)(offset & 0xF);
        if (byteInSlot >= 4) return 0; // bytes 4–15 of each 16-byte slot are reserved
        uint value = ReadRegister((int)(offset & 0xFF0));
        return BusValue.Mask((ulong)value >> (byteInSlot * 8), size);
    }

    public void Write(ulong offset, int size, ulong value)
    {
        // Only aligned 32-bit stores are architectural (SDM §11.4.1); anything else is ignored.
        if (!IsGloballyEnabled || offset >= MmioSize || size != 4 || (offset & 0xF) != 0) return;
        WriteRegister((int)offset, (uint)value);
    }

    private uint ReadRegister(int reg)
    {
        switch (reg)
        {
            case RegId: return (uint)_s.Id << 24;
            case RegVersion: return VersionValue;
            case RegTpr: return _s.Tpr;
            case RegApr: return ArbitrationPriority;
            case RegPpr: return ProcessorPriority;
            case RegEoi: return 0; // write-only
            case RegRrd: return 0; // remote read is obsolete on xAPIC
            case RegLdr: return (uint)_s.Ldr << 24;
            case RegDfr: return ((uint)_s.DfrModel << 28) | 0x0FFF_FFFF;
            case RegSvr: return _s.Svr;
            case >= RegIsr and < RegIsr + 0x80: return _s.Isr[(reg - RegIsr) >> 4];
            case >= RegTmr and < RegTmr + 0x80: return _s.Tmr[(reg - RegTmr) >> 4];
            case >= RegIrr and < RegIrr + 0x80: return _s.Irr[(reg - RegIrr) >> 4];
            case RegEsr: return _s.Esr;
            case RegLvtCmci: return _s.Lvt[LvtIndex.Cmci];
            case RegIcrLow: return _s.IcrLow; // delivery status (bit 12) always reads idle
            case RegIcrHigh: return _s.IcrHigh;
            case >= RegLvtTimer and <= RegLvtError: return _s.Lvt[LvtIndex.Timer + ((reg - RegLvtTimer) >> 4)];
            case RegTimerInitialCount: return _s.TimerInitialCount;
            case RegTimerCurrentCount: return CurrentCount(_clock.NowNs);
            case RegTimerDivide: return _s.TimerDivide;
            default:
                RecordError(EsrIllegalRegisterAddress);
                return 0;
        }
    }

    private void WriteRegister(int reg, uint value)
    {
        switch (reg)
        {
            case RegId:
                // The xAPIC ID is writable (QEMU, KVM); the ApicBus routes by the current ID.
                _s.Id = (byte)(value >> 24);
                break;
            case RegTpr:
                _s.Tpr = (byte)value;
                break;
            case RegEoi:
                Eoi();
                break;
            case RegLdr:
                _s.Ldr = (byte)(value >> 24);
                break;
            case RegDfr:
                _s.DfrModel = (byte)(value >> 28);
                break;
            case RegSvr:
                WriteSvr(value);
                break;
            case RegEsr:
                // Write-then-read: a write makes the errors found since the last write visible.
                _s.Esr = _s.EsrPending;
                _s.EsrPending = 0;
                break;
            case RegIcrLow:
                _s.IcrLow = value & IcrLowWritable;
                SendIpi();
                break;
            case RegIcrHigh:
                _s.IcrHigh = value & 0xFF00_0000;
                break;
            case RegLvtCmci:
                WriteLvt(LvtIndex.Cmci, value);
                break;
            case >= RegLvtTimer and <= RegLvtError:
                WriteLvt(LvtIndex.Timer + ((reg - RegLvtTimer) >> 4), value);
                break;
            case RegTimerInitialCount:
                WriteInitialCount(value);
                break;
            case RegTimerDivide:
                UpdateTimer(_clock.NowNs);
                _s.TimerDivide = value & 0xB;
                break;
            case RegVersion or RegApr or RegPpr or RegRrd or RegTimerCurrentCount:
            case >= RegIsr and < RegIrr + 0x80:
                // Read-only registers: writes are ignored.
                break;
            default:
                RecordError(EsrIllegalRegisterAddress);
                break;
        }
    }

    private void WriteSvr(uint value)
    {
        // Settle the timer under the old mask before software-disable masks it.
        UpdateTimer(_clock.NowNs);
        _s.Svr = value & SvrWritable;
        if (!IsSoftwareEnabled)
            for (int i = 0; i < 7; i++) _s.Lvt[i] |= LvtMasked; // SDM §11.4.7.2
        InterruptRequested?.Invoke();
    }

    private static uint LvtWritableMask(int index) => index switch
    {
        LvtIndex.Timer => 0x000700FF,              // vector, mask, timer mode
        LvtIndex.Lint0 or LvtIndex.Lint1 => 0x0001A7FF, // vector, mode, polarity, trigger, mask
        LvtIndex.Error => 0x000100FF,              // vector, mask
        _ => 0x000107FF,                           // CMCI, thermal, perf: vector, mode, mask
    };

    private void WriteLvt(int index, uint value)
    {
        long now = _clock.NowNs;
        if (index == LvtIndex.Timer) UpdateTimer(now);
        uint old = _s.Lvt[index];
        uint writable = LvtWritableMask(index);
        uint lvt = (old & ~writable) | (value & writable);
        if (!IsSoftwareEnabled) lvt |= LvtMasked; // masks cannot be cleared while software-disabled
        if ((index == LvtIndex.Lint0 || index == LvtIndex.Lint1) && (lvt & LvtLevelTriggered) == 0)
            lvt &= ~LvtRemoteIrr; // remote IRR only means something for level-triggered inputs
        _s.Lvt[index] = lvt;
        if (index == LvtIndex.Timer)
        {
            bool wasDeadline = TimerModeOf(old) == TimerMode.TscDeadline;
            bool isDeadline = TimerModeOf(lvt) == TimerMode.TscDeadline;
            if (wasDeadline != isDeadline)
            {
                // Moving into or out of TSC-deadline mode disarms the timer (§11.5.4.1).
                _s.TimerArmed = false;
                _s.TimerInitialCount = 0;
                _s.TscDeadline = 0;
            }
        }
        else if (index == LvtIndex.Lint0)
            InterruptRequested?.Invoke(); // PIC passthrough may have been switched on
    }

    private void WriteInitialCount(uint value)
    {
        long now = _clock.NowNs;
        // In TSC-deadline mode writes to the initial count are ignored (§11.5.4.1).
        if (TimerModeOf(_s.Lvt[LvtIndex.Timer]) == TimerMode.TscDeadline) return;
        UpdateTimer(now); // an expiry that is due but not yet processed still counts
        _s.TimerInitialCount = value;
        _s.TimerStartNs = now;
        // Writing 0 stops the timer; any other value (re)starts the count.
        _s.TimerArmed = value != 0;
    }

    private void SendIpi()
    {
        uint icr = _s.IcrLow;
        var mode = (ApicDeliveryMode)((icr >> 8) & 7);
        byte vector = (byte)icr;
        var shorthand = (ApicDestinationShorthand)((icr >> 18) & 3);
        switch (mode)
        {
            case ApicDeliveryMode.Fixed or ApicDeliveryMode.LowestPriority:
                if (vector < 16)
                {
                    RecordError(EsrSendIllegalVector);
                    return;
                }
                // Lowest priority to self or to all including self is not a valid ICR combination (§11.6.1).
                if (mode == ApicDeliveryMode.LowestPriority && shorthand is ApicDestinationShorthand.Self or ApicDestinationShorthand.AllIncludingSelf)
                    return;
                break;
            case ApicDeliveryMode.Reserved3 or ApicDeliveryMode.ExtInt:
                // Not valid IPI delivery modes: dropped.
                return;
            default:
                // NMI, INIT, STARTUP and SMI to self are invalid.
                if (shorthand == ApicDestinationShorthand.Self) return;
                break;
        }
        var message = new ApicMessage(
            Vector: vector,
            DeliveryMode: mode,
            LogicalDestination: (icr & IcrLogical) != 0,
            Destination: (byte)(_s.IcrHigh >> 24),
            Shorthand: shorthand,
            LevelTriggered: (icr & IcrLevelTriggered) != 0,
            Assert: (icr & IcrAssert) != 0,
            SourceCpu: CpuIndex);
        Bus?.Deliver(message);
    }
}
