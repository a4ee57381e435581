/* x86-decode.c: instruction fetch and decoding (prefixes, opcode maps, ModRM/SIB, immediates). */
#include "x86-internal.h"

/* One bit per opcode: has a ModRM byte. */
static const uint32_t modrm_1byte[8] = {
    /* 00-1f */ 0x0f0f0f0f, /* 20-3f */ 0x0f0f0f0f, /* 40-5f */ 0x00000000,
    /* 60-7f */ 0x00000a0c, /* 80-9f */ 0x0000ffff, /* a0-bf */ 0x00000000,
    /* c0-df */ 0xff0f00f3, /* e0-ff */ 0xc0c00000,
};
static const uint32_t modrm_0f[8] = {
    /* 00-1f */ 0xffff200f, /* 20-3f */ 0x0000ff0f, /* 40-5f */ 0xffffffff,
    /* 60-7f */ 0xff7fffff, /* 80-9f */ 0xffff0000, /* a0-bf */ 0xfffff838,
    /* c0-df */ 0xffff00ff, /* e0-ff */ 0xffffffff,
};

struct fetch {
    struct x86_cpu *cpu;
    struct x86_insn *i;
    uint64_t la;    /* linear address of the first byte */
    unsigned avail; /* bytes in i->bytes valid */
};

static void fetch_more(struct fetch *f)
{
    struct x86_cpu *cpu = f->cpu;
    uint64_t la = f->la + f->avail, gpa;
    unsigned n, off;
    uint8_t *p;
    bool user = x86_cpl(cpu) == 3;

    if (f->avail >= 15)
        x86_raise_gp(cpu, 0);
    if (!x86_long_mode(cpu))
        la &= 0xffffffffu;
    off = la & 0xfff;
    n = X86_PAGE_SIZE - off;
    if (n > 15 - f->avail)
        n = 15 - f->avail;
    p = x86_page_ptr(cpu, la, ACC_EXEC, user, &gpa);
    /* note the frame before reading it: a racing writer then sees the note */
    x86_code_page_note(gpa);
    if (p)
        memcpy(f->i->bytes + f->avail, p + off, n);
    else
        x86_phys_read(cpu, gpa + off, f->i->bytes + f->avail, 1), n = 1;
    f->avail += n;
}

static inline uint8_t fetch8(struct fetch *f)
{
    if (f->i->len >= f->avail)
        fetch_more(f);
    return f->i->bytes[f->i->len++];
}

static uint64_t fetchn(struct fetch *f, unsigned n)
{
    uint64_t v = 0;

    for (unsigned k = 0; k < n; k++)
        v |= (uint64_t)fetch8(f) << (8 * k);
    return v;
}

static uint64_t sext(uint64_t v, unsigned size)
{
    unsigned sh = 64 - size * 8;
    return size == 8 ? v : (uint64_t)((int64_t)(v << sh) >> sh);
}

