/* ioport.c: the I/O bus: a fixed table of PIO/MMIO ranges, dispatched under the device lock. */
#include "tern/ioport.h"

#include <string.h>

#include "tern/util.h"

/* Port I/O addresses are 16 bits wide. */
#define PIO_SPACE_END 0x10000ULL

void io_bus_init(struct io_bus *bus)
{
    memset(bus, 0, sizeof(*bus));
    g_mutex_init(&bus->lock);
}

void io_bus_destroy(struct io_bus *bus)
{
    g_mutex_clear(&bus->lock);
    bus->nr_ranges = 0;
}

static const char *space_name(enum io_space space)
{
    return space == IO_SPACE_PIO ? "port I/O" : "MMIO";
}

bool io_bus_register(struct io_bus *bus, enum io_space space, uint64_t base, uint64_t len,
                     io_handler_fn *handler, void *opaque, GError **errp)
{
    bool ok = false;

    if (space != IO_SPACE_PIO && space != IO_SPACE_MMIO) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "unknown I/O space %d", (int)space);
        return false;
    }
    if (len == 0 || !handler) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s range at 0x%" G_GINT64_MODIFIER "x: %s", space_name(space), base,
                    len == 0 ? "zero length" : "no handler");
        return false;
    }
    if (len > UINT64_MAX - base || (space == IO_SPACE_PIO && base + len > PIO_SPACE_END)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s range at 0x%" G_GINT64_MODIFIER "x of length 0x%" G_GINT64_MODIFIER
                    "x goes beyond the address space",
                    space_name(space), base, len);
        return false;
    }

    g_mutex_lock(&bus->lock);
    for (unsigned i = 0; i < bus->nr_ranges; i++) {
        const struct io_range *r = &bus->ranges[i];

        if (r->space == space && base < r->base + r->len && r->base < base + len) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "%s range [0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                        "x) overlaps [0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER "x)",
                        space_name(space), base, base + len, r->base, r->base + r->len);
            goto out;
        }
    }
    if (bus->nr_ranges >= IO_BUS_MAX_RANGES) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "too many I/O ranges (at most %d)",
                    IO_BUS_MAX_RANGES);
        goto out;
    }
    bus->ranges[bus->nr_ranges++] = (struct io_range){
        .space = space,
        .base = base,
        .len = len,
        .handler = handler,
        .opaque = opaque,
    };
    ok = true;
out:
    g_mutex_unlock(&bus->lock);
    return ok;
}

void io_bus_dispatch(struct io_bus *bus, enum io_space space, uint64_t addr, uint8_t *data,
                     unsigned size, bool is_write)
{
    g_mutex_lock(&bus->lock);
    for (unsigned i = 0; i < bus->nr_ranges; i++) {
        const struct io_range *r = &bus->ranges[i];

        if (r->space == space && addr >= r->base && addr - r->base < r->len) {
            r->handler(r->opaque, addr - r->base, data, size, is_write);
            g_mutex_unlock(&bus->lock);
            return;
        }
    }
    bus->unhandled++;
    if (!is_write)
        memset(data, 0xff, size);
    g_mutex_unlock(&bus->lock);
}
