/* test-x86-cpu.c: unit tests of the software x86-64 CPU: paging and its TLB,
 * exception and interrupt delivery, hlt, restartable rep movs, lock
 * atomicity across two CPUs, real to protected to long mode, dirty logging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "x86-cpu.h"

/* Guest-physical layout (RAM from 0); low addresses are identity-mapped. */
#define RAM_SIZE (8u << 20)
#define PML4 0x1000u
#define PDPT 0x2000u
#define PD 0x3000u
#define PT 0x4000u /* 4 KiB pages for 0..2 MiB */
#define GDT 0x8000u
#define IDT 0x9000u
#define TSS 0xa000u
#define HANDLERS 0xb000u /* vector v: a hlt at HANDLERS + v */
#define CODE 0x10000u
#define STACK_TOP 0x70000u
#define RSP0_TOP 0x80000u
#define IST1_TOP 0x90000u

#define SEL_KCODE 0x10
#define SEL_KDATA 0x18
#define SEL_UDATA 0x23
#define SEL_UCODE 0x2b
#define SEL_TSS 0x30

#define PTE_P 0x1ull
#define PTE_W 0x2ull
#define PTE_U 0x4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_PS 0x80ull
#define PTE_NX (1ull << 63)

struct tvm {
    struct x86_cpu cpu;
    struct x86_memory mem;
    uint8_t *ram;
    int pending_irq; /* what irq_ack hands out once; -1: nothing */
    unsigned acks;
    uint64_t ack_rip; /* rip when the interrupt was acknowledged */
    unsigned mmio_reads, kick_after;
};

/* ---- the fake machine ---- */

static void t_pio(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
    (void)opaque, (void)port;
    if (!is_write)
        memset(data, 0xff, size);
}

/* MMIO reads return a pattern of the address; a read may ask the CPU to stop. */
static void t_mmio(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool is_write)
{
    struct tvm *vm = opaque;

    if (is_write)
        return;
    for (unsigned i = 0; i < size; i++)
        data[i] = (uint8_t)((gpa + i) ^ 0x5a);
    if (++vm->mmio_reads == vm->kick_after)
        __atomic_store_n(&vm->cpu.exit_request, 1, __ATOMIC_SEQ_CST);
}

static bool t_rdmsr(void *opaque, uint32_t msr, uint64_t *value)
{
    (void)opaque, (void)msr;
    *value = 0;
    return false;
}

static bool t_wrmsr(void *opaque, uint32_t msr, uint64_t value)
{
    (void)opaque, (void)msr, (void)value;
    return false;
}

static void t_cpuid(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    (void)opaque, (void)leaf, (void)subleaf;
    memset(out, 0, 16);
}

static uint64_t t_rdtsc(void *opaque)
{
    (void)opaque;
    return 0;
}

static int t_irq_ack(void *opaque)
{
    struct tvm *vm = opaque;
    int v = vm->pending_irq;

    vm->acks++;
    vm->ack_rip = vm->cpu.rip;
    vm->pending_irq = -1;
    __atomic_store_n(&vm->cpu.irq_request, 0, __ATOMIC_SEQ_CST);
    return v;
}

static const struct x86_cpu_ops t_ops = {
    .pio = t_pio,
    .mmio = t_mmio,
    .rdmsr = t_rdmsr,
    .wrmsr = t_wrmsr,
    .cpuid = t_cpuid,
    .rdtsc = t_rdtsc,
    .irq_ack = t_irq_ack,
};

static uint64_t rd64(struct tvm *vm, uint64_t gpa)
{
    uint64_t v;
    memcpy(&v, vm->ram + gpa, 8);
    return v;
}

static void wr64(struct tvm *vm, uint64_t gpa, uint64_t v)
{
    memcpy(vm->ram + gpa, &v, 8);
}

static uint32_t rd32(struct tvm *vm, uint64_t gpa)
{
    uint32_t v;
    memcpy(&v, vm->ram + gpa, 4);
    return v;
}

/* Page tables: 0..2 MiB by 4 KiB pages, 2..8 MiB by 2 MiB pages (all
 * identity, user, writable), and 1 GiB..2 GiB -> 0..1 GiB by one 1 GiB page. */
