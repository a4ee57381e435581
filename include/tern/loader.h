/* loader.h: PVH boot: load an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note
 * and build the hvm_start_info (memory map, command line) it expects. */
#ifndef TERN_LOADER_H
#define TERN_LOADER_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_ram;

struct boot_info {
    uint32_t entry;             /* 32-bit PVH entry point (physical) */
    uint32_t start_info;        /* gpa of struct hvm_start_info (goes in EBX) */
    uint64_t kernel_start, kernel_end;  /* physical extent of the loaded segments */
};

/* Load (image) of (len) bytes into (ram), write start info and (cmdline).
 * Not ELF, not x86-64/i386, no PVH note, or segments outside RAM: clear errors. */
bool loader_load_pvh(struct guest_ram *ram, const void *image, size_t len,
                     const char *cmdline, struct boot_info *out, GError **errp);

#endif
