/* kvm.h: the accelerator. Everything Tern asks of KVM, in Tern's own terms;
 * only accel/kvm/ includes <linux/kvm.h>, and every kvm_pvm difference lives there. */
#ifndef TERN_KVM_H
#define TERN_KVM_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

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

enum vcpu_run_result {
    VCPU_RUN_OK,            /* an exit was handled; run again */
    VCPU_RUN_KICKED,        /* kvm_vcpu_kick() interrupted the vCPU */
    VCPU_RUN_SHUTDOWN,      /* the guest triple-faulted */
    VCPU_RUN_RESET,         /* the guest asked for a reset (system event) */
    VCPU_RUN_POWEROFF,      /* the guest asked for power off (system event) */
    VCPU_RUN_ERROR,         /* KVM failed; (errp) says why */
};

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

/* The vmstate tables of a vCPU's and of the VM's state (for table checks). */
const struct vmstate_desc *kvm_vcpu_vmstate(void);
const struct vmstate_desc *kvm_vm_vmstate(void);

/* Register values for monitors (info cpus, query-cpus-fast). */
struct vcpu_summary { uint64_t rip, rsp, cr3; };
bool kvm_vcpu_summary(struct kvm_vcpu *vcpu, struct vcpu_summary *out, GError **errp);

#endif
