/* test-stream-mapped.c: mapped-RAM files: MAPPED_RAM, RAM_INDEX, their order, and damaged files. */
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
#include <unistd.h>

#include "tern/bitmap.h"
#include "tern/channel-file.h"
#include "tern/stream.h"
#include "tern/util.h"
#include "test-stream-lib.h"

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

static bool mapped_run(void *opaque, uint64_t first, uint64_t n, uint64_t first_crc, GError **errp)
{
    struct mapped_check *c = opaque;

    c->runs++;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = stream_mapped_page_offset(c->m, first + i);

        if (off + PAGE > c->len) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "gfn 0x%" PRIx64 ": the file ends inside the RAM area", first + i);
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
        0x0a, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, /* MAPPED_RAM, 24 bytes */
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, /* ram_offset 1 MiB */
        0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* nr_gfns 64 */
        0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, /* tail_offset 2 MiB */
        0x59, 0xec, 0x0e, 0x54, 0x00, 0x00, 0x00, 0x00, /* CRC 0x540eec59 */
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
    struct stream_record rec = {
        .type = MIG_REC_MAPPED_RAM, .length = length, .body = b, .index = 2, .offset = 232
    };
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
    struct stream_record rec = {
        .type = MIG_REC_MAPPED_RAM, .length = 24, .body = b, .offset = 232
    };
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
    struct stream_record rec = { .type = MIG_REC_RAM_INDEX,
                                 .length = (uint32_t)len,
                                 .body = b,
                                 .index = 3,
                                 .offset = 2u << 20 };
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
    assert_int_equal(log.count, 4); /* 62-64 and 65 split */
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
        assert_true(
            stream_write_ram_index(&w, nr, bitmap, flags & MIG_HDR_F_CRC32 ? crcs : NULL, NULL));
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
    CHECK(MIG_REC_MAPPED_RAM, none, false); /* before STATIC_END */
    CHECK(MIG_REC_STATIC_END, none, true);
    CHECK(MIG_REC_PAGE_DATA, none, false); /* never in a mapped file */
    CHECK(MIG_REC_ZERO_PAGES, none, false);
    CHECK(MIG_REC_RAM_INDEX, none, false); /* MAPPED_RAM first */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, false);
    CHECK(MIG_REC_MAPPED_RAM, none, true);
    CHECK(MIG_REC_MAPPED_RAM, none, false);  /* twice */
    CHECK(MIG_REC_ITERATION_END, it, false); /* RAM_INDEX first */
    /* Optional records the reader skipped go anywhere. */
    struct stream_record opt = { .type = 0x80000077u, .skip = true };
    assert_true(stream_order_check(&o, &opt, NULL));
    CHECK(MIG_REC_RAM_INDEX, none, true);
    CHECK(MIG_REC_RAM_INDEX, none, false); /* twice */
    CHECK(MIG_REC_PAGE_DATA, none, false);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false); /* no final pass */
    mig_store_le32(it, 2);
    CHECK(MIG_REC_ITERATION_END, it, false); /* pass 2 before pass 1 */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_ZERO_PAGES, none, false);
    mig_store_le32(it, 2);
    mig_store_le32(it + 4, MIG_ITER_F_FINAL);
    CHECK(MIG_REC_ITERATION_END, it, true);
    mig_store_le32(it, 3);
    CHECK(MIG_REC_ITERATION_END, it, false); /* after the final pass */
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false); /* one vCPU only */
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
    size_t cuts[] = { 0,
                      31,
                      32,
                      100,
                      300,
                      4096,
                      m.ram_offset,
                      m.ram_offset + PAGE + 1,
                      m.ram_offset + 10 * PAGE,
                      m.ram_offset + 64 * PAGE - 1,
                      m.tail_offset };
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

/* ---- Restoring the RAM area from a file (read-ahead, threads) ---- */

struct load_sink {
    uint8_t *ram; /* M_NR_GFNS pages */
    uint64_t limit;
    int placed; /* atomic */
};

static uint8_t *load_dest(void *opaque, uint64_t gfn, uint64_t npages)
{
    struct load_sink *ls = opaque;

    return gfn + npages <= ls->limit ? ls->ram + gfn * PAGE : NULL;
}

static bool load_place(void *opaque, uint64_t gfn, uint64_t npages, const uint8_t *data,
                       GError **errp)
{
    struct load_sink *ls = opaque;

    (void)errp;
    memcpy(ls->ram + gfn * PAGE, data, npages * PAGE);
    __atomic_fetch_add(&ls->placed, (int)npages, __ATOMIC_RELAXED);
    return true;
}

/* Write (len) bytes of mapped file (s) to a file and restore its RAM area
 * into (ls) with the index of the whole (s). */
