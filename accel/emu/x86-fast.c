/* x86-fast.c: specialised handlers for the hottest instruction forms, chosen once at decode time.
 * Each either completes the instruction or, before changing any state, hands it to the generic path. */
#include "x86-internal.h"

typedef void (*handler)(struct x86_cpu *cpu, struct x86_insn *i);

enum { K_ADD = 0, K_OR = 1, K_AND = 4, K_SUB = 5, K_XOR = 6, K_CMP = 7 };

static inline uint64_t mask_of(unsigned size)
{
    return size == 8 ? ~(uint64_t)0 : 0xffffffffu;
}

static inline void set_reg(struct x86_cpu *cpu, unsigned r, uint64_t v, unsigned size)
{
    cpu->regs[r] = size == 8 ? v : (uint32_t)v;
}

static inline uint64_t alu_fast(struct x86_cpu *cpu, unsigned kind, uint64_t a, uint64_t b,
                                unsigned size)
{
    struct x86_internal *in = x86_in(cpu);
    uint64_t m = mask_of(size), r;

    a &= m;
    b &= m;
    switch (kind) {
    case K_ADD:
        r = a + b;
        in->cc_op = CC_ADD;
        break;
    case K_OR:
        r = a | b;
        in->cc_op = CC_LOGIC;
        break;
    case K_AND:
        r = a & b;
        in->cc_op = CC_LOGIC;
        break;
    case K_XOR:
        r = a ^ b;
        in->cc_op = CC_LOGIC;
        break;
    default:
        r = a - b;
        in->cc_op = CC_SUB;
        break;
    }
    r &= m;
    in->cc_size = size;
    in->cc_res = r;
    if (kind == K_ADD || kind == K_SUB || kind == K_CMP) {
        /* CC_LOGIC looks at the result only */
        in->cc_src1 = a;
        in->cc_src2 = b;
        in->cc_aux = 0;
    }
    return r;
}

static inline uint64_t ea_of(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t ea = i->disp;

    if (i->base_reg >= 0)
        ea += cpu->regs[i->base_reg];
    if (i->index_reg >= 0)
        ea += cpu->regs[i->index_reg] << i->scale;
    return ea & x86_size_mask(i->addrsize);
}

/* Host pointer for a 64-bit-mode access that hits the TLB, or NULL. */
static inline uint8_t *tlb_fast(struct x86_cpu *cpu, unsigned seg, uint64_t ea, unsigned size,
                                enum x86_access acc, struct x86_tlb_entry **te)
{
    struct x86_internal *in = x86_in(cpu);
    uint64_t la = ea;
    struct x86_tlb_entry *t;

    if (seg == X86_FS || seg == X86_GS)
        la += cpu->seg[seg].base;
    if ((la & 0xfff) + size > X86_PAGE_SIZE)
        return NULL;
    t = &in->tlb[(la >> 12) % X86_TLB_SIZE];
    if (t->tag[acc] != ((la & X86_PAGE_MASK) | (cpu->seg[X86_CS].dpl == 3 ? 2 : 0) | 1))
        return NULL;
    *te = t;
    return t->hva + (la & 0xfff);
}

static inline bool read_fast(struct x86_cpu *cpu, unsigned seg, uint64_t ea, unsigned size,
                             uint64_t *v)
{
    struct x86_tlb_entry *t;
    uint8_t *p = tlb_fast(cpu, seg, ea, size, ACC_READ, &t);

    if (!p)
        return false;
    *v = 0;
    memcpy(v, p, size);
    return true;
}

static inline bool write_fast(struct x86_cpu *cpu, unsigned seg, uint64_t ea, unsigned size,
                              uint64_t v)
{
    struct x86_tlb_entry *t;
    uint8_t *p = tlb_fast(cpu, seg, ea, size, ACC_WRITE, &t);

    if (!p)
        return false;
    memcpy(p, &v, size);
    x86_note_write(cpu, t->gpa);
    return true;
}

/* ---- ALU ---- */

