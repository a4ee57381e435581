/* pvh.h: the Xen PVH boot ABI (start_info, memory map, modules, ELF note), C11 only.
 * All fields are little-endian; the structures are written to guest memory as is. */
#ifndef TERN_PVH_H
#define TERN_PVH_H

#include <stdint.h>

/* ELF note (name "Xen") whose descriptor is the 32-bit physical PVH entry point. */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define HVM_START_MAGIC_VALUE 0x336ec578u /* "xEn3" with the 0x80 bit of 'E' set */
#define HVM_START_VERSION 1               /* version 1 added the memory map */

/* Physical address of this structure goes in EBX at the entry point.
 * An address field of 0 means "not present". */
struct hvm_start_info {
    uint32_t magic;         /* HVM_START_MAGIC_VALUE */
    uint32_t version;       /* HVM_START_VERSION */
    uint32_t flags;         /* SIF_* flags (none used) */
    uint32_t nr_modules;    /* entries at modlist_paddr */
    uint64_t modlist_paddr; /* array of struct hvm_modlist_entry */
    uint64_t cmdline_paddr; /* zero-terminated ASCII command line */
    uint64_t rsdp_paddr;    /* ACPI RSDP, 0: the guest searches for it */
    /* version 1 */
    uint64_t memmap_paddr; /* array of struct hvm_memmap_table_entry */
    uint32_t memmap_entries;
    uint32_t reserved; /* must be zero */
};

struct hvm_modlist_entry {
    uint64_t paddr;         /* module start */
    uint64_t size;          /* module size in bytes */
    uint64_t cmdline_paddr; /* the module's command line, or 0 */
    uint64_t reserved;
};

/* Types as in e820. */
#define HVM_MEMMAP_TYPE_RAM 1
#define HVM_MEMMAP_TYPE_RESERVED 2
#define HVM_MEMMAP_TYPE_ACPI 3
#define HVM_MEMMAP_TYPE_NVS 4
#define HVM_MEMMAP_TYPE_UNUSABLE 5
#define HVM_MEMMAP_TYPE_DISABLED 6
#define HVM_MEMMAP_TYPE_PMEM 7

struct hvm_memmap_table_entry {
    uint64_t addr;     /* start of the range */
    uint64_t size;     /* bytes */
    uint32_t type;     /* HVM_MEMMAP_TYPE_* */
    uint32_t reserved; /* must be zero */
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info is 56 bytes");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry is 24 bytes");
_Static_assert(__builtin_offsetof(struct hvm_start_info, memmap_paddr) == 40,
               "memmap_paddr at offset 40");
_Static_assert(__builtin_offsetof(struct hvm_start_info, memmap_entries) == 48,
               "memmap_entries at offset 48");

#endif
