/* pic.c: the two cascaded 8259A PICs and their ELCR (edge/level) registers. */
#include "emu-irq-internal.h"

#include "tern/util.h"
#include "tern/vmstate.h"

/* ELCR bits that exist: IRQ 0-2 (master) and 8, 13 (slave) are always edge. */
static const uint8_t elcr_mask[2] = { 0xf8, 0xde };

/* Priority (0 highest) of the highest line in (mask), 8 if none. */
static int priority(const struct emu_pic *s, uint8_t mask)
{
    int p = 0;

    if (!mask)
        return 8;
    while (!(mask & (1u << ((p + s->priority_add) & 7))))
        p++;
    return p;
}

/* The line (chip) would present now, -1 if none. */
static int chip_irq(const struct emu_pic *s, bool master)
{
    int p = priority(s, s->irr & ~s->imr), cur;
    uint8_t in_service = s->isr;

    if (p == 8)
        return -1;
    if (s->special_mask)
        in_service &= ~s->imr;
    if (s->special_fully_nested && master)
        in_service &= ~(1u << 2);
    cur = priority(s, in_service);
    return p < cur ? (p + s->priority_add) & 7 : -1;
}

static void chip_set_irq(struct emu_pic *s, unsigned irq, bool level)
{
    uint8_t mask = (uint8_t)(1u << irq);

    if (s->elcr & mask) {
        s->irr = level ? s->irr | mask : s->irr & ~mask;
    } else if (level && !(s->last_irr & mask)) {
        s->irr |= mask; /* a rising edge */
    }
    s->last_irr = level ? s->last_irr | mask : s->last_irr & ~mask;
}

/* The slave's INT drives the master's IRQ2. */
static void update(struct emu_pics *p)
{
    chip_set_irq(&p->chip[0], 2, chip_irq(&p->chip[1], false) >= 0);
}

static void chip_intack(struct emu_pic *s, int irq)
{
    if (s->auto_eoi) {
        if (s->rotate_on_aeoi)
            s->priority_add = (uint8_t)((irq + 1) & 7);
    } else {
        s->isr |= (uint8_t)(1u << irq);
    }
    if (!(s->elcr & (1u << irq))) /* a level line stays requested */
        s->irr &= (uint8_t) ~(1u << irq);
}

static void chip_init_reset(struct emu_pic *s)
{
    uint8_t elcr = s->elcr;      /* ELCR is not the 8259's: it survives ICW1 */
    uint8_t irr = s->irr & elcr; /* level lines stay requested */

    *s = (struct emu_pic){ .elcr = elcr, .irr = irr };
}

void emu_pics_reset(struct emu_pics *p)
{
    for (int i = 0; i < 2; i++) {
        p->chip[i] = (struct emu_pic){ 0 };
        chip_init_reset(&p->chip[i]);
    }
}

void emu_pics_set_irq(struct emu_pics *p, unsigned irq, bool level)
{
    if (irq >= 16)
        return;
    chip_set_irq(&p->chip[irq >> 3], irq & 7, level);
    update(p);
}

bool emu_pics_output(struct emu_pics *p)
{
    return chip_irq(&p->chip[0], true) >= 0;
}

uint8_t emu_pics_intack(struct emu_pics *p)
{
    struct emu_pic *m = &p->chip[0], *sl = &p->chip[1];
    int irq = chip_irq(m, true);
    uint8_t vector;

    if (irq < 0)
        return (uint8_t)(m->vector_base + 7); /* spurious */
    if (irq == 2) {
        int irq2 = chip_irq(sl, false);

        if (irq2 >= 0)
            chip_intack(sl, irq2);
        else
            irq2 = 7;
        vector = (uint8_t)(sl->vector_base + irq2);
    } else {
        vector = (uint8_t)(m->vector_base + irq);
    }
    chip_intack(m, irq);
    update(p);
    return vector;
}

/* OCW3 poll: the INTA cycle, read as a status byte. */
static uint8_t chip_poll(struct emu_pics *p, unsigned c)
{
    struct emu_pic *s = &p->chip[c];
    int irq = chip_irq(s, c == 0);

    if (irq < 0)
        return 0x07;
    chip_intack(s, irq);
    update(p);
    return (uint8_t)(0x80 | irq);
}