#define DEF_ALU(name, kind) \
    static void h_##name##_rr(struct x86_cpu *cpu, struct x86_insn *i) \
    { \
        uint64_t r = alu_fast(cpu, kind, cpu->regs[i->hd], cpu->regs[i->hs], i->opsize); \
        if (kind != K_CMP) \
            set_reg(cpu, i->hd, r, i->opsize); \
        cpu->rip = i->next_rip; \
    } \
    static void h_##name##_ri(struct x86_cpu *cpu, struct x86_insn *i) \
    { \
        uint64_t r = alu_fast(cpu, kind, cpu->regs[i->hd], i->imm, i->opsize); \
        if (kind != K_CMP) \
            set_reg(cpu, i->hd, r, i->opsize); \
        cpu->rip = i->next_rip; \
    } \
    static void h_##name##_rm(struct x86_cpu *cpu, struct x86_insn *i) \
    { \
        uint64_t v; \
        if (!read_fast(cpu, i->seg, ea_of(cpu, i), i->opsize, &v)) { \
            x86_exec_generic(cpu, i); \
            return; \
        } \
        uint64_t r = alu_fast(cpu, kind, cpu->regs[i->hd], v, i->opsize); \
        if (kind != K_CMP) \
            set_reg(cpu, i->hd, r, i->opsize); \
        cpu->rip = i->next_rip; \
    }

DEF_ALU(add, K_ADD)
DEF_ALU(or, K_OR)
DEF_ALU(and, K_AND)
DEF_ALU(sub, K_SUB)
DEF_ALU(xor, K_XOR)
DEF_ALU(cmp, K_CMP)

/* cmp r/m, reg / imm with a memory operand (hs 0xff: the immediate) */
static void h_cmp_mi(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t v;

    if (!read_fast(cpu, i->seg, ea_of(cpu, i), i->opsize, &v)) {
        x86_exec_generic(cpu, i);
        return;
    }
    alu_fast(cpu, K_CMP, v, i->hs == 0xff ? i->imm : cpu->regs[i->hs], i->opsize);
    cpu->rip = i->next_rip;
}

static const handler alu_rr[8] = { h_add_rr, h_or_rr,  NULL,     NULL,
                                   h_and_rr, h_sub_rr, h_xor_rr, h_cmp_rr };
static const handler alu_ri[8] = { h_add_ri, h_or_ri,  NULL,     NULL,
                                   h_and_ri, h_sub_ri, h_xor_ri, h_cmp_ri };
static const handler alu_rm[8] = { h_add_rm, h_or_rm,  NULL,     NULL,
                                   h_and_rm, h_sub_rm, h_xor_rm, h_cmp_rm };

static void h_test_rr(struct x86_cpu *cpu, struct x86_insn *i)
{
    alu_fast(cpu, K_AND, cpu->regs[i->hd], cpu->regs[i->hs], i->opsize);
    cpu->rip = i->next_rip;
}

static void h_test_ri(struct x86_cpu *cpu, struct x86_insn *i)
{
    alu_fast(cpu, K_AND, cpu->regs[i->hd], i->imm, i->opsize);
    cpu->rip = i->next_rip;
}

static __attribute__((noinline)) uint64_t cf_slow(struct x86_cpu *cpu)
{
    return x86_cf(cpu) ? X86_CF : 0;
}

static inline void h_incdec(struct x86_cpu *cpu, struct x86_insn *i, bool dec)
{
    struct x86_internal *in = x86_in(cpu);
    unsigned size = i->opsize;
    uint64_t cf, m = mask_of(size), a = cpu->regs[i->hd] & m, r;

    /* inc/dec keep CF: in a dec/jnz loop it is already in cc_aux */
    if (__builtin_expect(in->cc_op == CC_INC || in->cc_op == CC_DEC, 1))
        cf = in->cc_aux & X86_CF;
    else
        cf = cf_slow(cpu);
    r = (dec ? a - 1 : a + 1) & m;
    in->cc_op = dec ? CC_DEC : CC_INC;
    in->cc_size = size;
    in->cc_src1 = a;
    in->cc_src2 = 1;
    in->cc_res = r;
    in->cc_aux = cf;
    set_reg(cpu, i->hd, r, size);
    cpu->rip = i->next_rip;
}

static void h_inc_r(struct x86_cpu *cpu, struct x86_insn *i)
{
    h_incdec(cpu, i, false);
}

