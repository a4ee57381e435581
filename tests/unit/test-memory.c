/* test-memory.c: unit tests of guest RAM (layout, checked access, dirty marking, digests) and parse_size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <zlib.h>

#include "tern/bitmap.h"
#include "tern/memory.h"
#include "tern/util.h"

/* The host can back (size) (physical RAM + swap)? Otherwise the test is skipped. */
static bool host_can_back(uint64_t size)
{
    struct sysinfo si;

    if (sysinfo(&si) < 0)
        return true;
    return size <= ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
}

static void check_layout(uint64_t size)
{
    g_autoptr(GError) err = NULL;
    struct guest_ram *ram;
    struct e820_range e820[4];
    unsigned n;

    if (!host_can_back(size)) {
        print_message("host too small for %" PRIu64 " bytes: layout check skipped\n", size);
        return;
    }
    ram = guest_ram_create(size, &err);
    assert_non_null(ram);
    assert_null(err);
    assert_int_equal(ram->size, size);
    n = guest_ram_e820(ram, e820, 4);
    if (size <= GUEST_LOW_RAM_END) {
        assert_int_equal(ram->nr_regions, 1);
        assert_int_equal(ram->regions[0].gpa, 0);
        assert_int_equal(ram->regions[0].size, size);
        assert_int_equal(ram->nr_gfns, size / GUEST_PAGE_SIZE);
        assert_int_equal(n, 1);
    } else {
        assert_int_equal(ram->nr_regions, 2);
        assert_int_equal(ram->regions[0].gpa, 0);
        assert_int_equal(ram->regions[0].size, GUEST_LOW_RAM_END);
        assert_int_equal(ram->regions[1].gpa, GUEST_HIGH_RAM_BASE);
        assert_int_equal(ram->regions[1].size, size - GUEST_LOW_RAM_END);
        /* The hole counts in the frame numbers. */
        assert_int_equal(ram->nr_gfns, (size + GiB) / GUEST_PAGE_SIZE);
        assert_int_equal(n, 2);
        assert_int_equal(e820[1].addr, GUEST_HIGH_RAM_BASE);
        assert_int_equal(e820[1].size, size - GUEST_LOW_RAM_END);
        assert_int_equal(e820[1].type, E820_RAM);
    }
    assert_int_equal(e820[0].addr, 0);
    assert_int_equal(e820[0].size, MIN(size, GUEST_LOW_RAM_END));
    assert_int_equal(e820[0].type, E820_RAM);
    /* Room for only one entry. */
    assert_int_equal(guest_ram_e820(ram, e820, 1), 1);
    for (unsigned i = 0; i < ram->nr_regions; i++)
        assert_true(ram->regions[i].memfd >= 0);
    /* Nothing touched yet: no host memory used, digest of all zeros. */
    assert_int_equal(guest_ram_populated_bytes(ram), 0);
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 0);
    guest_ram_destroy(ram);
}

static void test_layout(void **state)
{
    (void)state;
    check_layout(16 * MiB);
    check_layout(512 * MiB);
    check_layout(1 * GiB);
    check_layout(3 * GiB);
    check_layout(4 * GiB);
    check_layout(6 * GiB);
}

static void test_bad_sizes(void **state)
{
    (void)state;
    GError *err = NULL;

    assert_null(guest_ram_create(8 * MiB, &err));
    assert_non_null(err);
    assert_non_null(strstr(err->message, "minimum"));
    g_clear_error(&err);

    assert_null(guest_ram_create(64 * MiB + 100, &err));
    assert_non_null(strstr(err->message, "page size"));
    g_clear_error(&err);

    /* 64 TiB: more than any test host has; the message names both numbers. */
    assert_null(guest_ram_create(64ULL << 40, &err));
    assert_non_null(err);
    print_message("64T: %s\n", err->message);
    assert_non_null(strstr(err->message, "physical RAM"));
    assert_non_null(strstr(err->message, "swap"));
    g_clear_error(&err);

    assert_null(guest_ram_create(UINT64_MAX & ~(GUEST_PAGE_SIZE - 1), &err));
    assert_non_null(err);
    g_clear_error(&err);
}

