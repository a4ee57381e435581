/* params.c: migration parameter defaults and the one table that describes
 * them; every conversion (QMP set and query, HMP text, printing) goes through
 * that table, so adding a parameter means adding one entry. */
#include "tern/migration-params.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tls-creds.h"
#include "tern/compress.h"
#include "tern/memory.h"
#include "tern/util.h"

/* Largest values a client may set. QEMU's cap for downtime-limit: 2000 s. */
#define MIG_DOWNTIME_LIMIT_MAX_MS 2000000ULL
#define MIG_COMPRESS_LEVEL_MAX 9ULL /* zlib */
#define MIG_X_PASSES_MAX 100000ULL
#define MIG_ZSTD_LEVEL_MAX 20ULL          /* QEMU's bound */
#define MIG_XBZRLE_CACHE_MAX (1ULL << 40) /* 1 TiB: far beyond any guest here */

/* QEMU's MigMode names, in enum mig_mode order. */
static const char *const mig_mode_names[] = { "normal", "cpr-transfer", NULL };
/* QEMU's MultiFDCompression names, in enum page_compression order. */
static const char *const mig_compression_names[] = { "none", "zlib", "zstd", NULL };

/* tls-creds must name a tls-creds object; which endpoint it needs depends on
 * the side, checked by migration_set_params() and again when it is used. */
static bool check_tls_creds(const struct mig_param_desc *d, const char *value, GError **errp)
{
    if (tls_creds_find(value))
        return true;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                tls_object_exists(value) ? "Parameter '%s': object '%s' is not a tls-creds object"
                                         : "Parameter '%s': no tls-creds object '%s' (add it with "
                                           "-object tls-creds-x509,id=... or tls-creds-psk)",
                d->name, value);
    return false;
}

static bool check_tls_authz(const struct mig_param_desc *d, const char *value, GError **errp)
{
    if (tls_authz_identity(value))
        return true;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                "Parameter '%s': no authz-simple object '%s' (add it with -object "
                "authz-simple,id=...,identity=DN)",
                d->name, value);
    return false;
}

#define MIG_FIELD(field) \
    .offset = offsetof(struct mig_params, field), .size = sizeof(((struct mig_params *)0)->field)

