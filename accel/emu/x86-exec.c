/* x86-exec.c: execution of the general-purpose integer instructions (one decoded instruction at a time). */
#include "x86-internal.h"

static inline uint64_t sext(uint64_t v, unsigned size)
{
    unsigned sh = 64 - size * 8;
    return size == 8 ? v : (uint64_t)((int64_t)(v << sh) >> sh);
}

static inline uint64_t msb(uint64_t v, unsigned size)
{
    return (v >> (size * 8 - 1)) & 1;
}

uint64_t x86_reg_get(struct x86_cpu *cpu, struct x86_insn *i, unsigned r, unsigned size)
{
    if (size == 1 && !i->rex && r >= 4 && r < 8)
        return (cpu->regs[r - 4] >> 8) & 0xff;
    return cpu->regs[r] & x86_size_mask(size);
}

void x86_reg_set(struct x86_cpu *cpu, struct x86_insn *i, unsigned r, unsigned size, uint64_t v)
{
    switch (size) {
    case 1:
        if (!i->rex && r >= 4 && r < 8)
            cpu->regs[r - 4] = (cpu->regs[r - 4] & ~0xff00ull) | ((v & 0xff) << 8);
        else
            cpu->regs[r] = (cpu->regs[r] & ~0xffull) | (v & 0xff);
        break;
    case 2:
        cpu->regs[r] = (cpu->regs[r] & ~0xffffull) | (v & 0xffff);
        break;
    case 4:
        cpu->regs[r] = v & 0xffffffffu;
        break;
    default:
        cpu->regs[r] = v;
        break;
    }
}

uint64_t x86_rm_read(struct x86_cpu *cpu, struct x86_insn *i, unsigned size)
{
    if (i->mem)
        return x86_mem_read(cpu, i->seg, i->ea, size);
    return x86_reg_get(cpu, i, i->rm, size);
}

void x86_rm_write(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, uint64_t v)
{
    if (i->mem)
        x86_mem_write(cpu, i->seg, i->ea, v, size);
    else
        x86_reg_set(cpu, i, i->rm, size, v);
}

/* ---- read-modify-write, atomic on RAM when locked ---- */

struct rmw {
    uint8_t *host; /* aligned RAM location for a CAS, or NULL */
    uint64_t gpa;  /* its guest-physical address: dirty once the CAS stored */
};

static uint64_t rmw_load(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, struct rmw *m,
                         bool atomic)
{
    m->host = NULL;
    if (!i->mem)
        return x86_reg_get(cpu, i, i->rm, size);
    if (atomic) {
        uint64_t la = x86_linear(cpu, i->seg, i->ea, i->addrsize), gpa;
        if (!x86_mode64(cpu))
            x86_seg_check(cpu, i->seg, i->ea, size, true);
        if ((la & (size - 1)) == 0) {
            uint8_t *p = x86_page_ptr(cpu, la, ACC_WRITE, x86_cpl(cpu) == 3, &gpa);
            if (p) {
                m->host = p + (la & 0xfff);
                m->gpa = gpa;
                switch (size) {
                case 1:
                    return __atomic_load_n(m->host, __ATOMIC_SEQ_CST);
                case 2:
                    return __atomic_load_n((uint16_t *)m->host, __ATOMIC_SEQ_CST);
                case 4:
                    return __atomic_load_n((uint32_t *)m->host, __ATOMIC_SEQ_CST);
                default:
                    return __atomic_load_n((uint64_t *)m->host, __ATOMIC_SEQ_CST);
                }
            }
        }
    }
    return x86_mem_read_rmw(cpu, i->seg, i->ea, size);
}

/* r/m operand that is about to be written back */
static uint64_t rm_read_rmw(struct x86_cpu *cpu, struct x86_insn *i, unsigned size)
{
    if (i->mem)
        return x86_mem_read_rmw(cpu, i->seg, i->ea, size);
    return x86_reg_get(cpu, i, i->rm, size);
}

static bool cas(uint8_t *p, unsigned size, uint64_t *old, uint64_t nv)
{
    bool ok;

    switch (size) {
    case 1: {
        uint8_t o = (uint8_t)*old;
        ok = __atomic_compare_exchange_n(p, &o, (uint8_t)nv, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST);
        *old = o;
        break;
    }
    case 2: {
        uint16_t o = (uint16_t)*old;
        ok = __atomic_compare_exchange_n((uint16_t *)p, &o, (uint16_t)nv, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST);
        *old = o;
        break;
    }
    case 4: {
        uint32_t o = (uint32_t)*old;
        ok = __atomic_compare_exchange_n((uint32_t *)p, &o, (uint32_t)nv, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST);
        *old = o;
        break;
    }
    default:
        ok = __atomic_compare_exchange_n((uint64_t *)p, old, nv, false, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST);
        break;
    }
    return ok;
}

static bool rmw_store(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, struct rmw *m,
                      uint64_t old, uint64_t nv)
{
    if (!i->mem) {
        x86_reg_set(cpu, i, i->rm, size, nv);
        return true;
    }
    if (m->host) {
        if (!cas(m->host, size, &old, nv))
            return false;
        /* Marked after the store, as every write is: a sync between the two
         * would otherwise take the bit and send the page without this write. */
        x86_mark_dirty(cpu, m->gpa);
        return true;
    }
    x86_mem_write(cpu, i->seg, i->ea, nv, size);
    return true;
}

/* ---- flags helpers ---- */

static uint64_t szp(uint64_t res, unsigned size)
{
    uint64_t f = 0;

    res &= x86_size_mask(size);
    if (!__builtin_parity((unsigned)(res & 0xff)))
        f |= X86_PF;
    if (!res)
        f |= X86_ZF;
    if (msb(res, size))
        f |= X86_SF;
    return f;
}

static void set_flags(struct x86_cpu *cpu, uint64_t f, uint64_t mask)
{
    x86_flags_set(cpu, f, mask);
}

/* ---- ALU ---- */

static uint64_t alu(struct x86_cpu *cpu, unsigned kind, uint64_t a, uint64_t b, unsigned size,
                    uint64_t cin)
{
    uint64_t r, mask = x86_size_mask(size);

    a &= mask;
    b &= mask;
    switch (kind & 7) {
    case 0:
        r = a + b;
        x86_cc_set(cpu, CC_ADD, size, a, b, r, 0);
        break;
    case 1:
        r = a | b;
        x86_cc_set(cpu, CC_LOGIC, size, a, b, r, 0);
        break;
    case 2:
        r = a + b + cin;
        x86_cc_set(cpu, CC_ADD, size, a, b, r, cin);
        break;
    case 3:
        r = a - b - cin;
        x86_cc_set(cpu, CC_SUB, size, a, b, r, cin);
        break;
    case 4:
        r = a & b;
        x86_cc_set(cpu, CC_LOGIC, size, a, b, r, 0);
        break;
    case 5:
    case 7:
        r = a - b;
        x86_cc_set(cpu, CC_SUB, size, a, b, r, 0);
        break;
    default:
        r = a ^ b;
        x86_cc_set(cpu, CC_LOGIC, size, a, b, r, 0);
        break;
    }
    return r & mask;
}

/* ALU op (kind) on the r/m operand with (src). */
static void alu_rm(struct x86_cpu *cpu, struct x86_insn *i, unsigned kind, unsigned size,
                   uint64_t src)
{
    uint64_t cin = (kind == 2 || kind == 3) ? x86_cf(cpu) : 0, old, r;
    struct rmw m;

    if (kind == 7) {
        alu(cpu, 7, x86_rm_read(cpu, i, size), src, size, 0);
        return;
    }
    do {
        old = rmw_load(cpu, i, size, &m, i->lock);
        r = alu(cpu, kind, old, src, size, cin);
    } while (!rmw_store(cpu, i, size, &m, old, r));
}

