/* outgoing.c: the outgoing side. A sender thread connects, sends VM_CONFIG,
 * runs pre-copy passes until the policy says the rest fits the downtime
 * limit, pauses the guest, sends the rest and the CPU and device state, and
 * gives up its copy only when the target says RESUMED. An error, a cancel or
 * a broken connection before END is out resumes the source guest, and so does
 * the target's ERROR; silence after END leaves it paused (in doubt), because
 * the target may be running it. */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "migration-internal.h"
#include "tern/channel.h"
#include "tern/channel-file.h"
#include "tern/channel-tls.h"
#include "tern/events.h"
#include "tern/accel.h"
#include "tern/machine-state.h"
#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/policy.h"
#include "tern/stream.h"
#include "tern/util.h"

/* How long the source waits for the target's verdict once it has everything. */
#define RESUMED_TIMEOUT_S 60

/* ---- the return path: READY, RESUMED or ERROR from the target ---- */

struct return_path {
    struct channel *ch;  /* target -> source */
    struct channel *fwd; /* shut down when the target gives up */
    GThread *thread;
    GMutex lock; /* guards the fields below */
    GCond cond;
    bool ready, resumed, closed;
    bool target_error; /* the target said ERROR: it will not run */
    uint64_t ready_ns, resumed_ns;
    char *error;
};

static void rp_close(struct return_path *rp, const char *why)
{
    g_mutex_lock(&rp->lock);
    bool resumed = rp->resumed;
    if (!rp->error && !resumed)
        rp->error = g_strdup(why);
    rp->closed = true;
    g_cond_broadcast(&rp->cond);
    g_mutex_unlock(&rp->lock);
    /* Wake the sender at once rather than at its next full socket buffer. */
    if (!resumed)
        channel_shutdown(rp->fwd, why);
}

static gpointer rp_thread(gpointer opaque)
{
    struct return_path *rp = opaque;
    struct stream_reader r;
    struct stream_record rec;
    g_autoptr(GError) err = NULL;

    stream_reader_init(&r, rp->ch, true);
    if (!stream_read_header(&r, &err))
        goto closed;
    while (stream_read_record(&r, &rec, &err)) {
        g_mutex_lock(&rp->lock);
        if (rec.type == MIG_RP_READY) {
            rp->ready = true;
            rp->ready_ns = clock_ns();
        } else if (rec.type == MIG_RP_RESUMED) {
            rp->resumed = true;
            rp->resumed_ns = clock_ns();
        }
        g_cond_broadcast(&rp->cond);
        g_mutex_unlock(&rp->lock);
        if (rec.type == MIG_RP_ERROR) {
            char *msg = NULL;
            g_mutex_lock(&rp->lock);
            rp->target_error = true;
            g_mutex_unlock(&rp->lock);
            g_autofree char *why = stream_parse_rp_error(&rec, &msg, NULL)
                                       ? g_strdup_printf("target: %s", msg)
                                       : g_strdup("target sent a bad ERROR");
            g_free(msg);
            rp_close(rp, why);
            stream_reader_cleanup(&r);
            return NULL;
        }
        if (rec.type == MIG_RP_RESUMED)
            break;
    }
closed:
    rp_close(rp, err ? err->message : "the target closed the connection");
    stream_reader_cleanup(&r);
    return NULL;
}

/* Wait until (*flag) or the return path closed, at most (timeout_s); when
 * (*flag) came, (*at) is the time it did ((when) read under the lock). */
static bool rp_wait(struct return_path *rp, bool *flag, const uint64_t *when, uint64_t *at,
                    int timeout_s, GError **errp)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_s * G_TIME_SPAN_SECOND;
    bool timed_out = false;

    g_mutex_lock(&rp->lock);
    while (!*flag && !rp->closed && !timed_out)
        timed_out = !g_cond_wait_until(&rp->cond, &rp->lock, deadline);
    bool ok = *flag;
    *at = *when;
    if (!ok)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s",
                    rp->error ? rp->error : "no answer from the target");
    g_mutex_unlock(&rp->lock);
    return ok;
}

