/* test-ioport.c: unit tests of the I/O bus: registration rules, dispatch, unclaimed accesses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "tern/ioport.h"
#include "tern/util.h"

struct dev {
    uint8_t regs[16];
    unsigned reads, writes;
    uint64_t last_offset;
    unsigned last_size;
};

static void dev_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool is_write)
{
    struct dev *d = opaque;

    d->last_offset = offset;
    d->last_size = size;
    if (is_write) {
        d->writes++;
        for (unsigned i = 0; i < size && offset + i < sizeof(d->regs); i++)
            d->regs[offset + i] = data[i];
    } else {
        d->reads++;
        for (unsigned i = 0; i < size; i++)
            data[i] = offset + i < sizeof(d->regs) ? d->regs[offset + i] : 0;
    }
}

static void test_register_rules(void **state)
{
    (void)state;
    struct io_bus bus;
    struct dev d = { 0 };
    GError *err = NULL;

    io_bus_init(&bus);
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0x3f8, 8, dev_io, &d, &err));
    assert_null(err);
    /* The same addresses in the other space do not conflict. */
    assert_true(io_bus_register(&bus, IO_SPACE_MMIO, 0x3f8, 8, dev_io, &d, NULL));
    /* Overlaps: inside, across each end, enclosing. */
    static const uint64_t bases[] = { 0x3f8, 0x3fc, 0x3f0, 0x3ff, 0x300 };
    static const uint64_t lens[] = { 8, 1, 9, 1, 0x200 };
    for (size_t i = 0; i < G_N_ELEMENTS(bases); i++) {
        assert_false(io_bus_register(&bus, IO_SPACE_PIO, bases[i], lens[i], dev_io, &d, &err));
        assert_non_null(strstr(err->message, "overlaps [0x3f8-0x400)"));
        g_clear_error(&err);
    }
    /* Adjacent is fine. */
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0x3f0, 8, dev_io, &d, NULL));
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0x400, 1, dev_io, &d, NULL));
    /* Zero length, no handler, wrap-around, beyond the 64 KiB port space. */
    assert_false(io_bus_register(&bus, IO_SPACE_PIO, 0x80, 0, dev_io, &d, &err));
    assert_non_null(strstr(err->message, "zero length"));
    g_clear_error(&err);
    assert_false(io_bus_register(&bus, IO_SPACE_PIO, 0x80, 1, NULL, &d, &err));
    g_clear_error(&err);
    assert_false(io_bus_register(&bus, IO_SPACE_MMIO, UINT64_MAX - 1, 4, dev_io, &d, &err));
    assert_non_null(strstr(err->message, "beyond"));
    g_clear_error(&err);
    assert_false(io_bus_register(&bus, IO_SPACE_PIO, 0xfffe, 4, dev_io, &d, &err));
    g_clear_error(&err);
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0xfffc, 4, dev_io, &d, NULL));
    assert_true(io_bus_register(&bus, IO_SPACE_MMIO, UINT64_MAX - 7, 4, dev_io, &d, NULL));
    /* Too many. */
    while (bus.nr_ranges < IO_BUS_MAX_RANGES)
        assert_true(io_bus_register(&bus, IO_SPACE_MMIO, 0x10000000 + bus.nr_ranges * 0x1000,
                                    0x1000, dev_io, &d, NULL));
    assert_false(io_bus_register(&bus, IO_SPACE_MMIO, 0x20000000, 1, dev_io, &d, &err));
    assert_non_null(strstr(err->message, "too many"));
    g_clear_error(&err);
    io_bus_destroy(&bus);
}

static void test_dispatch(void **state)
{
    (void)state;
    struct io_bus bus;
    struct dev uart = { 0 }, mmio = { 0 };
    uint8_t data[8];

    io_bus_init(&bus);
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0x3f8, 8, dev_io, &uart, NULL));
    assert_true(io_bus_register(&bus, IO_SPACE_MMIO, 0xfee00000, 0x1000, dev_io, &mmio, NULL));

    data[0] = 'A';
    io_bus_dispatch(&bus, IO_SPACE_PIO, 0x3f8, data, 1, true);
    assert_int_equal(uart.writes, 1);
    assert_int_equal(uart.regs[0], 'A');
    assert_int_equal(uart.last_offset, 0);
    data[0] = 0x55;
    io_bus_dispatch(&bus, IO_SPACE_PIO, 0x3fd, data, 1, true);
    assert_int_equal(uart.last_offset, 5);
    memset(data, 0, sizeof(data));
    io_bus_dispatch(&bus, IO_SPACE_PIO, 0x3fd, data, 1, false);
    assert_int_equal(data[0], 0x55);
    assert_int_equal(uart.reads, 1);
    /* The same address as MMIO is not the UART. */
    io_bus_dispatch(&bus, IO_SPACE_MMIO, 0x3f8, data, 1, true);
    assert_int_equal(uart.writes, 2);
    assert_int_equal(bus.unhandled, 1);
    io_bus_dispatch(&bus, IO_SPACE_MMIO, 0xfee00ff0, data, 4, false);
    assert_int_equal(mmio.reads, 1);
    assert_int_equal(mmio.last_offset, 0xff0);
    assert_int_equal(mmio.last_size, 4);
    assert_int_equal(bus.unhandled, 1);
    io_bus_destroy(&bus);
}

static void test_unclaimed(void **state)
{
    (void)state;
    struct io_bus bus;
    uint8_t data[8];

    io_bus_init(&bus);
    memset(data, 0, sizeof(data));
    io_bus_dispatch(&bus, IO_SPACE_PIO, 0x80, data, 4, false);
    assert_memory_equal(data, "\xff\xff\xff\xff\x00\x00\x00\x00", 8);
    io_bus_dispatch(&bus, IO_SPACE_MMIO, 0xd0000000, data, 8, false);
    assert_memory_equal(data, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    memset(data, 0x12, sizeof(data));
    io_bus_dispatch(&bus, IO_SPACE_PIO, 0x80, data, 1, true);
    assert_int_equal(data[0], 0x12); /* writes leave the buffer alone */
    assert_int_equal(bus.unhandled, 3);
    io_bus_destroy(&bus);
}

/* Many threads dispatching: handlers run one at a time (the device lock). */
struct counter {
    unsigned long value;
    int inside;
    bool overlap;
};

static void count_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool is_write)
{
    struct counter *c = opaque;

    (void)offset, (void)data, (void)size, (void)is_write;
    if (__atomic_add_fetch(&c->inside, 1, __ATOMIC_SEQ_CST) != 1)
        c->overlap = true;
    c->value++; /* not atomic: the lock protects it */
    __atomic_sub_fetch(&c->inside, 1, __ATOMIC_SEQ_CST);
}

struct worker {
    struct io_bus *bus;
};

static void *worker_run(void *opaque)
{
    struct worker *w = opaque;
    uint8_t data[4] = { 0 };

    for (int i = 0; i < 20000; i++)
        io_bus_dispatch(w->bus, IO_SPACE_PIO, 0x510 + (i & 1), data, 1, i & 2);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    struct io_bus bus;
    struct counter c = { 0 };
    struct worker w = { &bus };
    pthread_t t[4];

    io_bus_init(&bus);
    assert_true(io_bus_register(&bus, IO_SPACE_PIO, 0x510, 2, count_io, &c, NULL));
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(c.value, 4 * 20000);
    assert_false(c.overlap);
    assert_int_equal(bus.unhandled, 0);
    io_bus_destroy(&bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_rules),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_unclaimed),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
