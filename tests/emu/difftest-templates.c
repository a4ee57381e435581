/* difftest-templates.c: the differential tester's instruction templates, by
 * class, each with the flags it reads, defines and leaves undefined, and the
 * sequence generator that draws from them. */
#include "difftest-gen.h"

#include <cpuid.h>
#include <string.h>

/* ---- templates ---- */

struct tmpl {
    const char *name;
    enum dt_class cls;
    void (*emit)(struct gen *g, const struct tmpl *t);
    uint8_t a, b;
    uint8_t feat; /* a host feature it needs; FEAT_RARE: picked seldom */
};

enum {
    FEAT_NONE,
    FEAT_RARE,
    FEAT_LONG,
    FEAT_LEGACY, /* 64-bit only, compatibility mode only */
    FEAT_POPCNT,
    FEAT_LZCNT,
    FEAT_BMI1,
    FEAT_LAHF,
    FEAT_CX16,
    FEAT_NR
};
static bool have_feat[FEAT_NR] = { true, true, true, true };

static unsigned pick_size(struct gen *g, unsigned mask)
{
    if (g->m32)
        mask &= 7;
    for (;;) {
        unsigned s = 1u << gen_rnd(g, 4);
        if (mask & s)
            return s;
    }
}

static uint64_t imm_for(struct gen *g, unsigned immsz)
{
    uint64_t v = gen_rand_val(g);
    return immsz == 8 ? v : v & gen_size_mask(immsz);
}

/* Flags an ALU op reads / leaves undefined (add or adc sbb and sub xor cmp: 0..7). */
static uint8_t alu_rd(unsigned op)
{
    return op == 2 || op == 3 ? F_CF : 0;
}

static uint8_t alu_ud(unsigned op)
{
    return op == 1 || op == 4 || op == 6 ? F_AF : 0;
}

/* The r/m operand: a register or memory of (size); (legacy) for ah..bh. */
static void pick_rm(struct gen *g, struct ins *in, unsigned size, bool legacy, uint32_t avoid,
                    bool allow_mem)
{
    if (allow_mem && gen_rnd(g, 2)) {
        in->is_mem = true;
        gen_pick_mem(g, size, avoid, legacy, &in->m);
    } else {
        in->rm = gen_pick_reg(g, size, legacy, avoid);
    }
}

static bool pick_legacy(struct gen *g, unsigned size)
{
    return size == 1 && (g->m32 || gen_rnd(g, 3) == 0);
}

/* a: ALU op; b: 0 rm,r  1 r,rm  2 rm,imm  3 acc,imm  (test: a = 8) */
static void t_alu(struct gen *g, const struct tmpl *t)
{
    unsigned op = t->a, size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size), test = op == 8;
    uint8_t wr = F_ALL & (uint8_t)~alu_ud(test ? 4 : op), ud = alu_ud(test ? 4 : op);
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.byteregs = size == 1;
    switch (t->b) {
    case 0:
        pick_rm(g, &in, size, legacy, 0, true);
        in.reg = gen_pick_reg(g, size, legacy, 0);
        gen_ins_op(&in, 1, (uint8_t)((test ? 0x84 : op * 8) + (size != 1)), 0, 0);
        if (in.is_mem && op != 7 && !test && gen_rnd(g, 2))
            gen_ins_pfx(&in, 0xf0);
        break;
    case 1:
        in.reg = gen_pick_reg(g, size, legacy, 0);
        pick_rm(g, &in, size, legacy, 0, true);
        gen_ins_op(&in, 1, (uint8_t)(op * 8 + 2 + (size != 1)), 0, 0);
        break;
    case 2:
        pick_rm(g, &in, size, legacy, 0, true);
        in.digit = true;
        in.reg = test ? 0 : (int)op;
        if (test) {
            gen_ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
            in.immsz = size == 8 ? 4 : (int)size;
        } else if (size != 1 && gen_rnd(g, 2)) {
            gen_ins_op(&in, 1, 0x83, 0, 0);
            in.immsz = 1;
        } else {
            gen_ins_op(&in, 1, (uint8_t)(0x80 + (size != 1)), 0, 0);
            in.immsz = size == 8 ? 4 : (int)size;
        }
        in.imm = imm_for(g, (unsigned)in.immsz);
        if (in.is_mem && op != 7 && !test && gen_rnd(g, 2))
            gen_ins_pfx(&in, 0xf0);
        break;
    case 3:
        in.modrm = false;
        gen_ins_op(&in, 1, (uint8_t)((test ? 0xa8 : op * 8 + 4) + (size != 1)), 0, 0);
        in.immsz = size == 8 ? 4 : (int)size;
        in.imm = imm_for(g, (unsigned)in.immsz);
        break;
    }
    gen_need_flags(g, test ? 0 : alu_rd(op));
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, ud);
}

/* add/sub then a run of adc/sbb on random registers: multi-word arithmetic. */
static void t_adcchain(struct gen *g, const struct tmpl *t)
{
    unsigned n = 2 + gen_rnd(g, 3), size = g->m32 ? 4 : 4u << gen_rnd(g, 2);
    bool sub = t->a;

    for (unsigned i = 0; i < n; i++) {
        struct ins in;
        gen_ins_init(&in);
        gen_ins_size(&in, size);
        in.modrm = true;
        in.reg = gen_pick_reg(g, size, false, 0);
        pick_rm(g, &in, size, false, 0, i > 0 && gen_rnd(g, 3) == 0);
        uint8_t op = i == 0 ? (sub ? 0x28 : 0x00) : (sub ? 0x18 : 0x10);
        gen_ins_op(&in, 1, (uint8_t)(op + 1), 0, 0);
        if (i > 0)
            gen_need_flags(g, F_CF);
        gen_insn_begin(g, g->cur);
        gen_emit_ins(g, &in);
        gen_insn_end(g, F_ALL, 0);
    }
}

/* a: 0 inc, 1 dec, 2 not, 3 neg */
static void t_unary(struct gen *g, const struct tmpl *t)
{
    static const uint8_t ext[] = { 0, 1, 2, 3 };
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;
    uint8_t wr = t->a <= 1 ? (F_ALL & ~F_CF) : t->a == 3 ? F_ALL : 0;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = ext[t->a];
    pick_rm(g, &in, size, legacy, 0, true);
    gen_ins_op(&in, 1, (uint8_t)(t->a <= 1 ? 0xfe + (size != 1) : 0xf6 + (size != 1)), 0, 0);
    if (in.is_mem && gen_rnd(g, 2))
        gen_ins_pfx(&in, 0xf0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, 0);
}

/* Flag effects of shift/rotate (op) (modrm ext) on (size) bytes by (count). */
static void shift_flags(unsigned op, unsigned size, unsigned count, uint8_t *wr, uint8_t *ud)
{
    unsigned c = count & (size == 8 ? 0x3f : 0x1f);

    *wr = *ud = 0;
    if (c == 0)
        return;
    if (op <= 3) {
        *wr = F_CF | (c == 1 ? F_OF : 0);
        *ud = c == 1 ? 0 : F_OF;
        return;
    }
    *wr = F_SF | F_ZF | F_PF | (c == 1 ? F_OF : 0) | (c < size * 8 ? F_CF : 0);
    *ud = F_AF | (c == 1 ? 0 : F_OF) | (c < size * 8 ? 0 : F_CF);
}

