/* emu-irq.h: interrupt controllers and timers of the software accelerator, in
 * userspace: one local APIC per vCPU, the IOAPIC, the two 8259 PICs and the
 * 8254 PIT. Internal to accel/emu/. Time is host CLOCK_MONOTONIC nanoseconds
 * (emu_now_ns()); the guest TSC is derived from it by the owner. */
#ifndef TERN_EMU_IRQ_H
#define TERN_EMU_IRQ_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

struct vmstate_desc;

#define EMU_MAX_CPUS 64
/* The LAPIC timer's input clock before the divider: 1 GHz, as KVM's (and as
 * CPUID 0x40000010 EBX tells the guest). */
#define EMU_APIC_BUS_HZ 1000000000ull
#define EMU_LAPIC_BASE 0xfee00000ull
#define EMU_LAPIC_TPR 0x80 /* task priority register's offset */
#define EMU_IOAPIC_BASE 0xfec00000ull
#define EMU_IOAPIC_PINS 24

uint64_t emu_now_ns(void);

/* What the interrupt controllers need from the machine. Called from any thread. */
struct emu_irq_ops {
    /* vCPU (cpu) may have an interrupt to take: set its irq_request and wake
     * it if it sleeps in hlt. */
    void (*wake)(void *opaque, unsigned cpu);
    /* INIT / Startup IPI to vCPU (cpu). */
    void (*init)(void *opaque, unsigned cpu);
    void (*sipi)(void *opaque, unsigned cpu, uint8_t vector);
    /* The guest TSC now, and the host time (emu_now_ns scale) at which the
     * guest TSC reaches (tsc): for the TSC-deadline timer. */
    uint64_t (*tsc_now)(void *opaque);
    uint64_t (*tsc_to_ns)(void *opaque, uint64_t tsc);
};

/* ---- local APIC (xAPIC, MMIO at EMU_LAPIC_BASE) ---- */

/* The state that travels. (regs) is the 1 KiB register page in KVM's layout
 * (struct kvm_lapic_state: each 32-bit register at its MMIO offset), so the
 * saved "lapic" node is the same on both accelerators. */
struct emu_lapic_state {
    uint8_t regs[1024];
    uint64_t apic_base;          /* IA32_APIC_BASE MSR */
    uint64_t tsc_deadline;       /* IA32_TSC_DEADLINE; 0: disarmed */
    uint64_t timer_remaining_ns; /* one-shot/periodic: time left when saved; 0: idle */
};

struct emu_lapic;

/* All LAPICs of a VM, for IPIs and IOAPIC delivery. */
struct emu_apic_bus;
struct emu_apic_bus *emu_apic_bus_create(const struct emu_irq_ops *ops, void *opaque);
void emu_apic_bus_destroy(struct emu_apic_bus *bus);

/* LAPIC of vCPU (index) (APIC ID = index; index 0 is the BSP). */
struct emu_lapic *emu_lapic_create(struct emu_apic_bus *bus, unsigned index);
void emu_lapic_destroy(struct emu_lapic *apic);
/* Power-on state (INIT does the same to all but the APIC base and ID). */
void emu_lapic_reset(struct emu_lapic *apic);

/* From the owning vCPU's thread: */
void emu_lapic_mmio(struct emu_lapic *apic, uint64_t offset, uint8_t *data, unsigned size,
                    bool is_write);
/* IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC range: true if handled. */
bool emu_lapic_rdmsr(struct emu_lapic *apic, uint32_t msr, uint64_t *value, bool *ok);
bool emu_lapic_wrmsr(struct emu_lapic *apic, uint32_t msr, uint64_t value, bool *ok);
/* Highest-priority deliverable vector, moved IRR -> ISR; -1 if none. */
int emu_lapic_ack(struct emu_lapic *apic);
/* Anything deliverable now (IRR above the processor priority)? */
bool emu_lapic_pending(struct emu_lapic *apic);
void emu_lapic_set_tpr(struct emu_lapic *apic, uint8_t cr8);
/* Fire the timer if it is due at (now_ns); return the host time of the next
 * expiry (UINT64_MAX: none). Call before running and before sleeping in hlt. */
uint64_t emu_lapic_timer_poll(struct emu_lapic *apic, uint64_t now_ns);

/* The guest TSC was set (state load, a write of IA32_TSC): re-arm a
 * TSC-deadline timer against it. Any thread. */
void emu_lapic_tsc_changed(struct emu_lapic *apic);

/* From any thread: raise (vector) (fixed delivery, edge) on this LAPIC. */
void emu_lapic_raise(struct emu_lapic *apic, uint8_t vector);

/* State, with the vCPUs paused. (now_ns) converts the running timer. */
void emu_lapic_save(struct emu_lapic *apic, struct emu_lapic_state *out, uint64_t now_ns);
void emu_lapic_load(struct emu_lapic *apic, const struct emu_lapic_state *in, uint64_t now_ns);
extern const struct vmstate_desc emu_lapic_vmstate; /* struct emu_lapic_state */

/* ---- IOAPIC, PICs, PIT: the VM-wide chips ---- */

struct emu_chips;
struct emu_chips *emu_chips_create(struct emu_apic_bus *bus);
void emu_chips_destroy(struct emu_chips *chips);
void emu_chips_reset(struct emu_chips *chips);
/* Drive ISA/GSI line (irq) (0..23) to (level) (IOAPIC pin irq; PIC for 0..15). */
void emu_chips_set_irq(struct emu_chips *chips, unsigned irq, bool level);
/* Port I/O the chips own: PIC 0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1; PIT 0x40-0x43;
 * port 0x61 (PIT channel 2 gate and output). True if (port) is theirs. */
bool emu_chips_pio(struct emu_chips *chips, uint16_t port, uint8_t *data, unsigned size,
                   bool is_write);
/* IOAPIC MMIO, (offset) from EMU_IOAPIC_BASE (a 4 KiB page). */
void emu_chips_ioapic_mmio(struct emu_chips *chips, uint64_t offset, uint8_t *data, unsigned size,
                           bool is_write);
/* Raise PIT channel 0's interrupt if due at (now_ns); next expiry or UINT64_MAX. */
uint64_t emu_chips_timer_poll(struct emu_chips *chips, uint64_t now_ns);

/* All of the chips' state: saved as the "chips" node of the VM state. */
bool emu_chips_save(struct emu_chips *chips, void *fdt, int parent, uint64_t now_ns, GError **errp);
bool emu_chips_load(struct emu_chips *chips, const void *fdt, int node, uint64_t now_ns,
                    GError **errp);

#endif
