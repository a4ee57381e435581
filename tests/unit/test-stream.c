/* test-stream.c: the migration stream v1: golden bytes, round trips, and hostile input. */
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

#define PAGE 4096u
#define NR_GFNS 0x100000ULL         /* 4 GiB worth of frames */

/* ---- helpers ---- */

/* Take the bytes written to a mem channel (after a flush). */
static GByteArray *take_bytes(struct channel *ch)
{
    GByteArray *out = g_byte_array_new();
    const uint8_t *data;
    size_t len;

    assert_true(channel_flush(ch, NULL));
    data = channel_mem_data(ch, &len);
    g_byte_array_append(out, data, (guint)len);
    return out;
}

static void *make_fdt(uint32_t value)
{
    void *fdt = g_malloc0(4096);

    assert_int_equal(fdt_create_empty_tree(fdt, 4096), 0);
    assert_int_equal(fdt_setprop_u32(fdt, 0, "value", value), 0);
    assert_int_equal(fdt_pack(fdt), 0);
    return fdt;
}

/* The records that end every test stream: two vCPUs, the VM, one device
 * (serial, (instance)), then END. The blobs are make_fdt(100, 101, 200, 300). */
static void write_state_and_end(struct stream_writer *w, uint32_t instance)
{
    void *fdt0 = make_fdt(100), *fdt1 = make_fdt(101), *fdtvm = make_fdt(200);
    void *fdtdev = make_fdt(300);

    assert_true(stream_write_vcpu_state(w, 0, fdt0, NULL));
    assert_true(stream_write_vcpu_state(w, 1, fdt1, NULL));
    assert_true(stream_write_vm_state(w, fdtvm, NULL));
    assert_true(stream_write_device_state(w, "serial", instance, fdtdev, NULL));
    assert_true(stream_write_empty(w, MIG_REC_END, NULL));
    g_free(fdt0);
    g_free(fdt1);
    g_free(fdtvm);
    g_free(fdtdev);
}

static void fill_page(uint8_t *p, unsigned seed)
{
    for (unsigned i = 0; i < PAGE; i++)
        p[i] = (uint8_t)(seed * 31 + i * 7);
}

static void make_config(struct stream_vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = (3ULL << 30) + (1ULL << 30);    /* 4 GiB: 3 low + 1 high */
    cfg->nr_gfns = (5ULL << 30) >> 12;
    cfg->nr_vcpus = 2;
    cfg->nr_regions = 2;
    cfg->regions[0].gpa = 0;
    cfg->regions[0].size = 3ULL << 30;
    cfg->regions[1].gpa = 4ULL << 30;
    cfg->regions[1].size = 1ULL << 30;
    cfg->cpuid_nr_entries = 17;
    for (int i = 0; i < 32; i++)
        cfg->cpuid_sha256[i] = (uint8_t)i;
    strcpy(cfg->machine, "tern-pc");
    cfg->nr_devices = 2;
    strcpy(cfg->devices[0].id, "serial");
    strcpy(cfg->devices[1].id, "serial");
    cfg->devices[1].instance = 1;
}

static uint8_t pages[3][PAGE];
static uint8_t zbuf[PAGE];
static size_t zlen;

/* A complete small stream with every record type. */
static GByteArray *build_stream(uint32_t flags)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_vm_config cfg;
    struct stream_gfn_range ranges[] = { { 0x10, 4 }, { 0x100, 0x80 } };
    struct stream_iteration_end it1 = { .pass = 1, .pages_sent = 2, .zero_pages = 0x84,
                                        .bytes_sent = 9000, .dirty_pages = 0x86,
                                        .duration_ns = 123456 };
    struct stream_iteration_end it2 = { .pass = 2, .flags = MIG_ITER_F_FINAL, .pages_sent = 1 };
    GByteArray *out;

    fill_page(pages[0], 1);
    fill_page(pages[1], 2);
    memset(pages[2], 0x55, PAGE);
    zlen = stream_page_compress(pages[2], PAGE, 6, zbuf, sizeof(zbuf));
    assert_true(zlen > 0 && zlen < PAGE);

    struct stream_page batch[] = {
        { .gfn = 0x20, .encoding = MIG_PAGE_ENC_RAW, .length = PAGE, .data = pages[0] },
        { .gfn = 0x21, .encoding = MIG_PAGE_ENC_ZLIB, .length = (uint32_t)zlen, .data = zbuf },
    };
    struct stream_page last = { .gfn = 0x22, .encoding = MIG_PAGE_ENC_RAW, .length = PAGE,
                                .data = pages[1] };

    make_config(&cfg);
    stream_writer_init(&w, ch, flags);
    assert_true(stream_write_header(&w, NULL));
    { GError *e = NULL; if (!stream_write_vm_config(&w, &cfg, &e)) fail_msg("%s", e->message); }
    assert_true(stream_write_empty(&w, MIG_REC_STATIC_END, NULL));
    assert_true(stream_write_page_data(&w, batch, 2, true, NULL));
    assert_true(stream_write_zero_pages(&w, ranges, 2, NULL));
    assert_true(stream_write_iteration_end(&w, &it1, NULL));
    assert_true(stream_write_page_data(&w, &last, 1, false, NULL));
    assert_true(stream_write_iteration_end(&w, &it2, NULL));
    write_state_and_end(&w, 1);
    out = take_bytes(ch);
    channel_close(ch);
    return out;
}

struct page_sink {
    unsigned pages;
    unsigned ranges;
    uint64_t zero_total;
    bool fail;
};

static bool sink_page(void *opaque, const struct stream_page *page, GError **errp)
{
    struct page_sink *s = opaque;
    uint8_t buf[PAGE];

    if (!stream_page_decode(page, buf, PAGE, errp))
        return false;
    if (s->fail) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "sink refused");
        return false;
    }
    s->pages++;
    return true;
}

static bool sink_range(void *opaque, uint64_t first, uint64_t n, GError **errp)
{
    struct page_sink *s = opaque;

    (void)first;
    (void)errp;
    s->ranges++;
    s->zero_total += n;
    return true;
}

/* Read and validate a whole stream as the target would: header, records in
 * order, every body parsed, END, then end of stream. */
static bool read_all(const uint8_t *data, size_t len, GError **errp)
{
    struct channel *ch = channel_mem_new(data, len);
    struct stream_reader r;
    struct stream_order o;
    struct stream_record rec;
    struct page_sink sink = { 0 };
    bool ok = false;

    stream_reader_init(&r, ch, false);
    stream_order_init(&o);
    if (!stream_read_header(&r, errp))
        goto out;
    while (!stream_order_done(&o)) {
        struct stream_vm_config cfg;
        struct stream_iteration_end it;
        const void *fdt;
        size_t fdt_len;
        uint32_t idx;
        char id[MIG_NAME_LEN];

        if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp))
            goto out;
        if (rec.skip)
            continue;
        switch (rec.type) {
        case MIG_REC_VM_CONFIG:
            if (!stream_parse_vm_config(&rec, &cfg, errp))
                goto out;
            break;
        case MIG_REC_PAGE_DATA:
            if (!stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, errp))
                goto out;
            break;
        case MIG_REC_ZERO_PAGES:
            if (!stream_parse_zero_pages(&rec, NR_GFNS, sink_range, &sink, errp))
                goto out;
            break;
        case MIG_REC_ITERATION_END:
            if (!stream_parse_iteration_end(&rec, &it, errp))
                goto out;
            break;
        case MIG_REC_VCPU_STATE:
            if (!stream_parse_vcpu_state(&rec, &idx, &fdt, &fdt_len, errp))
                goto out;
            break;
        case MIG_REC_VM_STATE:
            if (!stream_parse_vm_state(&rec, &fdt, &fdt_len, errp))
                goto out;
            break;
        case MIG_REC_DEVICE_STATE:
            if (!stream_parse_device_state(&rec, id, &idx, &fdt, &fdt_len, errp))
                goto out;
            break;
        default:
            break;
        }
    }
    if (!channel_at_eof(ch)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "trailing bytes after END");
        goto out;
    }
    ok = true;
