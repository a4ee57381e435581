/* util.h: small helpers every module uses. */
#ifndef TERN_UTIL_H
#define TERN_UTIL_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DIV_ROUND_UP(n, d) (((n) + (d)-1) / (d))
#define ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a)-1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a)-1)) == 0)
#ifndef MIN /* <glib.h> has the same definitions */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* The GError domain for Tern's own errors (codes: enum tern_error). Use with
 * g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, ...) where no GLib domain fits. */
#define TERN_ERROR tern_error_quark()
GQuark tern_error_quark(void);
enum tern_error {
    TERN_ERROR_FAILED,  /* generic failure */
    TERN_ERROR_INVALID, /* bad input: a malformed image, stream, table or argument */
    TERN_ERROR_NOSPACE, /* a fixed-size buffer (e.g. an FDT) is too small: retry bigger */
};

/* Monotonic clock in nanoseconds and milliseconds. */
uint64_t clock_ns(void);
static inline uint64_t clock_ms(void)
{
    return clock_ns() / 1000000;
}

/* Parse a size such as "512M", "1G", "16G", "4096" (bytes) into (out).
 * Suffixes K, M, G, T (powers of 1024, either case), optionally followed by
 * "B" or "iB". Zero, garbage and overflow are rejected: returns 0 or -EINVAL. */
int parse_size(const char *text, uint64_t *out);

struct iovec;
/* After a partial readv/writev of (n) bytes: drop the whole iovecs it
 * covered from (*iov, *cnt) and trim the first one left. */
void iov_consume(struct iovec **iov, int *cnt, size_t n);

#endif
