; vm86.asm: virtual-8086 mode without the VME extensions (CR4.VME = 0), checked against the
; Intel SDM vol. 3 chapter 20 (§20.2 virtual-8086 mode: 8086-style segments, CPL 3, paging;
; §20.2.7 sensitive instructions; §20.2.8 I/O through the TSS I/O permission bitmap; §20.3
; interrupts and exceptions from virtual-8086 mode) and the vol. 2 pseudo-code of IRET
; (RETURN-TO-VIRTUAL-8086-MODE, RETURN-FROM-VIRTUAL-8086-MODE) and INT n
; (INTERRUPT-FROM-VIRTUAL-8086-MODE). A tiny ring-0 monitor, in the manner of Linux's vm86
; support, emulates what traps at IOPL < 3.
;   phase 1, IOPL 3, entered by IRET at CPL 0: 16/32-bit arithmetic, segment bases
;     (selector × 16), far CALL/RET, PUSHF/POPF/CLI/STI (POPF cannot change IOPL, PUSHFD shows
;     VM = 0), INT n through a DPL-3 IDT gate to ring 0 (the frame: EIP, CS, EFLAGS, ESP, SS, ES,
;     DS, FS, GS on the TSS ring-0 stack; DS..GS null in the handler), the I/O bitmap consulted
;     although IOPL = 3, INT n to a DPL-0 gate → #GP(vector × 8 + 2) and to a ring-3 handler →
;     #GP(its CS selector), page faults with U = 1, HLT → #GP(0), LAR → #UD; INT 0x31 returns
;     to protected mode.
;   phase 2, IOPL 0: CLI, STI, PUSHF, POPF, INT n and IRET trap with #GP(0) and the monitor
;     emulates them (a virtual IF; INT n reflected through the real-mode IVT); INT3 and INTO go
;     through the IDT without #GP; the monitor returns to protected mode for INT 0x31.
;   phase 3: a JMP to a TSS whose EFLAGS image has VM = 1 enters virtual-8086 mode with the
;     TSS's selectors as 8086 segments; INT through a DPL-3 task gate switches back and saves
;     the virtual-8086 state (VM = 1 in the saved EFLAGS).
; Low-memory layout: the v86 code and the shared monitor block are in .lowcode at 0x2000; v86
; stacks at 0x6000 (phases 1-2) and 0x7000 (phase 3); page 0x10000 is not present and page
; 0x11000 supervisor-only until the page-fault handler fixes them.

%define TEST_NAME "vm86"
%include "guest.inc"

EFL_VM      equ 0x20000
EFL_IOPL3   equ 0x3000
EFL_IF      equ 0x200
V86_SS      equ 0x0600
V86_SP      equ 0x1000
TASK_SS     equ 0x0700
TASK_SP     equ 0x0800
SEG_LOW     equ LOW_BASE >> 4   ; 0x0200: the segment whose base is the low code
SEL_TSSB    equ 0x78
PF_PAGE_NP  equ 0x10000
PF_PAGE_SUP equ 0x11000
VEC_SERVICE equ 0x40            ; DPL-3 interrupt gate to ring 0
VEC_DPL0    equ 0x41            ; DPL-0 gate: INT from v86 is #GP(0x41 * 8 + 2)
VEC_RING3   equ 0x42            ; DPL-3 gate to a ring-3 code segment: #GP(0x18)
VEC_REFLECT equ 0x60            ; handled in v86 through the IVT (phase 2)
VEC_TASK    equ 0x32            ; DPL-3 task gate to task A

section .bss
alignb 4096
page_dir:   resd 1024
page_tab:   resd 1024
alignb 16
tss_b:      resb 104
            resb 2048
tss_b_stack_top:

section .text
BITS32

; CHECK_LOW16 address, expected, "what": the low word of a dword (selector slots).
%macro CHECK_LOW16 3
  push eax
  movzx eax, word [%1]
  CHECK eax, %2, %3
  pop eax
%endmacro

