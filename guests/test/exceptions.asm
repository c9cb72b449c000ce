; exceptions.asm: exception delivery in 32-bit protected mode, checked against the Intel
; SDM vol. 3 ch. 7 (table 7-1 vectors and error codes, fault vs. trap saved EIP, §7.14
; double-fault conditions: two contributory exceptions) and ch. 19 (debug registers,
; DR6.BS / DR6.B0, RF):
;   #DE (DIV by 0, IDIV overflow), #UD (UD2, LOCK NOP), #BP (INT3 and INT 3: traps),
;   INTO (OF=1 traps, OF=0 nothing), BOUND (out of range faults), #GP with a selector
;   error code and #GP(0) (MOV from CR0 at CPL 3), #NP, #SS and #TS from bad selectors, #DF when the #GP gate is
;   not present, TF single-step, and an execute breakpoint in DR0/DR7.

%define TEST_NAME "exceptions"
%include "guest.inc"

SEL_NP_DATA  equ 0x78           ; data descriptor with P=0
SEL_NP_STACK equ 0x80           ; another, for SS
SEL_TOOBIG   equ 0x100          ; beyond the GDT limit

section .data
align 4
bounds:  dd 10, 20

section .text
BITS32
; EXPECT vector, error, eip, "what": after a trap that resumed here
%macro EXPECT 4
  CHECK dword [trap_vector], %1, {%4, ": vector"}
  CHECK dword [trap_err], %2, {%4, ": error code"}
  CHECK dword [trap_eip], %3, {%4, ": saved EIP"}
%endmacro

main:
    call tss32_init
    mov eax, SEL_NP_DATA
    xor edx, edx
    mov ecx, 0xFFFFF
    mov ebx, 0xC013             ; data, writable, accessed, P=0
    call gdt_set
    mov eax, SEL_NP_STACK
    call gdt_set

    ; #DE: DIV by zero (fault: EIP of the DIV)
    ARM_TRAP .de1_r
    xor edx, edx
    mov eax, 1
    xor ecx, ecx
.de1:
    div ecx
    FAIL "no #DE from DIV by 0"
.de1_r:
    EXPECT 0, 0, .de1, "DIV by 0"
    ; #DE: IDIV overflow (-2^31 / -1)
    ARM_TRAP .de2_r
    mov eax, 0x80000000
    cdq
    mov ecx, -1
.de2:
    idiv ecx
    FAIL "no #DE from IDIV overflow"
.de2_r:
    EXPECT 0, 0, .de2, "IDIV overflow"

    ; #UD
    ARM_TRAP .ud1_r
.ud1:
    ud2
    FAIL "no #UD from UD2"
.ud1_r:
    EXPECT 6, 0, .ud1, "UD2"
    ARM_TRAP .ud2_r
.ud2:
    db 0xF0, 0x90               ; LOCK NOP: LOCK on a non-memory instruction
    FAIL "no #UD from LOCK NOP"
.ud2_r:
    EXPECT 6, 0, .ud2, "LOCK NOP"

    ; #BP is a trap: saved EIP is after the instruction
    ARM_TRAP 0
    int3
.bp1_after:
    EXPECT 3, 0, .bp1_after, "INT3"
    ARM_TRAP 0
    int 3
.bp2_after:
    EXPECT 3, 0, .bp2_after, "INT 3"

    ; INTO: traps only with OF=1
    mov dword [trap_count], 0
    mov eax, 1
    add eax, 1                  ; OF=0
    into
    CHECK dword [trap_count], 0, "INTO with OF=0 must not trap"
    ARM_TRAP 0
    mov eax, 0x7FFFFFFF
    add eax, 1                  ; OF=1
    into
.into_after:
    EXPECT 4, 0, .into_after, "INTO with OF=1"

    ; BOUND: in range nothing, out of range #BR (fault)
    mov eax, 15
    bound eax, [bounds]
    CHECK dword [trap_count], 1, "BOUND in range must not fault"
    ARM_TRAP .br_r
    mov eax, 21
.br:
    bound eax, [bounds]
    FAIL "no #BR from BOUND out of range"
.br_r:
    EXPECT 5, 0, .br, "BOUND 21 in [10,20]"

    ; #GP with a selector error code: beyond the GDT limit, and a system descriptor
    ARM_TRAP .gp1_r
    mov ax, SEL_TOOBIG
