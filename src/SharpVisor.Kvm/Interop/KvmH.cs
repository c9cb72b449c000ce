// linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (API version 12) in C#, names kept verbatim
// so that they can be looked up in the kernel's Documentation/virt/kvm/api.rst. Only what the
// engine uses is declared. Ioctl numbers are the kernel's _IO/_IOR/_IOW/_IOWR encodings
// (checked against the struct sizes by the tests).
#pragma warning disable CS8981 // kernel names are lower case on purpose
using System.Runtime.InteropServices;

namespace SharpVisor.Kvm.Interop;

/// <summary>Constants of linux/kvm.h (the class is named after the header).</summary>
internal static class KvmH
{
    public const int KVM_API_VERSION = 12;

    // System ioctls (on the /dev/kvm fd).
    public const uint KVM_GET_API_VERSION = 0xAE00;              // _IO(KVMIO, 0x00)
    public const uint KVM_CREATE_VM = 0xAE01;                    // _IO(KVMIO, 0x01)
    public const uint KVM_GET_MSR_INDEX_LIST = 0xC004AE02;       // _IOWR(KVMIO, 0x02, struct kvm_msr_list)
    public const uint KVM_CHECK_EXTENSION = 0xAE03;              // _IO(KVMIO, 0x03)
    public const uint KVM_GET_VCPU_MMAP_SIZE = 0xAE04;           // _IO(KVMIO, 0x04)
    public const uint KVM_GET_SUPPORTED_CPUID = 0xC008AE05;      // _IOWR(KVMIO, 0x05, struct kvm_cpuid2)

    // VM ioctls.
    public const uint KVM_CREATE_VCPU = 0xAE41;                  // _IO(KVMIO, 0x41)
    public const uint KVM_SET_USER_MEMORY_REGION = 0x4020AE46;   // _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
    public const uint KVM_SET_TSS_ADDR = 0xAE47;                 // _IO(KVMIO, 0x47)
    public const uint KVM_SET_IDENTITY_MAP_ADDR = 0x4008AE48;    // _IOW(KVMIO, 0x48, __u64)

    // vCPU ioctls.
    public const uint KVM_RUN = 0xAE80;                          // _IO(KVMIO, 0x80)
    public const uint KVM_GET_REGS = 0x8090AE81;                 // _IOR(KVMIO, 0x81, struct kvm_regs)
    public const uint KVM_SET_REGS = 0x4090AE82;                 // _IOW(KVMIO, 0x82, struct kvm_regs)
    public const uint KVM_GET_SREGS = 0x8138AE83;                // _IOR(KVMIO, 0x83, struct kvm_sregs)
    public const uint KVM_SET_SREGS = 0x4138AE84;                // _IOW(KVMIO, 0x84, struct kvm_sregs)
    public const uint KVM_INTERRUPT = 0x4004AE86;                // _IOW(KVMIO, 0x86, struct kvm_interrupt)
    public const uint KVM_GET_MSRS = 0xC008AE88;                 // _IOWR(KVMIO, 0x88, struct kvm_msrs)
    public const uint KVM_SET_MSRS = 0x4008AE89;                 // _IOW(KVMIO, 0x89, struct kvm_msrs)
    public const uint KVM_GET_FPU = 0x81A0AE8C;                  // _IOR(KVMIO, 0x8c, struct kvm_fpu)
    public const uint KVM_SET_FPU = 0x41A0AE8D;                  // _IOW(KVMIO, 0x8d, struct kvm_fpu)
    public const uint KVM_GET_XSAVE = 0x9000AEA4;                // _IOR(KVMIO, 0xa4, struct kvm_xsave), 4096 bytes
    public const uint KVM_SET_XSAVE = 0x5000AEA5;                // _IOW(KVMIO, 0xa5, struct kvm_xsave)
    public const uint KVM_SET_CPUID2 = 0x4008AE90;               // _IOW(KVMIO, 0x90, struct kvm_cpuid2)
    public const uint KVM_GET_CPUID2 = 0xC008AE91;               // _IOWR(KVMIO, 0x91, struct kvm_cpuid2)
    public const uint KVM_NMI = 0xAE9A;                          // _IO(KVMIO, 0x9a)

    // Capabilities (KVM_CHECK_EXTENSION).
    public const int KVM_CAP_SET_TSS_ADDR = 4;
    public const int KVM_CAP_EXT_CPUID = 7;
    public const int KVM_CAP_NR_MEMSLOTS = 10;
    public const int KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
    public const int KVM_CAP_READONLY_MEM = 81;
    public const int KVM_CAP_IMMEDIATE_EXIT = 136;

