/* x86-cpu.c: reset state, the run loop, and exception/interrupt delivery through the IVT/IDT. */
#include <stdio.h>
#include <stdlib.h>

#include "x86-internal.h"

/* An exception classes, for the double-fault rules. */
enum { EXC_BENIGN, EXC_CONTRIB, EXC_PAGE, EXC_DOUBLE };

static int exc_class(int vec)
{
    switch (vec) {
    case X86_EXC_DE:
    case X86_EXC_TS:
    case X86_EXC_NP:
    case X86_EXC_SS:
    case X86_EXC_GP:
        return EXC_CONTRIB;
    case X86_EXC_PF:
        return EXC_PAGE;
    case X86_EXC_DF:
        return EXC_DOUBLE;
    default:
        return EXC_BENIGN;
    }
}

void x86_raise(struct x86_cpu *cpu, int vec, uint32_t err, bool has_err)
{
    struct x86_internal *in = x86_in(cpu);

    in->exc_vec = vec;
    in->exc_err = err;
    in->exc_has_err = has_err;
    longjmp(in->fault_jmp, 1);
}

void x86_raise_gp(struct x86_cpu *cpu, uint32_t err)
{
    x86_raise(cpu, X86_EXC_GP, err, true);
}

void x86_raise_ud(struct x86_cpu *cpu)
{
    x86_raise(cpu, X86_EXC_UD, 0, false);
}

static void set_seg(struct x86_segment *s, uint16_t sel, uint64_t base, uint32_t limit,
                    uint8_t type, bool code_or_data)
{
    memset(s, 0, sizeof(*s));
    s->selector = sel;
    s->base = base;
    s->limit = limit;
    s->type = type;
    s->present = 1;
    s->s = code_or_data;
}

static void reset_state(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);

    memset(cpu->regs, 0, sizeof(cpu->regs));
    cpu->regs[X86_RDX] = 0x600;
    cpu->rip = 0xfff0;
    cpu->rflags = 2;
    for (unsigned s = 0; s < X86_NR_SEGS; s++)
        set_seg(&cpu->seg[s], 0, 0, 0xffff, 3, true);
    set_seg(&cpu->seg[X86_CS], 0xf000, 0xffff0000u, 0xffff, 0xb, true);
    set_seg(&cpu->seg[X86_TR], 0, 0, 0xffff, 0xb, false);
    set_seg(&cpu->seg[X86_LDTR], 0, 0, 0xffff, 2, false);
    cpu->gdt.base = cpu->idt.base = 0;
    cpu->gdt.limit = cpu->idt.limit = 0xffff;
    cpu->cr0 = CR0_ET | CR0_NW | CR0_CD;
    cpu->cr2 = cpu->cr3 = cpu->cr4 = 0;
    cpu->efer = 0;
    cpu->tpr = 0;
    memset(cpu->dr, 0, sizeof(cpu->dr));
    cpu->dr6 = 0xffff0ff0;
    cpu->dr7 = 0x400;
    cpu->pat = 0x0007040600070406ull;
    cpu->misc_enable = 1;
    cpu->xcr0 = 1;
    x86_fpu_reset(cpu);
    cpu->halted = false;
    cpu->interrupt_shadow = false;
    cpu->nmi_pending = false;
    in->cc_op = CC_EAGER;
    in->delivering = 0;
    x86_tlb_flush(cpu, false);
}

static void internal_free(struct x86_internal *in)
{
    free(in->dcache);
    free(in);
}

void x86_cpu_init(struct x86_cpu *cpu, struct x86_memory *mem, const struct x86_cpu_ops *ops,
                  void *opaque, unsigned index)
{
    memset(cpu, 0, sizeof(*cpu));
    cpu->mem = mem;
    cpu->ops = ops;
    cpu->opaque = opaque;
    cpu->index = index;
    cpu->internal = calloc(1, sizeof(struct x86_internal));
    if (!cpu->internal)
        abort();
    x86_in(cpu)->dcache = calloc(X86_DCACHE_SIZE, sizeof(struct x86_insn));
    if (!x86_in(cpu)->dcache)
        abort();
    x86_in(cpu)->dc_epoch = 1;
    reset_state(cpu);
}

