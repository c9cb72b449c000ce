using SharpVisor.Core.Memory;

namespace SharpVisor.Cpu;

/// <summary>
/// Which guest-physical pages hold code that some vCPU decoded, shared by every vCPU of the
/// engine so a write on one vCPU invalidates what another decoded (cross-modifying code).
/// A page with code never stays in any write TLB: the first write to it goes through the slow
/// path, which bumps the page's generation (stale blocks fail their generation check) and
/// clears the mark. Races are benign: a block that another vCPU is executing when its page is
/// written finishes as decoded, as on hardware without a serializing instruction.
/// </summary>
internal sealed class CodePageMap
{
    private readonly GuestMemory _memory;
    private readonly List<SoftwareVcpu> _vcpus = new();
    private byte[] _hasCode = [];
    private uint[] _generation = [];
    private ulong _limit;

    public CodePageMap(GuestMemory memory)
    {
        _memory = memory;
        Resize();
        memory.RegionAdded += _ => Resize();
    }

    private void Resize()
    {
        ulong top = 0;
        foreach (var r in _memory.Regions) top = Math.Max(top, r.End);
        int pages = (int)(top >> 12);
        Array.Resize(ref _hasCode, pages);
        Array.Resize(ref _generation, pages);
        _limit = top;
    }

    public void Register(SoftwareVcpu vcpu)
    {
        lock (_vcpus) _vcpus.Add(vcpu);
    }

    public uint Generation(ulong gpa) => gpa < _limit ? Volatile.Read(ref _generation[gpa >> 12]) : 0;

    public bool HasCode(ulong gpa) => gpa < _limit && _hasCode[gpa >> 12] != 0;

    /// <summary>Marks a page as holding decoded code; every vCPU's write TLB lets go of it.</summary>
    public void Mark(ulong gpa)
    {
        if (gpa >= _limit || _hasCode[gpa >> 12] != 0) return;
        _hasCode[gpa >> 12] = 1;
        lock (_vcpus)
            foreach (var v in _vcpus) v.FlushWriteTlb();
    }

    /// <summary>A write reaches <paramref name="gpa"/>: returns true if it invalidated code there.</summary>
    public bool NoteWrite(ulong gpa)
    {
        if (gpa >= _limit) return false;
        ulong pn = gpa >> 12;
        if (_hasCode[pn] == 0) return false;
        _hasCode[pn] = 0;
        Interlocked.Increment(ref _generation[pn]);
        return true;
    }
}
