# kvmprobe.S: the boot sector otherix-agent boots under -accel kvm to tell
# whether KVM really runs guests. It does what every 64-bit kernel does
# first: protected mode, PAE paging, EFER.LME, long mode; then it prints
# OTXKVMLM on COM1. Nested or paravirtual KVM that starts QEMU but cannot
# run guests fails somewhere on this path.
#
# Rebuild kvmprobe.bin (the test checks it matches):
#   as --64 -o kvmprobe.o kvmprobe.S && objcopy -O binary -j .text kvmprobe.o kvmprobe.bin
.code16
.org 0
start:
  cli
  xor %ax, %ax
  mov %ax, %ds
  mov %ax, %es
  # page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): zero 3 pages
  mov $0x1000, %di
  xor %eax, %eax
  mov $0x0C00, %cx
  cld
  rep stosl
  movl $0x2003, 0x1000      # PML4[0] -> PDPT
  movl $0x3003, 0x2000      # PDPT[0] -> PD
  movl $0x0083, 0x3000      # PD[0] -> 2 MiB page at 0, present|rw|ps
  lgdt gdtr - start + 0x7c00
  mov %cr4, %eax
  or $0x20, %eax            # PAE
  mov %eax, %cr4
  mov $0x1000, %eax
  mov %eax, %cr3
  mov $0xC0000080, %ecx     # EFER
  rdmsr
  or $0x100, %eax           # LME
  wrmsr
  mov %cr0, %eax
  or $0x80000001, %eax      # PG | PE
  mov %eax, %cr0
  ljmp $0x08, $(lm - start + 0x7c00)
.code64
lm:
  mov $0x10, %ax
  mov %ax, %ds
  mov %ax, %ss
  lea msg(%rip), %rsi
  mov $0x3f8, %dx
1:
  lodsb
  test %al, %al
  jz 2f
  outb %al, %dx
  jmp 1b
2:
  hlt
  jmp 2b
.align 8
gdt:
  .quad 0
  .quad 0x00AF9A000000FFFF
  .quad 0x00CF92000000FFFF
gdtr:
  .word 23
  .long gdt - start + 0x7c00
msg:
  .ascii "OTXKVMLM\r\n\0"
.org 510
  .byte 0x55, 0xAA
