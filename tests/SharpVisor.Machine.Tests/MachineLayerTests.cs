using System.Buffers.Binary;
using System.Diagnostics;
using SharpVisor.Devices.Serial;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>
/// The machine layer around the guest: console output that never blocks the vCPUs, bounded
/// terminal input, the fw_cfg register block, resets that reload the image without the files,
/// and a clean shutdown while the input thread is still reading.
/// </summary>
public class MachineLayerTests
{
    /// <summary>
    /// A Multiboot a.out-kludge kernel (Multiboot 0.6.96 §3.1.3) loaded at 1 MiB whose code is
    /// <c>jmp $</c> (EB FE): it runs until stopped and never reads COM1.
    /// </summary>
    internal static byte[] SpinKernel()
    {
        const uint magic = 0x1BADB002, flags = 0x0001_0000, load = 0x100000;
        var image = new byte[64];
        uint[] header = [magic, flags, unchecked(0u - magic - flags), load, load, 0, 0, load + 32];
        for (int i = 0; i < header.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(4 * i), header[i]);
        image[32] = 0xEB;
        image[33] = 0xFE;
        return image;
    }

    private static MachineConfig SpinConfig() => new()
    {
        MemoryBytes = 16UL << 20, KernelImage = SpinKernel(), KernelName = "spin", Com1Output = new NullSerialBackend(),
    };

    /// <summary>An endless input stream ("yes | sharpvisor …") that counts what was taken from it.</summary>
    private sealed class EndlessInput : InputStream
    {
        private long _read;
        public long BytesRead => Interlocked.Read(ref _read);
        public override int Read(byte[] buffer, int offset, int count)
        {
            buffer.AsSpan(offset, count).Fill((byte)'y');
            Interlocked.Add(ref _read, count);
            return count;
        }
    }

