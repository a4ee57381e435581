/* difftest-gen.c: the differential tester's instruction templates and the
 * random sequence generator, with the per-template flag effects it tracks. */
#include "difftest.h"

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arithmetic flags in compact form (6 bits), for the undefined-flags tracking. */
#define F_CF 0x01u
#define F_PF 0x02u
#define F_AF 0x04u
#define F_ZF 0x08u
#define F_SF 0x10u
#define F_OF 0x20u
#define F_ALL 0x3fu

uint32_t dt_flags_expand(uint8_t c)
{
    static const uint32_t bit[6] = { 0x001, 0x004, 0x010, 0x040, 0x080, 0x800 };
    uint32_t f = 0;

    for (unsigned i = 0; i < 6; i++)
        if (c & (1u << i))
            f |= bit[i];
    return f;
}

const char *const dt_class_names[DT_NR_CLASSES] = {
    "alu", "incdec", "shift", "muldiv", "bit", "ext", "lea", "atomic",
    "cond", "conv", "flag", "stack", "string", "mov", "branch",
};

/* ---- random numbers ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void dt_rng_seed(struct dt_rng *r, uint64_t seed)
{
    for (unsigned i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, unsigned k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t dt_rng_next(struct dt_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t dt_rng_below(struct dt_rng *r, uint32_t n)
{
    return (uint32_t)((dt_rng_next(r) >> 32) * n >> 32);
}

/* ---- generator state and the encoder ---- */

#define NOREG (-1)
#define RIPREL 100
/* 8-bit registers 16..19 are ah, ch, dh, bh (encoded 4..7 without REX). */
#define REG_AH 16

struct gen {
    struct dt_rng rng;
    struct dt_seq *seq;
    uint8_t undef;              /* compact flags undefined now */
    int depth;                  /* bytes pushed on the private stack */
    unsigned cur;               /* template being emitted */
    bool full;                  /* no room for another template */
};

struct mem {
    int base, index, scale;     /* base: a register, NOREG or RIPREL */
    int32_t disp;
    int dispsz;                 /* 0, 1, 4 */
    bool a32;
    uint64_t target;            /* RIPREL: the address it names */
};

struct ins {
    uint8_t pfx[3];
    int npfx;
    bool p66, w;
    uint8_t op[3];
    int nop;
    int opreg;                  /* >= 0: register added to the last opcode byte */
    bool modrm;
    bool digit;                 /* modrm.reg is an opcode extension */
    int reg;
    bool is_mem;
    int rm;
    struct mem m;
    bool byteregs;              /* reg / rm / opreg name 8-bit registers */
    bool reg_wide;              /* ... except modrm.reg (movzx, movsx) */
    int immsz;
    uint64_t imm;
};

static uint32_t rnd(struct gen *g, uint32_t n)
{
    return dt_rng_below(&g->rng, n);
}

static uint64_t rnd64(struct gen *g)
{
    return dt_rng_next(&g->rng);
}

static uint64_t size_mask(unsigned size)
{
    return size == 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

/* Interesting values: edges of every width more often than uniform noise. */
static uint64_t rand_val(struct gen *g)
{
    static const uint64_t edges[] = {
        0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
        0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x7fffffffffffffffull,
        0x8000000000000000ull, ~0ull, ~0ull - 1, 0xffffffff80000000ull,
    };
    switch (rnd(g, 8)) {
    case 0: return edges[rnd(g, sizeof(edges) / sizeof(edges[0]))];
    case 1: return rnd(g, 256);
    case 2: return (uint64_t)-(int64_t)rnd(g, 256);
    case 3: return edges[rnd(g, sizeof(edges) / sizeof(edges[0]))] + rnd(g, 5) - 2;
    case 4: return rnd64(g) & 0xffffffff;
    default: return rnd64(g);
    }
}

static void put(struct gen *g, const uint8_t *b, unsigned n)
{
    struct dt_seq *s = g->seq;

    if (s->len + n > DT_MAX_CODE)
        abort();
    memcpy(s->code + s->len, b, n);
    s->len += n;
}

static void insn_begin(struct gen *g, unsigned tmpl)
{
    struct dt_seq *s = g->seq;

    if (s->nr_insns >= DT_MAX_INSNS)
        abort();
    s->start[s->nr_insns] = (uint16_t)s->len;
    s->tmpl[s->nr_insns] = (uint16_t)tmpl;
    s->undef_before[s->nr_insns] = g->undef;
}

/* (wr): flags now defined; (ud): flags now undefined; the rest unchanged. */
static void insn_end(struct gen *g, uint8_t wr, uint8_t ud)
{
    g->undef = (uint8_t)((g->undef & ~wr) | ud);
    g->seq->nr_insns++;
}

static void emit_raw(struct gen *g, unsigned tmpl, const uint8_t *b, unsigned n, uint8_t wr,
                     uint8_t ud)
{
    insn_begin(g, tmpl);
    put(g, b, n);
    insn_end(g, wr, ud);
}

static void ins_init(struct ins *in)
{
    memset(in, 0, sizeof(*in));
    in->opreg = -1;
    in->m.base = NOREG;
    in->m.index = NOREG;
}

static void ins_size(struct ins *in, unsigned size)
{
    in->p66 = size == 2;
    in->w = size == 8;
    in->byteregs = size == 1;
}

static void ins_op(struct ins *in, unsigned n, uint8_t a, uint8_t b, uint8_t c)
{
    in->nop = (int)n;
    in->op[0] = a;
    in->op[1] = b;
    in->op[2] = c;
}

static void ins_pfx(struct ins *in, uint8_t p)
{
    in->pfx[in->npfx++] = p;
}

/* A register operand's low three bits and REX needs; (high8): ah..bh. */
static unsigned reg_code(bool byteregs, int r, bool *rexbit, bool *need_rex, bool *high8)
{
    if (byteregs && r >= REG_AH) {
        *high8 = true;
        return (unsigned)(r - REG_AH + 4);
    }
    if (byteregs && r >= 4 && r < 8)
        *need_rex = true;
    if (r >= 8)
        *rexbit = true;
    return (unsigned)r & 7;
}

static void emit_ins(struct gen *g, const struct ins *in)
{
    uint8_t b[24];
    unsigned n = 0, disp_at = 0;
    bool need_rex = in->w, high8 = false, rr = false, rx = false, rb = false;
    unsigned regc = 0, rmc = 0, opregc = 0;

    for (int i = 0; i < in->npfx; i++)
        b[n++] = in->pfx[i];
    if (in->p66)
        b[n++] = 0x66;
    if (in->modrm && in->is_mem && in->m.a32)
        b[n++] = 0x67;
    if (in->modrm) {
        if (in->digit)
            regc = (unsigned)in->reg;
        else
            regc = reg_code(in->byteregs && !in->reg_wide, in->reg, &rr, &need_rex, &high8);
        if (in->is_mem) {
            if (in->m.index >= 8)
                rx = true;
            if (in->m.base >= 8 && in->m.base != RIPREL)
                rb = true;
        } else {
            rmc = reg_code(in->byteregs, in->rm, &rb, &need_rex, &high8);
        }
    }
    if (in->opreg >= 0)
        opregc = reg_code(in->byteregs, in->opreg, &rb, &need_rex, &high8);
    if (rr || rx || rb)
        need_rex = true;
    if (need_rex) {
        if (high8)
            abort();            /* generator bug: ah..bh with a REX prefix */
        b[n++] = (uint8_t)(0x40 | (in->w << 3) | (rr << 2) | (rx << 1) | rb);
    }
    for (int i = 0; i < in->nop; i++)
        b[n++] = in->op[i];
    if (in->opreg >= 0)
        b[n - 1] = (uint8_t)(b[n - 1] + opregc);
    if (in->modrm) {
        if (!in->is_mem) {
            b[n++] = (uint8_t)(0xc0 | (regc << 3) | rmc);
        } else {
            const struct mem *m = &in->m;
            if (m->base == RIPREL) {
                b[n++] = (uint8_t)(0x05 | (regc << 3));
                disp_at = n;
                n += 4;
            } else if (m->base == NOREG) {
                unsigned idx = m->index == NOREG ? 4 : (unsigned)m->index & 7;
                b[n++] = (uint8_t)(0x04 | (regc << 3));
                b[n++] = (uint8_t)((m->scale << 6) | (idx << 3) | 5);
                memcpy(b + n, &m->disp, 4);
                n += 4;
            } else {
                unsigned base = (unsigned)m->base & 7, mod;
                int dispsz = m->dispsz;
                if (dispsz == 0 && base == 5)
                    dispsz = 1;
                mod = dispsz == 0 ? 0 : dispsz == 1 ? 1 : 2;
                if (m->index != NOREG || base == 4) {
                    unsigned idx = m->index == NOREG ? 4 : (unsigned)m->index & 7;
                    b[n++] = (uint8_t)((mod << 6) | (regc << 3) | 4);
                    b[n++] = (uint8_t)((m->scale << 6) | (idx << 3) | base);
                } else {
                    b[n++] = (uint8_t)((mod << 6) | (regc << 3) | base);
                }
                if (dispsz == 1) {
                    b[n++] = (uint8_t)(int8_t)m->disp;
                } else if (dispsz == 4) {
                    memcpy(b + n, &m->disp, 4);
                    n += 4;
                }
            }
        }
    }
    for (int i = 0; i < in->immsz; i++)
        b[n++] = (uint8_t)(in->imm >> (8 * i));
    if (disp_at) {
        int64_t d = (int64_t)in->m.target - (int64_t)(DT_CODE + g->seq->len + n);
        int32_t d32 = (int32_t)d;
        memcpy(b + disp_at, &d32, 4);
    }
    put(g, b, n);
}

/* ---- operand set-up (plain movs: no flag effects) ---- */

/* Registers: (avoid) is a mask of full registers; rsp is never chosen. */
static int pick_reg(struct gen *g, unsigned size, bool legacy8, uint32_t avoid)
{
    for (;;) {
        int r;
        if (size == 1 && legacy8) {
            r = (int)rnd(g, 8);
            if (r >= 4)
                r = REG_AH + r - 4;
        } else {
            r = (int)rnd(g, 16);
        }
        int full = r >= REG_AH ? r - REG_AH : r;
        if (full == 4 || (avoid & (1u << full)))
            continue;
        return r;
    }
}

static uint32_t reg_bit(int r)
{
    return 1u << (r >= REG_AH ? r - REG_AH : r);
}

/* mov (r), (v) as a set-up instruction of (size) bytes (upper bits: as mov does). */
static void set_reg(struct gen *g, int r, unsigned size, uint64_t v)
{
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.opreg = r;
    if (size == 8 && v <= 0xffffffffull) {
        in.w = false;
        size = 4;
    }
    if (size == 8 && (int64_t)v == (int32_t)v) {
        ins_op(&in, 1, 0xc7, 0, 0);
        in.opreg = -1;
        in.modrm = true;
        in.digit = true;
        in.reg = 0;
        in.rm = r;
        in.immsz = 4;
    } else {
        ins_op(&in, 1, size == 1 ? 0xb0 : 0xb8, 0, 0);
        in.immsz = (int)size;
    }
    in.imm = v;
    insn_begin(g, DT_SETUP);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

static uint64_t pick_target(struct gen *g, unsigned size, unsigned align)
{
    uint64_t off;

    if (rnd(g, 4) == 0)
        off = 0x1000 - size + rnd(g, 2 * size); /* around the 4 KiB boundary */
    else
        off = rnd(g, DT_SCRATCH_SIZE - 2 * size);
    if (align)
        off &= ~(uint64_t)(align - 1);
    return DT_SCRATCH + off;
}

/* A memory operand naming (target), base and index set by set-up movs. */
static void pick_mem_at(struct gen *g, uint64_t target, uint32_t avoid, bool legacy,
                        struct mem *m)
{
    unsigned form = rnd(g, 9);
    int64_t index = 0;

    memset(m, 0, sizeof(*m));
    m->base = NOREG;
    m->index = NOREG;
    if (form == 7) {
        m->base = RIPREL;
        m->target = target;
        return;
    }
    if (form == 8) {
        m->disp = (int32_t)target;
        m->dispsz = 4;
        return;
    }
    avoid |= 1u << 4;
    if (legacy)
        avoid |= 0xff00u;
    m->a32 = rnd(g, 6) == 0;
    if (form != 6)
        m->base = pick_reg(g, 8, false, avoid);
    if (form >= 4) {
        m->index = pick_reg(g, 8, false, avoid | (m->base >= 0 ? 1u << m->base : 0));
        m->scale = (int)rnd(g, 4);
        index = (int64_t)rnd(g, 129) - 64;
    }
    switch (form) {
    case 0: m->dispsz = 0; break;
    case 1: case 4: m->dispsz = 1; m->disp = (int8_t)rnd(g, 256); break;
    case 2: case 5: m->dispsz = 4; m->disp = (int32_t)(rnd64(g) >> (33 + rnd(g, 31))); break;
    case 3: m->dispsz = 0; break;
    case 6:
        m->dispsz = 4;
        m->disp = (int32_t)((int64_t)target - index * (1 << m->scale));
        break;
    }
    if (rnd(g, 2) && m->dispsz == 4 && form != 6)
        m->disp = -m->disp;
    uint64_t rest = target - (uint64_t)(int64_t)m->disp - (uint64_t)(index * (1 << m->scale));
    if (m->base >= 0) {
        if (m->a32)
            set_reg(g, m->base, 4, rest & 0xffffffff);
        else
            set_reg(g, m->base, 8, rest);
    }
    if (m->index >= 0) {
        if (m->a32)
            set_reg(g, m->index, 4, (uint64_t)index & 0xffffffff);
        else
            set_reg(g, m->index, 8, (uint64_t)index);
    }
}

static void pick_mem(struct gen *g, unsigned size, uint32_t avoid, bool legacy, struct mem *m)
{
    pick_mem_at(g, pick_target(g, size, 0), avoid, legacy, m);
}

/* The same operand (k) bytes further on. */
static struct mem mem_plus(const struct mem *m, int k)
{
    struct mem r = *m;

    if (r.base == RIPREL) {
        r.target += (uint64_t)k;
        return r;
    }
    r.disp += k;
    if (r.dispsz == 0 || (r.dispsz == 1 && (r.disp < -128 || r.disp > 127)))
        r.dispsz = r.disp >= -128 && r.disp <= 127 ? 1 : 4;
    return r;
}

/* mov (m), (v): a set-up store of (size) bytes (64-bit: sign-extended imm32). */
static void set_mem(struct gen *g, const struct mem *m, unsigned size, uint64_t v)
{
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    ins_op(&in, 1, size == 1 ? 0xc6 : 0xc7, 0, 0);
    in.modrm = true;
    in.digit = true;
    in.is_mem = true;
    in.m = *m;
    in.immsz = size == 8 ? 4 : (int)size;
    in.imm = v;
    insn_begin(g, DT_SETUP);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* cmp r64, r64: defines every arithmetic flag before an instruction reads them. */
static void need_flags(struct gen *g, uint8_t rd)
{
    static const uint8_t cmp[] = { 0x48, 0x39, 0xc0 };
    uint8_t b[3];

    if (!(g->undef & rd))
        return;
    memcpy(b, cmp, 3);
    b[2] = (uint8_t)(0xc0 | rnd(g, 64));
    if (((b[2] >> 3) & 7) == 4 || (b[2] & 7) == 4)
        b[2] = 0xc0;
    emit_raw(g, DT_SETUP, b, 3, F_ALL, 0);
}

/* ---- templates ---- */

struct tmpl;
typedef void emit_fn(struct gen *g, const struct tmpl *t);

struct tmpl {
    const char *name;
    enum dt_class cls;
    emit_fn *emit;
    uint8_t a, b;
    uint8_t feat;
};

enum { FEAT_NONE, FEAT_POPCNT, FEAT_LZCNT, FEAT_BMI1, FEAT_LAHF, FEAT_CX16, FEAT_NR };
static bool have_feat[FEAT_NR] = { true };

static unsigned pick_size(struct gen *g, unsigned mask)
{
    for (;;) {
        unsigned s = 1u << rnd(g, 4);
        if (mask & s)
            return s;
    }
}

static uint64_t imm_for(struct gen *g, unsigned immsz)
{
    uint64_t v = rand_val(g);
    return immsz == 8 ? v : v & size_mask(immsz);
}

/* Flags an ALU op (a: 0 add, 1 or, 2 adc, 3 sbb, 4 and, 5 sub, 6 xor, 7 cmp) reads / leaves undefined. */
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
    if (allow_mem && rnd(g, 2)) {
        in->is_mem = true;
        pick_mem(g, size, avoid, legacy, &in->m);
    } else {
        in->rm = pick_reg(g, size, legacy, avoid);
    }
}

static bool pick_legacy(struct gen *g, unsigned size)
{
    return size == 1 && rnd(g, 3) == 0;
}

/* a: ALU op; b: 0 rm,r  1 r,rm  2 rm,imm  3 acc,imm  (test: a = 8) */
static void t_alu(struct gen *g, const struct tmpl *t)
{
    unsigned op = t->a, size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size), test = op == 8;
    uint8_t wr = F_ALL & (uint8_t)~alu_ud(test ? 4 : op), ud = alu_ud(test ? 4 : op);
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.byteregs = size == 1;
    switch (t->b) {
    case 0:
        pick_rm(g, &in, size, legacy, 0, true);
        in.reg = pick_reg(g, size, legacy, 0);
        ins_op(&in, 1, (uint8_t)((test ? 0x84 : op * 8) + (size != 1)), 0, 0);
        if (in.is_mem && op != 7 && !test && rnd(g, 2))
            ins_pfx(&in, 0xf0);
        break;
    case 1:
        in.reg = pick_reg(g, size, legacy, 0);
        pick_rm(g, &in, size, legacy, 0, true);
        ins_op(&in, 1, (uint8_t)(op * 8 + 2 + (size != 1)), 0, 0);
        break;
    case 2:
        pick_rm(g, &in, size, legacy, 0, true);
        in.digit = true;
        in.reg = test ? 0 : (int)op;
        if (test) {
            ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
            in.immsz = size == 8 ? 4 : (int)size;
        } else if (size != 1 && rnd(g, 2)) {
            ins_op(&in, 1, 0x83, 0, 0);
            in.immsz = 1;
        } else {
            ins_op(&in, 1, (uint8_t)(0x80 + (size != 1)), 0, 0);
            in.immsz = size == 8 ? 4 : (int)size;
        }
        in.imm = imm_for(g, (unsigned)in.immsz);
        if (in.is_mem && op != 7 && !test && rnd(g, 2))
            ins_pfx(&in, 0xf0);
        break;
    case 3:
        in.modrm = false;
        ins_op(&in, 1, (uint8_t)((test ? 0xa8 : op * 8 + 4) + (size != 1)), 0, 0);
        in.immsz = size == 8 ? 4 : (int)size;
        in.imm = imm_for(g, (unsigned)in.immsz);
        break;
    }
    need_flags(g, test ? 0 : alu_rd(op));
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, ud);
}

/* add/sub then a run of adc/sbb on random registers: multi-word arithmetic. */
static void t_adcchain(struct gen *g, const struct tmpl *t)
{
    unsigned n = 2 + rnd(g, 3), size = 4u << rnd(g, 2);
    bool sub = t->a;

    for (unsigned i = 0; i < n; i++) {
        struct ins in;
        ins_init(&in);
        ins_size(&in, size);
        in.modrm = true;
        in.reg = pick_reg(g, size, false, 0);
        pick_rm(g, &in, size, false, 0, i > 0 && rnd(g, 3) == 0);
        ins_op(&in, 1, (uint8_t)((i == 0 ? (sub ? 0x28 : 0x00) : (sub ? 0x18 : 0x10)) + 1), 0, 0);
        if (i > 0)
            need_flags(g, F_CF);
        insn_begin(g, g->cur);
        emit_ins(g, &in);
        insn_end(g, F_ALL, 0);
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

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = ext[t->a];
    pick_rm(g, &in, size, legacy, 0, true);
    ins_op(&in, 1, (uint8_t)(t->a <= 1 ? 0xfe + (size != 1) : 0xf6 + (size != 1)), 0, 0);
    if (in.is_mem && rnd(g, 2))
        ins_pfx(&in, 0xf0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, 0);
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
    switch (rnd(g, 4)) {
    case 0: return rnd(g, 3);
    case 1: return rnd(g, 256);
    default: return rnd(g, size * 8 + 1);
    }
}

/* a: op ext (0 rol .. 7 sar); b: 0 by 1, 1 by imm8, 2 by cl */
static void t_shift(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15), count = 1;
    bool legacy = pick_legacy(g, size);
    uint8_t wr, ud;
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    if (t->b == 2) {
        count = pick_count(g, size);
        set_reg(g, 1, 1, count);
        pick_rm(g, &in, size, legacy, 1u << 1, true);
        ins_op(&in, 1, (uint8_t)(0xd2 + (size != 1)), 0, 0);
    } else {
        pick_rm(g, &in, size, legacy, 0, true);
        if (t->b == 1) {
            count = pick_count(g, size);
            ins_op(&in, 1, (uint8_t)(0xc0 + (size != 1)), 0, 0);
            in.immsz = 1;
            in.imm = count;
        } else {
            ins_op(&in, 1, (uint8_t)(0xd0 + (size != 1)), 0, 0);
        }
    }
    shift_flags(t->a, size, count, &wr, &ud);
    need_flags(g, t->a == 2 || t->a == 3 ? F_CF : 0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, ud);
}

/* a: 0 shld, 1 shrd; b: 0 imm8, 1 cl */
static void t_shxd(struct gen *g, const struct tmpl *t)
{
    unsigned size = 2u << rnd(g, 3), count, c;
    struct ins in;
    uint8_t wr = 0, ud = 0;

    /* A 16-bit shift by more than 16 leaves the result undefined. */
    if (size == 2)
        count = rnd(g, 17) | (rnd(g, 8) << 5);
    else
        count = pick_count(g, size);
    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    if (t->b == 1)
        set_reg(g, 1, 1, count);
    in.reg = pick_reg(g, size, false, t->b ? 2u : 0);
    pick_rm(g, &in, size, false, t->b ? 2u : 0, true);
    ins_op(&in, 2, 0x0f, (uint8_t)((t->a ? 0xac : 0xa4) + t->b), 0);
    if (t->b == 0) {
        in.immsz = 1;
        in.imm = count;
    }
    c = count & (size == 8 ? 0x3f : 0x1f);
    if (c) {
        wr = F_CF | F_SF | F_ZF | F_PF | (c == 1 ? F_OF : 0);
        ud = F_AF | (c == 1 ? 0 : F_OF);
    }
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, ud);
}

/* mul (a=4) / imul (a=5) with one operand */
static void t_mul1(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    pick_rm(g, &in, size, legacy, 0, true);
    ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, F_CF | F_OF, F_SF | F_ZF | F_AF | F_PF);
}