static void decode_modrm(struct fetch *f, bool *riprel)
{
    struct x86_cpu *cpu = f->cpu;
    struct x86_insn *i = f->i;
    uint8_t m = fetch8(f);
    unsigned rex = i->rex;
    uint64_t disp = 0;
    unsigned default_seg = X86_DS;

    i->mod = m >> 6;
    i->reg = ((m >> 3) & 7) | ((rex & 4) << 1);
    i->rm = m & 7;
    if (i->mod == 3) {
        i->rm |= (rex & 1) << 3;
        i->mem = false;
        return;
    }
    i->mem = true;
    i->base_reg = -1;
    i->index_reg = -1;
    i->scale = 0;
    if (i->addrsize == 2) {
        static const int8_t base16[8] = { X86_RBX, X86_RBX, X86_RBP, X86_RBP,
                                          -1,      -1,      X86_RBP, X86_RBX };
        static const int8_t idx16[8] = { X86_RSI, X86_RDI, X86_RSI, X86_RDI,
                                         X86_RSI, X86_RDI, -1,      -1 };
        if (i->mod == 0 && i->rm == 6) {
            disp = fetchn(f, 2);
        } else {
            i->base_reg = base16[i->rm];
            i->index_reg = idx16[i->rm];
            if (i->base_reg == X86_RBP)
                default_seg = X86_SS;
            if (i->mod == 1)
                disp = sext(fetch8(f), 1);
            else if (i->mod == 2)
                disp = sext(fetchn(f, 2), 2);
        }
    } else {
        unsigned rm = i->rm;
        if (rm == 4) {
            uint8_t sib = fetch8(f);
            unsigned idx = ((sib >> 3) & 7) | ((rex & 2) << 2);
            unsigned base = (sib & 7) | ((rex & 1) << 3);
            i->scale = sib >> 6;
            if (idx != 4)
                i->index_reg = (int8_t)idx;
            if ((base & 7) == 5 && i->mod == 0) {
                disp = sext(fetchn(f, 4), 4);
            } else {
                i->base_reg = (int8_t)base;
                if (base == X86_RSP || base == X86_RBP)
                    default_seg = X86_SS;
            }
        } else if (rm == 5 && i->mod == 0) {
            disp = sext(fetchn(f, 4), 4);
            if (x86_mode64(cpu))
                *riprel = true;
        } else {
            rm |= (rex & 1) << 3;
            i->base_reg = (int8_t)rm;
            if (rm == X86_RBP)
                default_seg = X86_SS;
        }
        if (i->mod == 1)
            disp += sext(fetch8(f), 1);
        else if (i->mod == 2)
            disp += sext(fetchn(f, 4), 4);
    }
    i->disp = disp;
    if (!i->seg_override)
        i->seg = default_seg;
}

/* Size of the immediate of (op) (after the ModRM), in bytes; 0xff: opsize-sized (iz). */
static unsigned imm_size(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op, z = i->opsize == 2 ? 2 : 4;

    if (op < 0x40 && (op & 7) == 4)
        return 1;
    if (op < 0x40 && (op & 7) == 5)
        return z;
    switch (op) {
    case 0x6a:
    case 0x6b:
    case 0x80:
    case 0x82:
    case 0x83:
    case 0xa8:
    case 0xc0:
    case 0xc1:
    case 0xc6:
    case 0xcd:
    case 0xd4:
    case 0xd5:
    case 0xe4 ... 0xe7:
    case 0x1a4:
    case 0x1ac:
    case 0x1ba:
    case 0x170 ... 0x173:
    case 0x1c2:
    case 0x1c4 ... 0x1c6:
        return 1;
    case 0x68:
    case 0x69:
    case 0x81:
    case 0xa9:
    case 0xc7:
        return z;
    case 0xe8:
    case 0xe9:
        return x86_mode64(cpu) ? 4 : z;
    case 0xc2:
    case 0xca:
        return 2;
    case 0xc8:
        return 3;
    case 0xf6:
        return (i->reg & 7) < 2 ? 1 : 0;
    case 0xf7:
        return (i->reg & 7) < 2 ? z : 0;
    default:
        if (op >= 0x70 && op <= 0x7f)
            return 1;
        if (op >= 0xe0 && op <= 0xe3)
            return 1;
        if (op == 0xeb)
            return 1;
        if (op >= 0xb0 && op <= 0xb7)
            return 1;
        if (op >= 0xb8 && op <= 0xbf)
            return i->opsize;
        if (op >= 0x180 && op <= 0x18f)
            return x86_mode64(cpu) ? 4 : z;
        if (op >= 0x300 && op <= 0x3ff)
            return 1;
        return 0;
    }
}

