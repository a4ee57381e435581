/* migration.c: the per-machine migration object and what the commands call
 * on it: status, parameters, statistics, cancel, teardown. The outgoing
 * sender (outgoing.c) and the incoming loader (incoming.c) both work on it. */
#include <string.h>

#include "migration-internal.h"
#include "tern/accel.h"
#include "tern/channel.h"
#include "tern/machine-state.h"
#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/stream.h"
#include "tern/tls-creds.h"
#include "tern/util.h"

/* ---- the per-machine object ---- */

struct migration *migration_new(struct machine *m)
{
    struct migration *mig = g_new0(struct migration, 1);
    mig->m = m;
    g_mutex_init(&mig->lock);
    migration_params_default(&mig->params);
    mig->max_bandwidth = mig->params.max_bandwidth; /* no other thread yet */
    mig->policy = precopy_default_policy;
    return mig;
}

void migration_set_error(struct migration *mig, const char *msg)
{
    g_mutex_lock(&mig->lock);
    if (!mig->error)
        mig->error = g_strdup(msg);
    g_mutex_unlock(&mig->lock);
}

bool migration_take_mode(struct migration *mig, enum channel_uri_kind kind, const char *uri,
                         bool *cpr, GError **errp)
{
    g_mutex_lock(&mig->lock);
    *cpr = mig->params.mode == MIG_MODE_CPR_TRANSFER;
    g_mutex_unlock(&mig->lock);
    if (*cpr && kind != CHANNEL_URI_UNIX) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "migration mode cpr-transfer needs a unix:PATH URI (the guest RAM memfds "
                    "pass over a UNIX socket), not '%s'",
                    uri);
        return false;
    }
    return true;
}

void migration_describe_machine(struct machine *m, struct stream_vm_config *cfg)
{
    struct guest_ram *ram = machine_ram(m);

    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = ram->size;
    cfg->nr_gfns = ram->nr_gfns;
    cfg->nr_vcpus = machine_vcpu_count(m);
    cfg->nr_regions = ram->nr_regions;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        cfg->regions[i].gpa = ram->regions[i].gpa;
        cfg->regions[i].size = ram->regions[i].size;
    }
    accel_cpuid_fingerprint(machine_accel(m), &cfg->cpuid_nr_entries, cfg->cpuid_sha256);
    g_strlcpy(cfg->machine, "tern-pvh-1", sizeof(cfg->machine));
    cfg->nr_devices = machine_device_count(m);
    for (unsigned i = 0; i < cfg->nr_devices; i++)
        g_strlcpy(cfg->devices[i].id, machine_device(m, i)->id, sizeof(cfg->devices[i].id));
}

/* ---- API ---- */

bool migration_cancel(struct migration *mig, GError **errp)
{

    g_mutex_lock(&mig->lock);
    if (mig->end_sent && !mig_status_is_terminal(mig_status_get(&mig->status))) {
        g_mutex_unlock(&mig->lock);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "too late to cancel: the target already holds the complete state");
        return false;
    }
    for (int from = MIG_STATUS_SETUP; from <= MIG_STATUS_DEVICE; from++) {
        if (mig_status_set(&mig->status, from, MIG_STATUS_CANCELLING)) {
            if (!mig->error)
                mig->error = g_strdup("migration cancelled");
            if (mig->ch)
                channel_shutdown(mig->ch, "migration cancelled");
            if (mig->incoming_cancel)
                mig->incoming_cancel(mig);
            break;
        }
    }
    g_mutex_unlock(&mig->lock);
    return true;
}

