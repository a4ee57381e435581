/* migration.h: live migration of a machine: the outgoing side's state machine,
 * parameters and statistics, and the incoming side. What the monitors call. */
#ifndef TERN_MIGRATION_H
#define TERN_MIGRATION_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/policy.h"

struct machine;

/* QEMU's MigrationStatus names, the subset Tern uses. */
enum mig_status {
    MIG_STATUS_NONE,
    MIG_STATUS_SETUP,  /* connecting, dirty logging on, VM_CONFIG */
    MIG_STATUS_ACTIVE, /* pre-copy passes, guest running */
    MIG_STATUS_DEVICE, /* guest paused: final pages, CPU and device state */
    MIG_STATUS_COMPLETED,
    MIG_STATUS_FAILED,
    MIG_STATUS_CANCELLING,
    MIG_STATUS_CANCELLED,
    MIG_STATUS__MAX,
};

/* "none", "setup", "active", "device", "completed", "failed", "cancelling", "cancelled". */
const char *mig_status_name(enum mig_status s);
/* Whether (from) -> (to) is a legal transition (the table in state.c). */
bool mig_status_transition_allowed(enum mig_status from, enum mig_status to);
/* Compare-and-swap (*status) from (from) to (to) if legal; emits the MIGRATION
 * event {"status": NAME} on success. False if (*status) was not (from). */
bool mig_status_set(int *status, enum mig_status from, enum mig_status to);
/* (*status), read atomically: a status is only ever read with this and
 * changed with mig_status_set(), never accessed plainly. */
enum mig_status mig_status_get(const int *status);
bool mig_status_is_terminal(enum mig_status s);

/* Longest string parameter, NUL included (kept inline: the struct is copied by value). */
#define MIG_PARAM_STR_MAX 256

/* Tunables (QEMU names in the comments). Defaults in migration_params_default(). */
struct mig_params {
    uint64_t downtime_limit_ms;      /* downtime-limit: target pause (default 300) */
    uint64_t max_bandwidth;          /* max-bandwidth, bytes/s; 0 = unlimited (default) */
    uint32_t compress_level;         /* compress-level: zlib level for pages, 0 = off */
    uint32_t x_passes;               /* x-passes (test only): exactly N live passes, 0 = policy */
    bool x_checksum;                 /* x-checksum: CRC-32 on every record (default on) */
    uint32_t cpu_throttle_initial;   /* cpu-throttle-initial: first throttle step, % (20) */
    uint32_t cpu_throttle_increment; /* cpu-throttle-increment: each further step, % (10) */
    uint32_t max_cpu_throttle;       /* max-cpu-throttle: the ceiling, % (99) */
    bool auto_converge;              /* capability auto-converge: throttle vCPUs that
                                     * dirty memory faster than it can be sent (off) */
    uint32_t mode;                   /* mode: enum mig_mode (normal) */
    /* tls-creds: id of a tls-creds object, "" = off; tls-hostname: the name
     * the target's certificate must carry, "" = the host of the tcp: URI;
     * tls-authz: id of an authz-simple object, "" = none. */
    char tls_creds[MIG_PARAM_STR_MAX];
    char tls_hostname[MIG_PARAM_STR_MAX];
    char tls_authz[MIG_PARAM_STR_MAX];
    bool xbzrle;                  /* capability xbzrle: delta pages sent before (off) */
    uint64_t xbzrle_cache_size;   /* xbzrle-cache-size: bytes of sent pages kept (64 MiB) */
    uint32_t multifd_compression; /* multifd-compression: enum page_compression, also for
                                      * the single stream when compress-level is 0 (none) */
    uint32_t multifd_zlib_level;  /* multifd-zlib-level (1) */
    uint32_t multifd_zstd_level;  /* multifd-zstd-level (1) */
    bool multifd;                 /* capability multifd: pages on several connections */
    uint32_t multifd_channels;    /* multifd-channels (2) */
};

/* QEMU's MigMode, the subset Tern has. */
enum mig_mode {
    MIG_MODE_NORMAL,       /* pages over the stream */
    MIG_MODE_CPR_TRANSFER, /* same host: guest RAM handed over as memfds */
};
void migration_params_default(struct mig_params *p);

#define MIG_MULTIFD_MAX_CHANNELS 16

