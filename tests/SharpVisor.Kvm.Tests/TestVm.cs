using Iced.Intel;
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;

namespace SharpVisor.Kvm.Tests;

/// <summary>A KVM VM with guest memory and one vCPU for a test; skips the test when /dev/kvm is unusable.</summary>
internal sealed class TestVm : IDisposable
{
    public GuestMemory Memory { get; }
    public KvmEngine Engine { get; }
    public IVcpu Vcpu { get; }

    /// <summary>Guest code goes here in every test (below it: IVT, stack).</summary>
    public const ulong CodeAddress = 0x1000;

    public TestVm(ulong ramBytes = 0x10_0000, int vcpuCount = 1, int vcpuIndex = 0, Action<GuestMemory>? extraRegions = null)
    {
        SkipUnlessAvailable(); // before anything is allocated: a skip leaves nothing to dispose
        Memory = new GuestMemory();
        try
        {
            Memory.AddRegion(0, ramBytes, "ram");
            extraRegions?.Invoke(Memory);
            Engine = new KvmEngine(Memory, vcpuCount);
            Vcpu = Engine.CreateVcpu(vcpuIndex);
        }
        catch
        {
            Engine?.Dispose();
            Memory.Dispose();
            throw;
        }
    }

    public static void SkipUnlessAvailable()
    {
        if (!KvmEngine.IsAvailable(out string reason)) Assert.Skip($"KVM is not usable here: {reason}");
    }

    /// <summary>Assembles with Iced at <paramref name="rip"/> and writes the bytes to guest memory there.</summary>
    public ulong Load(int bitness, ulong rip, Action<Assembler> build)
    {
        var a = new Assembler(bitness);
        build(a);
        var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), rip);
        Memory.Write(rip, stream.ToArray());
        return rip + (ulong)stream.Length;
    }

    /// <summary>Real mode with CS = DS = ES = SS = 0, IP = CodeAddress, SP = 0x8000, IF clear.</summary>
    public void EnterRealMode(ulong ip = CodeAddress)
    {
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true);
        s.Rip = ip;
        s.Rsp = 0x8000;
        s.Idtr = new DescriptorTableRegister { Base = 0, Limit = 0x3FF };
        Vcpu.SetState(s);
    }

    /// <summary>Run with a watchdog: a guest that never exits is kicked after 20 s (and the test fails on the Interrupted).</summary>
    public ExitReason Run()
    {
        using var watchdog = new Timer(_ => Vcpu.Kick(), null, 20_000, Timeout.Infinite);
        return Vcpu.Run();
    }

    public void Expect(ExitReason reason, ulong address = 0, int size = 0, ulong? data = null)
    {
        var r = Run();
        var e = Vcpu.Exit;
        Assert.True(r == reason, $"expected {reason}, got {e}");
        if (reason is ExitReason.IoIn or ExitReason.IoOut or ExitReason.MmioRead or ExitReason.MmioWrite)
        {
            Assert.Equal(address, e.Address);
            Assert.Equal(size, e.Size);
        }
        if (data is { } d) Assert.Equal(d, e.Data);
    }

    public void ExpectOut(ulong port, int size, ulong data) => Expect(ExitReason.IoOut, port, size, data);

    /// <summary>Expect an IN and answer it with <paramref name="value"/>.</summary>
    public void ExpectIn(ulong port, int size, ulong value)
    {
        Expect(ExitReason.IoIn, port, size);
        Vcpu.Exit.Data = value;
    }

    public VcpuState State()
    {
        var s = new VcpuState();
        Vcpu.GetState(s);
        return s;
    }

    public void Dispose()
    {
        Engine.Dispose();
        Memory.Dispose();
    }
}
