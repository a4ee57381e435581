/* x86-mmu.c: paging (32-bit, PAE, 4-level), the software TLB, and guest memory access. */
#include "x86-internal.h"

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_PS 0x80ull
#define PTE_G 0x100ull
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

#define PF_P 0x1u
#define PF_W 0x2u
#define PF_U 0x4u
#define PF_RSVD 0x8u
#define PF_I 0x10u

uint8_t *x86_phys_ptr(struct x86_cpu *cpu, uint64_t gpa)
{
    struct x86_memory *mem = cpu->mem;

    for (unsigned i = 0; i < mem->nr_ram; i++) {
        struct x86_ram *r = &mem->ram[i];
        if (gpa - r->gpa < r->size)
            return r->hva + (gpa - r->gpa);
    }
    return NULL;
}

#define LBITS (8 * sizeof(unsigned long))

unsigned long x86_code_filter[X86_CODE_FILTER_BITS / LBITS];
uint32_t x86_code_epoch = 1;

void x86_code_page_note(uint64_t gpa)
{
    uint64_t b = (gpa >> 12) % X86_CODE_FILTER_BITS;
    unsigned long *w = &x86_code_filter[b / LBITS], bit = 1ul << (b % LBITS);

    if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit))
        __atomic_fetch_or(w, bit, __ATOMIC_SEQ_CST);
}

void x86_code_page_hit(uint64_t gfn)
{
    uint64_t b = gfn % X86_CODE_FILTER_BITS;

    __atomic_fetch_and(&x86_code_filter[b / LBITS], ~(1ul << (b % LBITS)), __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&x86_code_epoch, 1, __ATOMIC_SEQ_CST);
}

void x86_mark_dirty(struct x86_cpu *cpu, uint64_t gpa)
{
    struct x86_memory *mem = cpu->mem;
    uint64_t gfn = gpa >> 12, b = gfn % X86_CODE_FILTER_BITS;
    unsigned long bit, *w;
    /* Read once: the migration thread may clear it meanwhile. */
    unsigned long *dirty = __atomic_load_n(&mem->dirty, __ATOMIC_ACQUIRE);

    if (__atomic_load_n(&x86_code_filter[b / LBITS], __ATOMIC_RELAXED) & (1ul << (b % LBITS)))
        x86_code_page_hit(gfn);
    if (!dirty || gfn >= mem->nr_gfns)
        return;
    w = &dirty[gfn / LBITS];
    bit = 1ul << (gfn % LBITS);
    if (!(__atomic_load_n(w, __ATOMIC_RELAXED) & bit))
        __atomic_fetch_or(w, bit, __ATOMIC_RELAXED);
}

/* Whole-page RAM pointer only when the page is entirely RAM. */
static uint8_t *phys_page_ptr(struct x86_cpu *cpu, uint64_t gpa_page)
{
    struct x86_memory *mem = cpu->mem;

    for (unsigned i = 0; i < mem->nr_ram; i++) {
        struct x86_ram *r = &mem->ram[i];
        if (gpa_page >= r->gpa && gpa_page + X86_PAGE_SIZE <= r->gpa + r->size)
            return r->hva + (gpa_page - r->gpa);
    }
    return NULL;
}

static void phys_access(struct x86_cpu *cpu, uint64_t gpa, uint8_t *buf, unsigned len, bool write)
{
    uint8_t *p = phys_page_ptr(cpu, gpa & X86_PAGE_MASK);

    if (p && (gpa & 0xfff) + len <= X86_PAGE_SIZE) {
        p += gpa & 0xfff;
        if (write) {
            memcpy(p, buf, len);
            x86_mark_dirty(cpu, gpa);
        } else {
            memcpy(buf, p, len);
        }
        return;
    }
    if (!p && (gpa & 0xfff) + len <= X86_PAGE_SIZE &&
        (len == 1 || len == 2 || len == 4 || len == 8) && !x86_phys_ptr(cpu, gpa) &&
        !x86_phys_ptr(cpu, gpa + len - 1)) {
        cpu->ops->mmio(cpu->opaque, gpa, buf, len, write);
        return;
    }
    /* straddling pages or regions: byte by byte */
    for (unsigned k = 0; k < len; k++) {
        uint8_t *b = x86_phys_ptr(cpu, gpa + k);
        if (b) {
            if (write) {
                *b = buf[k];
                x86_mark_dirty(cpu, gpa + k);
            } else {
                buf[k] = *b;
            }
        } else {
            cpu->ops->mmio(cpu->opaque, gpa + k, buf + k, 1, write);
        }
    }
}

