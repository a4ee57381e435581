/* multifd-send.c: the source side of multifd. N channel threads, each with its
 * own connection, take batches of gfns from the sender thread, read the pages
 * from guest RAM themselves (zero check, CRC, compression all in parallel)
 * and send each batch as one self-contained packet; at the end of every pass
 * each sends SYNC so the target can close the pass. */
#include <string.h>

#include "migration-internal.h"
#include "multifd.h"
#include "ram.h"
#include "tern/bitmap.h"
#include "tern/channel.h"
#include "tern/crc32.h"
#include "tern/memory.h"
#include "tern/util.h"

/* How often a waiting sender looks at the main channel (cancel, target error). */
#define MULTIFD_POLL_MS 50

struct mf_job {
    uint32_t type; /* MULTIFD_PKT_BATCH or _SYNC */
    uint32_t pass;
    bool live, final;
    unsigned n;
    uint64_t gfns[MULTIFD_BATCH_PAGES];
};

struct mf_chan {
    struct multifd_send *ms;
    unsigned index;
    struct channel *ch;
    GThread *thread;
    bool busy; /* under ms->lock: (job) is handed over and not done */
    struct mf_job job;
    /* Channel thread only: */
    uint64_t list[MULTIFD_BATCH_PAGES]; /* data gfns, then zero gfns */
    uint8_t hdr[MULTIFD_PKT_HDR_SIZE + 8 * MULTIFD_BATCH_PAGES];
    uint8_t *copy; /* live pages copied while checksummed; compression input */
    uint8_t *zbuf;
};

struct multifd_send {
    struct multifd_send_config cfg;
    unsigned next; /* round robin */
    GMutex lock;   /* guards busy, job, quit, failed */
    GCond cond;
    bool quit, failed;
    struct mf_chan chans[MULTIFD_MAX_CHANNELS];
};

