using SharpVisor.Devices.Serial;

namespace SharpVisor.Machine;

/// <summary>
/// Guest console output (COM1, the debug console) to a host stream without ever blocking the
/// caller: devices write under the machine lock, and a terminal or pipe that stalls must not
/// stop every vCPU (and Ctrl-C) with it. Bytes go into a bounded ring; a writer thread drains it,
/// at once after a newline and otherwise within <see cref="FlushInterval"/>, so an interactive
/// prompt appears promptly whatever it ends with. When the ring is full the byte is dropped and
/// counted (<see cref="Dropped"/>), as a real UART overruns a receiver that does not keep up.
/// <see cref="Dispose"/> writes out everything still buffered and flushes the stream, unless the
/// stream stays stalled past <see cref="CloseTimeout"/>.
/// </summary>
public sealed class BufferedSerialOutput : ISerialBackend, IDisposable
{
    public const int DefaultCapacity = 64 << 10;
    public static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(10);

    private readonly Stream _stream;
    private readonly object _gate = new();
    private readonly byte[] _ring;
    private int _head, _count;
    private bool _newline, _closing, _broken;
    private long _dropped;
    private readonly Thread _writer;

    public BufferedSerialOutput(Stream stream, int capacity = DefaultCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _stream = stream;
        _ring = new byte[capacity];
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "console-output" };
        _writer.Start();
    }

    /// <summary>Bytes thrown away because the ring was full (the host did not read fast enough).</summary>
    public long Dropped
    {
        get { lock (_gate) return _dropped; }
    }

    /// <summary>Queues one byte; never blocks on the stream.</summary>
    public void Write(byte value)
    {
        lock (_gate)
        {
            if (_broken || _closing) return; // the reader has gone away (closed pipe), or shutting down
            if (_count == _ring.Length) { _dropped++; return; }
            _ring[(_head + _count) % _ring.Length] = value;
            _count++;
            // Wake the writer when output starts (it sleeps while idle) and at each line end.
            if (value == (byte)'\n') _newline = true;
            if (_count == 1 || value == (byte)'\n') Monitor.Pulse(_gate);
        }
    }

    private void WriterLoop()
    {
        var chunk = new byte[_ring.Length];
        int intervalMs = (int)FlushInterval.TotalMilliseconds;
        while (true)
        {
            int n;
            bool closing;
            lock (_gate)
            {
                while (_count == 0 && !_closing) Monitor.Wait(_gate);
                // Gather a little unless a line is complete: one write per line or per 10 ms.
                if (!_newline && !_closing) Monitor.Wait(_gate, intervalMs);
                _newline = false;
                n = _count;
                int first = Math.Min(n, _ring.Length - _head);
                Array.Copy(_ring, _head, chunk, 0, first);
                Array.Copy(_ring, 0, chunk, first, n - first);
                _head = (_head + n) % _ring.Length;
                _count = 0;
                closing = _closing;
            }
            if (n > 0)
            {
                try
                {
                    _stream.Write(chunk, 0, n);
                    _stream.Flush();
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
                {
                    // stdout closed (e.g. piped into head): nobody reads any more, stop writing.
                    lock (_gate) _broken = true;
                    return;
                }
            }
            else if (closing)
            {
                return;
            }
        }
    }

    /// <summary>How long <see cref="Dispose"/> waits for a stream that stopped taking output.</summary>
    public static readonly TimeSpan CloseTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Writes out what is still buffered, flushes, and stops the writer thread, waiting at most
    /// <see cref="CloseTimeout"/>: a stream whose reader stopped reading (a stalled pipe) must not
    /// keep the VMM from exiting. What it did not take by then counts as dropped.
    /// </summary>
    public void Dispose() => Dispose(CloseTimeout);

    internal void Dispose(TimeSpan wait)
    {
        lock (_gate)
        {
            if (_closing) return;
            _closing = true;
            Monitor.PulseAll(_gate);
        }
        if (_writer.Join(wait)) return;
        lock (_gate)
        {
            _dropped += _count;
            _count = 0;
            _broken = true;
        }
    }
}
