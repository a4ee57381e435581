/* test-stream-lib.c: what the stream unit tests share: sample records and streams, readers. */
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

/* Take the bytes written to a mem channel (after a flush). */
GByteArray *take_bytes(struct channel *ch)
{
    GByteArray *out = g_byte_array_new();
    const uint8_t *data;
    size_t len;

    assert_true(channel_flush(ch, NULL));
    data = channel_mem_data(ch, &len);
    g_byte_array_append(out, data, (guint)len);
    return out;
}

void *make_fdt(uint32_t value)
{
    void *fdt = g_malloc0(4096);

    assert_int_equal(fdt_create_empty_tree(fdt, 4096), 0);
    assert_int_equal(fdt_setprop_u32(fdt, 0, "value", value), 0);
    assert_int_equal(fdt_pack(fdt), 0);
    return fdt;
}

/* The records that end every test stream: two vCPUs, the VM, one device
 * (serial, (instance)), then END. The blobs are make_fdt(100, 101, 200, 300). */
void write_state_and_end(struct stream_writer *w, uint32_t instance)
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

void fill_page(uint8_t *p, unsigned seed)
{
    for (unsigned i = 0; i < PAGE; i++)
        p[i] = (uint8_t)(seed * 31 + i * 7);
}

void make_config(struct stream_vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = (3ULL << 30) + (1ULL << 30); /* 4 GiB: 3 low + 1 high */
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

uint8_t pages[3][PAGE];
uint8_t zbuf[PAGE];
size_t zlen;

/* A complete small stream with every record type. */
GByteArray *build_stream(uint32_t flags)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_vm_config cfg;
    struct stream_gfn_range ranges[] = { { 0x10, 4 }, { 0x100, 0x80 } };
    struct stream_iteration_end it1 = { .pass = 1,
                                        .pages_sent = 2,
                                        .zero_pages = 0x84,
                                        .bytes_sent = 9000,
                                        .dirty_pages = 0x86,
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
    struct stream_page last = {
        .gfn = 0x22, .encoding = MIG_PAGE_ENC_RAW, .length = PAGE, .data = pages[1]
    };

    make_config(&cfg);
    stream_writer_init(&w, ch, flags);
    assert_true(stream_write_header(&w, NULL));
    {
        GError *e = NULL;
        if (!stream_write_vm_config(&w, &cfg, &e))
            fail_msg("%s", e->message);
    }
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

bool sink_page(void *opaque, const struct stream_page *page, GError **errp)
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

bool sink_range(void *opaque, uint64_t first, uint64_t n, GError **errp)
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
bool read_all(const uint8_t *data, size_t len, GError **errp)
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

/* Header bytes (32), crc flag as given, with the header CRC recomputed after
 * (version, page_shift) are patched. */
void make_header(uint8_t *h, uint32_t version, uint32_t flags, uint32_t page_shift)
{
    memset(h, 0, 32);
    memcpy(h, "TERNMIG", 8);
    mig_store_le32(h + 8, version);
    mig_store_le32(h + 12, flags);
    mig_store_le32(h + 16, page_shift);
    mig_store_le32(h + 28, (uint32_t)crc32(0, h, 28));
}

/* A stream: header with (flags), then one record of (type) with (body, len). */
GByteArray *one_record(uint32_t flags, uint32_t type, const void *body, size_t len)
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
bool read_one(GByteArray *s, struct stream_reader *r, struct channel **ch,
              struct stream_record *rec, GError **errp)
{
    *ch = channel_mem_new(s->data, s->len);
    stream_reader_init(r, *ch, false);
    assert_true(stream_read_header(r, NULL));
    return stream_read_record(r, rec, errp);
}

/* Feed (o) a record of (type) with (len) bytes of (body); (ok): accepted,
 * else refused as out of order. */
void order_step(struct stream_order *o, uint32_t type, const uint8_t *body, uint32_t len, bool ok)
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
