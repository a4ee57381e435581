/* chips.c: the VM-wide chips (IOAPIC, PICs, PIT) behind one lock: routing, dispatch, state. */
#include "emu-irq-internal.h"

#include <libfdt.h>
#include <string.h>

#include "tern/util.h"
#include "tern/vmstate.h"

/* ISA IRQ 0 is GSI 2 (the ACPI interrupt source override of every PC). */
#define PIT_GSI 2

struct emu_chips {
    struct emu_apic_bus *bus;
    /* Taken before any LAPIC lock (deliveries), never while holding one. */
    GMutex lock;
    struct emu_ioapic ioapic;
    struct emu_pics pics;
    struct emu_pit pit;
};

/* All that travels, in the "chips" node. */
struct chips_state {
    struct emu_ioapic ioapic;
    struct emu_pic pic[2];
    struct emu_pit pit;
};

static void chips_eoi(void *opaque, uint8_t vector)
{
    struct emu_chips *chips = opaque;

    g_mutex_lock(&chips->lock);
    emu_ioapic_eoi(&chips->ioapic, chips->bus, vector);
    g_mutex_unlock(&chips->lock);
}

static bool chips_extint_pending(void *opaque)
{
    return emu_chips_pic_pending(opaque);
}

static uint8_t chips_extint_ack(void *opaque)
{
    return emu_chips_pic_intack(opaque);
}

/* Lock held: after anything that may raise the PICs' output. */
static void pic_kick(struct emu_chips *chips)
{
    if (emu_pics_output(&chips->pics))
        emu_apic_bus_kick_extint(chips->bus);
}

struct emu_chips *emu_chips_create(struct emu_apic_bus *bus)
{
    struct emu_chips *chips = g_new0(struct emu_chips, 1);

    chips->bus = bus;
    g_mutex_init(&chips->lock);
    emu_chips_reset(chips);
    emu_apic_bus_set_eoi_listener(bus, chips_eoi, chips);
    emu_apic_bus_set_extint(bus, chips_extint_pending, chips_extint_ack, chips);
    return chips;
}

void emu_chips_destroy(struct emu_chips *chips)
{
    if (!chips)
        return;
    emu_apic_bus_set_eoi_listener(chips->bus, NULL, NULL);
    emu_apic_bus_set_extint(chips->bus, NULL, NULL, NULL);
    g_mutex_clear(&chips->lock);
    g_free(chips);
}

void emu_chips_reset(struct emu_chips *chips)
{
    g_mutex_lock(&chips->lock);
    emu_ioapic_reset(&chips->ioapic);
    emu_pics_reset(&chips->pics);
    emu_pit_reset(&chips->pit, emu_now_ns());
    g_mutex_unlock(&chips->lock);
}

/* Lock held. */
static void set_irq_locked(struct emu_chips *chips, unsigned irq, bool level)
{
    if (irq == 2)
        return; /* the PIC cascade; GSI 2 belongs to IRQ 0 */
    emu_ioapic_set_irq(&chips->ioapic, chips->bus, irq == 0 ? PIT_GSI : irq, level);
    if (irq < 16) {
        emu_pics_set_irq(&chips->pics, irq, level);
        pic_kick(chips);
    }
}

void emu_chips_set_irq(struct emu_chips *chips, unsigned irq, bool level)
{
    if (irq >= EMU_IOAPIC_PINS)
        return;
    g_mutex_lock(&chips->lock);
    set_irq_locked(chips, irq, level);
    g_mutex_unlock(&chips->lock);
}

static bool pic_port(uint16_t port)
{
    return port == 0x20 || port == 0x21 || port == 0xa0 || port == 0xa1 || port == 0x4d0 ||
           port == 0x4d1;
}

static bool pit_port(uint16_t port)
{
    return (port >= 0x40 && port <= 0x43) || port == 0x61;
}

bool emu_chips_pio_at(struct emu_chips *chips, uint16_t port, uint8_t *data, unsigned size,
                      bool is_write, uint64_t now_ns)
{
    if (!pic_port(port) && !pit_port(port))
        return false;
    g_mutex_lock(&chips->lock);
    /* Wider accesses reach the following ports byte by byte (ELCR is read as a word). */
    for (unsigned i = 0; i < size; i++) {
        uint16_t p = (uint16_t)(port + i);

        if (is_write) {
            if (pic_port(p)) {
                emu_pics_write(&chips->pics, p, data[i]);
                pic_kick(chips); /* an unmask or EOI can let one through */
            } else if (pit_port(p))
                emu_pit_write(&chips->pit, p, data[i], now_ns);
        } else {
            data[i] = pic_port(p)   ? emu_pics_read(&chips->pics, p)
                      : pit_port(p) ? emu_pit_read(&chips->pit, p, now_ns)
                                    : 0xff;
        }
    }
    g_mutex_unlock(&chips->lock);
    return true;
}

