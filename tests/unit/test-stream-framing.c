/* test-stream-framing.c: the stream framing: golden bytes, the return path, and hostile input. */
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

/* ---- golden bytes ---- */

static void test_golden_header(void **state)
{
    static const uint8_t crc_on[32] = {
        'T',  'E',  'R',  'N',  'M', 'I', 'G', 0, 0x01, 0x00, 0x00, 0x00, /* version 1 */
        0x01, 0x00, 0x00, 0x00,                                           /* flags: CRC-32 */
        0x0c, 0x00, 0x00, 0x00,                                           /* page_shift 12 */
        0,    0,    0,    0,    0,   0,   0,   0,                         /* reserved */
        0xa0, 0xaa, 0xb6, 0x39, /* header CRC 0x39b6aaa0 */
    };
    static const uint8_t crc_off[32] = {
        'T',  'E',  'R',  'N',  'M',  'I',  'G',  0,    0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0,    0,
        0,    0,    0,    0,    0,    0,    0x31, 0x3b, 0xde, 0x97, /* 0x97de3b31 */
    };
    struct channel *ch;
    struct stream_writer w;
    struct stream_reader r;
    GByteArray *out;

    (void)state;
    ch = channel_mem_new(NULL, 0);
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_true(stream_write_header(&w, NULL));
    out = take_bytes(ch);
    assert_int_equal(out->len, 32);
    assert_memory_equal(out->data, crc_on, 32);
    g_byte_array_unref(out);
    channel_close(ch);

    ch = channel_mem_new(NULL, 0);
    stream_writer_init(&w, ch, 0);
    assert_true(stream_write_header(&w, NULL));
    out = take_bytes(ch);
    assert_memory_equal(out->data, crc_off, 32);
    g_byte_array_unref(out);
    channel_close(ch);

    ch = channel_mem_new(crc_on, sizeof(crc_on));
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    assert_int_equal(r.flags, MIG_HDR_F_CRC32);
    assert_int_equal(r.page_shift, 12);
    channel_close(ch);
}

static void test_golden_record(void **state)
{
    static const uint8_t end_rec[] = {
        0x09, 0x00, 0x00, 0x00, /* type END */
        0x00, 0x00, 0x00, 0x00, /* length 0 */
        0x42, 0xc4, 0x6d, 0x7a, /* CRC 0x7a6dc442 */
        0x00, 0x00, 0x00, 0x00, /* reserved */
    };
    static const uint8_t err_rec[] = {
        0x02, 0x01, 0x00, 0x00,             /* type RP_ERROR (0x102) */
        0x03, 0x00, 0x00, 0x00,             /* length 3 */
        'a',  'b',  'c',  0,    0, 0, 0, 0, /* body + 5 bytes padding */
        0x33, 0xe7, 0x76, 0x2b,             /* CRC 0x2b76e733 */
        0x00, 0x00, 0x00, 0x00,
    };
    static const uint8_t err_rec_nocrc[] = {
        0x02, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 'a', 'b', 'c', 0, 0, 0, 0, 0,
    };
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_reader r;
    struct stream_record rec;
    GByteArray *out;
    char *msg = NULL;

    (void)state;
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_true(stream_write_empty(&w, MIG_REC_END, NULL));
    assert_true(stream_write_rp_error(&w, "abc", NULL));
    out = take_bytes(ch);
    assert_int_equal(out->len, sizeof(end_rec) + sizeof(err_rec));
    assert_memory_equal(out->data, end_rec, sizeof(end_rec));
    assert_memory_equal(out->data + sizeof(end_rec), err_rec, sizeof(err_rec));
    g_byte_array_unref(out);
    channel_close(ch);

    ch = channel_mem_new(NULL, 0);
    stream_writer_init(&w, ch, 0);
    assert_true(stream_write_rp_error(&w, "abc", NULL));
    out = take_bytes(ch);
    assert_int_equal(out->len, sizeof(err_rec_nocrc));
    assert_memory_equal(out->data, err_rec_nocrc, sizeof(err_rec_nocrc));
    g_byte_array_unref(out);
    channel_close(ch);

    /* And back: the return path record decodes. */
    ch = channel_mem_new(err_rec, sizeof(err_rec));
    stream_reader_init(&r, ch, true);
    r.flags = MIG_HDR_F_CRC32;
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_int_equal(rec.type, MIG_RP_ERROR);
    assert_true(stream_parse_rp_error(&rec, &msg, NULL));
    assert_string_equal(msg, "abc");
    g_free(msg);
    stream_reader_cleanup(&r);
    channel_close(ch);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(mig_rec_type_name(MIG_REC_PAGE_DATA), "PAGE_DATA");
    assert_string_equal(mig_rec_type_name(MIG_REC_END), "END");
    assert_string_equal(mig_rec_type_name(MIG_RP_RESUMED), "RESUMED");
    assert_string_equal(mig_rec_type_name(0), "UNKNOWN");
    assert_string_equal(mig_rec_type_name(0x42), "UNKNOWN");
    assert_string_equal(mig_rec_type_name(MIG_REC_OPTIONAL | MIG_REC_END), "UNKNOWN");
    assert_int_equal(mig_rec_padding(0), 0);
    assert_int_equal(mig_rec_padding(3), 5);
    assert_int_equal(mig_rec_padding(8), 0);
}