static struct return_path *rp_start(struct channel *fwd, GError **errp)
{
    struct channel *ch = channel_return_path(fwd, errp);
    if (!ch)
        return NULL;
    struct return_path *rp = g_new0(struct return_path, 1);
    rp->ch = ch;
    rp->fwd = fwd;
    g_mutex_init(&rp->lock);
    g_cond_init(&rp->cond);
    rp->thread = g_thread_new("mig-return", rp_thread, rp);
    return rp;
}

static void rp_stop(struct return_path *rp)
{
    if (!rp)
        return;
    channel_shutdown(rp->ch, "migration over");
    g_thread_join(rp->thread);
    channel_close(rp->ch);
    g_mutex_clear(&rp->lock);
    g_cond_clear(&rp->cond);
    g_free(rp->error);
    g_free(rp);
}

/* ---- the sender ---- */

struct sender {
    struct migration *mig;
    char *uri;
    bool to_file; /* file:PATH: a mapped-RAM checkpoint, no return path */
    struct stream_mapped_ram layout;
    struct channel *ch;
    struct stream_writer w;
    struct return_path *rp;
    struct ram_save *rs;
    bool paused; /* we paused the guest (device phase) */
    bool was_running;
    uint64_t ready_ns; /* when the target said READY, RESUMED */
    uint64_t resumed_ns;
    uint64_t pause_ns;
    uint64_t fixed_cost_ns;
    uint64_t final_written; /* channel bytes after the final pass (state and END follow) */
    bool in_doubt;          /* END went out, then silence: the target may be running */
    bool cpr;               /* mode cpr-transfer: RAM goes as memfds, no pages */
    int peer_pidfd;         /* cpr: the target process, to tell death from silence; -1 */
    struct throttle_state throttle;
    struct multifd_send_config mf_cfg; /* capability multifd: channels > 0 */
    struct multifd_send *mf;
};

static void stats_update(struct migration *mig, void (*fn)(struct mig_stats *, void *), void *arg)
{
    g_mutex_lock(&mig->lock);
    fn(&mig->stats, arg);
    g_mutex_unlock(&mig->lock);
}

/* cpr-transfer: RAM_FDS with the memfds attached, in the head: the target
 * maps them before it says READY, so the mapping's cost (the accelerator
 * drops what it had mapped of the old RAM) falls before the pause. The
 * target only maps them; the guest runs here until the pause. */
static bool cpr_send_ram_fds(struct sender *s, GError **errp)
{
    struct guest_ram *ram = machine_ram(s->mig->m);
    struct stream_ram_fds layout = { .nr_regions = ram->nr_regions };
    int fds[GUEST_RAM_MAX_REGIONS];

    for (unsigned i = 0; i < ram->nr_regions; i++) {
        layout.regions[i].gpa = ram->regions[i].gpa;
        layout.regions[i].size = ram->regions[i].size;
        fds[i] = ram->regions[i].memfd;
    }
    return channel_send_fds(s->ch, fds, ram->nr_regions, errp) &&
           stream_write_ram_fds(&s->w, &layout, errp);
}

/* Multifd: the MULTIFD record announces the channels, their compression and
 * the session id they will repeat. */
static bool multifd_write_record(struct sender *s, GError **errp)
{
    struct multifd_announce a = { .channels = s->mf_cfg.channels,
                                  .compression = s->mf_cfg.compression,
                                  .session = s->mf_cfg.session };
    uint8_t body[MULTIFD_RECORD_SIZE];
    struct stream_part part = { .data = body, .len = sizeof(body), .mode = STREAM_PART_COPY };

    multifd_announce_encode(&a, body);
    return stream_write_record(&s->w, MIG_REC_MULTIFD, &part, 1, errp);
}

/* Multifd, for a tcp: or unix: stream (a file or a hand-over keeps one
 * stream): what the parameters ask for, read once. */
