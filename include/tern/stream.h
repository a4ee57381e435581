/* stream.h: the migration stream v1: header and record writer, bounded validating reader, body codecs. */
#ifndef TERN_STREAM_H
#define TERN_STREAM_H

/*
 * Format: docs/migration-stream.md; wire layout: tern/stream-format.h.
 * Writing: stream_writer_init(), stream_write_header(), then records; each
 * call puts one whole record on the channel (not flushed: call channel_flush()
 * at the end of a pass and before freeing anything passed by reference).
 * Reading: stream_reader_init(), stream_read_header(), then stream_read_record()
 * in a loop; check the order with stream_order_check() and decode bodies with
 * stream_record_parse() (any type, through its descriptor) or the
 * stream_parse_*() helpers, which validate everything before returning data
 * or calling back. Every error names the record (type, index, offset).
 * Record types: one descriptor each, in one table (migration/stream.c).
 */
#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/channel.h"
#include "tern/stream-format.h"

/* ---- Writing ---- */

struct stream_writer {
    struct channel *ch;
    uint32_t flags;   /* MIG_HDR_F_* */
    uint64_t records; /* records written */
    /* The record being written (stream_record_begin() .. _end()). */
    bool in_record;
    uint32_t cur_type;
    uint32_t cur_length;
    uint64_t cur_done;
    uint32_t cur_crc;
};

/* How a body part reaches the channel. */
enum stream_part_mode {
    STREAM_PART_COPY, /* copied now; the caller may reuse the memory at once */
    STREAM_PART_REF,  /* by reference: unchanged and valid until channel_flush() */
    STREAM_PART_LIVE, /* may change under us (guest RAM, vCPUs running): by
                         * reference without CRCs; copied while computing the CRC
                         * when the stream has CRCs, so the CRC matches the bytes sent */
};

struct stream_part {
    const void *data;
    size_t len;
    enum stream_part_mode mode;
};

/* Prepare (w) to write to (ch) with header flags (flags) (MIG_HDR_F_*). */
void stream_writer_init(struct stream_writer *w, struct channel *ch, uint32_t flags);
/* Put the image header. */
bool stream_write_header(struct stream_writer *w, GError **errp);
/* Put one record of (type) whose body is (parts)[0..nparts) in order: header,
 * body, padding and CRC trailer. A body over MIG_REC_LENGTH_MAX is refused. */
bool stream_write_record(struct stream_writer *w, uint32_t type, const struct stream_part *parts,
                         unsigned nparts, GError **errp);
/* The same in steps, for bodies produced piecewise: begin with the exact body
 * (length), put exactly (length) bytes, end. */
bool stream_record_begin(struct stream_writer *w, uint32_t type, uint32_t length, GError **errp);
void stream_record_put(struct stream_writer *w, const void *data, size_t len,
                       enum stream_part_mode mode);
bool stream_record_end(struct stream_writer *w, GError **errp);

/* A record with an empty body: STATIC_END, END, RP_READY, RP_RESUMED. */
bool stream_write_empty(struct stream_writer *w, uint32_t type, GError **errp);

/* ---- Reading ---- */

struct stream_reader {
    struct channel *ch;
    uint64_t nr_gfns;    /* the VM's frames once known (0: not yet): tightens per-VM
                          * maxima (RAM_INDEX), see stream_record_max_length() */
    bool return_path;    /* expects return-path types (MIG_RP_*) */
    uint32_t flags;      /* from the header */
    uint32_t page_shift; /* from the header */
    uint64_t records;    /* records read */
    uint8_t *buf;        /* body buffer, grown as the bytes arrive (never ahead of them) */
    size_t buf_size;
    uint64_t pos_base; /* stream offset = pos_base + channel_read_pos(ch) */
};

struct stream_record {
    uint32_t type;
    uint32_t length;     /* body bytes */
    const uint8_t *body; /* owned by the reader, valid until the next read */
    uint64_t index;      /* 0 for the first record after the header */
    uint64_t offset;     /* stream offset of the record header */
    bool skip;           /* unknown optional record: CRC-checked, to be ignored */
};

