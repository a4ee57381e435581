/* stream.c: migration stream v1: header and record writer, bounded validating reader, body codecs. */
#include "tern/stream.h"
#include "tern/util.h"
#include "tern/bitmap.h"

#include <inttypes.h>
#include <libfdt.h>
#include <string.h>
#include <zlib.h>

static const uint8_t zero_pad[MIG_REC_ALIGN];

static bool stream_fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool stream_fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, TERN_ERROR, TERN_ERROR_INVALID, msg);
    g_free(msg);
    return false;
}

char *stream_record_describe(const struct stream_record *rec)
{
    return g_strdup_printf("record %" PRIu64 " (%s) at offset %" PRIu64, rec->index,
                           mig_rec_type_name(rec->type), rec->offset);
}

/* Fail with "record N (TYPE) at offset X: <fmt>". */
static bool rec_fail(const struct stream_record *rec, GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static bool rec_fail(const struct stream_record *rec, GError **errp, const char *fmt, ...)
{
    g_autofree char *what = stream_record_describe(rec);
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %s", what, msg);
    return false;
}

static bool rec_expect_type(const struct stream_record *rec, uint32_t type, GError **errp)
{
    if (rec->type != type)
        return rec_fail(rec, errp, "expected a %s record", mig_rec_type_name(type));
    return true;
}

static bool is_empty_type(uint32_t type)
{
    return type == MIG_REC_STATIC_END || type == MIG_REC_END || type == MIG_RP_READY ||
           type == MIG_RP_RESUMED;
}

static bool is_known_type(uint32_t type, bool return_path)
{
    if (return_path)
        return type == MIG_RP_READY || type == MIG_RP_RESUMED || type == MIG_RP_ERROR;
    return type >= MIG_REC_VM_CONFIG && type < MIG_REC_STREAM_MAX_;
}

/* ---- Writing ---- */

void stream_writer_init(struct stream_writer *w, struct channel *ch, uint32_t flags)
{
    memset(w, 0, sizeof(*w));
    w->ch = ch;
    w->flags = flags;
}

bool stream_write_header(struct stream_writer *w, GError **errp)
{
    uint8_t h[sizeof(struct mig_image_header)] = { 0 };

    if (w->flags & ~MIG_HDR_F_KNOWN)
        return stream_fail(errp, "unknown stream flags 0x%x", w->flags & ~MIG_HDR_F_KNOWN);
    memcpy(h + offsetof(struct mig_image_header, magic), MIG_STREAM_MAGIC,
           MIG_STREAM_MAGIC_LEN);
    mig_store_le32(h + offsetof(struct mig_image_header, version), MIG_STREAM_VERSION);
    mig_store_le32(h + offsetof(struct mig_image_header, flags), w->flags);
    mig_store_le32(h + offsetof(struct mig_image_header, page_shift), MIG_STREAM_PAGE_SHIFT);
    mig_store_le32(h + offsetof(struct mig_image_header, header_crc),
                   (uint32_t)crc32(0, h, offsetof(struct mig_image_header, header_crc)));
    channel_put_bytes(w->ch, h, sizeof(h));
    return channel_check(w->ch, errp);
}

bool stream_record_begin(struct stream_writer *w, uint32_t type, uint32_t length, GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_header)];

    g_assert(!w->in_record);
    if (length > MIG_REC_LENGTH_MAX)
        return stream_fail(errp, "%s record of %u bytes exceeds the maximum of %u",
                           mig_rec_type_name(type), length, MIG_REC_LENGTH_MAX);
    if (!channel_check(w->ch, errp))
        return false;
    mig_store_le32(h + offsetof(struct mig_rec_header, type), type);
    mig_store_le32(h + offsetof(struct mig_rec_header, length), length);
    w->in_record = true;
    w->cur_type = type;
    w->cur_length = length;
    w->cur_done = 0;
    w->cur_crc = 0;
    if (w->flags & MIG_HDR_F_CRC32)
        channel_put_bytes_crc(w->ch, h, sizeof(h), &w->cur_crc);
    else
        channel_put_bytes(w->ch, h, sizeof(h));
    return true;
}

void stream_record_put(struct stream_writer *w, const void *data, size_t len,
                       enum stream_part_mode mode)
{
    bool crc = w->flags & MIG_HDR_F_CRC32;

    g_assert(w->in_record);
    w->cur_done += len;
    if (!len)
        return;
    switch (mode) {
    case STREAM_PART_COPY:
        if (crc)
            channel_put_bytes_crc(w->ch, data, len, &w->cur_crc);
        else
            channel_put_bytes(w->ch, data, len);
        break;
    case STREAM_PART_REF:
        if (crc)
            w->cur_crc = (uint32_t)crc32(w->cur_crc, data, (uInt)len);
        channel_put_buffer_ref(w->ch, data, len);
        break;
    case STREAM_PART_LIVE:
        /* The bytes may change until the kernel copies them: the CRC must be
         * computed over exactly what is sent, so take a snapshot then. */
        if (crc)
            channel_put_bytes_crc(w->ch, data, len, &w->cur_crc);
        else
            channel_put_buffer_ref(w->ch, data, len);
        break;
    }
}

bool stream_record_end(struct stream_writer *w, GError **errp)
{
    uint32_t pad = mig_rec_padding(w->cur_length);

    g_assert(w->in_record);
    w->in_record = false;
    if (w->cur_done != w->cur_length) {
        /* A writer bug; the stream is now corrupt, so fail the channel too. */
        channel_set_errorf(w->ch, TERN_ERROR_FAILED,
                           "internal error: %s record declared %u body bytes but has %" PRIu64,
                           mig_rec_type_name(w->cur_type), w->cur_length, w->cur_done);
        return channel_check(w->ch, errp);
    }
    if (w->flags & MIG_HDR_F_CRC32) {
        uint8_t t[sizeof(struct mig_rec_trailer)] = { 0 };

        w->cur_crc = (uint32_t)crc32(w->cur_crc, zero_pad, pad);
        mig_store_le32(t + offsetof(struct mig_rec_trailer, crc), w->cur_crc);
        channel_put_bytes(w->ch, zero_pad, pad);
        channel_put_bytes(w->ch, t, sizeof(t));
    } else {
        channel_put_bytes(w->ch, zero_pad, pad);
    }
    w->records++;
    return channel_check(w->ch, errp);
}

bool stream_write_record(struct stream_writer *w, uint32_t type, const struct stream_part *parts,
                         unsigned nparts, GError **errp)
{
    uint64_t total = 0;

    for (unsigned i = 0; i < nparts; i++)
        total += parts[i].len;
    if (total > MIG_REC_LENGTH_MAX)
        return stream_fail(errp, "%s record of %" PRIu64 " bytes exceeds the maximum of %u",
                           mig_rec_type_name(type), total, MIG_REC_LENGTH_MAX);
    if (!stream_record_begin(w, type, (uint32_t)total, errp))
        return false;
    for (unsigned i = 0; i < nparts; i++)
        stream_record_put(w, parts[i].data, parts[i].len, parts[i].mode);
    return stream_record_end(w, errp);
}

bool stream_write_empty(struct stream_writer *w, uint32_t type, GError **errp)
{
    return stream_write_record(w, type, NULL, 0, errp);
}

/* ---- Reading ---- */

void stream_reader_init(struct stream_reader *r, struct channel *ch, bool return_path)
{
    memset(r, 0, sizeof(*r));
    r->ch = ch;
    r->return_path = return_path;
}

void stream_reader_cleanup(struct stream_reader *r)
{
    g_clear_pointer(&r->buf, g_free);
    r->buf_size = 0;
}

uint64_t stream_reader_pos(const struct stream_reader *r)
{
    return r->pos_base + channel_read_pos(r->ch);
}

void stream_reader_set_channel(struct stream_reader *r, struct channel *ch, uint64_t offset)
{
    r->ch = ch;
    r->pos_base = offset - channel_read_pos(ch);    /* modular: any start works */
}

bool stream_reader_skip_to(struct stream_reader *r, uint64_t offset, GError **errp)
{
    uint64_t pos = stream_reader_pos(r);
    GError *err = NULL;

    if (offset < pos)
        return stream_fail(errp, "cannot go back from offset %" PRIu64 " to %" PRIu64, pos,
                           offset);
    while (pos < offset) {
        size_t n = (size_t)MIN(offset - pos, (uint64_t)1 << 30);

        if (channel_skip(r->ch, n) != n) {
            channel_check(r->ch, &err);
            g_propagate_prefixed_error(errp, err, "skipping to offset %" PRIu64 ": ", offset);
            return false;
        }
        pos += n;
    }
    return true;
}

