/* stream-internal.h: what the files of the stream code (migration/stream*.c) share. */
#ifndef TERN_STREAM_INTERNAL_H
#define TERN_STREAM_INTERNAL_H

/* Include after "tern/stream.h". No Tern header here: the stream files all
 * include this one, stream.c among them, so it must not lead back to them. */
#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MIG_REC_ALIGN zero bytes: padding written and expected. */
extern const uint8_t stream_zero_pad[MIG_REC_ALIGN];

/* Fail with the message (fmt); false. */
bool stream_fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Fail with "record N (TYPE) at offset X: <fmt>"; false. */
bool stream_rec_fail(const struct stream_record *rec, GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
/* (rec) must be of (type): "expected a TYPE record". */
bool stream_rec_expect(const struct stream_record *rec, uint32_t type, GError **errp);

/* ---- Names and FDT blobs (stream-names.c) ---- */

/* Check a NUL-padded wire name of MIG_NAME_LEN bytes: 1..31 printable ASCII
 * characters, then only NULs. Copies it to (out) if non-NULL. */
bool stream_check_name(const struct stream_record *rec, const uint8_t *p, const char *what,
                       char *out, GError **errp);
/* Would (name) pass stream_check_name()? (for the writers) */
bool stream_name_ok(const char *name);
/* Store (name) NUL-padded in MIG_NAME_LEN bytes at (p). */
void stream_store_name(uint8_t *p, const char *name);
/* The FDT blob (fdt, len) is valid and fills exactly (len) bytes. */
bool stream_check_fdt(const struct stream_record *rec, const uint8_t *fdt, size_t len,
                      GError **errp);
/* The size of the FDT blob a writer is about to send after (prefix) bytes. */
bool stream_fdt_blob_size(const void *fdt, uint32_t prefix, uint32_t *out, GError **errp);

/* ---- Descriptor functions (stream.c's table) ---- */

/* Parse (rec) into (out), next to each type's stream_parse_*(). */
#define STREAM_BODY_FN(name) \
    bool name(const struct stream_record *rec, const struct stream_parse_ctx *ctx, \
              struct stream_body *out, GError **errp)
STREAM_BODY_FN(stream_body_vm_config);
STREAM_BODY_FN(stream_body_page_data);
STREAM_BODY_FN(stream_body_zero_pages);
STREAM_BODY_FN(stream_body_iteration_end);
STREAM_BODY_FN(stream_body_vcpu_state);
STREAM_BODY_FN(stream_body_vm_state);
STREAM_BODY_FN(stream_body_device_state);
STREAM_BODY_FN(stream_body_mapped_ram);
STREAM_BODY_FN(stream_body_ram_index);
STREAM_BODY_FN(stream_body_rp_error);
STREAM_BODY_FN(stream_body_ram_fds);
#undef STREAM_BODY_FN

/* RAM_INDEX's exact body for (nr_gfns) frames with every page present: its
 * max_for_vm (stream-mapped.c). */
uint32_t stream_ram_index_max_length(uint32_t stream_flags, uint64_t nr_gfns);

/* tern-dump's summaries (stream-describe.c). */
#define STREAM_DESCRIBE_FN(name) \
    char *name(const struct stream_body *body, uint32_t pass, const struct stream_fields *f)
STREAM_DESCRIBE_FN(stream_describe_vm_config);
STREAM_DESCRIBE_FN(stream_describe_static_end);
STREAM_DESCRIBE_FN(stream_describe_page_data);
STREAM_DESCRIBE_FN(stream_describe_zero_pages);
STREAM_DESCRIBE_FN(stream_describe_iteration_end);
STREAM_DESCRIBE_FN(stream_describe_vcpu_state);
STREAM_DESCRIBE_FN(stream_describe_vm_state);
STREAM_DESCRIBE_FN(stream_describe_device_state);
STREAM_DESCRIBE_FN(stream_describe_end);
STREAM_DESCRIBE_FN(stream_describe_mapped_ram);
STREAM_DESCRIBE_FN(stream_describe_ram_index);
STREAM_DESCRIBE_FN(stream_describe_ram_fds);
#undef STREAM_DESCRIBE_FN

#endif
