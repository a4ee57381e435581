/* apic-bus.c: the LAPICs of a VM as one bus: IPI and IOAPIC message routing. */
#include "emu-irq-internal.h"

struct emu_apic_bus *emu_apic_bus_create(const struct emu_irq_ops *ops, void *opaque)
{
    struct emu_apic_bus *bus = g_new0(struct emu_apic_bus, 1);

    bus->ops = ops;
    bus->opaque = opaque;
    return bus;
}

void emu_apic_bus_destroy(struct emu_apic_bus *bus)
{
    g_free(bus);
}

void emu_apic_bus_set_eoi_listener(struct emu_apic_bus *bus,
                                   void (*fn)(void *opaque, uint8_t vector), void *opaque)
{
    bus->eoi_opaque = opaque;
    bus->eoi_listener = fn;
}

void emu_apic_bus_set_extint(struct emu_apic_bus *bus, bool (*pending)(void *opaque),
                             uint8_t (*ack)(void *opaque), void *opaque)
{
    bus->extint_opaque = opaque;
    bus->extint_ack = ack;
    bus->extint_pending = pending;
}

void emu_apic_bus_kick_extint(struct emu_apic_bus *bus)
{
    for (unsigned i = 0; i < EMU_MAX_CPUS; i++) {
        struct emu_lapic *a = g_atomic_pointer_get(&bus->lapics[i]);

        if (a && emu_lapic_extint_enabled(a))
            bus->ops->wake(bus->opaque, i);
    }
}

/* ICR destination shorthands (bits 18-19). */
enum { DEST_FIELD, DEST_SELF, DEST_ALL, DEST_ALL_BUT_SELF };

/* Send one message to every LAPIC it selects (lowest priority: the first). */
static void bus_send(struct emu_apic_bus *bus, struct emu_lapic *src, unsigned shorthand,
                     uint8_t dest, bool logical, unsigned mode, uint8_t vector, bool level)
{
    for (unsigned i = 0; i < EMU_MAX_CPUS; i++) {
        struct emu_lapic *a = g_atomic_pointer_get(&bus->lapics[i]);
        bool hit;

        if (!a)
            continue;
        switch (shorthand) {
        case DEST_SELF:
            hit = a == src;
            break;
        case DEST_ALL:
            hit = true;
            break;
        case DEST_ALL_BUT_SELF:
            hit = a != src;
            break;
        default:
            hit = emu_lapic_match(a, dest, logical);
            break;
        }
        if (!hit)
            continue;
        switch (mode) {
        case EMU_APIC_DM_FIXED:
        case EMU_APIC_DM_LOWEST:
            /* Lowest priority: the first LAPIC that takes it (a disabled one does
             * not, or a level-triggered pin would wait for an EOI forever). */
            if (emu_lapic_accept(a, vector, level) && mode == EMU_APIC_DM_LOWEST)
                return;
            break;
        case EMU_APIC_DM_INIT:
            emu_lapic_init_signal(a);
            bus->ops->init(bus->opaque, i);
            break;
        case EMU_APIC_DM_STARTUP:
            bus->ops->sipi(bus->opaque, i, vector);
            break;
        default:
            break; /* SMI, NMI, ExtINT: not modelled */
        }
    }
}

void emu_apic_bus_ipi(struct emu_apic_bus *bus, struct emu_lapic *src, uint32_t lo, uint32_t hi)
{
    unsigned mode = (lo >> 8) & 7;

    /* INIT level de-assert only resets arbitration IDs: nothing to do. */
    if (mode == EMU_APIC_DM_INIT && !(lo & (1u << 14)))
        return;
    bus_send(bus, src, (lo >> 18) & 3, (uint8_t)(hi >> 24), lo & (1u << 11), mode, (uint8_t)lo,
             false);
}

void emu_apic_bus_deliver(struct emu_apic_bus *bus, uint8_t dest, bool logical, bool lowest,
                          uint8_t vector, bool level)
{
    bus_send(bus, NULL, DEST_FIELD, dest, logical, lowest ? EMU_APIC_DM_LOWEST : EMU_APIC_DM_FIXED,
             vector, level);
}