bool stream_read_header(struct stream_reader *r, GError **errp)
{
    uint8_t h[sizeof(struct mig_image_header)];
    uint32_t version, flags, page_shift, crc, want;
    GError *err = NULL;

    if (!channel_read_exact(r->ch, h, sizeof(h), &err)) {
        g_propagate_prefixed_error(errp, err, "stream header: ");
        return false;
    }
    if (memcmp(h + offsetof(struct mig_image_header, magic), MIG_STREAM_MAGIC,
               MIG_STREAM_MAGIC_LEN))
        return stream_fail(errp, "stream header: bad magic (not a Tern migration stream)");
    version = mig_load_le32(h + offsetof(struct mig_image_header, version));
    if (version != MIG_STREAM_VERSION)
        return stream_fail(errp, "stream header: unsupported stream version %u (this Tern reads %u)",
                           version, MIG_STREAM_VERSION);
    crc = mig_load_le32(h + offsetof(struct mig_image_header, header_crc));
    want = (uint32_t)crc32(0, h, offsetof(struct mig_image_header, header_crc));
    if (crc != want)
        return stream_fail(errp, "stream header: CRC mismatch (header says 0x%08x, computed 0x%08x)",
                           crc, want);
    flags = mig_load_le32(h + offsetof(struct mig_image_header, flags));
    if (flags & ~MIG_HDR_F_KNOWN)
        return stream_fail(errp, "stream header: unknown flags 0x%x", flags & ~MIG_HDR_F_KNOWN);
    for (size_t i = 0; i < sizeof(((struct mig_image_header *)0)->reserved); i++)
        if (h[offsetof(struct mig_image_header, reserved) + i])
            return stream_fail(errp, "stream header: reserved bytes are not zero");
    page_shift = mig_load_le32(h + offsetof(struct mig_image_header, page_shift));
    if (page_shift != MIG_STREAM_PAGE_SHIFT) {
        if (page_shift < 32)
            return stream_fail(errp, "stream header: page size %llu not supported (this Tern uses %u)",
                               1ULL << page_shift, 1u << MIG_STREAM_PAGE_SHIFT);
        return stream_fail(errp, "stream header: page shift %u not supported", page_shift);
    }
    r->flags = flags;
    r->page_shift = page_shift;
    return true;
}

bool stream_read_record(struct stream_reader *r, struct stream_record *rec, GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_header)];
    size_t need;
    uint32_t pad;
    GError *err = NULL;

    memset(rec, 0, sizeof(*rec));
    rec->index = r->records;
    rec->offset = stream_reader_pos(r);
    if (!channel_read_exact(r->ch, h, sizeof(h), &err)) {
        g_propagate_prefixed_error(errp, err, "record %" PRIu64 " at offset %" PRIu64
                                   ": truncated header: ", rec->index, rec->offset);
        return false;
    }
    rec->type = mig_load_le32(h + offsetof(struct mig_rec_header, type));
    rec->length = mig_load_le32(h + offsetof(struct mig_rec_header, length));

    /* Bound first: nothing is allocated for a length we will refuse. */
    if (rec->length > MIG_REC_LENGTH_MAX)
        return rec_fail(rec, errp, "length %u exceeds the maximum of %u", rec->length,
                        MIG_REC_LENGTH_MAX);
    if (!is_known_type(rec->type, r->return_path)) {
        if (!(rec->type & MIG_REC_OPTIONAL))
            return rec_fail(rec, errp, "unknown mandatory record type 0x%08x", rec->type);
        rec->skip = true;
    }
    if (is_empty_type(rec->type) && rec->length)
        return rec_fail(rec, errp, "length %u, but this record has no body", rec->length);

    pad = mig_rec_padding(rec->length);
    need = (size_t)rec->length + pad + sizeof(struct mig_rec_trailer);
    if (need > r->buf_size) {
        g_free(r->buf);
        r->buf_size = MAX(need, (size_t)4096);
        r->buf = g_malloc(r->buf_size);
    }
    if (!channel_read_exact(r->ch, r->buf, (size_t)rec->length + pad, &err)) {
        g_autofree char *what = stream_record_describe(rec);

        g_propagate_prefixed_error(errp, err, "%s: truncated body: ", what);
        return false;
    }
    if (r->flags & MIG_HDR_F_CRC32) {
        uint8_t t[sizeof(struct mig_rec_trailer)];
        uint32_t crc, want;

        if (!channel_read_exact(r->ch, t, sizeof(t), &err)) {
            g_autofree char *what = stream_record_describe(rec);

            g_propagate_prefixed_error(errp, err, "%s: truncated CRC trailer: ", what);
            return false;
        }
        want = (uint32_t)crc32(0, h, sizeof(h));
        want = (uint32_t)crc32(want, r->buf, (uInt)(rec->length + pad));
        crc = mig_load_le32(t + offsetof(struct mig_rec_trailer, crc));
        if (crc != want)
            return rec_fail(rec, errp, "CRC mismatch (record says 0x%08x, computed 0x%08x)",
                            crc, want);
        if (mig_load_le32(t + offsetof(struct mig_rec_trailer, reserved)))
            return rec_fail(rec, errp, "CRC trailer: reserved field is not zero");
    }
    if (memcmp(r->buf + rec->length, zero_pad, pad))
        return rec_fail(rec, errp, "padding is not zero");
    rec->body = r->buf;
    r->records++;
    return true;
}

/* ---- Record order ---- */

enum {
    ORDER_CONFIG,           /* expect VM_CONFIG */
    ORDER_STATIC_END,       /* expect STATIC_END */
    ORDER_MAPPED_RAM,       /* mapped: expect MAPPED_RAM (the head's last record) */
    ORDER_RAM_INDEX,        /* mapped: expect RAM_INDEX (the tail's first) */
    ORDER_PASSES,           /* PAGE_DATA, ZERO_PAGES, ITERATION_END (mapped: ITERATION_END) */
    ORDER_VCPUS,            /* VCPU_STATE x nr_vcpus, then VM_STATE */
    ORDER_DEVICES,          /* DEVICE_STATE*, END */
    ORDER_DONE,
};

void stream_order_init(struct stream_order *o)
{
    memset(o, 0, sizeof(*o));
    o->state = ORDER_CONFIG;
}

void stream_order_init_flags(struct stream_order *o, uint32_t stream_flags)
{
    stream_order_init(o);
    o->mapped = stream_flags & MIG_HDR_F_MAPPED_RAM;
}

bool stream_order_done(const struct stream_order *o)
{
    return o->state == ORDER_DONE;
}

