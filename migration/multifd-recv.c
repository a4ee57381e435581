/* multifd-recv.c: the target side of multifd. Every extra connection gets a
 * thread that opens it as the main connection was (TLS handshake included:
 * incoming.c's opener) and checks its channel header (the session the main
 * stream announced, a free index); a channel's thread then reads its batches
 * straight into guest RAM (a plain socket: readv over the destination pages;
 * TLS: channel reads into each run of pages, docs/tls.md says which copy),
 * checks each batch's CRC over the pages as placed, and at SYNC
 * waits for the main stream to close the pass, so that no channel places a
 * later pass's copy of a page before every channel finished the earlier one. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "multifd.h"
#include "tern/bitmap.h"
#include "tern/channel-tls.h"
#include "tern/channel.h"
#include "tern/crc32.h"
#include "tern/memory.h"
#include "tern/util.h"

/* Connections a stranger can make us hold at once, beyond the channels
 * still due; and all connections of a migration, strangers included. */
#define MULTIFD_SPARE_CONNS 8
#define MULTIFD_MAX_CONNS (MULTIFD_MAX_CHANNELS + 64)
/* How long a connection may take to send its channel header (plain sockets;
 * a TLS peer is held to its handshake's deadline, and is no stranger after). */
#define MULTIFD_HELLO_TIMEOUT_S 10
/* How long the main stream waits at a pass end for channels that never joined. */
#define MULTIFD_JOIN_TIMEOUT_S 30
#define MULTIFD_IOV_MAX 256

struct mr_conn {
    struct multifd_recv *mr;
    int fd;             /* the socket: shutdown(2) from any thread unblocks the reader */
    struct channel *ch; /* once opened (it owns (fd) then) */
    bool tls;           /* read through (ch); else raw reads on (fd) */
    GThread *thread;
    int index;    /* -1 until it joined */
    bool dropped; /* failed to join (a stranger); under mr->lock */
    bool spoke;   /* opened (its handshake or first bytes came); under mr->lock */
    bool evicted; /* shut down to make room; under mr->lock */
    uint8_t hdr[MULTIFD_PKT_HDR_SIZE + 8 * MULTIFD_BATCH_MAX_PAGES];
    uint64_t gfns[MULTIFD_BATCH_MAX_PAGES];
    struct iovec iov[MULTIFD_IOV_MAX];
    uint8_t *zin, *zout; /* compressed batches */
};

struct multifd_recv {
    struct guest_ram *ram;
    unsigned channels;
    uint32_t compression;
    struct multifd_counters *stats;
    struct multifd_recv_open open;

    GMutex lock; /* guards everything below */
    GCond cond;
    bool expected; /* the main stream announced (session) */
    uint64_t session;
    bool crc;
    bool joined[MULTIFD_MAX_CHANNELS];
    unsigned nr_joined;
    uint32_t synced[MULTIFD_MAX_CHANNELS]; /* last pass each channel finished */
    uint32_t released;                     /* last pass the main stream closed */
    char *error;
    bool shut;
    unsigned pending; /* accepted, neither joined nor dropped yet */
    GPtrArray *conns; /* struct mr_conn *, every accepted connection */
};

static void set_error(struct multifd_recv *mr, const char *msg)
{
    g_mutex_lock(&mr->lock);
    if (!mr->error)
        mr->error = g_strdup(msg);
    g_cond_broadcast(&mr->cond);
    g_mutex_unlock(&mr->lock);
}

/* Read into the pages themselves: (iov) is consumed as it fills. */
static bool readv_full(int fd, struct iovec *iov, int cnt, GError **errp)
{
    while (cnt) {
        ssize_t n = readv(fd, iov, cnt);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s",
                        n ? g_strerror(errno) : "unexpected end of stream");
            return false;
        }
        iov_consume(&iov, &cnt, (size_t)n);
    }
    return true;
}

static bool read_full(int fd, void *buf, size_t len, GError **errp)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };

    return readv_full(fd, &iov, 1, errp);
}

/* (len) octets of the channel's stream: through the channel (TLS), or
 * straight off a plain socket. */
