/* kvm-state.c: complete vCPU and VM state, read from and written to KVM, as FDT nodes. */
#include <errno.h>
#include <libfdt.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kvm-internal.h"
#include "tern/util.h"
#include "tern/vmstate.h"

/* ---- vmstate tables for the KVM structures ---- */

#define R(f) VMSTATE_U64(struct kvm_regs, f)
static const struct vmstate_field regs_fields[] = {
    R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rsp), R(rbp),
    R(r8), R(r9), R(r10), R(r11), R(r12), R(r13), R(r14), R(r15),
    R(rip), R(rflags), VMSTATE_END,
};
#undef R
static const struct vmstate_desc regs_desc = {
    .name = "regs", .version = 1, .min_version = 1, .fields = regs_fields,
};

#define S(ty, f) VMSTATE_##ty(struct kvm_segment, f)
static const struct vmstate_field segment_fields[] = {
    S(U64, base), S(U32, limit), S(U16, selector), S(U8, type), S(U8, present),
    S(U8, dpl), S(U8, db), S(U8, s), S(U8, l), S(U8, g), S(U8, avl), S(U8, unusable),
    VMSTATE_END,
};
#undef S
static const struct vmstate_desc segment_desc = {
    .name = "segment", .version = 1, .min_version = 1, .fields = segment_fields,
};

static const struct vmstate_field dtable_fields[] = {
    VMSTATE_U64(struct kvm_dtable, base), VMSTATE_U16(struct kvm_dtable, limit), VMSTATE_END,
};
static const struct vmstate_desc dtable_desc = {
    .name = "dtable", .version = 1, .min_version = 1, .fields = dtable_fields,
};

#define SEG(f) VMSTATE_STRUCT(struct kvm_sregs, f, segment_desc)
#define CR(f) VMSTATE_U64(struct kvm_sregs, f)
static const struct vmstate_field sregs_fields[] = {
    SEG(cs), SEG(ds), SEG(es), SEG(fs), SEG(gs), SEG(ss), SEG(tr), SEG(ldt),
    VMSTATE_STRUCT(struct kvm_sregs, gdt, dtable_desc),
    VMSTATE_STRUCT(struct kvm_sregs, idt, dtable_desc),
    CR(cr0), CR(cr2), CR(cr3), CR(cr4), CR(cr8), CR(efer), CR(apic_base),
    VMSTATE_U64_ARRAY(struct kvm_sregs, interrupt_bitmap, 4),
    VMSTATE_END,
};
#undef SEG
#undef CR
static const struct vmstate_desc sregs_desc = {
    .name = "sregs", .version = 1, .min_version = 1, .fields = sregs_fields,
};

static const struct vmstate_field fpu_fields[] = {
    VMSTATE_BYTES(struct kvm_fpu, fpr),
    VMSTATE_U16(struct kvm_fpu, fcw), VMSTATE_U16(struct kvm_fpu, fsw),
    VMSTATE_U8(struct kvm_fpu, ftwx), VMSTATE_U16(struct kvm_fpu, last_opcode),
    VMSTATE_U64(struct kvm_fpu, last_ip), VMSTATE_U64(struct kvm_fpu, last_dp),
    VMSTATE_BYTES(struct kvm_fpu, xmm), VMSTATE_U32(struct kvm_fpu, mxcsr),
    VMSTATE_END,
};
static const struct vmstate_desc fpu_desc = {
    .name = "fpu", .version = 1, .min_version = 1, .fields = fpu_fields,
};

static const struct vmstate_field xcrs_fields[] = {
    VMSTATE_U32(struct kvm_xcrs, nr_xcrs), VMSTATE_U32(struct kvm_xcrs, flags),
    VMSTATE_BYTES(struct kvm_xcrs, xcrs), VMSTATE_END,
};
static const struct vmstate_desc xcrs_desc = {
    .name = "xcrs", .version = 1, .min_version = 1, .fields = xcrs_fields,
};

static const struct vmstate_field lapic_fields[] = {
    VMSTATE_BYTES(struct kvm_lapic_state, regs), VMSTATE_END,
};
static const struct vmstate_desc lapic_desc = {
    .name = "lapic", .version = 1, .min_version = 1, .fields = lapic_fields,
};

#define E(ty, f) VMSTATE_##ty(struct kvm_vcpu_events, f)
static const struct vmstate_field events_fields[] = {
    E(U8, exception.injected), E(U8, exception.nr), E(U8, exception.has_error_code),
    E(U8, exception.pending), E(U32, exception.error_code),
    E(U8, interrupt.injected), E(U8, interrupt.nr), E(U8, interrupt.soft),
    E(U8, interrupt.shadow),
    E(U8, nmi.injected), E(U8, nmi.pending), E(U8, nmi.masked),
    E(U32, sipi_vector), E(U32, flags),
    E(U8, smi.smm), E(U8, smi.pending), E(U8, smi.smm_inside_nmi), E(U8, smi.latched_init),
    E(U8, triple_fault.pending),
    E(U8, exception_has_payload), E(U64, exception_payload),
    VMSTATE_END,
};
#undef E
static const struct vmstate_desc events_desc = {
    .name = "events", .version = 1, .min_version = 1, .fields = events_fields,
};

