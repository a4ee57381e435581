/* kvm-state.c: complete vCPU and VM state, read from and written to KVM, as FDT nodes. */
#include <errno.h>
#include <libfdt.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kvm-internal.h"
#include "tern/util.h"
#include "tern/vmstate.h"
#include "tern/x86-state.h"

/* The shared vCPU state (tern/x86-state.h) mirrors KVM's structures, so the
 * two convert by copy. These asserts keep the mirror honest. */
#define SAME_LAYOUT(ours, theirs) G_STATIC_ASSERT(sizeof(ours) == sizeof(theirs))
SAME_LAYOUT(struct x86_regs, struct kvm_regs);
SAME_LAYOUT(struct x86_sregs, struct kvm_sregs);
SAME_LAYOUT(struct x86_fpu, struct kvm_fpu);
SAME_LAYOUT(struct x86_xcrs, struct kvm_xcrs);
SAME_LAYOUT(struct x86_lapic, struct kvm_lapic_state);
SAME_LAYOUT(struct x86_events, struct kvm_vcpu_events);
SAME_LAYOUT(struct x86_debugregs, struct kvm_debugregs);
SAME_LAYOUT(struct x86_mp_state, struct kvm_mp_state);
G_STATIC_ASSERT(offsetof(struct x86_sregs, efer) == offsetof(struct kvm_sregs, efer));
G_STATIC_ASSERT(offsetof(struct x86_sregs, gdt) == offsetof(struct kvm_sregs, gdt));
G_STATIC_ASSERT(offsetof(struct x86_segment, unusable) == offsetof(struct kvm_segment, unusable));
G_STATIC_ASSERT(offsetof(struct x86_fpu, mxcsr) == offsetof(struct kvm_fpu, mxcsr));
G_STATIC_ASSERT(offsetof(struct x86_events, exception_payload) ==
                offsetof(struct kvm_vcpu_events, exception_payload));
G_STATIC_ASSERT(offsetof(struct x86_debugregs, flags) == offsetof(struct kvm_debugregs, flags));

/* VM-wide: the KVM clock, the two PICs and the IOAPIC, the PIT. */
struct vm_state {
    struct kvm_clock_data clock;
    uint8_t pic_master[512], pic_slave[512], ioapic[512];
    struct kvm_pit_state2 pit;
};

static const struct vmstate_field clock_fields[] = {
    VMSTATE_U64(struct kvm_clock_data, clock),
    VMSTATE_U32(struct kvm_clock_data, flags),
    VMSTATE_END,
};
static const struct vmstate_desc clock_desc = {
    .name = "clock",
    .version = 1,
    .min_version = 1,
    .fields = clock_fields,
};

static const struct vmstate_field vm_fields[] = {
    VMSTATE_STRUCT(struct vm_state, clock, clock_desc),
    VMSTATE_BYTES(struct vm_state, pic_master),
    VMSTATE_BYTES(struct vm_state, pic_slave),
    VMSTATE_BYTES(struct vm_state, ioapic),
    VMSTATE_BYTES(struct vm_state, pit),
    VMSTATE_END,
};
const struct vmstate_desc kvm_vm_vmstate = {
    .name = "vm",
    .version = 1,
    .min_version = 1,
    .fields = vm_fields,
};

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

static bool vm_ioctl(struct kvm *k, unsigned long req, void *arg, const char *name, GError **errp)
{
    if (ioctl(k->vm_fd, req, arg) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: %s", name, g_strerror(errno));
        return false;
    }
    return true;
}
#define VM_IOCTL(k, req, arg, errp) vm_ioctl(k, req, arg, #req, errp)

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
        next += n + 1; /* skip the one that failed */
    }
    out->hdr.nmsrs = have;
    return have;
}

static bool save_msrs(struct kvm_vcpu *vcpu, void *fdt, int node, GError **errp)
{
    g_autofree struct msr_buf *msrs = g_new0(struct msr_buf, 1);
    g_autofree struct x86_msr *list = g_new0(struct x86_msr, KVM_MAX_MSRS);
    unsigned n = read_msrs(vcpu, msrs);

    for (unsigned i = 0; i < n; i++)
        list[i] = (struct x86_msr){ msrs->e[i].index, msrs->e[i].data };
    return x86_msrs_save(list, n, fdt, node, errp);
}

static bool load_msrs(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    g_autofree struct msr_buf *msrs = g_new0(struct msr_buf, 1);
    g_autofree struct x86_msr *list = g_new0(struct x86_msr, KVM_MAX_MSRS);
    int n = x86_msrs_load(list, KVM_MAX_MSRS, fdt, node, errp);

    if (n < 0)
        return false;
    for (int i = 0; i < n; i++)
        msrs->e[i] = (struct kvm_msr_entry){ .index = list[i].index, .data = list[i].value };
    msrs->hdr.nmsrs = n;
    int done = ioctl(vcpu->fd, KVM_SET_MSRS, msrs);
    if (done < 0 || done != n) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: KVM_SET_MSRS refused MSR 0x%x",
                    vcpu->index, done >= 0 ? msrs->e[done].index : 0);
        return false;
    }
    return true;
}

