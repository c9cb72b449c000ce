using System.Runtime.InteropServices;
using SharpVisor.Core;
using SharpVisor.Kvm.Interop;

namespace SharpVisor.Kvm;

/// <summary>
/// A KVM system call failed. The message names the call and the errno, for example
/// "KVM_CREATE_VM failed: EACCES (13)".
/// </summary>
public sealed class KvmException : VmmException
{
    /// <summary>The ioctl or system call that failed (KVM_CREATE_VM, open /dev/kvm, mmap kvm_run …).</summary>
    public string Operation { get; }
    /// <summary>The Linux errno, or 0 when the failure was not a system call error.</summary>
    public int Errno { get; }

    public KvmException(string operation, int errno)
        : base($"{operation} failed: {Libc.ErrnoName(errno)} ({errno})")
    {
        Operation = operation;
        Errno = errno;
    }

    public KvmException(string operation, string detail) : base($"{operation} failed: {detail}")
    {
        Operation = operation;
    }

    /// <summary>Throws for a negative system call result, reading errno of the last P/Invoke.</summary>
    internal static int Check(int result, string operation)
    {
        if (result < 0) throw new KvmException(operation, Marshal.GetLastPInvokeError());
        return result;
    }
}