out:
    stream_reader_cleanup(&r);
    channel_close(ch);
    return ok;
}

/* ---- golden bytes ---- */

static void test_golden_header(void **state)
{
    static const uint8_t crc_on[32] = {
        'T', 'E', 'R', 'N', 'M', 'I', 'G', 0,
        0x01, 0x00, 0x00, 0x00,     /* version 1 */
        0x01, 0x00, 0x00, 0x00,     /* flags: CRC-32 */
        0x0c, 0x00, 0x00, 0x00,     /* page_shift 12 */
        0, 0, 0, 0, 0, 0, 0, 0,     /* reserved */
        0xa0, 0xaa, 0xb6, 0x39,     /* header CRC 0x39b6aaa0 */
    };
    static const uint8_t crc_off[32] = {
        'T', 'E', 'R', 'N', 'M', 'I', 'G', 0,
        0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x00, 0x00,
        0, 0, 0, 0, 0, 0, 0, 0,
        0x31, 0x3b, 0xde, 0x97,     /* 0x97de3b31 */
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
        0x09, 0x00, 0x00, 0x00,     /* type END */
        0x00, 0x00, 0x00, 0x00,     /* length 0 */
        0x42, 0xc4, 0x6d, 0x7a,     /* CRC 0x7a6dc442 */
        0x00, 0x00, 0x00, 0x00,     /* reserved */
    };
    static const uint8_t err_rec[] = {
        0x02, 0x01, 0x00, 0x00,     /* type RP_ERROR (0x102) */
        0x03, 0x00, 0x00, 0x00,     /* length 3 */
        'a', 'b', 'c', 0, 0, 0, 0, 0,   /* body + 5 bytes padding */
        0x33, 0xe7, 0x76, 0x2b,     /* CRC 0x2b76e733 */
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

/* ---- round trips ---- */

static void check_round_trip(uint32_t flags)
{
    GByteArray *s = build_stream(flags);
    struct channel *ch = channel_mem_new(s->data, s->len);
    struct stream_reader r;
    struct stream_order o;
    struct stream_record rec;
    struct stream_vm_config cfg, want;
    struct stream_iteration_end it;
    struct page_sink sink = { 0 };
    const void *fdt;
    size_t fdt_len;
    uint32_t idx;
    char id[MIG_NAME_LEN];
    uint8_t page[PAGE];
    GError *err = NULL;

    stream_reader_init(&r, ch, false);
    stream_order_init(&o);
    assert_true(stream_read_header(&r, NULL));
    assert_int_equal(r.flags, flags);

#define NEXT(t) do { \
        assert_true(stream_read_record(&r, &rec, &err)); \
        assert_null(err); \
        assert_int_equal(rec.type, (t)); \
        assert_false(rec.skip); \
        assert_true(stream_order_check(&o, &rec, NULL)); \
    } while (0)

    NEXT(MIG_REC_VM_CONFIG);
    assert_int_equal(rec.index, 0);
    assert_int_equal(rec.offset, 32);
    assert_true(stream_parse_vm_config(&rec, &cfg, NULL));
    make_config(&want);
    assert_true(stream_vm_config_compare(&cfg, &want, NULL));
    assert_memory_equal(&cfg.regions, &want.regions, sizeof(want.regions));
    assert_string_equal(cfg.devices[1].id, "serial");
    assert_int_equal(cfg.devices[1].instance, 1);

    NEXT(MIG_REC_STATIC_END);
    assert_int_equal(rec.length, 0);

    NEXT(MIG_REC_PAGE_DATA);
    assert_true(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, NULL));
    assert_int_equal(sink.pages, 2);
    {
        /* Decode by hand: the zlib page inflates to the original. */
        const uint8_t *d = rec.body + 8 + 16;
        struct stream_page p = { .gfn = mig_load_le64(d), .encoding = mig_load_le32(d + 8),
                                 .length = mig_load_le32(d + 12),
                                 .data = rec.body + 8 + 32 + PAGE };

        assert_int_equal(p.gfn, 0x21);
        assert_int_equal(p.encoding, MIG_PAGE_ENC_ZLIB);
        assert_true(stream_page_decode(&p, page, PAGE, NULL));
        assert_memory_equal(page, pages[2], PAGE);
        assert_memory_equal(rec.body + 8 + 32, pages[0], PAGE);
    }

    NEXT(MIG_REC_ZERO_PAGES);
    assert_true(stream_parse_zero_pages(&rec, NR_GFNS, sink_range, &sink, NULL));
    assert_int_equal(sink.ranges, 2);
    assert_int_equal(sink.zero_total, 0x84);

    NEXT(MIG_REC_ITERATION_END);
    assert_true(stream_parse_iteration_end(&rec, &it, NULL));
    assert_int_equal(it.pass, 1);
    assert_int_equal(it.flags, 0);
    assert_int_equal(it.pages_sent, 2);
    assert_int_equal(it.zero_pages, 0x84);
    assert_int_equal(it.bytes_sent, 9000);
    assert_int_equal(it.dirty_pages, 0x86);
    assert_int_equal(it.duration_ns, 123456);

    NEXT(MIG_REC_PAGE_DATA);
    assert_true(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, NULL));
    assert_memory_equal(rec.body + 8 + 16, pages[1], PAGE);

    NEXT(MIG_REC_ITERATION_END);
    assert_true(stream_parse_iteration_end(&rec, &it, NULL));
    assert_int_equal(it.pass, 2);
    assert_int_equal(it.flags, MIG_ITER_F_FINAL);

    for (uint32_t i = 0; i < 2; i++) {
        NEXT(MIG_REC_VCPU_STATE);
        assert_true(stream_parse_vcpu_state(&rec, &idx, &fdt, &fdt_len, NULL));
        assert_int_equal(idx, i);
        assert_int_equal(fdt32_to_cpu(*(const fdt32_t *)fdt_getprop(fdt, 0, "value", NULL)),
                         100 + i);
    }
    NEXT(MIG_REC_VM_STATE);
    assert_true(stream_parse_vm_state(&rec, &fdt, &fdt_len, NULL));
    assert_int_equal(fdt32_to_cpu(*(const fdt32_t *)fdt_getprop(fdt, 0, "value", NULL)), 200);
    NEXT(MIG_REC_DEVICE_STATE);
    assert_true(stream_parse_device_state(&rec, id, &idx, &fdt, &fdt_len, NULL));
    assert_string_equal(id, "serial");
    assert_int_equal(idx, 1);
    assert_int_equal(fdt32_to_cpu(*(const fdt32_t *)fdt_getprop(fdt, 0, "value", NULL)), 300);
    NEXT(MIG_REC_END);
    assert_true(stream_order_done(&o));
    assert_true(channel_at_eof(ch));
    assert_int_equal(channel_read_pos(ch), s->len);
#undef NEXT

    /* A record after END is out of order. */
    assert_false(stream_order_check(&o, &rec, &err));
    assert_error(err, "after END");
    g_clear_error(&err);

    stream_reader_cleanup(&r);
    channel_close(ch);
    assert_true(read_all(s->data, s->len, NULL));
    g_byte_array_unref(s);
}

