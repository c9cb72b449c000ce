; sensitive.asm: the sensitive-but-unprivileged instructions at CPL 3 (the reason x86
; fails the Popek-Goldberg requirements), 32-bit protected mode, checked against the
; Intel SDM vol. 2 (PUSHF/POPF, CLI/STI, SGDT/SIDT/SLDT/STR/SMSW, LAR/LSL/VERR/VERW,
; MOV from Sreg, IN/OUT) and vol. 1 §19.5.2 (I/O permission bitmap), vol. 3 §2.5 (UMIP).
; The UMIP part runs only when CPUID.(EAX=7,ECX=0):ECX[2] says UMIP exists (QEMU's
; default CPU has none; -cpu max has it); it prints a note when skipped.

%define TEST_NAME "sensitive"
%include "guest.inc"

SEL_LDT      equ 0x78           ; an LDT descriptor (so SLDT has something to show)
SEL_CONF0    equ 0x80           ; conforming readable code, DPL 0
SEL_CGATE3   equ 0x88           ; call gate, DPL 3, offset 0
SEL_IGATE3   equ 0x90           ; an interrupt-gate type in the GDT (invalid for LAR)
SEL_RODATA3  equ 0x98           ; read-only data, DPL 3, byte limit 0x1234
SEL_XCODE3   equ 0xA0           ; execute-only code, DPL 3
SEL_TOOBIG   equ 0x100          ; beyond the GDT limit (0xFF)

section .bss
alignb 8
ldt:       resq 2
ubuf:      resb 16
cr0_val:   resd 1
has_umip:  resd 1

section .text
BITS32

; EXPECT_GP0 instruction: the instruction must raise #GP(0) at itself, from CPL 3.
%macro EXPECT_GP0 1+
  %defstr %%txt %1
  [section .data]
  %%what_none: db "no #GP from ", %%txt, 0
  %%what_vec:  db "vector for ", %%txt, 0
  %%what_err:  db "#GP error code for ", %%txt, 0
  %%what_eip:  db "#GP saved EIP for ", %%txt, 0
  __SECT__
  ARM_TRAP %%resume
%%insn:
  %1
  mov esi, %%what_none
  jmp fail_str
%%resume:
  CHECKL dword [trap_vector], 13, %%what_vec
  CHECKL dword [trap_err], 0, %%what_err
  CHECKL dword [trap_eip], %%insn, %%what_eip
%endmacro

; CHECK with a string label as the message (the macro in guest.inc takes a literal).
%macro CHECKL 3
  push eax
  push edx
  mov eax, %1
  mov edx, %2
  cmp eax, edx
  je %%ok
  mov esi, %3
  jmp check_fail
%%ok:
  pop edx
  pop eax
%endmacro

; LARCHK sel, zf, masked-value: LAR r32 at CPL 3. Value compared under 0x00F0FF00
; (bits 19:16 are undefined per the SDM).
%macro LARCHK 3
  mov ecx, %1
  mov eax, 0xDEADBEEF
  lar eax, ecx
  setz dl
  movzx edx, dl
  CHECK edx, %2, %str(LAR %1 ZF)
  %if %2
    and eax, 0x00F0FF00
    CHECK eax, %3, %str(LAR %1 value)
  %else
    CHECK eax, 0xDEADBEEF, %str(LAR %1 must leave the destination unchanged)
  %endif
%endmacro

%macro LSLCHK 3
  mov ecx, %1
  mov eax, 0xDEADBEEF
  lsl eax, ecx
  setz dl
  movzx edx, dl
  CHECK edx, %2, %str(LSL %1 ZF)
  CHECK eax, %3, %str(LSL %1 value)
%endmacro

%macro VERCHK 3                  ; sel, VERR ZF, VERW ZF
  mov ecx, %1
  verr cx
  setz dl
  movzx edx, dl
  CHECK edx, %2, %str(VERR %1 ZF)
  verw cx
  setz dl
  movzx edx, dl
  CHECK edx, %3, %str(VERW %1 ZF)
%endmacro

