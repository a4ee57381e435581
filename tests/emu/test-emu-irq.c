/* test-emu-irq.c: unit tests of the software accelerator's LAPIC, IOAPIC, PICs and PIT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libfdt.h>
#include <stdlib.h>
#include <string.h>

#include "emu-irq-internal.h"
#include "tern/vmstate.h"

#define T0 1000000000ull /* a fake "now": tests drive time themselves */
#define NCPU 3

/* ---- a fake machine ---- */

struct fake {
    int wakes[NCPU]; /* atomic: raises come from threads */
    unsigned inits[NCPU];
    unsigned sipis[NCPU];
    uint8_t sipi_vector[NCPU];
    uint64_t tsc; /* guest TSC == host ns + tsc_offset */
    uint64_t tsc_offset;
};

static void fake_wake(void *opaque, unsigned cpu)
{
    g_atomic_int_inc(&((struct fake *)opaque)->wakes[cpu]);
}

static void fake_init(void *opaque, unsigned cpu)
{
    ((struct fake *)opaque)->inits[cpu]++;
}

static void fake_sipi(void *opaque, unsigned cpu, uint8_t vector)
{
    struct fake *f = opaque;

    f->sipis[cpu]++;
    f->sipi_vector[cpu] = vector;
}

static uint64_t fake_tsc_now(void *opaque)
{
    return ((struct fake *)opaque)->tsc;
}

static uint64_t fake_tsc_to_ns(void *opaque, uint64_t tsc)
{
    return tsc - ((struct fake *)opaque)->tsc_offset;
}

static const struct emu_irq_ops fake_ops = {
    .wake = fake_wake,
    .init = fake_init,
    .sipi = fake_sipi,
    .tsc_now = fake_tsc_now,
    .tsc_to_ns = fake_tsc_to_ns,
};

struct env {
    struct fake fake;
    struct emu_apic_bus *bus;
    struct emu_lapic *cpu[NCPU];
    struct emu_chips *chips;
};

static int env_setup(void **state)
{
    struct env *e = g_new0(struct env, 1);

    e->fake.tsc_offset = 5000;
    e->bus = emu_apic_bus_create(&fake_ops, &e->fake);
    for (unsigned i = 0; i < NCPU; i++)
        e->cpu[i] = emu_lapic_create(e->bus, i);
    e->chips = emu_chips_create(e->bus);
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;

    emu_chips_destroy(e->chips);
    for (unsigned i = 0; i < NCPU; i++)
        emu_lapic_destroy(e->cpu[i]);
    emu_apic_bus_destroy(e->bus);
    g_free(e);
    return 0;
}

static void wr(struct emu_lapic *a, unsigned off, uint32_t v, uint64_t now)
{
    emu_lapic_mmio_at(a, off, (uint8_t *)&v, 4, true, now);
}

static uint32_t rd(struct emu_lapic *a, unsigned off, uint64_t now)
{
    uint32_t v = 0xdeadbeef;

    emu_lapic_mmio_at(a, off, (uint8_t *)&v, 4, false, now);
    return v;
}

static void enable(struct emu_lapic *a)
{
    wr(a, 0xf0, 0x1ff, T0);
}

static void outb(struct emu_chips *c, uint16_t port, uint8_t v, uint64_t now)
{
    assert_true(emu_chips_pio_at(c, port, &v, 1, true, now));
}

static uint8_t inb(struct emu_chips *c, uint16_t port, uint64_t now)
{
    uint8_t v = 0x5a;

    assert_true(emu_chips_pio_at(c, port, &v, 1, false, now));
    return v;
}

static void ioapic_wr(struct emu_chips *c, uint32_t reg, uint32_t v)
{
    emu_chips_ioapic_mmio(c, 0x00, (uint8_t *)&reg, 4, true);
    emu_chips_ioapic_mmio(c, 0x10, (uint8_t *)&v, 4, true);
}

static uint32_t ioapic_rd(struct emu_chips *c, uint32_t reg)
{
    uint32_t v = 0;

    emu_chips_ioapic_mmio(c, 0x00, (uint8_t *)&reg, 4, true);
    emu_chips_ioapic_mmio(c, 0x10, (uint8_t *)&v, 4, false);
    return v;
}

static void redir(struct emu_chips *c, unsigned pin, uint64_t e)
{
    ioapic_wr(c, 0x10 + 2 * pin + 1, (uint32_t)(e >> 32));
    ioapic_wr(c, 0x10 + 2 * pin, (uint32_t)e);
}

/* ---- LAPIC registers ---- */