static void test_round_trip_crc(void **state)
{
    (void)state;
    check_round_trip(MIG_HDR_F_CRC32);
}

static void test_round_trip_nocrc(void **state)
{
    (void)state;
    check_round_trip(0);
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
    s->data[32 + 8 + 100] ^= 0x10;      /* inside the VM_CONFIG body */
    assert_false(read_all(s->data, s->len, &err));
    assert_error(err, "record 0 (VM_CONFIG) at offset 32: CRC mismatch");
    g_clear_error(&err);
    g_byte_array_unref(s);
}

/* Header bytes (32), crc flag as given, with the header CRC recomputed after
 * (version, page_shift) are patched. */
static void make_header(uint8_t *h, uint32_t version, uint32_t flags, uint32_t page_shift)
{
    memset(h, 0, 32);
    memcpy(h, "TERNMIG", 8);
    mig_store_le32(h + 8, version);
    mig_store_le32(h + 12, flags);
    mig_store_le32(h + 16, page_shift);
    mig_store_le32(h + 28, (uint32_t)crc32(0, h, 28));
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
    make_header(h, 1, 0x4, 12);
    expect_header_error(h, "unknown flags 0x4");
    make_header(h, 1, 0, 12);
    h[21] = 1;
    expect_header_error(h, "CRC mismatch");
    h[28] ^= 1;     /* "fix" the CRC the other way: now the CRC is wrong instead */
    expect_header_error(h, "CRC mismatch");
}

/* A stream: header with (flags), then one record of (type) with (body, len). */
static GByteArray *one_record(uint32_t flags, uint32_t type, const void *body, size_t len)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_part part = { body, len, STREAM_PART_COPY };
    GByteArray *s;

    stream_writer_init(&w, ch, flags);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_write_record(&w, type, &part, 1, NULL));
    s = take_bytes(ch);
    channel_close(ch);
    return s;
}

/* Read the header and one record of (s); return the record read or the error. */
static bool read_one(GByteArray *s, struct stream_reader *r, struct channel **ch,
                     struct stream_record *rec, GError **errp)
{
    *ch = channel_mem_new(s->data, s->len);
    stream_reader_init(r, *ch, false);
    assert_true(stream_read_header(r, NULL));
    return stream_read_record(r, rec, errp);
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
    assert_null(r.buf);             /* refused before allocating */
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

/* ---- body validation ---- */

static void expect_page_data_error(const uint8_t *body, size_t len, const char *msg)
{
    struct stream_record rec = { .type = MIG_REC_PAGE_DATA, .length = (uint32_t)len,
                                 .body = body, .index = 3, .offset = 1000 };
    struct page_sink sink = { 0 };
    GError *err = NULL;

    assert_false(stream_parse_page_data(&rec, PAGE, NR_GFNS, sink_page, &sink, &err));
    assert_error(err, "record 3 (PAGE_DATA) at offset 1000: ");
    assert_error(err, msg);
    assert_int_equal(sink.pages, 0);       /* nothing handed out */
    g_clear_error(&err);
}

static void test_page_data_validation(void **state)
{
    size_t len = 8 + 2 * 16 + 2 * PAGE;
    uint8_t *b = g_malloc0(len + PAGE);
    struct stream_record rec = { .type = MIG_REC_PAGE_DATA, .body = b };
    struct page_sink sink = { 0 };
    GError *err = NULL;

#define DESC(i) (b + 8 + (i) * 16)
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
    expect_page_data_error(b, len, "page 2 (gfn 0x0): raw length 0");  /* page data as desc 2 */
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
    mig_store_le64(b + 32, NR_GFNS - 10);       /* ends exactly at nr_gfns */
    mig_store_le64(b + 40, NR_GFNS - 1);
    mig_store_le64(b + 48, 1);
    assert_true(stream_parse_zero_pages(&rec, NR_GFNS, sink_range, &sink, NULL));
    assert_int_equal(sink.ranges, 3);
    assert_int_equal(sink.zero_total, NR_GFNS - 10 + 2);

#define EXPECT(msg) do { \
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
    mig_store_le32(b, 0x10000001);      /* count * 16 wraps in 32 bits */
    EXPECT("does not match");
    mig_store_le32(b, 0);
    EXPECT("range count 0");
    mig_store_le32(b, 3);
    rec.length = 4;
    EXPECT("too short");
#undef EXPECT
}

static void test_vm_config_validation(void **state)
{
    struct stream_vm_config cfg, local, out;
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    GByteArray *s;
    struct stream_record rec;
    uint8_t body[160 + 2 * 40];
    GError *err = NULL;

    (void)state;
    make_config(&cfg);
    stream_writer_init(&w, ch, 0);
    { GError *e = NULL; if (!stream_write_vm_config(&w, &cfg, &e)) fail_msg("%s", e->message); }
    s = take_bytes(ch);
    channel_close(ch);
    assert_int_equal(s->len, 8 + sizeof(body));
    memcpy(body, s->data + 8, sizeof(body));
    g_byte_array_unref(s);
    rec = (struct stream_record){ .type = MIG_REC_VM_CONFIG, .length = sizeof(body),
                                  .body = body };
    assert_true(stream_parse_vm_config(&rec, &out, NULL));

#define EXPECT(msg) do { \
        assert_false(stream_parse_vm_config(&rec, &out, &err)); \
        assert_error(err, msg); \
        g_clear_error(&err); \
        memcpy(body, saved, sizeof(body)); \
    } while (0)
    uint8_t saved[sizeof(body)];
    memcpy(saved, body, sizeof(body));

    mig_store_le32(body + 16, 0);
    EXPECT("0 vCPUs");
    mig_store_le32(body + 20, 5);
    EXPECT("5 RAM regions");
    mig_store_le32(body + 24, 3);
    EXPECT("3 devices need 280");
    mig_store_le32(body + 24, 1000000);
    EXPECT("1000000 devices");
    mig_store_le64(body + 0, 1);
    EXPECT("regions sum to");
    mig_store_le64(body + 96 + 16, 2ULL << 30);        /* region 1 inside region 0 */
    EXPECT("region 1");
    mig_store_le64(body + 96 + 16 + 8, UINT64_MAX - 4095);  /* huge size */
    EXPECT("region 1");
    mig_store_le64(body + 8, 1);                        /* nr_gfns too small */
    EXPECT("beyond nr_gfns");
    mig_store_le64(body + 8, UINT64_MAX);
    EXPECT("too large");
    body[96 + 3 * 16] = 1;                              /* unused region not zero */
    EXPECT("unused region 3");
    memset(body + 64, 'a', 32);                         /* machine name unterminated */
    EXPECT("machine name must be");
    body[64 + 3] = '\n';
    EXPECT("non-printable");
    body[64 + 20] = 'x';                                /* garbage after the NUL */
    EXPECT("not NUL-padded");
    memcpy(body + 160 + 40, "serial", 7);               /* device 1 = serial.1 -> .0 dup */
    mig_store_le32(body + 160 + 40 + 32, 0);
    EXPECT("serial instance 0 is listed twice");
    mig_store_le32(body + 160 + 36, 1);
    EXPECT("reserved field is not zero");
    rec.length = 100;
    EXPECT("shorter than 160");
    rec.length = sizeof(body);
#undef EXPECT

