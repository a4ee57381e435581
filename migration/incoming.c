/* incoming.c: the target side. Listen, vet each connection (stream header,
 * VM_CONFIG) on a thread of its own, dropping strangers and carrying on
 * listening, and load the first vetted source's stream record by record into
 * a paused machine; only when END has arrived with everything in place say
 * RESUMED and run. A failure of a vetted source tells it (ERROR), and the
 * process exits without ever running a partially loaded guest. */
#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration-internal.h"
#include "ram.h"
#include "tern/channel.h"
#include "tern/channel-file.h"
#include "tern/channel-tls.h"
#include "tern/machine-state.h"
#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/stream.h"
#include "tern/util.h"

/* How long a failed target keeps draining the source's stream after its
 * ERROR, so that the source reads ERROR rather than a reset: the source stops
 * sending as soon as ERROR arrives, so this is rarely waited out. */
#define INCOMING_LINGER_MS 2000
/* Connections vetted at once. One more evicts the oldest silent one (or,
 * if all have spoken, the oldest), so a flood of silent strangers cannot
 * keep the real source out: its first bytes come at once. Evicted
 * connections unwind in the spare slots; only when those are full too is a
 * new connection dropped at accept. */
#define INCOMING_VET_MAX 8
#define INCOMING_VET_SLOTS (2 * INCOMING_VET_MAX)
/* How long a connection may take to send its stream header and VM_CONFIG
 * (and its handshake) before it is dropped. */
#define INCOMING_VET_TIMEOUT_MS 10000

/* The target -> source direction; begins with its own header, written with
 * the first message. */
struct return_path {
    struct channel *ch;
    struct stream_writer w;
    bool started;
};

/* One accepted connection being vetted, on its own thread. */
struct vetting {
    struct incoming *inc;
    int fd;     /* the accepted socket: others shut it down, only its thread closes it */
    char *peer; /* "ADDR" for messages */
    uint64_t deadline_ns;
    const char *why; /* set (under inc->lock) by whoever shut (fd) down: the reason to log */
    bool spoke;      /* its first bytes (or handshake) came: not a silent stranger */
};

struct incoming {
    struct migration *mig;
    int listen_fd;
    guint watch;
    guint watchdog;        /* the vetting deadlines' timer */
    GThread *thread;       /* a restore's loader (sockets: counted in nr_threads) */
    struct channel *ch;    /* source -> target: the vetted source's */
    struct return_path rp; /* ch NULL when restoring a file */
    bool from_file;        /* a checkpoint: mapped RAM, no return path */
    uint32_t stream_flags; /* from the image header */
    struct stream_mapped_ram layout;
    unsigned devices;        /* DEVICE_STATE records loaded */
    bool cpr;                /* mode cpr-transfer: expects RAM as memfds */
    bool adopted;            /* the source's memfds are mapped as our RAM */
    struct ram_load *pages;  /* while a stream loads: stores PAGE_DATA, ZERO_PAGES */
    bool done;               /* END accepted */
    struct multifd_recv *mf; /* capability multifd: the receive side of the channels */
    bool mf_announced;       /* the stream's MULTIFD record was accepted */
    unsigned mf_channels;    /* expected channels */
    unsigned vet_timeout_ms;
    char *deadline_why; /* the reason a connection past its deadline is dropped */

    GMutex lock; /* guards the fields below (taken after mig->lock, never before) */
    GCond idle;  /* nr_threads went down */
    struct vetting *vets[INCOMING_VET_SLOTS];
    unsigned nr_threads; /* vetting and loading threads alive */
    bool chosen;         /* a source passed vetting: (ch) is its channel */
    bool cancelled;      /* migrate_cancel */
    guint stop_idle;     /* stop_listening() pending on the main loop */
    bool finished;       /* the loader is done (completed, or the process ends) */
};

static bool rp_send(struct return_path *rp, uint32_t type, const char *error, GError **errp)
{
    if (!rp->ch)
        return true; /* a file has nobody to tell */
    if (!rp->started) {
        stream_writer_init(&rp->w, rp->ch, MIG_HDR_F_CRC32);
        if (!stream_write_header(&rp->w, errp))
            return false;
        rp->started = true;
    }
    bool ok = type == MIG_RP_ERROR ? stream_write_rp_error(&rp->w, error, errp)
                                   : stream_write_empty(&rp->w, type, errp);
    return ok && channel_flush(rp->ch, errp);
}

/* ---- The loader's step for each record type, after its descriptor parsed it ---- */

static bool load_config(struct incoming *inc, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp)
{
    struct stream_vm_config ours;

    (void)rec;
    migration_describe_machine(inc->mig->m, &ours);
    return stream_vm_config_compare(&b->vm_config, &ours, errp);
}

static bool load_static_end(struct incoming *inc, const struct stream_record *rec,
                            const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)b;
    if ((inc->stream_flags & MIG_HDR_F_MULTIFD) && !inc->mf_announced) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "a multifd stream without MULTIFD");
        return false;
    }
    mig_status_set(&inc->mig->status, MIG_STATUS_SETUP, MIG_STATUS_ACTIVE);
    return rp_send(&inc->rp, MIG_RP_READY, NULL, errp);
}

