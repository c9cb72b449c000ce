; demo.asm: SharpVisor's built-in demo guest: a tour of what a VMM has to handle,
; narrated on the debug console (port 0xE9). Multiboot (a.out kludge) kernel; see
; guests/lib/guest.inc for the protocol. Intel SDM vol. 3 for every mechanism used.
;
; 32-bit protected mode (from the loader) → real mode (16-bit code prints, INT through
; the IVT) → protected mode → long mode with 4-level paging → IDT/TSS/SYSCALL set up →
; ring 3: the sensitive-but-unprivileged instructions (they do not trap: x86 is not
; classically virtualizable, Popek & Goldberg 1974), privileged ones (they trap),
; system calls, demand-paged page faults → summary → exit 0x10 (QEMU exit code 33).
; Under a hypervisor that cannot run SYSRETQ (it injects #GP at it), the #GP handler says so
; and exits 0x12 (exit code 37).
; Integer instructions only (no FPU/SSE).

%define TEST_NAME "demo"
%define WANT_LONG
%include "guest.inc"

DEMAND_BASE equ 0x0000400000000000  ; PML4 slot 128: nothing mapped there until touched
EXIT_NO_SYSRET equ 0x12             ; isa-debug-exit status 37: the hypervisor failed SYSRETQ
POOL_PAGES  equ 16

section .bss
alignb 4096
pool:        resb POOL_PAGES * 4096
alignb 8
pool_next:   resq 1
saved_esp:   resq 1
user_rsp:    resq 1
n_syscalls:  resq 1
n_pf:        resq 1
n_gp:        resq 1
udesc:       resb 16             ; SGDT/SIDT results (ring 3 writes them)

section .text
BITS32
main:
    PRINT "SharpVisor demo guest", 10
    PRINT "boot: the Multiboot loader started us in 32-bit protected mode, paging off:", 10
    PRINT "      EAX="
    PRINTHEX [mb_magic]
    PRINT " (Multiboot magic), EBX="
    PRINTHEX [mb_info]
    PRINT " (boot info), CR0="
    mov eax, cr0
    PRINTHEX eax
    PRINT 10
    cmp dword [mb_magic], 0x2BADB002
    je .magic_ok
    FAIL "EAX was not the Multiboot magic 0x2BADB002"
.magic_ok:
    PRINT "real mode: clearing CR0.PE through a 16-bit protected-mode segment", 10
    mov [saved_esp], esp
    jmp SEL_CODE16:rm_pm16

pm_back:                        ; 32-bit protected mode again (far jump from real mode)
    mov ax, SEL_KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, [saved_esp]
    lidt [idt32_desc]
    PRINT "protected mode: CR0.PE=1 again, 32-bit flat segments from our own GDT", 10
    mov ebx, long_main
    jmp lm_enter

; ---------------------------------------------------------------------------
; Real mode (copied to LOW_BASE at start)
; ---------------------------------------------------------------------------
section .lowcode
bits 16
rm_pm16:                        ; 16-bit protected mode: load 64 KiB segments first
    mov ax, SEL_DATA16
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    lidt [rm_idtr]
    mov eax, cr0
    and eax, ~1
    mov cr0, eax
    jmp 0x0000:rm_start
rm_start:
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, LOW_BASE - 0x100
    mov word [0x40 * 4], rm_int40   ; IVT entry 0x40 → our handler
    mov word [0x40 * 4 + 2], 0
    mov si, rm_msg_hello
    call rm_puts
    mov ax, cs
    call rm_hex16
    mov al, ':'
    call rm_putc
    mov ax, rm_start
    call rm_hex16
    mov si, rm_msg_cr0
    call rm_puts
    mov eax, cr0
    call rm_hex32
    mov si, rm_msg_nl
    call rm_puts
    mov ax, 0x1234
    int 0x40
    mov si, rm_msg_back
    call rm_puts
    call rm_hex16
    mov si, rm_msg_nl
    call rm_puts
    cli
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp dword SEL_KCODE32:pm_back

rm_int40:                       ; real-mode interrupt handler: FLAGS, CS, IP on the stack
    push si
    push bp
    mov bp, sp
    mov si, rm_msg_int
    call rm_puts
    mov ax, [bp + 6]            ; the CS the INT pushed
    call rm_hex16
    mov al, ':'
    call rm_putc
    mov ax, [bp + 4]            ; the IP the INT pushed
    call rm_hex16
    mov si, rm_msg_nl
    call rm_puts
    pop bp
    pop si
    mov ax, 0xBEEF
    iret

rm_putc:
    push dx
    mov dx, DEBUGCON
    out dx, al
    pop dx
    ret
rm_puts:
    push ax
.l: lodsb
    test al, al
    jz .d
    call rm_putc
    jmp .l
.d: pop ax
    ret
rm_hex16:                       ; AX as 4 hex digits
    push ax
    push cx
    push dx
    mov dx, ax
    mov cx, 4
.d: rol dx, 4
    mov al, dl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .o
    add al, 7
.o: call rm_putc
    loop .d
    pop dx
    pop cx
    pop ax
    ret
rm_hex32:                       ; EAX as 8 hex digits
    push eax
    ror eax, 16
    call rm_hex16
    ror eax, 16
    call rm_hex16
    pop eax
    ret

rm_idtr:      dw 0x3FF
              dd 0
rm_msg_hello: db "real mode: hello from 16-bit real-mode code at ", 0
rm_msg_cr0:   db ", CR0=", 0
rm_msg_int:   db "real mode: INT 0x40 went through the IVT at 0000:0100; the handler saw the return address ", 0
rm_msg_back:  db "real mode: the handler returned AX=", 0
rm_msg_nl:    db 10, 0

; ---------------------------------------------------------------------------
; Long mode, ring 0
; ---------------------------------------------------------------------------
section .text
BITS64
long_main:
    PRINT "long mode: EFER.LMA=1 with 4-level paging; CR3="
    mov rax, cr3
    PRINTHEX eax
    PRINT " EFER="
    mov ecx, EFER_MSR
    rdmsr
    PRINTHEX eax
    PRINT " CR4="
    mov rax, cr4
    PRINTHEX eax
    PRINT " CS="
    mov ax, cs
    movzx eax, ax
    PRINTHEX eax
    PRINT " (64-bit code)", 10

    mov rax, pool
    mov [pool_next], rax
    mov eax, 14
    mov rdx, demo_pf
    mov ecx, 0x8E
    call idt64_set
    mov eax, 13
    mov rdx, demo_gp
    mov ecx, 0x8E
    call idt64_set
    mov eax, 8                  ; #DF on its own stack (IST1), as real kernels do
    mov rdx, idt64_stubs + 8 * STUB_SIZE
    mov ecx, 0x018E
    call idt64_set
    mov ecx, 0xC0000081         ; IA32_STAR: kernel CS 0x28 (SS 0x30), user base 0x38
    xor eax, eax
    mov edx, (SEL_UCODE32C << 16) | SEL_KCODE64
    wrmsr
    mov ecx, 0xC0000082         ; IA32_LSTAR: the 64-bit SYSCALL entry
    mov rax, syscall_entry
    mov rdx, rax
    shr rdx, 32
    wrmsr
    mov ecx, 0xC0000084         ; IA32_FMASK: clear TF, IF, DF, AC on entry
    mov eax, 0x40700
    xor edx, edx
    wrmsr
    PRINT "kernel: IDT (256 gates), TSS (RSP0, IST1 for #DF), SYSCALL entry in LSTAR="
    mov rax, syscall_entry
    PRINTHEX eax
    PRINT 10
    PRINT "kernel: IRETQ to ring 3", 10
    mov rax, user_main
    mov ecx, 0x002              ; RFLAGS: IOPL 0, interrupts off
    call run_user64

    PRINT "kernel: back in ring 0 (ring 3 returned through INT 0x31)", 10
    cmp qword [n_pf], 3
    je .pf_ok
    FAIL "expected 3 page faults"
.pf_ok:
    cmp qword [n_gp], 2
    je .gp_ok
    FAIL "expected 2 #GP traps"
.gp_ok:
    PRINT "summary: "
    mov rax, [n_syscalls]
    call putdec
    PRINT " system calls, "
    mov rax, [n_pf]
    call putdec
    PRINT " page faults demand-mapped, "
    mov rax, [n_gp]
    call putdec
    PRINT " privileged instructions trapped (#GP), 6 sensitive instructions ran in ring 3 without a trap", 10
    jmp guest_pass

; SYSCALL: RCX = user RIP, R11 = user RFLAGS, still on the user stack.
; EAX = 0 write(RSI = string), 1 write_hex(RDI), 2 getpid() → 42.
syscall_entry:
    mov [user_rsp], rsp
    mov rsp, tss_stack_top
    push rcx
    push r11
    add qword [n_syscalls], 1
    cmp eax, 0
    jne .not_write
    call puts
    jmp .done
.not_write:
    cmp eax, 1
    jne .not_hex
    mov eax, edi
    call puthex
    jmp .done
.not_hex:
    cmp eax, 2
    jne .bad
    mov eax, 42
    jmp .done
.bad:
    mov rax, -1
.done:
    pop r11
    pop rcx
    mov rsp, [user_rsp]
sysret_insn:
    o64 sysret

; #GP from ring 3 (CLI, HLT): report and step over the 1-byte instruction.
; A #GP at our own SYSRETQ (which only ring 0 executes) with a canonical RCX cannot come from
; the CPU (SDM vol. 2B, SYSRET: #GP(0) only for a non-canonical RCX, CPL > 0 or outside 64-bit
; mode): the hypervisor failed to execute it. This host's software-assisted nested KVM injects
; #GP there with the user CS already in the frame (0x4B) and RIP still at the SYSRETQ, so the
; frame's CS is printed, not trusted. Say so in one line and stop with EXIT_NO_SYSRET.
demo_gp:
    push rax
    mov rax, sysret_insn
    cmp [rsp + 16], rax
    jne .from_user
    mov rax, rcx                        ; RCX canonical (bits 63:47 equal)?
    shl rax, 16
    sar rax, 16
    cmp rax, rcx
    jne .from_user
    PRINT 10, "STOP demo: #GP at the kernel's own SYSRETQ (RIP="
    mov rax, [rsp + 16]
    call puthex64
    PRINT ", frame CS="
    mov rax, [rsp + 24]
    PRINTHEX eax
    PRINT ", RCX canonical): the hypervisor could not execute SYSRET; the tour ends here", 10
    mov eax, EXIT_NO_SYSRET
    jmp guest_exit
.from_user:
    add qword [n_gp], 1
    PRINT " -> kernel: #GP(error "
    mov rax, [rsp + 8]
    PRINTHEX eax
    PRINT ") at RIP="
    mov rax, [rsp + 16]
    call puthex64
    PRINT ": privileged instruction trapped, emulate or skip it", 10
    cmp qword [rsp + 8], 0
    je .err_ok
    FAIL "#GP error code was not 0"
.err_ok:
    add qword [rsp + 16], 1
    pop rax
    add rsp, 8
    iretq

; #PF: map a fresh zeroed page at CR2 if it lies in the demand region, retry.
demo_pf:
    push rax
    push rbx
    push rcx
    push rdx
    push rdi
    mov rbx, cr2
    PRINT " -> kernel: #PF at CR2="
    mov rax, rbx
    call puthex64
    PRINT " error="
    mov rax, [rsp + 40]
    PRINTHEX eax
    test eax, 2
    jz .read
    PRINT " (write"
    jmp .who
.read:
    PRINT " (read"
.who:
    test eax, 4
    jz .kernel
    PRINT " by user, "
    jmp .why
.kernel:
    PRINT " by kernel, "
.why:
    test eax, 1
    jz .notp
    FAIL "page fault on a present page"
.notp:
    PRINT "not present): mapped a fresh page, retrying", 10
    mov rax, rbx
    mov rdx, DEMAND_BASE
    sub rax, rdx
    cmp rax, 0x400000
    jb .in_range
    FAIL "page fault outside the demand region"
.in_range:
    call map_page
    invlpg [rbx]
    add qword [n_pf], 1
    pop rdi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 8
    iretq

; map_page: RBX = linear address; walks PML4 → PDPT → PD → PT, allocating missing
; tables from the pool, and maps a fresh page user-writable (P | RW | US).
map_page:
    mov rdi, pml4
    mov ecx, 39
.level:
    mov rax, rbx
    shr rax, cl
    and eax, 511
    lea rdx, [rdi + rax * 8]
    mov rax, [rdx]
    test al, 1
    jnz .present
    call pool_alloc
    or rax, 7
    mov [rdx], rax
.present:
    cmp ecx, 12
    je .done
    and rax, ~0xFFF
    mov rdi, rax
    sub ecx, 9
    jmp .level
.done:
    ret

pool_alloc:                     ; RAX = a zeroed 4 KiB page (the pool is in the bss)
    mov rax, [pool_next]
    push rdx
    mov rdx, pool + POOL_PAGES * 4096
    cmp rax, rdx
    pop rdx
    jb .ok
    FAIL "page pool exhausted"
.ok:
    add qword [pool_next], 4096
    ret

; ---------------------------------------------------------------------------
; Ring 3 (64-bit). Prints only through system calls (SYSCALL clobbers RCX, R11).
; ---------------------------------------------------------------------------
%macro UPRINT 1+
  [section .data]
  %%s: db %1, 0
  __SECT__
  mov esi, %%s
  xor eax, eax
  syscall
%endmacro
%macro UHEX 1
  mov edi, %1
  mov eax, 1
  syscall
%endmacro

user_main:
    mov ax, cs
    movzx ebx, ax
    UPRINT "ring 3: MOV from CS -> "
    UHEX ebx
    UPRINT ": the selector's low bits say CPL 3 (no trap)", 10
    and ebx, 3
    cmp ebx, 3
    je .cpl_ok
    ret                         ; the kernel's summary will fail the run
.cpl_ok:
    smsw eax
    movzx ebx, ax
    UPRINT "ring 3: SMSW -> "
    UHEX ebx
    UPRINT ": the low half of CR0, readable without a trap", 10
    sgdt [udesc]
    UPRINT "ring 3: SGDT -> base "
    UHEX [udesc + 2]
    UPRINT " limit "
    movzx ebx, word [udesc]
    UHEX ebx
    UPRINT ": where the real GDT is (no trap)", 10
    sidt [udesc]
    UPRINT "ring 3: SIDT -> base "
    UHEX [udesc + 2]
    UPRINT " limit "
    movzx ebx, word [udesc]
    UHEX ebx
    UPRINT " (no trap)", 10
    str ax
    movzx ebx, ax
    sldt ax
    movzx ebp, ax
    UPRINT "ring 3: STR -> "
    UHEX ebx
    UPRINT ", SLDT -> "
    UHEX ebp
    UPRINT " (no trap)", 10
    pushfq
    pop rbx
    mov rax, rbx
    or eax, 0x3200              ; try to set IF and IOPL=3
    push rax
    popfq
    pushfq
    pop rbx
    UPRINT "ring 3: POPF with IF=1, IOPL=3 -> RFLAGS="
    UHEX ebx
    UPRINT ": both changes silently dropped, no trap", 10
    UPRINT "  These read or silently ignore privileged state without trapping, so a", 10
    UPRINT "  deprivileged guest kernel cannot be trap-and-emulated: this is why x86 fails", 10
    UPRINT "  Popek-Goldberg, and why a VMM needs binary translation or VT-x/AMD-V.", 10
    UPRINT "ring 3: CLI"
    cli
    UPRINT "ring 3: HLT"
    hlt
    UPRINT "ring 3: SYSCALL getpid -> "
    mov eax, 2
    syscall
    UHEX eax
    UPRINT 10
    mov rbx, DEMAND_BASE
    UPRINT "ring 3: read  0x0000400000000000 (nothing is mapped there yet)", 10
    mov rax, [rbx]
    mov r12, rax
    UPRINT "ring 3: write 0x0000400000001000", 10
    mov qword [rbx + 0x1000], 0x1111
    UPRINT "ring 3: write 0x0000400000200000 (needs a new page table too)", 10
    mov qword [rbx + 0x200000], 0x2222
    test r12, r12
    jnz .bad
    cmp qword [rbx + 0x1000], 0x1111
    jne .bad
    cmp qword [rbx + 0x200000], 0x2222
    jne .bad
    cmp qword [rbx + 8], 0      ; same page as the first fault: no new fault
    jne .bad
    UPRINT "ring 3: the pages read back what was written; returning to the kernel", 10
    ret
.bad:
    UPRINT "ring 3: demand-mapped memory read back wrong", 10
    ret

GUEST_END