    /* The comparison names what differs. */
    make_config(&local);
    assert_true(stream_parse_vm_config(&rec, &out, NULL));
    out.ram_size = 1ULL << 30;
    assert_false(stream_vm_config_compare(&out, &local, &err));
    assert_error(err, "RAM size differs: stream 1024 MiB, this VM 4096 MiB");
    g_clear_error(&err);
    assert_true(stream_parse_vm_config(&rec, &out, NULL));
    local.nr_vcpus = 4;
    assert_false(stream_vm_config_compare(&out, &local, &err));
    assert_error(err, "vCPU count differs: stream 2, this VM 4");
    g_clear_error(&err);
    local.nr_vcpus = 2;
    local.cpuid_sha256[5] ^= 1;
    assert_false(stream_vm_config_compare(&out, &local, &err));
    assert_error(err, "CPUID differs");
    g_clear_error(&err);
    local.cpuid_sha256[5] ^= 1;
    local.nr_devices = 1;
    assert_false(stream_vm_config_compare(&out, &local, &err));
    assert_error(err, "stream device serial.1 does not exist in this VM");
    g_clear_error(&err);

    /* The writer refuses to send an invalid configuration. */
    cfg.nr_vcpus = 0;
    ch = channel_mem_new(NULL, 0);
    stream_writer_init(&w, ch, 0);
    assert_false(stream_write_vm_config(&w, &cfg, &err));
    assert_error(err, "0 vCPUs");
    g_clear_error(&err);
    channel_close(ch);
}

static void test_state_validation(void **state)
{
    void *fdt = make_fdt(1);
    size_t fdt_len = fdt_totalsize(fdt);
    uint8_t *body = g_malloc0(40 + fdt_len + 8);
    struct stream_record rec = { .type = MIG_REC_VCPU_STATE, .body = body };
    const void *f;
    size_t fl;
    uint32_t idx;
    char id[MIG_NAME_LEN];
    GError *err = NULL;

    (void)state;
    mig_store_le32(body, 3);
    memcpy(body + 8, fdt, fdt_len);
    rec.length = (uint32_t)(8 + fdt_len);
    assert_true(stream_parse_vcpu_state(&rec, &idx, &f, &fl, NULL));
    assert_int_equal(idx, 3);
    assert_int_equal(fl, fdt_len);

    rec.length = (uint32_t)(8 + fdt_len + 8);          /* trailing bytes */
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "does not match");
    g_clear_error(&err);
    rec.length = (uint32_t)(8 + fdt_len - 4);          /* cut FDT */
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "bad FDT blob");
    g_clear_error(&err);
    rec.length = 20;
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "too short");
    g_clear_error(&err);
    rec.length = (uint32_t)(8 + fdt_len);
    body[8 + 50] ^= 0xff;                               /* corrupt inside the FDT */
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "FDT");
    g_clear_error(&err);
    body[8 + 50] ^= 0xff;
    assert_false(stream_parse_vm_state(&rec, &f, &fl, &err));
    assert_error(err, "expected a VM_STATE record");
    g_clear_error(&err);

    rec.type = MIG_REC_DEVICE_STATE;
    memset(body, 0, 40);
    memcpy(body, "rtc", 3);
    memcpy(body + 40, fdt, fdt_len);
    rec.length = (uint32_t)(40 + fdt_len);
    assert_true(stream_parse_device_state(&rec, id, &idx, &f, &fl, NULL));
    assert_string_equal(id, "rtc");
    body[0] = 0;
    assert_false(stream_parse_device_state(&rec, id, &idx, &f, &fl, &err));
    assert_error(err, "device id must be");
    g_clear_error(&err);
    g_free(body);
    g_free(fdt);
}

/* Feed (o) a record of (type) with (len) bytes of (body); (ok): accepted,
 * else refused as out of order. */
static void order_step(struct stream_order *o, uint32_t type, const uint8_t *body,
                       uint32_t len, bool ok)
{
    struct stream_record r = { .type = type, .body = body, .length = len };
    GError *err = NULL;

    if (ok) {
        assert_true(stream_order_check(o, &r, NULL));
    } else {
        assert_false(stream_order_check(o, &r, &err));
        assert_error(err, "out of order");
        g_clear_error(&err);
    }
}

/* (b) is an array (its size is the body length) or (none) (no body). */
#define CHECK(t, b, ok) \
    order_step(&o, (t), (b), (uint32_t)(sizeof(b) == sizeof(none) ? 0 : sizeof(b)), (ok))

static void test_order(void **state)
{
    struct stream_order o;
    uint8_t cfg[160] = { 0 };
    uint8_t it[48] = { 0 };
    uint8_t vcpu[12] = { 0 };
    const uint8_t *none = NULL;

    (void)state;
    mig_store_le32(cfg + 16, 2);

    stream_order_init(&o);
    CHECK(MIG_REC_PAGE_DATA, none, false);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_PAGE_DATA, none, false);
    CHECK(MIG_REC_STATIC_END, none, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false);     /* no final pass yet */
    CHECK(MIG_REC_ZERO_PAGES, none, true);
    mig_store_le32(it, 2);
    CHECK(MIG_REC_ITERATION_END, it, false);    /* pass 2 before pass 1 */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_END, none, false);
    mig_store_le32(it, 2);
    mig_store_le32(it + 4, MIG_ITER_F_FINAL);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_PAGE_DATA, none, false);      /* pages after the final pass */
    mig_store_le32(vcpu, 1);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false);     /* vCPU 1 before vCPU 0 */
    mig_store_le32(vcpu, 0);
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VM_STATE, none, false);       /* vCPU 1 missing */
    mig_store_le32(vcpu, 1);
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false);     /* a third vCPU */
    CHECK(MIG_REC_VM_STATE, none, true);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    CHECK(MIG_REC_PAGE_DATA, none, false);
    assert_false(stream_order_done(&o));
    CHECK(MIG_REC_END, none, true);
    assert_true(stream_order_done(&o));
}

/* ---- mapped-RAM files ---- */

#define M_NR_GFNS 64u
#define M_FLAGS (MIG_HDR_F_CRC32 | MIG_HDR_F_MAPPED_RAM)

static const uint64_t m_present[] = { 1, 2, 3, 10, 63 };
static uint8_t m_zeros[1u << 20];

static void make_small_config(struct stream_vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = M_NR_GFNS * PAGE;
    cfg->nr_gfns = M_NR_GFNS;
    cfg->nr_vcpus = 2;
    cfg->nr_regions = 1;
    cfg->regions[0].size = M_NR_GFNS * PAGE;
    strcpy(cfg->machine, "tern-pc");
    cfg->nr_devices = 1;
    strcpy(cfg->devices[0].id, "serial");
}

static void put_zeros(struct channel *ch, uint64_t n)
{
    while (n) {
        size_t k = (size_t)MIN(n, (uint64_t)sizeof(m_zeros));

        channel_put_bytes(ch, m_zeros, k);
        n -= k;
    }
}

/* A complete mapped-RAM file in memory: head, RAM area (zeros where absent),
 * tail. (*layout) receives the MAPPED_RAM values. */