static void test_lapic_reset_values(void **state)
{
    struct env *e = *state;
    uint64_t base = 0;
    bool ok = false;

    assert_int_equal(rd(e->cpu[2], 0x20, T0), 2u << 24);
    assert_int_equal(rd(e->cpu[0], 0x30, T0), 0x50014);
    assert_int_equal(rd(e->cpu[0], 0xf0, T0), 0xff);
    assert_int_equal(rd(e->cpu[0], 0xe0, T0), 0xffffffffu);
    assert_int_equal(rd(e->cpu[0], 0x320, T0), 0x10000);
    assert_true(emu_lapic_rdmsr(e->cpu[0], 0x1b, &base, &ok));
    assert_true(ok);
    assert_int_equal(base, 0xfee00900ull);
    assert_true(emu_lapic_rdmsr(e->cpu[1], 0x1b, &base, &ok));
    assert_int_equal(base, 0xfee00800ull);
    /* x2APIC MSRs and enabling x2APIC are not ours to give. */
    assert_false(emu_lapic_rdmsr(e->cpu[0], 0x802, &base, &ok));
    assert_true(emu_lapic_wrmsr(e->cpu[0], 0x1b, 0xfee00c00ull, &ok));
    assert_false(ok);
    /* Byte reads of a register. */
    {
        uint8_t b = 0;

        emu_lapic_mmio_at(e->cpu[2], 0x23, &b, 1, false, T0);
        assert_int_equal(b, 2);
    }
    /* The software-disabled APIC keeps LVTs masked. */
    wr(e->cpu[0], 0x320, 0x40, T0);
    assert_int_equal(rd(e->cpu[0], 0x320, T0), 0x10040);
}

/* ---- timer ---- */

static void test_timer_oneshot(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[0];

    enable(a);
    wr(a, 0x320, 0x40, T0); /* one-shot, vector 0x40 */
    wr(a, 0x3e0, 0x3, T0);  /* divide by 16: 16 ns a count */
    assert_int_equal(emu_lapic_timer_poll(a, T0), UINT64_MAX);
    wr(a, 0x380, 1000, T0);
    assert_int_equal(rd(a, 0x380, T0), 1000);
    assert_int_equal(rd(a, 0x390, T0), 1000);
    assert_int_equal(rd(a, 0x390, T0 + 8000), 500);
    assert_int_equal(rd(a, 0x390, T0 + 15999), 0);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 15999), T0 + 16000);
    assert_false(emu_lapic_pending(a));
    assert_int_equal(e->fake.wakes[0], 0);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 16000), UINT64_MAX);
    assert_int_equal(e->fake.wakes[0], 1);
    assert_true(emu_lapic_pending(a));
    assert_int_equal(emu_lapic_ack(a), 0x40);
    assert_int_equal(rd(a, 0x390, T0 + 17000), 0);
    /* Once only. */
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 100000), UINT64_MAX);
    assert_int_equal(e->fake.wakes[0], 1);

    /* Masked: the count runs and expires but nothing is raised. */
    wr(a, 0xb0, 0, T0);
    wr(a, 0x320, 0x10040, T0);
    wr(a, 0x380, 10, T0);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 160), UINT64_MAX);
    assert_int_equal(emu_lapic_ack(a), -1);
    /* Writing 0 stops it. */
    wr(a, 0x320, 0x40, T0);
    wr(a, 0x380, 10, T0);
    wr(a, 0x380, 0, T0 + 1);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 1000), UINT64_MAX);
    assert_int_equal(emu_lapic_ack(a), -1);
}

static void test_timer_periodic(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[1];
    const uint64_t p = 100000; /* 100 us: 100000 counts divided by 1 */
    uint64_t now, next;

    enable(a);
    wr(a, 0x3e0, 0xb, T0); /* divide by 1 */
    wr(a, 0x320, 0x20000 | 0x50, T0);
    wr(a, 0x380, (uint32_t)p, T0);
    assert_int_equal(rd(a, 0x390, T0 + 25000), 75000);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 1), T0 + p);
    /* Fires at its deadline, rescheduled from the deadline, not from the late poll. */
    assert_int_equal(emu_lapic_timer_poll(a, T0 + p + 700), T0 + 2 * p);
    assert_int_equal(e->fake.wakes[1], 1);
    assert_int_equal(emu_lapic_ack(a), 0x50);
    wr(a, 0xb0, 0, T0);
    assert_int_equal(rd(a, 0x390, T0 + p + 40000), 60000);
    /* Late poll: the count still reads as a wrapped periodic count. */
    assert_int_equal(rd(a, 0x390, T0 + 2 * p + 10000), 90000);
    /* A long gap (50 periods missed): one interrupt, then re-anchored at now. */
    now = T0 + 52 * p + 1234;
    next = emu_lapic_timer_poll(a, now);
    assert_int_equal(next, now + p);
    assert_int_equal(e->fake.wakes[1], 2);
    assert_int_equal(emu_lapic_ack(a), 0x50);
    assert_int_equal(emu_lapic_ack(a), -1);
    assert_int_equal(emu_lapic_timer_poll(a, now + 1), now + p);
    assert_int_equal(e->fake.wakes[1], 2);
    assert_int_equal(emu_lapic_timer_poll(a, now + p), now + 2 * p);
    assert_int_equal(e->fake.wakes[1], 3);
    /* A tiny period is clamped instead of storming. */
    wr(a, 0x380, 1, now);
    assert_true(emu_lapic_timer_poll(a, now) >= now + 50000);
}