main:
    mov al, 0xFF                ; mask both 8259s: phase 1 runs with IF = 1
    out 0x21, al
    out 0xA1, al
    call tss32_init             ; SS0:ESP0, I/O bitmap (0xE9 and 0xF4-0xF7 allowed), LTR, INT 0x31
    mov eax, 0x21               ; v86 may also use the master 8259's IMR
    btr [tss32_iomap], eax

    ; IDT: the monitor's #GP and #PF, a ring-0 service for INT 0x40, INT3/INTO/#UD recorders.
    mov eax, 13
    mov edx, gp_monitor
    mov ecx, 0x8E
    call idt32_set
    mov eax, 14
    mov edx, pf_handler
    call idt32_set
    mov eax, VEC_SERVICE
    mov edx, service_handler
    mov ecx, 0xEE
    call idt32_set
    mov eax, VEC_RING3
    mov edx, 0
    mov ecx, (SEL_UCODE32 << 16) | 0xEE
    call idt32_set
    mov eax, 3
    mov edx, exc3_stub
    mov ecx, 0xEE               ; INT3 and INTO check the gate's DPL against CPL 3
    call idt32_set
    mov eax, 4
    mov edx, exc4_stub
    call idt32_set
    mov eax, 6
    mov edx, exc6_stub
    mov ecx, 0x8E
    call idt32_set
    mov eax, VEC_TASK
    xor edx, edx
    mov ecx, (SEL_TSS32 << 16) | 0xE5   ; task gate, DPL 3, to task A
    call idt32_set

    ; Real-mode IVT entries the monitor reflects INT n through (all to one v86 handler).
    mov dword [VEC_DPL0 * 4], (SEG_LOW << 16) | (ivt_handler - lowcode_start)
    mov dword [VEC_RING3 * 4], (SEG_LOW << 16) | (ivt_handler - lowcode_start)
    mov dword [VEC_REFLECT * 4], (SEG_LOW << 16) | (ivt_handler - lowcode_start)

    ; Paging: 0-4 MiB identity, user/writable, except the two pages the v86 code faults on.
    mov edi, page_tab
    mov eax, 7
    mov ecx, 1024
