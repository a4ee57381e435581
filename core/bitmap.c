/* bitmap.c: word-at-a-time page bitmap helpers (set, count, scan, atomic harvest). */
#include "tern/bitmap.h"

/* Mask of the bits [lo, hi) of one word, 0 <= lo < hi <= BITS_PER_LONG. */
static unsigned long word_mask(unsigned lo, unsigned hi)
{
    unsigned long m = ~0UL << lo;

    if (hi < BITS_PER_LONG)
        m &= ~(~0UL << hi);
    return m;
}

void bitmap_set_range(unsigned long *map, uint64_t start, uint64_t count)
{
    uint64_t end = start + count;
    uint64_t w = start / BITS_PER_LONG, last;

    if (count == 0)
        return;
    last = (end - 1) / BITS_PER_LONG;
    if (w == last) {
        map[w] |= word_mask(start % BITS_PER_LONG, (unsigned)(end - w * BITS_PER_LONG));
        return;
    }
    map[w++] |= word_mask(start % BITS_PER_LONG, BITS_PER_LONG);
    for (; w < last; w++)
        map[w] = ~0UL;
    map[last] |= word_mask(0, (unsigned)(end - last * BITS_PER_LONG));
}

uint64_t bitmap_count(const unsigned long *map, uint64_t nbits)
{
    uint64_t full = nbits / BITS_PER_LONG, n = 0;
    unsigned rest = nbits % BITS_PER_LONG;

    for (uint64_t w = 0; w < full; w++)
        n += (uint64_t)__builtin_popcountl(map[w]);
    if (rest)
        n += (uint64_t)__builtin_popcountl(map[full] & word_mask(0, rest));
    return n;
}

uint64_t bitmap_next_set(const unsigned long *map, uint64_t nbits, uint64_t from)
{
    uint64_t w, nwords = BITMAP_LONGS(nbits);
    unsigned long word;

    if (from >= nbits)
        return nbits;
    w = from / BITS_PER_LONG;
    word = map[w] & (~0UL << (from % BITS_PER_LONG));
    for (;;) {
        if (word) {
            uint64_t bit = w * BITS_PER_LONG + (uint64_t)__builtin_ctzl(word);

            return bit < nbits ? bit : nbits;
        }
        if (++w >= nwords)
            return nbits;
        word = map[w];
    }
}

void bitmap_steal_into(unsigned long *dst, unsigned long *src, uint64_t nbits)
{
    uint64_t nwords = BITMAP_LONGS(nbits);

    for (uint64_t w = 0; w < nwords; w++) {
        unsigned long bits;

        /* A relaxed load first skips the (costly) exchange on clean words;
         * a bit set after the load is caught by the next harvest. */
        if (!__atomic_load_n(&src[w], __ATOMIC_RELAXED))
            continue;
        bits = __atomic_exchange_n(&src[w], 0UL, __ATOMIC_ACQ_REL);
        dst[w] |= bits;
    }
}
