/* stream-names.c: NUL-padded names and FDT blobs inside record bodies, checked and stored. */
#include "tern/stream.h"
#include "tern/util.h"
#include "tern/vmstate.h"
#include "stream-internal.h"

#include <libfdt.h>
#include <string.h>

/* Check a NUL-padded wire name of MIG_NAME_LEN bytes: 1..31 printable ASCII
 * characters, then only NULs. Copies it to (out) if non-NULL. */
bool stream_check_name(const struct stream_record *rec, const uint8_t *p, const char *what,
                       char *out, GError **errp)
{
    size_t len = strnlen((const char *)p, MIG_NAME_LEN);

    if (len == 0 || len == MIG_NAME_LEN)
        return stream_rec_fail(rec, errp, "%s must be 1 to %d characters and NUL-terminated", what,
                               MIG_NAME_LEN - 1);
    for (size_t i = 0; i < MIG_NAME_LEN; i++) {
        if (i < len && (p[i] < 0x21 || p[i] > 0x7e))
            return stream_rec_fail(rec, errp, "%s contains a non-printable character", what);
        if (i >= len && p[i])
            return stream_rec_fail(rec, errp, "%s is not NUL-padded", what);
    }
    if (out)
        memcpy(out, p, MIG_NAME_LEN);
    return true;
}

bool stream_name_ok(const char *name)
{
    size_t len = strnlen(name, MIG_NAME_LEN);

    if (len == 0 || len == MIG_NAME_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x21 || name[i] > 0x7e)
            return false;
    return true;
}

void stream_store_name(uint8_t *p, const char *name)
{
    memset(p, 0, MIG_NAME_LEN);
    memcpy(p, name, strnlen(name, MIG_NAME_LEN - 1));
}

bool stream_check_fdt(const struct stream_record *rec, const uint8_t *fdt, size_t len,
                      GError **errp)
{
    g_autoptr(GError) err = NULL;

    if (len < MIG_FDT_MIN_SIZE)
        return stream_rec_fail(rec, errp, "FDT blob of %zu bytes is too short", len);
    /* The header by hand, then fdt_check_full(), before any other libfdt call. */
    if (!vmstate_fdt_check(fdt, len, &err))
        return stream_rec_fail(rec, errp, "bad FDT blob: %s", err->message);
    if (fdt_totalsize(fdt) != len)
        return stream_rec_fail(rec, errp, "FDT blob size %u does not match the %zu bytes left",
                               fdt_totalsize(fdt), len);
    return true;
}

bool stream_fdt_blob_size(const void *fdt, uint32_t prefix, uint32_t *out, GError **errp)
{
    int rc = fdt_check_header(fdt);

    if (rc)
        return stream_fail(errp, "cannot send a bad FDT blob: %s", fdt_strerror(rc));
    (void)prefix; /* the state records' maxima leave room for their fixed parts */
    if (fdt_totalsize(fdt) > STREAM_STATE_FDT_MAX)
        return stream_fail(errp, "FDT blob of %u bytes is too large", fdt_totalsize(fdt));
    *out = fdt_totalsize(fdt);
    return true;
}
