using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using static SharpVisor.HostCpu.NativeSnippet;

namespace SharpVisor.HostCpu.Tests;

/// <summary>The catalogue, the generator, the undefined-flag rules and the comparer.</summary>
public sealed class GeneratedCaseTests : HostCpuTestBase
{
    [Fact]
    public void Catalogue_covers_the_integer_instruction_set()
    {
        var forms = InstructionForms.All(Cpu.Features);
        var mnemonics = forms.Select(f => f.Mnemonic).ToHashSet();
        Mnemonic[] required =
        [
            Mnemonic.Add, Mnemonic.Adc, Mnemonic.Sub, Mnemonic.Sbb, Mnemonic.And, Mnemonic.Or, Mnemonic.Xor, Mnemonic.Cmp, Mnemonic.Test,
            Mnemonic.Inc, Mnemonic.Dec, Mnemonic.Neg, Mnemonic.Not, Mnemonic.Shl, Mnemonic.Shr, Mnemonic.Sar, Mnemonic.Rol, Mnemonic.Ror,
            Mnemonic.Rcl, Mnemonic.Rcr, Mnemonic.Shld, Mnemonic.Shrd, Mnemonic.Mul, Mnemonic.Imul, Mnemonic.Div, Mnemonic.Idiv,
            Mnemonic.Bt, Mnemonic.Bts, Mnemonic.Btr, Mnemonic.Btc, Mnemonic.Bsf, Mnemonic.Bsr, Mnemonic.Cmove, Mnemonic.Setg,
            Mnemonic.Bswap, Mnemonic.Movsx, Mnemonic.Movzx, Mnemonic.Movsxd, Mnemonic.Xchg, Mnemonic.Xadd, Mnemonic.Cmpxchg, Mnemonic.Lea,
            Mnemonic.Cbw, Mnemonic.Cwde, Mnemonic.Cdqe, Mnemonic.Cwd, Mnemonic.Cdq, Mnemonic.Cqo, Mnemonic.Lahf, Mnemonic.Sahf,
            Mnemonic.Clc, Mnemonic.Stc, Mnemonic.Cmc,
        ];
        foreach (var m in required) Assert.Contains(m, mnemonics);
        if (Cpu.Features.Has(CpuidFeature.BMI1)) Assert.Contains(Mnemonic.Andn, mnemonics);
        if (Cpu.Features.Has(CpuidFeature.BMI2)) Assert.Contains(Mnemonic.Pdep, mnemonics);
        if (Cpu.Features.Has(CpuidFeature.ADX)) Assert.Contains(Mnemonic.Adox, mnemonics);
        if (Cpu.Features.Has(CpuidFeature.MOVBE)) Assert.Contains(new InstructionForm(Code.Movbe_r32_m32, true), forms);
        if (Cpu.Features.Has(CpuidFeature.LZCNT)) Assert.Contains(Mnemonic.Lzcnt, mnemonics);
        Assert.Contains(new InstructionForm(Code.Add_rm8_r8, false), forms);
        Assert.Contains(new InstructionForm(Code.Add_rm8_r8, true), forms);
        Assert.Contains(new InstructionForm(Code.Shld_rm16_r16_CL, true), forms);
        Assert.DoesNotContain(forms, f => f.Code == Code.Bswap_r16);
        Assert.DoesNotContain(forms, f => f.Mnemonic == Mnemonic.Sal);
    }

    [Fact]
    public void Ten_thousand_generated_cases_run_natively()
    {
        var forms = InstructionForms.All(Cpu.Features);
        var gen = new CaseGenerator(seed: 20240601);
        var problems = new List<string>();
        int completed = 0, divideErrors = 0;
        for (int n = 0; n < 10_000; n++)
        {
            var form = forms[n % forms.Count];
            var c = gen.Generate(form);
            var r = Cpu.Run(c);
            if (r.Outcome == NativeOutcome.Completed) completed++;
            else if (r.Outcome == NativeOutcome.Fault && r.Exception == X86Exception.DE && form.Mnemonic is Mnemonic.Div or Mnemonic.Idiv) divideErrors++;
            else problems.Add($"{form}: {c} -> {r}");

            if (n % 16 == 0 && r.Outcome == NativeOutcome.Completed)
            {
                // The silicon is deterministic for a given input: a second run must agree everywhere.
                var again = Cpu.Run(c);
                var diffs = NativeComparer.Compare(c, r, again.Output, again.Window);
                if (diffs.Count > 0) problems.Add(NativeComparer.Describe(c, diffs)!);
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems.Take(20)));
        Assert.True(completed > 9_000, $"only {completed} completed");
        Assert.True(divideErrors > 0, "no #DE case was generated");
    }

