/* pit.c: the 8254 PIT (three channels counted from host time) and port 0x61. */
#include "emu-irq-internal.h"

#include "tern/util.h"
#include "tern/vmstate.h"

#define NS_PER_SEC 1000000000ull

static uint64_t ns_to_ticks(uint64_t ns)
{
    return ns / NS_PER_SEC * EMU_PIT_HZ + ns % NS_PER_SEC * EMU_PIT_HZ / NS_PER_SEC;
}

/* The first host nanosecond by which (t) ticks have elapsed. */
static uint64_t ticks_to_ns(uint64_t t)
{
    return t / EMU_PIT_HZ * NS_PER_SEC +
           (t % EMU_PIT_HZ * NS_PER_SEC + EMU_PIT_HZ - 1) / EMU_PIT_HZ;
}

/* Ticks counted since the count was loaded. */
static uint64_t ticks(const struct emu_pit_channel *c, uint64_t now)
{
    if (!c->running || now < c->load_ns)
        return c->base_ticks;
    return c->base_ticks + ns_to_ticks(now - c->load_ns);
}

static bool out(const struct emu_pit_channel *c, uint64_t now)
{
    uint64_t t;

    if (!c->armed)
        return c->mode != 0;
    if ((c->mode == 2 || c->mode == 3) && !c->gate)
        return true;
    if ((c->mode == 1 || c->mode == 5) && !c->running && !c->base_ticks)
        return true; /* not triggered yet */
    t = ticks(c, now);
    switch (c->mode) {
    case 0:
    case 1:
        return t >= c->count;
    case 2:
        return c->count < 2 || t % c->count != c->count - 1;
    case 3:
        return t % c->count < (c->count + 1) / 2;
    default: /* 4, 5: low for one tick at terminal count */
        return t != c->count;
    }
}

static uint16_t value(const struct emu_pit_channel *c, uint64_t now)
{
    uint64_t t;

    if (!c->armed)
        return (uint16_t)c->count;
    t = ticks(c, now);
    switch (c->mode) {
    case 2:
        return (uint16_t)(c->count - t % c->count);
    case 3: /* counts down by two, twice a period */
        return (uint16_t)(c->count - (2 * t) % c->count);
    default:
        return (uint16_t)(c->count - t); /* wraps past 0, as the 8254 */
    }
}

static void start(struct emu_pit_channel *c, uint64_t now)
{
    c->base_ticks = 0;
    c->load_ns = now;
    c->running = 1;
}

static void load_count(struct emu_pit_channel *c, unsigned ch, uint32_t v, uint64_t now)
{
    c->count = v ? v : 0x10000;
    if (c->mode == 2 && c->count == 1)
        c->count = 2; /* a rate of 1 is illegal; avoid an interrupt storm */
    c->armed = 1;
    c->running = 0;
    c->base_ticks = 0;
    c->next_irq_tick = UINT64_MAX;
    if (c->mode == 1 || c->mode == 5)
        return; /* waits for a gate trigger */
    if (c->gate)
        start(c, now);
    if (ch == 0 && (c->mode == 0 || c->mode == 2 || c->mode == 3 || c->mode == 4))
        c->next_irq_tick = c->count;
}

static void set_gate(struct emu_pit_channel *c, unsigned ch, bool gate, uint64_t now)
{
    if (gate == (bool)c->gate)
        return;
    c->gate = gate;
    if (!c->armed)
        return;
    switch (c->mode) {
    case 0:
    case 4: /* the gate pauses the count */
        if (gate) {
            c->load_ns = now;
            c->running = 1;
        } else {
            c->base_ticks = ticks(c, now);
            c->running = 0;
        }
        break;
    default: /* 1, 2, 3, 5: a rising gate restarts */
        if (gate) {
            start(c, now);
            if (ch == 0)
                c->next_irq_tick = c->count;
        } else if (c->mode == 2 || c->mode == 3) {
            c->running = 0;
            c->base_ticks = 0;
        }
        break;
    }
}