/* Prepare (r) to read from (ch); (return_path): the target-to-source direction. */
void stream_reader_init(struct stream_reader *r, struct channel *ch, bool return_path);
/* Free the body buffer. */
void stream_reader_cleanup(struct stream_reader *r);
/* Read and check the image header: magic, version, header CRC, flags, page size. */
bool stream_read_header(struct stream_reader *r, GError **errp);
/* Read the next record into (rec): the length is checked against its type's
 * maximum (stream_record_max_length()) before anything is read or allocated,
 * and the body is read in chunks of STREAM_READ_CHUNK, the buffer growing
 * only as bytes arrive (a header that lies about its length costs one
 * chunk); the CRC, zero padding and reserved fields are verified; empty
 * types must be empty. An unknown mandatory type is an error; an unknown
 * optional one is CRC-checked chunk by chunk without being kept, and returns
 * true with (rec->skip) set (and no body). */
bool stream_read_record(struct stream_reader *r, struct stream_record *rec, GError **errp);
/* "record 4 (PAGE_DATA) at offset 4136", for messages; g_free it. */
char *stream_record_describe(const struct stream_record *rec);
/* Stream (file) offset of the next byte (r) reads. */
uint64_t stream_reader_pos(const struct stream_reader *r);
/* Mapped-RAM files: go on reading from (ch), whose next byte is at stream
 * offset (offset) (e.g. a new channel on the same file after lseek, or a file
 * channel repositioned by its own seek). Record offsets stay file offsets. The
 * old channel is not closed; (ch) may be r->ch itself once repositioned. */
void stream_reader_set_channel(struct stream_reader *r, struct channel *ch, uint64_t offset);
/* Mapped-RAM files over a channel that cannot seek (a pipe, a mem channel):
 * read and discard up to stream offset (offset), which must not be behind. */
bool stream_reader_skip_to(struct stream_reader *r, uint64_t offset, GError **errp);

/* Record order (the spec's grammar), checked on the target: VM_CONFIG,
 * STATIC_END, passes of PAGE_DATA/ZERO_PAGES each closed by ITERATION_END
 * (numbered 1, 2, ...; the last one flagged final), VCPU_STATE for each vCPU
 * in index order, VM_STATE, DEVICE_STATE*, END.
 * A mapped-RAM file (MIG_HDR_F_MAPPED_RAM): VM_CONFIG, STATIC_END, MAPPED_RAM,
 * then the tail: RAM_INDEX, ITERATION_END+ (no page records), VCPU_STATE...,
 * VM_STATE, DEVICE_STATE*, END. Each mode refuses the other's RAM records.
 * A cpr-transfer stream (MIG_HDR_F_RAM_FD): VM_CONFIG, RAM_FDS, STATIC_END,
 * VCPU_STATE..., VM_STATE, DEVICE_STATE*, END (no pages, no passes). */
struct stream_order {
    int state;
    bool mapped;   /* MIG_HDR_F_MAPPED_RAM grammar */
    bool handover; /* MIG_HDR_F_RAM_FD grammar: RAM_FDS, no passes */
    uint32_t nr_vcpus;
    uint32_t next_vcpu;
    uint32_t passes;
};
/* A normal (socket) stream. */
void stream_order_init(struct stream_order *o);
/* The grammar for a stream with header flags (stream_flags) (r->flags after
 * stream_read_header()): mapped-RAM if MIG_HDR_F_MAPPED_RAM is set. */
void stream_order_init_flags(struct stream_order *o, uint32_t stream_flags);
/* Accept (rec) (already read) or fail naming it. Skipped records are always fine. */
bool stream_order_check(struct stream_order *o, const struct stream_record *rec, GError **errp);
/* True once END was accepted. */
bool stream_order_done(const struct stream_order *o);

/* ---- VM_CONFIG ---- */

struct stream_device_id {
    char id[MIG_NAME_LEN]; /* NUL-terminated */
    uint32_t instance;
};