static void test_timer_tsc_deadline(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[0];
    uint64_t v = 1;
    bool ok = false;

    enable(a);
    /* Outside TSC-deadline mode the MSR is inert. */
    assert_true(emu_lapic_wrmsr(a, 0x6e0, T0, &ok));
    assert_true(ok);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 1000000), UINT64_MAX);
    wr(a, 0x320, 0x40000 | 0x61, T0);
    /* TMICT is ignored in this mode. */
    wr(a, 0x380, 100, T0);
    assert_int_equal(rd(a, 0x380, T0), 0);
    assert_true(emu_lapic_wrmsr(a, 0x6e0, T0 + 5000 + e->fake.tsc_offset, &ok));
    assert_true(ok);
    assert_true(emu_lapic_rdmsr(a, 0x6e0, &v, &ok));
    assert_int_equal(v, T0 + 5000 + e->fake.tsc_offset);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 4999), T0 + 5000);
    assert_int_equal(emu_lapic_ack(a), -1);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 5000), UINT64_MAX);
    assert_int_equal(emu_lapic_ack(a), 0x61);
    assert_true(emu_lapic_rdmsr(a, 0x6e0, &v, &ok));
    assert_int_equal(v, 0);
    /* Writing 0 disarms. */
    assert_true(emu_lapic_wrmsr(a, 0x6e0, T0 + 9000, &ok));
    assert_true(emu_lapic_wrmsr(a, 0x6e0, 0, &ok));
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 100000), UINT64_MAX);
    /* Leaving the mode disarms too. */
    assert_true(emu_lapic_wrmsr(a, 0x6e0, T0 + 9000, &ok));
    wr(a, 0x320, 0x61, T0);
    assert_int_equal(emu_lapic_timer_poll(a, T0 + 100000), UINT64_MAX);
}

/* ---- priorities ---- */

static void test_priority_eoi_ack(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[0];

    enable(a);
    emu_lapic_raise(a, 0x31);
    emu_lapic_raise(a, 0x52);
    emu_lapic_raise(a, 0x45);
    assert_int_equal(e->fake.wakes[0], 3);
    assert_int_equal(rd(a, 0x200 + 0x10 * 2, T0), 1u << (0x52 & 31) | 1u << (0x45 & 31));
    assert_int_equal(emu_lapic_ack(a), 0x52);
    assert_int_equal(rd(a, 0xa0, T0), 0x50); /* PPR: the ISR class */
    assert_int_equal(rd(a, 0x100 + 0x10 * (0x52 >> 5), T0), 1u << (0x52 & 31));
    /* 0x45 is in a lower class than the one in service. */
    assert_false(emu_lapic_pending(a));
    assert_int_equal(emu_lapic_ack(a), -1);
    /* A higher class nests. */
    emu_lapic_raise(a, 0x60);
    assert_int_equal(emu_lapic_ack(a), 0x60);
    /* Same class as in service: waits. */
    emu_lapic_raise(a, 0x62);
    assert_int_equal(emu_lapic_ack(a), -1);
    wr(a, 0xb0, 0, T0); /* EOI 0x60 */
    assert_int_equal(emu_lapic_ack(a), 0x62);
    wr(a, 0xb0, 0, T0); /* EOI 0x62 */
    wr(a, 0xb0, 0, T0); /* EOI 0x52 */
    assert_int_equal(rd(a, 0xa0, T0), 0);
    assert_int_equal(emu_lapic_ack(a), 0x45);
    wr(a, 0xb0, 0, T0);
    assert_int_equal(emu_lapic_ack(a), 0x31);
    wr(a, 0xb0, 0, T0);
    assert_int_equal(emu_lapic_ack(a), -1);
    assert_int_equal(rd(a, 0x100 + 0x10, T0) | rd(a, 0x100 + 0x20, T0) | rd(a, 0x100 + 0x30, T0),
                     0);
}

static void test_tpr_masking(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[0];

    enable(a);
    wr(a, 0x80, 0x50, T0);
    assert_int_equal(rd(a, 0xa0, T0), 0x50);
    assert_int_equal(emu_lapic_get_cr8(a), 5);
    emu_lapic_raise(a, 0x55);
    assert_false(emu_lapic_pending(a));
    emu_lapic_raise(a, 0x61);
    assert_true(emu_lapic_pending(a));
    assert_int_equal(emu_lapic_ack(a), 0x61);
    wr(a, 0xb0, 0, T0);
    emu_lapic_set_tpr(a, 7);
    assert_int_equal(rd(a, 0x80, T0), 0x70);
    emu_lapic_raise(a, 0x7f);
    assert_int_equal(emu_lapic_ack(a), -1);
    emu_lapic_set_tpr(a, 0);
    assert_int_equal(emu_lapic_ack(a), 0x7f);
    wr(a, 0xb0, 0, T0);
    assert_int_equal(emu_lapic_ack(a), 0x55);
    /* Vectors 0-15 are illegal: dropped, ESR says so. */
    emu_lapic_raise(a, 0x05);
    assert_int_equal(emu_lapic_ack(a), -1);
    assert_int_equal(rd(a, 0x280, T0) & 0x40, 0x40);
}

/* Raises from other threads while the owner acks: nothing lost or torn. */
struct raiser {
    struct emu_lapic *apic;
    uint8_t vector;
    int *done;
};

static gpointer raiser_thread(gpointer opaque)
{
    struct raiser *r = opaque;

    for (int i = 0; i < 20000; i++)
        emu_lapic_raise(r->apic, r->vector);
    g_atomic_int_inc(r->done);
    return NULL;
}

