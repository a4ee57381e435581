/* kvm-internal.h: the KVM backend of accel.h: what the files of accel/kvm/ share;
 * nothing outside includes it. Only accel/kvm/ includes <linux/kvm.h>, and every
 * kvm_pvm difference lives here. */
#ifndef TERN_KVM_INTERNAL_H
#define TERN_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../accel-backend.h"

/* kvm_pvm's virtual interrupt flag page register; absent from
 * KVM_GET_MSR_INDEX_LIST, so saved and restored by name (PLATFORM.md). */
#define MSR_PVM_VIF 0x4b564d10
#define MSR_IA32_TSC_DEADLINE 0x6e0

#define KVM_MAX_SLOTS 8
#define KVM_MAX_VCPUS 64
#define KVM_MAX_MSRS 256

struct kvm_slot {
    uint32_t id;
    uint64_t gpa, size;
    void *hva;
    uint32_t flags;     /* KVM_MEM_* currently set */
    unsigned long *log; /* scratch for KVM_GET_DIRTY_LOG */
};

struct kvm {
    struct accel base; /* first: what accel.h hands out */
    int sys_fd, vm_fd;
    bool pvm;
    int run_size;        /* mmap size of struct kvm_run */
    bool sync_regs;      /* KVM_CAP_SYNC_REGS */
    bool manual_protect; /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled */
    uint32_t tsc_khz;
    size_t xsave_size;                /* bytes KVM_GET_XSAVE(2) fills */
    struct kvm_cpuid2 *cpuid;         /* what every vCPU gets (APIC IDs patched per vCPU) */
    uint32_t msr_index[KVM_MAX_MSRS]; /* MSRs saved per vCPU */
    unsigned nr_msrs;
    struct kvm_slot slots[KVM_MAX_SLOTS];
    unsigned nr_slots;
    bool dirty_logging;

    /* Dirty ring mode (ring_entries > 0): vCPUs publish dirty pages in their
     * rings; harvests collect them into (ring_dirty) under (ring_lock). */
    uint32_t ring_entries;
    pthread_mutex_t ring_lock;
    unsigned long *ring_dirty; /* by guest frame number */
    int ring_reset_errno;      /* a failed KVM_RESET_DIRTY_RINGS, until the next log start */
    uint64_t ring_nr_gfns;
    struct kvm_vcpu *vcpus[KVM_MAX_VCPUS];
};

struct kvm_vcpu {
    struct accel_vcpu base; /* first: what accel.h hands out */
    struct kvm *kvm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_bound;
    struct kvm_dirty_gfn *ring; /* dirty ring mode only */
    uint32_t ring_next;         /* next entry to harvest */
};

#define KVM_OF(a) ((struct kvm *)(a))
#define VCPU_OF(v) ((struct kvm_vcpu *)(v))

/* The operations of accel.h (accel/accel-backend.h), by file. */
/* kvm.c */
void kvm_close(struct accel *a);
const char *kvm_flavour(const struct accel *a);
uint32_t kvm_tsc_khz(const struct accel *a);
void kvm_cpuid_fingerprint(const struct accel *a, uint32_t *nr_entries, uint8_t sha256[32]);
bool kvm_set_irq_line(struct accel *a, unsigned irq, bool level);
bool kvm_map_ram(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                 GError **errp);
/* kvm-dirty.c */
bool kvm_dirty_log_start(struct accel *a, GError **errp);
bool kvm_dirty_log_stop(struct accel *a, GError **errp);
bool kvm_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp);
const char *kvm_dirty_log_mode(const struct accel *a);
/* kvm-vcpu.c */
struct accel_vcpu *kvm_vcpu_create(struct accel *a, unsigned index, GError **errp);
void kvm_vcpu_destroy(struct accel_vcpu *vcpu);
bool kvm_vcpu_set_pvh_entry(struct accel_vcpu *vcpu, uint32_t entry, uint32_t start_info,
                            GError **errp);
enum vcpu_run_result kvm_vcpu_run(struct accel_vcpu *vcpu, struct io_bus *bus, GError **errp);
void kvm_vcpu_bind_thread(struct accel_vcpu *vcpu);
void kvm_vcpu_kick(struct accel_vcpu *vcpu);
void kvm_vcpu_clear_kick(struct accel_vcpu *vcpu);
bool kvm_vcpu_summary(struct accel_vcpu *vcpu, struct vcpu_summary *out, GError **errp);
/* Process-wide: install the (empty) kick signal handler. */
void kvm_kick_signal_init(void);
/* kvm-state.c: complete state as FDT nodes, in the order kvm_pvm accepts
 * (PLATFORM.md): every vCPU before the VM. */
bool kvm_vcpu_save_state(struct accel_vcpu *vcpu, void *fdt, int parent, GError **errp);
bool kvm_vcpu_load_state(struct accel_vcpu *vcpu, const void *fdt, int node, GError **errp);
bool kvm_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp);
bool kvm_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp);

/* (Re)program slot (s) with its current flags. */
bool kvm_slot_update(struct kvm *k, struct kvm_slot *s, GError **errp);

/* Dirty ring: map (vcpu)'s ring; collect every vCPU's published entries
 * (the caller holds nothing; takes ring_lock). If KVM would not re-arm them,
 * ring_reset_errno says so and the next kvm_dirty_log_sync() fails. */
bool kvm_dirty_ring_map(struct kvm_vcpu *vcpu, GError **errp);
void kvm_dirty_ring_harvest(struct kvm *k);

/* Give (vcpu) the VM's CPUID template with its own APIC ID patched in. */
bool kvm_vcpu_set_cpuid(struct kvm_vcpu *vcpu, GError **errp);

#endif
