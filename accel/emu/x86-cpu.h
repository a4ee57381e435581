/* x86-cpu.h: the software x86-64 CPU (an interpreter): its architectural state,
 * the callbacks through which it reaches the rest of the machine, and the run
 * loop. Internal to accel/emu/; nothing outside accel/ includes it. */
#ifndef TERN_EMU_X86_CPU_H
#define TERN_EMU_X86_CPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/x86-state.h" /* struct x86_segment, struct x86_dtable */

/* General-purpose register numbers, in the encoding's order. */
enum x86_reg {
    X86_RAX,
    X86_RCX,
    X86_RDX,
    X86_RBX,
    X86_RSP,
    X86_RBP,
    X86_RSI,
    X86_RDI,
    X86_R8,
    X86_R9,
    X86_R10,
    X86_R11,
    X86_R12,
    X86_R13,
    X86_R14,
    X86_R15,
};

/* Segment registers, in the encoding's order, then the system segments. */
enum x86_seg { X86_ES, X86_CS, X86_SS, X86_DS, X86_FS, X86_GS, X86_TR, X86_LDTR, X86_NR_SEGS };

/* RFLAGS bits */
#define X86_CF 0x0001u
#define X86_PF 0x0004u
#define X86_AF 0x0010u
#define X86_ZF 0x0040u
#define X86_SF 0x0080u
#define X86_TF 0x0100u
#define X86_IF 0x0200u
#define X86_DF 0x0400u
#define X86_OF 0x0800u
#define X86_IOPL 0x3000u
#define X86_NT 0x4000u
#define X86_RF 0x10000u
#define X86_VM 0x20000u
#define X86_AC 0x40000u
#define X86_ID 0x200000u
#define X86_ARITH_FLAGS (X86_CF | X86_PF | X86_AF | X86_ZF | X86_SF | X86_OF)

/* Exception vectors */
enum {
    X86_EXC_DE = 0,
    X86_EXC_DB = 1,
    X86_EXC_NMI = 2,
    X86_EXC_BP = 3,
    X86_EXC_OF = 4,
    X86_EXC_BR = 5,
    X86_EXC_UD = 6,
    X86_EXC_NM = 7,
    X86_EXC_DF = 8,
    X86_EXC_TS = 10,
    X86_EXC_NP = 11,
    X86_EXC_SS = 12,
    X86_EXC_GP = 13,
    X86_EXC_PF = 14,
    X86_EXC_MF = 16,
    X86_EXC_AC = 17,
    X86_EXC_MC = 18,
    X86_EXC_XM = 19,
};

/* MSRs the CPU keeps itself (everything else goes to ops->rdmsr/wrmsr). */
#define MSR_IA32_TSC 0x10
#define MSR_IA32_APIC_BASE 0x1b
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_PAT 0x277
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_EFER 0xc0000080
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084
#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_TSC_AUX 0xc0000103

#define EFER_SCE 0x001
#define EFER_LME 0x100
#define EFER_LMA 0x400
#define EFER_NXE 0x800

#define CR0_PE 0x00000001u
#define CR0_MP 0x00000002u
#define CR0_EM 0x00000004u
#define CR0_TS 0x00000008u
#define CR0_ET 0x00000010u
#define CR0_NE 0x00000020u
#define CR0_WP 0x00010000u
#define CR0_AM 0x00040000u
#define CR0_NW 0x20000000u
#define CR0_CD 0x40000000u
#define CR0_PG 0x80000000u
#define CR4_PSE 0x0010u
#define CR4_PAE 0x0020u
#define CR4_PGE 0x0080u

struct x86_cpu;

/* How the CPU reaches the machine. Every callback runs on the vCPU's own thread. */
struct x86_cpu_ops {
    /* Port I/O of (size) bytes (1, 2, 4). On a read fill (data). */
    void (*pio)(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool is_write);
    /* An access of (size) bytes (1, 2, 4, 8) to guest-physical (gpa) outside RAM
     * (the LAPIC page included). Never straddles a page. */
    void (*mmio)(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool is_write);
    /* MSRs the CPU does not keep itself; false raises #GP(0). */
    bool (*rdmsr)(void *opaque, uint32_t msr, uint64_t *value);
    bool (*wrmsr)(void *opaque, uint32_t msr, uint64_t value);
    /* CPUID leaf (leaf, subleaf) into out[0..3] = EAX, EBX, ECX, EDX. */
    void (*cpuid)(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);
    /* The guest's time stamp counter now. */
    uint64_t (*rdtsc)(void *opaque);
    /* An external interrupt may be delivered (IF = 1, no interrupt shadow):
     * return its vector and acknowledge it (the LAPIC moves it from IRR to
     * ISR), or -1 when none is pending. Called only while cpu->irq_request is
     * set; the callee clears irq_request when nothing is left to deliver. */
    int (*irq_ack)(void *opaque);
    /* The guest wrote CR8 (the TPR) (value, 0..15). May be NULL. */
    void (*set_tpr)(void *opaque, uint8_t tpr);
};