static void multifd_configure(struct sender *s)
{
    struct migration *mig = s->mig;

    multifd_counters_reset(&mig->mf); /* an earlier migration's, either side */
    if (s->to_file || s->cpr)
        return;
    g_mutex_lock(&mig->lock);
    const struct mig_params *p = &mig->params;
    if (p->multifd) {
        s->mf_cfg.channels = p->multifd_channels;
        s->mf_cfg.compression = p->multifd_compression;
        s->mf_cfg.level = p->multifd_compression == PAGE_COMPRESSION_ZLIB
                              ? (int)p->multifd_zlib_level
                              : (int)p->multifd_zstd_level;
        s->mf_cfg.crc = p->x_checksum;
    }
    g_mutex_unlock(&mig->lock);
    s->mf_cfg.session = ((uint64_t)g_random_int() << 32 | g_random_int()) | 1;
    s->mf_cfg.ram = machine_ram(mig->m);
    s->mf_cfg.max_bandwidth = &mig->max_bandwidth;
    s->mf_cfg.counters = &mig->ram;
    s->mf_cfg.stats = &mig->mf;
}

/* The sequential head of the stream: header, VM_CONFIG, STATIC_END (and for a
 * file MAPPED_RAM, the layout of the RAM area). */
static bool write_head(struct sender *s, bool crc, GError **errp)
{
    struct stream_vm_config cfg;
    uint32_t flags = (crc ? MIG_HDR_F_CRC32 : 0) | (s->to_file ? MIG_HDR_F_MAPPED_RAM : 0) |
                     (s->cpr ? MIG_HDR_F_RAM_FD : 0);

    migration_describe_machine(s->mig->m, &cfg);
    if (s->mf_cfg.channels)
        flags |= MIG_HDR_F_MULTIFD;
    stream_writer_init(&s->w, s->ch, flags);
    if (!stream_write_header(&s->w, errp) || !stream_write_vm_config(&s->w, &cfg, errp) ||
        (s->mf_cfg.channels && !multifd_write_record(s, errp)) ||
        (s->cpr && !cpr_send_ram_fds(s, errp)) ||
        !stream_write_empty(&s->w, MIG_REC_STATIC_END, errp))
        return false;
    if (s->to_file && (!stream_mapped_ram_plan(&s->w, cfg.nr_gfns, &s->layout, errp) ||
                       !stream_write_mapped_ram(&s->w, &s->layout, errp)))
        return false;
    return channel_flush(s->ch, errp);
}

/* One outgoing connection to (uri): TLS when tls-creds is set (the handshake
 * runs here, on the calling sender thread, before anything is sent). */
struct channel *migration_open_channel(struct migration *mig, const char *uri, GError **errp)
{
    struct mig_params p;
    struct channel_uri u = { 0 };

    int fd = channel_socket_connect(uri, errp);
    if (fd < 0)
        return NULL;
    migration_get_params(mig, &p);
    if (!p.tls_creds[0])
        return channel_socket_new(fd, uri);
    struct tls_creds *creds = tls_creds_lookup(p.tls_creds, TLS_ENDPOINT_CLIENT, errp);
    if (!creds) {
        close(fd);
        return NULL;
    }
    /* The name the target's certificate must carry: tls-hostname, else the URI's host. */
    if (!p.tls_hostname[0] && channel_uri_parse(uri, &u, NULL) && u.host)
        g_strlcpy(p.tls_hostname, u.host, sizeof(p.tls_hostname));
    channel_uri_clear(&u);
    struct channel *ch = channel_tls_new_client(fd, creds, p.tls_hostname, uri, errp);
    if (!ch)
        close(fd);
    return ch;
}

static bool connect_and_configure(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;

    if (s->to_file)
        s->ch = channel_file_create(s->uri + strlen("file:"), errp);
    else
        s->ch = migration_open_channel(mig, s->uri, errp);
    if (!s->ch)
        return false;
    g_mutex_lock(&mig->lock);
    mig->ch = s->ch;
    bool crc = mig->params.x_checksum;
    /* A cancel that came while we connected found no channel: look again.
     * Under the lock, so a cancel either sees (ch) or is seen here. */
    bool cancelled = mig_status_get(&mig->status) == MIG_STATUS_CANCELLING;
    g_mutex_unlock(&mig->lock);
    if (cancelled)
        channel_shutdown(s->ch, "migration cancelled");

    if (s->to_file) {
        /* No target to answer: the pause costs the tail and an fsync. */
        s->fixed_cost_ns = precopy_fixed_cost_ns(0, true);
        return write_head(s, crc, errp);
    }
    s->rp = rp_start(s->ch, errp);
    if (!s->rp)
        return false;
    uint64_t t0 = clock_ns();
    if (!write_head(s, crc, errp))
        return false;
    /* The target checks the configuration before any page is sent. */
    if (!rp_wait(s->rp, &s->rp->ready, &s->rp->ready_ns, &s->ready_ns, RESUMED_TIMEOUT_S, errp))
        return false;
    s->fixed_cost_ns = precopy_fixed_cost_ns(s->ready_ns - t0, false);
    return true;
}

