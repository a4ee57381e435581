/* stream-write.c: the stream writer: image header and record framing (padding, CRC trailer). */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>
#include <zlib.h>

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
    memcpy(h + offsetof(struct mig_image_header, magic), MIG_STREAM_MAGIC, MIG_STREAM_MAGIC_LEN);
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

        w->cur_crc = (uint32_t)crc32(w->cur_crc, stream_zero_pad, pad);
        mig_store_le32(t + offsetof(struct mig_rec_trailer, crc), w->cur_crc);
        channel_put_bytes(w->ch, stream_zero_pad, pad);
        channel_put_bytes(w->ch, t, sizeof(t));
    } else {
        channel_put_bytes(w->ch, stream_zero_pad, pad);
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
