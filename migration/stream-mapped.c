/* stream-mapped.c: mapped-RAM files: the MAPPED_RAM layout and the RAM_INDEX of present pages. */
#include "tern/stream.h"
#include "tern/util.h"
#include "tern/bitmap.h"
#include "tern/channel-file.h"
#include "tern/crc32.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>

/* Offsets stay below 2^63 so that off_t holds them. */
#define MAPPED_OFFSET_MAX ((uint64_t)INT64_MAX)

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
                               " is not a multiple of %u",
                               m->ram_offset, m->tail_offset, MIG_MAPPED_ALIGN);
    if (m->ram_offset < head_end)
        return g_strdup_printf("ram_offset %" PRIu64 " lies inside the head (which ends at %" PRIu64
                               ")",
                               m->ram_offset, head_end);
    if (!mapped_tail(m->ram_offset, m->nr_gfns, &tail))
        return g_strdup_printf("ram_offset %" PRIu64 " + 0x%" PRIx64 " pages overflows",
                               m->ram_offset, m->nr_gfns);
    if (m->tail_offset != tail)
        return g_strdup_printf("tail_offset %" PRIu64 ", expected %" PRIu64
                               " (the RAM area's end rounded up to %u)",
                               m->tail_offset, tail, MIG_MAPPED_ALIGN);
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
        return stream_fail(errp, "MAPPED_RAM: 0x%" PRIx64 " pages do not fit in a file", nr_gfns);
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

    if (!stream_rec_expect(rec, MIG_REC_MAPPED_RAM, errp))
        return false;
    if (!(stream_flags & MIG_HDR_F_MAPPED_RAM))
        return stream_rec_fail(rec, errp, "the stream header lacks the mapped-RAM flag");
    if (rec->length != sizeof(struct mig_rec_mapped_ram))
        return stream_rec_fail(rec, errp, "length %u, expected %zu", rec->length,
                               sizeof(struct mig_rec_mapped_ram));
    out->ram_offset = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, ram_offset));
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, nr_gfns));
    out->tail_offset = mig_load_le64(b + offsetof(struct mig_rec_mapped_ram, tail_offset));
    problem = mapped_ram_problem(out,
                                 rec->offset + stream_record_wire_size(stream_flags, rec->length),
                                 nr_gfns);
    if (problem)
        return stream_rec_fail(rec, errp, "%s", problem);
    return true;
}

/* Bytes of a RAM_INDEX bitmap for (nr_gfns) frames: whole u64 words. */
static uint64_t ram_index_bitmap_bytes(uint64_t nr_gfns)
{
    return DIV_ROUND_UP(nr_gfns, 64) * 8;
}

uint32_t stream_ram_index_max_length(uint32_t stream_flags, uint64_t nr_gfns)
{
    uint64_t len;

    if (nr_gfns > (uint64_t)MIG_REC_LENGTH_MAX * 8)
        return MIG_REC_LENGTH_MAX;
    len = sizeof(struct mig_rec_ram_index) + ram_index_bitmap_bytes(nr_gfns) +
          ((stream_flags & MIG_HDR_F_CRC32) ? 4 * nr_gfns : 0);
    return (uint32_t)MIN(len, (uint64_t)MIG_REC_LENGTH_MAX);
}

