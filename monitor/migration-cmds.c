/* migration-cmds.c: the monitor front end of migration: QMP commands with
 * QEMU's names and shapes, their HMP forms, and the blocking HMP "migrate"
 * that shows progress until the migration ends. Everything here runs on the
 * main thread and talks to the backend only through migration.h. */
#include "tern/migration-cmds.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "tern/commands.h"
#include "tern/compress.h"
#include "tern/hmp.h"
#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/migration-params.h"
#include "tern/migration.h"
#include "tern/runstate.h"
#include "tern/util.h"

#define MIG_WATCH_INTERVAL_MS 100

/* ---- small JSON helpers ---- */

/* The migration object the commands act on, handed over at registration. */
static struct migration *cmds_mig;

static void set_u64(JsonObject *o, const char *name, uint64_t v)
{
    json_object_set_int_member(o, name, (gint64)MIN(v, (uint64_t)INT64_MAX));
}

static void set_double(JsonObject *o, const char *name, double v)
{
    /* NaN and infinities have no JSON spelling. */
    json_object_set_double_member(o, name, isfinite(v) ? v : 0.0);
}

/* An optional boolean member of (args) that is present and true. */
static bool arg_true(JsonObject *args, const char *name)
{
    JsonNode *v = json_object_get_member(args, name);
    return v && JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_BOOLEAN &&
           json_node_get_boolean(v);
}

static const char *arg_string(JsonObject *args, const char *name)
{
    JsonNode *v = json_object_get_member(args, name);
    if (!v || !JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
        return NULL;
    }
    return json_node_get_string(v);
}

/* ---- migrate, migrate-incoming, migrate_cancel ---- */

static JsonNode *cmd_migrate(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    /* "detach" is accepted and ignored: QMP's migrate never blocks. */
    if (json_object_has_member(args, "channels")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "Migration 'channels' are not supported; give the destination as 'uri'");
        return NULL;
    }
    if (arg_true(args, "blk") || arg_true(args, "inc")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "Block migration ('blk', 'inc') is not supported: Tern migrates RAM, "
                    "CPU and device state only");
        return NULL;
    }
    if (arg_true(args, "resume")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "Postcopy recovery ('resume') is not supported");
        return NULL;
    }
    const char *uri = arg_string(args, "uri");
    if (!uri) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Parameter 'uri' is missing");
        return NULL;
    }
    migration_start(cmds_mig, uri, errp);
    return NULL;
}

static JsonNode *cmd_migrate_incoming(struct machine *m, JsonObject *args, GError **errp)
{
    if (machine_runstate(m) != RUNSTATE_INMIGRATE) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "'-incoming' was not specified on the command line");
        return NULL;
    }
    struct mig_info info = { 0 };
    migration_info(cmds_mig, &info);
    enum mig_status status = info.status;
    mig_info_clear(&info);
    if (status != MIG_STATUS_NONE) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "The incoming migration has already been started");
        return NULL;
    }
    if (json_object_has_member(args, "channels")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "Migration 'channels' are not supported; give the source as 'uri'");
        return NULL;
    }
    if (json_object_has_member(args, "exit-on-error") && !arg_true(args, "exit-on-error")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "'exit-on-error': false is not supported: a failed incoming migration "
                    "always ends the process");
        return NULL;
    }
    const char *uri = arg_string(args, "uri");
    if (!uri) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Parameter 'uri' is missing");
        return NULL;
    }
    incoming_start(cmds_mig, uri, errp);
    return NULL;
}

static JsonNode *cmd_migrate_cancel(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    struct mig_info info = { 0 };

    migration_info(cmds_mig, &info);
    enum mig_status status = info.status;
    mig_info_clear(&info);
    /* Like QEMU: nothing to cancel (never started, over, or already being
     * cancelled) is a success. A refusal from the backend (END already sent)
     * is an error. */
    if (status == MIG_STATUS_NONE || status == MIG_STATUS_CANCELLING ||
        mig_status_is_terminal(status)) {
        return NULL;
    }
    migration_cancel(cmds_mig, errp);
    return NULL;
}

/* ---- query-migrate and info migrate ---- */

