/* power.c: debug-exit port and i8042 reset: how the test guest ends or restarts itself. */
#include <string.h>

#include "tern/ioport.h"
#include "tern/power.h"

struct power {
    power_request_fn *request;
    void *opaque;
};

static void debug_exit_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size,
                          bool is_write)
{
    struct power *p = opaque;
    (void)offset;
    if (is_write)
        p->request(p->opaque, POWER_REQUEST_OFF, (data[0] << 1) | 1);
    else
        memset(data, 0xff, size);
}

/* Only the reset command of the i8042 controller: the status reads as idle
 * (no data, input buffer empty) so polling guests do not wait forever. */
static void i8042_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool is_write)
{
    struct power *p = opaque;
    (void)offset;
    if (is_write && data[0] == 0xfe)
        p->request(p->opaque, POWER_REQUEST_RESET, 0);
    else if (!is_write)
        memset(data, 0, size);
}

struct power *power_create(struct io_bus *bus, power_request_fn *fn, void *opaque, GError **errp)
{
    struct power *p = g_new0(struct power, 1);
    p->request = fn;
    p->opaque = opaque;
    if (!io_bus_register(bus, IO_SPACE_PIO, POWER_DEBUG_EXIT_PORT, 1, debug_exit_io, p, errp) ||
        !io_bus_register(bus, IO_SPACE_PIO, POWER_I8042_PORT, 1, i8042_io, p, errp)) {
        g_free(p);
        return NULL;
    }
    return p;
}

void power_destroy(struct power *p)
{
    g_free(p);
}
