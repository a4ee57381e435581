/* accel-backend.h: what a backend of accel.h provides: one table of operations.
 * Included by accel/accel.c and the backends only. */
#ifndef TERN_ACCEL_BACKEND_H
#define TERN_ACCEL_BACKEND_H

#include "tern/accel.h"

struct accel_ops {
    const char *(*name)(const struct accel *a);
    bool is_kvm;
    void (*close)(struct accel *a);
    uint32_t (*tsc_khz)(const struct accel *a);
    void (*cpuid_fingerprint)(const struct accel *a, uint32_t *nr, uint8_t sha256[32]);
    bool (*set_irq_line)(struct accel *a, unsigned irq, bool level);
    bool (*map_ram)(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                    GError **errp);
    bool (*dirty_log_start)(struct accel *a, GError **errp);
    bool (*dirty_log_stop)(struct accel *a, GError **errp);
    bool (*dirty_log_sync)(struct accel *a, unsigned long *gfn_bitmap, GError **errp);
    const char *(*dirty_log_mode)(const struct accel *a);
    struct accel_vcpu *(*vcpu_create)(struct accel *a, unsigned index, GError **errp);
    void (*vcpu_destroy)(struct accel_vcpu *vcpu);
    bool (*vcpu_set_pvh_entry)(struct accel_vcpu *vcpu, uint32_t entry, uint32_t start_info,
                               GError **errp);
    enum vcpu_run_result (*vcpu_run)(struct accel_vcpu *vcpu, struct io_bus *bus, GError **errp);
    void (*vcpu_bind_thread)(struct accel_vcpu *vcpu);
    void (*vcpu_kick)(struct accel_vcpu *vcpu);
    void (*vcpu_clear_kick)(struct accel_vcpu *vcpu);
    bool (*vcpu_save_state)(struct accel_vcpu *vcpu, void *fdt, int parent, GError **errp);
    bool (*vcpu_load_state)(struct accel_vcpu *vcpu, const void *fdt, int node, GError **errp);
    bool (*vm_save_state)(struct accel *a, void *fdt, int parent, GError **errp);
    bool (*vm_load_state)(struct accel *a, const void *fdt, int node, GError **errp);
    bool (*vcpu_summary)(struct accel_vcpu *vcpu, struct vcpu_summary *out, GError **errp);
};

/* The first member of every backend's VM and vCPU. */
struct accel {
    const struct accel_ops *ops;
};

struct accel_vcpu {
    struct accel *accel;
    unsigned index;
};

/* The backends' constructors, and their VM state tables. */
struct accel *kvm_accel_open(const struct accel_options *opts, GError **errp);
struct accel *emu_accel_open(const struct accel_options *opts, GError **errp);
extern const struct vmstate_desc kvm_vm_vmstate;
extern const struct vmstate_desc emu_vm_vmstate;

/* Shared by both backends: the PVH entry's flat 4 GiB code segment (selector
 * 0x8) and data segment (0x10), for CS and for DS/ES/FS/GS/SS. */
struct x86_segment;
void x86_pvh_segments(struct x86_segment *code, struct x86_segment *data);

/* Shared by both backends: MSR child node save/load helpers over (index, value) pairs. */
struct x86_msr {
    uint32_t index;
    uint64_t value;
};
bool x86_msrs_save(const struct x86_msr *msrs, unsigned n, void *fdt, int node, GError **errp);
/* Fills (out) (room for (max)); returns the count or -1 with (errp) set. */
int x86_msrs_load(struct x86_msr *out, unsigned max, const void *fdt, int node, GError **errp);

#endif