.pte:
    stosd
    add eax, 0x1000
    loop .pte
    mov dword [page_tab + (PF_PAGE_NP >> 12) * 4], PF_PAGE_NP | 6   ; not present
    mov dword [page_tab + (PF_PAGE_SUP >> 12) * 4], PF_PAGE_SUP | 3 ; supervisor
    mov dword [page_dir], page_tab + 7
    mov eax, page_dir
    mov cr3, eax
    mov [tss32 + 28], eax       ; CR3 of task A: loaded when phase 3 switches back to it
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax

    ; ---- phase 1: IRET into virtual-8086 mode with IOPL 3 ----
    PRINT "vm86: phase 1, IOPL 3, entered by IRET", 10
    call reset_shared
    mov eax, v86_phase1
    mov ecx, EFL_VM | EFL_IOPL3 | 2
    call run_v86
    call v86_report
    CHECK dword [v_done], 1, "phase 1 did not reach its end"
    ; The frame the INT 0x40 handler saw: 9 dwords below ESP0 of the TSS.
    CHECK dword [svc_esp], tss_stack_top - 36, "INT from v86: handler ESP = ESP0 - 36"
    CHECK dword [svc_frame + 0], v86_after_int40, "INT from v86: pushed EIP"
    CHECK_LOW16 svc_frame + 4, 0, "INT from v86: pushed CS"
    mov eax, [svc_frame + 8]
    and eax, EFL_VM | EFL_IOPL3 | EFL_IF
    CHECK eax, EFL_VM | EFL_IOPL3 | EFL_IF, "INT from v86: pushed EFLAGS (VM, IOPL, IF)"
    CHECK dword [svc_frame + 12], V86_SP - 2, "INT from v86: pushed ESP"
    CHECK_LOW16 svc_frame + 16, V86_SS, "INT from v86: pushed SS"
    CHECK_LOW16 svc_frame + 20, 0x0123, "INT from v86: pushed ES"
    CHECK_LOW16 svc_frame + 24, 0, "INT from v86: pushed DS"
    CHECK_LOW16 svc_frame + 28, 0x0456, "INT from v86: pushed FS"
    CHECK_LOW16 svc_frame + 32, 0x0789, "INT from v86: pushed GS"
    CHECK dword [svc_sregs + 0], 0, "handler DS is null"
    CHECK dword [svc_sregs + 4], 0, "handler ES is null"
    CHECK dword [svc_sregs + 8], 0, "handler FS is null"
    CHECK dword [svc_sregs + 12], 0, "handler GS is null"
    CHECK dword [svc_cs], SEL_KCODE32, "handler CS (CPL 0)"
    mov eax, [svc_flags]
    and eax, EFL_VM | EFL_IF
    CHECK eax, 0, "interrupt gate from v86 clears VM and IF"
    CHECK dword [pf_cr2 + 0], PF_PAGE_NP + 0x10, "first #PF: CR2"
    CHECK dword [pf_cr2 + 4], PF_PAGE_SUP + 0x20, "second #PF: CR2"
    CHECK dword [pf_esp], tss_stack_top - 40, "#PF from v86: handler ESP = ESP0 - 40"
    CHECK dword [pf_eip + 0], v86_pf_write, "first #PF: saved EIP"
    CHECK_LOW16 PF_PAGE_NP + 0x10, 0x5A5A, "the faulting v86 write reached memory"
    PRINT "vm86: phase 1 ok", 10

    ; ---- phase 2: IOPL 0, the monitor emulates the sensitive instructions ----
    PRINT "vm86: phase 2, IOPL 0, monitor", 10
    call reset_shared
    mov eax, v86_phase2
    mov ecx, EFL_VM | 2
    call run_v86
    call v86_report
    CHECK dword [v_done], 2, "phase 2 did not reach its end"
    CHECK dword [mon_gp_count], 7, "monitor: #GP count (CLI STI PUSHF POPF INT IRET INT)"
    CHECK dword [mon_real_if], 0, "monitor: the real IF stayed 0"
    CHECK dword [mon_exited], 1, "monitor: INT 0x31 returned to protected mode"
    PRINT "vm86: phase 2 ok", 10

    ; ---- phase 3: a task switch into a virtual-8086 task and back ----
    PRINT "vm86: phase 3, task switch", 10
    call reset_shared
    mov dword [tss_b + 4], tss_b_stack_top
    mov dword [tss_b + 8], SEL_KDATA
    mov eax, cr3
    mov [tss_b + 28], eax
    mov dword [tss_b + 32], v86_task
    mov dword [tss_b + 36], EFL_VM | EFL_IOPL3 | 2
    mov dword [tss_b + 56], TASK_SP
    mov dword [tss_b + 72], 0x0123      ; ES
    mov dword [tss_b + 76], 0           ; CS
    mov dword [tss_b + 80], TASK_SS     ; SS
    mov dword [tss_b + 84], SEG_LOW     ; DS
    mov dword [tss_b + 88], 0x0456      ; FS
    mov dword [tss_b + 92], 0x0789      ; GS
    mov dword [tss_b + 96], 0           ; LDT
    mov word [tss_b + 102], 104         ; no I/O bitmap
    mov eax, SEL_TSSB
    mov edx, tss_b
    mov ecx, 103
    mov ebx, 0x0089
    call gdt_set
    mov ebx, 0x1111
    jmp SEL_TSSB:0