static JsonObject *mig_ram_to_json(const struct mig_stats *st)
{
    JsonObject *ram = json_object_new();

    /* QEMU's MigrationStats members, all of them (mandatory in its schema). */
    set_u64(ram, "transferred", st->transferred);
    set_u64(ram, "remaining", st->remaining);
    set_u64(ram, "total", st->total);
    set_u64(ram, "duplicate", st->duplicate);
    set_u64(ram, "normal", st->normal);
    set_u64(ram, "normal-bytes", st->normal_bytes);
    set_u64(ram, "dirty-pages-rate", st->dirty_pages_rate);
    set_double(ram, "mbps", st->mbps);
    set_u64(ram, "dirty-sync-count", st->dirty_sync_count);
    set_u64(ram, "postcopy-requests", 0);
    set_u64(ram, "page-size", GUEST_PAGE_SIZE);
    set_u64(ram, "multifd-bytes", st->multifd_bytes);
    set_u64(ram, "pages-per-second", st->pages_per_second);
    set_u64(ram, "precopy-bytes", st->precopy_bytes);
    set_u64(ram, "downtime-bytes", st->downtime_bytes);
    set_u64(ram, "postcopy-bytes", 0);
    set_u64(ram, "dirty-sync-missed-zero-copy", 0);
    /* QEMU dropped "skipped" (always 0 there); Tern counts never-touched pages. */
    set_u64(ram, "skipped", st->skipped);
    return ram;
}

/* Tern's extension "x-multifd": the channels, their bytes, and on the target
 * the placement rate (page data placed in guest RAM per second). */
static JsonObject *mig_multifd_to_json(const struct mig_stats *st)
{
    JsonObject *o = json_object_new();
    JsonArray *chans = json_array_new();

    set_u64(o, "channels", st->multifd_channels);
    for (uint64_t i = 0; i < st->multifd_channels && i < MIG_MULTIFD_MAX_CHANNELS; i++) {
        JsonObject *c = json_object_new();
        set_u64(c, "channel", i);
        set_u64(c, "bytes", st->multifd_channel_bytes[i]);
        json_array_add_object_element(chans, c);
    }
    json_object_set_array_member(o, "channel-stats", chans);
    set_u64(o, "placed-bytes", st->multifd_placed_bytes);
    set_u64(o, "placement-time", st->multifd_place_ns / 1000000);
    set_double(o, "placement-rate",
               st->multifd_place_ns ? st->multifd_placed_bytes * 1e9 / st->multifd_place_ns : 0);
    return o;
}

/* MigrationInfo for (info): only the members QEMU reports in each status. */
static JsonObject *mig_info_to_json(const struct mig_info *info, const struct mig_params *p)
{
    JsonObject *o = json_object_new();
    const struct mig_stats *st = &info->stats;
    bool times = false, ram = false;

    switch (info->status) {
    case MIG_STATUS_NONE:
    case MIG_STATUS__MAX:
        return o;
    case MIG_STATUS_SETUP:
    case MIG_STATUS_FAILED:
    case MIG_STATUS_CANCELLED:
        break;
    case MIG_STATUS_ACTIVE:
    case MIG_STATUS_DEVICE:
    case MIG_STATUS_CANCELLING:
    case MIG_STATUS_COMPLETED:
        times = ram = true;
        break;
    }
    json_object_set_string_member(o, "status", mig_status_name(info->status));
    if (times) {
        set_u64(o, "total-time", st->total_time_ms);
        set_u64(o, "setup-time", st->setup_time_ms);
        if (info->status == MIG_STATUS_COMPLETED) {
            set_u64(o, "downtime", st->downtime_ms);
        } else {
            set_u64(o, "expected-downtime", st->expected_downtime_ms);
        }
    }
    if (ram) {
        json_object_set_object_member(o, "ram", mig_ram_to_json(st));
        if (st->multifd_channels)
            json_object_set_object_member(o, "x-multifd", mig_multifd_to_json(st));
        if (st->multifd_channels && st->multifd_raw_bytes) {
            /* QEMU's CompressionStats names, for multifd-compression. */
            JsonObject *c = json_object_new();
            set_u64(c, "pages", st->compressed);
            set_u64(c, "busy", 0);
            set_double(c, "busy-rate", 0.0);
            set_u64(c, "compressed-size", st->multifd_comp_bytes);
            set_double(c, "compression-rate",
                       st->multifd_comp_bytes
                           ? (double)st->multifd_raw_bytes / st->multifd_comp_bytes
                           : 0.0);
            json_object_set_object_member(o, "compression", c);
        } else if (p->compress_level > 0 || p->multifd_compression != PAGE_COMPRESSION_NONE) {
            JsonObject *c = json_object_new();
            set_u64(c, "pages", st->compressed);
            set_u64(c, "busy", 0);
            set_double(c, "busy-rate", 0.0);
            json_object_set_object_member(o, "compression", c);
        }
    }
    if (ram && p->xbzrle) {
        /* QEMU's XBZRLECacheStats; rates over the whole migration. */
        JsonObject *x = json_object_new();
        uint64_t looked = st->xbzrle_cache_hits + st->xbzrle_cache_miss;
        set_u64(x, "cache-size", p->xbzrle_cache_size);
        set_u64(x, "bytes", st->xbzrle_bytes);
        set_u64(x, "pages", st->xbzrle_pages);
        set_u64(x, "cache-miss", st->xbzrle_cache_miss);
        set_double(x, "cache-miss-rate", looked ? (double)st->xbzrle_cache_miss / looked : 0.0);
        set_double(x, "encoding-rate",
                   st->xbzrle_bytes
                       ? (double)(st->xbzrle_pages * GUEST_PAGE_SIZE) / st->xbzrle_bytes
                       : 0.0);
        set_u64(x, "overflow", st->xbzrle_overflow);
        /* Tern's own: lookups that found the page, and the cache's real size. */
        set_u64(x, "cache-hits", st->xbzrle_cache_hits);
        set_u64(x, "cache-memory", st->xbzrle_cache_memory);
        json_object_set_object_member(o, "xbzrle-cache", x);
    }
    if (ram && st->cpu_throttle_percentage)
        set_u64(o, "cpu-throttle-percentage", st->cpu_throttle_percentage);
    if ((info->status == MIG_STATUS_FAILED || info->status == MIG_STATUS_CANCELLED) &&
        info->error_desc) {
        json_object_set_string_member(o, "error-desc", info->error_desc);
    }
    return o;
}

