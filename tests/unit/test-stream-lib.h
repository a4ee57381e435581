/* test-stream-lib.h: what the stream unit tests share (test-stream-lib.c); after <cmocka.h>. */
#ifndef TERN_TEST_STREAM_LIB_H
#define TERN_TEST_STREAM_LIB_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/stream.h"

#define PAGE 4096u
#define NR_GFNS 0x100000ULL /* 4 GiB worth of frames */

/* The pages build_stream() sends: two patterns and a zlib page (zbuf, zlen). */
extern uint8_t pages[3][PAGE];
extern uint8_t zbuf[PAGE];
extern size_t zlen;

/* Take the bytes written to a mem channel (after a flush). */
GByteArray *take_bytes(struct channel *ch);
/* A packed FDT with the property value = (value); g_free it. */
void *make_fdt(uint32_t value);
/* The records that end every test stream: two vCPUs, the VM, one device
 * (serial, (instance)), then END. The blobs are make_fdt(100, 101, 200, 300). */
void write_state_and_end(struct stream_writer *w, uint32_t instance);
void fill_page(uint8_t *p, unsigned seed);
/* Two vCPUs, 4 GiB in two regions, devices serial.0 and serial.1. */
void make_config(struct stream_vm_config *cfg);
/* A complete small stream with every record type. */
GByteArray *build_stream(uint32_t flags);

/* Counts what sink_page() and sink_range() are handed; (fail): refuse pages. */
struct page_sink {
    unsigned pages;
    unsigned ranges;
    uint64_t zero_total;
    bool fail;
};

bool sink_page(void *opaque, const struct stream_page *page, GError **errp);
bool sink_range(void *opaque, uint64_t first, uint64_t n, GError **errp);
/* Read and validate a whole stream as the target would: header, records in
 * order, every body parsed, END, then end of stream. */
bool read_all(const uint8_t *data, size_t len, GError **errp);
/* Header bytes (32), crc flag as given, with the header CRC recomputed after
 * (version, page_shift) are patched. */
void make_header(uint8_t *h, uint32_t version, uint32_t flags, uint32_t page_shift);
/* A stream: header with (flags), then one record of (type) with (body, len). */
GByteArray *one_record(uint32_t flags, uint32_t type, const void *body, size_t len);
/* Read the header and one record of (s); return the record read or the error. */
bool read_one(GByteArray *s, struct stream_reader *r, struct channel **ch,
              struct stream_record *rec, GError **errp);
/* Feed (o) a record of (type) with (len) bytes of (body); (ok): accepted,
 * else refused as out of order. */
void order_step(struct stream_order *o, uint32_t type, const uint8_t *body, uint32_t len, bool ok);
/* (b) is an array (its size is the body length) or (none) (no body). */
#define CHECK(t, b, ok) \
    order_step(&o, (t), (b), (uint32_t)(sizeof(b) == sizeof(none) ? 0 : sizeof(b)), (ok))

#endif