bool stream_order_check(struct stream_order *o, const struct stream_record *rec, GError **errp)
{
    if (rec->skip && o->state != ORDER_DONE)
        return true;
    if (o->mapped && (rec->type == MIG_REC_PAGE_DATA || rec->type == MIG_REC_ZERO_PAGES))
        return rec_fail(rec, errp, "out of order: no %s records in a mapped-RAM file "
                        "(pages live in the RAM area)", mig_rec_type_name(rec->type));
    if (!o->mapped && (rec->type == MIG_REC_MAPPED_RAM || rec->type == MIG_REC_RAM_INDEX))
        return rec_fail(rec, errp, "out of order: %s only appears in a mapped-RAM file",
                        mig_rec_type_name(rec->type));
    switch (o->state) {
    case ORDER_CONFIG:
        if (rec->type != MIG_REC_VM_CONFIG)
            return rec_fail(rec, errp, "out of order: the stream must start with VM_CONFIG");
        if (rec->length >= sizeof(struct mig_rec_vm_config))
            o->nr_vcpus = mig_load_le32(rec->body + offsetof(struct mig_rec_vm_config, nr_vcpus));
        o->state = ORDER_STATIC_END;
        return true;
    case ORDER_STATIC_END:
        if (rec->type != MIG_REC_STATIC_END)
            return rec_fail(rec, errp, "out of order: expected STATIC_END after VM_CONFIG");
        o->state = o->mapped ? ORDER_MAPPED_RAM : ORDER_PASSES;
        return true;
    case ORDER_MAPPED_RAM:
        if (rec->type != MIG_REC_MAPPED_RAM)
            return rec_fail(rec, errp, "out of order: expected MAPPED_RAM after STATIC_END");
        o->state = ORDER_RAM_INDEX;
        return true;
    case ORDER_RAM_INDEX:
        if (rec->type != MIG_REC_RAM_INDEX)
            return rec_fail(rec, errp, "out of order: expected RAM_INDEX at the tail offset");
        o->state = ORDER_PASSES;
        return true;
    case ORDER_PASSES:
        if (rec->type == MIG_REC_PAGE_DATA || rec->type == MIG_REC_ZERO_PAGES)
            return true;
        if (rec->type == MIG_REC_ITERATION_END) {
            uint32_t pass, flags;

            if (rec->length < sizeof(struct mig_rec_iteration_end))
                return rec_fail(rec, errp, "body too short");
            pass = mig_load_le32(rec->body + offsetof(struct mig_rec_iteration_end, pass));
            flags = mig_load_le32(rec->body + offsetof(struct mig_rec_iteration_end, flags));
            if (pass != o->passes + 1)
                return rec_fail(rec, errp, "out of order: pass %u after pass %u", pass,
                                o->passes);
            o->passes = pass;
            if (flags & MIG_ITER_F_FINAL)
                o->state = ORDER_VCPUS;
            return true;
        }
        return rec_fail(rec, errp, "out of order: expected %s%s",
                        o->mapped ? "ITERATION_END" : "page records or ITERATION_END",
                        o->passes ? " (the last pass must be flagged final)" : "");
    case ORDER_VCPUS:
        if (rec->type == MIG_REC_VCPU_STATE && o->next_vcpu < o->nr_vcpus) {
            uint32_t index;

            if (rec->length < sizeof(struct mig_rec_vcpu_state))
                return rec_fail(rec, errp, "body too short");
            index = mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, index));
            if (index != o->next_vcpu)
                return rec_fail(rec, errp, "out of order: vCPU %u, expected vCPU %u", index,
                                o->next_vcpu);
            o->next_vcpu++;
            return true;
        }
        if (rec->type == MIG_REC_VM_STATE && o->next_vcpu == o->nr_vcpus) {
            o->state = ORDER_DEVICES;
            return true;
        }
        if (o->next_vcpu < o->nr_vcpus)
            return rec_fail(rec, errp, "out of order: expected VCPU_STATE for vCPU %u of %u",
                            o->next_vcpu, o->nr_vcpus);
        return rec_fail(rec, errp, "out of order: expected VM_STATE after %u VCPU_STATE records",
                        o->nr_vcpus);
    case ORDER_DEVICES:
        if (rec->type == MIG_REC_DEVICE_STATE)
            return true;
        if (rec->type == MIG_REC_END) {
            o->state = ORDER_DONE;
            return true;
        }
        return rec_fail(rec, errp, "out of order: expected DEVICE_STATE or END");
    default:
        return rec_fail(rec, errp, "out of order: a record after END");
    }
}

/* ---- Names and FDT blobs ---- */

/* Check a NUL-padded wire name of MIG_NAME_LEN bytes: 1..31 printable ASCII
 * characters, then only NULs. Copies it to (out) if non-NULL. */
static bool check_name(const struct stream_record *rec, const uint8_t *p, const char *what,
                       char *out, GError **errp)
{
    size_t len = strnlen((const char *)p, MIG_NAME_LEN);

    if (len == 0 || len == MIG_NAME_LEN)
        return rec_fail(rec, errp, "%s must be 1 to %d characters and NUL-terminated", what,
                        MIG_NAME_LEN - 1);
    for (size_t i = 0; i < MIG_NAME_LEN; i++) {
        if (i < len && (p[i] < 0x21 || p[i] > 0x7e))
            return rec_fail(rec, errp, "%s contains a non-printable character", what);
        if (i >= len && p[i])
            return rec_fail(rec, errp, "%s is not NUL-padded", what);
    }
    if (out)
        memcpy(out, p, MIG_NAME_LEN);
    return true;
}

static bool name_ok(const char *name)
{
    size_t len = strnlen(name, MIG_NAME_LEN);

    if (len == 0 || len == MIG_NAME_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x21 || name[i] > 0x7e)
            return false;
    return true;
}

static void store_name(uint8_t *p, const char *name)
{
    memset(p, 0, MIG_NAME_LEN);
    memcpy(p, name, strnlen(name, MIG_NAME_LEN - 1));
}

static bool check_fdt(const struct stream_record *rec, const uint8_t *fdt, size_t len,
                      GError **errp)
{
    int rc;

    if (len < MIG_FDT_MIN_SIZE)
        return rec_fail(rec, errp, "FDT blob of %zu bytes is too short", len);
    rc = fdt_check_full(fdt, len);
    if (rc)
        return rec_fail(rec, errp, "bad FDT blob: %s", fdt_strerror(rc));
    if (fdt_totalsize(fdt) != len)
        return rec_fail(rec, errp, "FDT blob size %u does not match the %zu bytes left",
                        fdt_totalsize(fdt), len);
    return true;
}

static bool fdt_blob_size(const void *fdt, uint32_t prefix, uint32_t *out, GError **errp)
{
    int rc = fdt_check_header(fdt);

    if (rc)
        return stream_fail(errp, "cannot send a bad FDT blob: %s", fdt_strerror(rc));
    if (fdt_totalsize(fdt) > MIG_REC_LENGTH_MAX - prefix)
        return stream_fail(errp, "FDT blob of %u bytes is too large", fdt_totalsize(fdt));
    *out = fdt_totalsize(fdt);
    return true;
}

/* ---- VM_CONFIG ---- */

static bool vm_config_encode(const struct stream_vm_config *cfg, uint8_t *b, GError **errp)
{
    size_t o;

    if (cfg->nr_regions > MIG_VM_CONFIG_MAX_REGIONS ||
        cfg->nr_devices > MIG_VM_CONFIG_MAX_DEVICES)
        return stream_fail(errp, "VM_CONFIG: too many regions or devices");
    if (!name_ok(cfg->machine))
        return stream_fail(errp, "VM_CONFIG: bad machine name");
    mig_store_le64(b + offsetof(struct mig_rec_vm_config, ram_size), cfg->ram_size);
    mig_store_le64(b + offsetof(struct mig_rec_vm_config, nr_gfns), cfg->nr_gfns);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_vcpus), cfg->nr_vcpus);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_regions), cfg->nr_regions);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_devices), cfg->nr_devices);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, cpuid_nr_entries),
                   cfg->cpuid_nr_entries);
    memcpy(b + offsetof(struct mig_rec_vm_config, cpuid_sha256), cfg->cpuid_sha256, 32);
    store_name(b + offsetof(struct mig_rec_vm_config, machine), cfg->machine);
    for (uint32_t i = 0; i < cfg->nr_regions; i++) {
        o = offsetof(struct mig_rec_vm_config, regions) + i * sizeof(struct mig_vm_config_region);
        mig_store_le64(b + o + offsetof(struct mig_vm_config_region, gpa), cfg->regions[i].gpa);
        mig_store_le64(b + o + offsetof(struct mig_vm_config_region, size),
                       cfg->regions[i].size);
    }
    for (uint32_t i = 0; i < cfg->nr_devices; i++) {
        o = sizeof(struct mig_rec_vm_config) + i * sizeof(struct mig_vm_config_device);
        if (!name_ok(cfg->devices[i].id))
            return stream_fail(errp, "VM_CONFIG: bad device id");
        store_name(b + o + offsetof(struct mig_vm_config_device, id), cfg->devices[i].id);
        mig_store_le32(b + o + offsetof(struct mig_vm_config_device, instance),
                       cfg->devices[i].instance);
    }
    return true;
}

bool stream_write_vm_config(struct stream_writer *w, const struct stream_vm_config *cfg,
                            GError **errp)
{
    size_t len = sizeof(struct mig_rec_vm_config) +
                 (size_t)MIN(cfg->nr_devices, (uint32_t)MIG_VM_CONFIG_MAX_DEVICES) *
                 sizeof(struct mig_vm_config_device);
    g_autofree uint8_t *b = g_malloc0(len);
    struct stream_record self = { .type = MIG_REC_VM_CONFIG, .length = (uint32_t)len,
                                  .body = b, .index = w->records,
                                  .offset = channel_write_pos(w->ch) };
    struct stream_vm_config check;
    struct stream_part part = { b, len, STREAM_PART_COPY };

    if (!vm_config_encode(cfg, b, errp))
        return false;
    /* Never send what the target would refuse. */
    if (!stream_parse_vm_config(&self, &check, errp))
        return false;
    return stream_write_record(w, MIG_REC_VM_CONFIG, &part, 1, errp);
}

