/* power.h: the ways a guest powers off or resets without ACPI: an isa-debug-exit
 * port (0xf4, exit status (v << 1) | 1 as in QEMU) and the i8042 reset line. */
#ifndef TERN_POWER_H
#define TERN_POWER_H

#include <glib.h>
#include <stdbool.h>

struct io_bus;
struct power;

#define POWER_DEBUG_EXIT_PORT 0xf4
#define POWER_I8042_PORT 0x64

enum power_request { POWER_REQUEST_OFF, POWER_REQUEST_RESET };

/* (code): the requested exit status for POWER_REQUEST_OFF. Called on a vCPU thread. */
typedef void power_request_fn(void *opaque, enum power_request req, int code);

struct power *power_create(struct io_bus *bus, power_request_fn *fn, void *opaque, GError **errp);
void power_destroy(struct power *p);

#endif
