/* x86-internal.h: interpreter-private state and helpers shared by the x86-*.c files. */
#ifndef TERN_EMU_X86_INTERNAL_H
#define TERN_EMU_X86_INTERNAL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "x86-cpu.h"

#define X86_PAGE_SIZE 4096u
#define X86_PAGE_MASK (~(uint64_t)0xfff)
#define X86_TLB_SIZE 1024

/* Lazy arithmetic flags: the last flag-setting operation, evaluated on demand. */
enum x86_cc_op {
    CC_EAGER, /* flags are in cpu->rflags */
    CC_ADD,   /* src1 + src2 (+ carry in aux) = res */
    CC_SUB,   /* src1 - src2 (- borrow in aux) = res */
    CC_LOGIC, /* CF = OF = AF = 0 */
    CC_INC,   /* src1 + 1: CF kept in aux */
    CC_DEC,   /* src1 - 1: CF kept in aux */
    CC_SHL,   /* src1 << src2 (count 1..bits-1) */
    CC_SHR,   /* src1 >> src2 (logical) */
    CC_SAR,   /* src1 >> src2 (arithmetic) */
};

/* Access kinds for the MMU (also the TLB permission index). */
enum x86_access { ACC_READ, ACC_WRITE, ACC_EXEC };

/* One software-TLB entry: a virtual page of RAM with its host address. A tag
 * of (vpage | 1) per access kind says that kind is allowed without a walk. */
struct x86_tlb_entry {
    uint64_t tag[3];
    uint8_t *hva;          /* host address of the page */
    uint64_t gpa;          /* guest-physical page */
    uint64_t vbase, vmask; /* the guest page it came from (4K/2M/1G), for invlpg */
    bool global;
};

/* A decoded instruction. */
struct x86_insn {
    uint64_t rip; /* address of its first byte (offset in CS) */
    uint64_t next_rip;
    uint8_t bytes[16];
    unsigned len;
    unsigned op; /* opcode: 0x000-0x0ff, 0x100-0x1ff (0f xx), 0x200 (0f 38), 0x300 (0f 3a) */
    unsigned opsize, addrsize;                  /* in bytes */
    uint8_t rex, rep, lock, opsize_prefix, seg; /* seg: X86_DS unless overridden */
    bool seg_override;
    bool has_modrm, mem;
    uint8_t mod, reg, rm;       /* reg, rm with REX bits */
    uint64_t ea;                /* effective address (offset): computed at execution */
    int8_t base_reg, index_reg; /* -1: none */
    uint8_t scale;
    uint64_t disp; /* displacement (RIP-relative: already the target) */
    uint64_t imm, imm2;
    void (*fn)(struct x86_cpu *cpu, struct x86_insn *i); /* handler */
    uint8_t hd, hs, hcc; /* handler operands: destination, source register, condition */
    bool chain;          /* a fast handler: the run loop may go on to the next one directly */
    struct x86_insn *next, *taken; /* likely successors (checked before use) */
    struct x86_insn *fuse;         /* a following jcc run by the same handler call */
    void (*prod)(struct x86_cpu *cpu, struct x86_insn *i); /* own handler when fused */
    /* decode-cache key */
    uint64_t la;    /* linear address of the first byte */
    uint32_t epoch; /* valid while equal to the CPU's dc_epoch */
    uint8_t mode;   /* x86_mode_key() at decode time */
};

#define X86_DCACHE_SIZE 4096

/* Decoding depends on the code size only (64 / 32 / 16-bit). */
static inline uint8_t x86_mode_key(const struct x86_cpu *cpu)
{
    if ((cpu->efer & EFER_LMA) && cpu->seg[X86_CS].l)
        return 3;
    return cpu->seg[X86_CS].db ? 2 : 1;
}

