/* multifd.h: guest pages over several connections at once (QEMU's multifd):
 * the channel wire format (docs/migration-stream.md, "Multifd streams"), the
 * sender threads (multifd-send.c) and the receive threads (multifd-recv.c).
 * Private to migration/. */
#ifndef TERN_MIGRATION_MULTIFD_H
#define TERN_MIGRATION_MULTIFD_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/compress.h"

struct channel;
struct mig_stats;
struct guest_ram;
struct ram_counters;
struct migration;

#define MULTIFD_MAX_CHANNELS 16 /* = MIG_MULTIFD_MAX_CHANNELS (tern/migration.h) */
/* Most pages one batch may list (data and zero together); the writer sends
 * MULTIFD_BATCH_PAGES. */
#define MULTIFD_BATCH_MAX_PAGES 1024u
#define MULTIFD_BATCH_PAGES 256u

/* ---- The wire format ---- */

/* The channel header: first 32 octets of every extra connection. */
#define MULTIFD_HELLO_SIZE 32u
#define MULTIFD_MAGIC "TERNMFD" /* with its NUL: 8 octets */
/* A packet header: 32 octets, then the gfn list, then the payload. */
#define MULTIFD_PKT_HDR_SIZE 32u
#define MULTIFD_PKT_BATCH 1u
#define MULTIFD_PKT_SYNC 2u
#define MULTIFD_SYNC_F_FINAL 1u

/* multifd-compression, and a batch's payload encoding, is an enum
 * page_compression (tern/compress.h); on the wire as its value. */
static inline bool multifd_comp_known(uint32_t comp)
{
    return comp <= PAGE_COMPRESSION_ZSTD;
}

/* The body of the main stream's MULTIFD record (16 octets). */
#define MULTIFD_RECORD_SIZE 16u
struct multifd_announce {
    uint32_t channels;    /* 1..MULTIFD_MAX_CHANNELS */
    uint32_t compression; /* enum page_compression */
    uint64_t session;     /* random, never 0: the channels repeat it */
};
void multifd_announce_encode(const struct multifd_announce *a, uint8_t out[MULTIFD_RECORD_SIZE]);
bool multifd_announce_decode(const uint8_t *body, uint32_t len, struct multifd_announce *a,
                             GError **errp);

struct multifd_hello {
    uint64_t session;
    uint32_t index;       /* 0..channels-1 */
    uint32_t nr_channels; /* as announced */
};
void multifd_hello_encode(const struct multifd_hello *h, uint8_t out[MULTIFD_HELLO_SIZE]);
/* Magic, CRC and reserved octets; not the values (the receiver knows those). */
bool multifd_hello_decode(const uint8_t in[MULTIFD_HELLO_SIZE], struct multifd_hello *h,
                          GError **errp);

struct multifd_packet {
    uint32_t type;     /* MULTIFD_PKT_* */
    uint32_t flags;    /* BATCH: payload encoding (enum page_compression); SYNC: MULTIFD_SYNC_F_* */
    uint32_t pass;     /* the pre-copy pass it belongs to */
    uint32_t nr_pages; /* BATCH: pages with data, their gfns first in the list */
    uint32_t nr_zero;  /* BATCH: zero pages, gfns after the data pages' */
    uint32_t payload_len; /* octets after the gfn list */
    uint32_t data_crc;    /* CRC-32 of the pages' data as placed, in list order (0: no CRCs) */
};
/* Header and gfn list: (out) has room for MULTIFD_PKT_HDR_SIZE + 8 * (number
 * of gfns); the header CRC covers both. Returns the octets written. */
size_t multifd_packet_encode(const struct multifd_packet *p, const uint64_t *gfns, uint8_t *out);
/* Check a header's own fields (type, counts, lengths, reserved); the gfn list
 * is checked by multifd_packet_check_gfns() once read. */
bool multifd_packet_decode(const uint8_t in[MULTIFD_PKT_HDR_SIZE], struct multifd_packet *p,
                           GError **errp);
/* (in) is the header followed by its gfn list: the header CRC, and every gfn
 * below (nr_gfns), decoded into (gfns). */
bool multifd_packet_check_gfns(const uint8_t *in, const struct multifd_packet *p, uint64_t nr_gfns,
                               uint64_t *gfns, GError **errp);

