/* difftest-fuzz.c: random bytes fed to the interpreter in 64-bit mode (CPL 0
 * and 3), compatibility mode, 32-bit protected mode and real mode, with an IDT
 * that catches every vector and MMIO/PIO that accept anything: whatever the
 * bytes do, the process must not crash (ASan/UBSan). */
#include "difftest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "x86-cpu.h"

#define LOW_SIZE 0x100000ull /* real mode's first MiB, at GPA 0 */
#define RM_CODE 0x10000ull   /* SIPI vector 0x10 */
#define RM_HANDLER 0x500ull

/* The modes each byte string runs in. */
enum fuzz_mode { FZ_LONG, FZ_USER, FZ_COMPAT, FZ_PROT, FZ_REAL, FZ_NR_MODES };
static const char *const fuzz_mode_names[FZ_NR_MODES] = {
    "64-bit", "64-bit CPL3", "compat", "32-bit", "16-bit",
};

struct fuzz {
    struct x86_memory mem;
    uint8_t *low, *high;
    struct dt_rng rng;
    uint64_t tsc;
};

static void fz_pio(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
    (void)opaque, (void)port;
    if (!is_write)
        memset(data, 0xa5, size);
}

static void fz_mmio(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool is_write)
{
    if (size == 0 || size > 8 || ((gpa & 0xfff) + size > 0x1000)) {
        fprintf(stderr, "difftest: decode-fuzz: bad mmio access %#" PRIx64 " size %u\n", gpa, size);
        abort();
    }
    (void)opaque;
    if (!is_write)
        memset(data, 0x5a, size);
}

static bool fz_rdmsr(void *opaque, uint32_t msr, uint64_t *value)
{
    struct fuzz *f = opaque;

    *value = dt_rng_next(&f->rng);
    return msr & 1;
}

static bool fz_wrmsr(void *opaque, uint32_t msr, uint64_t value)
{
    (void)opaque, (void)value;
    return msr & 1;
}

static void fz_cpuid(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    (void)opaque;
    out[0] = leaf;
    out[1] = subleaf;
    out[2] = out[3] = 0;
}

static uint64_t fz_rdtsc(void *opaque)
{
    struct fuzz *f = opaque;
    return f->tsc += 1000;
}

static int fz_irq_ack(void *opaque)
{
    (void)opaque;
    return -1;
}

static void fz_set_tpr(void *opaque, uint8_t tpr)
{
    (void)opaque, (void)tpr;
}

