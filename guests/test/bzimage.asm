; bzimage.asm: a tiny kernel in the Linux bzImage format, built by hand (nasm -f bin), to test
; a loader of the Linux x86 boot protocol (Documentation/arch/x86/boot.rst).
;
; Layout, as boot.rst describes a bzImage:
;   0x000–0x1FF  the boot sector: unused, but for the setup header's first part at 0x1F1
;                (setup_sects, syssize, boot_flag 0xAA55 ...);
;   0x200–0x3FF  setup_sects = 1 sector of "setup code": the jump at 0x200 over the header,
;                "HdrS" and protocol 2.15 fields up to 0x26C, then 16-bit code;
;   0x400–       the protected-mode kernel (syssize × 16 bytes), loaded at 1 MiB
;                (pref_address): startup_32 at offset 0, startup_64 at offset 0x200
;                (xloadflags XLF_KERNEL_64: "the 64-bit entry point is at 0x200").
;
; startup_64 (64-bit boot protocol: long mode, identity-mapped, RSI = boot_params) checks
; EFER.LMA and CR0.PG, that boot_params holds the setup header ("HdrS" at 0x202), prints the
; command line (cmd_line_ptr) and the e820 entry count on COM1 (port 0x3F8) and exits with
; 0x10 on the isa-debug-exit port 0xF4 (status 33); a failed check exits 0x01 (status 3).
; startup_32 (the 32-bit protocol) says so and exits 0x10 too, with its own line.
; The setup code (entered by loaders that run it, as QEMU's linuxboot ROM does: real mode,
; CS = setup segment + 0x20, IP = 0) prints a line and exits 0x11 (status 35): this loader
; runs no setup code, so a loader that reaches it is recognised.
;
; Under QEMU: qemu-system-x86_64 -display none -serial stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel bzimage.bin → the setup-code line, status 35.

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
EXIT_PORT   equ 0xF4
LOAD_ADDR   equ 0x100000
STACK_TOP   equ LOAD_ADDR + 0x80000     ; inside init_size, past the file
BP_HDRS     equ 0x202                   ; boot_params.hdr.header
BP_CMDLINE  equ 0x228                   ; boot_params.hdr.cmd_line_ptr
BP_E820_N   equ 0x1E8                   ; boot_params.e820_entries

; ---------------------------------------------------------------------------
; Real-mode part: boot sector + one setup sector
; ---------------------------------------------------------------------------
section setup start=0 vstart=0
bits 16
    times 0x1F1 - ($ - $$) db 0
hdr_setup_sects:   db 1
hdr_root_flags:    dw 0
hdr_syssize:       dd (pm_end - pm_start) / 16
hdr_ram_size:      dw 0
hdr_vid_mode:      dw 0xFFFF            ; "normal"
hdr_root_dev:      dw 0
hdr_boot_flag:     dw 0xAA55
; 0x200
hdr_jump:          db 0xEB, setup_code - hdr_header
hdr_header:        db "HdrS"
hdr_version:       dw 0x020F
hdr_realmode_swtch: dd 0
hdr_start_sys_seg: dw 0x1000
hdr_kernel_version: dw kernel_version - 0x200
hdr_type_of_loader: db 0
hdr_loadflags:     db 0x01              ; LOADED_HIGH: a bzImage
hdr_setup_move_size: dw 0x8000
hdr_code32_start:  dd LOAD_ADDR
hdr_ramdisk_image: dd 0
hdr_ramdisk_size:  dd 0
hdr_bootsect_kludge: dd 0
hdr_heap_end_ptr:  dw 0
hdr_ext_loader_ver: db 0
hdr_ext_loader_type: db 0
hdr_cmd_line_ptr:  dd 0
hdr_initrd_addr_max: dd 0x7FFFFFFF
hdr_kernel_alignment: dd 0x200000
hdr_relocatable_kernel: db 0
hdr_min_alignment: db 21
hdr_xloadflags:    dw 0x0001            ; XLF_KERNEL_64
hdr_cmdline_size:  dd 2047
hdr_hardware_subarch: dd 0
hdr_hardware_subarch_data: dq 0
hdr_payload_offset: dd 0
hdr_payload_length: dd 0
hdr_setup_data:    dq 0
hdr_pref_address:  dq LOAD_ADDR
hdr_init_size:     dd 0x100000
hdr_handover_offset: dd 0
hdr_kernel_info_offset: dd 0
; 0x26C: end of the 2.15 header
%if ($ - $$) != 0x26C
  %error "setup header does not end at 0x26C"