static GByteArray *build_mapped(uint32_t flags, struct stream_mapped_ram *layout)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_vm_config cfg;
    struct stream_mapped_ram m;
    unsigned long *bitmap = bitmap_new(M_NR_GFNS);
    uint32_t crcs[M_NR_GFNS] = { 0 };
    static uint8_t page[PAGE];
    struct stream_iteration_end it1 = { .pass = 1, .pages_sent = 5, .duration_ns = 1000 };
    struct stream_iteration_end it2 = { .pass = 2, .flags = MIG_ITER_F_FINAL, .pages_sent = 1 };
    GByteArray *out;

    make_small_config(&cfg);
    stream_writer_init(&w, ch, flags);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_write_vm_config(&w, &cfg, NULL));
    assert_true(stream_write_empty(&w, MIG_REC_STATIC_END, NULL));
    assert_true(stream_mapped_ram_plan(&w, M_NR_GFNS, &m, NULL));
    assert_int_equal(m.ram_offset, 1u << 20);
    assert_int_equal(m.tail_offset, 2u << 20);
    assert_true(stream_write_mapped_ram(&w, &m, NULL));
    put_zeros(ch, m.ram_offset - channel_write_pos(ch));
    for (uint64_t gfn = 0; gfn < M_NR_GFNS; gfn++) {
        bool present = false;

        for (size_t i = 0; i < ARRAY_SIZE(m_present); i++)
            present |= m_present[i] == gfn;
        if (!present) {
            put_zeros(ch, PAGE);
            continue;
        }
        fill_page(page, (unsigned)gfn + 7);
        bitmap_set_atomic(bitmap, gfn);
        crcs[gfn] = (uint32_t)crc32(0, page, PAGE);
        channel_put_bytes(ch, page, PAGE);
    }
    put_zeros(ch, m.tail_offset - channel_write_pos(ch));
    assert_true(stream_write_ram_index(&w, M_NR_GFNS, bitmap,
                                       (flags & MIG_HDR_F_CRC32) ? crcs : NULL, NULL));
    assert_true(stream_write_iteration_end(&w, &it1, NULL));
    assert_true(stream_write_iteration_end(&w, &it2, NULL));
    write_state_and_end(&w, 0);
    out = take_bytes(ch);
    channel_close(ch);
    free(bitmap);
    if (layout)
        *layout = m;
    return out;
}

struct mapped_check {
    const uint8_t *data;
    size_t len;
    const struct stream_ram_index *idx;
    const struct stream_mapped_ram *m;
    uint64_t pages;
    uint64_t runs;
};

static bool mapped_run(void *opaque, uint64_t first, uint64_t n, uint64_t first_crc,
                       GError **errp)
{
    struct mapped_check *c = opaque;

    c->runs++;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = stream_mapped_page_offset(c->m, first + i);

        if (off + PAGE > c->len) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "gfn 0x%" PRIx64
                        ": the file ends inside the RAM area", first + i);
            return false;
        }
        if (!stream_ram_index_check_page(c->idx, first_crc + i, first + i, c->data + off, errp))
            return false;
        c->pages++;
    }
    return true;
}

/* Read a mapped-RAM file like the restore path: the head from one channel,
 * then the tail from another one positioned at tail_offset (or, with
 * (skip), the same channel skipped forward), pages straight from the buffer. */
static bool read_mapped(const uint8_t *data, size_t len, bool skip, GError **errp)
{
    struct channel *head = channel_mem_new(data, skip ? len : MIN(len, (size_t)65536));
    struct channel *tail = NULL;
    struct stream_reader r;
    struct stream_order o;
    struct stream_record rec;
    struct stream_vm_config cfg;
    struct stream_mapped_ram m;
    struct stream_ram_index idx;
    bool ok = false;

    stream_reader_init(&r, head, false);
    if (!stream_read_header(&r, errp))
        goto out;
    stream_order_init_flags(&o, r.flags);
    if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp) ||
        !stream_parse_vm_config(&rec, &cfg, errp))
        goto out;
    if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp))
        goto out;
    if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp) ||
        !stream_parse_mapped_ram(&rec, r.flags, cfg.nr_gfns, &m, errp))
        goto out;
    if (skip) {
        if (!stream_reader_skip_to(&r, m.tail_offset, errp))
            goto out;
    } else {
        if (m.tail_offset > len) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "the file ends before the tail");
            goto out;
        }
        tail = channel_mem_new(data + m.tail_offset, len - m.tail_offset);
        stream_reader_set_channel(&r, tail, m.tail_offset);
    }
    if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp) ||
        !stream_parse_ram_index(&rec, r.flags, cfg.nr_gfns, &idx, errp))
        goto out;
    assert_int_equal(rec.offset, m.tail_offset);
    {
        struct mapped_check c = { .data = data, .len = len, .idx = &idx, .m = &m };

        if (!stream_ram_index_for_each_run(&idx, 2, mapped_run, &c, errp))
            goto out;
        assert_int_equal(c.pages, idx.nr_present);
    }
    while (!stream_order_done(&o)) {
        struct stream_iteration_end it;
        const void *fdt;
        size_t fdt_len;
        uint32_t n;
        char id[MIG_NAME_LEN];

        if (!stream_read_record(&r, &rec, errp) || !stream_order_check(&o, &rec, errp))
            goto out;
        if ((rec.type == MIG_REC_ITERATION_END && !stream_parse_iteration_end(&rec, &it, errp)) ||
            (rec.type == MIG_REC_VCPU_STATE &&
             !stream_parse_vcpu_state(&rec, &n, &fdt, &fdt_len, errp)) ||
            (rec.type == MIG_REC_VM_STATE && !stream_parse_vm_state(&rec, &fdt, &fdt_len, errp)) ||
            (rec.type == MIG_REC_DEVICE_STATE &&
             !stream_parse_device_state(&rec, id, &n, &fdt, &fdt_len, errp)))
            goto out;
    }
    if (!channel_at_eof(r.ch)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "trailing bytes after END");
        goto out;
    }
    ok = true;
out:
    stream_reader_cleanup(&r);
    channel_close(head);
    channel_close(tail);
    return ok;
}

static void test_mapped_golden(void **state)
{
    static const uint8_t want_hdr_flags[4] = { 0x03, 0, 0, 0 };
    static const uint8_t want_hdr_crc[4] = { 0xc3, 0x8f, 0x16, 0xbe };
    static const uint8_t want[40] = {
        0x0a, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00,     /* MAPPED_RAM, 24 bytes */
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,     /* ram_offset 1 MiB */
        0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* nr_gfns 64 */
        0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00,     /* tail_offset 2 MiB */
        0x59, 0xec, 0x0e, 0x54, 0x00, 0x00, 0x00, 0x00,     /* CRC 0x540eec59 */
    };
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_mapped_ram m;
    GByteArray *b;

    (void)state;
    stream_writer_init(&w, ch, M_FLAGS);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_mapped_ram_plan(&w, 0x40, &m, NULL));
    assert_int_equal(m.ram_offset, 1u << 20);
    assert_int_equal(m.nr_gfns, 0x40);
    assert_int_equal(m.tail_offset, 2u << 20);
    assert_int_equal(stream_mapped_page_offset(&m, 3), (1u << 20) + 3 * PAGE);
    assert_true(stream_write_mapped_ram(&w, &m, NULL));
    b = take_bytes(ch);
    assert_int_equal(b->len, 32 + 40);
    assert_memory_equal(b->data + 12, want_hdr_flags, 4);
    assert_memory_equal(b->data + 28, want_hdr_crc, 4);
    assert_memory_equal(b->data + 32, want, sizeof(want));
    assert_int_equal(stream_record_wire_size(M_FLAGS, 24), 40);
    assert_int_equal(stream_record_wire_size(MIG_HDR_F_MAPPED_RAM, 24), 32);
    assert_int_equal(stream_record_wire_size(0, 1), 16);
    assert_string_equal(mig_rec_type_name(MIG_REC_MAPPED_RAM), "MAPPED_RAM");
    assert_string_equal(mig_rec_type_name(MIG_REC_RAM_INDEX), "RAM_INDEX");
    g_byte_array_unref(b);
    channel_close(ch);
}

