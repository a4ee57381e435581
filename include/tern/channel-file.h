/* channel-file.h: the file channel backend: checkpoints written with libaio + O_DIRECT, read back for restore. */
#ifndef TERN_CHANNEL_FILE_H
#define TERN_CHANNEL_FILE_H

/*
 * A file channel carries a migration stream to or from a regular file (a
 * checkpoint, "file:PATH"). It is an ordinary struct channel: the stream's
 * sequential bytes (the head records, later the tail) go through the channel
 * puts and gets. On top of that, a mapped-RAM checkpoint places guest pages at
 * fixed file offsets with positional writes and reads.
 *
 * I/O: where the filesystem accepts O_DIRECT, page-aligned data bypasses the
 * page cache: positional page writes go straight from guest RAM through
 * libaio with a bounded queue of writes in flight, adjacent pages merged into
 * one request (runs of at most CHANNEL_FILE_BUFFERED_MAX go through the page
 * cache, which is faster for scattered single pages); restore reads batches
 * with read-ahead on several threads (channel_file_read_batch());
 * sequential bytes go through an aligned bounce buffer; pieces
 * that are not block aligned go through a second, buffered descriptor of the
 * same file, so the file's length is exact. Elsewhere (or with the
 * environment variable TERN_FILE_NO_DIRECT=1) all I/O is buffered, and a note
 * says so on stderr.
 *
 * Writing is all or nothing: channel_file_create() writes "PATH.tmp-XXXXXX"
 * next to PATH, and only channel_file_commit() makes it durable and renames it
 * to PATH. An error (ENOSPC, EFBIG, EIO, a short write...) is a sticky channel
 * error naming the path and the errno text, and removes the temporary file;
 * so does channel_close() of a channel that was not committed.
 *
 * Like every channel, one thread at a time; channel_shutdown() from another
 * thread makes the owner's next call fail.
 */
#include "tern/channel.h"

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Block size that O_DIRECT offsets, lengths and buffers are aligned to. */
#define CHANNEL_FILE_ALIGN 4096u
/* Positional writes in flight at most (each a merged run of pages). */
#define CHANNEL_FILE_QUEUE_DEPTH 64
/* Largest merged run of positional writes in one request. */
#define CHANNEL_FILE_RUN_MAX (1u << 20)
/* Merged runs up to this size are written through the page cache (a copy,
 * and the kernel's writeback merges them) rather than with O_DIRECT; the
 * drain that ends a pass starts their writeback. docs/checkpoint.md has the
 * measurements. */
#define CHANNEL_FILE_BUFFERED_MAX (8u << 10)

/* ---- Writing a checkpoint ---- */

/* A write channel creating the checkpoint (path): the data goes to a new
 * temporary file "(path).tmp-XXXXXX" (mode 0600) in the same directory;
 * (path) itself is untouched until channel_file_commit(). Sequential writes
 * start at offset 0. NULL with (errp) if the file cannot be created. */
struct channel *channel_file_create(const char *path, GError **errp);

/* Positional writes go through the channel: channel_write_at() and
 * channel_drain() (channel.h). On a file channel, channel_write_at() writes
 * (len) bytes (a multiple of CHANNEL_FILE_ALIGN) from (buf) at file offset
 * (offset) (a multiple of CHANNEL_FILE_ALIGN), asynchronously: (buf) must
 * stay valid and should not change until channel_drain() (with O_DIRECT it is
 * read in place, without a copy; it should be CHANNEL_FILE_ALIGN-aligned, as
 * guest RAM is, else it is written synchronously through the page cache). A
 * call continuing the previous one (offset and, ideally, buffer right after
 * it) is merged into the same request. Two writes to the same offset must not
 * be in flight together: drain between them. Only a channel from
 * channel_file_create() accepts them, until it is committed. */

/* ---- Reading a checkpoint ---- */

/* A read channel on the existing file (path); sequential reads start at
 * offset 0. NULL with (errp) if it cannot be opened or is not a regular file. */
struct channel *channel_file_open(const char *path, GError **errp);

/* Read exactly (len) bytes at file offset (offset) into (buf), independent of
 * the sequential position. Aligned requests (offset, len and buf multiples of
 * CHANNEL_FILE_ALIGN) use O_DIRECT with several reads in flight; others are
 * read through the page cache. The end of the file before (len) bytes is an
 * error naming the offset. False with (errp) (a sticky channel error). */