struct stream_vm_config {
    uint64_t ram_size;
    uint64_t nr_gfns;
    uint32_t nr_vcpus;
    uint32_t nr_regions;
    struct {
        uint64_t gpa, size;
    } regions[MIG_VM_CONFIG_MAX_REGIONS];
    uint32_t cpuid_nr_entries;
    uint8_t cpuid_sha256[32];
    char machine[MIG_NAME_LEN]; /* NUL-terminated */
    uint32_t nr_devices;
    struct stream_device_id devices[MIG_VM_CONFIG_MAX_DEVICES];
};

/* Write (cfg) as VM_CONFIG (it is validated like the reader would). */
bool stream_write_vm_config(struct stream_writer *w, const struct stream_vm_config *cfg,
                            GError **errp);
/* Decode and validate VM_CONFIG (rec) into (out): counts, region layout
 * (aligned, sorted, disjoint, inside nr_gfns, summing to ram_size), names. */
bool stream_parse_vm_config(const struct stream_record *rec, struct stream_vm_config *out,
                            GError **errp);
/* The target's check: (incoming) must describe the same VM as (local); the
 * error says what differs ("RAM size differs: stream 1024 MiB, this VM 512 MiB"). */
bool stream_vm_config_compare(const struct stream_vm_config *incoming,
                              const struct stream_vm_config *local, GError **errp);

/* ---- PAGE_DATA and ZERO_PAGES ---- */

struct stream_page {
    uint64_t gfn;
    uint32_t encoding; /* MIG_PAGE_ENC_RAW, _ZLIB, _XBZRLE or _ZSTD */
    uint32_t length;   /* bytes at (data) */
    const uint8_t *data;
};

struct stream_gfn_range {
    uint64_t first_gfn;
    uint64_t npages;
};

/* Write PAGE_DATA for (pages)[0..count) (1..MIG_PAGE_DATA_MAX_PAGES). RAW
 * payloads go by reference (STREAM_PART_LIVE if (live), the vCPUs running,
 * else STREAM_PART_REF: keep them mapped until channel_flush()); ZLIB payloads
 * are copied. */
bool stream_write_page_data(struct stream_writer *w, const struct stream_page *pages,
                            unsigned count, bool live, GError **errp);
/* Write ZERO_PAGES for (ranges)[0..count). */
bool stream_write_zero_pages(struct stream_writer *w, const struct stream_gfn_range *ranges,
                             unsigned count, GError **errp);

typedef bool (*stream_page_fn)(void *opaque, const struct stream_page *page, GError **errp);
typedef bool (*stream_range_fn)(void *opaque, uint64_t first_gfn, uint64_t npages, GError **errp);

/* Validate PAGE_DATA (rec) completely (count against length, every gfn below
 * (nr_gfns), encodings known, payload lengths sane for (page_size)), then call
 * (fn)(opaque, page) for each page in order. (fn) failing stops the walk. */
bool stream_parse_page_data(const struct stream_record *rec, uint32_t page_size, uint64_t nr_gfns,
                            stream_page_fn fn, void *opaque, GError **errp);
/* Validate ZERO_PAGES (rec) completely (overflow-safe: every range non-empty and
 * inside [0, nr_gfns)), then call (fn) per range. */
bool stream_parse_zero_pages(const struct stream_record *rec, uint64_t nr_gfns, stream_range_fn fn,
                             void *opaque, GError **errp);
/* Decode (page) into (dst) ((page_size) bytes, a scratch page: write it to
 * guest RAM only when this succeeds). ZLIB and ZSTD must inflate to exactly
 * one page and use all their bytes. XBZRLE applies to (dst), which must hold
 * the page as last received, and must be well formed. */
bool stream_page_decode(const struct stream_page *page, void *dst, uint32_t page_size,
                        GError **errp);
/* Compress (page) at zlib (level) into (out) ((out_size) bytes). Returns the
 * compressed length, or 0 when it would not be smaller than the page (send
 * it RAW then). */
size_t stream_page_compress(const void *page, uint32_t page_size, int level, uint8_t *out,
                            size_t out_size);

/* ---- ITERATION_END ---- */