bool stream_parse_vm_config(const struct stream_record *rec, struct stream_vm_config *out,
                            GError **errp)
{
    const uint8_t *b = rec->body;
    const uint64_t page_size = 1ULL << MIG_STREAM_PAGE_SHIFT;
    uint64_t total = 0, prev_end = 0;
    size_t want;

    if (!rec_expect_type(rec, MIG_REC_VM_CONFIG, errp))
        return false;
    memset(out, 0, sizeof(*out));
    if (rec->length < sizeof(struct mig_rec_vm_config))
        return rec_fail(rec, errp, "body of %u bytes is shorter than %zu", rec->length,
                        sizeof(struct mig_rec_vm_config));
    out->ram_size = mig_load_le64(b + offsetof(struct mig_rec_vm_config, ram_size));
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_vm_config, nr_gfns));
    out->nr_vcpus = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_vcpus));
    out->nr_regions = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_regions));
    out->nr_devices = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_devices));
    out->cpuid_nr_entries = mig_load_le32(b + offsetof(struct mig_rec_vm_config,
                                                       cpuid_nr_entries));
    memcpy(out->cpuid_sha256, b + offsetof(struct mig_rec_vm_config, cpuid_sha256), 32);

    if (out->nr_devices > MIG_VM_CONFIG_MAX_DEVICES)
        return rec_fail(rec, errp, "%u devices (at most %d)", out->nr_devices,
                        MIG_VM_CONFIG_MAX_DEVICES);
    want = sizeof(struct mig_rec_vm_config) +
           (size_t)out->nr_devices * sizeof(struct mig_vm_config_device);
    if (rec->length != want)
        return rec_fail(rec, errp, "length %u, but %u devices need %zu", rec->length,
                        out->nr_devices, want);
    if (out->nr_vcpus < 1 || out->nr_vcpus > MIG_VM_CONFIG_MAX_VCPUS)
        return rec_fail(rec, errp, "%u vCPUs (1 to %d)", out->nr_vcpus,
                        MIG_VM_CONFIG_MAX_VCPUS);
    if (out->nr_regions < 1 || out->nr_regions > MIG_VM_CONFIG_MAX_REGIONS)
        return rec_fail(rec, errp, "%u RAM regions (1 to %d)", out->nr_regions,
                        MIG_VM_CONFIG_MAX_REGIONS);
    if (out->nr_gfns > (UINT64_MAX >> MIG_STREAM_PAGE_SHIFT))
        return rec_fail(rec, errp, "nr_gfns 0x%" PRIx64 " is too large", out->nr_gfns);
    for (uint32_t i = 0; i < MIG_VM_CONFIG_MAX_REGIONS; i++) {
        size_t o = offsetof(struct mig_rec_vm_config, regions) +
                   i * sizeof(struct mig_vm_config_region);
        uint64_t gpa = mig_load_le64(b + o + offsetof(struct mig_vm_config_region, gpa));
        uint64_t size = mig_load_le64(b + o + offsetof(struct mig_vm_config_region, size));

        if (i >= out->nr_regions) {
            if (gpa || size)
                return rec_fail(rec, errp, "unused region %u is not zero", i);
            continue;
        }
        if (!size || gpa % page_size || size % page_size)
            return rec_fail(rec, errp, "region %u (0x%" PRIx64 "+0x%" PRIx64
                            ") is empty or not page aligned", i, gpa, size);
        if (gpa < prev_end || size > (out->nr_gfns << MIG_STREAM_PAGE_SHIFT) ||
            gpa > (out->nr_gfns << MIG_STREAM_PAGE_SHIFT) - size)
            return rec_fail(rec, errp, "region %u (0x%" PRIx64 "+0x%" PRIx64
                            ") overlaps, is out of order or lies beyond nr_gfns", i, gpa, size);
        prev_end = gpa + size;
        total += size;
        out->regions[i].gpa = gpa;
        out->regions[i].size = size;
    }
    if (total != out->ram_size)
        return rec_fail(rec, errp, "regions sum to 0x%" PRIx64 " bytes, ram_size is 0x%" PRIx64,
                        total, out->ram_size);
    if (!check_name(rec, b + offsetof(struct mig_rec_vm_config, machine), "machine name",
                    out->machine, errp))
        return false;
    for (uint32_t i = 0; i < out->nr_devices; i++) {
        const uint8_t *d = b + sizeof(struct mig_rec_vm_config) +
                           i * sizeof(struct mig_vm_config_device);

        if (!check_name(rec, d + offsetof(struct mig_vm_config_device, id), "device id",
                        out->devices[i].id, errp))
            return false;
        out->devices[i].instance = mig_load_le32(d + offsetof(struct mig_vm_config_device,
                                                              instance));
        if (mig_load_le32(d + offsetof(struct mig_vm_config_device, reserved)))
            return rec_fail(rec, errp, "device %u: reserved field is not zero", i);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(out->devices[j].id, out->devices[i].id) &&
                out->devices[j].instance == out->devices[i].instance)
                return rec_fail(rec, errp, "device %s instance %u is listed twice",
                                out->devices[i].id, out->devices[i].instance);
    }
    return true;
}

bool stream_vm_config_compare(const struct stream_vm_config *in,
                              const struct stream_vm_config *local, GError **errp)
{
    if (strcmp(in->machine, local->machine))
        return stream_fail(errp, "machine type differs: stream '%s', this VM '%s'",
                           in->machine, local->machine);
    if (in->ram_size != local->ram_size)
        return stream_fail(errp, "RAM size differs: stream %" PRIu64 " MiB, this VM %" PRIu64
                           " MiB", in->ram_size >> 20, local->ram_size >> 20);
    if (in->nr_regions != local->nr_regions || in->nr_gfns != local->nr_gfns)
        return stream_fail(errp, "RAM layout differs: stream %u regions / %" PRIu64
                           " frames, this VM %u / %" PRIu64, in->nr_regions, in->nr_gfns,
                           local->nr_regions, local->nr_gfns);
    for (uint32_t i = 0; i < in->nr_regions; i++)
        if (in->regions[i].gpa != local->regions[i].gpa ||
            in->regions[i].size != local->regions[i].size)
            return stream_fail(errp, "RAM region %u differs: stream 0x%" PRIx64 "+0x%" PRIx64
                               ", this VM 0x%" PRIx64 "+0x%" PRIx64, i, in->regions[i].gpa,
                               in->regions[i].size, local->regions[i].gpa,
                               local->regions[i].size);
    if (in->nr_vcpus != local->nr_vcpus)
        return stream_fail(errp, "vCPU count differs: stream %u, this VM %u", in->nr_vcpus,
                           local->nr_vcpus);
    if (in->cpuid_nr_entries != local->cpuid_nr_entries ||
        memcmp(in->cpuid_sha256, local->cpuid_sha256, 32))
        return stream_fail(errp, "CPUID differs: stream %u entries, this VM %u entries%s "
                           "(a VM moves between Tern processes on the same accelerator, "
                           "kvm or emu, and the same host CPU)",
                           in->cpuid_nr_entries, local->cpuid_nr_entries,
                           in->cpuid_nr_entries == local->cpuid_nr_entries ?
                           " with other values" : "");
    for (uint32_t i = 0; i < MAX(in->nr_devices, local->nr_devices); i++) {
        if (i >= in->nr_devices)
            return stream_fail(errp, "device %s.%u of this VM is not in the stream",
                               local->devices[i].id, local->devices[i].instance);
        if (i >= local->nr_devices)
            return stream_fail(errp, "stream device %s.%u does not exist in this VM",
                               in->devices[i].id, in->devices[i].instance);
        if (strcmp(in->devices[i].id, local->devices[i].id) ||
            in->devices[i].instance != local->devices[i].instance)
            return stream_fail(errp, "device %u differs: stream %s.%u, this VM %s.%u", i,
                               in->devices[i].id, in->devices[i].instance,
                               local->devices[i].id, local->devices[i].instance);
    }
    return true;
}

/* ---- PAGE_DATA and ZERO_PAGES ---- */

