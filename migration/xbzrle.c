/* xbzrle.c: QEMU's XBZRLE page delta: runs of unchanged bytes skipped, runs
 * of changed bytes sent as they are now; a bounds-checked decoder. */
#include "tern/xbzrle.h"
#include "tern/util.h"

#include <string.h>

size_t xbzrle_uleb128_put(uint8_t *dst, uint32_t v)
{
    g_assert(v < 16384);
    if (v < 0x80) {
        dst[0] = (uint8_t)v;
        return 1;
    }
    dst[0] = (uint8_t)((v & 0x7f) | 0x80);
    dst[1] = (uint8_t)(v >> 7);
    return 2;
}

/* QEMU's uleb128_decode_small(): at most two octets; -1 if the second one
 * continues too, or if the input ends inside the number. */
static int uleb128_get(const uint8_t *p, size_t avail, uint32_t *out)
{
    if (!avail)
        return -1;
    if (!(p[0] & 0x80)) {
        *out = p[0];
        return 1;
    }
    if (avail < 2 || (p[1] & 0x80))
        return -1;
    *out = (uint32_t)(p[0] & 0x7f) | (uint32_t)p[1] << 7;
    return 2;
}

/* Length of the run from (i) where old and new bytes are equal (eq) or all
 * differ (!eq); words first, since most of a page is one or the other. */
static size_t run_len(const uint8_t *old, const uint8_t *new_page, size_t i, size_t len, bool eq)
{
    size_t j = i;

    while (j + 8 <= len) {
        uint64_t a, b;

        memcpy(&a, old + j, 8);
        memcpy(&b, new_page + j, 8);
        uint64_t x = a ^ b;
        /* eq: the word must be all equal; !eq: no byte of it may be equal. */
        bool whole = eq ? x == 0 : !((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL);
        if (!whole)
            break;
        j += 8;
    }
    while (j < len && (old[j] == new_page[j]) == eq)
        j++;
    return j - i;
}

int xbzrle_encode(const uint8_t *old, const uint8_t *new_page, size_t len, uint8_t *dst,
                  size_t dlen)
{
    size_t i = 0, d = 0;

    g_assert(len < 16384);
    /* The overflow checks are QEMU's, so that overflow happens exactly when
     * it would there. */
    while (i < len) {
        if (d + 2 > dlen)
            return -1;
        size_t zrun = run_len(old, new_page, i, len, true);
        if (zrun == len)
            return 0; /* unchanged */
        i += zrun;
        if (i == len)
            return (int)d; /* the trailing equal run is implied */
        d += xbzrle_uleb128_put(dst + d, (uint32_t)zrun);
        if (d + 2 > dlen)
            return -1;
        size_t nzrun = run_len(old, new_page, i, len, false);
        d += xbzrle_uleb128_put(dst + d, (uint32_t)nzrun);
        if (d + nzrun > dlen)
            return -1;
        memcpy(dst + d, new_page + i, nzrun);
        d += nzrun;
        i += nzrun;
    }
    return (int)d;
}

static bool bad(GError **errp, size_t at, const char *why)
{
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "XBZRLE data is malformed at octet %zu: %s",
                at, why);
    return false;
}

bool xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *page, size_t page_len, GError **errp)
{
    size_t i = 0, d = 0;
    uint32_t n;
    int r;

    if (!slen)
        return bad(errp, 0, "empty");
    while (i < slen) {
        /* A zero run needs its length and at least one octet of the next one. */
        if (slen - i < 2)
            return bad(errp, i, "truncated run");
        r = uleb128_get(src + i, slen - i, &n);
        if (r < 0)
            return bad(errp, i, "bad length");
        if (i && !n)
            return bad(errp, i, "empty unchanged run");
        i += (size_t)r;
        if (n > page_len - d)
            return bad(errp, i, "unchanged run past the end of the page");
        d += n;

        if (slen - i < 2)
            return bad(errp, i, "truncated run");
        r = uleb128_get(src + i, slen - i, &n);
        if (r < 0)
            return bad(errp, i, "bad length");
        if (!n)
            return bad(errp, i, "empty changed run");
        i += (size_t)r;
        if (n > page_len - d)
            return bad(errp, i, "changed run past the end of the page");
        if (n > slen - i)
            return bad(errp, i, "changed run past the end of the data");
        memcpy(page + d, src + i, n);
        d += n;
        i += n;
    }
    return true;
}