static void test_raise_threads(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[0];
    int done = 0;
    struct raiser r[3];
    GThread *t[3];
    unsigned seen[3] = { 0 };

    enable(a);
    for (int i = 0; i < 3; i++) {
        r[i] = (struct raiser){ .apic = a, .vector = (uint8_t)(0x80 + 0x10 * i), .done = &done };
        t[i] = g_thread_new("raiser", raiser_thread, &r[i]);
    }
    /* Ack until the raisers are done and the last of their raises is taken. */
    for (;;) {
        bool finished = g_atomic_int_get(&done) == 3;
        int v = emu_lapic_ack(a);

        if (v < 0) {
            if (finished)
                break;
            continue;
        }
        assert_true(v == 0x80 || v == 0x90 || v == 0xa0);
        seen[(v - 0x80) >> 4]++;
        wr(a, 0xb0, 0, T0);
    }
    for (int i = 0; i < 3; i++) {
        g_thread_join(t[i]);
        assert_true(seen[i] >= 1);
    }
    assert_true(e->fake.wakes[0] >= 60000); /* one per raise, more for EOIs */
    assert_int_equal(rd(a, 0xa0, T0), 0);   /* nothing left in service */
    assert_false(emu_lapic_pending(a));
}

/* ---- IPIs ---- */

static void test_ipi(void **state)
{
    struct env *e = *state;

    for (unsigned i = 0; i < NCPU; i++)
        enable(e->cpu[i]);
    /* Self. */
    wr(e->cpu[1], 0x300, 0x40000 | 0x40, T0);
    assert_int_equal(emu_lapic_ack(e->cpu[1]), 0x40);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), -1);
    assert_int_equal(rd(e->cpu[1], 0x300, T0) & 0x1000, 0); /* delivery status idle */
    wr(e->cpu[1], 0xb0, 0, T0);
    /* All but self. */
    wr(e->cpu[0], 0x300, 0xc0000 | 0x41, T0);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_int_equal(emu_lapic_ack(e->cpu[1]), 0x41);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), 0x41);
    assert_int_equal(e->fake.wakes[0], 0);
    assert_int_equal(e->fake.wakes[2], 1);
    /* All including self. */
    wr(e->cpu[2], 0x300, 0x80000 | 0x71, T0);
    for (unsigned i = 0; i < NCPU; i++)
        assert_int_equal(emu_lapic_ack(e->cpu[i]), 0x71);
    for (unsigned i = 0; i < NCPU; i++)
        for (int n = 0; n < 3; n++)
            wr(e->cpu[i], 0xb0, 0, T0);
    /* Physical destination. */
    wr(e->cpu[0], 0x310, 2u << 24, T0);
    wr(e->cpu[0], 0x300, 0x42, T0);
    assert_int_equal(emu_lapic_ack(e->cpu[1]), -1);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), 0x42);
    assert_int_equal(rd(e->cpu[0], 0x310, T0), 2u << 24);
    /* Logical flat: LDR bits select. */
    wr(e->cpu[1], 0xd0, 0x02000000, T0);
    wr(e->cpu[2], 0xd0, 0x04000000, T0);
    wr(e->cpu[0], 0x310, 0x06u << 24, T0);
    wr(e->cpu[0], 0x300, 0x800 | 0x43, T0);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_int_equal(emu_lapic_ack(e->cpu[1]), 0x43);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), -1); /* 0x42 still in service */
    wr(e->cpu[2], 0xb0, 0, T0);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), 0x43);
}

static void test_init_sipi(void **state)
{
    struct env *e = *state;
    uint64_t base = 0;
    bool ok;

    for (unsigned i = 0; i < NCPU; i++)
        enable(e->cpu[i]);
    wr(e->cpu[1], 0x80, 0x30, T0);
    wr(e->cpu[0], 0x310, 0, T0);
    wr(e->cpu[0], 0x300, 0xc4500, T0); /* INIT assert, all but self */
    assert_int_equal(e->fake.inits[0], 0);
    assert_int_equal(e->fake.inits[1], 1);
    assert_int_equal(e->fake.inits[2], 1);
    /* INIT put the target LAPIC back to its power-on registers, but the ID and base stay. */
    assert_int_equal(rd(e->cpu[1], 0x80, T0), 0);
    assert_int_equal(rd(e->cpu[1], 0xf0, T0), 0xff);
    assert_int_equal(rd(e->cpu[1], 0x20, T0), 1u << 24);
    assert_true(emu_lapic_rdmsr(e->cpu[1], 0x1b, &base, &ok));
    assert_int_equal(base, 0xfee00800ull);
    wr(e->cpu[0], 0x300, 0xc8500, T0); /* INIT de-assert: ignored */
    assert_int_equal(e->fake.inits[1], 1);
    wr(e->cpu[0], 0x300, 0xc4608, T0); /* Startup, vector 8 */
    assert_int_equal(e->fake.sipis[0], 0);
    assert_int_equal(e->fake.sipis[1], 1);
    assert_int_equal(e->fake.sipis[2], 1);
    assert_int_equal(e->fake.sipi_vector[2], 8);
    /* INIT to one CPU by APIC ID. */
    wr(e->cpu[0], 0x310, 2u << 24, T0);
    wr(e->cpu[0], 0x300, 0x4500, T0);
    assert_int_equal(e->fake.inits[1], 1);
    assert_int_equal(e->fake.inits[2], 2);
}