void x86_phys_read(struct x86_cpu *cpu, uint64_t gpa, void *buf, unsigned len)
{
    phys_access(cpu, gpa, buf, len, false);
}

void x86_phys_write(struct x86_cpu *cpu, uint64_t gpa, const void *buf, unsigned len)
{
    phys_access(cpu, gpa, (uint8_t *)buf, len, true);
}

void x86_tlb_flush(struct x86_cpu *cpu, bool keep_global)
{
    struct x86_internal *in = x86_in(cpu);

    x86_dc_flush(cpu);
    for (unsigned i = 0; i < X86_TLB_SIZE; i++) {
        if (keep_global && in->tlb[i].global)
            continue;
        memset(&in->tlb[i], 0, sizeof(in->tlb[i]));
    }
}

void x86_tlb_flush_page(struct x86_cpu *cpu, uint64_t la)
{
    struct x86_internal *in = x86_in(cpu);

    /* entries from a large page may sit in many slots: look at them all */
    x86_dc_flush(cpu);
    for (unsigned k = 0; k < X86_TLB_SIZE; k++) {
        struct x86_tlb_entry *t = &in->tlb[k];
        if ((t->tag[0] | t->tag[1] | t->tag[2]) && ((la ^ t->vbase) & t->vmask) == 0)
            memset(t, 0, sizeof(*t));
    }
}

/* Read a page-table entry (4 or 8 bytes) at (gpa). */
static uint64_t pte_read(struct x86_cpu *cpu, uint64_t gpa, unsigned size)
{
    uint8_t *p = x86_phys_ptr(cpu, gpa);

    if (p) {
        if (size == 8)
            return __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
        return __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
    }
    uint64_t v = 0;
    x86_phys_read(cpu, gpa, &v, size);
    return v;
}

static void pte_set_bits(struct x86_cpu *cpu, uint64_t gpa, unsigned size, uint64_t old,
                         uint64_t bits)
{
    uint8_t *p;

    if ((old & bits) == bits)
        return;
    p = x86_phys_ptr(cpu, gpa);
    if (p) {
        if (size == 8)
            __atomic_fetch_or((uint64_t *)p, bits, __ATOMIC_RELAXED);
        else
            __atomic_fetch_or((uint32_t *)p, (uint32_t)bits, __ATOMIC_RELAXED);
        x86_mark_dirty(cpu, gpa);
    } else {
        uint64_t v = old | bits;
        x86_phys_write(cpu, gpa, &v, size);
    }
}

_Noreturn static void page_fault(struct x86_cpu *cpu, uint64_t la, uint32_t err)
{
    cpu->cr2 = la;
    x86_raise(cpu, X86_EXC_PF, err, true);
}