bool stream_write_page_data(struct stream_writer *w, const struct stream_page *pages,
                            unsigned count, bool live, GError **errp)
{
    const uint32_t page_size = 1u << MIG_STREAM_PAGE_SHIFT;
    uint8_t hdr[sizeof(struct mig_rec_page_data)] = { 0 };
    uint64_t len = sizeof(hdr) + (uint64_t)count * sizeof(struct mig_page_desc);

    if (count < 1 || count > MIG_PAGE_DATA_MAX_PAGES)
        return stream_fail(errp, "PAGE_DATA: %u pages (1 to %d)", count,
                           MIG_PAGE_DATA_MAX_PAGES);
    for (unsigned i = 0; i < count; i++) {
        bool ok = pages[i].encoding == MIG_PAGE_ENC_RAW ? pages[i].length == page_size :
                  pages[i].encoding == MIG_PAGE_ENC_ZLIB &&
                  pages[i].length >= 1 && pages[i].length <= page_size;

        if (!ok)
            return stream_fail(errp, "PAGE_DATA: page %u (gfn 0x%" PRIx64
                               ") has encoding %u with length %u", i, pages[i].gfn,
                               pages[i].encoding, pages[i].length);
        len += pages[i].length;
    }
    mig_store_le32(hdr + offsetof(struct mig_rec_page_data, count), count);
    if (!stream_record_begin(w, MIG_REC_PAGE_DATA, (uint32_t)len, errp))
        return false;
    stream_record_put(w, hdr, sizeof(hdr), STREAM_PART_COPY);
    for (unsigned i = 0; i < count; i++) {
        uint8_t d[sizeof(struct mig_page_desc)];

        mig_store_le64(d + offsetof(struct mig_page_desc, gfn), pages[i].gfn);
        mig_store_le32(d + offsetof(struct mig_page_desc, encoding), pages[i].encoding);
        mig_store_le32(d + offsetof(struct mig_page_desc, length), pages[i].length);
        stream_record_put(w, d, sizeof(d), STREAM_PART_COPY);
    }
    for (unsigned i = 0; i < count; i++) {
        enum stream_part_mode mode = STREAM_PART_COPY;

        if (pages[i].encoding == MIG_PAGE_ENC_RAW)
            mode = live ? STREAM_PART_LIVE : STREAM_PART_REF;
        stream_record_put(w, pages[i].data, pages[i].length, mode);
    }
    return stream_record_end(w, errp);
}

bool stream_write_zero_pages(struct stream_writer *w, const struct stream_gfn_range *ranges,
                             unsigned count, GError **errp)
{
    uint8_t hdr[sizeof(struct mig_rec_zero_pages)] = { 0 };
    uint64_t len = sizeof(hdr) + (uint64_t)count * sizeof(struct mig_gfn_range);

    if (count < 1 || len > MIG_REC_LENGTH_MAX)
        return stream_fail(errp, "ZERO_PAGES: %u ranges", count);
    mig_store_le32(hdr + offsetof(struct mig_rec_zero_pages, count), count);
    if (!stream_record_begin(w, MIG_REC_ZERO_PAGES, (uint32_t)len, errp))
        return false;
    stream_record_put(w, hdr, sizeof(hdr), STREAM_PART_COPY);
    for (unsigned i = 0; i < count; i++) {
        uint8_t r[sizeof(struct mig_gfn_range)];

        mig_store_le64(r + offsetof(struct mig_gfn_range, first_gfn), ranges[i].first_gfn);
        mig_store_le64(r + offsetof(struct mig_gfn_range, npages), ranges[i].npages);
        stream_record_put(w, r, sizeof(r), STREAM_PART_COPY);
    }
    return stream_record_end(w, errp);
}

bool stream_parse_page_data(const struct stream_record *rec, uint32_t page_size, uint64_t nr_gfns,
                            stream_page_fn fn, void *opaque, GError **errp)
{
    const uint8_t *b = rec->body;
    uint64_t descs_end, payload = 0;
    uint32_t count;

    if (!rec_expect_type(rec, MIG_REC_PAGE_DATA, errp))
        return false;
    if (rec->length < sizeof(struct mig_rec_page_data))
        return rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    count = mig_load_le32(b + offsetof(struct mig_rec_page_data, count));
    if (mig_load_le32(b + offsetof(struct mig_rec_page_data, reserved)))
        return rec_fail(rec, errp, "reserved field is not zero");
    if (count < 1 || count > MIG_PAGE_DATA_MAX_PAGES)
        return rec_fail(rec, errp, "page count %u (1 to %d)", count, MIG_PAGE_DATA_MAX_PAGES);
    descs_end = sizeof(struct mig_rec_page_data) + (uint64_t)count * sizeof(struct mig_page_desc);
    if (descs_end > rec->length)
        return rec_fail(rec, errp, "page count %u needs %" PRIu64
                        " bytes of descriptors, the body has %u", count, descs_end, rec->length);

    /* Pass 1: validate every descriptor before anyone sees a page. */
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = b + sizeof(struct mig_rec_page_data) + i * sizeof(struct mig_page_desc);
        uint64_t gfn = mig_load_le64(d + offsetof(struct mig_page_desc, gfn));
        uint32_t enc = mig_load_le32(d + offsetof(struct mig_page_desc, encoding));
        uint32_t len = mig_load_le32(d + offsetof(struct mig_page_desc, length));

        if (gfn >= nr_gfns)
            return rec_fail(rec, errp, "page %u: gfn 0x%" PRIx64
                            " is outside guest memory (0x%" PRIx64 " frames)", i, gfn, nr_gfns);
        switch (enc) {
        case MIG_PAGE_ENC_RAW:
            if (len != page_size)
                return rec_fail(rec, errp, "page %u (gfn 0x%" PRIx64
                                "): raw length %u is not the page size %u", i, gfn, len,
                                page_size);
            break;
        case MIG_PAGE_ENC_ZLIB:
            if (len < 1 || len > page_size)
                return rec_fail(rec, errp, "page %u (gfn 0x%" PRIx64
                                "): compressed length %u (1 to %u)", i, gfn, len, page_size);
            break;
        case MIG_PAGE_ENC_DELTA:
            return rec_fail(rec, errp, "page %u (gfn 0x%" PRIx64
                            "): encoding DELTA is reserved in stream version 1", i, gfn);
        default:
            return rec_fail(rec, errp, "page %u (gfn 0x%" PRIx64 "): unknown encoding %u", i,
                            gfn, enc);
        }
        payload += len;
    }
    if (descs_end + payload != rec->length)
        return rec_fail(rec, errp, "%u pages carry %" PRIu64 " payload bytes, the body has %"
                        PRIu64 " after the descriptors", count, payload,
                        rec->length - descs_end);

    /* Pass 2: hand out the pages. */
    payload = descs_end;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = b + sizeof(struct mig_rec_page_data) + i * sizeof(struct mig_page_desc);
        struct stream_page page = {
            .gfn = mig_load_le64(d + offsetof(struct mig_page_desc, gfn)),
            .encoding = mig_load_le32(d + offsetof(struct mig_page_desc, encoding)),
            .length = mig_load_le32(d + offsetof(struct mig_page_desc, length)),
        };

        page.data = b + payload;
        payload += page.length;
        if (fn && !fn(opaque, &page, errp)) {
            g_autofree char *what = stream_record_describe(rec);

            g_prefix_error(errp, "%s: ", what);
            return false;
        }
    }
    return true;
}

bool stream_parse_zero_pages(const struct stream_record *rec, uint64_t nr_gfns,
                             stream_range_fn fn, void *opaque, GError **errp)
{
    const uint8_t *b = rec->body;
    uint32_t count;

    if (!rec_expect_type(rec, MIG_REC_ZERO_PAGES, errp))
        return false;
    if (rec->length < sizeof(struct mig_rec_zero_pages))
        return rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    count = mig_load_le32(b + offsetof(struct mig_rec_zero_pages, count));
    if (mig_load_le32(b + offsetof(struct mig_rec_zero_pages, reserved)))
        return rec_fail(rec, errp, "reserved field is not zero");
    if (count < 1 ||
        (uint64_t)count * sizeof(struct mig_gfn_range) !=
        rec->length - sizeof(struct mig_rec_zero_pages))
        return rec_fail(rec, errp, "range count %u does not match the body length %u", count,
                        rec->length);
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < count; i++) {
            const uint8_t *r = b + sizeof(struct mig_rec_zero_pages) +
                               i * sizeof(struct mig_gfn_range);
            uint64_t first = mig_load_le64(r + offsetof(struct mig_gfn_range, first_gfn));
            uint64_t n = mig_load_le64(r + offsetof(struct mig_gfn_range, npages));

            if (pass == 0) {
                /* first + n <= nr_gfns, without computing first + n. */
                if (!n || first >= nr_gfns || n > nr_gfns - first)
                    return rec_fail(rec, errp, "range %u (gfn 0x%" PRIx64 " + 0x%" PRIx64
                                    " pages) is empty or outside guest memory (0x%" PRIx64
                                    " frames)", i, first, n, nr_gfns);
            } else if (fn && !fn(opaque, first, n, errp)) {
                return false;
            }
        }
    }
    return true;
}

