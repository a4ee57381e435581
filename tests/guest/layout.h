/* layout.h: constants shared by the guest's assembly and C code. */
#ifndef TESTGUEST_LAYOUT_H
#define TESTGUEST_LAYOUT_H

#define MAX_CPUS 64
#define PERCPU_SIZE 0x8000 /* per-CPU block: struct cpu, vIF page, stacks */
#define IRQ_STACK_SIZE 0x2000

#define SEL_CODE32 0x08
#define SEL_CODE64 0x10
#define SEL_DATA 0x18
#define SEL_TSS0 0x20 /* one 16-byte TSS descriptor per CPU from here */

#define DEBUG_EXIT_PORT 0xf4 /* isa-debug-exit (QEMU's convention) */
#define EXIT_BENCH_PORT 0xf5 /* unclaimed: an OUT there is a bare VM exit */

#define TRAMPOLINE_PA 0x8000 /* AP real-mode entry (SIPI vector 0x08) */

#define PTE_P 0x1
#define PTE_RW 0x2
#define PTE_US 0x4 /* kvm_pvm: required at every level */
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS 0x80

#define CR0_VALUE 0x80050033 /* PG AM WP NE ET MP PE */
#define CR4_VALUE 0x620      /* PAE OSFXSR OSXMMEXCPT */
#define EFER_BITS 0x901      /* NXE LME SCE (LMA follows) */

#endif
