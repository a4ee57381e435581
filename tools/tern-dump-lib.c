/* tern-dump-lib.c: tern-dump's walk: read, check and print a stream or checkpoint with the stream's own reader. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../migration/multifd.h"
#include "tern/channel-file.h"
#include "tern/channel.h"
#include "tern/stream.h"
#include "tern/util.h"
#include "tern-dump.h"

/*
 * The input is either a checkpoint file (MIG_HDR_F_MAPPED_RAM: head, RAM area
 * at fixed offsets, tail) or the bytes of a live migration stream (e.g. a TCP
 * capture of the source-to-target direction). Everything is read and checked
 * with migration/stream*.c, the target's own code: framing, CRCs, order,
 * bodies (each through its type's descriptor, which also describes it), FDT
 * blobs; for checkpoints also every present page against the CRC in
 * RAM_INDEX. The first problem ends the walk and becomes the verdict.
 * Memory stays bounded: one record body (at most MIG_REC_LENGTH_MAX), one
 * I/O buffer, and at most DUMP_JSON_MAX records and passes kept for JSON.
 */

#define PAGE_SIZE_V1 (1u << MIG_STREAM_PAGE_SHIFT)
#define IO_PAGES 1024u        /* 4 MiB per positional read */
#define DUMP_JSON_MAX 100000u /* records (and passes) kept for --json */

struct pass_stat {
    uint32_t pass;
    bool closed; /* its ITERATION_END was read */
    /* Counted from the records. */
    uint64_t page_records;
    uint64_t pages;
    uint64_t raw;
    uint64_t zlib;
    uint64_t zero_records;
    uint64_t zero_pages;
    uint64_t bytes; /* stream bytes of the pass's records, ITERATION_END excluded */
    /* Claimed by ITERATION_END. */
    struct stream_iteration_end it;
};

struct dump {
    bool verify;
    bool json;
    bool quiet;
    bool text; /* print the header and every record */
    const char *path;
    FILE *out; /* the report (stdout in tern-dump) */

    struct channel *ch;
    bool is_file; /* a file channel: seekable, positional reads */
    struct stream_reader r;
    struct stream_order o;
    bool reader_ready;

    bool have_header;
    bool have_cfg;
    struct stream_vm_config cfg;
    bool mapped; /* MAPPED_RAM accepted */
    struct stream_mapped_ram m;
    uint64_t present; /* RAM_INDEX present pages, checked */
    bool have_index;
    bool device_seen[MIG_VM_CONFIG_MAX_DEVICES];

    uint64_t records; /* records accepted */
    uint64_t pages;   /* pages carried (PAGE_DATA or present in RAM_INDEX) */
    uint64_t passes;  /* ITERATION_END records accepted */
    struct pass_stat cur;
    GArray *pass_list; /* struct pass_stat, at most DUMP_JSON_MAX */

    JsonBuilder *jb;
    bool jrec; /* the current record goes into the JSON array */
    uint64_t json_omitted;

    uint8_t *page; /* scratch page for zlib decoding */
    uint8_t *io;   /* IO_PAGES pages, aligned for O_DIRECT */
    char *error;   /* the verdict's reason, NULL if OK */
};

/* ---- Output helpers ---- */

static void jint(struct dump *d, const char *name, uint64_t v)
{
    if (d->jrec) {
        json_builder_set_member_name(d->jb, name);
        json_builder_add_int_value(d->jb, (gint64)MIN(v, (uint64_t)INT64_MAX));
    }
}

static void jstr(struct dump *d, const char *name, const char *v)
{
    if (d->jrec) {
        json_builder_set_member_name(d->jb, name);
        json_builder_add_string_value(d->jb, v);
    }
}

static void jbool(struct dump *d, const char *name, bool v)
{
    if (d->jrec) {
        json_builder_set_member_name(d->jb, name);
        json_builder_add_boolean_value(d->jb, v);
    }
}

