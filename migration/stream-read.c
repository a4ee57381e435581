/* stream-read.c: the bounded validating reader: image header, record framing, CRC, padding. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>
#include <zlib.h>

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
    r->pos_base = offset - channel_read_pos(ch); /* modular: any start works */
}

bool stream_reader_skip_to(struct stream_reader *r, uint64_t offset, GError **errp)
{
    uint64_t pos = stream_reader_pos(r);
    GError *err = NULL;

    if (offset < pos)
        return stream_fail(errp, "cannot go back from offset %" PRIu64 " to %" PRIu64, pos, offset);
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
        return stream_fail(errp,
                           "stream header: unsupported stream version %u (this Tern reads %u)",
                           version, MIG_STREAM_VERSION);
    crc = mig_load_le32(h + offsetof(struct mig_image_header, header_crc));
    want = (uint32_t)crc32(0, h, offsetof(struct mig_image_header, header_crc));
    if (crc != want)
        return stream_fail(errp,
                           "stream header: CRC mismatch (header says 0x%08x, computed 0x%08x)", crc,
                           want);
    flags = mig_load_le32(h + offsetof(struct mig_image_header, flags));
    if (flags & ~MIG_HDR_F_KNOWN)
        return stream_fail(errp, "stream header: unknown flags 0x%x", flags & ~MIG_HDR_F_KNOWN);
    for (size_t i = 0; i < sizeof(((struct mig_image_header *)0)->reserved); i++)
        if (h[offsetof(struct mig_image_header, reserved) + i])
            return stream_fail(errp, "stream header: reserved bytes are not zero");
    page_shift = mig_load_le32(h + offsetof(struct mig_image_header, page_shift));
    if (page_shift != MIG_STREAM_PAGE_SHIFT) {
        if (page_shift < 32)
            return stream_fail(errp,
                               "stream header: page size %llu not supported (this Tern uses %u)",
                               1ULL << page_shift, 1u << MIG_STREAM_PAGE_SHIFT);
        return stream_fail(errp, "stream header: page shift %u not supported", page_shift);
    }
    if ((flags & MIG_HDR_F_MAPPED_RAM) && (flags & MIG_HDR_F_RAM_FD))
        return stream_fail(errp, "stream header: a mapped-RAM file cannot pass RAM as memfds");
    r->flags = flags;
    r->page_shift = page_shift;
    return true;
}

/* Make (r)'s buffer hold at least (size) bytes, keeping the first (keep). */
static void buf_reserve(struct stream_reader *r, size_t size, size_t keep)
{
    if (size <= r->buf_size)
        return;
    if (keep) {
        r->buf = g_realloc(r->buf, size);
    } else {
        g_free(r->buf);
        r->buf = g_malloc(size);
    }
    r->buf_size = size;
}

/* Read (rec)'s body, (rec->length) bytes, into (r)'s buffer (or, for a
 * skipped record, through one chunk of it, keeping nothing) in steps of
 * STREAM_READ_CHUNK, folding them into (*crc). The buffer grows with the
 * bytes that actually came, doubling at most, so a peer that announces
 * 64 MiB and sends 100 bytes makes the target commit one chunk. */
static bool read_body(struct stream_reader *r, struct stream_record *rec, uint32_t *crc,
                      GError **errp)
{
    size_t done = 0, len = rec->length;
    GError *err = NULL;

    while (done < len) {
        size_t n = MIN(len - done, (size_t)STREAM_READ_CHUNK);
        uint8_t *dst;

        if (rec->skip) {
            buf_reserve(r, n, 0);
            dst = r->buf;
        } else {
            buf_reserve(r, MIN(len, MAX(done + n, 2 * r->buf_size)), done);
            dst = r->buf + done;
        }
        if (!channel_read_exact(r->ch, dst, n, &err)) {
            g_autofree char *what = stream_record_describe(rec);

            g_propagate_prefixed_error(errp, err, "%s: truncated body: ", what);
            return false;
        }
        *crc = (uint32_t)crc32(*crc, dst, (uInt)n);
        done += n;
    }
    return true;
}

