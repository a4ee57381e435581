/* emu-state.c: the software vCPU and VM state as FDT nodes: the same vCPU
 * schema as the KVM backend (tern/x86-state.h), plus a small "emu" child for
 * what only the interpreter has; the VM node holds the TSC and the chips. */
#include <libfdt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "emu-internal.h"
#include "emu-irq-internal.h"
#include "tern/util.h"
#include "tern/vmstate.h"
#include "tern/x86-state.h"

/* The state KVM's structures have no field for. */
struct emu_vcpu_extra {
    uint8_t halted;
    uint8_t init_pending;
    uint32_t sipi_vector;        /* 0xffffffff: none */
    uint64_t timer_remaining_ns; /* LAPIC one-shot/periodic timer */
};

static const struct vmstate_field extra_fields[] = {
    VMSTATE_U8(struct emu_vcpu_extra, halted),
    VMSTATE_U8(struct emu_vcpu_extra, init_pending),
    VMSTATE_U32(struct emu_vcpu_extra, sipi_vector),
    VMSTATE_U64(struct emu_vcpu_extra, timer_remaining_ns),
    VMSTATE_END,
};
static const struct vmstate_desc extra_desc = {
    .name = "emu",
    .version = 1,
    .min_version = 1,
    .fields = extra_fields,
};

/* struct x86_regs's order of the general registers (KVM's), by encoding number. */
static const enum x86_reg schema_reg_order[16] = {
    X86_RAX, X86_RBX, X86_RCX, X86_RDX, X86_RSI, X86_RDI, X86_RSP, X86_RBP,
    X86_R8,  X86_R9,  X86_R10, X86_R11, X86_R12, X86_R13, X86_R14, X86_R15,
};

/* Segment registers in the encoding's order, against the schema's names. */
static struct x86_segment *sreg_slot(struct x86_sregs *s, enum x86_seg seg)
{
    switch (seg) {
    case X86_ES:
        return &s->es;
    case X86_CS:
        return &s->cs;
    case X86_SS:
        return &s->ss;
    case X86_DS:
        return &s->ds;
    case X86_FS:
        return &s->fs;
    case X86_GS:
        return &s->gs;
    case X86_TR:
        return &s->tr;
    default:
        return &s->ldt;
    }
}

/* MSRs the interpreter keeps, saved by index as the KVM backend saves its list. */
/* clang-format off */
#define CPU_MSR(idx, field) { idx, offsetof(struct x86_cpu, field) }
/* clang-format on */
static const struct {
    uint32_t index;
    size_t offset;
} cpu_msrs[] = {
    CPU_MSR(MSR_STAR, star),
    CPU_MSR(MSR_LSTAR, lstar),
    CPU_MSR(MSR_CSTAR, cstar),
    CPU_MSR(MSR_SFMASK, sfmask),
    CPU_MSR(MSR_KERNEL_GS_BASE, kernel_gs_base),
    CPU_MSR(MSR_IA32_SYSENTER_CS, sysenter_cs),
    CPU_MSR(MSR_IA32_SYSENTER_ESP, sysenter_esp),
    CPU_MSR(MSR_IA32_SYSENTER_EIP, sysenter_eip),
    CPU_MSR(MSR_IA32_PAT, pat),
    CPU_MSR(MSR_TSC_AUX, tsc_aux),
    CPU_MSR(MSR_IA32_MISC_ENABLE, misc_enable),
};
#undef CPU_MSR

static uint64_t *cpu_msr(struct x86_cpu *cpu, size_t offset)
{
    return (uint64_t *)((uint8_t *)cpu + offset);
}