/* ---- Statistics (atomic counters; query-migrate reads them) ---- */
struct multifd_counters {
    uint64_t channels;                    /* in use this migration */
    uint64_t bytes[MULTIFD_MAX_CHANNELS]; /* octets on each channel */
    uint64_t raw_bytes;                   /* page data before compression */
    uint64_t comp_bytes;                  /* the same after (compressed batches) */
    uint64_t comp_batches, raw_batches;   /* compressed, sent raw */
    uint64_t placed_bytes;                /* target: page data placed in RAM */
    uint64_t place_ns; /* target: the channels' busy time placing, over their number */
};
void multifd_counters_reset(struct multifd_counters *c);
/* Copy (c) into (st)'s multifd fields. */
void multifd_counters_fill(const struct multifd_counters *c, struct mig_stats *st);

/* ---- Source ---- */
struct multifd_send_config {
    unsigned channels;
    enum page_compression compression;
    int level;
    bool crc; /* the main stream has CRCs: batches carry data_crc */
    uint64_t session;
    struct guest_ram *ram;
    struct channel *main; /* shut down when a channel fails, to wake the sender */
    const uint64_t *max_bandwidth;
    struct ram_counters *counters;
    struct multifd_counters *stats;
};
struct multifd_send;
/* Open the channels (migration_open_channel()), send their headers, start
 * their threads. NULL with (errp) if any channel fails. */
struct multifd_send *multifd_send_start(struct migration *mig, const char *uri,
                                        const struct multifd_send_config *cfg, GError **errp);
/* Hand (gfns)[0..n) (pages to send, read from guest RAM by the channel) to
 * the next free channel; blocks while all are busy. */
bool multifd_send_batch(struct multifd_send *ms, const uint64_t *gfns, unsigned n, uint32_t pass,
                        bool live, GError **errp);
/* Every channel sends SYNC(pass) after its batches; returns once all have. */
bool multifd_send_sync(struct multifd_send *ms, uint32_t pass, bool final, GError **errp);
/* Octets on all channels so far. */
uint64_t multifd_send_bytes(struct multifd_send *ms);
/* Shut every channel down (a failed or cancelled migration); any thread. */
void multifd_send_shutdown(struct multifd_send *ms, const char *why);
/* Join the threads, close the channels. NULL is fine. */
void multifd_send_free(struct multifd_send *ms);

/* ---- Target ---- */
struct multifd_recv;
/* How an accepted connection (fd) becomes a channel: TLS or plain, as the
 * main one did (incoming.c). Called on the connection's own thread (it may
 * run a handshake). NULL with (errp) on failure, (fd) still the caller's. */
struct multifd_recv_open {
    struct channel *(*open)(void *opaque, int fd, GError **errp);
    void *opaque;
};
/* Set up for (channels) channels with (compression) (the target's
 * parameters); every connection opens through (open). */
struct multifd_recv *multifd_recv_new(struct guest_ram *ram, unsigned channels,
                                      uint32_t compression, struct multifd_counters *stats,
                                      const struct multifd_recv_open *open);
/* The main stream's MULTIFD record: refuse a different setup (both sides'
 * values in the message), else open the door to its channels. */
bool multifd_recv_expect(struct multifd_recv *mr, const struct multifd_announce *a, bool crc,
                         GError **errp);
/* An accepted connection (fd, taken over) that may be a channel: a thread
 * reads its header; a stranger's is dropped. */
void multifd_recv_accept(struct multifd_recv *mr, int fd);
/* Whether every channel has joined (the listener may close). */
bool multifd_recv_all_joined(struct multifd_recv *mr);
/* The main stream reached ITERATION_END (pass): wait until every channel has
 * delivered its part of the pass, then let them go on. */
bool multifd_recv_sync(struct multifd_recv *mr, uint32_t pass, bool final, GError **errp);
/* The first channel error, or NULL (g_free it). */
char *multifd_recv_error(struct multifd_recv *mr);
void multifd_recv_shutdown(struct multifd_recv *mr, const char *why);
/* Join the threads, close the connections. NULL is fine. */
void multifd_recv_free(struct multifd_recv *mr);

#endif
