/* stream-state.c: VCPU_STATE, VM_STATE and DEVICE_STATE: FDT blobs of vCPUs, the VM and devices. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <libfdt.h>
#include <string.h>

bool stream_write_vcpu_state(struct stream_writer *w, uint32_t index, const void *fdt,
                             GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_vcpu_state)] = { 0 };
    uint32_t size = 0;

    if (!stream_fdt_blob_size(fdt, sizeof(h), &size, errp))
        return false;
    mig_store_le32(h + offsetof(struct mig_rec_vcpu_state, index), index);
    struct stream_part parts[] = {
        { h, sizeof(h), STREAM_PART_COPY },
        { fdt, size, STREAM_PART_COPY },
    };
    return stream_write_record(w, MIG_REC_VCPU_STATE, parts, 2, errp);
}

bool stream_write_vm_state(struct stream_writer *w, const void *fdt, GError **errp)
{
    uint32_t size = 0;

    if (!stream_fdt_blob_size(fdt, 0, &size, errp))
        return false;
    struct stream_part part = { fdt, size, STREAM_PART_COPY };
    return stream_write_record(w, MIG_REC_VM_STATE, &part, 1, errp);
}

bool stream_write_device_state(struct stream_writer *w, const char *id, uint32_t instance,
                               const void *fdt, GError **errp)
{
    uint8_t h[sizeof(struct mig_rec_device_state)] = { 0 };
    uint32_t size = 0;

    if (!stream_name_ok(id))
        return stream_fail(errp, "DEVICE_STATE: bad device id '%s'", id);
    if (!stream_fdt_blob_size(fdt, sizeof(h), &size, errp))
        return false;
    stream_store_name(h + offsetof(struct mig_rec_device_state, id), id);
    mig_store_le32(h + offsetof(struct mig_rec_device_state, instance), instance);
    struct stream_part parts[] = {
        { h, sizeof(h), STREAM_PART_COPY },
        { fdt, size, STREAM_PART_COPY },
    };
    return stream_write_record(w, MIG_REC_DEVICE_STATE, parts, 2, errp);
}

bool stream_parse_vcpu_state(const struct stream_record *rec, uint32_t *index, const void **fdt,
                             size_t *fdt_len, GError **errp)
{
    const size_t hdr = sizeof(struct mig_rec_vcpu_state);

    if (!stream_rec_expect(rec, MIG_REC_VCPU_STATE, errp))
        return false;
    if (rec->length < hdr + MIG_FDT_MIN_SIZE)
        return stream_rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    if (mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, reserved)))
        return stream_rec_fail(rec, errp, "reserved field is not zero");
    if (!stream_check_fdt(rec, rec->body + hdr, rec->length - hdr, errp))
        return false;
    *index = mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, index));
    *fdt = rec->body + hdr;
    *fdt_len = rec->length - hdr;
    return true;
}

bool stream_parse_vm_state(const struct stream_record *rec, const void **fdt, size_t *fdt_len,
                           GError **errp)
{
    if (!stream_rec_expect(rec, MIG_REC_VM_STATE, errp))
        return false;
    if (!stream_check_fdt(rec, rec->body, rec->length, errp))
        return false;
    *fdt = rec->body;
    *fdt_len = rec->length;
    return true;
}

bool stream_parse_device_state(const struct stream_record *rec, char id[MIG_NAME_LEN],
                               uint32_t *instance, const void **fdt, size_t *fdt_len, GError **errp)
{
    const size_t hdr = sizeof(struct mig_rec_device_state);

    if (!stream_rec_expect(rec, MIG_REC_DEVICE_STATE, errp))
        return false;
    if (rec->length < hdr + MIG_FDT_MIN_SIZE)
        return stream_rec_fail(rec, errp, "body of %u bytes is too short", rec->length);
    if (!stream_check_name(rec, rec->body + offsetof(struct mig_rec_device_state, id), "device id",
                           id, errp))
        return false;
    if (mig_load_le32(rec->body + offsetof(struct mig_rec_device_state, reserved)))
        return stream_rec_fail(rec, errp, "reserved field is not zero");
    if (!stream_check_fdt(rec, rec->body + hdr, rec->length - hdr, errp))
        return false;
    *instance = mig_load_le32(rec->body + offsetof(struct mig_rec_device_state, instance));
    *fdt = rec->body + hdr;
    *fdt_len = rec->length - hdr;
    return true;
}

/* ---- Through the record table ---- */

bool stream_body_vcpu_state(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                            struct stream_body *out, GError **errp)
{
    (void)ctx;
    return stream_parse_vcpu_state(rec, &out->state.index, &out->state.fdt, &out->state.fdt_len,
                                   errp);
}

bool stream_body_vm_state(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                          struct stream_body *out, GError **errp)
{
    (void)ctx;
    return stream_parse_vm_state(rec, &out->state.fdt, &out->state.fdt_len, errp);
}

bool stream_body_device_state(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                              struct stream_body *out, GError **errp)
{
    (void)ctx;
    return stream_parse_device_state(rec, out->state.id, &out->state.index, &out->state.fdt,
                                     &out->state.fdt_len, errp);
}
