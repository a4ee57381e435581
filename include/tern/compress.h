/* compress.h: one page (or any small buffer) compressed with zlib or zstd, and
 * decompressed safely from untrusted input; shared by every migration channel. */
#ifndef TERN_COMPRESS_H
#define TERN_COMPRESS_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>

/* QEMU's MultiFDCompression names, in this order: "none", "zlib", "zstd". */
enum page_compression {
    PAGE_COMPRESSION_NONE,
    PAGE_COMPRESSION_ZLIB, /* RFC 1950 stream (with header), levels 1-9 */
    PAGE_COMPRESSION_ZSTD, /* one zstd frame, levels 1-20 */
};

/* "none", "zlib", "zstd" ("?" for anything else). */
const char *page_compression_name(enum page_compression alg);

/* Compress (len) bytes at (src) into (dst) of (cap) bytes with (alg) at
 * (level). Returns the compressed length, or 0 when compression does not
 * pay (the result would not be smaller than (len), does not fit in (cap), or
 * alg is NONE): then send the data raw. Thread-safe. */
size_t page_compress(enum page_compression alg, int level, const void *src, size_t len, void *dst,
                     size_t cap);

/* Decompress (len) bytes at (src), which may be hostile, into (dst): the data
 * must decompress to exactly (dst_len) bytes and be consumed entirely; anything
 * else is an error and (dst) may hold garbage. Never writes past (dst_len).
 * Thread-safe. */
bool page_decompress(enum page_compression alg, const void *src, size_t len, void *dst,
                     size_t dst_len, GError **errp);

#endif