%endif

setup_code:                             ; real mode, CS:0 = file offset 0x200
    cli
    push cs
    pop ds
    mov si, setup_msg - 0x200
.next:
    lodsb
    test al, al
    jz .done
    mov ah, al
    mov dx, LSR
.wait:
    in al, dx
    test al, LSR_THRE
    jz .wait
    mov al, ah
    mov dx, COM1
    out dx, al
    jmp .next
.done:
    mov dx, EXIT_PORT
    mov eax, 0x11
    out dx, eax
.halt:
    hlt
    jmp .halt
setup_msg:      db "bzimage: the real-mode setup code ran (a loader that runs setup code)", 10, 0
kernel_version: db "0.0.1-sharpvisor-test (bzimage.asm)", 0
    times 0x400 - ($ - $$) db 0

; ---------------------------------------------------------------------------
; Protected-mode kernel at 1 MiB
; ---------------------------------------------------------------------------
section pm follows=setup vstart=LOAD_ADDR
pm_start:
bits 32
startup_32:                             ; 32-bit protocol: flat segments, ESI = boot_params
    mov esp, STACK_TOP
    mov ebx, msg32
.next:
    mov al, [ebx]
    test al, al
    jz .done
    mov cl, al
    mov dx, LSR
.wait:
    in al, dx
    test al, LSR_THRE
    jz .wait
    mov al, cl
    mov dx, COM1
    out dx, al
    add ebx, 1
    jmp .next
.done:
    mov dx, EXIT_PORT
    mov eax, 0x10
    out dx, eax
.halt:
    hlt
    jmp .halt
msg32: db "bzimage: startup_32 reached (32-bit boot protocol)", 10, "PASS bzimage (32-bit entry)", 10, 0

    times 0x200 - ($ - $$) db 0
bits 64
default rel
startup_64:                             ; 64-bit protocol: long mode, RSI = boot_params
    cli
    mov rsp, STACK_TOP
    mov rbp, rsi
    lea rsi, [msg64]
    call puts
    mov ecx, 0xC0000080                 ; EFER
    rdmsr
    test eax, 1 << 10                   ; LMA
    lea rsi, [err_lma]
    jz fail
    mov rax, cr0
    bt rax, 31                          ; PG
    lea rsi, [err_pg]
    jnc fail
    cmp dword [rbp + BP_HDRS], 'HdrS'
    lea rsi, [err_hdrs]
    jne fail
    lea rsi, [msg_cmd]
    call puts
    mov esi, [rbp + BP_CMDLINE]         ; a 32-bit physical address, identity-mapped
    call puts
    lea rsi, [msg_e820]
    call puts
    movzx eax, byte [rbp + BP_E820_N]
    test eax, eax
    lea rsi, [err_e820]
    jz fail
    add al, '0'                         ; a handful of entries: one digit is enough here
    call putc
    mov al, 10
    call putc
    lea rsi, [msg_pass]
    call puts
    mov eax, 0x10
    jmp finish

fail:                                   ; RSI = reason
    push rsi
    lea rsi, [msg_fail]
    call puts
    pop rsi
    call puts
    mov al, 10
    call putc
    mov eax, 0x01
finish:
    mov dx, EXIT_PORT
    out dx, eax
.halt:
    hlt
    jmp .halt

putc:                                   ; AL
    push rdx
    push rax
    mov dx, LSR
.wait:
    in al, dx
    test al, LSR_THRE
    jz .wait
    pop rax
    mov dx, COM1
    out dx, al
    pop rdx
    ret

puts:                                   ; RSI → NUL-terminated string
    push rax
    push rsi
.next:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .next
.done:
    pop rsi
    pop rax
    ret

msg64:    db "bzimage: startup_64 reached in long mode (64-bit boot protocol)", 10, 0
msg_cmd:  db 'bzimage: command line "', 0
msg_e820: db '"', 10, "bzimage: e820 entries in boot_params: ", 0
msg_pass: db "PASS bzimage", 10, 0
msg_fail: db "FAIL bzimage: ", 0
err_lma:  db "EFER.LMA is clear at startup_64", 0
err_pg:   db "CR0.PG is clear at startup_64", 0
err_hdrs: db "boot_params (RSI) does not hold the setup header", 0
err_e820: db "boot_params has no e820 entries", 0
    align 16, db 0
pm_end:
