/* difftest-gen.c: the differential tester's generator machinery: random
 * numbers, the x86 encoder, operand set-up and the undefined-flags tracking. */
#include "difftest-gen.h"

#include <stdlib.h>
#include <string.h>

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
    "alu",  "incdec", "shift", "muldiv", "bit",    "ext", "lea",    "atomic",
    "cond", "conv",   "flag",  "stack",  "string", "mov", "branch", "misc",
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

uint32_t gen_rnd(struct gen *g, uint32_t n)
{
    return dt_rng_below(&g->rng, n);
}

uint64_t gen_rnd64(struct gen *g)
{
    return dt_rng_next(&g->rng);
}

uint64_t gen_size_mask(unsigned size)
{
    return size == 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

/* Interesting values: edges of every width more often than uniform noise. */
uint64_t gen_rand_val(struct gen *g)
{
    static const uint64_t edges[] = {
        0,
        1,
        2,
        0x7f,
        0x80,
        0xff,
        0x100,
        0x7fff,
        0x8000,
        0xffff,
        0x10000,
        0x7fffffff,
        0x80000000,
        0xffffffff,
        0x100000000ull,
        0x7fffffffffffffffull,
        0x8000000000000000ull,
        ~0ull,
        ~0ull - 1,
        0xffffffff80000000ull,
    };
    switch (gen_rnd(g, 8)) {
    case 0:
        return edges[gen_rnd(g, sizeof(edges) / sizeof(edges[0]))];
    case 1:
        return gen_rnd(g, 256);
    case 2:
        return (uint64_t) - (int64_t)gen_rnd(g, 256);
    case 3:
        return edges[gen_rnd(g, sizeof(edges) / sizeof(edges[0]))] + gen_rnd(g, 5) - 2;
    case 4:
        return gen_rnd64(g) & 0xffffffff;
    default:
        return gen_rnd64(g);
    }
}

/* 16/32/64-bit operand sizes (16/32 in compatibility mode) */
unsigned gen_wide(struct gen *g)
{
    return 2u << gen_rnd(g, g->m32 ? 2 : 3);
}

unsigned gen_nregs(struct gen *g)
{
    return g->m32 ? 8 : 16;
}

void gen_put(struct gen *g, const uint8_t *b, unsigned n)
{
    struct dt_seq *s = g->seq;

    if (s->len + n > DT_MAX_CODE)
        abort();
    memcpy(s->code + s->len, b, n);
    s->len += n;
}

void gen_insn_begin(struct gen *g, unsigned tmpl)
{
    struct dt_seq *s = g->seq;

    if (s->nr_insns >= DT_MAX_INSNS)
        abort();
    s->start[s->nr_insns] = (uint16_t)s->len;
    s->tmpl[s->nr_insns] = (uint16_t)tmpl;
    s->undef_before[s->nr_insns] = g->undef;
    s->nocut[s->nr_insns] = 0;
}

/* Instructions [from, now) act on something after them: a run must not stop there. */
void gen_mark_nocut(struct gen *g, unsigned from)
{
    for (unsigned i = from; i < g->seq->nr_insns; i++)
        g->seq->nocut[i] = 1;
}

/* (wr): flags now defined; (ud): flags now undefined; the rest unchanged. */
void gen_insn_end(struct gen *g, uint8_t wr, uint8_t ud)
{
    g->undef = (uint8_t)((g->undef & ~wr) | ud);
    g->seq->nr_insns++;
}

void gen_emit_raw(struct gen *g, unsigned tmpl, const uint8_t *b, unsigned n, uint8_t wr,
                  uint8_t ud)
{
    gen_insn_begin(g, tmpl);
    gen_put(g, b, n);
    gen_insn_end(g, wr, ud);
}

void gen_ins_init(struct ins *in)
{
    memset(in, 0, sizeof(*in));
    in->opreg = -1;
    in->m.base = NOREG;
    in->m.index = NOREG;
}

void gen_ins_size(struct ins *in, unsigned size)
{
    in->p66 = size == 2;
    in->w = size == 8;
    in->byteregs = size == 1;
}

void gen_ins_op(struct ins *in, unsigned n, uint8_t a, uint8_t b, uint8_t c)
{
    in->nop = (int)n;
    in->op[0] = a;
    in->op[1] = b;
    in->op[2] = c;
}

void gen_ins_pfx(struct ins *in, uint8_t p)
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

/* Prefixes that change nothing, now and then, for the decoder: a 66 that
 * REX.W overrides, an es/cs/ss/ds override (ignored in 64-bit mode), a REX
 * that a legacy prefix after it voids, an empty REX on 16/32/64-bit operands. */
static unsigned mutate_prefixes(struct gen *g, const struct ins *in, uint8_t *b, unsigned n,
                                bool has_rex, unsigned *disp_at)
{
    static const uint8_t segs[] = { 0x2e, 0x26, 0x3e, 0x36 };
    uint8_t pre[3];
    unsigned k = 0, npfx = (unsigned)in->npfx + in->p66 + (in->is_mem && in->m.a32);

    unsigned kind = gen_rnd(g, 4);

    if (gen_rnd(g, 8) || (g->m32 && kind != 1))
        return n;
    switch (kind) {
    case 0:
        if (in->w && !(in->nop == 2 && in->op[1] == 0xc7))
            pre[k++] = 0x66;
        break;
    case 1:
        /* (compatibility mode honours them: there cs is not writable, so not cs) */
        if (in->modrm && in->is_mem)
            pre[k++] = g->m32 ? segs[gen_rnd(g, 2) * 2 + 1] : segs[gen_rnd(g, 4)];
        break;
    case 2:
        if (npfx && n + 1 <= 15) {
            pre[k++] = (uint8_t)(0x40 + gen_rnd(g, 16));
            memmove(b + 1, b, n); /* before every legacy prefix */
            b[0] = pre[0];
            if (*disp_at)
                (*disp_at)++;
            return n + 1;
        }
        break;
    case 3:
        if (!has_rex && !in->byteregs && (in->modrm || in->opreg >= 0) && n + 1 <= 15) {
            unsigned at = npfx; /* right before the opcode */
            memmove(b + at + 1, b + at, n - at);
            b[at] = 0x40;
            if (*disp_at)
                (*disp_at)++;
            return n + 1;
        }
        break;
    }
    if (!k || n + k > 15)
        return n;
    memmove(b + k, b, n);
    memcpy(b, pre, k);
    if (*disp_at)
        *disp_at += k;
    return n + k;
}

void gen_emit_ins(struct gen *g, const struct ins *in)
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
        if (high8 || g->m32)
            abort(); /* generator bug: ah..bh with a REX prefix */
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
            if (m->base == RIPREL && g->m32) {
                int32_t a = (int32_t)m->target; /* mod 00 r/m 101: absolute here */
                b[n++] = (uint8_t)(0x05 | (regc << 3));
                memcpy(b + n, &a, 4);
                n += 4;
            } else if (m->base == RIPREL) {
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
    n = mutate_prefixes(g, in, b, n, need_rex || high8, &disp_at);
    if (disp_at) {
        int64_t d = (int64_t)in->m.target - (int64_t)(DT_CODE + g->seq->len + n);
        int32_t d32 = (int32_t)d;
        memcpy(b + disp_at, &d32, 4);
    }
    gen_put(g, b, n);
}

/* ---- operand set-up (plain movs: no flag effects) ---- */

/* Registers: (avoid) is a mask of full registers; rsp is never chosen. */
int gen_pick_reg(struct gen *g, unsigned size, bool legacy8, uint32_t avoid)
{
    for (;;) {
        int r;
        if (size == 1 && (legacy8 || g->m32)) {
            r = (int)gen_rnd(g, 8);
            if (r >= 4)
                r = REG_AH + r - 4;
        } else {
            r = (int)gen_rnd(g, gen_nregs(g));
        }
        int full = r >= REG_AH ? r - REG_AH : r;
        if (full == 4 || (avoid & (1u << full)))
            continue;
        return r;
    }
}

uint32_t gen_reg_bit(int r)
{
    return 1u << (r >= REG_AH ? r - REG_AH : r);
}

/* mov (r), (v) as a set-up instruction of (size) bytes (upper bits: as mov does). */
void gen_set_reg(struct gen *g, int r, unsigned size, uint64_t v)
{
    struct ins in;

    if (g->m32 && size == 8) {
        size = 4;
        v &= 0xffffffff;
    }
    gen_ins_init(&in);
    gen_ins_size(&in, size);
    in.opreg = r;
    if (size == 8 && v <= 0xffffffffull) {
        in.w = false;
        size = 4;
    }
    if (size == 8 && (int64_t)v == (int32_t)v) {
        gen_ins_op(&in, 1, 0xc7, 0, 0);
        in.opreg = -1;
        in.modrm = true;
        in.digit = true;
        in.reg = 0;
        in.rm = r;
        in.immsz = 4;
    } else {
        gen_ins_op(&in, 1, size == 1 ? 0xb0 : 0xb8, 0, 0);
        in.immsz = (int)size;
    }
    in.imm = v;
    gen_insn_begin(g, DT_SETUP);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

uint64_t gen_pick_target(struct gen *g, unsigned size, unsigned align)
{
    uint64_t off;

    if (!align && gen_rnd(g, 160) == 0)
        off = DT_SCRATCH_SIZE - gen_rnd(g, size); /* into the hole: #PF (ends the sequence) */
    else if (gen_rnd(g, 4) == 0)
        off = 0x1000 - size + gen_rnd(g, 2 * size); /* around the 4 KiB boundary */
    else
        off = gen_rnd(g, DT_SCRATCH_SIZE - 2 * size);
    if (align)
        off &= ~(uint64_t)(align - 1);
    return DT_SCRATCH + off;
}

/* A memory operand naming (target), base and index set by set-up movs. */
void gen_pick_mem_at(struct gen *g, uint64_t target, uint32_t avoid, bool legacy, struct mem *m)
{
    unsigned form = gen_rnd(g, 9);
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
    if (legacy || g->m32)
        avoid |= 0xff00u;
    m->a32 = !g->m32 && gen_rnd(g, 6) == 0;
    if (form != 6)
        m->base = gen_pick_reg(g, 8, false, avoid);
    if (form >= 4) {
        m->index = gen_pick_reg(g, 8, false, avoid | (m->base >= 0 ? 1u << m->base : 0));
        m->scale = (int)gen_rnd(g, 4);
        index = (int64_t)gen_rnd(g, 129) - 64;
    }
    switch (form) {
    case 0:
        m->dispsz = 0;
        break;
    case 1:
    case 4:
        m->dispsz = 1;
        m->disp = (int8_t)gen_rnd(g, 256);
        break;
    case 2:
    case 5:
        m->dispsz = 4;
        m->disp = (int32_t)(gen_rnd64(g) >> (33 + gen_rnd(g, 31)));
        break;
    case 3:
        m->dispsz = 0;
        break;
    case 6:
        m->dispsz = 4;
        m->disp = (int32_t)((int64_t)target - index * (1 << m->scale));
        break;
    }
    if (gen_rnd(g, 2) && m->dispsz == 4 && form != 6)
        m->disp = -m->disp;
    uint64_t rest = target - (uint64_t)(int64_t)m->disp - (uint64_t)(index * (1 << m->scale));
    if (m->base >= 0) {
        if (m->a32)
            gen_set_reg(g, m->base, 4, rest & 0xffffffff);
        else
            gen_set_reg(g, m->base, 8, rest);
    }
    if (m->index >= 0) {
        if (m->a32)
            gen_set_reg(g, m->index, 4, (uint64_t)index & 0xffffffff);
        else
            gen_set_reg(g, m->index, 8, (uint64_t)index);
    }
}

void gen_pick_mem(struct gen *g, unsigned size, uint32_t avoid, bool legacy, struct mem *m)
{
    gen_pick_mem_at(g, gen_pick_target(g, size, 0), avoid, legacy, m);
}

/* The same operand (k) bytes further on. */
struct mem gen_mem_plus(const struct mem *m, int k)
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
void gen_set_mem(struct gen *g, const struct mem *m, unsigned size, uint64_t v)
{
    struct ins in;

    gen_ins_init(&in);
    gen_ins_size(&in, size);
    gen_ins_op(&in, 1, size == 1 ? 0xc6 : 0xc7, 0, 0);
    in.modrm = true;
    in.digit = true;
    in.is_mem = true;
    in.m = *m;
    in.immsz = size == 8 ? 4 : (int)size;
    in.imm = v;
    gen_insn_begin(g, DT_SETUP);
    gen_emit_ins(g, &in);
    gen_insn_end(g, 0, 0);
}

/* cmp r64, r64: defines every arithmetic flag before an instruction reads them. */
void gen_need_flags(struct gen *g, uint8_t rd)
{
    static const uint8_t cmp[] = { 0x48, 0x39, 0xc0 };
    uint8_t b[3];

    if (!(g->undef & rd))
        return;
    memcpy(b, cmp, 3);
    b[2] = (uint8_t)(0xc0 | gen_rnd(g, 64));
    if (g->m32)
        gen_emit_raw(g, DT_SETUP, b + 1, 2, F_ALL, 0); /* no REX.W */
    else
        gen_emit_raw(g, DT_SETUP, b, 3, F_ALL, 0);
}