static JsonNode *cmd_query_migrate(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    struct mig_info info = { 0 };
    struct mig_params p;

    migration_info(cmds_mig, &info);
    migration_get_params(cmds_mig, &p);
    JsonObject *o = mig_info_to_json(&info, &p);
    mig_info_clear(&info);
    return command_result_object(o);
}

static uint64_t get_u64(JsonObject *o, const char *name)
{
    gint64 v = json_object_get_int_member_with_default(o, name, 0);
    return v < 0 ? 0 : (uint64_t)v;
}

static void fmt_ms(GString *out, JsonObject *o, const char *member, const char *label)
{
    if (json_object_has_member(o, member)) {
        g_string_append_printf(out, "%s: %" PRIu64 " ms\n", label, get_u64(o, member));
    }
}

/* "info migrate": QEMU's text for the members present. */
static void fmt_info_migrate(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);

    if (!o || !json_object_has_member(o, "status")) {
        return;
    }
    g_string_append_printf(out, "Migration status: %s\n",
                           json_object_get_string_member_with_default(o, "status", "?"));
    fmt_ms(out, o, "total-time", "total time");
    fmt_ms(out, o, "expected-downtime", "expected downtime");
    fmt_ms(out, o, "downtime", "downtime");
    fmt_ms(out, o, "setup-time", "setup");

    JsonObject *ram = json_object_has_member(o, "ram") ? json_object_get_object_member(o, "ram")
                                                       : NULL;
    if (ram) {
        g_string_append_printf(out, "transferred ram: %" PRIu64 " kbytes\n",
                               get_u64(ram, "transferred") >> 10);
        g_string_append_printf(out, "throughput: %0.2f mbps\n",
                               json_object_get_double_member_with_default(ram, "mbps", 0));
        g_string_append_printf(out, "remaining ram: %" PRIu64 " kbytes\n",
                               get_u64(ram, "remaining") >> 10);
        g_string_append_printf(out, "total ram: %" PRIu64 " kbytes\n", get_u64(ram, "total") >> 10);
        g_string_append_printf(out, "duplicate: %" PRIu64 " pages\n", get_u64(ram, "duplicate"));
        g_string_append_printf(out, "skipped: %" PRIu64 " pages\n", get_u64(ram, "skipped"));
        g_string_append_printf(out, "normal: %" PRIu64 " pages\n", get_u64(ram, "normal"));
        g_string_append_printf(out, "normal bytes: %" PRIu64 " kbytes\n",
                               get_u64(ram, "normal-bytes") >> 10);
        g_string_append_printf(out, "dirty sync count: %" PRIu64 "\n",
                               get_u64(ram, "dirty-sync-count"));
        g_string_append_printf(out, "page size: %" PRIu64 " kbytes\n",
                               get_u64(ram, "page-size") >> 10);
        g_string_append_printf(out, "pages-per-second: %" PRIu64 "\n",
                               get_u64(ram, "pages-per-second"));
        if (get_u64(ram, "dirty-pages-rate")) {
            g_string_append_printf(out, "dirty pages rate: %" PRIu64 " pages\n",
                                   get_u64(ram, "dirty-pages-rate"));
        }
        if (get_u64(ram, "precopy-bytes")) {
            g_string_append_printf(out, "precopy ram: %" PRIu64 " kbytes\n",
                                   get_u64(ram, "precopy-bytes") >> 10);
        }
        if (get_u64(ram, "downtime-bytes")) {
            g_string_append_printf(out, "downtime ram: %" PRIu64 " kbytes\n",
                                   get_u64(ram, "downtime-bytes") >> 10);
        }
    }
    JsonObject *x = json_object_has_member(o, "xbzrle-cache")
                        ? json_object_get_object_member(o, "xbzrle-cache")
                        : NULL;
    if (x) {
        /* QEMU's lines, then Tern's two extra counters. */
        g_string_append_printf(out, "cache size: %" PRIu64 " bytes\n", get_u64(x, "cache-size"));
        g_string_append_printf(out, "xbzrle transferred: %" PRIu64 " kbytes\n",
                               get_u64(x, "bytes") >> 10);
        g_string_append_printf(out, "xbzrle pages: %" PRIu64 " pages\n", get_u64(x, "pages"));
        g_string_append_printf(out, "xbzrle cache miss: %" PRIu64 " pages\n",
                               get_u64(x, "cache-miss"));
        g_string_append_printf(out, "xbzrle cache miss rate: %0.2f\n",
                               json_object_get_double_member_with_default(x, "cache-miss-rate", 0));
        g_string_append_printf(out, "xbzrle encoding rate: %0.2f\n",
                               json_object_get_double_member_with_default(x, "encoding-rate", 0));
        g_string_append_printf(out, "xbzrle overflow: %" PRIu64 "\n", get_u64(x, "overflow"));
        g_string_append_printf(out, "xbzrle cache hits: %" PRIu64 " pages\n",
                               get_u64(x, "cache-hits"));
        g_string_append_printf(out, "xbzrle cache memory: %" PRIu64 " kbytes\n",
                               get_u64(x, "cache-memory") >> 10);
    }
    if (json_object_has_member(o, "cpu-throttle-percentage"))
        g_string_append_printf(out, "cpu throttle percentage: %" PRIu64 "\n",
                               get_u64(o, "cpu-throttle-percentage"));
    JsonObject *comp = json_object_has_member(o, "compression")
                           ? json_object_get_object_member(o, "compression")
                           : NULL;
    if (comp) {
        g_string_append_printf(out, "compression pages: %" PRIu64 " pages\n",
                               get_u64(comp, "pages"));
        if (json_object_has_member(comp, "compression-rate"))
            g_string_append_printf(out, "compression rate: %0.2f\n",
                                   json_object_get_double_member_with_default(comp,
                                                                              "compression-rate",
                                                                              0));
    }
    JsonObject *mf = json_object_has_member(o, "x-multifd")
                         ? json_object_get_object_member(o, "x-multifd")
                         : NULL;
    if (mf) {
        JsonArray *chans = json_object_get_array_member(mf, "channel-stats");
        g_string_append_printf(out, "multifd channels: %" PRIu64 "\n", get_u64(mf, "channels"));
        for (guint i = 0; chans && i < json_array_get_length(chans); i++) {
            JsonObject *c = json_array_get_object_element(chans, i);
            g_string_append_printf(out, "multifd channel %" PRIu64 ": %" PRIu64 " kbytes\n",
                                   get_u64(c, "channel"), get_u64(c, "bytes") >> 10);
        }
        if (get_u64(mf, "placed-bytes"))
            g_string_append_printf(
                out, "multifd placement: %" PRIu64 " kbytes in %" PRIu64 " ms (%0.2f MB/s)\n",
                get_u64(mf, "placed-bytes") >> 10, get_u64(mf, "placement-time"),
                json_object_get_double_member_with_default(mf, "placement-rate", 0) / 1e6);
    }
    if (json_object_has_member(o, "error-desc")) {
        g_string_append_printf(out, "error description: %s\n",
                               json_object_get_string_member_with_default(o, "error-desc", ""));
    }
}

