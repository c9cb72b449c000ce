// How KvmVcpu.Kick makes a KVM_RUN in progress on another thread return.
//
// KVM_RUN returns -EINTR (exit_reason KVM_EXIT_INTR) as soon as a signal is pending for the
// vCPU thread, and it does not restart the call whatever SA_RESTART says. So Kick sets
// kvm_run.immediate_exit = 1 (covers a kick that lands just before KVM_RUN is entered: KVM polls
// the flag once on entry and returns -EINTR at once) and then sends a real-time signal to the
// vCPU thread with tgkill (covers a kick while the guest is running).
//
// The signal needs a handler (the default action of a real-time signal kills the process) and
// that handler must do nothing and must not run managed code: the signal may arrive while the
// thread is in managed code or inside the runtime holding a lock, and an
// [UnmanagedCallersOnly] callback would enter the runtime from signal context (a reverse
// P/Invoke is not async-signal-safe). PosixSignalRegistration would route every kick through the
// runtime's signal pipe and a dispatcher thread. Instead the handler is one `ret` instruction on
// a private executable page, installed with glibc's sigaction (which supplies the sa_restorer
// that returns from the handler). SA_RESTART keeps other system calls of the thread from seeing
// EINTR.
//
// Signal dispositions are per process, so this is installed once per process: the first free
// real-time signal counted down from SIGRTMAX (the .NET runtime uses SIGRTMIN for its own thread
// activation; a disposition already set by someone else is never taken over).
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm;

internal static unsafe class KickSignal
{
    // Process-wide and written once: signal dispositions cannot be anything but process state.
    private static readonly Lazy<int> s_signal = new(Install, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The real-time signal number whose handler does nothing; installed on first use.</summary>
    public static int Number => s_signal.Value;

    private const nint SIG_DFL = 0;

    private static int Install()
    {
        byte* stub = (byte*)Libc.mmap(null, 4096, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        if (stub == Libc.MAP_FAILED) KvmException.Check(-1, "mmap of the kick signal handler");
        stub[0] = 0xC3; // ret
        KvmException.Check(Libc.mprotect(stub, 4096, Libc.PROT_READ | Libc.PROT_EXEC), "mprotect of the kick signal handler");

        int min = Libc.__libc_current_sigrtmin(), max = Libc.__libc_current_sigrtmax();
        for (int sig = max; sig > min; sig--)
        {
            Libc.sigaction_t old;
            if (Libc.sigaction(sig, null, &old) != 0 || old.sa_handler != SIG_DFL) continue;
            var act = new Libc.sigaction_t { sa_handler = (nint)stub, sa_flags = Libc.SA_RESTART };
            KvmException.Check(Libc.sigaction(sig, &act, null), $"sigaction({sig})");
            return sig;
        }
        // The page stays mapped: harmless, and only reached when every RT signal is taken.
        throw new KvmException("installing the vCPU kick signal", "no free real-time signal");
    }
}