static void inc_dec(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, bool dec)
{
    uint64_t cf = x86_cf(cpu) ? X86_CF : 0, old, r;
    struct rmw m;

    do {
        old = rmw_load(cpu, i, size, &m, i->lock) & x86_size_mask(size);
        r = (dec ? old - 1 : old + 1) & x86_size_mask(size);
        x86_cc_set(cpu, dec ? CC_DEC : CC_INC, size, old, 1, r, cf);
    } while (!rmw_store(cpu, i, size, &m, old, r));
}

/* ---- shifts and rotates (eager flags) ---- */

static uint64_t shift_op(struct x86_cpu *cpu, unsigned kind, uint64_t a, unsigned count,
                         unsigned size)
{
    unsigned bits = size * 8;
    uint64_t mask = x86_size_mask(size), r, cf, of, f;

    count &= size == 8 ? 0x3f : 0x1f;
    a &= mask;
    if (!count)
        return a;
    f = x86_flags(cpu);
    switch (kind & 7) {
    case 0: { /* rol */
        unsigned c = count % bits;
        r = c ? ((a << c) | (a >> (bits - c))) & mask : a;
        cf = r & 1;
        of = msb(r, size) ^ cf;
        set_flags(cpu, (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_CF | X86_OF);
        return r;
    }
    case 1: { /* ror */
        unsigned c = count % bits;
        r = c ? ((a >> c) | (a << (bits - c))) & mask : a;
        cf = msb(r, size);
        of = msb(r, size) ^ ((r >> (bits - 2)) & 1);
        set_flags(cpu, (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_CF | X86_OF);
        return r;
    }
    case 2: { /* rcl */
        unsigned c = count % (bits + 1);
        cf = (f & X86_CF) != 0;
        r = a;
        for (unsigned k = 0; k < c; k++) {
            uint64_t out = msb(r, size);
            r = ((r << 1) | cf) & mask;
            cf = out;
        }
        of = msb(r, size) ^ cf;
        set_flags(cpu, (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_CF | X86_OF);
        return r;
    }
    case 3: { /* rcr */
        unsigned c = count % (bits + 1);
        cf = (f & X86_CF) != 0;
        r = a;
        of = msb(a, size) ^ cf;
        for (unsigned k = 0; k < c; k++) {
            uint64_t out = r & 1;
            r = (r >> 1) | (cf << (bits - 1));
            cf = out;
        }
        set_flags(cpu, (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_CF | X86_OF);
        return r;
    }
    case 4:
    case 6: /* shl */
        r = (a << count) & mask;
        cf = count <= bits ? (a >> (bits - count)) & 1 : 0;
        if (count == 64)
            cf = a & 1;
        of = msb(r, size) ^ cf;
        break;
    case 5: /* shr */
        r = a >> count;
        cf = (a >> (count - 1)) & 1;
        of = msb(a, size);
        break;
    default: { /* sar */
        int64_t s = (int64_t)sext(a, size);
        r = (uint64_t)(s >> count) & mask;
        cf = (uint64_t)(s >> (count - 1)) & 1;
        of = 0;
        break;
    }
    }
    set_flags(cpu, szp(r, size) | (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_ARITH_FLAGS);
    return r;
}

static uint64_t shld_op(struct x86_cpu *cpu, uint64_t a, uint64_t b, unsigned count, unsigned size,
                        bool right)
{
    unsigned bits = size * 8;
    uint64_t mask = x86_size_mask(size), r, cf;

    count &= size == 8 ? 0x3f : 0x1f;
    a &= mask;
    b &= mask;
    if (!count)
        return a;
    if (size == 2 && count >= 16) {
        /* 16 shifts all of dest out; 17..31 are undefined: shift through dest:src:dest */
        uint64_t wide = right ? (a | (b << 16) | (a << 32)) : ((a << 32) | (b << 16) | a);
        unsigned c = count;
        r = right ? (wide >> c) & mask : (wide >> (32 - c)) & mask;
        cf = right ? (wide >> (c - 1)) & 1 : (wide >> (48 - c)) & 1;
    } else if (right) {
        r = ((a >> count) | (count < bits ? b << (bits - count) : 0)) & mask;
        cf = (a >> (count - 1)) & 1;
    } else {
        r = ((a << count) | (count < bits ? b >> (bits - count) : 0)) & mask;
        cf = (a >> (bits - count)) & 1;
    }
    uint64_t of = msb(r, size) ^ msb(a, size);
    set_flags(cpu, szp(r, size) | (cf ? X86_CF : 0) | (of ? X86_OF : 0), X86_ARITH_FLAGS);
    return r;
}

/* ---- stack ---- */

static inline unsigned stack_size(struct x86_cpu *cpu)
{
    return x86_mode64(cpu) ? 8 : (cpu->seg[X86_SS].db ? 4 : 2);
}

/* operand size of push/pop and near branches */
static inline unsigned stack_opsize(struct x86_cpu *cpu, struct x86_insn *i)
{
    if (x86_mode64(cpu))
        return i->opsize_prefix ? 2 : 8;
    return i->opsize;
}

static void set_rsp(struct x86_cpu *cpu, uint64_t sp)
{
    unsigned ss = stack_size(cpu);

    if (ss == 2)
        cpu->regs[X86_RSP] = (cpu->regs[X86_RSP] & ~0xffffull) | (sp & 0xffff);
    else
        cpu->regs[X86_RSP] = sp & x86_size_mask(ss);
}

static void push(struct x86_cpu *cpu, uint64_t v, unsigned size)
{
    uint64_t sp = (cpu->regs[X86_RSP] - size) & x86_size_mask(stack_size(cpu));

    x86_mem_write(cpu, X86_SS, sp, v, size);
    set_rsp(cpu, sp);
}

static uint64_t pop(struct x86_cpu *cpu, unsigned size)
{
    uint64_t sp = cpu->regs[X86_RSP] & x86_size_mask(stack_size(cpu));
    uint64_t v = x86_mem_read(cpu, X86_SS, sp, size);

    set_rsp(cpu, sp + size);
    return v;
}

static void jump(struct x86_cpu *cpu, struct x86_insn *i, uint64_t target)
{
    if (x86_mode64(cpu)) {
        if (!x86_canonical(target))
            x86_raise_gp(cpu, 0);
        cpu->rip = target;
    } else {
        cpu->rip = target & x86_size_mask(i->opsize);
    }
}

/* ---- multiply / divide ---- */

static void mul_flags(struct x86_cpu *cpu, uint64_t lo, unsigned size, bool overflow)
{
    set_flags(cpu, szp(lo, size) | (overflow ? X86_CF | X86_OF : 0), X86_ARITH_FLAGS);
}

static void group3_muldiv(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, unsigned kind)
{
    uint64_t src = x86_rm_read(cpu, i, size), mask = x86_size_mask(size);
    uint64_t *rax = &cpu->regs[X86_RAX], *rdx = &cpu->regs[X86_RDX];
    unsigned bits = size * 8;

    switch (kind) {
    case 4: /* mul */
        if (size == 8) {
            unsigned __int128 p = (unsigned __int128)*rax * src;
            *rax = (uint64_t)p;
            *rdx = (uint64_t)(p >> 64);
            mul_flags(cpu, *rax, 8, *rdx != 0);
        } else {
            uint64_t p = (*rax & mask) * src, hi = p >> bits;
            if (size == 1) {
                x86_reg_set(cpu, i, X86_RAX, 2, p);
            } else {
                x86_reg_set(cpu, i, X86_RAX, size, p);
                x86_reg_set(cpu, i, X86_RDX, size, hi);
            }
            mul_flags(cpu, p, size, hi != 0);
        }
        return;
    case 5: /* imul */
        if (size == 8) {
            __int128 p = (__int128)(int64_t)*rax * (int64_t)src;
            *rax = (uint64_t)p;
            *rdx = (uint64_t)((unsigned __int128)p >> 64);
            mul_flags(cpu, *rax, 8, p != (__int128)(int64_t)*rax);
        } else {
            int64_t p = (int64_t)sext(*rax & mask, size) * (int64_t)sext(src, size);
            if (size == 1) {
                x86_reg_set(cpu, i, X86_RAX, 2, (uint64_t)p);
            } else {
                x86_reg_set(cpu, i, X86_RAX, size, (uint64_t)p);
                x86_reg_set(cpu, i, X86_RDX, size, (uint64_t)p >> bits);
            }
            mul_flags(cpu, (uint64_t)p, size, p != (int64_t)sext((uint64_t)p & mask, size));
        }
        return;
    case 6: /* div */
        if (!src)
            x86_raise(cpu, X86_EXC_DE, 0, false);
        if (size == 8) {
            unsigned __int128 n = ((unsigned __int128)*rdx << 64) | *rax, q = n / src;
            if (q >> 64)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            *rax = (uint64_t)q;
            *rdx = (uint64_t)(n % src);
        } else {
            uint64_t n = size == 1 ? (*rax & 0xffff) : (((*rdx & mask) << bits) | (*rax & mask));
            uint64_t q = n / src, r = n % src;
            if (q > mask)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            if (size == 1) {
                x86_reg_set(cpu, i, X86_RAX, 2, (r << 8) | q);
            } else {
                x86_reg_set(cpu, i, X86_RAX, size, q);
                x86_reg_set(cpu, i, X86_RDX, size, r);
            }
        }
        return;
    default: /* idiv */
        if (!src)
            x86_raise(cpu, X86_EXC_DE, 0, false);
        if (size == 8) {
            __int128 n = (__int128)(((unsigned __int128)*rdx << 64) | *rax);
            int64_t d = (int64_t)src;
            if (d == -1 && n == (__int128)INT64_MIN)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            if (d == -1) {
                /* avoid the __int128 INT128_MIN / -1 trap */
                if (n == -n && n != 0)
                    x86_raise(cpu, X86_EXC_DE, 0, false);
            }
            __int128 q = n / d, r = n % d;
            if (q > INT64_MAX || q < INT64_MIN)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            *rax = (uint64_t)(int64_t)q;
            *rdx = (uint64_t)(int64_t)r;
        } else {
            int64_t n = size == 1
                            ? (int64_t)sext(*rax & 0xffff, 2)
                            : (int64_t)sext(((*rdx & mask) << bits) | (*rax & mask), size * 2);
            int64_t d = (int64_t)sext(src, size), q = n / d, r = n % d;
            int64_t lim = (int64_t)1 << (bits - 1);
            if (q >= lim || q < -lim)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            if (size == 1) {
                x86_reg_set(cpu, i, X86_RAX, 2, (((uint64_t)r & 0xff) << 8) | ((uint64_t)q & 0xff));
            } else {
                x86_reg_set(cpu, i, X86_RAX, size, (uint64_t)q);
                x86_reg_set(cpu, i, X86_RDX, size, (uint64_t)r);
            }
        }
        return;
    }
}

static uint64_t imul2(struct x86_cpu *cpu, uint64_t a, uint64_t b, unsigned size)
{
    uint64_t mask = x86_size_mask(size), r;
    bool ovf;

    if (size == 8) {
        __int128 p = (__int128)(int64_t)a * (int64_t)b;
        r = (uint64_t)p;
        ovf = p != (__int128)(int64_t)r;
    } else {
        int64_t p = (int64_t)sext(a & mask, size) * (int64_t)sext(b & mask, size);
        r = (uint64_t)p & mask;
        ovf = p != (int64_t)sext(r, size);
    }
    mul_flags(cpu, r, size, ovf);
    return r;
}

static void group3(struct x86_cpu *cpu, struct x86_insn *i, unsigned size)
{
    unsigned kind = i->reg & 7;
    uint64_t old, r;
    struct rmw m;

    switch (kind) {
    case 0:
    case 1:
        alu(cpu, 4, x86_rm_read(cpu, i, size), i->imm, size, 0);
        return;
    case 2:
        do {
            old = rmw_load(cpu, i, size, &m, i->lock);
            r = ~old & x86_size_mask(size);
        } while (!rmw_store(cpu, i, size, &m, old, r));
        return;
    case 3:
        do {
            old = rmw_load(cpu, i, size, &m, i->lock);
            r = alu(cpu, 5, 0, old, size, 0);
        } while (!rmw_store(cpu, i, size, &m, old, r));
        return;
    default:
        group3_muldiv(cpu, i, size, kind);
        return;
    }
}

/* ---- bit operations ---- */

static void bit_op(struct x86_cpu *cpu, struct x86_insn *i, unsigned kind, uint64_t off, bool imm)
{
    unsigned size = i->opsize, bits = size * 8;
    uint64_t old, r, bit;
    struct rmw m;

    if (imm) {
        off &= bits - 1;
    } else if (i->mem) {
        int64_t so = (int64_t)sext(off, size);
        int64_t word = so >= 0 ? so / (int64_t)bits : -((-so + (int64_t)bits - 1) / (int64_t)bits);
        i->ea = (i->ea + (uint64_t)(word * (int64_t)size)) & x86_size_mask(i->addrsize);
        off = (uint64_t)so & (bits - 1);
    } else {
        off &= bits - 1;
    }
    bit = (uint64_t)1 << off;
    if (kind == 0) {
        old = x86_rm_read(cpu, i, size);
        set_flags(cpu, (old & bit) ? X86_CF : 0, X86_CF);
        return;
    }
    do {
        old = rmw_load(cpu, i, size, &m, i->lock);
        r = kind == 1 ? old | bit : kind == 2 ? old & ~bit : old ^ bit;
    } while (!rmw_store(cpu, i, size, &m, old, r));
    set_flags(cpu, (old & bit) ? X86_CF : 0, X86_CF);
}

/* ---- cmpxchg8b/16b ---- */

static int cx16_lock;

static void cmpxchg_wide(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned half = i->opsize == 8 ? 8 : 4;
    uint64_t mask = x86_size_mask(half);
    uint64_t la, gpa, lo, hi;
    if (!i->mem)
        x86_raise_ud(cpu);
    la = x86_linear(cpu, i->seg, i->ea, i->addrsize);
    if (!x86_mode64(cpu))
        x86_seg_check(cpu, i->seg, i->ea, 2 * half, true);
    if (half == 8 && (la & 15))
        x86_raise_gp(cpu, 0);
    uint64_t exp_lo = cpu->regs[X86_RAX] & mask, exp_hi = cpu->regs[X86_RDX] & mask;
    uint64_t new_lo = cpu->regs[X86_RBX] & mask, new_hi = cpu->regs[X86_RCX] & mask;
    uint8_t *p = NULL;
    if ((la & (2 * half - 1)) == 0)
        p = x86_page_ptr(cpu, la, ACC_WRITE, x86_cpl(cpu) == 3, &gpa);
    bool eq;
    if (p && half == 4) {
        uint64_t old = exp_lo | (exp_hi << 32);
        p += la & 0xfff;
        eq = cas(p, 8, &old, new_lo | (new_hi << 32));
        x86_mark_dirty(cpu, gpa); /* after the store, as every write */
        lo = old & mask;
        hi = old >> 32;
    } else {
        if (p) {
            p += la & 0xfff;
            while (__atomic_exchange_n(&cx16_lock, 1, __ATOMIC_ACQUIRE))
                ;
            memcpy(&lo, p, 8);
            memcpy(&hi, p + 8, 8);
            eq = lo == exp_lo && hi == exp_hi;
            if (eq) {
                memcpy(p, &new_lo, 8);
                memcpy(p + 8, &new_hi, 8);
            }
            __atomic_store_n(&cx16_lock, 0, __ATOMIC_RELEASE);
            x86_mark_dirty(cpu, gpa);
        } else {
            lo = x86_mem_read_rmw(cpu, i->seg, i->ea, half);
            hi = x86_mem_read_rmw(cpu, i->seg, (i->ea + half) & x86_size_mask(i->addrsize), half);
            eq = lo == exp_lo && hi == exp_hi;
            if (eq) {
                x86_mem_write(cpu, i->seg, i->ea, new_lo, half);
                x86_mem_write(cpu, i->seg, (i->ea + half) & x86_size_mask(i->addrsize), new_hi,
                              half);
            }
        }
    }
    if (!eq) {
        x86_reg_set(cpu, i, X86_RAX, half, lo);
        x86_reg_set(cpu, i, X86_RDX, half, hi);
    }
    set_flags(cpu, eq ? X86_ZF : 0, X86_ZF);
}

/* ---- system helpers ---- */

static void need_cpl0(struct x86_cpu *cpu)
{
    if (x86_cpl(cpu) != 0)
        x86_raise_gp(cpu, 0);
}

static void need_iopl(struct x86_cpu *cpu)
{
    if (!x86_real_mode(cpu) && x86_cpl(cpu) > ((cpu->rflags >> 12) & 3))
        x86_raise_gp(cpu, 0);
}

static uint64_t port_in(struct x86_cpu *cpu, uint16_t port, unsigned size)
{
    uint8_t buf[4] = { 0 };
    uint32_t v;

    x86_io_check(cpu, port, size);
    cpu->ops->pio(cpu->opaque, port, buf, size, false);
    memcpy(&v, buf, 4);
    return v;
}

static void port_out(struct x86_cpu *cpu, uint16_t port, uint64_t v, unsigned size)
{
    uint8_t buf[4];
    uint32_t w = (uint32_t)v;

    x86_io_check(cpu, port, size);
    memcpy(buf, &w, 4);
    cpu->ops->pio(cpu->opaque, port, buf, size, true);
}

static void popf(struct x86_cpu *cpu, unsigned size)
{
    uint64_t v = pop(cpu, size);
    uint64_t mask = X86_ARITH_FLAGS | X86_TF | X86_DF | X86_NT | X86_AC | X86_ID;
    unsigned cpl = x86_cpl(cpu), iopl = (cpu->rflags >> 12) & 3;

    if (cpu->rflags & X86_VM) {
        if (iopl != 3)
            x86_raise_gp(cpu, 0);
        mask |= X86_IF;
    } else {
        if (cpl <= iopl)
            mask |= X86_IF;
        if (cpl == 0)
            mask |= X86_IOPL;
    }
    if (size == 2)
        mask &= 0xffff;
    x86_flags_set(cpu, v, mask);
    cpu->rflags &= ~(uint64_t)X86_RF;
}

static bool lock_ok(struct x86_insn *i)
{
    unsigned op = i->op, r = i->reg & 7;

    if (!i->mem)
        return false;
    if (op < 0x40)
        return (op & 7) < 2 && (op & 0x38) != 0x38;
    switch (op) {
    case 0x80 ... 0x83:
        return r != 7;
    case 0x86:
    case 0x87:
    case 0x1ab:
    case 0x1b3:
    case 0x1bb:
    case 0x1b0:
    case 0x1b1:
    case 0x1c0:
    case 0x1c1:
        return true;
    case 0xf6:
    case 0xf7:
        return r == 2 || r == 3;
    case 0xfe:
    case 0xff:
        return r < 2;
    case 0x1ba:
        return r >= 5;
    case 0x1c7:
        return r == 1;
    default:
        return false;
    }
}

static _Noreturn void undefined(struct x86_cpu *cpu, struct x86_insn *i)
{
    x86_log_unknown(cpu, i);
    x86_raise_ud(cpu);
}

static bool is_fpu_sse(unsigned op)
{
    if (op >= 0xd8 && op <= 0xdf)
        return true;
    if (op >= 0x200)
        return true;
    if (op < 0x100)
        return false;
    op &= 0xff;
    return (op >= 0x10 && op <= 0x17) || (op >= 0x28 && op <= 0x2f) || (op >= 0x50 && op <= 0x7f) ||
           (op >= 0xc2 && op <= 0xc6) || op >= 0xd0 || op == 0x0e || op == 0x0f;
}

/* far pointer operand m16:16/32/64 */
static void read_far_ptr(struct x86_cpu *cpu, struct x86_insn *i, uint16_t *sel, uint64_t *off)
{
    unsigned n = i->opsize;

    if (!i->mem)
        undefined(cpu, i);
    *off = x86_mem_read(cpu, i->seg, i->ea, n);
    *sel = (uint16_t)x86_mem_read(cpu, i->seg, (i->ea + n) & x86_size_mask(i->addrsize), 2);
}

static void exec_0f(struct x86_cpu *cpu, struct x86_insn *i);

void x86_exec_generic(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op, size = (op & 1) ? i->opsize : 1;
    bool m64 = x86_mode64(cpu);
    uint64_t v, t;

    if (i->lock && !lock_ok(i))
        undefined(cpu, i);
    if (i->mem) {
        uint64_t ea = i->disp;
        if (i->base_reg >= 0)
            ea += cpu->regs[i->base_reg];
        if (i->index_reg >= 0)
            ea += cpu->regs[i->index_reg] << i->scale;
        i->ea = ea & x86_size_mask(i->addrsize);
    }
    cpu->rip = i->next_rip;
    if (op >= 0x100) {
        exec_0f(cpu, i);
        return;
    }
    if (op < 0x40 && (op & 7) < 6) {
        unsigned kind = op >> 3;
        switch (op & 7) {
        case 0:
        case 1:
            alu_rm(cpu, i, kind, size, x86_reg_get(cpu, i, i->reg, size));
            return;
        case 2:
        case 3:
            v = alu(cpu, kind, x86_reg_get(cpu, i, i->reg, size), x86_rm_read(cpu, i, size), size,
                    (kind == 2 || kind == 3) ? x86_cf(cpu) : 0);
            if (kind != 7)
                x86_reg_set(cpu, i, i->reg, size, v);
            return;
        default:
            size = (op & 1) ? i->opsize : 1;
            v = alu(cpu, kind, cpu->regs[X86_RAX], i->imm, size,
                    (kind == 2 || kind == 3) ? x86_cf(cpu) : 0);
            if (kind != 7)
                x86_reg_set(cpu, i, X86_RAX, size, v);
            return;
        }
    }
    switch (op) {
    case 0x06:
    case 0x0e:
    case 0x16:
    case 0x1e: /* push es/cs/ss/ds */
        if (m64)
            undefined(cpu, i);
        push(cpu, cpu->seg[op >> 3].selector, i->opsize);
        return;
    case 0x07:
    case 0x17:
    case 0x1f: /* pop es/ss/ds */
        if (m64)
            undefined(cpu, i);
        v = x86_mem_read(cpu, X86_SS, cpu->regs[X86_RSP] & x86_size_mask(stack_size(cpu)),
                         i->opsize);
        x86_seg_load(cpu, op >> 3, (uint16_t)v);
        set_rsp(cpu, cpu->regs[X86_RSP] + i->opsize);
        if (op == 0x17)
            cpu->interrupt_shadow = true;
        return;
    case 0x27:
    case 0x2f: { /* daa / das */
        uint64_t f = x86_flags(cpu), al = cpu->regs[X86_RAX] & 0xff, old_al = al;
        bool cf = f & X86_CF, af = f & X86_AF, ncf = false;
        if (m64)
            undefined(cpu, i);
        if ((al & 0xf) > 9 || af) {
            al = op == 0x27 ? al + 6 : al - 6;
            ncf = cf || (op == 0x27 ? old_al > 0xf9 : old_al < 6);
            af = true;
        } else {
            af = false;
        }
        if (old_al > 0x99 || cf) {
            al = op == 0x27 ? al + 0x60 : al - 0x60;
            ncf = true;
        }
        al &= 0xff;
        x86_reg_set(cpu, i, X86_RAX, 1, al);
        set_flags(cpu, szp(al, 1) | (ncf ? X86_CF : 0) | (af ? X86_AF : 0),
                  X86_ARITH_FLAGS & ~X86_OF);
        return;
    }
    case 0x37:
    case 0x3f: { /* aaa / aas */
        uint64_t f = x86_flags(cpu), ax = cpu->regs[X86_RAX] & 0xffff;
        bool adj = (ax & 0xf) > 9 || (f & X86_AF);
        if (m64)
            undefined(cpu, i);
        if (adj)
            ax = op == 0x37 ? ax + 0x106 : ax - 0x106;
        ax = (ax & 0xff0f) & 0xffff;
        x86_reg_set(cpu, i, X86_RAX, 2, ax);
        set_flags(cpu, adj ? X86_CF | X86_AF : 0, X86_CF | X86_AF);
        return;
    }
    case 0x40 ... 0x4f:
        i->mem = false;
        i->rm = op & 7;
        inc_dec(cpu, i, i->opsize, op & 8);
        return;
    case 0x50 ... 0x56:
    case 0x57: {
        unsigned r = (op & 7) | ((i->rex & 1) << 3), s = stack_opsize(cpu, i);
        push(cpu, cpu->regs[r] & x86_size_mask(s), s);
        return;
    }
    case 0x58 ... 0x5e:
    case 0x5f: {
        unsigned r = (op & 7) | ((i->rex & 1) << 3), s = stack_opsize(cpu, i);
        v = pop(cpu, s);
        x86_reg_set(cpu, i, r, s, v);
        return;
    }
    case 0x60: { /* pusha */
        uint64_t sp0 = cpu->regs[X86_RSP];
        if (m64)
            undefined(cpu, i);
        for (unsigned r = 0; r < 8; r++)
            push(cpu, r == X86_RSP ? sp0 : cpu->regs[r], i->opsize);
        return;
    }
    case 0x61: /* popa */
        if (m64)
            undefined(cpu, i);
        for (int r = 7; r >= 0; r--) {
            v = pop(cpu, i->opsize);
            if (r != X86_RSP)
                x86_reg_set(cpu, i, (unsigned)r, i->opsize, v);
        }
        return;
    case 0x63: /* movsxd */
        if (!m64)
            undefined(cpu, i); /* arpl */
        v = x86_rm_read(cpu, i, 4);
        x86_reg_set(cpu, i, i->reg, i->opsize, i->opsize == 8 ? sext(v, 4) : v);
        return;
    case 0x68:
    case 0x6a:
        push(cpu, i->imm & x86_size_mask(stack_opsize(cpu, i)), stack_opsize(cpu, i));
        return;
    case 0x69:
    case 0x6b:
        v = imul2(cpu, x86_rm_read(cpu, i, i->opsize), i->imm, i->opsize);
        x86_reg_set(cpu, i, i->reg, i->opsize, v);
        return;
    case 0x6c ... 0x6f:
    case 0xa4 ... 0xa7:
    case 0xaa ... 0xaf:
        x86_exec_string(cpu, i);
        return;
    case 0x70 ... 0x7f:
        if (x86_cond(cpu, op & 0xf))
            jump(cpu, i, i->next_rip + i->imm);
        return;
    case 0x80:
    case 0x81:
    case 0x83:
        alu_rm(cpu, i, i->reg & 7, size, i->imm);
        return;
    case 0x82:
        if (m64)
            undefined(cpu, i);
        alu_rm(cpu, i, i->reg & 7, 1, i->imm);
        return;
    case 0x84:
    case 0x85:
        alu(cpu, 4, x86_rm_read(cpu, i, size), x86_reg_get(cpu, i, i->reg, size), size, 0);
        return;
    case 0x86:
    case 0x87: { /* xchg: always locked */
        struct rmw m;
        uint64_t r = x86_reg_get(cpu, i, i->reg, size);
        if (!i->mem) {
            v = x86_reg_get(cpu, i, i->rm, size);
            x86_reg_set(cpu, i, i->rm, size, r);
            x86_reg_set(cpu, i, i->reg, size, v);
            return;
        }
        do {
            v = rmw_load(cpu, i, size, &m, true);
        } while (!rmw_store(cpu, i, size, &m, v, r));
        x86_reg_set(cpu, i, i->reg, size, v);
        return;
    }
    case 0x88:
    case 0x89:
        x86_rm_write(cpu, i, size, x86_reg_get(cpu, i, i->reg, size));
        return;
    case 0x8a:
    case 0x8b:
        x86_reg_set(cpu, i, i->reg, size, x86_rm_read(cpu, i, size));
        return;
    case 0x8c: /* mov r/m, sreg */
        if ((i->reg & 7) > 5)
            undefined(cpu, i);
        x86_rm_write(cpu, i, i->mem ? 2 : i->opsize, cpu->seg[i->reg & 7].selector);
        return;
    case 0x8d: /* lea */
        if (!i->mem)
            undefined(cpu, i);
        x86_reg_set(cpu, i, i->reg, i->opsize, i->ea);
        return;
    case 0x8e: { /* mov sreg, r/m */
        unsigned s = i->reg & 7;
        if (s == X86_CS || s > 5)
            undefined(cpu, i);
        x86_seg_load(cpu, s, (uint16_t)x86_rm_read(cpu, i, 2));
        if (s == X86_SS)
            cpu->interrupt_shadow = true;
        return;
    }
    case 0x8f: { /* pop r/m */
        unsigned s = stack_opsize(cpu, i);
        uint64_t sp = cpu->regs[X86_RSP];
        if ((i->reg & 7) != 0)
            undefined(cpu, i);
        v = pop(cpu, s);
        /* a fault on the store must leave RSP unchanged */
        {
            uint64_t nsp = cpu->regs[X86_RSP];
            /* an RSP-based address is computed after the pop */
            if (i->mem && (i->base_reg == X86_RSP || i->index_reg == X86_RSP)) {
                uint64_t ea = i->disp;
                if (i->base_reg >= 0)
                    ea += cpu->regs[i->base_reg];
                if (i->index_reg >= 0)
                    ea += cpu->regs[i->index_reg] << i->scale;
                i->ea = ea & x86_size_mask(i->addrsize);
            }
            cpu->regs[X86_RSP] = sp;
            x86_rm_write(cpu, i, s, v);
            if (!(!i->mem && i->rm == X86_RSP))
                cpu->regs[X86_RSP] = nsp;
        }
        return;
    }
    case 0x90:
        if (i->rex & 1)
            goto xchg_ax;
        return; /* nop, pause */
    case 0x91 ... 0x97:
    xchg_ax : {
        unsigned r = (op & 7) | ((i->rex & 1) << 3);
        v = cpu->regs[r];
        x86_reg_set(cpu, i, r, i->opsize, cpu->regs[X86_RAX]);
        x86_reg_set(cpu, i, X86_RAX, i->opsize, v);
        return;
    }
    case 0x98:
        v = sext(cpu->regs[X86_RAX] & x86_size_mask(i->opsize / 2), i->opsize / 2);
        x86_reg_set(cpu, i, X86_RAX, i->opsize, v);
        return;
    case 0x99:
        v = msb(cpu->regs[X86_RAX], i->opsize) ? ~(uint64_t)0 : 0;
        x86_reg_set(cpu, i, X86_RDX, i->opsize, v);
        return;
    case 0x9a: /* call far ptr */
        if (m64)
            undefined(cpu, i);
        x86_far_jump(cpu, (uint16_t)i->imm2, i->imm, i->opsize, true, i->next_rip);
        return;
    case 0x9b: /* fwait */
        return;
    case 0x9c: { /* pushf */
        unsigned s = stack_opsize(cpu, i);
        if ((cpu->rflags & X86_VM) && ((cpu->rflags >> 12) & 3) != 3)
            x86_raise_gp(cpu, 0);
        push(cpu, x86_flags(cpu) & ~(uint64_t)(X86_VM | X86_RF) & x86_size_mask(s), s);
        return;
    }
    case 0x9d:
        popf(cpu, stack_opsize(cpu, i));
        return;
    case 0x9e: /* sahf */
        set_flags(cpu, (cpu->regs[X86_RAX] >> 8) & 0xff,
                  X86_SF | X86_ZF | X86_AF | X86_PF | X86_CF);
        return;
    case 0x9f: /* lahf */
        cpu->regs[X86_RAX] = (cpu->regs[X86_RAX] & ~0xff00ull) |
                             (((x86_flags(cpu) & 0xd5) | 2) << 8);
        return;
    case 0xa0:
    case 0xa1:
        x86_reg_set(cpu, i, X86_RAX, size, x86_mem_read(cpu, i->seg, i->ea, size));
        return;
    case 0xa2:
    case 0xa3:
        x86_mem_write(cpu, i->seg, i->ea, cpu->regs[X86_RAX], size);
        return;
    case 0xa8:
    case 0xa9:
        alu(cpu, 4, cpu->regs[X86_RAX], i->imm, size, 0);
        return;
    case 0xb0 ... 0xb7:
        x86_reg_set(cpu, i, (op & 7) | ((i->rex & 1) << 3), 1, i->imm);
        return;
    case 0xb8 ... 0xbf:
        x86_reg_set(cpu, i, (op & 7) | ((i->rex & 1) << 3), i->opsize, i->imm);
        return;
    case 0xc0:
    case 0xc1:
    case 0xd0 ... 0xd2:
    case 0xd3: {
        unsigned cnt = op >= 0xd2   ? (unsigned)cpu->regs[X86_RCX] & 0xff
                       : op >= 0xd0 ? 1
                                    : (unsigned)i->imm;
        v = rm_read_rmw(cpu, i, size);
        t = shift_op(cpu, i->reg & 7, v, cnt, size);
        /* a 32-bit register destination is written (zero-extended) even for count 0 */
        if ((cnt & (size == 8 ? 0x3f : 0x1f)) || (size == 4 && !i->mem))
            x86_rm_write(cpu, i, size, t);
        return;
    }
    case 0xc2:
    case 0xc3: { /* ret near */
        unsigned s = stack_opsize(cpu, i);
        v = pop(cpu, s);
        if (op == 0xc2)
            set_rsp(cpu, cpu->regs[X86_RSP] + (i->imm & 0xffff));
        jump(cpu, i, v);
        if (!m64)
            cpu->rip = v & x86_size_mask(s);
        return;
    }
    case 0xc4:
    case 0xc5: /* les/lds, or VEX */
        if (m64 || !i->mem)
            x86_exec_fpu(cpu, i);
        else {
            uint16_t sel;
            uint64_t off;
            read_far_ptr(cpu, i, &sel, &off);
            x86_seg_load(cpu, op == 0xc4 ? X86_ES : X86_DS, sel);
            x86_reg_set(cpu, i, i->reg, i->opsize, off);
        }
        return;
    case 0xc6:
    case 0xc7:
        if ((i->reg & 7) != 0)
            undefined(cpu, i);
        x86_rm_write(cpu, i, size, i->imm);
        return;
    case 0xc8: { /* enter */
        unsigned s = stack_opsize(cpu, i), level = (unsigned)i->imm2 & 31;
        uint64_t ss_mask = x86_size_mask(stack_size(cpu));
        uint64_t sp = cpu->regs[X86_RSP], bp = cpu->regs[X86_RBP], frame;
        sp = (sp - s) & ss_mask;
        x86_mem_write(cpu, X86_SS, sp, bp, s);
        frame = sp;
        for (unsigned k = 1; k < level; k++) {
            bp = (bp - s) & ss_mask;
            t = x86_mem_read(cpu, X86_SS, bp, s);
            sp = (sp - s) & ss_mask;
            x86_mem_write(cpu, X86_SS, sp, t, s);
        }
        if (level) {
            sp = (sp - s) & ss_mask;
            x86_mem_write(cpu, X86_SS, sp, frame, s);
        }
        sp = (sp - (i->imm & 0xffff)) & ss_mask;
        x86_reg_set(cpu, i, X86_RBP, s, frame);
        set_rsp(cpu, sp);
        return;
    }
    case 0xc9: { /* leave */
        unsigned s = stack_opsize(cpu, i), ss = stack_size(cpu);
        uint64_t sp = cpu->regs[X86_RBP] & x86_size_mask(ss);
        v = x86_mem_read(cpu, X86_SS, sp, s);
        set_rsp(cpu, sp + s);
        x86_reg_set(cpu, i, X86_RBP, s, v);
        return;
    }
    case 0xca:
    case 0xcb:
        x86_far_ret(cpu, i->opsize, op == 0xca ? (uint16_t)i->imm : 0);
        return;
    case 0xcc:
        x86_deliver(cpu, X86_EXC_BP, 0, false, true, i->next_rip);
        return;
    case 0xcd:
        if ((cpu->rflags & X86_VM) && ((cpu->rflags >> 12) & 3) != 3)
            x86_raise_gp(cpu, 0);
        x86_deliver(cpu, (int)(i->imm & 0xff), 0, false, true, i->next_rip);
        return;
    case 0xce:
        if (m64)
            undefined(cpu, i);
        if (x86_flags(cpu) & X86_OF)
            x86_deliver(cpu, X86_EXC_OF, 0, false, true, i->next_rip);
        return;
    case 0xcf:
        x86_iret(cpu, i->opsize);
        return;
    case 0xd4:
    case 0xd5: { /* aam / aad */
        uint64_t al = cpu->regs[X86_RAX] & 0xff, ah = (cpu->regs[X86_RAX] >> 8) & 0xff;
        unsigned base = (unsigned)i->imm & 0xff;
        if (m64)
            undefined(cpu, i);
        if (op == 0xd4) {
            if (!base)
                x86_raise(cpu, X86_EXC_DE, 0, false);
            ah = al / base;
            al = al % base;
        } else {
            al = (al + ah * base) & 0xff;
            ah = 0;
        }
        x86_reg_set(cpu, i, X86_RAX, 2, (ah << 8) | al);
        set_flags(cpu, szp(al, 1), X86_ARITH_FLAGS);
        return;
    }
    case 0xd7: /* xlat */
        v = x86_mem_read(cpu, i->seg,
                         (cpu->regs[X86_RBX] + (cpu->regs[X86_RAX] & 0xff)) &
                             x86_size_mask(i->addrsize),
                         1);
        x86_reg_set(cpu, i, X86_RAX, 1, v);
        return;
    case 0xe0 ... 0xe2:
    case 0xe3: { /* loopne/loope/loop/jrcxz */
        uint64_t am = x86_size_mask(i->addrsize), c = cpu->regs[X86_RCX] & am;
        bool take;
        if (op == 0xe3) {
            take = c == 0;
        } else {
            c = (c - 1) & am;
            if (i->addrsize == 4)
                cpu->regs[X86_RCX] = c;
            else
                cpu->regs[X86_RCX] = (cpu->regs[X86_RCX] & ~am) | c;
            take = c != 0;
            if (op == 0xe0)
                take = take && !x86_cond(cpu, 4);
            else if (op == 0xe1)
                take = take && x86_cond(cpu, 4);
        }
        if (take)
            jump(cpu, i, i->next_rip + i->imm);
        return;
    }
    case 0xe4:
    case 0xe5:
        size = (op & 1) ? (i->opsize == 2 ? 2 : 4) : 1;
        x86_reg_set(cpu, i, X86_RAX, size, port_in(cpu, (uint16_t)i->imm, size));
        return;
    case 0xe6:
    case 0xe7:
        size = (op & 1) ? (i->opsize == 2 ? 2 : 4) : 1;
        port_out(cpu, (uint16_t)i->imm, cpu->regs[X86_RAX], size);
        return;
    case 0xec:
    case 0xed:
        size = (op & 1) ? (i->opsize == 2 ? 2 : 4) : 1;
        x86_reg_set(cpu, i, X86_RAX, size, port_in(cpu, (uint16_t)cpu->regs[X86_RDX], size));
        return;
    case 0xee:
    case 0xef:
        size = (op & 1) ? (i->opsize == 2 ? 2 : 4) : 1;
        port_out(cpu, (uint16_t)cpu->regs[X86_RDX], cpu->regs[X86_RAX], size);
        return;
    case 0xe8: { /* call rel */
        unsigned s = stack_opsize(cpu, i);
        uint64_t target = i->next_rip + i->imm;
        if (m64 && !x86_canonical(target))
            x86_raise_gp(cpu, 0);
        push(cpu, i->next_rip, s);
        jump(cpu, i, target);
        return;
    }
    case 0xe9:
    case 0xeb:
        jump(cpu, i, i->next_rip + i->imm);
        return;
    case 0xea:
        if (m64)
            undefined(cpu, i);
        x86_far_jump(cpu, (uint16_t)i->imm2, i->imm, i->opsize, false, 0);
        return;
    case 0xf1:
        x86_deliver(cpu, X86_EXC_DB, 0, false, false, i->next_rip);
        return;
    case 0xf4: /* hlt */
        need_cpl0(cpu);
        cpu->halted = true;
        return;
    case 0xf5:
        set_flags(cpu, x86_flags(cpu) ^ X86_CF, X86_CF);
        return;
    case 0xf6:
    case 0xf7:
        group3(cpu, i, size);
        return;
    case 0xf8:
    case 0xf9:
        set_flags(cpu, op == 0xf9 ? X86_CF : 0, X86_CF);
        return;
    case 0xfa: /* cli */
        need_iopl(cpu);
        cpu->rflags &= ~(uint64_t)X86_IF;
        return;
    case 0xfb: /* sti */
        need_iopl(cpu);
        if (!(cpu->rflags & X86_IF)) {
            cpu->rflags |= X86_IF;
            cpu->interrupt_shadow = true;
        }
        return;
    case 0xfc:
    case 0xfd:
        if (op == 0xfd)
            cpu->rflags |= X86_DF;
        else
            cpu->rflags &= ~(uint64_t)X86_DF;
        return;
    case 0xfe:
        if ((i->reg & 7) > 1)
            undefined(cpu, i);
        inc_dec(cpu, i, 1, i->reg & 1);
        return;
    case 0xff:
        switch (i->reg & 7) {
        case 0:
        case 1:
            inc_dec(cpu, i, i->opsize, i->reg & 1);
            return;
        case 2: { /* call r/m */
            unsigned s = m64 ? 8 : i->opsize;
            v = x86_rm_read(cpu, i, s);
            if (m64 && !x86_canonical(v))
                x86_raise_gp(cpu, 0);
            push(cpu, i->next_rip, s);
            cpu->rip = v & x86_size_mask(s);
            return;
        }
        case 3:
        case 5: { /* call/jmp far m16:xx */
            uint16_t sel;
            uint64_t off;
            read_far_ptr(cpu, i, &sel, &off);
            x86_far_jump(cpu, sel, off, i->opsize, (i->reg & 7) == 3, i->next_rip);
            return;
        }
        case 4: {
            unsigned s = m64 ? 8 : i->opsize;
            jump(cpu, i, x86_rm_read(cpu, i, s));
            return;
        }
        case 6: {
            unsigned s = stack_opsize(cpu, i);
            push(cpu, x86_rm_read(cpu, i, s), s);
            return;
        }
        default:
            undefined(cpu, i);
        }
    default:
        if (is_fpu_sse(op)) {
            x86_exec_fpu(cpu, i);
            return;
        }
        undefined(cpu, i);
    }
}

static void exec_0f(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op & 0xff, size = i->opsize;
    uint64_t v, t;

    if (i->op >= 0x200) {
        if (i->op == 0x2f0 || i->op == 0x2f1) { /* movbe */
            if (i->rep == 0xf2 || !i->mem)
                undefined(cpu, i);
            if (i->op == 0x2f0) {
                v = x86_mem_read(cpu, i->seg, i->ea, size);
                x86_reg_set(cpu, i, i->reg, size,
                            size == 8   ? __builtin_bswap64(v)
                            : size == 4 ? __builtin_bswap32((uint32_t)v)
                                        : __builtin_bswap16((uint16_t)v));
            } else {
                v = cpu->regs[i->reg];
                x86_mem_write(cpu, i->seg, i->ea,
                              size == 8   ? __builtin_bswap64(v)
                              : size == 4 ? __builtin_bswap32((uint32_t)v)
                                          : __builtin_bswap16((uint16_t)v),
                              size);
            }
            return;
        }
        x86_exec_fpu(cpu, i);
        return;
    }
    switch (op) {
    case 0x00:
        x86_exec_0f00(cpu, i);
        return;
    case 0x01:
        x86_exec_0f01(cpu, i);
        return;
    case 0x05:
        x86_syscall(cpu);
        return;
    case 0x06: /* clts */
        need_cpl0(cpu);
        cpu->cr0 &= ~(uint64_t)CR0_TS;
        return;
    case 0x07:
        x86_sysret(cpu);
        return;
    case 0x08:
    case 0x09: /* invd, wbinvd */
        need_cpl0(cpu);
        return;
    case 0x0d:
    case 0x18 ... 0x1e:
    case 0x1f: /* prefetch, hint nops */
        return;
    case 0x20:
    case 0x22: { /* mov cr */
        unsigned cr = i->reg;
        if (i->lock)
            cr |= 8;
        need_cpl0(cpu);
        if (op == 0x20) {
            v = x86_read_cr(cpu, cr);
            cpu->regs[i->rm] = x86_long_mode(cpu) ? v : v & 0xffffffffu;
        } else {
            v = cpu->regs[i->rm];
            if (!x86_long_mode(cpu))
                v &= 0xffffffffu;
            x86_write_cr(cpu, cr, v);
        }
        return;
    }
    case 0x21:
    case 0x23: { /* mov dr */
        unsigned dr = i->reg;
        need_cpl0(cpu);
        if (dr == 4 || dr == 5)
            dr += 2;
        if (dr > 7)
            undefined(cpu, i);
        if (op == 0x21) {
            v = dr < 4 ? cpu->dr[dr] : dr == 6 ? cpu->dr6 : cpu->dr7;
            cpu->regs[i->rm] = x86_long_mode(cpu) ? v : v & 0xffffffffu;
        } else {
            v = cpu->regs[i->rm];
            if (!x86_long_mode(cpu))
                v &= 0xffffffffu;
            if (dr < 4)
                cpu->dr[dr] = v;
            else if (dr == 6)
                cpu->dr6 = (v & 0xffffffffu) | 0xffff0ff0;
            else
                cpu->dr7 = (v & 0xffffffffu) | 0x400;
        }
        return;
    }
    case 0x02:
    case 0x03:
        x86_exec_lar_lsl(cpu, i, op == 0x03);
        return;
    case 0x34:
        x86_sysenter(cpu);
        return;
    case 0x35:
        x86_sysexit(cpu, i->rex & 8);
        return;
    case 0x0b:
    case 0xb9:
    case 0xff: /* ud2, ud1, ud0 */
        x86_raise_ud(cpu);
    case 0x30: { /* wrmsr */
        need_cpl0(cpu);
        uint32_t msr = (uint32_t)cpu->regs[X86_RCX];
        v = (cpu->regs[X86_RAX] & 0xffffffffu) | (cpu->regs[X86_RDX] << 32);
        if (!x86_wrmsr(cpu, msr, v))
            x86_raise_gp(cpu, 0);
        return;
    }
    case 0x31: /* rdtsc */
        v = cpu->ops->rdtsc(cpu->opaque);
        cpu->regs[X86_RAX] = v & 0xffffffffu;
        cpu->regs[X86_RDX] = v >> 32;
        return;
    case 0x32: { /* rdmsr */
        need_cpl0(cpu);
        if (!x86_rdmsr(cpu, (uint32_t)cpu->regs[X86_RCX], &v))
            x86_raise_gp(cpu, 0);
        cpu->regs[X86_RAX] = v & 0xffffffffu;
        cpu->regs[X86_RDX] = v >> 32;
        return;
    }
    case 0x40 ... 0x4f:
        v = x86_rm_read(cpu, i, size);
        if (x86_cond(cpu, op & 0xf))
            x86_reg_set(cpu, i, i->reg, size, v);
        else if (size == 4)
            cpu->regs[i->reg] &= 0xffffffffu;
        return;
    case 0x80 ... 0x8f:
        if (x86_cond(cpu, op & 0xf))
            jump(cpu, i, i->next_rip + i->imm);
        return;
    case 0x90 ... 0x9f:
        x86_rm_write(cpu, i, 1, x86_cond(cpu, op & 0xf));
        return;
    case 0xa0:
    case 0xa8: { /* push fs/gs */
        unsigned s = stack_opsize(cpu, i);
        push(cpu, cpu->seg[op == 0xa0 ? X86_FS : X86_GS].selector, s);
        return;
    }
    case 0xa1:
    case 0xa9: { /* pop fs/gs */
        unsigned s = stack_opsize(cpu, i);
        v = x86_mem_read(cpu, X86_SS, cpu->regs[X86_RSP] & x86_size_mask(stack_size(cpu)), s);
        x86_seg_load(cpu, op == 0xa1 ? X86_FS : X86_GS, (uint16_t)v);
        set_rsp(cpu, cpu->regs[X86_RSP] + s);
        return;
    }
    case 0xa2: { /* cpuid */
        uint32_t out[4];
        cpu->ops->cpuid(cpu->opaque, (uint32_t)cpu->regs[X86_RAX], (uint32_t)cpu->regs[X86_RCX],
                        out);
        cpu->regs[X86_RAX] = out[0];
        cpu->regs[X86_RBX] = out[1];
        cpu->regs[X86_RCX] = out[2];
        cpu->regs[X86_RDX] = out[3];
        return;
    }
    case 0xa3:
    case 0xab:
    case 0xb3:
    case 0xbb: /* bt/bts/btr/btc r */
        bit_op(cpu, i,
               op == 0xa3   ? 0
               : op == 0xab ? 1
               : op == 0xb3 ? 2
                            : 3,
               x86_reg_get(cpu, i, i->reg, size), false);
        return;
    case 0xba:
        if ((i->reg & 7) < 4)
            undefined(cpu, i);
        bit_op(cpu, i, (i->reg & 7) - 4, i->imm, true);
        return;
    case 0xa4:
    case 0xa5:
    case 0xac:
    case 0xad: { /* shld/shrd */
        unsigned cnt = (op & 1) ? (unsigned)cpu->regs[X86_RCX] & 0xff : (unsigned)i->imm;
        v = rm_read_rmw(cpu, i, size);
        t = shld_op(cpu, v, x86_reg_get(cpu, i, i->reg, size), cnt, size, op >= 0xac);
        if ((cnt & (size == 8 ? 0x3f : 0x1f)) || (size == 4 && !i->mem))
            x86_rm_write(cpu, i, size, t);
        return;
    }
    case 0xae:
        if (!i->mem && (i->reg & 7) >= 5) { /* lfence, mfence, sfence */
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            return;
        }
        if (i->mem && (i->reg & 7) == 7) /* clflush */
            return;
        x86_exec_fpu(cpu, i);
        return;
    case 0xaf:
        v = imul2(cpu, x86_reg_get(cpu, i, i->reg, size), x86_rm_read(cpu, i, size), size);
        x86_reg_set(cpu, i, i->reg, size, v);
        return;
    case 0xb0:
    case 0xb1: { /* cmpxchg */
        struct rmw m;
        unsigned s = op == 0xb0 ? 1 : size;
        uint64_t acc = cpu->regs[X86_RAX] & x86_size_mask(s), src = x86_reg_get(cpu, i, i->reg, s);
        bool ok;
        if (!i->mem) {
            v = x86_reg_get(cpu, i, i->rm, s);
            alu(cpu, 7, acc, v, s, 0);
            if (v == acc)
                x86_reg_set(cpu, i, i->rm, s, src);
            else
                x86_reg_set(cpu, i, X86_RAX, s, v);
            return;
        }
        v = rmw_load(cpu, i, s, &m, true);
        if (m.host) {
            uint64_t old = acc;
            ok = cas(m.host, s, &old, src);
            v = old;
        } else {
            ok = v == acc;
            x86_mem_write(cpu, i->seg, i->ea, ok ? src : v, s);
        }
        alu(cpu, 7, acc, v, s, 0);
        if (!ok)
            x86_reg_set(cpu, i, X86_RAX, s, v);
        return;
    }
    case 0xb2:
    case 0xb4:
    case 0xb5: { /* lss/lfs/lgs */
        uint16_t sel;
        uint64_t off;
        read_far_ptr(cpu, i, &sel, &off);
        x86_seg_load(cpu, op == 0xb2 ? X86_SS : op == 0xb4 ? X86_FS : X86_GS, sel);
        x86_reg_set(cpu, i, i->reg, size, off);
        return;
    }
    case 0xb6:
    case 0xb7: /* movzx */
        v = x86_rm_read(cpu, i, op == 0xb6 ? 1 : 2);
        x86_reg_set(cpu, i, i->reg, size, v);
        return;
    case 0xbe:
    case 0xbf: /* movsx */
        v = sext(x86_rm_read(cpu, i, op == 0xbe ? 1 : 2), op == 0xbe ? 1 : 2);
        x86_reg_set(cpu, i, i->reg, size, v);
        return;
    case 0xb8: /* popcnt */
        if (i->rep != 0xf3)
            undefined(cpu, i);
        v = x86_rm_read(cpu, i, size);
        x86_reg_set(cpu, i, i->reg, size, (uint64_t)__builtin_popcountll(v));
        set_flags(cpu, v ? 0 : X86_ZF, X86_ARITH_FLAGS);
        return;
    case 0xbc:
    case 0xbd: /* bsf/bsr, tzcnt/lzcnt */
        v = x86_rm_read(cpu, i, size);
        if (i->rep == 0xf3) {
            unsigned bits = size * 8;
            uint64_t r;
            if (op == 0xbc)
                r = v ? (uint64_t)__builtin_ctzll(v) : bits;
            else
                r = v ? (uint64_t)(__builtin_clzll(v) - (64 - bits)) : bits;
            x86_reg_set(cpu, i, i->reg, size, r);
            set_flags(cpu, (v ? 0 : X86_CF) | (r ? 0 : X86_ZF), X86_CF | X86_ZF);
            return;
        }
        if (!v) {
            set_flags(cpu, X86_ZF, X86_ZF);
            return;
        }
        x86_reg_set(cpu, i, i->reg, size,
                    op == 0xbc ? (uint64_t)__builtin_ctzll(v)
                               : (uint64_t)(63 - __builtin_clzll(v)));
        set_flags(cpu, 0, X86_ZF);
        return;
    case 0xc0:
    case 0xc1: { /* xadd */
        struct rmw m;
        unsigned s = op == 0xc0 ? 1 : size;
        uint64_t src = x86_reg_get(cpu, i, i->reg, s), old, r;
        if (!i->mem) {
            /* TEMP := SRC + DEST; SRC := DEST; DEST := TEMP (the sum wins for one register) */
            old = x86_reg_get(cpu, i, i->rm, s);
            r = alu(cpu, 0, old, src, s, 0);
            x86_reg_set(cpu, i, i->reg, s, old);
            x86_reg_set(cpu, i, i->rm, s, r);
            return;
        }
        do {
            old = rmw_load(cpu, i, s, &m, i->lock);
            r = alu(cpu, 0, old, src, s, 0);
        } while (!rmw_store(cpu, i, s, &m, old, r));
        x86_reg_set(cpu, i, i->reg, s, old);
        return;
    }
    case 0xc7:
        switch (i->reg & 7) {
        case 1:
            cmpxchg_wide(cpu, i);
            return;
        case 7:
            if (!i->mem && i->rep == 0xf3) { /* rdpid */
                cpu->regs[i->rm] = cpu->tsc_aux & 0xffffffffu;
                return;
            }
            undefined(cpu, i);
        default:
            undefined(cpu, i);
        }
    case 0xc8 ... 0xce:
    case 0xcf: {
        unsigned r = (op & 7) | ((i->rex & 1) << 3);
        if (size == 8)
            cpu->regs[r] = __builtin_bswap64(cpu->regs[r]);
        else if (size == 4)
            cpu->regs[r] = __builtin_bswap32((uint32_t)cpu->regs[r]);
        else
            x86_reg_set(cpu, i, r, 2, 0);
        return;
    }
    default:
        if (is_fpu_sse(i->op)) {
            x86_exec_fpu(cpu, i);
            return;
        }
        undefined(cpu, i);
    }
}