static void build_tables(struct tvm *vm)
{
    wr64(vm, PML4, PDPT | 7);
    wr64(vm, PDPT, PD | 7);
    wr64(vm, PDPT + 8, 0 | PTE_PS | 7);
    wr64(vm, PD, PT | 7);
    for (uint64_t i = 1; i < 4; i++)
        wr64(vm, PD + 8 * i, (i << 21) | PTE_PS | 7);
    for (uint64_t i = 0; i < 512; i++)
        wr64(vm, PT + 8 * i, (i << 12) | 7);

    wr64(vm, GDT + 0x10, 0x00209a0000000000ull);                          /* kernel code 64 */
    wr64(vm, GDT + 0x18, 0x00cf92000000ffffull);                          /* kernel data */
    wr64(vm, GDT + 0x20, 0x00cff2000000ffffull);                          /* user data */
    wr64(vm, GDT + 0x28, 0x0020fa0000000000ull);                          /* user code 64 */
    wr64(vm, GDT + 0x30, 0x67 | ((uint64_t)TSS << 16) | (0x89ull << 40)); /* 64-bit TSS */
    wr64(vm, GDT + 0x38, 0);
    wr64(vm, TSS + 4, RSP0_TOP);
    wr64(vm, TSS + 0x24, IST1_TOP);

    for (unsigned v = 0; v < 256; v++) {
        uint64_t h = HANDLERS + v;
        wr64(vm, IDT + 16 * v,
             (h & 0xffff) | ((uint64_t)SEL_KCODE << 16) | (0x8eull << 40) |
                 ((h >> 16 & 0xffff) << 48));
        wr64(vm, IDT + 16 * v + 8, h >> 32);
        vm->ram[HANDLERS + v] = 0xf4;
    }
}

static void long_mode(struct x86_cpu *cpu, bool user)
{
    struct x86_segment kdata = {
        .limit = 0xffffffff,
        .selector = SEL_KDATA,
        .type = 3,
        .present = 1,
        .s = 1,
        .db = 1,
        .g = 1,
    };
    struct x86_segment udata = kdata;

    udata.selector = SEL_UDATA;
    udata.dpl = 3;
    cpu->cr0 = 0x80050033;
    cpu->cr4 = 0x20;
    cpu->efer = 0xd01;
    cpu->cr3 = PML4;
    cpu->seg[X86_CS] = (struct x86_segment){
        .limit = 0xffffffff,
        .selector = SEL_KCODE,
        .type = 0xb,
        .present = 1,
        .s = 1,
        .l = 1,
        .g = 1,
    };
    if (user) {
        cpu->seg[X86_CS].selector = SEL_UCODE;
        cpu->seg[X86_CS].dpl = 3;
    }
    cpu->seg[X86_DS] = cpu->seg[X86_ES] = cpu->seg[X86_SS] = user ? udata : kdata;
    cpu->seg[X86_FS] = cpu->seg[X86_GS] = user ? udata : kdata;
    cpu->seg[X86_TR] = (struct x86_segment){
        .base = TSS,
        .limit = 0x67,
        .selector = SEL_TSS,
        .type = 0xb,
        .present = 1,
    };
    cpu->seg[X86_LDTR] = (struct x86_segment){ .unusable = 1 };
    cpu->gdt = (struct x86_dtable){ .base = GDT, .limit = 0x3f };
    cpu->idt = (struct x86_dtable){ .base = IDT, .limit = 0xfff };
    cpu->rip = CODE;
    cpu->regs[X86_RSP] = STACK_TOP;
    x86_cpu_set_rflags(cpu, 0x2);
    x86_cpu_state_changed(cpu);
}

static struct tvm *tvm_new(void **state)
{
    struct tvm *vm = calloc(1, sizeof(*vm));

    assert_non_null(vm);
    assert_int_equal(posix_memalign((void **)&vm->ram, 4096, RAM_SIZE), 0);
    memset(vm->ram, 0, RAM_SIZE);
    vm->mem.ram[0] = (struct x86_ram){ .gpa = 0, .size = RAM_SIZE, .hva = vm->ram };
    vm->mem.nr_ram = 1;
    vm->mem.nr_gfns = RAM_SIZE >> 12;
    vm->pending_irq = -1;
    x86_cpu_init(&vm->cpu, &vm->mem, &t_ops, vm, 0);
    build_tables(vm);
    *state = vm; /* the teardown frees it, even after a failed assertion */
    return vm;
}

static int tvm_teardown(void **state)
{
    struct tvm *vm = *state;

    if (vm) {
        x86_cpu_destroy(&vm->cpu);
        free(vm->mem.dirty);
        free(vm->ram);
        free(vm);
    }
    *state = NULL;
    return 0;
}

/* A 64-bit guest at CPL0 (or 3) about to run (code) at CODE. */
static struct tvm *tvm_long(void **state, const uint8_t *code, size_t len, bool user)
{
    struct tvm *vm = tvm_new(state);

