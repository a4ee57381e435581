/* entry.S: PVH entry note, 32-bit boot stub (identity page tables), switch to long mode, per-CPU stack. */
#include "layout.h"

/* XEN_ELFNOTE_PHYS32_ENTRY (18): 8-byte descriptor, 4-byte aligned note. */
    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry

/* The stub runs emulated on kvm_pvm (~1 us/instruction): keep it short. */
    .section .text.entry, "ax"
    .code32
    .globl pvh_entry
pvh_entry:
    movl %ebx, boot_start_info_pa
    lgdt gdt_ptr
    ljmp $SEL_CODE32, $1f
1:  movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs

    /* Identity map of the low 4 GiB with 2 MiB pages (4 PDs, contiguous). */
    movl $pd_tables, %edi
    movl $(PTE_P | PTE_RW | PTE_US | PTE_PS), %eax
    movl $2048, %ecx
2:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    decl %ecx
    jnz 2b
    /* The 2 MiB page holding the LAPIC (0xfee00000) is uncached. */
    orl $(PTE_PCD | PTE_PWT), pd_tables + 8 * 2047
    movl $(pd_tables + 0x0000 + PTE_P + PTE_RW + PTE_US), pdpt_table
    movl $(pd_tables + 0x1000 + PTE_P + PTE_RW + PTE_US), pdpt_table + 8
    movl $(pd_tables + 0x2000 + PTE_P + PTE_RW + PTE_US), pdpt_table + 16
    movl $(pd_tables + 0x3000 + PTE_P + PTE_RW + PTE_US), pdpt_table + 24
    movl $(pdpt_table + PTE_P + PTE_RW + PTE_US), pml4_table

/* Common to the BSP and the APs (from the trampoline): flat 32-bit segments, paging off. */
    .globl lm_enable
lm_enable:
    movl $CR4_VALUE, %eax
    movl %eax, %cr4
    movl $pml4_table, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $EFER_BITS, %eax
    wrmsr
    movl $CR0_VALUE, %eax
    movl %eax, %cr0
    ljmp $SEL_CODE64, $long_entry

    .code64
long_entry:
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    /* CPU index in arrival order: the BSP is first. */
    movl $1, %eax
    lock xaddl %eax, cpu_next(%rip)
    cmpl $MAX_CPUS, %eax
    jae 3f
    movl %eax, %edi
    leaq 1(%rax), %rsp
    shlq $15, %rsp                      /* * PERCPU_SIZE */
    leaq percpu(%rip), %rdx
    addq %rdx, %rsp                     /* top of this CPU's block = its main stack */
    xorl %ebp, %ebp
    call cpu_start
3:  hlt
    jmp 3b

    .section .data
    .balign 16
    .globl gdt
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff            /* 0x08 code32 */
    .quad 0x00af9b000000ffff            /* 0x10 code64, DPL 0 */
    .quad 0x00cf93000000ffff            /* 0x18 data, DPL 0 */
    .fill 2 * MAX_CPUS, 8, 0            /* 0x20 TSS descriptors, filled in by idt.c */
gdt_end:
    .balign 8
    .globl gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
cpu_next:
    .long 0

    .section .bss.pagetables, "aw", @nobits
    .balign 4096
    .globl pml4_table, pdpt_table
pml4_table:
    .skip 4096
pdpt_table:
    .skip 4096
pd_tables:
    .skip 4 * 4096

    .section .note.GNU-stack, "", @progbits