static void test_return_path_round_trip(void **state)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_reader r;
    struct stream_record rec;
    GByteArray *s;
    char *msg = NULL;
    char long_msg[MIG_RP_ERROR_MAX + 10];
    GError *err = NULL;

    (void)state;
    memset(long_msg, 'x', sizeof(long_msg) - 1);
    long_msg[sizeof(long_msg) - 1] = 0;
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_write_empty(&w, MIG_RP_READY, NULL));
    assert_true(stream_write_rp_error(&w, "RAM size differs", NULL));
    assert_true(stream_write_rp_error(&w, long_msg, NULL));
    assert_true(stream_write_empty(&w, MIG_RP_RESUMED, NULL));
    /* A forward-stream type in the return path is unknown there. */
    assert_true(stream_write_empty(&w, MIG_REC_END, NULL));
    s = take_bytes(ch);
    channel_close(ch);

    ch = channel_mem_new(s->data, s->len);
    stream_reader_init(&r, ch, true);
    assert_true(stream_read_header(&r, NULL));
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_int_equal(rec.type, MIG_RP_READY);
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_true(stream_parse_rp_error(&rec, &msg, NULL));
    assert_string_equal(msg, "RAM size differs");
    g_free(msg);
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_true(stream_parse_rp_error(&rec, &msg, NULL));
    assert_int_equal(strlen(msg), MIG_RP_ERROR_MAX);
    g_free(msg);
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_int_equal(rec.type, MIG_RP_RESUMED);
    assert_false(stream_read_record(&r, &rec, &err));
    assert_error(err, "unknown mandatory record type 0x00000009");
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);
}

/* ---- hostile input ---- */

static void test_truncated_everywhere(void **state)
{
    (void)state;
    for (uint32_t flags = 0; flags <= MIG_HDR_F_CRC32; flags++) {
        GByteArray *s = build_stream(flags);

        for (size_t cut = 0; cut < s->len; cut++) {
            GError *err = NULL;

            if (read_all(s->data, cut, &err))
                fail_msg("stream cut at %zu of %u was accepted", cut, s->len);
            assert_non_null(err);
            g_clear_error(&err);
        }
        g_byte_array_unref(s);
    }
}

static void test_truncated_message(void **state)
{
    GByteArray *s = build_stream(MIG_HDR_F_CRC32);
    GError *err = NULL;

    (void)state;
    assert_false(read_all(s->data, 10, &err));
    assert_error(err, "stream header: unexpected end of stream");
    g_clear_error(&err);
    assert_false(read_all(s->data, 36, &err));
    assert_error(err, "record 0 at offset 32: truncated header");
    g_clear_error(&err);
    assert_false(read_all(s->data, 50, &err));
    assert_error(err, "record 0 (VM_CONFIG) at offset 32: truncated body");
    g_clear_error(&err);
    g_byte_array_unref(s);
}