bool stream_page_decode(const struct stream_page *page, void *dst, uint32_t page_size,
                        GError **errp)
{
    uLongf out_len = page_size;
    uLong in_len = page->length;
    int rc;

    switch (page->encoding) {
    case MIG_PAGE_ENC_RAW:
        if (page->length != page_size)
            return stream_fail(errp, "gfn 0x%" PRIx64 ": raw page of %u bytes", page->gfn,
                               page->length);
        memcpy(dst, page->data, page_size);
        return true;
    case MIG_PAGE_ENC_ZLIB:
        rc = uncompress2(dst, &out_len, page->data, &in_len);
        if (rc != Z_OK || out_len != page_size || in_len != page->length)
            return stream_fail(errp, "gfn 0x%" PRIx64 ": zlib data does not inflate to exactly "
                               "one page (%s)", page->gfn,
                               rc == Z_OK ? "size mismatch or trailing bytes" :
                               rc == Z_BUF_ERROR ? "too long or truncated" : "corrupt");
        return true;
    default:
        return stream_fail(errp, "gfn 0x%" PRIx64 ": unsupported encoding %u", page->gfn,
                           page->encoding);
    }
}

size_t stream_page_compress(const void *page, uint32_t page_size, int level, uint8_t *out,
                            size_t out_size)
{
    uLongf len = out_size;

    if (compress2(out, &len, page, page_size, level) != Z_OK || len >= page_size)
        return 0;
    return len;
}

/* ---- ITERATION_END ---- */

bool stream_write_iteration_end(struct stream_writer *w, const struct stream_iteration_end *it,
                                GError **errp)
{
    uint8_t b[sizeof(struct mig_rec_iteration_end)];
    struct stream_part part = { b, sizeof(b), STREAM_PART_COPY };

    mig_store_le32(b + offsetof(struct mig_rec_iteration_end, pass), it->pass);
    mig_store_le32(b + offsetof(struct mig_rec_iteration_end, flags), it->flags);
    mig_store_le64(b + offsetof(struct mig_rec_iteration_end, pages_sent), it->pages_sent);
    mig_store_le64(b + offsetof(struct mig_rec_iteration_end, zero_pages), it->zero_pages);
    mig_store_le64(b + offsetof(struct mig_rec_iteration_end, bytes_sent), it->bytes_sent);
    mig_store_le64(b + offsetof(struct mig_rec_iteration_end, dirty_pages), it->dirty_pages);
    mig_store_le64(b + offsetof(struct mig_rec_iteration_end, duration_ns), it->duration_ns);
    return stream_write_record(w, MIG_REC_ITERATION_END, &part, 1, errp);
}

bool stream_parse_iteration_end(const struct stream_record *rec, struct stream_iteration_end *out,
                                GError **errp)
{
    const uint8_t *b = rec->body;

    if (!rec_expect_type(rec, MIG_REC_ITERATION_END, errp))
        return false;
    if (rec->length != sizeof(struct mig_rec_iteration_end))
        return rec_fail(rec, errp, "length %u, expected %zu", rec->length,
                        sizeof(struct mig_rec_iteration_end));
    out->pass = mig_load_le32(b + offsetof(struct mig_rec_iteration_end, pass));
    out->flags = mig_load_le32(b + offsetof(struct mig_rec_iteration_end, flags));
    out->pages_sent = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, pages_sent));
    out->zero_pages = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, zero_pages));
    out->bytes_sent = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, bytes_sent));
    out->dirty_pages = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, dirty_pages));
    out->duration_ns = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, duration_ns));
    if (out->pass < 1)
        return rec_fail(rec, errp, "pass number 0");
    if (out->flags & ~MIG_ITER_F_FINAL)
        return rec_fail(rec, errp, "unknown flags 0x%x", out->flags & ~MIG_ITER_F_FINAL);
    return true;
}

/* ---- VCPU_STATE, VM_STATE, DEVICE_STATE ---- */

bool stream_write_vcpu_state(struct stream_writer *w, uint32_t index, const void *fdt,
                             GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_vcpu_state)] = { 0 };
    uint32_t size = 0;

    if (!fdt_blob_size(fdt, sizeof(h), &size, errp))
        return false;
    mig_store_le32(h + offsetof(struct mig_rec_vcpu_state, index), index);
    struct stream_part parts[] = {
        { h, sizeof(h), STREAM_PART_COPY }, { fdt, size, STREAM_PART_COPY },
    };
    return stream_write_record(w, MIG_REC_VCPU_STATE, parts, 2, errp);
}

bool stream_write_vm_state(struct stream_writer *w, const void *fdt, GError **errp)
{
    uint32_t size = 0;

    if (!fdt_blob_size(fdt, 0, &size, errp))
        return false;
    struct stream_part part = { fdt, size, STREAM_PART_COPY };
    return stream_write_record(w, MIG_REC_VM_STATE, &part, 1, errp);
}

bool stream_write_device_state(struct stream_writer *w, const char *id, uint32_t instance,
                               const void *fdt, GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_device_state)] = { 0 };
    uint32_t size = 0;

    if (!name_ok(id))
        return stream_fail(errp, "DEVICE_STATE: bad device id '%s'", id);
    if (!fdt_blob_size(fdt, sizeof(h), &size, errp))
        return false;
    store_name(h + offsetof(struct mig_rec_device_state, id), id);
    mig_store_le32(h + offsetof(struct mig_rec_device_state, instance), instance);
    struct stream_part parts[] = {
        { h, sizeof(h), STREAM_PART_COPY }, { fdt, size, STREAM_PART_COPY },
    };
    return stream_write_record(w, MIG_REC_DEVICE_STATE, parts, 2, errp);
}

bool stream_parse_vcpu_state(const struct stream_record *rec, uint32_t *index,
                             const void **fdt, size_t *fdt_len, GError **errp)
{
    const size_t hdr = sizeof(struct mig_rec_vcpu_state);

    if (!rec_expect_type(rec, MIG_REC_VCPU_STATE, errp))
        return false;
    if (rec->length < hdr + MIG_FDT_MIN_SIZE)
        return rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    if (mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, reserved)))
        return rec_fail(rec, errp, "reserved field is not zero");
    if (!check_fdt(rec, rec->body + hdr, rec->length - hdr, errp))
        return false;
    *index = mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, index));
    *fdt = rec->body + hdr;
    *fdt_len = rec->length - hdr;
    return true;
}

bool stream_parse_vm_state(const struct stream_record *rec, const void **fdt, size_t *fdt_len,
                           GError **errp)
{
    if (!rec_expect_type(rec, MIG_REC_VM_STATE, errp))
        return false;
    if (!check_fdt(rec, rec->body, rec->length, errp))
        return false;
    *fdt = rec->body;
    *fdt_len = rec->length;
    return true;
}

bool stream_parse_device_state(const struct stream_record *rec, char id[MIG_NAME_LEN],
                               uint32_t *instance, const void **fdt, size_t *fdt_len,
                               GError **errp)
{
    const size_t hdr = sizeof(struct mig_rec_device_state);

    if (!rec_expect_type(rec, MIG_REC_DEVICE_STATE, errp))
        return false;
    if (rec->length < hdr + MIG_FDT_MIN_SIZE)
        return rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    if (!check_name(rec, rec->body + offsetof(struct mig_rec_device_state, id), "device id",
                    id, errp))
        return false;
    if (mig_load_le32(rec->body + offsetof(struct mig_rec_device_state, reserved)))
        return rec_fail(rec, errp, "reserved field is not zero");
    if (!check_fdt(rec, rec->body + hdr, rec->length - hdr, errp))
        return false;
    *instance = mig_load_le32(rec->body + offsetof(struct mig_rec_device_state, instance));
    *fdt = rec->body + hdr;
    *fdt_len = rec->length - hdr;
    return true;
}

