/* difftest-gen.h: the differential tester's generator machinery shared by the
 * encoder (difftest-gen.c) and the instruction templates (difftest-templates.c). */
#ifndef TERN_TESTS_DIFFTEST_GEN_H
#define TERN_TESTS_DIFFTEST_GEN_H

#include "difftest.h"

/* Arithmetic flags in compact form (6 bits), for the undefined-flags tracking. */
#define F_CF 0x01u
#define F_PF 0x02u
#define F_AF 0x04u
#define F_ZF 0x08u
#define F_SF 0x10u
#define F_OF 0x20u
#define F_ALL 0x3fu

#define NOREG (-1)
#define RIPREL 100
/* 8-bit registers 16..19 are ah, ch, dh, bh (encoded 4..7 without REX). */
#define REG_AH 16

struct gen {
    struct dt_rng rng;
    struct dt_seq *seq;
    uint8_t undef; /* compact flags undefined now */
    int depth;     /* bytes pushed on the private stack */
    unsigned cur;  /* template being emitted */
    bool m32;      /* compatibility mode: 8 registers, no REX, no RIP-relative */
    bool full;     /* no room for another template */
};

struct mem {
    int base, index, scale; /* base: a register, NOREG or RIPREL */
    int32_t disp;
    int dispsz; /* 0, 1, 4 */
    bool a32;
    uint64_t target; /* RIPREL: the address it names */
};

struct ins {
    uint8_t pfx[3];
    int npfx;
    bool p66, w;
    uint8_t op[3];
    int nop;
    int opreg; /* >= 0: register added to the last opcode byte */
    bool modrm;
    bool digit; /* modrm.reg is an opcode extension */
    int reg;
    bool is_mem;
    int rm;
    struct mem m;
    bool byteregs; /* reg / rm / opreg name 8-bit registers */
    bool reg_wide; /* ... except modrm.reg (movzx, movsx) */
    int immsz;
    uint64_t imm;
};

uint32_t gen_rnd(struct gen *g, uint32_t n);
uint64_t gen_rnd64(struct gen *g);
uint64_t gen_size_mask(unsigned size);
uint64_t gen_rand_val(struct gen *g);
unsigned gen_wide(struct gen *g);
unsigned gen_nregs(struct gen *g);
void gen_put(struct gen *g, const uint8_t *b, unsigned n);
void gen_insn_begin(struct gen *g, unsigned tmpl);
void gen_mark_nocut(struct gen *g, unsigned from);
void gen_insn_end(struct gen *g, uint8_t wr, uint8_t ud);
void gen_emit_raw(struct gen *g, unsigned tmpl, const uint8_t *b, unsigned n, uint8_t wr,
                  uint8_t ud);
void gen_ins_init(struct ins *in);
void gen_ins_size(struct ins *in, unsigned size);
void gen_ins_op(struct ins *in, unsigned n, uint8_t a, uint8_t b, uint8_t c);
void gen_ins_pfx(struct ins *in, uint8_t p);
void gen_emit_ins(struct gen *g, const struct ins *in);
int gen_pick_reg(struct gen *g, unsigned size, bool legacy8, uint32_t avoid);
uint32_t gen_reg_bit(int r);
void gen_set_reg(struct gen *g, int r, unsigned size, uint64_t v);
uint64_t gen_pick_target(struct gen *g, unsigned size, unsigned align);
void gen_pick_mem_at(struct gen *g, uint64_t target, uint32_t avoid, bool legacy, struct mem *m);
void gen_pick_mem(struct gen *g, unsigned size, uint32_t avoid, bool legacy, struct mem *m);
struct mem gen_mem_plus(const struct mem *m, int k);
void gen_set_mem(struct gen *g, const struct mem *m, unsigned size, uint64_t v);
void gen_need_flags(struct gen *g, uint8_t rd);

#endif
