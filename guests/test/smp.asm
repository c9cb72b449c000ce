; smp.asm: the bootstrap processor starts every application processor and counts them.
;
; Follows the Intel SDM vol. 3 §8.4 (MP initialization: the INIT-SIPI-SIPI sequence of
; §8.4.4.1, the AP starting in real mode at vector × 0x1000), §11.6.1 (the ICR, destination
; shorthand "all excluding self", delivery status), and ACPI 6.x §5.2.5 (RSDP search in
; 0xE0000–0xFFFFF), §5.2.7 (RSDT), §5.2.12 (MADT: Processor Local APIC entries, type 0, and
; Processor Local x2APIC entries, type 9, flag bit 0 = enabled).
;
; The BSP counts the enabled processors in the MADT (N), enables its local APIC, broadcasts
; INIT, waits 10 ms, sends STARTUP twice 200 µs apart (vector 0x02: the trampoline is the
; first thing in .lowcode, copied to LOW_BASE = 0x2000) and waits up to 2 s. Delays come
; from PIT channel 2 (mode 0, gate and output through port 0x61). Each AP, in real mode,
; sets bit (initial APIC ID from CPUID.1:EBX[31:24]) in a shared mask with LOCK OR, adds 1
; to a shared counter with LOCK XADD, and halts. PASS when the counter is N − 1 and the
; mask holds every APIC ID 1..N−1 (APIC IDs are 0..N−1, as in the MADT this machine and
; QEMU build).
;
; Under QEMU: qemu-system-x86_64 -smp 4 -display none -no-reboot -debugcon stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel smp.bin → exit status 33.

%ifndef TEST_NAME
  %define TEST_NAME "smp"
%endif
%include "guest.inc"

APIC_BASE    equ 0xFEE00000
APIC_SVR     equ 0x0F0
APIC_ICR_LO  equ 0x300
APIC_ICR_HI  equ 0x310
ICR_PENDING  equ 1 << 12            ; delivery status: send pending
ICR_INIT_ALL equ 0x000C4500         ; all excluding self, level assert, INIT
ICR_SIPI_ALL equ 0x000C4600         ; all excluding self, level assert, STARTUP
SIPI_VECTOR  equ LOW_BASE >> 12
PIT_10MS     equ 11932              ; 1.193182 MHz × 10 ms
PIT_200US    equ 239

; ---------------------------------------------------------------------------
; The AP trampoline: must stay the first thing in .lowcode (it runs at LOW_BASE).
; ---------------------------------------------------------------------------
section .lowcode
bits 16
ap_trampoline:                      ; CS = SIPI_VECTOR << 8, IP = 0, real mode
    jmp 0x0000:ap_real              ; CS = 0 so the labels (linked at LOW_BASE) are right
ap_real:
    cli
    xor ax, ax
    mov ds, ax
    mov eax, 1
    cpuid
    shr ebx, 24                     ; initial APIC ID
    mov cl, bl
    mov eax, 1
    shl eax, cl
    lock or [ap_mask], eax
    mov eax, 1
    lock xadd [ap_count], eax
%ifdef LOCK_STRESS
    mov ecx, LOCK_STRESS            ; smplock.asm: many LOCK ADDs racing with the other APs
.stress:
    lock add dword [stress_count], 1
    sub ecx, 1
    jnz .stress
    lock add dword [stress_done], 1
%endif
.halt:
    cli
    hlt
    jmp .halt
align 4
ap_count:    dd 0
ap_mask:     dd 0
%ifdef LOCK_STRESS
stress_count: dd 0
stress_done: dd 0
%endif

section .bss
n_cpus:      resd 1
cpuid_count: resd 1

section .text
BITS32
; pit_wait: ECX = PIT ticks (≤ 0xFFFF). Channel 2 in mode 0 counts down while its gate
; (port 0x61 bit 0) is high; its output (port 0x61 bit 5) goes high at terminal count.
pit_wait:
    push eax
    in al, 0x61
    and al, 0xFC                    ; gate off, speaker off
    out 0x61, al
    mov al, 0xB0                    ; channel 2, lobyte/hibyte, mode 0, binary
    out 0x43, al
    mov al, cl
    out 0x42, al
    mov al, ch
    out 0x42, al
    in al, 0x61
    or al, 0x01                     ; gate on: counting starts
    out 0x61, al
.poll:
    in al, 0x61
    test al, 0x20
    jz .poll
    pop eax
    ret

; icr_send: EAX = ICR low dword (destination by shorthand); waits for delivery.
icr_send:
    mov dword [APIC_BASE + APIC_ICR_HI], 0
    mov [APIC_BASE + APIC_ICR_LO], eax
