/* loader.c: PVH boot: parse an untrusted ELF image, load its segments, write hvm_start_info. */
#include "tern/loader.h"

#include <elf.h>
#include <stdio.h>
#include <string.h>

#include "tern/memory.h"
#include "tern/pvh.h"
#include "tern/util.h"

_Static_assert(PVH_MEMMAP_GPA == PVH_START_INFO_GPA + sizeof(struct hvm_start_info),
               "memory map follows start_info");
_Static_assert(PVH_MEMMAP_GPA + PVH_MEMMAP_MAX * sizeof(struct hvm_memmap_table_entry) <=
                   PVH_CMDLINE_GPA,
               "memory map fits below the command line");
_Static_assert(PVH_CMDLINE_GPA + PVH_CMDLINE_MAX + 1 <= PVH_BOOT_DATA_END,
               "command line fits in the boot data area");

/* A program header, whatever the ELF class. */
struct seg {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz, align;
};

/* The parsed image. */
struct elf {
    const uint8_t *buf;
    size_t len;
    bool is64;
    unsigned phnum;
    struct seg *segs; /* phnum entries */
};

#define LOADER_ERR(errp, ...) g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, __VA_ARGS__)
#define X64 "0x%" G_GINT64_MODIFIER "x"

/* True if [off, off + size) lies inside the image. */
static bool in_image(const struct elf *e, uint64_t off, uint64_t size)
{
    return off <= e->len && size <= e->len - off;
}

static bool elf_read_header(struct elf *e, uint64_t *phoff, unsigned *phentsize, uint64_t *shoff,
                            unsigned *shnum, unsigned *shentsize, GError **errp)
{
    const uint8_t *id = e->buf;
    unsigned machine, type;

    if (e->len < SELFMAG || memcmp(id, ELFMAG, SELFMAG) != 0) {
        LOADER_ERR(errp, "not an ELF file");
        return false;
    }
    if (e->len < EI_NIDENT) {
        LOADER_ERR(errp, "truncated ELF header (%zu bytes)", e->len);
        return false;
    }
    if (id[EI_CLASS] != ELFCLASS64 && id[EI_CLASS] != ELFCLASS32) {
        LOADER_ERR(errp, "unsupported ELF class %u", id[EI_CLASS]);
        return false;
    }
    if (id[EI_DATA] != ELFDATA2LSB) {
        LOADER_ERR(errp, "not a little-endian ELF file");
        return false;
    }
    e->is64 = id[EI_CLASS] == ELFCLASS64;
    if (e->len < (e->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr))) {
        LOADER_ERR(errp, "truncated ELF header (%zu bytes)", e->len);
        return false;
    }
    if (e->is64) {
        Elf64_Ehdr h;

        memcpy(&h, e->buf, sizeof(h));
        machine = h.e_machine;
        type = h.e_type;
        *phoff = h.e_phoff;
        *phentsize = h.e_phentsize;
        e->phnum = h.e_phnum;
        *shoff = h.e_shoff;
        *shentsize = h.e_shentsize;
        *shnum = h.e_shnum;
    } else {
        Elf32_Ehdr h;

        memcpy(&h, e->buf, sizeof(h));
        machine = h.e_machine;
        type = h.e_type;
        *phoff = h.e_phoff;
        *phentsize = h.e_phentsize;
        e->phnum = h.e_phnum;
        *shoff = h.e_shoff;
        *shentsize = h.e_shentsize;
        *shnum = h.e_shnum;
    }
    if (machine != (e->is64 ? EM_X86_64 : EM_386)) {
        LOADER_ERR(errp, "ELF machine %u is not %s", machine, e->is64 ? "x86-64" : "i386");
        return false;
    }
    if (type != ET_EXEC) {
        LOADER_ERR(errp, "ELF type %u is not an executable (ET_EXEC)", type);
        return false;
    }
    return true;
}