/* ---- parameters ---- */

static JsonNode *cmd_migrate_set_parameters(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    struct mig_params p;

    migration_get_params(cmds_mig, &p);
    /* Validates the whole request before anything changes. */
    if (!mig_params_apply_json(&p, args, errp)) {
        return NULL;
    }
    migration_set_params(cmds_mig, &p, errp);
    return NULL;
}

static JsonNode *cmd_query_migrate_parameters(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    struct mig_params p;

    migration_get_params(cmds_mig, &p);
    return command_result_object(mig_params_to_json(&p));
}

static void fmt_migrate_parameters(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);
    size_t count;
    const struct mig_param_desc *table = mig_params_table(&count);

    if (!o) {
        return;
    }
    for (size_t i = 0; i < count; i++) {
        const struct mig_param_desc *d = &table[i];
        JsonNode *v = json_object_get_member(o, d->name);
        if (!v || !JSON_NODE_HOLDS_VALUE(v)) {
            continue;
        }
        uint64_t value;
        if (d->type == MIG_PARAM_STR) {
            mig_param_format_str(out, d, json_node_get_string(v) ? json_node_get_string(v) : "");
            continue;
        }
        if (d->type == MIG_PARAM_ENUM) {
            int e = json_node_get_value_type(v) == G_TYPE_STRING
                        ? mig_param_enum_lookup(d, json_node_get_string(v))
                        : -1;
            value = e < 0 ? UINT64_MAX : (uint64_t)e;
        } else if (d->type == MIG_PARAM_BOOL) {
            value = json_node_get_boolean(v);
        } else {
            gint64 i64 = json_node_get_int(v);
            value = i64 < 0 ? 0 : (uint64_t)i64;
        }
        mig_param_format(out, d, value);
    }
}

