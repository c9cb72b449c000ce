using System.Diagnostics;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Vcpu;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Kvm.Tests;

/// <summary>Kick, interrupt and NMI injection, state round trips.</summary>
public sealed class ControlTests
{
    private sealed class OneInterrupt(byte vector) : IInterruptSource
    {
        public int Acknowledged;
        public bool HasInterrupt => Acknowledged == 0;
        public byte Acknowledge()
        {
            Acknowledged++;
            return vector;
        }
    }

    [Fact]
    public void KickFromAnotherThreadStopsAnInfiniteLoop()
    {
        using var vm = new TestVm();
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            var l = a.CreateLabel();
            a.Label(ref l);
            a.jmp(l);
        });
        vm.EnterRealMode();

        ExitReason result = ExitReason.None;
        var runner = new Thread(() => result = vm.Vcpu.Run());
        runner.Start();
        Thread.Sleep(300);
        Assert.True(runner.IsAlive, $"the guest loop returned by itself: {vm.Vcpu.Exit}");
        var sw = Stopwatch.StartNew();
        vm.Vcpu.Kick();
        bool stopped = runner.Join(TimeSpan.FromSeconds(10));
        if (!stopped)
        {
            vm.Vcpu.Kick(); // let the thread go before failing (a second kick cannot be missed)
            runner.Join();
        }
        Assert.True(stopped, "Kick did not stop KVM_RUN within 10 s");
        Assert.Equal(ExitReason.Interrupted, result);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Equal(TestVm.CodeAddress, vm.State().Rip); // still in the loop, nothing corrupted
    }

    [Fact]
    public void KickBeforeRunMakesTheNextRunReturnAtOnceAndOnlyThatOne()
    {
        using var vm = new TestVm();
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.mov(al, 7);
            a.@out((byte)0x10, al);
            a.hlt();
        });
        vm.EnterRealMode();

        vm.Vcpu.Kick();
        vm.Expect(ExitReason.Interrupted);
        Assert.Equal(TestVm.CodeAddress, vm.State().Rip); // no guest instruction ran
        vm.ExpectOut(0x10, 1, 7);
        vm.Expect(ExitReason.Halt);
    }

    [Fact]
    public void ExternalInterruptIsInjectedWhenTheGuestEnablesInterrupts()
    {
        using var vm = new TestVm();
        const byte vector = 0x20;
        const ulong handler = 0x1100;
        vm.Memory.Write<uint>(vector * 4, (uint)handler); // IVT entry: offset handler, segment 0
        vm.Load(16, handler, a =>
        {
            a.mov(al, 0xAA);
            a.@out((byte)0x11, al);
            a.iret();
        });
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.mov(al, 1);
            a.@out((byte)0x10, al); // IF is clear: no interrupt before this
            a.sti();
            a.nop();
            a.hlt();
            a.mov(al, 2);
            a.@out((byte)0x10, al);
            a.hlt();
        });
        vm.EnterRealMode();
        var source = new OneInterrupt(vector);
        vm.Vcpu.InterruptSource = source;

        vm.ExpectOut(0x10, 1, 1);
        Assert.Equal(0, source.Acknowledged);
        // The handler runs once, either right after STI's shadow or when HLT wakes it.
        var seen = new List<string>();
        while (seen.Count < 8)
        {
            var r = vm.Run();
            if (r == ExitReason.Halt) continue;
            Assert.Equal(ExitReason.IoOut, r);
            seen.Add($"{vm.Vcpu.Exit.Address:x}={vm.Vcpu.Exit.Data:x}");
            if (vm.Vcpu.Exit.Address == 0x10) break;
        }
        Assert.Equal(["11=aa", "10=2"], seen);
        Assert.Equal(1, source.Acknowledged);
        Assert.Equal(1L, vm.Vcpu.Statistics["interrupts_injected"]);
    }

    [Fact]
    public void NmiIsDeliveredEvenWithInterruptsDisabled()
    {
        using var vm = new TestVm();
        const ulong handler = 0x1200;
        vm.Memory.Write<uint>(2 * 4, (uint)handler);
        vm.Load(16, handler, a =>
        {
            a.mov(al, 0xBB);
            a.@out((byte)0x12, al);
            a.hlt();
        });
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.cli();
            a.hlt();
        });
        vm.EnterRealMode();

        vm.Vcpu.RequestNmi();
        // RequestNmi also kicks: the first Run may return Interrupted before the NMI is queued.
        var r = vm.Run();
        if (r == ExitReason.Interrupted) r = vm.Run();
        Assert.True(r == ExitReason.IoOut, $"expected the NMI handler's OUT, got {vm.Vcpu.Exit}");
        Assert.Equal(0x12ul, vm.Vcpu.Exit.Address);
        Assert.Equal(0xBBul, vm.Vcpu.Exit.Data);
    }

    [Fact]
    public void StateRoundTrip()
    {
        using var vm = new TestVm();
        var s = VcpuState.Protected32(0x1234);
        for (int i = 0; i < 16; i++) s.Gpr[i] = 0x1111_0000_0000_0000ul * (ulong)(i % 8) + (ulong)i * 0x0101;
        s.Rflags = 0x202 | 0x40 | 0x1; // IF, ZF, CF
        s.Es = new SegmentRegister { Selector = 0x2B, Base = 0x12_3000, Limit = 0xF_FFFF, Attributes = 0x3 | SegmentRegister.AttrS | (3 << 5) | SegmentRegister.AttrP | SegmentRegister.AttrDb };
        s.Gdtr = new DescriptorTableRegister { Base = 0x9000, Limit = 0x3F };
        s.Idtr = new DescriptorTableRegister { Base = 0xA000, Limit = 0x7FF };
        s.Tr = SegmentRegister.System(0x28, 0x7000, 0x67, 11);
        s.Cr2 = 0xDEAD_B000;
        s.Cr3 = 0x5000;
        s.Cr4 = 0x600; // OSFXSR | OSXMMEXCPT
        s.Msrs[Msr.SysenterCs] = 0x10;
        s.Msrs[Msr.SysenterEsp] = 0x8000;
        s.Msrs[Msr.SysenterEip] = 0xC000_1000;
        s.Msrs[Msr.Star] = 0x0023_0010_0000_0000;
        s.Msrs[Msr.Lstar] = 0xFFFF_FFFF_8100_0000;
        s.Msrs[Msr.Sfmask] = 0x4_7700;
        s.Msrs[Msr.KernelGsBase] = 0xFFFF_8880_0000_0000;
        s.Msrs[Msr.Pat] = 0x0007_0406_0007_0406;
        // x87/SSE state through KVM_SET_FPU/KVM_GET_FPU: FCW, FSW, tags, MXCSR, ST and XMM registers.
        var fx = s.FxSave;
        fx[0] = 0x7F; fx[1] = 0x02;        // FCW 027F
        fx[2] = 0x01; fx[3] = 0x38;        // FSW: IE, TOP = 7
        fx[4] = 0x80;                       // R7 valid
        fx[24] = 0x80; fx[25] = 0x7F;       // MXCSR 7F80 (RC = toward zero)
        for (int b = 0; b < 10; b++) fx[32 + b] = (byte)(0x10 + b);
        for (int b = 0; b < 256; b++) fx[160 + b] = (byte)(b * 5 + 1);
        vm.Vcpu.SetState(s);

        var g = vm.State();
        Assert.Equal(s.Gpr, g.Gpr);
        Assert.Equal(s.Rip, g.Rip);
        Assert.Equal(s.Rflags, g.Rflags);
        foreach (var (name, want, got) in new[]
                 {
                     ("cs", s.Cs, g.Cs), ("ds", s.Ds, g.Ds), ("es", s.Es, g.Es), ("fs", s.Fs, g.Fs),
                     ("gs", s.Gs, g.Gs), ("ss", s.Ss, g.Ss), ("tr", s.Tr, g.Tr),
                 })
        {
            Assert.True(want.Selector == got.Selector && want.Base == got.Base && want.Limit == got.Limit && want.Attributes == got.Attributes,
                $"{name}: set {want}, got {got}");
        }
        Assert.Equal(s.Ldtr.Selector, g.Ldtr.Selector);
        Assert.Equal(s.Gdtr.Base, g.Gdtr.Base);
        Assert.Equal(s.Gdtr.Limit, g.Gdtr.Limit);
        Assert.Equal(s.Idtr.Base, g.Idtr.Base);
        Assert.Equal(s.Idtr.Limit, g.Idtr.Limit);
        Assert.Equal(s.Cr0, g.Cr0 & s.Cr0);
        Assert.Equal(s.Cr2, g.Cr2);
        Assert.Equal(s.Cr3, g.Cr3);
        Assert.Equal(s.Cr4, g.Cr4);
        Assert.Equal(s.ApicBase, g.ApicBase);
        foreach (var (msr, value) in s.Msrs)
        {
            Assert.True(g.Msrs.TryGetValue(msr, out var v), $"MSR {msr:x} missing from GetState");
            Assert.True(value == v, $"MSR {msr:x}: set {value:x}, got {v:x}");
        }
        Assert.True(g.Msrs.ContainsKey(Msr.Tsc));
        Assert.Equal(s.FxSave.AsSpan(0, 6).ToArray(), g.FxSave.AsSpan(0, 6).ToArray());
        Assert.Equal(s.FxSave.AsSpan(24, 4).ToArray(), g.FxSave.AsSpan(24, 4).ToArray());
        Assert.Equal(s.FxSave.AsSpan(32, 10).ToArray(), g.FxSave.AsSpan(32, 10).ToArray());
        Assert.Equal(s.FxSave.AsSpan(160, 256).ToArray(), g.FxSave.AsSpan(160, 256).ToArray());

        // A second SetState of what GetState returned is accepted unchanged.
        vm.Vcpu.SetState(g);
        var g2 = vm.State();
        Assert.Equal(g.Gpr, g2.Gpr);
        Assert.Equal(g.Cs.Attributes, g2.Cs.Attributes);
        Assert.Equal(g.Msrs[Msr.Lstar], g2.Msrs[Msr.Lstar]);
    }

    [Fact]
    public void EngineRejectsBadVcpuIndices()
    {
        using var vm = new TestVm();
        Assert.Throws<Core.ConfigurationException>(() => vm.Engine.CreateVcpu(0)); // TestVm made vCPU 0
        Assert.Throws<Core.ConfigurationException>(() => vm.Engine.CreateVcpu(1));
        Assert.Equal("kvm", vm.Engine.Name);
    }

    [Fact]
    public void RegionsAddedLaterBecomeSlots()
    {
        using var vm = new TestVm();
        vm.Memory.AddRegion(0x20_0000, 0x1000, "late");
        vm.Memory.Write<byte>(0x20_0000, 0x5C);
        vm.Load(32, TestVm.CodeAddress, a =>
        {
            a.mov(al, __byte_ptr[0x20_0000]);
            a.@out((byte)0x10, al);
            a.hlt();
        });
        vm.Vcpu.SetState(VcpuState.Protected32(TestVm.CodeAddress));
        vm.ExpectOut(0x10, 1, 0x5C); // a read of an unregistered range would be an MMIO exit
        vm.Expect(ExitReason.Halt);
    }
}
