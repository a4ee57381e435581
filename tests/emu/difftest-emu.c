/* difftest-emu.c: the differential tester's interpreted side: a 64-bit guest
 * with the window of difftest.h identity-mapped by 2 MiB pages, an IDT whose
 * every vector halts, and the sequence followed by a hlt. */
#include "difftest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "x86-cpu.h"

struct dt_emu {
    struct x86_cpu cpu;
    struct x86_memory mem;
    uint8_t *ram;
    uint32_t last_len;
};

static void ops_pio(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
    (void)opaque, (void)port;
    if (!is_write)
        memset(data, 0xff, size);
}

static void ops_mmio(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool is_write)
{
    (void)opaque, (void)gpa;
    if (!is_write)
        memset(data, 0xff, size);
}

static bool ops_rdmsr(void *opaque, uint32_t msr, uint64_t *value)
{
    (void)opaque, (void)msr;
    *value = 0;
    return false;
}

static bool ops_wrmsr(void *opaque, uint32_t msr, uint64_t value)
{
    (void)opaque, (void)msr, (void)value;
    return false;
}

static void ops_cpuid(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    (void)opaque, (void)leaf, (void)subleaf;
    memset(out, 0, 16);
}

static uint64_t ops_rdtsc(void *opaque)
{
    (void)opaque;
    return 0;
}

static int ops_irq_ack(void *opaque)
{
    (void)opaque;
    return -1;
}

static const struct x86_cpu_ops dt_ops = {
    .pio = ops_pio,
    .mmio = ops_mmio,
    .rdmsr = ops_rdmsr,
    .wrmsr = ops_wrmsr,
    .cpuid = ops_cpuid,
    .rdtsc = ops_rdtsc,
    .irq_ack = ops_irq_ack,
};

static void put64(uint8_t *ram, uint64_t gpa, uint64_t v)
{
    memcpy(ram + (gpa - DT_BASE), &v, 8);
}

/* Page tables, GDT, IDT and the halting handlers: rebuilt before every
 * sequence so nothing a previous one did can leak into the next. */
void dt_emu_build_tables(uint8_t *ram)
{
    memset(ram, 0, 0x6000);
    memset(ram + (DT_PT - DT_BASE), 0, 0x1000);
    put64(ram, DT_PML4, DT_PDPT | 0x3);
    put64(ram, DT_PDPT, DT_PD | 0x3);
    for (uint64_t a = DT_BASE; a < DT_BASE + DT_SIZE; a += 0x200000)
        put64(ram, DT_PD + 8 * (a >> 21), a | 0x83);
    /* the first 2 MiB by 4 KiB pages, to leave the hole out */
    put64(ram, DT_PD + 8 * (DT_BASE >> 21), DT_PT | 0x3);
    for (uint64_t a = DT_BASE; a < DT_BASE + 0x200000; a += 0x1000)
        put64(ram, DT_PT + 8 * ((a >> 12) & 511), a == DT_HOLE ? 0 : a | 0x3);
    put64(ram, DT_GDT + 0x10, 0x00209a0000000000ull); /* 64-bit code */
    put64(ram, DT_GDT + 0x18, 0x00cf92000000ffffull); /* data */
    for (unsigned v = 0; v < 256; v++) {
        uint64_t h = DT_HANDLERS + v;
        uint64_t lo = (h & 0xffff) | (0x10ull << 16) | (0x8eull << 40) | ((h >> 16 & 0xffff) << 48);
        put64(ram, DT_IDT + 16 * v, lo);
        put64(ram, DT_IDT + 16 * v + 8, h >> 32);
        ram[DT_HANDLERS - DT_BASE + v] = 0xf4; /* hlt */
    }
}

struct dt_emu *dt_emu_new(void)
{
    struct dt_emu *e = calloc(1, sizeof(*e));

    if (!e || posix_memalign((void **)&e->ram, 4096, DT_SIZE)) {
        fprintf(stderr, "difftest: out of memory\n");
        exit(2);
    }
    memset(e->ram, 0, DT_SIZE);
    e->mem.ram[0] = (struct x86_ram){ .gpa = DT_BASE, .size = DT_SIZE, .hva = e->ram };
    e->mem.nr_ram = 1;
    x86_cpu_init(&e->cpu, &e->mem, &dt_ops, e, 0);
    return e;
}

void dt_emu_free(struct dt_emu *e)
{
    x86_cpu_destroy(&e->cpu);
    free(e->ram);
    free(e);
}