    memcpy(vm->ram + CODE, code, len);
    long_mode(&vm->cpu, user);
    return vm;
}

static enum x86_exit run(struct tvm *vm)
{
    enum x86_exit ex;
    int n = 0;

    do
        ex = x86_cpu_run(&vm->cpu, 1000000);
    while (ex == X86_EXIT_BUDGET && ++n < 10);
    return ex;
}

struct frame {
    int vector;
    uint64_t err, rip, cs, rflags, rsp, ss;
};

static bool has_err(int v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17;
}

/* The CPU halted in a handler: which vector, and the frame it pushed. */
static struct frame frame_of(struct tvm *vm)
{
    struct frame f = { .vector = -1 };
    uint64_t sp = vm->cpu.regs[X86_RSP];

    assert_in_range(vm->cpu.rip, HANDLERS + 1, HANDLERS + 256);
    f.vector = (int)(vm->cpu.rip - HANDLERS - 1);
    if (has_err(f.vector)) {
        f.err = rd64(vm, sp);
        sp += 8;
    }
    f.rip = rd64(vm, sp);
    f.cs = rd64(vm, sp + 8);
    f.rflags = rd64(vm, sp + 16);
    f.rsp = rd64(vm, sp + 24);
    f.ss = rd64(vm, sp + 32);
    return f;
}

/* ---- paging ---- */

static void test_paging_sizes_and_ad_bits(void **state)
{
    static const uint8_t code[] = {
        0x48, 0xb8, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, /* mov rax, 0x1111.. */
        0x48, 0x89, 0x04, 0x25, 0x08, 0xf0, 0x1f, 0x00,             /* mov [0x1ff008], rax (4K) */
        0x48, 0xb8, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
        0x48, 0x89, 0x04, 0x25, 0x10, 0x00, 0x80, 0x00, /* mov [0x800010], rax (2M) */
        0x48, 0xb8, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
        0x48, 0x89, 0x04, 0x25, 0x18, 0x00, 0x50, 0x40, /* mov [0x40500018], rax (1G) */
        0x48, 0x8b, 0x1c, 0x25, 0x08, 0xf0, 0x1f, 0x00, /* mov rbx, [0x1ff008] */
        0x48, 0x8b, 0x0c, 0x25, 0x00, 0xe0, 0x1f, 0x00, /* mov rcx, [0x1fe000] (read only) */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);

    wr64(vm, PT + 8 * 0x1ff, 0x300000 | 7);      /* VA 0x1ff000 -> 0x300000 */
    wr64(vm, PD + 8 * 4, 0x400000 | PTE_PS | 7); /* VA 0x800000 -> 0x400000 */
    wr64(vm, PT + 8 * 0x1fe, 0x1fe000 | 7);
    wr64(vm, 0x1fe000, 0x4444);
    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(vm->cpu.rip, CODE + sizeof(code));
    assert_int_equal(rd64(vm, 0x300008), 0x1111111111111111ull);
    assert_int_equal(rd64(vm, 0x400010), 0x2222222222222222ull);
    assert_int_equal(rd64(vm, 0x500018), 0x3333333333333333ull);
    assert_int_equal(vm->cpu.regs[X86_RBX], 0x1111111111111111ull);
    assert_int_equal(vm->cpu.regs[X86_RCX], 0x4444);

    /* A on every level walked; D on the written leaves only */
    assert_true(rd64(vm, PML4) & PTE_A);
    assert_true(rd64(vm, PDPT) & PTE_A);
    assert_true(rd64(vm, PD) & PTE_A);
    assert_int_equal(rd64(vm, PT + 8 * 0x1ff) & (PTE_A | PTE_D), PTE_A | PTE_D);
    assert_int_equal(rd64(vm, PD + 8 * 4) & (PTE_A | PTE_D), PTE_A | PTE_D);
    assert_int_equal(rd64(vm, PDPT + 8) & (PTE_A | PTE_D), PTE_A | PTE_D);
    assert_int_equal(rd64(vm, PT + 8 * 0x1fe) & (PTE_A | PTE_D), PTE_A);
    assert_int_equal(rd64(vm, PT + 8 * 0x1fd) & (PTE_A | PTE_D), 0); /* untouched */
}

