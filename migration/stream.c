/* stream.c: the record types of the migration stream, and errors that name a record. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>

const uint8_t stream_zero_pad[MIG_REC_ALIGN] = { 0 };

bool stream_fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, TERN_ERROR, TERN_ERROR_INVALID, msg);
    g_free(msg);
    return false;
}

char *stream_record_describe(const struct stream_record *rec)
{
    return g_strdup_printf("record %" PRIu64 " (%s) at offset %" PRIu64, rec->index,
                           mig_rec_type_name(rec->type), rec->offset);
}

bool stream_rec_fail(const struct stream_record *rec, GError **errp, const char *fmt, ...)
{
    g_autofree char *what = stream_record_describe(rec);
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %s", what, msg);
    return false;
}

bool stream_rec_expect(const struct stream_record *rec, uint32_t type, GError **errp)
{
    if (rec->type != type)
        return stream_rec_fail(rec, errp, "expected a %s record", mig_rec_type_name(type));
    return true;
}

/* ---- The record types ---- */

/* READY, RESUMED, STATIC_END and END: the reader has checked they are empty. */
static bool body_empty(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                       struct stream_body *out, GError **errp)
{
    (void)rec;
    (void)ctx;
    (void)out;
    (void)errp;
    return true;
}

/* Size rules: (head_length, max_length, max_for_vm). Every maximum is what
 * the type can need (docs/fuzzing.md, "Stream limits"): nothing larger is read. */
#define FIXED(s) sizeof(struct s), sizeof(struct s), NULL
#define UP_TO(s, max) sizeof(struct s), (uint32_t)(max), NULL
#define EMPTY 0, 0, NULL

/* One descriptor per type, in type order: the reader, the order check, the
 * loader and tern-dump all go by it. */
const struct stream_record_type stream_record_types[] = {
    { MIG_REC_VM_CONFIG, "VM_CONFIG", false, STREAM_REC_ANY,
      UP_TO(mig_rec_vm_config, sizeof(struct mig_rec_vm_config) +
                                   MIG_VM_CONFIG_MAX_DEVICES * sizeof(struct mig_vm_config_device)),
      stream_body_vm_config, stream_describe_vm_config },
    { MIG_REC_STATIC_END, "STATIC_END", false, STREAM_REC_ANY, EMPTY, body_empty,
      stream_describe_static_end },
    { MIG_REC_PAGE_DATA, "PAGE_DATA", false, STREAM_REC_SOCKET,
      UP_TO(mig_rec_page_data, STREAM_PAGE_DATA_MAX), stream_body_page_data,
      stream_describe_page_data },
    { MIG_REC_ZERO_PAGES, "ZERO_PAGES", false, STREAM_REC_SOCKET,
      UP_TO(mig_rec_zero_pages, sizeof(struct mig_rec_zero_pages) +
                                    STREAM_ZERO_PAGES_MAX_RANGES * sizeof(struct mig_gfn_range)),
      stream_body_zero_pages, stream_describe_zero_pages },
    { MIG_REC_ITERATION_END, "ITERATION_END", false, STREAM_REC_ANY, FIXED(mig_rec_iteration_end),
      stream_body_iteration_end, stream_describe_iteration_end },
    { MIG_REC_VCPU_STATE, "VCPU_STATE", false, STREAM_REC_ANY,
      UP_TO(mig_rec_vcpu_state, sizeof(struct mig_rec_vcpu_state) + STREAM_STATE_FDT_MAX),
      stream_body_vcpu_state, stream_describe_vcpu_state },
    { MIG_REC_VM_STATE, "VM_STATE", false, STREAM_REC_ANY, 0, STREAM_STATE_FDT_MAX, NULL,
      stream_body_vm_state, stream_describe_vm_state },
    { MIG_REC_DEVICE_STATE, "DEVICE_STATE", false, STREAM_REC_ANY,
      UP_TO(mig_rec_device_state, sizeof(struct mig_rec_device_state) + STREAM_STATE_FDT_MAX),
      stream_body_device_state, stream_describe_device_state },
    { MIG_REC_END, "END", false, STREAM_REC_ANY, EMPTY, body_empty, stream_describe_end },
    { MIG_REC_MAPPED_RAM, "MAPPED_RAM", false, STREAM_REC_MAPPED, FIXED(mig_rec_mapped_ram),
      stream_body_mapped_ram, stream_describe_mapped_ram },
    { MIG_REC_RAM_INDEX, "RAM_INDEX", false, STREAM_REC_MAPPED, sizeof(struct mig_rec_ram_index),
      MIG_REC_LENGTH_MAX, stream_ram_index_max_length, stream_body_ram_index,
      stream_describe_ram_index },
    { MIG_REC_RAM_FDS, "RAM_FDS", false, STREAM_REC_HANDOVER,
      UP_TO(mig_rec_ram_fds, sizeof(struct mig_rec_ram_fds) +
                                 MIG_VM_CONFIG_MAX_REGIONS * sizeof(struct mig_vm_config_region)),
      stream_body_ram_fds, stream_describe_ram_fds },
    { MIG_RP_READY, "READY", true, STREAM_REC_ANY, EMPTY, body_empty, NULL },
    { MIG_RP_RESUMED, "RESUMED", true, STREAM_REC_ANY, EMPTY, body_empty, NULL },
    { MIG_RP_ERROR, "ERROR", true, STREAM_REC_ANY, 1, MIG_RP_ERROR_MAX, NULL, stream_body_rp_error,
      NULL },
};

const size_t stream_record_types_count = G_N_ELEMENTS(stream_record_types);

const struct stream_record_type *stream_record_type_find(uint32_t type)
{
    for (size_t i = 0; i < G_N_ELEMENTS(stream_record_types); i++)
        if (stream_record_types[i].type == type)
            return &stream_record_types[i];
    return NULL;
}

const char *mig_rec_type_name(uint32_t type)
{
    const struct stream_record_type *t = stream_record_type_find(type);

    return t ? t->name : "UNKNOWN";
}

uint32_t stream_record_max_length(const struct stream_record_type *t, const struct stream_reader *r)
{
    if (t->max_for_vm && r && r->nr_gfns)
        return MIN(t->max_length, t->max_for_vm(r->flags, r->nr_gfns));
    return t->max_length;
}

bool stream_record_parse(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                         struct stream_body *out, GError **errp)
{
    const struct stream_record_type *t = stream_record_type_find(rec->type);

    memset(out, 0, sizeof(*out));
    out->type = rec->type;
    if (!t)
        return stream_rec_fail(rec, errp, "unknown record type 0x%08x", rec->type);
    return t->parse(rec, ctx, out, errp);
}