struct stream_iteration_end {
    uint32_t pass;
    uint32_t flags; /* MIG_ITER_F_FINAL */
    uint64_t pages_sent;
    uint64_t zero_pages;
    uint64_t bytes_sent;
    uint64_t dirty_pages;
    uint64_t duration_ns;
};

bool stream_write_iteration_end(struct stream_writer *w, const struct stream_iteration_end *it,
                                GError **errp);
bool stream_parse_iteration_end(const struct stream_record *rec, struct stream_iteration_end *out,
                                GError **errp);

/* ---- VCPU_STATE, VM_STATE, DEVICE_STATE (FDT blobs) ---- */

/* Write vCPU (index)'s state (fdt) (fdt_totalsize() bytes, packed if possible). */
bool stream_write_vcpu_state(struct stream_writer *w, uint32_t index, const void *fdt,
                             GError **errp);
bool stream_write_vm_state(struct stream_writer *w, const void *fdt, GError **errp);
/* Write device (id, instance)'s state (fdt). */
bool stream_write_device_state(struct stream_writer *w, const char *id, uint32_t instance,
                               const void *fdt, GError **errp);
/* Decode and validate: reserved fields zero, the FDT passes fdt_check_full()
 * and fills the rest of the body exactly. (*fdt) points into (rec)'s body. */
bool stream_parse_vcpu_state(const struct stream_record *rec, uint32_t *index, const void **fdt,
                             size_t *fdt_len, GError **errp);
bool stream_parse_vm_state(const struct stream_record *rec, const void **fdt, size_t *fdt_len,
                           GError **errp);
bool stream_parse_device_state(const struct stream_record *rec, char id[MIG_NAME_LEN],
                               uint32_t *instance, const void **fdt, size_t *fdt_len,
                               GError **errp);

/* ---- Mapped-RAM files: MAPPED_RAM and RAM_INDEX ---- */

struct stream_mapped_ram {
    uint64_t ram_offset;  /* file offset of gfn 0's page */
    uint64_t nr_gfns;     /* = VM_CONFIG nr_gfns */
    uint64_t tail_offset; /* file offset of RAM_INDEX */
};

/* Bytes a record with a (length)-byte body takes in a stream with header
 * flags (stream_flags): header, body, padding, CRC trailer. */
uint64_t stream_record_wire_size(uint32_t stream_flags, uint32_t length);
/* File offset of gfn (gfn)'s page. */
static inline uint64_t stream_mapped_page_offset(const struct stream_mapped_ram *m, uint64_t gfn)
{
    return m->ram_offset + (gfn << MIG_STREAM_PAGE_SHIFT);
}
/* The layout for (nr_gfns) frames when the next record (w) writes is
 * MAPPED_RAM: ram_offset = the first MIG_MAPPED_ALIGN boundary at or after the
 * end of that record, tail_offset = ALIGN_UP(ram_offset + nr_gfns * page size,
 * MIG_MAPPED_ALIGN). Fails on overflow. Pass the result to stream_write_mapped_ram(). */
bool stream_mapped_ram_plan(const struct stream_writer *w, uint64_t nr_gfns,
                            struct stream_mapped_ram *out, GError **errp);
/* Write MAPPED_RAM (m): (w) must have MIG_HDR_F_MAPPED_RAM; (m) is validated
 * like the reader does (alignment, formula, ram_offset past this record). */
bool stream_write_mapped_ram(struct stream_writer *w, const struct stream_mapped_ram *m,
                             GError **errp);
/* Decode and validate MAPPED_RAM (rec), read from a stream with header flags
 * (stream_flags) (must include MIG_HDR_F_MAPPED_RAM), for a VM of (nr_gfns)
 * frames (VM_CONFIG's): offsets aligned to MIG_MAPPED_ALIGN, ram_offset at or
 * after the end of this record, nr_gfns equal, tail_offset by the formula,
 * nothing overflowing 63 bits. */
bool stream_parse_mapped_ram(const struct stream_record *rec, uint32_t stream_flags,
                             uint64_t nr_gfns, struct stream_mapped_ram *out, GError **errp);

