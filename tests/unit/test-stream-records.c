/* test-stream-records.c: round trips, VM_CONFIG, FDT states, the order check, the record table. */
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

#define NEXT(t) \
    do { \
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
        struct stream_page p = { .gfn = mig_load_le64(d),
                                 .encoding = mig_load_le32(d + 8),
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

/* ---- body validation ---- */

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
    {
        GError *e = NULL;
        if (!stream_write_vm_config(&w, &cfg, &e))
            fail_msg("%s", e->message);
    }
    s = take_bytes(ch);
    channel_close(ch);
    assert_int_equal(s->len, 8 + sizeof(body));
    memcpy(body, s->data + 8, sizeof(body));
    g_byte_array_unref(s);
    rec = (struct stream_record){ .type = MIG_REC_VM_CONFIG, .length = sizeof(body), .body = body };
    assert_true(stream_parse_vm_config(&rec, &out, NULL));

#define EXPECT(msg) \
    do { \
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
    mig_store_le64(body + 96 + 16, 2ULL << 30); /* region 1 inside region 0 */
    EXPECT("region 1");
    mig_store_le64(body + 96 + 16 + 8, UINT64_MAX - 4095); /* huge size */
    EXPECT("region 1");
    mig_store_le64(body + 8, 1); /* nr_gfns too small */
    EXPECT("beyond nr_gfns");
    mig_store_le64(body + 8, UINT64_MAX);
    EXPECT("too large");
    body[96 + 3 * 16] = 1; /* unused region not zero */
    EXPECT("unused region 3");
    memset(body + 64, 'a', 32); /* machine name unterminated */
    EXPECT("machine name must be");
    body[64 + 3] = '\n';
    EXPECT("non-printable");
    body[64 + 20] = 'x'; /* garbage after the NUL */
    EXPECT("not NUL-padded");
    memcpy(body + 160 + 40, "serial", 7); /* device 1 = serial.1 -> .0 dup */
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

    rec.length = (uint32_t)(8 + fdt_len + 8); /* trailing bytes */
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "does not match");
    g_clear_error(&err);
    rec.length = (uint32_t)(8 + fdt_len - 4); /* cut FDT */
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "bad FDT blob");
    g_clear_error(&err);
    rec.length = 20;
    assert_false(stream_parse_vcpu_state(&rec, &idx, &f, &fl, &err));
    assert_error(err, "too short");
    g_clear_error(&err);
    rec.length = (uint32_t)(8 + fdt_len);
    body[8 + 50] ^= 0xff; /* corrupt inside the FDT */
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
    CHECK(MIG_REC_VCPU_STATE, vcpu, false); /* no final pass yet */
    CHECK(MIG_REC_ZERO_PAGES, none, true);
    mig_store_le32(it, 2);
    CHECK(MIG_REC_ITERATION_END, it, false); /* pass 2 before pass 1 */
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_END, none, false);
    mig_store_le32(it, 2);
    mig_store_le32(it + 4, MIG_ITER_F_FINAL);
    CHECK(MIG_REC_ITERATION_END, it, true);
    CHECK(MIG_REC_PAGE_DATA, none, false); /* pages after the final pass */
    mig_store_le32(vcpu, 1);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false); /* vCPU 1 before vCPU 0 */
    mig_store_le32(vcpu, 0);
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VM_STATE, none, false); /* vCPU 1 missing */
    mig_store_le32(vcpu, 1);
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VCPU_STATE, vcpu, false); /* a third vCPU */
    CHECK(MIG_REC_VM_STATE, none, true);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    CHECK(MIG_REC_PAGE_DATA, none, false);
    assert_false(stream_order_done(&o));
    CHECK(MIG_REC_END, none, true);
    assert_true(stream_order_done(&o));
}

/* A cpr-transfer hand-over: VM_CONFIG, RAM_FDS, STATIC_END, then the state;
 * no pages or passes, and RAM_FDS nowhere else. */