static void test_mapped_write_refusals(void **state)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_mapped_ram m = { 1u << 20, 0x40, 2u << 20 };
    unsigned long *bitmap = bitmap_new(16u << 20);
    uint32_t dummy = 0;
    GError *err = NULL;

    (void)state;
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_false(stream_write_mapped_ram(&w, &m, &err));
    assert_error(err, "without the mapped-RAM flag");
    g_clear_error(&err);
    assert_false(stream_write_ram_index(&w, 0x40, bitmap, &dummy, &err));
    assert_error(err, "without the mapped-RAM flag");
    g_clear_error(&err);
    stream_writer_init(&w, ch, M_FLAGS);
    m.tail_offset = 3u << 20;
    assert_false(stream_write_mapped_ram(&w, &m, &err));
    assert_error(err, "tail_offset");
    g_clear_error(&err);
    m.tail_offset = 2u << 20;
    m.ram_offset = 0;
    m.tail_offset = 1u << 20;
    assert_false(stream_write_mapped_ram(&w, &m, &err));
    assert_error(err, "inside the head");
    g_clear_error(&err);
    assert_false(stream_mapped_ram_plan(&w, UINT64_MAX >> 12, &m, &err));
    assert_error(err, "do not fit");
    g_clear_error(&err);
    assert_false(stream_write_ram_index(&w, 0x40, bitmap, NULL, &err));
    assert_error(err, "no page CRCs");
    g_clear_error(&err);
    /* 16 Mi present pages: 64 MiB of CRCs plus the bitmap exceed one record. */
    bitmap_set_range(bitmap, 0, 16u << 20);
    assert_false(stream_write_ram_index(&w, 16u << 20, bitmap, &dummy, &err));
    assert_error(err, "about 60 GiB");
    g_clear_error(&err);
    assert_int_equal(channel_write_pos(ch), 0);
    free(bitmap);
    channel_close(ch);
}

static void expect_mapped_ram_error(uint64_t ram, uint64_t nr, uint64_t tail, uint32_t flags,
                                    uint32_t length, const char *msg)
{
    uint8_t b[32] = { 0 };
    struct stream_record rec = { .type = MIG_REC_MAPPED_RAM, .length = length, .body = b,
                                 .index = 2, .offset = 232 };
    struct stream_mapped_ram m;
    GError *err = NULL;

    mig_store_le64(b, ram);
    mig_store_le64(b + 8, nr);
    mig_store_le64(b + 16, tail);
    assert_false(stream_parse_mapped_ram(&rec, flags, 0x40, &m, &err));
    assert_error(err, "record 2 (MAPPED_RAM) at offset 232: ");
    assert_error(err, msg);
    g_clear_error(&err);
}

static void test_mapped_ram_validation(void **state)
{
    const uint64_t M = 1u << 20;
    uint8_t b[24];
    struct stream_record rec = { .type = MIG_REC_MAPPED_RAM, .length = 24, .body = b,
                                 .offset = 232 };
    struct stream_mapped_ram m;

    (void)state;
    mig_store_le64(b, M);
    mig_store_le64(b + 8, 0x40);
    mig_store_le64(b + 16, 2 * M);
    assert_true(stream_parse_mapped_ram(&rec, M_FLAGS, 0x40, &m, NULL));
    assert_int_equal(m.ram_offset, M);
    assert_int_equal(m.nr_gfns, 0x40);
    assert_int_equal(m.tail_offset, 2 * M);
    /* A RAM area ending exactly on a boundary: no extra MiB. */
    mig_store_le64(b + 8, 256);
    assert_true(stream_parse_mapped_ram(&rec, M_FLAGS, 256, &m, NULL));
    assert_int_equal(m.tail_offset, 2 * M);
    mig_store_le64(b + 8, 257);
    mig_store_le64(b + 16, 3 * M);
    assert_true(stream_parse_mapped_ram(&rec, M_FLAGS, 257, &m, NULL));

    expect_mapped_ram_error(M, 0x40, 2 * M, MIG_HDR_F_CRC32, 24, "lacks the mapped-RAM flag");
    expect_mapped_ram_error(M, 0x40, 2 * M, M_FLAGS, 16, "length 16, expected 24");
    expect_mapped_ram_error(M, 0x40, 2 * M, M_FLAGS, 32, "length 32, expected 24");
    expect_mapped_ram_error(M, 0x41, 2 * M, M_FLAGS, 24, "differs from VM_CONFIG");
    expect_mapped_ram_error(M + 4096, 0x40, 2 * M, M_FLAGS, 24, "not a multiple");
    expect_mapped_ram_error(M, 0x40, 2 * M + 8, M_FLAGS, 24, "not a multiple");
    expect_mapped_ram_error(0, 0x40, M, M_FLAGS, 24, "inside the head");
    expect_mapped_ram_error(M, 0x40, 3 * M, M_FLAGS, 24, "tail_offset 3145728, expected 2097152");
    expect_mapped_ram_error(M, 0x40, M, M_FLAGS, 24, "expected 2097152");
    expect_mapped_ram_error(UINT64_MAX - M + 1, 0x40, 0, M_FLAGS, 24, "overflows");
    expect_mapped_ram_error((uint64_t)INT64_MAX + 1, 0x40, 0, M_FLAGS, 24, "overflows");
}

static void test_mapped_huge_nr_gfns(void **state)
{
    uint8_t b[24];
    struct stream_record rec = { .type = MIG_REC_MAPPED_RAM, .length = 24, .body = b };
    const uint64_t nr = UINT64_MAX >> 12;
    struct stream_mapped_ram m;
    GError *err = NULL;

    (void)state;
    mig_store_le64(b, 1u << 20);
    mig_store_le64(b + 8, nr);
    mig_store_le64(b + 16, 0);
    assert_false(stream_parse_mapped_ram(&rec, M_FLAGS, nr, &m, &err));
    assert_error(err, "overflows");
    g_clear_error(&err);
}

/* A RAM_INDEX body for 64+8 frames: header, 2 bitmap words, CRCs. */
static size_t make_index(uint8_t *b, uint64_t nr_gfns, uint64_t nr_present, uint64_t w0,
                         uint64_t w1, unsigned ncrc)
{
    mig_store_le64(b, nr_gfns);
    mig_store_le64(b + 8, nr_present);
    mig_store_le64(b + 16, w0);
    mig_store_le64(b + 24, w1);
    for (unsigned i = 0; i < ncrc; i++)
        mig_store_le32(b + 32 + 4 * i, 0x1000 + i);
    return 32 + 4 * ncrc;
}

static void expect_index_error(const uint8_t *b, size_t len, uint32_t flags, uint64_t nr,
                               const char *msg)
{
    struct stream_record rec = { .type = MIG_REC_RAM_INDEX, .length = (uint32_t)len, .body = b,
                                 .index = 3, .offset = 2u << 20 };
    struct stream_ram_index idx;
    GError *err = NULL;

    assert_false(stream_parse_ram_index(&rec, flags, nr, &idx, &err));
    assert_error(err, "record 3 (RAM_INDEX) at offset 2097152: ");
    assert_error(err, msg);
    g_clear_error(&err);
}

struct run_log {
    uint64_t first[16], n[16], crc[16];
    unsigned count;
};

static bool log_run(void *opaque, uint64_t first, uint64_t n, uint64_t first_crc, GError **errp)
{
    struct run_log *l = opaque;

    (void)errp;
    assert_true(l->count < 16);
    l->first[l->count] = first;
    l->n[l->count] = n;
    l->crc[l->count] = first_crc;
    l->count++;
    return true;
}