void x86_cpu_destroy(struct x86_cpu *cpu)
{
    if (cpu->internal)
        internal_free(cpu->internal);
    cpu->internal = NULL;
}

void x86_cpu_reset(struct x86_cpu *cpu)
{
    reset_state(cpu);
}

void x86_cpu_sipi(struct x86_cpu *cpu, uint8_t vector)
{
    reset_state(cpu);
    set_seg(&cpu->seg[X86_CS], (uint16_t)(vector << 8), (uint64_t)vector << 12, 0xffff, 0xb, true);
    cpu->rip = 0;
}

void x86_cpu_state_changed(struct x86_cpu *cpu)
{
    /* (the lazy flags stay: x86_cpu_set_rflags() is how RFLAGS is replaced) */
    x86_tlb_flush(cpu, false);
}

void x86_cpu_code_written(struct x86_cpu *cpu, uint64_t gpa, uint64_t len)
{
    /* every CPU drops its decoded instructions at its next one */
    (void)cpu;
    (void)gpa;
    (void)len;
    __atomic_fetch_add(&x86_code_epoch, 1, __ATOMIC_SEQ_CST);
}

void x86_cpu_nmi(struct x86_cpu *cpu)
{
    __atomic_store_n(&cpu->nmi_pending, true, __ATOMIC_SEQ_CST);
}

static void push_sys(struct x86_cpu *cpu, uint64_t *sp, uint64_t v, unsigned size, unsigned sp_size)
{
    uint64_t base = cpu->seg[X86_SS].base;

    *sp = (*sp - size) & x86_size_mask(sp_size);
    if (x86_long_mode(cpu) && sp_size == 8)
        x86_lin_write_n(cpu, *sp, v, size, true);
    else
        x86_lin_write_n(cpu, (base + *sp) & 0xffffffffu, v, size, true);
}

static void deliver_real(struct x86_cpu *cpu, int vec, uint64_t ret_rip)
{
    uint64_t sp = cpu->regs[X86_RSP] & 0xffff;
    uint16_t ip, cs;
    uint64_t flags = x86_flags(cpu);

    if ((unsigned)vec * 4 + 3 > cpu->idt.limit)
        x86_raise_gp(cpu, 0);
    ip = (uint16_t)x86_lin_read_n(cpu, cpu->idt.base + vec * 4, 2, true);
    cs = (uint16_t)x86_lin_read_n(cpu, cpu->idt.base + vec * 4 + 2, 2, true);
    push_sys(cpu, &sp, flags, 2, 2);
    push_sys(cpu, &sp, cpu->seg[X86_CS].selector, 2, 2);
    push_sys(cpu, &sp, ret_rip, 2, 2);
    cpu->regs[X86_RSP] = (cpu->regs[X86_RSP] & ~0xffffull) | sp;
    cpu->rflags &= ~(uint64_t)(X86_IF | X86_TF | X86_AC | X86_RF);
    x86_seg_load_real(cpu, X86_CS, cs);
    cpu->rip = ip;
}