static void h_dec_r(struct x86_cpu *cpu, struct x86_insn *i)
{
    h_incdec(cpu, i, true);
}

/* ---- shifts by an immediate (count already known non-zero) ---- */

static void h_shift_ri(struct x86_cpu *cpu, struct x86_insn *i)
{
    struct x86_internal *in = x86_in(cpu);
    unsigned size = i->opsize, c = i->hs;
    uint64_t m = mask_of(size), a = cpu->regs[i->hd] & m, r;

    switch (i->hcc) {
    case 4:
        r = (a << c) & m;
        in->cc_op = CC_SHL;
        break;
    case 5:
        r = a >> c;
        in->cc_op = CC_SHR;
        break;
    default:
        r = (uint64_t)((size == 8 ? (int64_t)a : (int64_t)(int32_t)(uint32_t)a) >> c) & m;
        in->cc_op = CC_SAR;
        break;
    }
    in->cc_size = size;
    in->cc_src1 = a;
    in->cc_src2 = c;
    in->cc_res = r;
    in->cc_aux = 0;
    set_reg(cpu, i->hd, r, size);
    cpu->rip = i->next_rip;
}

/* ---- moves ---- */

static void h_mov_rr(struct x86_cpu *cpu, struct x86_insn *i)
{
    set_reg(cpu, i->hd, cpu->regs[i->hs], i->opsize);
    cpu->rip = i->next_rip;
}

static void h_mov_ri(struct x86_cpu *cpu, struct x86_insn *i)
{
    set_reg(cpu, i->hd, i->imm, i->opsize);
    cpu->rip = i->next_rip;
}

static void h_lea(struct x86_cpu *cpu, struct x86_insn *i)
{
    set_reg(cpu, i->hd, ea_of(cpu, i), i->opsize);
    cpu->rip = i->next_rip;
}

/* load of (hs) bytes zero-extended into a 4/8-byte register */
static void h_load(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t v;

    if (!read_fast(cpu, i->seg, ea_of(cpu, i), i->hs, &v)) {
        x86_exec_generic(cpu, i);
        return;
    }
    set_reg(cpu, i->hd, v, i->opsize);
    cpu->rip = i->next_rip;
}

static void h_store_r(struct x86_cpu *cpu, struct x86_insn *i)
{
    if (!write_fast(cpu, i->seg, ea_of(cpu, i), i->opsize, cpu->regs[i->hs])) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->rip = i->next_rip;
}

static void h_store_i(struct x86_cpu *cpu, struct x86_insn *i)
{
    if (!write_fast(cpu, i->seg, ea_of(cpu, i), i->opsize, i->imm)) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->rip = i->next_rip;
}

/* ---- control flow ---- */

/* Conditions straight from the lazy state where that is cheap. */
static inline bool cond_fast(struct x86_cpu *cpu, unsigned cc)
{
    struct x86_internal *in = x86_in(cpu);
    bool r;

    if (in->cc_op == CC_SUB && !in->cc_aux && (in->cc_size == 8 || in->cc_size == 4)) {
        uint64_t a = in->cc_src1, b = in->cc_src2;
        int64_t sa, sb;
        if (in->cc_size == 8) {
            sa = (int64_t)a;
            sb = (int64_t)b;
        } else {
            sa = (int32_t)(uint32_t)a;
            sb = (int32_t)(uint32_t)b;
        }
        switch (cc >> 1) {
        case 1:
            r = a < b;
            break;
        case 2:
            r = a == b;
            break;
        case 3:
            r = a <= b;
            break;
        case 6:
            r = sa < sb;
            break;
        case 7:
            r = sa <= sb;
            break;
        default:
            return x86_cond(cpu, cc);
        }
        return (cc & 1) ? !r : r;
    }
    if (in->cc_op != CC_EAGER && (cc >> 1) == 2) {
        r = (in->cc_res & x86_size_mask(in->cc_size)) == 0;
        return (cc & 1) ? !r : r;
    }
    return x86_cond(cpu, cc);
}

static void h_jcc(struct x86_cpu *cpu, struct x86_insn *i)
{
    cpu->rip = cond_fast(cpu, i->hcc) ? i->disp : i->next_rip;
}

