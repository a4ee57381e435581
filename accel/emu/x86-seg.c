/* x86-seg.c: segment loads, descriptor tables, far jumps/calls/returns, iret, TR and LDTR. */
#include "x86-internal.h"

void x86_seg_load_real(struct x86_cpu *cpu, unsigned seg, uint16_t sel)
{
    struct x86_segment *s = &cpu->seg[seg];

    s->selector = sel;
    s->base = (uint64_t)sel << 4;
    s->present = 1;
    s->s = 1;
    s->unusable = 0;
    if (seg == X86_CS) {
        s->type |= 8 | 3;
        s->l = 0;
        s->db = 0;
        s->dpl = 0;
    }
    if (cpu->rflags & X86_VM) {
        s->limit = 0xffff;
        s->dpl = 3;
        s->type = seg == X86_CS ? 0xb : 3;
    }
}

static void parse_descriptor(uint64_t raw, struct x86_segment *s)
{
    uint32_t lo = (uint32_t)raw, hi = (uint32_t)(raw >> 32);

    memset(s, 0, sizeof(*s));
    s->limit = (lo & 0xffff) | (hi & 0xf0000);
    s->base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000u);
    s->type = (hi >> 8) & 0xf;
    s->s = (hi >> 12) & 1;
    s->dpl = (hi >> 13) & 3;
    s->present = (hi >> 15) & 1;
    s->avl = (hi >> 20) & 1;
    s->l = (hi >> 21) & 1;
    s->db = (hi >> 22) & 1;
    s->g = (hi >> 23) & 1;
    if (s->g)
        s->limit = (s->limit << 12) | 0xfff;
}

static uint64_t descriptor_addr(struct x86_cpu *cpu, uint16_t sel, unsigned size)
{
    uint64_t base, limit;

    if (sel & 4) {
        if (cpu->seg[X86_LDTR].unusable || !cpu->seg[X86_LDTR].present)
            x86_raise_gp(cpu, sel & ~3u);
        base = cpu->seg[X86_LDTR].base;
        limit = cpu->seg[X86_LDTR].limit;
    } else {
        base = cpu->gdt.base;
        limit = cpu->gdt.limit;
    }
    if ((uint64_t)(sel & ~7u) + size - 1 > limit)
        x86_raise_gp(cpu, sel & ~3u);
    return base + (sel & ~7u);
}

void x86_read_descriptor(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s, uint64_t *raw_hi)
{
    uint64_t a = descriptor_addr(cpu, sel, raw_hi ? 16 : 8);
    uint64_t raw = x86_lin_read_n(cpu, a, 8, true);

    parse_descriptor(raw, s);
    s->selector = sel;
    if (raw_hi)
        *raw_hi = x86_lin_read_n(cpu, a + 8, 8, true);
}

/* Set the accessed bit of a code/data descriptor, as hardware does. */
static void set_accessed(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s)
{
    if (!(s->type & 1)) {
        uint64_t a = descriptor_addr(cpu, sel, 8) + 5;
        uint8_t b = (uint8_t)x86_lin_read_n(cpu, a, 1, true);
        x86_lin_write_n(cpu, a, b | 1, 1, true);
        s->type |= 1;
    }
}

void x86_seg_load(struct x86_cpu *cpu, unsigned seg, uint16_t sel)
{
    struct x86_segment s;
    unsigned cpl = x86_cpl(cpu), rpl = sel & 3;

    if (x86_real_mode(cpu) || (cpu->rflags & X86_VM)) {
        x86_seg_load_real(cpu, seg, sel);
        return;
    }
    if ((sel & ~3) == 0) {
        if (seg == X86_SS && !(x86_mode64(cpu) && cpl != 3 && rpl == cpl))
            x86_raise_gp(cpu, 0);
        memset(&s, 0, sizeof(s));
        s.selector = sel;
        s.unusable = 1;
        if (seg == X86_SS) {
            s.dpl = cpl;
            s.db = 1;
            s.s = 1;
            s.type = 3;
            s.present = 1;
        }
        cpu->seg[seg] = s;
        return;
    }
    x86_read_descriptor(cpu, sel, &s, NULL);
    if (!s.s)
        x86_raise_gp(cpu, sel & ~3u);
    if (seg == X86_SS) {
        if ((s.type & 8) || !(s.type & 2) || rpl != cpl || s.dpl != cpl)
            x86_raise_gp(cpu, sel & ~3u);
        if (!s.present)
            x86_raise(cpu, X86_EXC_SS, sel & ~3u, true);
    } else {
        if ((s.type & 0xa) == 0x8) /* execute-only code */
            x86_raise_gp(cpu, sel & ~3u);
        if (!((s.type & 8) && (s.type & 4)) && (rpl > s.dpl || cpl > s.dpl))
            x86_raise_gp(cpu, sel & ~3u);
        if (!s.present)
            x86_raise(cpu, X86_EXC_NP, sel & ~3u, true);
    }
    set_accessed(cpu, sel, &s);
    cpu->seg[seg] = s;
}

