/* x86-flags.c: lazy arithmetic flags: materialise CF/PF/AF/ZF/SF/OF from the last operation. */
#include "x86-internal.h"

static unsigned parity(uint64_t v)
{
    return __builtin_parity((unsigned)(v & 0xff)) ? 0 : X86_PF;
}

static uint64_t compute(struct x86_internal *in)
{
    unsigned size = in->cc_size;
    uint64_t mask = x86_size_mask(size), sign = (uint64_t)1 << (size * 8 - 1);
    uint64_t s1 = in->cc_src1 & mask, s2 = in->cc_src2 & mask, res = in->cc_res & mask;
    uint64_t f = parity(res);

    if (res == 0)
        f |= X86_ZF;
    if (res & sign)
        f |= X86_SF;
    switch (in->cc_op) {
    case CC_ADD:
        if (in->cc_aux ? res <= s1 : res < s1)
            f |= X86_CF;
        if ((s1 ^ res) & (s2 ^ res) & sign)
            f |= X86_OF;
        f |= (s1 ^ s2 ^ res) & X86_AF;
        break;
    case CC_SUB:
        if (in->cc_aux ? s1 <= s2 : s1 < s2)
            f |= X86_CF;
        if ((s1 ^ s2) & (s1 ^ res) & sign)
            f |= X86_OF;
        f |= (s1 ^ s2 ^ res) & X86_AF;
        break;
    case CC_LOGIC:
        break;
    case CC_SHL:
        if ((in->cc_src1 >> (size * 8 - s2)) & 1)
            f |= X86_CF;
        if (((res & sign) != 0) != ((f & X86_CF) != 0))
            f |= X86_OF;
        break;
    case CC_SHR:
        if ((s1 >> (s2 - 1)) & 1)
            f |= X86_CF;
        if (s1 & sign)
            f |= X86_OF;
        break;
    case CC_SAR: {
        unsigned sh = 64 - size * 8;
        int64_t sx = (int64_t)(s1 << sh) >> sh;
        if ((sx >> (s2 - 1)) & 1)
            f |= X86_CF;
        break;
    }
    case CC_INC:
        f |= in->cc_aux & X86_CF;
        if (res == sign)
            f |= X86_OF;
        f |= (s1 ^ 1 ^ res) & X86_AF;
        break;
    case CC_DEC:
        f |= in->cc_aux & X86_CF;
        if (s1 == sign)
            f |= X86_OF;
        f |= (s1 ^ 1 ^ res) & X86_AF;
        break;
    }
    return f;
}

uint64_t x86_flags(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);

    if (in->cc_op != CC_EAGER) {
        cpu->rflags = (cpu->rflags & ~(uint64_t)X86_ARITH_FLAGS) | compute(in);
        in->cc_op = CC_EAGER;
    }
    return cpu->rflags;
}

/* Replace the flags in (mask) with those of (v). */
void x86_flags_set(struct x86_cpu *cpu, uint64_t v, uint64_t mask)
{
    uint64_t f = x86_flags(cpu);

    cpu->rflags = ((f & ~mask) | (v & mask) | 2) & ~(uint64_t)0x8028;
}

bool x86_cf(struct x86_cpu *cpu)
{
    struct x86_internal *in = x86_in(cpu);

    if (in->cc_op == CC_INC || in->cc_op == CC_DEC)
        return in->cc_aux & X86_CF;
    return x86_flags(cpu) & X86_CF;
}

bool x86_cond(struct x86_cpu *cpu, unsigned cc)
{
    struct x86_internal *in = x86_in(cpu);
    uint64_t f;
    bool r;

    /* the common loop-closing cases without materialising everything */
    if ((cc & ~1u) == 4 && in->cc_op != CC_EAGER) {
        r = (in->cc_res & x86_size_mask(in->cc_size)) == 0;
        return (cc & 1) ? !r : r;
    }
    f = x86_flags(cpu);
    switch (cc >> 1) {
    case 0:
        r = f & X86_OF;
        break;
    case 1:
        r = f & X86_CF;
        break;
    case 2:
        r = f & X86_ZF;
        break;
    case 3:
        r = f & (X86_CF | X86_ZF);
        break;
    case 4:
        r = f & X86_SF;
        break;
    case 5:
        r = f & X86_PF;
        break;
    case 6:
        r = !(f & X86_SF) != !(f & X86_OF);
        break;
    default:
        r = (f & X86_ZF) || (!(f & X86_SF) != !(f & X86_OF));
        break;
    }
    return (cc & 1) ? !r : r;
}

uint64_t x86_cpu_get_rflags(struct x86_cpu *cpu)
{
    return x86_flags(cpu);
}

void x86_cpu_set_rflags(struct x86_cpu *cpu, uint64_t rflags)
{
    x86_in(cpu)->cc_op = CC_EAGER;
    cpu->rflags = rflags | 2;
}
