/* test-bitmap.c: unit tests of the page bitmap helpers against a bit-by-bit model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <glib.h>
#include <pthread.h>

#include "tern/bitmap.h"

static void test_set_range_edges(void **state)
{
    (void)state;
    const uint64_t nbits = 300;
    static const uint64_t starts[] = { 0, 1, 63, 64, 65, 127, 128, 200 };
    static const uint64_t counts[] = { 0, 1, 2, 63, 64, 65, 100 };

    for (size_t i = 0; i < G_N_ELEMENTS(starts); i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(counts); j++) {
            unsigned long *map = bitmap_new(nbits);
            uint64_t s = starts[i], c = counts[j];

            bitmap_set_range(map, s, c);
            for (uint64_t b = 0; b < nbits; b++)
                assert_int_equal(bitmap_test(map, b), b >= s && b < s + c);
            assert_int_equal(bitmap_count(map, nbits), c);
            free(map);
        }
    }
}

static void test_count_partial_word(void **state)
{
    (void)state;
    unsigned long *map = bitmap_new(130);

    bitmap_set_range(map, 0, 130);
    assert_int_equal(bitmap_count(map, 130), 130);
    assert_int_equal(bitmap_count(map, 129), 129);
    assert_int_equal(bitmap_count(map, 64), 64);
    assert_int_equal(bitmap_count(map, 0), 0);
    bitmap_clear_bit(map, 5);
    bitmap_clear_bit(map, 128);
    assert_int_equal(bitmap_count(map, 130), 128);
    free(map);
}

static void test_next_set(void **state)
{
    (void)state;
    const uint64_t nbits = 1000;
    unsigned long *map = bitmap_new(nbits);

    assert_int_equal(bitmap_next_set(map, nbits, 0), nbits);
    bitmap_set_atomic(map, 3);
    bitmap_set_atomic(map, 64);
    bitmap_set_atomic(map, 999);
    assert_int_equal(bitmap_next_set(map, nbits, 0), 3);
    assert_int_equal(bitmap_next_set(map, nbits, 3), 3);
    assert_int_equal(bitmap_next_set(map, nbits, 4), 64);
    assert_int_equal(bitmap_next_set(map, nbits, 65), 999);
    assert_int_equal(bitmap_next_set(map, nbits, 999), 999);
    assert_int_equal(bitmap_next_set(map, nbits, 1000), nbits);
    assert_int_equal(bitmap_next_set(map, nbits, UINT64_MAX), nbits);
    /* A bit beyond nbits in the last word is not reported. */
    assert_int_equal(bitmap_next_set(map, 999, 65), 999);
    free(map);
}

static void test_random_against_model(void **state)
{
    (void)state;
    GRand *rand = g_rand_new_with_seed(42);
    const uint64_t nbits = 4099;
    unsigned long *map = bitmap_new(nbits);
    bool *model = g_new0(bool, nbits);

    for (int round = 0; round < 200; round++) {
        uint64_t s = (uint64_t)g_rand_int_range(rand, 0, (gint32)nbits);
        uint64_t c = (uint64_t)g_rand_int_range(rand, 0, (gint32)(nbits - s + 1)) / 8;

        bitmap_set_range(map, s, c);
        for (uint64_t b = s; b < s + c; b++)
            model[b] = true;
    }
    uint64_t n = 0, from = 0;
    for (uint64_t b = 0; b < nbits; b++) {
        assert_int_equal(bitmap_test(map, b), model[b]);
        n += model[b];
    }
    assert_int_equal(bitmap_count(map, nbits), n);
    /* Walking with next_set visits exactly the model's bits. */
    uint64_t seen = 0;
    while ((from = bitmap_next_set(map, nbits, from)) < nbits) {
        assert_true(model[from]);
        seen++;
        from++;
    }
    assert_int_equal(seen, n);
    g_free(model);
    free(map);
    g_rand_free(rand);
}

static void test_steal_into(void **state)
{
    (void)state;
    const uint64_t nbits = 200;
    unsigned long *dst = bitmap_new(nbits), *src = bitmap_new(nbits);

    bitmap_set_atomic(dst, 1);
    bitmap_set_atomic(src, 1);
    bitmap_set_atomic(src, 70);
    bitmap_set_atomic(src, 199);
    bitmap_steal_into(dst, src, nbits);
    assert_int_equal(bitmap_count(src, nbits), 0);
    assert_int_equal(bitmap_count(dst, nbits), 3);
    assert_true(bitmap_test(dst, 1) && bitmap_test(dst, 70) && bitmap_test(dst, 199));
    free(dst);
    free(src);
}

/* Concurrent marking while another thread harvests: no bit is ever lost. */
#define RACE_BITS (1u << 16)
struct race {
    unsigned long *src;
};

static void *race_writer(void *opaque)
{
    struct race *r = opaque;

    for (uint64_t b = 0; b < RACE_BITS; b++)
        bitmap_set_atomic(r->src, b);
    return NULL;
}

static void test_steal_concurrent(void **state)
{
    (void)state;
    struct race r = { .src = bitmap_new(RACE_BITS) };
    unsigned long *dst = bitmap_new(RACE_BITS);
    pthread_t t;

    assert_int_equal(pthread_create(&t, NULL, race_writer, &r), 0);
    for (int i = 0; i < 1000; i++)
        bitmap_steal_into(dst, r.src, RACE_BITS);
    pthread_join(t, NULL);
    bitmap_steal_into(dst, r.src, RACE_BITS);
    assert_int_equal(bitmap_count(dst, RACE_BITS), RACE_BITS);
    assert_int_equal(bitmap_count(r.src, RACE_BITS), 0);
    free(dst);
    free(r.src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_range_edges), cmocka_unit_test(test_count_partial_word),
        cmocka_unit_test(test_next_set),        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_steal_into),      cmocka_unit_test(test_steal_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
