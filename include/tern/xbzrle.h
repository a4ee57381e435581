/* xbzrle.h: QEMU's XBZRLE delta encoding of a page against its previously
 * sent copy, and the page cache of those copies on the source. */
#ifndef TERN_XBZRLE_H
#define TERN_XBZRLE_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Encoding (QEMU's, byte for byte): a sequence of
 *   ULEB128 zrun_len   bytes equal in old and new (0 only for the first run)
 *   ULEB128 nzrun_len  bytes that differ (>= 1)
 *   the nzrun_len NEW bytes
 * over maximal runs; a trailing equal run is not encoded. Lengths are at most
 * two ULEB128 octets (< 16384), so (len) is at most 16383.
 *
 * Encode (new) against (old), (len) bytes each, into (dst) of at most (dlen)
 * bytes. Returns the encoded length; 0 when the pages are equal (nothing to
 * send); -1 on overflow (the encoding would exceed dlen: send the page). */
int xbzrle_encode(const uint8_t *old, const uint8_t *new_page, size_t len, uint8_t *dst,
                  size_t dlen);

/* Apply the encoding (src, slen), which may be hostile, to (page) of
 * (page_len) bytes, which holds the old copy. Never reads past slen nor writes
 * past page_len; a malformed encoding is an error (the page may then be partly
 * changed: decode into a scratch copy). An empty encoding is an error too. */
bool xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *page, size_t page_len, GError **errp);

/* ULEB128 of (v) < 16384 in one or two octets at (dst); returns the count. */
size_t xbzrle_uleb128_put(uint8_t *dst, uint32_t v);

/* The source's copies of pages as last sent, keyed by gfn: a power-of-two
 * number of slots (QEMU's cache), slot = gfn & (slots - 1); an insert evicts
 * whatever held the slot. Single-threaded. */
struct xbzrle_cache;
/* A cache of at most (size) bytes of pages of (page_size): the largest power
 * of two of slots that fits, at least one. NULL (with errp) when the memory
 * cannot be had or (size) is below one page. */
struct xbzrle_cache *xbzrle_cache_new(uint64_t size, size_t page_size, GError **errp);
void xbzrle_cache_free(struct xbzrle_cache *c);
/* The copy of (gfn), or NULL. Valid until the next insert. */
const uint8_t *xbzrle_cache_lookup(const struct xbzrle_cache *c, uint64_t gfn);
/* Store (page) as (gfn)'s copy, evicting the slot's previous page. */
void xbzrle_cache_insert(struct xbzrle_cache *c, uint64_t gfn, const uint8_t *page);
/* Forget (gfn)'s copy, if it has one. */
void xbzrle_cache_drop(struct xbzrle_cache *c, uint64_t gfn);
uint64_t xbzrle_cache_slots(const struct xbzrle_cache *c);
/* Bytes held: the pages and the slot tags. */
uint64_t xbzrle_cache_memory(const struct xbzrle_cache *c);
/* Pages evicted by inserts of another gfn so far. */
uint64_t xbzrle_cache_evictions(const struct xbzrle_cache *c);

#endif
