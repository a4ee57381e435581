/* test-loader.c: unit tests of the PVH ELF loader with images built in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <elf.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "tern/bitmap.h"
#include "tern/loader.h"
#include "tern/memory.h"
#include "tern/pvh.h"
#include "tern/util.h"

#define RAM_SIZE (64 * MiB)
#define TEXT_GPA 0x100000u
#define TEXT_LEN 0x200u
#define TEXT_MEMSZ 0x1000u
#define DATA_GPA 0x200000u
#define DATA_LEN 0x10u
#define DATA_MEMSZ 0x3000u
#define ENTRY (TEXT_GPA + 0x40)

/* Image layout (both classes): header, 3 program headers at 0x40, a note at
 * 0x300, text at 0x400, data at 0x600, 2 section headers at 0x680. */
#define NOTE_OFF 0x300u
#define TEXT_OFF 0x400u
#define DATA_OFF 0x600u
#define SH_OFF 0x680u
#define IMAGE_LEN 0x700u

struct image {
    uint8_t *buf;
    size_t len;
};

/* The note: namesz, descsz, type, "Xen\0", descriptor (4 or 8 bytes). */
static void put_note(uint8_t *p, uint32_t descsz, uint64_t entry)
{
    uint32_t hdr[3] = { 4, descsz, XEN_ELFNOTE_PHYS32_ENTRY };

    memcpy(p, hdr, 12);
    memcpy(p + 12, "Xen", 4);
    memcpy(p + 16, &entry, descsz <= 8 ? descsz : 8);
}

static void put_payload(uint8_t *buf)
{
    for (unsigned i = 0; i < TEXT_LEN; i++)
        buf[TEXT_OFF + i] = (uint8_t)(0x90 + i);
    for (unsigned i = 0; i < DATA_LEN; i++)
        buf[DATA_OFF + i] = (uint8_t)(0x40 + i);
}

static struct image build64(uint32_t descsz)
{
    struct image img = { g_malloc0(IMAGE_LEN), IMAGE_LEN };
    Elf64_Ehdr eh = {
        .e_type = ET_EXEC,
        .e_machine = EM_X86_64,
        .e_version = EV_CURRENT,
        .e_entry = 0xffffffff81000000ULL,
        .e_phoff = 0x40,
        .e_shoff = SH_OFF,
        .e_ehsize = sizeof(Elf64_Ehdr),
        .e_phentsize = sizeof(Elf64_Phdr),
        .e_phnum = 3,
        .e_shentsize = sizeof(Elf64_Shdr),
        .e_shnum = 2,
    };
    Elf64_Phdr ph[3] = {
        { .p_type = PT_LOAD,
          .p_flags = PF_R | PF_X,
          .p_offset = TEXT_OFF,
          .p_vaddr = 0xffffffff81000000ULL,
          .p_paddr = TEXT_GPA,
          .p_filesz = TEXT_LEN,
          .p_memsz = TEXT_MEMSZ,
          .p_align = 0x1000 },
        { .p_type = PT_NOTE,
          .p_offset = NOTE_OFF,
          .p_filesz = 16 + ALIGN_UP(descsz, 4),
          .p_align = 4 },
        { .p_type = PT_LOAD,
          .p_flags = PF_R | PF_W,
          .p_offset = DATA_OFF,
          .p_paddr = DATA_GPA,
          .p_filesz = DATA_LEN,
          .p_memsz = DATA_MEMSZ,
          .p_align = 0x1000 },
    };
    Elf64_Shdr sh[2] = {
        { 0 },
        { .sh_type = SHT_NOTE,
          .sh_offset = NOTE_OFF,
          .sh_size = 16 + ALIGN_UP(descsz, 4),
          .sh_addralign = 4 },
    };

    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    memcpy(img.buf, &eh, sizeof(eh));
    memcpy(img.buf + 0x40, ph, sizeof(ph));
    memcpy(img.buf + SH_OFF, sh, sizeof(sh));
    put_note(img.buf + NOTE_OFF, descsz, ENTRY);
    put_payload(img.buf);
    return img;
}