/* Statistics, named after QEMU's query-migrate fields. Times in ms, rates as said. */
struct mig_stats {
    uint64_t total_time_ms;           /* total-time: start to completion (or now) */
    uint64_t setup_time_ms;           /* setup-time */
    uint64_t downtime_ms;             /* downtime: source pause to RESUMED (completed only) */
    uint64_t expected_downtime_ms;    /* expected-downtime: the policy's estimate */
    uint64_t transferred;             /* ram.transferred: bytes on the wire */
    uint64_t remaining;               /* ram.remaining: dirty bytes still to send */
    uint64_t total;                   /* ram.total: guest RAM bytes */
    uint64_t duplicate;               /* ram.duplicate: zero pages (sent as ranges) */
    uint64_t normal;                  /* ram.normal: pages sent with data */
    uint64_t normal_bytes;            /* ram.normal-bytes */
    uint64_t compressed;              /* pages sent zlib-compressed */
    uint64_t skipped;                 /* never-touched pages, not read, not sent */
    uint64_t dirty_pages_rate;        /* ram.dirty-pages-rate: pages/s, last pass */
    uint64_t dirty_sync_count;        /* ram.dirty-sync-count: dirty-log syncs (passes) */
    double mbps;                      /* ram.mbps: megabits/s while sending */
    uint64_t pages_per_second;        /* ram.pages-per-second */
    uint64_t cpu_throttle_percentage; /* cpu-throttle-percentage: auto-converge's level */
    uint64_t precopy_bytes;           /* ram.precopy-bytes: bytes sent while the guest ran */
    uint64_t downtime_bytes;          /* ram.downtime-bytes: bytes sent while paused */
    /* xbzrle-cache (XBZRLECacheStats), with the xbzrle capability */
    uint64_t xbzrle_bytes;        /* bytes: XBZRLE payload bytes sent */
    uint64_t xbzrle_pages;        /* pages: pages sent as XBZRLE deltas */
    uint64_t xbzrle_cache_miss;   /* cache-miss: pages of pass 2+ not in the cache */
    uint64_t xbzrle_cache_hits;   /* Tern: pages found in the cache */
    uint64_t xbzrle_overflow;     /* overflow: delta too large, sent whole */
    uint64_t xbzrle_cache_memory; /* Tern: bytes the cache holds (pages and tags) */
    /* Multifd (QEMU's ram.multifd-bytes and compression; per channel: Tern's). */
    uint64_t multifd_channels;
    uint64_t multifd_bytes;
    uint64_t multifd_channel_bytes[MIG_MULTIFD_MAX_CHANNELS];
    uint64_t multifd_raw_bytes, multifd_comp_bytes; /* page data before and after */
    uint64_t multifd_comp_batches, multifd_raw_batches;
    uint64_t multifd_placed_bytes, multifd_place_ns; /* target: placement */
};

struct mig_info {
    enum mig_status status;
    struct mig_stats stats;
    char *error_desc; /* failed/cancelled: why (g_free) */
};

/* The migration object of machine (m): status, parameters, statistics, the
 * policy. Created by whoever creates the monitors and handed to the migration
 * commands; the machine knows nothing of it. Free after joining every thread. */
struct migration;
struct migration *migration_new(struct machine *m);
void migration_free(struct migration *mig);

/* Outgoing. Starts the migration thread and returns at once (status setup).
 * Refused while one is running or the VM is not running/paused. */
bool migration_start(struct migration *mig, const char *uri, GError **errp);
/* Cancel the running outgoing migration; the source keeps (or resumes) its guest.
 * Refused once the target holds the complete state (END sent). */
bool migration_cancel(struct migration *mig, GError **errp);
/* Snapshot of the status and statistics (outgoing, or incoming on a target). */
void migration_info(struct migration *mig, struct mig_info *out);
void mig_info_clear(struct mig_info *info);
/* Current parameters; set replaces them all (may be called during a migration:
 * max-bandwidth and downtime-limit take effect at once). */
void migration_get_params(struct migration *mig, struct mig_params *out);
bool migration_set_params(struct migration *mig, const struct mig_params *p, GError **errp);

/* The pre-copy policy of the next migrations (fn with opaque, see policy.h);
 * NULL restores the default, precopy_default_policy. */
void migration_set_policy(struct migration *mig, precopy_policy_fn *policy, void *opaque);

/* Incoming: listen on (uri) (tcp:HOST:PORT, unix:PATH) and load the first
 * connection's stream into the machine (in inmigrate state). On success the
 * guest resumes unless the machine was started with -S; on failure the
 * process exits with status 1 and a message naming the bad record. */
bool incoming_start(struct migration *mig, const char *uri, GError **errp);

#endif