static void to_schema(struct emu_vcpu *v, struct x86_vcpu_state *st, struct emu_vcpu_extra *extra,
                      const struct emu_lapic_state *lapic)
{
    struct x86_cpu *cpu = &v->cpu;
    uint64_t *r = &st->regs.rax;

    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; i < 16; i++)
        r[i] = cpu->regs[schema_reg_order[i]];
    st->regs.rip = cpu->rip;
    st->regs.rflags = x86_cpu_get_rflags(cpu);
    for (unsigned s = 0; s < X86_NR_SEGS; s++)
        *sreg_slot(&st->sregs, s) = cpu->seg[s];
    st->sregs.gdt = cpu->gdt;
    st->sregs.idt = cpu->idt;
    st->sregs.cr0 = cpu->cr0;
    st->sregs.cr2 = cpu->cr2;
    st->sregs.cr3 = cpu->cr3;
    st->sregs.cr4 = cpu->cr4;
    st->sregs.cr8 = cpu->tpr;
    st->sregs.efer = cpu->efer;
    st->sregs.apic_base = lapic->apic_base;
    st->mp_state.mp_state = cpu->halted ? X86_MP_HALTED : v->mp_state;
    st->fpu.fcw = 0x37f;
    st->fpu.mxcsr = 0x1f80;
    st->xcrs.nr_xcrs = 1;
    st->xcrs.xcrs[0].value = cpu->xcr0 ? cpu->xcr0 : 1;
    memcpy(st->lapic.regs, lapic->regs, sizeof(st->lapic.regs));
    st->events.interrupt.shadow = cpu->interrupt_shadow;
    st->events.nmi.pending = cpu->nmi_pending;
    memcpy(st->debugregs.db, cpu->dr, sizeof(cpu->dr));
    st->debugregs.dr6 = cpu->dr6;
    st->debugregs.dr7 = cpu->dr7;

    g_mutex_lock(&v->lock);
    extra->init_pending = v->init_pending;
    extra->sipi_vector = v->sipi_vector < 0 ? 0xffffffffu : (uint32_t)v->sipi_vector;
    g_mutex_unlock(&v->lock);
    extra->halted = cpu->halted;
    extra->timer_remaining_ns = lapic->timer_remaining_ns;
}

bool emu_vcpu_save_state(struct accel_vcpu *base, void *fdt, int parent, GError **errp)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);
    struct x86_vcpu_state st;
    struct emu_vcpu_extra extra = { 0 };
    struct emu_lapic_state lapic;
    struct x86_msr msrs[G_N_ELEMENTS(cpu_msrs) + 2];
    unsigned n = 0;
    char name[16];

    emu_lapic_save(v->lapic, &lapic, emu_now_ns());
    to_schema(v, &st, &extra, &lapic);
    for (unsigned i = 0; i < G_N_ELEMENTS(cpu_msrs); i++)
        msrs[n++] = (struct x86_msr){ cpu_msrs[i].index, *cpu_msr(&v->cpu, cpu_msrs[i].offset) };
    msrs[n++] = (struct x86_msr){ MSR_IA32_TSC_DEADLINE, lapic.tsc_deadline };
    msrs[n++] = (struct x86_msr){ MSR_IA32_TSC, emu_guest_tsc(v->vm) };

    snprintf(name, sizeof(name), "cpu@%u", v->index);
    if (!vmstate_save(&x86_vcpu_vmstate, &st, fdt, parent, name, errp))
        return false;
    int node = fdt_subnode_offset(fdt, parent, name);
    return x86_msrs_save(msrs, n, fdt, node, errp) &&
           vmstate_save(&extra_desc, &extra, fdt, node, "emu", errp);
}

