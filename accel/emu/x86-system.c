/* x86-system.c: control registers, MSRs, descriptor-table and other system instructions. */
#include "x86-internal.h"

static void need_cpl0(struct x86_cpu *cpu)
{
    if (x86_cpl(cpu) != 0)
        x86_raise_gp(cpu, 0);
}

void x86_write_cr(struct x86_cpu *cpu, unsigned cr, uint64_t v)
{
    uint64_t old;

    switch (cr) {
    case 0:
        old = cpu->cr0;
        if (v >> 32)
            x86_raise_gp(cpu, 0);
        v |= CR0_ET;
        if ((v & CR0_PG) && !(v & CR0_PE))
            x86_raise_gp(cpu, 0);
        if ((v & CR0_NW) && !(v & CR0_CD))
            x86_raise_gp(cpu, 0);
        if ((v & CR0_PG) && !(old & CR0_PG) && (cpu->efer & EFER_LME)) {
            if (!(cpu->cr4 & CR4_PAE))
                x86_raise_gp(cpu, 0);
            cpu->efer |= EFER_LMA;
        }
        if (!(v & CR0_PG) && (old & CR0_PG) && x86_long_mode(cpu)) {
            if (x86_mode64(cpu))
                x86_raise_gp(cpu, 0);
            cpu->efer &= ~(uint64_t)EFER_LMA;
        }
        cpu->cr0 = v;
        if ((old ^ v) & (CR0_PG | CR0_WP | CR0_PE))
            x86_tlb_flush(cpu, false);
        break;
    case 2:
        cpu->cr2 = v;
        break;
    case 3:
        if (!x86_long_mode(cpu))
            v &= 0xffffffffu;
        if (v >> 63) {
            if (!(cpu->cr4 & 0x20000)) /* CR4.PCIDE: bit 63 = no flush, never stored */
                x86_raise_gp(cpu, 0);
            v &= ~(1ull << 63);
        }
        cpu->cr3 = v;
        x86_tlb_flush(cpu, (cpu->cr4 & CR4_PGE) != 0);
        break;
    case 4:
        old = cpu->cr4;
        if (x86_long_mode(cpu) && !(v & CR4_PAE))
            x86_raise_gp(cpu, 0);
        if (v >> 32)
            x86_raise_gp(cpu, 0);
        cpu->cr4 = v;
        if ((old ^ v) & (CR4_PGE | CR4_PAE | CR4_PSE | 0x300000))
            x86_tlb_flush(cpu, false);
        break;
    case 8:
        if (v >> 4)
            x86_raise_gp(cpu, 0);
        cpu->tpr = (uint8_t)v;
        if (cpu->ops->set_tpr)
            cpu->ops->set_tpr(cpu->opaque, cpu->tpr);
        break;
    default:
        x86_raise_ud(cpu);
    }
}

uint64_t x86_read_cr(struct x86_cpu *cpu, unsigned cr)
{
    switch (cr) {
    case 0:
        return cpu->cr0;
    case 2:
        return cpu->cr2;
    case 3:
        return cpu->cr3;
    case 4:
        return cpu->cr4;
    case 8:
        return cpu->tpr;
    default:
        x86_raise_ud(cpu);
    }
}

bool x86_rdmsr(struct x86_cpu *cpu, uint32_t msr, uint64_t *v)
{
    switch (msr) {
    case MSR_EFER:
        *v = cpu->efer;
        return true;
    case MSR_STAR:
        *v = cpu->star;
        return true;
    case MSR_LSTAR:
        *v = cpu->lstar;
        return true;
    case MSR_CSTAR:
        *v = cpu->cstar;
        return true;
    case MSR_SFMASK:
        *v = cpu->sfmask;
        return true;
    case MSR_FS_BASE:
        *v = cpu->seg[X86_FS].base;
        return true;
    case MSR_GS_BASE:
        *v = cpu->seg[X86_GS].base;
        return true;
    case MSR_KERNEL_GS_BASE:
        *v = cpu->kernel_gs_base;
        return true;
    case MSR_IA32_SYSENTER_CS:
        *v = cpu->sysenter_cs;
        return true;
    case MSR_IA32_SYSENTER_ESP:
        *v = cpu->sysenter_esp;
        return true;
    case MSR_IA32_SYSENTER_EIP:
        *v = cpu->sysenter_eip;
        return true;
    case MSR_IA32_PAT:
        *v = cpu->pat;
        return true;
    case MSR_TSC_AUX:
        *v = cpu->tsc_aux;
        return true;
    case MSR_IA32_MISC_ENABLE:
        *v = cpu->misc_enable;
        return true;
    default:
        return cpu->ops->rdmsr && cpu->ops->rdmsr(cpu->opaque, msr, v);
    }
}

