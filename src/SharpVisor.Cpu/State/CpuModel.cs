namespace SharpVisor.Cpu;

/// <summary>
/// The processor the software engine presents through CPUID: one coherent model that
/// advertises only what the engine implements (x87, MMX, SSE–SSE4.2 and XSAVE for x87/SSE state; no AVX,
/// no x2APIC, no PCID, no TSX). Leaves are computed here, not copied from the host.
/// </summary>
public sealed class CpuModel
{
    public static CpuModel Default { get; } = new();

    public string Vendor { get; init; } = "GenuineIntel";
    public string BrandString { get; init; } = "SharpVisor software x86-64 CPU";
    /// <summary>Family 6 model 0x3A stepping 9 style signature.</summary>
    public uint Signature { get; init; } = 0x000306A9;
    public int PhysicalAddressBits { get; init; } = 40;
    public int LinearAddressBits { get; init; } = 48;
    /// <summary>The core crystal clock of leaf 0x15; <see cref="TscHz"/> is a whole multiple of it.</summary>
    public const long CrystalHz = 25_000_000;
    /// <summary>TSC frequency the guest sees (also reported in leaf 0x15/0x16).</summary>
    public long TscHz { get; init; } = 2_000_000_000;
    /// <summary>
    /// The x87/MMX/SSE–SSE4.2 unit and XSAVE for its state. A model without it (for tests of the
    /// integer-only paths) advertises none of them and refuses CR4.OSXSAVE.
    /// </summary>
    public bool HasFpu { get; init; } = true;

    public void Cpuid(uint leaf, uint subleaf, int apicId, int cpuCount, out uint eax, out uint ebx, out uint ecx, out uint edx)
    {
        eax = ebx = ecx = edx = 0;
        switch (leaf)
        {
            case 0:
                eax = 0x16;
                (ebx, edx, ecx) = VendorRegs(Vendor);
                break;
            case 1:
                eax = Signature;
                // APIC ID, logical processor count, CLFLUSH line size (8 × 8 = 64 bytes).
                ebx = (uint)(apicId << 24) | ((uint)Math.Max(cpuCount, 1) << 16) | (8 << 8);
                // ECX: SSE3(0) PCLMUL(1) SSSE3(9) CX16(13) SSE4.1(19) SSE4.2(20) MOVBE(22) POPCNT(23) TSC-deadline(24) RDRAND(30), HYPERVISOR(31)
                ecx = (1u << 13) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 30) | (1u << 31);
                // EDX: VME(1)? no. DE(2) PSE(3) TSC(4) MSR(5) PAE(6) CX8(8) APIC(9) SEP(11) MTRR(12) PGE(13) CMOV(15) PAT(16) PSE36(17) CLFSH(19)
                edx = (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 11)
                    | (1u << 12) | (1u << 13) | (1u << 15) | (1u << 16) | (1u << 19);
                if (HasFpu)
                {
                    ecx |= (1u << 0) | (1u << 9) | (1u << 19) | (1u << 20) | (1u << 26); // SSE3 SSSE3 SSE4.1 SSE4.2 XSAVE
                    edx |= (1u << 0) | (1u << 23) | (1u << 24) | (1u << 25) | (1u << 26); // FPU MMX FXSR SSE SSE2
                }
                break;
            case 6:
                eax = 1 << 2; // ARAT: the APIC timer keeps running in deep C-states
                break;
            case 7 when subleaf == 0:
                // EBX: FSGSBASE(0) BMI1(3) SMEP(7) BMI2(8) ERMS(9) ADX(19) SMAP(20) CLFLUSHOPT(23)
                // TSC_ADJUST(1): with the invariant TSC it tells Linux the TSC needs no clocksource watchdog.
                ebx = (1u << 0) | (1u << 1) | (1u << 3) | (1u << 7) | (1u << 8) | (1u << 9) | (1u << 19) | (1u << 20) | (1u << 23);
                // FPU CS and FPU DS deprecated (13): the x87 stores them as 0000H, as current Intel parts do.
                if (HasFpu) ebx |= 1u << 13;
                ecx = 1u << 2; // UMIP
                break;
            case 0xB:
                ecx = subleaf & 0xFF;
                if (subleaf == 0) { eax = 0; ebx = 1; ecx |= 1 << 8; }
                else if (subleaf == 1) { eax = (uint)Math.Ceiling(Math.Log2(Math.Max(cpuCount, 1))); ebx = (uint)cpuCount; ecx |= 2 << 8; }
                edx = (uint)apicId;
                break;
            case 0xD when HasFpu:
                // XSAVE components: x87 (bit 0) and SSE (bit 1), both inside the 512-byte legacy region,
                // so every enabled combination needs 512 + the 64-byte header (SDM Vol. 1 §13.2).
                if (subleaf == 0) { eax = 3; ebx = 576; ecx = 576; }
                else if (subleaf == 1) { eax = (1u << 0) | (1u << 1); ebx = 576; } // XSAVEOPT, XSAVEC; no XSAVES
                break;
            case 0x15:
                // TSC / core crystal clock (SDM Vol. 3 §19.7.3): TSC = ECX × EBX / EAX with a 25 MHz crystal,
                // so the guest knows the TSC frequency instead of calibrating it against the PIT.
                eax = 1; ebx = (uint)(TscHz / CrystalHz); ecx = (uint)CrystalHz;
                break;
            case 0x16:
                eax = ebx = (uint)(TscHz / 1_000_000); ecx = 100; // base and maximum MHz, bus 100 MHz
                break;
            case 0x8000_0000:
                eax = 0x8000_0008;
                break;
            case 0x8000_0001:
                // ECX: LAHF(0) ABM/LZCNT(5) PREFETCHW(8); EDX: SYSCALL(11) NX(20) 1GB(26) RDTSCP(27) LM(29)
                ecx = (1u << 0) | (1u << 5) | (1u << 8);
                edx = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);
                break;
            case 0x8000_0002: case 0x8000_0003: case 0x8000_0004:
                Brand((int)(leaf - 0x8000_0002), out eax, out ebx, out ecx, out edx);
                break;
            case 0x8000_0007:
                edx = 1 << 8; // invariant TSC
                break;
            case 0x8000_0008:
                eax = (uint)(PhysicalAddressBits | (LinearAddressBits << 8));
                break;
        }
    }

    private static (uint, uint, uint) VendorRegs(string v)
    {
        var b = System.Text.Encoding.ASCII.GetBytes(v.PadRight(12));
        return (BitConverter.ToUInt32(b, 0), BitConverter.ToUInt32(b, 4), BitConverter.ToUInt32(b, 8));
    }

    private void Brand(int part, out uint a, out uint b, out uint c, out uint d)
    {
        var bytes = new byte[48];
        System.Text.Encoding.ASCII.GetBytes(BrandString.Length > 47 ? BrandString[..47] : BrandString).CopyTo(bytes, 0);
        int o = part * 16;
        a = BitConverter.ToUInt32(bytes, o); b = BitConverter.ToUInt32(bytes, o + 4);
        c = BitConverter.ToUInt32(bytes, o + 8); d = BitConverter.ToUInt32(bytes, o + 12);
    }
}