/* imul r, rm (b=0); imul r, rm, imm8 (b=1); imul r, rm, imm16/32 (b=2) */
static void t_imul(struct gen *g, const struct tmpl *t)
{
    unsigned size = 2u << rnd(g, 3);
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.reg = pick_reg(g, size, false, 0);
    pick_rm(g, &in, size, false, 0, true);
    if (t->b == 0) {
        ins_op(&in, 2, 0x0f, 0xaf, 0);
    } else if (t->b == 1) {
        ins_op(&in, 1, 0x6b, 0, 0);
        in.immsz = 1;
        in.imm = imm_for(g, 1);
    } else {
        ins_op(&in, 1, 0x69, 0, 0);
        in.immsz = size == 2 ? 2 : 4;
        in.imm = imm_for(g, (unsigned)in.immsz);
    }
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, F_CF | F_OF, F_SF | F_ZF | F_AF | F_PF);
}

/* div (a=6) / idiv (a=7), operands chosen so the quotient fits (mostly). */
static void t_div(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size), sign = t->a == 7, wild = rnd(g, 24) == 0;
    uint64_t mask = size_mask(size), d;
    struct ins in;
    uint32_t avoid = size == 1 ? 1u : 5u;      /* rax (al, ah); rdx */

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.digit = true;
    in.reg = t->a;
    in.is_mem = rnd(g, 2);
    do {
        d = rand_val(g) & mask;
        if (in.is_mem || rnd(g, 2))
            d &= 0x7fffffff;
        if (size == 8 && rnd(g, 2))
            d = (uint64_t)(int64_t)(int32_t)d;
    } while (d == 0 || (sign && d == mask && rnd(g, 8)));
    if (in.is_mem) {
        pick_mem(g, size, avoid, legacy, &in.m);
        if (!wild)
            set_mem(g, &in.m, size, d);
    } else {
        in.rm = pick_reg(g, size, legacy, avoid);
        if (!wild)
            set_reg(g, in.rm, size, d);
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
            emit_raw(g, DT_SETUP, b, n, 0, 0);
        } else if (size == 1) {
            set_reg(g, REG_AH, 1, rnd64(g) % d);
        } else {
            set_reg(g, 2, size, rnd64(g) % d);
        }
    }
    ins_op(&in, 1, (uint8_t)(0xf6 + (size != 1)), 0, 0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, F_ALL);
}

/* bt/bts/btr/btc (a = 4..7) by register (b=0) or imm8 (b=1) */
static void t_bt(struct gen *g, const struct tmpl *t)
{
    unsigned size = 2u << rnd(g, 3);
    static const uint8_t opr[] = { 0xa3, 0xab, 0xb3, 0xbb };
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    if (t->b == 1) {
        pick_rm(g, &in, size, false, 0, true);
        in.digit = true;
        in.reg = t->a;
        ins_op(&in, 2, 0x0f, 0xba, 0);
        in.immsz = 1;
        in.imm = rnd(g, 256);
    } else if (rnd(g, 2)) {
        /* memory bit string: the offset register reaches +-256 bytes around it */
        int64_t off = (int64_t)rnd(g, 4096) - 2048;
        in.is_mem = true;
        in.reg = pick_reg(g, size, false, 0);
        pick_mem_at(g, DT_SCRATCH + 0x400 + rnd(g, DT_SCRATCH_SIZE - 0x800), reg_bit(in.reg),
                    false, &in.m);
        set_reg(g, in.reg, size, (uint64_t)off & size_mask(size));
        ins_op(&in, 2, 0x0f, opr[t->a - 4], 0);
    } else {
        in.reg = pick_reg(g, size, false, 0);
        in.rm = pick_reg(g, size, false, 0);
        ins_op(&in, 2, 0x0f, opr[t->a - 4], 0);
    }
    if (in.is_mem && t->a != 4 && rnd(g, 2))
        ins_pfx(&in, 0xf0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, F_CF, F_OF | F_SF | F_AF | F_PF);
}

/* a: 0 bsf, 1 bsr, 2 popcnt, 3 lzcnt, 4 tzcnt */
static void t_bitscan(struct gen *g, const struct tmpl *t)
{
    unsigned size = 2u << rnd(g, 3);
    static const uint8_t op2[] = { 0xbc, 0xbd, 0xb8, 0xbd, 0xbc };
    struct ins in, bts;
    uint8_t wr, ud;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.reg = pick_reg(g, size, false, 0);
    pick_rm(g, &in, size, false, 0, true);
    if (t->a <= 1 && rnd(g, 8)) {
        /* bsf/bsr leave the destination undefined for a zero source: bts a bit in first */
        bts = in;
        bts.digit = true;
        bts.reg = 5;
        ins_op(&bts, 2, 0x0f, 0xba, 0);
        bts.immsz = 1;
        bts.imm = rnd(g, size * 8);
        insn_begin(g, DT_SETUP);
        emit_ins(g, &bts);
        insn_end(g, F_CF, F_OF | F_SF | F_AF | F_PF);
    } else if (t->a <= 1) {
        /* or a single bit, through a set-up mov */
        if (in.is_mem)
            set_mem(g, &in.m, size, 1ull << rnd(g, 31));
        else
            set_reg(g, in.rm, size, 1ull << rnd(g, size * 8));
    }
    if (t->a >= 2)
        ins_pfx(&in, 0xf3);
    ins_op(&in, 2, 0x0f, op2[t->a], 0);
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
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, ud);
}