static void channel_reset(struct emu_pit_channel *c, unsigned ch, uint64_t now)
{
    *c = (struct emu_pit_channel){
        .count = 0x10000,
        .mode = 3,
        .rw = 3,
        .gate = ch != 2,
        .next_irq_tick = UINT64_MAX,
        .load_ns = now,
    };
}

void emu_pit_reset(struct emu_pit *s, uint64_t now_ns)
{
    for (unsigned i = 0; i < 3; i++)
        channel_reset(&s->ch[i], i, now_ns);
    s->port61 = 0;
}

static void latch_count(struct emu_pit_channel *c, uint64_t now)
{
    if (c->latch_left)
        return; /* the first latch holds until read */
    c->latch = value(c, now);
    c->latch_left = c->rw == 3 ? 2 : 1;
}

static void control(struct emu_pit *s, uint8_t val, uint64_t now)
{
    unsigned sc = val >> 6;
    struct emu_pit_channel *c;

    if (sc == 3) { /* read-back */
        for (unsigned i = 0; i < 3; i++) {
            c = &s->ch[i];
            if (!(val & (2u << i)))
                continue;
            if (!(val & 0x20))
                latch_count(c, now);
            if (!(val & 0x10) && !c->status_latched) {
                c->status = (uint8_t)((out(c, now) << 7) | (!c->armed << 6) | (c->rw << 4) |
                                      (c->mode << 1) | c->bcd);
                c->status_latched = 1;
            }
        }
        return;
    }
    c = &s->ch[sc];
    if (!(val & 0x30)) {
        latch_count(c, now);
        return;
    }
    c->rw = (val >> 4) & 3;
    c->mode = (val >> 1) & 7;
    if (c->mode > 5)
        c->mode -= 4; /* 6 and 7 are 2 and 3 */
    c->bcd = val & 1;
    c->armed = 0;
    c->running = 0;
    c->base_ticks = 0;
    c->write_msb = 0;
    c->read_msb = 0;
    c->latch_left = 0;
    c->next_irq_tick = UINT64_MAX;
}

static uint8_t data_read(struct emu_pit_channel *c, uint64_t now)
{
    uint16_t v;
    bool msb;

    if (c->status_latched) {
        c->status_latched = 0;
        return c->status;
    }
    if (c->latch_left) {
        v = c->latch;
        msb = c->rw == 2 || (c->rw == 3 && c->latch_left == 1);
        c->latch_left--;
    } else {
        v = value(c, now);
        msb = c->rw == 2 || (c->rw == 3 && c->read_msb);
        if (c->rw == 3)
            c->read_msb ^= 1;
    }
    return msb ? (uint8_t)(v >> 8) : (uint8_t)v;
}

static void data_write(struct emu_pit_channel *c, unsigned ch, uint8_t val, uint64_t now)
{
    switch (c->rw) {
    case 1:
        load_count(c, ch, val, now);
        break;
    case 2:
        load_count(c, ch, (uint32_t)val << 8, now);
        break;
    default:
        if (!c->write_msb) {
            c->wbuf = val;
            c->write_msb = 1;
            if (c->mode == 0) { /* the first byte stops a mode 0 count */
                c->armed = 0;
                c->running = 0;
                c->next_irq_tick = UINT64_MAX;
            }
        } else {
            c->write_msb = 0;
            load_count(c, ch, c->wbuf | (uint32_t)val << 8, now);
        }
        break;
    }
}

uint8_t emu_pit_read(struct emu_pit *s, uint16_t port, uint64_t now_ns)
{
    if (port == 0x61)
        /* Bit 4 toggles every 15.085 us (DRAM refresh): some delay loops poll it. */
        return (uint8_t)((s->port61 & 0x0f) | (out(&s->ch[2], now_ns) << 5) |
                         (((now_ns / 15085) & 1) << 4));
    if (port >= 0x40 && port <= 0x42)
        return data_read(&s->ch[port - 0x40], now_ns);
    return 0xff; /* the control word is write-only */
}

void emu_pit_write(struct emu_pit *s, uint16_t port, uint8_t val, uint64_t now_ns)
{
    if (port == 0x61) {
        s->port61 = val & 0x0f;
        set_gate(&s->ch[2], 2, val & 1, now_ns);
    } else if (port == 0x43) {
        control(s, val, now_ns);
    } else if (port >= 0x40 && port <= 0x42) {
        data_write(&s->ch[port - 0x40], port - 0x40u, val, now_ns);
    }
}