static unsigned pick_count(struct gen *g, unsigned size)
{
    switch (gen_rnd(g, 4)) {
    case 0:
        return gen_rnd(g, 3);
    case 1:
        return gen_rnd(g, 256);
    default:
        return gen_rnd(g, size * 8 + 1);
    }
}

/* a: op ext (0 rol .. 7 sar); b: 0 by 1, 1 by imm8, 2 by cl */
static void t_shift(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15), count = 1;
    bool legacy = pick_legacy(g, size);
    uint8_t wr, ud;
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    if (t->b == 2) {
        count = pick_count(g, size);
        gen_set_reg(g, 1, 1, count);
        pick_rm(g, &in, size, legacy, 1u << 1, true);
        gen_ins_op(&in, 1, (uint8_t)(0xd2 + (size != 1)), 0, 0);
    } else {
        pick_rm(g, &in, size, legacy, 0, true);
        if (t->b == 1) {
            count = pick_count(g, size);
            gen_ins_op(&in, 1, (uint8_t)(0xc0 + (size != 1)), 0, 0);
            in.immsz = 1;
            in.imm = count;
        } else {
            gen_ins_op(&in, 1, (uint8_t)(0xd0 + (size != 1)), 0, 0);
        }
    }
    shift_flags(t->a, size, count, &wr, &ud);
    gen_need_flags(g, t->a == 2 || t->a == 3 ? F_CF : 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, ud);
}

/* a: 0 shld, 1 shrd; b: 0 imm8, 1 cl */
static void t_shxd(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_wide(g), count, c;
    struct ins in;
    uint8_t wr = 0, ud = 0;

    /* A 16-bit shift by more than 16 leaves the result undefined. */
    if (size == 2)
        count = gen_rnd(g, 17) | (gen_rnd(g, 8) << 5);
    else
        count = pick_count(g, size);
    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    if (t->b == 1)
        gen_set_reg(g, 1, 1, count);
    in.reg = gen_pick_reg(g, size, false, t->b ? 2u : 0);
    pick_rm(g, &in, size, false, t->b ? 2u : 0, true);
    gen_ins_op(&in, 2, 0x0f, (uint8_t)((t->a ? 0xac : 0xa4) + t->b), 0);
    if (t->b == 0) {
        in.immsz = 1;
        in.imm = count;
    }
    c = count & (size == 8 ? 0x3f : 0x1f);
    if (c) {
        wr = F_CF | F_SF | F_ZF | F_PF | (c == 1 ? F_OF : 0);
        ud = F_AF | (c == 1 ? 0 : F_OF);
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, ud);
}

/* mul (a=4) / imul (a=5) with one operand */
static void t_mul1(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    pick_rm(g, &in, size, legacy, 0, true);
    gen_ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, F_CF | F_OF, F_SF | F_ZF | F_AF | F_PF);
}

/* imul r, rm (b=0); imul r, rm, imm8 (b=1); imul r, rm, imm16/32 (b=2) */
static void t_imul(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_wide(g);
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.reg = gen_pick_reg(g, size, false, 0);
    pick_rm(g, &in, size, false, 0, true);
    if (t->b == 0) {
        gen_ins_op(&in, 2, 0x0f, 0xaf, 0);
    } else if (t->b == 1) {
        gen_ins_op(&in, 1, 0x6b, 0, 0);
        in.immsz = 1;
        in.imm = imm_for(g, 1);
    } else {
        gen_ins_op(&in, 1, 0x69, 0, 0);
        in.immsz = size == 2 ? 2 : 4;
        in.imm = imm_for(g, (unsigned)in.immsz);
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, F_CF | F_OF, F_SF | F_ZF | F_AF | F_PF);
}

/* div (a=6) / idiv (a=7), operands chosen so the quotient fits (mostly). */
static void t_div(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size), sign = t->a == 7, wild = gen_rnd(g, 24) == 0;
    uint64_t mask = gen_size_mask(size), d;
    struct ins in;
    uint32_t avoid = size == 1 ? 1u : 5u; /* rax (al, ah); rdx */

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    in.is_mem = gen_rnd(g, 2);
    do {
        d = gen_rand_val(g) & mask;
        if (in.is_mem || gen_rnd(g, 2))
            d &= 0x7fffffff;
        if (size == 8 && gen_rnd(g, 2))
            d = (uint64_t)(int64_t)(int32_t)d;
    } while (d == 0 || (sign && d == mask && gen_rnd(g, 8)));
    if (in.is_mem) {
        gen_pick_mem(g, size, avoid, legacy, &in.m);
        if (!wild)
            gen_set_mem(g, &in.m, size, d);
    } else {
        in.rm = gen_pick_reg(g, size, legacy, avoid);
        if (!wild)
            gen_set_reg(g, in.rm, size, d);
    }
    if (!wild) {
        if (sign) {
            /* sign-extend the dividend: cbw / cwd / cdq / cqo */
            uint8_t b[3];
            unsigned n = 0;
            if (size <= 2)
                b[n++] = 0x66;
            if (size == 8)
                b[n++] = 0x48;
            b[n++] = size == 1 ? 0x98 : 0x99;
            gen_emit_raw(g, DT_SETUP, b, n, 0, 0);
        } else if (size == 1) {
            gen_set_reg(g, REG_AH, 1, gen_rnd64(g) % d);
        } else {
            gen_set_reg(g, 2, size, gen_rnd64(g) % d);
        }
    }
    gen_ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, F_ALL);
}

/* bt/bts/btr/btc (a = 4..7) by register (b=0) or imm8 (b=1) */
static void t_bt(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_wide(g);
    static const uint8_t opr[] = { 0xa3, 0xab, 0xb3, 0xbb };
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    if (t->b == 1) {
        pick_rm(g, &in, size, false, 0, true);
        in.digit = true;
        in.reg = t->a;
        gen_ins_op(&in, 2, 0x0f, 0xba, 0);
        in.immsz = 1;
        in.imm = gen_rnd(g, 256);
    } else if (gen_rnd(g, 2)) {
        /* memory bit string: the offset register reaches +-256 bytes around it */
        int64_t off = (int64_t)gen_rnd(g, 4096) - 2048;
        in.is_mem = true;
        in.reg = gen_pick_reg(g, size, false, 0);
        gen_pick_mem_at(g, DT_SCRATCH + 0x400 + gen_rnd(g, DT_SCRATCH_SIZE - 0x800),
                        gen_reg_bit(in.reg), false, &in.m);
        gen_set_reg(g, in.reg, size, (uint64_t)off & gen_size_mask(size));
        gen_ins_op(&in, 2, 0x0f, opr[t->a - 4], 0);
    } else {
        in.reg = gen_pick_reg(g, size, false, 0);
        in.rm = gen_pick_reg(g, size, false, 0);
        gen_ins_op(&in, 2, 0x0f, opr[t->a - 4], 0);
    }
    if (in.is_mem && t->a != 4 && gen_rnd(g, 2))
        gen_ins_pfx(&in, 0xf0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, F_CF, F_OF | F_SF | F_AF | F_PF);
}