static char *flags_text(uint32_t flags)
{
    GString *s = g_string_new(NULL);

    if (flags & MIG_HDR_F_CRC32)
        g_string_append(s, " CRC32");
    if (flags & MIG_HDR_F_MAPPED_RAM)
        g_string_append(s, " MAPPED_RAM");
    if (flags & MIG_HDR_F_RAM_FD)
        g_string_append(s, " RAM_FD");
    if (flags & MIG_HDR_F_MULTIFD)
        g_string_append(s, " MULTIFD");
    if (!s->len)
        g_string_append(s, " none");
    g_string_erase(s, 0, 1);
    return g_string_free(s, false);
}

/* ---- Checks the stream code leaves to its caller ---- */

static bool gfn_in_ram(const struct stream_vm_config *cfg, uint64_t gfn)
{
    uint64_t gpa = gfn << MIG_STREAM_PAGE_SHIFT;

    for (uint32_t i = 0; i < cfg->nr_regions; i++)
        if (gpa >= cfg->regions[i].gpa && gpa - cfg->regions[i].gpa < cfg->regions[i].size)
            return true;
    return false;
}

/* PAGE_DATA, per page: in a RAM region, and a ZLIB payload inflates to exactly one page. */
static bool walk_page(void *opaque, const struct stream_page *page, GError **errp)
{
    struct dump *d = opaque;

    if (!gfn_in_ram(&d->cfg, page->gfn)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "gfn 0x%" PRIx64 " lies in no RAM region",
                    page->gfn);
        return false;
    }
    return stream_page_decode(page, d->page, PAGE_SIZE_V1, errp);
}

/* ---- Mapped-RAM files ---- */

/* The I/O buffer, allocated when a checkpoint first needs it (4 MiB: a
 * stream never does). */
static bool dump_io(struct dump *d)
{
    if (!d->io &&
        posix_memalign((void **)&d->io, CHANNEL_FILE_ALIGN, (size_t)IO_PAGES * PAGE_SIZE_V1))
        g_error("tern-dump: out of memory");
    return true;
}

struct run_check {
    struct dump *d;
    const struct stream_ram_index *idx;
    uint64_t file_size;
};

static bool check_run(void *opaque, uint64_t first_gfn, uint64_t npages, uint64_t first_crc,
                      GError **errp)
{
    struct run_check *c = opaque;
    struct dump *d = c->d;
    uint64_t off = stream_mapped_page_offset(&d->m, first_gfn);
    size_t len = (size_t)npages * PAGE_SIZE_V1;

    if (off > c->file_size || len > c->file_size - off) {
        uint64_t gfn = first_gfn + (c->file_size > off ? (c->file_size - off) / PAGE_SIZE_V1 : 0);

        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "gfn 0x%" PRIx64 " at file offset %" PRIu64
                    ": beyond the end of the file (%" PRIu64 " bytes): truncated",
                    gfn, stream_mapped_page_offset(&d->m, gfn), c->file_size);
        return false;
    }
    for (uint64_t i = 0; i < npages; i++) {
        if (!gfn_in_ram(&d->cfg, first_gfn + i)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "gfn 0x%" PRIx64 " is present but lies in no RAM region", first_gfn + i);
            return false;
        }
    }
    return dump_io(d) && channel_file_read_at(d->ch, off, d->io, len, errp) &&
           stream_ram_index_check_run(c->idx, &d->m, first_gfn, npages, first_crc, d->io, errp);
}

/* After MAPPED_RAM: the head's padding is zero, the file reaches the tail;
 * then move the reader to the tail. */
static bool enter_tail(struct dump *d, const struct stream_record *rec, const struct stream_body *b,
                       GError **errp)
{
    uint64_t head_end = stream_reader_pos(&d->r), size, pos;

    (void)b;
    if (!d->is_file) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "a mapped-RAM checkpoint must be "
                    "read from a regular file (it is not sequential)");
        return false;
    }
    size = channel_file_size(d->ch);
    if (size < d->m.tail_offset) {
        g_autofree char *what = stream_record_describe(rec);

        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s: the file ends at %" PRIu64 ", before the tail at %" PRIu64 " (truncated)",
                    what, size, d->m.tail_offset);
        return false;
    }
    for (pos = head_end; pos < d->m.ram_offset;) {
        size_t n = (size_t)MIN(d->m.ram_offset - pos, (uint64_t)IO_PAGES * PAGE_SIZE_V1);

        if (!dump_io(d) || !channel_file_read_at(d->ch, pos, d->io, n, errp))
            return false;
        /* All zero when the first byte is and each equals the next. */
        if (n && !d->io[0] && !memcmp(d->io, d->io + 1, n - 1)) {
            pos += n;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (d->io[i]) {
                g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                            "non-zero byte at offset %" PRIu64
                            " in the padding between the head and the RAM area at %" PRIu64,
                            pos + i, d->m.ram_offset);
                return false;
            }
        }
        pos += n;
    }
    if (!channel_file_seek(d->ch, d->m.tail_offset, errp))
        return false;
    stream_reader_set_channel(&d->r, d->ch, d->m.tail_offset);
    return true;
}

