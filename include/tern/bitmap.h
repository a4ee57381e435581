/* bitmap.h: page bitmaps shared by the dirty log, the VMM's own writes and migration. */
#ifndef TERN_BITMAP_H
#define TERN_BITMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define BITS_PER_LONG (8 * sizeof(unsigned long))
#define BITMAP_LONGS(nbits) (((nbits) + BITS_PER_LONG - 1) / BITS_PER_LONG)

static inline unsigned long *bitmap_new(uint64_t nbits)
{
    return calloc(BITMAP_LONGS(nbits) ? BITMAP_LONGS(nbits) : 1, sizeof(unsigned long));
}

static inline bool bitmap_test(const unsigned long *map, uint64_t bit)
{
    return (map[bit / BITS_PER_LONG] >> (bit % BITS_PER_LONG)) & 1;
}

/* Atomic: any thread may mark a page while the migration thread harvests. */
static inline void bitmap_set_atomic(unsigned long *map, uint64_t bit)
{
    __atomic_fetch_or(&map[bit / BITS_PER_LONG], 1UL << (bit % BITS_PER_LONG), __ATOMIC_RELAXED);
}

static inline void bitmap_clear_bit(unsigned long *map, uint64_t bit)
{
    map[bit / BITS_PER_LONG] &= ~(1UL << (bit % BITS_PER_LONG));
}

/* Set bits [start, start + count). */
void bitmap_set_range(unsigned long *map, uint64_t start, uint64_t count);
/* Number of set bits among the first (nbits). */
uint64_t bitmap_count(const unsigned long *map, uint64_t nbits);
/* First set bit at or after (from), or (nbits) when there is none. */
uint64_t bitmap_next_set(const unsigned long *map, uint64_t nbits, uint64_t from);
/* Atomically move every bit of (src) into (dst) (dst |= src; src = 0). */
void bitmap_steal_into(unsigned long *dst, unsigned long *src, uint64_t nbits);

#endif
