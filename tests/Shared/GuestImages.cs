// Where the tests find the real guest images that guests/fetch downloads (Debian's kernels and the
// generated initramfs, kept outside git): $SHARPVISOR_GUESTS when set and not empty, else
// ~/.cache/sharpvisor/guests — the same rule as guests/fetch itself — with one folder per
// architecture (amd64, i386). A missing image skips the test with the reason, except under CI
// (CI=true), where run-tests has just run guests/fetch and a missing image is a failure, so that a
// broken fetch cannot turn the Linux tests into silent skips. Linked into every test project that
// boots or parses these images.
using Xunit;

namespace SharpVisor.Tests.Shared;

internal static class GuestImages
{
    /// <summary>The guest cache folder (it may not exist).</summary>
    public static string CacheDirectory { get; } =
        Environment.GetEnvironmentVariable("SHARPVISOR_GUESTS") is { Length: > 0 } dir
            ? dir
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "sharpvisor", "guests");

    /// <summary>True when tests run in CI, where missing images are a failure rather than a skip.</summary>
    public static bool InCi => Environment.GetEnvironmentVariable("CI") == "true";

    /// <summary>The path of <paramref name="file"/> for <paramref name="arch"/>, whether or not it exists.</summary>
    public static string PathOf(string arch, string file) => Path.Combine(CacheDirectory, arch, file);

    /// <summary>The paths of <paramref name="files"/> for <paramref name="arch"/>; skips (fails in CI) if any is missing.</summary>
    public static string[] Require(string arch, params string[] files)
    {
        var paths = files.Select(f => PathOf(arch, f)).ToArray();
        var missing = paths.Where(p => !File.Exists(p)).ToArray();
        if (missing.Length > 0)
            Missing($"guest image{(missing.Length > 1 ? "s" : "")} missing: {string.Join(", ", missing)} (run guests/fetch, or set SHARPVISOR_GUESTS)");
        return paths;
    }

    /// <summary>The kernel (vmlinuz) of <paramref name="arch"/>; skips (fails in CI) if it is missing.</summary>
    public static string Kernel(string arch) => Require(arch, "vmlinuz")[0];

    /// <summary>The kernel and initramfs of <paramref name="arch"/>; skips (fails in CI) if either is missing.</summary>
    public static (string Kernel, string Initrd) KernelAndInitrd(string arch)
    {
        var p = Require(arch, "vmlinuz", "initrd.cpio.gz");
        return (p[0], p[1]);
    }

    /// <summary>Ends the test for a missing image: a skip with <paramref name="why"/>, or a failure under CI.</summary>
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public static void Missing(string why)
    {
        if (InCi) Assert.Fail(why + " [CI=true: a missing guest image is a failure]");
        Assert.Skip(why);
    }
}