static const struct vmstate_field mp_state_fields[] = {
    VMSTATE_U32(struct kvm_mp_state, mp_state), VMSTATE_END,
};
static const struct vmstate_desc mp_state_desc = {
    .name = "mp-state", .version = 1, .min_version = 1, .fields = mp_state_fields,
};

static const struct vmstate_field debugregs_fields[] = {
    VMSTATE_U64_ARRAY(struct kvm_debugregs, db, 4), VMSTATE_U64(struct kvm_debugregs, dr6),
    VMSTATE_U64(struct kvm_debugregs, dr7), VMSTATE_U64(struct kvm_debugregs, flags),
    VMSTATE_END,
};
static const struct vmstate_desc debugregs_desc = {
    .name = "debugregs", .version = 1, .min_version = 1, .fields = debugregs_fields,
};

/* Everything of one vCPU but XSAVE (its size depends on the host) and the
 * MSRs (a variable list): those two get nodes of their own. */
struct vcpu_state {
    struct kvm_mp_state mp_state;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_debugregs debugregs;
};

#define V(f, d) VMSTATE_STRUCT(struct vcpu_state, f, d)
static const struct vmstate_field vcpu_fields[] = {
    V(mp_state, mp_state_desc), V(regs, regs_desc), V(sregs, sregs_desc), V(fpu, fpu_desc),
    V(xcrs, xcrs_desc), V(lapic, lapic_desc), V(events, events_desc),
    V(debugregs, debugregs_desc), VMSTATE_END,
};
#undef V
static const struct vmstate_desc vcpu_desc = {
    .name = "cpu", .version = 1, .min_version = 1, .fields = vcpu_fields,
};

/* VM-wide: the KVM clock, the two PICs and the IOAPIC, the PIT. */
struct vm_state {
    struct kvm_clock_data clock;
    uint8_t pic_master[512], pic_slave[512], ioapic[512];
    struct kvm_pit_state2 pit;
};

static const struct vmstate_field clock_fields[] = {
    VMSTATE_U64(struct kvm_clock_data, clock), VMSTATE_U32(struct kvm_clock_data, flags),
    VMSTATE_END,
};
static const struct vmstate_desc clock_desc = {
    .name = "clock", .version = 1, .min_version = 1, .fields = clock_fields,
};

static const struct vmstate_field vm_fields[] = {
    VMSTATE_STRUCT(struct vm_state, clock, clock_desc),
    VMSTATE_BYTES(struct vm_state, pic_master), VMSTATE_BYTES(struct vm_state, pic_slave),
    VMSTATE_BYTES(struct vm_state, ioapic), VMSTATE_BYTES(struct vm_state, pit),
    VMSTATE_END,
};
static const struct vmstate_desc vm_desc = {
    .name = "vm", .version = 1, .min_version = 1, .fields = vm_fields,
};

const struct vmstate_desc *kvm_vcpu_vmstate(void)
{
    return &vcpu_desc;
}

const struct vmstate_desc *kvm_vm_vmstate(void)
{
    return &vm_desc;
}

/* ---- ioctl helpers ---- */

static bool vcpu_ioctl(struct kvm_vcpu *vcpu, unsigned long req, void *arg, const char *name,
                       GError **errp)
{
    if (ioctl(vcpu->fd, req, arg) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: %s: %s", vcpu->index, name,
                    g_strerror(errno));
        return false;
    }
    return true;
}
#define VCPU_IOCTL(v, req, arg, errp) vcpu_ioctl(v, req, arg, #req, errp)

static bool vm_ioctl(struct kvm *k, unsigned long req, void *arg, const char *name,
                     GError **errp)
{
    if (ioctl(k->vm_fd, req, arg) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: %s", name, g_strerror(errno));
        return false;
    }
    return true;
}
#define VM_IOCTL(k, req, arg, errp) vm_ioctl(k, req, arg, #req, errp)

/* FDT properties are only 4-byte aligned: read 64-bit cells by copy. */
static uint64_t prop_u64(const void *p)
{
    fdt64_t v;
    memcpy(&v, p, sizeof(v));
    return fdt64_to_cpu(v);
}

struct msr_buf {
    struct kvm_msrs hdr;
    struct kvm_msr_entry e[KVM_MAX_MSRS];
};