    // kvm_userspace_memory_region.flags
    public const uint KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
    public const uint KVM_MEM_READONLY = 1 << 1;

    // kvm_cpuid_entry2.flags
    public const uint KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0; // sic, the kernel's spelling

    // kvm_run.exit_reason
    public const uint KVM_EXIT_UNKNOWN = 0, KVM_EXIT_EXCEPTION = 1, KVM_EXIT_IO = 2, KVM_EXIT_HYPERCALL = 3,
        KVM_EXIT_DEBUG = 4, KVM_EXIT_HLT = 5, KVM_EXIT_MMIO = 6, KVM_EXIT_IRQ_WINDOW_OPEN = 7,
        KVM_EXIT_SHUTDOWN = 8, KVM_EXIT_FAIL_ENTRY = 9, KVM_EXIT_INTR = 10, KVM_EXIT_SET_TPR = 11,
        KVM_EXIT_TPR_ACCESS = 12, KVM_EXIT_NMI = 16, KVM_EXIT_INTERNAL_ERROR = 17,
        KVM_EXIT_SYSTEM_EVENT = 24, KVM_EXIT_IOAPIC_EOI = 26, KVM_EXIT_HYPERV = 27,
        KVM_EXIT_X86_RDMSR = 29, KVM_EXIT_X86_WRMSR = 30, KVM_EXIT_DIRTY_RING_FULL = 31,
        KVM_EXIT_AP_RESET_HOLD = 32, KVM_EXIT_X86_BUS_LOCK = 33, KVM_EXIT_XEN = 34,
        KVM_EXIT_NOTIFY = 37, KVM_EXIT_MEMORY_FAULT = 39;

    /// <summary>Names of kvm_run.exit_reason values, for messages and statistics (index = value).</summary>
    public static readonly string[] ExitNames =
    [
        "KVM_EXIT_UNKNOWN", "KVM_EXIT_EXCEPTION", "KVM_EXIT_IO", "KVM_EXIT_HYPERCALL", "KVM_EXIT_DEBUG",
        "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_IRQ_WINDOW_OPEN", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY",
        "KVM_EXIT_INTR", "KVM_EXIT_SET_TPR", "KVM_EXIT_TPR_ACCESS", "KVM_EXIT_S390_SIEIC", "KVM_EXIT_S390_RESET",
        "KVM_EXIT_DCR", "KVM_EXIT_NMI", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_OSI", "KVM_EXIT_PAPR_HCALL",
        "KVM_EXIT_S390_UCONTROL", "KVM_EXIT_WATCHDOG", "KVM_EXIT_S390_TSCH", "KVM_EXIT_EPR", "KVM_EXIT_SYSTEM_EVENT",
        "KVM_EXIT_S390_STSI", "KVM_EXIT_IOAPIC_EOI", "KVM_EXIT_HYPERV", "KVM_EXIT_ARM_NISV", "KVM_EXIT_X86_RDMSR",
        "KVM_EXIT_X86_WRMSR", "KVM_EXIT_DIRTY_RING_FULL", "KVM_EXIT_AP_RESET_HOLD", "KVM_EXIT_X86_BUS_LOCK", "KVM_EXIT_XEN",
        "KVM_EXIT_RISCV_SBI", "KVM_EXIT_RISCV_CSR", "KVM_EXIT_NOTIFY", "KVM_EXIT_LOONGARCH_IOCSR", "KVM_EXIT_MEMORY_FAULT",
        "KVM_EXIT_TDX",
    ];

    public static string ExitName(uint reason) => reason < ExitNames.Length ? ExitNames[reason] : $"KVM_EXIT_{reason}";

    // kvm_run.io.direction
    public const byte KVM_EXIT_IO_IN = 0, KVM_EXIT_IO_OUT = 1;

    // kvm_run.internal.suberror
    public const uint KVM_INTERNAL_ERROR_EMULATION = 1, KVM_INTERNAL_ERROR_SIMUL_EX = 2,
        KVM_INTERNAL_ERROR_DELIVERY_EV = 3, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;

    public static string InternalErrorName(uint suberror) => suberror switch
    {
        KVM_INTERNAL_ERROR_EMULATION => "KVM_INTERNAL_ERROR_EMULATION",
        KVM_INTERNAL_ERROR_SIMUL_EX => "KVM_INTERNAL_ERROR_SIMUL_EX",
        KVM_INTERNAL_ERROR_DELIVERY_EV => "KVM_INTERNAL_ERROR_DELIVERY_EV",
        KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
        _ => "unknown suberror",
    };

