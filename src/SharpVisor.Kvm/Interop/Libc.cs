// The libc calls the hardware engine needs (open/close/ioctl/mmap/munmap/mprotect and the
// signal calls used by KvmVcpu.Kick). Declarations follow glibc on x86-64 Linux.
using System.Runtime.InteropServices;

namespace SharpVisor.Kvm.Interop;

internal static unsafe partial class Libc
{
    public const int O_RDWR = 0x2, O_CLOEXEC = 0x80000;
    public const int PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    public const int MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20;
    public const int SA_RESTART = 0x1000_0000;
    public static readonly void* MAP_FAILED = (void*)-1;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    // ioctl is variadic in C; on x86-64 SysV a single integer/pointer argument is passed exactly
    // as for a fixed-argument function, so these two fixed signatures are ABI-compatible.
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, nint arg);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, void* arg);

    [LibraryImport("libc", SetLastError = true)]
    public static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int munmap(void* addr, nuint length);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int mprotect(void* addr, nuint length, int prot);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int sigaction(int signum, sigaction_t* act, sigaction_t* oldact);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int tgkill(int tgid, int tid, int sig);

    [LibraryImport("libc")]
    public static partial int gettid();

    [LibraryImport("libc")]
    public static partial int getpid();

    [LibraryImport("libc")]
    public static partial int __libc_current_sigrtmin();

    [LibraryImport("libc")]
    public static partial int __libc_current_sigrtmax();

    /// <summary>glibc's <c>struct sigaction</c> on x86-64 (152 bytes); glibc adds SA_RESTORER itself.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct sigaction_t
    {
        public nint sa_handler;
        public fixed ulong sa_mask[16];
        public int sa_flags;
        public nint sa_restorer;
    }

    public static string ErrnoName(int errno) => errno switch
    {
        1 => "EPERM", 2 => "ENOENT", 3 => "ESRCH", 4 => "EINTR", 5 => "EIO", 6 => "ENXIO", 7 => "E2BIG",
        9 => "EBADF", 11 => "EAGAIN", 12 => "ENOMEM", 13 => "EACCES", 14 => "EFAULT", 16 => "EBUSY",
        17 => "EEXIST", 19 => "ENODEV", 22 => "EINVAL", 23 => "ENFILE", 24 => "EMFILE", 25 => "ENOTTY",
        28 => "ENOSPC", 34 => "ERANGE", 38 => "ENOSYS", 95 => "EOPNOTSUPP",
        _ => "errno",
    };
}