static bool load_from_file(GByteArray *s, size_t len, const struct stream_mapped_ram *m,
                           unsigned threads, bool in_place, struct load_sink *ls, GError **errp)
{
    g_autofree char *dir = g_build_filename("/var/tmp", "tern-sm-XXXXXX", NULL);
    g_autofree char *path = NULL;
    struct channel *mem = channel_mem_new(s->data, s->len), *file;
    const struct stream_mapped_sink sink = { load_dest, in_place ? NULL : load_place, ls };
    struct stream_reader r;
    struct stream_record rec;
    struct stream_ram_index idx;
    bool ok;

    assert_non_null(g_mkdtemp(dir));
    path = g_build_filename(dir, "ckpt", NULL);
    assert_true(g_file_set_contents(path, (const char *)s->data, (gssize)len, NULL));
    stream_reader_init(&r, mem, false);
    assert_true(stream_read_header(&r, NULL));
    assert_true(stream_reader_skip_to(&r, m->tail_offset, NULL));
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_true(stream_parse_ram_index(&rec, r.flags, M_NR_GFNS, &idx, NULL));
    file = channel_file_open(path, errp);
    assert_non_null(file);
    ok = stream_mapped_load_ram(file, m, &idx, threads, &sink, errp);
    channel_close(file);
    stream_reader_cleanup(&r);
    channel_close(mem);
    unlink(path);
    rmdir(dir);
    return ok;
}

static void test_mapped_load_file(void **state)
{
    struct stream_mapped_ram m;
    GByteArray *s = build_mapped(M_FLAGS, &m);
    uint8_t *ram = NULL, want[PAGE], sentinel[PAGE];
    GError *err = NULL;

    (void)state;
    assert_int_equal(posix_memalign((void **)&ram, PAGE, M_NR_GFNS * PAGE), 0);
    memset(sentinel, 0xaa, PAGE);
    for (int in_place = 0; in_place < 2; in_place++) {
        for (unsigned threads = 1; threads <= 2; threads++) {
            struct load_sink ls = { .ram = ram, .limit = M_NR_GFNS };
            uint64_t page_off = m.ram_offset + 63 * PAGE;
            char msg[128];

            memset(ram, 0xaa, M_NR_GFNS * PAGE);
            if (!load_from_file(s, s->len, &m, threads, in_place, &ls, &err))
                fail_msg("%s", err->message);
            for (uint64_t gfn = 0; gfn < M_NR_GFNS; gfn++) {
                bool present = false;

                for (size_t i = 0; i < ARRAY_SIZE(m_present); i++)
                    present |= m_present[i] == gfn;
                fill_page(want, (unsigned)gfn + 7);
                /* Absent pages are never touched. */
                assert_memory_equal(ram + gfn * PAGE, present ? want : sentinel, PAGE);
            }
            assert_int_equal(ls.placed, in_place ? 0 : (int)ARRAY_SIZE(m_present));

            /* A flipped byte in the last run: named with its gfn and offset,
             * and (placing) the bad page is not stored. */
            memset(ram, 0xaa, M_NR_GFNS * PAGE);
            s->data[page_off + 99] ^= 0x10;
            assert_false(load_from_file(s, s->len, &m, threads, in_place, &ls, &err));
            snprintf(msg, sizeof(msg), "gfn 0x3f at file offset %" PRIu64 ": page CRC mismatch",
                     page_off);
            assert_error(err, msg);
            g_clear_error(&err);
            if (!in_place)
                assert_memory_equal(ram + 63 * PAGE, sentinel, PAGE);
            s->data[page_off + 99] ^= 0x10;

            /* A file cut inside page 10. */
            assert_false(load_from_file(s, m.ram_offset + 10 * PAGE + 100, &m, threads, in_place,
                                        &ls, &err));
            snprintf(msg, sizeof(msg), "file size %" PRIu64, m.ram_offset + 10 * PAGE + 100);
            assert_error(err, "short read");
            assert_error(err, msg);
            g_clear_error(&err);

            /* A run outside RAM: refused before anything is read. */
            memset(ram, 0xaa, M_NR_GFNS * PAGE);
            ls.limit = 32;
            assert_false(load_from_file(s, s->len, &m, threads, in_place, &ls, &err));
            assert_error(err, "RAM_INDEX lists pages 0x3f+1 outside guest RAM");
            g_clear_error(&err);
            for (uint64_t gfn = 0; gfn < M_NR_GFNS; gfn++)
                assert_memory_equal(ram + gfn * PAGE, sentinel, PAGE);
        }
    }
    free(ram);
    g_byte_array_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapped_golden),         cmocka_unit_test(test_mapped_write_refusals),
        cmocka_unit_test(test_mapped_ram_validation), cmocka_unit_test(test_mapped_huge_nr_gfns),
        cmocka_unit_test(test_ram_index_validation),  cmocka_unit_test(test_ram_index_round_trip),
        cmocka_unit_test(test_mapped_order),          cmocka_unit_test(test_mapped_round_trip),
        cmocka_unit_test(test_mapped_truncated),      cmocka_unit_test(test_mapped_flipped),
        cmocka_unit_test(test_mapped_load_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