bool stream_read_record(struct stream_reader *r, struct stream_record *rec, GError **errp)
{
    const struct stream_record_type *desc;
    uint8_t h[sizeof(struct mig_rec_header)];
    uint8_t pad_bytes[MIG_REC_ALIGN];
    uint32_t pad, crc, max;
    GError *err = NULL;

    memset(rec, 0, sizeof(*rec));
    rec->index = r->records;
    rec->offset = stream_reader_pos(r);
    if (!channel_read_exact(r->ch, h, sizeof(h), &err)) {
        g_propagate_prefixed_error(errp, err,
                                   "record %" PRIu64 " at offset %" PRIu64 ": truncated header: ",
                                   rec->index, rec->offset);
        return false;
    }
    rec->type = mig_load_le32(h + offsetof(struct mig_rec_header, type));
    rec->length = mig_load_le32(h + offsetof(struct mig_rec_header, length));

    /* Bound first: nothing is read or allocated for a length we will refuse. */
    if (rec->length > MIG_REC_LENGTH_MAX)
        return stream_rec_fail(rec, errp, "length %u exceeds the maximum of %u", rec->length,
                               MIG_REC_LENGTH_MAX);
    /* A return-path type in the stream is unknown there, and the reverse. */
    desc = stream_record_type_find(rec->type);
    if (desc && desc->return_path != r->return_path)
        desc = NULL;
    if (!desc) {
        if (!(rec->type & MIG_REC_OPTIONAL))
            return stream_rec_fail(rec, errp, "unknown mandatory record type 0x%08x", rec->type);
        rec->skip = true;
    }
    if (desc && desc->max_length == 0 && rec->length)
        return stream_rec_fail(rec, errp, "length %u, but this record has no body", rec->length);
    max = desc ? stream_record_max_length(desc, r) : MIG_REC_LENGTH_MAX;
    if (rec->length > max)
        return stream_rec_fail(rec, errp, "length %u exceeds the maximum %s body of %u bytes",
                               rec->length, desc->name, max);

    crc = (uint32_t)crc32(0, h, sizeof(h));
    if (!read_body(r, rec, &crc, errp))
        return false;
    pad = mig_rec_padding(rec->length);
    if (!channel_read_exact(r->ch, pad_bytes, pad, &err)) {
        g_autofree char *what = stream_record_describe(rec);

        g_propagate_prefixed_error(errp, err, "%s: truncated body: ", what);
        return false;
    }
    crc = (uint32_t)crc32(crc, pad_bytes, pad);
    if (r->flags & MIG_HDR_F_CRC32) {
        uint8_t t[sizeof(struct mig_rec_trailer)];
        uint32_t want;

        if (!channel_read_exact(r->ch, t, sizeof(t), &err)) {
            g_autofree char *what = stream_record_describe(rec);

            g_propagate_prefixed_error(errp, err, "%s: truncated CRC trailer: ", what);
            return false;
        }
        want = mig_load_le32(t + offsetof(struct mig_rec_trailer, crc));
        if (crc != want)
            return stream_rec_fail(rec, errp, "CRC mismatch (record says 0x%08x, computed 0x%08x)",
                                   want, crc);
        if (mig_load_le32(t + offsetof(struct mig_rec_trailer, reserved)))
            return stream_rec_fail(rec, errp, "CRC trailer: reserved field is not zero");
    }
    if (memcmp(pad_bytes, stream_zero_pad, pad))
        return stream_rec_fail(rec, errp, "padding is not zero");
    /* An empty body still points somewhere readable. A skipped one does when
     * it fit in one chunk (its bytes are still in the buffer), so a caller
     * that knows an optional type (MULTIFD) can read it; a longer one
     * points nowhere. */
    if (!rec->skip || rec->length <= STREAM_READ_CHUNK) {
        buf_reserve(r, MAX(rec->length, 1u), rec->length);
        rec->body = r->buf;
    }
    r->records++;
    return true;
}
