/* emu-internal.h: the software backend of accel.h: what the files of
 * accel/emu/ share; nothing outside includes it. */
#ifndef TERN_EMU_INTERNAL_H
#define TERN_EMU_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "../accel-backend.h"
#include "emu-irq.h"
#include "x86-cpu.h"

struct emu_cpuid_entry {
    uint32_t function, index, flags, eax, ebx, ecx, edx;
};
#define EMU_CPUID_MAX 24

struct emu_vm {
    struct accel base;     /* first: what accel.h hands out */
    struct io_bus *bus;    /* MMIO and PIO nobody here claims */
    struct x86_memory mem; /* RAM as every vCPU addresses it */
    unsigned long *dirty;  /* the dirty log, by guest frame number */
    bool dirty_logging;

    struct emu_apic_bus *apic_bus;
    struct emu_chips *chips; /* IOAPIC, PICs, PIT (locked inside) */

    GMutex vcpus_lock;
    struct emu_vcpu *vcpus[EMU_MAX_CPUS];

    /* Guest TSC = tsc_offset + host TSC * tsc_mult / 2^32: the guest's rate
     * (tsc_khz) is a property of the VM and travels with it; the host's
     * (host_khz) is this process's own. */
    int64_t tsc_offset;
    uint64_t tsc_mult;
    uint32_t tsc_khz, host_khz;

    struct emu_cpuid_entry cpuid[EMU_CPUID_MAX];
    unsigned nr_cpuid;
};

struct emu_vcpu {
    struct accel_vcpu base; /* first: what accel.h hands out */
    struct emu_vm *vm;
    unsigned index;
    struct x86_cpu cpu;
    struct emu_lapic *lapic;
    struct io_bus *bus; /* of the current accel_vcpu_run() */

    /* Sleeping (hlt, waiting for SIPI) and being woken, under (lock). */
    GMutex lock;
    GCond cond;
    bool woken;
    uint32_t mp_state; /* X86_MP_* */
    bool init_pending;
    int sipi_vector; /* -1: none pending */
    int kicked;      /* atomic: accel_vcpu_kick() */

    /* For monitors, updated after each run (atomic). */
    uint64_t summary_rip, summary_rsp, summary_cr3;
};

#define EMU_OF(a) ((struct emu_vm *)(a))
#define EMU_VCPU_OF(v) ((struct emu_vcpu *)(v))

/* emu.c */
uint64_t emu_guest_tsc(struct emu_vm *vm);
/* Make the guest TSC read (tsc) now; at (khz) from now on if non-zero. */
void emu_set_guest_tsc(struct emu_vm *vm, uint64_t tsc, uint32_t khz);
void emu_cpuid_lookup(struct emu_vm *vm, unsigned cpu, uint32_t leaf, uint32_t subleaf,
                      uint32_t out[4]);

/* emu-vcpu.c */
struct accel_vcpu *emu_vcpu_create(struct accel *a, unsigned index, GError **errp);
void emu_vcpu_destroy(struct accel_vcpu *v);
bool emu_vcpu_set_pvh_entry(struct accel_vcpu *v, uint32_t entry, uint32_t start_info,
                            GError **errp);
enum vcpu_run_result emu_vcpu_run(struct accel_vcpu *v, struct io_bus *bus, GError **errp);
void emu_vcpu_bind_thread(struct accel_vcpu *v);
void emu_vcpu_kick(struct accel_vcpu *v);
void emu_vcpu_clear_kick(struct accel_vcpu *v);
bool emu_vcpu_summary(struct accel_vcpu *v, struct vcpu_summary *out, GError **errp);
/* Every LAPIC re-arms its TSC deadline against a changed guest TSC. */
void emu_vcpus_tsc_changed(struct emu_vm *vm);
/* The interrupt controllers' view of the machine (emu_irq_ops). */
extern const struct emu_irq_ops emu_irq_glue;

/* emu-state.c */
bool emu_vcpu_save_state(struct accel_vcpu *v, void *fdt, int parent, GError **errp);
bool emu_vcpu_load_state(struct accel_vcpu *v, const void *fdt, int node, GError **errp);
bool emu_vm_save_state(struct accel *a, void *fdt, int parent, GError **errp);
bool emu_vm_load_state(struct accel *a, const void *fdt, int node, GError **errp);

#endif