static bool elf_read_phdrs(struct elf *e, uint64_t phoff, unsigned phentsize, GError **errp)
{
    size_t want = e->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);

    if (e->phnum == 0) {
        LOADER_ERR(errp, "ELF file has no program headers");
        return false;
    }
    if (e->phnum == PN_XNUM) {
        LOADER_ERR(errp, "ELF file has too many program headers");
        return false;
    }
    if (phentsize != want) {
        LOADER_ERR(errp, "ELF program header size %u, expected %zu", phentsize, want);
        return false;
    }
    if (!in_image(e, phoff, (uint64_t)e->phnum * phentsize)) {
        LOADER_ERR(errp,
                   "program header table [" X64 "-" X64 ") lies outside the image "
                   "(%zu bytes)",
                   phoff, phoff + (uint64_t)e->phnum * phentsize, e->len);
        return false;
    }
    e->segs = g_new0(struct seg, e->phnum);
    for (unsigned i = 0; i < e->phnum; i++) {
        const uint8_t *p = e->buf + phoff + (uint64_t)i * phentsize;
        struct seg *s = &e->segs[i];

        if (e->is64) {
            Elf64_Phdr ph;

            memcpy(&ph, p, sizeof(ph));
            *s = (struct seg){ ph.p_type,   ph.p_offset, ph.p_paddr,
                               ph.p_filesz, ph.p_memsz,  ph.p_align };
        } else {
            Elf32_Phdr ph;

            memcpy(&ph, p, sizeof(ph));
            *s = (struct seg){ ph.p_type,   ph.p_offset, ph.p_paddr,
                               ph.p_filesz, ph.p_memsz,  ph.p_align };
        }
    }
    return true;
}

/* Look for the PVH entry note among the notes in [off, off + size) of the
 * image (already checked to lie inside it), aligned to (align) (4 or 8).
 * Returns 1 if found (*entry set), 0 if not, -1 on a malformed note. */
static int notes_find_entry(const struct elf *e, uint64_t off, uint64_t size, uint64_t align,
                            const char *where, uint32_t *entry, GError **errp)
{
    uint64_t pos = 0;

    while (size - pos >= 12) {
        const uint8_t *n = e->buf + off + pos;
        uint32_t namesz, descsz, type;
        uint64_t name_off, desc_off, next;

        memcpy(&namesz, n, 4);
        memcpy(&descsz, n + 4, 4);
        memcpy(&type, n + 8, 4);
        name_off = pos + 12;
        desc_off = name_off + ALIGN_UP((uint64_t)namesz, align);
        next = desc_off + ALIGN_UP((uint64_t)descsz, align);
        if (desc_off > size || descsz > size - desc_off || name_off + namesz > size) {
            LOADER_ERR(errp, "ELF note at offset " X64 " in %s is truncated", off + pos, where);
            return -1;
        }
        if (type == XEN_ELFNOTE_PHYS32_ENTRY && (namesz == 4 || namesz == 3) &&
            memcmp(e->buf + off + name_off, "Xen", 3) == 0 &&
            (namesz == 3 || e->buf[off + name_off + 3] == '\0')) {
            const uint8_t *d = e->buf + off + desc_off;

            if (descsz == 4) {
                memcpy(entry, d, 4);
            } else if (descsz == 8) {
                uint64_t v;

                memcpy(&v, d, 8);
                if (v > UINT32_MAX) {
                    LOADER_ERR(errp, "PVH entry point " X64 " is above 4 GiB", v);
                    return -1;
                }
                *entry = (uint32_t)v;
            } else {
                LOADER_ERR(errp,
                           "PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) has bad size %u "
                           "(expected 4 or 8)",
                           descsz);
                return -1;
            }
            return 1;
        }
        pos = MIN(next, size);
    }
    return 0;
}

