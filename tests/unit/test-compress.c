/* test-compress.c: page compression with zlib and zstd: round trips, data
 * that does not compress (sent raw), and hostile compressed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"
#include "tern/compress.h"

#define PAGE 4096

static const enum page_compression algs[] = { PAGE_COMPRESSION_ZLIB, PAGE_COMPRESSION_ZSTD };

static void random_bytes(uint8_t *p, size_t len, guint32 seed)
{
    GRand *r = g_rand_new_with_seed(seed);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)g_rand_int(r);
    g_rand_free(r);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(page_compression_name(PAGE_COMPRESSION_NONE), "none");
    assert_string_equal(page_compression_name(PAGE_COMPRESSION_ZLIB), "zlib");
    assert_string_equal(page_compression_name(PAGE_COMPRESSION_ZSTD), "zstd");
}

static void test_round_trip(void **state)
{
    (void)state;
    uint8_t page[PAGE], z[PAGE], out[PAGE];
    GError *err = NULL;

    for (size_t a = 0; a < G_N_ELEMENTS(algs); a++) {
        for (int level = 1; level <= 9; level += 4) {
            /* Text-like: compresses well. */
            fill(page, PAGE, (unsigned)level);
            for (int i = 0; i < PAGE; i += 64)
                memcpy(page + i, "the quick brown fox jumps over the lazy dog ", 44);
            size_t n = page_compress(algs[a], level, page, PAGE, z, sizeof(z));
            assert_true(n > 0 && n < PAGE / 2);
            memset(out, 0, PAGE);
            assert_true(page_decompress(algs[a], z, n, out, PAGE, &err));
            assert_memory_equal(out, page, PAGE);

            /* All zero: tiny. */
            memset(page, 0, PAGE);
            n = page_compress(algs[a], level, page, PAGE, z, sizeof(z));
            assert_true(n > 0 && n < 64);
            memset(out, 1, PAGE);
            assert_true(page_decompress(algs[a], z, n, out, PAGE, &err));
            assert_memory_equal(out, page, PAGE);
        }
    }
    assert_null(err);
}

static void test_incompressible(void **state)
{
    (void)state;
    uint8_t page[PAGE], z[2 * PAGE];

    random_bytes(page, PAGE, 1);
    for (size_t a = 0; a < G_N_ELEMENTS(algs); a++) {
        /* Not smaller than the input: 0, send raw; whatever the room. */
        assert_int_equal(page_compress(algs[a], 6, page, PAGE, z, PAGE), 0);
        assert_int_equal(page_compress(algs[a], 6, page, PAGE, z, sizeof(z)), 0);
        /* Compressible, but no room: 0 too. */
        memset(page, 0, PAGE);
        assert_int_equal(page_compress(algs[a], 6, page, PAGE, z, 4), 0);
        random_bytes(page, PAGE, 1);
    }
    assert_int_equal(page_compress(PAGE_COMPRESSION_NONE, 6, page, PAGE, z, sizeof(z)), 0);
}

static void expect_bad(enum page_compression alg, const uint8_t *src, size_t len, size_t dst_len)
{
    GError *err = NULL;
    /* At the end of heap blocks: ASan catches a read or write past either. */
    uint8_t *in = g_memdup2(src, len ? len : 1);
    uint8_t *out = g_malloc(dst_len);

    assert_false(page_decompress(alg, in, len, out, dst_len, &err));
    assert_error(err, "does not inflate to exactly one page");
    g_error_free(err);
    g_free(in);
    g_free(out);
}

static void test_hostile(void **state)
{
    (void)state;
    uint8_t two[2 * PAGE] = { 0 }, z[2 * PAGE], zz[2 * PAGE + 16];
    uint8_t garbage[300];

    random_bytes(garbage, sizeof(garbage), 3);
    for (size_t a = 0; a < G_N_ELEMENTS(algs); a++) {
        enum page_compression alg = algs[a];

        /* Two pages of data into one page: too long, never written past. */
        size_t n = page_compress(alg, 1, two, sizeof(two), z, sizeof(z));
        assert_true(n > 0);
        expect_bad(alg, z, n, PAGE);
        /* Half a page: too short. */
        n = page_compress(alg, 1, two, PAGE / 2, z, sizeof(z));
        assert_true(n > 0);
        expect_bad(alg, z, n, PAGE);
        /* A good page, cut short, or with trailing bytes. */
        n = page_compress(alg, 1, two, PAGE, z, sizeof(z));
        assert_true(n > 2);
        expect_bad(alg, z, n - 1, PAGE);
        expect_bad(alg, z, 1, PAGE);
        expect_bad(alg, z, 0, PAGE);
        memcpy(zz, z, n);
        memset(zz + n, 0x77, 8);
        expect_bad(alg, zz, n + 8, PAGE);
        /* Garbage, and a flipped byte in the middle of good data. */
        expect_bad(alg, garbage, sizeof(garbage), PAGE);
        uint8_t page[PAGE];
        random_bytes(page, PAGE, 9);
        memset(page, 0, PAGE / 2);
        n = page_compress(alg, 1, page, PAGE, z, sizeof(z));
        assert_true(n > 8);
        z[n / 2] ^= 0x55;
        GError *err = NULL;
        uint8_t out[PAGE];
        if (page_decompress(alg, z, n, out, PAGE, &err))
            assert_memory_not_equal(out, page, PAGE); /* no checksum caught it, but no harm */
        else
            g_error_free(err);
    }
    /* zstd: a frame header claiming far more content than one page. */
    {
        static const uint8_t big[] = { 0x28, 0xB5, 0x2F, 0xFD, 0xA4, 0x00, 0x00, 0x00,
                                       0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };
        expect_bad(PAGE_COMPRESSION_ZSTD, big, sizeof(big), PAGE);
    }
    /* NONE: the length must match. */
    expect_bad(PAGE_COMPRESSION_NONE, garbage, sizeof(garbage), PAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_incompressible),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