static void test_ram_index_validation(void **state)
{
    uint8_t b[32 + 4 * 72];
    struct stream_record rec = { .type = MIG_REC_RAM_INDEX, .body = b };
    struct stream_ram_index idx;
    struct run_log log = { 0 };
    size_t len;

    (void)state;
    /* gfns 0-2, 62-65 (a run across words) and 70: 8 present of 72. */
    len = make_index(b, 72, 8, 0x7 | 3ULL << 62, 0x3 | 1ULL << 6, 8);
    rec.length = (uint32_t)len;
    assert_true(stream_parse_ram_index(&rec, M_FLAGS, 72, &idx, NULL));
    assert_int_equal(idx.nr_gfns, 72);
    assert_int_equal(idx.nr_present, 8);
    assert_non_null(idx.crcs);
    assert_true(stream_ram_index_test(&idx, 63));
    assert_true(stream_ram_index_test(&idx, 64));
    assert_false(stream_ram_index_test(&idx, 61));
    assert_false(stream_ram_index_test(&idx, 72));
    assert_int_equal(stream_ram_index_crc(&idx, 7), 0x1007);
    assert_int_equal(stream_ram_index_crc(&idx, 8), 0);
    assert_true(stream_ram_index_for_each_run(&idx, 0, log_run, &log, NULL));
    assert_int_equal(log.count, 3);
    assert_int_equal(log.first[0], 0);
    assert_int_equal(log.n[0], 3);
    assert_int_equal(log.crc[0], 0);
    assert_int_equal(log.first[1], 62);
    assert_int_equal(log.n[1], 4);
    assert_int_equal(log.crc[1], 3);
    assert_int_equal(log.first[2], 70);
    assert_int_equal(log.n[2], 1);
    assert_int_equal(log.crc[2], 7);
    memset(&log, 0, sizeof(log));
    assert_true(stream_ram_index_for_each_run(&idx, 3, log_run, &log, NULL));
    assert_int_equal(log.count, 4);         /* 62-64 and 65 split */
    assert_int_equal(log.first[2], 65);
    assert_int_equal(log.n[2], 1);
    assert_int_equal(log.crc[2], 6);
    /* Without CRCs: the bitmap alone. */
    rec.length = 32;
    assert_true(stream_parse_ram_index(&rec, MIG_HDR_F_MAPPED_RAM, 72, &idx, NULL));
    assert_null(idx.crcs);
    assert_true(stream_ram_index_check_page(&idx, 0, 0, m_zeros, NULL));

    expect_index_error(b, len, MIG_HDR_F_CRC32, 72, "lacks the mapped-RAM flag");
    expect_index_error(b, 15, M_FLAGS, 72, "too short");
    expect_index_error(b, len, M_FLAGS, 73, "differs from VM_CONFIG");
    expect_index_error(b, len - 1, M_FLAGS, 72, "need 64");
    expect_index_error(b, len - 4, M_FLAGS, 72, "need 64");
    expect_index_error(b, len + 4, M_FLAGS, 72, "need 64");
    expect_index_error(b, len, MIG_HDR_F_MAPPED_RAM, 72, "need 32");
    len = make_index(b, 72, 7, 0x7 | 3ULL << 62, 0x3 | 1ULL << 6, 7);
    expect_index_error(b, len, M_FLAGS, 72, "bitmap has 8 pages, nr_present says 7");
    len = make_index(b, 72, 9, 0x7 | 3ULL << 62, 0x3 | 1ULL << 6 | 1ULL << 8, 9);
    expect_index_error(b, len, M_FLAGS, 72, "beyond nr_gfns");
    len = make_index(b, 72, 73, 0, 0, 0);
    expect_index_error(b, len, M_FLAGS, 72, "cannot fit");
    len = make_index(b, 1ULL << 40, 0, 0, 0, 0);
    expect_index_error(b, len, M_FLAGS, 1ULL << 40, "cannot fit");
    len = make_index(b, UINT64_MAX, UINT64_MAX / 4 + 1, 0, 0, 0);
    expect_index_error(b, len, M_FLAGS, UINT64_MAX, "cannot fit");
}

static void test_ram_index_round_trip(void **state)
{
    for (int crc = 0; crc < 2; crc++) {
        const uint32_t flags = crc ? M_FLAGS : MIG_HDR_F_MAPPED_RAM;
        const uint64_t nr = 200;
        struct channel *ch = channel_mem_new(NULL, 0);
        struct stream_writer w;
        struct stream_reader r;
        struct stream_record rec;
        struct stream_ram_index idx;
        unsigned long *bitmap = bitmap_new(nr);
        uint32_t crcs[200];
        struct run_log log = { 0 };
        GByteArray *b;
        struct channel *in;

        (void)state;
        for (uint64_t i = 0; i < nr; i++)
            crcs[i] = 0xc0000000u + (uint32_t)i;
        bitmap_set_range(bitmap, 5, 3);
        bitmap_set_range(bitmap, 127, 2);
        bitmap_set_atomic(bitmap, 199);
        stream_writer_init(&w, ch, flags);
        assert_true(stream_write_header(&w, NULL));
        assert_true(stream_write_ram_index(&w, nr, bitmap, flags & MIG_HDR_F_CRC32 ? crcs : NULL,
                                           NULL));
        b = take_bytes(ch);
        in = channel_mem_new(b->data, b->len);
        stream_reader_init(&r, in, false);
        assert_true(stream_read_header(&r, NULL));
        assert_true(stream_read_record(&r, &rec, NULL));
        assert_int_equal(rec.length, 16 + 32 + ((flags & MIG_HDR_F_CRC32) ? 4 * 6 : 0));
        assert_true(stream_parse_ram_index(&rec, r.flags, nr, &idx, NULL));
        assert_int_equal(idx.nr_present, 6);
        for (uint64_t i = 0; i < nr; i++)
            assert_int_equal(stream_ram_index_test(&idx, i), bitmap_test(bitmap, i));
        assert_true(stream_ram_index_for_each_run(&idx, 0, log_run, &log, NULL));
        assert_int_equal(log.count, 3);
        assert_int_equal(log.first[1], 127);
        assert_int_equal(log.crc[2], 5);
        if (flags & MIG_HDR_F_CRC32) {
            assert_int_equal(stream_ram_index_crc(&idx, 0), 0xc0000005u);
            assert_int_equal(stream_ram_index_crc(&idx, 3), 0xc000007fu);
            assert_int_equal(stream_ram_index_crc(&idx, 5), 0xc00000c7u);
        }
        assert_true(channel_at_eof(in));
        stream_reader_cleanup(&r);
        channel_close(in);
        channel_close(ch);
        g_byte_array_unref(b);
        free(bitmap);
    }
}

