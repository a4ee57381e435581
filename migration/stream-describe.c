/* stream-describe.c: what tern-dump says of each record type: a summary line and fields. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>

static void put_u64(const struct stream_fields *f, const char *name, uint64_t v)
{
    if (f && f->u64)
        f->u64(f->opaque, name, v);
}

static void put_str(const struct stream_fields *f, const char *name, const char *v)
{
    if (f && f->str)
        f->str(f->opaque, name, v);
}

static void put_flag(const struct stream_fields *f, const char *name, bool v)
{
    if (f && f->flag)
        f->flag(f->opaque, name, v);
}

char *stream_human_bytes(uint64_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    unsigned u = 0;

    while (v >= 1024 && u + 1 < G_N_ELEMENTS(units)) {
        v /= 1024;
        u++;
    }
    return u ? g_strdup_printf("%.1f %s", v, units[u]) : g_strdup_printf("%" PRIu64 " B", n);
}

char *stream_describe_vm_config(const struct stream_body *body, uint32_t pass,
                                const struct stream_fields *f)
{
    const struct stream_vm_config *cfg = &body->vm_config;
    g_autofree char *ram = stream_human_bytes(cfg->ram_size);

    (void)pass;
    put_u64(f, "ram_size", cfg->ram_size);
    put_u64(f, "nr_gfns", cfg->nr_gfns);
    put_u64(f, "vcpus", cfg->nr_vcpus);
    put_u64(f, "regions", cfg->nr_regions);
    put_str(f, "machine", cfg->machine);
    if (f && f->str_list) {
        char *devs[MIG_VM_CONFIG_MAX_DEVICES];

        for (uint32_t i = 0; i < cfg->nr_devices; i++)
            devs[i] = g_strdup_printf("%s.%u", cfg->devices[i].id, cfg->devices[i].instance);
        f->str_list(f->opaque, "devices", (const char *const *)devs, cfg->nr_devices);
        for (uint32_t i = 0; i < cfg->nr_devices; i++)
            g_free(devs[i]);
    }
    return g_strdup_printf("RAM %s in %u region%s (0x%" PRIx64 " frames), %u vCPU%s, "
                           "%u device%s, machine %s",
                           ram, cfg->nr_regions, cfg->nr_regions == 1 ? "" : "s", cfg->nr_gfns,
                           cfg->nr_vcpus, cfg->nr_vcpus == 1 ? "" : "s", cfg->nr_devices,
                           cfg->nr_devices == 1 ? "" : "s", cfg->machine);
}

char *stream_describe_static_end(const struct stream_body *body, uint32_t pass,
                                 const struct stream_fields *f)
{
    (void)body;
    (void)pass;
    (void)f;
    return g_strdup("end of the static part");
}

char *stream_describe_page_data(const struct stream_body *body, uint32_t pass,
                                const struct stream_fields *f)
{
    uint32_t count = body->page_data.count;

    put_u64(f, "pass", pass);
    put_u64(f, "pages", count);
    put_u64(f, "first_gfn", body->page_data.first_gfn);
    put_u64(f, "last_gfn", body->page_data.last_gfn);
    put_u64(f, "raw", body->page_data.raw);
    put_u64(f, "zlib", body->page_data.zlib);
    return g_strdup_printf("pass %u: %u page%s, gfn 0x%" PRIx64 "-0x%" PRIx64 ", raw %" PRIu64
                           ", zlib %" PRIu64,
                           pass, count, count == 1 ? "" : "s", body->page_data.first_gfn,
                           body->page_data.last_gfn, (uint64_t)body->page_data.raw,
                           (uint64_t)body->page_data.zlib);
}

char *stream_describe_zero_pages(const struct stream_body *body, uint32_t pass,
                                 const struct stream_fields *f)
{
    uint64_t ranges = body->zero_pages.ranges;

    put_u64(f, "pass", pass);
    put_u64(f, "ranges", ranges);
    put_u64(f, "pages", body->zero_pages.pages);
    return g_strdup_printf("pass %u: %" PRIu64 " range%s, %" PRIu64 " zero pages, gfn 0x%" PRIx64
                           "-0x%" PRIx64,
                           pass, ranges, ranges == 1 ? "" : "s", body->zero_pages.pages,
                           body->zero_pages.first_gfn, body->zero_pages.last_gfn);
}

char *stream_describe_iteration_end(const struct stream_body *body, uint32_t pass,
                                    const struct stream_fields *f)
{
    const struct stream_iteration_end *it = &body->iteration_end;
    g_autofree char *bytes = stream_human_bytes(it->bytes_sent);

    (void)pass;
    put_u64(f, "pass", it->pass);
    put_flag(f, "final", it->flags & MIG_ITER_F_FINAL);
    put_u64(f, "pages_sent", it->pages_sent);
    put_u64(f, "zero_pages", it->zero_pages);
    put_u64(f, "bytes_sent", it->bytes_sent);
    put_u64(f, "dirty_pages", it->dirty_pages);
    put_u64(f, "duration_ns", it->duration_ns);
    return g_strdup_printf("pass %u%s: %" PRIu64 " pages, %" PRIu64 " zero, %s, %.1f ms, %" PRIu64
                           " dirty",
                           it->pass, (it->flags & MIG_ITER_F_FINAL) ? " (final)" : "",
                           it->pages_sent, it->zero_pages, bytes, (double)it->duration_ns / 1e6,
                           it->dirty_pages);
}

char *stream_describe_vcpu_state(const struct stream_body *body, uint32_t pass,
                                 const struct stream_fields *f)
{
    (void)pass;
    put_u64(f, "vcpu", body->state.index);
    put_u64(f, "fdt_size", body->state.fdt_len);
    return g_strdup_printf("vCPU %u, FDT %zu bytes", body->state.index, body->state.fdt_len);
}

char *stream_describe_vm_state(const struct stream_body *body, uint32_t pass,
                               const struct stream_fields *f)
{
    (void)pass;
    put_u64(f, "fdt_size", body->state.fdt_len);
    return g_strdup_printf("FDT %zu bytes", body->state.fdt_len);
}

char *stream_describe_device_state(const struct stream_body *body, uint32_t pass,
                                   const struct stream_fields *f)
{
    (void)pass;
    put_str(f, "id", body->state.id);
    put_u64(f, "instance", body->state.index);
    put_u64(f, "fdt_size", body->state.fdt_len);
    return g_strdup_printf("%s.%u, FDT %zu bytes", body->state.id, body->state.index,
                           body->state.fdt_len);
}

char *stream_describe_end(const struct stream_body *body, uint32_t pass,
                          const struct stream_fields *f)
{
    (void)body;
    (void)pass;
    (void)f;
    return g_strdup("end of the stream");
}

char *stream_describe_mapped_ram(const struct stream_body *body, uint32_t pass,
                                 const struct stream_fields *f)
{
    const struct stream_mapped_ram *m = &body->mapped_ram;

    (void)pass;
    put_u64(f, "ram_offset", m->ram_offset);
    put_u64(f, "nr_gfns", m->nr_gfns);
    put_u64(f, "tail_offset", m->tail_offset);
    return g_strdup_printf("RAM area at %" PRIu64 " (0x%" PRIx64 " frames), tail at %" PRIu64,
                           m->ram_offset, m->nr_gfns, m->tail_offset);
}

/* Said of an index whose present pages the caller has checked against their CRCs. */
char *stream_describe_ram_index(const struct stream_body *body, uint32_t pass,
                                const struct stream_fields *f)
{
    const struct stream_ram_index *idx = &body->ram_index;
    uint64_t bytes = idx->nr_present << MIG_STREAM_PAGE_SHIFT;
    g_autofree char *human = stream_human_bytes(bytes);

    (void)pass;
    put_u64(f, "nr_gfns", idx->nr_gfns);
    put_u64(f, "present", idx->nr_present);
    put_u64(f, "bytes", bytes);
    put_flag(f, "page_crcs", idx->crcs != NULL);
    return g_strdup_printf("%" PRIu64 " of 0x%" PRIx64 " frames present (%s)%s", idx->nr_present,
                           idx->nr_gfns, human, idx->crcs ? ", page CRCs OK" : ", no page CRCs");
}

char *stream_describe_ram_fds(const struct stream_body *body, uint32_t pass,
                              const struct stream_fields *f)
{
    const struct stream_ram_fds *m = &body->ram_fds;
    GString *out = g_string_new(NULL);
    uint64_t total = 0;

    (void)pass;
    put_u64(f, "nr_regions", m->nr_regions);
    for (uint32_t i = 0; i < m->nr_regions; i++)
        total += m->regions[i].size;
    put_u64(f, "ram_bytes", total);
    g_autofree char *human = stream_human_bytes(total);
    g_string_append_printf(out, "%u memfd(s) by SCM_RIGHTS, %s of RAM, no pages:", m->nr_regions,
                           human);
    for (uint32_t i = 0; i < m->nr_regions; i++)
        g_string_append_printf(out, " [0x%" PRIx64 "+0x%" PRIx64 ")", m->regions[i].gpa,
                               m->regions[i].size);
    return g_string_free(out, false);
}