static bool elf_find_entry(const struct elf *e, uint64_t shoff, unsigned shnum, unsigned shentsize,
                           uint32_t *entry, GError **errp)
{
    /* Program headers first (what a loader is meant to use) ... */
    for (unsigned i = 0; i < e->phnum; i++) {
        const struct seg *s = &e->segs[i];
        char where[32];
        int r;

        if (s->type != PT_NOTE)
            continue;
        if (!in_image(e, s->offset, s->filesz)) {
            LOADER_ERR(errp,
                       "note segment %u [" X64 "-" X64 ") lies outside the image "
                       "(%zu bytes)",
                       i, s->offset, s->offset + s->filesz, e->len);
            return false;
        }
        snprintf(where, sizeof(where), "segment %u", i);
        r = notes_find_entry(e, s->offset, s->filesz, s->align == 8 ? 8 : 4, where, entry, errp);
        if (r != 0)
            return r > 0;
    }
    /* ... then note sections, for images whose notes are not in a PT_NOTE. */
    if (shoff != 0 && shnum != 0 &&
        shentsize == (e->is64 ? sizeof(Elf64_Shdr) : sizeof(Elf32_Shdr)) &&
        in_image(e, shoff, (uint64_t)shnum * shentsize)) {
        for (unsigned i = 0; i < shnum; i++) {
            const uint8_t *p = e->buf + shoff + (uint64_t)i * shentsize;
            uint64_t off, size, align;
            uint32_t type;
            char where[32];
            int r;

            if (e->is64) {
                Elf64_Shdr sh;

                memcpy(&sh, p, sizeof(sh));
                type = sh.sh_type;
                off = sh.sh_offset;
                size = sh.sh_size;
                align = sh.sh_addralign;
            } else {
                Elf32_Shdr sh;

                memcpy(&sh, p, sizeof(sh));
                type = sh.sh_type;
                off = sh.sh_offset;
                size = sh.sh_size;
                align = sh.sh_addralign;
            }
            if (type != SHT_NOTE || !in_image(e, off, size))
                continue;
            snprintf(where, sizeof(where), "section %u", i);
            r = notes_find_entry(e, off, size, align == 8 ? 8 : 4, where, entry, errp);
            if (r != 0)
                return r > 0;
        }
    }
    LOADER_ERR(errp, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in ELF");
    return false;
}

/* Check every PT_LOAD segment against the image and guest RAM; compute the extent. */
static bool elf_check_loads(const struct elf *e, struct guest_ram *ram, struct boot_info *out,
                            GError **errp)
{
    bool any = false;

    out->kernel_start = UINT64_MAX;
    out->kernel_end = 0;
    for (unsigned i = 0; i < e->phnum; i++) {
        const struct seg *s = &e->segs[i];
        uint64_t end;

        if (s->type != PT_LOAD)
            continue;
        if (s->filesz > s->memsz) {
            LOADER_ERR(errp, "segment %u: file size " X64 " exceeds memory size " X64, i, s->filesz,
                       s->memsz);
            return false;
        }
        if (!in_image(e, s->offset, s->filesz)) {
            LOADER_ERR(errp,
                       "segment %u: file data [" X64 "-" X64 ") lies outside the image "
                       "(%zu bytes)",
                       i, s->offset, s->offset + s->filesz, e->len);
            return false;
        }
        if (s->memsz == 0)
            continue;
        if (s->memsz > UINT64_MAX - s->paddr) {
            LOADER_ERR(errp, "segment %u at " X64 " of size " X64 " wraps around", i, s->paddr,
                       s->memsz);
            return false;
        }
        end = s->paddr + s->memsz;
        if (!guest_ram_ptr(ram, s->paddr, s->memsz)) {
            bool in_hole = s->paddr < GUEST_HIGH_RAM_BASE && end > GUEST_LOW_RAM_END;

            LOADER_ERR(errp, "segment %u [" X64 "-" X64 ") lies outside guest RAM%s", i, s->paddr,
                       end, in_hole ? " (in the MMIO hole)" : "");
            return false;
        }
        if (s->paddr < PVH_BOOT_DATA_END && end > PVH_BOOT_DATA_START) {
            LOADER_ERR(errp,
                       "segment %u [" X64 "-" X64 ") overlaps the boot data area "
                       "[0x%x-0x%x)",
                       i, s->paddr, end, PVH_BOOT_DATA_START, PVH_BOOT_DATA_END);
            return false;
        }
        out->kernel_start = MIN(out->kernel_start, s->paddr);
        out->kernel_end = MAX(out->kernel_end, end);
        any = true;
    }
    if (!any) {
        LOADER_ERR(errp, "ELF file has no loadable segments");
        return false;
    }
    return true;
}

static bool elf_load_segments(const struct elf *e, struct guest_ram *ram, GError **errp)
{
    static const uint8_t zeros[64 * 1024];

    for (unsigned i = 0; i < e->phnum; i++) {
        const struct seg *s = &e->segs[i];
        uint64_t gpa;

        if (s->type != PT_LOAD || s->memsz == 0)
            continue;
        if (!guest_ram_write(ram, s->paddr, e->buf + s->offset, s->filesz, errp))
            return false;
        for (gpa = s->paddr + s->filesz; gpa < s->paddr + s->memsz;) {
            uint64_t n = MIN(sizeof(zeros), s->paddr + s->memsz - gpa);

            if (!guest_ram_write(ram, gpa, zeros, n, errp))
                return false;
            gpa += n;
        }
    }
    return true;
}

static bool write_boot_data(struct guest_ram *ram, const char *cmdline, GError **errp)
{
    struct e820_range e820[PVH_MEMMAP_MAX];
    struct hvm_memmap_table_entry map[PVH_MEMMAP_MAX];
    struct hvm_start_info si;
    unsigned n = guest_ram_e820(ram, e820, PVH_MEMMAP_MAX);

    memset(map, 0, sizeof(map));
    for (unsigned i = 0; i < n; i++) {
        map[i].addr = e820[i].addr;
        map[i].size = e820[i].size;
        map[i].type = e820[i].type;
    }
    memset(&si, 0, sizeof(si));
    si.magic = HVM_START_MAGIC_VALUE;
    si.version = HVM_START_VERSION;
    si.cmdline_paddr = PVH_CMDLINE_GPA;
    si.memmap_paddr = PVH_MEMMAP_GPA;
    si.memmap_entries = n;
    return guest_ram_write(ram, PVH_START_INFO_GPA, &si, sizeof(si), errp) &&
           guest_ram_write(ram, PVH_MEMMAP_GPA, map, n * sizeof(map[0]), errp) &&
           guest_ram_write(ram, PVH_CMDLINE_GPA, cmdline, strlen(cmdline) + 1, errp);
}

bool loader_load_pvh(struct guest_ram *ram, const void *image, size_t len, const char *cmdline,
                     struct boot_info *out, GError **errp)
{
    struct elf e = { .buf = image, .len = len };
    struct boot_info bi = { .start_info = PVH_START_INFO_GPA };
    uint64_t phoff = 0, shoff = 0;
    unsigned phentsize = 0, shnum = 0, shentsize = 0;
    size_t cmdlen;
    bool ok = false;

    if (!cmdline)
        cmdline = "";
    cmdlen = strlen(cmdline);
    if (cmdlen > PVH_CMDLINE_MAX) {
        LOADER_ERR(errp, "kernel command line is %zu bytes long; at most %u fit", cmdlen,
                   PVH_CMDLINE_MAX);
        return false;
    }
    if (!image) {
        LOADER_ERR(errp, "not an ELF file");
        return false;
    }
    if (!elf_read_header(&e, &phoff, &phentsize, &shoff, &shnum, &shentsize, errp) ||
        !elf_read_phdrs(&e, phoff, phentsize, errp) ||
        !elf_find_entry(&e, shoff, shnum, shentsize, &bi.entry, errp) ||
        !elf_check_loads(&e, ram, &bi, errp))
        goto out;
    if (!guest_ram_ptr(ram, bi.entry, 1) || bi.entry < bi.kernel_start ||
        bi.entry >= bi.kernel_end) {
        LOADER_ERR(errp, "PVH entry point 0x%x is not inside the loaded kernel [" X64 "-" X64 ")",
                   bi.entry, bi.kernel_start, bi.kernel_end);
        goto out;
    }
    if (!elf_load_segments(&e, ram, errp) || !write_boot_data(ram, cmdline, errp))
        goto out;
    *out = bi;
    ok = true;
out:
    g_free(e.segs);
    return ok;
}