    [Fact]
    public void EndlessTerminalInputIsHeldBackWhenTheGuestDoesNotRead()
    {
        var input = new EndlessInput();
        var config = SpinConfig();
        config.Com1Input = input;
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource();
        MachineResult? result = null;
        var run = new Thread(() => result = m.Run(cts.Token));
        run.Start();
        // Until the queue is full (the deadline only guards against a hang), then long enough for
        // an unbounded queue to swallow megabytes of 'y'.
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (input.BytesRead < Machine.InputQueueCapacity && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Thread.Sleep(500);
        long read = input.BytesRead;
        cts.Cancel();
        Assert.True(run.Join(TimeSpan.FromSeconds(10)), "the machine did not stop");
        Assert.Equal("stopped by the user", result?.Reason);
        // The queue, the 16-byte receive FIFO and the input thread's 64-byte read buffer: nothing more.
        Assert.InRange(read, Machine.InputQueueCapacity, Machine.InputQueueCapacity + 16 + 2 * 64);
    }

    /// <summary>A terminal pasting far more than the guest reads, then Ctrl-A X.</summary>
    private sealed class PasteThenQuit(int pasted) : InputStream
    {
        private int _left = pasted;
        private bool _quitSent;
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_left > 0)
            {
                int n = Math.Min(count, _left);
                buffer.AsSpan(offset, n).Fill((byte)'y');
                _left -= n;
                return n;
            }
            if (_quitSent) { Thread.Sleep(Timeout.Infinite); return 0; }
            _quitSent = true;
            buffer[offset] = 1;       // Ctrl-A
            buffer[offset + 1] = (byte)'x';
            return 2;
        }
    }

    /// <summary>
    /// At a terminal (raw mode: Ctrl-C is a plain byte) Ctrl-A X must work even after the user
    /// pasted more than the input queue holds into a guest that does not read: the overflow is
    /// dropped and counted, and the input thread goes on reading.
    /// </summary>
    [Fact]
    public void TerminalOverflowIsDroppedAndCtrlAXStillQuits()
    {
        const int pasted = 64 << 10;
        var config = SpinConfig();
        config.Com1Input = new PasteThenQuit(pasted);
        config.Com1InputIsTerminal = true;
        using var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var r = m.Run(cts.Token);
        Assert.Equal("terminated by Ctrl-A X", r.Reason);
        Assert.Equal(0, r.ExitCode);
        // The queue and the UART's 16-byte FIFO hold what was kept; everything else was counted.
        Assert.InRange(m.InputDropped, pasted - Machine.InputQueueCapacity - 16, pasted - Machine.InputQueueCapacity);
        Assert.Contains($"COM1 input dropped (guest not reading): {m.InputDropped} bytes", m.StatisticsTable());
    }

    /// <summary>A stream whose Read blocks until released, as a terminal with nobody typing.</summary>
    private sealed class HeldInput : InputStream
    {
        public readonly ManualResetEventSlim Release = new(false);
        public override int Read(byte[] buffer, int offset, int count)
        {
            Release.Wait();
            buffer[offset] = (byte)'a';
            return 1;
        }
    }

    /// <summary>
    /// The input thread outlives Run (it sits in a terminal read); a key typed after the machine
    /// was disposed must not reach the disposed vCPUs and events (an ObjectDisposedException on
    /// that background thread would take the whole process down, terminal left raw).
    /// </summary>
    [Fact]
    public void InputArrivingAfterDisposeIsIgnored()
    {
        var input = new HeldInput();
        var config = SpinConfig();
        config.Com1Input = input;
        var m = new Machine(config);
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        Assert.Equal("stopped by the user", m.Run(cts.Token).Reason);
        m.Dispose();
        input.Release.Set();
        Thread.Sleep(300); // the input thread wakes, sees the stop and ends
        m.Dispose();       // and a second Dispose is harmless
    }

    [Fact]
    public void FwCfgDmaRegistersAreMapped()
    {
        using var m = new Machine(SpinConfig());
        // The ID item advertises DMA, so the DMA address register at 0x514 must answer: reads give "QEMU CFG".
        Assert.Equal(0x554D4551UL, m.Io.Read(0x514, 4)); // "QEMU" in port order
        Assert.Equal(0x47464320UL, m.Io.Read(0x518, 4)); // " CFG"
    }

    /// <summary>
    /// A DMA transfer started through the machine's port bus, as SeaBIOS does (QEMU
    /// docs/specs/fw_cfg.rst): the ID item lands in RAM, the control word comes back 0, and both
    /// writes are reported through GuestMemory.Written for engines that cache decoded code.
    /// </summary>
    [Fact]
    public void FwCfgDmaThroughThePortBusWritesRamAndNotifies()
    {
        using var m = new Machine(SpinConfig());
        var access = new byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(access, 0x0001_0000u | 0x08 | 0x02); // select ID, read
        BinaryPrimitives.WriteUInt32BigEndian(access.AsSpan(4), 4);
        BinaryPrimitives.WriteUInt64BigEndian(access.AsSpan(8), 0x3000);
        m.Memory.Write(0x2000, access);
        var written = new List<(ulong, ulong)>();
        m.Memory.Written += (gpa, len) => written.Add((gpa, len));
        m.Io.Write(0x514, 4, 0);
        m.Io.Write(0x518, 4, BinaryPrimitives.ReverseEndianness(0x2000u));
        var id = new byte[4];
        m.Memory.Read(0x3000, id);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(id)); // traditional interface and DMA
        var control = new byte[4];
        m.Memory.Read(0x2000, control);
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(control));
        Assert.Contains((0x3000UL, 4UL), written);
        Assert.Contains((0x2000UL, 4UL), written);
    }

    [Fact]
    public void CmosHoldsTheCpuCountAndMemorySize()
    {
        var config = SpinConfig();
        config.Cpus = 3;
        config.MemoryBytes = 64UL << 20;
        using var m = new Machine(config);
        byte Cmos(byte index) { m.Io.Write(0x70, 1, index); return (byte)m.Io.Read(0x71, 1); }
        Assert.Equal(2, Cmos(0x5F));                               // CPUs minus one (SeaBIOS)
        Assert.Equal(0x280, Cmos(0x15) | Cmos(0x16) << 8);         // 640 KiB base memory
        Assert.Equal((64 - 16) << 4, Cmos(0x34) | Cmos(0x35) << 8); // above 16 MiB in 64 KiB units
    }

    [Fact]
    public void MemoryAboveTheMaximumIsOneClearError()
    {
        var config = SpinConfig();
        config.MemoryBytes = Machine.MaxMemoryBytes + (1UL << 30);
        var e = Assert.Throws<Core.ConfigurationException>(() => new Machine(config));
        Assert.Equal("memory size 1025 GiB is too large (the maximum is 1024 GiB)", e.Message);
    }

    /// <summary>
    /// A reset reloads the image from what the first boot placed, not from the file: the reset
    /// guest reboots three times and passes although its file is gone after the first boot.
    /// </summary>
    [Fact]
    public void ResetsReloadTheImageWithoutTheFile()
    {
        string path = Path.GetTempFileName();
        File.Copy(GuestTests.RepoFile("guests/test/reset.bin"), path, overwrite: true);
        var console = new System.Text.StringBuilder();
        var config = new MachineConfig { MemoryBytes = 64UL << 20, KernelPath = path, Com1Output = new NullSerialBackend() };
        config.DebugConsoleOutput = b => { lock (console) console.Append((char)b); };
        using var m = new Machine(config);
        File.Delete(path);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var r = m.Run(cts.Token);
        Assert.True(r.ExitCode == 33, console + r.Reason);
        Assert.Equal(3, m.Resets);
        Assert.Contains("PASS reset", console.ToString());
    }
}