static void test_flipped_byte_everywhere(void **state)
{
    static const uint8_t masks[] = { 0x01, 0x80, 0xff };
    GByteArray *s = build_stream(MIG_HDR_F_CRC32);

    (void)state;
    for (size_t i = 0; i < s->len; i++) {
        for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
            GError *err = NULL;

            s->data[i] ^= masks[m];
            if (read_all(s->data, s->len, &err))
                fail_msg("flipping byte %zu with 0x%02x was not detected", i, masks[m]);
            assert_non_null(err);
            g_clear_error(&err);
            s->data[i] ^= masks[m];
        }
    }
    assert_true(read_all(s->data, s->len, NULL));
    g_byte_array_unref(s);
}

static void test_crc_mismatch_message(void **state)
{
    GByteArray *s = build_stream(MIG_HDR_F_CRC32);
    GError *err = NULL;

    (void)state;
    s->data[32 + 8 + 100] ^= 0x10; /* inside the VM_CONFIG body */
    assert_false(read_all(s->data, s->len, &err));
    assert_error(err, "record 0 (VM_CONFIG) at offset 32: CRC mismatch");
    g_clear_error(&err);
    g_byte_array_unref(s);
}

static void expect_header_error(const uint8_t *h, const char *msg)
{
    struct channel *ch = channel_mem_new(h, 32);
    struct stream_reader r;
    GError *err = NULL;

    stream_reader_init(&r, ch, false);
    assert_false(stream_read_header(&r, &err));
    assert_error(err, msg);
    g_clear_error(&err);
    channel_close(ch);
}

static void test_bad_header(void **state)
{
    uint8_t h[32];

    (void)state;
    make_header(h, 1, 0, 12);
    h[0] = 'X';
    expect_header_error(h, "bad magic");
    make_header(h, 7, 0, 12);
    expect_header_error(h, "unsupported stream version 7 (this Tern reads 1)");
    make_header(h, 1, 0, 13);
    expect_header_error(h, "page size 8192 not supported");
    make_header(h, 1, 0, 200);
    expect_header_error(h, "page shift 200 not supported");
    make_header(h, 1, 0x10, 12);
    expect_header_error(h, "unknown flags 0x10");
    make_header(h, 1, MIG_HDR_F_MAPPED_RAM | MIG_HDR_F_RAM_FD, 12);
    expect_header_error(h, "a mapped-RAM file cannot pass RAM as memfds");
    make_header(h, 1, 0, 12);
    h[21] = 1;
    expect_header_error(h, "CRC mismatch");
    h[28] ^= 1; /* "fix" the CRC the other way: now the CRC is wrong instead */
    expect_header_error(h, "CRC mismatch");
}

static void test_oversized_length(void **state)
{
    uint8_t buf[48];
    struct channel *ch;
    struct stream_reader r;
    struct stream_record rec;
    struct stream_writer w;
    GError *err = NULL;

    (void)state;
    make_header(buf, 1, MIG_HDR_F_CRC32, 12);
    mig_store_le32(buf + 32, MIG_REC_PAGE_DATA);
    mig_store_le32(buf + 36, MIG_REC_LENGTH_MAX + 1);
    memset(buf + 40, 0, 8);
    ch = channel_mem_new(buf, sizeof(buf));
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    assert_false(stream_read_record(&r, &rec, &err));
    assert_error(err, "record 0 (PAGE_DATA) at offset 32: length 67108865 exceeds the maximum");
    assert_null(r.buf); /* refused before allocating */
    g_clear_error(&err);
    channel_close(ch);

    /* 0xffffffff too, and the writer refuses to produce one. */
    mig_store_le32(buf + 36, UINT32_MAX);
    ch = channel_mem_new(buf, sizeof(buf));
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    assert_false(stream_read_record(&r, &rec, &err));
    assert_error(err, "exceeds the maximum");
    g_clear_error(&err);
    channel_close(ch);

    ch = channel_mem_new(NULL, 0);
    stream_writer_init(&w, ch, 0);
    assert_false(stream_record_begin(&w, MIG_REC_VM_STATE, MIG_REC_LENGTH_MAX + 8, &err));
    assert_error(err, "exceeds the maximum");
    g_clear_error(&err);
    channel_close(ch);
}

