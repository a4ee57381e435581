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

struct io_bus;
struct vmstate_desc;
struct kvm;        /* /dev/kvm, the VM fd, capabilities */
struct kvm_vcpu;   /* one vCPU fd and its shared kvm_run page */

struct kvm_options {
    /* Dirty ring entries per vCPU (a power of two); 0: the dirty bitmap. */
    uint32_t dirty_ring_size;
};

/* Open /dev/kvm, check every capability Tern needs (the error names the missing
 * one), create the VM with an in-kernel irqchip and PIT, detect kvm_pvm.
 * (opts) may be NULL for the defaults. */
struct kvm *kvm_open(const struct kvm_options *opts, GError **errp);
void kvm_close(struct kvm *k);

/* True on kvm_pvm (the software hypervisor of our CI machines). */
bool kvm_is_pvm(const struct kvm *k);
/* "kvm" or "kvm_pvm", for logs and query results. */
const char *kvm_flavour(const struct kvm *k);
/* Host TSC frequency seen by guests, in kHz (0 if unknown). */
uint32_t kvm_tsc_khz(const struct kvm *k);

/* What the vCPUs' CPUID says, as the number of entries and a SHA-256 over
 * them (APIC IDs excluded): two VMs with equal fingerprints expose the same CPU. */
void kvm_cpuid_fingerprint(const struct kvm *k, uint32_t *nr_entries, uint8_t sha256[32]);

/* Drive interrupt line (irq) of the in-kernel PIC/IOAPIC to (level). */
bool kvm_set_irq_line(struct kvm *k, unsigned irq, bool level);

/* Map [gpa, gpa + size) to host memory (hva) as memory slot (slot). */
bool kvm_map_ram(struct kvm *k, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                 GError **errp);

/* Dirty logging over every mapped slot. While on, kvm_dirty_log_sync() fetches
 * and clears the pages vCPUs wrote since the last sync and ORs them into
 * (gfn_bitmap), one bit per guest frame number. */
bool kvm_dirty_log_start(struct kvm *k, GError **errp);
bool kvm_dirty_log_stop(struct kvm *k, GError **errp);
bool kvm_dirty_log_sync(struct kvm *k, unsigned long *gfn_bitmap, GError **errp);
/* "dirty-ring", "dirty-bitmap+clear" (manual protect) or "dirty-bitmap". */
const char *kvm_dirty_log_mode(const struct kvm *k);

/* Create vCPU (index); index 0 is the boot processor, others wait for INIT/SIPI. */
struct kvm_vcpu *kvm_vcpu_create(struct kvm *k, unsigned index, GError **errp);
void kvm_vcpu_destroy(struct kvm_vcpu *vcpu);
unsigned kvm_vcpu_index(const struct kvm_vcpu *vcpu);

/* Put the boot vCPU at a PVH entry: 32-bit protected mode, paging off,
 * flat segments, EBX = (start_info) (the Xen PVH boot ABI). */
bool kvm_vcpu_set_pvh_entry(struct kvm_vcpu *vcpu, uint32_t entry, uint32_t start_info,
                            GError **errp);


/* Enter the guest once and handle the exit (PIO/MMIO go to (bus)). Must be
 * called from the vCPU's own thread (kvm_vcpu_bind_thread()). */
enum vcpu_run_result kvm_vcpu_run(struct kvm_vcpu *vcpu, struct io_bus *bus, GError **errp);
/* Record the calling thread as the vCPU's thread (for kicks). */
void kvm_vcpu_bind_thread(struct kvm_vcpu *vcpu);
/* Make the vCPU leave (or not enter) KVM_RUN soon. Safe from any thread. */
void kvm_vcpu_kick(struct kvm_vcpu *vcpu);
/* Called by the vCPU thread once it has seen the kick. */
void kvm_vcpu_clear_kick(struct kvm_vcpu *vcpu);
/* Process-wide: install the (empty) kick signal handler. */
void kvm_kick_signal_init(void);

/* Complete state, as flattened-device-tree nodes built from vmstate tables.
 * Save adds node "cpu@<index>" (or "vm") under (parent) of (fdt); load reads
 * it back. vCPUs must be paused. Load every vCPU before the VM (irqchip,
 * clock): that is the order kvm_pvm accepts (PLATFORM.md). */
bool kvm_vcpu_save_state(struct kvm_vcpu *vcpu, void *fdt, int parent, GError **errp);
bool kvm_vcpu_load_state(struct kvm_vcpu *vcpu, const void *fdt, int node, GError **errp);
bool kvm_vm_save_state(struct kvm *k, void *fdt, int parent, GError **errp);
bool kvm_vm_load_state(struct kvm *k, const void *fdt, int node, GError **errp);


bool kvm_vcpu_summary(struct kvm_vcpu *vcpu, struct vcpu_summary *out, GError **errp);

struct kvm_slot {
    uint32_t id;
    uint64_t gpa, size;
    void *hva;
    uint32_t flags;             /* KVM_MEM_* currently set */
    unsigned long *log;         /* scratch for KVM_GET_DIRTY_LOG */
};

struct kvm {
    struct accel base;          /* first: what accel.h hands out */
    int sys_fd, vm_fd;
    bool pvm;
    int run_size;               /* mmap size of struct kvm_run */
    bool sync_regs;             /* KVM_CAP_SYNC_REGS */
    bool manual_protect;        /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled */
    uint32_t tsc_khz;
    size_t xsave_size;          /* bytes KVM_GET_XSAVE(2) fills */
    struct kvm_cpuid2 *cpuid;   /* what every vCPU gets (APIC IDs patched per vCPU) */
    uint32_t msr_index[KVM_MAX_MSRS];   /* MSRs saved per vCPU */
    unsigned nr_msrs;
    struct kvm_slot slots[KVM_MAX_SLOTS];
    unsigned nr_slots;
    bool dirty_logging;

    /* Dirty ring mode (ring_entries > 0): vCPUs publish dirty pages in their
     * rings; harvests collect them into (ring_dirty) under (ring_lock). */
    uint32_t ring_entries;
    pthread_mutex_t ring_lock;
    unsigned long *ring_dirty;      /* by guest frame number */
    uint64_t ring_nr_gfns;
    struct kvm_vcpu *vcpus[KVM_MAX_VCPUS];
};

struct kvm_vcpu {
    struct accel_vcpu base;     /* first: what accel.h hands out */
    struct kvm *kvm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_bound;
    struct kvm_dirty_gfn *ring;     /* dirty ring mode only */
    uint32_t ring_next;             /* next entry to harvest */
};

/* (Re)program slot (s) with its current flags. */
bool kvm_slot_update(struct kvm *k, struct kvm_slot *s, GError **errp);

/* Dirty ring: map (vcpu)'s ring; collect every vCPU's published entries
 * (the caller holds nothing; takes ring_lock). */
bool kvm_dirty_ring_map(struct kvm_vcpu *vcpu, GError **errp);
void kvm_dirty_ring_harvest(struct kvm *k);

/* Give (vcpu) the VM's CPUID template with its own APIC ID patched in. */
bool kvm_vcpu_set_cpuid(struct kvm_vcpu *vcpu, GError **errp);

#endif