/* KVM_GET_MSRS stops at the first MSR it cannot read: skip that one and go on. */
static unsigned read_msrs(struct kvm_vcpu *vcpu, struct msr_buf *out)
{
    const struct kvm *k = vcpu->kvm;
    unsigned have = 0;

    for (unsigned next = 0; next < k->nr_msrs;) {
        struct msr_buf req = { .hdr.nmsrs = k->nr_msrs - next };
        for (unsigned i = 0; i < req.hdr.nmsrs; i++)
            req.e[i].index = k->msr_index[next + i];
        int n = ioctl(vcpu->fd, KVM_GET_MSRS, &req);
        if (n < 0)
            n = 0;
        memcpy(&out->e[have], req.e, n * sizeof(req.e[0]));
        have += n;
        next += n + 1;      /* skip the one that failed */
    }
    out->hdr.nmsrs = have;
    return have;
}

static bool save_msrs(struct kvm_vcpu *vcpu, void *fdt, int node, GError **errp)
{
    g_autofree struct msr_buf *msrs = g_new0(struct msr_buf, 1);
    read_msrs(vcpu, msrs);

    int sub = fdt_add_subnode(fdt, node, "msrs");
    for (unsigned i = 0; sub >= 0 && i < msrs->hdr.nmsrs; i++) {
        char name[16];
        snprintf(name, sizeof(name), "0x%x", msrs->e[i].index);
        sub = fdt_setprop_u64(fdt, sub, name, msrs->e[i].data) < 0 ? -1 : sub;
    }
    if (sub < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "vCPU %u: no room for MSRs",
                    vcpu->index);
        return false;
    }
    return true;
}

static bool load_msrs(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    int sub = fdt_subnode_offset(fdt, node, "msrs");
    if (sub < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: state has no msrs node", vcpu->index);
        return false;
    }
    g_autofree struct msr_buf *msrs = g_new0(struct msr_buf, 1);
    int prop;
    fdt_for_each_property_offset(prop, fdt, sub) {
        const char *name;
        int len;
        const void *val = fdt_getprop_by_offset(fdt, prop, &name, &len);
        char *end;
        unsigned long index = strtoul(name, &end, 16);
        if (!val || len != 8 || *end || msrs->hdr.nmsrs == KVM_MAX_MSRS) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: bad MSR property '%s'", vcpu->index,
                        name ? name : "?");
            return false;
        }
        msrs->e[msrs->hdr.nmsrs].index = index;
        msrs->e[msrs->hdr.nmsrs++].data = prop_u64(val);
    }
    int n = ioctl(vcpu->fd, KVM_SET_MSRS, msrs);
    if (n < 0 || (unsigned)n != msrs->hdr.nmsrs) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: KVM_SET_MSRS refused MSR 0x%x",
                    vcpu->index, n >= 0 ? msrs->e[n].index : 0);
        return false;
    }
    return true;
}

static bool set_tsc_deadline(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    int sub = fdt_subnode_offset(fdt, node, "msrs");
    char name[16];
    snprintf(name, sizeof(name), "0x%x", MSR_IA32_TSC_DEADLINE);
    int len;
    const void *val = fdt_getprop(fdt, sub, name, &len);
    if (!val || len != 8)
        return true;
    struct msr_buf m = { .hdr.nmsrs = 1, .e[0] = { .index = MSR_IA32_TSC_DEADLINE,
                                                   .data = prop_u64(val) } };
    if (ioctl(vcpu->fd, KVM_SET_MSRS, &m) != 1) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: cannot restore TSC deadline", vcpu->index);
        return false;
    }
    return true;
}

static bool get_xsave(struct kvm_vcpu *vcpu, void *buf, GError **errp)
{
    if (vcpu->kvm->xsave_size > sizeof(struct kvm_xsave))
        return VCPU_IOCTL(vcpu, KVM_GET_XSAVE2, buf, errp);
    return VCPU_IOCTL(vcpu, KVM_GET_XSAVE, buf, errp);
}

/* ---- vCPU ---- */

bool kvm_vcpu_save_state(struct kvm_vcpu *vcpu, void *fdt, int parent, GError **errp)
{
    struct vcpu_state st;
    size_t xsave_size = vcpu->kvm->xsave_size;
    g_autofree void *xsave = g_malloc0(xsave_size);

    memset(&st, 0, sizeof(st));
    /* MP state first: reading it makes KVM process pending INIT/SIPI. */
    if (!VCPU_IOCTL(vcpu, KVM_GET_MP_STATE, &st.mp_state, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_REGS, &st.regs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_SREGS, &st.sregs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_FPU, &st.fpu, errp) ||
        !get_xsave(vcpu, xsave, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_XCRS, &st.xcrs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_LAPIC, &st.lapic, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_VCPU_EVENTS, &st.events, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_DEBUGREGS, &st.debugregs, errp))
        return false;

    char name[16];
    snprintf(name, sizeof(name), "cpu@%u", vcpu->index);
    if (!vmstate_save(&vcpu_desc, &st, fdt, parent, name, errp))
        return false;
    int node = fdt_subnode_offset(fdt, parent, name);
    int x = fdt_add_subnode(fdt, node, "xsave");
    if (x < 0 || fdt_setprop(fdt, x, "region", xsave, xsave_size) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "vCPU %u: no room for XSAVE",
                    vcpu->index);
        return false;
    }
    return save_msrs(vcpu, fdt, node, errp);
}