/* ---- Records ---- */

static void pass_close(struct dump *d)
{
    if (d->pass_list->len < DUMP_JSON_MAX)
        g_array_append_val(d->pass_list, d->cur);
    memset(&d->cur, 0, sizeof(d->cur));
    d->cur.pass = (uint32_t)d->passes + 1;
}

/* ---- What tern-dump checks beyond the stream code, per type ---- */

static bool dump_config(struct dump *d, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)errp;
    d->cfg = b->vm_config;
    d->have_cfg = true;
    d->r.nr_gfns = d->cfg.nr_gfns; /* RAM_INDEX's maximum follows */
    return true;
}

static bool dump_pages(struct dump *d, const struct stream_record *rec, const struct stream_body *b,
                       GError **errp)
{
    (void)rec;
    (void)errp;
    d->cur.page_records++;
    d->cur.pages += b->page_data.count;
    d->cur.raw += b->page_data.raw;
    d->cur.zlib += b->page_data.zlib;
    d->pages += b->page_data.count;
    return true;
}

static bool dump_zero(struct dump *d, const struct stream_record *rec, const struct stream_body *b,
                      GError **errp)
{
    (void)rec;
    (void)errp;
    d->cur.zero_records++;
    d->cur.zero_pages += b->zero_pages.pages;
    return true;
}

static bool dump_iteration(struct dump *d, const struct stream_record *rec,
                           const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)errp;
    d->cur.it = b->iteration_end;
    return true;
}

/* After ITERATION_END is described: the pass is over. */
static bool dump_pass_end(struct dump *d, const struct stream_record *rec,
                          const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)b;
    (void)errp;
    d->cur.closed = true;
    d->passes++;
    pass_close(d);
    return true;
}

/* Every device of VM_CONFIG's list, once. */
static bool dump_device(struct dump *d, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp)
{
    const char *id = b->state.id;
    uint32_t idx = b->state.index, i;

    for (i = 0; i < d->cfg.nr_devices; i++)
        if (!strcmp(d->cfg.devices[i].id, id) && d->cfg.devices[i].instance == idx)
            break;
    if (i == d->cfg.nr_devices) {
        g_autofree char *what = stream_record_describe(rec);

        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s: device %s.%u is not in VM_CONFIG's device list", what, id, idx);
        return false;
    }
    if (d->device_seen[i]) {
        g_autofree char *what = stream_record_describe(rec);

        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: device %s.%u appears twice", what,
                    id, idx);
        return false;
    }
    d->device_seen[i] = true;
    return true;
}

static bool dump_mapped(struct dump *d, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)errp;
    d->m = b->mapped_ram;
    d->mapped = true;
    return true;
}

/* Every present page against its CRC, before going on: the restore path
 * does the same before it writes guest RAM. */
static bool dump_index(struct dump *d, const struct stream_record *rec, const struct stream_body *b,
                       GError **errp)
{
    const struct stream_ram_index *index = &b->ram_index;
    struct run_check c = { .d = d, .idx = index };

    c.file_size = channel_file_size(d->ch);
    if (!stream_ram_index_for_each_run(index, IO_PAGES, check_run, &c, errp)) {
        g_autofree char *what = stream_record_describe(rec);

        g_prefix_error(errp, "%s: ", what);
        return false;
    }
    d->present = index->nr_present;
    d->have_index = true;
    d->pages += index->nr_present;
    return true;
}

typedef bool (*dump_fn)(struct dump *d, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp);