static const struct x86_cpu_ops fz_ops = {
    .pio = fz_pio,
    .mmio = fz_mmio,
    .rdmsr = fz_rdmsr,
    .wrmsr = fz_wrmsr,
    .cpuid = fz_cpuid,
    .rdtsc = fz_rdtsc,
    .irq_ack = fz_irq_ack,
    .set_tpr = fz_set_tpr,
};

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void protected_mode(struct fuzz *f, struct x86_cpu *cpu)
{
    struct x86_segment data = {
        .limit = 0xffffffff,
        .selector = 0x10,
        .type = 3,
        .present = 1,
        .s = 1,
        .db = 1,
        .g = 1,
    };
    uint8_t *h = f->high;

    memset(h + (DT_GDT - DT_BASE), 0, 0x2000);
    put64(h + (DT_GDT - DT_BASE) + 0x08, 0x00cf9a000000ffffull);
    put64(h + (DT_GDT - DT_BASE) + 0x10, 0x00cf92000000ffffull);
    for (unsigned v = 0; v < 256; v++) {
        uint64_t a = DT_HANDLERS + v;
        put64(h + (DT_IDT - DT_BASE) + 8 * v,
              (a & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((a >> 16 & 0xffff) << 48));
    }
    cpu->cr0 = CR0_PE | CR0_ET;
    cpu->cr4 = 0;
    cpu->efer = 0;
    cpu->seg[X86_CS] = (struct x86_segment){
        .limit = 0xffffffff,
        .selector = 0x08,
        .type = 0xb,
        .present = 1,
        .s = 1,
        .db = 1,
        .g = 1,
    };
    cpu->seg[X86_DS] = cpu->seg[X86_ES] = cpu->seg[X86_SS] = data;
    cpu->seg[X86_FS] = cpu->seg[X86_GS] = data;
    cpu->seg[X86_TR] = (struct x86_segment){
        .base = DT_BASE + 0x7000,
        .limit = 0x67,
        .type = 0xb,
        .present = 1,
    };
    cpu->seg[X86_LDTR] = (struct x86_segment){ .unusable = 1 };
    cpu->gdt = (struct x86_dtable){ .base = DT_GDT, .limit = 0x17 };
    cpu->idt = (struct x86_dtable){ .base = DT_IDT, .limit = 0x7ff };
}

/* CPL 3 in 64-bit mode: user segments, user pages, an RSP0 for the way back. */
static void user_mode(struct fuzz *f, struct x86_cpu *cpu)
{
    uint8_t *h = f->high;

    put64(h + (DT_GDT - DT_BASE) + 0x20, 0x00cff2000000ffffull); /* user data */
    put64(h + (DT_GDT - DT_BASE) + 0x28, 0x0020fa0000000000ull); /* user code 64 */
    put64(h + 0x7000 + 4, DT_STACK_TOP - 0x400);                 /* TSS.RSP0 */
    for (uint64_t a = DT_PML4; a < DT_PT + 0x1000; a += 8) {
        uint64_t e;
        if (a >= DT_GDT && a < DT_PT)
            continue;
        memcpy(&e, h + (a - DT_BASE), 8);
        if (e & 1)
            put64(h + (a - DT_BASE), e | 4); /* U on every level */
    }
    cpu->gdt.limit = 0x2f;
    cpu->seg[X86_CS].selector = 0x2b;
    cpu->seg[X86_CS].dpl = 3;
    for (unsigned s = X86_ES; s <= X86_GS; s++) {
        if (s == X86_CS)
            continue;
        cpu->seg[s].selector = 0x23;
        cpu->seg[s].dpl = 3;
    }
}

static uint64_t fuzz_val(struct fuzz *f, enum fuzz_mode mode)
{
    uint64_t r = dt_rng_next(&f->rng);

    switch (r & 3) {
    case 0:
        return r >> 56;
    case 1:
        return mode == FZ_REAL ? (r >> 16) & 0xffff : DT_BASE + ((r >> 8) % DT_SIZE);
    case 2:
        return mode <= FZ_USER ? r : r >> 32;
    default:
        return (uint64_t) - (int64_t)((r >> 8) & 0xff);
    }
}

/* One run of (bytes) in (mode); returns instructions retired. */
static uint64_t fuzz_one(struct fuzz *f, enum fuzz_mode mode, const uint8_t *bytes, bool verbose)
{
    struct x86_cpu cpu;
    uint64_t code;
    enum x86_exit ex;

    memset(&cpu, 0, sizeof(cpu));
    x86_cpu_init(&cpu, &f->mem, &fz_ops, f, 0);
    dt_emu_build_tables(f->high);
    memset(f->low, 0, 0x1000);
    for (unsigned v = 0; v < 256; v++) {
        uint32_t vec = RM_HANDLER; /* 0000:0500 */
        memcpy(f->low + 4 * v, &vec, 4);
    }
    f->low[RM_HANDLER] = 0xf4;
    if (mode <= FZ_COMPAT) {
        dt_emu_long_mode(&cpu);
        if (mode == FZ_USER)
            user_mode(f, &cpu);
        if (mode == FZ_COMPAT) {
            cpu.seg[X86_CS].l = 0;
            cpu.seg[X86_CS].db = 1;
        }
        code = DT_CODE;
    } else if (mode == FZ_PROT) {
        protected_mode(f, &cpu);
        code = DT_CODE;
    } else {
        x86_cpu_sipi(&cpu, (uint8_t)(RM_CODE >> 12));
        code = RM_CODE;
    }
    uint8_t *p = code >= DT_BASE ? f->high + (code - DT_BASE) : f->low + code;
    for (unsigned i = 0; i < 64; i++)
        p[i] = (uint8_t)dt_rng_next(&f->rng);
    memcpy(p, bytes, 15);
    p[15] = 0xf4;
    x86_cpu_code_written(&cpu, code, 64);
    for (unsigned r = 0; r < 16; r++)
        if (r != X86_RSP)
            cpu.regs[r] = fuzz_val(f, mode);
    if (mode != FZ_REAL) {
        cpu.rip = code;
        cpu.regs[X86_RSP] = DT_STACK_TOP;
        x86_cpu_set_rflags(&cpu, 0x2 | (dt_rng_next(&f->rng) & 0x8d5));
    } else {
        cpu.regs[X86_RSP] = 0x8000;
    }
    x86_cpu_state_changed(&cpu);
    if (verbose) {
        /* before running: if the interpreter dies, the last line names the culprit */
        printf("  %-11s:", fuzz_mode_names[mode]);
        for (unsigned i = 0; i < 15; i++)
            printf(" %02x", bytes[i]);
        fflush(stdout);
    }
    ex = x86_cpu_run(&cpu, 200);
    if (verbose)
        printf(" -> exit %d after %" PRIu64 " instructions, rip %#" PRIx64 "\n", ex, cpu.insns,
               cpu.rip);
    uint64_t n = cpu.insns;
    x86_cpu_destroy(&cpu);
    return n;
}

uint64_t dt_decode_fuzz(uint64_t seed, unsigned count, bool verbose)
{
    struct fuzz f;
    uint64_t total = 0;
    size_t words = (size_t)(((DT_BASE + DT_SIZE) >> 12) + 63) / 64;

    memset(&f, 0, sizeof(f));
    dt_rng_seed(&f.rng, seed);
    f.low = calloc(1, LOW_SIZE);
    f.high = calloc(1, DT_SIZE);
    f.mem.dirty = calloc(words, sizeof(unsigned long));
    if (!f.low || !f.high || !f.mem.dirty) {
        fprintf(stderr, "difftest: out of memory\n");
        exit(2);
    }
    f.mem.ram[0] = (struct x86_ram){ .gpa = 0, .size = LOW_SIZE, .hva = f.low };
    f.mem.ram[1] = (struct x86_ram){ .gpa = DT_BASE, .size = DT_SIZE, .hva = f.high };
    f.mem.nr_ram = 2;
    f.mem.nr_gfns = (DT_BASE + DT_SIZE) >> 12;

    for (unsigned i = 0; i < count; i++) {
        uint8_t bytes[15];
        for (unsigned k = 0; k < 15; k++)
            bytes[k] = (uint8_t)dt_rng_next(&f.rng);
        /* now and then a likely prefix or escape first, to reach deeper tables */
        if (dt_rng_below(&f.rng, 4) == 0) {
            static const uint8_t lead[] = { 0x0f, 0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x48, 0x41,
                                            0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xc4, 0xc5 };
            bytes[0] = lead[dt_rng_below(&f.rng, sizeof(lead))];
        }
        for (unsigned m = 0; m < FZ_NR_MODES; m++)
            total += fuzz_one(&f, (enum fuzz_mode)m, bytes, verbose);
    }
    free(f.low);
    free(f.high);
    free(f.mem.dirty);
    return total;
}
