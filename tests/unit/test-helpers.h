/* test-helpers.h: small checks the cmocka unit tests share. Include after <cmocka.h>. */
#ifndef TERN_TEST_HELPERS_H
#define TERN_TEST_HELPERS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Fail unless (err) is set and its message contains (substr). */
static inline void assert_error(GError *err, const char *substr)
{
    if (!err)
        fail_msg("expected an error containing '%s', got success", substr);
    if (!strstr(err->message, substr))
        fail_msg("expected an error containing '%s', got '%s'", substr, err->message);
}

/* Fill (p) with a pattern that differs for each (seed) and each position. */
static inline void fill(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed + i * 13 + (i >> 8));
}

#endif