/* PAGE_DATA, ZERO_PAGES: the parse stored the pages (ram_load_sinks). */
static bool load_pages(struct incoming *inc, const struct stream_record *rec,
                       const struct stream_body *b, GError **errp)
{
    (void)rec;
    (void)b;
    return ram_load_flush(inc->pages, errp);
}

static bool load_mapped_ram(struct incoming *inc, const struct stream_record *rec,
                            const struct stream_body *b, GError **errp)
{
    (void)rec;
    /* The RAM area comes later; the tail with its index is next. */
    inc->layout = b->mapped_ram;
    return channel_file_seek(inc->ch, inc->layout.tail_offset, errp);
}

static bool load_ram_index(struct incoming *inc, const struct stream_record *rec,
                           const struct stream_body *b, GError **errp)
{
    (void)rec;
    return ram_load_mapped(machine_ram(inc->mig->m), inc->ch, &inc->layout, &b->ram_index, errp);
}

/* ITERATION_END: nothing to do beyond its checks, except in a multifd stream:
 * the pass is over once every channel has delivered its part
 * (multifd_recv_sync()). */
static bool load_iteration_end(struct incoming *inc, const struct stream_record *rec,
                               const struct stream_body *b, GError **errp)
{
    (void)rec;
    if (!(inc->stream_flags & MIG_HDR_F_MULTIFD))
        return true;
    return multifd_recv_sync(inc->mf, b->iteration_end.pass,
                             b->iteration_end.flags & MIG_ITER_F_FINAL, errp);
}

static bool load_vcpu(struct incoming *inc, const struct stream_record *rec,
                      const struct stream_body *b, GError **errp)
{
    (void)rec;
    return machine_load_vcpu(inc->mig->m, b->state.index, b->state.fdt, b->state.fdt_len, errp);
}

static bool load_vm(struct incoming *inc, const struct stream_record *rec,
                    const struct stream_body *b, GError **errp)
{
    (void)rec;
    return machine_load_vm(inc->mig->m, b->state.fdt, b->state.fdt_len, errp);
}

static bool load_device(struct incoming *inc, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp)
{
    (void)rec;
    /* VM_CONFIG's list, in its order, each device once: a repeated record
     * must not stand in for another device's state at END's count. */
    if (inc->devices >= machine_device_count(inc->mig->m) ||
        strcmp(b->state.id, machine_device(inc->mig->m, inc->devices)->id) || b->state.index) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "device %s.%u is not device %u of this VM's list", b->state.id, b->state.index,
                    inc->devices);
        return false;
    }
    if (!machine_load_device(inc->mig->m, b->state.id, b->state.fdt, b->state.fdt_len, errp))
        return false;
    inc->devices++;
    return true;
}

static bool load_end(struct incoming *inc, const struct stream_record *rec,
                     const struct stream_body *b, GError **errp)
{
    struct machine *m = inc->mig->m;

    (void)rec;
    (void)b;
    if (inc->devices != machine_device_count(m)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "END after %u of %u devices' state",
                    inc->devices, machine_device_count(m));
        return false;
    }
    /* The complete state is here: from now on a cancel is refused, as on
     * the source once it has sent END; one that came first wins. */
    g_mutex_lock(&inc->mig->lock);
    bool cancelled = mig_status_get(&inc->mig->status) == MIG_STATUS_CANCELLING;
    if (!cancelled)
        inc->mig->end_sent = true;
    g_mutex_unlock(&inc->mig->lock);
    if (cancelled) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "migration cancelled");
        return false;
    }
    inc->done = true;
    return true;
}

/* RAM_FDS: the source's memfds, checked against this machine, then mapped
 * over our own RAM at the same host addresses. The source still runs the
 * guest on them until it pauses: nothing here reads or writes them. */