bool emu_pit_poll(struct emu_pit *s, uint64_t now_ns, uint64_t *next)
{
    struct emu_pit_channel *c = &s->ch[0];
    bool due = false;

    *next = UINT64_MAX;
    if (!c->running || c->next_irq_tick == UINT64_MAX)
        return false;
    {
        uint64_t t = ticks(c, now_ns);

        if (t >= c->next_irq_tick) {
            due = true;
            /* Periodic modes: the next period after now, never a burst. */
            c->next_irq_tick = c->mode == 2 || c->mode == 3 ? (t / c->count + 1) * c->count
                                                            : UINT64_MAX;
        }
    }
    if (c->next_irq_tick != UINT64_MAX)
        *next = c->load_ns + ticks_to_ns(c->next_irq_tick - c->base_ticks);
    return due;
}

void emu_pit_pre_save(struct emu_pit *s, uint64_t now_ns)
{
    for (unsigned i = 0; i < 3; i++)
        s->ch[i].elapsed_ns = now_ns > s->ch[i].load_ns ? now_ns - s->ch[i].load_ns : 0;
}

bool emu_pit_post_load(struct emu_pit *s, uint64_t now_ns, GError **errp)
{
    for (unsigned i = 0; i < 3; i++) {
        struct emu_pit_channel *c = &s->ch[i];

        if (c->count < 1 || c->count > 0x10000 || c->mode > 5 || c->rw > 3 || c->latch_left > 2 ||
            (c->mode == 2 && c->count < 2)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "pit: channel %u: count %u, mode %u, access %u or latch %u invalid", i,
                        c->count, c->mode, c->rw, c->latch_left);
            return false;
        }
        if (c->next_irq_tick != UINT64_MAX && c->next_irq_tick < c->base_ticks)
            c->next_irq_tick = c->base_ticks;
        c->load_ns = now_ns > c->elapsed_ns ? now_ns - c->elapsed_ns : 0;
        c->gate = i == 2 ? (s->port61 & 1) : 1;
    }
    return true;
}

static const struct vmstate_field pit_channel_fields[] = {
    VMSTATE_U32(struct emu_pit_channel, count),
    VMSTATE_U64(struct emu_pit_channel, base_ticks),
    VMSTATE_U64(struct emu_pit_channel, elapsed_ns),
    VMSTATE_U64(struct emu_pit_channel, next_irq_tick),
    VMSTATE_U16(struct emu_pit_channel, latch),
    VMSTATE_U8(struct emu_pit_channel, latch_left),
    VMSTATE_U8(struct emu_pit_channel, status),
    VMSTATE_U8(struct emu_pit_channel, status_latched),
    VMSTATE_U8(struct emu_pit_channel, mode),
    VMSTATE_U8(struct emu_pit_channel, rw),
    VMSTATE_U8(struct emu_pit_channel, bcd),
    VMSTATE_U8(struct emu_pit_channel, gate),
    VMSTATE_U8(struct emu_pit_channel, armed),
    VMSTATE_U8(struct emu_pit_channel, running),
    VMSTATE_U8(struct emu_pit_channel, write_msb),
    VMSTATE_U8(struct emu_pit_channel, read_msb),
    VMSTATE_U8(struct emu_pit_channel, wbuf),
    VMSTATE_END,
};

static const struct vmstate_desc pit_channel_vmstate = {
    .name = "pit-channel",
    .version = 1,
    .min_version = 1,
    .fields = pit_channel_fields,
};

static const struct vmstate_field pit_fields[] = {
    VMSTATE_STRUCT_ARRAY(struct emu_pit, ch, 3, pit_channel_vmstate),
    VMSTATE_U8(struct emu_pit, port61),
    VMSTATE_END,
};

const struct vmstate_desc emu_pit_vmstate = {
    .name = "pit",
    .version = 1,
    .min_version = 1,
    .fields = pit_fields,
};
