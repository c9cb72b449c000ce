// Compares an engine's result with the host CPU's for the same case, masking what the SDM leaves
// undefined (UndefinedFlags) and what the harness cannot set (RFLAGS bits other than the status
// flags and DF; the x87 instruction/data pointers, which hold host addresses).
using System.Text;

namespace SharpVisor.HostCpu;

[Flags]
public enum CompareParts
{
    Gprs = 1,
    Flags = 2,
    Memory = 4,
    /// <summary>XMM0–XMM15 and MXCSR.</summary>
    Sse = 8,
    /// <summary>FCW, FSW, abridged FTW and ST0–ST7 (not FOP/FIP/FDP).</summary>
    X87 = 16,
    Integer = Gprs | Flags | Memory,
    All = Gprs | Flags | Memory | Sse | X87,
}

public static class NativeComparer
{
    private static readonly string[] GprNames =
        ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

    /// <summary>
    /// Differences between the native result <paramref name="expected"/> and an engine's outcome;
    /// empty when they agree. <paramref name="actual"/> and <paramref name="actualWindow"/> must be
    /// window-relative like the case (subtract the engine's window base from the relocated registers).
    /// For an expected fault the engine must report the same <paramref name="actualException"/>;
    /// its state is then not compared. A refused case cannot be compared (ArgumentException).
    /// </summary>
    public static List<string> Compare(NativeCase c, NativeResult expected, in NativeState actual, ReadOnlySpan<byte> actualWindow,
        X86Exception actualException = X86Exception.None, CompareParts parts = CompareParts.All)
    {
        var diffs = new List<string>();
        if (expected.Outcome == NativeOutcome.Refused)
            throw new ArgumentException($"case was refused by the harness: {expected.Reason}", nameof(expected));
        if (expected.Outcome == NativeOutcome.Fault || actualException != X86Exception.None)
        {
            if (expected.Exception != actualException)
                diffs.Add($"exception: expected {Name(expected.Exception)}, engine {Name(actualException)}");
            return diffs;
        }

        var undefined = UndefinedFlags.For(c);
        var exp = expected.Output;
        if ((parts & CompareParts.Gprs) != 0)
        {
            for (int i = 0; i < 16; i++)
                if ((undefined.Gprs & (1 << i)) == 0 && exp.Gpr[i] != actual.Gpr[i])
                    diffs.Add($"{GprNames[i]}: expected {exp.Gpr[i]:x16}, engine {actual.Gpr[i]:x16}");
        }
        if ((parts & CompareParts.Flags) != 0)
        {
            ulong mask = RflagsBits.Settable & ~undefined.Flags;
            ulong delta = (exp.Rflags ^ actual.Rflags) & mask;
            if (delta != 0)
                diffs.Add($"rflags: expected {FlagString(exp.Rflags, mask)}, engine {FlagString(actual.Rflags, mask)} (differ: {FlagString(delta, delta)}; undefined masked: {FlagString(undefined.Flags, undefined.Flags)})");
        }
        if ((parts & CompareParts.Memory) != 0 && !undefined.Memory)
        {
            if (actualWindow.Length != expected.Window.Length)
                diffs.Add($"window: expected {expected.Window.Length} bytes, engine {actualWindow.Length}");
            else
            {
                int shown = 0;
                for (int i = 0; i < actualWindow.Length && shown < 8; i++)
                    if (expected.Window[i] != actualWindow[i])
                    {
                        diffs.Add($"window[{i:x4}]: expected {expected.Window[i]:x2}, engine {actualWindow[i]:x2}");
                        shown++;
                    }
            }
        }
        if ((parts & CompareParts.Sse) != 0)
        {
            for (int i = 0; i < 16; i++)
                if (exp.GetXmm(i) != actual.GetXmm(i))
                    diffs.Add($"xmm{i}: expected {exp.GetXmm(i):x32}, engine {actual.GetXmm(i):x32}");
            if (exp.Mxcsr != actual.Mxcsr) diffs.Add($"mxcsr: expected {exp.Mxcsr:x8}, engine {actual.Mxcsr:x8}");
        }
        if ((parts & CompareParts.X87) != 0)
        {
            if (exp.Fcw != actual.Fcw) diffs.Add($"fcw: expected {exp.Fcw:x4}, engine {actual.Fcw:x4}");
            if (exp.Fsw != actual.Fsw) diffs.Add($"fsw: expected {exp.Fsw:x4}, engine {actual.Fsw:x4}");
            if (exp.Ftw != actual.Ftw) diffs.Add($"ftw: expected {exp.Ftw:x2}, engine {actual.Ftw:x2}");
            for (int i = 0; i < 8; i++)
                if (exp.GetSt(i) != actual.GetSt(i))
                    diffs.Add($"st{i}: expected {exp.GetSt(i):x20}, engine {actual.GetSt(i):x20}");
        }
        return diffs;
    }

    /// <summary>One line per difference, prefixed with the case, or null when there is none.</summary>
    public static string? Describe(NativeCase c, List<string> diffs) =>
        diffs.Count == 0 ? null : $"{c} [{Convert.ToHexString(c.Code)}]\n  " + string.Join("\n  ", diffs);

    private static string Name(X86Exception e) => e == X86Exception.None ? "no exception" : "#" + e;

    /// <summary>Flag letters for the bits of <paramref name="mask"/>: upper case set, lower case clear.</summary>
    public static string FlagString(ulong rflags, ulong mask)
    {
        var sb = new StringBuilder();
        void One(ulong bit, char name)
        {
            if ((mask & bit) == 0) return;
            sb.Append((rflags & bit) != 0 ? char.ToUpperInvariant(name) : name);
        }
        One(RflagsBits.OF, 'o'); One(RflagsBits.DF, 'd'); One(RflagsBits.SF, 's'); One(RflagsBits.ZF, 'z');
        One(RflagsBits.AF, 'a'); One(RflagsBits.PF, 'p'); One(RflagsBits.CF, 'c');
        return sb.Length == 0 ? "-" : sb.ToString();
    }
}
