; fpuswitch.asm: x87/MMX/SSE context switching between tasks, the way a kernel does it,
; checked against the Intel SDM vol. 3 §2.5 (CR0.MP/EM/TS, CR4.OSFXSR/OSXSAVE), table 2-1
; and tables 11-1/12-1 (#NM and #UD for x87, MMX and SSE instructions by EM/MP/TS), vol. 1
; §8.1/§8.7 (x87 state, FNINIT), §10.5 (FXSAVE image), ch. 13 (XSAVE: CPUID leaf 0DH, XCR0,
; XSTATE_BV, init state, standard and compacted XRSTOR) and vol. 2 (FXSAVE, XSAVE,
; XSAVEOPT, XSAVEC, XRSTOR, XSETBV).
;
; 64-bit long mode, ring 0. Two tasks A and B (and, in the eager part, the kernel K
; itself) each load a distinctive state: an x87 stack of 4–6 values (80-bit values that
; no double can hold, a denormal, signed zero, a QNaN with payload, an infinity), their own
; FCW (rounding and precision control), FSW flags and condition codes, MXCSR (RC, FZ, DAZ,
; sticky flags) and XMM0–15; on every other step an MMX state (MM0–7) instead of the x87
; stack. The values change with every step, so a stale save image is caught too. A
; cooperative scheduler switches between them by a fixed script; after every switch each
; task reads its whole state back (FNSTCW, FNSTSW, STMXCSR, the FXSAVE tag byte, FNSTENV's
; full tag word, each ST(i) through FLD ST(i)/FSTP m80, MOVQ from MM0–7, MOVDQU from
; XMM0–15) and compares it bit for bit with what it loaded.
;   gates: #NM with TS=1 for FWAIT (MP=1), x87, MMX, SSE, STMXCSR, FXSAVE/FXRSTOR;
;     no #NM for FWAIT with MP=0; with EM=1 x87 gives #NM, MMX/SSE/STMXCSR give #UD,
;     FWAIT runs. Left out because QEMU (the reference these guests are checked on)
;     differs from the SDM: EMMS with TS=1 (#NM) or EM=1 (#UD), XSAVE with TS=1 (#NM),
;     FXSAVE with EM=1 (#UD in the current SDM, #NM in older ones and QEMU).
;   FNINIT: FCW 037FH, FSW 0, FTW FFFFH (FXSAVE tag byte 0), FIP/FDP 0; MXCSR and XMM kept.
;   lazy: switching sets CR0.TS; the first FPU/MMX/SSE instruction of a task (FWAIT,
;     MOVAPS, FNSTSW, STMXCSR, FXSAVE or MOVQ, varied by step) raises #NM at exactly that
;     instruction; the handler does CLTS and, when the owner changed, FXSAVE64 of the old
;     owner and FXRSTOR64 of the new. The #NM are counted (one per task step, none after).
;     A task's first run sees the init state, never the kernel's or the other task's.
;   eager (when CPUID has XSAVE): CPUID.(EAX=0DH) for x87|SSE and the sizes, CR4.OSXSAVE
;     reflected in CPUID.1:ECX.OSXSAVE, XSETBV #GP for XCR0=0/2, XGETBV (also with TS=1);
;     XSAVE #GP when not 64-byte aligned; XRSTOR with XSTATE_BV clear gives the init state
;     (FCW 037FH, FSW 0, empty tags, ST0–7 zero, XMM zero; standard form loads MXCSR from
;     memory, the compacted form sets 1F80H); RFBM limits XSAVE and XRSTOR to x87; XSAVEC
;     writes XCOMP_BV; then the same script with XSAVE/XSAVEOPT + XRSTOR on every switch,
;     no TS and no #NM at all, XSTATE_BV checked after each save.
; Output: counts as "lazy: ..." and "eager: ..." lines, then PASS fpuswitch.

%define TEST_NAME "fpuswitch"
%define WANT_LONG
%include "guest.inc"

CR0_MP  equ 1 << 1
CR0_EM  equ 1 << 2
CR0_TS  equ 1 << 3
CR0_NE  equ 1 << 5
CR4_OSFXSR     equ 1 << 9
CR4_OSXMMEXCPT equ 1 << 10
CR4_OSXSAVE    equ 1 << 18

; Expected-state record (one per task).
E_FCW   equ 0               ; word
E_FSW   equ 2               ; word, TOP included
E_FTWA  equ 4               ; byte: FXSAVE's abridged tag byte
E_MODE  equ 5               ; byte: 0 init, 1 x87 stack, 2 MMX
E_FTW   equ 6               ; word: FNSTENV's full tag word (modes 0 and 1)
E_MXCSR equ 8               ; dword
E_NST   equ 12              ; dword: values on the x87 stack
E_ST    equ 16              ; 8 × 16 bytes: ST(i) as 10 bytes
E_MM    equ 144             ; 8 × 8 bytes
E_XMM   equ 208             ; 16 × 16 bytes
E_SIZE  equ 512

; Task control block.
T_RSP   equ 0
T_STEP  equ 8
T_ID    equ 16
T_AREA  equ 24
T_EXP   equ 32
T_SIZE  equ 64

XSAVE_SIZE  equ 576         ; legacy region + header for XCR0 = x87|SSE
SCRIPT_LEN  equ 24
V_FWAIT equ 0
V_MOVAPS equ 1
V_FNSTSW equ 2
V_STMXCSR equ 3
V_FXSAVE equ 4
V_MOVQ  equ 5

section .data
align 8
fcw_tab:    dw 0x0A7F, 0x047F, 0x0F7F      ; A: RC up, PC 53; B: RC down, PC 24; K: chop, PC 64
flags_tab:  dw 0x4171, 0x040E, 0x4420      ; A: C3 C0 SF PE UE IE; B: C2 OE ZE DE; K: C3 C2 PE
mxcsr_tab:  dd 0xDFE4, 0x3F9B, 0x7FA0      ; A: FZ, RC up, DAZ, PE ZE; B: RC down, UE OE DE IE; K: chop, PE
sign_tab:   dw 0, 0x8000, 0
nst_tab:    db 6, 5, 4
align 8
; x87 stack slots: significand, sign/exponent, whether the step varies the low 16 bits,
; FNSTENV tag (0 valid, 1 zero, 2 special)
slot_sig:   dq 0xC90FDAA22168C234           ; normal, 64 significant bits (no double holds it)
            dq 0x0000123456780000           ; denormal
            dq 0                            ; signed zero
            dq 0xC00ABCDEF0120000           ; QNaN with a payload
            dq 0x8000000000000000           ; infinity
            dq 0xFFFFFFFFFFFF0000           ; large normal, exponent beyond double's range
slot_exp:   dw 0x3FFF, 0x0000, 0x8000, 0x7FFF, 0x7FFF, 0x43FE
slot_var:   db 1, 1, 0, 1, 0, 1
slot_tag:   db 0, 2, 1, 2, 2, 0, 3, 3
script:     db 0,1,1,0,0,1,0,1,1,1,0,0,1,0,0,0,1,0,1,1,0,1,0,1
task_letters: db "ABK"
str_task:   db " task ", 0
str_step:   db " step ", 0
ph_setup:   db "setup", 0
ph_gates:   db "CR0 gates", 0
ph_fninit:  db "FNINIT", 0
ph_lazy:    db "lazy switching", 0
ph_xsave:   db "XSAVE setup", 0
ph_eager:   db "eager switching", 0

section .bss
alignb 64
area_A:     resb 1024
area_B:     resb 1024
area_K:     resb 1024
area_tmp:   resb 1024
area_tmp2:  resb 1024
vscratch:   resb 512
vxmm:       resb 256
exp_A:      resb E_SIZE
exp_B:      resb E_SIZE
exp_K:      resb E_SIZE
venv:       resb 32
vtmp:       resb 16
tcb_A:      resb T_SIZE
tcb_B:      resb T_SIZE
tcb_K:      resb T_SIZE
alignb 8
cur_task:   resq 1
fpu_owner:  resq 1
sched_mode: resq 1          ; 0 none, 1 lazy (TS + #NM), 2 eager (XSAVE/XRSTOR)
nm_count:   resq 1
nm_rip:     resq 1
nm_swaps:   resq 1
nm_noswap:  resq 1
nm_by_variant: resq 6
rng_state:  resq 1
switch_count: resq 1
xsave_count: resq 1
xsaveopt_count: resq 1
xrstor_count: resq 1
exp_swaps:  resq 1
sim_owner:  resq 1
sched_i:    resq 1
has_xsaveopt: resq 1
has_xsavec: resq 1
cpuid1_ecx: resq 1
cpuid1_edx: resq 1
phase_name: resq 1
alignb 16
            resb 8192
stack_A_top:
            resb 8192
stack_B_top:

; ----------------------------------------------------------------------------
; Macros (64-bit)
; ----------------------------------------------------------------------------

; VCHK got, expected, "what": 64-bit compare; on mismatch FAIL with the phase, task, step
; and both values. `got` must not be RDX.
%macro VCHK 3
  [section .data]
  %%w: db %3, 0
  __SECT__
  push rax
  push rdx
  mov rdx, %2
  mov rax, %1
  cmp rax, rdx
  je %%ok
  mov esi, %%w
  jmp vfail
%%ok:
  pop rdx
  pop rax
%endmacro

; EXPECT_FAULT vector, "what", {instruction}: the instruction must fault with the vector,
; the saved RIP pointing at it. Clobbers RCX.
%macro EXPECT_FAULT 3
  ARM_TRAP %%r
%%i:
  %3
  FAIL {%2, ": no fault"}
%%r:
  VCHK qword [trap_vector], %1, {%2, ": vector"}
  mov rcx, %%i
  VCHK qword [trap_eip], rcx, {%2, ": saved RIP"}
%endmacro

%macro SET_PHASE 1
  mov qword [phase_name], %1
%endmacro

section .text
BITS32
main:
    mov ebx, main64
    jmp lm_enter

BITS64
default rel

main64:
    mov qword [cur_task], tcb_K
    mov qword [tcb_K + T_ID], 2
    mov qword [tcb_K + T_EXP], exp_K
    mov qword [tcb_K + T_AREA], area_K
    SET_PHASE ph_setup
    mov eax, 1
    cpuid
    mov [cpuid1_ecx], ecx
    mov [cpuid1_edx], edx
    mov eax, edx
    and eax, (1 << 0) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26)
    VCHK rax, (1 << 0) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26), "CPUID.1:EDX FPU, MMX, FXSR, SSE, SSE2"
    ; CR0: MP (FWAIT obeys TS), NE (native #MF), EM and TS clear; CR4: OSFXSR, OSXMMEXCPT.
    mov rax, cr0
    and eax, ~(CR0_EM | CR0_TS)
    or eax, CR0_MP | CR0_NE
    mov cr0, rax
    mov rax, cr4
    or eax, CR4_OSFXSR | CR4_OSXMMEXCPT
    mov cr4, rax
    fninit
    mov eax, 7                  ; #NM: the lazy handler (hands over to the stub outside lazy mode)
    mov rdx, nm_handler
    mov ecx, 0x8E
    call idt64_set

    call gate_tests
    call fninit_test
    call lazy_phase
    call eager_phase
    jmp guest_pass

; ----------------------------------------------------------------------------
; CR0.EM/MP/TS gates (SDM vol. 3 table 2-1, tables 11-1 and 12-1)
; ----------------------------------------------------------------------------
gate_tests:
    SET_PHASE ph_gates
    mov rax, cr0
    or eax, CR0_TS
    mov cr0, rax
    EXPECT_FAULT 7, "FWAIT with TS=1 MP=1", {fwait}
    EXPECT_FAULT 7, "FLD1 with TS=1", {fld1}
    EXPECT_FAULT 7, "FNINIT with TS=1", {fninit}
    EXPECT_FAULT 7, "FNSTSW AX with TS=1", {fnstsw ax}
    EXPECT_FAULT 7, "MOVAPS with TS=1", {movaps xmm0, xmm1}
    EXPECT_FAULT 7, "PADDD xmm with TS=1", {paddd xmm2, xmm3}
    EXPECT_FAULT 7, "MOVQ mm with TS=1", {movq mm0, mm1}
    EXPECT_FAULT 7, "STMXCSR with TS=1", {stmxcsr [vtmp]}
    EXPECT_FAULT 7, "FXSAVE64 with TS=1", {fxsave64 [vscratch]}
    EXPECT_FAULT 7, "FXRSTOR64 with TS=1", {fxrstor64 [vscratch]}
    ; TS=1, MP=0: WAIT does not fault (an unexpected #NM fails in the stub)
    mov rax, cr0
    and eax, ~CR0_MP
    mov cr0, rax
    fwait
    mov rax, cr0
    or eax, CR0_MP
    and eax, ~CR0_TS
    or eax, CR0_EM
    mov cr0, rax
    ; EM=1, TS=0: x87 #NM, MMX and SSE #UD, WAIT runs
    EXPECT_FAULT 7, "FLD1 with EM=1", {fld1}
    EXPECT_FAULT 7, "FNSTSW AX with EM=1", {fnstsw ax}
    fwait
    EXPECT_FAULT 6, "MOVAPS with EM=1", {movaps xmm0, xmm1}
    EXPECT_FAULT 6, "ADDPS with EM=1", {addps xmm0, xmm1}
    EXPECT_FAULT 6, "PADDD xmm with EM=1", {paddd xmm2, xmm3}
    EXPECT_FAULT 6, "MOVQ mm with EM=1", {movq mm0, mm1}
    EXPECT_FAULT 6, "STMXCSR with EM=1", {stmxcsr [vtmp]}
    mov rax, cr0
    and eax, ~CR0_EM
    mov cr0, rax
    VCHK qword [nm_count], 0, "the lazy #NM handler ran outside the lazy phase"
    ret

; ----------------------------------------------------------------------------
; FNINIT: x87 defaults, SSE state untouched (SDM vol. 1 §8.7, FINIT/FNINIT)
; ----------------------------------------------------------------------------
fninit_test:
    SET_PHASE ph_fninit
    mov rbx, tcb_K
    mov rbp, exp_K
    mov r14, 1
    call load_x87               ; a full distinctive state
    fninit
    fnstenv [venv]              ; first: QEMU (wrongly) lets FNSTSW AX set FIP
    movzx eax, word [venv + 8]
    VCHK rax, 0xFFFF, "tag word after FNINIT"
    mov eax, [venv + 12]
    VCHK rax, 0, "FIP after FNINIT"
    mov eax, [venv + 20]
    VCHK rax, 0, "FDP after FNINIT"
    fnstcw [vtmp]
    movzx eax, word [vtmp]
    VCHK rax, 0x037F, "FCW after FNINIT"
    fnstsw ax
    movzx eax, ax
    VCHK rax, 0, "FSW after FNINIT"
    fxsave64 [vscratch]
    movzx eax, byte [vscratch + 4]
    VCHK rax, 0, "FXSAVE tag byte after FNINIT"
    stmxcsr [vtmp]
    mov eax, [vtmp]
    mov edx, [rbp + E_MXCSR]
    VCHK rax, rdx, "MXCSR must survive FNINIT"
    movdqu [vxmm], xmm7
    mov rax, [vxmm]
    VCHK rax, [rbp + E_XMM + 7 * 16], "XMM7 must survive FNINIT"
    mov rax, [vxmm + 8]
    VCHK rax, [rbp + E_XMM + 7 * 16 + 8], "XMM7 high must survive FNINIT"
    ret

; ----------------------------------------------------------------------------
; Scheduler: cooperative switch. RDI = next TCB. Callee-saved registers stay on each
; task's stack. FPU state by sched_mode: lazy sets CR0.TS; eager saves and restores.
; ----------------------------------------------------------------------------
switch_to:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov rsi, [cur_task]
    mov [rsi + T_RSP], rsp
    cmp qword [sched_mode], 2
    je .eager
    mov rax, cr0
    or eax, CR0_TS
    mov cr0, rax
    jmp .go
.eager:
    call eager_switch_fpu
.go:
    mov [cur_task], rdi
    mov rsp, [rdi + T_RSP]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

; eager_switch_fpu: RSI = previous TCB, RDI = next. XSAVE (every other switch XSAVEOPT
; when CPUID has it) into the previous task's area, XRSTOR from the next one's.
eager_switch_fpu:
    mov r8, [rsi + T_AREA]
    mov eax, -1
    mov edx, -1
    cmp qword [has_xsaveopt], 0
    je .xsave
    test qword [switch_count], 1
    jz .xsave
    xsaveopt64 [r8]
    add qword [xsaveopt_count], 1
    jmp .saved
.xsave:
    xsave64 [r8]
    add qword [xsave_count], 1
.saved:
    ; XSTATE_BV[i] = XINUSE[i]: a state that is not the init state must be marked in use.
    mov r9, [rsi + T_EXP]
    cmp byte [r9 + E_MODE], 0
    je .bv_done
    mov rax, [r8 + 512]
    VCHK rax, 3, "XSTATE_BV after XSAVE of a non-init state"
.bv_done:
    add qword [switch_count], 1
    mov r8, [rdi + T_AREA]
    mov eax, -1
    mov edx, -1
    xrstor64 [r8]
    add qword [xrstor_count], 1
    ret

; task_entry: body of tasks A and B: one step, back to the kernel, forever.
task_entry:
    mov rbx, [cur_task]
    call task_step
    mov rdi, tcb_K
    call switch_to
    jmp task_entry

; init_task: RDI = TCB, RSI = id, RDX = expected record, RCX = save area, R8 = stack top.
; The task starts at task_entry with the init state expected.
init_task:
    mov [rdi + T_ID], rsi
    mov [rdi + T_EXP], rdx
    mov [rdi + T_AREA], rcx
    mov qword [rdi + T_STEP], 0
    mov rax, task_entry
    mov [r8 - 8], rax
    xor eax, eax
    mov [r8 - 16], rax
    mov [r8 - 24], rax
    mov [r8 - 32], rax
    mov [r8 - 40], rax
    mov [r8 - 48], rax
    mov [r8 - 56], rax
    lea rax, [r8 - 56]
    mov [rdi + T_RSP], rax
    push rbp
    mov rbp, rdx
    call set_init_exp
    pop rbp
    ret

; set_init_exp: RBP = record ← the architectural init state (SDM vol. 1 §13.6).
set_init_exp:
    push rdi
    push rcx
    push rax
    mov rdi, rbp
    mov ecx, E_SIZE
    xor eax, eax
    rep stosb
    mov word [rbp + E_FCW], 0x037F
    mov word [rbp + E_FTW], 0xFFFF
    mov dword [rbp + E_MXCSR], 0x1F80
    pop rax
    pop rcx
    pop rdi
    ret

; task_step: RBX = TCB. Checks the state loaded by the previous step (the init state at
; step 0), then loads the next: x87 stack at even steps, MMX at odd ones.
task_step:
    mov rbp, [rbx + T_EXP]
    mov r14, [rbx + T_STEP]
    mov rax, cr0
    and eax, CR0_TS
    cmp qword [sched_mode], 1
    jne .eager
    VCHK rax, CR0_TS, "CR0.TS on entry (lazy: set by the switch)"
    jmp .go
.eager:
    VCHK rax, 0, "CR0.TS on entry (eager: never set)"
.go:
    call verify_state
    mov r12, [nm_count]
    test r14, 1
    jnz .mmx
    call load_x87
    jmp .loaded
.mmx:
    call load_mmx
.loaded:
    VCHK qword [nm_count], r12, "#NM after the task already owned the FPU"
    add qword [rbx + T_STEP], 1
    ret

; ----------------------------------------------------------------------------
; Lazy #NM handler (SDM vol. 3 §2.5 TS, §7.15 interrupt 7)
; ----------------------------------------------------------------------------
nm_handler:
    cmp qword [sched_mode], 1
    jne idt64_stubs + 7 * STUB_SIZE     ; not lazy: the armed-trap stub (or FAIL)
    push rax
    push rcx
    push rdx
    clts
    add qword [nm_count], 1
    mov rax, [rsp + 24]                 ; saved RIP: #NM is a fault
    mov [nm_rip], rax
    mov rax, [fpu_owner]
    mov rcx, [cur_task]
    cmp rax, rcx
    je .mine
    test rax, rax
    jz .load
    mov rdx, [rax + T_AREA]
    fxsave64 [rdx]
.load:
    mov rdx, [rcx + T_AREA]
    fxrstor64 [rdx]
    mov [fpu_owner], rcx
    add qword [nm_swaps], 1
    jmp .out
.mine:
    add qword [nm_noswap], 1
.out:
    pop rdx
    pop rcx
    pop rax
    iretq

; ----------------------------------------------------------------------------
; Lazy phase
; ----------------------------------------------------------------------------
lazy_phase:
    SET_PHASE ph_lazy
    ; the init image both tasks start from
    fninit
    mov dword [vtmp], 0x1F80
    ldmxcsr [vtmp]
    %assign i 0
    %rep 16
    pxor xmm %+ i, xmm %+ i
    %assign i i + 1
    %endrep
    fxsave64 [area_A]
    fxsave64 [area_B]
    mov rdi, tcb_A
    xor esi, esi
    mov rdx, exp_A
    mov rcx, area_A
    mov r8, stack_A_top
    call init_task
    mov rdi, tcb_B
    mov esi, 1
    mov rdx, exp_B
    mov rcx, area_B
    mov r8, stack_B_top
    call init_task
    ; the kernel leaves junk in the registers: no task may see it
    mov rbx, tcb_K
    mov rbp, exp_K
    mov r14, 3
    call load_x87
    mov qword [fpu_owner], 0
    mov qword [sim_owner], 0
    mov qword [exp_swaps], 0
    mov qword [nm_count], 0
    mov qword [sched_mode], 1
    mov qword [sched_i], 0
.loop:
    mov rcx, [sched_i]
    cmp rcx, SCRIPT_LEN
    jae .done
    movzx eax, byte [script + rcx]
    mov rdi, tcb_A
    test eax, eax
    jz .pick
    mov rdi, tcb_B
.pick:
    cmp rdi, [sim_owner]
    je .same
    add qword [exp_swaps], 1
    mov [sim_owner], rdi
.same:
    call switch_to
    add qword [sched_i], 1
    jmp .loop
.done:
    mov qword [sched_mode], 0
    clts
    VCHK qword [nm_count], SCRIPT_LEN, "#NM count: one per task step"
    mov rcx, [exp_swaps]
    VCHK qword [nm_swaps], rcx, "#NM with an owner change (FXSAVE/FXRSTOR)"
    mov rcx, SCRIPT_LEN
    sub rcx, [exp_swaps]
    VCHK qword [nm_noswap], rcx, "#NM with the owner unchanged (CLTS only)"
    PRINT "lazy: "
    mov eax, SCRIPT_LEN
    call putdec
    PRINT " task steps, #NM taken: "
    mov rax, [nm_count]
    call putdec
    PRINT " (state swaps: "
    mov rax, [nm_swaps]
    call putdec
    PRINT ", owner unchanged: "
    mov rax, [nm_noswap]
    call putdec
    PRINT ")", 10
    PRINT "lazy: first-touch #NM by FWAIT "
    mov rax, [nm_by_variant + V_FWAIT * 8]
    call putdec
    PRINT ", MOVAPS "
    mov rax, [nm_by_variant + V_MOVAPS * 8]
    call putdec
    PRINT ", FNSTSW "
    mov rax, [nm_by_variant + V_FNSTSW * 8]
    call putdec
    PRINT ", STMXCSR "
    mov rax, [nm_by_variant + V_STMXCSR * 8]
    call putdec
    PRINT ", FXSAVE "
    mov rax, [nm_by_variant + V_FXSAVE * 8]
    call putdec
    PRINT ", MOVQ "
    mov rax, [nm_by_variant + V_MOVQ * 8]
    call putdec
    call newline
    ret

; ----------------------------------------------------------------------------
; Eager phase (XSAVE)
; ----------------------------------------------------------------------------
eager_phase:
    SET_PHASE ph_xsave
    test qword [cpuid1_ecx], 1 << 26
    jnz .has_xsave
    PRINT "eager: CPUID has no XSAVE, skipped", 10
    ret
.has_xsave:
    mov eax, 0xD
    xor ecx, ecx
    cpuid
    and eax, 3
    VCHK rax, 3, "CPUID.(EAX=0DH,ECX=0):EAX x87 and SSE components"
    mov eax, 1
    cpuid
    and ecx, 1 << 27
    VCHK rcx, 0, "CPUID.1:ECX.OSXSAVE before CR4.OSXSAVE"
    mov rax, cr4
    or eax, CR4_OSXSAVE
    mov cr4, rax
    mov eax, 1
    cpuid
    and ecx, 1 << 27
    VCHK rcx, 1 << 27, "CPUID.1:ECX.OSXSAVE after CR4.OSXSAVE"
    xor ecx, ecx
    xor edx, edx
    mov eax, 2
    EXPECT_FAULT 13, "XSETBV XCR0=2 (x87 bit clear)", {xsetbv}
    xor ecx, ecx
    xor edx, edx
    xor eax, eax
    EXPECT_FAULT 13, "XSETBV XCR0=0", {xsetbv}
    xor ecx, ecx
    xor edx, edx
    mov eax, 3
    xsetbv
    xor ecx, ecx
    xgetbv
    shl rdx, 32
    or rax, rdx
    VCHK rax, 3, "XGETBV XCR0"
    mov eax, 0xD
    xor ecx, ecx
    cpuid
    mov r12d, ebx
    mov r13d, ecx
    VCHK r12, XSAVE_SIZE, "CPUID.(EAX=0DH,ECX=0):EBX size for XCR0=x87|SSE"
    cmp r13, XSAVE_SIZE
    jae .ecx_ok
    VCHK r13, XSAVE_SIZE, "CPUID.(EAX=0DH,ECX=0):ECX below 576"
.ecx_ok:
    mov eax, 0xD
    mov ecx, 1
    cpuid
    mov edx, eax
    and edx, 1
    mov [has_xsaveopt], rdx
    shr eax, 1
    and eax, 1
    mov [has_xsavec], rax
    PRINT "xsave: CPUID.(EAX=0DH,ECX=0) EBX="
    mov eax, r12d
    call putdec
    PRINT " ECX="
    mov eax, r13d
    call putdec
    PRINT ", XSAVEOPT "
    mov rax, [has_xsaveopt]
    call putdec
    PRINT ", XSAVEC "
    mov rax, [has_xsavec]
    call putdec
    call newline

    ; TS does not gate XGETBV; a misaligned area is #GP(0). (XSAVE with TS=1 is #NM in the
    ; SDM, but QEMU 7.2 runs it, so it is not checked here.)
    mov rax, cr0
    or eax, CR0_TS
    mov cr0, rax
    xor ecx, ecx
    xgetbv
    clts
    mov eax, -1
    mov edx, -1
    EXPECT_FAULT 13, "XSAVE to an area not 64-byte aligned", {xsave64 [area_tmp + 16]}

    mov rbx, tcb_K
    mov rbp, exp_K

    ; XRSTOR (standard form) with XSTATE_BV = 0: x87 and SSE go to their init state; MXCSR
    ; comes from memory all the same (SDM vol. 1 §13.8.1).
    mov r14, 5
    call load_x87
    mov rdi, area_tmp
    mov ecx, 512
    mov al, 0xA5
    rep stosb
    mov ecx, 64
    xor eax, eax
    rep stosb
    mov dword [area_tmp + 24], 0x1FBF
    mov eax, -1
    mov edx, -1
    xrstor64 [area_tmp]
    call check_init_x87
    stmxcsr [vtmp]
    mov eax, [vtmp]
    VCHK rax, 0x1FBF, "MXCSR after standard XRSTOR with XSTATE_BV=0 (loaded from memory)"
    call check_xmm_zero

    ; RFBM = x87 only: XRSTOR leaves MXCSR and the XMM registers alone
    mov r14, 7
    call load_x87
    mov eax, 1
    xor edx, edx
    xrstor64 [area_tmp]
    call check_init_x87
    stmxcsr [vtmp]
    mov eax, [vtmp]
    mov edx, [rbp + E_MXCSR]
    VCHK rax, rdx, "MXCSR after XRSTOR with RFBM=1 (untouched)"
    movdqu [vxmm], xmm15
    mov rax, [vxmm]
    VCHK rax, [rbp + E_XMM + 15 * 16], "XMM15 after XRSTOR with RFBM=1 (untouched)"

    ; RFBM = x87 only: XSAVE writes neither MXCSR nor the XMM slots, XSTATE_BV[1] stays 0
    mov r14, 9
    call load_x87
    mov rdi, area_tmp
    mov ecx, 512
    mov al, 0x5A
    rep stosb
    mov ecx, 64
    xor eax, eax
    rep stosb
    mov eax, 1
    xor edx, edx
    xsave64 [area_tmp]
    movzx eax, word [area_tmp]
    movzx edx, word [rbp + E_FCW]
    VCHK rax, rdx, "FCW in the area after XSAVE with RFBM=1"
    mov rax, [area_tmp + 32]
    VCHK rax, [rbp + E_ST], "ST0 in the area after XSAVE with RFBM=1"
    mov eax, [area_tmp + 24]
    VCHK rax, 0x5A5A5A5A, "MXCSR slot after XSAVE with RFBM=1 (must not be written)"
    mov rax, [area_tmp + 160]
    mov rcx, 0x5A5A5A5A5A5A5A5A
    VCHK rax, rcx, "XMM0 slot after XSAVE with RFBM=1 (must not be written)"
    mov rax, [area_tmp + 160 + 15 * 16 + 8]
    VCHK rax, rcx, "XMM15 slot after XSAVE with RFBM=1 (must not be written)"
    mov rax, [area_tmp + 512]
    VCHK rax, 1, "XSTATE_BV after XSAVE with RFBM=1"
    ; full XSAVE, then XRSTOR of that image over a different state gives it back exactly
    mov eax, -1
    mov edx, -1
    xsave64 [area_tmp]
    mov rax, [area_tmp + 512]
    VCHK rax, 3, "XSTATE_BV after a full XSAVE"
    mov eax, [area_tmp + 24]
    mov edx, [rbp + E_MXCSR]
    VCHK rax, rdx, "MXCSR slot after a full XSAVE"
    mov rax, [area_tmp + 160 + 3 * 16]
    VCHK rax, [rbp + E_XMM + 3 * 16], "XMM3 slot after a full XSAVE"
    mov rsi, rbp                ; keep the expectation of step 9 for the check below
    mov rdi, exp_B              ; (exp_B is free until the eager tasks start)
    mov ecx, E_SIZE / 8
    rep movsq
    mov r14, 11
    call load_mmx               ; something else in every register
    mov eax, -1
    mov edx, -1
    xrstor64 [area_tmp]
    push rbp
    mov rbp, exp_B
    mov r14, 10                 ; verify_state picks the first touch from R14 only
    call verify_state
    pop rbp

    ; compacted form (XSAVEC): XCOMP_BV written; XRSTOR with XSTATE_BV[1]=0 sets MXCSR to 1F80H
    cmp qword [has_xsavec], 0
    je .no_xsavec
    mov r14, 13
    call load_x87
    mov rdi, area_tmp2
    mov ecx, 1024
    xor eax, eax
    rep stosb
    mov eax, -1
    mov edx, -1
    xsavec64 [area_tmp2]
    mov rax, [area_tmp2 + 520]
    mov rcx, 0x8000000000000003
    VCHK rax, rcx, "XCOMP_BV after XSAVEC"
    mov rax, [area_tmp2 + 512]
    VCHK rax, 3, "XSTATE_BV after XSAVEC"
    mov rax, [area_tmp2 + 32]
    VCHK rax, [rbp + E_ST], "ST0 in the XSAVEC area"
    mov rdi, area_tmp
    mov ecx, 576
    xor eax, eax
    rep stosb
    mov rcx, 0x8000000000000003
    mov [area_tmp + 520], rcx
    mov eax, -1
    mov edx, -1
    xrstor64 [area_tmp]
    call check_init_x87
    stmxcsr [vtmp]
    mov eax, [vtmp]
    VCHK rax, 0x1F80, "MXCSR after compacted XRSTOR with XSTATE_BV=0"
    call check_xmm_zero
    PRINT "xsave: compacted XRSTOR checked", 10
    jmp .xsavec_done
.no_xsavec:
    PRINT "xsave: no XSAVEC, compacted form skipped", 10
.xsavec_done:

    ; ---- eager switching: same script, kernel steps too ----
    SET_PHASE ph_eager
    mov rdi, area_A
    mov ecx, 3 * 1024
    xor eax, eax
    rep stosb
    mov dword [area_A + 24], 0x1F80     ; standard XRSTOR loads MXCSR even for the init state
    mov dword [area_B + 24], 0x1F80
    mov dword [area_K + 24], 0x1F80
    mov rdi, tcb_A
    xor esi, esi
    mov rdx, exp_A
    mov rcx, area_A
    mov r8, stack_A_top
    call init_task
    mov rdi, tcb_B
    mov esi, 1
    mov rdx, exp_B
    mov rcx, area_B
    mov r8, stack_B_top
    call init_task
    mov rbx, tcb_K
    mov rbp, exp_K
    mov r14, 15
    call load_mmx                       ; junk, then the kernel's own init state
    mov eax, -1
    mov edx, -1
    xrstor64 [area_K]
    call set_init_exp
    mov qword [tcb_K + T_STEP], 0
    mov qword [nm_count], 0
    mov qword [switch_count], 0
    mov qword [xsave_count], 0
    mov qword [xsaveopt_count], 0
    mov qword [xrstor_count], 0
    mov qword [sched_mode], 2
    mov qword [sched_i], 0
.loop:
    mov rcx, [sched_i]
    cmp rcx, SCRIPT_LEN
    jae .done
    mov rbx, tcb_K
    call task_step
    mov rcx, [sched_i]
    movzx eax, byte [script + rcx]
    mov rdi, tcb_A
    test eax, eax
    jz .pick
    mov rdi, tcb_B
.pick:
    call switch_to
    add qword [sched_i], 1
    jmp .loop
.done:
    mov qword [sched_mode], 0
    VCHK qword [nm_count], 0, "#NM in eager mode"
    VCHK qword [switch_count], 2 * SCRIPT_LEN, "eager switches"
    VCHK qword [xrstor_count], 2 * SCRIPT_LEN, "eager XRSTORs"
    PRINT "eager: "
    mov eax, SCRIPT_LEN
    call putdec
    PRINT " task steps + "
    mov rax, [tcb_K + T_STEP]
    call putdec
    PRINT " kernel steps, switches: "
    mov rax, [switch_count]
    call putdec
    PRINT " (XSAVE "
    mov rax, [xsave_count]
    call putdec
    PRINT ", XSAVEOPT "
    mov rax, [xsaveopt_count]
    call putdec
    PRINT ", XRSTOR "
    mov rax, [xrstor_count]
    call putdec
    PRINT "), #NM taken: "
    mov rax, [nm_count]
    call putdec
    call newline
    ret

; check_init_x87: the x87 init state (SDM vol. 1 §13.6): FCW 037FH, FSW 0, FTW FFFFH,
; FIP/FDP 0, ST0–7 zero. FNSTENV comes first (see fninit_test).
check_init_x87:
    fnstenv [venv]
    movzx eax, word [venv + 8]
    VCHK rax, 0xFFFF, "tag word of the x87 init state"
    mov eax, [venv + 12]
    VCHK rax, 0, "FIP of the x87 init state"
    mov eax, [venv + 20]
    VCHK rax, 0, "FDP of the x87 init state"
    fnstcw [vtmp]
    movzx eax, word [vtmp]
    VCHK rax, 0x037F, "FCW of the x87 init state"
    fnstsw ax
    movzx eax, ax
    VCHK rax, 0, "FSW of the x87 init state"
    fxsave64 [vscratch]
    movzx eax, byte [vscratch + 4]
    VCHK rax, 0, "FXSAVE tag byte of the x87 init state"
    %assign i 0
    %rep 8
    mov rax, [vscratch + 32 + i * 16]
    VCHK rax, 0, {"R", '0' + i, " significand of the x87 init state"}
    movzx eax, word [vscratch + 32 + i * 16 + 8]
    VCHK rax, 0, {"R", '0' + i, " sign/exponent of the x87 init state"}
    %assign i i + 1
    %endrep
    ret

check_xmm_zero:
    %assign i 0
    %rep 16
    movdqu [vxmm], xmm %+ i
    mov rax, [vxmm]
    or rax, [vxmm + 8]
    VCHK rax, 0, {"XMM", '0' + i / 10, '0' + i % 10, " of the SSE init state"}
    %assign i i + 1
    %endrep
    ret

; ----------------------------------------------------------------------------
; Task state: build, load, check
; ----------------------------------------------------------------------------

; rng_seed: ECX = id, R14 = step. rng_next: RAX = next value (xorshift64); clobbers RDX.
rng_seed:
    lea rax, [rcx + 1]
    mov rdx, 0x9E3779B97F4A7C15
    imul rax, rdx
    lea rdx, [r14 + 1]
    mov r10, 0xD1B54A32D192ED03
    imul rdx, r10
    xor rax, rdx
    mov [rng_state], rax
    ret
rng_next:
    mov rax, [rng_state]
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    mov [rng_state], rax
    ret

; load_sse: RCX = id, R14 = step, RBP = record, EDX = bits to flip in the task's MXCSR.
; Fills MXCSR and XMM0–15 in the record and the registers.
load_sse:
    mov eax, [mxcsr_tab + rcx * 4]
    xor eax, edx
    mov [rbp + E_MXCSR], eax
    ldmxcsr [rbp + E_MXCSR]
    call rng_seed
    xor r10d, r10d
.fill:
    call rng_next
    mov [rbp + E_XMM + r10 * 8], rax
    add r10d, 1
    cmp r10d, 32
    jb .fill
    %assign i 0
    %rep 16
    movdqu xmm %+ i, [rbp + E_XMM + i * 16]
    %assign i i + 1
    %endrep
    ret

; load_x87: RBX = TCB, RBP = record, R14 = step. The x87-stack state of this task and step.
load_x87:
    mov rcx, [rbx + T_ID]
    mov byte [rbp + E_MODE], 1
    movzx eax, word [fcw_tab + rcx * 2]
    mov [rbp + E_FCW], ax
    movzx r8d, byte [nst_tab + rcx]
    mov [rbp + E_NST], r8d
    mov eax, 8
    sub eax, r8d
    and eax, 7
    mov r9d, eax                ; TOP
    shl eax, 11
    or ax, [flags_tab + rcx * 2]
    mov [rbp + E_FSW], ax
    ; tags: physical register p holds ST((p - TOP) mod 8)
    xor r10d, r10d
    xor r11d, r11d
    mov edx, 7
.tag:
    shl r10d, 2
    mov eax, edx
    sub eax, r9d
    and eax, 7
    cmp eax, r8d
    jae .empty
    bts r11d, edx
    movzx eax, byte [slot_tag + rax]
    or r10d, eax
    jmp .tag_next
.empty:
    or r10d, 3
.tag_next:
    sub edx, 1
    jns .tag
    mov [rbp + E_FTW], r10w
    mov [rbp + E_FTWA], r11b
    ; the step's variation of the low significand bits
    lea eax, [ecx + 1]
    imul eax, eax, 0x3C5A
    mov r10d, r14d
    imul r10d, r10d, 0x0107
    xor eax, r10d
    movzx r10d, ax
    xor edx, edx
.slot:
    mov eax, edx
    shl eax, 4
    lea rdi, [rbp + E_ST + rax]
    mov qword [rdi], 0
    mov qword [rdi + 8], 0
    cmp edx, r8d
    jae .slot_next
    mov rax, [slot_sig + rdx * 8]
    cmp byte [slot_var + rdx], 0
    je .novar
    xor rax, r10
.novar:
    mov [rdi], rax
    movzx eax, word [slot_exp + rdx * 2]
    xor ax, [sign_tab + rcx * 2]
    mov [rdi + 8], ax
.slot_next:
    add edx, 1
    cmp edx, 8
    jb .slot
    ; load: FLDCW, push ST(n-1) .. ST(0), then the flags through FLDENV
    emms
    fninit
    fldcw [rbp + E_FCW]
    mov edx, r8d
.push:
    sub edx, 1
    js .pushed
    mov eax, edx
    shl eax, 4
    fld tword [rbp + E_ST + rax]
    jmp .push
.pushed:
    fnstenv [venv]
    mov ax, [venv + 4]
    and ax, 0x3800
    or ax, [flags_tab + rcx * 2]
    mov [venv + 4], ax
    fldenv [venv]
    mov rdx, r14
    shr edx, 1
    and edx, 1
    shl edx, 4                  ; flip UE every other x87 step
    call load_sse
    ret

; load_mmx: RBX = TCB, RBP = record, R14 = step. MM0–7 (TOP 0, all tags valid), new MXCSR
; and XMM values; FCW and the FSW flags stay.
load_mmx:
    mov rcx, [rbx + T_ID]
    mov byte [rbp + E_MODE], 2
    mov dword [rbp + E_NST], 0
    mov byte [rbp + E_FTWA], 0xFF
    and word [rbp + E_FSW], 0xC7FF
    mov edx, r14d
    and edx, 2
    or edx, 0x10
    call load_sse
    xor r10d, r10d
.fill:
    call rng_next
    mov [rbp + E_MM + r10 * 8], rax
    add r10d, 1
    cmp r10d, 8
    jb .fill
    %assign i 0
    %rep 8
    movq mm %+ i, [rbp + E_MM + i * 8]
    %assign i i + 1
    %endrep
    ret

; verify_state: RBX = TCB, RBP = record, R14 = step. The first FPU/SSE instruction varies
; with the step; in lazy mode it must raise exactly one #NM, at that instruction. Then the
; whole state is read back and compared.
verify_state:
    mov r12, [nm_count]
    mov rax, r14
    xor edx, edx
    mov ecx, 5
    div rcx
    cmp byte [rbp + E_MODE], 2
    jne .pick
    cmp edx, V_FXSAVE
    jne .pick
    mov edx, V_MOVQ             ; MOVQ from an MM register only where MMX is the state
.pick:
    mov r15, rdx
    cmp edx, V_FWAIT
    je .v0
    cmp edx, V_MOVAPS
    je .v1
    cmp edx, V_FNSTSW
    je .v2
    cmp edx, V_STMXCSR
    je .v3
    cmp edx, V_FXSAVE
    je .v4
    lea r13, [.t5]
.t5:
    movq rax, mm3
    jmp .touched
.v0:
    lea r13, [.t0]
.t0:
    fwait
    jmp .touched
.v1:
    lea r13, [.t1]
.t1:
    movaps [vxmm], xmm0
    jmp .touched
.v2:
    lea r13, [.t2]
.t2:
    fnstsw ax
    jmp .touched
.v3:
    lea r13, [.t3]
.t3:
    stmxcsr [vtmp]
    jmp .touched
.v4:
    lea r13, [.t4]
.t4:
    fxsave64 [vscratch]
.touched:
    cmp qword [sched_mode], 1
    jne .no_nm
    lea rax, [r12 + 1]
    VCHK qword [nm_count], rax, "#NM count after the first FPU/SSE instruction"
    VCHK qword [nm_rip], r13, "#NM saved RIP (must be the first FPU/SSE instruction)"
    add qword [nm_by_variant + r15 * 8], 1
    mov rax, cr0
    and eax, CR0_TS
    VCHK rax, 0, "CR0.TS after the #NM handler"
    jmp .state
.no_nm:
    VCHK qword [nm_count], r12, "#NM where none was expected"
.state:
    fnstcw [vtmp]
    movzx eax, word [vtmp]
    movzx edx, word [rbp + E_FCW]
    VCHK rax, rdx, "FCW (FNSTCW)"
    fnstsw ax
    movzx eax, ax
    movzx edx, word [rbp + E_FSW]
    VCHK rax, rdx, "FSW (FNSTSW)"
    stmxcsr [vtmp]
    mov eax, [vtmp]
    mov edx, [rbp + E_MXCSR]
    VCHK rax, rdx, "MXCSR (STMXCSR)"
    fxsave64 [vscratch]
    movzx eax, byte [vscratch + 4]
    movzx edx, byte [rbp + E_FTWA]
    VCHK rax, rdx, "abridged tag byte (FXSAVE)"
    %assign i 0
    %rep 16
    movdqu [vxmm + i * 16], xmm %+ i
    %assign i i + 1
    %endrep
    %assign i 0
    %rep 16
    mov rax, [vxmm + i * 16]
    VCHK rax, [rbp + E_XMM + i * 16], {"XMM", '0' + i / 10, '0' + i % 10, " bits 63:0"}
    mov rax, [vxmm + i * 16 + 8]
    VCHK rax, [rbp + E_XMM + i * 16 + 8], {"XMM", '0' + i / 10, '0' + i % 10, " bits 127:64"}
    %assign i i + 1
    %endrep
    cmp byte [rbp + E_MODE], 2
    je .mmx
    fnstenv [venv]              ; (masks all exceptions: every FCW here masks them already)
    movzx eax, word [venv + 8]
    movzx edx, word [rbp + E_FTW]
    VCHK rax, rdx, "full tag word (FNSTENV)"
    %assign i 0
    %rep 8
    cmp dword [rbp + E_NST], i
    jbe .st_done
    fld st %+ i
    fstp tword [vtmp]
    mov rax, [vtmp]
    VCHK rax, [rbp + E_ST + i * 16], {"ST", '0' + i, " significand"}
    movzx eax, word [vtmp + 8]
    movzx edx, word [rbp + E_ST + i * 16 + 8]
    VCHK rax, rdx, {"ST", '0' + i, " sign and exponent"}
    %assign i i + 1
    %endrep
.st_done:
    jmp .final
.mmx:
    %assign i 0
    %rep 8
    movq rax, mm %+ i
    VCHK rax, [rbp + E_MM + i * 8], {"MM", '0' + i}
    %assign i i + 1
    %endrep
.final:
    fnstsw ax
    movzx eax, ax
    movzx edx, word [rbp + E_FSW]
    VCHK rax, rdx, "FSW after reading the state back"
    ret

; vfail: RSI = what, RAX = got, RDX = expected.
vfail:
    mov r8, rsi
    mov r9, rax
    mov esi, str_fail
    call puts
    mov esi, str_name
    call puts
    mov esi, str_colon
    call puts
    mov rsi, [phase_name]
    call puts
    mov esi, str_task
    call puts
    mov rcx, [cur_task]
    mov rax, [rcx + T_ID]
    mov al, [task_letters + rax]
    call putc
    mov esi, str_step
    call puts
    mov rax, [rcx + T_STEP]
    call putdec
    mov esi, str_colon
    call puts
    mov rsi, r8
    call puts
    mov esi, str_got
    call puts
    mov rax, r9
    call puthex64
    mov esi, str_expected
    call puts
    mov rax, rdx
    call puthex64
    call newline
    mov eax, EXIT_FAIL
    jmp guest_exit

GUEST_END