/* ---- IOAPIC ---- */

static void test_ioapic(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a1 = e->cpu[1];

    for (unsigned i = 0; i < NCPU; i++)
        enable(e->cpu[i]);
    assert_int_equal(ioapic_rd(e->chips, 0x01), 0x00170011);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 7), 0x10000); /* masked at reset */
    /* Edge pin 5 -> CPU 1, physical. */
    redir(e->chips, 5, (1ull << 56) | 0x35);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 5 + 1), 1u << 24);
    emu_chips_set_irq(e->chips, 5, true);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_int_equal(emu_lapic_ack(a1), 0x35);
    emu_chips_set_irq(e->chips, 5, true); /* no new edge */
    emu_chips_set_irq(e->chips, 5, false);
    wr(a1, 0xb0, 0, T0);
    assert_int_equal(emu_lapic_ack(a1), -1);
    emu_chips_set_irq(e->chips, 5, true);
    emu_chips_set_irq(e->chips, 5, false);
    assert_int_equal(emu_lapic_ack(a1), 0x35);
    wr(a1, 0xb0, 0, T0);
    /* Masked: nothing. */
    redir(e->chips, 5, (1ull << 56) | 0x10000 | 0x35);
    emu_chips_set_irq(e->chips, 5, true);
    emu_chips_set_irq(e->chips, 5, false);
    assert_int_equal(emu_lapic_ack(a1), -1);

    /* Level pin 9 -> CPU 1: remote IRR until the EOI, then again while high. */
    redir(e->chips, 9, (1ull << 56) | 0x8000 | 0x39);
    emu_chips_set_irq(e->chips, 9, true);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 9) & 0x4000, 0x4000);
    emu_chips_set_irq(e->chips, 9, true);
    assert_int_equal(emu_lapic_ack(a1), 0x39);
    assert_int_equal(emu_lapic_ack(a1), -1);
    assert_int_equal(rd(a1, 0x180 + 0x10, T0) & (1u << (0x39 & 31)), 1u << (0x39 & 31));
    wr(a1, 0xb0, 0, T0); /* line still high: again */
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 9) & 0x4000, 0x4000);
    assert_int_equal(emu_lapic_ack(a1), 0x39);
    emu_chips_set_irq(e->chips, 9, false);
    wr(a1, 0xb0, 0, T0);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 9) & 0x4000, 0);
    assert_int_equal(emu_lapic_ack(a1), -1);
    /* Logical flat destination: CPU 2 answers to bit 3. */
    wr(e->cpu[2], 0xd0, 0x08000000, T0);
    redir(e->chips, 6, (0x08ull << 56) | 0x800 | 0x36);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 6), 0x836);
    emu_chips_set_irq(e->chips, 6, true);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_int_equal(emu_lapic_ack(a1), -1);
    assert_int_equal(emu_lapic_ack(e->cpu[2]), 0x36);
    /* A level pin unmasked while high delivers then. */
    redir(e->chips, 10, 0x10000 | 0x8000 | 0x3a);
    emu_chips_set_irq(e->chips, 10, true);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    redir(e->chips, 10, 0x8000 | 0x3a);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), 0x3a);
}

/* Lowest-priority delivery skips a hardware-disabled LAPIC: a level pin goes
 * to one that can take (and EOI) it, instead of waiting forever. */
static void test_ioapic_lowest_skips_disabled(void **state)
{
    struct env *e = *state;
    uint64_t base;
    bool ok;

    for (unsigned i = 0; i < NCPU; i++)
        enable(e->cpu[i]);
    assert_true(emu_lapic_rdmsr(e->cpu[0], 0x1b, &base, &ok) && ok);
    assert_true(emu_lapic_wrmsr(e->cpu[0], 0x1b, base & ~(1ull << 11), &ok) && ok);
    /* Physical broadcast, lowest priority, level: every LAPIC matches, CPU 0 first. */
    redir(e->chips, 11, (0xffull << 56) | 0x8000 | 0x100 | 0x3b);
    emu_chips_set_irq(e->chips, 11, true);
    assert_int_equal(emu_lapic_ack(e->cpu[1]), 0x3b);
    emu_chips_set_irq(e->chips, 11, false);
    wr(e->cpu[1], 0xb0, 0, T0);
    assert_int_equal(ioapic_rd(e->chips, 0x10 + 2 * 11) & 0x4000, 0); /* remote IRR clear */
}

/* PIT channel 0 (mode 2) pulses ISA IRQ 0, which is IOAPIC pin 2. */
static void test_pit_irq0(void **state)
{
    struct env *e = *state;
    const uint64_t t = T0 + 5000000;
    uint64_t next;

    enable(e->cpu[0]);
    redir(e->chips, 2, 0x20);
    outb(e->chips, 0x43, 0x34, t); /* ch0, lo/hi, mode 2 */
    outb(e->chips, 0x40, 1193 & 0xff, t);
    outb(e->chips, 0x40, 1193 >> 8, t);
    next = emu_chips_timer_poll(e->chips, t);
    assert_true(next > t + 999000 && next < t + 1001000);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    next = emu_chips_timer_poll(e->chips, next);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), 0x20);
    assert_true(next > t + 1999000 && next < t + 2001000);
    wr(e->cpu[0], 0xb0, 0, T0);
    /* A long gap: one interrupt, and the next is less than a period away. */
    next = emu_chips_timer_poll(e->chips, t + 50500000);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), 0x20);
    assert_int_equal(emu_lapic_ack(e->cpu[0]), -1);
    assert_true(next > t + 50500000 && next <= t + 51500000);
}

