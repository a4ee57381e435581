/* xbzrle-cache.c: the source's copies of sent pages for XBZRLE, a direct-mapped
 * power-of-two array of slots (QEMU's layout), bounded by xbzrle-cache-size. */
#include "tern/xbzrle.h"
#include "tern/util.h"

#include <string.h>

struct xbzrle_cache {
    uint64_t nr_slots; /* a power of two */
    size_t page_size;
    uint64_t *tag;  /* gfn + 1 per slot; 0 = empty */
    uint8_t *pages; /* nr_slots x page_size, touched only as slots fill */
    uint64_t evictions;
};

struct xbzrle_cache *xbzrle_cache_new(uint64_t size, size_t page_size, GError **errp)
{
    uint64_t slots = page_size ? size / page_size : 0;

    if (!slots) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "xbzrle-cache-size %" G_GUINT64_FORMAT " is below one page", size);
        return NULL;
    }
    /* Round down to a power of two, as QEMU does. */
    while (slots & (slots - 1))
        slots &= slots - 1;
    struct xbzrle_cache *c = g_new0(struct xbzrle_cache, 1);
    c->nr_slots = slots;
    c->page_size = page_size;
    c->tag = g_try_new0(uint64_t, slots);
    c->pages = slots <= SIZE_MAX / page_size ? g_try_malloc(slots * page_size) : NULL;
    if (!c->tag || !c->pages) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "cannot allocate an XBZRLE cache of %" G_GUINT64_FORMAT " bytes",
                    slots * page_size);
        xbzrle_cache_free(c);
        return NULL;
    }
    return c;
}

void xbzrle_cache_free(struct xbzrle_cache *c)
{
    if (!c)
        return;
    g_free(c->tag);
    g_free(c->pages);
    g_free(c);
}

static uint64_t slot_of(const struct xbzrle_cache *c, uint64_t gfn)
{
    return gfn & (c->nr_slots - 1);
}

const uint8_t *xbzrle_cache_lookup(const struct xbzrle_cache *c, uint64_t gfn)
{
    uint64_t s = slot_of(c, gfn);

    return c->tag[s] == gfn + 1 ? c->pages + s * c->page_size : NULL;
}

void xbzrle_cache_insert(struct xbzrle_cache *c, uint64_t gfn, const uint8_t *page)
{
    uint64_t s = slot_of(c, gfn);

    if (c->tag[s] && c->tag[s] != gfn + 1)
        c->evictions++;
    c->tag[s] = gfn + 1;
    memcpy(c->pages + s * c->page_size, page, c->page_size);
}

void xbzrle_cache_drop(struct xbzrle_cache *c, uint64_t gfn)
{
    uint64_t s = slot_of(c, gfn);

    if (c->tag[s] == gfn + 1)
        c->tag[s] = 0;
}

uint64_t xbzrle_cache_slots(const struct xbzrle_cache *c)
{
    return c->nr_slots;
}

uint64_t xbzrle_cache_memory(const struct xbzrle_cache *c)
{
    return c->nr_slots * (c->page_size + sizeof(uint64_t));
}

uint64_t xbzrle_cache_evictions(const struct xbzrle_cache *c)
{
    return c->evictions;
}
