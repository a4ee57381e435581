/* emu-irq-internal.h: what the interrupt controller files of accel/emu share
 * with each other and with their unit tests (not with the backend). */
#ifndef TERN_EMU_IRQ_INTERNAL_H
#define TERN_EMU_IRQ_INTERNAL_H

#include "emu-irq.h"

/* ---- the APIC bus (apic-bus.c) ---- */

struct emu_apic_bus {
    const struct emu_irq_ops *ops;
    void *opaque;
    struct emu_lapic *lapics[EMU_MAX_CPUS]; /* by index; g_atomic_pointer_* */
    /* Told the vector of every EOI of a level-triggered interrupt (TMR set),
     * after the LAPIC's lock is released: the IOAPIC clears remote IRR. */
    void (*eoi_listener)(void *opaque, uint8_t vector);
    void *eoi_opaque;
    /* The PICs' INT output and INTA cycle, for LAPICs whose LINT0 is ExtINT
     * (virtual wire mode). Called with no LAPIC lock held. */
    bool (*extint_pending)(void *opaque);
    uint8_t (*extint_ack)(void *opaque);
    void *extint_opaque;
};

/* ICR delivery modes (bits 8-10), also the IOAPIC's. */
enum {
    EMU_APIC_DM_FIXED = 0,
    EMU_APIC_DM_LOWEST = 1,
    EMU_APIC_DM_NMI = 4,
    EMU_APIC_DM_INIT = 5,
    EMU_APIC_DM_STARTUP = 6,
    EMU_APIC_DM_EXTINT = 7,
};

void emu_apic_bus_set_eoi_listener(struct emu_apic_bus *bus,
                                   void (*fn)(void *opaque, uint8_t vector), void *opaque);
void emu_apic_bus_set_extint(struct emu_apic_bus *bus, bool (*pending)(void *opaque),
                             uint8_t (*ack)(void *opaque), void *opaque);
/* Wake the vCPUs whose LAPIC takes ExtINT (the PICs' output went up). */
void emu_apic_bus_kick_extint(struct emu_apic_bus *bus);
/* An ICR write of (src): (lo) and (hi) as the guest wrote them. Called with
 * no LAPIC lock held. */
void emu_apic_bus_ipi(struct emu_apic_bus *bus, struct emu_lapic *src, uint32_t lo, uint32_t hi);
/* An interrupt from the IOAPIC: fixed or lowest-priority (lowest) delivery
 * of (vector) to (dest) (APIC ID, or logical when (logical)); (level): sets
 * the TMR bit so the EOI reaches the listener. */
void emu_apic_bus_deliver(struct emu_apic_bus *bus, uint8_t dest, bool logical, bool lowest,
                          uint8_t vector, bool level);

/* ---- LAPIC internals used by the bus (lapic.c) ---- */

/* Does (apic) answer to destination (dest) (physical APIC ID or logical)? */
bool emu_lapic_match(struct emu_lapic *apic, uint8_t dest, bool logical);
/* Accept a fixed interrupt: set IRR (and TMR when (level)), then wake. */
bool emu_lapic_accept(struct emu_lapic *apic, uint8_t vector, bool level);
/* The INIT signal's effect on the LAPIC itself: registers to their power-on
 * values, except IA32_APIC_BASE and the ID. */
void emu_lapic_init_signal(struct emu_lapic *apic);
unsigned emu_lapic_index(struct emu_lapic *apic);
/* Does LINT0 take the PICs' interrupts (unmasked, ExtINT, APIC enabled)? */
bool emu_lapic_extint_enabled(struct emu_lapic *apic);

/* emu_lapic_mmio() at a given host time (tests drive time with it). */
void emu_lapic_mmio_at(struct emu_lapic *apic, uint64_t offset, uint8_t *data, unsigned size,
                       bool is_write, uint64_t now_ns);
/* CR8 reads: TPR bits 7-4. */
uint8_t emu_lapic_get_cr8(struct emu_lapic *apic);

/* ---- IOAPIC (ioapic.c) ---- */

struct emu_ioapic {
    uint32_t id; /* the ID register (bits 24-27) */
    uint32_t ioregsel;
    uint32_t lines; /* input levels, bit per pin */
    uint64_t redir[EMU_IOAPIC_PINS];
};

void emu_ioapic_reset(struct emu_ioapic *s);
void emu_ioapic_set_irq(struct emu_ioapic *s, struct emu_apic_bus *bus, unsigned pin, bool level);
uint32_t emu_ioapic_read(struct emu_ioapic *s, uint64_t offset);
void emu_ioapic_write(struct emu_ioapic *s, struct emu_apic_bus *bus, uint64_t offset,
                      uint32_t val);