    [Fact]
    public void Reference_model_of_add_sub_and_logic_agrees_with_the_host()
    {
        // A small independent model of the SDM's ADD/ADC/SUB/SBB/AND/OR/XOR/CMP/TEST, run as if it
        // were an engine: the harness, the generator and the comparer must all line up for this to pass.
        Mnemonic[] modelled = [Mnemonic.Add, Mnemonic.Adc, Mnemonic.Sub, Mnemonic.Sbb, Mnemonic.And, Mnemonic.Or, Mnemonic.Xor, Mnemonic.Cmp, Mnemonic.Test];
        var forms = InstructionForms.All(Cpu.Features).Where(f => !f.Memory && modelled.Contains(f.Mnemonic)).ToList();
        Assert.True(forms.Count > 40);
        var gen = new CaseGenerator(seed: 7);
        for (int n = 0; n < 3000; n++)
        {
            var c = gen.Generate(forms[n % forms.Count]);
            var native = Cpu.Run(c);
            Assert.Equal(NativeOutcome.Completed, native.Outcome);
            Decoder.Create(64, new ByteArrayCodeReader(c.Code)).Decode(out var instruction);
            var model = c.Input;
            Model(instruction, ref model);
            var diffs = NativeComparer.Compare(c, native, model, c.Window, parts: CompareParts.Integer);
            Assert.True(diffs.Count == 0, NativeComparer.Describe(c, diffs));
        }
    }

    private static void Model(in Instruction i, ref NativeState s)
    {
        int bits = i.Op0Register.GetSize() * 8;
        ulong mask = CasePreflight.Mask(bits), sign = 1UL << (bits - 1);
        ulong a = CasePreflight.ReadRegister(s, i.Op0Register);
        ulong b = i.Op1Kind == OpKind.Register ? CasePreflight.ReadRegister(s, i.Op1Register) : i.GetImmediate(1) & mask;
        ulong cin = i.Mnemonic is Mnemonic.Adc or Mnemonic.Sbb ? s.Rflags & RflagsBits.CF : 0;
        ulong res, flags = 0;
        switch (i.Mnemonic)
        {
            case Mnemonic.Add or Mnemonic.Adc:
                UInt128 sum = (UInt128)a + b + cin;
                res = (ulong)sum & mask;
                if (sum > mask) flags |= RflagsBits.CF;
                if (((a ^ res) & (b ^ res) & sign) != 0) flags |= RflagsBits.OF;
                flags |= (a ^ b ^ res) & RflagsBits.AF;
                break;
            case Mnemonic.Sub or Mnemonic.Sbb or Mnemonic.Cmp:
                res = (a - b - cin) & mask;
                if ((UInt128)a < (UInt128)b + cin) flags |= RflagsBits.CF;
                if (((a ^ b) & (a ^ res) & sign) != 0) flags |= RflagsBits.OF;
                flags |= (a ^ b ^ res) & RflagsBits.AF;
                break;
            default:
                res = i.Mnemonic switch { Mnemonic.Or => a | b, Mnemonic.Xor => a ^ b, _ => a & b };
                break;
        }
        if (res == 0) flags |= RflagsBits.ZF;
        if ((res & sign) != 0) flags |= RflagsBits.SF;
        if ((System.Numerics.BitOperations.PopCount(res & 0xFF) & 1) == 0) flags |= RflagsBits.PF;
        s.Rflags = (s.Rflags & ~RflagsBits.Status) | flags;
        if (i.Mnemonic is Mnemonic.Cmp or Mnemonic.Test) return;
        var r = i.Op0Register;
        if (r is Register.AH or Register.CH or Register.DH or Register.BH)
        {
            int idx = r - Register.AH;
            s.Gpr[idx] = (s.Gpr[idx] & ~0xFF00UL) | (res << 8);
        }
        else
        {
            int idx = CasePreflight.Index(r);
            s.Gpr[idx] = bits == 32 ? res : (s.Gpr[idx] & ~mask) | res; // 32-bit writes zero-extend
        }
    }

