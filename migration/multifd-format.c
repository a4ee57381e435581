/* multifd-format.c: the multifd wire format: the MULTIFD record's body, the
 * channel header and the packet header with its gfn list (the payload is
 * compressed by tern/compress.h); all little-endian, checked before anything
 * is placed. */
#include <string.h>

#include "multifd.h"
#include "tern/crc32.h"
#include "tern/migration.h"
#include "tern/stream-format.h"
#include "tern/util.h"

_Static_assert(MULTIFD_MAX_CHANNELS == MIG_MULTIFD_MAX_CHANNELS, "one channel limit");

static bool fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, TERN_ERROR, TERN_ERROR_INVALID, msg);
    return false;
}

/* ---- MULTIFD record ---- */

void multifd_announce_encode(const struct multifd_announce *a, uint8_t out[MULTIFD_RECORD_SIZE])
{
    mig_store_le32(out, a->channels);
    mig_store_le32(out + 4, a->compression);
    mig_store_le64(out + 8, a->session);
}

bool multifd_announce_decode(const uint8_t *body, uint32_t len, struct multifd_announce *a,
                             GError **errp)
{
    if (len != MULTIFD_RECORD_SIZE)
        return fail(errp, "MULTIFD: length %u (must be %u)", len, MULTIFD_RECORD_SIZE);
    a->channels = mig_load_le32(body);
    a->compression = mig_load_le32(body + 4);
    a->session = mig_load_le64(body + 8);
    if (a->channels < 1 || a->channels > MULTIFD_MAX_CHANNELS)
        return fail(errp, "MULTIFD: %u channels (1 to %u)", a->channels, MULTIFD_MAX_CHANNELS);
    if (!multifd_comp_known(a->compression))
        return fail(errp, "MULTIFD: unknown compression %u", a->compression);
    if (!a->session)
        return fail(errp, "MULTIFD: session id 0");
    return true;
}

/* ---- channel header ----
 *  0 magic "TERNMFD\0" | 8 session u64 | 16 index u32 | 20 nr_channels u32
 * 24 reserved u32      | 28 CRC-32 of octets 0-27 */

void multifd_hello_encode(const struct multifd_hello *h, uint8_t out[MULTIFD_HELLO_SIZE])
{
    memset(out, 0, MULTIFD_HELLO_SIZE);
    memcpy(out, MULTIFD_MAGIC, 8);
    mig_store_le64(out + 8, h->session);
    mig_store_le32(out + 16, h->index);
    mig_store_le32(out + 20, h->nr_channels);
    mig_store_le32(out + 28, tern_crc32(0, out, 28));
}

bool multifd_hello_decode(const uint8_t in[MULTIFD_HELLO_SIZE], struct multifd_hello *h,
                          GError **errp)
{
    if (memcmp(in, MULTIFD_MAGIC, 8))
        return fail(errp, "not a multifd channel (bad magic)");
    uint32_t crc = tern_crc32(0, in, 28);
    if (mig_load_le32(in + 28) != crc)
        return fail(errp,
                    "multifd channel header: CRC mismatch (header says 0x%08x, computed "
                    "0x%08x)",
                    mig_load_le32(in + 28), crc);
    if (mig_load_le32(in + 24))
        return fail(errp, "multifd channel header: reserved field not zero");
    h->session = mig_load_le64(in + 8);
    h->index = mig_load_le32(in + 16);
    h->nr_channels = mig_load_le32(in + 20);
    return true;
}

/* ---- packet header ----
 *  0 type | 4 flags | 8 pass | 12 nr_pages | 16 nr_zero | 20 payload_len
 * 24 data_crc | 28 hdr_crc (CRC-32 of octets 0-27 and the gfn list) */

size_t multifd_packet_encode(const struct multifd_packet *p, const uint64_t *gfns, uint8_t *out)
{
    uint32_t n = p->nr_pages + p->nr_zero;

    mig_store_le32(out, p->type);
    mig_store_le32(out + 4, p->flags);
    mig_store_le32(out + 8, p->pass);
    mig_store_le32(out + 12, p->nr_pages);
    mig_store_le32(out + 16, p->nr_zero);
    mig_store_le32(out + 20, p->payload_len);
    mig_store_le32(out + 24, p->data_crc);
    for (uint32_t i = 0; i < n; i++)
        mig_store_le64(out + MULTIFD_PKT_HDR_SIZE + 8 * i, gfns[i]);
    uint32_t crc = tern_crc32(0, out, 28);
    crc = tern_crc32(crc, out + MULTIFD_PKT_HDR_SIZE, 8 * (size_t)n);
    mig_store_le32(out + 28, crc);
    return MULTIFD_PKT_HDR_SIZE + 8 * (size_t)n;
}

