/* difftest.h: the differential tester of the software CPU: guest layout shared
 * by the native and the interpreted side, the sequence generator and the runners. */
#ifndef TERN_TESTS_DIFFTEST_H
#define TERN_TESTS_DIFFTEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* One 4 MiB window at the same virtual address on both sides (identity
 * mapped guest RAM in the interpreter, a fixed mapping in the native child),
 * so absolute and RIP-relative addresses mean the same thing. */
#define DT_BASE 0x10000000ull
#define DT_SIZE 0x400000ull
#define DT_PML4 (DT_BASE + 0x0000)
#define DT_PDPT (DT_BASE + 0x1000)
#define DT_PD (DT_BASE + 0x2000)
#define DT_GDT (DT_BASE + 0x3000)
#define DT_IDT (DT_BASE + 0x4000)
#define DT_HANDLERS (DT_BASE + 0x5000)         /* vector v: a hlt at DT_HANDLERS + v */
#define DT_STATE (DT_BASE + 0x6000)            /* native prologue/epilogue's register block */
#define DT_SCRATCH (DT_BASE + 0x100000)        /* memory operands point here */
#define DT_SCRATCH_SIZE 0x2000u                /* crosses a 4 KiB boundary in the middle */
#define DT_HOLE (DT_SCRATCH + DT_SCRATCH_SIZE) /* a page mapped on neither side: #PF */
#define DT_PT (DT_BASE + 0x8000)               /* 4 KiB page table of the first 2 MiB (the hole) */
#define DT_STACK (DT_BASE + 0x110000)          /* the sequences' private stack */
#define DT_STACK_SIZE 0x1000u
#define DT_STACK_TOP (DT_STACK + 0x800) /* initial rsp: room to push and to pop */
#define DT_CODE (DT_BASE + 0x201000)    /* the sequence; native prologue just below */
#define DT_TRAMP (DT_BASE + 0x200000)   /* native 64-bit code around a 32-bit sequence */
#define DT_MAX_CODE 2048u
#define DT_MAX_INSNS 256u

/* Register state and memory on entry to or exit from a sequence. */
struct dt_state {
    uint64_t regs[16];
    uint64_t rflags;
    uint64_t rip;  /* on a fault: the faulting instruction */
    int32_t fault; /* -1: ran to the end; else the exception vector */
    uint32_t err;  /* #PF: its error code */
    uint64_t cr2;  /* #PF: the faulting address */
    uint8_t scratch[DT_SCRATCH_SIZE];
    uint8_t stack[DT_STACK_SIZE];
};

/* One generated sequence, with what the generator knows about it. */
struct dt_seq {
    uint8_t code[DT_MAX_CODE];
    uint32_t len;
    unsigned nr_insns;
    uint16_t start[DT_MAX_INSNS + 1];       /* byte offset of each instruction */
    uint16_t tmpl[DT_MAX_INSNS];            /* template index (or DT_SETUP) */
    uint8_t undef_before[DT_MAX_INSNS + 1]; /* arithmetic flags undefined before insn i (compact) */
    uint8_t nocut[DT_MAX_INSNS];            /* a branch or code patch reaches past insn i's end */
    uint8_t undef_end;
    uint8_t mode32; /* runs in compatibility mode (32-bit code, CS.L = 0) */
};

#define DT_SETUP 0xffffu /* an operand set-up instruction, not a template */

enum dt_class {
    DT_ALU,
    DT_INCDEC,
    DT_SHIFT,
    DT_MULDIV,
    DT_BIT,
    DT_EXT,
    DT_LEA,
    DT_ATOMIC,
    DT_COND,
    DT_CONV,
    DT_FLAG,
    DT_STACKOP,
    DT_STRING,
    DT_MOV,
    DT_BRANCH,
    DT_MISC,
    DT_NR_CLASSES
};

extern const char *const dt_class_names[DT_NR_CLASSES];

/* The template table (difftest-gen.c). */
unsigned dt_nr_templates(void);
const char *dt_template_name(unsigned i);
enum dt_class dt_template_class(unsigned i);
/* Host features the templates may need: probe once before generating. */
void dt_gen_init(void);
/* Only templates of (cls) (DT_NR_CLASSES: all). */
void dt_gen_set_class(int cls);
/* Fill (seq) with (len) templates and (init) with a random start state, both
 * from (seed); (mode32): 32-bit code for compatibility mode. */
void dt_gen_sequence(uint64_t seed, unsigned len, bool mode32, struct dt_seq *seq,
                     struct dt_state *init);
/* Compact <-> RFLAGS forms of the arithmetic flag set (6 bits). */
uint32_t dt_flags_expand(uint8_t compact);

/* The native side (difftest-native.c): run (n) sequences in a forked child. */
struct dt_job {
    struct dt_seq seq;
    struct dt_state init;
    struct dt_state out;
    int status; /* 0: pending, 1: ran, 2: its child died */
};
void dt_native_run(struct dt_job *jobs, unsigned n);
struct dt_job *dt_native_alloc(unsigned n);
void dt_native_free(struct dt_job *jobs, unsigned n);

/* The interpreter side (difftest-emu.c). */
struct dt_emu;
struct dt_emu *dt_emu_new(void);
void dt_emu_free(struct dt_emu *e);
/* Run (seq) from (init) into (out); false (with (why) set) if the interpreter
 * did not stop at the final hlt nor in an exception handler. */
bool dt_emu_run(struct dt_emu *e, const struct dt_seq *seq, const struct dt_state *init,
                struct dt_state *out, const char **why);

/* The 64-bit guest around the window: tables (at DT_BASE, (ram) its host
 * view) and the CPU's long-mode registers (cpu: a struct x86_cpu). */
struct x86_cpu;
void dt_emu_build_tables(uint8_t *ram);
void dt_emu_long_mode(struct x86_cpu *cpu);

/* Random bytes in 64-bit mode (CPL 0 and 3), compatibility mode, 32-bit
 * protected mode and real mode (difftest-fuzz.c). Returns the number of
 * instructions the interpreter retired. */
uint64_t dt_decode_fuzz(uint64_t seed, unsigned count, bool verbose);

/* splitmix64 / xoshiro256** */
struct dt_rng {
    uint64_t s[4];
};
void dt_rng_seed(struct dt_rng *r, uint64_t seed);
uint64_t dt_rng_next(struct dt_rng *r);
/* Uniform in [0, n). */
uint32_t dt_rng_below(struct dt_rng *r, uint32_t n);

#endif