static const struct mig_param_desc mig_param_table[] = {
    {
        .name = "downtime-limit",
        .type = MIG_PARAM_INT,
        MIG_FIELD(downtime_limit_ms),
        .min = 0,
        .max = MIG_DOWNTIME_LIMIT_MAX_MS,
        .unit = "ms",
        .help = "longest pause of the guest the policy aims for, in milliseconds",
    },
    {
        .name = "max-bandwidth",
        .type = MIG_PARAM_INT,
        MIG_FIELD(max_bandwidth),
        .min = 0,
        .max = INT64_MAX,
        .unit = "bytes/second",
        .hmp_mib = true,
        .help = "rate limit of the migration stream in bytes/s, 0 = unlimited",
    },
    {
        .name = "compress-level",
        .type = MIG_PARAM_INT,
        MIG_FIELD(compress_level),
        .min = 0,
        .max = MIG_COMPRESS_LEVEL_MAX,
        .help = "zlib level for page data, 0 = no compression",
    },
    {
        .name = "cpu-throttle-initial",
        .type = MIG_PARAM_INT,
        MIG_FIELD(cpu_throttle_initial),
        .min = 1,
        .max = 99,
        .unit = "%",
        .help = "auto-converge: share of vCPU time taken away at the first step",
    },
    {
        .name = "cpu-throttle-increment",
        .type = MIG_PARAM_INT,
        MIG_FIELD(cpu_throttle_increment),
        .min = 1,
        .max = 99,
        .unit = "%",
        .help = "auto-converge: added at each further step",
    },
    {
        .name = "max-cpu-throttle",
        .type = MIG_PARAM_INT,
        MIG_FIELD(max_cpu_throttle),
        .min = 1,
        .max = 99,
        .unit = "%",
        .help = "auto-converge: the most vCPU time ever taken away",
    },
    {
        .name = "x-passes",
        .type = MIG_PARAM_INT,
        MIG_FIELD(x_passes),
        .min = 0,
        .max = MIG_X_PASSES_MAX,
        .help = "testing: exactly this many live passes, 0 = decide by downtime-limit",
    },
    {
        .name = "x-checksum",
        .type = MIG_PARAM_BOOL,
        MIG_FIELD(x_checksum),
        .help = "CRC-32 on every record of the stream",
    },
    {
        .name = "mode",
        .type = MIG_PARAM_ENUM,
        MIG_FIELD(mode),
        .min = 0,
        .max = G_N_ELEMENTS(mig_mode_names) - 2,
        .values = mig_mode_names,
        .help = "normal, or cpr-transfer: hand guest RAM to a process on this host as memfds",
    },
    {
        .name = "tls-creds",
        .type = MIG_PARAM_STR,
        MIG_FIELD(tls_creds),
        .check_str = check_tls_creds,
        .help = "id of the -object tls-creds-x509/psk to encrypt the stream with, \"\" = off",
    },
    {
        .name = "tls-hostname",
        .type = MIG_PARAM_STR,
        MIG_FIELD(tls_hostname),
        .help = "name the target's certificate must carry, \"\" = the host of the tcp: URI",
    },
    {
        .name = "tls-authz",
        .type = MIG_PARAM_STR,
        MIG_FIELD(tls_authz),
        .check_str = check_tls_authz,
        .help = "id of the -object authz-simple the source's certificate must match, \"\" = any",
    },
    {
        .name = "xbzrle-cache-size",
        .type = MIG_PARAM_INT,
        MIG_FIELD(xbzrle_cache_size),
        .min = GUEST_PAGE_SIZE,
        .max = MIG_XBZRLE_CACHE_MAX,
        .unit = "bytes",
        .hmp_mib = true,
        .help = "xbzrle: bytes of sent pages kept to delta against (a power of two of pages)",
    },
    {
        .name = "multifd-channels",
        .type = MIG_PARAM_INT,
        MIG_FIELD(multifd_channels),
        .min = 1,
        .max = MIG_MULTIFD_MAX_CHANNELS,
        .help = "multifd: connections carrying pages in parallel (both sides alike)",
    },
    {
        .name = "multifd-compression",
        .type = MIG_PARAM_ENUM,
        MIG_FIELD(multifd_compression),
        .min = 0,
        .max = G_N_ELEMENTS(mig_compression_names) - 2,
        .values = mig_compression_names,
        .help = "page compression: none, zlib or zstd, per batch on multifd channels and "
                "per page on the single stream (when compress-level is 0); both sides alike",
    },
    {
        .name = "multifd-zlib-level",
        .type = MIG_PARAM_INT,
        MIG_FIELD(multifd_zlib_level),
        .min = 0,
        .max = MIG_COMPRESS_LEVEL_MAX,
        .help = "zlib level with multifd-compression zlib",
    },
    {
        .name = "multifd-zstd-level",
        .type = MIG_PARAM_INT,
        MIG_FIELD(multifd_zstd_level),
        .min = 0,
        .max = MIG_ZSTD_LEVEL_MAX,
        .help = "zstd level with multifd-compression zstd",
    },
};

void migration_params_default(struct mig_params *p)
{
    memset(p, 0, sizeof(*p));
    p->downtime_limit_ms = 300;
    p->max_bandwidth = 0;
    p->compress_level = 0;
    p->x_passes = 0;
    p->x_checksum = true;
    p->cpu_throttle_initial = 20;
    p->cpu_throttle_increment = 10;
    p->max_cpu_throttle = 99;
    p->auto_converge = false;
    p->xbzrle = false;
    p->xbzrle_cache_size = 64ULL << 20; /* QEMU's default */
    p->multifd_compression = PAGE_COMPRESSION_NONE;
    p->multifd = false;
    p->multifd_channels = 2; /* QEMU's default */
    p->multifd_zlib_level = 1;
    p->multifd_zstd_level = 1;
}

/* Capabilities: on/off switches set with migrate-set-capabilities (QEMU's split). */
static const struct mig_param_desc mig_cap_table[] = {
    {
        .name = "auto-converge",
        .type = MIG_PARAM_BOOL,
        MIG_FIELD(auto_converge),
        .help = "throttle vCPUs while they dirty memory faster than it is sent",
    },
    {
        .name = "xbzrle",
        .type = MIG_PARAM_BOOL,
        MIG_FIELD(xbzrle),
        .help = "send pages sent before as XBZRLE deltas against their cached copy",
    },
    {
        .name = "multifd",
        .type = MIG_PARAM_BOOL,
        MIG_FIELD(multifd),
        .help = "send pages over multifd-channels connections at once (both sides)",
    },
};

