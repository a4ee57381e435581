/* memory.c: guest RAM as memfd-backed shared mappings, checked access, hole-aware digests. */
#include "tern/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <zlib.h>

#include "tern/bitmap.h"
#include "tern/crc32.h"
#include "tern/util.h"

/* Guest-physical addresses above this are beyond any x86-64 host (52 bits). */
#define GUEST_PHYS_LIMIT (1ULL << 52)
/* Chunk size for reading data ranges in guest_ram_crc32(). */
#define CRC_CHUNK (1ULL << 20)

/* Physical RAM and swap of the host, in bytes. */
static void host_memory(uint64_t *ram, uint64_t *swap)
{
    struct sysinfo si;

    if (sysinfo(&si) < 0) {
        *ram = *swap = UINT64_MAX / 4; /* unknown: let mmap/ftruncate decide */
        return;
    }
    *ram = (uint64_t)si.totalram * si.mem_unit;
    *swap = (uint64_t)si.totalswap * si.mem_unit;
}

static bool region_map(struct ram_region *r, const char *name, uint64_t gpa, uint64_t size,
                       GError **errp)
{
    void *p;

    r->gpa = gpa;
    r->size = size;
    r->memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (r->memfd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno), "memfd_create(%s): %s",
                    name, g_strerror(errno));
        return false;
    }
    if (ftruncate(r->memfd, (off_t)size) < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot size guest RAM region %s to %" G_GUINT64_FORMAT " bytes: %s", name,
                    size, g_strerror(errno));
        return false;
    }
    /* A fixed size: a process that receives this memfd (cpr-transfer) can
     * map all of it without fearing a SIGBUS from someone shrinking it. */
    if (fcntl(r->memfd, F_ADD_SEALS, GUEST_RAM_SEALS) < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot seal guest RAM region %s: %s", name, g_strerror(errno));
        return false;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, r->memfd, 0);
    if (p == MAP_FAILED) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot map guest RAM region %s (%" G_GUINT64_FORMAT " bytes): %s", name, size,
                    g_strerror(errno));
        return false;
    }
    r->hva = p;
    return true;
}

struct guest_ram *guest_ram_create(uint64_t size, GError **errp)
{
    struct guest_ram *ram;
    uint64_t low, host_ram, host_swap, end;

    if (size < GUEST_RAM_MIN) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "guest RAM size %" G_GUINT64_FORMAT " bytes is below the minimum of %llu MiB",
                    size, GUEST_RAM_MIN / MiB);
        return NULL;
    }
    if (!IS_ALIGNED(size, GUEST_PAGE_SIZE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "guest RAM size %" G_GUINT64_FORMAT " bytes is not a multiple of the "
                    "page size (%llu)",
                    size, GUEST_PAGE_SIZE);
        return NULL;
    }
    host_memory(&host_ram, &host_swap);
    if (size > GUEST_PHYS_LIMIT - GUEST_HIGH_RAM_BASE || size > host_ram + host_swap) {
        g_autofree char *s = g_format_size_full(size, G_FORMAT_SIZE_IEC_UNITS);
        g_autofree char *r = g_format_size_full(host_ram, G_FORMAT_SIZE_IEC_UNITS);
        g_autofree char *w = g_format_size_full(host_swap, G_FORMAT_SIZE_IEC_UNITS);

        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "guest RAM size %s (%" G_GUINT64_FORMAT " bytes) exceeds what the host "
                    "can back: %s physical RAM + %s swap",
                    s, size, r, w);
        return NULL;
    }

    ram = g_new0(struct guest_ram, 1);
    g_mutex_init(&ram->release_lock);
    ram->size = size;
    for (unsigned i = 0; i < GUEST_RAM_MAX_REGIONS; i++)
        ram->regions[i].memfd = -1;

    low = MIN(size, GUEST_LOW_RAM_END);
    if (!region_map(&ram->regions[0], "tern-ram-low", 0, low, errp))
        goto fail;
    ram->nr_regions = 1;
    end = low;
    if (size > low) {
        if (!region_map(&ram->regions[1], "tern-ram-high", GUEST_HIGH_RAM_BASE, size - low, errp))
            goto fail;
        ram->nr_regions = 2;
        end = GUEST_HIGH_RAM_BASE + (size - low);
    }
    ram->nr_gfns = end >> GUEST_PAGE_SHIFT;
    ram->vmm_dirty = bitmap_new(ram->nr_gfns);
    if (!ram->vmm_dirty) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "cannot allocate the dirty bitmap for %" G_GUINT64_FORMAT " pages",
                    ram->nr_gfns);
        goto fail;
    }
    return ram;