/* (check) runs before the record is described, (after) once it is. */
static const struct dump_step {
    dump_fn check;
    dump_fn after;
} dump_steps[MIG_REC_STREAM_MAX_] = {
    [MIG_REC_VM_CONFIG] = { dump_config, NULL },
    [MIG_REC_PAGE_DATA] = { dump_pages, NULL },
    [MIG_REC_ZERO_PAGES] = { dump_zero, NULL },
    [MIG_REC_ITERATION_END] = { dump_iteration, dump_pass_end },
    [MIG_REC_DEVICE_STATE] = { dump_device, NULL },
    [MIG_REC_MAPPED_RAM] = { dump_mapped, enter_tail },
    [MIG_REC_RAM_INDEX] = { dump_index, NULL },
};

/* ---- Records ---- */

/* A record's fields, for the JSON record object. */
static void field_u64(void *opaque, const char *name, uint64_t v)
{
    jint(opaque, name, v);
}

static void field_str(void *opaque, const char *name, const char *v)
{
    jstr(opaque, name, v);
}

static void field_flag(void *opaque, const char *name, bool v)
{
    jbool(opaque, name, v);
}

static void field_list(void *opaque, const char *name, const char *const *v, size_t n)
{
    struct dump *d = opaque;

    if (!d->jrec)
        return;
    json_builder_set_member_name(d->jb, name);
    json_builder_begin_array(d->jb);
    for (size_t i = 0; i < n; i++)
        json_builder_add_string_value(d->jb, v[i]);
    json_builder_end_array(d->jb);
}

/* The MULTIFD record: optional by type (the stream reader skips it, keeping
 * its short body), required by the header flag MULTIFD. */
static bool dump_multifd(struct dump *d, const struct stream_record *rec, char **summary,
                         GError **errp)
{
    struct multifd_announce a;

    if (!(d->r.flags & MIG_HDR_F_MULTIFD)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "MULTIFD record in a stream without the MULTIFD flag");
        return false;
    }
    if (!rec->body || !multifd_announce_decode(rec->body, rec->length, &a, errp)) {
        if (!rec->body)
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "MULTIFD: length %u (must be %u)",
                        rec->length, MULTIFD_RECORD_SIZE);
        return false;
    }
    jint(d, "channels", a.channels);
    jstr(d, "compression", page_compression_name(a.compression));
    g_autofree char *session = g_strdup_printf("0x%016" PRIx64, a.session);
    jstr(d, "session", session); /* 64 random bits: beyond JSON's safe integers */
    *summary = g_strdup_printf("pages on %u more connection%s, compression %s, session %s",
                               a.channels, a.channels == 1 ? "" : "s",
                               page_compression_name(a.compression), session);
    return true;
}

/* A record's type for people: MULTIFD is known here though optional. */
static const char *rec_type_name(const struct stream_record *rec)
{
    if (rec->type == MIG_REC_MULTIFD)
        return "MULTIFD";
    return rec->skip ? "OPTIONAL" : mig_rec_type_name(rec->type);
}

/* Validate and describe (rec) through its type's descriptor; the summary goes
 * to (*summary). */
static bool record_body(struct dump *d, const struct stream_record *rec, char **summary,
                        GError **errp)
{
    const struct stream_record_type *t = stream_record_type_find(rec->type);
    const struct stream_parse_ctx ctx = {
        .stream_flags = d->r.flags, .nr_gfns = d->cfg.nr_gfns, .page_fn = walk_page, .opaque = d
    };
    const struct stream_fields f = { d, field_u64, field_str, field_flag, field_list };
    const struct dump_step *step = NULL;
    struct stream_body b;

    if (rec->type == MIG_REC_MULTIFD)
        return dump_multifd(d, rec, summary, errp);
    if (rec->skip) {
        *summary = g_strdup_printf("optional type 0x%08x, skipped", rec->type);
        return true;
    }
    if (!t || !t->describe) {
        *summary = g_strdup("?");
        return true;
    }
    if (rec->type < MIG_REC_STREAM_MAX_)
        step = &dump_steps[rec->type];
    if (!stream_record_parse(rec, &ctx, &b, errp) ||
        (step && step->check && !step->check(d, rec, &b, errp)))
        return false;
    *summary = t->describe(&b, d->cur.pass, &f);
    return !step || !step->after || step->after(d, rec, &b, errp);
}

