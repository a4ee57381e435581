/* stream-rp.c: the return path's ERROR record (READY and RESUMED are empty records). */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <string.h>

bool stream_write_rp_error(struct stream_writer *w, const char *message, GError **errp)
{
    const char *end = message + strlen(message);

    if (end - message > (ptrdiff_t)MIG_RP_ERROR_MAX) {
        end = message + MIG_RP_ERROR_MAX;
        while (end > message && ((uint8_t)*end & 0xc0) == 0x80)
            end--; /* do not cut a UTF-8 sequence */
    }
    if (end == message) {
        message = "error";
        end = message + 5;
    }
    struct stream_part part = { message, (size_t)(end - message), STREAM_PART_COPY };
    return stream_write_record(w, MIG_RP_ERROR, &part, 1, errp);
}

bool stream_body_rp_error(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                          struct stream_body *out, GError **errp)
{
    (void)ctx;
    if (!stream_rec_expect(rec, MIG_RP_ERROR, errp))
        return false;
    if (rec->length < 1 || rec->length > MIG_RP_ERROR_MAX)
        return stream_rec_fail(rec, errp, "message of %u bytes (1 to %u)", rec->length,
                               MIG_RP_ERROR_MAX);
    if (memchr(rec->body, 0, rec->length) ||
        !g_utf8_validate((const char *)rec->body, rec->length, NULL))
        return stream_rec_fail(rec, errp, "message is not valid UTF-8 text");
    out->rp_error.text = (const char *)rec->body;
    out->rp_error.len = rec->length;
    return true;
}

bool stream_parse_rp_error(const struct stream_record *rec, char **message, GError **errp)
{
    struct stream_body body;

    if (!stream_body_rp_error(rec, NULL, &body, errp))
        return false;
    *message = g_strndup(body.rp_error.text, body.rp_error.len);
    return true;
}
