/* migration-internal.h: the per-machine migration object (migration.c) that
 * the outgoing (outgoing.c) and incoming (incoming.c) sides share. Private to migration/. */
#ifndef TERN_MIGRATION_INTERNAL_H
#define TERN_MIGRATION_INTERNAL_H

#include <glib.h>

#include "multifd.h"
#include "ram.h"
#include "tern/channel.h"
#include "tern/policy.h"
#include "tern/migration.h"

struct channel;
struct incoming;

/* Each field has one discipline (docs/architecture.md, "Locks"). */
struct migration {
    struct machine *m; /* fixed */

    /* Atomic only, never under (lock): */
    int status;                 /* enum mig_status: mig_status_get() and mig_status_set() (CAS) */
    uint64_t max_bandwidth;     /* params.max_bandwidth as the sender's batches read it */
    struct ram_counters ram;    /* the sender's (or loader's) counters */
    struct multifd_counters mf; /* multifd channels' counters, either side */

    GMutex lock;               /* guards the fields up to the next comment */
    struct mig_params params;  /* max_bandwidth also stored in (max_bandwidth) */
    precopy_policy_fn *policy; /* when to stop iterating (default precopy_default_policy) */
    void *policy_opaque;
    struct mig_stats stats;
    char *error;        /* why it failed or was cancelled */
    struct channel *ch; /* outgoing forward channel, for cancel */
    bool end_sent;      /* the target holds the complete state: too late to cancel */
    uint64_t start_ns;

    /* Main thread only (the commands and teardown): */
    GThread *thread;  /* outgoing sender */
    bool in_progress; /* a sender thread exists and has not been joined */
    struct incoming *incoming;
    /* Set by incoming_start(): stops and frees (incoming) at teardown, so the
     * object needs no knowledge of the incoming side. */
    void (*incoming_cleanup)(struct migration *mig);
    /* Set by incoming_start(): migrate_cancel on a target, called with (lock)
     * held once the status is cancelling. */
    void (*incoming_cancel)(struct migration *mig);
};

/* Record (msg) as the error of the current migration (first one wins). */
void migration_set_error(struct migration *mig, const char *msg);
/* The mode of the migration about to start, read once: (*cpr) says whether it
 * is cpr-transfer, refused (errp) unless the URI (kind) is unix:. Kept for the
 * whole migration, so a later migrate-set-parameters cannot change it midway. */
bool migration_take_mode(struct migration *mig, enum channel_uri_kind kind, const char *uri,
                         bool *cpr, GError **errp);
/* Open one outgoing connection of the migration to (uri) (the main stream
 * and every multifd channel come through here, so that any wrapping of the
 * connection, e.g. TLS, is added in one place). */
struct channel *migration_open_channel(struct migration *mig, const char *uri, GError **errp);
/* Fill VM_CONFIG from the machine: what both sides must agree on. */
void migration_describe_machine(struct machine *m, struct stream_vm_config *cfg);
/* Load a whole stream from (ch) into (mig)'s machine on this thread (incoming.c; tests, fuzzing). */
bool incoming_load_channel(struct migration *mig, struct channel *ch, struct channel *rp_ch,
                           GError **errp);

#endif