static bool conn_read(struct mr_conn *c, void *buf, size_t len, GError **errp)
{
    if (c->tls)
        return channel_read_exact(c->ch, buf, len, errp);
    return read_full(c->fd, buf, len, errp);
}

/* Into the pages of (iov)[0..cnt). */
static bool conn_readv(struct mr_conn *c, struct iovec *iov, int cnt, GError **errp)
{
    if (!c->tls)
        return readv_full(c->fd, iov, cnt, errp);
    for (int i = 0; i < cnt; i++)
        if (!channel_read_exact(c->ch, iov[i].iov_base, iov[i].iov_len, errp))
            return false;
    return true;
}

static bool not_ram(uint64_t gfn, GError **errp)
{
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                "page 0x%" G_GINT64_MODIFIER "x is not guest RAM", gfn);
    return false;
}

/* Raw pages: straight from the connection into guest RAM, then the CRC over them. */
static bool place_raw(struct mr_conn *c, const struct multifd_packet *p, bool crc, GError **errp)
{
    struct guest_ram *ram = c->mr->ram;
    uint32_t i = 0;

    while (i < p->nr_pages) {
        int cnt = 0;
        for (; i < p->nr_pages && cnt < MULTIFD_IOV_MAX; i++) {
            uint8_t *dst = guest_ram_ptr(ram, c->gfns[i] << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE);
            struct iovec *last = cnt ? &c->iov[cnt - 1] : NULL;
            if (last && (uint8_t *)last->iov_base + last->iov_len == dst) {
                last->iov_len += GUEST_PAGE_SIZE;
                continue;
            }
            c->iov[cnt++] = (struct iovec){ .iov_base = dst, .iov_len = GUEST_PAGE_SIZE };
        }
        if (!conn_readv(c, c->iov, cnt, errp))
            return false;
    }
    if (!crc)
        return true;
    uint32_t sum = 0;
    for (i = 0; i < p->nr_pages; i++)
        sum = tern_crc32(sum, guest_ram_ptr(ram, c->gfns[i] << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE),
                         GUEST_PAGE_SIZE);
    if (sum != p->data_crc) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "batch of %u pages (pass %u, first gfn 0x%" G_GINT64_MODIFIER
                    "x): CRC mismatch (batch says 0x%08x, computed 0x%08x)",
                    p->nr_pages, p->pass, c->gfns[0], p->data_crc, sum);
        return false;
    }
    return true;
}

/* Compressed: decompressed and checked aside, then copied to the pages. */
static bool place_compressed(struct mr_conn *c, const struct multifd_packet *p, bool crc,
                             GError **errp)
{
    struct guest_ram *ram = c->mr->ram;
    size_t raw = (size_t)p->nr_pages * GUEST_PAGE_SIZE;

    if (!c->zin) {
        c->zin = g_malloc((size_t)MULTIFD_BATCH_MAX_PAGES * GUEST_PAGE_SIZE);
        c->zout = g_malloc((size_t)MULTIFD_BATCH_MAX_PAGES * GUEST_PAGE_SIZE);
    }
    if (!conn_read(c, c->zin, p->payload_len, errp))
        return false;
    if (!page_decompress(p->flags, c->zin, p->payload_len, c->zout, raw, errp)) {
        g_prefix_error(errp, "batch of %u pages (pass %u): ", p->nr_pages, p->pass);
        return false;
    }
    if (crc) {
        uint32_t sum = tern_crc32(0, c->zout, raw);
        if (sum != p->data_crc) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "compressed batch of %u pages (pass %u): CRC mismatch (batch says "
                        "0x%08x, computed 0x%08x)",
                        p->nr_pages, p->pass, p->data_crc, sum);
            return false;
        }
    }
    for (uint32_t i = 0; i < p->nr_pages; i++)
        memcpy(guest_ram_ptr(ram, c->gfns[i] << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE),
               c->zout + (size_t)i * GUEST_PAGE_SIZE, GUEST_PAGE_SIZE);
    return true;
}

