using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharpVisor.Core.Bus;
using SharpVisor.Core.Interrupts;
using SharpVisor.Core.Time;
using SharpVisor.Devices.Acpi;
using SharpVisor.Devices.Input;
using SharpVisor.Devices.Isa;
using SharpVisor.Devices.Misc;
using SharpVisor.Devices.Pic;
using SharpVisor.Devices.Pit;
using SharpVisor.Devices.Rtc;
using SharpVisor.Devices.Serial;

using Xunit;

namespace SharpVisor.Devices.Tests;

/// <summary>
/// The one width rule of the byte-register port devices (Isa/IsaByteCycles.cs): an access of n bytes
/// at offset o is exactly the byte cycles o, o+1, …, o+n−1 in that order, undecoded bytes read 0xFF.
/// </summary>
public sealed class IsaByteCyclesTests
{
    /// <summary>Records every cycle; register r reads 0x10 + r.</summary>
    private sealed class RecordingRegisters(int count) : IByteRegisterFile
    {
        public readonly List<string> Cycles = new();
        public int RegisterCount => count;
        public byte ReadRegister(int offset) { Cycles.Add($"r{offset}"); return (byte)(0x10 + offset); }
        public void WriteRegister(int offset, byte value) => Cycles.Add($"w{offset}={value:x2}");
    }

    [Fact]
    public void Wide_read_is_byte_cycles_in_ascending_order_lowest_port_in_the_lowest_byte()
    {
        var regs = new RecordingRegisters(8);
        Assert.Equal(0x15141312UL, IsaByteCycles.Read(regs, 2, 4));
        Assert.Equal(["r2", "r3", "r4", "r5"], regs.Cycles);
    }

    [Fact]
    public void Wide_write_is_byte_cycles_in_ascending_order()
    {
        var regs = new RecordingRegisters(8);
        IsaByteCycles.Write(regs, 1, 2, 0xBEEF);
        Assert.Equal(["w1=ef", "w2=be"], regs.Cycles);
    }