main:
    mov al, 0xFF                ; mask both PICs: STI at IOPL 3 must not let an IRQ in
    out 0x21, al
    out 0xA1, al
    call tss32_init
    mov eax, 0x80               ; port 0x80 allowed too; 0x81 stays denied
    btr [tss32_iomap], eax

    mov eax, SEL_LDT
    mov edx, ldt
    mov ecx, 2 * 8 - 1
    mov ebx, 0x0082             ; present, DPL 0, LDT
    call gdt_set
    mov ax, SEL_LDT
    lldt ax
    mov eax, SEL_CONF0
    xor edx, edx
    mov ecx, 0xFFFFF
    mov ebx, 0xC09E             ; conforming, readable, DPL 0
    call gdt_set
    mov dword [gdt + SEL_CGATE3], SEL_KCODE32 << 16         ; offset 0, selector 0x08
    mov dword [gdt + SEL_CGATE3 + 4], 0x0000EC00            ; present, DPL 3, call gate
    mov dword [gdt + SEL_IGATE3], SEL_KCODE32 << 16
    mov dword [gdt + SEL_IGATE3 + 4], 0x0000EE00            ; present, DPL 3, interrupt gate
    mov eax, SEL_RODATA3
    mov edx, 0x10000
    mov ecx, 0x1234
    mov ebx, 0x40F0             ; read-only data, DPL 3, byte granular
    call gdt_set
    mov eax, SEL_XCODE3
    xor edx, edx
    mov ecx, 0xFFFFF
    mov ebx, 0xC0F8             ; execute-only code, DPL 3
    call gdt_set

    mov eax, cr0
    mov [cr0_val], eax
    xor eax, eax
    cpuid
    cmp eax, 7
    jb .no_leaf7
    mov eax, 7
    xor ecx, ecx
    cpuid
    and ecx, 1 << 2
    shr ecx, 2
    mov [has_umip], ecx
.no_leaf7:

    mov eax, user_iopl0
    mov ecx, 0x0002             ; IOPL 0, IF 0
    call run_user32
    mov eax, user_iopl3
    mov ecx, 0x3002             ; IOPL 3, IF 0
    call run_user32

    cmp dword [has_umip], 0
    jne .umip
    PRINT "note: CPUID reports no UMIP; the UMIP checks were skipped", 10
    jmp guest_pass
.umip:
    mov eax, cr4
    or eax, 1 << 11             ; CR4.UMIP
    mov cr4, eax
    mov eax, user_umip
    mov ecx, 0x0002
    call run_user32
    sgdt [ubuf]                 ; CPL 0 is not affected by UMIP
    CHECK dword [ubuf + 2], gdt, "SGDT at CPL 0 with UMIP: base"
    mov eax, cr4
    and eax, ~(1 << 11)
    mov cr4, eax
    PRINT "note: UMIP checks ran", 10
    jmp guest_pass