task_a_back:                    ; task B's INT 0x32 (a task gate) resumes task A here
    CHECK ebx, 0x1111, "task A registers restored"
    xor eax, eax
    str ax
    CHECK eax, SEL_TSS32, "TR is task A again"
    CHECK dword [tss32], SEL_TSSB, "task gate: previous-task link = task B"
    pushfd                      ; nested by the task gate: clear NT, free task B
    and dword [esp], ~0x4000
    popfd
    and byte [gdt + SEL_TSSB + 5], ~2
    call v86_report
    CHECK dword [v_done], 3, "phase 3 did not reach its end"
    mov eax, [tss_b + 36]
    and eax, EFL_VM | EFL_IOPL3
    CHECK eax, EFL_VM | EFL_IOPL3, "task B saved EFLAGS: VM and IOPL"
    CHECK dword [tss_b + 32], v86_task_after - LOW_BASE, "task B saved EIP"
    CHECK_LOW16 tss_b + 76, SEG_LOW, "task B saved CS"
    CHECK_LOW16 tss_b + 80, TASK_SS, "task B saved SS"
    CHECK_LOW16 tss_b + 84, SEG_LOW, "task B saved DS"
    CHECK_LOW16 tss_b + 72, 0x0123, "task B saved ES"
    CHECK dword [tss_b + 56], TASK_SP, "task B saved ESP"
    CHECK dword [tss_b + 40], 0xC0DE, "task B saved EAX (read through DS = 0x0200)"
    CHECK dword [tss_b + 44], 0x0123, "task B saved ECX (ES from the TSS)"
    PRINT "vm86: phase 3 ok", 10
    jmp guest_pass

; reset_shared: clears the block the v86 code and the monitor share.
reset_shared:
    push eax
    push ecx
    push edi
    mov edi, shared_start
    mov ecx, shared_end - shared_start
    xor eax, eax
    rep stosb
    pop edi
    pop ecx
    pop eax
    ret

; run_v86: EAX = v86 EIP (CS = 0), ECX = EFLAGS image (VM = 1). IRET at CPL 0 enters
; virtual-8086 mode with SS:SP = 0x0600:0x1000 and DS = ES = FS = GS = 0. Returns when the
; v86 code executes INT 0x31 (directly at IOPL 3, through the monitor otherwise).
run_v86:
    push ebp
    push ebx
    push esi
    push edi
    mov [r0_esp], esp
    push dword 0                ; GS
    push dword 0                ; FS
    push dword 0                ; DS
    push dword 0                ; ES
    push dword V86_SS
    push dword V86_SP
    push ecx                    ; EFLAGS
    push dword 0                ; CS
    push eax                    ; EIP
    iret

; v86_report: a failed check in v86 code left its message and values in the shared block.
v86_report:
    mov esi, [v_what]
    test esi, esi
    jz .ok
    movzx eax, word [v_got]
    movzx edx, word [v_exp]
    jmp check_fail
.ok:
    ret

; ----------------------------------------------------------------------------
; Ring-0 handlers for events from virtual-8086 mode
; ----------------------------------------------------------------------------

; INT 0x40 from v86 (DPL-3 interrupt gate). DS..GS are null here: only SS-relative accesses.
; Records the segment registers, its own EFLAGS and CS, and the frame; returns AX = BX + 0x1111.
service_handler:
    mov [ss:svc_esp], esp
    mov [ss:svc_sregs + 0], ds
    mov [ss:svc_sregs + 4], es
    mov [ss:svc_sregs + 8], fs
    mov [ss:svc_sregs + 12], gs
    mov [ss:svc_cs], cs
    pushfd
    pop dword [ss:svc_flags]
    push ecx
    xor ecx, ecx
.copy:
    mov eax, [ss:esp + 4 + ecx * 4]
    mov [ss:svc_frame + ecx * 4], eax
    add ecx, 1
    cmp ecx, 9
    jb .copy
    pop ecx
    mov eax, ebx
    add ax, 0x1111
    iret                        ; CPL 0, VM = 1 in the frame: back to virtual-8086 mode

; #PF: must come from v86; records error code, CR2, EIP, ESP; makes the page present and user.
pf_handler:
    test dword [esp + 12], EFL_VM
    jz idt32_stubs + 14 * STUB_SIZE     ; not from v86: guest.inc reports it as unexpected
    pushad
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ebp, esp
    lea eax, [ebp + 32]
    mov [pf_esp], eax
    mov ecx, [pf_count]
    cmp ecx, 2
    jae .third
    mov eax, [ebp + 32]
    mov [pf_err + ecx * 4], eax
    mov eax, [ebp + 36]
    mov [pf_eip + ecx * 4], eax
    mov eax, cr2
    mov [pf_cr2 + ecx * 4], eax
    add dword [pf_count], 1
    shr eax, 12
    or dword [page_tab + eax * 4], 5    ; present, user
    mov eax, cr2
    invlpg [eax]
    popad
    add esp, 4
    iret