/* ---- Mapped-RAM files: MAPPED_RAM and RAM_INDEX ---- */

/* Offsets stay below 2^63 so that off_t holds them. */
#define MAPPED_OFFSET_MAX   ((uint64_t)INT64_MAX)

uint64_t stream_record_wire_size(uint32_t stream_flags, uint32_t length)
{
    return sizeof(struct mig_rec_header) + (uint64_t)length + mig_rec_padding(length) +
           ((stream_flags & MIG_HDR_F_CRC32) ? sizeof(struct mig_rec_trailer) : 0);
}

/* tail_offset for (ram_offset, nr_gfns), or false on overflow. */
static bool mapped_tail(uint64_t ram_offset, uint64_t nr_gfns, uint64_t *tail)
{
    const uint64_t limit = MAPPED_OFFSET_MAX - MIG_MAPPED_ALIGN;

    if (ram_offset > limit || nr_gfns > ((limit - ram_offset) >> MIG_STREAM_PAGE_SHIFT))
        return false;
    *tail = ALIGN_UP(ram_offset + (nr_gfns << MIG_STREAM_PAGE_SHIFT), (uint64_t)MIG_MAPPED_ALIGN);
    return true;
}

/* The checks shared by the writer and the reader; (head_end) is the offset
 * just past the MAPPED_RAM record. Returns an error message or NULL. */
static char *mapped_ram_problem(const struct stream_mapped_ram *m, uint64_t head_end,
                                uint64_t nr_gfns)
{
    uint64_t tail;

    if (m->nr_gfns != nr_gfns)
        return g_strdup_printf("nr_gfns 0x%" PRIx64 " differs from VM_CONFIG's 0x%" PRIx64,
                               m->nr_gfns, nr_gfns);
    if (m->ram_offset % MIG_MAPPED_ALIGN || m->tail_offset % MIG_MAPPED_ALIGN)
        return g_strdup_printf("ram_offset %" PRIu64 " or tail_offset %" PRIu64
                               " is not a multiple of %u", m->ram_offset, m->tail_offset,
                               MIG_MAPPED_ALIGN);
    if (m->ram_offset < head_end)
        return g_strdup_printf("ram_offset %" PRIu64 " lies inside the head (which ends at %"
                               PRIu64 ")", m->ram_offset, head_end);
    if (!mapped_tail(m->ram_offset, m->nr_gfns, &tail))
        return g_strdup_printf("ram_offset %" PRIu64 " + 0x%" PRIx64 " pages overflows",
                               m->ram_offset, m->nr_gfns);
    if (m->tail_offset != tail)
        return g_strdup_printf("tail_offset %" PRIu64 ", expected %" PRIu64
                               " (the RAM area's end rounded up to %u)", m->tail_offset, tail,
                               MIG_MAPPED_ALIGN);
    return NULL;
}

bool stream_mapped_ram_plan(const struct stream_writer *w, uint64_t nr_gfns,
                            struct stream_mapped_ram *out, GError **errp)
{
    uint64_t head_end = channel_write_pos(w->ch) +
                        stream_record_wire_size(w->flags, sizeof(struct mig_rec_mapped_ram));

    if (head_end > MAPPED_OFFSET_MAX - MIG_MAPPED_ALIGN)
        return stream_fail(errp, "MAPPED_RAM: head too large");
    out->ram_offset = ALIGN_UP(head_end, (uint64_t)MIG_MAPPED_ALIGN);
    out->nr_gfns = nr_gfns;
    if (!mapped_tail(out->ram_offset, nr_gfns, &out->tail_offset))
        return stream_fail(errp, "MAPPED_RAM: 0x%" PRIx64 " pages do not fit in a file",
                           nr_gfns);
    return true;
}

bool stream_write_mapped_ram(struct stream_writer *w, const struct stream_mapped_ram *m,
                             GError **errp)
{
    uint8_t b[sizeof(struct mig_rec_mapped_ram)];
    struct stream_part part = { b, sizeof(b), STREAM_PART_COPY };
    uint64_t head_end = channel_write_pos(w->ch) + stream_record_wire_size(w->flags, sizeof(b));
    g_autofree char *problem = NULL;

    if (!(w->flags & MIG_HDR_F_MAPPED_RAM))
        return stream_fail(errp, "MAPPED_RAM in a stream without the mapped-RAM flag");
    problem = mapped_ram_problem(m, head_end, m->nr_gfns);
    if (problem)
        return stream_fail(errp, "MAPPED_RAM: %s", problem);
    mig_store_le64(b + offsetof(struct mig_rec_mapped_ram, ram_offset), m->ram_offset);
    mig_store_le64(b + offsetof(struct mig_rec_mapped_ram, nr_gfns), m->nr_gfns);
    mig_store_le64(b + offsetof(struct mig_rec_mapped_ram, tail_offset), m->tail_offset);
    return stream_write_record(w, MIG_REC_MAPPED_RAM, &part, 1, errp);
}

bool stream_parse_mapped_ram(const struct stream_record *rec, uint32_t stream_flags,
                             uint64_t nr_gfns, struct stream_mapped_ram *out, GError **errp)
{
    const uint8_t *b = rec->body;
    g_autofree char *problem = NULL;

    if (!rec_expect_type(rec, MIG_REC_MAPPED_RAM, errp))
        return false;
    if (!(stream_flags & MIG_HDR_F_MAPPED_RAM))
        return rec_fail(rec, errp, "the stream header lacks the mapped-RAM flag");
    if (rec->length != sizeof(struct mig_rec_mapped_ram))
        return rec_fail(rec, errp, "length %u, expected %zu", rec->length,
                        sizeof(struct mig_rec_mapped_ram));
    out->ram_offset = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, ram_offset));
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, nr_gfns));
    out->tail_offset = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, tail_offset));
    problem = mapped_ram_problem(out, rec->offset +
                                 stream_record_wire_size(stream_flags, rec->length), nr_gfns);
    if (problem)
        return rec_fail(rec, errp, "%s", problem);
    return true;
}

/* Bytes of a RAM_INDEX bitmap for (nr_gfns) frames: whole u64 words. */
static uint64_t ram_index_bitmap_bytes(uint64_t nr_gfns)
{
    return DIV_ROUND_UP(nr_gfns, 64) * 8;
}

bool stream_write_ram_index(struct stream_writer *w, uint64_t nr_gfns,
                            const unsigned long *bitmap, const uint32_t *crcs, GError **errp)
{
    const bool with_crc = w->flags & MIG_HDR_F_CRC32;
    uint8_t hdr[sizeof(struct mig_rec_ram_index)];
    uint64_t words = DIV_ROUND_UP(nr_gfns, 64), present = 0, len;
    uint8_t chunk[4096];
    size_t fill = 0;

    if (!(w->flags & MIG_HDR_F_MAPPED_RAM))
        return stream_fail(errp, "RAM_INDEX in a stream without the mapped-RAM flag");
    if (with_crc && !crcs)
        return stream_fail(errp, "RAM_INDEX: the stream has CRCs but no page CRCs were given");
    if (nr_gfns > (uint64_t)MIG_REC_LENGTH_MAX * 8)
        return stream_fail(errp, "RAM_INDEX: 0x%" PRIx64 " frames make the index larger "
                           "than %u bytes", nr_gfns, MIG_REC_LENGTH_MAX);
    for (uint64_t gfn = 0; gfn < nr_gfns; gfn++)
        present += bitmap_test(bitmap, gfn);
    len = sizeof(hdr) + ram_index_bitmap_bytes(nr_gfns) + (with_crc ? 4 * present : 0);
    if (len > MIG_REC_LENGTH_MAX)
        return stream_fail(errp, "RAM_INDEX of %" PRIu64 " bytes (%" PRIu64 " present pages) "
                           "exceeds the maximum record of %u bytes: the file format holds "
                           "about 60 GiB of present pages with CRCs", len, present,
                           MIG_REC_LENGTH_MAX);
    mig_store_le64(hdr + offsetof(struct mig_rec_ram_index, nr_gfns), nr_gfns);
    mig_store_le64(hdr + offsetof(struct mig_rec_ram_index, nr_present), present);
    if (!stream_record_begin(w, MIG_REC_RAM_INDEX, (uint32_t)len, errp))
        return false;
    stream_record_put(w, hdr, sizeof(hdr), STREAM_PART_COPY);
    /* The bitmap as little-endian u64 words, bits beyond nr_gfns clear. */
    for (uint64_t i = 0; i < words; i++) {
        uint64_t v = 0;

        for (unsigned bit = 0; bit < 64 && i * 64 + bit < nr_gfns; bit++)
            if (bitmap_test(bitmap, i * 64 + bit))
                v |= 1ULL << bit;
        mig_store_le64(chunk + fill, v);
        fill += 8;
        if (fill == sizeof(chunk)) {
            stream_record_put(w, chunk, fill, STREAM_PART_COPY);
            fill = 0;
        }
    }
    if (with_crc) {
        for (uint64_t gfn = 0; gfn < nr_gfns; gfn++) {
            if (!bitmap_test(bitmap, gfn))
                continue;
            mig_store_le32(chunk + fill, crcs[gfn]);
            fill += 4;
            if (fill == sizeof(chunk)) {
                stream_record_put(w, chunk, fill, STREAM_PART_COPY);
                fill = 0;
            }
        }
    }
    stream_record_put(w, chunk, fill, STREAM_PART_COPY);
    return stream_record_end(w, errp);
}