static void deliver_prot(struct x86_cpu *cpu, int vec, uint32_t err, bool has_err, bool soft,
                         uint64_t ret_rip, bool ext)
{
    bool lm = x86_long_mode(cpu);
    unsigned gsize = lm ? 16 : 8, cpl = x86_cpl(cpu);
    uint32_t gerr = vec * 8 + 2 + (ext ? 1 : 0);
    uint64_t lo, hi = 0, off, sp, flags = x86_flags(cpu);
    struct x86_segment cs, ss;
    unsigned type, dpl, ist, new_cpl, ssz;
    uint16_t sel;

    if ((unsigned)vec * gsize + gsize - 1 > cpu->idt.limit)
        x86_raise_gp(cpu, gerr);
    lo = x86_lin_read_n(cpu, cpu->idt.base + vec * gsize, 8, true);
    if (lm)
        hi = x86_lin_read_n(cpu, cpu->idt.base + vec * gsize + 8, 8, true);
    type = (lo >> 40) & 0xf;
    dpl = (lo >> 45) & 3;
    ist = lm ? (lo >> 32) & 7 : 0;
    if (lm ? (type != 0xe && type != 0xf) : (type != 0xe && type != 0xf && type != 6 && type != 7))
        x86_raise_gp(cpu, gerr);
    if (soft && dpl < cpl)
        x86_raise_gp(cpu, gerr);
    if (!((lo >> 47) & 1))
        x86_raise(cpu, X86_EXC_NP, gerr, true);
    sel = (uint16_t)(lo >> 16);
    off = (lo & 0xffff) | ((lo >> 32) & 0xffff0000u);
    if (lm)
        off |= hi << 32;
    if ((sel & ~3) == 0)
        x86_raise_gp(cpu, ext ? 1 : 0);
    x86_read_descriptor(cpu, sel, &cs, NULL);
    if (!cs.s || !(cs.type & 8) || cs.dpl > cpl)
        x86_raise_gp(cpu, (sel & ~3u) | (ext ? 1 : 0));
    if (!cs.present)
        x86_raise(cpu, X86_EXC_NP, (sel & ~3u) | (ext ? 1 : 0), true);
    if (lm && (!cs.l || cs.db))
        x86_raise_gp(cpu, (sel & ~3u) | (ext ? 1 : 0));
    new_cpl = (cs.type & 4) ? cpl : cs.dpl; /* conforming keeps CPL */

    uint64_t tss = cpu->seg[X86_TR].base;
    uint64_t old_ss = cpu->seg[X86_SS].selector, old_sp = cpu->regs[X86_RSP];
    ss = cpu->seg[X86_SS];
    if (lm) {
        ssz = 8;
        if (ist)
            sp = x86_lin_read_n(cpu, tss + 0x24 + 8 * (ist - 1), 8, true);
        else if (new_cpl < cpl)
            sp = x86_lin_read_n(cpu, tss + 4 + 8 * new_cpl, 8, true);
        else
            sp = old_sp;
        if (new_cpl < cpl) {
            memset(&ss, 0, sizeof(ss));
            ss.selector = new_cpl;
            ss.unusable = 1;
            ss.dpl = new_cpl;
            ss.db = 1;
            ss.present = 1;
            ss.s = 1;
            ss.type = 3;
        }
        sp &= ~15ull;
        if (!x86_canonical(sp))
            x86_raise(cpu, X86_EXC_SS, 0, true);
        x86_lin_write_n(cpu, sp - 8, old_ss, 8, true);
        x86_lin_write_n(cpu, sp - 16, old_sp, 8, true);
        x86_lin_write_n(cpu, sp - 24, flags, 8, true);
        x86_lin_write_n(cpu, sp - 32, cpu->seg[X86_CS].selector, 8, true);
        x86_lin_write_n(cpu, sp - 40, ret_rip, 8, true);
        sp -= 40;
        if (has_err) {
            x86_lin_write_n(cpu, sp - 8, err, 8, true);
            sp -= 8;
        }
    } else {
        unsigned gsz = (type & 8) ? 4 : 2;
        if (new_cpl < cpl) {
            uint16_t nss;
            sp = x86_lin_read_n(cpu, tss + 4 + 8 * new_cpl, 4, true);
            nss = (uint16_t)x86_lin_read_n(cpu, tss + 8 + 8 * new_cpl, 2, true);
            if ((nss & ~3) == 0)
                x86_raise(cpu, X86_EXC_TS, 0, true);
            x86_read_descriptor(cpu, nss, &ss, NULL);
            ss.selector = nss;
            ssz = ss.db ? 4 : 2;
            {
                struct x86_segment saved = cpu->seg[X86_SS];
                cpu->seg[X86_SS] = ss;
                push_sys(cpu, &sp, old_ss, gsz, ssz);
                push_sys(cpu, &sp, old_sp, gsz, ssz);
                push_sys(cpu, &sp, flags, gsz, ssz);
                push_sys(cpu, &sp, cpu->seg[X86_CS].selector, gsz, ssz);
                push_sys(cpu, &sp, ret_rip, gsz, ssz);
                if (has_err)
                    push_sys(cpu, &sp, err, gsz, ssz);
                cpu->seg[X86_SS] = saved;
            }
        } else {
            ssz = ss.db ? 4 : 2;
            sp = old_sp & x86_size_mask(ssz);
            push_sys(cpu, &sp, flags, gsz, ssz);
            push_sys(cpu, &sp, cpu->seg[X86_CS].selector, gsz, ssz);
            push_sys(cpu, &sp, ret_rip, gsz, ssz);
            if (has_err)
                push_sys(cpu, &sp, err, gsz, ssz);
        }
        if (gsz == 2)
            off &= 0xffff;
    }
    /* commit */
    cpu->seg[X86_SS] = ss;
    if (ssz == 8 || ssz == 4)
        cpu->regs[X86_RSP] = ssz == 4 && !lm ? sp & 0xffffffffu : sp;
    else
        cpu->regs[X86_RSP] = (cpu->regs[X86_RSP] & ~0xffffull) | (sp & 0xffff);
    cs.selector = (sel & ~3) | new_cpl;
    cs.dpl = new_cpl;
    cpu->seg[X86_CS] = cs;
    cpu->seg[X86_SS].dpl = new_cpl;
    cpu->rip = off;
    cpu->rflags &= ~(uint64_t)(X86_TF | X86_NT | X86_RF | X86_VM);
    if (!(type & 1))
        cpu->rflags &= ~(uint64_t)X86_IF;
}

