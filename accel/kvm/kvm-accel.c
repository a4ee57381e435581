/* kvm-accel.c: the KVM backend's table of accel.h operations. */
#include "kvm-internal.h"

#define KVM_OF(a) ((struct kvm *)(a))
#define VCPU_OF(v) ((struct kvm_vcpu *)(v))
G_STATIC_ASSERT(offsetof(struct kvm, base) == 0);
G_STATIC_ASSERT(offsetof(struct kvm_vcpu, base) == 0);

static const char *op_name(const struct accel *a)
{
    return kvm_flavour((const struct kvm *)a);
}

static void op_close(struct accel *a)
{
    kvm_close(KVM_OF(a));
}

static uint32_t op_tsc_khz(const struct accel *a)
{
    return kvm_tsc_khz((const struct kvm *)a);
}

static void op_cpuid_fingerprint(const struct accel *a, uint32_t *nr, uint8_t sha256[32])
{
    kvm_cpuid_fingerprint((const struct kvm *)a, nr, sha256);
}

static bool op_set_irq_line(struct accel *a, unsigned irq, bool level)
{
    return kvm_set_irq_line(KVM_OF(a), irq, level);
}

static bool op_map_ram(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                       GError **errp)
{
    return kvm_map_ram(KVM_OF(a), slot, gpa, size, hva, errp);
}

static bool op_dirty_log_start(struct accel *a, GError **errp)
{
    return kvm_dirty_log_start(KVM_OF(a), errp);
}

static bool op_dirty_log_stop(struct accel *a, GError **errp)
{
    return kvm_dirty_log_stop(KVM_OF(a), errp);
}

static bool op_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp)
{
    return kvm_dirty_log_sync(KVM_OF(a), gfn_bitmap, errp);
}

static const char *op_dirty_log_mode(const struct accel *a)
{
    return kvm_dirty_log_mode((const struct kvm *)a);
}

static struct accel_vcpu *op_vcpu_create(struct accel *a, unsigned index, GError **errp)
{
    struct kvm_vcpu *vcpu = kvm_vcpu_create(KVM_OF(a), index, errp);
    return vcpu ? &vcpu->base : NULL;
}

static void op_vcpu_destroy(struct accel_vcpu *v)
{
    kvm_vcpu_destroy(VCPU_OF(v));
}

static bool op_vcpu_set_pvh_entry(struct accel_vcpu *v, uint32_t entry, uint32_t start_info,
                                  GError **errp)
{
    return kvm_vcpu_set_pvh_entry(VCPU_OF(v), entry, start_info, errp);
}

static enum vcpu_run_result op_vcpu_run(struct accel_vcpu *v, struct io_bus *bus,
                                        GError **errp)
{
    return kvm_vcpu_run(VCPU_OF(v), bus, errp);
}

static void op_vcpu_bind_thread(struct accel_vcpu *v)
{
    kvm_vcpu_bind_thread(VCPU_OF(v));
}

static void op_vcpu_kick(struct accel_vcpu *v)
{
    kvm_vcpu_kick(VCPU_OF(v));
}

static void op_vcpu_clear_kick(struct accel_vcpu *v)
{
    kvm_vcpu_clear_kick(VCPU_OF(v));
}

static bool op_vcpu_save_state(struct accel_vcpu *v, void *fdt, int parent, GError **errp)
{
    return kvm_vcpu_save_state(VCPU_OF(v), fdt, parent, errp);
}

static bool op_vcpu_load_state(struct accel_vcpu *v, const void *fdt, int node, GError **errp)
{
    return kvm_vcpu_load_state(VCPU_OF(v), fdt, node, errp);
}

static bool op_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp)
{
    return kvm_vm_save_state(KVM_OF(a), fdt, parent, errp);
}

static bool op_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp)
{
    return kvm_vm_load_state(KVM_OF(a), fdt, node, errp);
}

static bool op_vcpu_summary(struct accel_vcpu *v, struct vcpu_summary *out, GError **errp)
{
    return kvm_vcpu_summary(VCPU_OF(v), out, errp);
}

static const struct accel_ops kvm_accel_ops = {
    .name = op_name,
    .is_kvm = true,
    .close = op_close,
    .tsc_khz = op_tsc_khz,
    .cpuid_fingerprint = op_cpuid_fingerprint,
    .set_irq_line = op_set_irq_line,
    .map_ram = op_map_ram,
    .dirty_log_start = op_dirty_log_start,
    .dirty_log_stop = op_dirty_log_stop,
    .dirty_log_sync = op_dirty_log_sync,
    .dirty_log_mode = op_dirty_log_mode,
    .vcpu_create = op_vcpu_create,
    .vcpu_destroy = op_vcpu_destroy,
    .vcpu_set_pvh_entry = op_vcpu_set_pvh_entry,
    .vcpu_run = op_vcpu_run,
    .vcpu_bind_thread = op_vcpu_bind_thread,
    .vcpu_kick = op_vcpu_kick,
    .vcpu_clear_kick = op_vcpu_clear_kick,
    .vcpu_save_state = op_vcpu_save_state,
    .vcpu_load_state = op_vcpu_load_state,
    .vm_save_state = op_vm_save_state,
    .vm_load_state = op_vm_load_state,
    .vcpu_summary = op_vcpu_summary,
};

struct accel *kvm_accel_open(const struct accel_options *opts, GError **errp)
{
    struct kvm_options kopts = { .dirty_ring_size = opts->dirty_ring_size };
    struct kvm *k;

    kvm_kick_signal_init();
    k = kvm_open(&kopts, errp);
    if (!k)
        return NULL;
    k->base.ops = &kvm_accel_ops;
    return &k->base;
}