static bool canonical(uint64_t v)
{
    return x86_canonical(v);
}

bool x86_wrmsr(struct x86_cpu *cpu, uint32_t msr, uint64_t v)
{
    switch (msr) {
    case MSR_EFER:
        if (v & ~(uint64_t)(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE))
            return false;
        if ((cpu->cr0 & CR0_PG) && ((v ^ cpu->efer) & EFER_LME))
            return false;
        v = (v & ~(uint64_t)EFER_LMA) | (cpu->efer & EFER_LMA);
        if ((v ^ cpu->efer) & EFER_NXE)
            x86_tlb_flush(cpu, false);
        cpu->efer = v;
        return true;
    case MSR_STAR:
        cpu->star = v;
        return true;
    case MSR_LSTAR:
        if (!canonical(v))
            return false;
        cpu->lstar = v;
        return true;
    case MSR_CSTAR:
        if (!canonical(v))
            return false;
        cpu->cstar = v;
        return true;
    case MSR_SFMASK:
        cpu->sfmask = v & 0xffffffffu;
        return true;
    case MSR_FS_BASE:
        if (!canonical(v))
            return false;
        cpu->seg[X86_FS].base = v;
        return true;
    case MSR_GS_BASE:
        if (!canonical(v))
            return false;
        cpu->seg[X86_GS].base = v;
        return true;
    case MSR_KERNEL_GS_BASE:
        if (!canonical(v))
            return false;
        cpu->kernel_gs_base = v;
        return true;
    case MSR_IA32_SYSENTER_CS:
        cpu->sysenter_cs = v & 0xffff;
        return true;
    case MSR_IA32_SYSENTER_ESP:
        cpu->sysenter_esp = v;
        return true;
    case MSR_IA32_SYSENTER_EIP:
        cpu->sysenter_eip = v;
        return true;
    case MSR_IA32_PAT:
        cpu->pat = v;
        return true;
    case MSR_TSC_AUX:
        cpu->tsc_aux = v & 0xffffffffu;
        return true;
    case MSR_IA32_MISC_ENABLE:
        cpu->misc_enable = v;
        return true;
    default:
        return cpu->ops->wrmsr && cpu->ops->wrmsr(cpu->opaque, msr, v);
    }
}

static void load_dtable(struct x86_cpu *cpu, struct x86_insn *i, struct x86_dtable *t)
{
    uint16_t limit;
    uint64_t base;

    need_cpl0(cpu);
    limit = (uint16_t)x86_mem_read(cpu, i->seg, i->ea, 2);
    if (x86_mode64(cpu)) {
        base = x86_mem_read(cpu, i->seg, (i->ea + 2) & x86_size_mask(i->addrsize), 8);
        if (!canonical(base))
            x86_raise_gp(cpu, 0);
    } else {
        base = x86_mem_read(cpu, i->seg, (i->ea + 2) & x86_size_mask(i->addrsize), 4);
        if (i->opsize == 2)
            base &= 0xffffff;
    }
    t->limit = limit;
    t->base = base;
}

static void store_dtable(struct x86_cpu *cpu, struct x86_insn *i, struct x86_dtable *t)
{
    unsigned n = x86_mode64(cpu) ? 8 : 4;

    x86_mem_write(cpu, i->seg, i->ea, t->limit, 2);
    x86_mem_write(cpu, i->seg, (i->ea + 2) & x86_size_mask(i->addrsize), t->base, n);
}

