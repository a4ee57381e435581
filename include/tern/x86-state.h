/* x86-state.h: the complete state of one x86 vCPU as both accelerators save it.
 * The layouts mirror KVM's ABI structures (accel/kvm/ checks that with static
 * asserts and copies), so a vCPU node reads the same whichever backend wrote it. */
#ifndef TERN_X86_STATE_H
#define TERN_X86_STATE_H

#include <stdint.h>

struct vmstate_desc;

/* A segment register with its hidden (descriptor cache) part. */
struct x86_segment {
    uint64_t base;
    uint32_t limit; /* byte granular (already scaled by G) */
    uint16_t selector;
    uint8_t type, present, dpl, db, s, l, g, avl, unusable;
    uint8_t padding;
};

struct x86_dtable {
    uint64_t base;
    uint16_t limit;
    uint16_t padding[3];
};

struct x86_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct x86_sregs {
    struct x86_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct x86_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    uint64_t interrupt_bitmap[4]; /* a pending external interrupt, by vector */
};

struct x86_fpu {
    uint8_t fpr[8][16];
    uint16_t fcw, fsw;
    uint8_t ftwx, pad1;
    uint16_t last_opcode;
    uint64_t last_ip, last_dp;
    uint8_t xmm[16][16];
    uint32_t mxcsr, pad2;
};

struct x86_xcr {
    uint32_t xcr, reserved;
    uint64_t value;
};

struct x86_xcrs {
    uint32_t nr_xcrs, flags;
    struct x86_xcr xcrs[16];
    uint64_t padding[16];
};

struct x86_lapic {
    uint8_t regs[1024]; /* each 32-bit register at its MMIO offset */
};

struct x86_events {
    struct {
        uint8_t injected, nr, has_error_code, pending;
        uint32_t error_code;
    } exception;
    struct {
        uint8_t injected, nr, soft, shadow;
    } interrupt;
    struct {
        uint8_t injected, pending, masked, pad;
    } nmi;
    uint32_t sipi_vector, flags;
    struct {
        uint8_t smm, pending, smm_inside_nmi, latched_init;
    } smi;
    struct {
        uint8_t pending;
    } triple_fault;
    uint8_t reserved[26];
    uint8_t exception_has_payload;
    uint64_t exception_payload;
};

struct x86_debugregs {
    uint64_t db[4], dr6, dr7, flags, reserved[9];
};

/* mp_state values (KVM_MP_STATE_*) */
enum {
    X86_MP_RUNNABLE = 0,
    X86_MP_UNINITIALIZED = 1, /* an AP waiting for INIT/SIPI */
    X86_MP_INIT_RECEIVED = 2,
    X86_MP_HALTED = 3,
    X86_MP_SIPI_RECEIVED = 4,
};

struct x86_mp_state {
    uint32_t mp_state;
};

/* Everything of one vCPU but XSAVE (its size depends on the host) and the
 * MSRs (a variable list): those two are child nodes of their own. */
struct x86_vcpu_state {
    struct x86_mp_state mp_state;
    struct x86_regs regs;
    struct x86_sregs sregs;
    struct x86_fpu fpu;
    struct x86_xcrs xcrs;
    struct x86_lapic lapic;
    struct x86_events events;
    struct x86_debugregs debugregs;
};

/* The table of struct x86_vcpu_state: node "cpu@N" with children mp-state,
 * regs, sregs, fpu, xcrs, lapic, events, debugregs (docs/vmstate.md). */
extern const struct vmstate_desc x86_vcpu_vmstate;

/* MSR child node "msrs": one u64 property per MSR, named by its index in hex. */
#define X86_MSR_NODE "msrs"

#endif