/* Walk; returns gpa of (la) and the effective permissions / final entry info. */
static uint64_t walk(struct x86_cpu *cpu, uint64_t la, enum x86_access acc, bool user, bool *w_ok,
                     bool *x_ok, bool *u_ok, bool *global, bool *dirty, uint64_t *psize)
{
    bool nxe = cpu->efer & EFER_NXE;
    uint64_t rw = PTE_RW, us = PTE_US, nx = 0, e = 0, ea = 0, page_size;
    unsigned size, levels, shift;
    uint64_t table;
    uint32_t err = (acc == ACC_WRITE ? PF_W : 0) | (user ? PF_U : 0) |
                   (acc == ACC_EXEC && nxe ? PF_I : 0);

    if (x86_long_mode(cpu)) {
        size = 8;
        levels = 4;
        shift = 39;
        table = cpu->cr3 & PTE_ADDR;
    } else if (cpu->cr4 & CR4_PAE) {
        size = 8;
        levels = 3;
        shift = 30;
        la &= 0xffffffffu;
        /* PDPTE: read from CR3 directly (not cached as hardware would) */
        table = cpu->cr3 & 0xffffffe0u;
        ea = table + ((la >> 30) & 3) * 8;
        e = pte_read(cpu, ea, 8);
        if (!(e & PTE_P))
            page_fault(cpu, la, err);
        table = e & PTE_ADDR;
        levels = 2;
        shift = 21;
    } else {
        size = 4;
        levels = 2;
        shift = 22;
        la &= 0xffffffffu;
        table = cpu->cr3 & 0xfffff000u;
    }
    for (unsigned lvl = levels; lvl > 0; lvl--) {
        unsigned idx_bits = size == 8 ? 9 : 10;
        uint64_t idx = (la >> shift) & ((1u << idx_bits) - 1);

        ea = table + idx * size;
        e = pte_read(cpu, ea, size);
        if (!(e & PTE_P))
            page_fault(cpu, la, err);
        if (size == 8 && (e & PTE_NX) && !nxe)
            page_fault(cpu, la, err | PF_P | PF_RSVD);
        rw &= e;
        us &= e;
        if (size == 8)
            nx |= e & PTE_NX;
        bool leaf = lvl == 1;
        if (!leaf && (e & PTE_PS)) {
            if (size == 4 && !(cpu->cr4 & CR4_PSE))
                leaf = false;
            else if (size == 8 && lvl == 4)
                page_fault(cpu, la, err | PF_P | PF_RSVD);
            else
                leaf = true;
        }
        if (leaf) {
            page_size = (uint64_t)1 << shift;
            break;
        }
        pte_set_bits(cpu, ea, size, e, PTE_A);
        table = (size == 8) ? (e & PTE_ADDR) : (e & 0xfffff000u);
        shift -= idx_bits;
    }
    page_size = (uint64_t)1 << shift;

    /* permission checks */
    bool wp = cpu->cr0 & CR0_WP;
    if (user && !us)
        page_fault(cpu, la, err | PF_P);
    if (acc == ACC_WRITE && !rw && (user || wp))
        page_fault(cpu, la, err | PF_P);
    if (acc == ACC_EXEC && nx && nxe)
        page_fault(cpu, la, err | PF_P);

    uint64_t setb = PTE_A | (acc == ACC_WRITE ? PTE_D : 0);
    pte_set_bits(cpu, ea, size, e, setb);

    uint64_t base;
    if (page_size == X86_PAGE_SIZE) {
        base = size == 8 ? (e & PTE_ADDR) : (e & 0xfffff000u);
    } else if (size == 4) {
        /* 4 MiB page: bits 31:22, plus PSE-36 bits 20:13 -> 39:32 */
        base = (e & 0xffc00000u) | ((e & 0x1fe000u) << 19);
    } else {
        base = e & PTE_ADDR & ~(page_size - 1);
    }
    *w_ok = rw || (!user && !wp);
    *x_ok = !(nx && nxe);
    *u_ok = us;
    *global = (e & PTE_G) && (cpu->cr4 & CR4_PGE);
    *dirty = (e & PTE_D) || acc == ACC_WRITE;
    *psize = page_size;
    return base + (la & (page_size - 1));
}

uint64_t x86_translate(struct x86_cpu *cpu, uint64_t la, enum x86_access acc, bool user)
{
    bool w, x, u, g, d;
    uint64_t ps;

    if (!(cpu->cr0 & CR0_PG))
        return x86_long_mode(cpu) ? la : (la & 0xffffffffu);
    return walk(cpu, la, acc, user, &w, &x, &u, &g, &d, &ps);
}