/* Read, check and report one record. False: the walk ends (error in errp). */
static bool one_record(struct dump *d, struct stream_record *rec, GError **errp)
{
    g_autofree char *summary = NULL;
    GError *err = NULL;
    bool ok;

    if (!stream_read_record(&d->r, rec, errp))
        return false;
    d->jrec = d->jb && d->records < DUMP_JSON_MAX;
    if (d->jb && !d->jrec)
        d->json_omitted++;
    if (d->jrec) {
        json_builder_begin_object(d->jb);
        jint(d, "index", rec->index);
        jstr(d, "type", rec_type_name(rec));
        jint(d, "type_value", rec->type);
        jint(d, "offset", rec->offset);
        jint(d, "length", rec->length);
    }
    ok = stream_order_check(&d->o, rec, &err) && record_body(d, rec, &summary, &err);
    if (ok && (rec->type == MIG_REC_PAGE_DATA || rec->type == MIG_REC_ZERO_PAGES))
        d->cur.bytes += stream_record_wire_size(d->r.flags, rec->length);
    if (d->text)
        fprintf(d->out, "%6" PRIu64 "  %-13s %9u  @%-12" PRIu64 " %s\n", rec->index,
                rec_type_name(rec), rec->length, rec->offset, ok ? summary : "BAD");
    if (d->jrec) {
        if (ok) {
            jstr(d, "summary", summary);
        } else {
            jstr(d, "error", err->message);
        }
        json_builder_end_object(d->jb);
    }
    if (!ok) {
        g_propagate_error(errp, err);
        return false;
    }
    d->records++;
    return true;
}

static bool walk(struct dump *d, GError **errp)
{
    struct stream_record rec;
    uint8_t head[2];

    /* A capture of a migration with tls-creds: a TLS handshake record. */
    if (channel_peek(d->r.ch, head, 2) == 2 && head[0] == 0x16 && head[1] == 0x03) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "a TLS stream (a migration with tls-creds set): encrypted, it cannot be read");
        return false;
    }
    if (!stream_read_header(&d->r, errp))
        return false;
    d->have_header = true;
    stream_order_init_flags(&d->o, d->r.flags);
    d->cur.pass = 1;
    if (d->text) {
        g_autofree char *flags = flags_text(d->r.flags);

        fprintf(d->out, "%s: Tern migration stream version %u, flags 0x%x (%s), page size %u%s\n",
                d->path, MIG_STREAM_VERSION, d->r.flags, flags, 1u << d->r.page_shift,
                (d->r.flags & MIG_HDR_F_MAPPED_RAM) ? ", a mapped-RAM checkpoint"
                : (d->r.flags & MIG_HDR_F_RAM_FD)   ? ", a cpr-transfer hand-over (RAM by memfd)"
                                                    : "");
        fprintf(d->out, "%6s  %-13s %9s  %-13s %s\n", "record", "type", "length", "@offset",
                "summary");
    }
    if (d->jb) {
        json_builder_set_member_name(d->jb, "header");
        json_builder_begin_object(d->jb);
        json_builder_set_member_name(d->jb, "version");
        json_builder_add_int_value(d->jb, MIG_STREAM_VERSION);
        json_builder_set_member_name(d->jb, "flags");
        json_builder_add_int_value(d->jb, d->r.flags);
        json_builder_set_member_name(d->jb, "crc32");
        json_builder_add_boolean_value(d->jb, !!(d->r.flags & MIG_HDR_F_CRC32));
        json_builder_set_member_name(d->jb, "mapped_ram");
        json_builder_add_boolean_value(d->jb, !!(d->r.flags & MIG_HDR_F_MAPPED_RAM));
        json_builder_set_member_name(d->jb, "ram_fd");
        json_builder_add_boolean_value(d->jb, !!(d->r.flags & MIG_HDR_F_RAM_FD));
        json_builder_set_member_name(d->jb, "multifd");
        json_builder_add_boolean_value(d->jb, !!(d->r.flags & MIG_HDR_F_MULTIFD));
        json_builder_set_member_name(d->jb, "page_size");
        json_builder_add_int_value(d->jb, 1 << d->r.page_shift);
        json_builder_end_object(d->jb);
        json_builder_set_member_name(d->jb, "records");
        json_builder_begin_array(d->jb);
    }
    while (!stream_order_done(&d->o)) {
        if (!one_record(d, &rec, errp))
            return false;
    }
    if (!channel_at_eof(d->r.ch)) {
        uint64_t pos = stream_reader_pos(&d->r);

        if (!channel_check(d->r.ch, errp))
            return false;
        if (d->is_file && channel_file_size(d->ch) > pos)
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "%" PRIu64 " trailing bytes "
                        "after END at offset %" PRIu64,
                        channel_file_size(d->ch) - pos, pos);
        else
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "trailing bytes after END at "
                        "offset %" PRIu64,
                        pos);
        return false;
    }
    return true;
}