/* HMP "migrate_set_parameter NAME VALUE": VALUE converted by the table. */
static JsonNode *cmd_hmp_migrate_set_parameter(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    const char *name = arg_string(args, "parameter");
    const char *text = arg_string(args, "value");
    const struct mig_param_desc *d = name ? mig_param_find(name) : NULL;
    struct mig_params p;

    if (!d) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Unknown migration parameter '%s'",
                    name ? name : "");
        return NULL;
    }
    migration_get_params(cmds_mig, &p);
    if (!text || !mig_param_apply_text(&p, d, text, errp)) {
        return NULL;
    }
    migration_set_params(cmds_mig, &p, errp);
    return NULL;
}

/* ---- capabilities ---- */

static JsonNode *cmd_migrate_set_capabilities(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    struct mig_params p;

    migration_get_params(cmds_mig, &p);
    if (!mig_caps_apply_json(&p, json_object_get_array_member(args, "capabilities"), errp))
        return NULL;
    migration_set_params(cmds_mig, &p, errp);
    return NULL;
}

static JsonNode *cmd_query_migrate_capabilities(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    struct mig_params p;

    migration_get_params(cmds_mig, &p);
    return command_result_array(mig_caps_to_json(&p));
}

static void fmt_migrate_capabilities(GString *out, JsonNode *result)
{
    JsonArray *a = JSON_NODE_HOLDS_ARRAY(result) ? json_node_get_array(result) : NULL;
    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonObject *c = json_array_get_object_element(a, i);
        g_string_append_printf(out, "%s: %s\n",
                               json_object_get_string_member_with_default(c, "capability", "?"),
                               json_object_get_boolean_member_with_default(c, "state", FALSE)
                                   ? "on"
                                   : "off");
    }
}

/* HMP "migrate_set_capability NAME on|off". */
static JsonNode *cmd_hmp_migrate_set_capability(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    const char *name = arg_string(args, "capability");
    const struct mig_param_desc *d = name ? mig_cap_find(name) : NULL;
    struct mig_params p;

    if (!d) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Capability '%s' is not supported",
                    name ? name : "");
        return NULL;
    }
    migration_get_params(cmds_mig, &p);
    mig_param_set(&p, d, json_object_get_boolean_member(args, "state"));
    migration_set_params(cmds_mig, &p, errp);
    return NULL;
}

/* ---- HMP migrate: blocking with progress ---- */

