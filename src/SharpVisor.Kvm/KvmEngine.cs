// The hardware engine: one KVM VM over one GuestMemory (Linux Documentation/virt/kvm/api.rst).
// Every GuestMemory region becomes a memory slot (ROM with KVM_MEM_READONLY, so guest writes to
// it leave as MMIO writes); everything else leaves KVM_RUN as an MMIO exit. No in-kernel irqchip
// or PIT is created: interrupt controllers live in the VMM, shared by both engines, and interrupts are
// injected with KVM_INTERRUPT by KvmVcpu.
using System.Runtime.InteropServices;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm;

public sealed unsafe class KvmEngine : IEngine
{
    public const string DevicePath = "/dev/kvm";

    /// <summary>
    /// The three pages KVM may need for the real-mode TSS (KVM_SET_TSS_ADDR) and the page before
    /// them for the EPT identity map (KVM_SET_IDENTITY_MAP_ADDR); QEMU's addresses, just below
    /// the 4 GiB BIOS flash, inside the PCI hole where no RAM lives.
    /// </summary>
    public const ulong TssAddress = 0xFEFF_D000, IdentityMapAddress = 0xFEFF_C000;

    private readonly GuestMemory _memory;
    private readonly int _kvmFd = -1;
    private readonly int _vmFd = -1;
    private readonly bool _readOnlyMemory;
    private readonly KvmVcpu?[] _vcpus;
    private readonly object _slotLock = new();
    private uint _nextSlot;
    private bool _disposed;

    public string Name => "kvm";

    /// <summary>vCPUs this VM is built for (the CPUID topology shows this many cores).</summary>
    public int VcpuCount { get; }

    internal int VmFd => _vmFd;
    internal int VcpuMmapSize { get; }
    internal kvm_cpuid_entry2[] SupportedCpuid { get; }