static struct image build32(void)
{
    struct image img = { g_malloc0(IMAGE_LEN), IMAGE_LEN };
    Elf32_Ehdr eh = {
        .e_type = ET_EXEC,
        .e_machine = EM_386,
        .e_version = EV_CURRENT,
        .e_entry = ENTRY,
        .e_phoff = 0x40,
        .e_ehsize = sizeof(Elf32_Ehdr),
        .e_phentsize = sizeof(Elf32_Phdr),
        .e_phnum = 3,
    };
    Elf32_Phdr ph[3] = {
        { .p_type = PT_LOAD,
          .p_offset = TEXT_OFF,
          .p_paddr = TEXT_GPA,
          .p_filesz = TEXT_LEN,
          .p_memsz = TEXT_MEMSZ },
        { .p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = 20, .p_align = 4 },
        { .p_type = PT_LOAD,
          .p_offset = DATA_OFF,
          .p_paddr = DATA_GPA,
          .p_filesz = DATA_LEN,
          .p_memsz = DATA_MEMSZ },
    };

    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS32;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    memcpy(img.buf, &eh, sizeof(eh));
    memcpy(img.buf + 0x40, ph, sizeof(ph));
    put_note(img.buf + NOTE_OFF, 4, ENTRY);
    put_payload(img.buf);
    return img;
}

static Elf64_Ehdr *eh64(struct image *img)
{
    return (Elf64_Ehdr *)img->buf;
}

static Elf64_Phdr *ph64(struct image *img, unsigned i)
{
    return (Elf64_Phdr *)(img->buf + 0x40) + i;
}

static Elf64_Shdr *sh64(struct image *img, unsigned i)
{
    return (Elf64_Shdr *)(img->buf + SH_OFF) + i;
}

static int setup_ram(void **state)
{
    *state = guest_ram_create(RAM_SIZE, NULL);
    return *state ? 0 : -1;
}

static int teardown_ram(void **state)
{
    guest_ram_destroy(*state);
    return 0;
}

/* Load (img) into fresh RAM: the error message, or NULL on success. */
static char *load_err(struct guest_ram *ram, struct image *img, const char *cmdline)
{
    struct boot_info bi;
    GError *err = NULL;
    char *msg;

    if (loader_load_pvh(ram, img->buf, img->len, cmdline, &bi, &err)) {
        assert_null(err);
        return NULL;
    }
    assert_non_null(err);
    msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

#define assert_load_fails(ram, img, cmdline, substr) \
    do { \
        g_autofree char *m_ = load_err(ram, img, cmdline); \
        if (!m_) \
            fail_msg("load succeeded; expected \"%s\"", substr); \
        if (!strstr(m_, substr)) \
            fail_msg("error \"%s\" lacks \"%s\"", m_, substr); \
    } while (0)

static void check_loaded(struct guest_ram *ram, const struct boot_info *bi, const char *cmdline)
{
    struct hvm_start_info si;
    struct hvm_memmap_table_entry map[2];
    uint8_t text[TEXT_LEN], bss[DATA_MEMSZ];
    char cmd[PVH_CMDLINE_MAX + 1];

    assert_int_equal(bi->entry, ENTRY);
    assert_int_equal(bi->start_info, 0x6000);
    assert_int_equal(bi->kernel_start, TEXT_GPA);
    assert_int_equal(bi->kernel_end, DATA_GPA + DATA_MEMSZ);

    assert_true(guest_ram_read(ram, 0x6000, &si, sizeof(si), NULL));
    assert_int_equal(si.magic, 0x336ec578);
    assert_int_equal(si.version, 1);
    assert_int_equal(si.flags, 0);
    assert_int_equal(si.nr_modules, 0);
    assert_int_equal(si.modlist_paddr, 0);
    assert_int_equal(si.cmdline_paddr, 0x7000);
    assert_int_equal(si.memmap_paddr, 0x6000 + sizeof(si));
    assert_int_equal(si.memmap_entries, 1);
    assert_int_equal(si.reserved, 0);
    assert_true(guest_ram_read(ram, si.memmap_paddr, map, sizeof(map[0]), NULL));
    assert_int_equal(map[0].addr, 0);
    assert_int_equal(map[0].size, RAM_SIZE);
    assert_int_equal(map[0].type, HVM_MEMMAP_TYPE_RAM);
    assert_int_equal(map[0].reserved, 0);
    assert_true(guest_ram_read(ram, 0x7000, cmd, strlen(cmdline) + 1, NULL));
    assert_string_equal(cmd, cmdline);

    assert_true(guest_ram_read(ram, TEXT_GPA, text, sizeof(text), NULL));
    for (unsigned i = 0; i < TEXT_LEN; i++)
        assert_int_equal(text[i], (uint8_t)(0x90 + i));
    assert_true(guest_ram_read(ram, DATA_GPA, bss, sizeof(bss), NULL));
    for (unsigned i = 0; i < DATA_MEMSZ; i++)
        assert_int_equal(bss[i], i < DATA_LEN ? (uint8_t)(0x40 + i) : 0);

    /* Every write went through guest_ram_write(): pages are marked. */
    assert_true(bitmap_test(ram->vmm_dirty, 0x6));
    assert_true(bitmap_test(ram->vmm_dirty, 0x7));
    assert_true(bitmap_test(ram->vmm_dirty, TEXT_GPA >> 12));
    for (uint64_t g = DATA_GPA >> 12; g < (DATA_GPA + DATA_MEMSZ) >> 12; g++)
        assert_true(bitmap_test(ram->vmm_dirty, g));
    assert_false(bitmap_test(ram->vmm_dirty, (TEXT_GPA >> 12) + 1)); /* text bss */
    assert_false(bitmap_test(ram->vmm_dirty, 0x5));
}

static void test_good_elf64(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(8); /* Linux style: an 8-byte descriptor */
    struct boot_info bi;
    GError *err = NULL;
    uint8_t junk[DATA_MEMSZ];

    /* Garbage where bss goes (a reset reloads over a used RAM): must be zeroed. */
    memset(junk, 0xee, sizeof(junk));
    memcpy(guest_ram_ptr(ram, DATA_GPA, sizeof(junk)), junk, sizeof(junk));
    assert_true(loader_load_pvh(ram, img.buf, img.len, "console=ttyS0 mode=idle", &bi, &err));
    assert_null(err);
    check_loaded(ram, &bi, "console=ttyS0 mode=idle");
    g_free(img.buf);
}

static void test_good_elf64_desc4_no_cmdline(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);
    struct boot_info bi;

    assert_true(loader_load_pvh(ram, img.buf, img.len, NULL, &bi, NULL));
    check_loaded(ram, &bi, "");
    g_free(img.buf);
}