static bool recv_batch(struct mr_conn *c, const struct multifd_packet *p, bool crc, GError **errp)
{
    struct multifd_recv *mr = c->mr;
    struct guest_ram *ram = mr->ram;
    uint32_t n = p->nr_pages + p->nr_zero;

    if (!conn_read(c, c->hdr + MULTIFD_PKT_HDR_SIZE, 8 * (size_t)n, errp) ||
        !multifd_packet_check_gfns(c->hdr, p, ram->nr_gfns, c->gfns, errp))
        return false;
    if (!crc && p->data_crc) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "batch: a CRC in a stream without");
        return false;
    }
    for (uint32_t i = 0; i < n; i++)
        if (!guest_ram_ptr(ram, c->gfns[i] << GUEST_PAGE_SHIFT, GUEST_PAGE_SIZE))
            return not_ram(c->gfns[i], errp);
    uint64_t t0 = clock_ns();
    bool ok = p->flags == PAGE_COMPRESSION_NONE ? place_raw(c, p, crc, errp)
                                                : place_compressed(c, p, crc, errp);
    if (!ok)
        return false;
    for (uint32_t i = 0; i < p->nr_pages; i++)
        bitmap_set_atomic(ram->vmm_dirty, c->gfns[i]);
    /* Zero pages in runs of consecutive frames: one hole punched per run. */
    for (uint32_t i = p->nr_pages, j; i < n; i = j) {
        for (j = i + 1; j < n && c->gfns[j] == c->gfns[j - 1] + 1; j++)
            ;
        if (!guest_ram_zero(ram, c->gfns[i] << GUEST_PAGE_SHIFT,
                            (uint64_t)(j - i) << GUEST_PAGE_SHIFT, errp))
            return false;
    }
    __atomic_add_fetch(&mr->stats->placed_bytes, (uint64_t)p->nr_pages * GUEST_PAGE_SIZE,
                       __ATOMIC_RELAXED);
    /* Placement time: the channels' busy time (reading the pages in,
     * checking, zeroing), averaged over the channels, which work at once. */
    __atomic_add_fetch(&mr->stats->place_ns, (clock_ns() - t0) / mr->channels, __ATOMIC_RELAXED);
    return true;
}

/* SYNC: this channel is done with (pass); wait until the main stream closes it. */
static bool recv_sync(struct mr_conn *c, const struct multifd_packet *p, GError **errp)
{
    struct multifd_recv *mr = c->mr;

    g_mutex_lock(&mr->lock);
    mr->synced[c->index] = p->pass;
    g_cond_broadcast(&mr->cond);
    while (mr->released < p->pass && !mr->error && !mr->shut)
        g_cond_wait(&mr->cond, &mr->lock);
    bool ok = mr->released >= p->pass;
    g_mutex_unlock(&mr->lock);
    if (!ok)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "stopped");
    return ok;
}

/* Read the channel header; join as that channel, or say why not. */
static bool join(struct mr_conn *c, GError **errp)
{
    struct multifd_recv *mr = c->mr;
    uint8_t buf[MULTIFD_HELLO_SIZE];
    struct multifd_hello h;

    if (!conn_read(c, buf, sizeof(buf), errp) || !multifd_hello_decode(buf, &h, errp))
        return false;
    g_mutex_lock(&mr->lock);
    bool ok = false;
    if (!mr->expected)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "no multifd migration announced yet");
    else if (h.session != mr->session)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "wrong session id");
    else if (h.nr_channels != mr->channels || h.index >= mr->channels)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "channel %u of %u (this target has %u)",
                    h.index, h.nr_channels, mr->channels);
    else if (mr->joined[h.index])
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "channel %u joined twice", h.index);
    else
        ok = true;
    if (ok) {
        mr->joined[h.index] = true;
        mr->nr_joined++;
        c->index = (int)h.index;
    }
    g_mutex_unlock(&mr->lock);
    return ok;
}

