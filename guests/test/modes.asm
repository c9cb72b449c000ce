; modes.asm: the CPU's operating modes and the switches between them, per the Intel SDM
; vol. 3 §10.9 (switching to and from protected mode), §21.1 (real-address mode: IVT,
; segment arithmetic), §10.8.5 (IA-32e mode), §5.2.1 (compatibility mode) and §22.1
; (16-bit code segments):
;   32-bit PM → 16-bit PM (CS.D=0: 16-bit pushes) → real mode with FS left as a 4 GiB
;   ("unreal") segment: reads/writes above 1 MiB through FS, segment arithmetic
;   (base = selector * 16), INT n and #DE through the IVT with exact frames → 16-bit PM →
;   32-bit PM → long mode (EFER.LMA, 8-byte pushes, 64-bit registers) → compatibility mode
;   (LMA still 1, 0x48 is DEC EAX, not REX) → 64-bit → back to 32-bit PM, paging off, LMA 0.
; Real-mode code only records what it sees; 32-bit code checks it afterwards.

%define TEST_NAME "modes"
%define WANT_LONG
%include "guest.inc"

section .data
align 4
high_marker:  dd 0xC0FFEE11     ; above 1 MiB: read from real mode through FS
high_written: dd 0              ; real mode writes 0x5EA1F00D here through FS

section .bss
alignb 4
saved_esp:    resd 1

section .text
BITS32
main:
    mov [saved_esp], esp
    jmp SEL_CODE16:pm16_down

pm32_back:                      ; from 16-bit protected mode
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, [saved_esp]
    lidt [idt32_desc]

    CHECK dword [pm16_down_push], 2, "16-bit PM (down): PUSH size"
    CHECK dword [pm16_up_push], 2, "16-bit PM (up): PUSH size"
    CHECK dword [pm16_up_cs], SEL_CODE16, "16-bit PM: CS"
    CHECK dword [pm16_o32], 0x12345678, "16-bit PM: 0x66 operand-size prefix"
    CHECK dword [rm_cs], 0, "real mode: CS after the far jump"
    mov eax, [rm_cr0]
    and eax, 0x80000001
    CHECK eax, 0, "real mode: CR0.PE/PG"
    CHECK dword [rm_fs_read], 0xC0FFEE11, "real mode: read above 1 MiB through FS (unreal)"
    CHECK dword [high_written], 0x5EA1F00D, "real mode: write above 1 MiB through FS (unreal)"
    CHECK dword [rm_seg_read], 0xABCD, "real mode: ES=0x0100 offset 0x10 is linear 0x1010"
    CHECK dword [rm_int_ip], rm_after_int, "real mode INT 0x40: pushed IP"
    CHECK dword [rm_int_cs], 0, "real mode INT 0x40: pushed CS"
    mov eax, [rm_flags_before]
    CHECK dword [rm_int_flags], eax, "real mode INT 0x40: pushed FLAGS"
    mov eax, [rm_flags_inside]
    and eax, 0x0300
    CHECK eax, 0, "real mode INT 0x40: IF and TF cleared in the handler"
    CHECK dword [rm_ax_after], 0x2222, "real mode INT 0x40: AX from the handler"
    CHECK dword [rm_de_ip], rm_div, "real mode #DE: pushed IP (the DIV itself)"
    CHECK dword [rm_de_cs], 0, "real mode #DE: pushed CS"

    mov eax, esp                ; 32-bit code: 4-byte pushes
    push 0
    sub eax, esp
    add esp, 4
    CHECK eax, 4, "32-bit PM: PUSH size"
    mov ebx, long64
    jmp lm_enter

BITS64
long64:
    mov ecx, EFER_MSR
    rdmsr
    and eax, (1 << 10) | (1 << 8)
    CHECK rax, 0x500, "long mode: EFER.LMA and LME"
    mov rax, cr0
    shr eax, 31
    CHECK rax, 1, "long mode: CR0.PG"
    mov rax, rsp
    push 0
    sub rax, rsp
    add rsp, 8
    CHECK rax, 8, "64-bit mode: PUSH size"
    mov rax, 0x123456789ABCDEF0
    mov rdx, rax
    shr rdx, 32
    CHECK rdx, 0x12345678, "64-bit mode: 64-bit register"
    mov eax, 0xFFFFFFFF
    mov rdx, -1
    mov edx, eax                ; a 32-bit write zero-extends in 64-bit mode
    CHECK rdx, 0xFFFFFFFF, "64-bit mode: 32-bit writes zero-extend"
    push SEL_KCODE32            ; to compatibility mode: CS.L=0, D=1 while LMA=1
    mov rax, compat32
    push rax
    retfq