fail:
    guest_ram_destroy(ram);
    return NULL;
}

void guest_ram_destroy(struct guest_ram *ram)
{
    if (!ram)
        return;
    for (unsigned i = 0; i < GUEST_RAM_MAX_REGIONS; i++) {
        struct ram_region *r = &ram->regions[i];

        if (r->hva)
            munmap(r->hva, r->size);
        if (r->memfd >= 0)
            close(r->memfd);
    }
    free(ram->vmm_dirty);
    g_mutex_clear(&ram->release_lock);
    g_free(ram);
}

const struct ram_region *guest_ram_region_of(const struct guest_ram *ram, uint64_t gpa)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];

        if (gpa >= r->gpa && gpa - r->gpa < r->size)
            return r;
    }
    return NULL;
}

void *guest_ram_ptr(struct guest_ram *ram, uint64_t gpa, uint64_t len)
{
    const struct ram_region *r = guest_ram_region_of(ram, gpa);
    uint64_t off;

    if (!r || guest_ram_released(ram))
        return NULL;
    off = gpa - r->gpa;
    if (len > r->size - off) /* off < size, so no wrap-around */
        return NULL;
    return r->hva + off;
}

/* Atomically mark the frames of [gpa, gpa + len) (len > 0) in (map). */
static void mark_dirty(unsigned long *map, uint64_t gpa, uint64_t len)
{
    uint64_t first = gpa >> GUEST_PAGE_SHIFT;
    uint64_t last = (gpa + len - 1) >> GUEST_PAGE_SHIFT;

    /* The data must be visible before the bit: a harvester that sees the bit
     * and reads the page then sends the new contents. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (uint64_t gfn = first; gfn <= last; gfn++)
        bitmap_set_atomic(map, gfn);
}

static void set_range_error(GError **errp, const char *what, uint64_t gpa, uint64_t len)
{
    if (len > UINT64_MAX - gpa)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "guest RAM %s at 0x%" G_GINT64_MODIFIER "x of %" G_GUINT64_FORMAT
                    " bytes wraps around the address space",
                    what, gpa, len);
    else
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "guest RAM %s [0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                    "x) is not inside one RAM region",
                    what, gpa, gpa + len);
}

bool guest_ram_write(struct guest_ram *ram, uint64_t gpa, const void *src, uint64_t len,
                     GError **errp)
{
    void *dst;

    if (len == 0)
        return true;
    dst = guest_ram_ptr(ram, gpa, len);
    if (!dst) {
        set_range_error(errp, "write", gpa, len);
        return false;
    }
    /* Whole pages go through the memfd: a never-touched page is then filled
     * by the copy instead of being zeroed by a page fault first, which halves
     * the cost of loading RAM (the incoming migration's hot path). */
    const struct ram_region *r = guest_ram_region_of(ram, gpa);
    uint64_t done = 0;
    if (len >= GUEST_PAGE_SIZE) {
        ssize_t n = pwrite(r->memfd, src, len, (off_t)(gpa - r->gpa));
        done = n > 0 ? (uint64_t)n : 0;
    }
    if (done < len)
        memcpy((uint8_t *)dst + done, (const uint8_t *)src + done, len - done);
    mark_dirty(ram->vmm_dirty, gpa, len);
    return true;
}

bool guest_ram_read(struct guest_ram *ram, uint64_t gpa, void *dst, uint64_t len, GError **errp)
{
    const void *src;

    if (len == 0)
        return true;
    src = guest_ram_ptr(ram, gpa, len);
    if (!src) {
        set_range_error(errp, "read", gpa, len);
        return false;
    }
    memcpy(dst, src, len);
    return true;
}