void dt_emu_long_mode(struct x86_cpu *cpu)
{
    struct x86_segment data = {
        .limit = 0xffffffff,
        .selector = 0x18,
        .type = 3,
        .present = 1,
        .s = 1,
        .db = 1,
        .g = 1,
    };

    cpu->cr0 = 0x80050033;
    cpu->cr4 = 0x20;
    cpu->efer = 0xd01;
    cpu->cr3 = DT_PML4;
    cpu->seg[X86_CS] = (struct x86_segment){
        .limit = 0xffffffff,
        .selector = 0x10,
        .type = 0xb,
        .present = 1,
        .s = 1,
        .l = 1,
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
    cpu->gdt = (struct x86_dtable){ .base = DT_GDT, .limit = 0x1f };
    cpu->idt = (struct x86_dtable){ .base = DT_IDT, .limit = 0xfff };
}

static bool has_error_code(int v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

bool dt_emu_run(struct dt_emu *e, const struct dt_seq *seq, const struct dt_state *init,
                struct dt_state *out, const char **why)
{
    struct x86_cpu *cpu = &e->cpu;
    uint8_t *ram = e->ram;
    uint64_t end = DT_CODE + seq->len + 1;
    enum x86_exit ex = X86_EXIT_BUDGET;

    dt_emu_build_tables(ram);
    memcpy(ram + (DT_SCRATCH - DT_BASE), init->scratch, DT_SCRATCH_SIZE);
    memcpy(ram + (DT_STACK - DT_BASE), init->stack, DT_STACK_SIZE);
    memcpy(ram + (DT_CODE - DT_BASE), seq->code, seq->len);
    ram[DT_CODE - DT_BASE + seq->len] = 0xf4;
    x86_cpu_code_written(cpu, DT_CODE, (seq->len > e->last_len ? seq->len : e->last_len) + 1);
    e->last_len = seq->len;

    dt_emu_long_mode(cpu);
    if (seq->mode32) {
        cpu->seg[X86_CS].l = 0; /* compatibility mode, as the native side's CS 0x23 */
        cpu->seg[X86_CS].db = 1;
    }
    memcpy(cpu->regs, init->regs, sizeof(cpu->regs));
    cpu->rip = DT_CODE;
    cpu->halted = false;
    cpu->interrupt_shadow = false;
    cpu->nmi_pending = false;
    cpu->exit_request = 0;
    cpu->irq_request = 0;
    x86_cpu_set_rflags(cpu, init->rflags);
    x86_cpu_state_changed(cpu);

    for (int i = 0; i < 20 && ex == X86_EXIT_BUDGET; i++)
        ex = x86_cpu_run(cpu, 100000);

    memset(out, 0, sizeof(*out));
    memcpy(out->regs, cpu->regs, sizeof(out->regs));
    out->rflags = x86_cpu_get_rflags(cpu);
    out->rip = cpu->rip;
    out->fault = -1;
    memcpy(out->scratch, ram + (DT_SCRATCH - DT_BASE), DT_SCRATCH_SIZE);
    memcpy(out->stack, ram + (DT_STACK - DT_BASE), DT_STACK_SIZE);
    if (ex != X86_EXIT_HLT) {
        *why = ex == X86_EXIT_TRIPLE_FAULT ? "triple fault" : "did not halt (runaway)";
        return false;
    }
    if (cpu->rip == end)
        return true;
    if (cpu->rip > DT_HANDLERS && cpu->rip <= DT_HANDLERS + 256) {
        int v = (int)(cpu->rip - DT_HANDLERS - 1);
        uint64_t sp = cpu->regs[X86_RSP] + (has_error_code(v) ? 8 : 0), f[5];
        if (sp < DT_BASE || sp + 40 > DT_BASE + DT_SIZE) {
            *why = "exception frame outside RAM";
            return false;
        }
        memcpy(f, ram + (sp - DT_BASE), 40);
        if (has_error_code(v)) {
            uint64_t err;
            memcpy(&err, ram + (sp - 8 - DT_BASE), 8);
            out->err = (uint32_t)err;
        }
        if (v == 14)
            out->cr2 = cpu->cr2;
        out->fault = v;
        out->rip = f[0];
        out->rflags = f[2];
        out->regs[X86_RSP] = f[3];
        return true;
    }
    *why = "halted at an unexpected rip";
    return false;
}