static void t_bswap(struct gen *g, const struct tmpl *t)
{
    struct ins in;

    (void)t;
    ins_init(&in);
    ins_size(&in, rnd(g, 2) ? 8 : 4);
    ins_op(&in, 2, 0x0f, 0xc8, 0);
    in.opreg = pick_reg(g, 8, false, 0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* a: 0xb6 movzx8, 0xb7 movzx16, 0xbe movsx8, 0xbf movsx16, 0x63 movsxd */
static void t_ext(struct gen *g, const struct tmpl *t)
{
    unsigned src = t->a == 0x63 ? 4 : (t->a & 1) ? 2 : 1, size;
    struct ins in;
    bool legacy;

    do
        size = 2u << rnd(g, 3);
    while (size <= src && t->a != 0x63);
    if (t->a == 0x63)
        size = 8;
    legacy = src == 1 && size != 8 && rnd(g, 3) == 0;
    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.reg = pick_reg(g, size, false, legacy ? 0xff00u : 0);
    in.byteregs = src == 1;
    in.reg_wide = true;
    pick_rm(g, &in, src, legacy, 0, true);
    if (t->a == 0x63)
        ins_op(&in, 1, 0x63, 0, 0);
    else
        ins_op(&in, 2, 0x0f, t->a, 0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* lea with every addressing form; registers as they are (no memory access). */
static void t_lea(struct gen *g, const struct tmpl *t)
{
    unsigned size = 2u << rnd(g, 3), form = rnd(g, 9);
    struct ins in;
    struct mem *m = &in.m;

    (void)t;
    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    in.is_mem = true;
    in.reg = pick_reg(g, size, false, 0);
    ins_op(&in, 1, 0x8d, 0, 0);
    m->a32 = rnd(g, 4) == 0;
    if (form == 7) {
        m->base = RIPREL;
        m->target = DT_CODE + (rnd64(g) & 0xffffff) - 0x800000;
        m->a32 = rnd(g, 8) == 0;
    } else if (form == 8) {
        m->dispsz = 4;
        m->disp = (int32_t)rnd64(g);
    } else {
        if (form != 6)
            m->base = (int)rnd(g, 16);      /* rsp and r12 take a SIB, rbp and r13 a disp */
        if (form >= 3) {
            do
                m->index = (int)rnd(g, 16);
            while (m->index == 4);
            m->scale = (int)rnd(g, 4);
        }
        m->dispsz = form == 0 || form == 3 ? 0 : (form == 1 || form == 4) ? 1 : 4;
        m->disp = m->dispsz == 1 ? (int8_t)rnd(g, 256) : (int32_t)rnd64(g);
        if (form == 6)
            m->dispsz = 4;
    }
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* a: 0 xchg rm,r  1 xchg rax,r (90+r)  2 xadd  3 cmpxchg  4 cmpxchg8b  5 cmpxchg16b */
static void t_atomic(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, t->a == 1 ? 14 : 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;
    uint8_t wr = 0;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    switch (t->a) {
    case 0:
        pick_rm(g, &in, size, legacy, 0, true);
        in.reg = pick_reg(g, size, legacy, 0);
        ins_op(&in, 1, (uint8_t)(0x86 + (size != 1)), 0, 0);
        break;
    case 1:
        in.modrm = false;
        in.opreg = rnd(g, 8) == 0 ? 0 : pick_reg(g, size, false, 0);
        ins_op(&in, 1, 0x90, 0, 0);
        break;
    case 2:
    case 3:
        pick_rm(g, &in, size, legacy, t->a == 3 ? 1u : 0, true);
        in.reg = pick_reg(g, size, legacy, 0);
        ins_op(&in, 2, 0x0f, (uint8_t)((t->a == 2 ? 0xc0 : 0xb0) + (size != 1)), 0);
        wr = F_ALL;
        if (t->a == 3 && rnd(g, 2)) {
            /* make the comparison succeed: mov al/ax/eax/rax, rm */
            struct ins mv = in;
            mv.pfx[0] = 0;
            mv.npfx = 0;
            mv.reg = 0;
            ins_op(&mv, 1, (uint8_t)(0x8a + (size != 1)), 0, 0);
            insn_begin(g, DT_SETUP);
            emit_ins(g, &mv);
            insn_end(g, 0, 0);
        }
        break;
    case 4:
    case 5:
        size = t->a == 4 ? 8 : 16;
        ins_size(&in, t->a == 4 ? 4 : 8);
        in.is_mem = true;
        pick_mem_at(g, pick_target(g, size, size), 0xfu, false, &in.m);
        in.digit = true;
        in.reg = 1;
        ins_op(&in, 2, 0x0f, 0xc7, 0);
        wr = F_ZF;
        if (rnd(g, 2)) {
            /* edx:eax (rdx:rax) = the memory: the exchange happens */
            unsigned half = size / 2;
            for (int r = 0; r < 2; r++) {
                struct ins mv;
                ins_init(&mv);
                ins_size(&mv, half);
                mv.modrm = true;
                mv.is_mem = true;
                mv.m = mem_plus(&in.m, r * (int)half);
                mv.reg = r ? 2 : 0;
                ins_op(&mv, 1, 0x8b, 0, 0);
                insn_begin(g, DT_SETUP);
                emit_ins(g, &mv);
                insn_end(g, 0, 0);
            }
        }
        break;
    }
    if (in.is_mem && t->a != 1 && rnd(g, 2))
        ins_pfx(&in, 0xf0);
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, 0);
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
    unsigned cc = rnd(g, 16), size = t->a ? 2u << rnd(g, 3) : 1;
    bool legacy = pick_legacy(g, size);
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    in.modrm = true;
    if (t->a) {
        in.reg = pick_reg(g, size, false, 0);
        pick_rm(g, &in, size, false, 0, true);
        ins_op(&in, 2, 0x0f, (uint8_t)(0x40 + cc), 0);
    } else {
        in.digit = true;
        in.reg = 0;
        pick_rm(g, &in, 1, legacy, 0, true);
        ins_op(&in, 2, 0x0f, (uint8_t)(0x90 + cc), 0);
    }
    need_flags(g, cc_reads(cc));
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* a: 0x98 cbw/cwde/cdqe, 0x99 cwd/cdq/cqo */
static void t_conv(struct gen *g, const struct tmpl *t)
{
    uint8_t b[2];
    unsigned n = 0, s = rnd(g, 3);

    if (s == 0)
        b[n++] = 0x66;
    else if (s == 2)
        b[n++] = 0x48;
    b[n++] = t->a;
    emit_raw(g, g->cur, b, n, 0, 0);
}

/* a: the opcode (lahf, sahf, clc, stc, cmc, cld, std) */
static void t_flag(struct gen *g, const struct tmpl *t)
{
    uint8_t op = t->a, rd = 0, wr = 0;

    switch (op) {
    case 0x9f: rd = F_SF | F_ZF | F_AF | F_PF | F_CF; break;
    case 0x9e: wr = F_SF | F_ZF | F_AF | F_PF | F_CF; break;
    case 0xf8: case 0xf9: wr = F_CF; break;
    case 0xf5: rd = wr = F_CF; break;
    }
    need_flags(g, rd);
    emit_raw(g, g->cur, &op, 1, wr, 0);
}

static bool stack_room(struct gen *g, int delta)
{
    return g->depth + delta < 0x700 && g->depth + delta > -0x700;
}

/* a: 0 push r, 1 pop r, 2 push imm, 3 push rm, 4 pop rm, 5 pushf+pop, 6 push+popf, 7 call+pop */
static void t_stack(struct gen *g, const struct tmpl *t)
{
    unsigned size = rnd(g, 6) == 0 ? 2 : 8;
    struct ins in;
    uint8_t wr = 0;
    int delta = (int)size;

    ins_init(&in);
    in.p66 = size == 2;
    switch (t->a) {
    case 0:
    case 1:
        ins_op(&in, 1, t->a ? 0x58 : 0x50, 0, 0);
        in.opreg = t->a ? pick_reg(g, 8, false, 0) : (int)rnd(g, 16);
        delta = t->a ? -delta : delta;
        break;
    case 2:
        if (rnd(g, 2)) {
            ins_op(&in, 1, 0x6a, 0, 0);
            in.immsz = 1;
        } else {
            ins_op(&in, 1, 0x68, 0, 0);
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
        ins_op(&in, 1, t->a == 3 ? 0xff : 0x8f, 0, 0);
        delta = t->a == 4 ? -delta : delta;
        break;
    case 5: {
        uint8_t b[2] = { 0x9c, (uint8_t)(0x58 + rnd(g, 4)) };
        need_flags(g, F_ALL);
        emit_raw(g, g->cur, b, 1, 0, 0);
        emit_raw(g, g->cur, b + 1, 1, 0, 0);
        return;
    }
    case 6: {
        /* arithmetic flags and DF; IF stays set, nothing privileged */
        uint32_t v = 0x202 | dt_flags_expand((uint8_t)rnd(g, 64)) | (rnd(g, 2) ? 0x400u : 0);
        uint8_t b[5] = { 0x68, (uint8_t)v, (uint8_t)(v >> 8), 0, 0 }, popf = 0x9d;
        emit_raw(g, g->cur, b, 5, 0, 0);
        emit_raw(g, g->cur, &popf, 1, F_ALL, 0);
        return;
    }
    case 7: {
        uint8_t b[6] = { 0xe8, 0, 0, 0, 0, 0 };
        int r = pick_reg(g, 8, false, 0);
        emit_raw(g, g->cur, b, 5, 0, 0);
        b[0] = 0x41;
        b[1] = (uint8_t)(0x58 + (r & 7));
        emit_raw(g, g->cur, r >= 8 ? b : b + 1, r >= 8 ? 2 : 1, 0, 0);
        return;
    }
    }
    if (!stack_room(g, delta))
        return;
    g->depth += delta;
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, wr, 0);
}

/* a: the byte opcode (movs a4, stos aa, lods ac, cmps a6, scas ae); prefixes random */
static void t_string(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15), count = rnd(g, 4) == 0 ? rnd(g, 3) : rnd(g, 40);
    unsigned rep = rnd(g, 4), span;
    bool down = rnd(g, 3) == 0, cmp = t->a == 0xa6 || t->a == 0xae;
    bool a32 = rnd(g, 5) == 0;
    uint8_t b[8], df = down ? 0xfd : 0xfc;
    unsigned n = 0;

    if (rep == 0)
        count = 1;
    span = count * size + 16;
    emit_raw(g, DT_SETUP, &df, 1, 0, 0);
    for (int r = 6; r <= 7; r++) {
        uint64_t off = rnd(g, DT_SCRATCH_SIZE - span);
        set_reg(g, r, a32 ? 4 : 8, DT_SCRATCH + (down ? off + span - 8 : off));
    }
    if (rep)
        set_reg(g, 1, a32 ? 4 : 8, count);
    if (rep)
        b[n++] = rep == 1 ? 0xf2 : 0xf3;
    if (a32)
        b[n++] = 0x67;
    if (size == 2)
        b[n++] = 0x66;
    if (size == 8)
        b[n++] = 0x48;
    b[n++] = (uint8_t)(t->a + (size != 1));
    emit_raw(g, g->cur, b, n, cmp ? (rep && count == 0 ? 0 : F_ALL) : 0, 0);
}

static void t_mov(struct gen *g, const struct tmpl *t)
{
    unsigned size = pick_size(g, 15);
    bool legacy = pick_legacy(g, size);
    struct ins in;

    ins_init(&in);
    ins_size(&in, size);
    switch (t->a) {
    case 0:
    case 1:
        in.modrm = true;
        in.reg = pick_reg(g, size, legacy, 0);
        pick_rm(g, &in, size, legacy, 0, true);
        ins_op(&in, 1, (uint8_t)((t->a ? 0x8a : 0x88) + (size != 1)), 0, 0);
        break;
    case 2:
        in.opreg = pick_reg(g, size, legacy, 0);
        ins_op(&in, 1, size == 1 ? 0xb0 : 0xb8, 0, 0);
        in.immsz = (int)size;
        in.imm = imm_for(g, size);
        break;
    case 3:
        in.modrm = true;
        in.digit = true;
        pick_rm(g, &in, size, legacy, 0, true);
        ins_op(&in, 1, (uint8_t)(0xc6 + (size != 1)), 0, 0);
        in.immsz = size == 8 ? 4 : (int)size;
        in.imm = imm_for(g, (unsigned)in.immsz);
        break;
    }
    insn_begin(g, g->cur);
    emit_ins(g, &in);
    insn_end(g, 0, 0);
}

/* One instruction that a branch may skip: add/sub/mov on registers. Returns its flag effect. */
static void skippable(struct gen *g, uint8_t *wr)
{
    uint8_t b[3] = { 0x48, 0x01, 0xc0 };
    unsigned r1 = rnd(g, 8), r2 = rnd(g, 8);

    if (r1 == 4)
        r1 = 0;
    b[1] = rnd(g, 2) ? 0x01 : rnd(g, 2) ? 0x29 : 0x89;
    b[2] = (uint8_t)(0xc0 | (r2 << 3) | r1);
    *wr = b[1] == 0x89 ? 0 : F_ALL;
    emit_raw(g, DT_SETUP, b, 3, *wr, 0);
}

/* a: 0 jcc rel8, 1 jmp rel8, 2 jmp rel32, 3 loop/loope/loopne/jrcxz */
static void t_branch(struct gen *g, const struct tmpl *t)
{
    uint8_t b[6], rd = 0, wr, before = g->undef;
    unsigned n = 0, at;

    switch (t->a) {
    case 0: {
        unsigned cc = rnd(g, 16);
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
        unsigned k = rnd(g, 4);
        if (rnd(g, 4) == 0)
            b[n++] = 0x67;
        b[n++] = (uint8_t)(0xe0 + k);
        b[n++] = 0;
        rd = k <= 1 ? F_ZF : 0;
        if (rnd(g, 2))
            set_reg(g, 1, 8, rnd(g, 3));
        break;
    }
    }
    need_flags(g, rd);
    before = g->undef;
    insn_begin(g, g->cur);
    put(g, b, n);
    insn_end(g, 0, 0);
    at = g->seq->len;
    skippable(g, &wr);
    g->seq->code[at - (t->a == 2 ? 4 : 1)] = (uint8_t)(g->seq->len - at);
    /* either path: a flag is undefined after the join if it is on one path */
    g->undef |= before;
}

static const struct tmpl templates[] = {
#define ALU4(op, nm) \
    { nm " rm,r", DT_ALU, t_alu, op, 0, 0 }, { nm " r,rm", DT_ALU, t_alu, op, 1, 0 }, \
    { nm " rm,imm", DT_ALU, t_alu, op, 2, 0 }, { nm " acc,imm", DT_ALU, t_alu, op, 3, 0 }
    ALU4(0, "add"), ALU4(1, "or"), ALU4(2, "adc"), ALU4(3, "sbb"),
    ALU4(4, "and"), ALU4(5, "sub"), ALU4(6, "xor"), ALU4(7, "cmp"),
    { "test rm,r", DT_ALU, t_alu, 8, 0, 0 },
    { "test rm,imm", DT_ALU, t_alu, 8, 2, 0 },
    { "test acc,imm", DT_ALU, t_alu, 8, 3, 0 },
    { "add/adc chain", DT_ALU, t_adcchain, 0, 0, 0 },
    { "sub/sbb chain", DT_ALU, t_adcchain, 1, 0, 0 },
    { "inc", DT_INCDEC, t_unary, 0, 0, 0 },
    { "dec", DT_INCDEC, t_unary, 1, 0, 0 },
    { "not", DT_INCDEC, t_unary, 2, 0, 0 },
    { "neg", DT_INCDEC, t_unary, 3, 0, 0 },
#define SH3(op, nm) \
    { nm " rm,1", DT_SHIFT, t_shift, op, 0, 0 }, { nm " rm,imm8", DT_SHIFT, t_shift, op, 1, 0 }, \
    { nm " rm,cl", DT_SHIFT, t_shift, op, 2, 0 }
    SH3(0, "rol"), SH3(1, "ror"), SH3(2, "rcl"), SH3(3, "rcr"),
    SH3(4, "shl"), SH3(5, "shr"), SH3(6, "sal"), SH3(7, "sar"),
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
    { "movsxd r64,rm32", DT_EXT, t_ext, 0x63, 0, 0 },
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

void dt_gen_sequence(uint64_t seed, unsigned len, struct dt_seq *seq, struct dt_state *init)
{
    struct gen g;

    memset(&g, 0, sizeof(g));
    dt_rng_seed(&g.rng, seed);
    g.seq = seq;
    seq->len = 0;
    seq->nr_insns = 0;

    memset(init, 0, sizeof(*init));
    for (unsigned i = 0; i < 16; i++)
        init->regs[i] = rand_val(&g);
    init->regs[4] = DT_STACK_TOP;
    init->rflags = 0x202 | dt_flags_expand((uint8_t)rnd(&g, 64));
    init->fault = -1;
    for (unsigned i = 0; i < DT_SCRATCH_SIZE; i += 8) {
        uint64_t v = rnd(&g, 8) == 0 ? 0 : rand_val(&g);
        memcpy(init->scratch + i, &v, 8);
    }
    for (unsigned i = 0; i < DT_STACK_SIZE; i += 8) {
        uint64_t v = rnd64(&g);
        memcpy(init->stack + i, &v, 8);
    }

    for (unsigned i = 0; i < len; i++) {
        if (seq->len + 160 > DT_MAX_CODE || seq->nr_insns + 24 > DT_MAX_INSNS)
            break;
        const struct tmpl *t;
        unsigned k;
        do {
            k = rnd(&g, NR_TEMPLATES);
            t = &templates[k];
        } while (!have_feat[t->feat] ||
                 (only_class != DT_NR_CLASSES && (int)t->cls != only_class));
        g.cur = k;
        t->emit(&g, t);
    }
    seq->start[seq->nr_insns] = (uint16_t)seq->len;
    seq->undef_before[seq->nr_insns] = g.undef;
    seq->undef_end = g.undef;
}
