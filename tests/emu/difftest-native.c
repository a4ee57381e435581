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
#define ST_IN (DT_STATE + 0)
#define ST_INFLAGS (DT_STATE + 128)
#define ST_OUT (DT_STATE + 256)
#define ST_OUTFLAGS (DT_STATE + 384)
#define ST_HOSTRSP (DT_STATE + 392)
#define ST_FLAGSTK (DT_STATE + 0x800)

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
    p[n++] = 0x25; /* SIB: no base, no index: [disp32] */
    memcpy(p + n, &a, 4);
    return n + 4;
}

/* Save the host's callee-saved registers and rsp, load every register and
 * RFLAGS from the block; it ends where the sequence starts. */
static unsigned build_prologue(uint8_t *p)
{
    unsigned n = 0;
    uint32_t a = (uint32_t)ST_INFLAGS;

    p[n++] = 0x53; /* push rbx, rbp, r12..r15 */
    p[n++] = 0x55;
    for (uint8_t r = 4; r < 8; r++) {
        p[n++] = 0x41;
        p[n++] = (uint8_t)(0x50 + r);
    }
    n += put_abs(p + n, 0x48, 0x89, 4, ST_HOSTRSP); /* mov [hostrsp], rsp */
    p[n++] = 0x48;                                  /* mov rsp, &inflags */
    p[n++] = 0xc7;
    p[n++] = 0xc4;
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0x9d; /* popfq */
    for (unsigned r = 0; r < 16; r++)
        if (r != 4)
            n += put_abs(p + n, 0x48, 0x8b, r, ST_IN + 8 * r);
    n += put_abs(p + n, 0x48, 0x8b, 4, ST_IN + 32);
    return n;
}

/* Compatibility mode: the 64-bit prologue ends in a far jump through this
 * pointer to CS 0x23 (Linux's 32-bit user code segment); the 32-bit epilogue
 * far-jumps back to CS 0x33 at DT_TRAMP + 0x800, which returns to the host. */
#define ST_FARPTR (DT_STATE + 0x400)
#define USER32_CS 0x23
#define USER64_CS 0x33 /* (0x2b: the data segment of both) */

static unsigned build_prologue32(uint8_t *p)
{
    /* a 64-bit process runs with null DS/ES, which compatibility mode cannot use */
    static const uint8_t ds[] = { 0xb8, 0x2b, 0, 0, 0, 0x8e, 0xd8, 0x8e, 0xc0 };
    unsigned n = sizeof(ds);

    memcpy(p, ds, n);
    n += build_prologue(p + n);

    p[n++] = 0xff; /* jmp far [farptr] (m16:32) */
    p[n++] = 0x2c;
    p[n++] = 0x25;
    uint32_t a = (uint32_t)ST_FARPTR;
    memcpy(p + n, &a, 4);
    return n + 4;
}

/* 32-bit code: store eax..edi and EFLAGS, then back to 64-bit mode. */
static unsigned build_epilogue32(uint8_t *p)
{
    unsigned n = 0;
    uint32_t a;

    for (unsigned r = 0; r < 8; r++) {
        a = (uint32_t)(ST_OUT + 8 * r);
        p[n++] = 0x89; /* mov [abs], r32 */
        p[n++] = (uint8_t)(0x05 | (r << 3));
        memcpy(p + n, &a, 4);
        n += 4;
    }
    a = (uint32_t)ST_FLAGSTK;
    p[n++] = 0xbc; /* mov esp, flags stack */
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0x9c; /* pushfd; pop eax */
    p[n++] = 0x58;
    a = (uint32_t)ST_OUTFLAGS;
    p[n++] = 0xa3; /* mov [abs], eax */
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0xfc;
    a = (uint32_t)(DT_TRAMP + 0x800);
    p[n++] = 0xea; /* jmp far 0x33:tramp */
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = USER64_CS;
    p[n++] = 0;
    return n;
}

/* 64-bit again: the host's stack and callee-saved registers, return. */
static unsigned build_return64(uint8_t *p)
{
    unsigned n = put_abs(p, 0x48, 0x8b, 4, ST_HOSTRSP);
    for (int r = 7; r >= 4; r--) {
        p[n++] = 0x41;
        p[n++] = (uint8_t)(0x58 + r);
    }
    p[n++] = 0x5d;
    p[n++] = 0x5b;
    p[n++] = 0xc3;
    return n;
}