bool kvm_vcpu_load_state(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    struct vcpu_state st;
    memset(&st, 0, sizeof(st));
    if (!vmstate_load(&vcpu_desc, &st, fdt, node, errp))
        return false;

    int x = fdt_subnode_offset(fdt, node, "xsave");
    int len = 0;
    const void *region = x >= 0 ? fdt_getprop(fdt, x, "region", &len) : NULL;
    if (!region || (size_t)len != vcpu->kvm->xsave_size) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "vCPU %u: XSAVE area of %d bytes does not fit this host's %zu",
                    vcpu->index, region ? len : 0, vcpu->kvm->xsave_size);
        return false;
    }
    g_autofree void *xsave = g_memdup2(region, len);

    /* The order kvm_pvm is known to accept (PLATFORM.md); SREGS before the
     * MSRs (EFER, APIC base), REGS before EVENTS (setting REGS clears pending
     * exceptions), the TSC deadline again once the LAPIC is in place. */
    return VCPU_IOCTL(vcpu, KVM_SET_SREGS, &st.sregs, errp) &&
           load_msrs(vcpu, fdt, node, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_REGS, &st.regs, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_FPU, &st.fpu, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_XSAVE, xsave, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_XCRS, &st.xcrs, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_LAPIC, &st.lapic, errp) &&
           set_tsc_deadline(vcpu, fdt, node, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_VCPU_EVENTS, &st.events, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_MP_STATE, &st.mp_state, errp) &&
           VCPU_IOCTL(vcpu, KVM_SET_DEBUGREGS, &st.debugregs, errp);
}

/* ---- VM ---- */

static bool get_chip(struct kvm *k, uint32_t id, uint8_t *out, GError **errp)
{
    struct kvm_irqchip chip = { .chip_id = id };
    if (!VM_IOCTL(k, KVM_GET_IRQCHIP, &chip, errp))
        return false;
    memcpy(out, &chip.chip, sizeof(chip.chip));
    return true;
}

static bool set_chip(struct kvm *k, uint32_t id, const uint8_t *in, GError **errp)
{
    struct kvm_irqchip chip = { .chip_id = id };
    memcpy(&chip.chip, in, sizeof(chip.chip));
    return VM_IOCTL(k, KVM_SET_IRQCHIP, &chip, errp);
}

bool kvm_vm_save_state(struct kvm *k, void *fdt, int parent, GError **errp)
{
    g_autofree struct vm_state *st = g_new0(struct vm_state, 1);
    G_STATIC_ASSERT(sizeof(((struct kvm_irqchip *)0)->chip) == sizeof(st->ioapic));

    if (!VM_IOCTL(k, KVM_GET_CLOCK, &st->clock, errp) ||
        !get_chip(k, KVM_IRQCHIP_PIC_MASTER, st->pic_master, errp) ||
        !get_chip(k, KVM_IRQCHIP_PIC_SLAVE, st->pic_slave, errp) ||
        !get_chip(k, KVM_IRQCHIP_IOAPIC, st->ioapic, errp) ||
        !VM_IOCTL(k, KVM_GET_PIT2, &st->pit, errp))
        return false;
    return vmstate_save(&vm_desc, st, fdt, parent, "vm", errp);
}

bool kvm_vm_load_state(struct kvm *k, const void *fdt, int node, GError **errp)
{
    g_autofree struct vm_state *st = g_new0(struct vm_state, 1);
    if (!vmstate_load(&vm_desc, st, fdt, node, errp))
        return false;
    /* Only the clock value travels: the flags describe the source host. */
    struct kvm_clock_data clock = { .clock = st->clock.clock };
    return set_chip(k, KVM_IRQCHIP_PIC_MASTER, st->pic_master, errp) &&
           set_chip(k, KVM_IRQCHIP_PIC_SLAVE, st->pic_slave, errp) &&
           set_chip(k, KVM_IRQCHIP_IOAPIC, st->ioapic, errp) &&
           VM_IOCTL(k, KVM_SET_PIT2, &st->pit, errp) &&
           VM_IOCTL(k, KVM_SET_CLOCK, &clock, errp);
}