struct pass_stats {
    struct ram_pass_result res;
    uint64_t pending;
    double bandwidth, dirty_rate;
    uint64_t expected_ns;
    uint64_t transferred;
    unsigned throttle;
};

static void apply_pass_stats(struct mig_stats *st, void *arg)
{
    const struct pass_stats *p = arg;
    st->dirty_sync_count++;
    st->remaining = p->pending * GUEST_PAGE_SIZE;
    st->transferred = p->transferred;
    st->precopy_bytes = p->transferred;
    st->dirty_pages_rate = (uint64_t)(p->dirty_rate / GUEST_PAGE_SIZE);
    /* What the user sees is the throughput achieved, rate limit included; the
     * policy uses the busy bandwidth (the pause is not rate limited). */
    st->mbps = p->res.duration_ns ? p->res.bytes * 8e3 / p->res.duration_ns : 0;
    st->pages_per_second = p->res.duration_ns ? p->res.pages * 1000000000ULL / p->res.duration_ns
                                              : 0;
    st->expected_downtime_ms = p->expected_ns == UINT64_MAX ? 0 : p->expected_ns / 1000000;
    st->cpu_throttle_percentage = p->throttle;
}

static void emit_pass(uint32_t pass)
{
    JsonObject *ev = json_object_new();
    json_object_set_int_member(ev, "pass", pass);
    event_emit("MIGRATION_PASS", ev);
}

/* One live pass for precopy_run_passes(): send, sync, account, and hand
 * the policy its inputs in (*out). */
static bool live_pass(void *opaque, uint32_t pass, struct precopy_stats *out, GError **errp)
{
    struct sender *s = opaque;
    struct migration *mig = s->mig;

    struct pass_stats p = { 0 };
    if (!ram_save_pass(s->rs, pass, true, false, &p.res, errp))
        return false;
    if (!ram_save_sync(s->rs, &p.pending, errp))
        return false;
    emit_pass(pass);

    g_mutex_lock(&mig->lock);
    struct precopy_stats ps = {
        .pass = pass,
        .remaining_bytes = p.pending * GUEST_PAGE_SIZE,
        .bandwidth = p.res.busy_ns ? p.res.bytes * 1e9 / p.res.busy_ns : 0,
        .fixed_cost_ns = s->fixed_cost_ns,
        .downtime_limit_ns = mig->params.downtime_limit_ms * 1000000ULL,
        .forced_passes = mig->params.x_passes,
        .dirty_rate = p.res.duration_ns ? p.pending * GUEST_PAGE_SIZE * 1e9 / p.res.duration_ns : 0,
    };
    struct mig_params params = mig->params;
    g_mutex_unlock(&mig->lock);

    if (params.auto_converge) {
        unsigned before = s->throttle.percent;
        unsigned pct = precopy_throttle_step(&s->throttle, ps.remaining_bytes, p.res.bytes,
                                             params.cpu_throttle_initial,
                                             params.cpu_throttle_increment,
                                             params.max_cpu_throttle);
        if (pct != before)
            machine_set_throttle(mig->m, pct);
    }
    p.throttle = s->throttle.percent;
    p.bandwidth = ps.bandwidth;
    p.dirty_rate = ps.dirty_rate;
    p.expected_ns = precopy_expected_downtime_ns(&ps);
    p.transferred = __atomic_load_n(&mig->ram.transferred, __ATOMIC_RELAXED);
    stats_update(mig, apply_pass_stats, &p);
    *out = ps;
    return channel_check(s->ch, errp);
}

static bool live_passes(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;
    uint32_t passes;

    g_mutex_lock(&mig->lock);
    precopy_policy_fn *policy = mig->policy;
    void *policy_opaque = mig->policy_opaque;
    g_mutex_unlock(&mig->lock);
    return precopy_run_passes(policy, policy_opaque, live_pass, s, &passes, errp);
}