; --------------------------------------------------------------------------
; CPL 3, IOPL 0
; --------------------------------------------------------------------------
user_iopl0:
    mov ax, cs
    movzx eax, ax
    CHECK eax, SEL_UCODE32 | 3, "MOV r, CS at CPL 3"
    mov ax, ss
    movzx eax, ax
    CHECK eax, SEL_UDATA | 3, "MOV r, SS at CPL 3"
    mov ax, ds
    movzx eax, ax
    CHECK eax, SEL_UDATA | 3, "MOV r, DS at CPL 3"

    pushfd
    pop eax
    and eax, 0x3202
    CHECK eax, 0x0002, "PUSHFD at CPL 3 IOPL 0: IF, IOPL, bit 1"
    pushfd                      ; POPF trying to set IF and IOPL: both silently kept
    pop eax
    or eax, 0x3200
    push eax
    popfd
    pushfd
    pop eax
    and eax, 0x3200
    CHECK eax, 0, "POPFD at CPL 3 IOPL 0 changed IF or IOPL"
    EXPECT_GP0 cli
    EXPECT_GP0 sti

    mov dword [ubuf + 2], 0
    sgdt [ubuf]
    movzx eax, word [ubuf]
    CHECK eax, 0xFF, "SGDT at CPL 3: limit"
    CHECK dword [ubuf + 2], gdt, "SGDT at CPL 3: base"
    sidt [ubuf]
    movzx eax, word [ubuf]
    CHECK eax, 256 * 8 - 1, "SIDT at CPL 3: limit"
    CHECK dword [ubuf + 2], idt32, "SIDT at CPL 3: base"
    xor eax, eax
    sldt ax
    CHECK eax, SEL_LDT, "SLDT at CPL 3"
    xor eax, eax
    str ax
    CHECK eax, SEL_TSS32, "STR at CPL 3"
    mov word [ubuf], 0xAAAA
    sldt [ubuf]
    movzx eax, word [ubuf]
    CHECK eax, SEL_LDT, "SLDT m16 at CPL 3"
    xor eax, eax
    smsw ax
    mov edx, [cr0_val]
    and edx, 0xFFFF
    CHECK eax, edx, "SMSW r16 at CPL 3 (CR0 15:0)"
    mov dword [ubuf], 0xAAAAAAAA
    smsw [ubuf]
    mov eax, [ubuf]
    mov edx, [cr0_val]
    and edx, 0xFFFF
    or edx, 0xAAAA0000          ; SMSW m16 writes only 16 bits
    CHECK eax, edx, "SMSW m16 at CPL 3"

    LARCHK SEL_UCODE32 | 3, 1, 0x00C0FB00
    LARCHK SEL_UDATA | 3, 1, 0x00C0F300
    LARCHK SEL_KCODE32, 0, 0            ; DPL 0 < CPL 3: not visible
    LARCHK SEL_KDATA | 3, 0, 0
    LARCHK SEL_CONF0 | 3, 1, 0x00C09E00 ; conforming code skips the DPL check
    LARCHK SEL_CGATE3 | 3, 1, 0x0000EC00 ; call gates are valid for LAR
    LARCHK SEL_IGATE3 | 3, 0, 0         ; interrupt gates are not
    LARCHK SEL_TSS32, 0, 0              ; TSS type is valid but DPL 0 < CPL 3
    LARCHK SEL_LDT | 3, 0, 0
    LARCHK 0, 0, 0                      ; null selector
    LARCHK SEL_TOOBIG | 3, 0, 0         ; beyond the GDT limit
    LARCHK SEL_XCODE3 | 3, 1, 0x00C0F800

    LSLCHK SEL_UCODE32 | 3, 1, 0xFFFFFFFF   ; G=1: limit << 12 | 0xFFF
    LSLCHK SEL_RODATA3 | 3, 1, 0x1234       ; G=0: the raw limit
    LSLCHK SEL_KDATA, 0, 0xDEADBEEF
    LSLCHK SEL_CGATE3 | 3, 0, 0xDEADBEEF    ; gates are not valid for LSL
    LSLCHK SEL_TSS32, 0, 0xDEADBEEF         ; DPL 0
    LSLCHK 0, 0, 0xDEADBEEF

    VERCHK SEL_UCODE32 | 3, 1, 0        ; readable code, never writable
    VERCHK SEL_UDATA | 3, 1, 1
    VERCHK SEL_RODATA3 | 3, 1, 0
    VERCHK SEL_XCODE3 | 3, 0, 0         ; execute-only
    VERCHK SEL_KDATA, 0, 0              ; DPL 0
    VERCHK SEL_CONF0 | 3, 1, 0          ; conforming readable code: readable from CPL 3
    VERCHK SEL_CGATE3 | 3, 0, 0         ; system descriptor
    VERCHK 0, 0, 0
    VERCHK SEL_TOOBIG | 3, 0, 0

    mov al, 0                   ; allowed by the I/O bitmap: no fault
    out 0x80, al
    in al, 0x80
    EXPECT_GP0 in al, 0x81
    EXPECT_GP0 out 0x81, al
    mov dx, DEBUGCON            ; a word at 0xE9 also needs 0xEA, which is denied
    EXPECT_GP0 in ax, dx
    mov dx, 0x80
    EXPECT_GP0 in ax, dx        ; 0x81 denied
    xor eax, eax
    ret

; --------------------------------------------------------------------------
; CPL 3, IOPL 3: CLI/STI and POPF's IF work, IOPL still cannot change, no bitmap check
; --------------------------------------------------------------------------
user_iopl3:
    pushfd
    pop eax
    and eax, 0x3200
    CHECK eax, 0x3000, "PUSHFD at CPL 3 IOPL 3"
    pushfd                      ; POPF: IF=1 (allowed: CPL <= IOPL), IOPL=0 (ignored: CPL > 0)
    pop eax
    and eax, ~0x3000
    or eax, 0x200
    push eax
    popfd
    pushfd
    pop ebx
    cli
    and ebx, 0x3200
    CHECK ebx, 0x3200, "POPFD at CPL 3 IOPL 3: IF set, IOPL kept"
    sti
    pushfd
    pop eax
    cli
    pushfd
    pop ebx
    and eax, 0x200
    CHECK eax, 0x200, "STI at IOPL 3"
    and ebx, 0x200
    CHECK ebx, 0, "CLI at IOPL 3"
    in al, 0x81                 ; IOPL 3 >= CPL: the bitmap is not consulted
    mov dx, DEBUGCON
    in ax, dx
    xor eax, eax
    ret

; --------------------------------------------------------------------------
; CPL 3 with CR4.UMIP: the descriptor-table reads and SMSW fault
; --------------------------------------------------------------------------
user_umip:
    EXPECT_GP0 sgdt [ubuf]
    EXPECT_GP0 sidt [ubuf]
    EXPECT_GP0 sldt ax
    EXPECT_GP0 str ax
    EXPECT_GP0 smsw ax
    mov ax, cs                  ; not covered by UMIP
    movzx eax, ax
    CHECK eax, SEL_UCODE32 | 3, "MOV r, CS with UMIP"
    xor eax, eax
    ret

GUEST_END