    [Fact]
    public void Undefined_flag_rules_follow_the_sdm()
    {
        const ulong CF = RflagsBits.CF, PF = RflagsBits.PF, AF = RflagsBits.AF, ZF = RflagsBits.ZF, SF = RflagsBits.SF, OF = RflagsBits.OF;
        Assert.Equal(0UL, UndefinedFlags.Mask(Code.Add_rm32_r32));
        Assert.Equal(AF, UndefinedFlags.Mask(Code.And_rm32_r32));
        Assert.Equal(SF | ZF | AF | PF, UndefinedFlags.Mask(Code.Mul_rm64));
        Assert.Equal(SF | ZF | AF | PF, UndefinedFlags.Mask(Code.Imul_r32_rm32_imm8));
        Assert.Equal(RflagsBits.Status, UndefinedFlags.Mask(Code.Idiv_rm16));
        Assert.Equal(0UL, UndefinedFlags.Mask(Code.Shl_rm32_CL, 0));
        Assert.Equal(0UL, UndefinedFlags.Mask(Code.Shl_rm32_CL, 32)); // masked to 0: flags unaffected
        Assert.Equal(AF, UndefinedFlags.Mask(Code.Shl_rm32_CL, 1));
        Assert.Equal(AF | OF, UndefinedFlags.Mask(Code.Shr_rm32_CL, 5));
        Assert.Equal(AF | OF | CF, UndefinedFlags.Mask(Code.Shl_rm8_CL, 8)); // count ≥ width: CF undefined for SHL/SHR
        Assert.Equal(AF | OF, UndefinedFlags.Mask(Code.Sar_rm8_CL, 8));
        Assert.Equal(0UL, UndefinedFlags.Mask(Code.Rol_rm16_CL, 1));
        Assert.Equal(OF, UndefinedFlags.Mask(Code.Rcr_rm8_CL, 9));
        Assert.Equal(RflagsBits.Status, UndefinedFlags.Mask(Code.Shld_rm16_r16_CL, 17));
        Assert.Equal(AF | OF, UndefinedFlags.Mask(Code.Shld_rm16_r16_CL, 16));
        Assert.Equal(CF | OF | SF | AF | PF, UndefinedFlags.Mask(Code.Bsf_r32_rm32));
        Assert.Equal(OF | SF | AF | PF, UndefinedFlags.Mask(Code.Bt_rm64_imm8));
        Assert.Equal(AF | SF | PF, UndefinedFlags.Mask(Code.VEX_Bextr_r32_rm32_r32));
        Assert.Equal(0UL, UndefinedFlags.Mask(Code.Popcnt_r64_rm64));

        var bsf = Case(Assemble(a => a.bsf(eax, ecx)));
        bsf.Input.Rcx = 0;
        var u = UndefinedFlags.For(bsf);
        Assert.Equal(1, u.Gprs); // RAX undefined when the source is zero
        bsf.Input.Rcx = 8;
        Assert.Equal(0, UndefinedFlags.For(bsf).Gprs);
    }

    [Fact]
    public void Comparer_masks_undefined_flags_only()
    {
        var c = Case(Assemble(a => a.and(eax, ebx)));
        c.Input.Rax = 0xF0;
        c.Input.Rbx = 0x3C;
        var native = Cpu.Run(c);
        Assert.Equal(0x30UL, native.Output.Rax);

        var engine = native.Output;
        engine.Rflags ^= RflagsBits.AF; // undefined after AND
        Assert.Empty(NativeComparer.Compare(c, native, engine, native.Window));

        engine.Rflags ^= RflagsBits.CF; // defined: cleared
        var diffs = NativeComparer.Compare(c, native, engine, native.Window);
        Assert.Single(diffs);
        Assert.Contains("rflags", diffs[0]);

        engine = native.Output;
        engine.Rax = 0x31;
        Assert.Contains(NativeComparer.Compare(c, native, engine, native.Window), d => d.StartsWith("rax", StringComparison.Ordinal));

        var window = (byte[])native.Window.Clone();
        window[0x123] ^= 1;
        Assert.Contains(NativeComparer.Compare(c, native, native.Output, window), d => d.StartsWith("window[0123]", StringComparison.Ordinal));
    }

    [Fact]
    public void Comparer_requires_the_predicted_exception()
    {
        var c = Case(Assemble(a => a.div(ecx)));
        var native = Cpu.Run(c); // ECX = 0
        Assert.Equal(X86Exception.DE, native.Exception);
        Assert.Empty(NativeComparer.Compare(c, native, c.Input, c.Window, X86Exception.DE));
        Assert.Single(NativeComparer.Compare(c, native, c.Input, c.Window));
    }

    [Fact]
    public void Generator_is_reproducible_and_favours_boundaries()
    {
        var form = new InstructionForm(Code.Add_rm64_r64, true);
        var a = new CaseGenerator(42).Generate(form);
        var b = new CaseGenerator(42).Generate(form);
        Assert.Equal(a.Code, b.Code);
        Assert.Equal(a.Window, b.Window);
        for (int i = 0; i < 16; i++) Assert.Equal(a.Input.Gpr[i], b.Input.Gpr[i]);

        var gen = new CaseGenerator(1);
        var values = Enumerable.Range(0, 2000).Select(_ => gen.NextValue(32)).ToHashSet();
        Assert.Contains(0UL, values);
        Assert.Contains(0xFFFF_FFFFUL, values);
        Assert.Contains(0x8000_0000UL, values);
        Assert.Contains(0x7FFF_FFFFUL, values);
        var counts = Enumerable.Range(0, 500).Select(_ => gen.NextCount(16)).ToHashSet();
        Assert.Contains((byte)0, counts);
        Assert.Contains((byte)16, counts);
        Assert.Contains((byte)17, counts);
    }
}
