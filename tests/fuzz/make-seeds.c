/* make-seeds.c: writes the seed corpora of tests/fuzz/corpus/ with Tern's own
 * writers: streams from the stream writer (the records the sender puts), a
 * checkpoint from the real sender (migrate file:) of the unit tests' fake
 * machine, and each record's body for fuzz-state.
 * Usage: make-seeds DIR (DIR/stream, DIR/checkpoint, DIR/dump, DIR/state). */
#include <glib.h>
#include <glib/gstdio.h>
#include <libfdt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../accel/accel-backend.h"
#include "../unit/fake-vm.h"
#include "fuzz-file.h"
#include "fuzz-state-tables.h"
#include "../../migration/migration-internal.h"
#include "tern/channel-file.h"
#include "tern/channel.h"
#include "tern/memory.h"
#include "tern/migration.h"
#include "tern/stream.h"
#include "tern/x86-state.h"

#define PAGE (1u << MIG_STREAM_PAGE_SHIFT)

static const char *outdir;

static void save(const char *sub, const char *name, const void *data, size_t len)
{
    g_autofree char *dir = g_build_filename(outdir, sub, NULL);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;

    g_mkdir_with_parents(dir, 0755);
    if (!g_file_set_contents(path, data, (gssize)len, &err))
        g_error("make-seeds: %s", err->message);
    printf("%s: %zu bytes\n", path, len);
}

static void ok(bool b, GError *err)
{
    if (!b)
        g_error("make-seeds: %s", err ? err->message : "failed");
}

/* A vCPU state as the machine saves it: node cpu@0 with the x86 table, MSRs. */
static void *vcpu_blob(void)
{
    struct x86_vcpu_state st;
    struct x86_msr msrs[] = { { 0xc0000080, 0x500 }, { 0x10, 123456789 }, { 0x6e0, 0 } };
    void *fdt = vmstate_fdt_new(64 * 1024);
    GError *err = NULL;

    memset(&st, 0, sizeof(st));
    st.regs.rip = 0x100000;
    st.sregs.cr0 = 0x11;
    st.sregs.cs.limit = 0xffffffff;
    st.xcrs.nr_xcrs = 1;
    st.xcrs.xcrs[0].value = 1;
    ok(vmstate_save(&x86_vcpu_vmstate, &st, fdt, 0, "cpu@0", &err), err);
    ok(x86_msrs_save(msrs, G_N_ELEMENTS(msrs), fdt, fdt_subnode_offset(fdt, 0, "cpu@0"), &err),
       err);
    fdt_pack(fdt);
    return fdt;
}

/* A VM's or a device's state under node (name), as fuzz-state loads it. */
static void *state_blob(const char *name)
{
    struct fz_state st;
    void *fdt = vmstate_fdt_new(8 * 1024);
    GError *err = NULL;

    memset(&st, 0x11, sizeof(st));
    ok(vmstate_save(&fz_state_desc, &st, fdt, 0, name, &err), err);
    fdt_pack(fdt);
    return fdt;
}

static void fill_page(uint8_t *p, unsigned seed)
{
    for (unsigned i = 0; i < PAGE; i++)
        p[i] = (uint8_t)(seed * 31 + i / 64);
}

static GByteArray *take(struct channel *ch)
{
    size_t len;
    const uint8_t *p;

    ok(channel_flush(ch, NULL), NULL);
    p = channel_mem_data(ch, &len);
    return g_byte_array_append(g_byte_array_new(), p, (guint)len);
}

/* A complete stream for (m): two passes (raw, zlib and zero pages), the
 * vCPUs, the VM, an optional record, END. (passes) 0: cut after STATIC_END. */
static GByteArray *make_stream(struct machine *m, uint32_t flags, unsigned passes)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    struct stream_writer w;
    struct stream_vm_config cfg;
    static uint8_t pg[3][PAGE], z[PAGE];
    GError *err = NULL;
    GByteArray *out;

    stream_writer_init(&w, ch, flags);
    migration_describe_machine(m, &cfg);
    ok(stream_write_header(&w, &err) && stream_write_vm_config(&w, &cfg, &err) &&
           stream_write_empty(&w, MIG_REC_STATIC_END, &err),
       err);
    for (unsigned p = 1; p <= passes; p++) {
        struct stream_page pages[4];
        struct stream_gfn_range zr[2] = { { 8, 4 }, { 100, 1 } };
        struct stream_iteration_end it = { .pass = p,
                                           .flags = p == passes ? MIG_ITER_F_FINAL : 0,
                                           .pages_sent = 4 };
        size_t zlen;

        for (unsigned i = 0; i < 3; i++) {
            fill_page(pg[i], i + p);
            pages[i] = (struct stream_page){ 1 + i, MIG_PAGE_ENC_RAW, PAGE, pg[i] };
        }
        memset(pg[2], 0x5a, PAGE);
        zlen = stream_page_compress(pg[2], PAGE, 6, z, sizeof(z));
        pages[3] = (struct stream_page){ 40, MIG_PAGE_ENC_ZLIB, (uint32_t)zlen, z };
        ok(stream_write_page_data(&w, pages, p == 1 ? 4 : 1, false, &err) &&
               stream_write_zero_pages(&w, zr, 2, &err) &&
               stream_write_iteration_end(&w, &it, &err) && channel_flush(ch, &err),
           err); /* the pages went by reference */
    }
    if (passes) {
        g_autofree void *vcpu = vcpu_blob();
        g_autofree void *vmst = state_blob("vm");
        const uint8_t opt[13] = "optional data";
        struct stream_part part = { opt, sizeof(opt), STREAM_PART_COPY };

        for (unsigned i = 0; i < machine_vcpu_count(m); i++)
            ok(stream_write_vcpu_state(&w, i, vcpu, &err), err);
        ok(stream_write_vm_state(&w, vmst, &err) &&
               stream_write_record(&w, MIG_REC_OPTIONAL | 0x123, &part, 1, &err) &&
               stream_write_empty(&w, MIG_REC_END, &err),
           err);
    }
    out = take(ch);
    channel_close(ch);
    return out;
}