void x86_deliver(struct x86_cpu *cpu, int vec, uint32_t err, bool has_err, bool soft,
                 uint64_t ret_rip)
{
    struct x86_internal *in = x86_in(cpu);

    cpu->halted = false;
    if (x86_real_mode(cpu)) {
        deliver_real(cpu, vec, ret_rip);
    } else {
        bool ext = !soft && in->delivering_ext;
        deliver_prot(cpu, vec, err, has_err && !x86_real_mode(cpu), soft, ret_rip, ext);
    }
}

/* An exception was raised (longjmp landed): deliver it, with #DF/triple-fault promotion. */
static bool handle_exception(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);
    int vec = in->exc_vec;
    uint32_t err = in->exc_err;
    bool has_err = in->exc_has_err;

    if (in->in_insn) {
        cpu->rip = in->cur->rip; /* faults restart the instruction */
        in->in_insn = false;
    }
    if (in->stepping) {
        in->left = in->step_left;
        in->stepping = false;
    }
    if (in->delivering) {
        int first = in->delivering_class, second = exc_class(vec);
        if (first == EXC_DOUBLE) {
            in->delivering = 0;
            return false;
        }
        if ((first == EXC_CONTRIB && second == EXC_CONTRIB) ||
            (first == EXC_PAGE && (second == EXC_CONTRIB || second == EXC_PAGE))) {
            vec = X86_EXC_DF;
            err = 0;
            has_err = true;
        }
    }
    if (x86_real_mode(cpu))
        has_err = false;
    in->delivering = 1;
    in->delivering_class = exc_class(vec);
    in->delivering_ext = in->exc_ext;
    x86_deliver(cpu, vec, err, has_err, false, cpu->rip);
    in->delivering = 0;
    in->exc_ext = false;
    return true;
}

/* Deliver an event at an instruction boundary: from outside (IRQ, NMI;
 * ext) or a trap (single step). */
static void deliver_event_vec(struct x86_cpu *cpu, int vec, bool ext)
{
    struct x86_internal *in = x86_in(cpu);
    bool was_in_insn = in->in_insn;

    in->delivering = 1;
    in->delivering_class = EXC_BENIGN;
    in->delivering_ext = ext;
    in->exc_ext = ext;
    in->in_insn = false;
    x86_deliver(cpu, vec, 0, false, false, cpu->rip);
    in->in_insn = was_in_insn;
    in->delivering = 0;
    in->exc_ext = false;
}

static void deliver_event(struct x86_cpu *cpu, int vec)
{
    deliver_event_vec(cpu, vec, true);
}