/* A decoded RAM_INDEX; pointers into the record's body (valid until the next read). */
struct stream_ram_index {
    uint64_t nr_gfns;
    uint64_t nr_present;
    const uint8_t *bitmap; /* DIV_ROUND_UP(nr_gfns, 64) little-endian u64 words */
    const uint8_t *crcs;   /* nr_present little-endian u32, gfn order; NULL without CRCs */
};

/* Write RAM_INDEX for (nr_gfns) frames: (bitmap) (bitmap.h layout, bit gfn =
 * page present in the RAM area) and, when (w) has MIG_HDR_F_CRC32, (crcs):
 * an array of (nr_gfns) CRC-32s indexed by gfn, of which those of present
 * pages are written (entries of absent pages are ignored); NULL otherwise.
 * Fails if the index would exceed MIG_REC_LENGTH_MAX (about 60 GiB present
 * with CRCs). */
bool stream_write_ram_index(struct stream_writer *w, uint64_t nr_gfns, const unsigned long *bitmap,
                            const uint32_t *crcs, GError **errp);
/* Decode and validate RAM_INDEX (rec) from a stream with (stream_flags) for
 * (nr_gfns) frames: nr_gfns equal, length exactly 16 + bitmap + (CRC flag ?
 * 4 * nr_present : 0), popcount = nr_present, no bit at or beyond nr_gfns. */
bool stream_parse_ram_index(const struct stream_record *rec, uint32_t stream_flags,
                            uint64_t nr_gfns, struct stream_ram_index *out, GError **errp);
/* Is gfn (gfn) present in (idx)? (gfn < idx->nr_gfns) */
bool stream_ram_index_test(const struct stream_ram_index *idx, uint64_t gfn);
/* The CRC of the (crc_index)th present page (0 without CRCs). */
uint32_t stream_ram_index_crc(const struct stream_ram_index *idx, uint64_t crc_index);

/* Called per run of present pages [first_gfn, first_gfn + npages), in gfn
 * order; the run's CRCs are entries first_crc .. first_crc + npages - 1. */
typedef bool (*stream_run_fn)(void *opaque, uint64_t first_gfn, uint64_t npages, uint64_t first_crc,
                              GError **errp);
/* Walk the present runs of (idx) (validated by stream_parse_ram_index()), at
 * most (max_run) pages each (0: unlimited). (fn) failing stops the walk. */
bool stream_ram_index_for_each_run(const struct stream_ram_index *idx, uint64_t max_run,
                                   stream_run_fn fn, void *opaque, GError **errp);
/* Check a page read from the RAM area against the index: (page) (one page)
 * is gfn (gfn), the (crc_index)th present page. True without CRCs. Fails with
 * "gfn 0x...: page CRC mismatch (index says 0x..., computed 0x...)". */
bool stream_ram_index_check_page(const struct stream_ram_index *idx, uint64_t crc_index,
                                 uint64_t gfn, const void *page, GError **errp);
/* Check (npages) pages read from the RAM area (pages, back to back), gfns
 * (first_gfn).. with CRC entries (first_crc).., against the index. Fails with
 * "gfn 0x... at file offset N: page CRC mismatch (...)" (offsets per (m)). */
bool stream_ram_index_check_run(const struct stream_ram_index *idx,
                                const struct stream_mapped_ram *m, uint64_t first_gfn,
                                uint64_t npages, uint64_t first_crc, const uint8_t *pages,
                                GError **errp);

/* Where a restore puts run [gfn, gfn + npages) of pages. */
struct stream_mapped_sink {
    /* The run's page-aligned host memory, or NULL if it lies outside RAM
     * (asked for every run before any read). */
    uint8_t *(*dest)(void *opaque, uint64_t gfn, uint64_t npages);
    /* NULL: each run is read straight into dest's memory and checked there.
     * Else the run is read into a buffer of the reading thread, checked
     * there, and handed to place(), which stores it (from that thread). */
    bool (*place)(void *opaque, uint64_t gfn, uint64_t npages, const uint8_t *pages, GError **errp);
    void *opaque;
};
/* Restore the RAM area of mapped-RAM file channel (ch) per (m) and (idx):
 * runs of present pages (at most 2 MiB each) are read with read-ahead on
 * (threads) threads (0: automatic, channel_file_read_batch()), each checked
 * against its CRCs on the thread that read it, and stored as (sink) says.
 * Absent pages are never touched. False with (errp) naming the page (CRC
 * mismatch), the offset (short file, read error) or the run (outside RAM);
 * the memory may then hold some pages of the file, so the caller must not
 * run it. */