static void count(uint64_t *counter, uint64_t n)
{
    __atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

static uint8_t *page_of(struct multifd_send *ms, uint64_t gfn)
{
    return guest_ram_ptr(ms->cfg.ram, gfn << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE);
}

/* CRC-32 of (c)'s first (nr) pages where they are (a paused guest's, or 0
 * when the stream has no CRCs): they go by reference. */
static uint32_t crc_in_place(struct mf_chan *c, unsigned nr, bool crc)
{
    uint32_t sum = 0;
    for (unsigned i = 0; crc && i < nr; i++)
        sum = tern_crc32(sum, page_of(c->ms, c->list[i]), GUEST_PAGE_SIZE);
    return sum;
}

static bool send_batch(struct mf_chan *c, GError **errp)
{
    struct multifd_send *ms = c->ms;
    const struct multifd_send_config *cfg = &ms->cfg;
    struct multifd_packet pkt = { .type = MULTIFD_PKT_BATCH, .pass = c->job.pass };
    unsigned nz = 0, nd = 0;
    uint64_t zero[MULTIFD_BATCH_PAGES];

    /* Classify here, on the channel's thread: the zero check reads every page. */
    for (unsigned i = 0; i < c->job.n; i++) {
        uint64_t gfn = c->job.gfns[i];
        const uint8_t *p = page_of(ms, gfn);
        if (!p)
            continue; /* cannot happen: only RAM pages are ever marked */
        if (ram_page_is_zero(p))
            zero[nz++] = gfn;
        else
            c->list[nd++] = gfn;
    }
    if (!nd && !nz)
        return true;
    memcpy(c->list + nd, zero, nz * sizeof(uint64_t));
    pkt.nr_pages = nd;
    pkt.nr_zero = nz;

    size_t raw = (size_t)nd * GUEST_PAGE_SIZE;
    /* Pages vCPUs may change are copied first (CRC and compression then see
     * one version); pages of a paused guest go by reference. */
    bool copy = nd && ((c->job.live && cfg->crc) || cfg->compression != PAGE_COMPRESSION_NONE);
    const uint8_t *payload = NULL;
    if (copy) {
        for (unsigned i = 0; i < nd; i++)
            memcpy(c->copy + (size_t)i * GUEST_PAGE_SIZE, page_of(ms, c->list[i]), GUEST_PAGE_SIZE);
        if (cfg->crc)
            pkt.data_crc = tern_crc32(0, c->copy, raw);
        payload = c->copy;
        pkt.payload_len = raw;
        if (cfg->compression != PAGE_COMPRESSION_NONE) {
            size_t n = page_compress(cfg->compression, cfg->level, c->copy, raw, c->zbuf,
                                     raw + raw / 8 + 1024);
            count(&cfg->stats->raw_bytes, raw);
            if (n) {
                pkt.flags = cfg->compression;
                payload = c->zbuf;
                pkt.payload_len = n;
                count(&cfg->stats->comp_bytes, n);
                count(&cfg->stats->comp_batches, 1);
                count(&cfg->counters->compressed, nd);
            } else {
                count(&cfg->stats->comp_bytes, raw);
                count(&cfg->stats->raw_batches, 1);
            }
        }
    } else {
        pkt.payload_len = raw;
        pkt.data_crc = crc_in_place(c, nd, cfg->crc);
    }
    size_t hlen = multifd_packet_encode(&pkt, c->list, c->hdr);
    channel_put_bytes(c->ch, c->hdr, hlen);
    if (payload)
        channel_put_buffer_ref(c->ch, payload, pkt.payload_len);
    else
        for (unsigned i = 0; i < nd; i++)
            channel_put_buffer_ref(c->ch, page_of(ms, c->list[i]), GUEST_PAGE_SIZE);
    if (!channel_flush(c->ch, errp))
        return false;
    count(&cfg->counters->normal, nd);
    count(&cfg->counters->normal_bytes, pkt.payload_len);
    count(&cfg->counters->duplicate, nz);
    __atomic_store_n(&cfg->stats->bytes[c->index], channel_bytes_written(c->ch), __ATOMIC_RELAXED);

    /* Each channel gets its share of max-bandwidth while the guest runs. */
    uint64_t limit = c->job.live ? __atomic_load_n(cfg->max_bandwidth, __ATOMIC_RELAXED) : 0;
    limit = limit ? MAX(limit / cfg->channels, 1) : 0;
    if (limit != channel_get_rate_limit(c->ch))
        channel_set_rate_limit(c->ch, limit);
    if (limit && channel_rate_limit_exceeded(c->ch))
        channel_rate_limit_wait(c->ch);
    return channel_check(c->ch, errp);
}

static bool send_sync(struct mf_chan *c, GError **errp)
{
    struct multifd_packet pkt = { .type = MULTIFD_PKT_SYNC,
                                  .pass = c->job.pass,
                                  .flags = c->job.final ? MULTIFD_SYNC_F_FINAL : 0 };
    size_t hlen = multifd_packet_encode(&pkt, NULL, c->hdr);

    channel_put_bytes(c->ch, c->hdr, hlen);
    bool ok = channel_flush(c->ch, errp);
    __atomic_store_n(&c->ms->cfg.stats->bytes[c->index], channel_bytes_written(c->ch),
                     __ATOMIC_RELAXED);
    return ok;
}

static gpointer chan_thread(gpointer opaque)
{
    struct mf_chan *c = opaque;
    struct multifd_send *ms = c->ms;

    for (;;) {
        g_mutex_lock(&ms->lock);
        while (!c->busy && !ms->quit)
            g_cond_wait(&ms->cond, &ms->lock);
        bool quit = !c->busy;
        g_mutex_unlock(&ms->lock);
        if (quit)
            return NULL;

        g_autoptr(GError) err = NULL;
        bool ok = c->job.type == MULTIFD_PKT_SYNC ? send_sync(c, &err) : send_batch(c, &err);
        g_mutex_lock(&ms->lock);
        c->busy = false;
        if (!ok)
            ms->failed = true;
        g_cond_broadcast(&ms->cond);
        g_mutex_unlock(&ms->lock);
        if (!ok) {
            /* Fail the migration: the sender sees it on the main channel. */
            g_autofree char *why = g_strdup_printf("multifd channel %u: %s", c->index,
                                                   err->message);
            channel_shutdown(ms->cfg.main, why);
            return NULL;
        }
    }
}

/* Wait under the lock until (pred) or a failure; the main channel is looked
 * at every MULTIFD_POLL_MS, so a cancel or the target's ERROR stops the wait. */
static bool wait_for(struct multifd_send *ms, bool (*pred)(struct multifd_send *ms, void *arg),
                     void *arg, GError **errp)
{
    while (!pred(ms, arg)) {
        if (ms->failed || channel_has_error(ms->cfg.main)) {
            g_mutex_unlock(&ms->lock);
            if (channel_check(ms->cfg.main, errp))
                g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "a multifd channel failed");
            g_mutex_lock(&ms->lock);
            return false;
        }
        g_cond_wait_until(&ms->cond, &ms->lock,
                          g_get_monotonic_time() + MULTIFD_POLL_MS * G_TIME_SPAN_MILLISECOND);
    }
    return true;
}

static bool any_idle(struct multifd_send *ms, void *arg)
{
    unsigned *pick = arg;
    for (unsigned k = 0; k < ms->cfg.channels; k++) {
        unsigned i = (ms->next + k) % ms->cfg.channels;
        if (!ms->chans[i].busy) {
            *pick = i;
            return true;
        }
    }
    return false;
}

static bool chan_idle(struct multifd_send *ms, void *arg)
{
    return !ms->chans[*(unsigned *)arg].busy;
}