/* a: 0 bsf, 1 bsr, 2 popcnt, 3 lzcnt, 4 tzcnt */
static void t_bitscan(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_wide(g);
    static const uint8_t op2[] = { 0xbc, 0xbd, 0xb8, 0xbd, 0xbc };
    struct ins in, bts;
    uint8_t wr, ud;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.reg = gen_pick_reg(g, size, false, 0);
    pick_rm(g, &in, size, false, 0, true);
    if (t->a <= 1 && gen_rnd(g, 8)) {
        /* bsf/bsr leave the destination undefined for a zero source: bts a bit in first */
        bts = in;
        bts.digit = true;
        bts.reg = 5;
        gen_ins_op(&bts, 2, 0x0f, 0xba, 0);
        bts.immsz = 1;
        bts.imm = gen_rnd(g, size * 8);
        gen_insn_begin(g, DT_SETUP);
        gen_emit_ins(g, &bts);
        gen_insn_end(g, F_CF, F_OF | F_SF | F_AF | F_PF);
    } else if (t->a <= 1) {
        /* or a single bit, through a set-up mov */
        if (in.is_mem)
            gen_set_mem(g, &in.m, size, 1ull << gen_rnd(g, 31));
        else
            gen_set_reg(g, in.rm, size, 1ull << gen_rnd(g, size * 8));
    }
    if (t->a >= 2)
        gen_ins_pfx(&in, 0xf3);
    gen_ins_op(&in, 2, 0x0f, op2[t->a], 0);
    if (t->a <= 1) {
        wr = F_ZF;
        ud = F_ALL & ~F_ZF;
    } else if (t->a == 2) {
        wr = F_ALL;
        ud = 0;
    } else {
        wr = F_CF | F_ZF;
        ud = F_OF | F_SF | F_PF | F_AF;
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, ud);
}

