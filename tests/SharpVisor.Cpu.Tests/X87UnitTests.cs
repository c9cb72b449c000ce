// What the host differential cannot check (it runs single instructions in 64-bit user mode): the
// FNSAVE/FNSTENV/FRSTOR/FLDENV images in the 16- and 32-bit layouts of real and protected mode
// (Intel SDM Vol. 1 §8.1.10, figures 8-9 to 8-12), the last-instruction pointers they contain
// (§8.1.8–8.1.9), #MF on the next waiting instruction after an unmasked exception (§8.6, Vol. 3
// §6.15 interrupt 16), and #NM from CR0.EM/TS/MP (Vol. 3 §2.5, table 2-2).
using System.Buffers.Binary;
using Iced.Intel;
using SharpVisor.Core.Vcpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVisor.Cpu.Tests;

public class X87UnitTests
{
    private const ulong Data = 0x3000, Save = 0x4000;
    /// <summary>Real-mode handlers: vector v's IVT entry points at HandlerBase + v, a HLT.</summary>
    private const ulong HandlerBase = 0x600;
    private const ushort Two = 0x4000; // float32 2.0 is 0x40000000: its high half

    private static byte[] Float32(float f) => BitConverter.GetBytes(f);

    /// <summary>Real mode, CS:IP = cs:ip, DS = ds, SS:SP = 0:7000, IVT entries 0–31 to one HLT each.</summary>
    private static TestMachine RealMode(ushort cs, ushort ip, ushort ds, Action<Assembler> body, ulong cr0Extra = 0)
    {
        var m = new TestMachine(fpuModel: true);
        ulong linear = ((ulong)cs << 4) + ip;
        m.Memory.Write(linear, TestMachine.Assemble(16, ip, body));
        for (uint v = 0; v < 32; v++)
        {
            m.Memory.Write(v * 4, (ushort)(HandlerBase + v));
            m.Memory.Write(v * 4 + 2, (ushort)0);
            m.Memory.Write(HandlerBase + v, (byte)0xF4);
        }
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(cs, code: true);
        s.Rip = ip;
        s.Ds = SegmentRegister.RealMode(ds);
        s.Ss = SegmentRegister.RealMode(0);
        s.Rsp = 0x7000;
        s.Cr0 |= cr0Extra;
        m.Cpu.SetState(s);
        return m;
    }

    private static TestMachine Protected32(ulong entry, Action<Assembler> body)
    {
        var m = new TestMachine(fpuModel: true);
        m.Memory.Write(entry, TestMachine.Assemble(32, entry, body));
        var s = VcpuState.Protected32(entry);
        s.Rsp = 0x7000;
        m.Cpu.SetState(s);
        return m;
    }

    private static byte[] Read(TestMachine m, ulong gpa, int n)
    {
        var b = new byte[n];
        m.Memory.Read(gpa, b);
        return b;
    }

