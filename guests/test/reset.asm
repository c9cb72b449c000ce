; reset.asm: a guest that resets the machine three ways and checks, after each reboot, that
; the machine really started again (QEMU's behaviour without -no-reboot).
;
; Resets, one per boot, in this order:
;   1. the PIIX3 Reset Control Register, port 0xCF9 (Intel 82371SB datasheet §4.1.5:
;      SYS_RST=1 then RST_CPU 0→1 is a hard reset);
;   2. the keyboard controller's pulse-output-port command 0xFE on port 0x64 (bit 0 is
;      the CPU reset line on PC/AT);
;   3. a triple fault (Intel SDM vol. 3 §7.15, interrupt 8: shutdown; the chipset turns a
;      shutdown cycle into a reset on a PC).
; The guest keeps its progress in CMOS RAM byte 0x7E (battery-backed, survives a reset; no
; firmware uses it), and checks on every boot that:
;   - the image was loaded again: a .data word it overwrites before each reset is back;
;   - the MC146818 was reset as QEMU resets it: periodic/alarm interrupt enables (register B
;     PIE, AIE) cleared, and the shutdown status byte 0x0F cleared (it was not 0xFE).
; Fourth boot: clears the marker, prints PASS reset.
;
; Under QEMU: qemu-system-x86_64 -display none -debugcon stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel reset.bin (no -no-reboot!) → exit status 33.
; With -no-reboot the first reset ends the VM (status 0) after "resetting through port 0xCF9".

%define TEST_NAME "reset"
%include "guest.inc"

CMOS_INDEX   equ 0x70
CMOS_DATA    equ 0x71
CMOS_MARKER  equ 0x7E
CMOS_SHUTDOWN equ 0x0F
RTC_REG_B    equ 0x0B
REG_B_PIE    equ 0x40
REG_B_AIE    equ 0x20
STAGE_CF9    equ 0xA5               ; marker after the 0xCF9 reset was requested
STAGE_KBC    equ 0xA6               ; ... after the keyboard-controller reset
STAGE_TRIPLE equ 0xA7               ; ... after the triple fault
IMAGE_WORD   equ 0x600DCAFE

section .data
align 8
image_word:  dd IMAGE_WORD           ; overwritten before each reset: a reload restores it
null_idt:
    dw 0
    dd 0

section .text
BITS32
; cmos_read: AL = index → AL = value. cmos_write: AL = index, AH = value.
cmos_read:
    out CMOS_INDEX, al
    in al, CMOS_DATA
    ret
cmos_write:
    out CMOS_INDEX, al
    mov al, ah
    out CMOS_DATA, al
    ret

; arm_checks: state the next boot must find changed (register B interrupt enables and the
; shutdown byte set, the image word overwritten).
arm_checks:
    mov dword [image_word], 0
    mov al, RTC_REG_B
    call cmos_read
    or al, REG_B_PIE | REG_B_AIE    ; interrupts are off (IF=0), so nothing is delivered
    mov ah, al
    mov al, RTC_REG_B
    call cmos_write
    mov ax, (0x0A << 8) | CMOS_SHUTDOWN ; "jump via 40:67", which a reset must not honour
    call cmos_write
    ret

; after_reset: the checks of every boot after the first.
after_reset:
    CHECK [image_word], IMAGE_WORD, "the .data word after the reset (the image was not reloaded)"
    mov al, RTC_REG_B
    call cmos_read
    movzx eax, al
    and eax, REG_B_PIE | REG_B_AIE
    CHECK eax, 0, "RTC register B PIE|AIE after the reset"
    mov al, CMOS_SHUTDOWN
    call cmos_read
    movzx eax, al
    CHECK eax, 0, "CMOS shutdown status byte after the reset"
    ret

; delay: a while for a requested reset to take effect before declaring failure.
delay:
    mov ecx, 10000000
.spin:
    sub ecx, 1
    jnz .spin
    ret

main:
    mov al, CMOS_MARKER
    call cmos_read
    cmp al, STAGE_CF9
    je boot_after_cf9
    cmp al, STAGE_KBC
    je boot_after_kbc
    cmp al, STAGE_TRIPLE
    je boot_after_triple

    PRINT "reset: boot 1: no marker in CMOS 0x7E", 10
    CHECK [image_word], IMAGE_WORD, "the .data word on the first boot"
    call arm_checks
    mov ax, (STAGE_CF9 << 8) | CMOS_MARKER
    call cmos_write
    PRINT "reset: resetting through port 0xCF9", 10
    mov dx, 0xCF9
    mov al, 0x02                    ; SYS_RST: hard reset
    out dx, al
    mov al, 0x06                    ; SYS_RST | RST_CPU: go
    out dx, al
    call delay
    FAIL "still running after the reset through port 0xCF9"

boot_after_cf9:
    PRINT "reset: boot 2: marker 0xA5 survived the 0xCF9 reset", 10
    call after_reset
    call arm_checks
    mov ax, (STAGE_KBC << 8) | CMOS_MARKER
    call cmos_write
    PRINT "reset: resetting through the keyboard controller (0xFE to port 0x64)", 10
    mov al, 0xFE
    out 0x64, al
    call delay
    FAIL "still running after the keyboard-controller reset"

boot_after_kbc:
    PRINT "reset: boot 3: marker 0xA6 survived the keyboard-controller reset", 10
    call after_reset
    call arm_checks
    mov ax, (STAGE_TRIPLE << 8) | CMOS_MARKER
    call cmos_write
    PRINT "reset: triple fault next", 10
    lidt [null_idt]
    ud2
    FAIL "still running after a triple fault"

boot_after_triple:
    PRINT "reset: boot 4: marker 0xA7 survived the triple fault", 10
    call after_reset
    mov ax, CMOS_MARKER             ; AH = 0: clear the marker for the next run
    call cmos_write
    jmp guest_pass

GUEST_END
