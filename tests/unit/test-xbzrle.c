/* test-xbzrle.c: the XBZRLE encoder against hand-computed QEMU encodings, the
 * decoder on them and on hostile input, the page cache, and the PAGE_DATA
 * encoding through the stream's page decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"
#include "tern/compress.h"
#include "tern/stream.h"
#include "tern/xbzrle.h"

#define PAGE 4096

static uint8_t old_page[PAGE], new_page[PAGE], enc[2 * PAGE], out[PAGE];

static void setup_pages(void)
{
    fill(old_page, PAGE, 7);
    memcpy(new_page, old_page, PAGE);
}

/* Encode new against old, compare with (want), decode onto old, compare with new. */
static void check_vector(const uint8_t *want, size_t want_len)
{
    int n = xbzrle_encode(old_page, new_page, PAGE, enc, PAGE);
    GError *err = NULL;

    assert_int_equal(n, (int)want_len);
    assert_memory_equal(enc, want, want_len);
    memcpy(out, old_page, PAGE);
    assert_true(xbzrle_decode(enc, (size_t)n, out, PAGE, &err));
    assert_null(err);
    assert_memory_equal(out, new_page, PAGE);
}

static void test_golden_vectors(void **state)
{
    (void)state;
    /* Three bytes changed at offset 10: zrun 10, nzrun 3, the new bytes. */
    setup_pages();
    new_page[10] = 0xAA;
    new_page[11] = 0xBB;
    new_page[12] = 0xCC;
    old_page[10] = 0x01; /* make sure each differs */
    old_page[11] = 0x02;
    old_page[12] = 0x03;
    {
        static const uint8_t want[] = { 0x0A, 0x03, 0xAA, 0xBB, 0xCC };
        check_vector(want, sizeof(want));
    }

    /* First and last byte: a zero-length first zero run, then 4094 as two
     * ULEB128 octets (0xFE 0x1F), the trailing zero run omitted. */
    setup_pages();
    new_page[0] = (uint8_t)(old_page[0] ^ 0xFF);
    new_page[PAGE - 1] = (uint8_t)(old_page[PAGE - 1] ^ 0x0F);
    {
        const uint8_t want[] = { 0x00, 0x01, new_page[0], 0xFE, 0x1F, 0x01, new_page[PAGE - 1] };
        check_vector(want, sizeof(want));
    }

    /* 200 bytes from 300: zrun 300 = AC 02, nzrun 200 = C8 01, then the bytes. */
    setup_pages();
    for (int i = 300; i < 500; i++)
        new_page[i] = (uint8_t)(old_page[i] ^ (0x80 | i));
    {
        uint8_t want[4 + 200] = { 0xAC, 0x02, 0xC8, 0x01 };
        memcpy(want + 4, new_page + 300, 200);
        check_vector(want, sizeof(want));
    }

    /* Two runs, the second one word-aligned and 8 long: 5 1 X, 2 8 ... */
    setup_pages();
    new_page[5] = (uint8_t)~old_page[5];
    for (int i = 8; i < 16; i++)
        new_page[i] = (uint8_t)~old_page[i];
    {
        uint8_t want[3 + 2 + 8] = { 0x05, 0x01, new_page[5], 0x02, 0x08 };
        memcpy(want + 5, new_page + 8, 8);
        check_vector(want, sizeof(want));
    }
}

static void test_unchanged_and_overflow(void **state)
{
    (void)state;
    setup_pages();
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, PAGE), 0);

    /* Every byte changed: 1 + 2 + 4096 octets do not fit in a page. */
    for (int i = 0; i < PAGE; i++)
        new_page[i] = (uint8_t)~old_page[i];
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, PAGE), -1);
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 2 * PAGE), PAGE + 3);

    /* Every other byte: 3 octets per 2 bytes of page. */
    setup_pages();
    for (int i = 0; i < PAGE; i += 2)
        new_page[i] = (uint8_t)~old_page[i];
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, PAGE), -1);

    /* QEMU's checks, exactly: while bytes remain after a run, two more octets
     * must fit, even if the rest turns out unchanged. 5 octets need 7. */
    setup_pages();
    for (int i = 10; i < 13; i++)
        new_page[i] = (uint8_t)~old_page[i];
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 7), 5);
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 6), -1);
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 4), -1);
    /* A change in the last bytes needs no room after it. */
    setup_pages();
    new_page[PAGE - 1] = (uint8_t)~old_page[PAGE - 1];
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 4), 4);
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 3), -1);
    assert_int_equal(xbzrle_encode(old_page, new_page, PAGE, enc, 1), -1);
}