    public KvmEngine(GuestMemory memory, int vcpuCount = 1)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (vcpuCount < 1 || vcpuCount > 255)
            throw new Core.ConfigurationException($"vCPU count {vcpuCount} is out of range (1–255 with an xAPIC)");
        _memory = memory;
        VcpuCount = vcpuCount;
        _vcpus = new KvmVcpu?[vcpuCount];
        try
        {
            _kvmFd = OpenDevice();
            int api = KvmException.Check(Libc.ioctl(_kvmFd, KvmH.KVM_GET_API_VERSION, 0), "KVM_GET_API_VERSION");
            if (api != KvmH.KVM_API_VERSION)
                throw new KvmException("KVM_GET_API_VERSION", $"version {api}, expected {KvmH.KVM_API_VERSION}");
            if (Libc.ioctl(_kvmFd, KvmH.KVM_CHECK_EXTENSION, KvmH.KVM_CAP_IMMEDIATE_EXIT) <= 0)
                throw new KvmException("KVM_CHECK_EXTENSION", "KVM_CAP_IMMEDIATE_EXIT is not supported (needed to kick vCPUs)");
            _readOnlyMemory = Libc.ioctl(_kvmFd, KvmH.KVM_CHECK_EXTENSION, KvmH.KVM_CAP_READONLY_MEM) > 0;
            VcpuMmapSize = KvmException.Check(Libc.ioctl(_kvmFd, KvmH.KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE");
            SupportedCpuid = GetSupportedCpuid(_kvmFd);

            _vmFd = KvmException.Check(Libc.ioctl(_kvmFd, KvmH.KVM_CREATE_VM, 0), "KVM_CREATE_VM");
            // Both must be set before the first vCPU exists; VMX needs them for real mode
            // without unrestricted guest. Other implementations accept and ignore them.
            ulong identityMap = IdentityMapAddress;
            if (Libc.ioctl(_vmFd, KvmH.KVM_CHECK_EXTENSION, KvmH.KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0)
                KvmException.Check(Libc.ioctl(_vmFd, KvmH.KVM_SET_IDENTITY_MAP_ADDR, &identityMap), "KVM_SET_IDENTITY_MAP_ADDR");
            if (Libc.ioctl(_vmFd, KvmH.KVM_CHECK_EXTENSION, KvmH.KVM_CAP_SET_TSS_ADDR) > 0)
                KvmException.Check(Libc.ioctl(_vmFd, KvmH.KVM_SET_TSS_ADDR, unchecked((nint)TssAddress)), "KVM_SET_TSS_ADDR");

            foreach (var region in memory.Regions) AddSlot(region);
            memory.RegionAdded += AddSlot;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Whether /dev/kvm can be opened and a VM created here; otherwise why not (one line).</summary>
    public static bool IsAvailable(out string reason)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            reason = "KVM needs x86-64 Linux";
            return false;
        }
        int kvm = -1, vm = -1;
        try
        {
            kvm = OpenDevice();
            int api = KvmException.Check(Libc.ioctl(kvm, KvmH.KVM_GET_API_VERSION, 0), "KVM_GET_API_VERSION");
            if (api != KvmH.KVM_API_VERSION)
            {
                reason = $"KVM API version {api}, expected {KvmH.KVM_API_VERSION}";
                return false;
            }
            vm = KvmException.Check(Libc.ioctl(kvm, KvmH.KVM_CREATE_VM, 0), "KVM_CREATE_VM");
            reason = "";
            return true;
        }
        catch (KvmException e)
        {
            reason = e.Message;
            return false;
        }
        finally
        {
            if (vm >= 0) Libc.close(vm);
            if (kvm >= 0) Libc.close(kvm);
        }
    }

    public IVcpu CreateVcpu(int index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((uint)index >= (uint)_vcpus.Length)
            throw new Core.ConfigurationException($"vCPU index {index} is out of range (this VM has {_vcpus.Length})");
        if (_vcpus[index] is not null)
            throw new Core.ConfigurationException($"vCPU {index} already exists");
        return _vcpus[index] = new KvmVcpu(this, index);
    }

    private static int OpenDevice()
        => KvmException.Check(Libc.open(DevicePath, Libc.O_RDWR | Libc.O_CLOEXEC), $"open {DevicePath}");

    private static kvm_cpuid_entry2[] GetSupportedCpuid(int kvmFd)
    {
        const int E2BIG = 7;
        for (int nent = 128; ; nent *= 2)
        {
            int bytes = sizeof(kvm_cpuid2) + nent * sizeof(kvm_cpuid_entry2);
            byte* buf = (byte*)NativeMemory.AllocZeroed((nuint)bytes);
            try
            {
                ((kvm_cpuid2*)buf)->nent = (uint)nent;
                if (Libc.ioctl(kvmFd, KvmH.KVM_GET_SUPPORTED_CPUID, buf) < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == E2BIG && nent < 4096) continue;
                    throw new KvmException("KVM_GET_SUPPORTED_CPUID", errno);
                }
                var entries = (kvm_cpuid_entry2*)(buf + sizeof(kvm_cpuid2));
                return new ReadOnlySpan<kvm_cpuid_entry2>(entries, (int)((kvm_cpuid2*)buf)->nent).ToArray();
            }
            finally
            {
                NativeMemory.Free(buf);
            }
        }
    }

    private void AddSlot(MemoryRegion region)
    {
        if (region.ReadOnly && !_readOnlyMemory)
            throw new KvmException("KVM_SET_USER_MEMORY_REGION", $"region {region.Name} is read-only and this KVM lacks KVM_CAP_READONLY_MEM");
        lock (_slotLock)
        {
            var slot = new kvm_userspace_memory_region
            {
                slot = _nextSlot,
                flags = region.ReadOnly ? KvmH.KVM_MEM_READONLY : 0,
                guest_phys_addr = region.Gpa,
                memory_size = region.Size,
                userspace_addr = (ulong)region.Host,
            };
            KvmException.Check(Libc.ioctl(_vmFd, KvmH.KVM_SET_USER_MEMORY_REGION, &slot),
                $"KVM_SET_USER_MEMORY_REGION (slot {slot.slot}, {region.Name} at {region.Gpa:x})");
            _nextSlot++;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _memory.RegionAdded -= AddSlot;
        foreach (var v in _vcpus) v?.Dispose();
        if (_vmFd >= 0) Libc.close(_vmFd);
        if (_kvmFd >= 0) Libc.close(_kvmFd);
    }
}
