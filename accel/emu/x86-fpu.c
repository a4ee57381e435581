/* x86-fpu.c: x87/SSE state instructions on the FXSAVE image; other FPU/SIMD opcodes raise #UD. */
#include "x86-internal.h"

/* FXSAVE image offsets */
#define FX_FCW 0
#define FX_FSW 2
#define FX_FTW 4
#define FX_MXCSR 24
#define FX_MXCSR_MASK 28
#define MXCSR_MASK 0xffffu

static uint16_t get16(struct x86_cpu *cpu, unsigned off)
{
    uint16_t v;
    memcpy(&v, cpu->fxsave + off, 2);
    return v;
}

static void put16(struct x86_cpu *cpu, unsigned off, uint16_t v)
{
    memcpy(cpu->fxsave + off, &v, 2);
}

static void put32(struct x86_cpu *cpu, unsigned off, uint32_t v)
{
    memcpy(cpu->fxsave + off, &v, 4);
}

static void fninit(struct x86_cpu *cpu)
{
    put16(cpu, FX_FCW, 0x37f);
    put16(cpu, FX_FSW, 0);
    cpu->fxsave[FX_FTW] = 0;        /* abridged tag: all empty */
    memset(cpu->fxsave + 6, 0, 18); /* FOP, FIP, FDP */
}

void x86_fpu_reset(struct x86_cpu *cpu)
{
    memset(cpu->fxsave, 0, sizeof(cpu->fxsave));
    fninit(cpu);
    put32(cpu, FX_MXCSR, 0x1f80);
    put32(cpu, FX_MXCSR_MASK, MXCSR_MASK);
}

static _Noreturn void ud(struct x86_cpu *cpu, struct x86_insn *i)
{
    x86_log_unknown(cpu, i);
    x86_raise_ud(cpu);
}

/* #NM/#UD checks of an x87 instruction (or fxsave/fxrstor: sse=false) */
static void check_x87(struct x86_cpu *cpu)
{
    if (cpu->cr0 & (CR0_EM | CR0_TS))
        x86_raise(cpu, X86_EXC_NM, 0, false);
}

static void check_sse(struct x86_cpu *cpu, struct x86_insn *i)
{
    if ((cpu->cr0 & CR0_EM) || !(cpu->cr4 & 0x200)) /* CR4.OSFXSR */
        ud(cpu, i);
    if (cpu->cr0 & CR0_TS)
        x86_raise(cpu, X86_EXC_NM, 0, false);
}

static void fx_save(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint64_t la;

    check_x87(cpu);
    la = x86_linear(cpu, i->seg, i->ea, i->addrsize);
    if (!x86_mode64(cpu))
        x86_seg_check(cpu, i->seg, i->ea, 512, true);
    if (la & 15)
        x86_raise_gp(cpu, 0);
    x86_lin_write(cpu, la, cpu->fxsave, 512, false);
}

static void fx_restore(struct x86_cpu *cpu, struct x86_insn *i)
{
    uint8_t buf[512];
    uint32_t mxcsr;
    uint64_t la;

    check_x87(cpu);
    la = x86_linear(cpu, i->seg, i->ea, i->addrsize);
    if (!x86_mode64(cpu))
        x86_seg_check(cpu, i->seg, i->ea, 512, false);
    if (la & 15)
        x86_raise_gp(cpu, 0);
    x86_lin_read(cpu, la, buf, 512, false);
    memcpy(&mxcsr, buf + FX_MXCSR, 4);
    if (mxcsr & ~MXCSR_MASK)
        x86_raise_gp(cpu, 0);
    /* keep the bytes the processor owns (MXCSR_MASK, reserved) as they were */
    memcpy(cpu->fxsave, buf, 28);
    memcpy(cpu->fxsave + 32, buf + 32, 512 - 32 - 48 * 2);
}

void x86_exec_fpu(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned op = i->op, r = i->reg & 7;
    uint8_t modrm = (uint8_t)((i->mod << 6) | (r << 3) | (i->rm & 7));

    if (op == 0x1ae && i->mem && !i->rep && !i->opsize_prefix) {
        switch (r) {
        case 0:
            fx_save(cpu, i);
            return;
        case 1:
            fx_restore(cpu, i);
            return;
        case 2: { /* ldmxcsr */
            check_sse(cpu, i);
            uint32_t v = (uint32_t)x86_mem_read(cpu, i->seg, i->ea, 4);
            if (v & ~MXCSR_MASK)
                x86_raise_gp(cpu, 0);
            put32(cpu, FX_MXCSR, v);
            return;
        }
        case 3: { /* stmxcsr */
            uint32_t v;
            check_sse(cpu, i);
            memcpy(&v, cpu->fxsave + FX_MXCSR, 4);
            x86_mem_write(cpu, i->seg, i->ea, v, 4);
            return;
        }
        default:
            break;
        }
        ud(cpu, i);
    }
    if (op >= 0xd8 && op <= 0xdf) {
        check_x87(cpu);
        if (op == 0xdb && modrm == 0xe3) { /* fninit */
            fninit(cpu);
            return;
        }
        if (op == 0xdb && modrm == 0xe2) { /* fnclex */
            put16(cpu, FX_FSW, get16(cpu, FX_FSW) & 0x7f00);
            return;
        }
        if (op == 0xdf && modrm == 0xe0) { /* fnstsw ax */
            cpu->regs[X86_RAX] = (cpu->regs[X86_RAX] & ~0xffffull) | get16(cpu, FX_FSW);
            return;
        }
        if (i->mem && op == 0xd9 && r == 7) { /* fnstcw */
            x86_mem_write(cpu, i->seg, i->ea, get16(cpu, FX_FCW), 2);
            return;
        }
        if (i->mem && op == 0xd9 && r == 5) { /* fldcw */
            put16(cpu, FX_FCW, (uint16_t)x86_mem_read(cpu, i->seg, i->ea, 2));
            return;
        }
        if (i->mem && op == 0xdd && r == 7) { /* fnstsw m16 */
            x86_mem_write(cpu, i->seg, i->ea, get16(cpu, FX_FSW), 2);
            return;
        }
    }
    ud(cpu, i);
}