uint8_t *x86_page_ptr(struct x86_cpu *cpu, uint64_t la, enum x86_access acc, bool user,
                      uint64_t *gpa_out)
{
    struct x86_internal *in = x86_in(cpu);
    uint64_t page = la & X86_PAGE_MASK, tag = page | (user ? 2 : 0) | 1;
    struct x86_tlb_entry *t = &in->tlb[(la >> 12) % X86_TLB_SIZE];
    bool w = true, x = true, u = true, g = false, d = true;
    uint64_t gpa, psize = X86_PAGE_SIZE;
    uint8_t *hva;

    if (t->tag[acc] == tag) {
        *gpa_out = t->gpa;
        return t->hva;
    }
    if (cpu->cr0 & CR0_PG)
        gpa = walk(cpu, la, acc, user, &w, &x, &u, &g, &d, &psize) & X86_PAGE_MASK;
    else
        gpa = x86_long_mode(cpu) ? page : (page & 0xffffffffu);
    *gpa_out = gpa;
    hva = phys_page_ptr(cpu, gpa);
    if (!hva)
        return NULL;
    if (t->tag[0] != tag && t->tag[1] != tag && t->tag[2] != tag)
        memset(t, 0, sizeof(*t));
    else if (t->gpa != gpa)
        memset(t, 0, sizeof(*t));
    t->hva = hva;
    t->gpa = gpa;
    t->global = g;
    t->vmask = ~(psize - 1);
    t->vbase = la & t->vmask;
    t->tag[ACC_READ] = tag;
    if (w && d)
        t->tag[ACC_WRITE] = tag;
    if (x)
        t->tag[ACC_EXEC] = tag;
    return hva;
}

static void lin_access(struct x86_cpu *cpu, uint64_t la, uint8_t *buf, unsigned len, bool write,
                       bool sys)
{
    bool user = !sys && x86_cpl(cpu) == 3;
    enum x86_access acc = write ? ACC_WRITE : ACC_READ;

    while (len) {
        unsigned off = la & 0xfff, n = X86_PAGE_SIZE - off;
        uint64_t gpa;
        uint8_t *p;

        if (n > len)
            n = len;
        if (!x86_long_mode(cpu))
            la &= 0xffffffffu;
        p = x86_page_ptr(cpu, la, acc, user, &gpa);
        if (p) {
            if (write) {
                memcpy(p + off, buf, n);
                x86_mark_dirty(cpu, gpa);
            } else {
                memcpy(buf, p + off, n);
            }
        } else {
            phys_access(cpu, gpa + off, buf, n, write);
        }
        la += n;
        buf += n;
        len -= n;
    }
}

/* Translate both pages of a straddling write before writing anything, so a
 * #PF on the second page leaves memory untouched. */
static void probe_write(struct x86_cpu *cpu, uint64_t la, unsigned len, bool sys)
{
    bool user = !sys && x86_cpl(cpu) == 3;
    uint64_t gpa;

    if ((la & 0xfff) + len > X86_PAGE_SIZE) {
        x86_page_ptr(cpu, la, ACC_WRITE, user, &gpa);
        /* CR2 is the first byte on the second page */
        x86_page_ptr(cpu, (la & X86_PAGE_MASK) + X86_PAGE_SIZE, ACC_WRITE, user, &gpa);
    }
}

void x86_lin_read(struct x86_cpu *cpu, uint64_t la, void *buf, unsigned len, bool sys)
{
    lin_access(cpu, la, buf, len, false, sys);
}

void x86_lin_write(struct x86_cpu *cpu, uint64_t la, const void *buf, unsigned len, bool sys)
{
    probe_write(cpu, la, len, sys);
    lin_access(cpu, la, (uint8_t *)buf, len, true, sys);
}

uint64_t x86_lin_read_n(struct x86_cpu *cpu, uint64_t la, unsigned size, bool sys)
{
    uint64_t v = 0;

    x86_lin_read(cpu, la, &v, size, sys);
    return v;
}