static gpointer conn_thread(gpointer opaque)
{
    struct mr_conn *c = opaque;
    struct multifd_recv *mr = c->mr;
    g_autoptr(GError) err = NULL;

    /* The handshake (TLS) runs here, never on the main loop. */
    struct channel *ch = mr->open.open(mr->open.opaque, c->fd, &err);
    if (ch) {
        g_mutex_lock(&mr->lock);
        c->ch = ch;
        c->spoke = true;
        g_mutex_unlock(&mr->lock);
        /* A plain socket is read raw (nothing was read through (ch)); TLS
         * goes through the channel, kTLS included (its reads are the fd's). */
        c->tls = channel_tls_describe(ch) != NULL;
    }
    /* A silent stranger must not hold its place for long. */
    struct timeval hello = { .tv_sec = MULTIFD_HELLO_TIMEOUT_S }, forever = { 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &hello, sizeof(hello));
    bool joined = ch && join(c, &err);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof(forever));
    g_mutex_lock(&mr->lock);
    mr->pending--;
    c->dropped = !joined;
    g_mutex_unlock(&mr->lock);
    if (!joined) {
        /* A stranger (or a late duplicate): drop it, the migration goes on. */
        fprintf(stderr, "tern: incoming migration: dropped a connection: %s\n", err->message);
        shutdown(c->fd, SHUT_RDWR);
        return NULL;
    }
    g_mutex_lock(&mr->lock);
    bool crc = mr->crc;
    g_mutex_unlock(&mr->lock);

    for (;;) {
        struct multifd_packet p;
        if (!conn_read(c, c->hdr, MULTIFD_PKT_HDR_SIZE, &err) ||
            !multifd_packet_decode(c->hdr, &p, &err))
            break;
        g_mutex_lock(&mr->lock);
        uint32_t expect = mr->synced[c->index] + 1;
        g_mutex_unlock(&mr->lock);
        if (p.pass != expect) {
            g_set_error(&err, TERN_ERROR, TERN_ERROR_INVALID, "packet of pass %u during pass %u",
                        p.pass, expect);
            break;
        }
        if (p.type == MULTIFD_PKT_BATCH) {
            if (p.flags != PAGE_COMPRESSION_NONE && p.flags != mr->compression) {
                g_set_error(&err, TERN_ERROR, TERN_ERROR_INVALID,
                            "a %s batch, but the stream announced %s",
                            page_compression_name(p.flags), page_compression_name(mr->compression));
                break;
            }
            if (!recv_batch(c, &p, crc, &err))
                break;
            continue;
        }
        if (!recv_sync(c, &p, &err))
            break;
        if (p.flags & MULTIFD_SYNC_F_FINAL)
            return NULL; /* the last page is placed */
    }
    g_autofree char *msg = g_strdup_printf("multifd channel %d: %s", c->index, err->message);
    set_error(mr, msg);
    /* The source sees its channel break and stops. */
    shutdown(c->fd, SHUT_RDWR);
    return NULL;
}

struct multifd_recv *multifd_recv_new(struct guest_ram *ram, unsigned channels,
                                      uint32_t compression, struct multifd_counters *stats,
                                      const struct multifd_recv_open *open)
{
    struct multifd_recv *mr = g_new0(struct multifd_recv, 1);
    mr->ram = ram;
    mr->channels = channels;
    mr->compression = compression;
    mr->stats = stats;
    mr->open = *open;
    g_mutex_init(&mr->lock);
    g_cond_init(&mr->cond);
    mr->conns = g_ptr_array_new();
    multifd_counters_reset(stats);
    __atomic_store_n(&stats->channels, channels, __ATOMIC_RELAXED);
    return mr;
}

bool multifd_recv_expect(struct multifd_recv *mr, const struct multifd_announce *a, bool crc,
                         GError **errp)
{
    if (a->channels != mr->channels || a->compression != mr->compression) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "multifd setup differs: the source sends %u channel(s) with compression %s, "
                    "this target is set up for %u channel(s) with compression %s (set "
                    "multifd-channels and multifd-compression alike on both sides)",
                    a->channels, page_compression_name(a->compression), mr->channels,
                    page_compression_name(mr->compression));
        return false;
    }
    g_mutex_lock(&mr->lock);
    mr->session = a->session;
    mr->crc = crc;
    mr->expected = true;
    g_mutex_unlock(&mr->lock);
    return true;
}

