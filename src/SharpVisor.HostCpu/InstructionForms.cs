// The catalogue of unprivileged integer instruction forms for differential tests, built from
// Iced's Code table: every 64-bit-mode legacy or VEX encoding of the listed mnemonics whose
// operands the CaseGenerator can fill, split into a register form and a memory form where the
// ModRM r/m operand allows both. Deliberately left out:
//   * SAL /6 and TEST F6/F7 /1 (undocumented aliases that Iced names separately);
//   * MOVSXD without REX.W (Intel and AMD disagree about it) and BSWAP r16 (undefined result);
//   * BCD instructions (DAA/DAS/AAA/AAS/AAM/AAD: invalid in 64-bit mode);
//   * forms whose CPUID feature the host lacks.
using Iced.Intel;

namespace SharpVisor.HostCpu;

/// <summary>One instruction form: an exact Iced <see cref="Iced.Intel.Code"/> plus whether its r/m operand is memory.</summary>
public readonly record struct InstructionForm(Code Code, bool Memory)
{
    public Mnemonic Mnemonic => Code.Mnemonic();
    public override string ToString() => Memory ? $"{Code} (mem)" : Code.ToString();
}

public static class InstructionForms
{
    private static readonly System.Collections.Frozen.FrozenSet<Mnemonic> IntegerMnemonics = System.Collections.Frozen.FrozenSet.ToFrozenSet(new[]
    {
        Mnemonic.Add, Mnemonic.Adc, Mnemonic.Sub, Mnemonic.Sbb, Mnemonic.And, Mnemonic.Or, Mnemonic.Xor, Mnemonic.Cmp, Mnemonic.Test,
        Mnemonic.Inc, Mnemonic.Dec, Mnemonic.Neg, Mnemonic.Not,
        Mnemonic.Shl, Mnemonic.Shr, Mnemonic.Sar, Mnemonic.Rol, Mnemonic.Ror, Mnemonic.Rcl, Mnemonic.Rcr, Mnemonic.Shld, Mnemonic.Shrd,
        Mnemonic.Mul, Mnemonic.Imul, Mnemonic.Div, Mnemonic.Idiv,
        Mnemonic.Bt, Mnemonic.Bts, Mnemonic.Btr, Mnemonic.Btc, Mnemonic.Bsf, Mnemonic.Bsr,
        Mnemonic.Lzcnt, Mnemonic.Tzcnt, Mnemonic.Popcnt,
        Mnemonic.Andn, Mnemonic.Bextr, Mnemonic.Blsi, Mnemonic.Blsmsk, Mnemonic.Blsr, Mnemonic.Bzhi, Mnemonic.Mulx, Mnemonic.Pdep,
        Mnemonic.Pext, Mnemonic.Rorx, Mnemonic.Sarx, Mnemonic.Shlx, Mnemonic.Shrx, Mnemonic.Adcx, Mnemonic.Adox,
        Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne, Mnemonic.Cmovbe, Mnemonic.Cmova,
        Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp, Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg,
        Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne, Mnemonic.Setbe, Mnemonic.Seta,
        Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp, Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg,
        Mnemonic.Bswap, Mnemonic.Movbe, Mnemonic.Movsx, Mnemonic.Movzx, Mnemonic.Movsxd, Mnemonic.Mov, Mnemonic.Xchg, Mnemonic.Xadd,
        Mnemonic.Cmpxchg, Mnemonic.Lea, Mnemonic.Cbw, Mnemonic.Cwde, Mnemonic.Cdqe, Mnemonic.Cwd, Mnemonic.Cdq, Mnemonic.Cqo,
        Mnemonic.Lahf, Mnemonic.Sahf, Mnemonic.Clc, Mnemonic.Stc, Mnemonic.Cmc, Mnemonic.Push, Mnemonic.Pop,
    });

    /// <summary>Every catalogued form the host can execute.</summary>
    public static IReadOnlyList<InstructionForm> All(HostFeatures features)
    {
        var forms = new List<InstructionForm>();
        foreach (Code code in Enum.GetValues<Code>())
        {
            if (!Include(code, features)) continue;
            var op = code.ToOpCode();
            bool hasRm = false, memOnly = false;
            for (int i = 0; i < op.OpCount; i++)
            {
                var kind = op.GetOpKind(i);
                if (kind is OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem)
                    hasRm = true;
                if (kind == OpCodeOperandKind.mem) memOnly = true;
            }
            if (memOnly) forms.Add(new InstructionForm(code, true));
            else
            {
                forms.Add(new InstructionForm(code, false));
                if (hasRm) forms.Add(new InstructionForm(code, true));
            }
        }
        return forms;
    }

    /// <summary>The forms of one mnemonic (e.g. all ADD encodings and widths).</summary>
    public static IReadOnlyList<InstructionForm> Of(HostFeatures features, Mnemonic mnemonic) =>
        All(features).Where(f => f.Mnemonic == mnemonic).ToList();

    private static bool Include(Code code, HostFeatures features)
    {
        if (code == Code.INVALID) return false;
        var op = code.ToOpCode();
        if (!op.IsInstruction || !op.Mode64 || !IntegerMnemonics.Contains(op.Mnemonic)) return false;
        if (op.Encoding is not (EncodingKind.Legacy or EncodingKind.VEX)) return false;
        if (!features.CanExecute(code)) return false;
        string name = code.ToString();
        if (name.EndsWith("_F6r1", StringComparison.Ordinal) || name.EndsWith("_F7r1", StringComparison.Ordinal)) return false;
        if (op.Mnemonic == Mnemonic.Movsxd && code != Code.Movsxd_r64_rm32) return false;
        if (op.Mnemonic == Mnemonic.Bswap && code == Code.Bswap_r16) return false;
        // PUSH/POP: only the 64-bit general-register and memory forms (others touch segment registers or take immediates the generator does not model).
        if (op.Mnemonic is Mnemonic.Push or Mnemonic.Pop && code is not (Code.Push_r64 or Code.Pop_r64 or Code.Push_rm64 or Code.Pop_rm64)) return false;
        for (int i = 0; i < op.OpCount; i++)
            if (!CaseGenerator.IsSupportedOperand(op.GetOpKind(i))) return false;
        return true;
    }
}