static void test_unknown_types(void **state)
{
    uint8_t body[5] = { 1, 2, 3, 4, 5 };
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_part part = { body, sizeof(body), STREAM_PART_COPY };
    struct stream_reader r;
    struct stream_record rec;
    GByteArray *s;
    GError *err = NULL;

    (void)state;
    /* Optional unknown records are skipped, even before VM_CONFIG. */
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_write_record(&w, MIG_REC_OPTIONAL | 0x42, &part, 1, NULL));
    assert_true(stream_write_empty(&w, MIG_REC_OPTIONAL | 0x43, NULL));
    assert_true(stream_write_record(&w, 0x42, &part, 1, NULL));
    s = take_bytes(ch);
    channel_close(ch);

    ch = channel_mem_new(s->data, s->len);
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_true(rec.skip);
    assert_int_equal(rec.type, MIG_REC_OPTIONAL | 0x42);
    assert_int_equal(rec.length, 5);
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_true(rec.skip);
    assert_false(stream_read_record(&r, &rec, &err));
    assert_error(err, "record 2 (UNKNOWN) at offset 72: unknown mandatory record type 0x00000042");
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);

    /* The whole stream reader also accepts a skippable record mid-stream. */
    g_byte_array_unref(s);
    s = build_stream(MIG_HDR_F_CRC32);
    {
        GByteArray *t = g_byte_array_new();
        GByteArray *opt = one_record(MIG_HDR_F_CRC32, MIG_REC_OPTIONAL | 7, body, 5);

        g_byte_array_append(t, s->data, 32);
        g_byte_array_append(t, opt->data + 32, opt->len - 32);
        g_byte_array_append(t, s->data + 32, s->len - 32);
        assert_true(read_all(t->data, t->len, NULL));
        g_byte_array_unref(t);
        g_byte_array_unref(opt);
    }
    g_byte_array_unref(s);

    /* An empty type with a body is refused. */
    s = one_record(0, MIG_REC_STATIC_END, body, 5);
    assert_false(read_one(s, &r, &ch, &rec, &err));
    assert_error(err, "no body");
    g_clear_error(&err);
    channel_close(ch);
    g_byte_array_unref(s);
}

static void test_nonzero_padding(void **state)
{
    uint8_t body[3] = { 'a', 'b', 'c' };
    struct stream_reader r;
    struct stream_record rec;
    struct channel *ch;
    GByteArray *s;
    GError *err = NULL;

    (void)state;
    /* Without CRCs: the padding check catches it. */
    s = one_record(0, MIG_REC_OPTIONAL | 0x99, body, sizeof(body));
    s->data[32 + 8 + 3] = 0x01;
    assert_false(read_one(s, &r, &ch, &rec, &err));
    assert_error(err, "record 0 (UNKNOWN) at offset 32: padding is not zero");
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);

    /* With CRCs, even a CRC computed over the bad padding does not help. */
    s = one_record(MIG_HDR_F_CRC32, MIG_REC_OPTIONAL | 0x99, body, sizeof(body));
    s->data[32 + 8 + 7] = 0x80;
    mig_store_le32(s->data + 32 + 16, (uint32_t)crc32(0, s->data + 32, 16));
    assert_false(read_one(s, &r, &ch, &rec, &err));
    assert_error(err, "padding is not zero");
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);

    /* And a non-zero reserved half of the trailer. */
    s = one_record(MIG_HDR_F_CRC32, MIG_REC_OPTIONAL | 0x99, body, sizeof(body));
    s->data[32 + 16 + 5] = 1;
    assert_false(read_one(s, &r, &ch, &rec, &err));
    assert_error(err, "reserved field is not zero");
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);
}

/* ---- per-type limits: what a hostile header can make the target commit ---- */

/* A stream: header (flags), then a record header of (type) claiming (length)
 * bytes, followed by only (have) bytes of zeros. */
