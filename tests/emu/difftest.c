/* difftest.c: the differential tester of the software CPU: random instruction
 * sequences run natively and in the interpreter from the same state, then
 * every register, the defined arithmetic flags and the scratch memory compared. */
#include "difftest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DF_FLAG 0x400u
#define ARITH 0x8d5u

static const char *const reg_names[16] = {
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15",
};

struct opts {
    uint64_t seed, start, count;
    unsigned len, batch, max_report;
    bool verbose, self, fuzz;
    int cls;
    int mode; /* 64, 32, or 0: a quarter of the sequences in 32-bit */
};

struct stats {
    uint64_t seqs, insns, mismatches, faults;
    uint64_t per_class[DT_NR_CLASSES + 1];
};

static uint64_t seq_seed(uint64_t seed, uint64_t i)
{
    return seed * 0x9e3779b97f4a7c15ull ^ (i + 1) * 0xd1b54a32d192ed03ull;
}

static void print_flags(uint64_t f)
{
    static const struct {
        uint32_t bit;
        const char *n;
    } names[] = {
        { 0x1, "CF" },  { 0x4, "PF" },   { 0x10, "AF" },  { 0x40, "ZF" },
        { 0x80, "SF" }, { 0x400, "DF" }, { 0x800, "OF" },
    };
    printf("%#" PRIx64 " [", f);
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (f & names[i].bit)
            printf(" %s", names[i].n);
    printf(" ]");
}

static void print_state(const char *what, const struct dt_state *s, bool with_rip)
{
    printf("  %-8s", what);
    for (unsigned r = 0; r < 16; r++)
        printf("%s%s=%016" PRIx64, r && r % 4 == 0 ? "\n          " : " ", reg_names[r],
               s->regs[r]);
    printf("\n           rflags=");
    print_flags(s->rflags);
    if (with_rip) {
        if (s->fault == 14)
            printf(" fault=#PF(%#x) cr2=%#" PRIx64 " at rip=%#" PRIx64, s->err, s->cr2, s->rip);
        else if (s->fault >= 0)
            printf(" fault=#%d at rip=%#" PRIx64, s->fault, s->rip);
        else
            printf(" (ran to the end)");
    }
    printf("\n");
}

static void print_code(const struct dt_seq *seq, bool verbose)
{
    printf("  code: %u bytes, %u instructions at %#llx, %s\n", seq->len, seq->nr_insns, DT_CODE,
           seq->mode32 ? "32-bit (compatibility mode)" : "64-bit");
    for (unsigned i = 0; i < seq->nr_insns; i++) {
        unsigned a = seq->start[i], b = seq->start[i + 1];
        char hex[64] = "";
        for (unsigned k = a; k < b && k - a < 15; k++)
            snprintf(hex + strlen(hex), sizeof(hex) - strlen(hex), "%02x ", seq->code[k]);
        printf("    +%04x  %-45s %s\n", a, hex, dt_template_name(seq->tmpl[i]));
    }
    if (!verbose)
        return;
    /* objdump, when the host has it, for the mnemonics */
    char path[] = "/tmp/difftest-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return;
    if (write(fd, seq->code, seq->len) == (ssize_t)seq->len) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd),
                 "objdump -D -b binary -mi386%s --adjust-vma=%#llx %s 2>/dev/null"
                 " | tail -n +8",
                 seq->mode32 ? "" : ":x86-64", DT_CODE, path);
        fflush(stdout);
        if (system(cmd) != 0)
            printf("    (objdump not available)\n");
    }
    close(fd);
    unlink(path);
}

static unsigned insn_at(const struct dt_seq *seq, uint64_t rip)
{
    for (unsigned i = 0; i < seq->nr_insns; i++)
        if (rip == DT_CODE + seq->start[i])
            return i;
    return seq->nr_insns;
}