static void t_bswap(struct gen *g, const struct tmpl *t)
{
    struct ins in;

    (void)t;
    gen_ins_init(&in);
    gen_ins_size(&in, !g->m32 && gen_rnd(g, 2) ? 8 : 4);
    gen_ins_op(&in, 2, 0x0f, 0xc8, 0);
    in.opreg = gen_pick_reg(g, 8, false, 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* a: 0xb6 movzx8, 0xb7 movzx16, 0xbe movsx8, 0xbf movsx16, 0x63 movsxd */
static void t_ext(struct gen *g, const struct tmpl *t)
{
    unsigned src = t->a == 0x63 ? 4 : (t->a & 1) ? 2 : 1, size;
    struct ins in;
    bool legacy;

    do
        size = gen_wide(g);
    while (size <= src && t->a != 0x63);
    if (t->a == 0x63)
        size = 8;
    legacy = src == 1 && size != 8 && gen_rnd(g, 3) == 0;
    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.reg = gen_pick_reg(g, size, false, legacy ? 0xff00u : 0);
    in.byteregs = src == 1;
    in.reg_wide = true;
    pick_rm(g, &in, src, legacy, 0, true);
    if (t->a == 0x63)
        gen_ins_op(&in, 1, 0x63, 0, 0);
    else
        gen_ins_op(&in, 2, 0x0f, t->a, 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* lea with every addressing form; registers as they are (no memory access). */
static void t_lea(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_wide(g), form = gen_rnd(g, 9);
    struct ins in;
    struct mem *m = &in.m;

    (void)t;
    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    in.is_mem = true;
    in.reg = gen_pick_reg(g, size, false, 0);
    gen_ins_op(&in, 1, 0x8d, 0, 0);
    m->a32 = !g->m32 && gen_rnd(g, 4) == 0;
    if (form == 7) {
        m->base = RIPREL;
        m->target = DT_CODE + (gen_rnd64(g) & 0xffffff) - 0x800000;
        m->a32 = !g->m32 && gen_rnd(g, 8) == 0;
    } else if (form == 8) {
        m->dispsz = 4;
        m->disp = (int32_t)gen_rnd64(g);
    } else {
        if (form != 6)
            /* rsp and r12 take a SIB, rbp and r13 a disp */
            m->base = (int)gen_rnd(g, gen_nregs(g));
        if (form >= 3) {
            do
                m->index = (int)gen_rnd(g, gen_nregs(g));
            while (m->index == 4);
            m->scale = (int)gen_rnd(g, 4);
        }
        m->dispsz = form == 0 || form == 3 ? 0 : (form == 1 || form == 4) ? 1 : 4;
        m->disp = m->dispsz == 1 ? (int8_t)gen_rnd(g, 256) : (int32_t)gen_rnd64(g);
        if (form == 6)
            m->dispsz = 4;
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* a: 0 xchg rm,r  1 xchg rax,r (90+r)  2 xadd  3 cmpxchg  4 cmpxchg8b  5 cmpxchg16b */
static void t_atomic(struct gen *g, const struct tmpl *t)
{
    unsigned a = t->a == 5 && g->m32 ? 4 : t->a; /* no cmpxchg16b outside 64-bit */
    unsigned size = pick_size(g, a == 1 ? 14 : 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;
    uint8_t wr = 0;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    switch (a) {
    case 0:
        pick_rm(g, &in, size, legacy, 0, true);
        in.reg = gen_pick_reg(g, size, legacy, 0);
        gen_ins_op(&in, 1, (uint8_t)(0x86 + (size != 1)), 0, 0);
        break;
    case 1:
        in.modrm = false;
        in.opreg = gen_rnd(g, 8) == 0 ? 0 : gen_pick_reg(g, size, false, 0);
        gen_ins_op(&in, 1, 0x90, 0, 0);
        break;
    case 2:
    case 3:
        pick_rm(g, &in, size, legacy, a == 3 ? 1u : 0, true);
        in.reg = gen_pick_reg(g, size, legacy, 0);
        gen_ins_op(&in, 2, 0x0f, (uint8_t)((a == 2 ? 0xc0 : 0xb0) + (size != 1)), 0);
        wr = F_ALL;
        if (a == 3 && gen_rnd(g, 2)) {
            /* make the comparison succeed: mov al/ax/eax/rax, rm */
            struct ins mv = in;
            mv.pfx[0] = 0;
            mv.npfx = 0;
            mv.reg = 0;
            gen_ins_op(&mv, 1, (uint8_t)(0x8a + (size != 1)), 0, 0);
            gen_insn_begin(g, DT_SETUP);
            gen_emit_ins(g, &mv);
            gen_insn_end(g, 0, 0);
        }
        break;
    case 4:
    case 5:
        size = a == 4 ? 8 : 16;
        gen_ins_size(&in, a == 4 ? 4 : 8);
        in.is_mem = true;
        gen_pick_mem_at(g, gen_pick_target(g, size, size), 0xfu, false, &in.m);
        in.digit = true;
        in.reg = 1;
        gen_ins_op(&in, 2, 0x0f, 0xc7, 0);
        wr = F_ZF;
        if (gen_rnd(g, 2)) {
            /* edx:eax (rdx:rax) = the memory: the exchange happens */
            unsigned half = size / 2;
            for (int r = 0; r < 2; r++) {
                struct ins mv;
                gen_ins_init(&mv);
                gen_ins_size(&mv, half);
                mv.modrm = true;
                mv.is_mem = true;
                mv.m = gen_mem_plus(&in.m, r * (int)half);
                mv.reg = r ? 2 : 0;
                gen_ins_op(&mv, 1, 0x8b, 0, 0);
                gen_insn_begin(g, DT_SETUP);
                gen_emit_ins(g, &mv);
                gen_insn_end(g, 0, 0);
            }
        }
        break;
    }
    if (in.is_mem && a != 1 && gen_rnd(g, 2))
        gen_ins_pfx(&in, 0xf0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, 0);
}

static uint8_t cc_reads(unsigned cc)
{
    static const uint8_t rd[8] = {
        F_OF, F_CF, F_ZF, F_CF | F_ZF, F_SF, F_PF, F_SF | F_OF, F_ZF | F_SF | F_OF,
    };
    return rd[(cc >> 1) & 7];
}

/* a: 0 setcc, 1 cmovcc */
static void t_cond(struct gen *g, const struct tmpl *t)
{
    unsigned cc = gen_rnd(g, 16), size = t->a ? gen_wide(g) : 1;
    bool legacy = pick_legacy(g, size);
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.modrm = true;
    if (t->a) {
        in.reg = gen_pick_reg(g, size, false, 0);
        pick_rm(g, &in, size, false, 0, true);
        gen_ins_op(&in, 2, 0x0f, (uint8_t)(0x40 + cc), 0);
    } else {
        in.digit = true;
        in.reg = 0;
        pick_rm(g, &in, 1, legacy, 0, true);
        gen_ins_op(&in, 2, 0x0f, (uint8_t)(0x90 + cc), 0);
    }
    gen_need_flags(g, cc_reads(cc));
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* a: 0x98 cbw/cwde/cdqe, 0x99 cwd/cdq/cqo */
static void t_conv(struct gen *g, const struct tmpl *t)
{
    uint8_t b[2];
    unsigned n = 0, s = gen_rnd(g, g->m32 ? 2 : 3);

    if (s == 0)
        b[n++] = 0x66;
    else if (s == 2)
        b[n++] = 0x48;
    b[n++] = t->a;
    gen_emit_raw(g, g->cur, b, n, 0, 0);
}

/* a: the opcode (lahf, sahf, clc, stc, cmc, cld, std) */
static void t_flag(struct gen *g, const struct tmpl *t)
{
    uint8_t op = t->a, rd = 0, wr = 0;

    switch (op) {
    case 0x9f:
        rd = F_SF | F_ZF | F_AF | F_PF | F_CF;
        break;
    case 0x9e:
        wr = F_SF | F_ZF | F_AF | F_PF | F_CF;
        break;
    case 0xf8:
    case 0xf9:
        wr = F_CF;
        break;
    case 0xf5:
        rd = wr = F_CF;
        break;
    }
    gen_need_flags(g, rd);
    gen_emit_raw(g, g->cur, &op, 1, wr, 0);
}

static bool stack_room(struct gen *g, int delta)
{
    return g->depth + delta < 0x700 && g->depth + delta > -0x700;
}

/* a: 0 push r, 1 pop r, 2 push imm, 3 push rm, 4 pop rm, 5 pushf+pop, 6 push+popf, 7 call+pop */
static void t_stack(struct gen *g, const struct tmpl *t)
{
    unsigned size = gen_rnd(g, 6) == 0 ? 2 : g->m32 ? 4 : 8;
    struct ins in;
    uint8_t wr = 0;
    int delta = (int)size;

    gen_ins_init(&in);
    in.p66 = size == 2;
    switch (t->a) {
    case 0:
    case 1:
        gen_ins_op(&in, 1, t->a ? 0x58 : 0x50, 0, 0);
        in.opreg = t->a ? gen_pick_reg(g, 8, false, 0) : (int)gen_rnd(g, gen_nregs(g));
        delta = t->a ? -delta : delta;
        break;
    case 2:
        if (gen_rnd(g, 2)) {
            gen_ins_op(&in, 1, 0x6a, 0, 0);
            in.immsz = 1;
        } else {
            gen_ins_op(&in, 1, 0x68, 0, 0);
            in.immsz = size == 2 ? 2 : 4;
        }
        in.imm = imm_for(g, (unsigned)in.immsz);
        break;
    case 3:
    case 4:
        in.modrm = true;
        in.digit = true;
        in.reg = t->a == 3 ? 6 : 0;
        pick_rm(g, &in, size, false, 0, true);
        gen_ins_op(&in, 1, t->a == 3 ? 0xff : 0x8f, 0, 0);
        delta = t->a == 4 ? -delta : delta;
        break;
    case 5: {
        uint8_t b[2] = { 0x9c, (uint8_t)(0x58 + gen_rnd(g, 4)) };
        gen_need_flags(g, F_ALL);
        gen_emit_raw(g, g->cur, b, 1, 0, 0);
        gen_emit_raw(g, g->cur, b + 1, 1, 0, 0);
        return;
    }
    case 6: {
        /* arithmetic flags and DF; IF stays set, nothing privileged */
        uint32_t v = 0x202 | dt_flags_expand((uint8_t)gen_rnd(g, 64));
        v |= gen_rnd(g, 2) ? 0x400u : 0;
        uint8_t b[5] = { 0x68, (uint8_t)v, (uint8_t)(v >> 8), 0, 0 }, popf = 0x9d;
        gen_emit_raw(g, g->cur, b, 5, 0, 0);
        gen_emit_raw(g, g->cur, &popf, 1, F_ALL, 0);
        return;
    }
    case 7: {
        uint8_t b[6] = { 0xe8, 0, 0, 0, 0, 0 };
        int r = gen_pick_reg(g, 8, false, 0);
        gen_emit_raw(g, g->cur, b, 5, 0, 0);
        b[0] = 0x41;
        b[1] = (uint8_t)(0x58 + (r & 7));
        gen_emit_raw(g, g->cur, r >= 8 ? b : b + 1, r >= 8 ? 2 : 1, 0, 0);
        return;
    }
    }
    if (!stack_room(g, delta))
        return;
    g->depth += delta;
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, wr, 0);
}

/* a: the byte opcode (movs a4, stos aa, lods ac, cmps a6, scas ae); prefixes random */
static void t_string(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15), count = gen_rnd(g, 4) == 0 ? gen_rnd(g, 3) : gen_rnd(g, 40);
    unsigned rep = gen_rnd(g, 4), span;
    bool down = gen_rnd(g, 3) == 0, cmp = t->a == 0xa6 || t->a == 0xae;
    bool a32 = !g->m32 && gen_rnd(g, 5) == 0;
    uint8_t b[8], df = down ? 0xfd : 0xfc;
    unsigned n = 0;

    if (rep == 0)
        count = 1;
    span = count * size + 16;
    bool hole = rep && count > 1 && !down && gen_rnd(g, 24) == 0;
    gen_emit_raw(g, DT_SETUP, &df, 1, 0, 0);
    for (int r = 6; r <= 7; r++) {
        uint64_t off = gen_rnd(g, DT_SCRATCH_SIZE - span);
        if (hole && (r == 7 || gen_rnd(g, 2))) /* runs into the hole half way: #PF mid-rep */
            off = DT_SCRATCH_SIZE - count / 2 * size - gen_rnd(g, size);
        gen_set_reg(g, r, a32 ? 4 : 8, DT_SCRATCH + (down ? off + span - 8 : off));
    }
    if (rep)
        gen_set_reg(g, 1, a32 ? 4 : 8, count);
    if (rep)
        b[n++] = rep == 1 ? 0xf2 : 0xf3;
    if (a32)
        b[n++] = 0x67;
    if (size == 2)
        b[n++] = 0x66;
    if (size == 8)
        b[n++] = 0x48;
    b[n++] = (uint8_t)(t->a + (size != 1));
    gen_emit_raw(g, g->cur, b, n, cmp ? (rep && count == 0 ? 0 : F_ALL) : 0, 0);
}

static void t_mov(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    switch (t->a) {
    case 0:
    case 1:
        in.modrm = true;
        in.reg = gen_pick_reg(g, size, legacy, 0);
        pick_rm(g, &in, size, legacy, 0, true);
        gen_ins_op(&in, 1, (uint8_t)((t->a ? 0x8a : 0x88) + (size != 1)), 0, 0);
        break;
    case 2:
        in.opreg = gen_pick_reg(g, size, legacy, 0);
        gen_ins_op(&in, 1, size == 1 ? 0xb0 : 0xb8, 0, 0);
        in.immsz = (int)size;
        in.imm = imm_for(g, size);
        break;
    case 3:
        in.modrm = true;
        in.digit = true;
        pick_rm(g, &in, size, legacy, 0, true);
        gen_ins_op(&in, 1, (uint8_t)(0xc6 + (size != 1)), 0, 0);
        in.immsz = size == 8 ? 4 : (int)size;
        in.imm = imm_for(g, (unsigned)in.immsz);
        break;
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* One instruction that a branch may skip: add/sub/mov on registers. Returns its flag effect. */
static void skippable(struct gen *g, uint8_t *wr)
{
    uint8_t b[3] = { 0x48, 0x01, 0xc0 };
    unsigned r1 = gen_rnd(g, 8), r2 = gen_rnd(g, 8);

    if (r1 == 4)
        r1 = 0;
    b[1] = gen_rnd(g, 2) ? 0x01 : gen_rnd(g, 2) ? 0x29 : 0x89;
    b[2] = (uint8_t)(0xc0 | (r2 << 3) | r1);
    *wr = b[1] == 0x89 ? 0 : F_ALL;
    if (g->m32)
        gen_emit_raw(g, DT_SETUP, b + 1, 2, *wr, 0);
    else
        gen_emit_raw(g, DT_SETUP, b, 3, *wr, 0);
}

/* a: 0 jcc rel8, 1 jmp rel8, 2 jmp rel32, 3 loop/loope/loopne/jrcxz */
static void t_branch(struct gen *g, const struct tmpl *t)
{
    uint8_t b[6], rd = 0, wr, before = g->undef;
    unsigned n = 0, at;

    switch (t->a) {
    case 0: {
        unsigned cc = gen_rnd(g, 16);
        rd = cc_reads(cc);
        b[n++] = (uint8_t)(0x70 + cc);
        b[n++] = 0;
        break;
    }
    case 1:
        b[n++] = 0xeb;
        b[n++] = 0;
        break;
    case 2:
        b[n++] = 0xe9;
        memset(b + n, 0, 4);
        n += 4;
        break;
    case 3: {
        unsigned k = gen_rnd(g, 4);
        if (gen_rnd(g, 4) == 0)
            b[n++] = 0x67;
        b[n++] = (uint8_t)(0xe0 + k);
        b[n++] = 0;
        rd = k <= 1 ? F_ZF : 0;
        if (gen_rnd(g, 2))
            gen_set_reg(g, 1, 8, gen_rnd(g, 3));
        break;
    }
    }
    gen_need_flags(g, rd);
    before = g->undef;
    gen_insn_begin(g, g->cur);
    gen_put(g, b, n);
    gen_insn_end(g, 0, 0);
    gen_mark_nocut(g, g->seq->nr_insns - 1);
    at = g->seq->len;
    skippable(g, &wr);
    g->seq->code[at - (t->a == 2 ? 4 : 1)] = (uint8_t)(g->seq->len - at);
    /* either path: a flag is undefined after the join if it is on one path */
    g->undef |= before;
}

/* Multi-byte nop (0f 1f /0) with any operand: decoded, never accessed. */
static void t_nop(struct gen *g, const struct tmpl *t)
{
    struct ins in;

    (void)t;
    gen_ins_init(&in);
    gen_ins_size(&in, gen_wide(g));
    in.modrm = true;
    in.digit = true;
    gen_ins_op(&in, 2, 0x0f, 0x1f, 0);
    if (gen_rnd(g, 2)) {
        in.is_mem = true;
        in.m.base = (int)gen_rnd(g, gen_nregs(g));
        in.m.index = gen_rnd(g, 2) ? 4 : (int)gen_rnd(g, gen_nregs(g));
        if (in.m.index == 4)
            in.m.index = NOREG;
        in.m.scale = (int)gen_rnd(g, 4);
        in.m.dispsz = (int)gen_rnd(g, 3);
        in.m.dispsz = in.m.dispsz == 2 ? 4 : in.m.dispsz;
        in.m.disp = (int32_t)gen_rnd64(g);
        if (in.m.dispsz == 1)
            in.m.disp = (int8_t)in.m.disp;
        if (gen_rnd(g, 4) == 0)
            gen_ins_pfx(&in, 0x2e); /* cs: as compilers pad with it */
    } else {
        in.rm = (int)gen_rnd(g, gen_nregs(g));
    }
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* a: 0 ud2 (#UD), 1 int3 (#BP, a trap), 2 a load from a non-canonical address (#GP(0)) */
static void t_exc(struct gen *g, const struct tmpl *t)
{
    static const uint8_t ud2[] = { 0x0f, 0x0b }, int3 = 0xcc;

    if (t->a == 0 || (t->a == 2 && g->m32)) {
        gen_emit_raw(g, g->cur, ud2, 2, 0, 0);
    } else if (t->a == 1) {
        gen_emit_raw(g, g->cur, &int3, 1, 0, 0);
    } else {
        struct ins in;
        int b = gen_pick_reg(g, 8, false, 0);
        gen_ins_init(&in);
        gen_ins_size(&in, 8);
        in.opreg = b;
        gen_ins_op(&in, 1, 0xb8, 0, 0);
        in.immsz = 8;
        in.imm = 0x8000000000000000ull >> gen_rnd(g, 16) | (gen_rnd64(g) & 0xffffffff);
        gen_insn_begin(g, DT_SETUP);
        gen_emit_ins(g, &in);
        gen_insn_end(g, 0, 0);
        gen_ins_init(&in);
        gen_ins_size(&in, 8);
        in.modrm = true;
        in.is_mem = true;
        in.m.base = b;
        in.reg = gen_pick_reg(g, 8, false, 0);
        gen_ins_op(&in, 1, 0x8b, 0, 0);
        gen_insn_begin(g, g->cur);
        gen_emit_ins(g, &in);
        gen_insn_end(g, 0, 0);
    }
}

/* call a ret just ahead and come back (a: 1: ret imm16 dropping a pushed value) */
static void t_callret(struct gen *g, const struct tmpl *t)
{
    static const uint8_t call[] = { 0xe8, 0x02, 0x00, 0x00, 0x00 };
    uint8_t jmp[2] = { 0xeb, 0x01 }, ret[3] = { 0xc3, 0, 0 }, push[2] = { 0x6a, 0 };
    uint8_t c[5];

    memcpy(c, call, 5);
    if (t->a) {
        push[1] = (uint8_t)gen_rnd(g, 256);
        gen_emit_raw(g, g->cur, push, 2, 0, 0);
        jmp[1] = 3;
        ret[0] = 0xc2;
        ret[1] = 8;
    }
    unsigned first = g->seq->nr_insns;
    gen_emit_raw(g, g->cur, c, 5, 0, 0);
    gen_emit_raw(g, g->cur, jmp, 2, 0, 0);
    gen_emit_raw(g, g->cur, ret, t->a ? 3 : 1, 0, 0);
    gen_mark_nocut(g, first);
}

/* enter (frame size, nesting 0 or 1) then leave */
static void t_enter(struct gen *g, const struct tmpl *t)
{
    uint8_t b[4] = { 0xc8, (uint8_t)(gen_rnd(g, 9) * 8), 0, (uint8_t)gen_rnd(g, 2) }, leave = 0xc9;

    (void)t;
    gen_emit_raw(g, g->cur, b, 4, 0, 0);
    gen_emit_raw(g, g->cur, &leave, 1, 0, 0);
}

/* xlat: al = [rbx + al] */
static void t_xlat(struct gen *g, const struct tmpl *t)
{
    uint8_t b[2] = { 0x48, 0xd7 };

    (void)t;
    gen_set_reg(g, 3, 8, DT_SCRATCH + gen_rnd(g, DT_SCRATCH_SIZE - 256));
    if (!g->m32 && gen_rnd(g, 2))
        gen_emit_raw(g, g->cur, b, 2, 0, 0);
    else
        gen_emit_raw(g, g->cur, b + 1, 1, 0, 0);
}

/* lock on an instruction that has no memory destination: #UD */
static void t_lockud(struct gen *g, const struct tmpl *t)
{
    uint8_t b[3] = { 0xf0, (uint8_t)(gen_rnd(g, 8) * 8 + 1), (uint8_t)(0xc0 | gen_rnd(g, 64)) };

    (void)t;
    gen_emit_raw(g, g->cur, b, 3, F_ALL, 0);
}

/* Self-modifying code: mov byte [rip + d], imm8 rewrites an instruction a
 * little further on (a: 0 the immediate of mov r32, imm32; 1 inc <-> dec). */
static void t_smc(struct gen *g, const struct tmpl *t)
{
    uint8_t st[7] = { 0xc6, 0x05, 0, 0, 0, 0, 0 }, tgt[6];
    unsigned at, patch, n = 0, fillers = gen_rnd(g, 3);
    int r = gen_pick_reg(g, 4, false, 0);
    int32_t d;

    unsigned first = g->seq->nr_insns;
    gen_insn_begin(g, g->cur);
    at = g->seq->len;
    gen_put(g, st, 7);
    gen_insn_end(g, 0, 0);
    for (unsigned k = 0; k < fillers; k++) {
        uint8_t f[3] = { 0x48, 0x01, (uint8_t)(0xc0 | gen_rnd(g, 64)) };
        if ((f[2] & 7) == 4)
            f[2] &= 0xf8;
        if (g->m32)
            gen_emit_raw(g, DT_SETUP, f + 1, 2, F_ALL, 0);
        else
            gen_emit_raw(g, DT_SETUP, f, 3, F_ALL, 0);
    }
    if (r >= 8)
        tgt[n++] = 0x41;
    if (t->a == 0) {
        tgt[n++] = (uint8_t)(0xb8 + (r & 7));
        patch = n + gen_rnd(g, 4);
        for (int k = 0; k < 4; k++)
            tgt[n++] = (uint8_t)gen_rnd(g, 256);
        st[6] = (uint8_t)gen_rnd(g, 256);
    } else {
        unsigned ext = gen_rnd(g, 2);
        tgt[n++] = 0xff;
        patch = n;
        tgt[n++] = (uint8_t)(0xc0 | (ext << 3) | (r & 7));
        st[6] = (uint8_t)(0xc0 | ((ext ^ 1) << 3) | (r & 7));
    }
    patch += g->seq->len;
    gen_mark_nocut(g, first);
    gen_emit_raw(g, DT_SETUP, tgt, n, t->a ? (F_ALL & ~F_CF) : 0, 0);
    if (g->m32)
        d = (int32_t)(DT_CODE + patch); /* mod 00 r/m 101 is absolute there */
    else
        d = (int32_t)((int64_t)patch - (int64_t)(at + 7));
    memcpy(g->seq->code + at + 2, &d, 4);
    g->seq->code[at + 6] = st[6];
}

/* Compatibility mode only. a: 0 inc/dec r (40+r, 48+r), 1 pusha; ... popa,
 * 2 daa/das/aaa/aas, 3 aam/aad imm8 */
static void t_legacy(struct gen *g, const struct tmpl *t)
{
    static const uint8_t bcd[] = { 0x27, 0x2f, 0x37, 0x3f };
    uint8_t b[3];
    unsigned n = 0;

    switch (t->a) {
    case 0:
        if (gen_rnd(g, 3) == 0)
            b[n++] = 0x66;
        b[n++] = (uint8_t)((gen_rnd(g, 2) ? 0x48 : 0x40) + (unsigned)gen_pick_reg(g, 4, false, 0));
        gen_emit_raw(g, g->cur, b, n, F_ALL & ~F_CF, 0);
        return;
    case 1:
        b[n++] = gen_rnd(g, 2) ? 0x60 : 0x61;
        if (!stack_room(g, b[0] == 0x60 ? 32 : -32))
            return;
        g->depth += b[0] == 0x60 ? 32 : -32;
        gen_emit_raw(g, g->cur, b, 1, 0, 0);
        return;
    case 2: {
        uint8_t op = bcd[gen_rnd(g, 4)];
        gen_need_flags(g, op <= 0x2f ? F_CF | F_AF : F_AF);
        if (op <= 0x2f) /* daa, das */
            gen_emit_raw(g, g->cur, &op, 1, F_CF | F_AF | F_SF | F_ZF | F_PF, F_OF);
        else /* aaa, aas */
            gen_emit_raw(g, g->cur, &op, 1, F_CF | F_AF, F_OF | F_SF | F_ZF | F_PF);
        return;
    }
    default:
        b[0] = gen_rnd(g, 2) ? 0xd4 : 0xd5;
        b[1] = gen_rnd(g, 4) ? 10 : (uint8_t)gen_rnd(g, 256); /* aam 0: #DE */
        gen_emit_raw(g, g->cur, b, 2, F_SF | F_ZF | F_PF, F_OF | F_AF | F_CF);
        return;
    }
}

/* Compatibility mode: memory through a cs override: a read works (the code
 * segment is readable), a write (now and then) is #GP(0). */
static void t_csmem(struct gen *g, const struct tmpl *t)
{
    struct ins in;
    bool write = gen_rnd(g, 8) == 0;

    (void)t;
    gen_ins_init(&in);
    gen_ins_size(&in, 4);
    gen_ins_pfx(&in, 0x2e);
    in.modrm = true;
    in.is_mem = true;
    in.reg = gen_pick_reg(g, 4, false, 0);
    gen_pick_mem(g, 4, 0, false, &in.m);
    gen_ins_op(&in, 1, write ? 0x89 : 0x8b, 0, 0);
    gen_insn_begin(g, g->cur);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

static const struct tmpl templates[] = {
/* clang-format off */
#define ALU4(op, nm) \
    { nm " rm,r", DT_ALU, t_alu, op, 0, 0 }, { nm " r,rm", DT_ALU, t_alu, op, 1, 0 }, \
    { nm " rm,imm", DT_ALU, t_alu, op, 2, 0 }, { nm " acc,imm", DT_ALU, t_alu, op, 3, 0 }
    ALU4(0, "add"), ALU4(1, "or"), ALU4(2, "adc"), ALU4(3, "sbb"),
    ALU4(4, "and"), ALU4(5, "sub"), ALU4(6, "xor"), ALU4(7, "cmp"),
    /* clang-format on */
    { "test rm,r", DT_ALU, t_alu, 8, 0, 0 },
    { "test rm,imm", DT_ALU, t_alu, 8, 2, 0 },
    { "test acc,imm", DT_ALU, t_alu, 8, 3, 0 },
    { "add/adc chain", DT_ALU, t_adcchain, 0, 0, 0 },
    { "sub/sbb chain", DT_ALU, t_adcchain, 1, 0, 0 },
    { "inc", DT_INCDEC, t_unary, 0, 0, 0 },
    { "dec", DT_INCDEC, t_unary, 1, 0, 0 },
    { "not", DT_INCDEC, t_unary, 2, 0, 0 },
    { "neg", DT_INCDEC, t_unary, 3, 0, 0 },
/* clang-format off */
#define SH3(op, nm) \
    { nm " rm,1", DT_SHIFT, t_shift, op, 0, 0 }, { nm " rm,imm8", DT_SHIFT, t_shift, op, 1, 0 }, \
    { nm " rm,cl", DT_SHIFT, t_shift, op, 2, 0 }
    SH3(0, "rol"), SH3(1, "ror"), SH3(2, "rcl"), SH3(3, "rcr"),
    SH3(4, "shl"), SH3(5, "shr"), SH3(6, "sal"), SH3(7, "sar"),
    /* clang-format on */
    { "shld rm,r,imm8", DT_SHIFT, t_shxd, 0, 0, 0 },
    { "shld rm,r,cl", DT_SHIFT, t_shxd, 0, 1, 0 },
    { "shrd rm,r,imm8", DT_SHIFT, t_shxd, 1, 0, 0 },
    { "shrd rm,r,cl", DT_SHIFT, t_shxd, 1, 1, 0 },
    { "mul rm", DT_MULDIV, t_mul1, 4, 0, 0 },
    { "imul rm", DT_MULDIV, t_mul1, 5, 0, 0 },
    { "imul r,rm", DT_MULDIV, t_imul, 0, 0, 0 },
    { "imul r,rm,imm8", DT_MULDIV, t_imul, 0, 1, 0 },
    { "imul r,rm,imm", DT_MULDIV, t_imul, 0, 2, 0 },
    { "div rm", DT_MULDIV, t_div, 6, 0, 0 },
    { "idiv rm", DT_MULDIV, t_div, 7, 0, 0 },
    { "bt rm,r", DT_BIT, t_bt, 4, 0, 0 },
    { "bts rm,r", DT_BIT, t_bt, 5, 0, 0 },
    { "btr rm,r", DT_BIT, t_bt, 6, 0, 0 },
    { "btc rm,r", DT_BIT, t_bt, 7, 0, 0 },
    { "bt rm,imm8", DT_BIT, t_bt, 4, 1, 0 },
    { "bts rm,imm8", DT_BIT, t_bt, 5, 1, 0 },
    { "btr rm,imm8", DT_BIT, t_bt, 6, 1, 0 },
    { "btc rm,imm8", DT_BIT, t_bt, 7, 1, 0 },
    { "bsf", DT_BIT, t_bitscan, 0, 0, 0 },
    { "bsr", DT_BIT, t_bitscan, 1, 0, 0 },
    { "popcnt", DT_BIT, t_bitscan, 2, 0, FEAT_POPCNT },
    { "lzcnt", DT_BIT, t_bitscan, 3, 0, FEAT_LZCNT },
    { "tzcnt", DT_BIT, t_bitscan, 4, 0, FEAT_BMI1 },
    { "bswap", DT_BIT, t_bswap, 0, 0, 0 },
    { "movzx r,rm8", DT_EXT, t_ext, 0xb6, 0, 0 },
    { "movzx r,rm16", DT_EXT, t_ext, 0xb7, 0, 0 },
    { "movsx r,rm8", DT_EXT, t_ext, 0xbe, 0, 0 },
    { "movsx r,rm16", DT_EXT, t_ext, 0xbf, 0, 0 },
    { "movsxd r64,rm32", DT_EXT, t_ext, 0x63, 0, FEAT_LONG },
    { "lea", DT_LEA, t_lea, 0, 0, 0 },
    { "xchg rm,r", DT_ATOMIC, t_atomic, 0, 0, 0 },
    { "xchg acc,r", DT_ATOMIC, t_atomic, 1, 0, 0 },
    { "xadd", DT_ATOMIC, t_atomic, 2, 0, 0 },
    { "cmpxchg", DT_ATOMIC, t_atomic, 3, 0, 0 },
    { "cmpxchg8b", DT_ATOMIC, t_atomic, 4, 0, 0 },
    { "cmpxchg16b", DT_ATOMIC, t_atomic, 5, 0, FEAT_CX16 },
    { "setcc", DT_COND, t_cond, 0, 0, 0 },
    { "cmovcc", DT_COND, t_cond, 1, 0, 0 },
    { "cbw/cwde/cdqe", DT_CONV, t_conv, 0x98, 0, 0 },
    { "cwd/cdq/cqo", DT_CONV, t_conv, 0x99, 0, 0 },
    { "lahf", DT_FLAG, t_flag, 0x9f, 0, FEAT_LAHF },
    { "sahf", DT_FLAG, t_flag, 0x9e, 0, FEAT_LAHF },
    { "clc", DT_FLAG, t_flag, 0xf8, 0, 0 },
    { "stc", DT_FLAG, t_flag, 0xf9, 0, 0 },
    { "cmc", DT_FLAG, t_flag, 0xf5, 0, 0 },
    { "cld", DT_FLAG, t_flag, 0xfc, 0, 0 },
    { "std", DT_FLAG, t_flag, 0xfd, 0, 0 },
    { "push r", DT_STACKOP, t_stack, 0, 0, 0 },
    { "pop r", DT_STACKOP, t_stack, 1, 0, 0 },
    { "push imm", DT_STACKOP, t_stack, 2, 0, 0 },
    { "push rm", DT_STACKOP, t_stack, 3, 0, 0 },
    { "pop rm", DT_STACKOP, t_stack, 4, 0, 0 },
    { "pushf; pop r", DT_STACKOP, t_stack, 5, 0, 0 },
    { "push imm; popf", DT_STACKOP, t_stack, 6, 0, 0 },
    { "call next; pop r", DT_STACKOP, t_stack, 7, 0, 0 },
    { "movs", DT_STRING, t_string, 0xa4, 0, 0 },
    { "cmps", DT_STRING, t_string, 0xa6, 0, 0 },
    { "stos", DT_STRING, t_string, 0xaa, 0, 0 },
    { "lods", DT_STRING, t_string, 0xac, 0, 0 },
    { "scas", DT_STRING, t_string, 0xae, 0, 0 },
    { "mov rm,r", DT_MOV, t_mov, 0, 0, 0 },
    { "mov r,rm", DT_MOV, t_mov, 1, 0, 0 },
    { "mov r,imm", DT_MOV, t_mov, 2, 0, 0 },
    { "mov rm,imm", DT_MOV, t_mov, 3, 0, 0 },
    { "jcc over", DT_BRANCH, t_branch, 0, 0, 0 },
    { "jmp rel8 over", DT_BRANCH, t_branch, 1, 0, 0 },
    { "jmp rel32 over", DT_BRANCH, t_branch, 2, 0, 0 },
    { "loop/jrcxz over", DT_BRANCH, t_branch, 3, 0, 0 },
    { "nop rm", DT_MISC, t_nop, 0, 0, 0 },
    { "smc: patch a later imm32", DT_MISC, t_smc, 0, 0, 0 },
    { "smc: patch inc into dec", DT_MISC, t_smc, 1, 0, 0 },
    { "call; jmp; ret", DT_BRANCH, t_callret, 0, 0, 0 },
    { "push; call; jmp; ret imm16", DT_BRANCH, t_callret, 1, 0, 0 },
    { "enter; leave", DT_STACKOP, t_enter, 0, 0, 0 },
    { "xlat", DT_MOV, t_xlat, 0, 0, 0 },
    { "lock on a register (#UD)", DT_MISC, t_lockud, 0, 0, FEAT_RARE },
    { "inc/dec r (40+r, 48+r)", DT_INCDEC, t_legacy, 0, 0, FEAT_LEGACY },
    { "pusha / popa", DT_STACKOP, t_legacy, 1, 0, FEAT_LEGACY },
    { "daa/das/aaa/aas", DT_CONV, t_legacy, 2, 0, FEAT_LEGACY },
    { "aam/aad imm8", DT_CONV, t_legacy, 3, 0, FEAT_LEGACY },
    { "mov through cs:", DT_MOV, t_csmem, 0, 0, FEAT_LEGACY },
    { "ud2", DT_MISC, t_exc, 0, 0, FEAT_RARE }, /* exceptions end a sequence */
    { "int3", DT_MISC, t_exc, 1, 0, FEAT_RARE },
    { "load non-canonical", DT_MISC, t_exc, 2, 0, FEAT_RARE },
};

#define NR_TEMPLATES (sizeof(templates) / sizeof(templates[0]))

static int only_class = DT_NR_CLASSES;

unsigned dt_nr_templates(void)
{
    return NR_TEMPLATES;
}

const char *dt_template_name(unsigned i)
{
    return i < NR_TEMPLATES ? templates[i].name : "(set-up)";
}

enum dt_class dt_template_class(unsigned i)
{
    return templates[i].cls;
}

void dt_gen_set_class(int cls)
{
    only_class = cls;
}

void dt_gen_init(void)
{
    unsigned a, b, c, d;

    if (__get_cpuid(1, &a, &b, &c, &d)) {
        have_feat[FEAT_POPCNT] = c & (1u << 23);
        have_feat[FEAT_CX16] = c & (1u << 13);
    }
    if (__get_cpuid(0x80000001, &a, &b, &c, &d)) {
        have_feat[FEAT_LZCNT] = c & (1u << 5);
        have_feat[FEAT_LAHF] = c & 1u;
    }
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        have_feat[FEAT_BMI1] = b & (1u << 3);
    }
}

void dt_gen_sequence(uint64_t seed, unsigned len, bool mode32, struct dt_seq *seq,
                     struct dt_state *init)
{
    struct gen g;

    memset(&g, 0, sizeof(g));
    dt_rng_seed(&g.rng, seed);
    g.seq = seq;
    g.m32 = mode32;
    seq->len = 0;
    seq->nr_insns = 0;
    seq->mode32 = mode32;

    memset(init, 0, sizeof(*init));
    for (unsigned i = 0; i < 16; i++)
        init->regs[i] = gen_rand_val(&g);
    init->regs[4] = DT_STACK_TOP;
    init->rflags = 0x202 | dt_flags_expand((uint8_t)gen_rnd(&g, 64));
    init->fault = -1;
    for (unsigned i = 0; i < DT_SCRATCH_SIZE; i += 8) {
        uint64_t v = gen_rnd(&g, 8) == 0 ? 0 : gen_rand_val(&g);
        memcpy(init->scratch + i, &v, 8);
    }
    for (unsigned i = 0; i < DT_STACK_SIZE; i += 8) {
        uint64_t v = gen_rnd64(&g);
        memcpy(init->stack + i, &v, 8);
    }

    for (unsigned i = 0; i < len; i++) {
        if (seq->len + 160 > DT_MAX_CODE || seq->nr_insns + 24 > DT_MAX_INSNS)
            break;
        const struct tmpl *t;
        unsigned k;
        do {
            k = gen_rnd(&g, NR_TEMPLATES);
            t = &templates[k];
        } while (!have_feat[t->feat] || (t->feat == FEAT_RARE && gen_rnd(&g, 16)) ||
                 (t->feat == FEAT_LONG && mode32) || (t->feat == FEAT_LEGACY && !mode32) ||
                 (only_class != DT_NR_CLASSES && (int)t->cls != only_class));
        g.cur = k;
        t->emit(&g, t);
    }
    seq->start[seq->nr_insns] = (uint16_t)seq->len;
    seq->undef_before[seq->nr_insns] = g.undef;
    seq->undef_end = g.undef;
}