/* ---- Summary and verdict ---- */

static void print_passes(struct dump *d)
{
    for (guint i = 0; i < d->pass_list->len; i++) {
        struct pass_stat *p = &g_array_index(d->pass_list, struct pass_stat, i);
        g_autofree char *bytes = stream_human_bytes(d->mapped ? p->it.bytes_sent : p->bytes);

        if (d->mapped)
            fprintf(d->out,
                    "  pass %u%s: %" PRIu64 " pages written to the RAM area, %" PRIu64
                    " zero, %s, %.1f ms, %" PRIu64 " dirty at start\n",
                    p->pass, (p->it.flags & MIG_ITER_F_FINAL) ? " (final)" : "", p->it.pages_sent,
                    p->it.zero_pages, bytes, (double)p->it.duration_ns / 1e6, p->it.dirty_pages);
        else
            fprintf(d->out,
                    "  pass %u%s: %" PRIu64 " pages in %" PRIu64 " PAGE_DATA (raw %" PRIu64
                    ", zlib %" PRIu64 "), %" PRIu64 " zero pages in %" PRIu64
                    " ZERO_PAGES, %s, %.1f ms, %" PRIu64 " dirty at start\n",
                    p->pass, (p->it.flags & MIG_ITER_F_FINAL) ? " (final)" : "", p->pages,
                    p->page_records, p->raw, p->zlib, p->zero_pages, p->zero_records, bytes,
                    (double)p->it.duration_ns / 1e6, p->it.dirty_pages);
    }
    if (d->passes > d->pass_list->len)
        fprintf(d->out, "  (%" PRIu64 " more passes)\n", d->passes - d->pass_list->len);
}