/* The guest's TSC calibration: channel 2, mode 0, 20 ms, OUT polled on port 0x61. */
static void test_pit_ch2_mode0(void **state)
{
    struct env *e = *state;
    const uint64_t t = T0 + 777;
    const uint32_t count = 1193182 / 1000 * 20;
    uint8_t lo, hi;

    outb(e->chips, 0x61, (inb(e->chips, 0x61, t) & ~0x02) | 0x01, t);
    outb(e->chips, 0x43, 0xb0, t);
    assert_int_equal(inb(e->chips, 0x61, t) & 0x21, 0x01);
    outb(e->chips, 0x42, (uint8_t)count, t);
    outb(e->chips, 0x42, (uint8_t)(count >> 8), t);
    assert_int_equal(inb(e->chips, 0x61, t + 1000) & 0x20, 0);
    /* 23860 ticks of 1193182 Hz end 19996.96 us after the count was written. */
    assert_int_equal(inb(e->chips, 0x61, t + 19996000) & 0x20, 0);
    assert_int_equal(inb(e->chips, 0x61, t + 19997000) & 0x20, 0x20);
    /* Halfway: the counter, latched, reads half the count. */
    outb(e->chips, 0x43, 0x80, t + 10000000);
    lo = inb(e->chips, 0x42, t + 15000000);
    hi = inb(e->chips, 0x42, t + 15000000);
    assert_true(abs((int)(lo | hi << 8) - (int)count / 2) <= 2);
    assert_int_equal(inb(e->chips, 0x61, t + 20000000) & 0x20, 0x20);
    assert_int_equal(inb(e->chips, 0x61, t + 900000000) & 0x20, 0x20);
    /* Gate off before the count ends: it pauses. */
    outb(e->chips, 0x43, 0xb0, t);
    outb(e->chips, 0x42, 100, t);
    outb(e->chips, 0x42, 0, t);
    outb(e->chips, 0x61, 0x00, t + 50000); /* ~59 ticks counted */
    assert_int_equal(inb(e->chips, 0x61, t + 5000000) & 0x20, 0);
    outb(e->chips, 0x61, 0x01, t + 5000000);
    assert_int_equal(inb(e->chips, 0x61, t + 5000000 + 30000) & 0x20, 0);
    assert_int_equal(inb(e->chips, 0x61, t + 5000000 + 40000) & 0x20, 0x20);
    /* Read-back of the status: OUT high, lo/hi, mode 0. */
    outb(e->chips, 0x43, 0xe8, t + 6000000);
    assert_int_equal(inb(e->chips, 0x42, t + 6000000), 0x80 | 0x30);
}

