// The exit round-trip guest on the hardware engine (KVM): the same real-mode OUT loop as the
// software engine's, so the two figures compare the cost of one exit through IVcpu.Run.
using SharpVisor.Core.Memory;
using SharpVisor.Core.Vcpu;
using SharpVisor.Kvm;

namespace SharpVisor.Benchmarks;

internal sealed class KvmGuest : IDisposable
{
    private readonly GuestMemory _memory = new();
    private readonly KvmEngine _engine;
    private readonly IVcpu _vcpu;
    private readonly VcpuState _start;

    public int ExitsPerRun { get; }

    private KvmGuest(int exits)
    {
        ExitsPerRun = exits;
        _memory.AddRegion(0, Layout.RamBytes, "ram");
        _memory.Write(Layout.Code, SoftwareGuest.ExitGuestCode(exits));
        try
        {
            _engine = new KvmEngine(_memory);
            _vcpu = _engine.CreateVcpu(0);
        }
        catch
        {
            _memory.Dispose();
            throw;
        }
        _start = SoftwareGuest.ExitGuestStart();
    }

    /// <summary>The guest, or null with the reason when /dev/kvm cannot be used here.</summary>
    public static KvmGuest? TryCreate(int exits, out string whyNot)
    {
        if (!KvmEngine.IsAvailable(out whyNot)) return null;
        try
        {
            var g = new KvmGuest(exits);
            g.Run(); // check once that the guest does what the software engine does
            return g;
        }
        catch (Core.VmmException e)
        {
            whyNot = e.Message;
            return null;
        }
    }

    /// <summary>Runs to HLT; returns the number of OUT exits seen.</summary>
    public int Run()
    {
        _vcpu.SetState(_start);
        int outs = 0;
        while (true)
        {
            var r = _vcpu.Run();
            if (r == ExitReason.IoOut) { outs++; continue; }
            if (r == ExitReason.Halt) break;
            throw new InvalidOperationException($"KVM exit guest: unexpected exit {_vcpu.Exit}");
        }
        if (outs != ExitsPerRun) throw new InvalidOperationException($"KVM exit guest: {outs} OUT exits, expected {ExitsPerRun}");
        return outs;
    }

    public void Dispose()
    {
        _vcpu.Dispose();
        _engine.Dispose();
        _memory.Dispose();
    }
}