static void test_ptr_bounds(void **state)
{
    (void)state;
    struct guest_ram *ram;
    uint64_t size = 4 * GiB; /* 3 GiB low, 1 GiB high */

    if (!host_can_back(size))
        skip();
    ram = guest_ram_create(size, NULL);
    assert_non_null(ram);
    assert_ptr_equal(guest_ram_ptr(ram, 0, 1), ram->regions[0].hva);
    assert_ptr_equal(guest_ram_ptr(ram, 0, GUEST_LOW_RAM_END), ram->regions[0].hva);
    assert_non_null(guest_ram_ptr(ram, GUEST_LOW_RAM_END - 1, 1));
    assert_null(guest_ram_ptr(ram, GUEST_LOW_RAM_END - 1, 2));   /* into the hole */
    assert_null(guest_ram_ptr(ram, GUEST_LOW_RAM_END, 1));       /* the hole */
    assert_null(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE - 1, 2)); /* hole to high RAM */
    assert_null(guest_ram_ptr(ram, 0, size));                    /* spans the hole */
    assert_ptr_equal(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE, 8), ram->regions[1].hva);
    assert_non_null(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE + GiB - 8, 8));
    assert_null(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE + GiB - 8, 9));
    assert_null(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE + GiB, 1));
    /* Overflow: gpa + len wraps around. */
    assert_null(guest_ram_ptr(ram, 0x1000, UINT64_MAX));
    assert_null(guest_ram_ptr(ram, UINT64_MAX, 2));
    assert_null(guest_ram_ptr(ram, GUEST_HIGH_RAM_BASE + 16, UINT64_MAX - 8));
    assert_null(guest_ram_region_of(ram, GUEST_LOW_RAM_END + 4096));
    assert_ptr_equal(guest_ram_region_of(ram, 5), &ram->regions[0]);
    assert_ptr_equal(guest_ram_region_of(ram, GUEST_HIGH_RAM_BASE + 5), &ram->regions[1]);
    guest_ram_destroy(ram);
}

static void test_write_read_dirty(void **state)
{
    (void)state;
    GError *err = NULL;
    struct guest_ram *ram = guest_ram_create(64 * MiB, NULL);
    uint8_t buf[3 * 4096], back[sizeof(buf)];

    assert_non_null(ram);
    memset(buf, 0xa5, sizeof(buf));
    /* 3 pages of data starting mid-page touch 4 frames: 0x10..0x13. */
    assert_true(guest_ram_write(ram, 0x10800, buf, sizeof(buf), &err));
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 4);
    for (uint64_t gfn = 0x10; gfn <= 0x13; gfn++)
        assert_true(bitmap_test(ram->vmm_dirty, gfn));
    assert_true(guest_ram_read(ram, 0x10800, back, sizeof(back), &err));
    assert_memory_equal(buf, back, sizeof(buf));
    /* A read marks nothing; a zero-length write is a no-op. */
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 4);
    assert_true(guest_ram_write(ram, 0, buf, 0, &err));
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 4);

    /* Out of range: refused, nothing marked. */
    assert_false(guest_ram_write(ram, 64 * MiB - 4, buf, 8, &err));
    assert_non_null(err);
    assert_non_null(strstr(err->message, "not inside"));
    g_clear_error(&err);
    assert_false(guest_ram_write(ram, UINT64_MAX - 2, buf, 8, &err));
    assert_non_null(strstr(err->message, "wraps"));
    g_clear_error(&err);
    assert_false(guest_ram_read(ram, 64 * MiB, back, 1, &err));
    g_clear_error(&err);
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 4);
    guest_ram_destroy(ram);
}

