// The CPUID a vCPU shows: what KVM_GET_SUPPORTED_CPUID offers, made into one coherent model
// (Intel SDM Vol. 2A, CPUID; Linux Documentation/virt/kvm/x86/cpuid.rst):
// - topology: one package of vcpuCount cores, one thread each; the vCPU index is its APIC ID
//   (leaf 1 EBX[31:24], leaf 0xB/0x1F EDX), leaf 1 EBX[23:16] = vcpuCount with HTT when > 1,
//   leaf 4 EAX[31:26] = vcpuCount − 1 and caches of level ≥ 3 shared by all. Leaves 0xB/0x1F
//   (V2 extended topology), where the host has them, are replaced whole by three sub-leaves:
//   0 the SMT level (1 thread, shift 0), 1 the core level (vcpuCount processors, shift
//   ⌈log2 vcpuCount⌉), 2 invalid (level type 0, the end of the list). KVM passes the host's
//   sub-leaves, counts and shifts (a host VM may list the SMT level alone), which would give
//   guests (Linux reads 0xB before leaf 1) the host's shape instead of this VM's.
// - hidden because the VMM side does not emulate them: x2APIC and the TSC-deadline timer
//   (the local APIC lives in the VMM, xAPIC MMIO only), the architectural PMU (leaf 0xA, its
//   overflow interrupt would need the in-kernel LAPIC), VMX/SVM (no nested virtualization), and
//   the KVM paravirtual leaves 0x40000000–0x4FFFFFFF (kvmclock, PV EOI, steal time, async PF):
//   guests then use the emulated PIT/RTC/APIC timer and the TSC. The hypervisor bit
//   (leaf 1 ECX[31]) stays set: it is true, and it keeps guests from e.g. loading microcode.
// Deliberate deviation: AMD's core count (0x80000008 ECX) is left as KVM reports it.
using System.Numerics;
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm;

internal static class KvmCpuid
{
    private const uint Leaf1EcxVmx = 1u << 5, Leaf1EcxX2Apic = 1u << 21, Leaf1EcxTscDeadline = 1u << 24;
    private const uint Leaf1EdxHtt = 1u << 28;
    private const uint Ext1EcxSvm = 1u << 2;
    private const uint HypervisorLeavesFirst = 0x4000_0000, HypervisorLeavesLast = 0x4FFF_FFFF;
    /// <summary>Leaf 0xB/0x1F ECX[15:8] level types (SDM Vol. 2A, CPUID leaf 0BH).</summary>
    private const uint LevelTypeInvalid = 0, LevelTypeSmt = 1, LevelTypeCore = 2;

    public static kvm_cpuid_entry2[] Build(ReadOnlySpan<kvm_cpuid_entry2> supported, int apicId, int vcpuCount)
    {
        var list = new List<kvm_cpuid_entry2>(supported.Length);
        uint id = (uint)apicId & 0xFF;
        uint n = (uint)Math.Clamp(vcpuCount, 1, 255);
        foreach (var src in supported)
        {
            var e = src;
            if (e.function >= HypervisorLeavesFirst && e.function <= HypervisorLeavesLast) continue;
            switch (e.function)
            {
                case 1:
                    e.ebx = (e.ebx & 0x0000_FFFF) | (n << 16) | (id << 24);
                    e.ecx &= ~(Leaf1EcxX2Apic | Leaf1EcxTscDeadline | Leaf1EcxVmx);
                    e.edx = n > 1 ? e.edx | Leaf1EdxHtt : e.edx & ~Leaf1EdxHtt;
                    break;
                case 4:
                    if ((e.eax & 0x1F) != 0) // cache type 0 = no more caches
                    {
                        uint level = (e.eax >> 5) & 7;
                        uint sharing = level >= 3 ? n - 1 : 0;
                        // EAX[31:26] is 6 bits wide: more than 64 cores cannot be described there.
                        e.eax = (e.eax & 0x3FFF) | (sharing << 14) | (Math.Min(n - 1, 63) << 26);
                    }
                    break;
                case 0xA:
                    e.eax = e.ebx = e.ecx = e.edx = 0;
                    break;
                case 0xB:
                case 0x1F:
                    if (e.index == 0)
                        for (uint sub = 0; sub < 3; sub++) list.Add(TopologyLevel(e, sub, id, n));
                    continue; // the host's own sub-leaves are dropped
                case 0x8000_0001:
                    e.ecx &= ~Ext1EcxSvm;
                    break;
            }
            list.Add(e);
        }
        return list.ToArray();
    }

    /// <summary>
    /// Sub-leaf <paramref name="sub"/> of leaf 0BH/1FH (SDM Vol. 2A, CPUID): EAX[4:0] the shift of
    /// the x2APIC ID to the next level's ID, EBX[15:0] the logical processors at this level,
    /// ECX[7:0] the sub-leaf and ECX[15:8] the level type, EDX the x2APIC ID.
    /// </summary>
    private static kvm_cpuid_entry2 TopologyLevel(kvm_cpuid_entry2 template, uint sub, uint apicId, uint vcpuCount)
    {
        var e = template;
        (e.eax, e.ebx, uint type) = sub switch
        {
            0 => (0u, 1u, LevelTypeSmt),
            1 => ((uint)(32 - BitOperations.LeadingZeroCount(vcpuCount - 1)), vcpuCount, LevelTypeCore), // ⌈log2 n⌉
            _ => (0u, 0u, LevelTypeInvalid),
        };
        e.index = sub;
        e.flags |= KvmH.KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        e.ecx = (type << 8) | sub;
        e.edx = apicId;
        return e;
    }
}
