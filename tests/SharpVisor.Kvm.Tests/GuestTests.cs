using SharpVisor.Core.Vcpu;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Kvm.Tests;

/// <summary>Tiny guests run under KVM (this KVM may be slow: each guest is a handful of instructions).</summary>
public sealed class GuestTests
{
    [Fact]
    public void RealModePortIo()
    {
        using var vm = new TestVm();
        ulong end = vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.mov(al, (byte)'H');
            a.@out((byte)0x10, al);
            a.mov(al, (byte)'i');
            a.@out((byte)0x10, al);
            a.@in(al, (byte)0x11);
            a.@out((byte)0x12, al);
            a.mov(dx, 0x1234);
            a.mov(ax, 0xBEEF);
            a.@out(dx, ax);
            a.@in(ax, dx);
            a.mov(__word_ptr[0x500], ax);
            a.hlt();
        });
        vm.EnterRealMode();

        vm.ExpectOut(0x10, 1, 'H');
        vm.ExpectOut(0x10, 1, 'i');
        vm.ExpectIn(0x11, 1, 0x5A);
        vm.ExpectOut(0x12, 1, 0x5A);
        vm.ExpectOut(0x1234, 2, 0xBEEF);
        vm.ExpectIn(0x1234, 2, 0xCAFE);
        vm.Expect(ExitReason.Halt);

        Assert.Equal((ushort)0xCAFE, vm.Memory.Read<ushort>(0x500));
        var s = vm.State();
        Assert.Equal(end, s.Rip); // HLT completes: RIP is past it
        Assert.Equal(0xCAFEul, s.Rax & 0xFFFF);
    }

    [Fact]
    public void InWithoutAnAnswerReadsAllOnes()
    {
        using var vm = new TestVm();
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.@in(ax, (byte)0x80);
            a.hlt();
        });
        vm.EnterRealMode();
        vm.Expect(ExitReason.IoIn, 0x80, 2, data: 0xFFFF); // the engine's default until the run loop answers
        vm.Expect(ExitReason.Halt);
        Assert.Equal(0xFFFFul, vm.State().Rax & 0xFFFF);
    }

    [Fact]
    public void StringIoIsPresentedOneElementPerExitInOrder()
    {
        using var vm = new TestVm();
        vm.Memory.Write(0x600, "ABCD"u8);
        vm.Memory.Write<uint>(0x610, 0x2222_1111);
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.cld();
            a.mov(si, 0x600);
            a.mov(cx, 4);
            a.mov(dx, 0x20);
            a.rep.outsb();
            a.mov(di, 0x700);
            a.mov(cx, 3);
            a.mov(dx, 0x21);
            a.rep.insb();
            a.mov(si, 0x610);
            a.mov(cx, 2);
            a.mov(dx, 0x22);
            a.rep.outsw();
            a.hlt();
        });
        vm.EnterRealMode();

        foreach (char c in "ABCD") vm.ExpectOut(0x20, 1, c);
        vm.ExpectIn(0x21, 1, 0x11);
        vm.ExpectIn(0x21, 1, 0x22);
        vm.ExpectIn(0x21, 1, 0x33);
        vm.ExpectOut(0x22, 2, 0x1111);
        vm.ExpectOut(0x22, 2, 0x2222);
        vm.Expect(ExitReason.Halt);

        var buf = new byte[4];
        vm.Memory.Read(0x700, buf);
        Assert.Equal(new byte[] { 0x11, 0x22, 0x33, 0x00 }, buf);
        var s = vm.State();
        Assert.Equal(0ul, s.Rcx & 0xFFFF);
        Assert.Equal(0x703ul, s.Rdi & 0xFFFF);
        Assert.Equal(9L, vm.Vcpu.Statistics["io_elements"]);
    }

    [Fact]
    public void MmioReadsAndWritesAndReadOnlyMemory()
    {
        using var vm = new TestVm(ramBytes: 0x8_0000, extraRegions: m => m.AddRegion(0xF0000, 0x10000, "rom", readOnly: true));
        vm.Memory.Write<uint>(0xF0000, 0x1234_5678);
        vm.Memory.Write<uint>(0xF0004, 0x9ABC_DEF0);
        vm.Load(16, TestVm.CodeAddress, a =>
        {
            a.mov(ax, 0xB800);
            a.mov(ds, ax);
            a.mov(__byte_ptr[0x10], 0x41);
            a.mov(eax, __dword_ptr[0x20]);
            a.@out((byte)0x10, eax);
            a.mov(ax, 0xF000);
            a.mov(ds, ax);
            a.mov(eax, __dword_ptr[0]);
            a.@out((byte)0x11, eax);
            a.mov(__word_ptr[4], 0x5555);
            a.mov(eax, __dword_ptr[4]);
            a.@out((byte)0x12, eax);
            a.hlt();
        });
        vm.EnterRealMode();

        vm.Expect(ExitReason.MmioWrite, 0xB8010, 1, 0x41);
        vm.Expect(ExitReason.MmioRead, 0xB8020, 4);
        vm.Vcpu.Exit.Data = 0xDEAD_BEEF;
        vm.ExpectOut(0x10, 4, 0xDEAD_BEEF);
        vm.ExpectOut(0x11, 4, 0x1234_5678);               // ROM reads come from the slot, no exit
        vm.Expect(ExitReason.MmioWrite, 0xF0004, 2, 0x5555); // writes to a read-only slot exit as MMIO
        vm.ExpectOut(0x12, 4, 0x9ABC_DEF0);               // and do not change it
        vm.Expect(ExitReason.Halt);
    }

    [Fact]
    public void ProtectedModeWithoutPagingEnteredThroughSetState()
    {
        using var vm = new TestVm(ramBytes: 0x40_0000);
        vm.Load(32, TestVm.CodeAddress, a =>
        {
            a.mov(eax, 0x1234_5678);
            a.@out((byte)0x10, eax);
            a.mov(__dword_ptr[0x20_0000], 0xCAFE_BABE);
            a.mov(ebx, __dword_ptr[0x20_0000]);
            a.mov(eax, cr0);
            a.@out((byte)0x11, eax);
            a.hlt();
        });
        var state = VcpuState.Protected32(TestVm.CodeAddress);
        state.Rsp = 0x8000;
        vm.Vcpu.SetState(state);

        vm.ExpectOut(0x10, 4, 0x1234_5678);
        vm.Expect(ExitReason.IoOut, 0x11, 4);
        Assert.Equal(1ul, vm.Vcpu.Exit.Data & 0x8000_0001); // PE set, PG clear
        vm.Expect(ExitReason.Halt);

        Assert.Equal(0xCAFE_BABEu, vm.Memory.Read<uint>(0x20_0000));
        var s = vm.State();
        Assert.Equal(0xCAFE_BABEul, s.Rbx);
        Assert.Equal((ushort)0x10, s.Cs.Selector);
        Assert.True(s.Cs.DefaultBig);
    }

    [Fact]
    public void LongModeWithIdentityMappedPageTables()
    {
        using var vm = new TestVm(ramBytes: 0x40_0000);
        const ulong pml4 = 0x10000, pdpt = 0x11000, pd = 0x12000;
        const ulong present = 1, writable = 2, pageSize = 0x80;
        vm.Memory.Write(pml4, pdpt | present | writable);
        vm.Memory.Write(pdpt, pd | present | writable);
        for (ulong i = 0; i < 2; i++) vm.Memory.Write(pd + i * 8, (i << 21) | present | writable | pageSize);

        vm.Load(64, TestVm.CodeAddress, a =>
        {
            a.mov(rax, 0x1122_3344_5566_7788);
            a.mov(rdi, 0x30_0000);
            a.mov(__qword_ptr[rdi], rax);
            a.mov(rbx, __qword_ptr[rdi]);
            a.mov(eax, ebx);
            a.@out((byte)0x10, eax);
            a.shr(rbx, 32);
            a.mov(eax, ebx);
            a.@out((byte)0x10, eax);
            a.mov(r15, rbx);
            a.hlt();
        });
        var s = new VcpuState
        {
            Rip = TestVm.CodeAddress,
            Rsp = 0x8000,
            Cr0 = 0x8000_0011, // PG | ET | PE
            Cr3 = pml4,
            Cr4 = 0x20,        // PAE
            Efer = 0x500,      // LME | LMA
        };
        s.Cs = SegmentRegister.Flat(0x8, code: true, longMode: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = SegmentRegister.Flat(0x10, code: false);
        s.Ldtr = SegmentRegister.System(0, 0, 0xFFFF, 2);
        s.Tr = SegmentRegister.System(0, 0, 0xFFFF, 11);
        vm.Vcpu.SetState(s);

        vm.ExpectOut(0x10, 4, 0x5566_7788);
        vm.ExpectOut(0x10, 4, 0x1122_3344);
        vm.Expect(ExitReason.Halt);

        Assert.Equal(0x1122_3344_5566_7788ul, vm.Memory.Read<ulong>(0x30_0000));
        var got = vm.State();
        Assert.Equal(0x1122_3344ul, got.Gpr[Gpr.R15]);
        Assert.True(got.Cs.Long);
        Assert.Equal(0x500ul, got.Efer & 0x500);
    }

    [Fact]
    public void TripleFaultIsAOneLineShutdownOrInternalError()
    {
        using var vm = new TestVm();
        vm.Load(32, TestVm.CodeAddress, a => a.ud2()); // #UD with an empty IDT: #GP, #DF, shutdown
        var s = VcpuState.Protected32(TestVm.CodeAddress);
        s.Idtr = new DescriptorTableRegister { Base = 0, Limit = 0 };
        vm.Vcpu.SetState(s);

        var r = vm.Run();
        var msg = vm.Vcpu.Exit.Message;
        Assert.True(r is ExitReason.Shutdown or ExitReason.InternalError, $"got {vm.Vcpu.Exit}");
        Assert.NotNull(msg);
        Assert.DoesNotContain('\n', msg);
        Assert.Matches(@"^(triple fault \(KVM_EXIT_SHUTDOWN\)|KVM_EXIT_[A-Z_]+ .*) at (cs:rip [0-9a-f]{4}:[0-9a-f]+ \(linear [0-9a-f]+\)|an unknown rip)", msg);
    }

    [Fact]
    public void InvalidStateIsATypedErrorNamingTheIoctl()
    {
        using var vm = new TestVm();
        var s = VcpuState.AfterReset();
        s.Cr0 = 0x8000_0000; // PG without PE is invalid (SDM Vol. 3 §2.5)
        var e = Assert.Throws<KvmException>(() => vm.Vcpu.SetState(s));
        Assert.Equal("KVM_SET_SREGS failed: EINVAL (22)", e.Message);
    }

    [Fact]
    public void UnknownMsrInStateIsRejectedWithItsNumber()
    {
        using var vm = new TestVm();
        var s = vm.State();
        s.Msrs[0xDEAD_0000] = 1;
        var e = Assert.Throws<KvmException>(() => vm.Vcpu.SetState(s));
        Assert.StartsWith("KVM_SET_MSRS failed: MSR 0xdead0000", e.Message);
    }
}