bool emu_chips_pio(struct emu_chips *chips, uint16_t port, uint8_t *data, unsigned size,
                   bool is_write)
{
    return emu_chips_pio_at(chips, port, data, size, is_write, emu_now_ns());
}

void emu_chips_ioapic_mmio(struct emu_chips *chips, uint64_t offset, uint8_t *data, unsigned size,
                           bool is_write)
{
    uint32_t v = 0;

    if (size == 0 || size > 8)
        return;
    g_mutex_lock(&chips->lock);
    if (is_write) {
        /* Registers take 32-bit writes; a narrower write updates the low bytes. */
        if ((offset & 3) == 0 && size <= 4) {
            if (size < 4)
                v = emu_ioapic_read(&chips->ioapic, offset);
            memcpy(&v, data, size);
            emu_ioapic_write(&chips->ioapic, chips->bus, offset & 0xff, v);
        }
    } else {
        uint64_t wide = 0;

        if ((offset & 0xfc) == 0x00 || (offset & 0xfc) == 0x10)
            wide = emu_ioapic_read(&chips->ioapic, offset & 0xf0) >> (8 * (offset & 3));
        memcpy(data, &wide, size);
    }
    g_mutex_unlock(&chips->lock);
}

uint64_t emu_chips_timer_poll(struct emu_chips *chips, uint64_t now_ns)
{
    uint64_t next;

    g_mutex_lock(&chips->lock);
    if (emu_pit_poll(&chips->pit, now_ns, &next)) {
        set_irq_locked(chips, 0, true); /* a pulse: both chips see an edge */
        set_irq_locked(chips, 0, false);
    }
    g_mutex_unlock(&chips->lock);
    return next;
}

bool emu_chips_pic_pending(struct emu_chips *chips)
{
    bool p;

    g_mutex_lock(&chips->lock);
    p = emu_pics_output(&chips->pics);
    g_mutex_unlock(&chips->lock);
    return p;
}

uint8_t emu_chips_pic_intack(struct emu_chips *chips)
{
    uint8_t v;

    g_mutex_lock(&chips->lock);
    v = emu_pics_intack(&chips->pics);
    g_mutex_unlock(&chips->lock);
    return v;
}

/* ---- state ---- */

static const struct vmstate_field chips_fields[] = {
    VMSTATE_STRUCT(struct chips_state, ioapic, emu_ioapic_vmstate),
    VMSTATE_STRUCT_ARRAY(struct chips_state, pic, 2, emu_pic_vmstate),
    VMSTATE_STRUCT(struct chips_state, pit, emu_pit_vmstate),
    VMSTATE_END,
};

static const struct vmstate_desc chips_vmstate = {
    .name = "chips",
    .version = 1,
    .min_version = 1,
    .fields = chips_fields,
};

bool emu_chips_save(struct emu_chips *chips, void *fdt, int parent, uint64_t now_ns, GError **errp)
{
    struct chips_state st;

    g_mutex_lock(&chips->lock);
    st.ioapic = chips->ioapic;
    memcpy(st.pic, chips->pics.chip, sizeof(st.pic));
    emu_pit_pre_save(&chips->pit, now_ns);
    st.pit = chips->pit;
    g_mutex_unlock(&chips->lock);
    return vmstate_save(&chips_vmstate, &st, fdt, parent, "chips", errp);
}

bool emu_chips_load(struct emu_chips *chips, const void *fdt, int node, uint64_t now_ns,
                    GError **errp)
{
    struct chips_state st;
    struct emu_pics pics;

    /* Start from the current state so absent optional fields keep their values. */
    g_mutex_lock(&chips->lock);
    st.ioapic = chips->ioapic;
    memcpy(st.pic, chips->pics.chip, sizeof(st.pic));
    st.pit = chips->pit;
    g_mutex_unlock(&chips->lock);

    if (!vmstate_load(&chips_vmstate, &st, fdt, node, errp))
        return false;
    memcpy(pics.chip, st.pic, sizeof(pics.chip));
    if (!emu_ioapic_check(&st.ioapic, errp) || !emu_pics_check(&pics, errp) ||
        !emu_pit_post_load(&st.pit, now_ns, errp)) {
        g_prefix_error(errp, "chips: ");
        return false;
    }
    g_mutex_lock(&chips->lock);
    chips->ioapic = st.ioapic;
    chips->pics = pics;
    chips->pit = st.pit;
    g_mutex_unlock(&chips->lock);
    return true;
}