static void stack_push(struct x86_cpu *cpu, uint64_t *sp, uint64_t v, unsigned size)
{
    unsigned ssz = x86_mode64(cpu) ? 8 : (cpu->seg[X86_SS].db ? 4 : 2);

    *sp = (*sp - size) & x86_size_mask(ssz);
    x86_mem_write(cpu, X86_SS, *sp, v, size);
}

static uint64_t stack_pop(struct x86_cpu *cpu, uint64_t *sp, unsigned size)
{
    unsigned ssz = x86_mode64(cpu) ? 8 : (cpu->seg[X86_SS].db ? 4 : 2);
    uint64_t v = x86_mem_read(cpu, X86_SS, *sp & x86_size_mask(ssz), size);

    *sp = (*sp + size) & x86_size_mask(ssz);
    return v;
}

static void set_sp(struct x86_cpu *cpu, uint64_t sp)
{
    unsigned ssz = x86_mode64(cpu) ? 8 : (cpu->seg[X86_SS].db ? 4 : 2);

    if (ssz == 2)
        cpu->regs[X86_RSP] = (cpu->regs[X86_RSP] & ~0xffffull) | (sp & 0xffff);
    else
        cpu->regs[X86_RSP] = sp & x86_size_mask(ssz);
}

/* Load CS for a far transfer to (sel:off) at the current privilege level. */
static void load_cs(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s, unsigned cpl)
{
    if (!s->s || !(s->type & 8))
        x86_raise_gp(cpu, sel & ~3u);
    if (s->type & 4) {
        if (s->dpl > cpl)
            x86_raise_gp(cpu, sel & ~3u);
    } else if ((sel & 3) > cpl || s->dpl != cpl) {
        x86_raise_gp(cpu, sel & ~3u);
    }
    if (!s->present)
        x86_raise(cpu, X86_EXC_NP, sel & ~3u, true);
    set_accessed(cpu, sel, s);
    s->selector = (sel & ~3) | cpl;
    s->dpl = cpl;
    cpu->seg[X86_CS] = *s;
}

void x86_far_jump(struct x86_cpu *cpu, uint16_t sel, uint64_t off, unsigned opsize, bool call,
                  uint64_t ret_rip)
{
    uint64_t sp = cpu->regs[X86_RSP];
    uint16_t old_cs = cpu->seg[X86_CS].selector;

    if (x86_real_mode(cpu) || (cpu->rflags & X86_VM)) {
        if (call) {
            stack_push(cpu, &sp, old_cs, opsize);
            stack_push(cpu, &sp, ret_rip, opsize);
            set_sp(cpu, sp);
        }
        x86_seg_load_real(cpu, X86_CS, sel);
        cpu->rip = off & x86_size_mask(opsize);
        return;
    }
    if ((sel & ~3) == 0)
        x86_raise_gp(cpu, 0);
    struct x86_segment s;
    x86_read_descriptor(cpu, sel, &s, NULL);
    if (!s.s)
        x86_raise_gp(cpu, sel & ~3u); /* call gates, task gates: not supported */
    if (call) {
        stack_push(cpu, &sp, old_cs, opsize);
        stack_push(cpu, &sp, ret_rip, opsize);
    }
    load_cs(cpu, sel, &s, x86_cpl(cpu));
    if (call)
        set_sp(cpu, sp);
    cpu->rip = x86_mode64(cpu) ? off : off & x86_size_mask(opsize);
}

/* The SS checks of a return to (new_cpl), made before anything is changed
 * so that a fault is taken with the old CS. */
static void check_ret_ss(struct x86_cpu *cpu, uint16_t nss, unsigned new_cpl, bool to64)
{
    struct x86_segment s;

    if ((nss & ~3) == 0) {
        if (!(to64 && new_cpl != 3 && (nss & 3) == new_cpl))
            x86_raise_gp(cpu, 0);
        return;
    }
    if ((nss & 3) != new_cpl)
        x86_raise_gp(cpu, nss & ~3u);
    x86_read_descriptor(cpu, nss, &s, NULL);
    if (!s.s || (s.type & 8) || !(s.type & 2) || s.dpl != new_cpl)
        x86_raise_gp(cpu, nss & ~3u);
    if (!s.present)
        x86_raise(cpu, X86_EXC_SS, nss & ~3u, true);
}

/* The code segment (sel) a far return or IRET goes back to, read into (s):
 * never null, never to an inner level. Returns its RPL, the new CPL. */
