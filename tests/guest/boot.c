/* boot.c: copy the PVH start_info (command line, memory map) out of low memory; usable RAM above the image. */
#include "guest.h"

#define PVH_MAGIC 0x336ec578u
#define E820_RAM 1
#define MAP_LIMIT (64ull << 30) /* RAM above this is left alone */

uint32_t boot_start_info_pa;
char boot_cmdline[1024];
struct ram_extent boot_ram[RAM_EXTENTS_MAX];
int boot_ram_count;

extern uint8_t _end[];
extern uint64_t pdpt_table[];

/* Page directories for RAM above 4 GiB (the boot stub maps the low 4 GiB). */
static uint64_t high_pds[(MAP_LIMIT >> 30) - 4][512] __attribute__((aligned(4096)));

static void boot_add_ram(uint64_t base, uint64_t size)
{
    uint64_t lo = ((uint64_t)_end + 0x1fffff) & ~0x1fffffull;
    uint64_t end = base + size;

    if (end > MAP_LIMIT)
        end = MAP_LIMIT;
    if (base < lo)
        base = lo;
    base = (base + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1);
    end &= ~(uint64_t)(PAGE_SIZE - 1);
    if (end <= base || boot_ram_count == RAM_EXTENTS_MAX)
        return;
    boot_ram[boot_ram_count].base = base;
    boot_ram[boot_ram_count].pages = (end - base) / PAGE_SIZE;
    boot_ram_count++;
}

void boot_copy_start_info(void)
{
    const uint8_t *si = (const uint8_t *)(uint64_t)boot_start_info_pa;
    uint32_t magic = 0, version, entries;
    uint64_t cmdline, memmap;

    if (si)
        memcpy(&magic, si, 4);
    if (magic != PVH_MAGIC) {
        boot_add_ram(0, 256ull << 20); /* no start_info: assume a small machine */
        return;
    }
    memcpy(&version, si + 4, 4);
    memcpy(&cmdline, si + 24, 8);
    memcpy(&memmap, si + 40, 8);
    memcpy(&entries, si + 48, 4);
    if (cmdline) {
        const char *s = (const char *)cmdline;
        size_t n = 0;

        while (n < sizeof(boot_cmdline) - 1 && s[n]) {
            boot_cmdline[n] = s[n];
            n++;
        }
        boot_cmdline[n] = 0;
    }
    if (version < 1 || !memmap || !entries) {
        boot_add_ram(0, 256ull << 20);
        return;
    }
    for (uint32_t i = 0; i < entries && i < 128; i++) {
        const uint8_t *e = (const uint8_t *)memmap + 24 * i;
        uint64_t addr, size;
        uint32_t type;

        memcpy(&addr, e, 8);
        memcpy(&size, e + 8, 8);
        memcpy(&type, e + 16, 4);
        if (type == E820_RAM)
            boot_add_ram(addr, size);
    }
}

/* Extend the identity map over RAM between 4 GiB and MAP_LIMIT (new entries only). */
void boot_map_high_ram(void)
{
    for (int i = 0; i < boot_ram_count; i++) {
        uint64_t end = boot_ram[i].base + boot_ram[i].pages * PAGE_SIZE;

        for (uint64_t a = boot_ram[i].base & ~0x1fffffull; a < end; a += 0x200000) {
            uint64_t gib = a >> 30;
            uint64_t *pd;

            if (gib < 4)
                continue;
            pd = high_pds[gib - 4];
            pd[(a >> 21) & 511] = a | PTE_P | PTE_RW | PTE_US | PTE_PS;
            pdpt_table[gib] = (uint64_t)pd | PTE_P | PTE_RW | PTE_US;
        }
    }
}

uint64_t boot_usable_pages(void)
{
    uint64_t n = 0;

    for (int i = 0; i < boot_ram_count; i++)
        n += boot_ram[i].pages;
    return n;
}

/* Physical (= virtual) address of usable page number (idx). */
uint64_t boot_page_addr(uint64_t idx)
{
    for (int i = 0; i < boot_ram_count; i++) {
        if (idx < boot_ram[i].pages)
            return boot_ram[i].base + idx * PAGE_SIZE;
        idx -= boot_ram[i].pages;
    }
    return 0;
}