    [Fact]
    public void Bytes_past_the_registers_float_high_and_writes_there_are_dropped()
    {
        var regs = new RecordingRegisters(2);
        Assert.Equal(0xFFFF_FFFF_FFFF_1110UL, IsaByteCycles.Read(regs, 0, 8));
        Assert.Equal(0xFFFF_FF11UL, IsaByteCycles.Read(regs, 1, 4));
        Assert.Equal(0xFFFFUL, IsaByteCycles.Read(regs, 2, 2));
        regs.Cycles.Clear();
        IsaByteCycles.Write(regs, 1, 8, 0x0102_0304_0506_0708);
        IsaByteCycles.Write(regs, 5, 1, 0x55);
        Assert.Equal(["w1=08"], regs.Cycles);
    }

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(ulong.MaxValue - 3)]
    [InlineData(1UL << 32)]
    [InlineData((ulong)int.MaxValue + 1)]
    public void Offsets_near_the_top_never_wrap_onto_register_zero(ulong offset)
    {
        var regs = new RecordingRegisters(8);
        Assert.Equal(ulong.MaxValue, IsaByteCycles.Read(regs, offset, 8));
        IsaByteCycles.Write(regs, offset, 8, 0);
        Assert.Empty(regs.Cycles);
    }

    [Fact]
    public void Sizes_outside_one_to_eight_are_cut_to_what_an_access_can_carry()
    {
        var regs = new RecordingRegisters(16);
        IsaByteCycles.Read(regs, 0, 16);
        Assert.Equal(8, regs.Cycles.Count);
        regs.Cycles.Clear();
        Assert.Equal(0UL, IsaByteCycles.Read(regs, 0, 0));
        IsaByteCycles.Write(regs, 0, -1, 0xFF);
        Assert.Empty(regs.Cycles);
    }

    // ---- every byte-register device follows the rule: wide access ≡ its byte cycles ----

    private sealed class Rig(IBusDevice[] ports, int span, Func<string> observe)
    {
        public IBusDevice[] Ports { get; } = ports;
        public int Span { get; } = span;
        public Func<string> Observe { get; } = observe;
    }

    private static string Bytes<T>(T state) where T : unmanaged
        => Convert.ToHexString(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(ref state)));

    private static Rig Uart(ManualClock clock)
    {
        var irq = new NullIrqLine();
        var sent = new List<byte>();
        var backend = new ListBackend(sent);
        var uart = new Uart16550(irq, backend, clock);
        return new Rig([uart], 10, () => $"{Bytes(uart.State)} irq={irq.Level}/{irq.RisingEdges} tx={Convert.ToHexString(sent.ToArray())}");
    }

    private sealed class ListBackend(List<byte> sent) : ISerialBackend
    {
        public void Write(byte value) => sent.Add(value);
    }

    private static Rig Pic(ManualClock clock)
    {
        var pic = new Pic8259();
        var intr = new NullIrqLine();
        pic.IntrOutput = intr;
        pic.SetIrq(3, true); // something in IRR so IRR/ISR/poll reads carry information
        return new Rig([pic.Master, pic.Slave, pic.Elcr], 4, () =>
        {
            var s = pic.GetState();
            return $"{Bytes(s)} intr={intr.Level}/{intr.RisingEdges}";
        });
    }

    private static Rig Pit(ManualClock clock)
    {
        var irq = new NullIrqLine();
        var pit = new Pit8254(clock, irq);
        return new Rig([pit, pit.SpeakerPort], 6, () => $"{Bytes(pit.State)} irq={irq.Level}/{irq.RisingEdges}");
    }

    private static Rig Rtc(ManualClock clock)
    {
        var irq = new NullIrqLine();
        var rtc = new Rtc146818(clock, irq);
        return new Rig([rtc], 4, () =>
        {
            var cmos = new byte[Rtc146818.NvramSize];
            for (int i = 0; i < cmos.Length; i++) cmos[i] = rtc.GetNvram(i);
            return $"{Convert.ToHexString(cmos)} nmi={rtc.NmiMasked} irq={irq.Level}/{irq.RisingEdges}";
        });
    }

    private static Rig Kbc(ManualClock clock)
    {
        var irq1 = new NullIrqLine();
        var irq12 = new NullIrqLine();
        int resets = 0;
        var a20 = new List<bool>();
        var kbc = new I8042(irq1, () => resets++, a20.Add, irq12);
        return new Rig([kbc], 8, () =>
            $"st={kbc.Read(I8042.StatusCommandOffset, 1):x2} cb={kbc.CommandByte:x2} leds={kbc.Leds} set={kbc.ScancodeSet} " +
            $"a20={kbc.A20}/{a20.Count} resets={resets} irq1={irq1.Level}/{irq1.RisingEdges} irq12={irq12.Level}/{irq12.RisingEdges}");
    }

    private static Rig SmallPorts(ManualClock clock)
    {
        var codes = new List<byte>();
        var post = new PostCodePort(codes.Add);
        var console = new List<byte>();
        var debugcon = new DebugConsole(console.Add);
        return new Rig([post, debugcon], 3, () =>
            $"post={post.LastCode:x2}/{post.WriteCount}/{Convert.ToHexString(codes.ToArray())} con={Convert.ToHexString(console.ToArray())}");
    }

    private static Rig Pm(ManualClock clock)
    {
        var sci = new NullIrqLine();
        int offs = 0;
        var pm = new AcpiPm(clock, sci, () => offs++, 5);
        return new Rig([pm.EventBlock, pm.ControlBlock, pm.Timer], 6, () =>
            $"sts={pm.Pm1Status:x4} en={pm.Pm1Enable:x4} cnt={pm.Pm1Control:x4} sci={sci.Level}/{sci.RisingEdges} off={offs}");
    }

    public static TheoryData<string> Devices() => ["uart", "pic", "pit", "rtc", "i8042", "post+debugcon", "acpi-pm"];

    private static Func<ManualClock, Rig> Factory(string name) => name switch
    {
        "uart" => Uart,
        "pic" => Pic,
        "pit" => Pit,
        "rtc" => Rtc,
        "i8042" => Kbc,
        "post+debugcon" => SmallPorts,
        _ => Pm,
    };

    private static readonly int[] Sizes = [1, 2, 4, 8];

    /// <summary>
    /// Two identical devices on one clock: one gets random wide accesses, the other the byte cycles
    /// an ISA bus would make of them. Every read must return the same value and the devices must
    /// end up in the same state after every access.
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices))]
    public void Wide_accesses_behave_exactly_as_their_byte_cycles(string device)
    {
        var clock = new ManualClock();
        var make = Factory(device);
        Rig wide = make(clock), split = make(clock);
        var rng = new Random(device.Length * 7919);
        int multiByte = 0;
        for (int i = 0; i < 4000; i++)
        {
            int p = rng.Next(wide.Ports.Length);
            ulong offset = (ulong)rng.Next(wide.Span);
            int size = Sizes[rng.Next(Sizes.Length)];
            if (size > 1) multiByte++;
            if (rng.Next(2) == 0)
            {
                ulong w = wide.Ports[p].Read(offset, size);
                ulong s = 0;
                for (int j = 0; j < size; j++) s |= split.Ports[p].Read(offset + (ulong)j, 1) << (8 * j);
                Assert.True(s == w, $"{device} port {p}: read of {size} at {offset}: {w:x} wide, {s:x} as byte cycles (step {i})");
            }
            else
            {
                // Mostly small values so command and data bytes are ones the devices act on.
                ulong value = BusValue.Mask(rng.Next(3) == 0 ? (ulong)rng.NextInt64() : (ulong)rng.Next(0x10000) * 0x0001_0001_0001_0001UL, size);
                wide.Ports[p].Write(offset, size, value);
                for (int j = 0; j < size; j++) split.Ports[p].Write(offset + (ulong)j, 1, (value >> (8 * j)) & 0xFF);
            }
            if (rng.Next(8) == 0) clock.Advance(rng.Next(1, 5_000_000));
            Assert.Equal(split.Observe(), wide.Observe());
        }
        Assert.True(multiByte > 2000);
    }

    [Fact]
    public void Word_write_to_the_rtc_index_port_selects_and_writes_a_cmos_byte()
    {
        // outw(0x70, 0x5A34): index 0x34, then 0x5A to the data port, as two ISA byte cycles.
        var rtc = new Rtc146818(new ManualClock(), new NullIrqLine());
        rtc.Write(0, 2, 0x5A34);
        Assert.Equal(0x5A, rtc.GetNvram(0x34));
        Assert.Equal(0x5AFFUL, rtc.Read(0, 2)); // the index port floats, the data port reads the byte
    }

    [Fact]
    public void Word_read_of_the_kbc_data_port_pops_one_byte_and_floats_the_next_port()
    {
        var kbc = new I8042(new NullIrqLine(), () => { }, _ => { });
        kbc.Write(I8042.StatusCommandOffset, 1, 0xAA); // self test → 0x55
        Assert.Equal(0xFF55UL, kbc.Read(I8042.DataOffset, 2));
        Assert.Equal(0UL, kbc.Read(I8042.StatusCommandOffset, 1) & I8042.StatusObf);
        // A dword read at the status port sees status, then three undecoded bytes.
        Assert.Equal(0xFFFF_FF00UL, kbc.Read(I8042.StatusCommandOffset, 4) & 0xFFFF_FF01);
    }

    [Fact]
    public void Word_write_to_the_pic_programs_both_ports_in_order()
    {
        // A word OUT of 0x2011 to port 0x20: ICW1 (0x11) to port 0, then 0x20 to port 1 as ICW2.
        var pic = new Pic8259();
        pic.Master.Write(0, 2, 0x2011);
        pic.Master.Write(1, 1, 0x04); // ICW3
        pic.Master.Write(1, 1, 0x01); // ICW4
        pic.Master.Write(1, 1, 0x00); // OCW1: all unmasked
        pic.SetIrq(1, true);
        Assert.Equal(0x21, pic.Acknowledge()); // vector base 0x20 came from the word's high byte
    }

    [Fact]
    public void Pm_timer_reads_of_any_width_see_the_bytes_they_cover()
    {
        var clock = new ManualClock { NowNs = 1_000_000_000 };
        var pm = new AcpiPm(clock, new NullIrqLine(), () => { }, 5);
        Assert.Equal(3_579_545UL, pm.Timer.Read(0, 4));
        Assert.Equal(3_579_545UL >> 8, pm.Timer.Read(1, 2));
        Assert.Equal(0xFFFF_FF00UL | (3_579_545UL >> 24), pm.Timer.Read(3, 4)); // bits 24–31 are 0, past the block floats
    }

    [Fact]
    public void A_sleep_request_in_a_byte_write_to_pm1_cnt_high_powers_off()
    {
        int offs = 0;
        var pm = new AcpiPm(new ManualClock(), new NullIrqLine(), () => offs++, 5);
        pm.ControlBlock.Write(1, 1, (5 << 2) | 0x20); // SLP_TYP = 5, SLP_EN, in bits 10–13
        Assert.Equal(1, offs);
        // SCI_EN kept from reset, SLP_TYP stored, SLP_EN reads 0; the two bytes past the block float.
        Assert.Equal(0xFFFF_0000UL | (5 << 10) | AcpiPm.SciEn, pm.ControlBlock.Read(0, 4));
    }
}