static void test_paging_write_protect(void **state)
{
    static const uint8_t code[] = {
        0xc7, 0x04, 0x25, 0x10, 0xd0, 0x1f,
        0x00, 0x01, 0x00, 0x00, 0x00, /* mov dword [0x1fd010], 1 */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    wr64(vm, PT + 8 * 0x1fd, 0x1fd000 | PTE_P | PTE_U); /* read-only */
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 14);
    assert_int_equal(f.err, 0x3); /* P | W */
    assert_int_equal(vm->cpu.cr2, 0x1fd010);
    assert_int_equal(f.rip, CODE);
    assert_int_equal(rd32(vm, 0x1fd010), 0);
}

static void test_paging_nx_fetch(void **state)
{
    static const uint8_t code[] = {
        0x48, 0xc7, 0xc0, 0x00, 0xc0, 0x1f, 0x00, /* mov rax, 0x1fc000 */
        0xff, 0xe0,                               /* jmp rax */
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    wr64(vm, PT + 8 * 0x1fc, 0x1fc000 | 7 | PTE_NX);
    vm->ram[0x1fc000] = 0xf4;
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 14);
    assert_int_equal(f.err, 0x11); /* P | I/D */
    assert_int_equal(vm->cpu.cr2, 0x1fc000);
    assert_int_equal(f.rip, 0x1fc000);
}

/* A user read of a supervisor page: #PF(P|U), delivered on the TSS's RSP0 stack. */
static void test_paging_user_supervisor_rsp0(void **state)
{
    static const uint8_t code[] = {
        0x48, 0x8b, 0x04, 0x25, 0x00, 0xb0, 0x1f, 0x00, /* mov rax, [0x1fb000] */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), true);
    struct frame f;

    wr64(vm, PT + 8 * 0x1fb, 0x1fb000 | PTE_P | PTE_W); /* supervisor */
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 14);
    assert_int_equal(f.err, 0x5); /* P | U, a read */
    assert_int_equal(vm->cpu.cr2, 0x1fb000);
    assert_int_equal(f.rip, CODE);
    assert_int_equal(f.cs, SEL_UCODE);
    assert_int_equal(f.ss, SEL_UDATA);
    assert_int_equal(f.rsp, STACK_TOP);
    assert_int_equal(vm->cpu.regs[X86_RSP], RSP0_TOP - 48);
    assert_int_equal(vm->cpu.seg[X86_CS].selector, SEL_KCODE);
}

/* A changed PTE is seen only after invlpg or a CR3 reload. */
static void test_paging_tlb(void **state)
{
    static const uint8_t code[] = {
        0x48, 0x8b, 0x04, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* mov rax, [0x1fa000] */
        0x48, 0xc7, 0x04, 0x25, 0xd0, 0x4f, 0x00, 0x00,
        0x07, 0x10, 0x31, 0x00,                         /* pte -> 0x311000 */
        0x48, 0x8b, 0x1c, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* mov rbx, [0x1fa000] */
        0x0f, 0x01, 0x3c, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* invlpg [0x1fa000] */
        0x48, 0x8b, 0x0c, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* mov rcx, [0x1fa000] */
        0x48, 0xc7, 0x04, 0x25, 0xd0, 0x4f, 0x00, 0x00,
        0x07, 0x00, 0x31, 0x00,                         /* pte -> 0x310000 */
        0x48, 0x8b, 0x14, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* mov rdx, [0x1fa000] */
        0x0f, 0x20, 0xde,                               /* mov rsi, cr3 */
        0x0f, 0x22, 0xde,                               /* mov cr3, rsi */
        0x48, 0x8b, 0x3c, 0x25, 0x00, 0xa0, 0x1f, 0x00, /* mov rdi, [0x1fa000] */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);

    wr64(vm, PT + 8 * 0x1fa, 0x310000 | 7);
    wr64(vm, 0x310000, 0xaaaa);
    wr64(vm, 0x311000, 0xbbbb);
    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(vm->cpu.rip, CODE + sizeof(code));
    assert_int_equal(vm->cpu.regs[X86_RAX], 0xaaaa);
    assert_int_equal(vm->cpu.regs[X86_RBX], 0xaaaa); /* stale: not flushed yet */
    assert_int_equal(vm->cpu.regs[X86_RCX], 0xbbbb); /* after invlpg */
    assert_int_equal(vm->cpu.regs[X86_RDX], 0xbbbb); /* stale again */
    assert_int_equal(vm->cpu.regs[X86_RDI], 0xaaaa); /* after the CR3 reload */
}

/* ---- exceptions ---- */