static uint64_t bytes_to_mib(uint64_t bytes)
{
    return bytes / MiB;
}

struct mig_watch {
    struct hmp_session *hs; /* a reference of ours */
    struct migration *mig;
    size_t line_len; /* width of the progress line on screen */
    char *line;      /* its text, not rewritten while unchanged */
};

static void mig_watch_erase_line(struct mig_watch *w)
{
    if (w->line_len) {
        g_autofree char *blank = g_strnfill(w->line_len, ' ');
        hmp_session_printf(w->hs, "\r%s\r", blank);
        w->line_len = 0;
        g_clear_pointer(&w->line, g_free);
    }
}

static void mig_watch_progress(struct mig_watch *w, const struct mig_info *info)
{
    const struct mig_stats *st = &info->stats;
    g_autofree char *line = g_strdup_printf(
        "%s: pass %" PRIu64 ", %" PRIu64 " MiB sent, %" PRIu64 " MiB remaining, "
        "%.0f mbps, expected downtime %" PRIu64 " ms",
        mig_status_name(info->status), st->dirty_sync_count, bytes_to_mib(st->transferred),
        bytes_to_mib(st->remaining), isfinite(st->mbps) ? st->mbps : 0.0, st->expected_downtime_ms);
    size_t len = strlen(line);

    if (w->line && !strcmp(w->line, line)) {
        return;
    }
    /* Pad over whatever was longer last time. */
    hmp_session_printf(w->hs, "\r%s%*s", line, (int)(w->line_len > len ? w->line_len - len : 0),
                       "");
    w->line_len = MAX(len, w->line_len);
    g_free(w->line);
    w->line = g_steal_pointer(&line);
}

static void mig_watch_finish(struct mig_watch *w, const struct mig_info *info)
{
    const struct mig_stats *st = &info->stats;

    mig_watch_erase_line(w);
    switch (info->status) {
    case MIG_STATUS_COMPLETED:
        hmp_session_printf(w->hs,
                           "migration completed: total %" PRIu64 " ms, downtime %" PRIu64
                           " ms, %" PRIu64 " MiB\n",
                           st->total_time_ms, st->downtime_ms,
                           bytes_to_mib(st->transferred + MiB / 2));
        break;
    case MIG_STATUS_FAILED:
        hmp_session_printf(w->hs, "Error: migration failed: %s\n",
                           info->error_desc ? info->error_desc : "unknown error");
        break;
    case MIG_STATUS_CANCELLED:
        hmp_session_puts(w->hs, "migration cancelled\n");
        break;
    default:
        break;
    }
}

static gboolean mig_watch_tick(gpointer opaque)
{
    struct mig_watch *w = opaque;
    struct mig_info info = { 0 };

    if (hmp_session_is_closed(w->hs)) {
        return G_SOURCE_REMOVE; /* the console went away; migration goes on */
    }
    migration_info(w->mig, &info);
    if (info.status == MIG_STATUS_NONE || mig_status_is_terminal(info.status)) {
        mig_watch_finish(w, &info);
        mig_info_clear(&info);
        hmp_session_resume(w->hs);
        return G_SOURCE_REMOVE;
    }
    if (hmp_session_is_tty(w->hs)) {
        mig_watch_progress(w, &info);
    }
    mig_info_clear(&info);
    return G_SOURCE_CONTINUE;
}

static void mig_watch_free(gpointer opaque)
{
    struct mig_watch *w = opaque;

    hmp_session_unref(w->hs);
    g_free(w->line);
    g_free(w);
}

static bool hmp_migrate(struct hmp_session *hs, struct machine *m, JsonObject *args, GError **errp)
{
    GError *err = NULL;

    cmd_migrate(m, args, &err);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    /* -d, or no console to hold (human-monitor-command): return at once. */
    if (arg_true(args, "detach") || !hmp_session_suspend(hs)) {
        return true;
    }
    struct mig_watch *w = g_new0(struct mig_watch, 1);
    w->hs = hmp_session_ref(hs);
    w->mig = cmds_mig;
    g_timeout_add_full(G_PRIORITY_DEFAULT, MIG_WATCH_INTERVAL_MS, mig_watch_tick, w,
                       mig_watch_free);
    return true;
}

/* ---- the table ---- */

