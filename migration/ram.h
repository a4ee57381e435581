/* ram.h: guest RAM in the migration stream: pre-copy passes on the source,
 * page loading on the target. Private to migration/. */
#ifndef TERN_MIGRATION_RAM_H
#define TERN_MIGRATION_RAM_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/compress.h"
#include "tern/stream.h"

struct guest_ram;
struct accel;
struct ram_save;

/* Counters of one source; read by other threads with atomic loads. */
struct ram_counters {
    uint64_t normal;       /* pages sent with data */
    uint64_t normal_bytes; /* their payload bytes (after compression) */
    uint64_t duplicate;    /* zero pages, sent as ranges */
    uint64_t compressed;   /* pages sent zlib-compressed */
    uint64_t skipped;      /* never-touched pages: not read, not sent */
    uint64_t transferred;  /* bytes on the channel so far (updated every batch) */
    uint64_t remaining;    /* pages still to send in this pass (every batch) */
    /* XBZRLE (QEMU's XBZRLECacheStats) */
    uint64_t xbzrle_bytes;        /* delta payload bytes sent */
    uint64_t xbzrle_pages;        /* pages sent as deltas */
    uint64_t xbzrle_cache_miss;   /* pages of pass 2+ not in the cache */
    uint64_t xbzrle_hits;         /* pages found in the cache */
    uint64_t xbzrle_overflow;     /* found, but the delta was too large: sent whole */
    uint64_t xbzrle_cache_memory; /* bytes the cache holds */
};

struct ram_pass_result {
    uint64_t pages;   /* pages handled (data + zero) */
    uint64_t bytes;   /* bytes put on the channel */
    uint64_t busy_ns; /* time spent working, rate-limit sleeps excluded */
    uint64_t duration_ns;
};

/* Whether the guest page at (page) is all zeros (sent as a zero page). */
bool ram_page_is_zero(const void *page);

/* Source. Counters go to (counters). (compress_level) 0 = raw pages.
 * (*max_bandwidth) (bytes/s, 0 = unlimited) is re-read every batch. */
struct ram_save *ram_save_new(struct guest_ram *ram, struct accel *accel, struct stream_writer *w,
                              int compress_level, struct ram_counters *counters,
                              const uint64_t *max_bandwidth);
/* Compress pages sent whole with (alg) at (level) (the zlib of
 * compress_level above is PAGE_COMPRESSION_ZLIB). Call before the first pass. */
void ram_save_set_compression(struct ram_save *rs, enum page_compression alg, int level);
/* XBZRLE: keep up to (cache_size) bytes of sent pages, and send a page sent in
 * an earlier pass as a delta against its copy. Call before the first pass;
 * not with mapped-RAM files. */
bool ram_save_set_xbzrle(struct ram_save *rs, uint64_t cache_size, GError **errp);
/* Dirty logging on; every populated page becomes "to send" (holes never are). */
bool ram_save_setup(struct ram_save *rs, GError **errp);
/* Send every page marked to send, then ITERATION_END (pass number (pass),
 * MIG_ITER_F_FINAL if (final)). (live): vCPUs may write meanwhile. */
bool ram_save_pass(struct ram_save *rs, uint32_t pass, bool live, bool final,
                   struct ram_pass_result *out, GError **errp);
/* Harvest the dirty log and Tern's own writes into the to-send set; the
 * number of pages to send is returned in (pending). */
bool ram_save_sync(struct ram_save *rs, uint64_t *pending, GError **errp);
/* Mapped-RAM file: pages go to their place in (layout) instead of PAGE_DATA
 * records; ITERATION_END records wait for the tail. Call before the first pass. */
void ram_save_set_mapped(struct ram_save *rs, const struct stream_mapped_ram *layout);
/* Multifd: pages go to (mf)'s channels instead of PAGE_DATA and ZERO_PAGES
 * records; each pass ends with a SYNC on every channel. Before the first pass. */
struct multifd_send;
void ram_save_set_multifd(struct ram_save *rs, struct multifd_send *mf);
/* Mapped-RAM file, at the tail: RAM_INDEX (pages holding data, their CRCs),
 * then every pass's ITERATION_END. */
bool ram_save_write_index(struct ram_save *rs, GError **errp);
/* Dirty logging off; frees (rs). */
void ram_save_free(struct ram_save *rs);

/* Target: stores the pages of PAGE_DATA and ZERO_PAGES records as the
 * record table's parse walks them (once, after checking them all). */
struct ram_load;
struct ram_load *ram_load_new(struct guest_ram *ram);
void ram_load_free(struct ram_load *rl);
/* Point (ctx)'s page and range sinks at (rl). */
void ram_load_sinks(struct ram_load *rl, struct stream_parse_ctx *ctx);
/* Store the run of pages the last PAGE_DATA record left pending (they point
 * into its body: call before the next record is read). */
bool ram_load_flush(struct ram_load *rl, GError **errp);
/* Restore from a mapped-RAM file: read every page (idx) lists from the RAM
 * area of (ch) at (layout), check its CRC, store it. Errors name the gfn and
 * its file offset. */
bool ram_load_mapped(struct guest_ram *ram, struct channel *ch,
                     const struct stream_mapped_ram *layout, const struct stream_ram_index *idx,
                     GError **errp);

#endif
