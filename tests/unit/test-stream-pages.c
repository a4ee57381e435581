/* test-stream-pages.c: PAGE_DATA and ZERO_PAGES bodies: validation and page encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"

#include <libfdt.h>
#include <string.h>
#include <zlib.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "tern/bitmap.h"
#include "tern/stream.h"
#include "tern/util.h"
#include "test-stream-lib.h"

/* ---- body validation ---- */

static void expect_page_data_error(const uint8_t *body, size_t len, const char *msg)
{
    struct stream_record rec = {
        .type = MIG_REC_PAGE_DATA, .length = (uint32_t)len, .body = body, .index = 3, .offset = 1000
    };
    struct page_sink sink = { 0 };
    GError *err = NULL;

    assert_false(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, &err));
    assert_error(err, "record 3 (PAGE_DATA) at offset 1000: ");
    assert_error(err, msg);
    assert_int_equal(sink.pages, 0); /* nothing handed out */
    g_clear_error(&err);
}

static void test_page_data_validation(void **state)
{
    size_t len = 8 + 2 * 16 + 2 * PAGE;
    uint8_t *b = g_malloc0(len + PAGE);
    struct stream_record rec = { .type = MIG_REC_PAGE_DATA, .body = b };
    struct page_sink sink = { 0 };
    GError *err = NULL;

#define DESC(i) (b + 8 + (i)*16)
    (void)state;
    mig_store_le32(b, 2);
    mig_store_le64(DESC(0), 1);
    mig_store_le32(DESC(0) + 8, MIG_PAGE_ENC_RAW);
    mig_store_le32(DESC(0) + 12, PAGE);
    mig_store_le64(DESC(1), NR_GFNS - 1);
    mig_store_le32(DESC(1) + 8, MIG_PAGE_ENC_RAW);
    mig_store_le32(DESC(1) + 12, PAGE);
    rec.length = (uint32_t)len;
    assert_true(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, NULL));
    assert_int_equal(sink.pages, 2);

    /* count vs length */
    expect_page_data_error(b, len - 1, "payload bytes");
    expect_page_data_error(b, len + 8, "payload bytes");
    expect_page_data_error(b, 20, "needs 40 bytes of descriptors");
    expect_page_data_error(b, 4, "too short");
    mig_store_le32(b, 0);
    expect_page_data_error(b, len, "page count 0");
    mig_store_le32(b, 3);
    expect_page_data_error(b, len, "page 2 (gfn 0x0): raw length 0"); /* page data as desc 2 */
    mig_store_le32(b, UINT32_MAX);
    expect_page_data_error(b, len, "page count 4294967295");
    mig_store_le32(b, 2);
    mig_store_le32(b + 4, 1);
    expect_page_data_error(b, len, "reserved field is not zero");
    mig_store_le32(b + 4, 0);

    /* gfn range */
    mig_store_le64(DESC(1), NR_GFNS);
    expect_page_data_error(b, len, "page 1: gfn 0x100000 is outside guest memory");
    mig_store_le64(DESC(1), UINT64_MAX);
    expect_page_data_error(b, len, "outside guest memory");
    mig_store_le64(DESC(1), 5);

    /* encodings and lengths */
    mig_store_le32(DESC(1) + 8, MIG_PAGE_ENC_DELTA);
    expect_page_data_error(b, len, "encoding DELTA is reserved");
    mig_store_le32(DESC(1) + 8, 77);
    expect_page_data_error(b, len, "unknown encoding 77");
    mig_store_le32(DESC(1) + 8, MIG_PAGE_ENC_RAW);
    mig_store_le32(DESC(1) + 12, PAGE - 1);
    expect_page_data_error(b, len - 1, "raw length 4095");
    mig_store_le32(DESC(1) + 8, MIG_PAGE_ENC_ZLIB);
    mig_store_le32(DESC(1) + 12, PAGE + 1);
    expect_page_data_error(b, len + 1, "compressed length 4097");
    mig_store_le32(DESC(1) + 12, 0);
    expect_page_data_error(b, len - PAGE, "compressed length 0");
    mig_store_le32(DESC(1) + 12, UINT32_MAX);
    expect_page_data_error(b, len, "compressed length 4294967295");

    /* A well-framed zlib page that is garbage: the decode (in the callback) fails. */
    mig_store_le32(DESC(1) + 12, 100);
    memset(b + 8 + 32 + PAGE, 0xab, 100);
    rec.length = (uint32_t)(8 + 32 + PAGE + 100);
    sink.pages = 0;
    assert_false(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, &err));
    assert_error(err, "gfn 0x5: zlib data does not inflate to exactly one page");
    g_clear_error(&err);
    assert_int_equal(sink.pages, 1);

    /* zlib data of a 2-page buffer: too long. */
    {
        uint8_t big[2 * PAGE] = { 0 };
        uint8_t z[PAGE];
        uLongf zl = PAGE;
        struct stream_page p = { .gfn = 9, .encoding = MIG_PAGE_ENC_ZLIB, .data = z };
        uint8_t out[PAGE];

        assert_int_equal(compress2(z, &zl, big, sizeof(big), 6), Z_OK);
        p.length = (uint32_t)zl;
        assert_false(stream_page_decode(&p, out, PAGE, &err));
        assert_error(err, "does not inflate to exactly one page");
        g_clear_error(&err);
    }

    /* A callback error is prefixed with the record. */
    fill_page(b + 8 + 16, 0);
    mig_store_le32(b, 1);
    mig_store_le64(DESC(0), 1);
    mig_store_le32(DESC(0) + 8, MIG_PAGE_ENC_RAW);
    mig_store_le32(DESC(0) + 12, PAGE);
    rec.length = 8 + 16 + PAGE;
    sink.fail = true;
    assert_false(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, &err));
    assert_error(err, "at offset 0: sink refused");
    g_clear_error(&err);