/* Compare; print the differing fields when (report). Returns true if equal. */
static bool compare(const struct dt_job *j, const struct dt_state *emu, bool report)
{
    const struct dt_state *nat = &j->out;
    bool same = true;
    uint8_t undef = j->seq.undef_end;
    uint64_t mask, stack_from = 0;

    if (nat->fault != emu->fault) {
        same = false;
        if (report)
            printf("  differs: fault: native %d, interpreter %d\n", nat->fault, emu->fault);
    } else if (nat->fault >= 0) {
        undef = j->seq.undef_before[insn_at(&j->seq, nat->rip)];
        if (nat->rip != emu->rip) {
            same = false;
            if (report)
                printf("  differs: fault rip: native %#" PRIx64 ", interpreter %#" PRIx64 "\n",
                       nat->rip, emu->rip);
        }
        /* #PF: the address and the error code but its U bit (native runs at CPL 3) */
        if (nat->fault == 14 && (nat->cr2 != emu->cr2 || ((nat->err ^ emu->err) & ~4u))) {
            same = false;
            if (report)
                printf("  differs: #PF cr2/error code: native %#" PRIx64
                       "/%#x, interpreter %#" PRIx64 "/%#x\n",
                       nat->cr2, nat->err, emu->cr2, emu->err);
        }
        if (nat->regs[4] >= DT_STACK && nat->regs[4] <= DT_STACK + DT_STACK_SIZE)
            stack_from = nat->regs[4] - DT_STACK;
    }
    /* compatibility mode: eax..edi (the upper halves are undefined after a mode switch) */
    unsigned nr = j->seq.mode32 ? 8 : 16;
    uint64_t rmask = j->seq.mode32 ? 0xffffffffull : ~0ull;
    for (unsigned r = 0; r < nr; r++) {
        if ((nat->regs[r] ^ emu->regs[r]) & rmask) {
            same = false;
            if (report)
                printf("  differs: %s: native %#" PRIx64 ", interpreter %#" PRIx64 "\n",
                       reg_names[r], nat->regs[r], emu->regs[r]);
        }
    }
    mask = (ARITH & ~(uint64_t)dt_flags_expand(undef)) | DF_FLAG;
    if ((nat->rflags ^ emu->rflags) & mask) {
        same = false;
        if (report) {
            printf("  differs: flags (compared ");
            print_flags(mask);
            printf("): native ");
            print_flags(nat->rflags & mask);
            printf(", interpreter ");
            print_flags(emu->rflags & mask);
            printf("\n");
        }
    }
    unsigned shown = 0;
    for (unsigned k = 0; k < DT_SCRATCH_SIZE; k++) {
        if (nat->scratch[k] != emu->scratch[k]) {
            same = false;
            if (report && shown++ < 8)
                printf("  differs: scratch %#llx: native %02x, interpreter %02x (was %02x)\n",
                       DT_SCRATCH + k, nat->scratch[k], emu->scratch[k], j->init.scratch[k]);
        }
    }
    for (uint64_t k = stack_from; k < DT_STACK_SIZE; k++) {
        if (nat->stack[k] != emu->stack[k]) {
            same = false;
            if (report && shown++ < 16)
                printf("  differs: stack %#llx: native %02x, interpreter %02x (was %02x)\n",
                       DT_STACK + k, nat->stack[k], emu->stack[k], j->init.stack[k]);
        }
    }
    return same;
}

static void report_header(const struct opts *o, uint64_t i, const struct dt_job *j)
{
    printf("difftest: MISMATCH in sequence %" PRIu64 " (seed %" PRIu64 "); reproduce with "
           "--seed %" PRIu64 " --start %" PRIu64 " --count 1 --len %u --verbose\n",
           i, o->seed, o->seed, i, o->len);
    print_code(&j->seq, o->verbose);
    print_state("initial", &j->init, false);
}

/* Run every prefix of the sequence on both sides: the first instruction
 * after which they differ is the culprit (or at least the first symptom). */
static void localize(const struct dt_job *j, struct dt_emu *emu)
{
    unsigned n = j->seq.nr_insns;
    struct dt_job *p = dt_native_alloc(n);
    struct dt_state *out = malloc(sizeof(*out));

    for (unsigned k = 0; k < n; k++) {
        p[k].seq = j->seq;
        p[k].init = j->init;
        p[k].seq.nr_insns = k + 1;
        p[k].seq.len = j->seq.start[k + 1];
        p[k].seq.undef_end = j->seq.undef_before[k + 1];
    }
    dt_native_run(p, n);
    for (unsigned k = 0; k < n; k++) {
        const char *why = NULL;
        /* a prefix cut right after a branch or a code patch would reach past its end */
        if (j->seq.nocut[k])
            continue;
        if (p[k].status == 1 && dt_emu_run(emu, &p[k].seq, &p[k].init, out, &why) &&
            compare(&p[k], out, false))
            continue;
        unsigned a = j->seq.start[k];
        printf("  first differing prefix ends with instruction %u (+%04x):", k, a);
        for (unsigned b = a; b < j->seq.start[k + 1]; b++)
            printf(" %02x", j->seq.code[b]);
        printf("  [%s]\n", dt_template_name(j->seq.tmpl[k]));
        break;
    }
    free(out);
    dt_native_free(p, n);
}