/* Try NMI then an external interrupt; true when something was delivered. */
static bool try_interrupts(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);

    if (__atomic_load_n(&cpu->nmi_pending, __ATOMIC_ACQUIRE) && !in->nmi_blocked) {
        __atomic_store_n(&cpu->nmi_pending, false, __ATOMIC_RELEASE);
        in->nmi_blocked = true;
        deliver_event(cpu, X86_EXC_NMI);
        return true;
    }
    if (__atomic_load_n(&cpu->irq_request, __ATOMIC_ACQUIRE) && (cpu->rflags & X86_IF) &&
        !cpu->interrupt_shadow) {
        int v = cpu->ops->irq_ack(cpu->opaque);
        if (v >= 0) {
            deliver_event(cpu, v);
            return true;
        }
    }
    return false;
}

/* RFLAGS.TF at the start of an instruction: run it alone (no chaining),
 * then a #DB trap with DR6.BS unless it faulted or entered a handler. */
static void single_step(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);
    unsigned op;

    in->step_left = in->left - 1;
    in->stepping = true;
    in->left = 0; /* no chaining: this one instruction */
    x86_step(cpu);
    in->left = in->step_left;
    in->stepping = false;
    op = in->cur->op;
    /* software interrupts and fast system calls clear TF on the way in: no trap */
    if (!cpu->halted && op != 0xcc && op != 0xcd && op != 0xce && op != 0xf1 && op != 0x105 &&
        op != 0x134) {
        cpu->dr6 |= 0x4000;
        deliver_event_vec(cpu, X86_EXC_DB, false);
    }
}

static enum x86_exit leave(struct x86_cpu *cpu, enum x86_exit why)
{
    struct x86_internal *in = x86_in(cpu);

    in->in_insn = false;
    cpu->insns += in->start_left - in->left;
    return why;
}

enum x86_exit x86_cpu_run(struct x86_cpu *cpu, uint64_t budget)
{
    struct x86_internal *in = x86_in(cpu);

    in->left = in->start_left = budget ? budget : ~(uint64_t)0;
    in->in_insn = false;
    in->delivering = 0;
    if (setjmp(in->fault_jmp)) {
        if (!handle_exception(cpu))
            return leave(cpu, X86_EXIT_TRIPLE_FAULT);
    }
    if (cpu->halted) {
        if (!try_interrupts(cpu))
            return leave(cpu, X86_EXIT_HLT);
    }
    in->in_insn = true;
    for (;;) {
        if (__builtin_expect(__atomic_load_n(&cpu->exit_request, __ATOMIC_RELAXED) != 0, 0))
            return leave(cpu, X86_EXIT_KICK);
        if (__builtin_expect(!in->left, 0))
            return leave(cpu, X86_EXIT_BUDGET);
        if (__builtin_expect(cpu->interrupt_shadow | cpu->nmi_pending |
                                 (__atomic_load_n(&cpu->irq_request, __ATOMIC_RELAXED) != 0),
                             0)) {
            if (cpu->interrupt_shadow)
                cpu->interrupt_shadow = false; /* this instruction runs in the shadow */
            else
                try_interrupts(cpu);
        }
        if (__builtin_expect((cpu->rflags & X86_TF) != 0, 0)) {
            single_step(cpu);
        } else {
            in->left--;
            x86_step(cpu);
        }
        if (__builtin_expect(cpu->halted, 0)) {
            if (try_interrupts(cpu))
                continue;
            return leave(cpu, X86_EXIT_HLT);
        }
    }
}

void x86_log_unknown(struct x86_cpu *cpu, struct x86_insn *i)
{
    struct x86_internal *in = x86_in(cpu);
    char hex[64];
    unsigned n = 0;

    if (in->log_count >= 16)
        return;
    in->log_count++;
    for (unsigned k = 0; k < i->len && k < 15; k++)
        n += (unsigned)snprintf(hex + n, sizeof(hex) - n, "%s%02x", k ? " " : "", i->bytes[k]);
    hex[n] = 0;
    fprintf(stderr, "emu: vcpu %u: #UD at rip 0x%llx: %s\n", cpu->index, (unsigned long long)i->rip,
            hex);
}