struct x86_internal {
    jmp_buf fault_jmp;
    /* lazy flags */
    unsigned cc_op, cc_size;
    uint64_t cc_src1, cc_src2, cc_res, cc_aux;
    struct x86_tlb_entry tlb[X86_TLB_SIZE];
    uint64_t left, start_left; /* instructions left in this x86_cpu_run(), at its start */
    uint64_t step_left;        /* left, while single-stepping (left is 0 then) */
    bool stepping;
    struct x86_insn *cur;     /* the instruction executing */
    struct x86_insn *dcache;  /* X86_DCACHE_SIZE decoded instructions, by linear address */
    uint32_t dc_epoch;        /* bumped to drop every decoded instruction */
    uint32_t seen_code_epoch; /* x86_code_epoch when last looked at */
    /* exception in flight */
    int exc_vec;
    uint32_t exc_err;
    bool exc_has_err;
    int delivering; /* nesting: 1 while delivering an event, 2 a #DF */
    int delivering_class;
    bool delivering_ext, exc_ext; /* the event came from outside (EXT bit) */
    bool in_insn;                 /* executing an instruction: faults restart it */
    bool nmi_blocked;             /* from NMI delivery to the next iret */
    unsigned log_count;
};

static inline struct x86_internal *x86_in(struct x86_cpu *cpu)
{
    return cpu->internal;
}

/* mode queries */
static inline bool x86_long_mode(const struct x86_cpu *cpu)
{
    return (cpu->efer & EFER_LMA) != 0;
}

static inline bool x86_mode64(const struct x86_cpu *cpu)
{
    return x86_long_mode(cpu) && cpu->seg[X86_CS].l;
}

static inline bool x86_real_mode(const struct x86_cpu *cpu)
{
    return !(cpu->cr0 & CR0_PE);
}

static inline unsigned x86_cpl(const struct x86_cpu *cpu)
{
    if (x86_real_mode(cpu))
        return 0;
    if (cpu->rflags & X86_VM)
        return 3;
    return cpu->seg[X86_CS].dpl;
}

static inline bool x86_canonical(uint64_t v)
{
    return (uint64_t)((int64_t)(v << 16) >> 16) == v;
}

static inline uint64_t x86_size_mask(unsigned size)
{
    return size == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (size * 8)) - 1);
}

/* x86-cpu.c: exceptions (never return: unwind to the run loop) */
_Noreturn void x86_raise(struct x86_cpu *cpu, int vec, uint32_t err, bool has_err);
_Noreturn void x86_raise_gp(struct x86_cpu *cpu, uint32_t err);
_Noreturn void x86_raise_ud(struct x86_cpu *cpu);
/* Deliver interrupt/exception (vec) now; (soft) for int n (checks gate DPL). */
void x86_deliver(struct x86_cpu *cpu, int vec, uint32_t err, bool has_err, bool soft,
                 uint64_t ret_rip);

/* x86-flags.c */
uint64_t x86_flags(struct x86_cpu *cpu); /* arithmetic flags materialised */
void x86_flags_set(struct x86_cpu *cpu, uint64_t flags_val, uint64_t mask);
bool x86_cond(struct x86_cpu *cpu, unsigned cc);
bool x86_cf(struct x86_cpu *cpu);
static inline void x86_cc_set(struct x86_cpu *cpu, unsigned op, unsigned size, uint64_t s1,
                              uint64_t s2, uint64_t res, uint64_t aux)
{
    struct x86_internal *in = x86_in(cpu);
    in->cc_op = op;
    in->cc_size = size;
    in->cc_src1 = s1;
    in->cc_src2 = s2;
    in->cc_res = res;
    in->cc_aux = aux;
}

/* x86-mmu.c: memory */
void x86_tlb_flush(struct x86_cpu *cpu, bool keep_global);
void x86_tlb_flush_page(struct x86_cpu *cpu, uint64_t la);
/* Translate linear (la) for (acc) at (cpl); raises #PF. Returns the gpa. */
uint64_t x86_translate(struct x86_cpu *cpu, uint64_t la, enum x86_access acc, bool user);
/* Host pointer to a RAM page for linear (la), or NULL (MMIO); raises #PF. */
uint8_t *x86_page_ptr(struct x86_cpu *cpu, uint64_t la, enum x86_access acc, bool user,
                      uint64_t *gpa_out);
