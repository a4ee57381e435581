/* trampoline.S: AP start-up code, copied to TRAMPOLINE_PA: real mode -> 32-bit -> lm_enable (entry.S). */
#include "layout.h"

#define TADDR(x) ((x) - trampoline_start + TRAMPOLINE_PA)

    .section .rodata.trampoline, "a"
    .code16
    .globl trampoline_start, trampoline_end
trampoline_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl TADDR(tramp_gdt_ptr)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $TADDR(tramp32)
    .code32
tramp32:
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl $lm_enable, %eax
    jmp *%eax
    .balign 8
tramp_gdt_ptr:
    .word 4 * 8 - 1                     /* the first four entries of the real GDT */
    .long gdt
trampoline_end:

    .section .note.GNU-stack, "", @progbits