/* Next data range of region (r) at or after offset (off): [*start, *end) as
 * offsets. False when the rest of the region is a hole. A file system without
 * SEEK_DATA support makes the whole rest one data range. */
static bool region_next_data(const struct ram_region *r, uint64_t off, uint64_t *start,
                             uint64_t *end)
{
    off_t data, hole;

    if (off >= r->size)
        return false;
    data = lseek(r->memfd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO)
            return false;
        *start = off;
        *end = r->size;
        return true;
    }
    if ((uint64_t)data >= r->size)
        return false;
    hole = lseek(r->memfd, data, SEEK_HOLE);
    if (hole < 0 || (uint64_t)hole > r->size)
        hole = (off_t)r->size;
    *start = (uint64_t)data;
    *end = (uint64_t)hole;
    return true;
}

bool guest_ram_next_data(const struct guest_ram *ram, uint64_t gpa, uint64_t *data_start,
                         uint64_t *data_end)
{
    if (guest_ram_released(ram))
        return false;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];
        uint64_t off, s, e;

        if (gpa >= r->gpa + r->size)
            continue;
        off = gpa > r->gpa ? gpa - r->gpa : 0;
        if (region_next_data(r, off, &s, &e)) {
            *data_start = r->gpa + s;
            *data_end = r->gpa + e;
            return true;
        }
    }
    return false;
}

void guest_ram_discard(struct guest_ram *ram)
{
    if (guest_ram_released(ram))
        return;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];
        uint64_t off = 0, s, e;

        /* What was data becomes zeros: a running migration must resend it. */
        while (region_next_data(r, off, &s, &e)) {
            mark_dirty(ram->vmm_dirty, r->gpa + s, e - s);
            off = e;
        }
        if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)r->size) == 0)
            continue;
        /* No hole punching here: zero the data ranges by hand. */
        for (off = 0; region_next_data(r, off, &s, &e); off = e)
            memset(r->hva + s, 0, e - s);
    }
}

uint64_t guest_ram_populated_bytes(struct guest_ram *ram)
{
    uint64_t total = 0;

    if (guest_ram_released(ram))
        return 0;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];
        uint64_t off = 0, s, e;

        while (region_next_data(r, off, &s, &e)) {
            total += e - s;
            off = e;
        }
    }
    return total;
}

/* CRC-32 of (n) zero bytes in O(log n) crc32_combine() steps (by doubling). */
static uint32_t crc32_of_zeros(uint64_t n)
{
    static const uint8_t zero;
    uLong result = crc32(0L, Z_NULL, 0); /* the CRC of nothing */
    uLong block = crc32(0L, &zero, 1);   /* CRC of (block_len) zero bytes */
    uint64_t block_len = 1;

    while (n) {
        if (n & 1)
            result = crc32_combine(result, block, (z_off_t)block_len);
        n >>= 1;
        if (n) {
            block = crc32_combine(block, block, (z_off_t)block_len);
            block_len <<= 1;
        }
    }
    return (uint32_t)result;
}

/* Extend (crc) by (n) zero bytes without touching memory. */
static uLong crc32_extend_zeros(uLong crc, uint64_t n)
{
    if (n == 0)
        return crc;
    return crc32_combine(crc, crc32_of_zeros(n), (z_off_t)n);
}

uint32_t guest_ram_crc32(struct guest_ram *ram)
{
    uLong crc = crc32(0L, Z_NULL, 0);

    g_mutex_lock(&ram->release_lock);
    if (guest_ram_released(ram)) {
        g_mutex_unlock(&ram->release_lock);
        return 0;
    }

    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct ram_region *r = &ram->regions[i];
        uint64_t off = 0, s, e;

        while (region_next_data(r, off, &s, &e)) {
            crc = crc32_extend_zeros(crc, s - off);
            for (uint64_t p = s; p < e; p += CRC_CHUNK) {
                uint64_t n = MIN(CRC_CHUNK, e - p);

                crc = tern_crc32((uint32_t)crc, r->hva + p, n);
            }
            off = e;
        }
        crc = crc32_extend_zeros(crc, r->size - off);
    }
    g_mutex_unlock(&ram->release_lock);
    return (uint32_t)crc;
}