/* Why x86_cpu_run() returned. */
enum x86_exit {
    X86_EXIT_KICK,         /* cpu->exit_request was set */
    X86_EXIT_BUDGET,       /* ran (budget) instructions */
    X86_EXIT_HLT,          /* hlt with nothing to deliver: cpu->halted is set */
    X86_EXIT_TRIPLE_FAULT, /* a fault while delivering a double fault: reset the VM */
};

/* One page-sized chunk of guest-physical RAM the CPU may address directly. */
struct x86_ram {
    uint64_t gpa, size;
    uint8_t *hva;
};

/* Guest-physical memory as the CPU sees it. RAM (up to 4 regions) is
 * accessed directly; everything else goes to ops->mmio. Every write to RAM
 * marks its page in (dirty) (one bit per guest frame number, set atomically)
 * while (dirty) is non-NULL; the owner harvests it with get-and-clear. */
struct x86_memory {
    struct x86_ram ram[4];
    unsigned nr_ram;
    unsigned long *dirty; /* may be NULL: no dirty logging */
    uint64_t nr_gfns;
};

/* Architectural state, and the interpreter's own. The registers above
 * (internal) are what save/restore moves. */
struct x86_cpu {
    uint64_t regs[16];
    uint64_t rip;
    uint64_t rflags; /* with valid arithmetic flags: use x86_cpu_get_rflags() */
    struct x86_segment seg[X86_NR_SEGS];
    struct x86_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, efer;
    uint8_t tpr; /* CR8 */
    uint64_t dr[4], dr6, dr7;
    uint64_t star, lstar, cstar, sfmask, kernel_gs_base;
    uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
    uint64_t pat, tsc_aux, misc_enable;
    /* x87/SSE: not interpreted yet (no instruction touches them; the guest
     * is built -mgeneral-regs-only). Kept so the state has a home. */
    uint8_t fxsave[512];
    uint64_t xcr0;

    bool halted;           /* in hlt until an interrupt (or NMI/INIT) */
    bool interrupt_shadow; /* one instruction after sti / mov ss / pop ss */
    bool nmi_pending;

    /* Cross-thread requests, set atomically by other threads: */
    int exit_request; /* leave x86_cpu_run() as soon as possible */
    int irq_request;  /* ops->irq_ack may have something to deliver */

    uint64_t insns; /* instructions retired (statistics) */

    const struct x86_cpu_ops *ops;
    void *opaque;
    struct x86_memory *mem;
    unsigned index; /* for log lines */

    void *internal; /* interpreter-private (TLB, decode cache) */
};

/* Set up (cpu) in its power-on (reset) state: real mode at F000:FFF0, as
 * after RESET/INIT. (mem), (ops), (opaque) are kept. */
void x86_cpu_init(struct x86_cpu *cpu, struct x86_memory *mem, const struct x86_cpu_ops *ops,
                  void *opaque, unsigned index);
void x86_cpu_destroy(struct x86_cpu *cpu);
/* INIT: back to the power-on state of an initialised CPU; its memory, ops,
 * decode cache and the requests other threads made are kept. */
void x86_cpu_reset(struct x86_cpu *cpu);
/* INIT (keeps what INIT keeps: nothing relevant here) then SIPI: real mode at
 * (vector << 8):0000. */
void x86_cpu_sipi(struct x86_cpu *cpu, uint8_t vector);

/* Run until one of enum x86_exit happens, at most (budget) instructions
 * (0: no limit). */
enum x86_exit x86_cpu_run(struct x86_cpu *cpu, uint64_t budget);

/* RFLAGS with the arithmetic flags materialised; set replaces them all. */
uint64_t x86_cpu_get_rflags(struct x86_cpu *cpu);
void x86_cpu_set_rflags(struct x86_cpu *cpu, uint64_t rflags);
/* After the owner changed registers, CRs, EFER or segments behind the
 * interpreter's back (state load): drop every cached translation and decode. */
void x86_cpu_state_changed(struct x86_cpu *cpu);
/* The guest-physical pages [gpa, gpa + len) changed behind the CPU (the VMM
 * wrote them, or they were loaded from a stream): drop decoded code there. */
void x86_cpu_code_written(struct x86_cpu *cpu, uint64_t gpa, uint64_t len);
/* Deliver an NMI at the next instruction boundary. */
void x86_cpu_nmi(struct x86_cpu *cpu);

#endif
