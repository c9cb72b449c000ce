; icount.asm: how much guest work fits between timer interrupts, as the guest sees it.
;
; Follows the Intel 8254 datasheet (mode 2 rate generator on channel 0, control word 0x34,
; input clock 1.193182 MHz), the Intel 8259A datasheet (ICW1-ICW4 for the PC's master/slave
; pair at 0x20/0xA0, vector base 0x20, non-specific EOI 0x20) and the Intel SDM vol. 3 §6.12
; (a 32-bit interrupt gate), vol. 2 RDTSC.
;
; The PIT interrupts every PIT_COUNT input clocks (1193 / 1.193182 MHz = 999,847 ns). The
; main loop counts iterations in ECX (INC ECX; CMP; JB: three instructions) with interrupts
; on; the IRQ 0 handler records ECX and the TSC at each tick. After TICKS ticks the guest
; prints, for each interval between ticks, the iterations done in it, and the TSC ticks
; from the first interval's start to the last one's end:
;   interval 1: 333282 iterations
;   ...
;   tsc: 0x00D5B3C8 over 7 intervals
; With host time these vary from run to run. With the instruction-count clock (sharpvisor
; -icount shift=N) every run prints exactly the same lines, and each interval holds
; 999,847 ns / 2^N ns per instruction / 3 iterations, less the handler's instructions.
; PASS once TICKS interrupts arrived. With host time an interval may hold 0 iterations: when a
; tick is delivered late (the VMM notices host-time deadlines at exits and at its timer
; thread's wake-ups, about 1 ms apart), the next one may already be due when the handler
; returns.
;
; Under QEMU: qemu-system-x86_64 -display none -no-reboot -debugcon stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel icount.bin → exit status 33 (add -icount
; shift=0 to see QEMU's own deterministic counts, which differ: its instruction step and
; handler timing are its own).

%define TEST_NAME "icount"
%include "guest.inc"

PIT_COUNT   equ 1193
TICKS       equ 8

section .text
main:
    ; IDT vector 0x20 → the tick handler (interrupt gate, ring 0).
    mov eax, 0x20
    mov edx, tick
    mov ecx, 0x8E
    call idt32_set

    ; 8259A pair: edge triggered, cascade, vectors 0x20 and 0x28, 8086 mode; only IRQ 0 open.
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al

    ; PIT channel 0: lobyte/hibyte, mode 2, binary.
    mov al, 0x34
    out 0x43, al
    mov al, PIT_COUNT & 0xFF
    out 0x40, al
    mov al, PIT_COUNT >> 8
    out 0x40, al

    xor ecx, ecx
    sti
.spin:
    inc ecx
    cmp dword [ticks], TICKS
    jb .spin
    cli

    ; Iterations per interval between consecutive ticks.
    mov ebx, 1
.report:
    PRINT "interval "
    mov eax, ebx
    call putdec
    PRINT ": "
    mov eax, [counts + ebx * 4]
    sub eax, [counts + ebx * 4 - 4]
    call putdec
    PRINT " iterations", 10
    inc ebx
    cmp ebx, TICKS
    jb .report

    PRINT "tsc: "
    mov eax, [tscs + (TICKS - 1) * 4]
    sub eax, [tscs]
    call puthex
    PRINT " over "
    mov eax, TICKS - 1
    call putdec
    PRINT " intervals", 10
    jmp guest_pass

; IRQ 0: record the loop counter and the TSC's low half, acknowledge, return.
tick:
    push eax
    push edx
    push ebx
    mov ebx, [ticks]
    cmp ebx, TICKS
    jae .done
    mov [counts + ebx * 4], ecx
    rdtsc
    mov [tscs + ebx * 4], eax
    inc dword [ticks]
.done:
    mov al, 0x20
    out 0x20, al
    pop ebx
    pop edx
    pop eax
    iret

section .bss
ticks:  resd 1
counts: resd TICKS
tscs:   resd TICKS

GUEST_END