static void test_pic(void **state)
{
    struct env *e = *state;
    static const uint8_t seq[][2] = {
        { 0x20, 0x11 }, { 0xa0, 0x11 }, { 0x21, 0x30 }, { 0xa1, 0x38 },
        { 0x21, 0x04 }, { 0xa1, 0x02 }, { 0x21, 0x01 }, { 0xa1, 0x01 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(seq); i++)
        outb(e->chips, seq[i][0], seq[i][1], T0);
    assert_int_equal(inb(e->chips, 0x21, T0), 0);
    /* IRQ 1 and IRQ 12 (slave line 4, through master line 2). */
    emu_chips_set_irq(e->chips, 12, true);
    emu_chips_set_irq(e->chips, 1, true);
    assert_true(emu_chips_pic_pending(e->chips));
    assert_int_equal(inb(e->chips, 0x20, T0), 0x06); /* IRR: 1 and 2 */
    assert_int_equal(emu_chips_pic_intack(e->chips), 0x31);
    outb(e->chips, 0x20, 0x0b, T0); /* OCW3: read ISR */
    assert_int_equal(inb(e->chips, 0x20, T0), 0x02);
    /* Line 1 is in service: line 2 has lower priority and waits. */
    assert_false(emu_chips_pic_pending(e->chips));
    outb(e->chips, 0x20, 0x20, T0); /* EOI */
    assert_int_equal(emu_chips_pic_intack(e->chips), 0x3c);
    outb(e->chips, 0xa0, 0x20, T0);
    outb(e->chips, 0x20, 0x20, T0);
    assert_false(emu_chips_pic_pending(e->chips));
    /* Masked lines stay in IRR only. */
    outb(e->chips, 0x21, 0xff, T0);
    emu_chips_set_irq(e->chips, 3, true);
    assert_false(emu_chips_pic_pending(e->chips));
    outb(e->chips, 0x20, 0x0a, T0); /* OCW3: read IRR */
    assert_int_equal(inb(e->chips, 0x20, T0) & 0x08, 0x08);
    /* Virtual wire: the BSP's LINT0 as ExtINT takes the PIC's vector, past the TPR. */
    enable(e->cpu[0]);
    assert_false(emu_lapic_pending(e->cpu[0]));
    wr(e->cpu[0], 0x350, 0x700, T0);
    wr(e->cpu[0], 0x80, 0xf0, T0);
    assert_int_equal(e->fake.wakes[0], 0);
    outb(e->chips, 0x21, 0xef, T0); /* unmask IRQ 4 */
    emu_chips_set_irq(e->chips, 4, true);
    assert_true(e->fake.wakes[0] >= 1);
    assert_int_equal(e->fake.wakes[1], 0);
    assert_true(emu_lapic_pending(e->cpu[0]));
    assert_false(emu_lapic_pending(e->cpu[1]));
    assert_int_equal(emu_lapic_ack(e->cpu[0]), 0x34);
    assert_false(emu_lapic_pending(e->cpu[0]));
    outb(e->chips, 0x20, 0x20, T0);
    outb(e->chips, 0x21, 0xff, T0);
    /* ELCR. */
    outb(e->chips, 0x4d1, 0xff, T0);
    assert_int_equal(inb(e->chips, 0x4d1, T0), 0xde);
    assert_false(emu_chips_pio_at(e->chips, 0x60, &(uint8_t){ 0 }, 1, false, T0));
}

/* ---- state ---- */

static void lapic_roundtrip(const struct emu_lapic_state *in, struct emu_lapic_state *out)
{
    void *fdt = vmstate_fdt_new(8192);
    GError *err = NULL;
    int node;

    assert_non_null(fdt);
    assert_true(vmstate_desc_check(&emu_lapic_vmstate, NULL));
    assert_true(vmstate_save(&emu_lapic_vmstate, in, fdt, 0, "lapic", &err));
    assert_null(err);
    node = fdt_subnode_offset(fdt, 0, "lapic");
    assert_true(node >= 0);
    assert_non_null(fdt_getprop(fdt, node, "timer_remaining_ns", NULL));
    memset(out, 0, sizeof(*out));
    assert_true(vmstate_load(&emu_lapic_vmstate, out, fdt, node, &err));
    assert_null(err);
    g_free(fdt);
}

static void test_lapic_save_load(void **state)
{
    struct env *e = *state;
    struct emu_lapic *a = e->cpu[1], *b;
    struct emu_lapic_state st, st2;
    const uint64_t t1 = 7 * T0;

    enable(a);
    wr(a, 0x80, 0x20, T0);
    wr(a, 0x3e0, 0x3, T0);
    wr(a, 0x320, 0x40, T0);
    wr(a, 0x380, 1000, T0); /* 16 us one-shot */
    emu_lapic_raise(a, 0x66);
    emu_lapic_save(a, &st, T0 + 4000);
    assert_int_equal(st.timer_remaining_ns, 12000);
    assert_int_equal(st.apic_base, 0xfee00800ull);
    lapic_roundtrip(&st, &st2);
    assert_memory_equal(&st, &st2, sizeof(st));

    /* Into another LAPIC, much later: the remaining 12 us carry over. */
    emu_lapic_destroy(e->cpu[1]);
    b = e->cpu[1] = emu_lapic_create(e->bus, 1);
    emu_lapic_load(b, &st2, t1);
    assert_int_equal(rd(b, 0x80, t1), 0x20);
    assert_int_equal(rd(b, 0x390, t1), 750);
    assert_int_equal(emu_lapic_timer_poll(b, t1 + 11999), t1 + 12000);
    assert_int_equal(emu_lapic_ack(b), 0x66);
    wr(b, 0xb0, 0, t1);
    assert_int_equal(emu_lapic_timer_poll(b, t1 + 12000), UINT64_MAX);
    assert_int_equal(emu_lapic_ack(b), 0x40);
    wr(b, 0xb0, 0, t1);

    /* A running periodic timer keeps running after load. */
    wr(b, 0x3e0, 0xb, t1);
    wr(b, 0x320, 0x20041, t1);
    wr(b, 0x380, 200000, t1);
    emu_lapic_save(b, &st, t1 + 150000);
    assert_int_equal(st.timer_remaining_ns, 50000);
    lapic_roundtrip(&st, &st2);
    emu_lapic_load(b, &st2, 9 * T0);
    assert_int_equal(emu_lapic_timer_poll(b, 9 * T0 + 50000), 9 * T0 + 250000);

    /* Saved with an expiry due but not yet polled: it fires right after load. */
    emu_lapic_save(b, &st, 9 * T0 + 300000);
    assert_int_equal(st.timer_remaining_ns, 1);
    emu_lapic_load(b, &st, 9 * T0 + 400000);
    assert_int_equal(emu_lapic_timer_poll(b, 9 * T0 + 400001), 9 * T0 + 600001);
    assert_int_equal(emu_lapic_ack(b), 0x41);
    wr(b, 0xb0, 0, t1);

    /* A KVM-sourced page (no timer_remaining_ns): TMCCT says what is left. */
    memset(&st2.timer_remaining_ns, 0, sizeof(st2.timer_remaining_ns));
    {
        uint32_t cur = 30000;

        memcpy(&st2.regs[0x390], &cur, 4);
    }
    emu_lapic_load(b, &st2, 10 * T0);
    assert_int_equal(emu_lapic_timer_poll(b, 10 * T0), 10 * T0 + 30000);

    /* TSC-deadline: the deadline is re-derived from the TSC. */
    wr(b, 0x320, 0x40042, t1);
    {
        bool ok;

        assert_true(emu_lapic_wrmsr(b, 0x6e0, 123456789, &ok));
    }
    emu_lapic_save(b, &st, t1);
    lapic_roundtrip(&st, &st2);
    assert_int_equal(st2.tsc_deadline, 123456789);
    e->fake.tsc_offset = 1000;
    emu_lapic_load(b, &st2, t1);
    assert_int_equal(emu_lapic_timer_poll(b, 0), 123456789 - 1000);
}

static uint16_t pit_read_ch0(struct emu_chips *c, uint64_t now)
{
    uint8_t lo, hi;

    outb(c, 0x43, 0x00, now);
    lo = inb(c, 0x40, now);
    hi = inb(c, 0x40, now);
    return (uint16_t)(lo | hi << 8);
}

static void test_chips_save_load(void **state)
{
    struct env *e = *state;
    const uint64_t s = T0 + 3000000, l = 40 * T0;
    struct emu_chips *c2;
    void *fdt = vmstate_fdt_new(16384);
    GError *err = NULL;
    uint64_t next_src, next_dst;
    int node;

    /* PICs as the guest leaves them, an IOAPIC route, PIT channel 0 periodic. */
    outb(e->chips, 0x20, 0x11, T0);
    outb(e->chips, 0x21, 0x30, T0);
    outb(e->chips, 0x21, 0x04, T0);
    outb(e->chips, 0x21, 0x01, T0);
    outb(e->chips, 0x21, 0xfb, T0);
    outb(e->chips, 0x4d0, 0x20, T0);
    redir(e->chips, 2, (1ull << 56) | 0x8000 | 0x10000 | 0x22);
    emu_chips_set_irq(e->chips, 11, true);
    outb(e->chips, 0x43, 0x34, T0);
    outb(e->chips, 0x40, 0x00, T0);
    outb(e->chips, 0x40, 0x80, T0); /* 32768 ticks: ~27.5 ms */
    outb(e->chips, 0x61, 0x03, T0);
    next_src = emu_chips_timer_poll(e->chips, s);

    assert_non_null(fdt);
    assert_true(vmstate_desc_check(&emu_ioapic_vmstate, NULL));
    assert_true(vmstate_desc_check(&emu_pic_vmstate, NULL));
    assert_true(vmstate_desc_check(&emu_pit_vmstate, NULL));
    assert_true(emu_chips_save(e->chips, fdt, 0, s, &err));
    assert_null(err);
    node = fdt_subnode_offset(fdt, 0, "chips");
    assert_true(node >= 0);
    assert_true(fdt_subnode_offset(fdt, node, "pic@1") >= 0);
    assert_true(fdt_subnode_offset(fdt, node, "ioapic") >= 0);
    assert_true(fdt_path_offset(fdt, "/chips/pit/ch@2") >= 0);
    assert_true(vmstate_fdt_check(fdt, fdt_totalsize(fdt), NULL));

    c2 = emu_chips_create(e->bus); /* takes over the EOI listener */
    assert_true(emu_chips_load(c2, fdt, node, l, &err));
    assert_null(err);
    assert_int_equal(inb(c2, 0x21, l), 0xfb);
    assert_int_equal(inb(c2, 0x4d0, l), 0x20);
    assert_int_equal(ioapic_rd(c2, 0x10 + 2 * 2), 0x18022);
    assert_int_equal(ioapic_rd(c2, 0x10 + 2 * 2 + 1), 1u << 24);
    assert_int_equal(inb(c2, 0x61, l) & 0x0f, 0x03);
    /* The running count continues where it was. */
    assert_int_equal(pit_read_ch0(c2, l + 1000), pit_read_ch0(e->chips, s + 1000));
    next_dst = emu_chips_timer_poll(c2, l);
    assert_int_equal(next_dst - l, next_src - s);

    /* A hostile count is refused and leaves the chips as they were. */
    {
        int pit = fdt_path_offset(fdt, "/chips/pit/ch@0");
        fdt32_t bad = cpu_to_fdt32(0x20000);

        assert_true(pit >= 0);
        assert_int_equal(fdt_setprop_inplace(fdt, pit, "count", &bad, 4), 0);
        assert_false(emu_chips_load(c2, fdt, node, l, &err));
        assert_non_null(err);
        g_clear_error(&err);
        assert_int_equal(inb(c2, 0x21, l), 0xfb);
    }
    emu_chips_destroy(c2);
    g_free(fdt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, env_setup, env_teardown)
        T(test_lapic_reset_values),
        T(test_timer_oneshot),
        T(test_timer_periodic),
        T(test_timer_tsc_deadline),
        T(test_priority_eoi_ack),
        T(test_tpr_masking),
        T(test_raise_threads),
        T(test_ipi),
        T(test_init_sipi),
        T(test_ioapic),
        T(test_ioapic_lowest_skips_disabled),
        T(test_pit_irq0),
        T(test_pit_ch2_mode0),
        T(test_pic),
        T(test_lapic_save_load),
        T(test_chips_save_load),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