static bool send_state(struct sender *s, GError **errp)
{
    struct machine *m = s->mig->m;
    size_t len;

    for (unsigned i = 0; i < machine_vcpu_count(m); i++) {
        g_autofree void *fdt = machine_save_vcpu(m, i, &len, errp);
        if (!fdt || !stream_write_vcpu_state(&s->w, i, fdt, errp))
            return false;
    }
    g_autofree void *vm = machine_save_vm(m, &len, errp);
    if (!vm || !stream_write_vm_state(&s->w, vm, errp))
        return false;
    for (unsigned i = 0; i < machine_device_count(m); i++) {
        g_autofree void *fdt = machine_save_device(m, i, &len, errp);
        if (!fdt || !stream_write_device_state(&s->w, machine_device(m, i)->id, 0, fdt, errp))
            return false;
    }
    return true;
}

/* Past this the target has everything and may run: no more cancelling. */
static bool commit_end(struct migration *mig, GError **errp)
{
    g_mutex_lock(&mig->lock);
    bool cancelled = mig_status_get(&mig->status) == MIG_STATUS_CANCELLING;
    if (!cancelled)
        mig->end_sent = true;
    g_mutex_unlock(&mig->lock);
    if (cancelled)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "migration cancelled");
    return !cancelled;
}

static void apply_final_stats(struct mig_stats *st, void *arg)
{
    struct sender *s = arg;
    uint64_t now = clock_ns();
    /* The guest is back in business when the target resumed it, or, for a
     * checkpoint, when the file is safely on disk. */
    uint64_t resumed = s->rp ? s->resumed_ns : now;
    st->transferred = __atomic_load_n(&s->mig->ram.transferred, __ATOMIC_RELAXED) +
                      (channel_bytes_written(s->ch) - s->final_written);
    st->downtime_bytes = st->transferred - MIN(st->precopy_bytes, st->transferred);
    st->remaining = 0;
    st->downtime_ms = (resumed - s->pause_ns) / 1000000;
    st->total_time_ms = (now - s->mig->start_ns) / 1000000;
}

/* The tail of a checkpoint: the RAM index, pass records, state, END; then
 * the file is made durable and takes its name. */
static bool finish_file(struct sender *s, GError **errp)
{
    return channel_file_seek(s->ch, s->layout.tail_offset, errp) &&
           ram_save_write_index(s->rs, errp) && send_state(s, errp) && commit_end(s->mig, errp) &&
           stream_write_empty(&s->w, MIG_REC_END, errp) && channel_flush(s->ch, errp) &&
           channel_file_commit(s->ch, errp);
}

/* cpr-transfer, after END and silence: the target is on this host, so its
 * death can be seen, unlike a network peer's. A target that has exited does
 * not run the guest, so the source may resume it. A live or unknown one: in
 * doubt as usual. */
static bool cpr_target_gone(struct sender *s)
{
    struct pollfd pfd = { .fd = s->peer_pidfd, .events = POLLIN };

    if (s->peer_pidfd < 0)
        return false;
    /* The socket closes early in the exit; the pidfd says so a moment later. */
    return poll(&pfd, 1, 2000) == 1 && (pfd.revents & POLLIN);
}

/* END has gone out but neither RESUMED nor ERROR came back. The target may
 * have died before it read END, or it may be running with its RESUMED lost on
 * the way: nothing here can tell the two apart. Resuming could leave the guest
 * running twice, the one outcome that cannot be undone, so this copy stays
 * paused and says why; `cont` resumes it once the target is known not to run. */
static bool lost_after_end(struct sender *s, GError **errp)
{
    g_mutex_lock(&s->rp->lock);
    bool refused = s->rp->target_error;
    g_mutex_unlock(&s->rp->lock);
    if (refused)
        return false; /* the target said ERROR: it will not run; resume here */
    if (s->cpr && cpr_target_gone(s)) {
        /* The target process has exited: it cannot be running the guest. */
        g_prefix_error(errp, "the target process exited before it resumed the guest: ");
        return false;
    }
    s->in_doubt = true;
    g_autofree char *why = g_strdup((*errp)->message);
    g_clear_error(errp);
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                "lost contact with the target after it was sent the complete state (%s): "
                "it may be running the guest, so this copy stays paused; 'cont' resumes it "
                "if the target is not running",
                why);
    return false;
}