/* A LAPIC's EOI of level-triggered (vector): clear remote IRR, resend if the line is high. */
void emu_ioapic_eoi(struct emu_ioapic *s, struct emu_apic_bus *bus, uint8_t vector);
bool emu_ioapic_check(const struct emu_ioapic *s, GError **errp);
extern const struct vmstate_desc emu_ioapic_vmstate;

/* ---- the two 8259 PICs (pic.c) ---- */

struct emu_pic {
    uint8_t irr, isr, imr, elcr;
    uint8_t last_irr;     /* line levels, for edge detection */
    uint8_t vector_base;  /* ICW2 */
    uint8_t priority_add; /* rotation: the highest-priority line */
    uint8_t init_state;   /* 0: ready; 1-3: ICW2-4 expected next */
    uint8_t init4, single_mode, auto_eoi, rotate_on_aeoi;
    uint8_t read_isr; /* OCW3: reads of the command port return ISR */
    uint8_t poll, special_mask, special_fully_nested;
};

struct emu_pics {
    struct emu_pic chip[2]; /* master, slave (on the master's IRQ2) */
};

void emu_pics_reset(struct emu_pics *p);
void emu_pics_set_irq(struct emu_pics *p, unsigned irq, bool level); /* 0..15 */
/* Ports 0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1. */
uint8_t emu_pics_read(struct emu_pics *p, uint16_t port);
void emu_pics_write(struct emu_pics *p, uint16_t port, uint8_t val);
/* The master's INT output, and the INTA cycle: the vector to take. */
bool emu_pics_output(struct emu_pics *p);
uint8_t emu_pics_intack(struct emu_pics *p);
bool emu_pics_check(const struct emu_pics *p, GError **errp);
extern const struct vmstate_desc emu_pic_vmstate;

/* ---- the 8254 PIT and port 0x61 (pit.c) ---- */

#define EMU_PIT_HZ 1193182ull

struct emu_pit_channel {
    uint32_t count;         /* reload value, 1..65536 */
    uint64_t base_ticks;    /* ticks counted before load_ns (gate pauses) */
    uint64_t elapsed_ns;    /* saved form of load_ns: now - load_ns */
    uint64_t next_irq_tick; /* channel 0: tick of the next interrupt; UINT64_MAX none */
    uint16_t latch;         /* latched count */
    uint8_t latch_left;     /* bytes of (latch) still to read */
    uint8_t status, status_latched;
    uint8_t mode, rw, bcd; /* from the control word */
    uint8_t gate;
    uint8_t armed;     /* a count was written since the control word */
    uint8_t running;   /* counting since load_ns */
    uint8_t write_msb; /* lo/hi access: the next write is the MSB */
    uint8_t read_msb;  /* lo/hi access: the next read is the MSB */
    uint8_t wbuf;      /* the LSB written */
    uint64_t load_ns;  /* host time counting (re)started; not saved */
};

struct emu_pit {
    struct emu_pit_channel ch[3];
    uint8_t port61; /* bit 0: channel 2 gate, bit 1: speaker data */
};

void emu_pit_reset(struct emu_pit *s, uint64_t now_ns);
/* Ports 0x40-0x43 and 0x61. */
uint8_t emu_pit_read(struct emu_pit *s, uint16_t port, uint64_t now_ns);
void emu_pit_write(struct emu_pit *s, uint16_t port, uint8_t val, uint64_t now_ns);
/* Channel 0: true if its interrupt is due at (now_ns); (*next) gets the next
 * host time it is due (UINT64_MAX: none). */
bool emu_pit_poll(struct emu_pit *s, uint64_t now_ns, uint64_t *next);
/* Running counts to and from their saved form. */
void emu_pit_pre_save(struct emu_pit *s, uint64_t now_ns);
bool emu_pit_post_load(struct emu_pit *s, uint64_t now_ns, GError **errp);
extern const struct vmstate_desc emu_pit_vmstate;

/* ---- chips.c ---- */

/* emu_chips_pio() at a given host time (tests drive time with it). */
bool emu_chips_pio_at(struct emu_chips *chips, uint16_t port, uint8_t *data, unsigned size,
                      bool is_write, uint64_t now_ns);
/* The INTA cycle of the PICs (for ExtINT delivery, when the machine wires it). */
bool emu_chips_pic_pending(struct emu_chips *chips);
uint8_t emu_chips_pic_intack(struct emu_chips *chips);

#endif
