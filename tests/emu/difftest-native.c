/* difftest-native.c: the differential tester's native side: each sequence runs
 * on the host CPU in a forked child, between a prologue that loads the start
 * registers and an epilogue that stores them back, at the guest's addresses. */
#include "difftest.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

/* The register block at DT_STATE the prologue and epilogue use. */
#define ST_IN       (DT_STATE + 0)
#define ST_INFLAGS  (DT_STATE + 128)
#define ST_OUT      (DT_STATE + 256)
#define ST_OUTFLAGS (DT_STATE + 384)
#define ST_HOSTRSP  (DT_STATE + 392)
#define ST_FLAGSTK  (DT_STATE + 0x800)

struct dt_job *dt_native_alloc(unsigned n)
{
    void *p = mmap(NULL, sizeof(struct dt_job) * n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("difftest: mmap jobs");
        exit(2);
    }
    return p;
}

void dt_native_free(struct dt_job *jobs, unsigned n)
{
    munmap(jobs, sizeof(struct dt_job) * n);
}

static unsigned put_abs(uint8_t *p, uint8_t rex, uint8_t op, unsigned reg, uint64_t addr)
{
    uint32_t a = (uint32_t)addr;
    unsigned n = 0;

    p[n++] = (uint8_t)(rex | (reg >= 8 ? 4 : 0));
    p[n++] = op;
    p[n++] = (uint8_t)(0x04 | ((reg & 7) << 3));
    p[n++] = 0x25;                      /* SIB: no base, no index: [disp32] */
    memcpy(p + n, &a, 4);
    return n + 4;
}

/* Save the host's callee-saved registers and rsp, load every register and
 * RFLAGS from the block; it ends where the sequence starts. */
static unsigned build_prologue(uint8_t *p)
{
    unsigned n = 0;
    uint32_t a = (uint32_t)ST_INFLAGS;

    p[n++] = 0x53;                      /* push rbx, rbp, r12..r15 */
    p[n++] = 0x55;
    for (uint8_t r = 4; r < 8; r++) {
        p[n++] = 0x41;
        p[n++] = (uint8_t)(0x50 + r);
    }
    n += put_abs(p + n, 0x48, 0x89, 4, ST_HOSTRSP);    /* mov [hostrsp], rsp */
    p[n++] = 0x48;                                      /* mov rsp, &inflags */
    p[n++] = 0xc7;
    p[n++] = 0xc4;
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0x9d;                                      /* popfq */
    for (unsigned r = 0; r < 16; r++)
        if (r != 4)
            n += put_abs(p + n, 0x48, 0x8b, r, ST_IN + 8 * r);
    n += put_abs(p + n, 0x48, 0x8b, 4, ST_IN + 32);
    return n;
}

/* Store every register and RFLAGS to the block, back to the host's stack. */
static unsigned build_epilogue(uint8_t *p)
{
    unsigned n = 0;
    uint32_t a = (uint32_t)ST_FLAGSTK;

    for (unsigned r = 0; r < 16; r++)
        n += put_abs(p + n, 0x48, 0x89, r, ST_OUT + 8 * r);
    p[n++] = 0x48;                                      /* mov rsp, flags stack */
    p[n++] = 0xc7;
    p[n++] = 0xc4;
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0x9c;                                      /* pushfq; pop rax */
    p[n++] = 0x58;
    n += put_abs(p + n, 0x48, 0x89, 0, ST_OUTFLAGS);
    p[n++] = 0xfc;                                      /* cld: the C ABI wants DF = 0 */
    n += put_abs(p + n, 0x48, 0x8b, 4, ST_HOSTRSP);
    for (int r = 7; r >= 4; r--) {
        p[n++] = 0x41;
        p[n++] = (uint8_t)(0x58 + r);
    }
    p[n++] = 0x5d;
    p[n++] = 0x5b;
    p[n++] = 0xc3;
    return n;
}

static sigjmp_buf fault_env;
static struct dt_state *fault_out;

