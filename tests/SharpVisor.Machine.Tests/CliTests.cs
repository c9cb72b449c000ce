using System.Diagnostics;
using Xunit;

namespace SharpVisor.Machine.Tests;

/// <summary>The command line as a user meets it: the built binary, its exit code and what it prints.</summary>
public class CliTests
{
    internal static (int Code, string Stdout, string Stderr) Cli(params string[] args)
    {
        // The CLI assembly is referenced by this project, so it sits beside the tests.
        string dll = Path.Combine(AppContext.BaseDirectory, "sharpvisor.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(); throw new TimeoutException("sharpvisor did not finish"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Theory]
    [InlineData("kernel file not found: /nonexistent", "run", "--kernel", "/nonexistent")]
    [InlineData("memory size 1 KiB is too small", "run", "--kernel", "/nonexistent", "-m", "1K")]
    [InlineData("--cpus 0: must be between 1 and 64", "run", "--kernel", "/nonexistent", "--cpus", "0")]
    [InlineData("unsupported -device 'e1000'", "run", "--kernel", "/nonexistent", "-device", "e1000")]
    [InlineData("unknown engine 'vmware'", "run", "--kernel", "/nonexistent", "--engine", "vmware")]
    [InlineData("bad memory size 'lots'", "run", "--kernel", "/nonexistent", "-m", "lots")]
    [InlineData("Unrecognized command or argument '--bogus'", "run", "--bogus")]
    [InlineData("no command given", new string[0])]
    [InlineData("kernel file name is empty", "run", "--kernel", "")]
    [InlineData("kernel /tmp is a directory, not a file", "run", "--kernel", "/tmp")]
    [InlineData("memory size 9000 GiB is too large (the maximum is 1024 GiB)", "run", "--kernel", "/nonexistent", "-m", "9000G")]
    public void BadInputIsOneLineAndExitCode2(string expected, params string[] args)
    {
        var (code, _, err) = Cli(args);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.DoesNotContain("   at ", err);
    }

    /// <summary>A bad initrd or module name is reported as such (after the kernel was found), never as an internal error.</summary>
    [Theory]
    [InlineData("--module", "", "module file name is empty")]
    [InlineData("--module", "/tmp args", "module /tmp is a directory, not a file")]
    [InlineData("--module", "/nonexistent/mod args", "module file not found: /nonexistent/mod")]
    [InlineData("--initrd", "", "initrd file name is empty")]
    [InlineData("--initrd", "/tmp", "initrd /tmp is a directory, not a file")]
    public void BadImageNameIsOneLineAndExitCode2(string option, string value, string expected)
    {
        var (code, _, err) = Cli("run", "--kernel", GuestTests.RepoFile("guests/test/modes.bin"), "-m", "64", option, value);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.DoesNotContain("internal error", err);
    }

    [Fact]
    public void CorruptKernelIsOneLine()
    {
        string path = Path.GetTempFileName();
        File.WriteAllBytes(path, new byte[8192]);
        try
        {
            var (code, _, err) = Cli("run", "--kernel", path);
            Assert.Equal(2, code);
            Assert.Single(err.TrimEnd('\n').Split('\n'));
            Assert.Contains(path, err);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void DemoRunsAndExitsZero()
    {
        var (code, stdout, err) = Cli("demo");
        Assert.True(code == 0, err);
        Assert.Contains("PASS demo", stdout);
        Assert.Contains("exits by reason:", err); // the telemetry table follows the run
    }

    [Fact]
    public void QemuSpellingsBootAMultibootGuest()
    {
        var (code, stdout, _) = Cli("-kernel", GuestTests.RepoFile("guests/test/modes.bin"), "-m", "64", "-nographic",
            "-no-reboot", "-accel", "tcg", "-device", "isa-debug-exit,iobase=0xf4,iosize=4");
        Assert.Equal(33, code);
        Assert.Contains("PASS modes", stdout);
    }
}