bool stream_parse_ram_index(const struct stream_record *rec, uint32_t stream_flags,
                            uint64_t nr_gfns, struct stream_ram_index *out, GError **errp)
{
    const uint8_t *b = rec->body;
    const bool with_crc = stream_flags & MIG_HDR_F_CRC32;
    uint64_t bitmap_bytes, want, count = 0, words;

    if (!rec_expect_type(rec, MIG_REC_RAM_INDEX, errp))
        return false;
    memset(out, 0, sizeof(*out));
    if (!(stream_flags & MIG_HDR_F_MAPPED_RAM))
        return rec_fail(rec, errp, "the stream header lacks the mapped-RAM flag");
    if (rec->length < sizeof(struct mig_rec_ram_index))
        return rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_ram_index, nr_gfns));
    out->nr_present = mig_load_le64(b + offsetof(struct mig_rec_ram_index, nr_present));
    if (out->nr_gfns != nr_gfns)
        return rec_fail(rec, errp, "nr_gfns 0x%" PRIx64 " differs from VM_CONFIG's 0x%" PRIx64,
                        out->nr_gfns, nr_gfns);
    /* Bounded before any arithmetic: the body is at most MIG_REC_LENGTH_MAX. */
    if (out->nr_gfns > (uint64_t)MIG_REC_LENGTH_MAX * 8 || out->nr_present > out->nr_gfns)
        return rec_fail(rec, errp, "0x%" PRIx64 " present of 0x%" PRIx64
                        " frames cannot fit in one record", out->nr_present, out->nr_gfns);
    bitmap_bytes = ram_index_bitmap_bytes(out->nr_gfns);
    want = sizeof(struct mig_rec_ram_index) + bitmap_bytes + (with_crc ? 4 * out->nr_present : 0);
    if (rec->length != want)
        return rec_fail(rec, errp, "length %u, but 0x%" PRIx64 " frames with 0x%" PRIx64
                        " present need %" PRIu64, rec->length, out->nr_gfns, out->nr_present,
                        want);
    out->bitmap = b + sizeof(struct mig_rec_ram_index);
    words = bitmap_bytes / 8;
    for (uint64_t i = 0; i < words; i++) {
        uint64_t v = mig_load_le64(out->bitmap + i * 8);

        if (i == words - 1 && out->nr_gfns % 64 && (v >> (out->nr_gfns % 64)))
            return rec_fail(rec, errp, "bitmap has pages at or beyond nr_gfns 0x%" PRIx64,
                            out->nr_gfns);
        count += (uint64_t)__builtin_popcountll(v);
    }
    if (count != out->nr_present)
        return rec_fail(rec, errp, "bitmap has %" PRIu64 " pages, nr_present says %" PRIu64,
                        count, out->nr_present);
    out->crcs = with_crc ? out->bitmap + bitmap_bytes : NULL;
    return true;
}

bool stream_ram_index_test(const struct stream_ram_index *idx, uint64_t gfn)
{
    return gfn < idx->nr_gfns && ((idx->bitmap[gfn / 8] >> (gfn % 8)) & 1);
}

uint32_t stream_ram_index_crc(const struct stream_ram_index *idx, uint64_t crc_index)
{
    if (!idx->crcs || crc_index >= idx->nr_present)
        return 0;
    return mig_load_le32(idx->crcs + 4 * crc_index);
}

bool stream_ram_index_for_each_run(const struct stream_ram_index *idx, uint64_t max_run,
                                   stream_run_fn fn, void *opaque, GError **errp)
{
    uint64_t words = DIV_ROUND_UP(idx->nr_gfns, 64), crc_index = 0;
    uint64_t run_start = 0, run_len = 0;

    for (uint64_t i = 0; i < words; i++) {
        uint64_t v = mig_load_le64(idx->bitmap + i * 8);

        if (!v && !run_len)
            continue;           /* a hole of 64 pages: skip it fast */
        for (unsigned bit = 0; bit < 64; bit++) {
            uint64_t gfn = i * 64 + bit;
            bool set = (v >> bit) & 1;

            if (set && run_len && (!max_run || run_len < max_run)) {
                run_len++;
                continue;
            }
            if (run_len) {
                if (!fn(opaque, run_start, run_len, crc_index, errp))
                    return false;
                crc_index += run_len;
                run_len = 0;
            }
            if (set) {
                run_start = gfn;
                run_len = 1;
            }
        }
    }
    if (run_len && !fn(opaque, run_start, run_len, crc_index, errp))
        return false;
    return true;
}

bool stream_ram_index_check_page(const struct stream_ram_index *idx, uint64_t crc_index,
                                 uint64_t gfn, const void *page, GError **errp)
{
    uint32_t want, got;

    if (!idx->crcs)
        return true;
    want = stream_ram_index_crc(idx, crc_index);
    got = (uint32_t)crc32(0, page, 1u << MIG_STREAM_PAGE_SHIFT);
    if (want != got)
        return stream_fail(errp, "gfn 0x%" PRIx64 ": page CRC mismatch (index says 0x%08x, "
                           "computed 0x%08x)", gfn, want, got);
    return true;
}

bool stream_ram_index_check_run(const struct stream_ram_index *idx,
                                const struct stream_mapped_ram *m, uint64_t first_gfn,
                                uint64_t npages, uint64_t first_crc, const uint8_t *pages,
                                GError **errp)
{
    for (uint64_t i = 0; i < npages; i++) {
        uint64_t gfn = first_gfn + i;
        GError *err = NULL;

        if (stream_ram_index_check_page(idx, first_crc + i, gfn,
                                        pages + (i << MIG_STREAM_PAGE_SHIFT), &err))
            continue;
        /* "gfn 0x12: page CRC mismatch (...)" gains where the page is. */
        const char *why = strstr(err->message, ": ");
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "gfn 0x%" PRIx64 " at file offset %" PRIu64 "%s", gfn,
                    stream_mapped_page_offset(m, gfn), why ? why : ": page CRC mismatch");
        g_error_free(err);
        return false;
    }
    return true;
}

/* ---- Return path ---- */

bool stream_write_rp_error(struct stream_writer *w, const char *message, GError **errp)
{
    const char *end = message + strlen(message);

    if (end - message > (ptrdiff_t)MIG_RP_ERROR_MAX) {
        end = message + MIG_RP_ERROR_MAX;
        while (end > message && ((uint8_t)*end & 0xc0) == 0x80)
            end--;              /* do not cut a UTF-8 sequence */
    }
    if (end == message) {
        message = "error";
        end = message + 5;
    }
    struct stream_part part = { message, (size_t)(end - message), STREAM_PART_COPY };
    return stream_write_record(w, MIG_RP_ERROR, &part, 1, errp);
}

bool stream_parse_rp_error(const struct stream_record *rec, char **message, GError **errp)
{
    if (!rec_expect_type(rec, MIG_RP_ERROR, errp))
        return false;
    if (rec->length < 1 || rec->length > MIG_RP_ERROR_MAX)
        return rec_fail(rec, errp, "message of %u bytes (1 to %u)", rec->length,
                        MIG_RP_ERROR_MAX);
    if (memchr(rec->body, 0, rec->length) ||
        !g_utf8_validate((const char *)rec->body, rec->length, NULL))
        return rec_fail(rec, errp, "message is not valid UTF-8 text");
    *message = g_strndup((const char *)rec->body, rec->length);
    return true;
}