/* Store every register and RFLAGS to the block, back to the host's stack. */
static unsigned build_epilogue(uint8_t *p)
{
    unsigned n = 0;
    uint32_t a = (uint32_t)ST_FLAGSTK;

    for (unsigned r = 0; r < 16; r++)
        n += put_abs(p + n, 0x48, 0x89, r, ST_OUT + 8 * r);
    p[n++] = 0x48; /* mov rsp, flags stack */
    p[n++] = 0xc7;
    p[n++] = 0xc4;
    memcpy(p + n, &a, 4);
    n += 4;
    p[n++] = 0x9c; /* pushfq; pop rax */
    p[n++] = 0x58;
    n += put_abs(p + n, 0x48, 0x89, 0, ST_OUTFLAGS);
    p[n++] = 0xfc; /* cld: the C ABI wants DF = 0 */
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
    REG_R8,  REG_R9,  REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
};

/* An exception in the sequence: record the state at the fault (the kernel's
 * trap number is the vector) and go back to the job loop. */
static void on_fault(int sig, siginfo_t *si, void *uc_)
{
    ucontext_t *uc = uc_;
    greg_t *gr = uc->uc_mcontext.gregs;
    uint64_t rip = (uint64_t)gr[REG_RIP];

    if (!fault_out || rip < DT_BASE || rip >= DT_BASE + DT_SIZE) {
        signal(sig, SIG_DFL); /* a real crash of the tester itself */
        return;
    }
    for (unsigned r = 0; r < 16; r++)
        fault_out->regs[r] = (uint64_t)gr[greg_of[r]];
    fault_out->rflags = (uint64_t)gr[REG_EFL];
    fault_out->rip = rip;
    fault_out->fault = (int32_t)gr[REG_TRAPNO];
    fault_out->err = (uint32_t)gr[REG_ERR];
    fault_out->cr2 = (uint64_t)(uintptr_t)si->si_addr;
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
    if (mprotect((void *)(uintptr_t)DT_HOLE, 0x1000, PROT_NONE) < 0) {
        perror("difftest: mprotect");
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
static void run_job(struct dt_job *j, void (*fn)(void), void (*fn32)(void))
{
    uint8_t *mem = (uint8_t *)(uintptr_t)DT_BASE;
    struct dt_state *out = &j->out;
    uint64_t regs[17];

    memcpy(mem + (DT_SCRATCH - DT_BASE), j->init.scratch, DT_SCRATCH_SIZE);
    memcpy(mem + (DT_STACK - DT_BASE), j->init.stack, DT_STACK_SIZE);
    memcpy(mem + (DT_CODE - DT_BASE), j->seq.code, j->seq.len);
    if (j->seq.mode32)
        build_epilogue32(mem + (DT_CODE - DT_BASE) + j->seq.len);
    else
        build_epilogue(mem + (DT_CODE - DT_BASE) + j->seq.len);
    memset(mem + (ST_OUT - DT_BASE), 0, 136);
    memcpy(regs, j->init.regs, 128);
    regs[16] = j->init.rflags;
    memcpy(mem + (ST_IN - DT_BASE), regs, sizeof(regs));

    memset(out->regs, 0, sizeof(out->regs));
    out->rflags = out->rip = out->cr2 = 0;
    out->err = 0;
    out->fault = -1;
    fault_out = out;
    if (sigsetjmp(fault_env, 1) == 0) {
        if (j->seq.mode32)
            fn32();
        else
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
    void (*fn)(void), (*fn32)(void);

    child_setup();
    pn = build_prologue(pro);
    memcpy(mem + (DT_CODE - DT_BASE) - pn, pro, pn);
    fn = (void (*)(void))(uintptr_t)(DT_CODE - pn);
    build_prologue32(mem + (DT_TRAMP - DT_BASE));
    build_return64(mem + (DT_TRAMP - DT_BASE) + 0x800);
    uint32_t far[2] = { (uint32_t)DT_CODE, USER32_CS };
    memcpy(mem + (ST_FARPTR - DT_BASE), far, 6);
    fn32 = (void (*)(void))(uintptr_t)DT_TRAMP;
    for (unsigned i = first; i < n; i++) {
        run_job(&jobs[i], fn, fn32);
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
        if (WIFEXITED(st) && WEXITSTATUS(st) == 3) {
            /* no fixed RWX mapping on this host (said why already): meson's "skipped" */
            printf("difftest: SKIP: the native side cannot run here\n");
            exit(77);
        }
        /* the child died in job (next): note it and go on with a new child */
        jobs[next].status = 2;
        next++;
    }
}