void multifd_recv_accept(struct multifd_recv *mr, int fd)
{
    g_mutex_lock(&mr->lock);
    /* Room for every channel still due and a few strangers beside them: those
     * that failed to join no longer count, but every connection does toward
     * the total. */
    bool room = !mr->shut && mr->conns->len < MULTIFD_MAX_CONNS;
    if (room && mr->pending >= mr->channels - mr->nr_joined + MULTIFD_SPARE_CONNS) {
        /* Full of connections that have not joined: the oldest silent one
         * makes room (a real channel's first bytes come at once); it fails
         * its join and no longer counts. */
        room = false;
        for (unsigned i = 0; i < mr->conns->len && !room; i++) {
            struct mr_conn *o = g_ptr_array_index(mr->conns, i);

            if (o->index < 0 && !o->dropped && !o->spoke && !o->evicted &&
                !channel_socket_has_input(o->fd)) {
                o->evicted = true;
                shutdown(o->fd, SHUT_RDWR);
                room = true;
            }
        }
    }
    struct mr_conn *c = NULL;
    if (room) {
        c = g_new0(struct mr_conn, 1);
        c->mr = mr;
        c->fd = fd;
        c->index = -1;
        mr->pending++;
        g_ptr_array_add(mr->conns, c);
        c->thread = g_thread_new("mig-multifd-in", conn_thread, c);
    }
    g_mutex_unlock(&mr->lock);
    if (!room)
        close(fd);
}

bool multifd_recv_all_joined(struct multifd_recv *mr)
{
    g_mutex_lock(&mr->lock);
    bool all = mr->nr_joined == mr->channels;
    g_mutex_unlock(&mr->lock);
    return all;
}

bool multifd_recv_sync(struct multifd_recv *mr, uint32_t pass, bool final, GError **errp)
{
    gint64 join_deadline = g_get_monotonic_time() + MULTIFD_JOIN_TIMEOUT_S * G_TIME_SPAN_SECOND;
    bool ok = false;

    g_mutex_lock(&mr->lock);
    for (;;) {
        if (mr->error || mr->shut)
            break;
        unsigned done = 0;
        for (unsigned i = 0; i < mr->channels; i++)
            done += mr->synced[i] >= pass;
        if (done == mr->channels) {
            ok = true;
            break;
        }
        if (mr->nr_joined < mr->channels && g_get_monotonic_time() > join_deadline) {
            mr->error = g_strdup_printf("only %u of %u multifd channels connected", mr->nr_joined,
                                        mr->channels);
            break;
        }
        g_cond_wait_until(&mr->cond, &mr->lock, g_get_monotonic_time() + G_TIME_SPAN_SECOND);
    }
    if (ok) {
        mr->released = pass;
        g_cond_broadcast(&mr->cond);
    } else {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s",
                    mr->error ? mr->error : "multifd stopped");
    }
    g_mutex_unlock(&mr->lock);
    (void) final;
    return ok;
}

char *multifd_recv_error(struct multifd_recv *mr)
{
    if (!mr)
        return NULL;
    g_mutex_lock(&mr->lock);
    char *e = g_strdup(mr->error);
    g_mutex_unlock(&mr->lock);
    return e;
}

void multifd_recv_shutdown(struct multifd_recv *mr, const char *why)
{
    if (!mr)
        return;
    g_mutex_lock(&mr->lock);
    if (!mr->error && why)
        mr->error = g_strdup(why);
    mr->shut = true;
    g_cond_broadcast(&mr->cond);
    for (guint i = 0; i < mr->conns->len; i++)
        shutdown(((struct mr_conn *)mr->conns->pdata[i])->fd, SHUT_RDWR);
    g_mutex_unlock(&mr->lock);
}

void multifd_recv_free(struct multifd_recv *mr)
{
    if (!mr)
        return;
    multifd_recv_shutdown(mr, NULL);
    for (guint i = 0; i < mr->conns->len; i++) {
        struct mr_conn *c = mr->conns->pdata[i];
        g_thread_join(c->thread);
        if (c->ch)
            channel_close(c->ch); /* and (fd) with it */
        else
            close(c->fd);
        g_free(c->zin);
        g_free(c->zout);
        g_free(c);
    }
    g_ptr_array_unref(mr->conns);
    g_free(mr->error);
    g_mutex_clear(&mr->lock);
    g_cond_clear(&mr->cond);
    g_free(mr);
}