static void json_passes(struct dump *d)
{
    JsonBuilder *b = d->jb;

    json_builder_set_member_name(b, "passes");
    json_builder_begin_array(b);
    for (guint i = 0; i < d->pass_list->len; i++) {
        struct pass_stat *p = &g_array_index(d->pass_list, struct pass_stat, i);
        const struct {
            const char *name;
            uint64_t v;
        } f[] = {
            { "pass", p->pass },
            { "page_records", p->page_records },
            { "pages", p->pages },
            { "raw", p->raw },
            { "zlib", p->zlib },
            { "zero_records", p->zero_records },
            { "zero_pages", p->zero_pages },
            { "bytes", p->bytes },
            { "pages_sent", p->it.pages_sent },
            { "zero_pages_sent", p->it.zero_pages },
            { "bytes_sent", p->it.bytes_sent },
            { "dirty_pages", p->it.dirty_pages },
            { "duration_ns", p->it.duration_ns },
        };

        json_builder_begin_object(b);
        for (size_t k = 0; k < G_N_ELEMENTS(f); k++) {
            json_builder_set_member_name(b, f[k].name);
            json_builder_add_int_value(b, (gint64)MIN(f[k].v, (uint64_t)INT64_MAX));
        }
        json_builder_set_member_name(b, "final");
        json_builder_add_boolean_value(b, !!(p->it.flags & MIG_ITER_F_FINAL));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

static char *verdict_line(struct dump *d)
{
    if (d->error)
        return g_strdup_printf("verdict: BAD — %s", d->error);
    return g_strdup_printf("verdict: OK — %" PRIu64 " records, %" PRIu64 " pass%s, %" PRIu64
                           " pages",
                           d->records, d->passes, d->passes == 1 ? "" : "es", d->pages);
}

static void json_finish(struct dump *d, bool records_open)
{
    JsonBuilder *b = d->jb;
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;
    g_autofree char *text = NULL;

    if (records_open)
        json_builder_end_array(b);
    json_builder_set_member_name(b, "records_omitted");
    json_builder_add_int_value(b, (gint64)d->json_omitted);
    if (d->mapped) {
        json_builder_set_member_name(b, "mapped");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "ram_offset");
        json_builder_add_int_value(b, (gint64)d->m.ram_offset);
        json_builder_set_member_name(b, "nr_gfns");
        json_builder_add_int_value(b, (gint64)d->m.nr_gfns);
        json_builder_set_member_name(b, "tail_offset");
        json_builder_add_int_value(b, (gint64)d->m.tail_offset);
        json_builder_set_member_name(b, "present");
        json_builder_add_int_value(b, (gint64)d->present);
        json_builder_end_object(b);
    }
    json_passes(d);
    json_builder_set_member_name(b, "verdict");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "ok");
    json_builder_add_boolean_value(b, !d->error);
    json_builder_set_member_name(b, "error");
    if (d->error)
        json_builder_add_string_value(b, d->error);
    else
        json_builder_add_null_value(b);
    json_builder_set_member_name(b, "records");
    json_builder_add_int_value(b, (gint64)d->records);
    json_builder_set_member_name(b, "passes");
    json_builder_add_int_value(b, (gint64)d->passes);
    json_builder_set_member_name(b, "pages");
    json_builder_add_int_value(b, (gint64)d->pages);
    json_builder_end_object(b);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, true);
    text = json_generator_to_data(gen, NULL);
    fprintf(d->out, "%s\n", text);
}

/* ---- One input ---- */

int dump_channel(const struct dump_opts *o, const char *path, struct channel *ch, bool is_file,
                 FILE *out, FILE *errf)
{
    struct dump d = { 0 };
    GError *err = NULL;
    g_autofree char *verdict = NULL;
    bool bad;

    d.verify = o->verify;
    d.json = o->json;
    d.quiet = o->quiet;
    d.path = path;
    d.out = out;
    d.ch = ch;
    d.is_file = is_file;
    d.text = !d.verify && !d.quiet && !d.json;
    d.page = g_malloc(PAGE_SIZE_V1);
    d.pass_list = g_array_new(false, true, sizeof(struct pass_stat));
    if (d.json) {
        d.jb = json_builder_new();
        json_builder_begin_object(d.jb);
        json_builder_set_member_name(d.jb, "file");
        json_builder_add_string_value(d.jb, d.path);
    }
    stream_reader_init(&d.r, d.ch, false);

    if (!walk(&d, &err)) {
        d.error = g_strdup(err->message);
        g_clear_error(&err);
    }
    bad = d.error != NULL;
    verdict = verdict_line(&d);
    if (d.text) {
        if (d.pass_list->len) {
            fprintf(out, "passes:\n");
            print_passes(&d);
        }
        if (d.have_index)
            fprintf(out,
                    "checkpoint: %" PRIu64 " of 0x%" PRIx64 " frames present in the RAM area at "
                    "%" PRIu64 ", tail at %" PRIu64 "\n",
                    d.present, d.m.nr_gfns, d.m.ram_offset, d.m.tail_offset);
        fprintf(out, "%s\n", verdict);
    } else if (d.json) {
        json_finish(&d, d.have_header);
        if (bad && d.verify)
            fprintf(errf, "%s\n", verdict);
    } else if (bad) {
        fprintf(errf, "%s\n", verdict);
    } else if (!d.quiet) {
        fprintf(out, "%s\n", verdict);
    }
    fflush(out);

    stream_reader_cleanup(&d.r);
    g_array_free(d.pass_list, true);
    if (d.jb)
        g_object_unref(d.jb);
    g_free(d.page);
    free(d.io);
    g_free(d.error);
    return bad ? 1 : 0;
}
