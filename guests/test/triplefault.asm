; triplefault.asm: a guest that deliberately triple-faults (Intel SDM vol. 3 §7.15,
; interrupt 8: "If another exception occurs while the processor is attempting to call the
; double-fault handler, the processor enters shutdown mode").
;
; It prints "TRIPLE-FAULT-NEXT", loads an IDT with limit 0 and executes UD2: #UD finds no
; gate (beyond the IDT limit) → #GP, which finds none → #DF, which finds none → shutdown.
; Expected outcome: the VMM reports a shutdown exit (ExitReason shutdown / triple fault);
; the guest never reaches the isa-debug-exit port. Under
;   qemu-system-x86_64 -no-reboot ... -kernel triplefault.bin
; QEMU exits with status 0 after the marker (without -no-reboot it would reset and rerun).
; If execution ever continues past the UD2, the guest prints a FAIL line and exits 0x01.

%define TEST_NAME "triplefault"
%include "guest.inc"

section .data
align 8
null_idt:
    dw 0
    dd 0

section .text
BITS32
main:
    PRINT "TRIPLE-FAULT-NEXT", 10
    lidt [null_idt]
    ud2
    FAIL "still running after a triple fault"

GUEST_END