void x86_exec_0f01(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned r = i->reg & 7;

    if (i->mem) {
        switch (r) {
        case 0:
            store_dtable(cpu, i, &cpu->gdt);
            return;
        case 1:
            store_dtable(cpu, i, &cpu->idt);
            return;
        case 2:
            load_dtable(cpu, i, &cpu->gdt);
            return;
        case 3:
            load_dtable(cpu, i, &cpu->idt);
            return;
        case 4:
            x86_mem_write(cpu, i->seg, i->ea, cpu->cr0 & 0xffff, 2);
            return;
        case 6: {
            uint64_t v = x86_mem_read(cpu, i->seg, i->ea, 2);
            need_cpl0(cpu);
            /* lmsw: PE can be set, not cleared; MP, EM, TS */
            x86_write_cr(cpu, 0, (cpu->cr0 & ~0xeull) | (v & 0xf) | (cpu->cr0 & CR0_PE));
            return;
        }
        case 7:
            need_cpl0(cpu);
            x86_tlb_flush_page(cpu, x86_linear(cpu, i->seg, i->ea, i->addrsize));
            return;
        default:
            break;
        }
    } else {
        unsigned modrm = 0xc0 | (r << 3) | (i->rm & 7);
        switch (modrm) {
        case 0xca: /* clac */
        case 0xcb: /* stac */
            need_cpl0(cpu);
            x86_flags_set(cpu, modrm == 0xcb ? X86_AC : 0, X86_AC);
            return;
        case 0xd1: { /* xsetbv: x87 and SSE state only */
            uint64_t v = (cpu->regs[X86_RAX] & 0xffffffffu) | (cpu->regs[X86_RDX] << 32);
            if (!(cpu->cr4 & 0x40000))
                break;
            need_cpl0(cpu);
            if ((cpu->regs[X86_RCX] & 0xffffffffu) || !(v & 1) || (v & ~3ull))
                x86_raise_gp(cpu, 0);
            cpu->xcr0 = v;
            return;
        }
        case 0xd0: { /* xgetbv */
            if (!(cpu->cr4 & 0x40000))
                break;
            if (cpu->regs[X86_RCX] & 0xffffffffu)
                x86_raise_gp(cpu, 0);
            cpu->regs[X86_RAX] = cpu->xcr0 & 0xffffffffu;
            cpu->regs[X86_RDX] = cpu->xcr0 >> 32;
            return;
        }
        case 0xf8: /* swapgs */
            if (!x86_mode64(cpu))
                break;
            need_cpl0(cpu);
            {
                uint64_t t = cpu->seg[X86_GS].base;
                cpu->seg[X86_GS].base = cpu->kernel_gs_base;
                cpu->kernel_gs_base = t;
            }
            return;
        case 0xf9: { /* rdtscp */
            uint64_t t = cpu->ops->rdtsc(cpu->opaque);
            cpu->regs[X86_RAX] = t & 0xffffffffu;
            cpu->regs[X86_RDX] = t >> 32;
            cpu->regs[X86_RCX] = cpu->tsc_aux & 0xffffffffu;
            return;
        }
        default:
            if (r == 4) { /* smsw reg */
                uint64_t v = cpu->cr0 & x86_size_mask(i->opsize);
                x86_rm_write(cpu, i, i->opsize, v);
                return;
            }
            if (r == 6) { /* lmsw reg */
                uint64_t v = cpu->regs[i->rm] & 0xffff;
                need_cpl0(cpu);
                x86_write_cr(cpu, 0, (cpu->cr0 & ~0xeull) | (v & 0xf) | (cpu->cr0 & CR0_PE));
                return;
            }
            break;
        }
    }
    x86_log_unknown(cpu, i);
    x86_raise_ud(cpu);
}

/* Read descriptor (sel) without faulting: false when null or outside the table. */
static bool read_desc_quiet(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s)
{
    uint64_t limit;

    if ((sel & ~3) == 0)
        return false;
    if (sel & 4) {
        if (cpu->seg[X86_LDTR].unusable || !cpu->seg[X86_LDTR].present)
            return false;
        limit = cpu->seg[X86_LDTR].limit;
    } else {
        limit = cpu->gdt.limit;
    }
    if ((uint64_t)(sel & ~7u) + 7 > limit)
        return false;
    x86_read_descriptor(cpu, sel, s, NULL);
    return true;
}

/* DPL >= max(CPL, RPL), or conforming code */
static bool desc_visible(struct x86_cpu *cpu, uint16_t sel, struct x86_segment *s)
{
    unsigned cpl = x86_cpl(cpu), rpl = sel & 3;

    if (s->s && (s->type & 0xc) == 0xc)
        return true;
    return s->dpl >= cpl && s->dpl >= rpl;
}

