; mbelf.asm: a Multiboot v1 kernel in ELF format (no a.out kludge), built by hand with
; nasm -f bin so that no linker is needed: an ELF32 executable header and two PT_LOAD
; program headers (System V ABI, ELF: "Program Header"), and the Multiboot header of the
; Multiboot Specification 0.6.96 §3.1.1 with flags 0x00000003 (page-aligned modules, memory
; information), so the loader must take the load addresses and the entry point from the ELF.
;
; Segments: text (R X) at 1 MiB, holding the headers and the code; data (R W) at 1 MiB +
; 0x4000 with p_memsz > p_filesz, so the loader must zero the tail (the .bss).
;
; It reports on COM1 (port 0x3F8, polling LSR.THRE) and checks what §3.2 promises: EAX =
; 0x2BADB002, the info structure's flags (bit 0 memory, bit 2 cmdline), mem_upper, and the
; command line; then that the data segment's initialised word is there and its bss is zero.
; Result on the isa-debug-exit port 0xF4: 0x10 pass (exit status 33), 0x01 fail (status 3).
;
; Under QEMU: qemu-system-x86_64 -display none -serial stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel mbelf.bin -append "hello elf" → status 33.

bits 32
TEXT_BASE   equ 0x100000
DATA_BASE   equ 0x104000
BSS_SIZE    equ 0x1000
COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
EXIT_PORT   equ 0xF4
MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00000003
PT_LOAD     equ 1
PF_X        equ 1
PF_W        equ 2
PF_R        equ 4

section text vstart=TEXT_BASE
ehdr:
    db 0x7F, "ELF", 1, 1, 1, 0          ; ELFCLASS32, little-endian, EV_CURRENT, System V
    times 8 db 0
    dw 2                                ; e_type: ET_EXEC
    dw 3                                ; e_machine: EM_386
    dd 1                                ; e_version
    dd _start                           ; e_entry
    dd phdrs - ehdr                     ; e_phoff
    dd 0                                ; e_shoff: no section headers
    dd 0                                ; e_flags
    dw 52                               ; e_ehsize
    dw 32                               ; e_phentsize
    dw 2                                ; e_phnum
    dw 40, 0, 0                         ; e_shentsize, e_shnum, e_shstrndx
phdrs:
    dd PT_LOAD, 0, TEXT_BASE, TEXT_BASE ; p_type, p_offset, p_vaddr, p_paddr
    dd text_end - ehdr, text_end - ehdr ; p_filesz, p_memsz
    dd PF_R | PF_X, 0x1000              ; p_flags, p_align
    dd PT_LOAD, data_file_offset, DATA_BASE, DATA_BASE
    dd data_end - data_start, data_end - data_start + BSS_SIZE
    dd PF_R | PF_W, 0x1000

align 4
mb_header:                              ; within the first 8 KiB, 32-bit aligned (§3.1.1)
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

putc:                                   ; AL
    push edx
    push eax
    mov dx, LSR
.wait:
    in al, dx
    test al, LSR_THRE
    jz .wait
    pop eax
    mov dx, COM1
    out dx, al
    pop edx
    ret

puts:                                   ; ESI → NUL-terminated string
    push eax
    push esi
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop esi
    pop eax
    ret

puthex:                                 ; EAX as 0x + 8 hex digits
    push eax
    push ecx
    push edx
    mov edx, eax
    mov al, '0'
    call putc
    mov al, 'x'
    call putc
    mov ecx, 8
.digit:
    rol edx, 4
    mov al, dl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'A' - '9' - 1
.out:
    call putc
    sub ecx, 1
    jnz .digit
    pop edx
    pop ecx
    pop eax
    ret

fail:                                   ; ESI = reason
    push esi
    mov esi, s_fail
    call puts
    pop esi
    call puts
    mov al, 10
    call putc
    mov eax, 0x01
    jmp finish

_start:
    cli
    mov esp, DATA_BASE + data_end - data_start + BSS_SIZE ; top of our bss
    mov edi, eax                        ; magic
    mov ebp, ebx                        ; multiboot_info
    mov esi, s_hello
    call puts
    mov eax, edi
    call puthex
    mov esi, s_info
    call puts
    mov eax, [ebp]
    call puthex
    mov esi, s_upper
    call puts
    mov eax, [ebp + 8]
    call puthex
    mov al, 10
    call putc
    mov esi, s_bad_magic
    cmp edi, 0x2BADB002
    jne fail
    mov esi, s_bad_flags
    mov eax, [ebp]
    and eax, 0x05                       ; bit 0 mem_*, bit 2 cmdline
    cmp eax, 0x05
    jne fail
    mov esi, s_bad_upper
    cmp dword [ebp + 8], 1024           ; at least 1 MiB above 1 MiB
    jb fail
    mov esi, s_cmdline
    call puts
    mov esi, [ebp + 16]
    call puts
    mov al, '"'
    call putc
    mov al, 10
    call putc
    mov esi, s_bad_data
    cmp dword [data_word], 0xDA7A0001
    jne fail
    mov esi, s_bad_bss                  ; the bss (p_memsz beyond p_filesz) must be zero
    mov edi, bss_start
    mov ecx, (BSS_SIZE - 256) / 4       ; the top 256 bytes are our stack by now
    xor eax, eax
    repe scasd
    jne fail
    mov esi, s_pass
    call puts
    mov eax, 0x10
finish:
    mov dx, EXIT_PORT
    out dx, eax
.halt:
    hlt
    jmp .halt

s_hello:     db "multiboot ELF: entered from the ELF e_entry, EAX=", 0
s_info:      db " info.flags=", 0
s_upper:     db " mem_upper=", 0
s_cmdline:   db 'multiboot ELF: command line "', 0
s_pass:      db "PASS mbelf", 10, 0
s_fail:      db "FAIL mbelf: ", 0
s_bad_magic: db "EAX is not the Multiboot magic 0x2BADB002", 0
s_bad_flags: db "the info structure lacks mem_* or cmdline (flags bits 0, 2)", 0
s_bad_upper: db "mem_upper is below 1 MiB", 0
s_bad_data:  db "the data segment's initialised word is wrong (p_offset/p_paddr ignored?)", 0
s_bad_bss:   db "the data segment's bss (p_memsz > p_filesz) is not zero", 0
text_end:

; The data segment sits in the file right after the text, at a 16-byte boundary, and loads
; at DATA_BASE (not contiguous with the text: the loader must honour p_paddr).
section data follows=text align=16 vstart=DATA_BASE
data_start:
data_word:   dd 0xDA7A0001
             times 12 db 0
data_end:
bss_start    equ data_end
data_file_offset equ text_end - ehdr + ((16 - ((text_end - ehdr) % 16)) % 16)