void x86_lin_write_n(struct x86_cpu *cpu, uint64_t la, uint64_t v, unsigned size, bool sys)
{
    x86_lin_write(cpu, la, &v, size, sys);
}

uint64_t x86_linear(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned addrsize)
{
    uint64_t la;

    if (x86_mode64(cpu)) {
        la = off;
        if (seg == X86_FS || seg == X86_GS)
            la += cpu->seg[seg].base;
        if (!x86_canonical(la))
            x86_raise(cpu, seg == X86_SS ? X86_EXC_SS : X86_EXC_GP, 0, true);
        return la;
    }
    (void)addrsize;
    return (cpu->seg[seg].base + off) & 0xffffffffu;
}

uint64_t x86_mem_read(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size)
{
    uint64_t la = x86_linear(cpu, seg, off, 8);
    struct x86_internal *in = x86_in(cpu);

    if (!x86_mode64(cpu))
        x86_seg_check(cpu, seg, off, size, false);
    if ((la & 0xfff) + size <= X86_PAGE_SIZE) {
        struct x86_tlb_entry *t = &in->tlb[(la >> 12) % X86_TLB_SIZE];
        uint64_t tag = (la & X86_PAGE_MASK) | (x86_cpl(cpu) == 3 ? 2 : 0) | 1;
        if (t->tag[ACC_READ] == tag) {
            uint64_t v = 0;
            memcpy(&v, t->hva + (la & 0xfff), size);
            return v;
        }
    }
    return x86_lin_read_n(cpu, la, size, false);
}

void x86_mem_write(struct x86_cpu *cpu, unsigned seg, uint64_t off, uint64_t v, unsigned size)
{
    uint64_t la = x86_linear(cpu, seg, off, 8);
    struct x86_internal *in = x86_in(cpu);

    if (!x86_mode64(cpu))
        x86_seg_check(cpu, seg, off, size, true);
    if ((la & 0xfff) + size <= X86_PAGE_SIZE) {
        struct x86_tlb_entry *t = &in->tlb[(la >> 12) % X86_TLB_SIZE];
        uint64_t tag = (la & X86_PAGE_MASK) | (x86_cpl(cpu) == 3 ? 2 : 0) | 1;
        if (t->tag[ACC_WRITE] == tag) {
            memcpy(t->hva + (la & 0xfff), &v, size);
            x86_mark_dirty(cpu, t->gpa);
            return;
        }
    }
    x86_lin_write_n(cpu, la, v, size, false);
}

/* The read half of a read-modify-write: faults as a write, as hardware does. */
uint64_t x86_mem_read_rmw(struct x86_cpu *cpu, unsigned seg, uint64_t off, unsigned size)
{
    uint64_t la = x86_linear(cpu, seg, off, 8), gpa, v = 0;
    struct x86_internal *in = x86_in(cpu);
    bool user = x86_cpl(cpu) == 3;

    if (!x86_mode64(cpu))
        x86_seg_check(cpu, seg, off, size, true);
    if ((la & 0xfff) + size <= X86_PAGE_SIZE) {
        struct x86_tlb_entry *t = &in->tlb[(la >> 12) % X86_TLB_SIZE];
        if (t->tag[ACC_WRITE] == ((la & X86_PAGE_MASK) | (user ? 2 : 0) | 1)) {
            memcpy(&v, t->hva + (la & 0xfff), size);
            return v;
        }
    }
    if (!x86_long_mode(cpu))
        la &= 0xffffffffu;
    x86_page_ptr(cpu, la, ACC_WRITE, user, &gpa);
    if ((la & 0xfff) + size > X86_PAGE_SIZE)
        x86_page_ptr(cpu, (la & X86_PAGE_MASK) + X86_PAGE_SIZE, ACC_WRITE, user, &gpa);
    x86_lin_read(cpu, la, &v, size, false);
    return v;
}
