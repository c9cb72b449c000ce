; taskswitch.asm: 32-bit hardware task switching, checked against the Intel SDM vol. 3
; ch. 9 (§9.3 task switching, §9.4 task linking: NT flag, previous-task link, busy flag;
; table 9-2 effect of JMP/CALL/INT/IRET on busy, NT and link):
;   JMP to a TSS: old task not busy, new busy, NT clear, registers from the new TSS;
;   JMP back: state resumes after the first JMP with the registers saved in TSS A;
;   CALL to a TSS: both busy, NT=1 in the new task, link = old TSS; IRET with NT returns;
;   INT through an IDT task gate: like CALL; IRET returns.

%define TEST_NAME "taskswitch"
%include "guest.inc"

SEL_TSSB   equ 0x78
TSSB_EIP   equ 32
TSSB_EFLAGS equ 36
TSSB_EBX   equ 52
TSSB_ESP   equ 56
TASK_GATE_VEC equ 0x50

section .bss
alignb 16
tss_b:     resb 104
           resb 1024
stack_b_top:
alignb 4
phase:     resd 1
b_tr:      resd 1
b_ebx:     resd 1
b_flags:   resd 1
b_link:    resd 1
b_busy_a:  resd 1
b_busy_b:  resd 1
b_runs:    resd 1

section .text
BITS32
; BUSY sel → EAX = 1 when the TSS descriptor's type is busy (type bit 1)
%macro BUSY 1
  movzx eax, byte [gdt + %1 + 5]
  shr eax, 1
  and eax, 1
%endmacro

; reset_b: task B starts at task_b with a fresh stack, EFLAGS 0x2, EBX 0xB0B0
reset_b:
    mov dword [tss_b + TSSB_EIP], task_b
    mov dword [tss_b + TSSB_EFLAGS], 0x2
    mov dword [tss_b + TSSB_ESP], stack_b_top
    mov dword [tss_b + TSSB_EBX], 0xB0B0
    ret

main:
    call tss32_init             ; task A = tss32 (0x60), busy after LTR
    mov dword [tss_b + 28], 0   ; CR3 (paging is off)
    mov eax, cr3
    mov [tss_b + 28], eax
    mov dword [tss_b + 72], SEL_KDATA   ; ES
    mov dword [tss_b + 76], SEL_KCODE32 ; CS
    mov dword [tss_b + 80], SEL_KDATA   ; SS
    mov dword [tss_b + 84], SEL_KDATA   ; DS
    mov dword [tss_b + 88], SEL_KDATA   ; FS
    mov dword [tss_b + 92], SEL_KDATA   ; GS
    mov dword [tss_b + 96], 0           ; LDT
    mov word [tss_b + 102], 104         ; no I/O bitmap
    mov eax, SEL_TSSB
    mov edx, tss_b
    mov ecx, 103
    mov ebx, 0x0089             ; 32-bit TSS, available
    call gdt_set
    mov eax, TASK_GATE_VEC
    xor edx, edx
    mov ecx, (SEL_TSSB << 16) | 0x85    ; task gate
    call idt32_set

    BUSY SEL_TSS32
    CHECK eax, 1, "task A busy after LTR"

    ; ---- JMP to task B and back ----
    mov dword [phase], 1
    call reset_b
    mov ebx, 0x1234
    jmp SEL_TSSB:0
.back_from_jmp:
    CHECK ebx, 0x1234, "JMP back: EBX restored from TSS A"
    CHECK dword [b_runs], 1, "task B ran once"
    CHECK dword [b_tr], SEL_TSSB, "JMP: STR in task B"
    CHECK dword [b_ebx], 0xB0B0, "JMP: EBX loaded from TSS B"
    CHECK dword [b_busy_a], 0, "JMP: task A not busy while B runs"
    CHECK dword [b_busy_b], 1, "JMP: task B busy"
    mov eax, [b_flags]
    and eax, 0x4000
    CHECK eax, 0, "JMP: NT clear in task B"
    BUSY SEL_TSS32
    CHECK eax, 1, "JMP back: task A busy again"
    BUSY SEL_TSSB
    CHECK eax, 0, "JMP back: task B not busy"
    xor eax, eax
    str ax
    CHECK eax, SEL_TSS32, "JMP back: STR"

    ; ---- CALL to task B, IRET back ----
    mov dword [phase], 2
    call reset_b
    mov dword [tss_b], 0        ; link field, written by the CALL
    mov ebx, 0x5678
    call SEL_TSSB:0
    CHECK ebx, 0x5678, "CALL/IRET: EBX restored"
    CHECK dword [b_runs], 2, "task B ran twice"
    CHECK dword [b_link], SEL_TSS32, "CALL: previous-task link in TSS B"
    CHECK dword [b_busy_a], 1, "CALL: task A stays busy"
    CHECK dword [b_busy_b], 1, "CALL: task B busy"
    mov eax, [b_flags]
    and eax, 0x4000
    CHECK eax, 0x4000, "CALL: NT set in task B"
    BUSY SEL_TSSB
    CHECK eax, 0, "IRET: task B not busy after the return"
    pushfd
    pop eax
    and eax, 0x4000
    CHECK eax, 0, "IRET: NT clear in task A"

    ; ---- INT through a task gate, IRET back ----
    mov dword [phase], 3
    call reset_b
    mov dword [tss_b], 0
    mov ebx, 0x9ABC
    int TASK_GATE_VEC
    CHECK ebx, 0x9ABC, "task gate: EBX restored"
    CHECK dword [b_runs], 3, "task B ran three times"
    CHECK dword [b_link], SEL_TSS32, "task gate: previous-task link"
    CHECK dword [b_busy_a], 1, "task gate: task A stays busy"
    mov eax, [b_flags]
    and eax, 0x4000
    CHECK eax, 0x4000, "task gate: NT set in task B"
    BUSY SEL_TSSB
    CHECK eax, 0, "task gate IRET: task B not busy"
    jmp guest_pass

; Task B: record what it sees, then return the way the phase says.
task_b:
    add dword [b_runs], 1
    xor eax, eax
    str ax
    mov [b_tr], eax
    mov [b_ebx], ebx
    pushfd
    pop dword [b_flags]
    mov eax, [tss_b]
    and eax, 0xFFFF
    mov [b_link], eax
    BUSY SEL_TSS32
    mov [b_busy_a], eax
    BUSY SEL_TSSB
    mov [b_busy_b], eax
    mov eax, esp
    CHECK eax, stack_b_top, "task B: ESP from TSS B"
    cmp dword [phase], 1
    jne .nested
    jmp SEL_TSS32:0             ; resumes task A after its JMP
.nested:
    iret                        ; NT=1: return to the previous task

GUEST_END