static void test_mapped_order(void **state)
{
    struct stream_order o;
    uint8_t cfg[160] = { 0 };
    uint8_t it[48] = { 0 };
    uint8_t vcpu[12] = { 0 };
    const uint8_t *none = NULL;

    (void)state;
    mig_store_le32(cfg + 16, 1);

    /* A normal stream refuses the mapped records anywhere. */
    stream_order_init_flags(&o, MIG_HDR_F_CRC32);
    assert_false(o.mapped);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_STATIC_END, none, true);
    CHECK(MIG_REC_MAPPED_RAM, none, false);
    CHECK(MIG_REC_RAM_INDEX, none, false);
    CHECK(MIG_REC_PAGE_DATA, none, true);

    /* The mapped grammar. */
    stream_order_init_flags(&o, M_FLAGS);
    assert_true(o.mapped);
    CHECK(MIG_REC_MAPPED_RAM, none, false);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_MAPPED_RAM, none, false);     /* before STATIC_END */
    CHECK(MIG_REC_STATIC_END, none, true);
    CHECK(MIG_REC_PAGE_DATA, none, false);      /* never in a mapped file */
    CHECK(MIG_REC_ZERO_PAGES, none, false);
    CHECK(MIG_REC_RAM_INDEX, none, false);      /* MAPPED_RAM first */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, false);
    CHECK(MIG_REC_MAPPED_RAM, none, true);
    CHECK(MIG_REC_MAPPED_RAM, none, false);     /* twice */
    CHECK(MIG_REC_ITERATION_END, it, false);    /* RAM_INDEX first */
    /* Optional records the reader skipped go anywhere. */
    struct stream_record opt = { .type = 0x80000077u, .skip = true };
    assert_true(stream_order_check(&o, &opt, NULL));
    CHECK(MIG_REC_RAM_INDEX, none, true);
    CHECK(MIG_REC_RAM_INDEX, none, false);      /* twice */
    CHECK(MIG_REC_PAGE_DATA, none, false);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false);     /* no final pass */
    mig_store_le32(it, 2);
    CHECK(MIG_REC_ITERATION_END, it, false);    /* pass 2 before pass 1 */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_ZERO_PAGES, none, false);
    mig_store_le32(it, 2);
    mig_store_le32(it + 4, MIG_ITER_F_FINAL);
    CHECK(MIG_REC_ITERATION_END, it, true);
    mig_store_le32(it, 3);
    CHECK(MIG_REC_ITERATION_END, it, false);    /* after the final pass */
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false);     /* one vCPU only */
    CHECK(MIG_REC_VM_STATE, none, true);
    CHECK(MIG_REC_RAM_INDEX, none, false);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    assert_false(stream_order_done(&o));
    CHECK(MIG_REC_END, none, true);
    assert_true(stream_order_done(&o));
    CHECK(MIG_REC_END, none, false);

    /* A mapped file whose only pass is final. */
    stream_order_init_flags(&o, MIG_HDR_F_MAPPED_RAM);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_STATIC_END, none, true);
    CHECK(MIG_REC_MAPPED_RAM, none, true);
    CHECK(MIG_REC_RAM_INDEX, none, true);
    CHECK(MIG_REC_END, none, false);
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VM_STATE, none, true);
    CHECK(MIG_REC_END, none, true);
    assert_true(stream_order_done(&o));
#undef CHECK
}

static void test_mapped_round_trip(void **state)
{
    (void)state;
    for (int crc = 0; crc < 2; crc++) {
        const uint32_t flags = crc ? M_FLAGS : MIG_HDR_F_MAPPED_RAM;
        struct stream_mapped_ram m;
        GByteArray *s = build_mapped(flags, &m);
        GError *err = NULL;

        assert_true(s->len > m.tail_offset);
        if (!read_mapped(s->data, s->len, false, &err))
            fail_msg("%s", err->message);
        if (!read_mapped(s->data, s->len, true, &err))
            fail_msg("%s", err->message);
        /* A normal reader refuses it. */
        assert_false(read_all(s->data, s->len, &err));
        assert_error(err, "record 2 (MAPPED_RAM) at offset");
        assert_error(err, "only appears in a mapped-RAM file");
        g_clear_error(&err);
        g_byte_array_unref(s);
    }
}

static void test_mapped_truncated(void **state)
{
    struct stream_mapped_ram m;
    GByteArray *s = build_mapped(M_FLAGS, &m);
    size_t cuts[] = { 0, 31, 32, 100, 300, 4096, m.ram_offset, m.ram_offset + PAGE + 1,
                      m.ram_offset + 10 * PAGE, m.ram_offset + 64 * PAGE - 1, m.tail_offset };
    GError *err = NULL;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
        if (read_mapped(s->data, cuts[i], false, &err))
            fail_msg("mapped file cut at %zu was accepted", cuts[i]);
        g_clear_error(&err);
        if (read_mapped(s->data, cuts[i], true, &err))
            fail_msg("mapped file cut at %zu was accepted (skipping)", cuts[i]);
        g_clear_error(&err);
    }
    assert_false(read_mapped(s->data, m.ram_offset + 10 * PAGE, false, &err));
    assert_error(err, "ends before the tail");
    g_clear_error(&err);
    /* Every cut inside the tail. */
    for (size_t cut = m.tail_offset; cut < s->len; cut++) {
        if (read_mapped(s->data, cut, false, &err))
            fail_msg("mapped file cut at %zu was accepted", cut);
        assert_non_null(err);
        g_clear_error(&err);
    }
    /* Extra bytes after END. */
    g_byte_array_append(s, (const guint8 *)"junk", 4);
    assert_false(read_mapped(s->data, s->len, false, &err));
    assert_error(err, "trailing bytes");
    g_clear_error(&err);
    g_byte_array_unref(s);
}

static void test_mapped_flipped(void **state)
{
    struct stream_mapped_ram m;
    GByteArray *s = build_mapped(M_FLAGS, &m);
    size_t head_end = 0;
    GError *err = NULL;

    (void)state;
    /* The head: every byte up to the end of MAPPED_RAM. */
    for (size_t i = m.ram_offset; i > 0; i--) {
        if (s->data[i - 1]) {
            head_end = i;
            break;
        }
    }
    assert_true(head_end > 200 && head_end < 4096);
    for (size_t i = 0; i < head_end; i++) {
        s->data[i] ^= 0x20;
        if (read_mapped(s->data, s->len, false, &err))
            fail_msg("flipping head byte %zu was not detected", i);
        g_clear_error(&err);
        s->data[i] ^= 0x20;
    }
    /* Every byte of the tail. */
    for (size_t i = m.tail_offset; i < s->len; i++) {
        s->data[i] ^= 0x01;
        if (read_mapped(s->data, s->len, false, &err))
            fail_msg("flipping tail byte %zu was not detected", i);
        g_clear_error(&err);
        s->data[i] ^= 0x01;
    }
    /* Bytes of each present page: the index CRC catches them. */
    for (size_t p = 0; p < ARRAY_SIZE(m_present); p++) {
        static const size_t at[] = { 0, 1, 2048, PAGE - 1 };

        for (size_t k = 0; k < ARRAY_SIZE(at); k++) {
            size_t i = m.ram_offset + m_present[p] * PAGE + at[k];
            char want[64];

            s->data[i] ^= 0x80;
            assert_false(read_mapped(s->data, s->len, false, &err));
            snprintf(want, sizeof(want), "gfn 0x%" PRIx64 ": page CRC mismatch", m_present[p]);
            assert_error(err, want);
            g_clear_error(&err);
            s->data[i] ^= 0x80;
        }
    }
    assert_true(read_mapped(s->data, s->len, false, NULL));
    g_byte_array_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_header),
        cmocka_unit_test(test_golden_record),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_round_trip_crc),
        cmocka_unit_test(test_round_trip_nocrc),
        cmocka_unit_test(test_return_path_round_trip),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_truncated_message),
        cmocka_unit_test(test_flipped_byte_everywhere),
        cmocka_unit_test(test_crc_mismatch_message),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_unknown_types),
        cmocka_unit_test(test_nonzero_padding),
        cmocka_unit_test(test_page_data_validation),
        cmocka_unit_test(test_zero_pages_validation),
        cmocka_unit_test(test_vm_config_validation),
        cmocka_unit_test(test_state_validation),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_mapped_golden),
        cmocka_unit_test(test_mapped_write_refusals),
        cmocka_unit_test(test_mapped_ram_validation),
        cmocka_unit_test(test_mapped_huge_nr_gfns),
        cmocka_unit_test(test_ram_index_validation),
        cmocka_unit_test(test_ram_index_round_trip),
        cmocka_unit_test(test_mapped_order),
        cmocka_unit_test(test_mapped_round_trip),
        cmocka_unit_test(test_mapped_truncated),
        cmocka_unit_test(test_mapped_flipped),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