static void h_jmp(struct x86_cpu *cpu, struct x86_insn *i)
{
    cpu->rip = i->disp;
}

static void h_call64(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t sp = cpu->regs[X86_RSP] - 8;

    if (!write_fast(cpu, X86_SS, sp, 8, i->next_rip)) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->regs[X86_RSP] = sp;
    cpu->rip = i->disp;
}

static void h_ret64(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t v;

    if (!read_fast(cpu, X86_SS, cpu->regs[X86_RSP], 8, &v) || !x86_canonical(v)) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->regs[X86_RSP] += 8;
    cpu->rip = v;
}

static void h_push64(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t sp = cpu->regs[X86_RSP] - 8;

    if (!write_fast(cpu, X86_SS, sp, 8, cpu->regs[i->hs])) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->regs[X86_RSP] = sp;
    cpu->rip = i->next_rip;
}

static void h_pop64(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t v;

    if (!read_fast(cpu, X86_SS, cpu->regs[X86_RSP], 8, &v)) {
        x86_exec_generic(cpu, i);
        return;
    }
    cpu->regs[X86_RSP] += 8;
    cpu->regs[i->hd] = v;
    cpu->rip = i->next_rip;
}

static void h_nop(struct x86_cpu *cpu, struct x86_insn *i)
{
    cpu->rip = i->next_rip;
}

/* A flag-setting instruction and the jcc after it in one handler call (the
 * pair a loop closes with): the jcc part only while it is still cached there. */
static void h_fused_jcc(struct x86_cpu *cpu, struct x86_insn *i)
{
    struct x86_internal *in = x86_in(cpu);
    struct x86_insn *j = i->fuse;

    i->prod(cpu, i);
    if (j->la != i->next_rip || j->epoch != in->dc_epoch || j->fn != h_jcc || !in->left ||
        cpu->rip != i->next_rip)
        return;
    in->left--;
    cpu->rip = cond_fast(cpu, j->hcc) ? j->disp : j->next_rip;
}

void x86_try_fuse(struct x86_insn *prev, struct x86_insn *i)
{
    handler f = prev->fn;

    if (!prev->chain || i->fn != h_jcc || !i->chain || f == h_jcc || f == h_jmp || f == h_call64 ||
        f == h_ret64 || f == h_fused_jcc)
        return;
    prev->prod = f;
    prev->fuse = i;
    prev->fn = h_fused_jcc;
}

/* ---- selection ---- */

static void select_fast(struct x86_insn *i, unsigned op, unsigned size, bool m64, bool wide,
                        bool reg);

void x86_select_handler(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op, size = i->opsize;
    bool m64 = i->mode == 3, wide = size == 4 || size == 8;
    bool reg = !i->mem && i->has_modrm;

    (void)cpu;
    i->fn = x86_exec_generic;
    i->chain = false;
    i->next = i->taken = i->fuse = NULL;
    select_fast(i, op, size, m64, wide, reg);
    /* only 64-bit code chains: there the linear address is RIP */
    i->chain = m64 && i->fn != x86_exec_generic;
}