void x86_phys_read(struct x86_cpu *cpu, uint64_t gpa, void *buf, unsigned len);
void x86_phys_write(struct x86_cpu *cpu, uint64_t gpa, const void *buf, unsigned len);
uint8_t *x86_phys_ptr(struct x86_cpu *cpu, uint64_t gpa);
void x86_mark_dirty(struct x86_cpu *cpu, uint64_t gpa);
/* Linear accesses (split at page boundaries), with implicit supervisor (sys). */
void x86_lin_read(struct x86_cpu *cpu, uint64_t la, void *buf, unsigned len, bool sys);
void x86_lin_write(struct x86_cpu *cpu, uint64_t la, const void *buf, unsigned len, bool sys);
uint64_t x86_lin_read_n(struct x86_cpu *cpu, uint64_t la, unsigned size, bool sys);
void x86_lin_write_n(struct x86_cpu *cpu, uint64_t la, uint64_t v, unsigned size, bool sys);
/* Segmented (seg:off) to linear, with the 64-bit canonical check. */
uint64_t x86_linear(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned addrsize);
uint64_t x86_mem_read(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size);
void x86_mem_write(struct x86_cpu *cpu, unsigned seg, uint64_t off, uint64_t v, unsigned size);
uint64_t x86_mem_read_rmw(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size);

/* x86-seg.c: segments and descriptors */
void x86_seg_load_real(struct x86_cpu *cpu, unsigned seg, uint16_t sel);
/* Load (seg) with (sel) in protected mode with the usual checks (not CS). */
void x86_seg_load(struct x86_cpu *cpu, unsigned seg, uint16_t sel);
/* Read descriptor (sel) into (s); raises #GP(sel) when out of the table. */
void x86_read_descriptor(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s,
                         uint64_t *raw_hi);
void x86_far_jump(struct x86_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize, bool call,
                  uint64_t ret_rip);
void x86_far_ret(struct x86_cpu *cpu, unsigned opsize, uint16_t pop_extra);
void x86_iret(struct x86_cpu *cpu, unsigned opsize);
void x86_load_tr(struct x86_cpu *cpu, uint16_t sel);
void x86_load_ldt(struct x86_cpu *cpu, uint16_t sel);
void x86_io_check(struct x86_cpu *cpu, uint16_t port, unsigned size);
void x86_seg_check(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size, bool write);

/* Self-modifying code: guest frames holding decoded code (a filter, by
 * gfn modulo its size, shared by every CPU of the process), and an epoch
 * bumped whenever one of them is written. */
extern unsigned long x86_code_filter[];
extern uint32_t x86_code_epoch;
#define X86_CODE_FILTER_BITS (1u << 24) /* 64 GiB of frames before aliasing */
void x86_code_page_note(uint64_t gpa);  /* decoding from this frame */
void x86_code_page_hit(uint64_t gfn);   /* a write hit a filter bit */
/* A CPU write to RAM frame (gpa): x86_mark_dirty() when there is something to do. */
static inline void x86_note_write(struct x86_cpu *cpu, uint64_t gpa)
{
    const unsigned lb = 8 * sizeof(unsigned long);
    uint64_t gfn = gpa >> 12, b = gfn % X86_CODE_FILTER_BITS;
    /* Set and cleared by the migration thread (op_dirty_log_start/stop). */
    const unsigned long *d = __atomic_load_n(&cpu->mem->dirty, __ATOMIC_ACQUIRE);

    if ((__atomic_load_n(&x86_code_filter[b / lb], __ATOMIC_RELAXED) >> (b % lb)) & 1)
        x86_mark_dirty(cpu, gpa);
    else if (d && gfn < cpu->mem->nr_gfns &&
             !((__atomic_load_n(&d[gfn / lb], __ATOMIC_RELAXED) >> (gfn % lb)) & 1))
        x86_mark_dirty(cpu, gpa);
}

static inline void x86_dc_flush(struct x86_cpu *cpu)
{
    x86_in(cpu)->dc_epoch++;
}

/* x86-decode.c: decode the instruction at CS:RIP into (i); raises #PF/#GP/#UD */
void x86_decode(struct x86_cpu *cpu, struct x86_insn *i);

/* x86-fast.c: specialised handlers for the hottest instruction forms */
void x86_select_handler(struct x86_cpu *cpu, struct x86_insn *i);
/* (prev) ran just before (i), falling through to it: fuse a jcc into it. */
void x86_try_fuse(struct x86_insn *prev, struct x86_insn *i);