static bool load_ram_fds(struct incoming *inc, const struct stream_record *rec,
                         const struct stream_body *b, GError **errp)
{
    struct guest_ram *ram = machine_ram(inc->mig->m);
    const struct stream_ram_fds *l = &b->ram_fds;
    int fds[CHANNEL_MAX_FDS];
    unsigned n = channel_take_fds(inc->ch, fds, G_N_ELEMENTS(fds));
    unsigned adopted = 0;
    bool ok = true;

    (void)rec;
    if (n != l->nr_regions) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%u memfd(s) came with the record, which describes %u RAM region(s)", n,
                    l->nr_regions);
        ok = false;
    } else if (l->nr_regions != ram->nr_regions) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%u RAM regions handed over, this VM has %u", l->nr_regions, ram->nr_regions);
        ok = false;
    }
    for (unsigned i = 0; ok && i < l->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];

        if (l->regions[i].gpa != r->gpa || l->regions[i].size != r->size) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "RAM region %u differs: stream [0x%" G_GINT64_MODIFIER
                        "x+0x%" G_GINT64_MODIFIER "x), this VM [0x%" G_GINT64_MODIFIER
                        "x+0x%" G_GINT64_MODIFIER "x)",
                        i, l->regions[i].gpa, l->regions[i].size, r->gpa, r->size);
            ok = false;
        }
    }
    for (unsigned i = 0; ok && i < l->nr_regions; i++)
        ok = guest_ram_check_fd(ram, i, fds[i], errp);
    /* An adopted fd belongs to the RAM from then on; the rest are closed. */
    while (ok && adopted < l->nr_regions) {
        ok = guest_ram_adopt_fd(ram, adopted, fds[adopted], errp);
        if (ok)
            adopted++;
    }
    inc->adopted = adopted > 0;
    for (unsigned i = adopted; i < n; i++)
        close(fds[i]);
    /* What Tern wrote into its own RAM before is gone with it: the dirty log
     * of the handed-over RAM starts clean (a later migration's first pass
     * sends every populated page anyway). */
    if (ok)
        guest_ram_clear_dirty(ram);
    return ok;
}

typedef bool (*load_fn)(struct incoming *inc, const struct stream_record *rec,
                        const struct stream_body *b, GError **errp);

/* Per stream type: (apply) stores a parsed record in the machine; (to_device)
 * marks its arrival as the end of the RAM phase, before it is even parsed. */
static const struct load_step {
    load_fn apply;
    bool to_device;
} load_steps[MIG_REC_STREAM_MAX_] = {
    [MIG_REC_VM_CONFIG] = { load_config },
    [MIG_REC_STATIC_END] = { load_static_end },
    [MIG_REC_PAGE_DATA] = { load_pages },
    [MIG_REC_ZERO_PAGES] = { load_pages },
    [MIG_REC_ITERATION_END] = { load_iteration_end },
    [MIG_REC_VCPU_STATE] = { load_vcpu, true }, /* the first CPU state: pages are done */
    [MIG_REC_VM_STATE] = { load_vm },
    [MIG_REC_DEVICE_STATE] = { load_device },
    [MIG_REC_END] = { load_end },
    [MIG_REC_MAPPED_RAM] = { load_mapped_ram },
    [MIG_REC_RAM_INDEX] = { load_ram_index },
    [MIG_REC_RAM_FDS] = { load_ram_fds },
};

/* Apply one record through its type's descriptor and step; (inc->done) at END. */
static bool load_record(struct incoming *inc, const struct stream_record *rec, GError **errp)
{
    const struct load_step *step = rec->type < MIG_REC_STREAM_MAX_ ? &load_steps[rec->type] : NULL;
    struct stream_parse_ctx ctx = { .stream_flags = inc->stream_flags,
                                    .nr_gfns = machine_ram(inc->mig->m)->nr_gfns };
    struct stream_body b;

    ram_load_sinks(inc->pages, &ctx);

    if (!step || !step->apply) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "unexpected record");
        return false;
    }
    if (step->to_device)
        mig_status_set(&inc->mig->status, MIG_STATUS_ACTIVE, MIG_STATUS_DEVICE);
    return stream_record_parse(rec, &ctx, &b, errp) && step->apply(inc, rec, &b, errp);
}

/* Both sides must be set up for the same mode: a hand-over offered to a
 * normal target, or the reverse, fails here, before READY, so the source
 * has not paused. */
static bool cpr_setup_check(struct incoming *inc, uint32_t flags, GError **errp)
{
    bool handover = flags & MIG_HDR_F_RAM_FD;

    if (handover && !inc->cpr) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "the source offers a cpr-transfer hand-over (RAM as memfds), but this "
                    "target's migration mode is normal: start it with -migrate-mode "
                    "cpr-transfer, or set the parameter mode before migrate_incoming");
        return false;
    }
    if (!handover && inc->cpr) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "this target is set up for a cpr-transfer hand-over (mode cpr-transfer), "
                    "but the source sent a normal migration stream: set the same mode on both");
        return false;
    }
    return true;
}

/* ---- Multifd (the channels themselves: multifd-recv.c) ---- */

/* Both sides must agree on multifd before any page moves. */
static bool multifd_setup_check(struct incoming *inc, uint32_t flags, GError **errp)
{
    bool multifd = flags & MIG_HDR_F_MULTIFD;

    if (multifd && !inc->mf) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "the source sends a multifd stream, but this target's capability multifd is "
                    "off: set it (and multifd-channels) before migrate_incoming");
        return false;
    }
    if (!multifd && inc->mf) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "this target is set up for multifd, but the source sent a single-stream "
                    "migration: set the capability multifd on both sides");
        return false;
    }
    return true;
}