/// <summary>Guest console output through <see cref="BufferedSerialOutput"/>.</summary>
public class BufferedSerialOutputTests
{
    /// <summary>Records what reaches it; Write blocks while <see cref="Stall"/> is reset.</summary>
    private sealed class SlowStream : OutputStream
    {
        public readonly ManualResetEventSlim Stall = new(true);
        /// <summary>Set once a Write has started (and, while stalled, is waiting).</summary>
        public readonly ManualResetEventSlim Entered = new(false);
        private readonly MemoryStream _data = new();
        public byte[] Data { get { lock (_data) return _data.ToArray(); } }
        public override void Write(byte[] buffer, int offset, int count)
        {
            Entered.Set();
            Stall.Wait();
            lock (_data) _data.Write(buffer, offset, count);
        }
    }

    [Fact]
    public void AStalledStreamNeverBlocksTheWriterAndOverflowIsCounted()
    {
        var s = new SlowStream();
        s.Stall.Reset();
        var output = new BufferedSerialOutput(s, capacity: 1024);
        const int total = 100_000;
        // The stream is stalled until Stall.Set(): a writer that blocked on it would hang here.
        for (int i = 0; i < total; i++) output.Write((byte)('a' + i % 26));
        Assert.True(output.Dropped >= total - 2 * 1024, $"dropped {output.Dropped}");
        s.Stall.Set();
        output.Dispose();
        // Everything not dropped arrived after the stream came back. The first ring-full is the
        // start of the output, byte for byte; later bytes may follow a gap (the writer may have
        // taken one ring-full before it stalled, and the ring refilled after the drops began).
        var data = s.Data;
        Assert.Equal(total, data.Length + output.Dropped);
        Assert.True(data.Length is >= 1024 and <= 2 * 1024, $"{data.Length} bytes arrived");
        for (int i = 0; i < 1024; i++)
            Assert.Equal((byte)('a' + i % 26), data[i]);
    }

    [Fact]
    public void DisposeWritesOutEverything()
    {
        var s = new SlowStream();
        var output = new BufferedSerialOutput(s);
        var text = "boot messages without a final newline\nlogin: "u8.ToArray();
        foreach (var b in text) output.Write(b);
        output.Dispose();
        Assert.Equal(text, s.Data);
        Assert.Equal(0, output.Dropped);
    }

    /// <summary>A reader that never reads again must not keep the VMM from exiting: what is left counts as dropped.</summary>
    [Fact]
    public void DisposeGivesUpOnAStreamThatStaysStalled()
    {
        var s = new SlowStream();
        s.Stall.Reset();
        var output = new BufferedSerialOutput(s);
        output.Write((byte)'\n');                           // the writer takes it and blocks in the stream
        Assert.True(s.Entered.Wait(TimeSpan.FromMinutes(1), TestContext.Current.CancellationToken)); // a hang guard only
        for (int i = 0; i < 100; i++) output.Write((byte)'x');
        output.Dispose(TimeSpan.FromMilliseconds(100));      // returns although the stream never does
        Assert.Equal(100, output.Dropped);
        output.Write((byte)'y');                              // after Dispose: ignored
        Assert.Equal(100, output.Dropped);
        s.Stall.Set();
    }

    [Fact]
    public void APromptWithoutNewlineAppearsWithoutDispose()
    {
        var s = new SlowStream();
        using var output = new BufferedSerialOutput(s);
        foreach (var b in "login: "u8) output.Write(b);
        var sw = Stopwatch.StartNew();
        while (s.Data.Length < 7 && sw.Elapsed < TimeSpan.FromMinutes(1)) Thread.Sleep(1); // a hang guard, not a timing
        Assert.Equal("login: "u8.ToArray(), s.Data);
    }
}

/// <summary>The CLI's guard around every command: which failures are the user's (exit 2) and which are not (6).</summary>
public class GuardedExitCodeTests
{
    [Theory]
    [InlineData("config", 2, "sharpvisor: bad option\n")]
    [InlineData("image", 2, "sharpvisor: bad option\n")]
    [InlineData("vmm", 6, "sharpvisor: bad option\n")]
    [InlineData("other", 6, "sharpvisor: internal error: InvalidOperationException: bad option\n")]
    public void OnlyBadInputIsExitCode2(string kind, int code, string line)
    {
        var err = new StringWriter { NewLine = "\n" };
        int result = Cli.Program.Guarded(() => throw (kind switch
        {
            "config" => new Core.ConfigurationException("bad option"),
            "image" => new Core.ImageFormatException("bad option"),
            "vmm" => new Core.VmmException("bad option"),
            _ => (Exception)new InvalidOperationException("bad option"),
        }), err);
        Assert.Equal(code, result);
        Assert.Equal(line, err.ToString());
    }
}

/// <summary>A read-only, unseekable stream: the host side of the terminal as the machine sees it.</summary>
internal abstract class InputStream : Stream
{
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>A write-only, unseekable stream: stdout as the console writer sees it.</summary>
internal abstract class OutputStream : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