bool stream_mapped_load_ram(struct channel *ch, const struct stream_mapped_ram *m,
                            const struct stream_ram_index *idx, unsigned threads,
                            const struct stream_mapped_sink *sink, GError **errp);

/* ---- cpr-transfer: RAM_FDS ---- */

struct stream_ram_fds {
    uint32_t nr_regions;
    struct {
        uint64_t gpa, size;
    } regions[MIG_VM_CONFIG_MAX_REGIONS];
};

/* Write RAM_FDS (m) ((w) must have MIG_HDR_F_RAM_FD). The memfds themselves
 * go with channel_send_fds() just before. */
bool stream_write_ram_fds(struct stream_writer *w, const struct stream_ram_fds *m, GError **errp);
/* Decode and validate RAM_FDS: the header flag, the exact length, regions
 * page aligned, non-empty, sorted and disjoint, reserved zero. */
bool stream_parse_ram_fds(const struct stream_record *rec, uint32_t stream_flags,
                          struct stream_ram_fds *out, GError **errp);

/* ---- Return path ---- */

/* Write RP_ERROR with (message) (cut to MIG_RP_ERROR_MAX bytes at a UTF-8 boundary). */
bool stream_write_rp_error(struct stream_writer *w, const char *message, GError **errp);
/* Decode RP_ERROR: valid UTF-8 without NUL; (*message) is g_malloc'd. */
bool stream_parse_rp_error(const struct stream_record *rec, char **message, GError **errp);

/* ---- Record types: one descriptor each ---- */

/* The longest bodies, by what each type can need (stream_record_types[]). */
/* PAGE_DATA: MIG_PAGE_DATA_MAX_PAGES raw pages with their descriptors (16 MiB + 64 KiB + 8). */
#define STREAM_PAGE_DATA_MAX \
    (sizeof(struct mig_rec_page_data) + \
     MIG_PAGE_DATA_MAX_PAGES * (sizeof(struct mig_page_desc) + (1u << MIG_STREAM_PAGE_SHIFT)))
/* ZERO_PAGES: at most this many ranges a record (the sender puts 256). */
#define STREAM_ZERO_PAGES_MAX_RANGES 4096u
/* A vCPU's, the VM's or a device's state blob (real ones are a few KiB; a
 * vCPU with AMX's XSAVE area some 20 KiB). The writers refuse larger ones. */
#define STREAM_STATE_FDT_MAX (1u << 20)
/* The reader's step: bytes read (and memory committed) before it grows its
 * buffer again. */
#define STREAM_READ_CHUNK (256u << 10)

/* A body decoded by its type's descriptor (stream_record_parse()); pointers
 * point into the record's body (valid until the next read). */
struct stream_body {
    uint32_t type;
    union {
        struct stream_vm_config vm_config; /* VM_CONFIG */
        struct {                           /* PAGE_DATA */
            uint32_t count, raw, zlib;
            uint64_t first_gfn, last_gfn;
        } page_data;
        struct { /* ZERO_PAGES */
            uint64_t ranges, pages, first_gfn, last_gfn;
        } zero_pages;
        struct stream_iteration_end iteration_end; /* ITERATION_END */
        struct {                                   /* VCPU_STATE (index), VM_STATE, DEVICE_STATE */
            uint32_t index;                        /* vCPU index; device instance */
            char id[MIG_NAME_LEN];                 /* device id */
            const void *fdt;
            size_t fdt_len;
        } state;
        struct stream_mapped_ram mapped_ram; /* MAPPED_RAM */
        struct stream_ram_index ram_index;   /* RAM_INDEX */
        struct stream_ram_fds ram_fds;       /* RAM_FDS */
        struct {                             /* RP_ERROR: not NUL-terminated */
            const char *text;
            size_t len;
        } rp_error;
    };
};

