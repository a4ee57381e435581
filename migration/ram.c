/* ram.c: guest RAM in the migration stream. The source sends populated pages
 * (never-touched holes cost nothing), zero pages as ranges, then what the
 * dirty log reports, pass after pass; the target validates and applies. */
#include <stdlib.h>
#include <string.h>

#include "multifd.h"
#include "ram.h"
#include "tern/compress.h"
#include "tern/channel-file.h"
#include "tern/crc32.h"
#include "tern/bitmap.h"
#include "tern/accel.h"
#include "tern/memory.h"
#include "tern/util.h"
#include "tern/xbzrle.h"

/* 256 pages (1 MiB) a PAGE_DATA record: big enough to amortise the record,
 * small enough to check for cancel and the rate limit often. */
#define RAM_BATCH_PAGES 256
#define RAM_ZERO_RANGES 256

struct ram_save {
    struct guest_ram *ram;
    struct accel *accel;
    struct stream_writer *w;
    enum page_compression alg; /* of pages sent whole */
    int level;
    struct ram_counters *counters;
    const uint64_t *max_bandwidth; /* max-bandwidth, changed by other threads */
    unsigned long *to_send;        /* by gfn; only the migration thread touches it */
    uint64_t pending;              /* bits set in (to_send) at the start of a pass */
    bool logging;

    struct stream_page pages[RAM_BATCH_PAGES];
    unsigned nr_pages;
    uint8_t *zbuf; /* compressed or XBZRLE payloads of the current batch */
    /* XBZRLE: the copies of pages as last sent, and the pages of the current
     * batch as sent (a snapshot, so that the cache and the target agree even
     * if a vCPU writes the page meanwhile). */
    struct xbzrle_cache *xcache;
    uint8_t *xsnap;
    uint32_t pass;
    struct stream_gfn_range zero[RAM_ZERO_RANGES];
    unsigned nr_zero;
    bool live;

    /* Mapped-RAM files: each page has its place in the file; the index of
     * pages holding data, their CRCs and the pass records go in the tail. */
    bool mapped;
    struct stream_mapped_ram layout;
    unsigned long *present;
    uint32_t *page_crc;
    GArray *passes; /* struct stream_iteration_end */

    /* Multifd: pages go to the channels in batches of gfns; the main stream
     * keeps only the ITERATION_END records. */
    struct multifd_send *mf;
    uint64_t mf_gfns[MULTIFD_BATCH_PAGES];
    unsigned mf_n;
};

/* Bytes put out so far: the stream, plus pages written to their place in a
 * file (the channel counts both). */
static uint64_t bytes_out(struct ram_save *rs)
{
    return channel_bytes_written(rs->w->ch) + multifd_send_bytes(rs->mf);
}

