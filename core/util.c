/* util.c: small helpers every module uses: the error domain, clocks, size parsing, iovec bookkeeping. */
#include "tern/util.h"

#include <sys/uio.h>

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <time.h>

GQuark tern_error_quark(void)
{
    return g_quark_from_static_string("tern-error-quark");
}

uint64_t clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    uint64_t value = 0;
    unsigned shift = 0;

    if (!text || !out)
        return -EINVAL;
    if (!isdigit((unsigned char)*p))
        return -EINVAL; /* no sign, no leading blanks, no empty string */
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');

        if (value > (UINT64_MAX - digit) / 10)
            return -EINVAL;
        value = value * 10 + digit;
    }
    switch (*p) {
    case 'k':
    case 'K':
        shift = 10;
        p++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        p++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        p++;
        break;
    case 't':
    case 'T':
        shift = 40;
        p++;
        break;
    default:
        break;
    }
    if (shift) {
        if (*p == 'i' && (p[1] == 'B' || p[1] == 'b'))
            p += 2;
        else if (*p == 'B' || *p == 'b')
            p++;
    } else if (*p == 'B' || *p == 'b') {
        p++; /* "4096B" */
    }
    if (*p != '\0')
        return -EINVAL;
    if (value == 0)
        return -EINVAL;
    if (shift && value > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = value << shift;
    return 0;
}

void iov_consume(struct iovec **iov, int *cnt, size_t n)
{
    while (*cnt && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}
