/* crc32.h: the CRC-32 of the migration stream (zlib's and gzip's polynomial,
 * reflected), at memory speed (ISA-L). */
#ifndef TERN_CRC32_H
#define TERN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Extend (crc) over (len) bytes at (buf); start a new CRC with crc = 0. The
 * same value zlib's crc32() gives, so the stream format does not change. */
uint32_t tern_crc32(uint32_t crc, const void *buf, size_t len);

#endif