static unsigned read_return_cs(struct x86_cpu *cpu, uint16_t sel, unsigned cpl,
                               struct x86_segment *s)
{
    if ((sel & ~3) == 0)
        x86_raise_gp(cpu, 0);
    x86_read_descriptor(cpu, sel, s, NULL);
    if ((sel & 3u) < cpl)
        x86_raise_gp(cpu, sel & ~3u);
    return sel & 3u;
}

void x86_far_ret(struct x86_cpu *cpu, unsigned opsize, uint16_t pop_extra)
{
    uint64_t sp = cpu->regs[X86_RSP], ip;
    uint16_t sel;
    unsigned cpl = x86_cpl(cpu);

    ip = stack_pop(cpu, &sp, opsize);
    sel = (uint16_t)stack_pop(cpu, &sp, opsize);
    if (x86_real_mode(cpu) || (cpu->rflags & X86_VM)) {
        x86_seg_load_real(cpu, X86_CS, sel);
        cpu->rip = ip & x86_size_mask(opsize);
        set_sp(cpu, sp + pop_extra);
        return;
    }
    struct x86_segment s;
    unsigned rpl = read_return_cs(cpu, sel, cpl, &s);
    if (rpl == cpl) {
        load_cs(cpu, sel, &s, cpl);
        set_sp(cpu, sp + pop_extra);
        cpu->rip = x86_mode64(cpu) ? ip : ip & x86_size_mask(opsize);
        return;
    }
    /* return to an outer level */
    sp += pop_extra;
    uint64_t nsp = stack_pop(cpu, &sp, opsize);
    uint16_t nss = (uint16_t)stack_pop(cpu, &sp, opsize);
    check_ret_ss(cpu, nss, rpl, x86_long_mode(cpu) && s.l);
    load_cs(cpu, sel, &s, rpl);
    x86_seg_load(cpu, X86_SS, nss);
    cpu->regs[X86_RSP] = nsp + pop_extra;
    if (!x86_mode64(cpu))
        cpu->regs[X86_RSP] &= x86_size_mask(cpu->seg[X86_SS].db ? 4 : 2);
    cpu->rip = x86_mode64(cpu) ? ip : ip & x86_size_mask(opsize);
}

static void iret_flags(struct x86_cpu *cpu, uint64_t f, unsigned opsize, unsigned cpl)
{
    uint64_t mask = X86_ARITH_FLAGS | X86_TF | X86_DF | X86_NT | X86_RF | X86_AC | X86_ID;
    unsigned iopl = (cpu->rflags >> 12) & 3;

    if (cpl <= iopl)
        mask |= X86_IF;
    if (cpl == 0)
        mask |= X86_IOPL;
    if (opsize == 2)
        mask &= 0xffff;
    x86_flags_set(cpu, f, mask);
}

void x86_iret(struct x86_cpu *cpu, unsigned opsize)
{
    struct x86_internal *in = x86_in(cpu);
    uint64_t sp = cpu->regs[X86_RSP], ip, f;
    uint16_t sel;
    unsigned cpl = x86_cpl(cpu);

    if (x86_real_mode(cpu)) {
        ip = stack_pop(cpu, &sp, opsize);
        sel = (uint16_t)stack_pop(cpu, &sp, opsize);
        f = stack_pop(cpu, &sp, opsize);
        x86_seg_load_real(cpu, X86_CS, sel);
        cpu->rip = ip & x86_size_mask(opsize);
        set_sp(cpu, sp);
        iret_flags(cpu, f, opsize, 0);
        in->nmi_blocked = false;
        return;
    }
    if (cpu->rflags & X86_VM)
        x86_raise_gp(cpu, 0);
    if ((cpu->rflags & X86_NT) && !x86_long_mode(cpu))
        x86_raise_gp(cpu, 0); /* task return: not supported */
    bool m64 = x86_mode64(cpu);
    ip = stack_pop(cpu, &sp, opsize);
    sel = (uint16_t)stack_pop(cpu, &sp, opsize);
    f = stack_pop(cpu, &sp, opsize);
    struct x86_segment s;
    unsigned rpl = read_return_cs(cpu, sel, cpl, &s);
    if (m64 || rpl != cpl) {
        uint64_t nsp = stack_pop(cpu, &sp, opsize);
        uint16_t nss = (uint16_t)stack_pop(cpu, &sp, opsize);
        check_ret_ss(cpu, nss, rpl, x86_long_mode(cpu) && s.l);
        load_cs(cpu, sel, &s, rpl);
        x86_seg_load(cpu, X86_SS, nss);
        iret_flags(cpu, f, opsize, cpl);
        cpu->regs[X86_RSP] = x86_mode64(cpu) ? nsp
                                             : nsp & x86_size_mask(cpu->seg[X86_SS].db ? 4 : 2);
        if (rpl > cpl) {
            /* data segments not accessible at the new level become null */
            static const unsigned segs[] = { X86_ES, X86_DS, X86_FS, X86_GS };
            for (unsigned k = 0; k < 4; k++) {
                struct x86_segment *d = &cpu->seg[segs[k]];
                if (!d->unusable && d->dpl < rpl && !((d->type & 8) && (d->type & 4))) {
                    d->selector = 0;
                    d->unusable = 1;
                }
            }
        }
    } else {
        load_cs(cpu, sel, &s, cpl);
        set_sp(cpu, sp);
        iret_flags(cpu, f, opsize, cpl);
    }
    cpu->rip = x86_mode64(cpu) ? ip : ip & x86_size_mask(opsize);
    in->nmi_blocked = false;
}