void x86_decode(struct x86_cpu *cpu, struct x86_insn *i)
{
    struct fetch f = { .cpu = cpu, .i = i, .avail = 0 };
    bool m64 = x86_mode64(cpu), riprel = false, adsz = false;
    unsigned defsize = m64 ? 4 : (cpu->seg[X86_CS].db ? 4 : 2);
    uint8_t b;

    i->rip = cpu->rip;
    i->mode = x86_mode_key(cpu);
    i->len = 0;
    i->rex = 0;
    i->rep = 0;
    i->lock = 0;
    i->opsize_prefix = 0;
    i->seg = X86_DS;
    i->seg_override = false;
    i->mem = false;
    i->has_modrm = false;
    i->imm = i->imm2 = 0;
    f.la = m64 ? cpu->rip : (cpu->seg[X86_CS].base + cpu->rip) & 0xffffffffu;
    i->la = f.la;
    if (m64 && !x86_canonical(f.la))
        x86_raise_gp(cpu, 0);

    for (;;) {
        b = fetch8(&f);
        switch (b) {
        case 0x66:
            i->opsize_prefix = 1;
            i->rex = 0;
            continue;
        case 0x67:
            adsz = true;
            i->rex = 0;
            continue;
        case 0xf0:
            i->lock = 1;
            i->rex = 0;
            continue;
        case 0xf2:
        case 0xf3:
            i->rep = b;
            i->rex = 0;
            continue;
        case 0x26:
        case 0x2e:
        case 0x36:
        case 0x3e:
            if (!m64) {
                i->seg = (b >> 3) & 3;
                i->seg_override = true;
            }
            i->rex = 0;
            continue;
        case 0x64:
        case 0x65:
            i->seg = b == 0x64 ? X86_FS : X86_GS;
            i->seg_override = true;
            i->rex = 0;
            continue;
        default:
            break;
        }
        if (m64 && (b & 0xf0) == 0x40) {
            i->rex = b;
            continue;
        }
        break;
    }
    if (b == 0x0f) {
        b = fetch8(&f);
        if (b == 0x38)
            i->op = 0x200 | fetch8(&f);
        else if (b == 0x3a)
            i->op = 0x300 | fetch8(&f);
        else
            i->op = 0x100 | b;
    } else {
        i->op = b;
    }
    if (m64) {
        i->opsize = (i->rex & 8) ? 8 : (i->opsize_prefix ? 2 : 4);
        i->addrsize = adsz ? 4 : 8;
    } else {
        i->opsize = i->opsize_prefix ? 6 - defsize : defsize;
        i->addrsize = adsz ? 6 - defsize : defsize;
    }
    if (i->op < 0x100)
        i->has_modrm = (modrm_1byte[i->op >> 5] >> (i->op & 31)) & 1;
    else if (i->op < 0x200)
        i->has_modrm = (modrm_0f[(i->op & 0xff) >> 5] >> (i->op & 31)) & 1;
    else
        i->has_modrm = true;
    if (i->has_modrm)
        decode_modrm(&f, &riprel);
    else
        i->reg = 0, i->rm = 0, i->mod = 3;

    if (i->op >= 0xa0 && i->op <= 0xa3) {
        i->disp = fetchn(&f, i->addrsize);
        i->base_reg = i->index_reg = -1;
        i->mem = true;
    } else if (i->op == 0x9a || i->op == 0xea) {
        i->imm = fetchn(&f, i->opsize);
        i->imm2 = fetchn(&f, 2);
    } else {
        unsigned n = imm_size(cpu, i);
        if (i->op == 0xc8) {
            i->imm = fetchn(&f, 2);
            i->imm2 = fetch8(&f);
        } else if (n) {
            i->imm = fetchn(&f, n);
            /* sign-extend ib/iz to the operand size where the encoding says so */
            if (n < 8 && i->op != 0xc2 && i->op != 0xca && !(i->op >= 0xe4 && i->op <= 0xe7) &&
                i->op != 0xcd && !(i->op >= 0xb0 && i->op <= 0xbf) && i->op != 0xc0 &&
                i->op != 0xc1 && i->op != 0x1a4 && i->op != 0x1ac && i->op != 0x1ba &&
                i->op != 0xd4 && i->op != 0xd5 && i->op < 0x300)
                i->imm = sext(i->imm, n);
        }
    }
    i->next_rip = i->rip + i->len;
    if (!m64)
        i->next_rip &= 0xffffffffu;
    if (riprel)
        i->disp += i->next_rip;
}
