/* test-multifd.c: the multifd wire format (migration/multifd-format.c): the
 * MULTIFD record body, the channel header, the batch and SYNC packets with
 * their CRCs, and a batch's compression (tern/compress.h, as multifd uses it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../migration/multifd.h"
#include "tern/stream-format.h"
#include "tern/util.h"

#define PAGE 4096u

static void assert_error(GError *err, const char *part)
{
    assert_non_null(err);
    if (!strstr(err->message, part))
        fail_msg("error \"%s\" lacks \"%s\"", err->message, part);
}

static void test_announce(void **state)
{
    struct multifd_announce a = { .channels = 4,
                                  .compression = PAGE_COMPRESSION_ZSTD,
                                  .session = 0x1122334455667789ULL };
    struct multifd_announce b;
    uint8_t body[MULTIFD_RECORD_SIZE];
    GError *err = NULL;

    (void)state;
    multifd_announce_encode(&a, body);
    assert_true(multifd_announce_decode(body, sizeof(body), &b, &err));
    assert_int_equal(b.channels, 4);
    assert_int_equal(b.compression, PAGE_COMPRESSION_ZSTD);
    assert_true(b.session == a.session);

    assert_false(multifd_announce_decode(body, 15, &b, &err));
    assert_error(err, "length 15");
    g_clear_error(&err);
    a.channels = 0;
    multifd_announce_encode(&a, body);
    assert_false(multifd_announce_decode(body, sizeof(body), &b, &err));
    assert_error(err, "0 channels");
    g_clear_error(&err);
    a.channels = MULTIFD_MAX_CHANNELS + 1;
    multifd_announce_encode(&a, body);
    assert_false(multifd_announce_decode(body, sizeof(body), &b, &err));
    g_clear_error(&err);
    a.channels = 2;
    a.compression = 3;
    multifd_announce_encode(&a, body);
    assert_false(multifd_announce_decode(body, sizeof(body), &b, &err));
    assert_error(err, "unknown compression 3");
    g_clear_error(&err);
    a.compression = 0;
    a.session = 0;
    multifd_announce_encode(&a, body);
    assert_false(multifd_announce_decode(body, sizeof(body), &b, &err));
    assert_error(err, "session id 0");
    g_clear_error(&err);
}

static void test_hello(void **state)
{
    struct multifd_hello h = { .session = 42, .index = 3, .nr_channels = 4 }, g;
    uint8_t buf[MULTIFD_HELLO_SIZE];
    GError *err = NULL;

    (void)state;
    multifd_hello_encode(&h, buf);
    assert_memory_equal(buf, "TERNMFD\0", 8);
    assert_true(multifd_hello_decode(buf, &g, &err));
    assert_true(g.session == 42 && g.index == 3 && g.nr_channels == 4);

    /* Any flipped octet is caught: by the magic or by the CRC. */
    for (unsigned i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 0x01;
        assert_false(multifd_hello_decode(buf, &g, &err));
        g_clear_error(&err);
        buf[i] ^= 0x01;
    }
    memcpy(buf, "TERNMIG\0", 8); /* a main stream is not a channel */
    assert_false(multifd_hello_decode(buf, &g, &err));
    assert_error(err, "bad magic");
    g_clear_error(&err);
}

static void test_batch_round_trip(void **state)
{
    uint64_t gfns[5] = { 0x100, 0x101, 0x7fff, 0x20, 0x21 };
    struct multifd_packet p = { .type = MULTIFD_PKT_BATCH,
                                .pass = 3,
                                .nr_pages = 3,
                                .nr_zero = 2,
                                .payload_len = 3 * PAGE,
                                .data_crc = 0xdeadbeef };
    uint8_t buf[MULTIFD_PKT_HDR_SIZE + 8 * 5];
    uint64_t out[5];
    struct multifd_packet q;
    GError *err = NULL;

    (void)state;
    assert_int_equal(multifd_packet_encode(&p, gfns, buf), sizeof(buf));
    assert_true(multifd_packet_decode(buf, &q, &err));
    assert_int_equal(q.type, MULTIFD_PKT_BATCH);
    assert_int_equal(q.pass, 3);
    assert_int_equal(q.nr_pages, 3);
    assert_int_equal(q.nr_zero, 2);
    assert_int_equal(q.data_crc, 0xdeadbeef);
    assert_true(multifd_packet_check_gfns(buf, &q, 0x8000, out, &err));
    assert_memory_equal(out, gfns, sizeof(gfns));

    /* A flipped bit anywhere in the header or the gfn list: the header CRC. */
    for (unsigned i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 0x80;
        bool ok = multifd_packet_decode(buf, &q, NULL) &&
                  multifd_packet_check_gfns(buf, &q, 0x8000, out, NULL);
        assert_false(ok);
        buf[i] ^= 0x80;
    }
    /* A gfn beyond the guest, CRC and all correct. */
    assert_false(multifd_packet_check_gfns(buf, &p, 0x7fff, out, &err));
    assert_error(err, "gfn 0x7fff beyond the guest");
    g_clear_error(&err);
}

