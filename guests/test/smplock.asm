; smplock.asm: smp.asm with every application processor also adding 1 to a shared counter
; 200,000 times with LOCK ADD while the others do the same (Intel SDM vol. 3 §8.1.2.2: a
; locked read-modify-write is atomic with respect to every other processor). PASS when the
; total is (N − 1) × 200,000: any lost update means LOCK was not atomic across vCPUs.
;
; Under QEMU: qemu-system-x86_64 -smp 4 -display none -no-reboot -debugcon stdio -device
; isa-debug-exit,iobase=0xf4,iosize=4 -kernel smplock.bin → exit status 33.

%define TEST_NAME "smplock"
%define LOCK_STRESS 200000
%include "../test/smp.asm"     ; found through -I guests/lib/