void migration_info(struct migration *mig, struct mig_info *out)
{

    g_mutex_lock(&mig->lock);
    out->status = mig_status_get(&mig->status);
    out->stats = mig->stats;
    out->error_desc = g_strdup(mig->error);
    if (!mig_status_is_terminal(out->status) && out->status != MIG_STATUS_NONE && mig->start_ns)
        out->stats.total_time_ms = (clock_ns() - mig->start_ns) / 1000000;
    g_mutex_unlock(&mig->lock);
    out->stats.normal = __atomic_load_n(&mig->ram.normal, __ATOMIC_RELAXED);
    out->stats.normal_bytes = __atomic_load_n(&mig->ram.normal_bytes, __ATOMIC_RELAXED);
    out->stats.duplicate = __atomic_load_n(&mig->ram.duplicate, __ATOMIC_RELAXED);
    out->stats.compressed = __atomic_load_n(&mig->ram.compressed, __ATOMIC_RELAXED);
    out->stats.skipped = __atomic_load_n(&mig->ram.skipped, __ATOMIC_RELAXED);
    out->stats.xbzrle_bytes = __atomic_load_n(&mig->ram.xbzrle_bytes, __ATOMIC_RELAXED);
    out->stats.xbzrle_pages = __atomic_load_n(&mig->ram.xbzrle_pages, __ATOMIC_RELAXED);
    out->stats.xbzrle_cache_miss = __atomic_load_n(&mig->ram.xbzrle_cache_miss, __ATOMIC_RELAXED);
    out->stats.xbzrle_cache_hits = __atomic_load_n(&mig->ram.xbzrle_hits, __ATOMIC_RELAXED);
    out->stats.xbzrle_overflow = __atomic_load_n(&mig->ram.xbzrle_overflow, __ATOMIC_RELAXED);
    out->stats.xbzrle_cache_memory = __atomic_load_n(&mig->ram.xbzrle_cache_memory,
                                                     __ATOMIC_RELAXED);
    multifd_counters_fill(&mig->mf, &out->stats);
    if (out->status == MIG_STATUS_ACTIVE || out->status == MIG_STATUS_DEVICE) {
        uint64_t sent = __atomic_load_n(&mig->ram.transferred, __ATOMIC_RELAXED);
        out->stats.transferred = MAX(out->stats.transferred, sent);
        out->stats.remaining = __atomic_load_n(&mig->ram.remaining, __ATOMIC_RELAXED) *
                               GUEST_PAGE_SIZE;
    }
}

void migration_get_params(struct migration *mig, struct mig_params *out)
{
    g_mutex_lock(&mig->lock);
    *out = mig->params;
    g_mutex_unlock(&mig->lock);
}

bool migration_set_params(struct migration *mig, const struct mig_params *p, GError **errp)
{
    g_mutex_lock(&mig->lock);
    /* New tls-creds must suit this side: a VM waiting for an incoming
     * migration is the TLS server, any other the client. */
    if (p->tls_creds[0] && strcmp(p->tls_creds, mig->params.tls_creds) &&
        !tls_creds_lookup(p->tls_creds,
                          machine_runstate(mig->m) == RUNSTATE_INMIGRATE ? TLS_ENDPOINT_SERVER
                                                                         : TLS_ENDPOINT_CLIENT,
                          errp)) {
        g_mutex_unlock(&mig->lock);
        return false;
    }
    mig->params = *p;
    /* The sender picks max-bandwidth up within a batch, reading its own
     * atomic copy without the lock; the rest at its next decision. Stored
     * under the lock so two setters leave both copies agreeing. */
    __atomic_store_n(&mig->max_bandwidth, p->max_bandwidth, __ATOMIC_RELAXED);
    g_mutex_unlock(&mig->lock);
    return true;
}

void migration_set_policy(struct migration *mig, precopy_policy_fn *policy, void *opaque)
{
    g_mutex_lock(&mig->lock);
    mig->policy = policy ? policy : precopy_default_policy;
    mig->policy_opaque = policy ? opaque : NULL;
    g_mutex_unlock(&mig->lock);
}

void migration_free(struct migration *mig)
{
    if (!mig)
        return;
    if (mig->in_progress) {
        migration_cancel(mig, NULL);
        g_thread_join(mig->thread);
    }
    if (mig->incoming_cleanup)
        mig->incoming_cleanup(mig);
    g_free(mig->error);
    g_mutex_clear(&mig->lock);
    g_free(mig);
}