static void test_handover_order(void **state)
{
    struct stream_order o;
    uint8_t cfg[160] = { 0 };
    uint8_t fds[24] = { 0 };
    uint8_t vcpu[12] = { 0 };
    uint8_t it[48] = { 0 };
    const uint8_t *none = NULL;

    (void)state;
    mig_store_le32(cfg + 16, 1);
    stream_order_init(&o);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_RAM_FDS, fds, false); /* not in a normal stream */

    stream_order_init_flags(&o, MIG_HDR_F_CRC32 | MIG_HDR_F_RAM_FD);
    CHECK(MIG_REC_VM_CONFIG, cfg, true);
    CHECK(MIG_REC_STATIC_END, none, false); /* RAM_FDS first */
    CHECK(MIG_REC_RAM_FDS, fds, true);
    CHECK(MIG_REC_PAGE_DATA, none, false); /* no pages */
    CHECK(MIG_REC_STATIC_END, none, true);
    mig_store_le32(it + 4, MIG_ITER_F_FINAL);
    mig_store_le32(it, 1);
    CHECK(MIG_REC_ITERATION_END, it, false); /* no passes */
    CHECK(MIG_REC_VCPU_STATE, vcpu, true);
    CHECK(MIG_REC_VM_STATE, none, true);
    CHECK(MIG_REC_DEVICE_STATE, none, true);
    CHECK(MIG_REC_END, none, true);
    assert_true(stream_order_done(&o));
}

/* RAM_FDS written, read back and parsed; its checks name what is wrong. */
static void test_ram_fds_record(void **state)
{
    struct stream_ram_fds in = { .nr_regions = 2 }, out;
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_reader r;
    struct stream_record rec;
    GError *err = NULL;
    const uint8_t *data;
    size_t len;

    (void)state;
    in.regions[0].gpa = 0;
    in.regions[0].size = 3ULL << 30;
    in.regions[1].gpa = 4ULL << 30;
    in.regions[1].size = 1ULL << 30;
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32);
    assert_false(stream_write_ram_fds(&w, &in, &err)); /* the header lacks the flag */
    assert_error(err, "without the RAM-by-fd flag");
    g_clear_error(&err);
    stream_writer_init(&w, ch, MIG_HDR_F_CRC32 | MIG_HDR_F_RAM_FD);
    assert_true(stream_write_header(&w, NULL));
    assert_true(stream_write_ram_fds(&w, &in, NULL));
    assert_true(channel_flush(ch, NULL));
    data = channel_mem_data(ch, &len);
    struct channel *rd = channel_mem_new(data, len);
    channel_close(ch);
    stream_reader_init(&r, rd, false);
    assert_true(stream_read_header(&r, NULL));
    assert_true(stream_read_record(&r, &rec, NULL));
    assert_int_equal(rec.length, 8 + 2 * 16);
    assert_true(stream_parse_ram_fds(&rec, r.flags, &out, NULL));
    assert_int_equal(out.nr_regions, 2);
    assert_int_equal(out.regions[1].gpa, 4ULL << 30);
    assert_int_equal(out.regions[1].size, 1ULL << 30);
    assert_false(stream_parse_ram_fds(&rec, MIG_HDR_F_CRC32, &out, &err));
    assert_error(err, "lacks the RAM-by-fd flag");
    g_clear_error(&err);
    /* Overlapping regions. */
    uint8_t *body = g_memdup2(rec.body, rec.length);
    mig_store_le64(body + 8 + 16, 1ULL << 30);
    rec.body = body;
    assert_false(stream_parse_ram_fds(&rec, r.flags, &out, &err));
    assert_error(err, "overlaps");
    g_clear_error(&err);
    g_free(body);
    stream_reader_cleanup(&r);
    channel_close(rd);
}

/* ---- the record table ---- */

/* Every type of tern/stream-format.h has one descriptor, in type order, with
 * a unique name and a sane size rule. */