static void count(uint64_t *counter, uint64_t n)
{
    __atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

struct ram_save *ram_save_new(struct guest_ram *ram, struct accel *accel, struct stream_writer *w,
                              int compress_level, struct ram_counters *counters,
                              const uint64_t *max_bandwidth)
{
    struct ram_save *rs = g_new0(struct ram_save, 1);
    rs->ram = ram;
    rs->accel = accel;
    rs->w = w;
    rs->counters = counters;
    rs->max_bandwidth = max_bandwidth;
    rs->to_send = bitmap_new(ram->nr_gfns);
    if (compress_level)
        ram_save_set_compression(rs, PAGE_COMPRESSION_ZLIB, compress_level);
    return rs;
}

void ram_save_set_compression(struct ram_save *rs, enum page_compression alg, int level)
{
    rs->alg = alg;
    rs->level = level;
    if (alg != PAGE_COMPRESSION_NONE && !rs->zbuf)
        rs->zbuf = g_malloc(RAM_BATCH_PAGES * GUEST_PAGE_SIZE);
}

bool ram_save_set_xbzrle(struct ram_save *rs, uint64_t cache_size, GError **errp)
{
    rs->xcache = xbzrle_cache_new(cache_size, GUEST_PAGE_SIZE, errp);
    if (!rs->xcache)
        return false;
    rs->xsnap = g_malloc(RAM_BATCH_PAGES * GUEST_PAGE_SIZE);
    if (!rs->zbuf)
        rs->zbuf = g_malloc(RAM_BATCH_PAGES * GUEST_PAGE_SIZE);
    __atomic_store_n(&rs->counters->xbzrle_cache_memory, xbzrle_cache_memory(rs->xcache),
                     __ATOMIC_RELAXED);
    return true;
}

void ram_save_free(struct ram_save *rs)
{
    if (!rs)
        return;
    if (rs->logging)
        accel_dirty_log_stop(rs->accel, NULL);
    g_free(rs->to_send);
    g_free(rs->zbuf);
    g_free(rs->xsnap);
    xbzrle_cache_free(rs->xcache);
    g_free(rs->present);
    g_free(rs->page_crc);
    if (rs->passes)
        g_array_unref(rs->passes);
    g_free(rs);
}

void ram_save_set_mapped(struct ram_save *rs, const struct stream_mapped_ram *layout)
{
    rs->mapped = true;
    rs->layout = *layout;
    rs->present = bitmap_new(rs->ram->nr_gfns);
    if (rs->w->flags & MIG_HDR_F_CRC32)
        rs->page_crc = g_new0(uint32_t, rs->ram->nr_gfns);
    rs->passes = g_array_new(FALSE, TRUE, sizeof(struct stream_iteration_end));
}

void ram_save_set_multifd(struct ram_save *rs, struct multifd_send *mf)
{
    rs->mf = mf;
}

static bool mf_flush(struct ram_save *rs, uint32_t pass, GError **errp)
{
    if (!rs->mf_n)
        return true;
    bool ok = multifd_send_batch(rs->mf, rs->mf_gfns, rs->mf_n, pass, rs->live, errp);
    rs->mf_n = 0;
    return ok;
}

/* Multifd: the channel reads the page, tells zero from data, and sends it. */
static bool mf_add(struct ram_save *rs, uint64_t gfn, uint32_t pass, GError **errp)
{
    rs->mf_gfns[rs->mf_n++] = gfn;
    return rs->mf_n < MULTIFD_BATCH_PAGES || mf_flush(rs, pass, errp);
}

bool ram_save_write_index(struct ram_save *rs, GError **errp)
{
    if (!stream_write_ram_index(rs->w, rs->ram->nr_gfns, rs->present, rs->page_crc, errp))
        return false;
    for (guint i = 0; i < rs->passes->len; i++)
        if (!stream_write_iteration_end(rs->w,
                                        &g_array_index(rs->passes, struct stream_iteration_end, i),
                                        errp))
            return false;
    return true;
}

/* A mapped-RAM page: to its place in the file, straight from guest RAM. A
 * page a vCPU changes after its CRC was taken is dirty, so a later pass
 * writes it again with a fresh CRC; the final pass runs paused. */
static bool put_mapped_page(struct ram_save *rs, uint64_t gfn, const uint8_t *page, GError **errp)
{
    if (rs->page_crc)
        rs->page_crc[gfn] = tern_crc32(0, page, GUEST_PAGE_SIZE);
    bitmap_set_atomic(rs->present, gfn);
    count(&rs->counters->normal, 1);
    count(&rs->counters->normal_bytes, GUEST_PAGE_SIZE);
    return channel_write_at(rs->w->ch, stream_mapped_page_offset(&rs->layout, gfn), page,
                            GUEST_PAGE_SIZE, errp);
}

bool ram_save_setup(struct ram_save *rs, GError **errp)
{
    struct guest_ram *ram = rs->ram;
    uint64_t start, end, populated = 0;

    /* Logging first, then the scan: a page written after we looked at it is
     * logged, so nothing falls between the two. */
    if (!accel_dirty_log_start(rs->accel, errp))
        return false;
    rs->logging = true;
    for (uint64_t gpa = 0; guest_ram_next_data(ram, gpa, &start, &end); gpa = end) {
        bitmap_set_range(rs->to_send, start >> GUEST_PAGE_SHIFT, (end - start) >> GUEST_PAGE_SHIFT);
        populated += end - start;
    }
    /* Pages Tern wrote before now are either populated (already marked) or
     * were discarded back to holes (zero on the target too). */
    bitmap_steal_into(rs->to_send, ram->vmm_dirty, ram->nr_gfns);
    count(&rs->counters->skipped, (ram->size - populated) >> GUEST_PAGE_SHIFT);
    rs->pending = bitmap_count(rs->to_send, ram->nr_gfns);
    return true;
}

/* Word at a time; most non-zero pages differ in the first words. */
bool ram_page_is_zero(const void *page)
{
    const uint64_t *w = page;
    for (size_t i = 0; i < GUEST_PAGE_SIZE / 8; i += 4)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
            return false;
    return true;
}

static bool flush_pages(struct ram_save *rs, GError **errp)
{
    if (!rs->nr_pages)
        return true;
    bool ok = stream_write_page_data(rs->w, rs->pages, rs->nr_pages, rs->live, errp);
    rs->nr_pages = 0;
    /* Raw pages may go by reference: out before the snapshots are reused. */
    if (ok && rs->xcache)
        ok = channel_flush(rs->w->ch, errp);
    return ok;
}

static bool flush_zero(struct ram_save *rs, GError **errp)
{
    if (!rs->nr_zero)
        return true;
    bool ok = stream_write_zero_pages(rs->w, rs->zero, rs->nr_zero, errp);
    rs->nr_zero = 0;
    return ok;
}

static bool add_zero(struct ram_save *rs, uint64_t gfn, GError **errp)
{
    static const uint8_t zero_page[GUEST_PAGE_SIZE];
    struct stream_gfn_range *last = rs->nr_zero ? &rs->zero[rs->nr_zero - 1] : NULL;
    count(&rs->counters->duplicate, 1);
    /* The target's copy is now zero: a page that gets a few bytes written
     * later goes as a small delta against that. */
    if (rs->xcache)
        xbzrle_cache_insert(rs->xcache, gfn, zero_page);
    if (last && last->first_gfn + last->npages == gfn) {
        last->npages++;
        return true;
    }
    if (rs->nr_zero == RAM_ZERO_RANGES && !flush_zero(rs, errp))
        return false;
    rs->zero[rs->nr_zero++] = (struct stream_gfn_range){ .first_gfn = gfn, .npages = 1 };
    return true;
}

/* XBZRLE: send (p)'s page as a delta against the copy last sent, if there is
 * one and the delta is small enough; else whole, remembered for next time.
 * Returns false when the page need not be sent at all (unchanged). */
static bool xbzrle_page(struct ram_save *rs, struct stream_page *p, uint8_t *out)
{
    uint8_t *snap = rs->xsnap + rs->nr_pages * GUEST_PAGE_SIZE;
    const uint8_t *old = xbzrle_cache_lookup(rs->xcache, p->gfn);

    memcpy(snap, p->data, GUEST_PAGE_SIZE);
    p->data = snap;
    if (old) {
        count(&rs->counters->xbzrle_hits, 1);
        int n = xbzrle_encode(old, snap, GUEST_PAGE_SIZE, out, GUEST_PAGE_SIZE);
        if (n == 0)
            return false; /* the target has it as it is */
        if (n > 0) {
            p->encoding = MIG_PAGE_ENC_XBZRLE;
            p->length = (uint32_t)n;
            p->data = out;
            count(&rs->counters->xbzrle_pages, 1);
            count(&rs->counters->xbzrle_bytes, (uint64_t)n);
        } else {
            count(&rs->counters->xbzrle_overflow, 1);
        }
    } else if (rs->pass > 1) {
        /* Evicted, or first sent now: QEMU counts both after the first round. */
        count(&rs->counters->xbzrle_cache_miss, 1);
    }
    xbzrle_cache_insert(rs->xcache, p->gfn, snap);
    return true;
}

static bool add_page(struct ram_save *rs, uint64_t gfn, const uint8_t *page, GError **errp)
{
    struct stream_page *p = &rs->pages[rs->nr_pages];
    uint8_t *out = rs->zbuf ? rs->zbuf + rs->nr_pages * GUEST_PAGE_SIZE : NULL;
    *p = (struct stream_page){
        .gfn = gfn, .encoding = MIG_PAGE_ENC_RAW, .length = GUEST_PAGE_SIZE, .data = page
    };
    if (rs->xcache && !xbzrle_page(rs, p, out))
        return true;
    /* A delta is counted apart from normal pages, as QEMU does. */
    if (p->encoding == MIG_PAGE_ENC_RAW && rs->alg != PAGE_COMPRESSION_NONE) {
        size_t n = page_compress(rs->alg, rs->level, p->data, GUEST_PAGE_SIZE, out,
                                 GUEST_PAGE_SIZE);
        if (n) {
            p->encoding = rs->alg == PAGE_COMPRESSION_ZSTD ? MIG_PAGE_ENC_ZSTD : MIG_PAGE_ENC_ZLIB;
            p->length = (uint32_t)n;
            p->data = out;
            count(&rs->counters->compressed, 1);
        }
    }
    if (p->encoding != MIG_PAGE_ENC_XBZRLE) {
        count(&rs->counters->normal, 1);
        count(&rs->counters->normal_bytes, p->length);
    }
    if (++rs->nr_pages == RAM_BATCH_PAGES)
        return flush_pages(rs, errp);
    return true;
}

bool ram_save_pass(struct ram_save *rs, uint32_t pass, bool live, bool final,
                   struct ram_pass_result *out, GError **errp)
{
    struct guest_ram *ram = rs->ram;
    struct channel *ch = rs->w->ch;
    uint64_t t0 = clock_ns(), slept = 0, pos0 = bytes_out(rs);

    channel_set_rate_limit(ch, live ? __atomic_load_n(rs->max_bandwidth, __ATOMIC_RELAXED) : 0);
    uint64_t handled = 0, zero0 = rs->counters->duplicate;

    rs->live = live;
    rs->pass = pass;
    for (uint64_t gfn = bitmap_next_set(rs->to_send, ram->nr_gfns, 0); gfn < ram->nr_gfns;
         gfn = bitmap_next_set(rs->to_send, ram->nr_gfns, gfn + 1)) {
        bitmap_clear_bit(rs->to_send, gfn);
        const uint8_t *page = guest_ram_ptr(ram, gfn << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE);
        if (!page)
            continue; /* cannot happen: only RAM pages are ever marked */
        bool ok;
        if (rs->mf) {
            ok = mf_add(rs, gfn, pass, errp);
        } else if (rs->mapped && ram_page_is_zero(page)) {
            /* Absent from the index reads as zero on restore. */
            bitmap_clear_bit(rs->present, gfn);
            count(&rs->counters->duplicate, 1);
            ok = true;
        } else if (rs->mapped) {
            ok = put_mapped_page(rs, gfn, page, errp);
        } else {
            ok = ram_page_is_zero(page) ? add_zero(rs, gfn, errp) : add_page(rs, gfn, page, errp);
        }
        if (!ok)
            return false;
        if (++handled % RAM_BATCH_PAGES)
            continue;
        /* Progress for query-migrate while a long pass runs. */
        __atomic_store_n(&rs->counters->transferred, bytes_out(rs), __ATOMIC_RELAXED);
        __atomic_store_n(&rs->counters->remaining, rs->pending - MIN(handled, rs->pending),
                         __ATOMIC_RELAXED);
        /* Once a batch: a cancel or a target error shows as a channel error. */
        if (!channel_check(ch, errp))
            return false;
        if (!live)
            continue; /* the guest is paused: the limit no longer applies */
        uint64_t limit = __atomic_load_n(rs->max_bandwidth, __ATOMIC_RELAXED);
        if (limit != channel_get_rate_limit(ch))
            channel_set_rate_limit(ch, limit);
        if (channel_rate_limit_exceeded(ch)) {
            uint64_t s0 = clock_ns();
            channel_rate_limit_wait(ch);
            slept += clock_ns() - s0;
        }
    }
    if (!flush_zero(rs, errp) || !flush_pages(rs, errp))
        return false;
    /* Multifd: the pass ends on the main stream once every channel sent its part. */
    if (rs->mf && (!mf_flush(rs, pass, errp) || !multifd_send_sync(rs->mf, pass, final, errp)))
        return false;
    /* Never two writes of one page in flight: the pass ends when all landed. */
    if (rs->mapped && !channel_drain(ch, errp))
        return false;

    uint64_t duration = clock_ns() - t0;
    struct stream_iteration_end it = {
        .pass = pass,
        .flags = final ? MIG_ITER_F_FINAL : 0,
        .pages_sent = handled - (rs->counters->duplicate - zero0),
        .zero_pages = rs->counters->duplicate - zero0,
        .bytes_sent = bytes_out(rs) - pos0,
        .duration_ns = duration,
    };
    __atomic_store_n(&rs->counters->transferred, bytes_out(rs), __ATOMIC_RELAXED);
    if (rs->mapped)
        g_array_append_val(rs->passes, it); /* written in the tail */
    else if (!stream_write_iteration_end(rs->w, &it, errp) || !channel_flush(ch, errp))
        return false;
    *out = (struct ram_pass_result){
        .pages = handled,
        .bytes = bytes_out(rs) - pos0,
        .busy_ns = duration - MIN(slept, duration),
        .duration_ns = clock_ns() - t0,
    };
    return true;
}

bool ram_save_sync(struct ram_save *rs, uint64_t *pending, GError **errp)
{
    if (!accel_dirty_log_sync(rs->accel, rs->to_send, errp))
        return false;
    bitmap_steal_into(rs->to_send, rs->ram->vmm_dirty, rs->ram->nr_gfns);
    *pending = rs->pending = bitmap_count(rs->to_send, rs->ram->nr_gfns);
    __atomic_store_n(&rs->counters->remaining, rs->pending, __ATOMIC_RELAXED);
    return true;
}

/* ---- target ---- */

/* Runs of consecutive raw pages are stored with one write: they sit
 * back to back in the record body. */
struct ram_load {
    struct guest_ram *ram;
    uint64_t run_gfn, run_pages;
    const uint8_t *run_data;
    uint8_t scratch[GUEST_PAGE_SIZE];
};

static bool flush_run(struct ram_load *rl, GError **errp)
{
    if (!rl->run_pages)
        return true;
    bool ok = guest_ram_write(rl->ram, rl->run_gfn << GUEST_PAGE_SHIFT, rl->run_data,
                              rl->run_pages << GUEST_PAGE_SHIFT, errp);
    rl->run_pages = 0;
    return ok;
}

static bool load_page(void *opaque, const struct stream_page *page, GError **errp)
{
    struct ram_load *rl = opaque;

    if (!guest_ram_ptr(rl->ram, page->gfn << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "page 0x%" G_GINT64_MODIFIER "x is not guest RAM", page->gfn);
        return false;
    }
    if (page->encoding == MIG_PAGE_ENC_RAW) {
        bool extends = rl->run_pages && page->gfn == rl->run_gfn + rl->run_pages &&
                       page->data == rl->run_data + (rl->run_pages << GUEST_PAGE_SHIFT);
        if (extends) {
            rl->run_pages++;
            return true;
        }
        if (!flush_run(rl, errp))
            return false;
        rl->run_gfn = page->gfn;
        rl->run_data = page->data;
        rl->run_pages = 1;
        return true;
    }
    /* Decode into scratch first: a bad page must not half-write guest RAM. */
    if (!flush_run(rl, errp))
        return false;
    if (page->encoding == MIG_PAGE_ENC_XBZRLE) {
        /* A delta against the page as this side last received it. */
        const void *cur = guest_ram_ptr(rl->ram, page->gfn << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE);
        memcpy(rl->scratch, cur, GUEST_PAGE_SIZE);
    }
    if (!stream_page_decode(page, rl->scratch, GUEST_PAGE_SIZE, errp))
        return false;
    return guest_ram_write(rl->ram, page->gfn << GUEST_PAGE_SHIFT, rl->scratch, GUEST_PAGE_SIZE,
                           errp);
}

static bool load_zero(void *opaque, uint64_t first_gfn, uint64_t npages, GError **errp)
{
    struct ram_load *rl = opaque;
    return guest_ram_zero(rl->ram, first_gfn << GUEST_PAGE_SHIFT, npages << GUEST_PAGE_SHIFT, errp);
}

struct ram_load *ram_load_new(struct guest_ram *ram)
{
    struct ram_load *rl = g_new0(struct ram_load, 1);
    rl->ram = ram;
    return rl;
}

void ram_load_free(struct ram_load *rl)
{
    g_free(rl);
}

void ram_load_sinks(struct ram_load *rl, struct stream_parse_ctx *ctx)
{
    ctx->page_fn = load_page;
    ctx->range_fn = load_zero;
    ctx->opaque = rl;
}

bool ram_load_flush(struct ram_load *rl, GError **errp)
{
    return flush_run(rl, errp);
}

/* ---- target, mapped-RAM file ---- */

/* 1 MiB reads: large enough for the disk, small enough to stay in cache. */
#define RAM_LOAD_RUN_PAGES 256

struct mapped_load {
    struct guest_ram *ram;
    struct channel *ch;
    const struct stream_mapped_ram *layout;
    const struct stream_ram_index *idx;
    uint8_t *buf; /* aligned for O_DIRECT */
};

static bool load_mapped_run(void *opaque, uint64_t first_gfn, uint64_t npages, uint64_t first_crc,
                            GError **errp)
{
    struct mapped_load *ml = opaque;
    uint64_t off = stream_mapped_page_offset(ml->layout, first_gfn);
    uint64_t len = npages << GUEST_PAGE_SHIFT;

    if (!guest_ram_ptr(ml->ram, first_gfn << GUEST_PAGE_SHIFT, len)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "RAM_INDEX lists pages 0x%" G_GINT64_MODIFIER "x+%" G_GUINT64_FORMAT
                    " outside guest RAM",
                    first_gfn, npages);
        return false;
    }
    if (!channel_file_read_at(ml->ch, off, ml->buf, len, errp))
        return false;
    if (!stream_ram_index_check_run(ml->idx, ml->layout, first_gfn, npages, first_crc, ml->buf,
                                    errp))
        return false;
    /* Checked first, stored after: a bad page never reaches guest RAM. */
    return guest_ram_write(ml->ram, first_gfn << GUEST_PAGE_SHIFT, ml->buf, len, errp);
}

bool ram_load_mapped(struct guest_ram *ram, struct channel *ch,
                     const struct stream_mapped_ram *layout, const struct stream_ram_index *idx,
                     GError **errp)
{
    struct mapped_load ml = { .ram = ram, .ch = ch, .layout = layout, .idx = idx };
    void *buf;

    if (posix_memalign(&buf, GUEST_PAGE_SIZE, RAM_LOAD_RUN_PAGES * GUEST_PAGE_SIZE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "out of memory");
        return false;
    }
    ml.buf = buf;
    bool ok = stream_ram_index_for_each_run(idx, RAM_LOAD_RUN_PAGES, load_mapped_run, &ml, errp);
    free(buf);
    return ok;
}
