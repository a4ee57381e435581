/* loader.h: PVH boot: load an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note
 * and build the hvm_start_info (memory map, command line) it expects. */
#ifndef TERN_LOADER_H
#define TERN_LOADER_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_ram;

/* Boot data area, fixed, [PVH_BOOT_DATA_START, PVH_BOOT_DATA_END): no ELF
 * segment may overlap it.
 *   0x6000  struct hvm_start_info (56 bytes; its gpa goes in EBX)
 *   0x6038  the memory map: struct hvm_memmap_table_entry[], from guest_ram_e820()
 *   0x7000  the command line, NUL-terminated, at most PVH_CMDLINE_MAX bytes + NUL */
#define PVH_BOOT_DATA_START 0x6000u
#define PVH_START_INFO_GPA 0x6000u
#define PVH_MEMMAP_GPA (PVH_START_INFO_GPA + 56u)
#define PVH_MEMMAP_MAX 16u
#define PVH_CMDLINE_GPA 0x7000u
#define PVH_CMDLINE_MAX 4095u
#define PVH_BOOT_DATA_END 0x8000u

struct boot_info {
    uint32_t entry;                    /* 32-bit PVH entry point (physical) */
    uint32_t start_info;               /* gpa of struct hvm_start_info (goes in EBX) */
    uint64_t kernel_start, kernel_end; /* physical extent of the loaded segments */
};

/* Load (image) of (len) bytes (an ELF64 or ELF32 executable for x86-64/i386
 * with a XEN_ELFNOTE_PHYS32_ENTRY note) into (ram): every PT_LOAD at its
 * p_paddr through guest_ram_write(), then the boot data above with (cmdline)
 * (NULL: empty). Fills (out). The image is untrusted: everything is checked
 * before guest RAM is written, and each problem is a clear error ("not an ELF
 * file", "segment 2 [0x..-0x..) lies outside guest RAM", ...). */
bool loader_load_pvh(struct guest_ram *ram, const void *image, size_t len, const char *cmdline,
                     struct boot_info *out, GError **errp);

#endif