static bool set_tsc_deadline(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    g_autofree struct x86_msr *list = g_new0(struct x86_msr, KVM_MAX_MSRS);
    int n = x86_msrs_load(list, KVM_MAX_MSRS, fdt, node, errp);

    for (int i = 0; i < n; i++) {
        if (list[i].index != MSR_IA32_TSC_DEADLINE)
            continue;
        struct msr_buf m = { .hdr.nmsrs = 1,
                             .e[0] = { .index = MSR_IA32_TSC_DEADLINE, .data = list[i].value } };
        if (ioctl(vcpu->fd, KVM_SET_MSRS, &m) != 1) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: cannot restore TSC deadline",
                        vcpu->index);
            return false;
        }
    }
    return n >= 0;
}

static bool get_xsave(struct kvm_vcpu *vcpu, void *buf, GError **errp)
{
    if (vcpu->kvm->xsave_size > sizeof(struct kvm_xsave))
        return VCPU_IOCTL(vcpu, KVM_GET_XSAVE2, buf, errp);
    return VCPU_IOCTL(vcpu, KVM_GET_XSAVE, buf, errp);
}

/* ---- vCPU ---- */

bool kvm_vcpu_save_state(struct accel_vcpu *base, void *fdt, int parent, GError **errp)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    struct x86_vcpu_state st;
    size_t xsave_size = vcpu->kvm->xsave_size;
    g_autofree void *xsave = g_malloc0(xsave_size);

    memset(&st, 0, sizeof(st));
    /* MP state first: reading it makes KVM process pending INIT/SIPI. */
    if (!VCPU_IOCTL(vcpu, KVM_GET_MP_STATE, &st.mp_state, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_REGS, &st.regs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_SREGS, &st.sregs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_FPU, &st.fpu, errp) || !get_xsave(vcpu, xsave, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_XCRS, &st.xcrs, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_LAPIC, &st.lapic, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_VCPU_EVENTS, &st.events, errp) ||
        !VCPU_IOCTL(vcpu, KVM_GET_DEBUGREGS, &st.debugregs, errp))
        return false;

    char name[16];
    snprintf(name, sizeof(name), "cpu@%u", vcpu->index);
    if (!vmstate_save(&x86_vcpu_vmstate, &st, fdt, parent, name, errp))
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

bool kvm_vcpu_load_state(struct accel_vcpu *base, const void *fdt, int node, GError **errp)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    struct x86_vcpu_state st;
    memset(&st, 0, sizeof(st));
    if (!vmstate_load(&x86_vcpu_vmstate, &st, fdt, node, errp))
        return false;

    int x = fdt_subnode_offset(fdt, node, "xsave");
    int len = 0;
    const void *region = x >= 0 ? fdt_getprop(fdt, x, "region", &len) : NULL;
    if (!region || (size_t)len != vcpu->kvm->xsave_size) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "vCPU %u: XSAVE area of %d bytes does not fit this host's %zu", vcpu->index,
                    region ? len : 0, vcpu->kvm->xsave_size);
        return false;
    }
    g_autofree void *xsave = g_memdup2(region, len);

    /* The order kvm_pvm is known to accept (PLATFORM.md); SREGS before the
     * MSRs (EFER, APIC base), REGS before EVENTS (setting REGS clears pending
     * exceptions), the TSC deadline again once the LAPIC is in place. */
    return VCPU_IOCTL(vcpu, KVM_SET_SREGS, &st.sregs, errp) && load_msrs(vcpu, fdt, node, errp) &&
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

bool kvm_vm_save_state(struct accel *base, void *fdt, int parent, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    g_autofree struct vm_state *st = g_new0(struct vm_state, 1);
    G_STATIC_ASSERT(sizeof(((struct kvm_irqchip *)0)->chip) == sizeof(st->ioapic));

    if (!VM_IOCTL(k, KVM_GET_CLOCK, &st->clock, errp) ||
        !get_chip(k, KVM_IRQCHIP_PIC_MASTER, st->pic_master, errp) ||
        !get_chip(k, KVM_IRQCHIP_PIC_SLAVE, st->pic_slave, errp) ||
        !get_chip(k, KVM_IRQCHIP_IOAPIC, st->ioapic, errp) ||
        !VM_IOCTL(k, KVM_GET_PIT2, &st->pit, errp))
        return false;
    return vmstate_save(&kvm_vm_vmstate, st, fdt, parent, "vm", errp);
}

bool kvm_vm_load_state(struct accel *base, const void *fdt, int node, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    g_autofree struct vm_state *st = g_new0(struct vm_state, 1);
    if (!vmstate_load(&kvm_vm_vmstate, st, fdt, node, errp))
        return false;
    /* Only the clock value travels: the flags describe the source host. */
    struct kvm_clock_data clock = { .clock = st->clock.clock };
    return set_chip(k, KVM_IRQCHIP_PIC_MASTER, st->pic_master, errp) &&
           set_chip(k, KVM_IRQCHIP_PIC_SLAVE, st->pic_slave, errp) &&
           set_chip(k, KVM_IRQCHIP_IOAPIC, st->ioapic, errp) &&
           VM_IOCTL(k, KVM_SET_PIT2, &st->pit, errp) && VM_IOCTL(k, KVM_SET_CLOCK, &clock, errp);
}
