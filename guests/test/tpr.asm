; tpr.asm: CR8 and the local APIC's task-priority register are one register.
;
; Follows the Intel SDM vol. 3 §11.8.3.1 (task and processor priorities: an interrupt is
; delivered only when its priority class, vector[7:4], is above PPR[7:4]), §11.8.6.1
; (in 64-bit mode CR8[3:0] is TPR[7:4]; writing CR8 clears TPR[3:0]) and §11.6.1 (the ICR's
; self shorthand, 01b in bits 19:18).
;
; In 64-bit mode, with the APIC enabled (SVR bit 8):
;   1. MOV CR8, 5 → the APIC's TPR (offset 0x80) reads 0x50.
;   2. TPR ← 0x73 by MMIO → MOV from CR8 gives 7.
;   3. CR8 = 4, a fixed self-IPI of vector 0x40 (class 4) with interrupts on: held (class 4
;      is not above 4); PPR reads 0x40. MOV CR8, 3 → delivered before the next instruction
;      boundary after the MOV (checked after a NOP).
;   4. In the handler PPR = 0x40 (the vector's class, now in service); after EOI and CR8 = 0
;      TPR and PPR read 0.
; Under QEMU: qemu-system-x86_64 -display none -no-reboot -debugcon stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel tpr.bin → exit status 33.

%define TEST_NAME "tpr"
%define WANT_LONG
%include "guest.inc"

APIC_BASE   equ 0xFEE00000
APIC_TPR    equ 0x080
APIC_PPR    equ 0x0A0
APIC_EOI    equ 0x0B0
APIC_SVR    equ 0x0F0
APIC_ICR_LO equ 0x300
APIC_ICR_HI equ 0x310
VECTOR      equ 0x40

section .bss
alignb 4096
pd_hi:      resb 4096           ; the fourth GiB, for the APIC page
hits:       resd 1
ppr_in_isr: resd 1

section .text
main:
    mov ebx, long64
    jmp lm_enter

BITS64
long64:
    ; lm_enter maps the first GiB; map the APIC page (2 MiB page at 0xFEE00000, cache off).
    mov rax, pd_hi + 7
    mov [pdpt0 + 3 * 8], rax
    mov rax, APIC_BASE | 0x9B   ; P | RW | PWT | PCD | PS
    mov [pd_hi + ((APIC_BASE - 0xC0000000) >> 21) * 8], rax
    mov rax, cr3
    mov cr3, rax

    mov rbx, APIC_BASE          ; RBX addresses the APIC from here on
    mov eax, VECTOR
    mov rdx, on_ipi
    mov ecx, 0x8E
    call idt64_set

    mov eax, [rbx + APIC_SVR]
    or eax, 0x1FF               ; software enable, spurious vector 0xFF
    mov [rbx + APIC_SVR], eax

    ; 1. CR8 → TPR
    mov eax, 5
    mov cr8, rax
    mov eax, [rbx + APIC_TPR]
    CHECK rax, 0x50, "TPR after MOV CR8, 5"

    ; 2. TPR → CR8
    mov dword [rbx + APIC_TPR], 0x73
    mov rax, cr8
    CHECK rax, 7, "CR8 after TPR = 0x73"

    ; 3. an interrupt of class 4 waits while CR8 = 4 and arrives once CR8 = 3
    mov eax, 4
    mov cr8, rax
    mov eax, [rbx + APIC_TPR]
    CHECK rax, 0x40, "TPR after MOV CR8, 4 (TPR[3:0] cleared)"
    mov dword [rbx + APIC_ICR_HI], 0
    mov dword [rbx + APIC_ICR_LO], (1 << 18) | VECTOR   ; self, fixed, edge
    sti
    nop
    nop
    mov eax, [hits]
    CHECK rax, 0, "interrupt of class 4 delivered while CR8 = 4"
    mov eax, [rbx + APIC_PPR]
    CHECK rax, 0x40, "PPR while CR8 = 4"
    mov eax, 3
    mov cr8, rax
    nop
    mov eax, [hits]
    CHECK rax, 1, "interrupt of class 4 after MOV CR8, 3"
    mov eax, [ppr_in_isr]
    CHECK rax, 0x40, "PPR in the handler"
    cli

    ; 4. back to 0
    xor eax, eax
    mov cr8, rax
    mov eax, [rbx + APIC_TPR]
    CHECK rax, 0, "TPR after MOV CR8, 0"
    mov eax, [rbx + APIC_PPR]
    CHECK rax, 0, "PPR after EOI and CR8 = 0"
    jmp guest_pass

on_ipi:
    push rax
    push rbx
    mov rbx, APIC_BASE
    inc dword [hits]
    mov eax, [rbx + APIC_PPR]
    mov [ppr_in_isr], eax
    mov dword [rbx + APIC_EOI], 0
    pop rbx
    pop rax
    iretq

GUEST_END