bool stream_write_ram_index(struct stream_writer *w, uint64_t nr_gfns, const unsigned long *bitmap,
                            const uint32_t *crcs, GError **errp)
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
        return stream_fail(errp,
                           "RAM_INDEX: 0x%" PRIx64 " frames make the index larger "
                           "than %u bytes",
                           nr_gfns, MIG_REC_LENGTH_MAX);
    for (uint64_t gfn = 0; gfn < nr_gfns; gfn++)
        present += bitmap_test(bitmap, gfn);
    len = sizeof(hdr) + ram_index_bitmap_bytes(nr_gfns) + (with_crc ? 4 * present : 0);
    if (len > MIG_REC_LENGTH_MAX)
        return stream_fail(errp,
                           "RAM_INDEX of %" PRIu64 " bytes (%" PRIu64 " present pages) "
                           "exceeds the maximum record of %u bytes: the file format holds "
                           "about 60 GiB of present pages with CRCs",
                           len, present, MIG_REC_LENGTH_MAX);
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

    if (!stream_rec_expect(rec, MIG_REC_RAM_INDEX, errp))
        return false;
    memset(out, 0, sizeof(*out));
    if (!(stream_flags & MIG_HDR_F_MAPPED_RAM))
        return stream_rec_fail(rec, errp, "the stream header lacks the mapped-RAM flag");
    if (rec->length < sizeof(struct mig_rec_ram_index))
        return stream_rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_ram_index, nr_gfns));
    out->nr_present = mig_load_le64(b + offsetof(struct mig_rec_ram_index, nr_present));
    if (out->nr_gfns != nr_gfns)
        return stream_rec_fail(rec, errp,
                               "nr_gfns 0x%" PRIx64 " differs from VM_CONFIG's 0x%" PRIx64,
                               out->nr_gfns, nr_gfns);
    /* Bounded before any arithmetic: the body is at most MIG_REC_LENGTH_MAX. */
    if (out->nr_gfns > (uint64_t)MIG_REC_LENGTH_MAX * 8 || out->nr_present > out->nr_gfns)
        return stream_rec_fail(rec, errp,
                               "0x%" PRIx64 " present of 0x%" PRIx64
                               " frames cannot fit in one record",
                               out->nr_present, out->nr_gfns);
    bitmap_bytes = ram_index_bitmap_bytes(out->nr_gfns);
    want = sizeof(struct mig_rec_ram_index) + bitmap_bytes + (with_crc ? 4 * out->nr_present : 0);
    if (rec->length != want)
        return stream_rec_fail(rec, errp,
                               "length %u, but 0x%" PRIx64 " frames with 0x%" PRIx64
                               " present need %" PRIu64,
                               rec->length, out->nr_gfns, out->nr_present, want);
    out->bitmap = b + sizeof(struct mig_rec_ram_index);
    words = bitmap_bytes / 8;
    for (uint64_t i = 0; i < words; i++) {
        uint64_t v = mig_load_le64(out->bitmap + i * 8);

        if (i == words - 1 && out->nr_gfns % 64 && (v >> (out->nr_gfns % 64)))
            return stream_rec_fail(rec, errp, "bitmap has pages at or beyond nr_gfns 0x%" PRIx64,
                                   out->nr_gfns);
        count += (uint64_t)__builtin_popcountll(v);
    }
    if (count != out->nr_present)
        return stream_rec_fail(rec, errp, "bitmap has %" PRIu64 " pages, nr_present says %" PRIu64,
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
            continue; /* a hole of 64 pages: skip it fast */
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
    got = tern_crc32(0, page, 1u << MIG_STREAM_PAGE_SHIFT);
    if (want != got)
        return stream_fail(errp,
                           "gfn 0x%" PRIx64 ": page CRC mismatch (index says 0x%08x, "
                           "computed 0x%08x)",
                           gfn, want, got);
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

/* ---- Restore: the RAM area into memory, with read-ahead ---- */

/* Pages per read: large enough for the disk, and a 768 MiB area still makes
 * hundreds of requests to share between the threads. */
#define MAPPED_LOAD_RUN_PAGES 512

/* One run of a restore: where it goes and which CRCs check it. */
struct mapped_load_run {
    uint64_t gfn;
    uint64_t npages;
    uint64_t first_crc;
};

struct mapped_load {
    const struct stream_mapped_ram *m;
    const struct stream_ram_index *idx;
    const struct stream_mapped_sink *sink;
    GArray *reads; /* struct channel_file_read, one per run */
    GArray *runs;  /* struct mapped_load_run, the same order */
};

/* stream_run_fn: plan one run's read, refusing runs outside RAM. */
static bool mapped_load_plan(void *opaque, uint64_t first_gfn, uint64_t npages, uint64_t first_crc,
                             GError **errp)
{
    struct mapped_load *ml = opaque;
    struct mapped_load_run run = { first_gfn, npages, first_crc };
    uint8_t *dest = ml->sink->dest(ml->sink->opaque, first_gfn, npages);
    struct channel_file_read rd = {
        .offset = stream_mapped_page_offset(ml->m, first_gfn),
        .buf = ml->sink->place ? NULL : dest,
        .len = (size_t)(npages << MIG_STREAM_PAGE_SHIFT),
    };

    if (!dest)
        return stream_fail(errp,
                           "RAM_INDEX lists pages 0x%" PRIx64 "+%" PRIu64 " outside guest RAM",
                           first_gfn, npages);
    g_array_append_val(ml->reads, rd);
    g_array_append_val(ml->runs, run);
    return true;
}

/* channel_file_read_done_fn: check a run where it landed, then store it,
 * on the thread that read it. */
static bool mapped_load_check(void *opaque, size_t index, const uint8_t *data, GError **errp)
{
    struct mapped_load *ml = opaque;
    const struct mapped_load_run *run = &g_array_index(ml->runs, struct mapped_load_run, index);

    if (!stream_ram_index_check_run(ml->idx, ml->m, run->gfn, run->npages, run->first_crc, data,
                                    errp))
        return false;
    return !ml->sink->place || ml->sink->place(ml->sink->opaque, run->gfn, run->npages, data, errp);
}

bool stream_mapped_load_ram(struct channel *ch, const struct stream_mapped_ram *m,
                            const struct stream_ram_index *idx, unsigned threads,
                            const struct stream_mapped_sink *sink, GError **errp)
{
    struct mapped_load ml = {
        .m = m,
        .idx = idx,
        .sink = sink,
        .reads = g_array_new(false, false, sizeof(struct channel_file_read)),
        .runs = g_array_new(false, false, sizeof(struct mapped_load_run)),
    };
    bool ok = stream_ram_index_for_each_run(idx, MAPPED_LOAD_RUN_PAGES, mapped_load_plan, &ml,
                                            errp) &&
              channel_file_read_batch(ch, (const struct channel_file_read *)(void *)ml.reads->data,
                                      ml.reads->len, threads, mapped_load_check, &ml, errp);

    g_array_free(ml.reads, true);
    g_array_free(ml.runs, true);
    return ok;
}

/* ---- Through the record table ---- */

bool stream_body_mapped_ram(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                            struct stream_body *out, GError **errp)
{
    return stream_parse_mapped_ram(rec, ctx->stream_flags, ctx->nr_gfns, &out->mapped_ram, errp);
}

bool stream_body_ram_index(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                           struct stream_body *out, GError **errp)
{
    return stream_parse_ram_index(rec, ctx->stream_flags, ctx->nr_gfns, &out->ram_index, errp);
}