static bool all_idle(struct multifd_send *ms, void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < ms->cfg.channels; i++)
        if (ms->chans[i].busy)
            return false;
    return true;
}

bool multifd_send_batch(struct multifd_send *ms, const uint64_t *gfns, unsigned n, uint32_t pass,
                        bool live, GError **errp)
{
    unsigned pick = 0;

    g_assert(n <= MULTIFD_BATCH_PAGES);
    g_mutex_lock(&ms->lock);
    bool ok = wait_for(ms, any_idle, &pick, errp);
    if (ok) {
        struct mf_chan *c = &ms->chans[pick];
        c->job.type = MULTIFD_PKT_BATCH;
        c->job.pass = pass;
        c->job.live = live;
        c->job.n = n;
        memcpy(c->job.gfns, gfns, n * sizeof(uint64_t));
        c->busy = true;
        ms->next = (pick + 1) % ms->cfg.channels;
        g_cond_broadcast(&ms->cond);
    }
    g_mutex_unlock(&ms->lock);
    return ok;
}

bool multifd_send_sync(struct multifd_send *ms, uint32_t pass, bool final, GError **errp)
{
    bool ok = true;

    g_mutex_lock(&ms->lock);
    for (unsigned i = 0; ok && i < ms->cfg.channels; i++) {
        ok = wait_for(ms, chan_idle, &i, errp);
        if (!ok)
            break;
        struct mf_chan *c = &ms->chans[i];
        c->job.type = MULTIFD_PKT_SYNC;
        c->job.pass = pass;
        c->job.final = final;
        c->job.n = 0;
        c->busy = true;
        g_cond_broadcast(&ms->cond);
    }
    ok = ok && wait_for(ms, all_idle, NULL, errp);
    g_mutex_unlock(&ms->lock);
    return ok;
}

uint64_t multifd_send_bytes(struct multifd_send *ms)
{
    uint64_t sum = 0;
    if (!ms)
        return 0;
    for (unsigned i = 0; i < ms->cfg.channels; i++)
        sum += __atomic_load_n(&ms->cfg.stats->bytes[i], __ATOMIC_RELAXED);
    return sum;
}

struct multifd_send *multifd_send_start(struct migration *mig, const char *uri,
                                        const struct multifd_send_config *cfg, GError **errp)
{
    struct multifd_send *ms = g_new0(struct multifd_send, 1);
    size_t raw = (size_t)MULTIFD_BATCH_PAGES * GUEST_PAGE_SIZE;

    ms->cfg = *cfg;
    g_mutex_init(&ms->lock);
    g_cond_init(&ms->cond);
    __atomic_store_n(&cfg->stats->channels, cfg->channels, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < cfg->channels; i++) {
        struct mf_chan *c = &ms->chans[i];
        c->ms = ms;
        c->index = i;
        c->ch = migration_open_channel(mig, uri, errp);
        if (!c->ch) {
            g_prefix_error(errp, "multifd channel %u: ", i);
            multifd_send_free(ms);
            return NULL;
        }
        struct multifd_hello h = { .session = cfg->session,
                                   .index = i,
                                   .nr_channels = cfg->channels };
        uint8_t hello[MULTIFD_HELLO_SIZE];
        multifd_hello_encode(&h, hello);
        channel_put_bytes(c->ch, hello, sizeof(hello));
        if (!channel_flush(c->ch, errp)) {
            g_prefix_error(errp, "multifd channel %u: ", i);
            multifd_send_free(ms);
            return NULL;
        }
        c->copy = g_malloc(raw);
        if (cfg->compression != PAGE_COMPRESSION_NONE)
            c->zbuf = g_malloc(raw + raw / 8 + 1024);
    }
    for (unsigned i = 0; i < cfg->channels; i++)
        ms->chans[i].thread = g_thread_new("mig-multifd", chan_thread, &ms->chans[i]);
    return ms;
}

void multifd_send_shutdown(struct multifd_send *ms, const char *why)
{
    if (!ms)
        return;
    for (unsigned i = 0; i < ms->cfg.channels; i++)
        if (ms->chans[i].ch)
            channel_shutdown(ms->chans[i].ch, why);
}

void multifd_send_free(struct multifd_send *ms)
{
    if (!ms)
        return;
    g_mutex_lock(&ms->lock);
    ms->quit = true;
    g_cond_broadcast(&ms->cond);
    g_mutex_unlock(&ms->lock);
    for (unsigned i = 0; i < ms->cfg.channels; i++) {
        struct mf_chan *c = &ms->chans[i];
        if (c->thread)
            g_thread_join(c->thread);
        channel_close(c->ch);
        g_free(c->copy);
        g_free(c->zbuf);
    }
    g_mutex_clear(&ms->lock);
    g_cond_clear(&ms->cond);
    g_free(ms);
}