const struct mig_param_desc *mig_caps_table(size_t *count)
{
    *count = G_N_ELEMENTS(mig_cap_table);
    return mig_cap_table;
}

const struct mig_param_desc *mig_cap_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(mig_cap_table); i++)
        if (!strcmp(mig_cap_table[i].name, name))
            return &mig_cap_table[i];
    return NULL;
}

bool mig_caps_apply_json(struct mig_params *p, JsonArray *caps, GError **errp)
{
    struct mig_params next = *p;

    for (guint i = 0; caps && i < json_array_get_length(caps); i++) {
        JsonNode *n = json_array_get_element(caps, i);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
        JsonNode *name = o ? json_object_get_member(o, "capability") : NULL;
        JsonNode *state = o ? json_object_get_member(o, "state") : NULL;
        if (!name || !state || json_node_get_value_type(name) != G_TYPE_STRING ||
            json_node_get_value_type(state) != G_TYPE_BOOLEAN) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "capabilities[%u] must be {\"capability\": string, \"state\": bool}", i);
            return false;
        }
        const struct mig_param_desc *d = mig_cap_find(json_node_get_string(name));
        if (!d) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "Capability '%s' is not supported",
                        json_node_get_string(name));
            return false;
        }
        mig_param_set(&next, d, json_node_get_boolean(state));
    }
    *p = next;
    return true;
}

JsonArray *mig_caps_to_json(const struct mig_params *p)
{
    JsonArray *a = json_array_new();
    for (size_t i = 0; i < G_N_ELEMENTS(mig_cap_table); i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "capability", mig_cap_table[i].name);
        json_object_set_boolean_member(o, "state", mig_param_get(p, &mig_cap_table[i]) != 0);
        json_array_add_object_element(a, o);
    }
    return a;
}

const struct mig_param_desc *mig_params_table(size_t *count)
{
    *count = G_N_ELEMENTS(mig_param_table);
    return mig_param_table;
}

const struct mig_param_desc *mig_param_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(mig_param_table); i++) {
        if (!strcmp(mig_param_table[i].name, name)) {
            return &mig_param_table[i];
        }
    }
    return NULL;
}

uint64_t mig_param_get(const struct mig_params *p, const struct mig_param_desc *d)
{
    const char *field = (const char *)p + d->offset;

    if (d->type == MIG_PARAM_BOOL) {
        bool b;
        memcpy(&b, field, sizeof(b));
        return b;
    }
    if (d->size == sizeof(uint32_t)) {
        uint32_t v;
        memcpy(&v, field, sizeof(v));
        return v;
    }
    uint64_t v;
    memcpy(&v, field, sizeof(v));
    return v;
}

void mig_param_set(struct mig_params *p, const struct mig_param_desc *d, uint64_t value)
{
    char *field = (char *)p + d->offset;

    if (d->type == MIG_PARAM_BOOL) {
        bool b = value != 0;
        memcpy(field, &b, sizeof(b));
    } else if (d->size == sizeof(uint32_t)) {
        uint32_t v = (uint32_t)value;
        memcpy(field, &v, sizeof(v));
    } else {
        memcpy(field, &value, sizeof(value));
    }
}

const char *mig_param_get_str(const struct mig_params *p, const struct mig_param_desc *d)
{
    return (const char *)p + d->offset;
}

bool mig_param_set_str(struct mig_params *p, const struct mig_param_desc *d, const char *value,
                       GError **errp)
{
    if (strlen(value) >= d->size) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "Parameter '%s' is too long (at most %zu characters)", d->name, d->size - 1);
        return false;
    }
    if (*value && d->check_str && !d->check_str(d, value, errp))
        return false;
    memcpy((char *)p + d->offset, value, strlen(value) + 1);
    return true;
}

bool mig_param_apply_text(struct mig_params *p, const struct mig_param_desc *d, const char *text,
                          GError **errp)
{
    uint64_t value;

    if (d->type == MIG_PARAM_STR)
        return mig_param_set_str(p, d, text, errp);
    if (!mig_param_parse_text(d, text, &value, errp))
        return false;
    mig_param_set(p, d, value);
    return true;
}