/* Random pages with random changes: decode(encode(old, new), old) == new. */
static void test_round_trip_random(void **state)
{
    (void)state;
    GRand *r = g_rand_new_with_seed(42);
    GError *err = NULL;

    for (int t = 0; t < 2000; t++) {
        for (int i = 0; i < PAGE; i++)
            old_page[i] = (uint8_t)g_rand_int(r);
        memcpy(new_page, old_page, PAGE);
        int changes = g_rand_int_range(r, 0, 64);
        for (int c = 0; c < changes; c++) {
            int at = g_rand_int_range(r, 0, PAGE), len = g_rand_int_range(r, 1, 80);
            for (int i = at; i < at + len && i < PAGE; i++)
                new_page[i] = (uint8_t)g_rand_int(r);
        }
        int n = xbzrle_encode(old_page, new_page, PAGE, enc, PAGE);
        if (n <= 0) {
            assert_true(n == -1 || !memcmp(old_page, new_page, PAGE));
            continue;
        }
        memcpy(out, old_page, PAGE);
        assert_true(xbzrle_decode(enc, (size_t)n, out, PAGE, &err));
        assert_memory_equal(out, new_page, PAGE);
    }
    g_rand_free(r);
}

static void expect_bad(const uint8_t *src, size_t len, const char *msg)
{
    GError *err = NULL;
    /* The input sits at the end of a heap block: ASan sees any read past it. */
    uint8_t *copy = g_memdup2(src, len ? len : 1);

    memset(out, 0x5a, PAGE);
    assert_false(xbzrle_decode(copy, len, out, PAGE, &err));
    assert_error(err, msg);
    g_error_free(err);
    g_free(copy);
}

static void test_hostile_input(void **state)
{
    (void)state;
    static const uint8_t truncated[] = { 0x0A, 0x03, 0xAA, 0xBB };
    static const uint8_t zrun_past[] = { 0x80, 0x20, 0x01, 0x00 };        /* zrun 4096 */
    static const uint8_t zrun_huge[] = { 0xFF, 0x7F, 0x01, 0x00 };        /* zrun 16383 */
    static const uint8_t nzrun_past[] = { 0xFF, 0x1F, 0x02, 0x00, 0x00 }; /* 4095 + 2 */
    static const uint8_t uleb3[] = { 0xFF, 0xFF, 0x01, 0x01, 0x00 };
    static const uint8_t uleb_cut[] = { 0x05, 0x80 };
    static const uint8_t nz_empty[] = { 0x05, 0x00, 0x00 };
    static const uint8_t z_empty_later[] = { 0x00, 0x01, 0xAA, 0x00, 0x01, 0xBB };
    static const uint8_t dangling[] = { 0x0A, 0x01, 0xAA, 0x05 };
    static const uint8_t one[] = { 0x05 };
    static const uint8_t nz_len_past_data[] = { 0x00, 0xC8, 0x01, 0xAA };

    expect_bad(NULL, 0, "empty");
    expect_bad(one, sizeof(one), "truncated");
    expect_bad(truncated, sizeof(truncated), "past the end of the data");
    expect_bad(zrun_past, sizeof(zrun_past), "changed run past the end of the page");
    expect_bad(zrun_huge, sizeof(zrun_huge), "unchanged run past the end of the page");
    expect_bad(nzrun_past, sizeof(nzrun_past), "changed run past the end of the page");
    expect_bad(uleb3, sizeof(uleb3), "bad length");
    expect_bad(uleb_cut, sizeof(uleb_cut), "truncated");
    expect_bad(nz_empty, sizeof(nz_empty), "empty changed run");
    expect_bad(z_empty_later, sizeof(z_empty_later), "empty unchanged run");
    expect_bad(dangling, sizeof(dangling), "truncated");
    expect_bad(nz_len_past_data, sizeof(nz_len_past_data), "past the end of the data");

    /* Random garbage never crashes or writes past the page (ASan checks). */
    GRand *r = g_rand_new_with_seed(7);
    for (int t = 0; t < 5000; t++) {
        size_t len = (size_t)g_rand_int_range(r, 1, 64);
        uint8_t *g = g_malloc(len);
        for (size_t i = 0; i < len; i++)
            g[i] = (uint8_t)g_rand_int(r);
        GError *err = NULL;
        if (!xbzrle_decode(g, len, out, PAGE, &err))
            g_error_free(err);
        g_free(g);
    }
    g_rand_free(r);
}