static const struct cmd_arg args_migrate[] = {
    { "uri", CMD_ARG_STRING, true },
    { "channels", CMD_ARG_ARRAY, true },
    { "detach", CMD_ARG_BOOL, true },
    { "blk", CMD_ARG_BOOL, true },
    { "inc", CMD_ARG_BOOL, true },
    { "resume", CMD_ARG_BOOL, true },
    CMD_ARGS_END,
};

static const struct cmd_arg args_migrate_incoming[] = {
    { "uri", CMD_ARG_STRING, true },
    { "channels", CMD_ARG_ARRAY, true },
    { "exit-on-error", CMD_ARG_BOOL, true },
    CMD_ARGS_END,
};

static const struct cmd_arg args_migrate_set_capabilities[] = {
    { "capabilities", CMD_ARG_ARRAY, false },
    CMD_ARGS_END,
};

/* Filled from the parameter table at registration: no name written twice. */
#define MIG_SET_PARAMS_ARGS_MAX 32
static struct cmd_arg args_migrate_set_parameters[MIG_SET_PARAMS_ARGS_MAX + 1];

static const struct command migration_commands[] = {
    {
        .name = "migrate",
        .args = args_migrate,
        .handler = cmd_migrate,
        .hmp_name = "migrate",
        .hmp_args = "-d:detach uri:s",
        .hmp_usage = "[-d] uri",
        .help = "migrate to uri (tcp:HOST:PORT, unix:PATH); -d: do not wait",
        .hmp_handler = hmp_migrate,
    },
    {
        .name = "migrate-incoming",
        .args = args_migrate_incoming,
        .handler = cmd_migrate_incoming,
        .hmp_name = "migrate_incoming",
        .hmp_args = "uri:s",
        .hmp_usage = "uri",
        .help = "wait for an incoming migration on uri (needs -incoming defer)",
    },
    {
        .name = "migrate_cancel",
        .handler = cmd_migrate_cancel,
        .hmp_name = "migrate_cancel",
        .help = "cancel the current migration",
    },
    {
        .name = "query-migrate",
        .handler = cmd_query_migrate,
        .hmp_info = "migrate",
        .help = "show migration status",
        .hmp_format = fmt_info_migrate,
    },
    {
        .name = "migrate-set-parameters",
        .args = args_migrate_set_parameters,
        .handler = cmd_migrate_set_parameters,
    },
    {
        .name = "query-migrate-parameters",
        .handler = cmd_query_migrate_parameters,
        .hmp_info = "migrate_parameters",
        .help = "show current migration parameters",
        .hmp_format = fmt_migrate_parameters,
    },
    {
        .name = "migrate-set-capabilities",
        .args = args_migrate_set_capabilities,
        .handler = cmd_migrate_set_capabilities,
    },
    {
        .name = "query-migrate-capabilities",
        .handler = cmd_query_migrate_capabilities,
        .hmp_info = "migrate_capabilities",
        .help = "show current migration capabilities",
        .hmp_format = fmt_migrate_capabilities,
    },
    {
        .hmp_name = "migrate_set_capability",
        .hmp_args = "capability:s state:b",
        .hmp_usage = "capability on|off",
        .help = "enable or disable a migration capability",
        .handler = cmd_hmp_migrate_set_capability,
    },
    {
        .hmp_name = "migrate_set_parameter",
        .hmp_args = "parameter:s value:s",
        .hmp_usage = "parameter value",
        .help = "set a migration parameter",
        .handler = cmd_hmp_migrate_set_parameter,
    },
};

void migration_commands_register(struct migration *mig)
{
    static bool done;
    size_t count;
    const struct mig_param_desc *table = mig_params_table(&count);

    cmds_mig = mig;
    if (done) {
        return;
    }
    done = true;
    g_assert(count <= MIG_SET_PARAMS_ARGS_MAX);
    for (size_t i = 0; i < count; i++) {
        args_migrate_set_parameters[i] = (struct cmd_arg){
            table[i].name,
            /* A string parameter may also be null (QEMU's StrOrNull): params.c checks it. */
            table[i].type == MIG_PARAM_BOOL   ? CMD_ARG_BOOL
            : table[i].type == MIG_PARAM_INT  ? CMD_ARG_INT
            : table[i].type == MIG_PARAM_ENUM ? CMD_ARG_STRING
                                              : CMD_ARG_ANY,
            true,
        };
    }
    args_migrate_set_parameters[count] = (struct cmd_arg)CMD_ARGS_END;
    commands_register(migration_commands, G_N_ELEMENTS(migration_commands));
}
