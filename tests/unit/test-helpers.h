/* test-helpers.h: small checks the cmocka unit tests share. Include after <cmocka.h>. */
#ifndef TERN_TEST_HELPERS_H
#define TERN_TEST_HELPERS_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

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

/* A client socket connected to the UNIX socket at (path). */
static inline int connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* For a server on the main loop: run one iteration, then append what (fd)
 * has ready to (s). False once the server has closed the connection. */
static inline bool pump_and_recv(int fd, GString *s)
{
    char buf[4096];

    g_main_context_iteration(NULL, FALSE);
    ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r > 0)
        g_string_append_len(s, buf, r);
    else if (r < 0)
        g_usleep(1000);
    return r != 0;
}

#endif
