namespace SharpVisor.Cpu.State;

/// <summary>RFLAGS bits (SDM Vol. 1 §3.4.3).</summary>
public static class Rflags
{
    public const ulong CF = 1 << 0, Reserved1 = 1 << 1, PF = 1 << 2, AF = 1 << 4, ZF = 1 << 6, SF = 1 << 7,
        TF = 1 << 8, IF = 1 << 9, DF = 1 << 10, OF = 1 << 11, IOPL = 3 << 12, NT = 1 << 14,
        RF = 1 << 16, VM = 1 << 17, AC = 1 << 18, VIF = 1 << 19, VIP = 1 << 20, ID = 1 << 21;
    /// <summary>The six arithmetic status flags.</summary>
    public const ulong Arith = CF | PF | AF | ZF | SF | OF;
    /// <summary>Bits software can ever change.</summary>
    public const ulong Writable = Arith | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
    public const int IoplShift = 12;
}

public static class Cr0
{
    public const ulong PE = 1 << 0, MP = 1 << 1, EM = 1 << 2, TS = 1 << 3, ET = 1 << 4, NE = 1 << 5,
        WP = 1 << 16, AM = 1 << 18, NW = 1 << 29, CD = 1 << 30, PG = 1UL << 31;
}

public static class Cr4
{
    public const ulong VME = 1 << 0, PVI = 1 << 1, TSD = 1 << 2, DE = 1 << 3, PSE = 1 << 4, PAE = 1 << 5,
        MCE = 1 << 6, PGE = 1 << 7, PCE = 1 << 8, OSFXSR = 1 << 9, OSXMMEXCPT = 1 << 10, UMIP = 1 << 11,
        FSGSBASE = 1 << 16, PCIDE = 1 << 17, OSXSAVE = 1 << 18, SMEP = 1 << 20, SMAP = 1 << 21;
}

public static class Efer
{
    public const ulong SCE = 1 << 0, LME = 1 << 8, LMA = 1 << 10, NXE = 1 << 11;
}

/// <summary>Exception vectors (SDM Vol. 3 §6.3.1).</summary>
public static class Vector
{
    public const byte DE = 0, DB = 1, NMI = 2, BP = 3, OF = 4, BR = 5, UD = 6, NM = 7, DF = 8,
        TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, MC = 18, XM = 19;

    private static readonly string[] s_names =
        ["#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
         "#MF", "#AC", "#MC", "#XM", "#VE", "#CP"];

    /// <summary>The SDM's mnemonic of an exception vector ("#GP"), or "vector N".</summary>
    public static string Name(int v) => v < s_names.Length ? s_names[v] : $"vector {v}";

    /// <summary>Exceptions that push an error code.</summary>
    public static bool HasErrorCode(int v) => v is DF or TS or NP or SS or GP or PF or AC;

    /// <summary>Contributory exceptions for the double-fault rules (SDM Table 6-5).</summary>
    public static bool IsContributory(int v) => v is DE or TS or NP or SS or GP;
}

/// <summary>Segment register numbers in x86 encoding order.</summary>
public static class Seg
{
    public const int ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5, None = 6;
}
