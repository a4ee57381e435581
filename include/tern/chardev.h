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

struct chardev *chardev_open(const char *spec, GError **errp);
void chardev_close(struct chardev *chr);
/* Write from any thread; never blocks the caller for long (drops when no client). */
void chardev_write(struct chardev *chr, const void *buf, size_t len);
void chardev_printf(struct chardev *chr, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
void chardev_set_handlers(struct chardev *chr, chardev_input_fn *input,
                          chardev_connect_fn *connect, void *opaque);
/* True if stdio-backed and a terminal (for live progress lines). */
bool chardev_is_tty(const struct chardev *chr);

#endif
