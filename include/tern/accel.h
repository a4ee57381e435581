/* accel.h: the accelerator: what Tern asks of the thing that runs guest code.
 * Two backends implement it: accel/kvm/ (Linux KVM, including kvm_pvm) and
 * accel/emu/ (Tern's own x86-64 interpreter, where /dev/kvm is absent).
 * Nothing above accel/ knows which one runs. */
#ifndef TERN_ACCEL_H
#define TERN_ACCEL_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

struct io_bus;
struct vmstate_desc;
struct accel;      /* one VM on one backend */
struct accel_vcpu; /* one of its vCPUs */

enum accel_kind {
    ACCEL_AUTO, /* KVM when /dev/kvm opens, else the software CPU */
    ACCEL_KVM,
    ACCEL_EMU,
};

struct accel_options {
    enum accel_kind kind;
    /* KVM only: dirty ring entries per vCPU (a power of two); 0: the bitmap. */
    uint32_t dirty_ring_size;
    /* Where the guest-physical memory holes are: MMIO that the backend's own
     * interrupt controllers do not claim goes to the I/O bus. */
    struct io_bus *bus;
};

/* Create a VM on the backend (opts->kind) names. ACCEL_AUTO falls back to the
 * software CPU when /dev/kvm cannot be opened, and says so in one line on
 * stderr. ACCEL_KVM without /dev/kvm is an error naming it. */
struct accel *accel_open(const struct accel_options *opts, GError **errp);
void accel_close(struct accel *a);

/* "kvm", "kvm_pvm" or "emu": for logs, info kvm and the benchmarks. */
const char *accel_name(const struct accel *a);
/* Is the backend KVM (of any flavour)? (QMP query-kvm "enabled") */
bool accel_is_kvm(const struct accel *a);
/* Does this host offer /dev/kvm? (QMP query-kvm "present") */
bool accel_kvm_present(void);
/* Parse "kvm", "emu" (alias "tcg") or "auto"; false if unknown. */
bool accel_kind_parse(const char *name, enum accel_kind *kind);

/* The guest's TSC frequency in kHz (0 if unknown). */
uint32_t accel_tsc_khz(const struct accel *a);
/* What the vCPUs' CPUID says, as the number of entries and a SHA-256 over
 * them (APIC IDs excluded): two VMs with equal fingerprints expose the same CPU. */
void accel_cpuid_fingerprint(const struct accel *a, uint32_t *nr_entries, uint8_t sha256[32]);

/* Drive interrupt line (irq) of the PIC/IOAPIC to (level). */
bool accel_set_irq_line(struct accel *a, unsigned irq, bool level);
/* Map [gpa, gpa + size) to host memory (hva) as memory slot (slot). */
bool accel_map_ram(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                   GError **errp);

/* Dirty logging over all RAM, with get-and-clear semantics: while on,
 * accel_dirty_log_sync() moves the pages vCPUs wrote since the last sync into
 * (gfn_bitmap) (ORed in, one bit per guest frame number) and re-arms them. */
bool accel_dirty_log_start(struct accel *a, GError **errp);
bool accel_dirty_log_stop(struct accel *a, GError **errp);
bool accel_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp);
/* "dirty-ring", "dirty-bitmap+clear", "dirty-bitmap" (KVM) or "emu-bitmap". */
const char *accel_dirty_log_mode(const struct accel *a);

/* Create vCPU (index); index 0 is the boot processor, others wait for INIT/SIPI. */
struct accel_vcpu *accel_vcpu_create(struct accel *a, unsigned index, GError **errp);
void accel_vcpu_destroy(struct accel_vcpu *vcpu);
unsigned accel_vcpu_index(const struct accel_vcpu *vcpu);

/* Put the boot vCPU at a PVH entry: 32-bit protected mode, paging off,
 * flat segments, EBX = (start_info) (the Xen PVH boot ABI). */
bool accel_vcpu_set_pvh_entry(struct accel_vcpu *vcpu, uint32_t entry, uint32_t start_info,
                              GError **errp);

enum vcpu_run_result {
    VCPU_RUN_OK,       /* an exit was handled; run again */
    VCPU_RUN_KICKED,   /* accel_vcpu_kick() interrupted the vCPU */
    VCPU_RUN_SHUTDOWN, /* the guest triple-faulted */
    VCPU_RUN_RESET,    /* the guest asked for a reset (system event) */
    VCPU_RUN_POWEROFF, /* the guest asked for power off (system event) */
    VCPU_RUN_ERROR,    /* the backend failed; (errp) says why */
};

/* Run the guest until something needs the VMM (PIO/MMIO go to (bus)). Must be
 * called from the vCPU's own thread (accel_vcpu_bind_thread()). */
enum vcpu_run_result accel_vcpu_run(struct accel_vcpu *vcpu, struct io_bus *bus, GError **errp);
/* Record the calling thread as the vCPU's thread (for kicks). */
void accel_vcpu_bind_thread(struct accel_vcpu *vcpu);
/* Make the vCPU leave (or not enter) the guest soon. Safe from any thread. */
void accel_vcpu_kick(struct accel_vcpu *vcpu);
/* Called by the vCPU thread once it has seen the kick. */
void accel_vcpu_clear_kick(struct accel_vcpu *vcpu);

/* Complete state, as flattened-device-tree nodes built from vmstate tables.
 * Save adds node "cpu@<index>" (or "vm") under (parent) of (fdt); load reads
 * it back. vCPUs must be paused. Load every vCPU before the VM. */
bool accel_vcpu_save_state(struct accel_vcpu *vcpu, void *fdt, int parent, GError **errp);
bool accel_vcpu_load_state(struct accel_vcpu *vcpu, const void *fdt, int node, GError **errp);
bool accel_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp);
bool accel_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp);

/* The vmstate table of the VM-wide state of backend (kind) (KVM or EMU; for
 * table checks); the vCPU's is x86_vcpu_vmstate (tern/x86-state.h), the same
 * for both. */
const struct vmstate_desc *accel_vm_vmstate(enum accel_kind kind);

/* Register values for monitors (info cpus, query-cpus-fast); never waits
 * for a running vCPU. */
struct vcpu_summary {
    uint64_t rip, rsp, cr3;
};
bool accel_vcpu_summary(struct accel_vcpu *vcpu, struct vcpu_summary *out, GError **errp);

#endif