static void test_good_elf32(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build32();
    struct boot_info bi;

    assert_true(loader_load_pvh(ram, img.buf, img.len, "x", &bi, NULL));
    check_loaded(ram, &bi, "x");
    g_free(img.buf);
}

static void test_note_in_section_only(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);
    struct boot_info bi;

    ph64(&img, 1)->p_type = PT_NULL;
    assert_true(loader_load_pvh(ram, img.buf, img.len, "", &bi, NULL));
    assert_int_equal(bi.entry, ENTRY);
    g_free(img.buf);
}

static void test_max_cmdline(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);
    char *cmd = g_malloc(PVH_CMDLINE_MAX + 2);
    struct boot_info bi;

    memset(cmd, 'a', PVH_CMDLINE_MAX);
    cmd[PVH_CMDLINE_MAX] = '\0';
    assert_true(loader_load_pvh(ram, img.buf, img.len, cmd, &bi, NULL));
    check_loaded(ram, &bi, cmd);
    cmd[PVH_CMDLINE_MAX] = 'a';
    cmd[PVH_CMDLINE_MAX + 1] = '\0';
    assert_load_fails(ram, &img, cmd, "command line is 4096 bytes long; at most 4095");
    g_free(cmd);
    g_free(img.buf);
}

static void test_bad_header(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);
    struct image small = { img.buf, 40 };
    struct image tiny = { img.buf, 2 };

    assert_load_fails(ram, &small, "", "truncated ELF header");
    assert_load_fails(ram, &tiny, "", "not an ELF file");
    img.buf[EI_CLASS] = 7;
    assert_load_fails(ram, &img, "", "unsupported ELF class 7");
    img.buf[EI_CLASS] = ELFCLASS64;
    img.buf[EI_DATA] = ELFDATA2MSB;
    assert_load_fails(ram, &img, "", "little-endian");
    img.buf[EI_DATA] = ELFDATA2LSB;
    eh64(&img)->e_machine = EM_AARCH64;
    assert_load_fails(ram, &img, "", "ELF machine 183 is not x86-64");
    eh64(&img)->e_machine = EM_X86_64;
    eh64(&img)->e_type = ET_DYN;
    assert_load_fails(ram, &img, "", "not an executable");
    eh64(&img)->e_type = ET_EXEC;
    memcpy(img.buf, "\177ELG", 4);
    assert_load_fails(ram, &img, "", "not an ELF file");
    g_free(img.buf);

    {
        static const char text[] = "#!/bin/sh\necho this is not a kernel\n";
        struct image script = { (uint8_t *)text, sizeof(text) };

        assert_load_fails(ram, &script, "", "not an ELF file");
    }
}