/* What a body is checked against besides itself. */
struct stream_parse_ctx {
    uint32_t stream_flags;    /* the image header's (MAPPED_RAM, RAM_INDEX) */
    uint64_t nr_gfns;         /* VM_CONFIG's: every gfn is below it */
    stream_page_fn page_fn;   /* PAGE_DATA: called per page once all are valid; may be NULL */
    stream_range_fn range_fn; /* ZERO_PAGES: likewise per range; may be NULL */
    void *opaque;             /* for page_fn and range_fn */
};

/* Where a descriptor's describe function reports a record's fields (tern-dump:
 * its JSON). Any callback may be NULL. */
struct stream_fields {
    void *opaque;
    void (*u64)(void *opaque, const char *name, uint64_t v);
    void (*str)(void *opaque, const char *name, const char *v);
    void (*flag)(void *opaque, const char *name, bool v);
    void (*str_list)(void *opaque, const char *name, const char *const *v, size_t n);
};

/*
 * One record type. Its size rule: a body is at least (head_length) bytes (the
 * fixed part, struct mig_rec_*, which the order check reads where it needs
 * it) and at most (max_length); max_length 0 is a type without body, which
 * the reader refuses with one. The parse function checks all of it and the
 * rest, with messages that say what is wrong.
 * To add a type: its MIG_REC_* in tern/stream-format.h, one descriptor in
 * stream.c's table, and its step in the loader (migration/incoming.c).
 */
enum stream_rec_where {
    STREAM_REC_ANY,      /* socket streams and mapped-RAM files */
    STREAM_REC_SOCKET,   /* not in a mapped-RAM file (PAGE_DATA, ZERO_PAGES) */
    STREAM_REC_MAPPED,   /* only in a mapped-RAM file (MAPPED_RAM, RAM_INDEX) */
    STREAM_REC_HANDOVER, /* only in a cpr-transfer stream (RAM_FDS) */
};

struct stream_record_type {
    uint32_t type;    /* MIG_REC_* or MIG_RP_* */
    const char *name; /* "PAGE_DATA" */
    bool return_path; /* a target-to-source type (MIG_RP_*) */
    enum stream_rec_where where;
    uint32_t head_length;
    uint32_t max_length;
    /* A tighter maximum for a VM of (nr_gfns) frames in a stream with header
     * flags (stream_flags) (RAM_INDEX: its exact size); NULL: max_length. */
    uint32_t (*max_for_vm)(uint32_t stream_flags, uint64_t nr_gfns);
    /* Decode and validate (rec) of this type into (out). */
    bool (*parse)(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                  struct stream_body *out, GError **errp);
    /* tern-dump's one-line summary of a parsed (body) of pass (pass) (g_free
     * it), reporting its fields to (f) (may be NULL). */
    char *(*describe)(const struct stream_body *body, uint32_t pass, const struct stream_fields *f);
};

/* The table, in type order; stream_record_types_count entries. */
extern const struct stream_record_type stream_record_types[];
extern const size_t stream_record_types_count;

/* The descriptor of (type), or NULL if it is not a v1 type. */
const struct stream_record_type *stream_record_type_find(uint32_t type);
/* Name of record type (type), e.g. "PAGE_DATA"; "UNKNOWN" if not a v1 type. */
const char *mig_rec_type_name(uint32_t type);
/* The longest body a record of type (t) may have in (r)'s stream: max_length,
 * or max_for_vm once the reader knows the VM (r->nr_gfns). */
uint32_t stream_record_max_length(const struct stream_record_type *t,
                                  const struct stream_reader *r);
/* Decode and validate (rec) through its type's descriptor into (out). */
bool stream_record_parse(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                         struct stream_body *out, GError **errp);
/* Bytes for people: "512 B", "12.3 MiB". */
char *stream_human_bytes(uint64_t n);

#endif
