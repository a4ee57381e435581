/* incoming.c: the target side. Listen, accept one connection, validate and
 * load the stream record by record into a paused machine, and only when END
 * has arrived with everything in place say RESUMED and run. Any failure
 * tells the source (ERROR), and the process exits without ever running a
 * partially loaded guest. */
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "migration-internal.h"
#include "ram.h"
#include "tern/channel.h"
#include "tern/channel-file.h"
#include "tern/machine-state.h"
#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/stream.h"
#include "tern/util.h"

/* How long a failed target keeps draining the source's stream after its
 * ERROR, so that the source reads ERROR rather than a reset: the source stops
 * sending as soon as ERROR arrives, so this is rarely waited out. */
#define INCOMING_LINGER_MS 2000

struct incoming {
    struct migration *mig;
    int listen_fd;
    guint watch;
    GThread *thread;
    struct channel *ch;    /* source -> target */
    struct channel *rp_ch; /* target -> source; NULL when restoring a file */
    struct stream_writer rp;
    bool rp_started;
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
    unsigned mf_routed;      /* connections handed to multifd (main loop) */
};

/* The return path begins with its own header, written with the first message. */
static bool rp_send(struct incoming *inc, uint32_t type, const char *error, GError **errp)
{
    if (!inc->rp_ch)
        return true; /* a file has nobody to tell */
    if (!inc->rp_started) {
        stream_writer_init(&inc->rp, inc->rp_ch, MIG_HDR_F_CRC32);
        if (!stream_write_header(&inc->rp, errp))
            return false;
        inc->rp_started = true;
    }
    bool ok = type == MIG_RP_ERROR ? stream_write_rp_error(&inc->rp, error, errp)
                                   : stream_write_empty(&inc->rp, type, errp);
    return ok && channel_flush(inc->rp_ch, errp);
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
    return rp_send(inc, MIG_RP_READY, NULL, errp);
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

    if (!(inc->stream_flags & MIG_HDR_F_MULTIFD) || inc->mf_announced) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "unexpected MULTIFD record");
        return false;
    }
    if (!multifd_announce_decode(rec->body, rec->length, &a, errp) ||
        !multifd_recv_expect(inc->mf, &a, inc->stream_flags & MIG_HDR_F_CRC32, errp))
        return false;
    inc->mf_announced = true;
    return true;
}

/* An accepted connection after the main one: a multifd channel, maybe (its
 * thread reads the channel header). True while more channels are due. */
static bool multifd_route(struct incoming *inc, int conn)
{
    multifd_recv_accept(inc->mf, conn);
    return ++inc->mf_routed < inc->mf_channels;
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
    inc->mf = multifd_recv_new(machine_ram(mig->m), channels, comp, &mig->mf);
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

static bool load_stream(struct incoming *inc, GError **errp)
{
    struct stream_reader r;
    struct stream_record rec;
    struct stream_order order;
    bool ok = true;

    stream_reader_init(&r, inc->ch, false);
    if (!stream_read_header(&r, errp)) {
        stream_reader_cleanup(&r);
        return false;
    }
    inc->stream_flags = r.flags;
    if (!!(r.flags & MIG_HDR_F_MAPPED_RAM) != inc->from_file) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    inc->from_file
                        ? "not a checkpoint file (a live migration stream: use tern-dump on it)"
                        : "a checkpoint file's stream cannot come over a socket");
        stream_reader_cleanup(&r);
        return false;
    }
    if (!cpr_setup_check(inc, r.flags, errp) || !multifd_setup_check(inc, r.flags, errp)) {
        stream_reader_cleanup(&r);
        return false;
    }
    stream_order_init_flags(&order, r.flags);
    inc->pages = ram_load_new(machine_ram(inc->mig->m));
    while (ok && !inc->done) {
        ok = stream_read_record(&r, &rec, errp) && stream_order_check(&order, &rec, errp);
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
    if (ok && !stream_order_done(&order)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "stream ended early");
        ok = false;
    }
    g_clear_pointer(&inc->pages, ram_load_free);
    stream_reader_cleanup(&r);
    return ok;
}

