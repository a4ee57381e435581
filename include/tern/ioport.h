/* ioport.h: the I/O bus: port I/O and MMIO ranges that devices register and vCPU exits reach. */
#ifndef TERN_IOPORT_H
#define TERN_IOPORT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

enum io_space { IO_SPACE_PIO, IO_SPACE_MMIO };

/* Handle an access of (size) bytes at (addr) (offset from the range base in
 * (offset)). On a read the handler fills (data); on a write it consumes it. */
typedef void io_handler_fn(void *opaque, uint64_t offset, uint8_t *data, unsigned size,
                           bool is_write);

struct io_range {
    enum io_space space;
    uint64_t base, len;
    io_handler_fn *handler;
    void *opaque;
};

#define IO_BUS_MAX_RANGES 32

struct io_bus {
    GMutex lock; /* the device lock: one access at a time, across vCPUs */
    unsigned nr_ranges;
    struct io_range ranges[IO_BUS_MAX_RANGES];
    uint64_t unhandled; /* accesses nobody claimed (reads return all ones) */
};

/* Prepare (bus) (empty, lock initialised) / release its lock. */
void io_bus_init(struct io_bus *bus);
void io_bus_destroy(struct io_bus *bus);
/* Claim [base, base + len) in (space) for (handler) with (opaque). Zero length,
 * wrap-around (or beyond port 0xffff for PIO), overlapping an existing range of
 * the same space, or more than IO_BUS_MAX_RANGES ranges is an error. */
bool io_bus_register(struct io_bus *bus, enum io_space space, uint64_t base, uint64_t len,
                     io_handler_fn *handler, void *opaque, GError **errp);
/* Called from vCPU threads for every PIO/MMIO exit: the access of (size) bytes
 * at (addr) goes to the range holding (addr), under (lock). Unclaimed: reads
 * fill (data) with all ones, writes are dropped; both count in (unhandled). */
void io_bus_dispatch(struct io_bus *bus, enum io_space space, uint64_t addr, uint8_t *data,
                     unsigned size, bool is_write);

#endif