/* x86-exec.c */
void x86_exec_generic(struct x86_cpu *cpu, struct x86_insn *i);
uint64_t x86_reg_get(struct x86_cpu *cpu, struct x86_insn *i, unsigned r, unsigned size);
void x86_reg_set(struct x86_cpu *cpu, struct x86_insn *i, unsigned r, unsigned size, uint64_t v);
uint64_t x86_rm_read(struct x86_cpu *cpu, struct x86_insn *i, unsigned size);
void x86_rm_write(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, uint64_t v);

/* x86-string.c: movs/stos/lods/cmps/scas/ins/outs with rep prefixes */
void x86_exec_string(struct x86_cpu *cpu, struct x86_insn *i);

/* x86-system.c: system instructions */
void x86_write_cr(struct x86_cpu *cpu, unsigned cr, uint64_t v);
uint64_t x86_read_cr(struct x86_cpu *cpu, unsigned cr);
bool x86_rdmsr(struct x86_cpu *cpu, uint32_t msr, uint64_t *v);
bool x86_wrmsr(struct x86_cpu *cpu, uint32_t msr, uint64_t v);
void x86_exec_0f01(struct x86_cpu *cpu, struct x86_insn *i);
void x86_exec_0f00(struct x86_cpu *cpu, struct x86_insn *i);
void x86_exec_lar_lsl(struct x86_cpu *cpu, struct x86_insn *i, bool lsl);
void x86_sysenter(struct x86_cpu *cpu);
void x86_sysexit(struct x86_cpu *cpu, bool wide);
void x86_syscall(struct x86_cpu *cpu);
void x86_sysret(struct x86_cpu *cpu);
/* x86-fpu.c: x87/SSE/AVX. Only the state-management instructions so far
 * (fxsave/fxrstor, ldmxcsr/stmxcsr, fninit, fnstcw/fldcw, fnstsw, fnclex);
 * the rest raise #UD. This is where those instructions go. */
void x86_exec_fpu(struct x86_cpu *cpu, struct x86_insn *i);
void x86_fpu_reset(struct x86_cpu *cpu);
void x86_log_unknown(struct x86_cpu *cpu, struct x86_insn *i);

/* Execute one instruction, from the decode cache when it is there, and
 * then, while they are simple 64-bit-mode instructions whose successor is
 * cached, the following ones (at most in->left in all). */
static inline void x86_step(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);
    uint32_t ce = __atomic_load_n(&x86_code_epoch, __ATOMIC_RELAXED);
    uint64_t la = cpu->rip;
    uint8_t mode = x86_mode_key(cpu);
    struct x86_insn *i, *prev = in->cur;

    if (ce != in->seen_code_epoch) {
        in->seen_code_epoch = ce;
        in->dc_epoch++;
    }
    if (mode != 3)
        la = (la + cpu->seg[X86_CS].base) & 0xffffffffu;
    i = &in->dcache[(la ^ (la >> 12)) % X86_DCACHE_SIZE];
    in->cur = i;
    if (i->la != la || i->epoch != in->dc_epoch || i->mode != mode) {
        i->epoch = 0;
        x86_decode(cpu, i);
        x86_select_handler(cpu, i);
        i->epoch = in->dc_epoch;
    }
    /* remember the way from the previous instruction */
    if (prev && prev->chain && prev->epoch == in->dc_epoch) {
        if (prev->next_rip == la) {
            prev->next = i;
            if (!prev->fuse)
                x86_try_fuse(prev, i);
        } else
            prev->taken = i;
    }
    for (;;) {
        struct x86_insn *n;

        i->fn(cpu, i);
        if (!i->chain || !in->left)
            return;
        if (cpu->rip == i->next_rip) {
            n = i->next;
        } else {
            n = i->taken;
            /* a taken branch: look around */
            if (__atomic_load_n(&cpu->exit_request, __ATOMIC_RELAXED) |
                __atomic_load_n(&cpu->irq_request, __ATOMIC_RELAXED) | cpu->nmi_pending)
                return;
        }
        if (!n || n->la != cpu->rip || n->epoch != in->dc_epoch || n->mode != 3)
            return;
        in->left--;
        in->cur = i = n;
    }
}

#endif