bool emu_vcpu_load_state(struct accel_vcpu *base, const void *fdt, int node, GError **errp)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);
    struct x86_cpu *cpu = &v->cpu;
    struct x86_vcpu_state st;
    struct emu_vcpu_extra extra = { .sipi_vector = 0xffffffffu };
    struct emu_lapic_state lapic = { 0 };
    struct x86_msr msrs[64];

    memset(&st, 0, sizeof(st));
    if (!vmstate_load(&x86_vcpu_vmstate, &st, fdt, node, errp))
        return false;
    int extra_node = fdt_subnode_offset(fdt, node, "emu");
    if (extra_node < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "vCPU %u: state was saved by another accelerator (no 'emu' node); "
                    "the software CPU loads only its own",
                    v->index);
        return false;
    }
    if (!vmstate_load(&extra_desc, &extra, fdt, extra_node, errp))
        return false;
    int n = x86_msrs_load(msrs, G_N_ELEMENTS(msrs), fdt, node, errp);
    if (n < 0)
        return false;

    uint64_t *r = &st.regs.rax;
    for (unsigned i = 0; i < 16; i++)
        cpu->regs[schema_reg_order[i]] = r[i];
    cpu->rip = st.regs.rip;
    x86_cpu_set_rflags(cpu, st.regs.rflags);
    for (unsigned s = 0; s < X86_NR_SEGS; s++)
        cpu->seg[s] = *sreg_slot(&st.sregs, s);
    cpu->gdt = st.sregs.gdt;
    cpu->idt = st.sregs.idt;
    cpu->cr0 = st.sregs.cr0;
    cpu->cr2 = st.sregs.cr2;
    cpu->cr3 = st.sregs.cr3;
    cpu->cr4 = st.sregs.cr4;
    cpu->tpr = (uint8_t)(st.sregs.cr8 & 0xf);
    cpu->efer = st.sregs.efer;
    cpu->xcr0 = st.xcrs.xcrs[0].value;
    cpu->interrupt_shadow = st.events.interrupt.shadow;
    cpu->nmi_pending = st.events.nmi.pending;
    memcpy(cpu->dr, st.debugregs.db, sizeof(cpu->dr));
    cpu->dr6 = st.debugregs.dr6;
    cpu->dr7 = st.debugregs.dr7;
    cpu->halted = extra.halted;
    v->mp_state = st.mp_state.mp_state == X86_MP_HALTED ? X86_MP_RUNNABLE : st.mp_state.mp_state;
    if (v->mp_state > X86_MP_SIPI_RECEIVED) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "vCPU %u: bad mp_state %u", v->index,
                    v->mp_state);
        return false;
    }

    memcpy(lapic.regs, st.lapic.regs, sizeof(lapic.regs));
    lapic.apic_base = st.sregs.apic_base;
    lapic.timer_remaining_ns = extra.timer_remaining_ns;
    for (int i = 0; i < n; i++) {
        for (unsigned k = 0; k < G_N_ELEMENTS(cpu_msrs); k++)
            if (cpu_msrs[k].index == msrs[i].index)
                *cpu_msr(cpu, cpu_msrs[k].offset) = msrs[i].value;
        if (msrs[i].index == MSR_IA32_TSC_DEADLINE)
            lapic.tsc_deadline = msrs[i].value;
    }
    emu_lapic_load(v->lapic, &lapic, emu_now_ns());
    cpu->tpr = emu_lapic_get_cr8(v->lapic); /* CR8 is the TPR register's view */

    g_mutex_lock(&v->lock);
    v->init_pending = extra.init_pending;
    v->sipi_vector = extra.sipi_vector > 0xff ? -1 : (int)extra.sipi_vector;
    g_mutex_unlock(&v->lock);
    x86_cpu_state_changed(cpu);
    if (emu_lapic_pending(v->lapic))
        __atomic_store_n(&cpu->irq_request, 1, __ATOMIC_SEQ_CST);
    return true;
}

/* ---- the VM: the guest TSC and the chips ---- */

/* The TSC travels with the wall-clock time it was read at, so the guest sees
 * real time pass across a migration, as it does on KVM. */
struct emu_vm_state {
    uint64_t tsc;
    uint64_t realtime_ns;
    uint32_t tsc_khz; /* the guest's TSC rate: the target scales to it */
};

static const struct vmstate_field vm_fields[] = {
    VMSTATE_U64(struct emu_vm_state, tsc),
    VMSTATE_U64(struct emu_vm_state, realtime_ns),
    VMSTATE_U32(struct emu_vm_state, tsc_khz),
    VMSTATE_END,
};
const struct vmstate_desc emu_vm_vmstate = {
    .name = "vm",
    .version = 1,
    .min_version = 1,
    .fields = vm_fields,
};

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool emu_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);
    struct emu_vm_state st = {
        .tsc = emu_guest_tsc(vm),
        .realtime_ns = realtime_ns(),
        .tsc_khz = vm->tsc_khz,
    };

    if (!vmstate_save(&emu_vm_vmstate, &st, fdt, parent, "vm", errp))
        return false;
    int node = fdt_subnode_offset(fdt, parent, "vm");
    return emu_chips_save(vm->chips, fdt, node, emu_now_ns(), errp);
}

bool emu_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);
    struct emu_vm_state st;

    if (!vmstate_load(&emu_vm_vmstate, &st, fdt, node, errp))
        return false;
    int chips = fdt_subnode_offset(fdt, node, "chips");
    if (chips < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "VM state was saved by another accelerator (no 'chips' node)");
        return false;
    }
    if (!emu_chips_load(vm->chips, fdt, chips, emu_now_ns(), errp))
        return false;
    uint64_t now = realtime_ns();
    uint64_t elapsed = now > st.realtime_ns ? now - st.realtime_ns : 0;
    if (!st.tsc_khz) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "VM state: TSC rate 0 kHz");
        return false;
    }
    uint64_t tsc = st.tsc + (uint64_t)((unsigned __int128)elapsed * st.tsc_khz / 1000000);
    emu_set_guest_tsc(vm, tsc, st.tsc_khz);
    return true;
}