/* The MULTIFD record (optional by type, required by the header flag). */
static bool multifd_record(struct incoming *inc, const struct stream_record *rec, GError **errp)
{
    struct multifd_announce a;

    if (!(inc->stream_flags & MIG_HDR_F_MULTIFD) || inc->mf_announced || !rec->body) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "unexpected MULTIFD record");
        return false;
    }
    if (!multifd_announce_decode(rec->body, rec->length, &a, errp) ||
        !multifd_recv_expect(inc->mf, &a, inc->stream_flags & MIG_HDR_F_CRC32, errp))
        return false;
    inc->mf_announced = true;
    return true;
}

static struct channel *incoming_open_channel(struct incoming *inc, int fd, GError **errp);

/* A multifd channel's thread opens its connection as the main one was. */
static struct channel *multifd_open_channel(void *opaque, int fd, GError **errp)
{
    return incoming_open_channel(opaque, fd, errp);
}

/* Multifd on this target: set up from its parameters before the source comes. */
static void multifd_incoming_setup(struct incoming *inc)
{
    struct migration *mig = inc->mig;

    g_mutex_lock(&mig->lock);
    bool on = mig->params.multifd && !inc->from_file && !inc->cpr;
    unsigned channels = mig->params.multifd_channels;
    uint32_t comp = mig->params.multifd_compression;
    g_mutex_unlock(&mig->lock);
    if (!on)
        return;
    inc->mf_channels = channels;
    const struct multifd_recv_open open = { .open = multifd_open_channel, .opaque = inc };
    inc->mf = multifd_recv_new(machine_ram(mig->m), channels, comp, &mig->mf, &open);
}

/* Tests only: TERN_TEST_STALL_AFTER=TYPE holds the loader for good once a
 * record of TYPE (e.g. RAM_FDS, END) is loaded, so that a test can kill the
 * target at that point of a hand-over (tests/functional/test_cpr.py). */
static void test_stall_after(const struct stream_record *rec)
{
    const char *type = g_getenv("TERN_TEST_STALL_AFTER");

    if (!type || strcmp(type, mig_rec_type_name(rec->type)))
        return;
    fprintf(stderr, "tern: test: stalling after %s\n", type);
    for (;;)
        pause();
}

/* ---- Opening a stream: the header and VM_CONFIG ---- */

/* Read the image header and the records up to VM_CONFIG and check them
 * against this machine: whether the peer is a source for it at all.
 * (*tern_peer) becomes true once the header was a Tern stream's (such a peer
 * understands an ERROR). (r) is set up here; the caller cleans it up. */
static bool stream_open(struct incoming *inc, struct channel *ch, struct stream_reader *r,
                        struct stream_order *order, bool *tern_peer, GError **errp)
{
    struct stream_record rec;

    stream_reader_init(r, ch, false);
    r->nr_gfns = machine_ram(inc->mig->m)->nr_gfns; /* per-VM record maxima */
    if (!stream_read_header(r, errp))
        return false;
    *tern_peer = true;
    if (!!(r->flags & MIG_HDR_F_MAPPED_RAM) != inc->from_file) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    inc->from_file
                        ? "not a checkpoint file (a live migration stream: use tern-dump on it)"
                        : "a checkpoint file's stream cannot come over a socket");
        return false;
    }
    if (!cpr_setup_check(inc, r->flags, errp) || !multifd_setup_check(inc, r->flags, errp))
        return false;
    stream_order_init_flags(order, r->flags);
    do {
        if (!stream_read_record(r, &rec, errp) || !stream_order_check(order, &rec, errp))
            return false;
    } while (rec.skip);

    /* The order check let only VM_CONFIG through. */
    struct stream_parse_ctx ctx = { .stream_flags = r->flags,
                                    .nr_gfns = machine_ram(inc->mig->m)->nr_gfns };
    struct stream_body b;
    GError *err = NULL;

    if (stream_record_parse(&rec, &ctx, &b, &err) && load_config(inc, &rec, &b, &err))
        return true;
    g_autofree char *where = stream_record_describe(&rec);
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %s", where, err->message);
    g_error_free(err);
    return false;
}

/* ---- Loading the chosen stream ---- */

/* The records after VM_CONFIG, up to END. */
static bool load_stream(struct incoming *inc, struct stream_reader *r, struct stream_order *order,
                        GError **errp)
{
    struct stream_record rec;
    bool ok = true;

    inc->stream_flags = r->flags;
    inc->pages = ram_load_new(machine_ram(inc->mig->m));
    while (ok && !inc->done) {
        ok = stream_read_record(r, &rec, errp) && stream_order_check(order, &rec, errp);
        __atomic_store_n(&inc->mig->ram.transferred, channel_read_pos(inc->ch), __ATOMIC_RELAXED);
        if (ok && rec.type == MIG_REC_MULTIFD)
            ok = multifd_record(inc, &rec, errp);
        if (!ok || rec.skip)
            continue;
        GError *err = NULL;
        ok = load_record(inc, &rec, &err);
        if (ok)
            test_stall_after(&rec);
        if (!ok) {
            /* Name the record the error came from. */
            g_autofree char *where = stream_record_describe(&rec);
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %s", where, err->message);
            g_error_free(err);
        }
    }
    if (ok && !stream_order_done(order)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "stream ended early");
        ok = false;
    }
    g_clear_pointer(&inc->pages, ram_load_free);
    return ok;
}