int mig_param_enum_lookup(const struct mig_param_desc *d, const char *name)
{
    for (int i = 0; d->values && name && d->values[i]; i++)
        if (!strcmp(d->values[i], name))
            return i;
    return -1;
}

const char *mig_param_enum_name(const struct mig_param_desc *d, uint64_t value)
{
    return value <= d->max && d->values ? d->values[value] : "?";
}

/* "Parameter 'mode' does not accept value 'x'" (QEMU's wording), naming the choices. */
static bool mig_param_enum_error(const struct mig_param_desc *d, const char *text, GError **errp)
{
    g_autofree char *choices = g_strjoinv(", ", (char **)d->values);

    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                "Parameter '%s' does not accept value '%s' (one of: %s)", d->name, text, choices);
    return false;
}

static void mig_param_range_error(const struct mig_param_desc *d, GError **errp)
{
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                "Parameter '%s' expects an integer in the range of %" PRIu64 " to %" PRIu64 "%s%s",
                d->name, d->min, d->max, d->unit ? " " : "", d->unit ? d->unit : "");
}

bool mig_param_check(const struct mig_param_desc *d, uint64_t value, GError **errp)
{
    if (d->type == MIG_PARAM_BOOL) {
        if (value > 1) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "Parameter '%s' expects a boolean",
                        d->name);
            return false;
        }
        return true;
    }
    if (value < d->min || value > d->max) {
        mig_param_range_error(d, errp);
        return false;
    }
    return true;
}

/* The value of JSON member (v) for (d), type- and range-checked. */
static bool mig_param_from_json(const struct mig_param_desc *d, JsonNode *v, uint64_t *out,
                                GError **errp)
{
    GType vt = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;

    if (d->type == MIG_PARAM_ENUM) {
        if (vt != G_TYPE_STRING) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "Invalid parameter type for '%s', expected: string", d->name);
            return false;
        }
        int i = mig_param_enum_lookup(d, json_node_get_string(v));
        if (i < 0)
            return mig_param_enum_error(d, json_node_get_string(v), errp);
        *out = (uint64_t)i;
        return true;
    }
    if (d->type == MIG_PARAM_BOOL) {
        if (vt != G_TYPE_BOOLEAN) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "Invalid parameter type for '%s', expected: boolean", d->name);
            return false;
        }
        *out = json_node_get_boolean(v);
        return true;
    }
    if (vt != G_TYPE_INT64) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "Invalid parameter type for '%s', expected: integer", d->name);
        return false;
    }
    gint64 i = json_node_get_int(v);
    if (i < 0) {
        mig_param_range_error(d, errp);
        return false;
    }
    *out = (uint64_t)i;
    return mig_param_check(d, *out, errp);
}

bool mig_params_apply_json(struct mig_params *p, JsonObject *args, GError **errp)
{
    struct mig_params next = *p;
    bool ok = true;

    /* get_members keeps the client's order, so the first bad one is named. */
    GList *names = args ? json_object_get_members(args) : NULL;
    for (GList *l = names; l && ok; l = l->next) {
        const char *name = l->data;
        const struct mig_param_desc *d = mig_param_find(name);
        uint64_t value;
        if (!d) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "Parameter '%s' is unexpected", name);
            ok = false;
        } else if (d->type == MIG_PARAM_STR) {
            /* QEMU's StrOrNull: null clears it like "". */
            JsonNode *v = json_object_get_member(args, name);
            if (JSON_NODE_HOLDS_NULL(v)) {
                ok = mig_param_set_str(&next, d, "", errp);
            } else if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
                g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                            "Invalid parameter type for '%s', expected: string", d->name);
                ok = false;
            } else {
                ok = mig_param_set_str(&next, d, json_node_get_string(v), errp);
            }
        } else if (!mig_param_from_json(d, json_object_get_member(args, name), &value, errp)) {
            ok = false;
        } else {
            mig_param_set(&next, d, value);
        }
    }
    g_list_free(names);
    if (ok) {
        *p = next;
    }
    return ok;
}