static void run(const struct opts *o, struct stats *st)
{
    unsigned bsz = o->batch;
    struct dt_job *jobs = dt_native_alloc(bsz);
    struct dt_state *emu_out = malloc(sizeof(*emu_out));
    struct dt_state *first = o->self ? malloc(sizeof(*first) * bsz) : NULL;
    struct dt_emu *emu = o->self ? NULL : dt_emu_new();

    for (uint64_t base = o->start; base < o->start + o->count; base += bsz) {
        uint64_t rest = o->start + o->count - base;
        unsigned n = (unsigned)(rest < bsz ? rest : bsz);

        for (unsigned k = 0; k < n; k++) {
            uint64_t s = seq_seed(o->seed, base + k);
            bool m32 = o->mode == 32 || (o->mode == 0 && (s >> 62) == 0);
            dt_gen_sequence(s, o->len, m32, &jobs[k].seq, &jobs[k].init);
        }
        dt_native_run(jobs, n);
        if (o->self) {
            for (unsigned k = 0; k < n; k++)
                first[k] = jobs[k].out;
            dt_native_run(jobs, n);
        }
        for (unsigned k = 0; k < n; k++) {
            struct dt_job *j = &jobs[k];
            const char *why = NULL;
            bool ok;

            st->seqs++;
            for (unsigned i = 0; i < j->seq.nr_insns; i++) {
                unsigned t = j->seq.tmpl[i];
                st->per_class[t == DT_SETUP ? DT_NR_CLASSES : dt_template_class(t)]++;
            }
            st->insns += j->seq.nr_insns;
            if (j->out.fault >= 0)
                st->faults++;
            if (j->status != 1) {
                ok = false;
                why = "the native child died";
            } else if (o->self) {
                *emu_out = first[k];
                ok = true;
            } else {
                ok = dt_emu_run(emu, &j->seq, &j->init, emu_out, &why);
            }
            if (ok && compare(j, emu_out, false)) {
                if (o->verbose && o->count <= 16) {
                    printf("difftest: sequence %" PRIu64 " matches\n", base + k);
                    print_code(&j->seq, true);
                    print_state("initial", &j->init, false);
                    print_state("native", &j->out, true);
                }
                continue;
            }
            st->mismatches++;
            if (st->mismatches > o->max_report)
                continue;
            report_header(o, base + k, j);
            print_state("native", &j->out, true);
            print_state(o->self ? "native2" : "interp", emu_out, true);
            if (why)
                printf("  interpreter: %s\n", why);
            compare(j, emu_out, true);
            if (emu)
                localize(j, emu);
            fflush(stdout);
        }
    }
    if (emu)
        dt_emu_free(emu);
    free(first);
    free(emu_out);
    dt_native_free(jobs, bsz);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: difftest [--seed N] [--count N] [--len N] [--start N] [--class NAME]\n"
            "                [--mode 64|32|mix] [--batch N] [--max-report N] [--verbose] [--self]\n"
            "       difftest --decode-fuzz [--seed N] [--count N] [--verbose]\n"
            "  --self         run every sequence natively twice (checks the native runner)\n"
            "  --decode-fuzz  random bytes in 64/32/16-bit modes: the interpreter must not"
            " crash\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = { .seed = 1,
                      .count = 1000,
                      .len = 12,
                      .batch = 256,
                      .max_report = 10,
                      .cls = DT_NR_CLASSES,
                      .mode = 0 };
    struct stats st;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--verbose")) {
            o.verbose = true;
        } else if (!strcmp(a, "--self")) {
            o.self = true;
        } else if (!strcmp(a, "--decode-fuzz")) {
            o.fuzz = true;
        } else if (v && !strcmp(a, "--seed")) {
            o.seed = strtoull(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--count")) {
            o.count = strtoull(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--start")) {
            o.start = strtoull(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--len")) {
            o.len = (unsigned)strtoul(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--mode")) {
            o.mode = !strcmp(v, "64") ? 64 : !strcmp(v, "32") ? 32 : !strcmp(v, "mix") ? 0 : -1;
            if (o.mode < 0)
                usage();
            i++;
        } else if (v && !strcmp(a, "--batch")) {
            o.batch = (unsigned)strtoul(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--max-report")) {
            o.max_report = (unsigned)strtoul(v, NULL, 0), i++;
        } else if (v && !strcmp(a, "--class")) {
            for (o.cls = 0; o.cls < DT_NR_CLASSES && strcmp(dt_class_names[o.cls], v); o.cls++)
                ;
            if (o.cls == DT_NR_CLASSES)
                usage();
            i++;
        } else {
            usage();
        }
    }
    if (o.batch == 0 || o.len == 0)
        usage();
    if (getenv("DIFFTEST_SEED"))
        o.seed = strtoull(getenv("DIFFTEST_SEED"), NULL, 0);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (o.fuzz) {
        uint64_t n = dt_decode_fuzz(o.seed, (unsigned)o.count, o.verbose);
        printf("difftest: decode-fuzz: %" PRIu64 " sequences x 5 modes, %" PRIu64
               " instructions retired, no crash\n",
               o.count, n);
        return 0;
    }

    dt_gen_init();
    dt_gen_set_class(o.cls);
    memset(&st, 0, sizeof(st));
    run(&o, &st);
    printf("difftest: %" PRIu64 " sequences, %" PRIu64 " instructions, %" PRIu64
           " mismatches, classes:",
           st.seqs, st.insns, st.mismatches);
    for (unsigned c = 0; c < DT_NR_CLASSES; c++)
        printf(" %s=%" PRIu64, dt_class_names[c], st.per_class[c]);
    printf(" setup=%" PRIu64 " (%u templates; %" PRIu64 " sequences ended in an exception)%s\n",
           st.per_class[DT_NR_CLASSES], dt_nr_templates(), st.faults,
           o.self ? " [native vs native]" : "");
    return st.mismatches ? 1 : 0;
}