static bool is_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* A checkpoint of (m) by the real sender: migrate file:PATH. */
static GByteArray *make_checkpoint(struct machine *m, const char *path)
{
    struct migration *mig = migration_new(m);
    struct mig_info info = { 0 };
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    GError *err = NULL;
    uint8_t page[PAGE];
    GByteArray *out = g_byte_array_new();
    gchar *data;
    gsize len;

    for (uint64_t gfn = 0; gfn < 16; gfn++) {
        fill_page(page, (unsigned)gfn);
        ok(guest_ram_write(machine_ram(m), gfn * PAGE, page, PAGE, &err), err);
    }
    ok(migration_start(mig, uri, &err), err);
    for (;;) {
        while (g_main_context_iteration(NULL, FALSE))
            ;
        migration_info(mig, &info);
        if (mig_status_is_terminal(info.status))
            break;
        mig_info_clear(&info);
        g_usleep(1000);
    }
    if (info.status != MIG_STATUS_COMPLETED)
        g_error("make-seeds: checkpoint failed: %s", info.error_desc ? info.error_desc : "?");
    mig_info_clear(&info);
    migration_free(mig);
    ok(g_file_get_contents(path, &data, &len, &err), err);
    /* The file as extents of its non-zero 4 KiB blocks (the head, the
     * pages, the tail): a few KiB instead of 17 MiB. */
    for (size_t off = 0; off < len;) {
        size_t end = off;

        while (end < len && !is_zero(data + end, MIN((size_t)PAGE, len - end)))
            end += MIN((size_t)PAGE, len - end);
        if (end > off)
            fuzz_file_add_extent(out, (uint32_t)off, data + off, (uint32_t)(end - off));
        off = end + PAGE;
    }
    save("checkpoint", "raw-head", data, MIN(len, (gsize)1024));
    g_free(data);
    return out;
}

static int type_slot(uint32_t type)
{
    for (size_t i = 0; i < stream_record_types_count; i++)
        if (stream_record_types[i].type == type)
            return (int)i;
    return -1;
}

/* Every record of (s) as a fuzz-state input: type slot, flags, body. */
static void state_seeds(const GByteArray *s, const char *prefix)
{
    struct channel *ch = channel_mem_new(s->data, s->len);
    struct stream_reader r;
    struct stream_record rec;

    stream_reader_init(&r, ch, false);
    ok(stream_read_header(&r, NULL), NULL);
    while (stream_read_record(&r, &rec, NULL)) {
        g_autofree char *name = g_strdup_printf("%s-%02u-%s", prefix, (unsigned)rec.index,
                                                mig_rec_type_name(rec.type));
        GByteArray *b = g_byte_array_new();
        uint8_t h[2] = { (uint8_t)type_slot(rec.type), (uint8_t)r.flags };

        if (!rec.skip && rec.length) {
            g_byte_array_append(b, h, 2);
            g_byte_array_append(b, rec.body, rec.length);
            save("state", name, b->data, b->len);
        }
        g_byte_array_unref(b);
        if (rec.type == MIG_REC_END)
            break;
    }
    stream_reader_cleanup(&r);
    channel_close(ch);
}

