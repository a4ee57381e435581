/* chardev.h: character back-ends for the serial port and the HMP console:
 * "stdio", "file:PATH", "unix:PATH,server[,nowait]", "none". */
#ifndef TERN_CHARDEV_H
#define TERN_CHARDEV_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chardev;

/* Bytes received, delivered on the main loop. */
typedef void chardev_input_fn(void *opaque, const uint8_t *buf, size_t len);
/* A client connected (true) or went away (false) (socket back-ends). */
typedef void chardev_connect_fn(void *opaque, bool connected);

/* Open the back-end described by (spec). "stdio" may be open only once at a
 * time; "unix:PATH,server" listens (stale sockets are replaced) and takes one
 * client at a time; "unix:PATH" connects as a client. */
struct chardev *chardev_open(const char *spec, GError **errp);
/* Close (chr) from the main thread; no other thread may still write to it. */
void chardev_close(struct chardev *chr);
/* Write from any thread; never blocks the caller: output is queued for a writer
 * thread, bounded (CHARDEV_OUT_MAX), and dropped when no client is connected. */
#define CHARDEV_OUT_MAX (256 * 1024)
void chardev_write(struct chardev *chr, const void *buf, size_t len);
void chardev_printf(struct chardev *chr, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Install (input) and (connect) with (opaque) (main thread). Callbacks must not
 * close (chr) themselves. */
void chardev_set_handlers(struct chardev *chr, chardev_input_fn *input, chardev_connect_fn *connect,
                          void *opaque);
/* True while output has somewhere to go: always for stdio and file, while a
 * client is connected for sockets. */
bool chardev_is_connected(const struct chardev *chr);
/* Bytes dropped so far by chardev_write() (no client, or buffer full). */
uint64_t chardev_dropped_bytes(struct chardev *chr);
/* True if stdio-backed and a terminal (for live progress lines). */
bool chardev_is_tty(const struct chardev *chr);

/* Socket helpers shared with the QMP server. */
/* Parse "unix:PATH[,server[=on|off]][,nowait|,wait[=on|off]]" (spec) into a newly
 * allocated (path) and (server); "wait" is accepted and treated as nowait. */
bool chardev_parse_unix(const char *spec, char **path, bool *server, GError **errp);
/* Listen on unix socket (path), replacing a stale socket file; returns a
 * non-blocking close-on-exec fd, or -1 with (errp) set. */
int chardev_unix_listen(const char *path, GError **errp);

#endif
