/* stream-pages.c: RAM in the stream: PAGE_DATA, ZERO_PAGES, page encodings, ITERATION_END. */
#include "tern/stream.h"
#include "tern/compress.h"
#include "tern/util.h"
#include "tern/xbzrle.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>

/* The encodings other than RAW: a payload of 1 to page-size octets. */
static bool stream_page_encoded(uint32_t encoding)
{
    return encoding == MIG_PAGE_ENC_ZLIB || encoding == MIG_PAGE_ENC_XBZRLE ||
           encoding == MIG_PAGE_ENC_ZSTD;
}

bool stream_write_page_data(struct stream_writer *w, const struct stream_page *pages,
                            unsigned count, bool live, GError **errp)
{
    const uint32_t page_size = 1u << MIG_STREAM_PAGE_SHIFT;
    uint8_t hdr[sizeof(struct mig_rec_page_data)] = { 0 };
    uint64_t len = sizeof(hdr) + (uint64_t)count * sizeof(struct mig_page_desc);

    if (count < 1 || count > MIG_PAGE_DATA_MAX_PAGES)
        return stream_fail(errp, "PAGE_DATA: %u pages (1 to %d)", count, MIG_PAGE_DATA_MAX_PAGES);
    for (unsigned i = 0; i < count; i++) {
        bool ok = pages[i].encoding == MIG_PAGE_ENC_RAW
                      ? pages[i].length == page_size
                      : stream_page_encoded(pages[i].encoding) && pages[i].length >= 1 &&
                            pages[i].length <= page_size;

        if (!ok)
            return stream_fail(errp,
                               "PAGE_DATA: page %u (gfn 0x%" PRIx64
                               ") has encoding %u with length %u",
                               i, pages[i].gfn, pages[i].encoding, pages[i].length);
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

    if (count < 1 || count > STREAM_ZERO_PAGES_MAX_RANGES)
        return stream_fail(errp, "ZERO_PAGES: %u ranges (1 to %u)", count,
                           STREAM_ZERO_PAGES_MAX_RANGES);
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

    if (!stream_rec_expect(rec, MIG_REC_PAGE_DATA, errp))
        return false;
    if (rec->length < sizeof(struct mig_rec_page_data))
        return stream_rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    count = mig_load_le32(b + offsetof(struct mig_rec_page_data, count));
    if (mig_load_le32(b + offsetof(struct mig_rec_page_data, reserved)))
        return stream_rec_fail(rec, errp, "reserved field is not zero");
    if (count < 1 || count > MIG_PAGE_DATA_MAX_PAGES)
        return stream_rec_fail(rec, errp, "page count %u (1 to %d)", count,
                               MIG_PAGE_DATA_MAX_PAGES);
    descs_end = sizeof(struct mig_rec_page_data) + (uint64_t)count * sizeof(struct mig_page_desc);
    if (descs_end > rec->length)
        return stream_rec_fail(rec, errp,
                               "page count %u needs %" PRIu64
                               " bytes of descriptors, the body has %u",
                               count, descs_end, rec->length);

    /* Pass 1: validate every descriptor before anyone sees a page. */
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = b + sizeof(struct mig_rec_page_data) + i * sizeof(struct mig_page_desc);
        uint64_t gfn = mig_load_le64(d + offsetof(struct mig_page_desc, gfn));
        uint32_t enc = mig_load_le32(d + offsetof(struct mig_page_desc, encoding));
        uint32_t len = mig_load_le32(d + offsetof(struct mig_page_desc, length));

        if (gfn >= nr_gfns)
            return stream_rec_fail(rec, errp,
                                   "page %u: gfn 0x%" PRIx64 " is outside guest memory (0x%" PRIx64
                                   " frames)",
                                   i, gfn, nr_gfns);
        switch (enc) {
        case MIG_PAGE_ENC_RAW:
            if (len != page_size)
                return stream_rec_fail(rec, errp,
                                       "page %u (gfn 0x%" PRIx64
                                       "): raw length %u is not the page size %u",
                                       i, gfn, len, page_size);
            break;
        case MIG_PAGE_ENC_ZLIB:
        case MIG_PAGE_ENC_XBZRLE:
        case MIG_PAGE_ENC_ZSTD:
            if (len < 1 || len > page_size)
                return stream_rec_fail(rec, errp,
                                       "page %u (gfn 0x%" PRIx64
                                       "): compressed length %u (1 to %u)",
                                       i, gfn, len, page_size);
            break;
        case MIG_PAGE_ENC_DELTA:
            return stream_rec_fail(rec, errp,
                                   "page %u (gfn 0x%" PRIx64
                                   "): encoding DELTA is reserved in stream version 1",
                                   i, gfn);
        default:
            return stream_rec_fail(rec, errp, "page %u (gfn 0x%" PRIx64 "): unknown encoding %u", i,
                                   gfn, enc);
        }
        payload += len;
    }
    if (descs_end + payload != rec->length)
        return stream_rec_fail(rec, errp,
                               "%u pages carry %" PRIu64 " payload bytes, the body has %" PRIu64
                               " after the descriptors",
                               count, payload, rec->length - descs_end);

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

bool stream_parse_zero_pages(const struct stream_record *rec, uint64_t nr_gfns, stream_range_fn fn,
                             void *opaque, GError **errp)
{
    const uint8_t *b = rec->body;
    uint32_t count;

    if (!stream_rec_expect(rec, MIG_REC_ZERO_PAGES, errp))
        return false;
    if (rec->length < sizeof(struct mig_rec_zero_pages))
        return stream_rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    count = mig_load_le32(b + offsetof(struct mig_rec_zero_pages, count));
    if (mig_load_le32(b + offsetof(struct mig_rec_zero_pages, reserved)))
        return stream_rec_fail(rec, errp, "reserved field is not zero");
    if (count < 1 || (uint64_t)count * sizeof(struct mig_gfn_range) !=
                         rec->length - sizeof(struct mig_rec_zero_pages))
        return stream_rec_fail(rec, errp, "range count %u does not match the body length %u", count,
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
                    return stream_rec_fail(rec, errp,
                                           "range %u (gfn 0x%" PRIx64 " + 0x%" PRIx64
                                           " pages) is empty or outside guest memory (0x%" PRIx64
                                           " frames)",
                                           i, first, n, nr_gfns);
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
    g_autoptr(GError) err = NULL;
    enum page_compression alg = PAGE_COMPRESSION_ZLIB;

    switch (page->encoding) {
    case MIG_PAGE_ENC_RAW:
        if (page->length != page_size)
            return stream_fail(errp, "gfn 0x%" PRIx64 ": raw page of %u bytes", page->gfn,
                               page->length);
        memcpy(dst, page->data, page_size);
        return true;
    case MIG_PAGE_ENC_ZSTD:
        alg = PAGE_COMPRESSION_ZSTD;
        /* fall through */
    case MIG_PAGE_ENC_ZLIB:
        if (!page_decompress(alg, page->data, page->length, dst, page_size, &err))
            return stream_fail(errp, "gfn 0x%" PRIx64 ": %s", page->gfn, err->message);
        return true;
    case MIG_PAGE_ENC_XBZRLE:
        /* (dst) holds the page as the target has it: the delta applies to it. */
        if (!xbzrle_decode(page->data, page->length, dst, page_size, &err))
            return stream_fail(errp, "gfn 0x%" PRIx64 ": %s", page->gfn, err->message);
        return true;
    default:
        return stream_fail(errp, "gfn 0x%" PRIx64 ": unsupported encoding %u", page->gfn,
                           page->encoding);
    }
}

size_t stream_page_compress(const void *page, uint32_t page_size, int level, uint8_t *out,
                            size_t out_size)
{
    return page_compress(PAGE_COMPRESSION_ZLIB, level, page, page_size, out, out_size);
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

    if (!stream_rec_expect(rec, MIG_REC_ITERATION_END, errp))
        return false;
    if (rec->length != sizeof(struct mig_rec_iteration_end))
        return stream_rec_fail(rec, errp, "length %u, expected %zu", rec->length,
                               sizeof(struct mig_rec_iteration_end));
    out->pass = mig_load_le32(b + offsetof(struct mig_rec_iteration_end, pass));
    out->flags = mig_load_le32(b + offsetof(struct mig_rec_iteration_end, flags));
    out->pages_sent = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, pages_sent));
    out->zero_pages = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, zero_pages));
    out->bytes_sent = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, bytes_sent));
    out->dirty_pages = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, dirty_pages));
    out->duration_ns = mig_load_le64(b + offsetof(struct mig_rec_iteration_end, duration_ns));
    if (out->pass < 1)
        return stream_rec_fail(rec, errp, "pass number 0");
    if (out->flags & ~MIG_ITER_F_FINAL)
        return stream_rec_fail(rec, errp, "unknown flags 0x%x", out->flags & ~MIG_ITER_F_FINAL);
    return true;
}