static void test_bad_phdrs(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);

    eh64(&img)->e_phoff = IMAGE_LEN - 10;
    assert_load_fails(ram, &img, "", "program header table [0x6f6-0x79e) lies outside the image");
    eh64(&img)->e_phoff = UINT64_MAX - 8; /* offset + size wraps */
    assert_load_fails(ram, &img, "", "program header table");
    eh64(&img)->e_phoff = 0x40;
    eh64(&img)->e_phnum = 0;
    assert_load_fails(ram, &img, "", "no program headers");
    eh64(&img)->e_phnum = 3;
    eh64(&img)->e_phentsize = 40;
    assert_load_fails(ram, &img, "", "program header size 40");
    g_free(img.buf);
}

static void test_bad_notes(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);
    uint32_t v;

    /* No note anywhere. */
    ph64(&img, 1)->p_type = PT_NULL;
    sh64(&img, 1)->sh_type = SHT_PROGBITS;
    assert_load_fails(ram, &img, "", "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in ELF");
    /* A note of another type or owner is not it. */
    ph64(&img, 1)->p_type = PT_NOTE;
    v = 17;
    memcpy(img.buf + NOTE_OFF + 8, &v, 4);
    assert_load_fails(ram, &img, "", "no PVH entry note");
    v = XEN_ELFNOTE_PHYS32_ENTRY;
    memcpy(img.buf + NOTE_OFF + 8, &v, 4);
    memcpy(img.buf + NOTE_OFF + 12, "Xe\0", 4);
    assert_load_fails(ram, &img, "", "no PVH entry note");
    memcpy(img.buf + NOTE_OFF + 12, "Xen", 4);
    /* Descriptor of a size that is not 4 or 8. */
    v = 2;
    memcpy(img.buf + NOTE_OFF + 4, &v, 4);
    assert_load_fails(ram, &img, "", "has bad size 2 (expected 4 or 8)");
    /* Descriptor running past the note segment. */
    v = 0x1000;
    memcpy(img.buf + NOTE_OFF + 4, &v, 4);
    assert_load_fails(ram, &img, "", "truncated");
    v = UINT32_MAX;
    memcpy(img.buf + NOTE_OFF + 4, &v, 4);
    assert_load_fails(ram, &img, "", "truncated");
    v = UINT32_MAX;
    memcpy(img.buf + NOTE_OFF, &v, 4); /* huge namesz */
    assert_load_fails(ram, &img, "", "truncated");
    g_free(img.buf);

    /* Note segment outside the file. */
    img = build64(4);
    ph64(&img, 1)->p_offset = UINT64_MAX - 4;
    assert_load_fails(ram, &img, "", "note segment 1");
    g_free(img.buf);

    /* Entry above 4 GiB, and an entry outside the kernel. */
    img = build64(8);
    put_note(img.buf + NOTE_OFF, 8, 0x100000000ULL);
    assert_load_fails(ram, &img, "", "above 4 GiB");
    put_note(img.buf + NOTE_OFF, 8, 0x5000);
    assert_load_fails(ram, &img, "", "PVH entry point 0x5000 is not inside the loaded kernel");
    g_free(img.buf);
}