static void test_dirty_high(void **state)
{
    (void)state;
    struct guest_ram *ram;
    uint8_t b = 1;

    if (!host_can_back(4 * GiB))
        skip();
    ram = guest_ram_create(4 * GiB, NULL);
    assert_non_null(ram);
    assert_true(guest_ram_write(ram, GUEST_HIGH_RAM_BASE + GiB - 1, &b, 1, NULL));
    assert_true(bitmap_test(ram->vmm_dirty, ram->nr_gfns - 1));
    assert_int_equal(bitmap_count(ram->vmm_dirty, ram->nr_gfns), 1);
    guest_ram_destroy(ram);
}

/* Plain CRC-32 over every byte of RAM in gpa order. Through the mapping this
 * faults in (allocates) every hole; through pread() holes read as zeros
 * without being allocated, which keeps big sizes cheap. */
static uint32_t plain_crc(struct guest_ram *ram, bool via_mapping)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    uint8_t *buf = g_malloc(MiB);

    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];

        if (via_mapping) {
            crc = crc32_z(crc, r->hva, r->size);
            continue;
        }
        for (uint64_t off = 0; off < r->size; off += MiB) {
            ssize_t n = pread(r->memfd, buf, MiB, (off_t)off);

            assert_int_equal(n, MiB);
            crc = crc32_z(crc, buf, MiB);
        }
    }
    g_free(buf);
    return (uint32_t)crc;
}

/* The CRC-32 of (size) zero bytes ((size) a multiple of 1 MiB), without
 * allocating them. */
static uint32_t zeros_crc(uint64_t size)
{
    uint8_t *zeros = g_malloc0(MiB);
    uLong mib = crc32_z(crc32(0L, Z_NULL, 0), zeros, MiB);
    uLong crc = crc32(0L, Z_NULL, 0);

    for (uint64_t off = 0; off < size; off += MiB)
        crc = crc32_combine64(crc, mib, MiB);
    g_free(zeros);
    return (uint32_t)crc;
}

static void check_crc(uint64_t size)
{
    struct guest_ram *ram;
    uint32_t fast, slow;
    uint8_t pattern[5000];
    uint64_t gpa, s, e, populated;

    if (!host_can_back(size))
        return;
    ram = guest_ram_create(size, NULL);
    assert_non_null(ram);

    /* All holes: the digest of size zero bytes, with nothing populated. */
    fast = guest_ram_crc32(ram);
    assert_int_equal(fast, zeros_crc(size));
    assert_int_equal(guest_ram_populated_bytes(ram), 0);
    assert_false(guest_ram_next_data(ram, 0, &s, &e));

    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 7 + 3);
    /* Data at the start, mid-page, at a region end, and after the hole. */
    assert_true(guest_ram_write(ram, 0, pattern, 100, NULL));
    assert_true(guest_ram_write(ram, 5 * MiB + 123, pattern, sizeof(pattern), NULL));
    gpa = ram->regions[0].size - 10;
    assert_true(guest_ram_write(ram, gpa, pattern, 10, NULL));
    if (ram->nr_regions > 1)
        assert_true(guest_ram_write(ram, GUEST_HIGH_RAM_BASE + 3 * MiB, pattern, 4096, NULL));
    /* A page of explicit zeros is data, not a hole: the digest must not care. */
    memset(ram->regions[0].hva + 9 * MiB, 0, 4096);

    populated = guest_ram_populated_bytes(ram);
    print_message("populated: %" PRIu64 " bytes\n", populated);
    assert_true(populated >= 5 * GUEST_PAGE_SIZE);
    /* Only what was touched (2 MiB pages where shmem uses huge pages). */
    assert_true(populated <= 6 * 2 * MiB);

    /* next_data walks the populated ranges in gpa order. */
    uint64_t total = 0, prev_end = 0;
    for (gpa = 0; guest_ram_next_data(ram, gpa, &s, &e); gpa = e) {
        assert_true(s >= gpa && e > s && s >= prev_end);
        assert_non_null(guest_ram_ptr(ram, s, e - s));
        total += e - s;
        prev_end = e;
    }
    assert_int_equal(total, populated);
    assert_true(guest_ram_next_data(ram, 5 * MiB + 200, &s, &e));
    assert_int_equal(s, 5 * MiB + 200);

    fast = guest_ram_crc32(ram);
    assert_int_equal(guest_ram_populated_bytes(ram), populated); /* crc read no hole */
    slow = plain_crc(ram, size <= 64 * MiB);

    assert_int_equal(fast, slow);
    guest_ram_destroy(ram);
}