/* Load the chosen stream (opened by stream_open() into (r, order)) and run
 * the guest, or fail for good: tell the source and end the process. (err):
 * the stream failed to open already (a restore), taken. (t0): its start. */
static void incoming_load(struct incoming *inc, struct stream_reader *r, struct stream_order *order,
                          GError *open_err, uint64_t t0)
{
    struct migration *mig = inc->mig;
    g_autoptr(GError) err = open_err;
    bool ok = err == NULL;

    if (ok && !inc->from_file) {
        inc->rp.ch = channel_return_path(inc->ch, &err);
        ok = inc->rp.ch != NULL;
    }
    ok = ok && load_stream(inc, r, order, &err);
    /* RESUMED goes out before the vCPUs run: if the source cannot hear it,
     * it keeps its guest, and this one must not run. */
    ok = ok && rp_send(&inc->rp, MIG_RP_RESUMED, NULL, &err);

    g_mutex_lock(&mig->lock);
    mig->stats.total_time_ms = (clock_ns() - t0) / 1000000;
    mig->stats.transferred = channel_read_pos(inc->ch);
    g_mutex_unlock(&mig->lock);

    if (ok) {
        machine_incoming_finish(mig->m);
        mig_status_set(&mig->status, MIG_STATUS_DEVICE, MIG_STATUS_COMPLETED);
    } else {
        /* A channel's failure is the cause; the main stream's error its echo. */
        g_autofree char *mf_err = multifd_recv_error(inc->mf);
        multifd_recv_shutdown(inc->mf, "incoming migration failed");
        g_autofree char *msg = g_strdup_printf("incoming migration failed: %s",
                                               mf_err ? mf_err : err->message);
        migration_set_error(mig, msg);
        fprintf(stderr, "tern: %s\n", msg);
        /* The source resumes on that memory once it reads ERROR: let go of
         * it before saying so. */
        if (inc->adopted)
            guest_ram_release(machine_ram(mig->m));
        if (inc->rp.ch) {
            rp_send(&inc->rp, MIG_RP_ERROR, msg, NULL);
            channel_linger(inc->ch, INCOMING_LINGER_MS);
        }
        enum mig_status cur = mig_status_get(&mig->status);
        if (!mig_status_is_terminal(cur))
            mig_status_set(&mig->status, cur,
                           cur == MIG_STATUS_CANCELLING ? MIG_STATUS_CANCELLED : MIG_STATUS_FAILED);
        machine_incoming_failed(mig->m);
    }
    g_mutex_lock(&inc->lock);
    inc->finished = true;
    g_mutex_unlock(&inc->lock);
}

static gpointer restore_thread(gpointer opaque)
{
    struct incoming *inc = opaque;
    struct stream_reader r;
    struct stream_order order;
    bool tern_peer = false;
    GError *err = NULL;
    uint64_t t0 = clock_ns();

    stream_open(inc, inc->ch, &r, &order, &tern_peer, &err);
    incoming_load(inc, &r, &order, err, t0);
    stream_reader_cleanup(&r);
    return NULL;
}

/* ---- Vetting connections ---- */

/* The one place an accepted connection becomes a channel: on its vetting
 * thread (the main stream, under the vetting deadline) or its multifd
 * channel's thread, as it may block (a handshake). On failure (fd) stays the
 * caller's. */
static struct channel *incoming_open_channel(struct incoming *inc, int fd, GError **errp)
{
    unsigned char head[2];
    ssize_t n;
    struct mig_params p;

    migration_get_params(inc->mig, &p);
    if (p.tls_creds[0]) {
        struct tls_creds *creds = tls_creds_lookup(p.tls_creds, TLS_ENDPOINT_SERVER, errp);
        return creds ? channel_tls_new_server(fd, creds, p.tls_authz, errp) : NULL;
    }
    /* Without tls-creds, a TLS client's first octets are a handshake record
     * (0x16 0x03): say so rather than "bad magic". Peeked: the stream's own
     * header reader sees every octet. */
    while ((n = recv(fd, head, sizeof(head), MSG_PEEK)) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof(head) && head[0] == 0x16 && head[1] == 0x03) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "a TLS client connected, but tls-creds is not set on this target");
        return NULL;
    }
    return channel_socket_new(fd, "incoming");
}

/* Shut down the connections being vetted (they fail at once and are dropped,
 * saying (why)). Under inc->lock. */
static void vets_shutdown_locked(struct incoming *inc, const char *why)
{
    for (unsigned i = 0; i < INCOMING_VET_SLOTS; i++) {
        struct vetting *v = inc->vets[i];

        if (!v)
            continue;
        if (!v->why)
            v->why = why;
        shutdown(v->fd, SHUT_RDWR);
    }
}

static void vet_unregister_locked(struct incoming *inc, struct vetting *v)
{
    for (unsigned i = 0; i < INCOMING_VET_SLOTS; i++)
        if (inc->vets[i] == v)
            inc->vets[i] = NULL;
}

