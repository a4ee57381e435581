/* compress.c: page compression with zlib or zstd, and decompression that
 * trusts nothing about its input. */
#include "tern/compress.h"
#include "tern/memory.h"
#include "tern/util.h"

#include <pthread.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

const char *page_compression_name(enum page_compression alg)
{
    switch (alg) {
    case PAGE_COMPRESSION_NONE:
        return "none";
    case PAGE_COMPRESSION_ZLIB:
        return "zlib";
    case PAGE_COMPRESSION_ZSTD:
        return "zstd";
    }
    return "?";
}

/* zstd contexts are costly to create (hundreds of KiB): one of each per
 * thread, kept for the thread's life and freed when it exits. */
static pthread_key_t zstd_cctx_key, zstd_dctx_key;
static pthread_once_t zstd_once = PTHREAD_ONCE_INIT;

static void free_cctx(void *p)
{
    ZSTD_freeCCtx(p);
}

static void free_dctx(void *p)
{
    ZSTD_freeDCtx(p);
}

static void zstd_keys_init(void)
{
    if (pthread_key_create(&zstd_cctx_key, free_cctx) ||
        pthread_key_create(&zstd_dctx_key, free_dctx))
        g_error("pthread_key_create failed");
}

static ZSTD_CCtx *zstd_cctx(void)
{
    pthread_once(&zstd_once, zstd_keys_init);
    ZSTD_CCtx *c = pthread_getspecific(zstd_cctx_key);
    if (!c) {
        c = ZSTD_createCCtx();
        if (c && pthread_setspecific(zstd_cctx_key, c)) {
            ZSTD_freeCCtx(c);
            c = NULL;
        }
    }
    return c;
}

static ZSTD_DCtx *zstd_dctx(void)
{
    pthread_once(&zstd_once, zstd_keys_init);
    ZSTD_DCtx *d = pthread_getspecific(zstd_dctx_key);
    if (!d) {
        d = ZSTD_createDCtx();
        if (d && pthread_setspecific(zstd_dctx_key, d)) {
            ZSTD_freeDCtx(d);
            d = NULL;
        }
    }
    return d;
}

size_t page_compress(enum page_compression alg, int level, const void *src, size_t len, void *dst,
                     size_t cap)
{
    size_t n = 0;

    switch (alg) {
    case PAGE_COMPRESSION_NONE:
        return 0;
    case PAGE_COMPRESSION_ZLIB: {
        uLongf out = cap;

        if (len > UINT32_MAX || compress2(dst, &out, src, (uLong)len, level) != Z_OK)
            return 0;
        n = out;
        break;
    }
    case PAGE_COMPRESSION_ZSTD: {
        ZSTD_CCtx *c = zstd_cctx();

        if (!c)
            return 0;
        n = ZSTD_compressCCtx(c, dst, cap, src, len, level);
        if (ZSTD_isError(n))
            return 0;
        break;
    }
    }
    return n < len ? n : 0;
}

static bool fail(GError **errp, enum page_compression alg, size_t dst_len, const char *why)
{
    /* One page (streams, XBZRLE) or a multifd batch of several. */
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                "%s data does not inflate to exactly %s%zu bytes (%s)", page_compression_name(alg),
                dst_len == GUEST_PAGE_SIZE ? "one page of " : "", dst_len, why);
    return false;
}

bool page_decompress(enum page_compression alg, const void *src, size_t len, void *dst,
                     size_t dst_len, GError **errp)
{
    switch (alg) {
    case PAGE_COMPRESSION_NONE:
        if (len != dst_len)
            return fail(errp, alg, dst_len, "length mismatch");
        memcpy(dst, src, len);
        return true;
    case PAGE_COMPRESSION_ZLIB: {
        uLongf out_len = dst_len;
        uLong in_len = len;

        if (len > UINT32_MAX || dst_len > UINT32_MAX)
            return fail(errp, alg, dst_len, "too long");
        int rc = uncompress2(dst, &out_len, src, &in_len);
        if (rc != Z_OK || out_len != dst_len || in_len != len)
            return fail(errp, alg, dst_len,
                        rc == Z_OK          ? "size mismatch or trailing bytes"
                        : rc == Z_BUF_ERROR ? "too long or truncated"
                                            : "corrupt");
        return true;
    }
    case PAGE_COMPRESSION_ZSTD: {
        ZSTD_DCtx *d = zstd_dctx();

        if (!d)
            return fail(errp, alg, dst_len, "out of memory");
        /* Bounded by dst_len whatever the frame header claims; every byte of
         * (src) must belong to a frame. */
        size_t n = ZSTD_decompressDCtx(d, dst, dst_len, src, len);
        if (ZSTD_isError(n))
            return fail(errp, alg, dst_len, ZSTD_getErrorName(n));
        if (n != dst_len)
            return fail(errp, alg, dst_len, "size mismatch");
        return true;
    }
    }
    return fail(errp, alg, dst_len, "unknown algorithm");
}
