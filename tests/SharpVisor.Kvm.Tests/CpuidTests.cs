using SharpVisor.Kvm.Interop;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Kvm.Tests;

public sealed class CpuidTests
{
    private static kvm_cpuid_entry2 E(uint function, uint eax, uint ebx, uint ecx, uint edx, uint index = 0)
        => new() { function = function, index = index, eax = eax, ebx = ebx, ecx = ecx, edx = edx };

    [Fact]
    public void FilterSetsTopologyAndHidesWhatTheVmmDoesNotEmulate()
    {
        kvm_cpuid_entry2[] supported =
        [
            E(0, 0x20, 0x756e6547, 0x6c65746e, 0x49656e69),
            E(1, 0x000806f8, 0x01020800, 0x81202020, 0x0f8bfbff),
            E(4, 0x04000121, 0, 0, 0),                 // L1 data cache
            E(4, 0x04004163, 0, 0, 0, index: 3),        // L3 cache
            E(0xA, 0x07300805, 0, 0, 0x603),
            E(0xB, 1, 2, 0x100, 7),                    // host: 2 threads per core (SMT shift 1)
            E(0xB, 7, 56, 0x201, 7, index: 1),          // host: 56 logical processors, package shift 7
            E(0xB, 0, 0, 0x002, 7, index: 2),
            E(0x4000_0000, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
            E(0x4000_0001, 0x01007efb, 0, 0, 0),
            E(0x8000_0001, 0, 0, 0x0000_0105, 0x20100800),
        ];
        var got = KvmCpuid.Build(supported, apicId: 3, vcpuCount: 4);

        Assert.DoesNotContain(got, e => e.function >= 0x4000_0000 && e.function <= 0x4FFF_FFFF);
        var leaf1 = got.Single(e => e.function == 1);
        Assert.Equal(3u, leaf1.ebx >> 24);                    // initial APIC ID
        Assert.Equal(4u, (leaf1.ebx >> 16) & 0xFF);           // logical processors per package
        Assert.Equal(0x0800u, leaf1.ebx & 0xFFFF);            // CLFLUSH size and brand kept
        Assert.Equal(0u, leaf1.ecx & (1u << 21));             // no x2APIC
        Assert.Equal(0u, leaf1.ecx & (1u << 24));             // no TSC deadline
        Assert.Equal(0u, leaf1.ecx & (1u << 5));              // no VMX
        Assert.NotEqual(0u, leaf1.ecx & (1u << 31));          // hypervisor bit kept
        Assert.NotEqual(0u, leaf1.edx & (1u << 28));          // HTT with 4 logical processors
        var l1 = got.Single(e => e.function == 4 && e.index == 0);
        var l3 = got.Single(e => e.function == 4 && e.index == 3);
        Assert.Equal(3u, l1.eax >> 26);
        Assert.Equal(0u, (l1.eax >> 14) & 0xFFF);
        Assert.Equal(3u, (l3.eax >> 14) & 0xFFF);
        Assert.Equal(0x163u, l3.eax & 0x3FFF);
        Assert.Equal(0u, got.Single(e => e.function == 0xA).eax);
        // Leaf 0BH (SDM Vol. 2A, CPUID): sub-leaf 0 SMT level with one thread, sub-leaf 1 core
        // level with 4 processors and package shift ⌈log2 4⌉ = 2, sub-leaf 2 invalid; EDX = x2APIC ID.
        var smt = got.Single(e => e.function == 0xB && e.index == 0);
        var core = got.Single(e => e.function == 0xB && e.index == 1);
        var end = got.Single(e => e.function == 0xB && e.index == 2);
        Assert.Equal((0u, 1u, 0x100u, 3u), (smt.eax, smt.ebx, smt.ecx, smt.edx));
        Assert.Equal((2u, 4u, 0x201u, 3u), (core.eax, core.ebx, core.ecx, core.edx));
        Assert.Equal((0u, 0u, 0x002u, 3u), (end.eax, end.ebx, end.ecx, end.edx));
        Assert.Equal(0u, got.Single(e => e.function == 0x8000_0001).ecx & (1u << 2)); // no SVM
    }

    [Theory]
    [InlineData(1, 0u)]
    [InlineData(2, 1u)]
    [InlineData(3, 2u)]
    [InlineData(8, 3u)]
    [InlineData(9, 4u)]
    public void CoreLevelShiftCoversEveryApicId(int vcpuCount, uint shift)
    {
        // A host VM may list the SMT level alone: the core level is added all the same.
        var got = KvmCpuid.Build([E(0x1F, 0, 1, 0x100, 0)], apicId: 0, vcpuCount: vcpuCount);
        Assert.Equal([0u, 1u, 2u], got.Select(e => e.index));
        Assert.All(got, e => Assert.NotEqual(0u, e.flags & KvmH.KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
        Assert.Equal(shift, got[1].eax);
        Assert.Equal((uint)vcpuCount, got[1].ebx);
    }

    [Fact]
    public void CacheLeafCoreCountSaturatesAtItsSixBits()
    {
        // Leaf 4 EAX[31:26] = cores per package − 1 (SDM Vol. 2A, CPUID leaf 04H): 6 bits.
        var got = KvmCpuid.Build([E(4, 0x04004163, 0, 0, 0)], apicId: 0, vcpuCount: 100);
        Assert.Equal(63u, got[0].eax >> 26);
        Assert.Equal(99u, (got[0].eax >> 14) & 0xFFF); // L3 shared by all 100
        Assert.Equal(0x163u, got[0].eax & 0x3FFF);
    }

    [Fact]
    public void SingleVcpuHasNoHtt()
    {
        var got = KvmCpuid.Build([E(1, 0, 0x00020800, 0, 1u << 28)], apicId: 0, vcpuCount: 1);
        Assert.Equal(0u, got[0].edx & (1u << 28));
        Assert.Equal(1u, (got[0].ebx >> 16) & 0xFF);
    }

    [Fact]
    public void GuestSeesItsApicIdAndNoKvmSignature()
    {
        using var vm = new TestVm(vcpuCount: 2, vcpuIndex: 1);
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.mov(eax, 1);
            a.cpuid();
            a.mov(eax, ebx);
            a.@out((byte)0x10, eax);
            a.mov(eax, ecx);
            a.@out((byte)0x11, eax);
            a.mov(eax, 0x4000_0000);
            a.cpuid();
            a.mov(eax, ebx);
            a.@out((byte)0x12, eax);
            a.mov(eax, 0xB);
            a.mov(ecx, 1);
            a.cpuid();
            a.mov(eax, ebx);
            a.@out((byte)0x13, eax);
            a.hlt();
        });
        vm.EnterRealMode();

        vm.Expect(Core.Vcpu.ExitReason.IoOut, 0x10, 4);
        uint leaf1Ebx = (uint)vm.Vcpu.Exit.Data;
        Assert.Equal(1u, leaf1Ebx >> 24);
        Assert.Equal(2u, (leaf1Ebx >> 16) & 0xFF);
        vm.Expect(Core.Vcpu.ExitReason.IoOut, 0x11, 4);
        Assert.Equal(0ul, vm.Vcpu.Exit.Data & (1u << 21));
        vm.Expect(Core.Vcpu.ExitReason.IoOut, 0x12, 4);
        Assert.NotEqual(0x4b4d564bul, vm.Vcpu.Exit.Data); // "KVMK" of "KVMKVMKVM"
        vm.Expect(Core.Vcpu.ExitReason.IoOut, 0x13, 4);
        ulong coreLevelProcessors = vm.Vcpu.Exit.Data;
        vm.Expect(Core.Vcpu.ExitReason.Halt);

        var cpuid = ((KvmVcpu)vm.Vcpu).GetCpuid();
        Assert.DoesNotContain(cpuid, e => e.Function == 0x4000_0000);
        // Where the host has leaf 0BH the guest sees this VM's two cores there, not the host's count
        // (without it CPUID returns the highest basic leaf instead: nothing to check).
        if (cpuid.Any(e => e.Function == 0xB)) Assert.Equal(2ul, coreLevelProcessors & 0xFFFF);
    }
}
