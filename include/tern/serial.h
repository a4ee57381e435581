/* serial.h: a 16550A UART (COM1 at 0x3f8, IRQ 4) on a character back-end. */
#ifndef TERN_SERIAL_H
#define TERN_SERIAL_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/device.h"

struct serial;
struct io_bus;
struct chardev;

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ 4

/* Drive interrupt line (irq) to (level). */
typedef void serial_irq_fn(void *opaque, unsigned irq, bool level);

/* A UART at ports [base, base + 8) talking to (chr) (may be NULL: output dropped). */
struct serial *serial_create(struct io_bus *bus, uint16_t base, unsigned irq, struct chardev *chr,
                             serial_irq_fn *raise, void *opaque, GError **errp);
void serial_destroy(struct serial *s);
void serial_reset(struct serial *s);
/* After loading state: drive the interrupt line to what the registers say. */
void serial_sync_irq(struct serial *s);
struct device serial_device(struct serial *s);
/* The UART's vmstate table (for table checks). */
const struct vmstate_desc *serial_vmstate(void);

#endif