static const int greg_of[16] = {
    REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
    REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

/* An exception in the sequence: record the state at the fault (the kernel's
 * trap number is the vector) and go back to the job loop. */
static void on_fault(int sig, siginfo_t *si, void *uc_)
{
    ucontext_t *uc = uc_;
    greg_t *gr = uc->uc_mcontext.gregs;
    uint64_t rip = (uint64_t)gr[REG_RIP];

    (void)si;
    if (!fault_out || rip < DT_BASE || rip >= DT_BASE + DT_SIZE) {
        signal(sig, SIG_DFL);           /* a real crash of the tester itself */
        return;
    }
    for (unsigned r = 0; r < 16; r++)
        fault_out->regs[r] = (uint64_t)gr[greg_of[r]];
    fault_out->rflags = (uint64_t)gr[REG_EFL];
    fault_out->rip = rip;
    fault_out->fault = (int32_t)gr[REG_TRAPNO];
    siglongjmp(fault_env, 1);
}

static void child_setup(void)
{
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP };
    stack_t ss = { .ss_size = 1 << 16 };
    struct sigaction sa;
    void *p;

    p = mmap((void *)(uintptr_t)DT_BASE, DT_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != (void *)(uintptr_t)DT_BASE) {
        fprintf(stderr, "difftest: cannot map %#llx RWX: %s\n", DT_BASE, strerror(errno));
        _exit(3);
    }
    ss.ss_sp = malloc(ss.ss_size);
    if (!ss.ss_sp || sigaltstack(&ss, NULL) < 0) {
        perror("difftest: sigaltstack");
        _exit(3);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* One job; the only place a fault can longjmp to. */
static void run_job(struct dt_job *j, void (*fn)(void))
{
    uint8_t *mem = (uint8_t *)(uintptr_t)DT_BASE;
    struct dt_state *out = &j->out;
    uint64_t regs[17];

    memcpy(mem + (DT_SCRATCH - DT_BASE), j->init.scratch, DT_SCRATCH_SIZE);
    memcpy(mem + (DT_STACK - DT_BASE), j->init.stack, DT_STACK_SIZE);
    memcpy(mem + (DT_CODE - DT_BASE), j->seq.code, j->seq.len);
    build_epilogue(mem + (DT_CODE - DT_BASE) + j->seq.len);
    memcpy(regs, j->init.regs, 128);
    regs[16] = j->init.rflags;
    memcpy(mem + (ST_IN - DT_BASE), regs, sizeof(regs));

    memset(out->regs, 0, sizeof(out->regs));
    out->rflags = out->rip = 0;
    out->fault = -1;
    fault_out = out;
    if (sigsetjmp(fault_env, 1) == 0) {
        fn();
        memcpy(regs, mem + (ST_OUT - DT_BASE), sizeof(regs));
        memcpy(out->regs, regs, 128);
        out->rflags = regs[16];
    }
    fault_out = NULL;
    memcpy(out->scratch, mem + (DT_SCRATCH - DT_BASE), DT_SCRATCH_SIZE);
    memcpy(out->stack, mem + (DT_STACK - DT_BASE), DT_STACK_SIZE);
}

static void child_run(struct dt_job *jobs, unsigned n, unsigned first)
{
    uint8_t pro[256], *mem = (uint8_t *)(uintptr_t)DT_BASE;
    unsigned pn;
    void (*fn)(void);

    child_setup();
    pn = build_prologue(pro);
    memcpy(mem + (DT_CODE - DT_BASE) - pn, pro, pn);
    fn = (void (*)(void))(uintptr_t)(DT_CODE - pn);
    for (unsigned i = first; i < n; i++) {
        run_job(&jobs[i], fn);
        __atomic_store_n(&jobs[i].status, 1, __ATOMIC_RELEASE);
    }
}

void dt_native_run(struct dt_job *jobs, unsigned n)
{
    unsigned next = 0;

    for (unsigned i = 0; i < n; i++)
        jobs[i].status = 0;
    while (next < n) {
        int st;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0) {
            perror("difftest: fork");
            exit(2);
        }
        if (pid == 0) {
            child_run(jobs, n, next);
            _exit(0);
        }
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        while (next < n && __atomic_load_n(&jobs[next].status, __ATOMIC_ACQUIRE) == 1)
            next++;
        if (next == n)
            break;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
            exit(2);                    /* cannot set up at all: said why already */
        /* the child died in job (next): note it and go on with a new child */
        jobs[next].status = 2;
        next++;
    }
}