static void select_fast(struct x86_insn *i, unsigned op, unsigned size, bool m64, bool wide,
                        bool reg)
{
    unsigned kind;

    if (i->lock || (i->rep && op != 0x90 && op != 0x11f))
        return;
    if (op < 0x40 && (op & 7) < 6 && wide) {
        kind = op >> 3;
        if (kind == 2 || kind == 3)
            return;
        switch (op & 7) {
        case 1: /* r/m op= reg */
            if (reg) {
                i->hd = i->rm;
                i->hs = i->reg;
                i->fn = alu_rr[kind];
            } else if (m64 && kind == K_CMP) {
                i->hs = i->reg;
                i->fn = h_cmp_mi;
            }
            return;
        case 3: /* reg op= r/m */
            i->hd = i->reg;
            if (reg) {
                i->hs = i->rm;
                i->fn = alu_rr[kind];
            } else if (m64) {
                i->fn = alu_rm[kind];
            }
            return;
        case 5: /* eAX op= imm */
            i->hd = X86_RAX;
            i->fn = alu_ri[kind];
            return;
        default:
            return;
        }
    }
    switch (op) {
    case 0x81:
    case 0x83:
        kind = i->reg & 7;
        if (!wide || kind == 2 || kind == 3)
            return;
        if (reg) {
            i->hd = i->rm;
            i->fn = alu_ri[kind];
        } else if (m64 && kind == K_CMP) {
            i->hs = 0xff;
            i->fn = h_cmp_mi;
        }
        return;
    case 0x85:
        if (reg && wide) {
            i->hd = i->rm;
            i->hs = i->reg;
            i->fn = h_test_rr;
        }
        return;
    case 0xa9:
        if (wide) {
            i->hd = X86_RAX;
            i->fn = h_test_ri;
        }
        return;
    case 0xf7:
        if (reg && wide && (i->reg & 7) == 0) {
            i->hd = i->rm;
            i->fn = h_test_ri;
        }
        return;
    case 0xff:
        if (reg && wide && (i->reg & 7) < 2) {
            i->hd = i->rm;
            i->fn = (i->reg & 7) ? h_dec_r : h_inc_r;
        }
        return;
    case 0xc1:
        if (reg && wide && ((i->reg & 7) == 4 || (i->reg & 7) == 5 || (i->reg & 7) == 7) &&
            (i->imm & (size == 8 ? 0x3f : 0x1f))) {
            i->hd = i->rm;
            i->hs = (uint8_t)(i->imm & (size == 8 ? 0x3f : 0x1f));
            i->hcc = i->reg & 7;
            i->fn = h_shift_ri;
        }
        return;
    case 0x89:
        if (!wide)
            return;
        if (reg) {
            i->hd = i->rm;
            i->hs = i->reg;
            i->fn = h_mov_rr;
        } else if (m64) {
            i->hs = i->reg;
            i->fn = h_store_r;
        }
        return;
    case 0x8b:
        if (!wide)
            return;
        i->hd = i->reg;
        if (reg) {
            i->hs = i->rm;
            i->fn = h_mov_rr;
        } else if (m64) {
            i->hs = (uint8_t)size;
            i->fn = h_load;
        }
        return;
    case 0x1b6:
    case 0x1b7:
        if (m64 && wide && !reg) {
            i->hd = i->reg;
            i->hs = op == 0x1b6 ? 1 : 2;
            i->fn = h_load;
        }
        return;
    case 0xc7:
        if (!wide || (i->reg & 7))
            return;
        if (reg) {
            i->hd = i->rm;
            i->fn = h_mov_ri;
        } else if (m64) {
            i->fn = h_store_i;
        }
        return;
    case 0xb8 ... 0xbf:
        if (wide) {
            i->hd = (op & 7) | ((i->rex & 1) << 3);
            i->fn = h_mov_ri;
        }
        return;
    case 0x8d:
        if (!reg && wide && i->has_modrm) {
            i->hd = i->reg;
            i->fn = h_lea;
        }
        return;
    case 0x90:
        if (!(i->rex & 1) && (!i->rep || i->rep == 0xf3))
            i->fn = h_nop;
        return;
    case 0x11f:
        i->fn = h_nop;
        return;
    default:
        break;
    }
    /* branches: the target is known now */
    if ((op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f) || op == 0xe9 || op == 0xeb ||
        op == 0xe8) {
        uint64_t t = i->next_rip + i->imm;
        if (m64) {
            if (!x86_canonical(t))
                return;
        } else {
            t &= x86_size_mask(size);
        }
        i->disp = t;
        i->hcc = op & 0xf;
        if (op == 0xe8) {
            if (m64 && !i->opsize_prefix)
                i->fn = h_call64;
        } else {
            i->fn = (op == 0xe9 || op == 0xeb) ? h_jmp : h_jcc;
        }
        return;
    }
    if (!m64 || i->opsize_prefix)
        return;
    if (op == 0xc3)
        i->fn = h_ret64;
    else if (op >= 0x50 && op <= 0x57) {
        i->hs = (op & 7) | ((i->rex & 1) << 3);
        i->fn = h_push64;
    } else if (op >= 0x58 && op <= 0x5f) {
        i->hd = (op & 7) | ((i->rex & 1) << 3);
        i->fn = h_pop64;
    }
}
