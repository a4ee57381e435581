/* kvm-internal.h: what the files of accel/kvm/ share; nothing outside includes it. */
#ifndef TERN_KVM_INTERNAL_H
#define TERN_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/kvm.h"

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
    uint32_t flags;             /* KVM_MEM_* currently set */
    unsigned long *log;         /* scratch for KVM_GET_DIRTY_LOG */
};

struct kvm {
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