static void test_cache(void **state)
{
    (void)state;
    GError *err = NULL;
    uint8_t a[PAGE], b[PAGE];

    assert_null(xbzrle_cache_new(PAGE - 1, PAGE, &err));
    assert_error(err, "below one page");
    g_clear_error(&err);

    /* 5 pages round down to 4 slots (a power of two, as QEMU). */
    struct xbzrle_cache *c = xbzrle_cache_new(5 * PAGE, PAGE, &err);
    assert_non_null(c);
    assert_int_equal(xbzrle_cache_slots(c), 4);
    assert_int_equal(xbzrle_cache_memory(c), 4 * (PAGE + 8));
    fill(a, PAGE, 1);
    fill(b, PAGE, 2);
    assert_null(xbzrle_cache_lookup(c, 1));
    xbzrle_cache_insert(c, 1, a);
    assert_memory_equal(xbzrle_cache_lookup(c, 1), a, PAGE);
    assert_null(xbzrle_cache_lookup(c, 5)); /* same slot, other gfn */
    xbzrle_cache_insert(c, 2, b);
    xbzrle_cache_insert(c, 1, b); /* replaces its own copy: no eviction */
    assert_int_equal(xbzrle_cache_evictions(c), 0);
    assert_memory_equal(xbzrle_cache_lookup(c, 1), b, PAGE);
    xbzrle_cache_insert(c, 5, a); /* evicts gfn 1 */
    assert_int_equal(xbzrle_cache_evictions(c), 1);
    assert_null(xbzrle_cache_lookup(c, 1));
    assert_memory_equal(xbzrle_cache_lookup(c, 5), a, PAGE);
    assert_memory_equal(xbzrle_cache_lookup(c, 2), b, PAGE);
    xbzrle_cache_drop(c, 1); /* not there: nothing happens */
    assert_non_null(xbzrle_cache_lookup(c, 5));
    xbzrle_cache_drop(c, 5);
    assert_null(xbzrle_cache_lookup(c, 5));
    /* gfn 0 is a key like any other (tags are gfn + 1). */
    assert_null(xbzrle_cache_lookup(c, 0));
    xbzrle_cache_insert(c, 0, a);
    assert_non_null(xbzrle_cache_lookup(c, 0));
    xbzrle_cache_free(c);
}

/* The PAGE_DATA encoding: the stream's decoder applies the delta in place,
 * and a page record with it passes the reader's checks. */
static void test_stream_encoding(void **state)
{
    (void)state;
    GError *err = NULL;

    setup_pages();
    new_page[100] = (uint8_t)~old_page[100];
    int n = xbzrle_encode(old_page, new_page, PAGE, enc, PAGE);
    assert_int_equal(n, 3); /* 64 01 X */
    struct stream_page p = {
        .gfn = 3, .encoding = MIG_PAGE_ENC_XBZRLE, .length = (uint32_t)n, .data = enc
    };
    memcpy(out, old_page, PAGE);
    assert_true(stream_page_decode(&p, out, PAGE, &err));
    assert_memory_equal(out, new_page, PAGE);
    p.length = 2; /* cut */
    assert_false(stream_page_decode(&p, out, PAGE, &err));
    assert_error(err, "gfn 0x3: XBZRLE data is malformed");
    g_clear_error(&err);
}