void x86_load_tr(struct x86_cpu *cpu, uint16_t sel)
{
    struct x86_segment s;
    uint64_t hi = 0, a;
    bool lm = x86_long_mode(cpu);

    if ((sel & ~3) == 0 || (sel & 4))
        x86_raise_gp(cpu, sel & ~3u);
    x86_read_descriptor(cpu, sel, &s, lm ? &hi : NULL);
    if (s.s || (s.type != 9 && s.type != 1) || (lm && s.type != 9))
        x86_raise_gp(cpu, sel & ~3u);
    if (!s.present)
        x86_raise(cpu, X86_EXC_NP, sel & ~3u, true);
    if (lm)
        s.base |= (hi & 0xffffffffu) << 32;
    a = descriptor_addr(cpu, sel, 8) + 5;
    x86_lin_write_n(cpu, a, x86_lin_read_n(cpu, a, 1, true) | 2, 1, true);
    s.type |= 2;
    cpu->seg[X86_TR] = s;
}

void x86_load_ldt(struct x86_cpu *cpu, uint16_t sel)
{
    struct x86_segment s;
    uint64_t hi = 0;
    bool lm = x86_long_mode(cpu);

    if ((sel & ~3) == 0) {
        memset(&s, 0, sizeof(s));
        s.selector = sel;
        s.unusable = 1;
        cpu->seg[X86_LDTR] = s;
        return;
    }
    if (sel & 4)
        x86_raise_gp(cpu, sel & ~3u);
    x86_read_descriptor(cpu, sel, &s, lm ? &hi : NULL);
    if (s.s || s.type != 2)
        x86_raise_gp(cpu, sel & ~3u);
    if (!s.present)
        x86_raise(cpu, X86_EXC_NP, sel & ~3u, true);
    if (lm)
        s.base |= (hi & 0xffffffffu) << 32;
    cpu->seg[X86_LDTR] = s;
}

/* I/O permission: CPL <= IOPL (outside virtual-8086 mode), else the TSS I/O bitmap. */
void x86_io_check(struct x86_cpu *cpu, uint16_t port, unsigned size)
{
    struct x86_segment *tr = &cpu->seg[X86_TR];
    uint64_t off;
    uint16_t bits;

    if (x86_real_mode(cpu))
        return;
    if (!(cpu->rflags & X86_VM) && x86_cpl(cpu) <= ((cpu->rflags >> 12) & 3))
        return;
    if (tr->unusable || !tr->present || (tr->type != 9 && tr->type != 0xb) || tr->limit < 0x67)
        x86_raise_gp(cpu, 0);
    off = (uint16_t)x86_lin_read_n(cpu, tr->base + 0x66, 2, true) + (port >> 3);
    if (off + 1 > tr->limit)
        x86_raise_gp(cpu, 0);
    bits = (uint16_t)x86_lin_read_n(cpu, tr->base + off, 2, true);
    if ((bits >> (port & 7)) & ((1u << size) - 1))
        x86_raise_gp(cpu, 0);
}

/* Outside 64-bit mode: the segment's type and limit allow (size) bytes at
 * (off) (read or write), else #GP(0) (#SS(0) for SS). */
void x86_seg_check(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size, bool write)
{
    struct x86_segment *s = &cpu->seg[seg];
    int vec = seg == X86_SS ? X86_EXC_SS : X86_EXC_GP;
    uint64_t last = off + size - 1;

    if (!x86_real_mode(cpu) && !(cpu->rflags & X86_VM)) {
        if (s->unusable || !s->present)
            x86_raise(cpu, vec, 0, true);
        if (s->type & 8) { /* code: never writable, maybe readable */
            if (write || !(s->type & 2))
                x86_raise_gp(cpu, 0);
        } else if (write && !(s->type & 2)) {
            x86_raise(cpu, vec, 0, true);
        }
        if (!(s->type & 8) && (s->type & 4)) { /* expand-down */
            if (off <= s->limit || last > (s->db ? 0xffffffffull : 0xffffull))
                x86_raise(cpu, vec, 0, true);
            return;
        }
    }
    if (last > s->limit)
        x86_raise(cpu, vec, 0, true);
}
