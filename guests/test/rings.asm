; rings.asm: privilege transitions, checked against the Intel SDM vol. 3 §5.8 (call gates,
; stack switching), §7.12 (interrupt procedures and their stack frames), §7.14.5 (IST),
; vol. 2 SYSCALL/SYSRET and SYSENTER/SYSEXIT:
;   32-bit: ring 3 by IRET and by far RET; a call gate back to ring 0 (stack from TSS.ESP0,
;   frame SS:ESP:CS:EIP); an interrupt gate from ring 3 (frame, IF cleared); SYSENTER/SYSEXIT.
;   64-bit: interrupt gates from ring 3 with RSP0 and with IST1, IST from ring 0;
;   SYSCALL/SYSRET (CS/SS from STAR, RCX/R11, FMASK).

%define TEST_NAME "rings"
%define WANT_LONG
%include "guest.inc"

SEL_CGATE    equ 0x78           ; call gate, DPL 3 → gate_target (ring 0), 0 parameters
MSR_SYSENTER_CS  equ 0x174
MSR_SYSENTER_ESP equ 0x175
MSR_SYSENTER_EIP equ 0x176
MSR_STAR     equ 0xC0000081
MSR_LSTAR    equ 0xC0000082
MSR_FMASK    equ 0xC0000084

section .bss
alignb 8
u_esp:     resq 1
u_flags:   resq 1
u_flags2:  resq 1
u_ret:     resq 1
hits:      resq 1
           resb 1024
sysenter_stack_top:

section .text
BITS32
; CHECK_SEG sreg, value: the visible selector of a segment register
%macro CHECK_SEG 2
  push eax
  mov ax, %1
  movzx eax, ax
  CHECK eax, %2, %str(%1 selector)
  pop eax
%endmacro

main:
    mov al, 0xFF                ; mask the PICs (ring 3 runs with IF=1 in the 64-bit part)
    out 0x21, al
    out 0xA1, al
    call tss32_init
    mov edx, gate_target        ; call gate: offset, selector 0x08, DPL 3, type 0xC
    mov eax, edx
    and eax, 0xFFFF
    or eax, SEL_KCODE32 << 16
    mov [gdt + SEL_CGATE], eax
    and edx, 0xFFFF0000
    or edx, 0xEC00
    mov [gdt + SEL_CGATE + 4], edx
    mov eax, 0x40
    mov edx, int40_handler
    mov ecx, 0xEE               ; interrupt gate, DPL 3
    call idt32_set
    mov ecx, MSR_SYSENTER_CS
    mov eax, SEL_KCODE32
    xor edx, edx
    wrmsr
    mov ecx, MSR_SYSENTER_ESP
    mov eax, sysenter_stack_top
    wrmsr
    mov ecx, MSR_SYSENTER_EIP
    mov eax, sysenter_target
    wrmsr

    ; ring 3 by IRET
    mov eax, user32
    mov ecx, 0x0002
    call run_user32
    CHECK dword [hits], 3, "ring-0 entries from ring 3 (gate, INT, SYSENTER)"
    CHECK_SEG cs, SEL_KCODE32

    ; ring 3 by far RET (to an outer level: pops EIP, CS, ESP, SS)
    call enter_by_retf
    CHECK dword [hits], 4, "far RET to ring 3 did not run"
    mov ebx, long_part
    jmp lm_enter

enter_by_retf:                  ; same register save as run_user32, so INT 0x31 returns here
    push ebp
    push ebx
    push esi
    push edi
    mov [r0_esp], esp
    mov edx, user_stack_top - 4
    mov dword [edx], user_exit32
    push SEL_UDATA | 3
    push edx
    push SEL_UCODE32 | 3
    push user32_retf
    ; Data segments ring 3 may use: a RET to an outer level nulls DS/ES/FS/GS whose DPL is
    ; below the new CPL (SDM RET), and ring 3 then faults on its first data access (QEMU's
    ; TCG does not fault on a null segment, silicon does).
    mov dx, SEL_UDATA | 3
    mov ds, dx
    mov es, dx
    mov fs, dx
    mov gs, dx
    retf

user32_retf:
    CHECK_SEG cs, SEL_UCODE32 | 3
    CHECK_SEG ss, SEL_UDATA | 3
    mov eax, esp
    CHECK eax, user_stack_top - 4, "ESP after far RET to ring 3"
    add dword [hits], 1
    ret                         ; → user_exit32 → INT 0x31