static bool count_page(void *opaque, const struct stream_page *page, GError **errp)
{
    (void)errp;
    uint32_t *seen = opaque;
    seen[page->encoding]++;
    return true;
}

/* The reader takes encodings 3 (XBZRLE) and 4 (ZSTD) with 1..page-size
 * payloads, and still refuses 2 and unknown values. */
static void test_page_data_encodings(void **state)
{
    (void)state;
    uint8_t zpage[PAGE] = { 0 }, z[PAGE];
    size_t zn = page_compress(PAGE_COMPRESSION_ZSTD, 1, zpage, PAGE, z, sizeof(z));
    assert_true(zn > 0);
    size_t len = 8 + 2 * 16 + 3 + zn;
    uint8_t *b = g_malloc0(len);
    struct stream_record rec = { .type = MIG_REC_PAGE_DATA, .body = b, .length = (uint32_t)len };
    uint32_t seen[8] = { 0 };
    GError *err = NULL;

    mig_store_le32(b, 2);
    mig_store_le64(b + 8, 1);
    mig_store_le32(b + 16, MIG_PAGE_ENC_XBZRLE);
    mig_store_le32(b + 20, 3);
    mig_store_le64(b + 24, 2);
    mig_store_le32(b + 32, MIG_PAGE_ENC_ZSTD);
    mig_store_le32(b + 36, (uint32_t)zn);
    memcpy(b + 40, "\x0A\x01\xAA", 3);
    memcpy(b + 43, z, zn);
    assert_true(stream_parse_page_data(&rec, PAGE, 16, count_page, seen, &err));
    assert_int_equal(seen[MIG_PAGE_ENC_XBZRLE], 1);
    assert_int_equal(seen[MIG_PAGE_ENC_ZSTD], 1);

    mig_store_le32(b + 20, 0);
    rec.length = (uint32_t)(len - 3);
    assert_false(stream_parse_page_data(&rec, PAGE, 16, count_page, seen, &err));
    assert_error(err, "compressed length 0");
    g_clear_error(&err);
    mig_store_le32(b + 20, PAGE + 1);
    rec.length = (uint32_t)len;
    assert_false(stream_parse_page_data(&rec, PAGE, 16, count_page, seen, &err));
    assert_error(err, "compressed length 4097");
    g_clear_error(&err);
    mig_store_le32(b + 20, 3);
    mig_store_le32(b + 16, MIG_PAGE_ENC_DELTA);
    assert_false(stream_parse_page_data(&rec, PAGE, 16, count_page, seen, &err));
    assert_error(err, "encoding DELTA is reserved");
    g_clear_error(&err);
    mig_store_le32(b + 16, 5);
    assert_false(stream_parse_page_data(&rec, PAGE, 16, count_page, seen, &err));
    assert_error(err, "unknown encoding 5");
    g_clear_error(&err);

    /* ZSTD through the page decoder: exactly one page. */
    struct stream_page zp = {
        .gfn = 2, .encoding = MIG_PAGE_ENC_ZSTD, .length = (uint32_t)zn, .data = z
    };
    memset(out, 0xff, PAGE);
    assert_true(stream_page_decode(&zp, out, PAGE, &err));
    assert_memory_equal(out, zpage, PAGE);
    zp.length--;
    assert_false(stream_page_decode(&zp, out, PAGE, &err));
    assert_error(err, "gfn 0x2: zstd data does not inflate to exactly one page");
    g_clear_error(&err);
    g_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_vectors),
        cmocka_unit_test(test_unchanged_and_overflow),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_stream_encoding),
        cmocka_unit_test(test_page_data_encodings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