static void expect_bad(struct multifd_packet p, const char *msg)
{
    uint8_t buf[MULTIFD_PKT_HDR_SIZE];
    struct multifd_packet q;
    GError *err = NULL;

    /* The header alone: decode looks at nothing after it. */
    multifd_packet_encode(&(struct multifd_packet){ .type = p.type }, NULL, buf);
    mig_store_le32(buf + 4, p.flags);
    mig_store_le32(buf + 8, p.pass);
    mig_store_le32(buf + 12, p.nr_pages);
    mig_store_le32(buf + 16, p.nr_zero);
    mig_store_le32(buf + 20, p.payload_len);
    mig_store_le32(buf + 24, p.data_crc);
    assert_false(multifd_packet_decode(buf, &q, &err));
    assert_error(err, msg);
    g_clear_error(&err);
}

static void test_bad_packets(void **state)
{
    (void)state;
    expect_bad((struct multifd_packet){ .type = 7 }, "unknown packet type 7");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH, .pass = 1 }, "0 data + 0 zero");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH,
                                        .nr_pages = 1000,
                                        .nr_zero = 100,
                                        .payload_len = 1000 * PAGE },
               "1000 data + 100 zero pages (1 to 1024)");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH,
                                        .nr_pages = 0xffffffffu,
                                        .nr_zero = 2 },
               "(1 to 1024)");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH,
                                        .nr_pages = 2,
                                        .payload_len = PAGE },
               "payload of 4096 octets for 2 none pages");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH,
                                        .flags = PAGE_COMPRESSION_ZSTD,
                                        .nr_pages = 2,
                                        .payload_len = 2 * PAGE },
               "payload of 8192 octets for 2 zstd pages");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_BATCH,
                                        .flags = 3,
                                        .nr_pages = 1,
                                        .payload_len = PAGE },
               "unknown encoding 3");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_SYNC, .flags = 2 },
               "SYNC: unknown flags 0x2");
    expect_bad((struct multifd_packet){ .type = MULTIFD_PKT_SYNC, .nr_pages = 1 },
               "SYNC: reserved fields not zero");
}

static void test_sync(void **state)
{
    struct multifd_packet p = { .type = MULTIFD_PKT_SYNC,
                                .pass = 9,
                                .flags = MULTIFD_SYNC_F_FINAL };
    uint8_t buf[MULTIFD_PKT_HDR_SIZE];
    struct multifd_packet q;
    GError *err = NULL;

    (void)state;
    assert_int_equal(multifd_packet_encode(&p, NULL, buf), MULTIFD_PKT_HDR_SIZE);
    assert_true(multifd_packet_decode(buf, &q, &err));
    assert_int_equal(q.pass, 9);
    assert_int_equal(q.flags, MULTIFD_SYNC_F_FINAL);
    buf[8] ^= 1; /* the pass */
    assert_false(multifd_packet_decode(buf, &q, &err));
    assert_error(err, "SYNC: header CRC mismatch");
    g_clear_error(&err);
}

static void test_compression(void **state)
{
    size_t len = 16 * PAGE;
    uint8_t *src = g_malloc(len), *z = g_malloc(2 * len), *out = g_malloc(len);
    GError *err = NULL;

    (void)state;
    for (size_t i = 0; i < len; i++)
        src[i] = (uint8_t)(i / 64);
    for (enum page_compression comp = PAGE_COMPRESSION_ZLIB; comp <= PAGE_COMPRESSION_ZSTD;
         comp++) {
        size_t n = page_compress(comp, 1, src, len, z, 2 * len);
        assert_true(n > 0 && n < len);
        assert_true(page_decompress(comp, z, n, out, len, &err));
        assert_memory_equal(out, src, len);
        /* A batch that says it holds one page less than the frame does. */
        assert_false(page_decompress(comp, z, n, out, len - PAGE, &err));
        g_clear_error(&err);
        /* Truncated. */
        assert_false(page_decompress(comp, z, n / 2, out, len, &err));
        g_clear_error(&err);
    }
    /* Incompressible data is sent raw: compress says 0. */
    uint32_t x = 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        src[i] = (uint8_t)(x >> 23);
    }
    assert_int_equal(page_compress(PAGE_COMPRESSION_ZSTD, 1, src, len, z, 2 * len), 0);
    assert_int_equal(page_compress(PAGE_COMPRESSION_ZLIB, 1, src, len, z, 2 * len), 0);
    assert_int_equal(page_compress(PAGE_COMPRESSION_NONE, 1, src, len, z, 2 * len), 0);
    g_free(src);
    g_free(z);
    g_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_announce),
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_batch_round_trip),
        cmocka_unit_test(test_bad_packets),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_compression),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
