/* memory.h: guest RAM, memfd-backed regions in the x86 layout, and checked access to it. */
#ifndef TERN_MEMORY_H
#define TERN_MEMORY_H

#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define GUEST_PAGE_SHIFT 12
#define GUEST_PAGE_SIZE (1ULL << GUEST_PAGE_SHIFT)

/* RAM fills guest-physical memory from 0 up to 3 GiB; 3-4 GiB is the MMIO hole
 * (LAPIC, IOAPIC, ...); the rest of RAM starts at 4 GiB. */
#define GUEST_LOW_RAM_END (3ULL << 30)
#define GUEST_HIGH_RAM_BASE (4ULL << 30)
#define GUEST_RAM_MIN (16ULL << 20)
#define GUEST_RAM_MAX_REGIONS 2
/* Seals every RAM memfd carries, and a received one must carry (cpr-transfer). */
#define GUEST_RAM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

struct ram_region {
    uint64_t gpa;  /* first guest-physical address */
    uint64_t size; /* bytes, a multiple of the page size */
    uint8_t *hva;  /* shared mapping of (memfd) */
    int memfd;
};

struct guest_ram {
    uint64_t size; /* total RAM in bytes (the -m value) */
    unsigned nr_regions;
    struct ram_region regions[GUEST_RAM_MAX_REGIONS];
    uint64_t nr_gfns; /* highest guest frame number + 1 (hole included) */
    /* One bit per guest frame: pages Tern itself wrote (KVM logs only vCPU writes). */
    unsigned long *vmm_dirty;
    /* Handed over to another process (cpr-transfer): unmapped, never touched again. */
    bool released;
    /* Held by guest_ram_release() and by guest_ram_crc32(), which the main
     * thread may run while a sender thread hands the RAM over. */
    GMutex release_lock;
};

/* Map (size) bytes of guest RAM (>= GUEST_RAM_MIN, page-aligned), one memfd per
 * region; a size above the host's physical RAM + swap is an error naming both. */
struct guest_ram *guest_ram_create(uint64_t size, GError **errp);
void guest_ram_destroy(struct guest_ram *ram);

/* Host pointer for [gpa, gpa + len), or NULL unless the range lies inside one region. */
void *guest_ram_ptr(struct guest_ram *ram, uint64_t gpa, uint64_t len);
/* The region holding (gpa), or NULL. */
const struct ram_region *guest_ram_region_of(const struct guest_ram *ram, uint64_t gpa);

/* The one path for every write Tern makes into guest RAM: bounds-checked, and
 * the pages are marked in (vmm_dirty) so migration sends them again. */
bool guest_ram_write(struct guest_ram *ram, uint64_t gpa, const void *src, uint64_t len,
                     GError **errp);
bool guest_ram_read(struct guest_ram *ram, uint64_t gpa, void *dst, uint64_t len, GError **errp);

/* CRC-32 of all RAM contents in gpa order (never-touched holes count as zeros,
 * without being read or allocated). Two VMs with equal RAM have equal digests. */
uint32_t guest_ram_crc32(struct guest_ram *ram);

/* Make [gpa, gpa + len) read as zero, giving the pages back to the host (page
 * aligned; refused unless it lies inside RAM). Marks the pages in vmm_dirty. */
bool guest_ram_zero(struct guest_ram *ram, uint64_t gpa, uint64_t len, GError **errp);

/* Return all of (ram) to never-touched zeros (system reset): the host memory
 * is released (hole punching) and the pages that held data are marked in
 * (vmm_dirty). Call with the vCPUs stopped. */
void guest_ram_discard(struct guest_ram *ram);

/* Bytes of RAM actually backed by the host (not holes). */
uint64_t guest_ram_populated_bytes(struct guest_ram *ram);

/* Hole skipping for migration: the first data (populated) range at or after
 * (gpa), in gpa order across regions, as [*data_start, *data_end) (inside one
 * region; data_start >= gpa). False when no data follows (gpa): the rest of
 * RAM is holes, which read as zeros and must not be read (reading a memfd hole
 * allocates it). Use: for (g = 0; guest_ram_next_data(ram, g, &s, &e); g = e).
 * Where the host cannot report holes, the rest of a region counts as data. */
bool guest_ram_next_data(const struct guest_ram *ram, uint64_t gpa, uint64_t *data_start,
                         uint64_t *data_end);

/* Fill (out) (room for (max)) with an e820-style map: the RAM regions as
 * mapped, in gpa order, type E820_RAM. Returns the count. */
struct e820_range {
    uint64_t addr, size;
    uint32_t type;
};
#define E820_RAM 1
#define E820_RESERVED 2
unsigned guest_ram_e820(const struct guest_ram *ram, struct e820_range *out, unsigned max);

/* cpr-transfer. Is (fd) fit to be region (index) of (ram): a memory file of
 * exactly the region's size, sealed with GUEST_RAM_SEALS? */
bool guest_ram_check_fd(const struct guest_ram *ram, unsigned index, int fd, GError **errp);
/* Map (fd) (checked) over region (index) at the same host address and take
 * it over (our own memfd is closed). Call with the vCPUs never run since. */
bool guest_ram_adopt_fd(struct guest_ram *ram, unsigned index, int fd, GError **errp);
/* Forget what Tern itself wrote: the dirty bitmap starts clean. */
void guest_ram_clear_dirty(struct guest_ram *ram);
/* Give guest RAM up for good (it now belongs to another process): every
 * region becomes an inaccessible reservation and its memfd is closed; reads,
 * writes and digests are refused from then on. vCPUs must never run again. */
void guest_ram_release(struct guest_ram *ram);
static inline bool guest_ram_released(const struct guest_ram *ram)
{
    return __atomic_load_n(&ram->released, __ATOMIC_ACQUIRE);
}

#endif