/* ---- Through the record table ---- */

struct page_tally {
    const struct stream_parse_ctx *ctx;
    struct stream_body *out;
};

static bool tally_page(void *opaque, const struct stream_page *page, GError **errp)
{
    struct page_tally *t = opaque;

    if (t->ctx->page_fn && !t->ctx->page_fn(t->ctx->opaque, page, errp))
        return false;
    if (page->encoding == MIG_PAGE_ENC_RAW)
        t->out->page_data.raw++;
    else
        t->out->page_data.zlib++;
    t->out->page_data.first_gfn = MIN(t->out->page_data.first_gfn, page->gfn);
    t->out->page_data.last_gfn = MAX(t->out->page_data.last_gfn, page->gfn);
    return true;
}

bool stream_body_page_data(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                           struct stream_body *out, GError **errp)
{
    struct page_tally t = { ctx, out };

    out->page_data.first_gfn = UINT64_MAX;
    if (!stream_parse_page_data(rec, 1u << MIG_STREAM_PAGE_SHIFT, ctx->nr_gfns, tally_page, &t,
                                errp))
        return false;
    out->page_data.count = out->page_data.raw + out->page_data.zlib;
    return true;
}

static bool tally_range(void *opaque, uint64_t first, uint64_t n, GError **errp)
{
    struct page_tally *t = opaque;

    if (t->ctx->range_fn && !t->ctx->range_fn(t->ctx->opaque, first, n, errp))
        return false;
    t->out->zero_pages.ranges++;
    t->out->zero_pages.pages += n;
    t->out->zero_pages.first_gfn = MIN(t->out->zero_pages.first_gfn, first);
    t->out->zero_pages.last_gfn = MAX(t->out->zero_pages.last_gfn, first + n - 1);
    return true;
}

bool stream_body_zero_pages(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                            struct stream_body *out, GError **errp)
{
    struct page_tally t = { ctx, out };

    out->zero_pages.first_gfn = UINT64_MAX;
    return stream_parse_zero_pages(rec, ctx->nr_gfns, tally_range, &t, errp);
}

bool stream_body_iteration_end(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                               struct stream_body *out, GError **errp)
{
    (void)ctx;
    return stream_parse_iteration_end(rec, &out->iteration_end, errp);
}