static void test_exc_divide_error(void **state)
{
    static const uint8_t code[] = { 0x31, 0xc9, 0xf7, 0xf1, 0xf4 }; /* xor ecx,ecx; div ecx */
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 0);
    assert_int_equal(f.rip, CODE + 2);
    assert_int_equal(f.cs, SEL_KCODE);
    assert_int_equal(f.rsp, STACK_TOP);
    assert_int_equal(f.ss, SEL_KDATA);
    assert_true(f.rflags & 2);
    assert_int_equal(vm->cpu.regs[X86_RSP], STACK_TOP - 40);
}

static void test_exc_gp_error_code(void **state)
{
    static const uint8_t code[] = {
        0x66, 0xb8, 0x4b, 0x00, /* mov ax, 0x4b: index 9, beyond the GDT limit */
        0x8e, 0xd8,             /* mov ds, ax */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 13);
    assert_int_equal(f.err, 0x48);
    assert_int_equal(f.rip, CODE + 4);
    assert_int_equal(vm->cpu.regs[X86_RSP], STACK_TOP - 48);
}

static void test_exc_invalid_opcode(void **state)
{
    static const uint8_t code[] = { 0x90, 0x0f, 0xff, 0xf4 };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 6);
    assert_int_equal(f.rip, CODE + 1);
}

static void test_exc_ist_stack(void **state)
{
    static const uint8_t code[] = { 0xcc, 0xf4 }; /* int3 */
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    vm->ram[IDT + 16 * 3 + 4] = 1; /* vector 3 on IST1 */
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 3);
    assert_int_equal(f.rip, CODE + 1); /* a trap: after the int3 */
    assert_int_equal(f.rsp, STACK_TOP);
    assert_int_equal(vm->cpu.regs[X86_RSP], IST1_TOP - 40);
}

static void test_exc_triple_fault(void **state)
{
    static const uint8_t code[] = { 0x0f, 0xff }; /* #UD with no IDT: #GP, #DF, shutdown */
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);

    vm->cpu.idt.limit = 0;
    x86_cpu_state_changed(&vm->cpu);
    assert_int_equal(run(vm), X86_EXIT_TRIPLE_FAULT);
}

/* ---- interrupts and hlt ---- */

static void test_irq_sti_shadow(void **state)
{
    static const uint8_t code[] = {
        0xbb, 0x01, 0x00, 0x00, 0x00, /* mov ebx, 1 (IF = 0: nothing taken) */
        0xfb,                         /* sti */
        0xb9, 0x02, 0x00, 0x00, 0x00, /* mov ecx, 2 (in the sti shadow) */
        0xba, 0x03, 0x00, 0x00, 0x00, /* mov edx, 3: the interrupt comes before it */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    vm->pending_irq = 0x40;
    vm->cpu.irq_request = 1;
    vm->cpu.regs[X86_RDX] = 0x1234;
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 0x40);
    assert_int_equal(f.rip, CODE + 11);
    assert_true(f.rflags & X86_IF);
    assert_int_equal(x86_cpu_get_rflags(&vm->cpu) & X86_IF, 0); /* interrupt gate */
    assert_int_equal(vm->acks, 1);
    assert_int_equal(vm->cpu.regs[X86_RBX], 1);
    assert_int_equal(vm->cpu.regs[X86_RCX], 2);
    assert_int_equal(vm->cpu.regs[X86_RDX], 0x1234);
}

static void test_hlt_and_wakeup(void **state)
{
    static const uint8_t code[] = { 0xfb, 0x90, 0xf4, 0x90 }; /* sti; nop; hlt; nop */
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    struct frame f;

    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_true(vm->cpu.halted);
    assert_int_equal(vm->cpu.rip, CODE + 3);
    assert_int_equal(run(vm), X86_EXIT_HLT); /* still nothing to do */
    assert_int_equal(vm->cpu.rip, CODE + 3);
    assert_int_equal(vm->acks, 0);

    vm->pending_irq = 0x41;
    vm->cpu.irq_request = 1;
    assert_int_equal(run(vm), X86_EXIT_HLT);
    f = frame_of(vm);
    assert_int_equal(f.vector, 0x41);
    assert_int_equal(f.rip, CODE + 3); /* resumes after the hlt */
    assert_int_equal(vm->acks, 1);
}

/* rep movsb from MMIO, stopped by exit_request half way: it resumes where it
 * was. Long enough (16 KiB) that no interpreter may finish it in one step. */