#undef DESC
    g_free(b);
}

static void test_zero_pages_validation(void **state)
{
    uint8_t b[8 + 3 * 16] = { 0 };
    struct stream_record rec = { .type = MIG_REC_ZERO_PAGES, .body = b, .length = sizeof(b) };
    struct page_sink sink = { 0 };
    GError *err = NULL;

    (void)state;
    mig_store_le32(b, 3);
    mig_store_le64(b + 8, 0);
    mig_store_le64(b + 16, 1);
    mig_store_le64(b + 24, 10);
    mig_store_le64(b + 32, NR_GFNS - 10); /* ends exactly at nr_gfns */
    mig_store_le64(b + 40, NR_GFNS - 1);
    mig_store_le64(b + 48, 1);
    assert_true(stream_parse_zero_pages(&rec, NR_GFNS, sink_range, &sink, NULL));
    assert_int_equal(sink.ranges, 3);
    assert_int_equal(sink.zero_total, NR_GFNS - 10 + 2);

#define EXPECT(msg) \
    do { \
        sink.ranges = 0; \
        assert_false(stream_parse_zero_pages(&rec, NR_GFNS, sink_range, &sink, &err)); \
        assert_error(err, msg); \
        assert_int_equal(sink.ranges, 0); \
        g_clear_error(&err); \
    } while (0)

    /* overflow: first + npages wraps around to a small number */
    mig_store_le64(b + 40, 2);
    mig_store_le64(b + 48, UINT64_MAX);
    EXPECT("range 2 (gfn 0x2 + 0xffffffffffffffff pages) is empty or outside guest memory");
    mig_store_le64(b + 40, UINT64_MAX);
    mig_store_le64(b + 48, 2);
    EXPECT("range 2");
    mig_store_le64(b + 40, NR_GFNS - 1);
    mig_store_le64(b + 48, 2);
    EXPECT("range 2");
    mig_store_le64(b + 48, 0);
    EXPECT("range 2");
    mig_store_le64(b + 48, 1);

    rec.length = sizeof(b) - 1;
    EXPECT("does not match the body length");
    rec.length = sizeof(b);
    mig_store_le32(b, 2);
    EXPECT("range count 2 does not match");
    mig_store_le32(b, 0x10000001); /* count * 16 wraps in 32 bits */
    EXPECT("does not match");
    mig_store_le32(b, 0);
    EXPECT("range count 0");
    mig_store_le32(b, 3);
    rec.length = 4;
    EXPECT("too short");
#undef EXPECT
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_data_validation),
        cmocka_unit_test(test_zero_pages_validation),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