unsigned guest_ram_e820(const struct guest_ram *ram, struct e820_range *out, unsigned max)
{
    unsigned n = 0;

    for (unsigned i = 0; i < ram->nr_regions && n < max; i++) {
        out[n].addr = ram->regions[i].gpa;
        out[n].size = ram->regions[i].size;
        out[n].type = E820_RAM;
        n++;
    }
    return n;
}

bool guest_ram_zero(struct guest_ram *ram, uint64_t gpa, uint64_t len, GError **errp)
{
    if (!IS_ALIGNED(gpa | len, GUEST_PAGE_SIZE)) {
        set_range_error(errp, "zero unaligned", gpa, len);
        return false;
    }
    if (guest_ram_released(ram)) {
        set_range_error(errp, "zero (RAM handed over)", gpa, len);
        return false;
    }
    /* Check the whole range first: nothing changes unless all of it is RAM. */
    for (uint64_t done = 0; done < len;) {
        const struct ram_region *r = guest_ram_region_of(ram, gpa + done);
        if (!r) {
            set_range_error(errp, "zero", gpa, len);
            return false;
        }
        done += MIN(len - done, r->gpa + r->size - (gpa + done));
    }
    for (uint64_t done = 0; done < len;) {
        const struct ram_region *r = guest_ram_region_of(ram, gpa + done);
        uint64_t off = gpa + done - r->gpa;
        uint64_t n = MIN(len - done, r->size - off);
        if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n) !=
            0)
            memset(r->hva + off, 0, n);
        done += n;
    }
    mark_dirty(ram->vmm_dirty, gpa, len);
    return true;
}

/* ---- cpr-transfer: handing the memfds to another process ---- */

bool guest_ram_check_fd(const struct guest_ram *ram, unsigned index, int fd, GError **errp)
{
    const struct ram_region *r;
    struct stat st;
    int seals;

    if (index >= ram->nr_regions) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "RAM region %u: this VM has %u region(s)",
                    index, ram->nr_regions);
        return false;
    }
    r = &ram->regions[index];
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "RAM region %u: the file descriptor is not a memory file", index);
        return false;
    }
    if ((uint64_t)st.st_size != r->size) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "RAM region %u: the memfd holds %" G_GUINT64_FORMAT " bytes, this VM's "
                    "region at 0x%" G_GINT64_MODIFIER "x has %" G_GUINT64_FORMAT,
                    index, (uint64_t)st.st_size, r->gpa, r->size);
        return false;
    }
    seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & GUEST_RAM_SEALS) != GUEST_RAM_SEALS) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "RAM region %u: the memfd is not sealed against shrinking and growing "
                    "(seals 0x%x)",
                    index, seals < 0 ? 0 : seals);
        return false;
    }
    return true;
}

bool guest_ram_adopt_fd(struct guest_ram *ram, unsigned index, int fd, GError **errp)
{
    struct ram_region *r = &ram->regions[index];
    void *p;

    /* Over our own mapping, at the same address: the accelerator's memory
     * slots and the software CPU's pointers stay valid as they are. */
    p = mmap(r->hva, r->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd,
             0);
    if (p == MAP_FAILED) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot map the received RAM region %u: %s", index, g_strerror(errno));
        return false;
    }
    close(r->memfd);
    r->memfd = fd;
    return true;
}

void guest_ram_clear_dirty(struct guest_ram *ram)
{
    memset(ram->vmm_dirty, 0, BITMAP_LONGS(ram->nr_gfns) * sizeof(unsigned long));
}

void guest_ram_release(struct guest_ram *ram)
{
    g_mutex_lock(&ram->release_lock);
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        struct ram_region *r = &ram->regions[i];

        /* An inaccessible reservation, not a hole: nothing else can be mapped
         * where the accelerator's slots still point, and any access faults. */
        if (r->hva &&
            mmap(r->hva, r->size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
            munmap(r->hva, r->size);
            r->hva = NULL; /* not ours any more: destroy must not unmap it again */
        }
        if (r->memfd >= 0)
            close(r->memfd);
        r->memfd = -1;
    }
    __atomic_store_n(&ram->released, true, __ATOMIC_RELEASE);
    g_mutex_unlock(&ram->release_lock);
}