#define MOVS_LEN 0x4000u
static void test_rep_movs_restartable(void **state)
{
    static const uint8_t code[] = {
        0xbe, 0x00, 0x00, 0x00, 0x50, /* mov esi, 0x50000000 (1 GiB page -> GPA 0x10000000: MMIO) */
        0xbf, 0x00, 0x00, 0x32, 0x00, /* mov edi, 0x320000 */
        0xb9, 0x00, 0x40, 0x00, 0x00, /* mov ecx, MOVS_LEN */
        0xfc,                         /* cld */
        0xf3, 0xa4,                   /* rep movsb */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    enum x86_exit ex;

    vm->kick_after = 100;
    ex = x86_cpu_run(&vm->cpu, 1000000);
    assert_int_equal(ex, X86_EXIT_KICK);
    assert_int_equal(vm->cpu.rip, CODE + 16);
    uint64_t left = vm->cpu.regs[X86_RCX];
    assert_in_range(left, 1, MOVS_LEN - 100);
    assert_int_equal(vm->mmio_reads, MOVS_LEN - left);
    assert_int_equal(vm->cpu.regs[X86_RSI], 0x50000000 + MOVS_LEN - left);
    assert_int_equal(vm->cpu.regs[X86_RDI], 0x320000 + MOVS_LEN - left);

    vm->cpu.exit_request = 0;
    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(vm->cpu.rip, CODE + sizeof(code));
    assert_int_equal(vm->cpu.regs[X86_RCX], 0);
    assert_int_equal(vm->mmio_reads, MOVS_LEN);
    for (unsigned i = 0; i < MOVS_LEN; i++)
        assert_int_equal(vm->ram[0x320000 + i], (uint8_t)((0x10000000 + i) ^ 0x5a));
}

/* ---- lock atomicity: two CPUs on one RAM ---- */

#define LOCK_LOOPS 1000000

static void *lock_thread(void *arg)
{
    struct tvm *vm = arg;

    return (void *)(uintptr_t)run(vm);
}

static void test_lock_atomicity(void **state)
{
    static const uint8_t code[] = {
        /* clang-format off */
        0xb9, LOCK_LOOPS & 0xff, (LOCK_LOOPS >> 8) & 0xff, LOCK_LOOPS >> 16, 0x00, /* mov ecx, N */
        0xb8, 0x01, 0x00, 0x00, 0x00,                           /* 1: mov eax, 1 */
        0xf0, 0x0f, 0xc1, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00,   /* lock xadd [0x200000], eax */
        0xf0, 0x48, 0xff, 0x04, 0x25, 0x08, 0x00, 0x20, 0x00,   /* lock inc qword [0x200008] */
        0xff, 0xc9,                                             /* dec ecx */
        0x75, 0xe5,                                             /* jnz 1b */
        0xf4,
        /* clang-format on */
    };
    struct tvm *a = tvm_long(state, code, sizeof(code), false);
    struct tvm *b = calloc(1, sizeof(*b));
    pthread_t ta, tb;
    void *ra, *rb;

    assert_non_null(b);
    b->ram = a->ram;
    b->mem = a->mem;
    b->pending_irq = -1;
    x86_cpu_init(&b->cpu, &b->mem, &t_ops, b, 1);
    long_mode(&b->cpu, false);
    b->cpu.regs[X86_RSP] = STACK_TOP - 0x1000;

    assert_int_equal(pthread_create(&ta, NULL, lock_thread, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, lock_thread, b), 0);
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    assert_int_equal((uintptr_t)ra, X86_EXIT_HLT);
    assert_int_equal((uintptr_t)rb, X86_EXIT_HLT);
    assert_int_equal(rd32(a, 0x200000), 2 * LOCK_LOOPS);
    assert_int_equal(rd64(a, 0x200008), 2 * LOCK_LOOPS);
    x86_cpu_destroy(&b->cpu);
    free(b);
}

/* ---- real mode ---- */

static void test_real_mode_to_protected(void **state)
{
    static const uint8_t code16[] = {
        0xb8, 0x34, 0x12,                               /* mov ax, 0x1234 */
        0x05, 0x11, 0x11,                               /* add ax, 0x1111 */
        0xa3, 0x00, 0x60,                               /* mov [0x6000], ax */
        0x0f, 0x01, 0x16, 0x00, 0x11,                   /* lgdt [0x1100] */
        0x0f, 0x20, 0xc0,                               /* mov eax, cr0 */
        0x0c, 0x01,                                     /* or al, 1 */
        0x0f, 0x22, 0xc0,                               /* mov cr0, eax */
        0x66, 0xea, 0x40, 0x10, 0x00, 0x00, 0x08, 0x00, /* jmp dword 0x08:0x1040 */
    };
    static const uint8_t code32[] = {
        0x66, 0xb8, 0x10, 0x00,                                     /* mov ax, 0x10 */
        0x8e, 0xd8,                                                 /* mov ds, ax */
        0xc7, 0x05, 0x04, 0x60, 0x00, 0x00, 0x0d, 0xf0, 0xfe, 0xca, /* mov dword [0x6004], .. */
        0xf4,
    };
    static const uint8_t gdtr[] = { 0x17, 0x00, 0x00, 0x12, 0x00, 0x00 };
    struct tvm *vm = tvm_new(state);

    memcpy(vm->ram + 0x1000, code16, sizeof(code16));
    memcpy(vm->ram + 0x1040, code32, sizeof(code32));
    memcpy(vm->ram + 0x1100, gdtr, sizeof(gdtr));
    memset(vm->ram + 0x1200, 0, 8);
    wr64(vm, 0x1208, 0x00cf9a000000ffffull);
    wr64(vm, 0x1210, 0x00cf92000000ffffull);
    x86_cpu_sipi(&vm->cpu, 0x01);
    assert_int_equal(vm->cpu.seg[X86_CS].selector, 0x0100);
    assert_int_equal(vm->cpu.seg[X86_CS].base, 0x1000);
    assert_int_equal(vm->cpu.rip, 0);
    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(vm->cpu.rip, 0x1040 + sizeof(code32));
    assert_int_equal(vm->ram[0x6000] | vm->ram[0x6001] << 8, 0x2345);
    assert_int_equal(rd32(vm, 0x6004), 0xcafef00d);
    assert_int_equal(vm->cpu.seg[X86_CS].selector, 0x08);
    assert_int_equal(vm->cpu.seg[X86_CS].db, 1);
    assert_int_equal(vm->cpu.seg[X86_DS].selector, 0x10);
    assert_true(vm->cpu.cr0 & CR0_PE);
}

/* 32-bit protected mode, paging off (as PVH starts a guest), into long mode:
 * CR4.PAE, CR3, EFER.LME by wrmsr, CR0.PG (EFER.LMA follows), far jump to CS.L=1. */
static void test_protected_to_long_mode(void **state)
{
    static const uint8_t code32[] = {
        0x0f, 0x20, 0xe0,                         /* mov eax, cr4 */
        0x83, 0xc8, 0x20,                         /* or eax, PAE */
        0x0f, 0x22, 0xe0,                         /* mov cr4, eax */
        0xb8, 0x00, 0x10, 0x00, 0x00,             /* mov eax, PML4 */
        0x0f, 0x22, 0xd8,                         /* mov cr3, eax */
        0xb9, 0x80, 0x00, 0x00, 0xc0,             /* mov ecx, EFER */
        0x0f, 0x32,                               /* rdmsr */
        0x0d, 0x00, 0x01, 0x00, 0x00,             /* or eax, LME */
        0x0f, 0x30,                               /* wrmsr */
        0x0f, 0x20, 0xc0,                         /* mov eax, cr0 */
        0x0d, 0x00, 0x00, 0x00, 0x80,             /* or eax, PG */
        0x0f, 0x22, 0xc0,                         /* mov cr0, eax */
        0xea, 0x00, 0x51, 0x00, 0x00, 0x10, 0x00, /* jmp 0x10:0x5100 */
    };
    static const uint8_t code64[] = {
        0x48, 0xb8, 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12, /* mov rax, imm64 */
        0x48, 0x89, 0x04, 0x25, 0x00, 0x60, 0x00, 0x00,             /* mov [0x6000], rax */
        0xf4,
    };
    struct tvm *vm = tvm_new(state);
    struct x86_cpu *cpu = &vm->cpu;
    struct x86_segment flat = {
        .limit = 0xffffffff,
        .selector = 0x18,
        .type = 3,
        .present = 1,
        .s = 1,
        .db = 1,
        .g = 1,
    };

    memcpy(vm->ram + 0x5000, code32, sizeof(code32));
    memcpy(vm->ram + 0x5100, code64, sizeof(code64));
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
    cpu->seg[X86_DS] = cpu->seg[X86_ES] = cpu->seg[X86_SS] = flat;
    cpu->seg[X86_FS] = cpu->seg[X86_GS] = flat;
    cpu->seg[X86_TR] = (struct x86_segment){ .limit = 0x67, .type = 0xb, .present = 1 };
    cpu->seg[X86_LDTR] = (struct x86_segment){ .unusable = 1 };
    cpu->gdt = (struct x86_dtable){ .base = GDT, .limit = 0x3f };
    cpu->rip = 0x5000;
    cpu->regs[X86_RSP] = STACK_TOP;
    x86_cpu_set_rflags(cpu, 0x2);
    x86_cpu_state_changed(cpu);

    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(cpu->rip, 0x5100 + sizeof(code64));
    assert_int_equal(rd64(vm, 0x6000), 0x123456789abcdef0ull);
    assert_true(cpu->efer & EFER_LMA);
    assert_true(cpu->efer & EFER_LME);
    assert_int_equal(cpu->seg[X86_CS].selector, 0x10);
    assert_int_equal(cpu->seg[X86_CS].l, 1);
    assert_true(cpu->cr0 & CR0_PG);
}

/* ---- dirty logging ---- */

static void test_dirty_bitmap(void **state)
{
    static const uint8_t code[] = {
        0xc7, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x01, 0x00, 0x00,
        0x00,                                                       /* mov dword [0x300000], 1 */
        0xc6, 0x04, 0x25, 0xff, 0x2f, 0x30, 0x00, 0x02,             /* mov byte [0x302fff], 2 */
        0x8b, 0x04, 0x25, 0x00, 0x10, 0x30, 0x00,                   /* mov eax, [0x301000] */
        0x66, 0xc7, 0x04, 0x25, 0xff, 0x4f, 0x30, 0x00, 0x03, 0x00, /* mov word [0x304fff], 3 */
        0xf4,
    };
    struct tvm *vm = tvm_long(state, code, sizeof(code), false);
    size_t words = (RAM_SIZE >> 12) / (8 * sizeof(unsigned long));

    /* A and D already set everywhere: the walk itself writes nothing */
    for (unsigned i = 0; i < 512; i++)
        wr64(vm, PT + 8 * i, rd64(vm, PT + 8 * i) | PTE_A | PTE_D);
    for (unsigned i = 0; i < 4; i++)
        wr64(vm, PD + 8 * i, rd64(vm, PD + 8 * i) | PTE_A | PTE_D);
    wr64(vm, PDPT, rd64(vm, PDPT) | PTE_A);
    wr64(vm, PML4, rd64(vm, PML4) | PTE_A);
    vm->mem.dirty = calloc(words, sizeof(unsigned long));
    assert_non_null(vm->mem.dirty);
    x86_cpu_state_changed(&vm->cpu);
    assert_int_equal(run(vm), X86_EXIT_HLT);
    assert_int_equal(vm->cpu.rip, CODE + sizeof(code));
    for (uint64_t gfn = 0; gfn < (RAM_SIZE >> 12); gfn++) {
        bool set = vm->mem.dirty[gfn / (8 * sizeof(unsigned long))] >>
                       (gfn % (8 * sizeof(unsigned long))) &
                   1;
        bool want = gfn == 0x300 || gfn == 0x302 || gfn == 0x304 || gfn == 0x305;
        if (set != want)
            fail_msg("gfn %#llx: dirty %d, expected %d", (unsigned long long)gfn, set, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_paging_sizes_and_ad_bits, tvm_teardown),
        cmocka_unit_test_teardown(test_paging_write_protect, tvm_teardown),
        cmocka_unit_test_teardown(test_paging_nx_fetch, tvm_teardown),
        cmocka_unit_test_teardown(test_paging_user_supervisor_rsp0, tvm_teardown),
        cmocka_unit_test_teardown(test_paging_tlb, tvm_teardown),
        cmocka_unit_test_teardown(test_exc_divide_error, tvm_teardown),
        cmocka_unit_test_teardown(test_exc_gp_error_code, tvm_teardown),
        cmocka_unit_test_teardown(test_exc_invalid_opcode, tvm_teardown),
        cmocka_unit_test_teardown(test_exc_ist_stack, tvm_teardown),
        cmocka_unit_test_teardown(test_exc_triple_fault, tvm_teardown),
        cmocka_unit_test_teardown(test_irq_sti_shadow, tvm_teardown),
        cmocka_unit_test_teardown(test_hlt_and_wakeup, tvm_teardown),
        cmocka_unit_test_teardown(test_rep_movs_restartable, tvm_teardown),
        cmocka_unit_test_teardown(test_lock_atomicity, tvm_teardown),
        cmocka_unit_test_teardown(test_real_mode_to_protected, tvm_teardown),
        cmocka_unit_test_teardown(test_protected_to_long_mode, tvm_teardown),
        cmocka_unit_test_teardown(test_dirty_bitmap, tvm_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