    private static ushort U16(byte[] b, int at) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at));
    private static uint U32(byte[] b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));

    /// <summary>FLD1; FLD1; FADD m32 (2.0) leaves ST0 = 3.0, ST1 = 1.0, TOP = 6, no flags.</summary>
    private static void ThreeAndOne(Assembler a, AssemblerMemoryOperand two)
    {
        a.fninit();
        a.fld1();
        a.fld1();
        a.fadd(two);
    }

    private static void AssertRegisters(byte[] image, int at)
    {
        // ST0 = 3.0 (1.1b × 2^1), ST1 = 1.0, each 10 bytes, significand first (figure 8-13).
        Assert.Equal(0xC000_0000_0000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(at)));
        Assert.Equal(0x4000, U16(image, at + 8));
        Assert.Equal(0x8000_0000_0000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(image.AsSpan(at + 10)));
        Assert.Equal(0x3FFF, U16(image, at + 18));
    }

    private static void AssertInitialised(TestMachine m)
    {
        var fx = m.State().FxSave;
        Assert.Equal(0x037F, U16(fx, 0)); // FNSAVE ends with FNINIT
        Assert.Equal(0, U16(fx, 2));
        Assert.Equal(0, fx[4]);
    }

    [Fact]
    public void Fnsave32InProtectedModeFollowsFigure8_9()
    {
        ulong faddAt = 0;
        var m = new TestMachine(fpuModel: true);
        var code = TestMachine.Assemble(32, 0x1000, a =>
        {
            var l = a.CreateLabel();
            a.fninit(); a.fld1(); a.fld1();
            a.Label(ref l);
            a.fadd(__dword_ptr[(int)Data]);
            a.fnsave(__[(int)Save]);
            a.hlt();
            return [l];
        }, out var labels);
        faddAt = labels[0];
        m.Memory.Write(0x1000, code);
        m.Memory.Write(Data, Float32(2.0f));
        var s = VcpuState.Protected32(0x1000);
        m.Cpu.SetState(s);
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var img = Read(m, Save, 108);
        Assert.Equal(0xFFFF_037Fu, U32(img, 0));            // FCW, reserved half FFFFH
        Assert.Equal(0xFFFF_3000u, U32(img, 4));            // FSW: TOP = 6
        Assert.Equal(0xFFFF_0FFFu, U32(img, 8));            // FTW: R6, R7 valid, R0–R5 empty
        Assert.Equal((uint)faddAt, U32(img, 12));           // FIP
        Assert.Equal(0x0005_0000u, U32(img, 16));           // FCS deprecated: 0000H; FOP = D8 05 → 005H
        Assert.Equal((uint)Data, U32(img, 20));             // FDP
        Assert.Equal(0xFFFF_0000u, U32(img, 24));           // FDS deprecated: 0000H
        AssertRegisters(img, 28);
        AssertInitialised(m);
    }

    [Fact]
    public void Fnsave16InProtectedModeFollowsFigure8_11()
    {
        var m = new TestMachine(fpuModel: true);
        var code = TestMachine.Assemble(32, 0x1000, a =>
        {
            var l = a.CreateLabel();
            a.fninit(); a.fld1(); a.fld1();
            a.Label(ref l);
            a.fadd(__dword_ptr[(int)Data]);
            a.AddInstruction(Instruction.Create(Code.Fnsave_m94byte, new MemoryOperand(Register.None, (long)Save, 4)));
            a.hlt();
            return [l];
        }, out var labels);
        m.Memory.Write(0x1000, code);
        m.Memory.Write(Data, Float32(2.0f));
        m.Cpu.SetState(VcpuState.Protected32(0x1000));
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var img = Read(m, Save, 94);
        Assert.Equal(0x037F, U16(img, 0));
        Assert.Equal(0x3000, U16(img, 2));
        Assert.Equal(0x0FFF, U16(img, 4));
        Assert.Equal((ushort)labels[0], U16(img, 6));      // FIP offset (low 16 bits)
        Assert.Equal(0x0000, U16(img, 8));                 // FCS (deprecated)
        Assert.Equal((ushort)Data, U16(img, 10));          // FDP
        Assert.Equal(0x0000, U16(img, 12));                // FDS (deprecated)
        AssertRegisters(img, 14);
        AssertInitialised(m);
    }

    [Fact]
    public void Fnsave16InRealModeFollowsFigure8_12()
    {
        // CS = 1F00H, IP = 0C00H + …: a 20-bit linear FIP with bits 19:16 = 1; DS = 3000H: FDP = 30300H.
        using var m = RealMode(0x1F00, 0x0C00, 0x3000, a =>
        {
            ThreeAndOne(a, __dword_ptr[0x0300]);
            a.fnsave(__[0x0400]);
            a.hlt();
        });
        m.Memory.Write(0x30300, Float32(2.0f));
        Assert.Equal(ExitReason.Halt, m.Run());
        var img = Read(m, 0x30400, 94);
        uint faddLinear = 0x1F000 + 0x0C00 + 2 + 2 + 2; // after FNINIT, FLD1, FLD1 (2 bytes each)
        Assert.Equal(0x037F, U16(img, 0));
        Assert.Equal(0x3000, U16(img, 2));
        Assert.Equal(0x0FFF, U16(img, 4));
        Assert.Equal((ushort)faddLinear, U16(img, 6));                      // FIP 15:0
        Assert.Equal((ushort)((faddLinear >> 4) & 0xF000 | 0x006), U16(img, 8)); // FIP 19:16, FOP (D8 06: [disp16])
        Assert.Equal(0x0300, U16(img, 10));                                 // FDP 15:0
        Assert.Equal(0x3000, U16(img, 12));                                 // FDP 19:16
        AssertRegisters(img, 14);
        AssertInitialised(m);
    }

    [Fact]
    public void Fnsave32InRealModeFollowsFigure8_10()
    {
        using var m = RealMode(0x1F00, 0x0C00, 0x3000, a =>
        {
            ThreeAndOne(a, __dword_ptr[0x0300]);
            a.AddInstruction(Instruction.Create(Code.Fnsave_m108byte, new MemoryOperand(Register.None, 0x0400, 2)));
            a.hlt();
        });
        m.Memory.Write(0x30300, Float32(2.0f));
        Assert.Equal(ExitReason.Halt, m.Run());
        var img = Read(m, 0x30400, 108);
        uint faddLinear = 0x1F000 + 0x0C00 + 6;
        Assert.Equal(0xFFFF_037Fu, U32(img, 0));
        Assert.Equal(0xFFFF_3000u, U32(img, 4));
        Assert.Equal(0xFFFF_0FFFu, U32(img, 8));
        Assert.Equal(0xFFFF_0000u | (faddLinear & 0xFFFF), U32(img, 12));   // FIP 15:0
        Assert.Equal((faddLinear >> 16) << 12 | 0x006u, U32(img, 16));      // FIP 31:16 in bits 27:12, FOP
        Assert.Equal(0xFFFF_0300u, U32(img, 20));                           // FDP 15:0
        Assert.Equal(0x3u << 12, U32(img, 24));                             // FDP 31:16 in bits 27:12
        AssertRegisters(img, 28);
        AssertInitialised(m);
    }

    [Fact]
    public void FnstenvMasksExceptionsAndFldenvFrstorRoundTrip()
    {
        // Save, scramble, restore: the state comes back (the real-mode image carries linear pointers).
        using var m = RealMode(0x1F00, 0x0C00, 0x3000, a =>
        {
            ThreeAndOne(a, __dword_ptr[0x0300]);
            a.fldcw(__word_ptr[0x0310]);          // FCW 0372H: PC double, RC nearest, IM/DM/ZM unmasked… masked below
            a.fnstenv(__[0x0500]);                // then masks every exception
            a.fnstcw(__word_ptr[0x0320]);
            a.fnsave(__[0x0600]);                 // image A, then FNINIT
            a.fld1();                             // disturb the state
            a.frstor(__[0x0600]);
            a.fnsave(__[0x0700]);                 // image B must equal image A
            a.fldenv(__[0x0500]);
            a.fnstenv(__[0x0800]);                // the environment survives FLDENV/FNSTENV
            a.hlt();
        });
        m.Memory.Write(0x30300, Float32(2.0f));
        m.Memory.Write(0x30310, (ushort)0x0272);
        Assert.Equal(ExitReason.Halt, m.Run());
        Assert.Equal(0x0272 | 0x3F, m.Memory.Read<ushort>(0x30320));
        var a1 = Read(m, 0x30600, 94);
        var b1 = Read(m, 0x30700, 94);
        Assert.Equal(a1, b1);
        var env = Read(m, 0x30500, 14);
        var env2 = Read(m, 0x30800, 14);
        Assert.Equal(0x0272, U16(env, 0));  // stored before the masking
        Assert.Equal(env, env2);             // FLDENV loaded it all back (control instructions leave the pointers)
    }

    [Fact]
    public void UnmaskedExceptionIsReportedAsMfByTheNextWaitingInstructionOnly()
    {
        // CR0.NE = 0 here (real mode after reset): the engine still delivers #MF (no FERR# emulation).
        ulong fwaitAt = 0;
        var m = new TestMachine(fpuModel: true);
        var code = TestMachine.Assemble(16, 0x7C00, a =>
        {
            var l = a.CreateLabel();
            a.fninit();
            a.fldcw(__word_ptr[0x0310]);      // ZM clear
            a.fld1();
            a.fldz();
            a.fdiv(st1, st0);                 // 1/0: #Z unmasked → ES, ST1 unchanged, no fault yet
            a.fnstsw(ax);                     // no-wait: no fault
            a.mov(bx, ax);
            a.fnstenv(__[0x0500]);            // no-wait: no fault (then all exceptions masked, ES stays)
            a.Label(ref l);
            a.wait();                        // #MF here
            a.hlt();
            return [l];
        }, out var labels);
        fwaitAt = labels[0];
        m.Memory.Write(0x7C00, code);
        m.Memory.Write(0x0310, (ushort)0x037B);
        for (uint v = 0; v < 32; v++)
        {
            m.Memory.Write(v * 4, (ushort)(HandlerBase + v));
            m.Memory.Write(v * 4 + 2, (ushort)0);
            m.Memory.Write(HandlerBase + v, (byte)0xF4);
        }
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true);
        s.Rip = 0x7C00;
        s.Ds = s.Ss = SegmentRegister.RealMode(0);
        s.Rsp = 0x7000;
        m.Cpu.SetState(s);
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var st = m.State();
        Assert.Equal(HandlerBase + 16 + 1, st.Rip);                     // halted in the #MF handler
        Assert.Equal((ushort)fwaitAt, m.Memory.Read<ushort>(0x7000 - 6)); // the saved IP is the FWAIT (a fault)
        ushort fsw = (ushort)st.Rbx;
        Assert.Equal(0x8000 | 0x80 | 0x04, fsw & 0x80FF);               // B, ES, ZE
        var fx = st.FxSave;
        Assert.Equal(0x3000, U16(fx, 2) & 0x3800);                      // TOP = 6: nothing popped
        Assert.Equal(0x3FFF, U16(fx, 32 + 16 + 8));                     // ST1 still 1.0
        Assert.Equal(0x8000_0000_0000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(fx.AsSpan(32 + 16)));
        Assert.Equal(0x037B | 0x3F, U16(fx, 0));                        // FNSTENV masked everything
    }

    [Theory]
    [InlineData("fnclex", false)]   // clears ES: the FWAIT then passes
    [InlineData("fninit", false)]
    [InlineData("fclex", true)]     // WAIT-prefixed: the wait part faults first
    [InlineData("finit", true)]
    [InlineData("fldz", true)]      // any waiting x87 instruction
    [InlineData("fnop", true)]
    public void PendingExceptionAndTheControlInstructions(string instruction, bool faults)
    {
        var m = new TestMachine(fpuModel: true);
        var code = TestMachine.Assemble(16, 0x7C00, a =>
        {
            a.fninit();
            a.fldcw(__word_ptr[0x0310]);      // IM clear
            a.fld1();
            a.fsqrt();                        // fine
            a.fchs();
            a.fsqrt();                        // √−1: #IA unmasked → pending
            switch (instruction)
            {
                case "fnclex": a.fnclex(); break;
                case "fninit": a.fninit(); break;
                case "fclex": a.fclex(); break;
                case "finit": a.finit(); break;
                case "fldz": a.fldz(); break;
                default: a.fnop(); break;
            }
            a.wait();
            a.mov(ax, 0x1234);
            a.hlt();
        });
        m.Memory.Write(0x7C00, code);
        m.Memory.Write(0x0310, (ushort)0x037E);
        for (uint v = 0; v < 32; v++)
        {
            m.Memory.Write(v * 4, (ushort)(HandlerBase + v));
            m.Memory.Write(v * 4 + 2, (ushort)0);
            m.Memory.Write(HandlerBase + v, (byte)0xF4);
        }
        var s = VcpuState.AfterReset();
        s.Cs = SegmentRegister.RealMode(0, code: true);
        s.Rip = 0x7C00;
        s.Ds = s.Ss = SegmentRegister.RealMode(0);
        s.Rsp = 0x7000;
        m.Cpu.SetState(s);
        using var _m = m;
        Assert.Equal(ExitReason.Halt, m.Run());
        var st = m.State();
        if (faults)
        {
            Assert.Equal(HandlerBase + 16 + 1, st.Rip);
            Assert.NotEqual(0x1234UL, st.Rax & 0xFFFF);
        }
        else
        {
            Assert.Equal(0x1234UL, st.Rax & 0xFFFF);
            Assert.Equal(0, U16(st.FxSave, 2) & 0x80BF);
        }
    }

    [Theory]
    [InlineData(0x8UL, "fadd", 7)]          // TS: #NM
    [InlineData(0x4UL, "fadd", 7)]          // EM: #NM
    [InlineData(0x8UL, "fwait", -1)]        // TS without MP: WAIT runs
    [InlineData(0xAUL, "fwait", 7)]         // TS and MP: #NM
    [InlineData(0x4UL, "fwait", -1)]        // EM alone does not affect WAIT
    [InlineData(0x6UL, "fnstsw", 7)]        // EM: even the no-wait forms
    [InlineData(0x0UL, "fadd", -1)]
    public void DeviceNotAvailableFollowsCr0EmTsMp(ulong cr0, string instruction, int vector)
    {
        using var m = RealMode(0, 0x7C00, 0, a =>
        {
            switch (instruction)
            {
                case "fadd": a.fadd(st0, st1); break;
                case "fwait": a.wait(); break;
                default: a.fnstsw(ax); break;
            }
            a.hlt();
        }, cr0Extra: cr0);
        Assert.Equal(ExitReason.Halt, m.Run());
        var st = m.State();
        if (vector < 0) Assert.True(st.Rip > 0x7C00 && st.Rip < 0x7C10, $"RIP {st.Rip:x}");
        else
        {
            Assert.Equal(HandlerBase + (ulong)vector + 1, st.Rip);
            Assert.Equal(0x7C00, m.Memory.Read<ushort>(0x7000 - 6)); // a fault: IP of the x87 instruction
        }
    }

    [Fact]
    public void StackFaultsSetSfAndC1AndMaskedResponsesUseTheIndefinite()
    {
        using var m = RealMode(0, 0x7C00, 0, a =>
        {
            a.fninit();
            a.fadd(st0, st1);                 // underflow: ST0 ← indefinite, C1 = 0
            a.fnstsw(__word_ptr[0x0400]);
            for (int k = 0; k < 8; k++) a.fld1();
            a.fld1();                         // overflow: C1 = 1, indefinite pushed
            a.fnstsw(__word_ptr[0x0402]);
            a.fistp(__word_ptr[0x0404]);      // NaN → integer indefinite 8000H, IE
            a.hlt();
        });
        Assert.Equal(ExitReason.Halt, m.Run());
        ushort sw1 = m.Memory.Read<ushort>(0x0400), sw2 = m.Memory.Read<ushort>(0x0402);
        Assert.Equal(0x41, sw1 & 0x2FF);                    // SF, IE, C1 = 0
        Assert.Equal(0x241, sw2 & 0x2FF);                   // SF, IE, C1 = 1
        Assert.Equal(0x8000, m.Memory.Read<ushort>(0x0404));
    }

    [Fact]
    public void ConstantsFollowTheRoundingControl()
    {
        // FLDPI: nearest and up give …C235, down and toward zero …C234; FLDL2T: only up gives …8AFF.
        ulong[] pi = new ulong[4], l2t = new ulong[4];
        for (int rc = 0; rc < 4; rc++)
        {
            using var m = RealMode(0, 0x7C00, 0, a =>
            {
                a.fninit();
                a.fldcw(__word_ptr[0x0310]);
                a.fldpi();
                a.fstp(__tword_ptr[0x0400]);
                a.fldl2t();
                a.fstp(__tword_ptr[0x0410]);
                a.hlt();
            });
            m.Memory.Write(0x0310, (ushort)(0x037F | rc << 10));
            Assert.Equal(ExitReason.Halt, m.Run());
            pi[rc] = m.Memory.Read<ulong>(0x0400);
            l2t[rc] = m.Memory.Read<ulong>(0x0410);
        }
        Assert.Equal([0xC90F_DAA2_2168_C235UL, 0xC90F_DAA2_2168_C234UL, 0xC90F_DAA2_2168_C235UL, 0xC90F_DAA2_2168_C234UL], pi);
        Assert.Equal([0xD49A_784B_CD1B_8AFEUL, 0xD49A_784B_CD1B_8AFEUL, 0xD49A_784B_CD1B_8AFFUL, 0xD49A_784B_CD1B_8AFEUL], l2t);
    }
}