void x86_exec_0f00(struct x86_cpu *cpu, struct x86_insn *i)
{
    unsigned r = i->reg & 7;

    if (x86_real_mode(cpu) || (cpu->rflags & X86_VM)) {
        x86_log_unknown(cpu, i);
        x86_raise_ud(cpu);
    }
    switch (r) {
    case 0: /* sldt */
        x86_rm_write(cpu, i, i->mem ? 2 : i->opsize, cpu->seg[X86_LDTR].selector);
        return;
    case 1: /* str */
        x86_rm_write(cpu, i, i->mem ? 2 : i->opsize, cpu->seg[X86_TR].selector);
        return;
    case 2: { /* lldt */
        uint16_t sel = (uint16_t)x86_rm_read(cpu, i, 2);
        need_cpl0(cpu);
        x86_load_ldt(cpu, sel);
        return;
    }
    case 3: { /* ltr */
        uint16_t sel = (uint16_t)x86_rm_read(cpu, i, 2);
        need_cpl0(cpu);
        x86_load_tr(cpu, sel);
        return;
    }
    case 4:
    case 5: { /* verr, verw */
        uint16_t sel = (uint16_t)x86_rm_read(cpu, i, 2);
        struct x86_segment s;
        bool ok = read_desc_quiet(cpu, sel, &s) && s.s && desc_visible(cpu, sel, &s);
        if (ok)
            ok = r == 4 ? (!(s.type & 8) || (s.type & 2)) : (!(s.type & 8) && (s.type & 2));
        x86_flags_set(cpu, ok ? X86_ZF : 0, X86_ZF);
        return;
    }
    default:
        x86_log_unknown(cpu, i);
        x86_raise_ud(cpu);
    }
}

/* lar (lsl == false) / lsl: 0f 02 / 0f 03 */
void x86_exec_lar_lsl(struct x86_cpu *cpu, struct x86_insn *i, bool lsl)
{
    uint16_t sel = (uint16_t)x86_rm_read(cpu, i, 2);
    struct x86_segment s;
    uint64_t raw = 0;
    bool ok, lm = x86_long_mode(cpu);

    if (x86_real_mode(cpu) || (cpu->rflags & X86_VM)) {
        x86_log_unknown(cpu, i);
        x86_raise_ud(cpu);
    }
    ok = read_desc_quiet(cpu, sel, &s);
    if (ok && !s.s) {
        switch (s.type) {
        case 2:
        case 9:
        case 0xb:
            break;
        case 1:
        case 3:
            ok = !lm;
            break;
        case 0xc:
            ok = !lsl;
            break;
        case 4:
        case 5:
            ok = !lsl && !lm;
            break;
        default:
            ok = false;
            break;
        }
    }
    if (ok && !((s.s && (s.type & 0xc) == 0xc))) /* conforming code skips the DPL check */
        ok = desc_visible(cpu, sel, &s);
    if (ok) {
        if (lsl) {
            x86_reg_set(cpu, i, i->reg, i->opsize, s.limit);
        } else {
            raw = x86_lin_read_n(cpu,
                                 ((sel & 4) ? cpu->seg[X86_LDTR].base : cpu->gdt.base) +
                                     (sel & ~7u) + 4,
                                 4, true);
            x86_reg_set(cpu, i, i->reg, i->opsize, raw & 0x00f0ff00u);
        }
    }
    x86_flags_set(cpu, ok ? X86_ZF : 0, X86_ZF);
}

/* The flat 4 GiB code segment of the fast system calls (sysenter, sysexit,
 * syscall, sysret) at privilege (dpl); callers set selector, L and D. */
static struct x86_segment flat_code(unsigned dpl)
{
    return (struct x86_segment){
        .type = 0xb,
        .s = 1,
        .present = 1,
        .dpl = (uint8_t)dpl,
        .g = 1,
        .limit = 0xffffffffu,
    };
}