/* Write END. If a failure comes with END not wholly out, the target cannot
 * have a complete stream and will not run: plain failure. If all of END went
 * out and only then an error arrived, the target may run: in doubt. */
static bool send_end(struct sender *s, GError **errp)
{
    uint64_t before = channel_write_pos(s->ch);
    bool put = stream_write_empty(&s->w, MIG_REC_END, errp);
    uint64_t end = channel_write_pos(s->ch);

    if (put && channel_flush(s->ch, errp))
        return true;
    if (end > before && channel_bytes_written(s->ch) >= end)
        return lost_after_end(s, errp);
    return false;
}

static void apply_cpr_stats(struct mig_stats *st, void *arg)
{
    struct sender *s = arg;
    uint64_t now = clock_ns();

    /* No RAM crossed the socket: only the memfds and the CPU and device state. */
    st->transferred = 0;
    st->precopy_bytes = 0;
    st->downtime_bytes = 0;
    st->remaining = 0;
    st->downtime_ms = (s->resumed_ns - s->pause_ns) / 1000000;
    st->total_time_ms = (now - s->mig->start_ns) / 1000000;
}

/* The pause: stop the vCPUs (remembering whether they ran, to resume them on
 * failure) and enter the device phase, unless a cancel came first. */
static bool pause_guest(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;

    machine_migration_pause(mig->m, &s->was_running);
    s->paused = true;
    s->pause_ns = clock_ns();
    if (!mig_status_set(&mig->status, MIG_STATUS_ACTIVE, MIG_STATUS_DEVICE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "migration cancelled");
        return false;
    }
    return true;
}

/* cpr-transfer, once the target has mapped the memfds (READY): pause, send
 * the state and END, and once the target runs the guest on that memory, let
 * go of it for good. No dirty logging and no pages: nothing in the pause
 * depends on the RAM size. */
static bool cpr_hand_over(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;
    struct guest_ram *ram = machine_ram(mig->m);

    g_mutex_lock(&mig->lock);
    mig->stats.setup_time_ms = (clock_ns() - mig->start_ns) / 1000000;
    g_mutex_unlock(&mig->lock);
    if (!mig_status_set(&mig->status, MIG_STATUS_SETUP, MIG_STATUS_ACTIVE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "migration cancelled");
        return false;
    }
    if (!pause_guest(s, errp))
        return false;
    if (!send_state(s, errp) || !commit_end(mig, errp) || !send_end(s, errp))
        return false;
    if (!rp_wait(s->rp, &s->rp->resumed, &s->rp->resumed_ns, &s->resumed_ns, RESUMED_TIMEOUT_S,
                 errp))
        return lost_after_end(s, errp);
    /* The target runs the guest on this memory now: this process must never
     * read or write it again (one runner at a time). */
    guest_ram_release(ram);
    stats_update(mig, apply_cpr_stats, s);
    return true;
}

static bool stop_and_copy(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;
    struct ram_pass_result res;
    uint64_t pending;

    if (!pause_guest(s, errp))
        return false;
    if (!ram_save_sync(s->rs, &pending, errp))
        return false;
    g_mutex_lock(&mig->lock);
    uint32_t pass = ++mig->stats.dirty_sync_count;
    g_mutex_unlock(&mig->lock);
    emit_pass(pass);
    if (!ram_save_pass(s->rs, pass, false, true, &res, errp))
        return false;
    s->final_written = channel_bytes_written(s->ch);
    if (s->to_file) {
        if (!finish_file(s, errp))
            return false;
    } else if (!send_state(s, errp) || !commit_end(mig, errp)) {
        return false;
    } else if (!send_end(s, errp)) {
        return false;
    } else if (!rp_wait(s->rp, &s->rp->resumed, &s->rp->resumed_ns, &s->resumed_ns,
                        RESUMED_TIMEOUT_S, errp)) {
        return lost_after_end(s, errp);
    }
    stats_update(mig, apply_final_stats, s);
    return true;
}