bool multifd_packet_decode(const uint8_t in[MULTIFD_PKT_HDR_SIZE], struct multifd_packet *p,
                           GError **errp)
{
    p->type = mig_load_le32(in);
    p->flags = mig_load_le32(in + 4);
    p->pass = mig_load_le32(in + 8);
    p->nr_pages = mig_load_le32(in + 12);
    p->nr_zero = mig_load_le32(in + 16);
    p->payload_len = mig_load_le32(in + 20);
    p->data_crc = mig_load_le32(in + 24);

    if (p->type == MULTIFD_PKT_SYNC) {
        if (p->flags & ~MULTIFD_SYNC_F_FINAL)
            return fail(errp, "SYNC: unknown flags 0x%x", p->flags);
        if (p->nr_pages || p->nr_zero || p->payload_len || p->data_crc)
            return fail(errp, "SYNC: reserved fields not zero");
        if (mig_load_le32(in + 28) != tern_crc32(0, in, 28))
            return fail(errp, "SYNC: header CRC mismatch");
        return true;
    }
    if (p->type != MULTIFD_PKT_BATCH)
        return fail(errp, "unknown packet type %u", p->type);
    if (!multifd_comp_known(p->flags))
        return fail(errp, "batch: unknown encoding %u", p->flags);
    /* Each count alone first: their sum cannot overflow then. */
    if (p->nr_pages > MULTIFD_BATCH_MAX_PAGES || p->nr_zero > MULTIFD_BATCH_MAX_PAGES ||
        p->nr_pages + p->nr_zero < 1 || p->nr_pages + p->nr_zero > MULTIFD_BATCH_MAX_PAGES)
        return fail(errp, "batch: %u data + %u zero pages (1 to %u)", p->nr_pages, p->nr_zero,
                    MULTIFD_BATCH_MAX_PAGES);
    uint32_t raw = p->nr_pages * (1u << MIG_STREAM_PAGE_SHIFT);
    if (p->flags == PAGE_COMPRESSION_NONE ? p->payload_len != raw
                                          : (p->payload_len < 1 || p->payload_len >= raw))
        return fail(errp, "batch: payload of %u octets for %u %s pages", p->payload_len,
                    p->nr_pages, page_compression_name(p->flags));
    return true;
}

bool multifd_packet_check_gfns(const uint8_t *in, const struct multifd_packet *p, uint64_t nr_gfns,
                               uint64_t *gfns, GError **errp)
{
    uint32_t n = p->nr_pages + p->nr_zero;
    uint32_t crc = tern_crc32(0, in, 28);

    crc = tern_crc32(crc, in + MULTIFD_PKT_HDR_SIZE, 8 * (size_t)n);
    if (mig_load_le32(in + 28) != crc)
        return fail(errp,
                    "batch of pass %u: header CRC mismatch (header says 0x%08x, computed "
                    "0x%08x)",
                    p->pass, mig_load_le32(in + 28), crc);
    for (uint32_t i = 0; i < n; i++) {
        gfns[i] = mig_load_le64(in + MULTIFD_PKT_HDR_SIZE + 8 * i);
        if (gfns[i] >= nr_gfns)
            return fail(errp,
                        "batch: gfn 0x%" G_GINT64_MODIFIER "x beyond the guest (%" G_GUINT64_FORMAT
                        " frames)",
                        gfns[i], nr_gfns);
    }
    return true;
}

/* ---- statistics ---- */

void multifd_counters_reset(struct multifd_counters *c)
{
    uint64_t *w = (uint64_t *)c;
    for (size_t i = 0; i < sizeof(*c) / sizeof(uint64_t); i++)
        __atomic_store_n(&w[i], 0, __ATOMIC_RELAXED);
}

void multifd_counters_fill(const struct multifd_counters *c, struct mig_stats *st)
{
    st->multifd_channels = __atomic_load_n(&c->channels, __ATOMIC_RELAXED);
    st->multifd_bytes = 0;
    for (unsigned i = 0; i < MULTIFD_MAX_CHANNELS; i++) {
        st->multifd_channel_bytes[i] = __atomic_load_n(&c->bytes[i], __ATOMIC_RELAXED);
        st->multifd_bytes += st->multifd_channel_bytes[i];
    }
    st->multifd_raw_bytes = __atomic_load_n(&c->raw_bytes, __ATOMIC_RELAXED);
    st->multifd_comp_bytes = __atomic_load_n(&c->comp_bytes, __ATOMIC_RELAXED);
    st->multifd_comp_batches = __atomic_load_n(&c->comp_batches, __ATOMIC_RELAXED);
    st->multifd_raw_batches = __atomic_load_n(&c->raw_batches, __ATOMIC_RELAXED);
    st->multifd_placed_bytes = __atomic_load_n(&c->placed_bytes, __ATOMIC_RELAXED);
    st->multifd_place_ns = __atomic_load_n(&c->place_ns, __ATOMIC_RELAXED);
}
