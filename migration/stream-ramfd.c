/* stream-ramfd.c: cpr-transfer's RAM_FDS record: the layout of the memfds that travel beside it. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>

#define RAM_FDS_REGION(i) \
    (sizeof(struct mig_rec_ram_fds) + (size_t)(i) * sizeof(struct mig_vm_config_region))

/* Page aligned, non-empty, sorted and disjoint; a message or NULL. */
static char *ram_fds_problem(const struct stream_ram_fds *m)
{
    const uint64_t page = 1ULL << MIG_STREAM_PAGE_SHIFT;

    if (m->nr_regions < 1 || m->nr_regions > MIG_VM_CONFIG_MAX_REGIONS)
        return g_strdup_printf("%u regions (1 to %u)", m->nr_regions, MIG_VM_CONFIG_MAX_REGIONS);
    for (uint32_t i = 0; i < m->nr_regions; i++) {
        uint64_t gpa = m->regions[i].gpa, size = m->regions[i].size;

        if (!size || gpa % page || size % page || size > UINT64_MAX - gpa)
            return g_strdup_printf("region %u [0x%" PRIx64 "+0x%" PRIx64 ") is not a "
                                   "page-aligned, non-empty range",
                                   i, gpa, size);
        if (i && gpa < m->regions[i - 1].gpa + m->regions[i - 1].size)
            return g_strdup_printf("region %u overlaps or precedes region %u", i, i - 1);
    }
    return NULL;
}

bool stream_write_ram_fds(struct stream_writer *w, const struct stream_ram_fds *m, GError **errp)
{
    uint8_t b[RAM_FDS_REGION(MIG_VM_CONFIG_MAX_REGIONS)];
    g_autofree char *problem = ram_fds_problem(m);

    if (!(w->flags & MIG_HDR_F_RAM_FD))
        return stream_fail(errp, "RAM_FDS in a stream without the RAM-by-fd flag");
    if (problem)
        return stream_fail(errp, "RAM_FDS: %s", problem);
    memset(b, 0, sizeof(b));
    mig_store_le32(b + offsetof(struct mig_rec_ram_fds, nr_regions), m->nr_regions);
    for (uint32_t i = 0; i < m->nr_regions; i++) {
        mig_store_le64(b + RAM_FDS_REGION(i), m->regions[i].gpa);
        mig_store_le64(b + RAM_FDS_REGION(i) + 8, m->regions[i].size);
    }
    struct stream_part part = { b, RAM_FDS_REGION(m->nr_regions), STREAM_PART_COPY };
    return stream_write_record(w, MIG_REC_RAM_FDS, &part, 1, errp);
}

bool stream_parse_ram_fds(const struct stream_record *rec, uint32_t stream_flags,
                          struct stream_ram_fds *out, GError **errp)
{
    const uint8_t *b = rec->body;
    g_autofree char *problem = NULL;

    if (!stream_rec_expect(rec, MIG_REC_RAM_FDS, errp))
        return false;
    if (!(stream_flags & MIG_HDR_F_RAM_FD))
        return stream_rec_fail(rec, errp, "the stream header lacks the RAM-by-fd flag");
    if (rec->length < sizeof(struct mig_rec_ram_fds))
        return stream_rec_fail(rec, errp, "body too short");
    memset(out, 0, sizeof(*out));
    out->nr_regions = mig_load_le32(b + offsetof(struct mig_rec_ram_fds, nr_regions));
    if (mig_load_le32(b + offsetof(struct mig_rec_ram_fds, reserved)))
        return stream_rec_fail(rec, errp, "reserved field not zero");
    if (out->nr_regions < 1 || out->nr_regions > MIG_VM_CONFIG_MAX_REGIONS)
        return stream_rec_fail(rec, errp, "%u regions (1 to %u)", out->nr_regions,
                               MIG_VM_CONFIG_MAX_REGIONS);
    if (rec->length != RAM_FDS_REGION(out->nr_regions))
        return stream_rec_fail(rec, errp, "length %u, expected %zu for %u regions", rec->length,
                               RAM_FDS_REGION(out->nr_regions), out->nr_regions);
    for (uint32_t i = 0; i < out->nr_regions; i++) {
        out->regions[i].gpa = mig_load_le64(b + RAM_FDS_REGION(i));
        out->regions[i].size = mig_load_le64(b + RAM_FDS_REGION(i) + 8);
    }
    problem = ram_fds_problem(out);
    if (problem)
        return stream_rec_fail(rec, errp, "%s", problem);
    return true;
}

bool stream_body_ram_fds(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                         struct stream_body *out, GError **errp)
{
    return stream_parse_ram_fds(rec, ctx ? ctx->stream_flags : 0, &out->ram_fds, errp);
}