.gp1:
    mov ds, ax
    FAIL "no #GP loading DS with a selector beyond the GDT limit"
.gp1_r:
    EXPECT 13, SEL_TOOBIG, .gp1, "MOV DS, 0x100"
    ARM_TRAP .gp2_r
    mov ax, SEL_TSS32
.gp2:
    mov es, ax
    FAIL "no #GP loading ES with a TSS selector"
.gp2_r:
    EXPECT 13, SEL_TSS32, .gp2, "MOV ES, TSS"
    ; #GP(0): a privileged instruction at CPL 3. (A write through CS would also be #GP(0)
    ; on silicon, but QEMU's TCG checks neither segment types on data accesses nor
    ; CR0/CR4 reserved combinations nor WRMSR to a missing MSR; this test, validated under QEMU, uses what it checks.)
    mov eax, user_priv
    mov ecx, 0x0002
    call run_user32

    ; #NP: data descriptor not present
    ARM_TRAP .np_r
    mov ax, SEL_NP_DATA
.np:
    mov fs, ax
    FAIL "no #NP loading FS with a not-present descriptor"
.np_r:
    EXPECT 11, SEL_NP_DATA, .np, "MOV FS, not present"
    ; #SS: SS with a not-present descriptor (SS keeps its old value)
    ARM_TRAP .ss_r
    mov ax, SEL_NP_STACK
.ss:
    mov ss, ax
    FAIL "no #SS loading SS with a not-present descriptor"
.ss_r:
    EXPECT 12, SEL_NP_STACK, .ss, "MOV SS, not present"
    ; #TS: IRET with NT=1 and a previous-task link that is not a TSS
    mov dword [tss32], SEL_KDATA
    ARM_TRAP .ts_r
    pushfd
    or dword [esp], 0x4000      ; NT
    popfd
.ts:
    iret
    FAIL "no #TS from IRET with NT=1 and a bad link"
.ts_r:
    pushfd                      ; the frame restored NT=1: clear it before any IRET
    and dword [esp], ~0x4000
    popfd
    EXPECT 10, SEL_KDATA, .ts, "IRET task return to a data segment"

    ; #DF: #GP whose gate is not present → #NP while delivering → double fault (error 0)
    mov byte [idt32 + 13 * 8 + 5], 0x0E     ; P=0
    ARM_TRAP .df_r
    mov ax, SEL_TOOBIG
    mov ds, ax
    FAIL "no #DF"
.df_r:
    mov byte [idt32 + 13 * 8 + 5], 0x8E
    mov ax, SEL_KDATA
    mov ds, ax
    CHECK dword [trap_vector], 8, "#GP with its gate not present: vector"
    CHECK dword [trap_err], 0, "#DF error code"

    ; TF single step: the trap comes after the instruction following POPF
    xor eax, eax
    mov dr6, eax
    ARM_TRAP 0
    pushfd
    or dword [esp], 0x100
    popfd
    nop
.ss_after:
    nop
    EXPECT 1, 0, .ss_after, "single step"
    mov eax, dr6
    and eax, 0x4000
    CHECK eax, 0x4000, "single step: DR6.BS"
    pushfd
    pop eax
    and eax, 0x100
    CHECK eax, 0, "TF cleared after the single step"

    ; Execute breakpoint: DR0 = address, DR7.L0 = 1, R/W0 = 00, LEN0 = 00 → fault
    ; before the instruction; RF lets it run on return.
    xor eax, eax
    mov dr6, eax
    mov eax, .bp_target
    mov dr0, eax
    mov eax, 1
    mov dr7, eax
    ARM_TRAP 0
    xor eax, eax
.bp_target:
    mov eax, 0x777
    EXPECT 1, 0, .bp_target, "DR0 execute breakpoint"
    CHECK eax, 0x777, "the instruction at the breakpoint ran after RF"
    mov eax, dr6
    and eax, 0x400F
    CHECK eax, 1, "execute breakpoint: DR6.B0 only"
    xor eax, eax
    mov dr7, eax
    jmp guest_pass

user_priv:
    ARM_TRAP .r
.i:
    mov eax, cr0
    FAIL "no #GP from MOV from CR0 at CPL 3"
.r:
    EXPECT 13, 0, .i, "MOV EAX, CR0 at CPL 3"
    CHECK dword [trap_cs], SEL_UCODE32 | 3, "MOV EAX, CR0 at CPL 3: saved CS"
    ret

GUEST_END