static GByteArray *lying_record(uint32_t flags, uint32_t type, uint32_t length, size_t have)
{
    GByteArray *s = g_byte_array_new();
    uint8_t h[40];

    make_header(h, 1, flags, 12);
    mig_store_le32(h + 32, type);
    mig_store_le32(h + 36, length);
    g_byte_array_append(s, h, sizeof(h));
    g_byte_array_set_size(s, (guint)(sizeof(h) + have));
    memset(s->data + sizeof(h), 0, have);
    return s;
}

/* Each type's own maximum is refused before a byte of the body is read or
 * any memory is allocated: 64 MiB is no longer the bound for VM_CONFIG. */
static void test_type_maximum_before_allocation(void **state)
{
    static const struct {
        uint32_t type, length;
        const char *msg;
    } cases[] = {
        { MIG_REC_VM_CONFIG, 2721, "length 2721 exceeds the maximum VM_CONFIG body of 2720 bytes" },
        { MIG_REC_VM_CONFIG, MIG_REC_LENGTH_MAX, "the maximum VM_CONFIG body of" },
        { MIG_REC_ITERATION_END, 49, "the maximum ITERATION_END body of 48 bytes" },
        { MIG_REC_MAPPED_RAM, 4096, "the maximum MAPPED_RAM body of" },
        { MIG_REC_VCPU_STATE, 8 + STREAM_STATE_FDT_MAX + 1, "the maximum VCPU_STATE body of" },
        { MIG_REC_VM_STATE, STREAM_STATE_FDT_MAX + 1, "the maximum VM_STATE body of" },
        { MIG_REC_DEVICE_STATE, 40 + STREAM_STATE_FDT_MAX + 1, "the maximum DEVICE_STATE body of" },
        { MIG_REC_ZERO_PAGES, 8 + 16 * STREAM_ZERO_PAGES_MAX_RANGES + 16,
          "the maximum ZERO_PAGES body of" },
        { MIG_REC_PAGE_DATA, (uint32_t)STREAM_PAGE_DATA_MAX + 8, "the maximum PAGE_DATA body of" },
        { MIG_REC_RAM_FDS, 8 + 16 * 5, "the maximum RAM_FDS body of" },
    };
    struct stream_reader r;
    struct stream_record rec;
    struct channel *ch;
    GError *err = NULL;

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        GByteArray *s = lying_record(0, cases[i].type, cases[i].length, 64);

        assert_false(read_one(s, &r, &ch, &rec, &err));
        assert_error(err, cases[i].msg);
        assert_null(r.buf);                         /* refused before allocating */
        assert_int_equal(channel_read_pos(ch), 40); /* and before reading the body */
        g_clear_error(&err);
        stream_reader_cleanup(&r);
        channel_close(ch);
        g_byte_array_unref(s);
    }
    /* The table states them, and they hold what the writers put. */
    assert_int_equal(stream_record_type_find(MIG_REC_PAGE_DATA)->max_length, STREAM_PAGE_DATA_MAX);
    assert_true(STREAM_PAGE_DATA_MAX <= MIG_REC_LENGTH_MAX);
    assert_int_equal(stream_record_type_find(MIG_REC_VM_STATE)->max_length, STREAM_STATE_FDT_MAX);
}

/* A record that announces far more than arrives commits memory only for
 * what came: one chunk, not the declared length. */