/* Main thread: no more connections. */
static void stop_listening(struct incoming *inc)
{
    if (inc->watch)
        g_source_remove(inc->watch);
    inc->watch = 0;
    if (inc->watchdog)
        g_source_remove(inc->watchdog);
    inc->watchdog = 0;
    if (inc->listen_fd >= 0)
        close(inc->listen_fd);
    inc->listen_fd = -1;
}

static gboolean stop_listening_idle(gpointer opaque)
{
    struct incoming *inc = opaque;

    g_mutex_lock(&inc->lock);
    inc->stop_idle = 0;
    g_mutex_unlock(&inc->lock);
    stop_listening(inc);
    return G_SOURCE_REMOVE;
}

/* (v) passed: make it the source, unless another one did first or the
 * migration was cancelled. The others are shut down, listening stops. */
static bool vet_claim(struct vetting *v, struct channel *ch, GError **errp)
{
    struct incoming *inc = v->inc;
    const char *why = NULL;

    g_mutex_lock(&inc->lock);
    if (v->why)
        why = v->why;
    else if (inc->cancelled)
        why = "migration cancelled";
    else if (inc->chosen)
        why = "another source's stream was accepted first";
    if (!why) {
        inc->chosen = true;
        inc->ch = ch;
        vet_unregister_locked(inc, v);
        vets_shutdown_locked(inc, "another source's stream was accepted");
        /* A multifd source's channels connect next: listen on for them. */
        if (!inc->mf)
            inc->stop_idle = g_idle_add(stop_listening_idle, inc);
    }
    g_mutex_unlock(&inc->lock);
    if (why)
        g_set_error_literal(errp, TERN_ERROR, TERN_ERROR_FAILED, why);
    return !why;
}

/* (v) failed its vetting: log it and let it go; the target listens on. A Tern
 * source refused on its own merits (e.g. a VM_CONFIG that does not match)
 * hears why, as an ERROR on the return path. */
static void vet_drop(struct vetting *v, struct channel *ch, bool tern_peer, const GError *err)
{
    struct incoming *inc = v->inc;

    g_mutex_lock(&inc->lock);
    const char *why = v->why;
    g_mutex_unlock(&inc->lock);
    fprintf(stderr, "tern: incoming migration: dropped connection from %s: %s\n", v->peer,
            why ? why : err->message);
    if (ch && tern_peer && !why) {
        g_autofree char *msg = g_strdup_printf("incoming migration refused: %s", err->message);
        struct return_path rp = { .ch = channel_return_path(ch, NULL) };

        if (rp.ch) {
            rp_send(&rp, MIG_RP_ERROR, msg, NULL);
            channel_linger(ch, INCOMING_LINGER_MS);
            channel_close(rp.ch);
        }
    }
    /* Unregistered before its fd closes, so that no shutdown() can reach a
     * number reused meanwhile. */
    g_mutex_lock(&inc->lock);
    vet_unregister_locked(inc, v);
    g_mutex_unlock(&inc->lock);
    if (ch)
        channel_close(ch);
    else
        close(v->fd);
}

static gpointer vet_thread(gpointer opaque)
{
    struct vetting *v = opaque;
    struct incoming *inc = v->inc;
    struct stream_reader r;
    struct stream_order order;
    bool tern_peer = false;
    GError *err = NULL;
    uint64_t t0 = clock_ns();
    struct channel *ch = incoming_open_channel(inc, v->fd, &err);

    g_mutex_lock(&inc->lock);
    v->spoke = ch != NULL;
    g_mutex_unlock(&inc->lock);

    bool ok = ch && stream_open(inc, ch, &r, &order, &tern_peer, &err) && vet_claim(v, ch, &err);
    if (ok)
        incoming_load(inc, &r, &order, NULL, t0);
    else
        vet_drop(v, ch, tern_peer, err);
    if (ch)
        stream_reader_cleanup(&r);
    g_clear_error(&err);

    g_mutex_lock(&inc->lock);
    inc->nr_threads--;
    g_cond_broadcast(&inc->idle);
    g_mutex_unlock(&inc->lock);
    g_free(v->peer);
    g_free(v);
    return NULL;
}

/* Main loop, twice a second while listening: drop connections past their
 * vetting deadline (a stalled stranger). */
static gboolean vet_watchdog(gpointer opaque)
{
    struct incoming *inc = opaque;
    uint64_t now = clock_ns();

    g_mutex_lock(&inc->lock);
    for (unsigned i = 0; i < INCOMING_VET_SLOTS; i++) {
        struct vetting *v = inc->vets[i];

        if (v && !v->why && now >= v->deadline_ns) {
            v->why = inc->deadline_why;
            shutdown(v->fd, SHUT_RDWR);
        }
    }
    if (inc->chosen && inc->mf && !inc->stop_idle && multifd_recv_all_joined(inc->mf))
        inc->stop_idle = g_idle_add(stop_listening_idle, inc);
    g_mutex_unlock(&inc->lock);
    return G_SOURCE_CONTINUE;
}