JsonObject *mig_params_to_json(const struct mig_params *p)
{
    JsonObject *o = json_object_new();

    for (size_t i = 0; i < G_N_ELEMENTS(mig_param_table); i++) {
        const struct mig_param_desc *d = &mig_param_table[i];
        if (d->type == MIG_PARAM_STR) {
            json_object_set_string_member(o, d->name, mig_param_get_str(p, d));
            continue;
        }
        uint64_t v = mig_param_get(p, d);
        if (d->type == MIG_PARAM_ENUM) {
            json_object_set_string_member(o, d->name, mig_param_enum_name(d, v));
        } else if (d->type == MIG_PARAM_BOOL) {
            json_object_set_boolean_member(o, d->name, v != 0);
        } else {
            /* The table caps every integer at INT64_MAX or below. */
            json_object_set_int_member(o, d->name, (gint64)MIN(v, (uint64_t)INT64_MAX));
        }
    }
    return o;
}

static bool parse_bool_text(const char *text, bool *out)
{
    static const char *const yes[] = { "on", "true", "yes" };
    static const char *const no[] = { "off", "false", "no" };

    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (!g_ascii_strcasecmp(text, yes[i])) {
            *out = true;
            return true;
        }
        if (!g_ascii_strcasecmp(text, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Decimal digits only, into (out); false on anything else or overflow. */
static bool parse_decimal(const char *text, uint64_t *out)
{
    if (!g_ascii_isdigit(text[0])) {
        return false;
    }
    char *end;
    errno = 0;
    guint64 v = g_ascii_strtoull(text, &end, 10);
    if (*end || errno) {
        return false;
    }
    *out = v;
    return true;
}

/* A size for (d): bare digits are MiB (QEMU's HMP), or a number with a
 * K/M/G/T/B suffix as parse_size() reads it; zero in any spelling is 0. */
static bool parse_size_text(const char *text, uint64_t *out)
{
    uint64_t v;

    if (parse_decimal(text, &v)) {
        if (v > (UINT64_MAX >> 20)) {
            return false;
        }
        *out = v << 20;
        return true;
    }
    if (parse_size(text, &v) == 0) {
        *out = v;
        return true;
    }
    /* parse_size() refuses zero: accept "0K", "0B", "00M" by its digits. */
    size_t digits = strspn(text, "0123456789");
    if (digits && strspn(text, "0") == digits) {
        g_autofree char *one = g_strconcat("1", text + digits, NULL);
        if (parse_size(one, &v) == 0) {
            *out = 0;
            return true;
        }
    }
    return false;
}

bool mig_param_parse_text(const struct mig_param_desc *d, const char *text, uint64_t *out,
                          GError **errp)
{
    if (d->type == MIG_PARAM_ENUM) {
        int i = mig_param_enum_lookup(d, text);
        if (i < 0)
            return mig_param_enum_error(d, text, errp);
        *out = (uint64_t)i;
        return true;
    }
    if (d->type == MIG_PARAM_BOOL) {
        bool b;
        if (!parse_bool_text(text, &b)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "Parameter '%s' expects on or off, not '%s'", d->name, text);
            return false;
        }
        *out = b;
        return true;
    }
    bool ok = d->hmp_mib ? parse_size_text(text, out) : parse_decimal(text, out);
    if (!ok) {
        if (d->hmp_mib) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "Parameter '%s' expects a size (a number of MiB, or with a "
                        "K/M/G/T/B suffix), not '%s'",
                        d->name, text);
        } else {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "Parameter '%s' expects an integer, not '%s'", d->name, text);
        }
        return false;
    }
    return mig_param_check(d, *out, errp);
}

void mig_param_format(GString *out, const struct mig_param_desc *d, uint64_t value)
{
    if (d->type == MIG_PARAM_ENUM) {
        g_string_append_printf(out, "%s: %s\n", d->name, mig_param_enum_name(d, value));
        return;
    }
    if (d->type == MIG_PARAM_BOOL) {
        g_string_append_printf(out, "%s: %s\n", d->name, value ? "on" : "off");
        return;
    }
    g_string_append_printf(out, "%s: %" PRIu64 "%s%s\n", d->name, value, d->unit ? " " : "",
                           d->unit ? d->unit : "");
}

void mig_param_format_str(GString *out, const struct mig_param_desc *d, const char *value)
{
    g_string_append_printf(out, "%s: '%s'\n", d->name, value);
}
