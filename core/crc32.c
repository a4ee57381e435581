/* crc32.c: the stream's CRC-32 through ISA-L, which folds with PCLMULQDQ
 * (and AVX-512 where the CPU has it): about 24 GB/s here against libdeflate's
 * 14 and zlib's 4 (tests/bench/ceilings), the same CRC. */
#include "tern/crc32.h"

#include <isa-l/crc.h>

uint32_t tern_crc32(uint32_t crc, const void *buf, size_t len)
{
    /* ISA-L's length is 64-bit, so one call takes any buffer. */
    return crc32_gzip_refl(crc, buf, len);
}