static void test_record_table(void **state)
{
    size_t n = stream_record_types_count;

    (void)state;
    assert_int_equal(n, (MIG_REC_STREAM_MAX_ - 1) + (MIG_RP_MAX_ - MIG_RP_BASE_));
    for (uint32_t type = MIG_REC_VM_CONFIG; type < MIG_REC_STREAM_MAX_; type++) {
        const struct stream_record_type *t = stream_record_type_find(type);

        assert_non_null(t);
        assert_int_equal(t->type, type);
        assert_false(t->return_path);
        assert_non_null(t->parse);
        assert_non_null(t->describe);
    }
    for (uint32_t type = MIG_RP_BASE_; type < MIG_RP_MAX_; type++) {
        const struct stream_record_type *t = stream_record_type_find(type);

        assert_non_null(t);
        assert_true(t->return_path);
        assert_non_null(t->parse);
    }
    assert_null(stream_record_type_find(0));
    assert_null(stream_record_type_find(MIG_REC_STREAM_MAX_));
    assert_null(stream_record_type_find(MIG_REC_OPTIONAL | MIG_REC_END));
    for (size_t i = 0; i < n; i++) {
        const struct stream_record_type *t = &stream_record_types[i];

        if (i)
            assert_true(t->type > stream_record_types[i - 1].type);
        assert_true(strlen(t->name) > 0);
        assert_int_equal(strspn(t->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"), strlen(t->name));
        assert_string_equal(mig_rec_type_name(t->type), t->name);
        assert_true(t->head_length <= t->max_length);
        assert_true(t->max_length <= MIG_REC_LENGTH_MAX);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(t->name, stream_record_types[j].name);
        if (t->where != STREAM_REC_ANY)
            assert_false(t->return_path);
    }
    /* The fixed parts are the wire structs. */
    assert_int_equal(stream_record_type_find(MIG_REC_ITERATION_END)->head_length,
                     sizeof(struct mig_rec_iteration_end));
    assert_int_equal(stream_record_type_find(MIG_REC_ITERATION_END)->max_length,
                     sizeof(struct mig_rec_iteration_end));
    assert_int_equal(stream_record_type_find(MIG_REC_VCPU_STATE)->head_length,
                     sizeof(struct mig_rec_vcpu_state));
    assert_int_equal(stream_record_type_find(MIG_REC_MAPPED_RAM)->max_length,
                     sizeof(struct mig_rec_mapped_ram));
    assert_int_equal(stream_record_type_find(MIG_REC_END)->max_length, 0);
}

/* A record whose size breaks its type's rule is refused: by the reader (a
 * body on an empty type), by the order check (a fixed part it reads cut
 * short), by the parse (anything shorter than the fixed part, or longer than
 * a fixed-size body). */
static void test_record_size_rules(void **state)
{
    const struct stream_parse_ctx ctx = { .stream_flags = MIG_HDR_F_CRC32 | MIG_HDR_F_MAPPED_RAM,
                                          .nr_gfns = NR_GFNS };
    uint8_t body[256] = { 0 };
    struct stream_order o;
    struct stream_record rec;
    struct stream_body b;
    GError *err = NULL;

    (void)state;
    for (size_t i = 0; i < stream_record_types_count; i++) {
        const struct stream_record_type *t = &stream_record_types[i];

        if (t->max_length == 0) {
            GByteArray *s = one_record(0, t->type, body, 1);
            struct stream_reader r;
            struct channel *ch = channel_mem_new(s->data, s->len);

            stream_reader_init(&r, ch, t->return_path);
            assert_true(stream_read_header(&r, NULL));
            assert_false(stream_read_record(&r, &rec, &err));
            assert_error(err, "length 1, but this record has no body");
            g_clear_error(&err);
            stream_reader_cleanup(&r);
            channel_close(ch);
            g_byte_array_unref(s);
            continue;
        }
        rec = (struct stream_record){ .type = t->type, .body = body };
        if (t->head_length) {
            rec.length = t->head_length - 1;
            assert_false(stream_record_parse(&rec, &ctx, &b, &err));
            assert_non_null(err);
            g_clear_error(&err);
        }
        if (t->head_length == t->max_length) {
            rec.length = t->max_length + 8;
            assert_false(stream_record_parse(&rec, &ctx, &b, &err));
            assert_error(err, "length");
            g_clear_error(&err);
        }
    }

    /* The order check reads ITERATION_END's and VCPU_STATE's fixed parts. */
    mig_store_le32(body + offsetof(struct mig_rec_vm_config, nr_vcpus), 1);
    stream_order_init(&o);
    rec = (struct stream_record){ .type = MIG_REC_VM_CONFIG,
                                  .body = body,
                                  .length = sizeof(struct mig_rec_vm_config) };
    assert_true(stream_order_check(&o, &rec, NULL));
    rec = (struct stream_record){ .type = MIG_REC_STATIC_END, .body = body };
    assert_true(stream_order_check(&o, &rec, NULL));
    memset(body, 0, sizeof(body));
    mig_store_le32(body, 1);
    mig_store_le32(body + 4, MIG_ITER_F_FINAL);
    rec = (struct stream_record){
        .type = MIG_REC_ITERATION_END,
        .body = body,
        .length = stream_record_type_find(MIG_REC_ITERATION_END)->head_length - 1
    };
    assert_false(stream_order_check(&o, &rec, &err));
    assert_error(err, "(ITERATION_END) at offset 0: body too short");
    g_clear_error(&err);
    rec.length++;
    assert_true(stream_order_check(&o, &rec, NULL));
    memset(body, 0, sizeof(body));
    rec = (struct stream_record){
        .type = MIG_REC_VCPU_STATE,
        .body = body,
        .length = stream_record_type_find(MIG_REC_VCPU_STATE)->head_length - 1
    };
    assert_false(stream_order_check(&o, &rec, &err));
    assert_error(err, "(VCPU_STATE) at offset 0: body too short");
    g_clear_error(&err);
    rec.length++;
    assert_true(stream_order_check(&o, &rec, NULL));
}

/* Field sink for the describe functions: "name=value;" per field. */
static void field_u64(void *opaque, const char *name, uint64_t v)
{
    g_string_append_printf(opaque, "%s=%" PRIu64 ";", name, v);
}

static void field_str(void *opaque, const char *name, const char *v)
{
    g_string_append_printf(opaque, "%s=%s;", name, v);
}

static void field_list(void *opaque, const char *name, const char *const *v, size_t n)
{
    g_string_append_printf(opaque, "%s=", name);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(opaque, "%s%s", i ? "," : "", v[i]);
    g_string_append(opaque, ";");
}

/* Every record of a sample stream parses through the table, and describes
 * itself as tern-dump prints it. */
static void test_record_table_parse_describe(void **state)
{
    static const char *const want[] = {
        "RAM 4.0 GiB in 2 regions (0x140000 frames), 2 vCPUs, 2 devices, machine tern-pc",
        "end of the static part",
        "pass 1: 2 pages, gfn 0x20-0x21, raw 1, zlib 1",
        "pass 1: 2 ranges, 132 zero pages, gfn 0x10-0x17f",
        "pass 1: 2 pages, 132 zero, 8.8 KiB, 0.1 ms, 134 dirty",
        "pass 1: 1 page, gfn 0x22-0x22, raw 1, zlib 0",
        "pass 2 (final): 1 pages, 0 zero, 0 B, 0.0 ms, 0 dirty",
        NULL,
        NULL,
        NULL,
        "serial.1, FDT ",
        "end of the stream",
    };
    GByteArray *s = build_stream(MIG_HDR_F_CRC32);
    struct channel *ch = channel_mem_new(s->data, s->len);
    GString *fields = g_string_new(NULL);
    const struct stream_fields f = { fields, field_u64, field_str, NULL, field_list };
    struct stream_parse_ctx ctx = { .nr_gfns = NR_GFNS };
    struct page_sink sink = { 0 };
    struct stream_reader r;
    struct stream_record rec;
    struct stream_body b;

    (void)state;
    ctx.page_fn = sink_page;
    ctx.range_fn = sink_range;
    ctx.opaque = &sink;
    stream_reader_init(&r, ch, false);
    assert_true(stream_read_header(&r, NULL));
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        const struct stream_record_type *t;
        char *summary;

        assert_true(stream_read_record(&r, &rec, NULL));
        t = stream_record_type_find(rec.type);
        assert_non_null(t);
        assert_true(stream_record_parse(&rec, &ctx, &b, NULL));
        assert_int_equal(b.type, rec.type);
        summary = t->describe(&b, 1, &f);
        if (want[i] && !g_str_has_prefix(summary, want[i]))
            fail_msg("record %zu: '%s', expected '%s'", i, summary, want[i]);
        g_free(summary);
    }
    assert_int_equal(sink.pages, 3);
    assert_int_equal(sink.ranges, 2);
    assert_non_null(strstr(fields->str, "devices=serial.0,serial.1;"));
    assert_non_null(strstr(fields->str, "id=serial;instance=1;"));
    g_string_free(fields, true);
    stream_reader_cleanup(&r);
    channel_close(ch);
    g_byte_array_unref(s);
}

/* ---- FDT blobs are checked by hand before libfdt sees them ---- */

/* (fdt) as a VM_STATE body: accepted, or refused naming (msg). */
static void vm_state_verdict(const void *fdt, size_t len, const char *msg)
{
    g_autofree uint8_t *body = g_memdup2(fdt, len); /* 8-aligned, its own size */
    struct stream_record rec = { .type = MIG_REC_VM_STATE, .length = (uint32_t)len, .body = body };
    const void *out;
    size_t out_len;
    GError *err = NULL;

    if (!msg) {
        assert_true(stream_parse_vm_state(&rec, &out, &out_len, NULL));
        return;
    }
    assert_false(stream_parse_vm_state(&rec, &out, &out_len, &err));
    assert_error(err, msg);
    g_clear_error(&err);
}

static void set_be32(void *fdt, size_t off, uint32_t v)
{
    fdt32_t be = cpu_to_fdt32(v);

    memcpy((uint8_t *)fdt + off, &be, 4);
}

static void test_fdt_preflight(void **state)
{
    g_autofree uint8_t *fdt = make_fdt(7);
    size_t len = fdt_totalsize(fdt);
    g_autofree uint8_t *bad = g_malloc(len);

    (void)state;
    vm_state_verdict(fdt, len, NULL);
    /* Version 14, whose root name libfdt 1.6.1's fdt_check_full()
     * dereferences as NULL (tests/fuzz/crashes/state/state-1-*). */
    memcpy(bad, fdt, len);
    set_be32(bad, offsetof(struct fdt_header, version), 14);
    set_be32(bad, offsetof(struct fdt_header, last_comp_version), 0);
    vm_state_verdict(bad, len, "bad FDT blob: state FDT has version 14");
    memcpy(bad, fdt, len);
    set_be32(bad, offsetof(struct fdt_header, version), 16);
    vm_state_verdict(bad, len, "only version 17 is read");
    /* A memory reservation, which no state blob has. */
    memcpy(bad, fdt, len);
    bad[fdt_off_mem_rsvmap(fdt) + 15] = 1;
    vm_state_verdict(bad, len, "non-empty memory reservation map");
    /* Blocks reaching past the blob. */
    memcpy(bad, fdt, len);
    set_be32(bad, offsetof(struct fdt_header, size_dt_strings), (uint32_t)len);
    vm_state_verdict(bad, len, "structure or strings block outside the blob");
    memcpy(bad, fdt, len);
    set_be32(bad, offsetof(struct fdt_header, off_dt_struct), UINT32_MAX - 3);
    vm_state_verdict(bad, len, "structure or strings block outside the blob");
    /* A root node with a name. */
    memcpy(bad, fdt, len);
    bad[fdt_off_dt_struct(fdt) + 4] = 'x';
    vm_state_verdict(bad, len, "does not open with the root node");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_crc),
        cmocka_unit_test(test_round_trip_nocrc),
        cmocka_unit_test(test_vm_config_validation),
        cmocka_unit_test(test_state_validation),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_handover_order),
        cmocka_unit_test(test_ram_fds_record),
        cmocka_unit_test(test_record_table),
        cmocka_unit_test(test_record_size_rules),
        cmocka_unit_test(test_fdt_preflight),
        cmocka_unit_test(test_record_table_parse_describe),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