static gboolean on_connection(gint fd, GIOCondition cond, gpointer opaque)
{
    struct incoming *inc = opaque;
    g_autoptr(GError) err = NULL;
    const char *refused = NULL;
    int slot = -1;

    (void)cond;
    int conn = channel_socket_accept(fd, &err);
    if (conn < 0) {
        fprintf(stderr, "tern: incoming migration: %s\n", err->message);
        return G_SOURCE_CONTINUE;
    }
    g_mutex_lock(&inc->lock);
    bool channel = inc->chosen && inc->mf && !inc->cancelled;
    g_mutex_unlock(&inc->lock);
    if (channel) {
        /* A multifd channel, maybe: its thread reads the channel header and
         * drops a stranger's (multifd_recv bounds how many it holds). The
         * port stays open until every channel has joined (the vetting
         * watchdog looks) or the migration ends. */
        multifd_recv_accept(inc->mf, conn);
        return G_SOURCE_CONTINUE;
    }
    struct vetting *v = g_new0(struct vetting, 1);
    v->inc = inc;
    v->fd = conn;
    v->peer = channel_socket_peer_name(conn);
    v->deadline_ns = clock_ns() + (uint64_t)inc->vet_timeout_ms * 1000000;

    g_mutex_lock(&inc->lock);
    struct vetting *oldest = NULL;
    unsigned live = 0;
    for (unsigned i = 0; i < INCOMING_VET_SLOTS; i++) {
        struct vetting *w = inc->vets[i];

        if (!w && slot < 0)
            slot = (int)i;
        /* The oldest silent one goes first: a real source speaks at once. */
        if (w && !w->why) {
            live++;
            /* Bytes waiting count as speaking: its thread may not have run yet. */
            w->spoke = w->spoke || channel_socket_has_input(w->fd);
            if (!oldest || (oldest->spoke && !w->spoke) ||
                (oldest->spoke == w->spoke && w->deadline_ns < oldest->deadline_ns))
                oldest = w;
        }
    }
    if (live >= INCOMING_VET_MAX && slot >= 0 && !inc->cancelled && !inc->chosen) {
        oldest->why = "evicted: a newer connection came while " G_STRINGIFY(
            INCOMING_VET_MAX) " were being vetted";
        shutdown(oldest->fd, SHUT_RDWR);
    }
    if (inc->cancelled)
        refused = "migration cancelled";
    else if (inc->chosen)
        refused = "a source's stream was accepted already";
    else if (slot < 0)
        refused = "too many connections being vetted at once";
    else {
        inc->vets[slot] = v;
        inc->nr_threads++;
    }
    g_mutex_unlock(&inc->lock);

    GThread *t = refused ? NULL : g_thread_try_new("mig-vet", vet_thread, v, &err);
    if (t) {
        g_thread_unref(t); /* it ends on its own; incoming_cleanup() waits for nr_threads */
        return G_SOURCE_CONTINUE;
    }
    if (!refused) {
        g_mutex_lock(&inc->lock);
        inc->vets[slot] = NULL;
        inc->nr_threads--;
        g_mutex_unlock(&inc->lock);
        refused = err->message;
    }
    fprintf(stderr, "tern: incoming migration: dropped connection from %s: %s\n", v->peer, refused);
    close(conn);
    g_free(v->peer);
    g_free(v);
    return G_SOURCE_CONTINUE;
}

/* migrate_cancel (main thread, mig->lock held, the status now cancelling):
 * stop listening and drop every connection; a stream being loaded fails and
 * its loader finishes the cancel. Like a failed incoming migration, a
 * cancelled one ends the process. */
static void incoming_cancel(struct migration *mig)
{
    struct incoming *inc = mig->incoming;

    g_mutex_lock(&inc->lock);
    if (inc->finished) {
        /* This machine's incoming migration is long over: the cancel is
         * for an outgoing one. */
        g_mutex_unlock(&inc->lock);
        return;
    }
    inc->cancelled = true;
    vets_shutdown_locked(inc, "migration cancelled");
    bool loading = inc->chosen;
    if (loading)
        channel_shutdown(inc->ch, "migration cancelled");
    multifd_recv_shutdown(inc->mf, "migration cancelled");
    g_mutex_unlock(&inc->lock);
    stop_listening(inc);
    if (loading || !mig_status_set(&mig->status, MIG_STATUS_CANCELLING, MIG_STATUS_CANCELLED))
        return;
    fprintf(stderr, "tern: incoming migration cancelled\n");
    machine_incoming_failed(mig->m);
}

static void incoming_cleanup(struct migration *mig);