    // kvm_run.system_event.type
    public const uint KVM_SYSTEM_EVENT_SHUTDOWN = 1, KVM_SYSTEM_EVENT_RESET = 2, KVM_SYSTEM_EVENT_CRASH = 3;
}

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_regs
{
    public ulong rax, rbx, rcx, rdx;
    public ulong rsi, rdi, rsp, rbp;
    public ulong r8, r9, r10, r11;
    public ulong r12, r13, r14, r15;
    public ulong rip, rflags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_segment
{
    public ulong @base;
    public uint limit;
    public ushort selector;
    public byte type;
    public byte present, dpl, db, s, l, g, avl;
    public byte unusable;
    public byte padding;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_dtable
{
    public ulong @base;
    public ushort limit;
    public fixed ushort padding[3];
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_sregs
{
    public kvm_segment cs, ds, es, fs, gs, ss;
    public kvm_segment tr, ldt;
    public kvm_dtable gdt, idt;
    public ulong cr0, cr2, cr3, cr4, cr8;
    public ulong efer;
    public ulong apic_base;
    /// <summary>KVM_NR_INTERRUPTS (256) bits: an injected but not yet delivered interrupt.</summary>
    public fixed ulong interrupt_bitmap[4];
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_fpu
{
    public fixed byte fpr[8 * 16];
    public ushort fcw;
    public ushort fsw;
    public byte ftwx;
    public byte pad1;
    public ushort last_opcode;
    public ulong last_ip;
    public ulong last_dp;
    public fixed byte xmm[16 * 16];
    public uint mxcsr;
    public uint pad2;
}

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_userspace_memory_region
{
    public uint slot;
    public uint flags;
    public ulong guest_phys_addr;
    public ulong memory_size;
    public ulong userspace_addr;
}

/// <summary>Header of a variable-length array of <see cref="kvm_cpuid_entry2"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct kvm_cpuid2
{
    public uint nent;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_cpuid_entry2
{
    public uint function;
    public uint index;
    public uint flags;
    public uint eax, ebx, ecx, edx;
    public fixed uint padding[3];
}

/// <summary>Header of a variable-length array of <see cref="kvm_msr_entry"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct kvm_msrs
{
    public uint nmsrs;
    public uint pad;
}

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_msr_entry
{
    public uint index;
    public uint reserved;
    public ulong data;
}

/// <summary>Header of KVM_GET_MSR_INDEX_LIST's variable-length u32 array.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct kvm_msr_list
{
    public uint nmsrs;
}

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_interrupt
{
    public uint irq;
}

// The members of kvm_run's exit union (anonymous structs in the kernel, named after the union member).
[StructLayout(LayoutKind.Sequential)]
internal struct kvm_run_hw { public ulong hardware_exit_reason; }

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_run_fail_entry { public ulong hardware_entry_failure_reason; public uint cpu; }

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_run_ex { public uint exception; public uint error_code; }

[StructLayout(LayoutKind.Sequential)]
internal struct kvm_run_io
{
    public byte direction;
    public byte size; // bytes
    public ushort port;
    public uint count;
    public ulong data_offset; // relative to kvm_run start
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_run_mmio
{
    public ulong phys_addr;
    public fixed byte data[8];
    public uint len;
    public byte is_write;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_run_internal
{
    public uint suberror;
    public uint ndata;
    public fixed ulong data[16];
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct kvm_run_system_event
{
    public uint type;
    public uint ndata;
    public fixed ulong data[16];
}

/// <summary>The shared page(s) of a vCPU, mapped from the vCPU fd (KVM_GET_VCPU_MMAP_SIZE bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 2352)]
internal struct kvm_run
{
    // in
    [FieldOffset(0)] public byte request_interrupt_window;
    [FieldOffset(1)] public byte immediate_exit;
    // out
    [FieldOffset(8)] public uint exit_reason;
    [FieldOffset(12)] public byte ready_for_interrupt_injection;
    [FieldOffset(13)] public byte if_flag;
    [FieldOffset(14)] public ushort flags;
    // in (pre_kvm_run), out (post_kvm_run)
    [FieldOffset(16)] public ulong cr8;
    [FieldOffset(24)] public ulong apic_base;
    // the exit union (256 bytes)
    [FieldOffset(32)] public kvm_run_hw hw;
    [FieldOffset(32)] public kvm_run_fail_entry fail_entry;
    [FieldOffset(32)] public kvm_run_ex ex;
    [FieldOffset(32)] public kvm_run_io io;
    [FieldOffset(32)] public kvm_run_mmio mmio;
    [FieldOffset(32)] public kvm_run_internal @internal;
    [FieldOffset(32)] public kvm_run_system_event system_event;
    [FieldOffset(288)] public ulong kvm_valid_regs;
    [FieldOffset(296)] public ulong kvm_dirty_regs;
}