BITS32
compat32:
    mov ecx, EFER_MSR
    rdmsr
    and eax, 1 << 10
    CHECK eax, 1 << 10, "compatibility mode: EFER.LMA"
    mov eax, esp
    push 0
    sub eax, esp
    add esp, 4
    CHECK eax, 4, "compatibility mode: PUSH size"
    mov eax, 5
    db 0x48                     ; DEC EAX here; a REX.W prefix in 64-bit mode
    CHECK eax, 4, "compatibility mode: 0x48 is DEC EAX"
    jmp SEL_KCODE64:back64

BITS64
back64:
    mov rax, rsp
    push 0
    sub rax, rsp
    add rsp, 8
    CHECK rax, 8, "64-bit mode again: PUSH size"
    mov ebx, legacy32
    jmp lm_leave

BITS32
legacy32:
    mov ecx, EFER_MSR
    rdmsr
    and eax, (1 << 10) | (1 << 8)
    CHECK eax, 0, "back in legacy PM: EFER.LMA and LME"
    mov eax, cr0
    and eax, 0x80000001
    CHECK eax, 1, "back in legacy PM: CR0.PG=0, PE=1"
    mov eax, esp
    push 0
    sub eax, esp
    add esp, 4
    CHECK eax, 4, "back in legacy PM: PUSH size"
    jmp guest_pass

; ----------------------------------------------------------------------------
; 16-bit protected mode and real mode (copied to LOW_BASE)
; ----------------------------------------------------------------------------
section .lowcode
bits 16
pm16_down:                      ; CS = 0x50: 16-bit code segment, base 0
    mov ax, SEL_DATA16
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov gs, ax
    mov ax, SEL_KDATA           ; FS keeps its 4 GiB limit in real mode
    mov fs, ax
    mov sp, LOW_BASE - 0x100
    mov bx, sp
    push ax
    sub bx, sp
    pop ax
    mov [pm16_down_push], bx
    lidt [rm_idtr]
    mov eax, cr0
    and eax, ~1
    mov cr0, eax
    jmp 0x0000:rm_entry

rm_entry:
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, LOW_BASE - 0x100
    mov ax, cs
    mov [rm_cs], ax
    mov eax, cr0
    mov [rm_cr0], eax
    mov esi, high_marker
    mov eax, [fs:esi]
    mov [rm_fs_read], eax
    mov dword [fs:esi + 4], 0x5EA1F00D
    mov ax, 0x0100              ; ES base = 0x1000
    mov es, ax
    mov word [es:0x10], 0xABCD
    xor ax, ax
    mov es, ax
    mov ax, [0x1010]
    mov [rm_seg_read], ax

    mov word [0x40 * 4], rm_int40
    mov word [0x40 * 4 + 2], 0
    mov word [0 * 4], rm_de_handler
    mov word [0 * 4 + 2], 0
    mov ax, 0x1111
    pushf
    pop word [rm_flags_before]
    int 0x40
rm_after_int:
    mov [rm_ax_after], ax
    mov ax, 1
    xor dx, dx
    xor cx, cx
rm_div:
    div cx
rm_div_resume:
    cli
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp SEL_CODE16:pm16_up

pm16_up:
    mov ax, cs
    mov [pm16_up_cs], ax
    mov ax, SEL_DATA16
    mov ds, ax
    mov ss, ax
    mov es, ax
    mov bx, sp
    push ax
    sub bx, sp
    pop ax
    mov [pm16_up_push], bx
    mov eax, 0x12345678         ; needs the 0x66 prefix in a 16-bit segment
    mov [pm16_o32], eax
    jmp dword SEL_KCODE32:pm32_back

rm_int40:                       ; frame: IP, CS, FLAGS
    push bp
    mov bp, sp
    pushf
    pop word [rm_flags_inside]
    push ax
    mov ax, [bp + 2]
    mov [rm_int_ip], ax
    mov ax, [bp + 4]
    mov [rm_int_cs], ax
    mov ax, [bp + 6]
    mov [rm_int_flags], ax
    pop ax
    mov ax, 0x2222
    pop bp
    iret

rm_de_handler:                  ; #DE is a fault: IP points at the DIV
    push bp
    mov bp, sp
    push ax
    mov ax, [bp + 2]
    mov [rm_de_ip], ax
    mov ax, [bp + 4]
    mov [rm_de_cs], ax
    mov word [bp + 2], rm_div_resume
    pop ax
    pop bp
    iret

align 4
rm_idtr:         dw 0x3FF
                 dd 0
align 4                         ; results, read as dwords from 32-bit code
rm_cs:           dd 0
rm_cr0:          dd 0
rm_fs_read:      dd 0
rm_seg_read:     dd 0
rm_int_ip:       dd 0
rm_int_cs:       dd 0
rm_int_flags:    dd 0
rm_flags_before: dd 0
rm_flags_inside: dd 0
rm_ax_after:     dd 0
rm_de_ip:        dd 0
rm_de_cs:        dd 0
pm16_down_push:  dd 0
pm16_up_push:    dd 0
pm16_up_cs:      dd 0
pm16_o32:        dd 0

section .text
GUEST_END