bool incoming_start(struct migration *mig, const char *uri, GError **errp)
{
    struct machine *m = mig->m;

    if (machine_runstate(m) != RUNSTATE_INMIGRATE) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "'-incoming' was not specified on the command line");
        return false;
    }
    if (mig->incoming) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "The incoming migration has already been started");
        return false;
    }
    struct channel_uri parsed;
    if (!channel_uri_parse(uri, &parsed, errp))
        return false;
    bool from_file = parsed.kind == CHANNEL_URI_FILE;
    enum channel_uri_kind kind = parsed.kind;
    channel_uri_clear(&parsed);
    bool cpr;
    if (!migration_take_mode(mig, kind, uri, &cpr, errp))
        return false;
    g_mutex_lock(&mig->lock);
    bool tls = mig->params.tls_creds[0] != 0;
    g_mutex_unlock(&mig->lock);
    /* As QEMU: a file has no peer to do a handshake with. */
    if (tls && from_file) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "TLS is not supported for file: migration: clear tls-creds first "
                    "(migrate_set_parameter tls-creds \"\")");
        return false;
    }

    struct incoming *inc = g_new0(struct incoming, 1);
    inc->mig = mig;
    inc->cpr = cpr;
    inc->listen_fd = -1;
    inc->from_file = from_file;
    multifd_incoming_setup(inc);
    if (from_file) {
        /* A restore: nothing to wait for, load at once. */
        inc->ch = channel_file_open(uri + strlen("file:"), errp);
        if (!inc->ch) {
            g_free(inc);
            return false;
        }
        inc->chosen = true;
    } else {
        inc->listen_fd = channel_socket_listen(uri, errp);
        if (inc->listen_fd < 0) {
            g_free(inc);
            return false;
        }
        /* Tests only: TERN_TEST_VET_TIMEOUT_MS shortens the vetting deadline. */
        const char *t = g_getenv("TERN_TEST_VET_TIMEOUT_MS");
        inc->vet_timeout_ms = t ? (unsigned)g_ascii_strtoull(t, NULL, 10) : 0;
        if (!inc->vet_timeout_ms)
            inc->vet_timeout_ms = INCOMING_VET_TIMEOUT_MS;
        inc->deadline_why = g_strdup_printf("no stream header and VM_CONFIG within %u ms",
                                            inc->vet_timeout_ms);
        inc->watch = g_unix_fd_add(inc->listen_fd, G_IO_IN, on_connection, inc);
        inc->watchdog = g_timeout_add(500, vet_watchdog, inc);
    }
    g_mutex_init(&inc->lock);
    g_cond_init(&inc->idle);
    mig->incoming = inc;
    mig->incoming_cleanup = incoming_cleanup;
    mig->incoming_cancel = incoming_cancel;
    mig->start_ns = clock_ns();
    mig->stats.total = machine_ram(m)->size;
    mig_status_set(&mig->status, MIG_STATUS_NONE, MIG_STATUS_SETUP);
    if (from_file)
        inc->thread = g_thread_new("mig-restore", restore_thread, inc);
    return true;
}

static void incoming_cleanup(struct migration *mig)
{
    struct incoming *inc = mig->incoming;
    if (!inc)
        return;
    stop_listening(inc);
    g_mutex_lock(&inc->lock);
    /* No vetted connection may win from now on (vet_claim() sees (why)). */
    inc->cancelled = true;
    vets_shutdown_locked(inc, "shutting down");
    if (inc->ch)
        channel_shutdown(inc->ch, "shutting down");
    if (inc->stop_idle)
        g_source_remove(inc->stop_idle);
    inc->stop_idle = 0;
    while (inc->nr_threads)
        g_cond_wait(&inc->idle, &inc->lock);
    g_mutex_unlock(&inc->lock);
    if (inc->thread)
        g_thread_join(inc->thread);
    multifd_recv_free(inc->mf);
    if (inc->rp.ch)
        channel_close(inc->rp.ch);
    if (inc->ch)
        channel_close(inc->ch);
    g_free(inc->deadline_why);
    g_cond_clear(&inc->idle);
    g_mutex_clear(&inc->lock);
    g_free(inc);
    mig->incoming = NULL;
}

/* Tests and fuzzing (tests/fuzz/fuzz-stream.c): the loader on (ch) on this
 * thread, as after an accept (or, for a file channel, a restore), without
 * threads, sockets or the machine's finish/failed hooks. */
bool incoming_load_channel(struct migration *mig, struct channel *ch, struct channel *rp_ch,
                           GError **errp)
{
    struct incoming inc = { .mig = mig,
                            .listen_fd = -1,
                            .ch = ch,
                            .rp = { .ch = rp_ch },
                            .from_file = channel_is_file(ch) };
    struct stream_reader r;
    struct stream_order order;
    bool tern_peer = false;

    mig_status_set(&mig->status, MIG_STATUS_NONE, MIG_STATUS_SETUP); /* a fresh (mig) */
    bool ok = stream_open(&inc, ch, &r, &order, &tern_peer, errp) &&
              load_stream(&inc, &r, &order, errp) && rp_send(&inc.rp, MIG_RP_RESUMED, NULL, errp);
    stream_reader_cleanup(&r);
    return ok;
}