static void test_bad_segments(void **state)
{
    struct guest_ram *ram = *state;
    struct image img = build64(4);

    ph64(&img, 2)->p_paddr = RAM_SIZE - 0x100;
    assert_load_fails(ram, &img, "", "segment 2 [0x3ffff00-0x4002f00) lies outside guest RAM");
    ph64(&img, 2)->p_paddr = UINT64_MAX - 0x100;
    assert_load_fails(ram, &img, "", "wraps around");
    ph64(&img, 2)->p_paddr = 0x7000;
    assert_load_fails(ram, &img, "", "segment 2 [0x7000-0xa000) overlaps the boot data area");
    ph64(&img, 2)->p_paddr = DATA_GPA;
    ph64(&img, 2)->p_filesz = DATA_MEMSZ + 1;
    assert_load_fails(ram, &img, "", "segment 2: file size 0x3001 exceeds memory size 0x3000");
    ph64(&img, 2)->p_filesz = DATA_LEN;
    ph64(&img, 0)->p_offset = IMAGE_LEN - 0x10;
    assert_load_fails(ram, &img, "", "segment 0: file data [0x6f0-0x8f0) lies outside the image");
    ph64(&img, 0)->p_offset = UINT64_MAX;
    assert_load_fails(ram, &img, "", "segment 0: file data");
    ph64(&img, 0)->p_offset = TEXT_OFF;
    ph64(&img, 0)->p_type = PT_NULL;
    ph64(&img, 2)->p_type = PT_NULL;
    assert_load_fails(ram, &img, "", "no loadable segments");
    g_free(img.buf);
}

static void test_segment_in_hole(void **state)
{
    (void)state;
    struct sysinfo si;
    struct guest_ram *ram;
    struct image img;

    if (sysinfo(&si) == 0 && ((uint64_t)si.totalram + si.totalswap) * si.mem_unit < 4 * GiB)
        skip();
    ram = guest_ram_create(4 * GiB, NULL);
    assert_non_null(ram);
    img = build64(4);
    ph64(&img, 2)->p_paddr = GUEST_LOW_RAM_END + 0x1000;
    assert_load_fails(ram, &img, "", "lies outside guest RAM (in the MMIO hole)");
    ph64(&img, 2)->p_paddr = GUEST_LOW_RAM_END - 0x1000; /* straddles into it */
    assert_load_fails(ram, &img, "", "in the MMIO hole");
    ph64(&img, 2)->p_paddr = GUEST_HIGH_RAM_BASE; /* high RAM is fine */
    {
        struct boot_info bi;
        struct hvm_start_info si2;

        assert_true(loader_load_pvh(ram, img.buf, img.len, "", &bi, NULL));
        assert_int_equal(bi.kernel_end, GUEST_HIGH_RAM_BASE + DATA_MEMSZ);
        assert_true(guest_ram_read(ram, 0x6000, &si2, sizeof(si2), NULL));
        assert_int_equal(si2.memmap_entries, 2);
    }
    g_free(img.buf);
    guest_ram_destroy(ram);
}

/* Truncations and random corruption: never a crash (run under ASan/UBSan too). */
static void test_robustness(void **state)
{
    struct guest_ram *ram = *state;
    struct image good = build64(8);
    GRand *rand = g_rand_new_with_seed(1234);

    /* Every cut before the end of the last segment's data must fail; past it
     * only section headers go, which loading never reads. */
    for (size_t len = 0; len < DATA_OFF + DATA_LEN; len++) {
        uint8_t *copy = g_memdup2(good.buf, len ? len : 1);
        struct image img = { copy, len };

        /* Cut anywhere before the data's end, it must fail (and not crash). */
        char *msg = load_err(ram, &img, "");
        if (!msg)
            fail_msg("an image cut to %zu of %zu bytes loaded", len, good.len);
        g_free(msg);
        g_free(copy);
    }
    for (int round = 0; round < 3000; round++) {
        uint8_t *copy = g_memdup2(good.buf, good.len);
        struct image img = { copy, good.len };
        int flips = g_rand_int_range(rand, 1, 8);

        for (int i = 0; i < flips; i++) {
            /* Mostly the headers and the note, where the parsing happens. */
            unsigned pos = (unsigned)g_rand_int_range(rand, 0,
                                                      round % 2 ? 0x320 : (gint32)good.len);

            copy[pos] = (uint8_t)g_rand_int(rand);
        }
        g_free(load_err(ram, &img, ""));
        g_free(copy);
    }
    g_rand_free(rand);
    g_free(good.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_elf64, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_good_elf64_desc4_no_cmdline, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_good_elf32, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_note_in_section_only, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_max_cmdline, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_bad_header, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_bad_phdrs, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_bad_notes, setup_ram, teardown_ram),
        cmocka_unit_test_setup_teardown(test_bad_segments, setup_ram, teardown_ram),
        cmocka_unit_test(test_segment_in_hole),
        cmocka_unit_test_setup_teardown(test_robustness, setup_ram, teardown_ram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
