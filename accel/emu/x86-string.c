/* x86-string.c: movs, stos, lods, cmps, scas, ins, outs with rep prefixes, restartable. */
#include "x86-internal.h"

#define MAX_ITERS 1024 /* elements per step before the run loop looks around */

static void set_areg(struct x86_cpu *cpu, unsigned r, uint64_t v, unsigned addrsize)
{
    if (addrsize == 2)
        cpu->regs[r] = (cpu->regs[r] & ~0xffffull) | (v & 0xffff);
    else
        cpu->regs[r] = v & x86_size_mask(addrsize);
}

/* Forward rep stos/movs inside RAM pages; returns elements done (0: use the slow path). */
static uint64_t fast_chunk(struct x86_cpu *cpu, struct x86_insn *i, unsigned size, uint64_t count)
{
    uint64_t am = x86_size_mask(i->addrsize), di = cpu->regs[X86_RDI] & am,
             si = cpu->regs[X86_RSI] & am;
    uint64_t lad = x86_linear(cpu, X86_ES, di, i->addrsize), gd, gs, n;
    bool user = x86_cpl(cpu) == 3, movs = (i->op & 0xfe) == 0xa4;
    uint8_t *pd, *ps = NULL;

    if (i->addrsize == 2 || (cpu->rflags & X86_DF) || !x86_mode64(cpu))
        return 0; /* (outside 64-bit mode the element path does the segment checks) */
    n = (X86_PAGE_SIZE - (lad & 0xfff)) / size;
    if (n > count)
        n = count;
    if (di + n * size - 1 > am)
        return 0;
    uint64_t las = 0;
    if (movs) {
        las = x86_linear(cpu, i->seg, si, i->addrsize);
        uint64_t m = (X86_PAGE_SIZE - (las & 0xfff)) / size;
        if (m < n)
            n = m;
        if (si + n * size - 1 > am)
            return 0;
    }
    if (!n)
        return 0;
    if (movs) {
        ps = x86_page_ptr(cpu, las, ACC_READ, user, &gs);
        if (!ps)
            return 0;
        ps += las & 0xfff;
    }
    pd = x86_page_ptr(cpu, lad, ACC_WRITE, user, &gd);
    if (!pd)
        return 0;
    pd += lad & 0xfff;
    if (movs) {
        if (pd > ps && pd < ps + n * size) {
            for (uint64_t k = 0; k < n; k++) /* overlapping: element by element */
                memmove(pd + k * size, ps + k * size, size);
        } else {
            memmove(pd, ps, n * size);
        }
        set_areg(cpu, X86_RSI, si + n * size, i->addrsize);
    } else {
        uint64_t v = cpu->regs[X86_RAX];
        if (size == 1) {
            memset(pd, (int)(v & 0xff), n);
        } else {
            for (uint64_t k = 0; k < n; k++)
                memcpy(pd + k * size, &v, size);
        }
    }
    x86_mark_dirty(cpu, gd); /* after the stores, as every write */
    set_areg(cpu, X86_RDI, di + n * size, i->addrsize);
    return n;
}

void x86_exec_string(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op, size, as = i->addrsize;
    uint64_t am = x86_size_mask(as), count, done = 0;
    bool rep = i->rep != 0;
    int64_t step;

    if (op >= 0x6c && op <= 0x6f)
        size = (op & 1) ? (i->opsize == 2 ? 2 : 4) : 1;
    else
        size = (op & 1) ? i->opsize : 1;
    step = (cpu->rflags & X86_DF) ? -(int64_t)size : (int64_t)size;
    count = rep ? cpu->regs[X86_RCX] & am : 1;
    if (!count)
        return;
    if (op >= 0x6c && op <= 0x6f)
        x86_io_check(cpu, (uint16_t)cpu->regs[X86_RDX], size);

    while (count && done < MAX_ITERS) {
        uint64_t si = cpu->regs[X86_RSI] & am, di = cpu->regs[X86_RDI] & am, v, n;
        bool stop = false;

        if (rep && (op == 0xaa || op == 0xab || op == 0xa4 || op == 0xa5) &&
            (n = fast_chunk(cpu, i, size, count)) != 0) {
            count -= n;
            done += n;
            set_areg(cpu, X86_RCX, count, as);
            continue;
        }
        switch (op) {
        case 0xa4:
        case 0xa5:
            v = x86_mem_read(cpu, i->seg, si, size);
            x86_mem_write(cpu, X86_ES, di, v, size);
            set_areg(cpu, X86_RSI, si + (uint64_t)step, as);
            set_areg(cpu, X86_RDI, di + (uint64_t)step, as);
            break;
        case 0xaa:
        case 0xab:
            x86_mem_write(cpu, X86_ES, di, cpu->regs[X86_RAX], size);
            set_areg(cpu, X86_RDI, di + (uint64_t)step, as);
            break;
        case 0xac:
        case 0xad:
            v = x86_mem_read(cpu, i->seg, si, size);
            x86_reg_set(cpu, i, X86_RAX, size, v);
            set_areg(cpu, X86_RSI, si + (uint64_t)step, as);
            break;
        case 0xa6:
        case 0xa7: {
            uint64_t a = x86_mem_read(cpu, i->seg, si, size),
                     b = x86_mem_read(cpu, X86_ES, di, size);
            x86_cc_set(cpu, CC_SUB, size, a, b, a - b, 0);
            set_areg(cpu, X86_RSI, si + (uint64_t)step, as);
            set_areg(cpu, X86_RDI, di + (uint64_t)step, as);
            stop = true;
            break;
        }
        case 0xae:
        case 0xaf: {
            uint64_t a = cpu->regs[X86_RAX] & x86_size_mask(size),
                     b = x86_mem_read(cpu, X86_ES, di, size);
            x86_cc_set(cpu, CC_SUB, size, a, b, a - b, 0);
            set_areg(cpu, X86_RDI, di + (uint64_t)step, as);
            stop = true;
            break;
        }
        case 0x6c:
        case 0x6d: {
            uint8_t buf[4] = { 0 };
            uint32_t w;
            /* probe the destination first so a #PF does not lose the input */
            x86_mem_write(cpu, X86_ES, di, x86_mem_read(cpu, X86_ES, di, size), size);
            cpu->ops->pio(cpu->opaque, (uint16_t)cpu->regs[X86_RDX], buf, size, false);
            memcpy(&w, buf, 4);
            x86_mem_write(cpu, X86_ES, di, w, size);
            set_areg(cpu, X86_RDI, di + (uint64_t)step, as);
            break;
        }
        default: { /* outs */
            uint8_t buf[4];
            uint32_t w = (uint32_t)x86_mem_read(cpu, i->seg, si, size);
            memcpy(buf, &w, 4);
            cpu->ops->pio(cpu->opaque, (uint16_t)cpu->regs[X86_RDX], buf, size, true);
            set_areg(cpu, X86_RSI, si + (uint64_t)step, as);
            break;
        }
        }
        count--;
        done++;
        if (!rep)
            return;
        set_areg(cpu, X86_RCX, count, as);
        if (stop) {
            bool zf = x86_cond(cpu, 4);
            if ((i->rep == 0xf3 && !zf) || (i->rep == 0xf2 && zf))
                return;
        }
    }
    if (count)
        cpu->rip = i->rip; /* not finished: run again after the run loop had a look */
}