.third:
    FAIL "a third page fault from v86"

; INT3 (vector 3), INTO (4), #UD (6) from v86: record; resume at mon_resume if the v86 code set it.
; Not from v86: guest.inc's stubs report the event as unexpected.
exc3_stub:
    test dword [esp + 8], EFL_VM
    jz idt32_stubs + 3 * STUB_SIZE
    push dword 3
    jmp exc_common
exc4_stub:
    test dword [esp + 8], EFL_VM
    jz idt32_stubs + 4 * STUB_SIZE
    push dword 4
    jmp exc_common
exc6_stub:
    test dword [esp + 8], EFL_VM
    jz idt32_stubs + 6 * STUB_SIZE
    push dword 6
exc_common:                     ; [esp] vector, +4 EIP, +8 CS, +12 EFLAGS, +16 ESP ...
    pushad
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ebp, esp
    mov eax, [ebp + 32]
    mov [exc_vec], eax
    mov eax, [ebp + 36]
    mov [exc_eip], eax
    mov eax, [mon_resume]
    test eax, eax
    jz .ret
    mov [ebp + 36], eax
    mov dword [mon_resume], 0
.ret:
    popad
    add esp, 4
    iret

; The monitor (#GP). Frame after PUSHAD: [ebp+32] error code, +36 EIP, +40 CS, +44 EFLAGS,
; +48 ESP, +52 SS, +56 ES, +60 DS, +64 FS, +68 GS. Emulates CLI, STI, PUSHF, POPF, INT n and
; IRET against a virtual IF (mon_vif); skips denied IN/OUT and HLT; INT 0x31 leaves v86 mode.
gp_monitor:
    test dword [esp + 12], EFL_VM
    jz idt32_stubs + 13 * STUB_SIZE     ; a #GP outside v86: guest.inc reports it as unexpected
    pushad
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ebp, esp
    add dword [mon_gp_count], 1
    mov eax, [ebp + 32]
    mov [mon_gp_err], eax
    mov eax, [ebp + 44]
    and eax, EFL_IF
    or [mon_real_if], eax
    movzx esi, word [ebp + 40]  ; ESI = linear CS:IP
    shl esi, 4
    movzx eax, word [ebp + 36]
    add esi, eax
    movzx edi, word [ebp + 52]  ; EDI = SS base, ECX = SP
    shl edi, 4
    movzx ecx, word [ebp + 48]
    movzx eax, byte [esi]
    mov [mon_gp_op], eax
    mov ebx, 1                  ; instruction length
    cmp al, 0xFA
    je .cli
    cmp al, 0xFB
    je .sti
    cmp al, 0x9C
    je .pushf
    cmp al, 0x9D
    je .popf
    cmp al, 0xCD
    je .int
    cmp al, 0xCF
    je .iret
    cmp al, 0xF4
    je .advance                 ; HLT: skipped
    cmp al, 0xE4
    jb .unknown
    cmp al, 0xE7
    jbe .io_imm
    cmp al, 0xEC
    jb .unknown
    cmp al, 0xEF
    jbe .io
.unknown:
    mov esi, str_mon_unknown
    xor edx, edx
    jmp check_fail
.io_imm:
    mov ebx, 2
.io:
    add dword [mon_io_count], 1
    jmp .advance
.cli:
    mov dword [mon_vif], 0
    jmp .advance
.sti:
    mov dword [mon_vif], 1
    jmp .advance
.pushf:
    call .vflags
    sub cx, 2
    mov [edi + ecx], ax
    jmp .advance
.popf:
    movzx eax, word [edi + ecx]
    add cx, 2
    call .set_vflags
    jmp .advance
.int:
    movzx eax, byte [esi + 1]
    mov [mon_last_int], eax
    cmp eax, 0x31
    je .leave_v86
    call .vflags                ; push FLAGS (virtual IF), CS, IP of the next instruction
    sub cx, 2
    mov [edi + ecx], ax
    mov ax, [ebp + 40]
    sub cx, 2
    mov [edi + ecx], ax
    mov ax, [ebp + 36]
    add ax, 2
    sub cx, 2
    mov [edi + ecx], ax
    mov dword [mon_vif], 0      ; the 8086 clears IF and TF on INT n
    and dword [ebp + 44], ~0x100
    movzx edx, byte [esi + 1]   ; CS:IP from the IVT
    mov eax, [edx * 4]
    mov [ebp + 36], ax
    shr eax, 16
    mov [ebp + 40], eax
    jmp .done
.iret:
    mov ax, [edi + ecx]
    mov [ebp + 36], ax
    mov word [ebp + 38], 0
    movzx eax, word [edi + ecx + 2]
    mov [ebp + 40], eax
    movzx eax, word [edi + ecx + 4]
    add cx, 6
    call .set_vflags
    add dword [mon_iret_count], 1
    jmp .done
.advance:
    add [ebp + 36], bx
.done:
    mov [ebp + 48], cx
    popad
    add esp, 4
    iret
.leave_v86:
    mov dword [mon_exited], 1
    jmp int31_return32          ; guest.inc: data segments, ESP = [r0_esp], back to run_v86's caller

; AX = the 16-bit FLAGS the v86 code sees: the real low word with IF replaced by the virtual IF.
.vflags:
    mov eax, [ebp + 44]
    and eax, 0xFFFF & ~EFL_IF
    cmp dword [mon_vif], 0
    je .vf
    or eax, EFL_IF
.vf:
    ret

; EAX = a FLAGS image from the v86 code: IF → the virtual IF, the status flags, TF, DF → EFLAGS.
.set_vflags:
    push eax
    and eax, EFL_IF
    shr eax, 9
    mov [mon_vif], eax
    pop eax
    and eax, 0x0DD5
    and dword [ebp + 44], ~0x0DD5
    or [ebp + 44], eax
    ret

section .data
str_mon_unknown: db "monitor: #GP on an instruction it does not emulate (got = opcode)", 0

; ----------------------------------------------------------------------------
; Virtual-8086 code (16-bit, CS = 0 unless it says otherwise, DS = 0: addresses are linear)
; ----------------------------------------------------------------------------

; VCHECK actual, expected, "what": on mismatch leave the details for v86_report and leave v86.
%macro VCHECK 3
  [section .data]
  %%what: db %3, 0
  __SECT__
  push ax
  mov ax, %1
  cmp ax, %2
  je %%ok
  mov [v_got], ax
  mov word [v_exp], %2
  mov dword [v_what], %%what
  jmp v86_bail
%%ok:
  pop ax
%endmacro

; VFAIL "what": an unconditional failure from v86 code.
%macro VFAIL 1
  [section .data]
  %%what: db %1, 0
  __SECT__
  mov dword [v_what], %%what
  jmp v86_bail
%endmacro

section .lowcode
bits 16
v86_bail:
    int 0x31

; vputs: DS:SI → NUL-terminated string on the debug console (port 0xE9 is allowed by the bitmap).
vputs:
    push ax
.next:
    lodsb
    test al, al
    jz .done
    out DEBUGCON, al
    jmp .next
.done:
    pop ax
    ret

v86_phase1:
    mov si, msg_hello
    call vputs
    mov ax, 1234
    mov bx, 5678
    mul bx
    VCHECK dx, 0x006A, "16-bit MUL: DX"
    VCHECK ax, 0xE9BC, "16-bit MUL: AX"
    mov eax, 0x12345678
    add eax, 0x11111111
    ror eax, 16
    VCHECK ax, 0x2345, "32-bit ADD in 16-bit code"
    ; Segment base = selector × 16: the same word through DS = 0x0200.
    mov ax, SEG_LOW
    mov ds, ax
    mov bx, [seg_probe - LOW_BASE]
    xor ax, ax
    mov ds, ax
    VCHECK bx, 0xC0DE, "DS = 0x0200 addresses linear 0x2000"
    push word 0xBEEF
    mov ax, [V86_SS * 16 + V86_SP - 2]
    pop bx
    VCHECK ax, 0xBEEF, "PUSH through SS = 0x0600"
    ; Far CALL into segment 0x0200 and far RET.
    xor ax, ax
    call SEG_LOW:far_target - LOW_BASE
    VCHECK ax, SEG_LOW, "far CALL: CS in the callee"
    VCHECK bx, 0xC0DE, "far CALL: CS-relative read in the callee"
    mov ax, cs
    VCHECK ax, 0, "far RET: CS"
    ; IOPL 3: PUSHF/POPF/CLI/STI run; POPF cannot change IOPL; PUSHFD shows VM = 0.
    pushf
    pop ax
    and ax, EFL_IOPL3
    VCHECK ax, EFL_IOPL3, "PUSHF: IOPL 3"
    pushfd
    pop eax
    shr eax, 16
    VCHECK ax, 0, "PUSHFD: VM and RF clear in the image"
    push word 2
    popf
    pushf
    pop ax
    and ax, EFL_IOPL3
    VCHECK ax, EFL_IOPL3, "POPF with IOPL 0 in the image: IOPL unchanged"
    sti
    pushf
    pop ax
    and ax, EFL_IF
    VCHECK ax, EFL_IF, "STI at IOPL 3"
    ; INT n at IOPL 3: through the IDT to ring 0 with the v86 frame.
    mov ax, 0x0123
    mov es, ax
    mov ax, 0x0456
    mov fs, ax
    mov ax, 0x0789
    mov gs, ax
    mov bx, 0x2222
    push word 0                 ; ESP in the frame is V86_SP - 2
    int VEC_SERVICE
v86_after_int40:
    add sp, 2
    VCHECK ax, 0x3333, "INT 0x40: the ring-0 handler's result"
    mov ax, es
    VCHECK ax, 0x0123, "ES after IRET to v86"
    mov ax, gs
    VCHECK ax, 0x0789, "GS after IRET to v86"
    cli
    pushf
    pop ax
    and ax, EFL_IF
    VCHECK ax, 0, "CLI at IOPL 3"
    xor ax, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    ; I/O: the bitmap decides even at IOPL 3.
    mov al, 0xFB
    out 0x21, al
    in al, 0x21
    mov ah, 0
    VCHECK ax, 0xFB, "IN/OUT on an allowed port (8259 IMR)"
    mov al, 0xFF
    out 0x21, al
    in al, 0x60
    VCHECK word [mon_io_count], 1, "IN from a denied port: #GP"
    VCHECK word [mon_gp_err], 0, "IN from a denied port: error code"
    mov dx, 0xE8
    out dx, ax
    VCHECK word [mon_io_count], 2, "OUT word on 0xE8-0xE9 (0xE8 denied): #GP"
    ; INT n to a gate the v86 code may not use: #GP, reflected by the monitor through the IVT.
    int VEC_DPL0
    VCHECK word [mon_gp_err], VEC_DPL0 * 8 + 2, "INT to a DPL-0 gate: #GP(vector * 8 + 2)"
    VCHECK word [ivt_hits], 1, "INT 0x41 reflected to the IVT handler"
    int VEC_RING3
    VCHECK word [mon_gp_err], SEL_UCODE32, "INT to a ring-3 handler: #GP(its CS selector)"
    VCHECK word [ivt_hits], 2, "INT 0x42 reflected to the IVT handler"
    ; Page faults from CPL 3.
    mov ax, PF_PAGE_NP >> 4
    mov es, ax
v86_pf_write:
    mov word [es:0x10], 0x5A5A
    VCHECK word [pf_count], 1, "write to a not-present page: #PF"
    VCHECK word [pf_err], 6, "#PF error code: U=1 W=1 P=0"
    mov ax, PF_PAGE_SUP >> 4
    mov es, ax
    mov ax, [es:0x20]
    VCHECK word [pf_count], 2, "read of a supervisor page: #PF"
    VCHECK word [pf_err + 4], 5, "#PF error code: U=1 W=0 P=1"
    xor ax, ax
    mov es, ax
    ; Privileged and protected-mode-only instructions.
    hlt
    VCHECK word [mon_gp_op], 0xF4, "HLT: #GP(0)"
    mov dword [mon_resume], .after_lar
    lar ax, bx
.after_lar:
    VCHECK word [exc_vec], 6, "LAR: #UD"
    mov word [v_done], 1
    int 0x31

v86_phase2:
    mov si, msg_monitor
    call vputs                  ; I/O is still decided by the bitmap, not IOPL
    cli
    VCHECK word [mon_gp_op], 0xFA, "CLI at IOPL 0: #GP"
    VCHECK word [mon_gp_err], 0, "CLI: #GP(0)"
    VCHECK word [mon_vif], 0, "emulated CLI"
    sti
    VCHECK word [mon_vif], 1, "emulated STI"
    pushf
    pop ax
    and ax, EFL_IF
    VCHECK ax, EFL_IF, "emulated PUSHF shows the virtual IF"
    push word 1                 ; CF = 1, IF = 0
    popf
    jc .cf_ok
    VFAIL "emulated POPF sets CF"
.cf_ok:
    VCHECK word [mon_vif], 0, "emulated POPF clears the virtual IF"
    int VEC_REFLECT
    VCHECK word [mon_last_int], VEC_REFLECT, "INT 0x60 at IOPL 0: #GP"
    VCHECK word [ivt_hits], 1, "INT 0x60 reflected to the IVT handler"
    VCHECK word [mon_iret_count], 1, "the IVT handler's IRET emulated"
    ; INT3 and INTO are not IOPL-sensitive: through the IDT's DPL-3 gates.
    int3
.after_int3:
    VCHECK word [exc_vec], 3, "INT3 at IOPL 0: through the IDT"
    VCHECK word [exc_eip], .after_int3, "INT3: saved EIP"
    mov ax, 0x7FFF
    add ax, 1
    into
.after_into:
    VCHECK word [exc_vec], 4, "INTO at IOPL 0: through the IDT"
    VCHECK word [exc_eip], .after_into, "INTO: saved EIP"
    mov word [v_done], 2
    int 0x31                    ; the monitor takes it back to protected mode

; Phase 3 runs as task B: CS = 0, DS = 0x0200, ES = 0x0123 from the TSS.
v86_task:
    mov ax, [seg_probe - LOW_BASE]
    mov cx, es
    mov word [es:v_done - 0x1230], 3
    jmp SEG_LOW:v86_task_far - LOW_BASE
v86_task_far:
    int VEC_TASK                ; task gate: back to task A
v86_task_after:
    jmp v86_task_after

; Far CALL target, entered with CS = 0x0200.
far_target:
    mov ax, cs
    mov bx, [cs:seg_probe - LOW_BASE]
    retf

; Reached through the IVT (reflected by the monitor), with CS = 0x0200.
ivt_handler:
    add word [cs:ivt_hits - LOW_BASE], 1
    iret

msg_hello:   db "vm86: OUT from virtual-8086 mode", 10, 0
msg_monitor: db "vm86: OUT at IOPL 0", 10, 0
align 4
seg_probe:   dd 0xC0DE

; The block the v86 code, the monitor and main share (cleared before each phase).
align 4
shared_start:
v_what:         dd 0
v_got:          dd 0
v_exp:          dd 0
v_done:         dd 0
mon_gp_count:   dd 0
mon_gp_err:     dd 0
mon_gp_op:      dd 0
mon_vif:        dd 0
mon_real_if:    dd 0
mon_io_count:   dd 0
mon_last_int:   dd 0
mon_iret_count: dd 0
mon_exited:     dd 0
mon_resume:     dd 0
ivt_hits:       dd 0
exc_vec:        dd 0
exc_eip:        dd 0
pf_count:       dd 0
pf_err:         dd 0, 0
pf_eip:         dd 0, 0
pf_cr2:         dd 0, 0
pf_esp:         dd 0
svc_esp:        dd 0
svc_cs:         dd 0
svc_flags:      dd 0
svc_sregs:      dd 0, 0, 0, 0
svc_frame:      times 9 dd 0
shared_end:

GUEST_END
