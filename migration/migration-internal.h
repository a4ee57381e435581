/* migration-internal.h: the per-machine migration object (migration.c) that
 * the outgoing (outgoing.c) and incoming (incoming.c) sides share. Private to migration/. */
#ifndef TERN_MIGRATION_INTERNAL_H
#define TERN_MIGRATION_INTERNAL_H

#include <glib.h>

#include "ram.h"
#include "tern/policy.h"
#include "tern/migration.h"

struct channel;
struct incoming;

struct migration {
    struct machine *m;
    GMutex lock;                /* everything below but (status) */
    int status;                 /* enum mig_status, changed by mig_status_set() (CAS) */
    struct mig_params params;
    precopy_policy_fn *policy;  /* when to stop iterating (default precopy_default_policy) */
    void *policy_opaque;
    struct mig_stats stats;
    struct ram_counters ram;    /* updated by the sender with atomics */
    char *error;                /* why it failed or was cancelled */
    GThread *thread;            /* outgoing sender */
    struct channel *ch;         /* outgoing forward channel, for cancel */
    bool end_sent;              /* the target holds the complete state: too late to cancel */
    bool in_progress;           /* a sender thread exists and has not been joined */
    uint64_t start_ns;
    struct incoming *incoming;
    /* Set by incoming_start(): stops and frees (incoming) at teardown, so the
     * object needs no knowledge of the incoming side. */
    void (*incoming_cleanup)(struct migration *mig);
};

/* Record (msg) as the error of the current migration (first one wins). */
void migration_set_error(struct migration *mig, const char *msg);
/* Fill VM_CONFIG from the machine: what both sides must agree on. */
void migration_describe_machine(struct machine *m, struct stream_vm_config *cfg);

#endif
