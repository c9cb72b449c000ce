using System.Runtime.InteropServices;
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm.Tests;

/// <summary>The C# declarations against linux/kvm.h and asm/kvm.h as compiled for x86-64.</summary>
public sealed unsafe class InteropLayoutTests
{
    [Fact]
    public void StructSizesMatchTheKernelHeaders()
    {
        Assert.Equal(144, sizeof(kvm_regs));
        Assert.Equal(312, sizeof(kvm_sregs));
        Assert.Equal(24, sizeof(kvm_segment));
        Assert.Equal(16, sizeof(kvm_dtable));
        Assert.Equal(416, sizeof(kvm_fpu));
        Assert.Equal(32, sizeof(kvm_userspace_memory_region));
        Assert.Equal(8, sizeof(kvm_cpuid2));
        Assert.Equal(40, sizeof(kvm_cpuid_entry2));
        Assert.Equal(8, sizeof(kvm_msrs));
        Assert.Equal(16, sizeof(kvm_msr_entry));
        Assert.Equal(4, sizeof(kvm_interrupt));
        Assert.Equal(2352, sizeof(kvm_run));
        Assert.Equal(152, sizeof(Libc.sigaction_t));
    }

    [Fact]
    public void FieldOffsetsMatchTheKernelHeaders()
    {
        Assert.Equal(8, Off<kvm_run>(nameof(kvm_run.exit_reason)));
        Assert.Equal(12, Off<kvm_run>(nameof(kvm_run.ready_for_interrupt_injection)));
        Assert.Equal(13, Off<kvm_run>(nameof(kvm_run.if_flag)));
        Assert.Equal(16, Off<kvm_run>(nameof(kvm_run.cr8)));
        Assert.Equal(32, Off<kvm_run>(nameof(kvm_run.io)));
        Assert.Equal(288, Off<kvm_run>(nameof(kvm_run.kvm_valid_regs)));
        Assert.Equal(4, Off<kvm_run_io>(nameof(kvm_run_io.count)));
        Assert.Equal(8, Off<kvm_run_io>(nameof(kvm_run_io.data_offset)));
        Assert.Equal(8, Off<kvm_run_mmio>(nameof(kvm_run_mmio.data)));
        Assert.Equal(16, Off<kvm_run_mmio>(nameof(kvm_run_mmio.len)));
        Assert.Equal(20, Off<kvm_run_mmio>(nameof(kvm_run_mmio.is_write)));
        Assert.Equal(8, Off<kvm_run_internal>(nameof(kvm_run_internal.data)));
        Assert.Equal(8, Off<kvm_run_fail_entry>(nameof(kvm_run_fail_entry.cpu)));
        Assert.Equal(192, Off<kvm_sregs>(nameof(kvm_sregs.gdt)));
        Assert.Equal(224, Off<kvm_sregs>(nameof(kvm_sregs.cr0)));
        Assert.Equal(272, Off<kvm_sregs>(nameof(kvm_sregs.apic_base)));
        Assert.Equal(280, Off<kvm_sregs>(nameof(kvm_sregs.interrupt_bitmap)));
        Assert.Equal(128, Off<kvm_regs>(nameof(kvm_regs.rip)));
        Assert.Equal(136, Off<Libc.sigaction_t>(nameof(Libc.sigaction_t.sa_flags)));
    }

    private static int Off<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    // asm-generic/ioctl.h: dir << 30 | size << 16 | type << 8 | nr, with _IOC_WRITE = 1, _IOC_READ = 2.
    private static uint Io(uint nr) => 0xAE00 | nr;
    private static uint Ior(uint nr, int size) => (2u << 30 | (uint)size << 16 | 0xAE00 | nr);
    private static uint Iow(uint nr, int size) => (1u << 30 | (uint)size << 16 | 0xAE00 | nr);
    private static uint Iowr(uint nr, int size) => (3u << 30 | (uint)size << 16 | 0xAE00 | nr);

    [Fact]
    public void IoctlNumbersEncodeTheStructSizes()
    {
        Assert.Equal(KvmH.KVM_GET_API_VERSION, Io(0x00));
        Assert.Equal(KvmH.KVM_CREATE_VM, Io(0x01));
        Assert.Equal(KvmH.KVM_GET_VCPU_MMAP_SIZE, Io(0x04));
        Assert.Equal(KvmH.KVM_GET_SUPPORTED_CPUID, Iowr(0x05, sizeof(kvm_cpuid2)));
        Assert.Equal(KvmH.KVM_CREATE_VCPU, Io(0x41));
        Assert.Equal(KvmH.KVM_SET_USER_MEMORY_REGION, Iow(0x46, sizeof(kvm_userspace_memory_region)));
        Assert.Equal(KvmH.KVM_SET_TSS_ADDR, Io(0x47));
        Assert.Equal(KvmH.KVM_SET_IDENTITY_MAP_ADDR, Iow(0x48, sizeof(ulong)));
        Assert.Equal(KvmH.KVM_RUN, Io(0x80));
        Assert.Equal(KvmH.KVM_GET_REGS, Ior(0x81, sizeof(kvm_regs)));
        Assert.Equal(KvmH.KVM_SET_REGS, Iow(0x82, sizeof(kvm_regs)));
        Assert.Equal(KvmH.KVM_GET_SREGS, Ior(0x83, sizeof(kvm_sregs)));
        Assert.Equal(KvmH.KVM_SET_SREGS, Iow(0x84, sizeof(kvm_sregs)));
        Assert.Equal(KvmH.KVM_INTERRUPT, Iow(0x86, sizeof(kvm_interrupt)));
        Assert.Equal(KvmH.KVM_GET_MSRS, Iowr(0x88, sizeof(kvm_msrs)));
        Assert.Equal(KvmH.KVM_SET_MSRS, Iow(0x89, sizeof(kvm_msrs)));
        Assert.Equal(KvmH.KVM_GET_FPU, Ior(0x8c, sizeof(kvm_fpu)));
        Assert.Equal(KvmH.KVM_SET_CPUID2, Iow(0x90, sizeof(kvm_cpuid2)));
        Assert.Equal(KvmH.KVM_GET_CPUID2, Iowr(0x91, sizeof(kvm_cpuid2)));
        Assert.Equal(KvmH.KVM_NMI, Io(0x9a));
    }

    [Fact]
    public void KvmExceptionNamesTheCallAndErrno()
    {
        var e = new KvmException("KVM_CREATE_VM", 13);
        Assert.Equal("KVM_CREATE_VM failed: EACCES (13)", e.Message);
        Assert.IsAssignableFrom<Core.VmmException>(e);
    }
}
