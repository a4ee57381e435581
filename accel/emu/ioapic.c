/* ioapic.c: the IOAPIC (24 pins, 82093AA register set) and its delivery to the LAPICs. */
#include "emu-irq-internal.h"

#include "tern/util.h"
#include "tern/vmstate.h"

#define IOAPIC_VERSION 0x00170011u /* 24 redirection entries */
#define REG_ID 0x00
#define REG_VERSION 0x01
#define REG_ARB 0x02
#define REG_REDIR 0x10

#define RTE_VECTOR(e) ((uint8_t)(e))
#define RTE_MODE(e) (((e) >> 8) & 7)
#define RTE_LOGICAL (1ull << 11)
#define RTE_REMOTE_IRR (1ull << 14)
#define RTE_LEVEL (1ull << 15)
#define RTE_MASKED (1ull << 16)
#define RTE_DEST(e) ((uint8_t)((e) >> 56))
/* Bits the guest writes; delivery status (12) and remote IRR (14) are read-only. */
#define RTE_WRITABLE (0xff00000000000000ull | 0xfffull | (1ull << 13) | RTE_LEVEL | RTE_MASKED)

void emu_ioapic_reset(struct emu_ioapic *s)
{
    s->id = 0;
    s->ioregsel = 0;
    s->lines = 0;
    for (unsigned i = 0; i < EMU_IOAPIC_PINS; i++)
        s->redir[i] = RTE_MASKED;
}

/* Send pin (pin)'s message if its state asks for one now. */
static void service(struct emu_ioapic *s, struct emu_apic_bus *bus, unsigned pin)
{
    uint64_t e = s->redir[pin];
    bool level = e & RTE_LEVEL;

    if ((e & RTE_MASKED) || !(s->lines & (1u << pin)))
        return;
    if (RTE_MODE(e) != EMU_APIC_DM_FIXED && RTE_MODE(e) != EMU_APIC_DM_LOWEST)
        return; /* NMI, SMI, INIT, ExtINT: not modelled */
    if (level) {
        if (e & RTE_REMOTE_IRR)
            return; /* the last one is not EOIed yet */
        s->redir[pin] |= RTE_REMOTE_IRR;
    }
    emu_apic_bus_deliver(bus, RTE_DEST(e), e & RTE_LOGICAL, RTE_MODE(e) == EMU_APIC_DM_LOWEST,
                         RTE_VECTOR(e), level);
}

void emu_ioapic_set_irq(struct emu_ioapic *s, struct emu_apic_bus *bus, unsigned pin, bool level)
{
    uint32_t bit;
    bool was;

    if (pin >= EMU_IOAPIC_PINS)
        return;
    bit = 1u << pin;
    was = s->lines & bit;
    s->lines = level ? s->lines | bit : s->lines & ~bit;
    /* Edge: on a rising edge; level: whenever the line is driven high. */
    if (level && (!was || (s->redir[pin] & RTE_LEVEL)))
        service(s, bus, pin);
}

uint32_t emu_ioapic_read(struct emu_ioapic *s, uint64_t offset)
{
    uint32_t r = s->ioregsel & 0xff;

    if (offset == 0x00)
        return s->ioregsel;
    if (offset != 0x10)
        return 0;
    switch (r) {
    case REG_ID:
    case REG_ARB:
        return s->id & 0x0f000000u;
    case REG_VERSION:
        return IOAPIC_VERSION;
    default:
        if (r >= REG_REDIR && r < REG_REDIR + 2 * EMU_IOAPIC_PINS) {
            uint64_t e = s->redir[(r - REG_REDIR) / 2];

            return (r & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
        }
        return 0;
    }
}

void emu_ioapic_write(struct emu_ioapic *s, struct emu_apic_bus *bus, uint64_t offset, uint32_t val)
{
    uint32_t r = s->ioregsel & 0xff;

    if (offset == 0x00) {
        s->ioregsel = val & 0xff;
        return;
    }
    if (offset != 0x10)
        return;
    if (r == REG_ID) {
        s->id = val & 0x0f000000u;
    } else if (r >= REG_REDIR && r < REG_REDIR + 2 * EMU_IOAPIC_PINS) {
        unsigned pin = (r - REG_REDIR) / 2;
        uint64_t e = s->redir[pin];
        uint64_t w = (r & 1) ? (e & 0xffffffffull) | ((uint64_t)val << 32)
                             : (e & ~0xffffffffull) | val;

        e = (w & RTE_WRITABLE) | (e & RTE_REMOTE_IRR);
        if (!(e & RTE_LEVEL))
            e &= ~RTE_REMOTE_IRR;
        s->redir[pin] = e;
        /* Unmasking a level pin whose line is high delivers it now. */
        if (e & RTE_LEVEL)
            service(s, bus, pin);
    }
}

void emu_ioapic_eoi(struct emu_ioapic *s, struct emu_apic_bus *bus, uint8_t vector)
{
    for (unsigned pin = 0; pin < EMU_IOAPIC_PINS; pin++) {
        uint64_t e = s->redir[pin];

        if (RTE_VECTOR(e) != vector || !(e & RTE_LEVEL) || !(e & RTE_REMOTE_IRR))
            continue;
        s->redir[pin] &= ~RTE_REMOTE_IRR;
        service(s, bus, pin); /* still asserted: again */
    }
}

bool emu_ioapic_check(const struct emu_ioapic *s, GError **errp)
{
    if (s->lines >> EMU_IOAPIC_PINS) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "ioapic: line levels 0x%x name pins beyond %u", s->lines, EMU_IOAPIC_PINS);
        return false;
    }
    return true;
}

static const struct vmstate_field ioapic_fields[] = {
    VMSTATE_U32(struct emu_ioapic, id),
    VMSTATE_U32(struct emu_ioapic, ioregsel),
    VMSTATE_U32(struct emu_ioapic, lines),
    VMSTATE_U64_ARRAY(struct emu_ioapic, redir, EMU_IOAPIC_PINS),
    VMSTATE_END,
};

const struct vmstate_desc emu_ioapic_vmstate = {
    .name = "ioapic",
    .version = 1,
    .min_version = 1,
    .fields = ioapic_fields,
};