; ----- ring 3, 32-bit -----
user32:
    CHECK_SEG cs, SEL_UCODE32 | 3
    CHECK_SEG ss, SEL_UDATA | 3
    mov eax, esp
    CHECK eax, user_stack_top - 4, "ESP after IRET to ring 3"
    ; call gate
    mov [u_esp], esp
    mov dword [u_ret], .after_gate
    call SEL_CGATE + 3 : 0
.after_gate:
    CHECK_SEG cs, SEL_UCODE32 | 3
    CHECK_SEG ss, SEL_UDATA | 3
    mov eax, esp
    CHECK eax, [u_esp], "ESP after RETF from the call gate"
    ; interrupt gate
    mov [u_esp], esp
    mov dword [u_ret], .after_int
    pushfd
    pop dword [u_flags]
    int 0x40
.after_int:
    CHECK_SEG cs, SEL_UCODE32 | 3
    mov eax, esp
    CHECK eax, [u_esp], "ESP after IRET from INT 0x40"
    ; SYSENTER / SYSEXIT
    mov [u_esp], esp
    mov ecx, esp
    mov edx, .after_sysexit
    sysenter
.after_sysexit:
    CHECK_SEG cs, SEL_UCODE32 | 3
    CHECK_SEG ss, SEL_UDATA | 3
    mov eax, esp
    CHECK eax, [u_esp], "ESP after SYSEXIT"
    ret

; ----- ring 0 targets, 32-bit -----
gate_target:                    ; frame on the TSS.ESP0 stack: EIP, CS, ESP, SS
    mov ebp, esp
    CHECK_SEG cs, SEL_KCODE32
    CHECK_SEG ss, SEL_KDATA
    mov eax, esp
    CHECK eax, tss_stack_top - 16, "ESP in the call-gate target (from TSS.ESP0)"
    CHECK dword [ebp], [u_ret], "call gate: pushed EIP"
    CHECK dword [ebp + 4], SEL_UCODE32 | 3, "call gate: pushed CS"
    CHECK dword [ebp + 8], [u_esp], "call gate: pushed ESP"
    CHECK dword [ebp + 12], SEL_UDATA | 3, "call gate: pushed SS"
    add dword [hits], 1
    retf

int40_handler:                  ; frame: EIP, CS, EFLAGS, ESP, SS
    mov ebp, esp
    mov eax, esp
    CHECK eax, tss_stack_top - 20, "ESP in the INT 0x40 handler (from TSS.ESP0)"
    CHECK_SEG cs, SEL_KCODE32
    CHECK_SEG ss, SEL_KDATA
    CHECK dword [ebp], [u_ret], "INT: pushed EIP"
    CHECK dword [ebp + 4], SEL_UCODE32 | 3, "INT: pushed CS"
    CHECK dword [ebp + 8], [u_flags], "INT: pushed EFLAGS"
    CHECK dword [ebp + 12], [u_esp], "INT: pushed ESP"
    CHECK dword [ebp + 16], SEL_UDATA | 3, "INT: pushed SS"
    pushfd
    pop eax
    and eax, 0x4300             ; IF, TF, NT cleared by an interrupt gate
    CHECK eax, 0, "EFLAGS in an interrupt-gate handler"
    add dword [hits], 1
    iret

sysenter_target:
    CHECK_SEG cs, SEL_KCODE32
    CHECK_SEG ss, SEL_KDATA
    mov eax, esp
    CHECK eax, sysenter_stack_top, "ESP after SYSENTER (IA32_SYSENTER_ESP)"
    pushfd
    pop eax
    and eax, 0x10200            ; IF, RF cleared
    CHECK eax, 0, "EFLAGS after SYSENTER"
    add dword [hits], 1
    sysexit                     ; EIP = EDX, ESP = ECX, CS = 0x1B, SS = 0x23

; ----------------------------------------------------------------------------
; 64-bit part
; ----------------------------------------------------------------------------
BITS64
%macro CHECK_SEG64 2
  push rax
  mov ax, %1
  movzx eax, ax
  CHECK rax, %2, %str(%1 selector)
  pop rax
%endmacro

long_part:
    mov eax, 0x41               ; DPL 3, IST1
    mov rdx, int41_handler
    mov ecx, 0x01EE
    call idt64_set
    mov eax, 0x42               ; DPL 3, no IST: RSP0
    mov rdx, int42_handler
    mov ecx, 0x00EE
    call idt64_set
    mov eax, 0x43               ; DPL 0, IST1, raised from ring 0
    mov rdx, int43_handler
    mov ecx, 0x018E
    call idt64_set
    mov ecx, MSR_STAR
    xor eax, eax
    mov edx, (SEL_UCODE32C << 16) | SEL_KCODE64
    wrmsr
    mov ecx, MSR_LSTAR
    mov rax, syscall_target
    mov rdx, rax
    shr rdx, 32
    wrmsr
    mov ecx, MSR_FMASK
    mov eax, 0x00000700         ; TF, IF, DF
    xor edx, edx
    wrmsr

    mov qword [hits], 0
    mov [u_esp], rsp
    mov qword [u_ret], .after43
    int 0x43