bool channel_file_read_at(struct channel *ch, uint64_t offset, void *buf, size_t len,
                          GError **errp);

/* One request of channel_file_read_batch(): (len) bytes at file offset
 * (offset) into (buf), or, with (buf) NULL, into a buffer of the reading
 * thread's, valid during the callback (the file's data through a hot
 * buffer: cheaper than faulting in fresh memory where page mapping is
 * expensive). */
struct channel_file_read {
    uint64_t offset;
    void *buf;
    size_t len;
};

/* Called on the thread that read request (index) of a batch, once its bytes
 * are at (data) (its buf, or the thread's buffer). False with (errp) stops
 * the batch. */
typedef bool (*channel_file_read_done_fn)(void *opaque, size_t index, const uint8_t *data,
                                          GError **errp);

/* Reads in flight per thread of a batch, and the most threads. */
#define CHANNEL_FILE_READ_DEPTH 4
#define CHANNEL_FILE_READ_THREADS_MAX 8

/* Read (reqs)[0, nreqs) (restore's read-ahead) on (threads) threads (0:
 * automatic: $TERN_FILE_READ_THREADS, else the CPUs, at most
 * CHANNEL_FILE_READ_THREADS_MAX), the calling thread one of them. Requests
 * are handed out in order; each thread keeps up to CHANNEL_FILE_READ_DEPTH of
 * them in flight (aligned ones with O_DIRECT and libaio, others through the
 * page cache) and calls (done) for each request as soon as it landed. The
 * first failure stops the batch (reads in flight are waited for, no more
 * callbacks start): false with the error of the failed request that comes
 * first in (reqs): a read error or short file is a sticky channel error
 * naming the offset, as channel_file_read_at()'s; an error of (done) is
 * passed on as is. Buffers must not overlap. */
bool channel_file_read_batch(struct channel *ch, const struct channel_file_read *reqs, size_t nreqs,
                             unsigned threads, channel_file_read_done_fn done, void *opaque,
                             GError **errp);

/* The current size of (ch)'s file in bytes (the temporary file while writing). */
uint64_t channel_file_size(struct channel *ch);

/* The first data range of (ch)'s file at or after (from), skipping holes of a
 * sparse file: [*start, *end). False when there is no data after (from).
 * Filesystems without hole detection report everything as data. */
bool channel_file_next_data(struct channel *ch, uint64_t from, uint64_t *start, uint64_t *end);

/* ---- Both directions ---- */

/* Move the sequential position of (ch) to (offset). Writing: pending puts are
 * flushed to the file first, and later puts land at (offset) (used to jump
 * from the head to the tail). Reading: read-ahead is dropped, and the next get
 * reads at (offset). Either way channel_read_pos()/channel_write_pos() then
 * report (offset) (channel_set_pos()), so stream offsets are file offsets;
 * channel_bytes_written() keeps counting. False with (errp) if the channel
 * has failed. */
bool channel_file_seek(struct channel *ch, uint64_t offset, GError **errp);

/* Finish the checkpoint (ch): flush pending puts, drain positional writes,
 * write the last partial block, fsync the file, rename it to its final path
 * (atomically replacing any older file) and fsync the directory. Afterwards
 * channel_close() keeps the file; (ch) accepts no more writes. False with
 * (errp) (and the temporary file removed) on any failure. */
bool channel_file_commit(struct channel *ch, GError **errp);

/* True if (ch) is a file channel. */
bool channel_is_file(struct channel *ch);
/* True if (ch) uses O_DIRECT (the filesystem accepts it and it was not turned off). */
bool channel_file_is_direct(struct channel *ch);
/* The temporary file (ch) writes to; NULL once committed or removed, or for
 * a read channel. For tests and messages. */
const char *channel_file_tmp_path(struct channel *ch);

/* Merge adjacent positional writes into one request (default true); for
 * measurements. */
void channel_file_set_merge(struct channel *ch, bool merge);
/* Positional-write statistics of (ch) (for tests and benchmarks): requests
 * submitted (after merging) and pages (CHANNEL_FILE_ALIGN units) written. */
void channel_file_get_stats(struct channel *ch, uint64_t *requests, uint64_t *blocks);

#endif