static void test_memory_follows_data(void **state)
{
    struct stream_reader r;
    struct stream_record rec;
    struct channel *ch;
    GError *err = NULL;
    GByteArray *s;

    (void)state;
    /* A full-size PAGE_DATA claim with 100 bytes behind it. */
    s = lying_record(0, MIG_REC_PAGE_DATA, (uint32_t)STREAM_PAGE_DATA_MAX, 100);
    assert_false(read_one(s, &r, &ch, &rec, &err));
    assert_error(err, "truncated body");
    assert_true(r.buf_size <= STREAM_READ_CHUNK);
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);

    /* 600 KiB that do arrive: the buffer grows with them, to the body. */
    s = lying_record(0, MIG_REC_OPTIONAL | 0x77, 600 * 1024, 600 * 1024);
    assert_true(read_one(s, &r, &ch, &rec, NULL));
    assert_true(rec.skip);
    assert_null(rec.body);                        /* a skipped body is not kept */
    assert_true(r.buf_size <= STREAM_READ_CHUNK); /* only passed through a chunk */
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);

    /* A 2 MiB PAGE_DATA body: read in chunks, whole and intact at the end. */
    s = lying_record(0, MIG_REC_PAGE_DATA, 2u << 20, 2u << 20);
    for (size_t i = 40; i < s->len; i++)
        s->data[i] = (uint8_t)(i * 7);
    channel_mem_set_max_io(ch = channel_mem_new(s->data, s->len), 1000);
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_int_equal(rec.length, 2u << 20);
    assert_memory_equal(rec.body, s->data + 40, 2u << 20);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);
}

/* Once the reader knows the VM, RAM_INDEX may be no longer than that VM's
 * index with every page present. */
static void test_ram_index_per_vm(void **state)
{
    const uint32_t flags = MIG_HDR_F_MAPPED_RAM | MIG_HDR_F_CRC32;
    /* 64 frames: 16 + 8 bytes of bitmap + 64 CRCs. */
    const uint32_t exact = 16 + 8 + 4 * 64;
    struct stream_reader r;
    struct stream_record rec;
    struct channel *ch;
    GError *err = NULL;
    GByteArray *s = lying_record(flags, MIG_REC_RAM_INDEX, exact + 8, exact + 8);

    (void)state;
    ch = channel_mem_new(s->data, s->len);
    stream_reader_init(&r, ch, false);
    r.nr_gfns = 64;
    assert_true(stream_read_header(&r, NULL));
    assert_false(stream_read_record(&r, &rec, &err));
    assert_error(err, "exceeds the maximum RAM_INDEX body of 280 bytes");
    assert_null(r.buf);
    g_clear_error(&err);
    stream_reader_cleanup(&r);
    channel_close(ch);
    assert_int_equal(stream_record_max_length(stream_record_type_find(MIG_REC_RAM_INDEX), &r),
                     exact);
    g_byte_array_unref(s);
}

/* The writers never put what the reader refuses. */
static void test_writers_respect_maxima(void **state)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_gfn_range *ranges = g_new0(struct stream_gfn_range,
                                             STREAM_ZERO_PAGES_MAX_RANGES + 1);
    void *fdt = g_malloc0(STREAM_STATE_FDT_MAX + 4096);
    GError *err = NULL;

    (void)state;
    stream_writer_init(&w, ch, 0);
    for (unsigned i = 0; i <= STREAM_ZERO_PAGES_MAX_RANGES; i++)
        ranges[i] = (struct stream_gfn_range){ 2 * i, 1 };
    assert_false(stream_write_zero_pages(&w, ranges, STREAM_ZERO_PAGES_MAX_RANGES + 1, &err));
    assert_error(err, "ZERO_PAGES: 4097 ranges (1 to 4096)");
    g_clear_error(&err);
    assert_true(stream_write_zero_pages(&w, ranges, STREAM_ZERO_PAGES_MAX_RANGES, NULL));
    assert_int_equal(fdt_create_empty_tree(fdt, STREAM_STATE_FDT_MAX + 4096), 0);
    assert_false(stream_write_vm_state(&w, fdt, &err));
    assert_error(err, "is too large");
    g_clear_error(&err);
    g_free(fdt);
    g_free(ranges);
    channel_close(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_header),
        cmocka_unit_test(test_golden_record),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_return_path_round_trip),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_truncated_message),
        cmocka_unit_test(test_flipped_byte_everywhere),
        cmocka_unit_test(test_crc_mismatch_message),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_type_maximum_before_allocation),
        cmocka_unit_test(test_memory_follows_data),
        cmocka_unit_test(test_ram_index_per_vm),
        cmocka_unit_test(test_writers_respect_maxima),
        cmocka_unit_test(test_unknown_types),
        cmocka_unit_test(test_nonzero_padding),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