int main(int argc, char **argv)
{
    struct machine *m;
    g_autofree char *tmp = NULL, *ckpt = NULL;
    GByteArray *s, *c;

    if (argc != 2) {
        fprintf(stderr, "usage: make-seeds DIR\n");
        return 2;
    }
    outdir = argv[1];
    g_setenv("TERN_FILE_NO_DIRECT", "1", TRUE);
    m = fake_machine_new(1, RUNSTATE_RUNNING);
    fake_vm_reset(
        &(struct fake_guest){ .ram = machine_ram(m), .first_hot_gfn = 64, .hot_pages = 2 });

    s = make_stream(m, MIG_HDR_F_CRC32, 2);
    save("stream", "two-passes-crc", s->data, s->len);
    save("dump", "two-passes-crc", s->data, s->len);
    state_seeds(s, "stream");
    g_byte_array_unref(s);
    s = make_stream(m, 0, 1);
    save("stream", "one-pass-nocrc", s->data, s->len);
    save("dump", "one-pass-nocrc", s->data, s->len);
    g_byte_array_unref(s);
    s = make_stream(m, MIG_HDR_F_CRC32, 0);
    save("stream", "static-only", s->data, s->len);
    g_byte_array_unref(s);

    tmp = g_dir_make_tmp("tern-seeds-XXXXXX", NULL);
    ckpt = g_build_filename(tmp, "ckpt", NULL);
    c = make_checkpoint(m, ckpt);
    save("checkpoint", "checkpoint-extents", c->data, c->len);
    save("dump", "checkpoint-extents", c->data, c->len);
    g_byte_array_unref(c);
    {
        /* The checkpoint's records for fuzz-state: read the head and tail. */
        gchar *data;
        gsize len;
        GError *err = NULL;
        struct channel *ch;
        struct stream_reader r;
        struct stream_record rec;
        struct stream_body b;
        struct stream_parse_ctx ctx = { .nr_gfns = machine_ram(m)->nr_gfns };

        ok(g_file_get_contents(ckpt, &data, &len, &err), err);
        ch = channel_mem_new(data, len);
        stream_reader_init(&r, ch, false);
        ok(stream_read_header(&r, NULL), NULL);
        ctx.stream_flags = r.flags;
        while (stream_read_record(&r, &rec, NULL)) {
            g_autofree char *name = g_strdup_printf("checkpoint-%02u-%s", (unsigned)rec.index,
                                                    mig_rec_type_name(rec.type));
            GByteArray *sb = g_byte_array_new();
            uint8_t h[2] = { (uint8_t)type_slot(rec.type), (uint8_t)r.flags };

            if (rec.length) {
                g_byte_array_append(sb, h, 2);
                g_byte_array_append(sb, rec.body, rec.length);
                if (rec.type == MIG_REC_MAPPED_RAM || rec.type == MIG_REC_RAM_INDEX)
                    save("state", name, sb->data, sb->len);
            }
            g_byte_array_unref(sb);
            if (rec.type == MIG_REC_MAPPED_RAM) {
                ok(stream_record_parse(&rec, &ctx, &b, &err), err);
                ok(stream_reader_skip_to(&r, b.mapped_ram.tail_offset, &err), err);
            }
            if (rec.type == MIG_REC_END)
                break;
        }
        stream_reader_cleanup(&r);
        channel_close(ch);
        g_free(data);
    }
    {
        /* RAM_FDS and the return path's ERROR, which the streams above lack. */
        struct channel *ch = channel_mem_new(NULL, 0);
        struct stream_writer w;
        struct stream_ram_fds fds = { 1, { { 0, 16u << 20 } } };
        GByteArray *b;
        uint8_t h[2];

        stream_writer_init(&w, ch, MIG_HDR_F_RAM_FD);
        ok(stream_write_ram_fds(&w, &fds, NULL) && stream_write_rp_error(&w, "target failed", NULL),
           NULL);
        b = take(ch);
        h[0] = (uint8_t)type_slot(MIG_REC_RAM_FDS);
        h[1] = MIG_HDR_F_RAM_FD;
        g_byte_array_prepend(g_byte_array_remove_range(b, 0, 8), h, 2);
        g_byte_array_set_size(b, 2 + 24);
        save("state", "ram-fds", b->data, b->len);
        g_byte_array_unref(b);
        h[0] = (uint8_t)type_slot(MIG_RP_ERROR);
        h[1] = 0;
        b = g_byte_array_append(g_byte_array_new(), h, 2);
        g_byte_array_append(b, (const uint8_t *)"target failed", 13);
        save("state", "rp-error", b->data, b->len);
        g_byte_array_unref(b);
        channel_close(ch);
    }
    {
        /* A device's state: what a DEVICE_STATE body holds. */
        g_autofree void *dev = state_blob("serial");
        GByteArray *b = g_byte_array_new();
        uint8_t h[2 + sizeof(struct mig_rec_device_state)] = { 0 };

        h[0] = (uint8_t)type_slot(MIG_REC_DEVICE_STATE);
        memcpy(h + 2, "serial", 6);
        g_byte_array_append(b, h, sizeof(h));
        g_byte_array_append(b, dev, fdt_totalsize(dev));
        save("state", "device-serial", b->data, b->len);
        g_byte_array_unref(b);
    }
    g_unlink(ckpt);
    g_rmdir(tmp);
    machine_destroy(m);
    return 0;
}