static bool run(struct sender *s, GError **errp)
{
    struct migration *mig = s->mig;

    if (s->cpr) {
        if (!connect_and_configure(s, errp))
            return false;
        s->peer_pidfd = channel_socket_peer_pidfd(s->ch);
        return cpr_hand_over(s, errp);
    }
    multifd_configure(s);
    if (!connect_and_configure(s, errp))
        return false;
    if (s->mf_cfg.channels) {
        /* After READY: the target has accepted the MULTIFD record's session. */
        s->mf_cfg.main = s->ch;
        s->mf = multifd_send_start(mig, s->uri, &s->mf_cfg, errp);
        if (!s->mf)
            return false;
    }
    g_mutex_lock(&mig->lock);
    struct mig_params p = mig->params;
    g_mutex_unlock(&mig->lock);
    s->rs = ram_save_new(machine_ram(mig->m), machine_accel(mig->m), &s->w, (int)p.compress_level,
                         &mig->ram, &mig->max_bandwidth);
    /* compress-level (zlib) first, as before; else multifd-compression. */
    if (!p.compress_level && p.multifd_compression != PAGE_COMPRESSION_NONE)
        ram_save_set_compression(s->rs, p.multifd_compression,
                                 p.multifd_compression == PAGE_COMPRESSION_ZSTD
                                     ? (int)p.multifd_zstd_level
                                     : (int)p.multifd_zlib_level);
    if (s->to_file)
        ram_save_set_mapped(s->rs, &s->layout);
    else if (p.xbzrle && !ram_save_set_xbzrle(s->rs, p.xbzrle_cache_size, errp))
        return false;
    if (s->mf)
        ram_save_set_multifd(s->rs, s->mf);
    if (!ram_save_setup(s->rs, errp))
        return false;
    g_mutex_lock(&mig->lock);
    mig->stats.setup_time_ms = (clock_ns() - mig->start_ns) / 1000000;
    g_mutex_unlock(&mig->lock);
    if (!mig_status_set(&mig->status, MIG_STATUS_SETUP, MIG_STATUS_ACTIVE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "migration cancelled");
        return false;
    }
    return live_passes(s, errp) && stop_and_copy(s, errp);
}

static gpointer sender_thread(gpointer opaque)
{
    struct sender *s = opaque;
    struct migration *mig = s->mig;
    g_autoptr(GError) err = NULL;
    bool ok = run(s, &err);

    if (!ok) {
        migration_set_error(mig, err ? err->message : "migration failed");
        /* Make sure the target sees the end too, and never a complete stream. */
        if (s->ch)
            channel_shutdown(s->ch, err ? err->message : "migration failed");
        multifd_send_shutdown(s->mf, err ? err->message : "migration failed");
    }
    rp_stop(s->rp);
    ram_save_free(s->rs);
    multifd_send_free(s->mf);
    if (s->throttle.percent)
        machine_set_throttle(mig->m, 0);
    if (s->paused)
        machine_migration_finish(mig->m, ok, s->was_running && !s->in_doubt);

    g_mutex_lock(&mig->lock);
    mig->ch = NULL;
    mig->stats.total_time_ms = (clock_ns() - mig->start_ns) / 1000000;
    g_autofree char *why = g_strdup(mig->error);
    g_mutex_unlock(&mig->lock);
    if (s->ch)
        channel_close(s->ch);

    /* The sender holds the status from here on; a cancel may have moved it
     * to cancelling meanwhile, nothing else. */
    enum mig_status cur = mig_status_get(&mig->status);
    if (ok)
        mig_status_set(&mig->status, MIG_STATUS_DEVICE, MIG_STATUS_COMPLETED);
    else if (cur == MIG_STATUS_CANCELLING)
        mig_status_set(&mig->status, MIG_STATUS_CANCELLING, MIG_STATUS_CANCELLED);
    else
        mig_status_set(&mig->status, cur, MIG_STATUS_FAILED);
    if (!ok)
        fprintf(stderr, "tern: migration %s: %s\n",
                cur == MIG_STATUS_CANCELLING ? "cancelled" : "failed", why);
    if (s->peer_pidfd >= 0)
        close(s->peer_pidfd);
    g_free(s->uri);
    g_free(s);
    return NULL;
}