static gpointer incoming_thread(gpointer opaque)
{
    struct incoming *inc = opaque;
    struct migration *mig = inc->mig;
    g_autoptr(GError) err = NULL;
    uint64_t t0 = clock_ns();

    bool ok = true;
    if (!inc->from_file) {
        inc->rp_ch = channel_return_path(inc->ch, &err);
        ok = inc->rp_ch != NULL;
    }
    ok = ok && load_stream(inc, &err);
    /* RESUMED goes out before the vCPUs run: if the source cannot hear it,
     * it keeps its guest, and this one must not run. */
    ok = ok && rp_send(inc, MIG_RP_RESUMED, NULL, &err);

    g_mutex_lock(&mig->lock);
    mig->stats.total_time_ms = (clock_ns() - t0) / 1000000;
    mig->stats.transferred = channel_read_pos(inc->ch);
    g_mutex_unlock(&mig->lock);

    if (ok) {
        machine_incoming_finish(mig->m);
        mig_status_set(&mig->status, MIG_STATUS_DEVICE, MIG_STATUS_COMPLETED);
        return NULL;
    }
    /* A channel's failure is the cause; the main stream's error its echo. */
    g_autofree char *mf_err = multifd_recv_error(inc->mf);
    multifd_recv_shutdown(inc->mf, "incoming migration failed");
    g_autofree char *msg = g_strdup_printf("incoming migration failed: %s",
                                           mf_err ? mf_err : err->message);
    migration_set_error(mig, msg);
    fprintf(stderr, "tern: %s\n", msg);
    /* The source resumes on that memory once it reads ERROR: let go of it
     * before saying so. */
    if (inc->adopted)
        guest_ram_release(machine_ram(mig->m));
    if (inc->rp_ch) {
        rp_send(inc, MIG_RP_ERROR, msg, NULL);
        channel_linger(inc->ch, INCOMING_LINGER_MS);
    }
    enum mig_status cur = mig_status_get(&mig->status);
    if (!mig_status_is_terminal(cur))
        mig_status_set(&mig->status, cur, MIG_STATUS_FAILED);
    machine_incoming_failed(mig->m);
    return NULL;
}

static gboolean on_connection(gint fd, GIOCondition cond, gpointer opaque)
{
    struct incoming *inc = opaque;
    g_autoptr(GError) err = NULL;
    (void)cond;

    int conn = channel_socket_accept(fd, &err);
    if (conn < 0) {
        fprintf(stderr, "tern: incoming migration: %s\n", err->message);
        return G_SOURCE_CONTINUE;
    }
    bool more;
    if (inc->ch) {
        more = multifd_route(inc, conn);
    } else {
        inc->ch = channel_socket_new(conn, "incoming");
        inc->thread = g_thread_new("mig-incoming", incoming_thread, inc);
        more = inc->mf != NULL; /* the multifd channels come next */
    }
    if (more)
        return G_SOURCE_CONTINUE;
    /* One migration per process: stop listening. */
    close(inc->listen_fd);
    inc->listen_fd = -1;
    inc->watch = 0;
    return G_SOURCE_REMOVE;
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
    } else {
        inc->listen_fd = channel_socket_listen(uri, errp);
        if (inc->listen_fd < 0) {
            g_free(inc);
            return false;
        }
        inc->watch = g_unix_fd_add(inc->listen_fd, G_IO_IN, on_connection, inc);
    }
    mig->incoming = inc;
    mig->incoming_cleanup = incoming_cleanup;
    mig->start_ns = clock_ns();
    mig->stats.total = machine_ram(m)->size;
    mig_status_set(&mig->status, MIG_STATUS_NONE, MIG_STATUS_SETUP);
    if (from_file)
        inc->thread = g_thread_new("mig-restore", incoming_thread, inc);
    return true;
}

static void incoming_cleanup(struct migration *mig)
{
    struct incoming *inc = mig->incoming;
    if (!inc)
        return;
    if (inc->watch)
        g_source_remove(inc->watch);
    if (inc->listen_fd >= 0)
        close(inc->listen_fd);
    if (inc->thread) {
        channel_shutdown(inc->ch, "shutting down");
        g_thread_join(inc->thread);
    }
    multifd_recv_free(inc->mf);
    if (inc->rp_ch)
        channel_close(inc->rp_ch);
    if (inc->ch)
        channel_close(inc->ch);
    g_free(inc);
    mig->incoming = NULL;
}
