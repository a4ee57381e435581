/* accel.c: choosing a backend, and the calls of accel.h passed to its table. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "accel-backend.h"
#include "tern/util.h"

bool accel_kvm_present(void)
{
    return access("/dev/kvm", F_OK) == 0;
}

bool accel_kind_parse(const char *name, enum accel_kind *kind)
{
    if (strcmp(name, "kvm") == 0)
        *kind = ACCEL_KVM;
    else if (strcmp(name, "emu") == 0 || strcmp(name, "tcg") == 0)
        *kind = ACCEL_EMU;
    else if (strcmp(name, "auto") == 0)
        *kind = ACCEL_AUTO;
    else
        return false;
    return true;
}

struct accel *accel_open(const struct accel_options *opts, GError **errp)
{
    g_autoptr(GError) kvm_err = NULL;
    struct accel *a;

    switch (opts->kind) {
    case ACCEL_KVM:
        return kvm_accel_open(opts, errp);
    case ACCEL_EMU:
        return emu_accel_open(opts, errp);
    case ACCEL_AUTO:
        break;
    }
    a = kvm_accel_open(opts, &kvm_err);
    if (a)
        return a;
    /* As QEMU's "-accel kvm -accel tcg": say once why, then run in software. */
    fprintf(stderr, "tern: %s; using the software CPU (-accel emu)\n", kvm_err->message);
    return emu_accel_open(opts, errp);
}

void accel_close(struct accel *a)
{
    if (a)
        a->ops->close(a);
}

const char *accel_name(const struct accel *a)
{
    return a->ops->name(a);
}

bool accel_is_kvm(const struct accel *a)
{
    return a->ops->is_kvm;
}

uint32_t accel_tsc_khz(const struct accel *a)
{
    return a->ops->tsc_khz(a);
}

void accel_cpuid_fingerprint(const struct accel *a, uint32_t *nr_entries, uint8_t sha256[32])
{
    a->ops->cpuid_fingerprint(a, nr_entries, sha256);
}

bool accel_set_irq_line(struct accel *a, unsigned irq, bool level)
{
    return a->ops->set_irq_line(a, irq, level);
}

bool accel_map_ram(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                   GError **errp)
{
    return a->ops->map_ram(a, slot, gpa, size, hva, errp);
}

bool accel_dirty_log_start(struct accel *a, GError **errp)
{
    return a->ops->dirty_log_start(a, errp);
}

bool accel_dirty_log_stop(struct accel *a, GError **errp)
{
    return a->ops->dirty_log_stop(a, errp);
}

bool accel_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp)
{
    return a->ops->dirty_log_sync(a, gfn_bitmap, errp);
}

const char *accel_dirty_log_mode(const struct accel *a)
{
    return a->ops->dirty_log_mode(a);
}

struct accel_vcpu *accel_vcpu_create(struct accel *a, unsigned index, GError **errp)
{
    struct accel_vcpu *vcpu = a->ops->vcpu_create(a, index, errp);
    if (vcpu) {
        vcpu->accel = a;
        vcpu->index = index;
    }
    return vcpu;
}

void accel_vcpu_destroy(struct accel_vcpu *vcpu)
{
    if (vcpu)
        vcpu->accel->ops->vcpu_destroy(vcpu);
}

unsigned accel_vcpu_index(const struct accel_vcpu *vcpu)
{
    return vcpu->index;
}

bool accel_vcpu_set_pvh_entry(struct accel_vcpu *vcpu, uint32_t entry, uint32_t start_info,
                              GError **errp)
{
    return vcpu->accel->ops->vcpu_set_pvh_entry(vcpu, entry, start_info, errp);
}

enum vcpu_run_result accel_vcpu_run(struct accel_vcpu *vcpu, struct io_bus *bus, GError **errp)
{
    return vcpu->accel->ops->vcpu_run(vcpu, bus, errp);
}

void accel_vcpu_bind_thread(struct accel_vcpu *vcpu)
{
    vcpu->accel->ops->vcpu_bind_thread(vcpu);
}

void accel_vcpu_kick(struct accel_vcpu *vcpu)
{
    vcpu->accel->ops->vcpu_kick(vcpu);
}

void accel_vcpu_clear_kick(struct accel_vcpu *vcpu)
{
    vcpu->accel->ops->vcpu_clear_kick(vcpu);
}

bool accel_vcpu_save_state(struct accel_vcpu *vcpu, void *fdt, int parent, GError **errp)
{
    return vcpu->accel->ops->vcpu_save_state(vcpu, fdt, parent, errp);
}

bool accel_vcpu_load_state(struct accel_vcpu *vcpu, const void *fdt, int node, GError **errp)
{
    return vcpu->accel->ops->vcpu_load_state(vcpu, fdt, node, errp);
}

bool accel_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp)
{
    return a->ops->vm_save_state(a, fdt, parent, errp);
}

bool accel_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp)
{
    return a->ops->vm_load_state(a, fdt, node, errp);
}

const struct vmstate_desc *accel_vm_vmstate(enum accel_kind kind)
{
    return kind == ACCEL_KVM ? &kvm_vm_vmstate : &emu_vm_vmstate;
}

bool accel_vcpu_summary(struct accel_vcpu *vcpu, struct vcpu_summary *out, GError **errp)
{
    return vcpu->accel->ops->vcpu_summary(vcpu, out, errp);
}