static void test_crc32(void **state)
{
    (void)state;
    struct guest_ram *ram = guest_ram_create(16 * MiB, NULL);

    /* Untouched RAM: the CRC of 16 MiB of zeros. */
    assert_non_null(ram);
    {
        uint8_t *zeros = g_malloc0(16 * MiB);
        uint32_t want = (uint32_t)crc32_z(crc32(0L, Z_NULL, 0), zeros, 16 * MiB);

        assert_int_equal(guest_ram_crc32(ram), want);
        assert_int_equal(guest_ram_populated_bytes(ram), 0);
        g_free(zeros);
    }
    guest_ram_destroy(ram);
    check_crc(64 * MiB);
    check_crc(4 * GiB);
}

static void test_discard(void **state)
{
    (void)state;
    struct guest_ram *ram = guest_ram_create(32 * MiB, NULL);
    uint32_t zero_crc;
    uint8_t b = 0x77, back = 1;

    assert_non_null(ram);
    zero_crc = guest_ram_crc32(ram);
    assert_true(guest_ram_write(ram, 0x5000, &b, 1, NULL));
    ram->regions[0].hva[20 * MiB] = 3; /* a vCPU-style write: not marked */
    assert_true(guest_ram_populated_bytes(ram) > 0);
    assert_int_not_equal(guest_ram_crc32(ram), zero_crc);
    bitmap_clear_bit(ram->vmm_dirty, 0x5);
    guest_ram_discard(ram);
    assert_int_equal(guest_ram_populated_bytes(ram), 0);
    assert_int_equal(guest_ram_crc32(ram), zero_crc);
    assert_true(guest_ram_read(ram, 0x5000, &back, 1, NULL));
    assert_int_equal(back, 0);
    /* Both pages that held data are marked for a running migration. */
    assert_true(bitmap_test(ram->vmm_dirty, 0x5));
    assert_true(bitmap_test(ram->vmm_dirty, (20 * MiB) >> GUEST_PAGE_SHIFT));
    guest_ram_destroy(ram);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t value;
    } good[] = {
        { "512M", 512 * MiB },
        { "1G", GiB },
        { "16G", 16 * GiB },
        { "1024K", MiB },
        { "4096", 4096 },
        { "1", 1 },
        { "2T", 2ULL << 40 },
        { "8g", 8 * GiB },
        { "64MB", 64 * MiB },
        { "64MiB", 64 * MiB },
        { "3k", 3 * KiB },
        { "100B", 100 },
        { "18446744073709551615", UINT64_MAX },
        { "16777215T", 16777215ULL << 40 },
    };
    static const char *const bad[] = {
        "",
        "M",
        "0",
        "0G",
        "-1",
        "+5",
        " 5",
        "5 ",
        "1.5G",
        "12X",
        "1GG",
        "1Gi",
        "1GiBB",
        "0x10",
        "18446744073709551616",
        "16777216T",
        "99999999999999999999G",
        "1iB",
        "5Bx",
    };
    uint64_t v;

    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        v = 0;
        assert_int_equal(parse_size(good[i].text, &v), 0);
        assert_int_equal(v, good[i].value);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        v = 77;
        if (parse_size(bad[i], &v) != -EINVAL)
            fail_msg("parse_size accepted \"%s\"", bad[i]);
        assert_int_equal(v, 77);
    }
    assert_int_equal(parse_size(NULL, &v), -EINVAL);
}

static void test_clock(void **state)
{
    (void)state;
    uint64_t a = clock_ns(), b = clock_ns();

    assert_true(a > 0 && b >= a);
    assert_true(clock_ms() <= clock_ns() / 1000000 + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),     cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_ptr_bounds), cmocka_unit_test(test_write_read_dirty),
        cmocka_unit_test(test_dirty_high), cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_discard),    cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