void x86_sysenter(struct x86_cpu *cpu)
{
    struct x86_segment cs, ss;
    bool lm = x86_long_mode(cpu);

    if (x86_real_mode(cpu) || !(cpu->sysenter_cs & 0xfffc))
        x86_raise_gp(cpu, 0);
    cs = flat_code(0);
    cs.selector = cpu->sysenter_cs & 0xfffc;
    cs.l = lm;
    cs.db = !lm;
    ss = cs;
    ss.selector = (cpu->sysenter_cs + 8) & 0xfffc;
    ss.type = 3;
    ss.l = 0;
    ss.db = 1;
    x86_flags_set(cpu, 0, X86_VM | X86_IF | X86_RF);
    cpu->seg[X86_CS] = cs;
    cpu->seg[X86_SS] = ss;
    cpu->rip = lm ? cpu->sysenter_eip : cpu->sysenter_eip & 0xffffffffu;
    cpu->regs[X86_RSP] = lm ? cpu->sysenter_esp : cpu->sysenter_esp & 0xffffffffu;
}

void x86_sysexit(struct x86_cpu *cpu, bool wide)
{
    struct x86_segment cs, ss;

    if (x86_real_mode(cpu) || !(cpu->sysenter_cs & 0xfffc))
        x86_raise_gp(cpu, 0);
    need_cpl0(cpu);
    cs = flat_code(3);
    ss = cs;
    if (wide) {
        cs.selector = (uint16_t)((cpu->sysenter_cs + 32) | 3);
        cs.l = 1;
        ss.selector = (uint16_t)((cpu->sysenter_cs + 40) | 3);
        cpu->rip = cpu->regs[X86_RDX];
        cpu->regs[X86_RSP] = cpu->regs[X86_RCX];
    } else {
        cs.selector = (uint16_t)((cpu->sysenter_cs + 16) | 3);
        cs.db = 1;
        ss.selector = (uint16_t)((cpu->sysenter_cs + 24) | 3);
        cpu->rip = cpu->regs[X86_RDX] & 0xffffffffu;
        cpu->regs[X86_RSP] = cpu->regs[X86_RCX] & 0xffffffffu;
    }
    ss.type = 3;
    ss.db = 1;
    cpu->seg[X86_CS] = cs;
    cpu->seg[X86_SS] = ss;
}

void x86_syscall(struct x86_cpu *cpu)
{
    struct x86_segment cs, ss;
    uint16_t sel = (uint16_t)(cpu->star >> 32);
    uint64_t f = x86_flags(cpu);

    if (!(cpu->efer & EFER_SCE) || !x86_long_mode(cpu))
        x86_raise_ud(cpu);
    cs = flat_code(0);
    cs.selector = sel & ~3;
    cs.l = 1;
    ss = cs;
    ss.selector = (sel + 8) & ~3;
    ss.type = 3;
    ss.l = 0;
    ss.db = 1;
    cpu->regs[X86_RCX] = x86_in(cpu)->cur->next_rip;
    cpu->regs[X86_R11] = f & ~(uint64_t)X86_RF;
    cpu->rip = x86_mode64(cpu) ? cpu->lstar : cpu->cstar;
    cpu->seg[X86_CS] = cs;
    cpu->seg[X86_SS] = ss;
    x86_flags_set(cpu, f & ~cpu->sfmask & ~(uint64_t)X86_RF, ~(uint64_t)0);
}

void x86_sysret(struct x86_cpu *cpu)
{
    struct x86_insn *i = x86_in(cpu)->cur;
    uint16_t sel = (uint16_t)(cpu->star >> 48);
    struct x86_segment cs, ss;

    if (!(cpu->efer & EFER_SCE) || !x86_long_mode(cpu))
        x86_raise_ud(cpu);
    need_cpl0(cpu);
    cs = flat_code(3);
    ss = cs;
    if (i->opsize == 8) {
        if (!canonical(cpu->regs[X86_RCX]))
            x86_raise_gp(cpu, 0);
        cs.selector = (sel + 16) | 3;
        cs.l = 1;
        cpu->rip = cpu->regs[X86_RCX];
    } else {
        cs.selector = sel | 3;
        cs.db = 1;
        cpu->rip = cpu->regs[X86_RCX] & 0xffffffffu;
    }
    ss.selector = (sel + 8) | 3;
    ss.type = 3;
    ss.db = 1;
    cpu->seg[X86_CS] = cs;
    cpu->seg[X86_SS] = ss;
    x86_flags_set(cpu, (cpu->regs[X86_R11] & ~(uint64_t)(X86_RF | X86_VM)), ~(uint64_t)0);
}