/* Refuse any migration once the guest RAM has been handed over. */
static bool ram_still_ours(struct migration *mig, GError **errp)
{
    if (guest_ram_released(machine_ram(mig->m))) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "this VM's guest RAM was handed over to another process (cpr-transfer): "
                    "it cannot migrate again from here");
        return false;
    }
    return true;
}

/* The counters are atomic only: zeroed one by one, never by memset. */
static void ram_counters_reset(struct ram_counters *c)
{
    _Static_assert(sizeof(*c) == 13 * sizeof(uint64_t), "a counter is missing here");
    __atomic_store_n(&c->normal, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->normal_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->duplicate, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->compressed, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->skipped, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->transferred, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->remaining, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_pages, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_cache_miss, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_hits, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_overflow, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->xbzrle_cache_memory, 0, __ATOMIC_RELAXED);
}

static void join_finished(struct migration *mig)
{
    if (mig->in_progress && mig_status_is_terminal(mig_status_get(&mig->status))) {
        g_thread_join(mig->thread);
        mig->thread = NULL;
        mig->in_progress = false;
    }
}

bool migration_start(struct migration *mig, const char *uri, GError **errp)
{
    struct machine *m = mig->m;
    enum runstate rs = machine_runstate(m);

    join_finished(mig);
    enum mig_status cur = mig_status_get(&mig->status);
    /* A VM that arrived by migration may leave again once it has arrived. */
    bool incoming_busy = mig->incoming && !mig_status_is_terminal(cur);
    if (mig->in_progress || incoming_busy) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "There's a migration process in progress");
        return false;
    }
    if (rs != RUNSTATE_RUNNING && rs != RUNSTATE_PAUSED && rs != RUNSTATE_POSTMIGRATE) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "cannot migrate a VM in state %s",
                    runstate_name(rs));
        return false;
    }
    struct channel_uri parsed;
    if (!channel_uri_parse(uri, &parsed, errp))
        return false;
    enum channel_uri_kind parsed_kind = parsed.kind;
    channel_uri_clear(&parsed);
    bool cpr;
    if (!ram_still_ours(mig, errp) || !migration_take_mode(mig, parsed_kind, uri, &cpr, errp))
        return false;
    g_mutex_lock(&mig->lock);
    bool tls = mig->params.tls_creds[0] != 0;
    bool multifd_xbzrle = mig->params.multifd && mig->params.xbzrle;
    g_mutex_unlock(&mig->lock);
    /* QEMU's rule: XBZRLE lives on the single stream's page path. */
    if (multifd_xbzrle && parsed_kind != CHANNEL_URI_FILE && !cpr) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "Multifd is not compatible with xbzrle: turn one of the capabilities off");
        return false;
    }
    /* As QEMU: a file has no peer to do a handshake with. */
    if (tls && parsed_kind == CHANNEL_URI_FILE) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "TLS is not supported for file: migration: clear tls-creds first "
                    "(migrate_set_parameter tls-creds \"\")");
        return false;
    }
    /* The memfds travel beside the bytes (SCM_RIGHTS), which TLS cannot carry. */
    if (tls && cpr) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "mode cpr-transfer stays on this host and does not use TLS: clear "
                    "tls-creds first (migrate_set_parameter tls-creds \"\")");
        return false;
    }
    if (!mig_status_set(&mig->status, cur, MIG_STATUS_SETUP)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "cannot start a migration from %s",
                    mig_status_name(mig_status_get(&mig->status)));
        return false;
    }
    ram_counters_reset(&mig->ram);
    g_mutex_lock(&mig->lock);
    g_clear_pointer(&mig->error, g_free);
    memset(&mig->stats, 0, sizeof(mig->stats));
    mig->stats.total = machine_ram(m)->size;
    mig->end_sent = false;
    mig->start_ns = clock_ns();
    g_mutex_unlock(&mig->lock);

    struct sender *s = g_new0(struct sender, 1);
    s->mig = mig;
    s->uri = g_strdup(uri);
    s->to_file = parsed_kind == CHANNEL_URI_FILE;
    s->peer_pidfd = -1;
    s->cpr = cpr;
    mig->in_progress = true;
    mig->thread = g_thread_new("migration", sender_thread, s);
    return true;
}