.after43:
    CHECK qword [hits], 1, "INT 0x43 (IST1 from ring 0) did not run"

    mov rax, user64
    mov ecx, 0x0202             ; IF=1 (the PICs are masked): SYSCALL must clear it
    call run_user64
    CHECK qword [hits], 4, "ring-0 entries from 64-bit ring 3 (INT IST, INT RSP0, SYSCALL)"
    jmp guest_pass

int43_handler:
    mov rbp, rsp
    mov rax, rsp
    CHECK rax, ist_stack_top - 40, "RSP in INT 0x43 handler (IST1, same ring)"
    CHECK qword [rbp], [u_ret], "INT 0x43: pushed RIP"
    CHECK qword [rbp + 8], SEL_KCODE64, "INT 0x43: pushed CS"
    CHECK qword [rbp + 24], [u_esp], "INT 0x43: pushed RSP"
    CHECK qword [rbp + 32], SEL_KDATA64, "INT 0x43: pushed SS"
    add qword [hits], 1
    iretq

user64:
    CHECK_SEG64 cs, SEL_UCODE64 | 3
    CHECK_SEG64 ss, SEL_UDATA64 | 3
    ; INT with IST1
    mov [u_esp], rsp
    mov qword [u_ret], .after41
    pushfq
    pop qword [u_flags]
    int 0x41
.after41:
    mov rax, rsp
    CHECK rax, [u_esp], "RSP after IRETQ from INT 0x41"
    ; INT with RSP0
    mov qword [u_ret], .after42
    int 0x42
.after42:
    CHECK_SEG64 cs, SEL_UCODE64 | 3
    ; SYSCALL / SYSRET
    mov [u_esp], rsp
    mov qword [u_ret], .after_syscall
    xor eax, eax                ; known arithmetic flags: ZF, PF
    pushfq
    pop qword [u_flags]
    syscall
.after_syscall:
    pushfq                      ; first, before any flag-changing instruction
    pop qword [u_flags2]
    CHECK_SEG64 cs, SEL_UCODE64 | 3
    CHECK_SEG64 ss, SEL_UDATA64 | 3
    mov rax, rsp
    CHECK rax, [u_esp], "RSP after SYSRET"
    CHECK qword [u_flags2], [u_flags], "RFLAGS after SYSRET (from R11)"
    ret

int41_handler:                  ; IST1: RSP = IST1 - 40; frame RIP, CS, RFLAGS, RSP, SS
    mov rbp, rsp
    mov rax, rsp
    CHECK rax, ist_stack_top - 40, "RSP in INT 0x41 handler (IST1)"
    CHECK qword [rbp], [u_ret], "INT 0x41: pushed RIP"
    CHECK qword [rbp + 8], SEL_UCODE64 | 3, "INT 0x41: pushed CS"
    CHECK qword [rbp + 16], [u_flags], "INT 0x41: pushed RFLAGS"
    CHECK qword [rbp + 24], [u_esp], "INT 0x41: pushed RSP"
    CHECK qword [rbp + 32], SEL_UDATA64 | 3, "INT 0x41: pushed SS"
    CHECK_SEG64 ss, 0           ; a CPL change in 64-bit mode loads a null SS
    add qword [hits], 1
    iretq

int42_handler:
    mov rbp, rsp
    mov rax, rsp
    CHECK rax, tss_stack_top - 40, "RSP in INT 0x42 handler (TSS.RSP0)"
    CHECK qword [rbp], [u_ret], "INT 0x42: pushed RIP"
    add qword [hits], 1
    iretq

syscall_target:                 ; still on the user stack; RCX = RIP, R11 = RFLAGS
    CHECK_SEG64 cs, SEL_KCODE64
    CHECK_SEG64 ss, SEL_KDATA64
    mov rax, rsp
    CHECK rax, [u_esp], "RSP after SYSCALL (unchanged)"
    CHECK rcx, [u_ret], "RCX after SYSCALL (return RIP)"
    CHECK r11, [u_flags], "R11 after SYSCALL (RFLAGS)"
    pushfq
    pop rax
    and eax, 0x700
    CHECK rax, 0, "RFLAGS after SYSCALL (FMASK clears TF, IF, DF)"
    add qword [hits], 1
    o64 sysret

GUEST_END