static void chip_command(struct emu_pic *s, uint8_t val)
{
    int p, irq;

    if (val & 0x10) { /* ICW1 */
        chip_init_reset(s);
        s->init_state = 1;
        s->init4 = val & 1;
        s->single_mode = (val >> 1) & 1;
        return;
    }
    if (val & 0x08) { /* OCW3 */
        if (val & 0x04)
            s->poll = 1;
        if (val & 0x02)
            s->read_isr = val & 1;
        if (val & 0x40)
            s->special_mask = (val >> 5) & 1;
        return;
    }
    switch (val >> 5) { /* OCW2 */
    case 0:
    case 4:
        s->rotate_on_aeoi = val >> 7;
        break;
    case 1: /* non-specific EOI */
    case 5: /* ... and rotate */
        p = priority(s, s->isr);
        if (p != 8) {
            irq = (p + s->priority_add) & 7;
            s->isr &= (uint8_t) ~(1u << irq);
            if (val >> 5 == 5)
                s->priority_add = (uint8_t)((irq + 1) & 7);
        }
        break;
    case 3: /* specific EOI */
        s->isr &= (uint8_t) ~(1u << (val & 7));
        break;
    case 6: /* set priority */
        s->priority_add = (uint8_t)((val + 1) & 7);
        break;
    case 7: /* specific EOI and rotate */
        s->isr &= (uint8_t) ~(1u << (val & 7));
        s->priority_add = (uint8_t)((val + 1) & 7);
        break;
    default:
        break;
    }
}

static void chip_data(struct emu_pic *s, uint8_t val)
{
    switch (s->init_state) {
    case 0: /* OCW1 */
        s->imr = val;
        break;
    case 1: /* ICW2 */
        s->vector_base = val & 0xf8;
        s->init_state = s->single_mode ? (s->init4 ? 3 : 0) : 2;
        break;
    case 2: /* ICW3: the cascade wiring is fixed */
        s->init_state = s->init4 ? 3 : 0;
        break;
    default: /* ICW4 */
        s->special_fully_nested = (val >> 4) & 1;
        s->auto_eoi = (val >> 1) & 1;
        s->init_state = 0;
        break;
    }
}

uint8_t emu_pics_read(struct emu_pics *p, uint16_t port)
{
    unsigned c = (port >> 7) & 1; /* 0x20/0x21: 0; 0xa0/0xa1: 1 */
    struct emu_pic *s;

    if (port == 0x4d0 || port == 0x4d1)
        return p->chip[port & 1].elcr;
    s = &p->chip[c];
    if (s->poll) {
        s->poll = 0;
        return chip_poll(p, c);
    }
    if (port & 1)
        return s->imr;
    return s->read_isr ? s->isr : s->irr;
}

void emu_pics_write(struct emu_pics *p, uint16_t port, uint8_t val)
{
    if (port == 0x4d0 || port == 0x4d1) {
        p->chip[port & 1].elcr = val & elcr_mask[port & 1];
    } else if (port & 1) {
        chip_data(&p->chip[(port >> 7) & 1], val);
    } else {
        chip_command(&p->chip[(port >> 7) & 1], val);
    }
    update(p);
}

bool emu_pics_check(const struct emu_pics *p, GError **errp)
{
    for (int i = 0; i < 2; i++) {
        const struct emu_pic *s = &p->chip[i];

        if (s->init_state > 3 || s->priority_add > 7) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "pic@%d: init_state %u or priority_add %u out of range", i, s->init_state,
                        s->priority_add);
            return false;
        }
    }
    return true;
}

static const struct vmstate_field pic_fields[] = {
    VMSTATE_U8(struct emu_pic, irr),
    VMSTATE_U8(struct emu_pic, isr),
    VMSTATE_U8(struct emu_pic, imr),
    VMSTATE_U8(struct emu_pic, elcr),
    VMSTATE_U8(struct emu_pic, last_irr),
    VMSTATE_U8(struct emu_pic, vector_base),
    VMSTATE_U8(struct emu_pic, priority_add),
    VMSTATE_U8(struct emu_pic, init_state),
    VMSTATE_U8(struct emu_pic, init4),
    VMSTATE_U8(struct emu_pic, single_mode),
    VMSTATE_U8(struct emu_pic, auto_eoi),
    VMSTATE_U8(struct emu_pic, rotate_on_aeoi),
    VMSTATE_U8(struct emu_pic, read_isr),
    VMSTATE_U8(struct emu_pic, poll),
    VMSTATE_U8(struct emu_pic, special_mask),
    VMSTATE_U8(struct emu_pic, special_fully_nested),
    VMSTATE_END,
};

const struct vmstate_desc emu_pic_vmstate = {
    .name = "pic",
    .version = 1,
    .min_version = 1,
    .fields = pic_fields,
};