.busy:
    test dword [APIC_BASE + APIC_ICR_LO], ICR_PENDING
    jnz .busy
    ret

; madt_cpus: EAX = enabled processors in the MADT (0 when there is no RSDP/RSDT/MADT).
madt_cpus:
    push ebx
    push ecx
    push edx
    push esi
    push edi
    xor eax, eax
    mov esi, 0xE0000
.rsdp:
    cmp dword [esi], 'RSD '
    jne .next16
    cmp dword [esi + 4], 'PTR '
    je .rsdp_found
.next16:
    add esi, 16
    cmp esi, 0x100000
    jb .rsdp
    jmp .done
.rsdp_found:
    mov esi, [esi + 16]             ; RsdtAddress
    cmp dword [esi], 'RSDT'
    jne .done
    mov ecx, [esi + 4]
    sub ecx, 36
    shr ecx, 2                      ; number of 32-bit entries
    lea edi, [esi + 36]
.table:
    test ecx, ecx
    jz .done
    mov ebx, [edi]
    cmp dword [ebx], 'APIC'
    je .madt
    add edi, 4
    sub ecx, 1
    jmp .table
.madt:
    mov ecx, ebx
    add ecx, [ebx + 4]              ; end of the MADT
    lea esi, [ebx + 44]             ; first interrupt controller structure
.entry:
    cmp esi, ecx
    jae .done
    movzx edx, byte [esi]
    cmp edx, 0
    jne .not_lapic
    test dword [esi + 4], 1
    jz .advance
    add eax, 1
    jmp .advance
.not_lapic:
    cmp edx, 9
    jne .advance
    test dword [esi + 8], 1
    jz .advance
    add eax, 1
.advance:
    movzx edx, byte [esi + 1]
    test edx, edx
    jz .done                        ; a zero length would loop for ever
    add esi, edx
    jmp .entry
.done:
    pop edi
    pop esi
    pop edx
    pop ecx
    pop ebx
    ret

main:
    call madt_cpus
    mov [n_cpus], eax
    test eax, eax
    jnz .have_madt
    FAIL "no MADT found through the RSDP in 0xE0000-0xFFFFF"
.have_madt:
    mov eax, 1
    cpuid
    shr ebx, 16
    and ebx, 0xFF
    mov [cpuid_count], ebx
    PRINT "smp: the ACPI MADT lists "
    mov eax, [n_cpus]
    call putdec
    PRINT " enabled processors; CPUID.1:EBX[23:16] = "
    mov eax, [cpuid_count]
    call putdec
    PRINT 10

    mov eax, [APIC_BASE + APIC_SVR]
    or eax, 0x1FF                   ; APIC software enable, spurious vector 0xFF
    mov [APIC_BASE + APIC_SVR], eax
    PRINT "smp: INIT to all but self, 10 ms, STARTUP vector 0x02 twice", 10
    mov eax, ICR_INIT_ALL
    call icr_send
    mov ecx, PIT_10MS
    call pit_wait
    mov eax, ICR_SIPI_ALL | SIPI_VECTOR
    call icr_send
    mov ecx, PIT_200US
    call pit_wait
    mov eax, ICR_SIPI_ALL | SIPI_VECTOR
    call icr_send

    mov edx, [n_cpus]
    sub edx, 1                      ; the APs expected
    mov ebx, 200                    ; 200 × 10 ms
.wait:
    cmp [ap_count], edx
    je .counted
    mov ecx, PIT_10MS
    call pit_wait
    sub ebx, 1
    jnz .wait
.counted:
    PRINT "smp: "
    mov eax, [ap_count]
    call putdec
    PRINT " application processors incremented the counter (LOCK XADD); APIC ID mask "
    PRINTHEX [ap_mask]
    PRINT 10
    CHECK [ap_count], edx, "application processors counted"
    mov ecx, [n_cpus]
    mov eax, 1
    shl eax, cl
    sub eax, 2                      ; bits 1..N-1
    CHECK [ap_mask], eax, "APIC IDs seen by the application processors"
%ifdef LOCK_STRESS
    mov ebx, 6000                   ; up to 60 s for every AP to finish its LOCK ADDs
.stress_wait:
    cmp [stress_done], edx
    je .stress_done
    mov ecx, PIT_10MS
    call pit_wait
    sub ebx, 1
    jnz .stress_wait
.stress_done:
    PRINT "smp: LOCK ADD total "
    mov eax, [stress_count]
    call putdec
    PRINT 10
    CHECK [stress_done], edx, "application processors that finished their LOCK ADDs"
    mov eax, edx
    imul eax, eax, LOCK_STRESS
    CHECK [stress_count], eax, "LOCK ADD total (a lost update means LOCK was not atomic)"
%endif
    jmp guest_pass

GUEST_END
