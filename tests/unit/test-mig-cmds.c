/* test-mig-cmds.c: the migration monitor commands (QMP and HMP) through the
 * command table, against a fake migration backend (fake-migration.c) and a
 * fake machine (fake-machine.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake-machine.h"
#include "fake-migration.h"
#include "tern/commands.h"
#include "tern/hmp.h"
#include "tern/migration-cmds.h"
#include "tern/migration-params.h"
#include "tern/migration.h"

static void drain(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

/* The migration object handed to the commands (the fake's). */
static struct migration *test_mig;

static int setup(void **state)
{
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    test_mig = migration_new(m);
    migration_commands_register(test_mig);
    migration_commands_register(test_mig); /* a second call is harmless */
    fake_migration_reset();
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    drain();
    machine_destroy(*state);
    fake_migration_reset();
    return 0;
}

/* Run QMP command (name) with arguments (json) (NULL: none). Returns the result
 * as compact JSON text (g_free), or NULL with the error message in (*err). */
static char *qmp(struct machine *m, const char *name, const char *json, char **err)
{
    const struct command *cmd = commands_lookup(name);
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    JsonObject *args = NULL;

    assert_non_null(cmd);
    if (json) {
        assert_true(json_parser_load_from_data(parser, json, -1, NULL));
        args = json_node_get_object(json_parser_get_root(parser));
    }
    g_autoptr(JsonNode) ret = commands_dispatch(cmd, m, args, &error);
    if (err) {
        *err = error ? g_strdup(error->message) : NULL;
    }
    if (!ret) {
        assert_non_null(error);
        if (!err) {
            fail_msg("%s failed: %s", name, error->message);
        }
        return NULL;
    }
    assert_null(error);
    return json_to_string(ret, FALSE);
}

static void assert_qmp(struct machine *m, const char *name, const char *json, const char *expect)
{
    g_autofree char *out = qmp(m, name, json, NULL);
    assert_string_equal(out, expect);
}

static void assert_qmp_error(struct machine *m, const char *name, const char *json,
                             const char *expect)
{
    char *err = NULL;
    g_autofree char *out = qmp(m, name, json, &err);
    if (out) {
        fail_msg("%s %s: expected error '%s', got %s", name, json ? json : "", expect, out);
    }
    assert_string_equal(err, expect);
    g_free(err);
}

static char *hmp(struct machine *m, const char *line)
{
    return hmp_execute_capture(m, line);
}

static void assert_hmp(struct machine *m, const char *line, const char *expect)
{
    g_autofree char *out = hmp(m, line);
    assert_string_equal(out, expect);
}

/* ---- migrate ---- */

static void test_migrate_args(void **state)
{
    struct machine *m = *state;

    assert_qmp_error(m, "migrate", NULL, "Parameter 'uri' is missing");
    assert_qmp_error(m, "migrate", "{\"uri\": 5}",
                     "Invalid parameter type for 'uri', expected: string");
    assert_qmp_error(m, "migrate", "{\"uri\": \"tcp:h:1\", \"bogus\": 1}",
                     "Parameter 'bogus' is unexpected");
    assert_qmp_error(m, "migrate", "{\"uri\": \"tcp:h:1\", \"blk\": true}",
                     "Block migration ('blk', 'inc') is not supported: Tern migrates RAM, "
                     "CPU and device state only");
    assert_qmp_error(m, "migrate", "{\"uri\": \"tcp:h:1\", \"inc\": true}",
                     "Block migration ('blk', 'inc') is not supported: Tern migrates RAM, "
                     "CPU and device state only");
    assert_qmp_error(m, "migrate", "{\"channels\": []}",
                     "Migration 'channels' are not supported; give the destination as 'uri'");
    assert_qmp_error(m, "migrate", "{\"uri\": \"tcp:h:1\", \"resume\": true}",
                     "Postcopy recovery ('resume') is not supported");
    assert_int_equal(fake_migration_start_calls(), 0);

    /* detach is accepted and ignored; blk/inc false are harmless. */
    assert_qmp(m, "migrate",
               "{\"uri\": \"tcp:127.0.0.1:4444\", \"detach\": true, "
               "\"blk\": false, \"inc\": false}",
               "{}");
    assert_int_equal(fake_migration_start_calls(), 1);
    assert_string_equal(fake_migration_last_uri(), "tcp:127.0.0.1:4444");

    /* The backend's refusal comes back as the error. */
    assert_qmp_error(m, "migrate", "{\"uri\": \"unix:/x\"}",
                     "There's a migration process in progress");
    fake_migration_set_status(MIG_STATUS_FAILED);
    fake_migration_fail_start("Failed to connect to 'unix:/x'");
    assert_qmp_error(m, "migrate", "{\"uri\": \"unix:/x\"}", "Failed to connect to 'unix:/x'");
    assert_int_equal(fake_migration_start_calls(), 3);
}

static void test_migrate_incoming(void **state)
{
    struct machine *m = *state;

    assert_qmp_error(m, "migrate-incoming", "{\"uri\": \"tcp:0:4444\"}",
                     "'-incoming' was not specified on the command line");
    assert_hmp(m, "migrate_incoming tcp:0:4444",
               "Error: '-incoming' was not specified on the command line\r\n");
    assert_int_equal(fake_migration_incoming_calls(), 0);

    fake_machine_set_runstate(m, RUNSTATE_INMIGRATE);
    assert_qmp_error(m, "migrate-incoming", NULL, "Parameter 'uri' is missing");
    assert_qmp_error(m, "migrate-incoming", "{\"channels\": []}",
                     "Migration 'channels' are not supported; give the source as 'uri'");
    assert_qmp_error(m, "migrate-incoming", "{\"uri\": \"tcp:0:1\", \"exit-on-error\": false}",
                     "'exit-on-error': false is not supported: a failed incoming migration "
                     "always ends the process");
    assert_int_equal(fake_migration_incoming_calls(), 0);
    assert_qmp(m, "migrate-incoming", "{\"uri\": \"tcp:0:4444\", \"exit-on-error\": true}", "{}");
    assert_int_equal(fake_migration_incoming_calls(), 1);
    assert_string_equal(fake_migration_last_uri(), "tcp:0:4444");
    assert_qmp_error(m, "migrate-incoming", "{\"uri\": \"tcp:0:4445\"}",
                     "The incoming migration has already been started");
    assert_hmp(m, "migrate_incoming unix:/tmp/s",
               "Error: The incoming migration has already been started\r\n");
    assert_int_equal(fake_migration_incoming_calls(), 1);
}

static void test_migrate_incoming_hmp(void **state)
{
    struct machine *m = *state;

    fake_machine_set_runstate(m, RUNSTATE_INMIGRATE);
    assert_hmp(m, "migrate_incoming", "Error: Parameter 'uri' is missing\r\n");
    assert_hmp(m, "migrate_incoming \"unix:/tmp/a b\"", "");
    assert_string_equal(fake_migration_last_uri(), "unix:/tmp/a b");
}

static void test_migrate_cancel(void **state)
{
    struct machine *m = *state;
    static const enum mig_status noop[] = {
        MIG_STATUS_NONE,      MIG_STATUS_COMPLETED,  MIG_STATUS_FAILED,
        MIG_STATUS_CANCELLED, MIG_STATUS_CANCELLING,
    };

    /* Nothing to cancel: success, and the backend is not bothered. */
    for (size_t i = 0; i < G_N_ELEMENTS(noop); i++) {
        fake_migration_set_status(noop[i]);
        assert_qmp(m, "migrate_cancel", NULL, "{}");
        assert_hmp(m, "migrate_cancel", "");
    }
    assert_int_equal(fake_migration_cancel_calls(), 0);

    fake_migration_set_status(MIG_STATUS_ACTIVE);
    assert_qmp(m, "migrate_cancel", NULL, "{}");
    assert_int_equal(fake_migration_cancel_calls(), 1);
    assert_qmp(m, "query-migrate", NULL, "{\"status\":\"cancelled\"}");

    /* Too late: the backend's refusal is an error, in QMP and HMP. */
    fake_migration_set_status(MIG_STATUS_DEVICE);
    fake_migration_fail_cancel("Migration can no longer be cancelled: the destination has "
                               "the complete state");
    assert_qmp_error(m, "migrate_cancel", NULL,
                     "Migration can no longer be cancelled: the "
                     "destination has the complete state");
    assert_hmp(m, "migrate_cancel",
               "Error: Migration can no longer be cancelled: the "
               "destination has the complete state\r\n");
    assert_qmp_error(m, "migrate_cancel", "{\"x\": 1}", "Parameter 'x' is unexpected");
}

/* ---- query-migrate ---- */

static const struct mig_stats sample_stats = {
    .total_time_ms = 1234,
    .setup_time_ms = 12,
    .downtime_ms = 45,
    .expected_downtime_ms = 67,
    .transferred = 20 * 1024 * 1024 + 512,
    .remaining = 3 * 1024 * 1024,
    .total = 64 * 1024 * 1024,
    .duplicate = 1000,
    .normal = 5000,
    .normal_bytes = 5000 * 4096,
    .compressed = 77,
    .skipped = 9000,
    .dirty_pages_rate = 250,
    .dirty_sync_count = 4,
    .mbps = 941.5,
    .pages_per_second = 28000,
    .precopy_bytes = 19 * 1024 * 1024,
    .downtime_bytes = 1024 * 1024,
};

#define RAM_JSON \
    "\"ram\":{\"transferred\":20972032,\"remaining\":3145728,\"total\":67108864," \
    "\"duplicate\":1000,\"normal\":5000,\"normal-bytes\":20480000," \
    "\"dirty-pages-rate\":250,\"mbps\":941.5,\"dirty-sync-count\":4," \
    "\"postcopy-requests\":0,\"page-size\":4096,\"multifd-bytes\":0," \
    "\"pages-per-second\":28000,\"precopy-bytes\":19922944,\"downtime-bytes\":1048576," \
    "\"postcopy-bytes\":0,\"dirty-sync-missed-zero-copy\":0,\"skipped\":9000}"

static void test_query_migrate_shapes(void **state)
{
    struct machine *m = *state;

    fake_migration_set_stats(&sample_stats);
    fake_migration_set_error_desc("connection reset");

    fake_migration_set_status(MIG_STATUS_NONE);
    assert_qmp(m, "query-migrate", NULL, "{}");
    fake_migration_set_status(MIG_STATUS_SETUP);
    assert_qmp(m, "query-migrate", NULL, "{\"status\":\"setup\"}");

    static const char *const live[] = { "active", "device", "cancelling" };
    static const enum mig_status live_status[] = {
        MIG_STATUS_ACTIVE,
        MIG_STATUS_DEVICE,
        MIG_STATUS_CANCELLING,
    };
    for (size_t i = 0; i < G_N_ELEMENTS(live); i++) {
        fake_migration_set_status(live_status[i]);
        g_autofree char *expect = g_strdup_printf(
            "{\"status\":\"%s\",\"total-time\":1234,\"setup-time\":12,"
            "\"expected-downtime\":67," RAM_JSON "}",
            live[i]);
        assert_qmp(m, "query-migrate", NULL, expect);
    }
    fake_migration_set_status(MIG_STATUS_COMPLETED);
    assert_qmp(m, "query-migrate", NULL,
               "{\"status\":\"completed\",\"total-time\":1234,\"setup-time\":12,"
               "\"downtime\":45," RAM_JSON "}");
    fake_migration_set_status(MIG_STATUS_FAILED);
    assert_qmp(m, "query-migrate", NULL,
               "{\"status\":\"failed\",\"error-desc\":\"connection reset\"}");
    fake_migration_set_status(MIG_STATUS_CANCELLED);
    assert_qmp(m, "query-migrate", NULL,
               "{\"status\":\"cancelled\",\"error-desc\":\"connection reset\"}");
    fake_migration_set_error_desc(NULL);
    assert_qmp(m, "query-migrate", NULL, "{\"status\":\"cancelled\"}");
    fake_migration_set_status(MIG_STATUS_FAILED);
    assert_qmp(m, "query-migrate", NULL, "{\"status\":\"failed\"}");

    /* Compression statistics only with compression on, and only with "ram". */
    assert_qmp(m, "migrate-set-parameters", "{\"compress-level\": 6}", "{}");
    assert_qmp(m, "query-migrate", NULL, "{\"status\":\"failed\"}");
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    assert_qmp(m, "query-migrate", NULL,
               "{\"status\":\"active\",\"total-time\":1234,\"setup-time\":12,"
               "\"expected-downtime\":67," RAM_JSON ",\"compression\":{\"pages\":77,"
               "\"busy\":0,\"busy-rate\":0.0}}");
}

static void test_query_migrate_nan(void **state)
{
    struct machine *m = *state;
    struct mig_stats st = { .mbps = __builtin_nan("") };

    /* A rate that is not a number must not produce invalid JSON. */
    fake_migration_set_stats(&st);
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    g_autofree char *out = qmp(m, "query-migrate", NULL, NULL);
    assert_non_null(strstr(out, "\"mbps\":0.0,"));
}

static void test_info_migrate(void **state)
{
    struct machine *m = *state;

    assert_hmp(m, "info migrate", "");
    fake_migration_set_stats(&sample_stats);
    fake_migration_set_status(MIG_STATUS_SETUP);
    assert_hmp(m, "info migrate", "Migration status: setup\r\n");

    fake_migration_set_status(MIG_STATUS_COMPLETED);
    assert_hmp(m, "info migrate",
               "Migration status: completed\r\n"
               "total time: 1234 ms\r\n"
               "downtime: 45 ms\r\n"
               "setup: 12 ms\r\n"
               "transferred ram: 20480 kbytes\r\n"
               "throughput: 941.50 mbps\r\n"
               "remaining ram: 3072 kbytes\r\n"
               "total ram: 65536 kbytes\r\n"
               "duplicate: 1000 pages\r\n"
               "skipped: 9000 pages\r\n"
               "normal: 5000 pages\r\n"
               "normal bytes: 20000 kbytes\r\n"
               "dirty sync count: 4\r\n"
               "page size: 4 kbytes\r\n"
               "pages-per-second: 28000\r\n"
               "dirty pages rate: 250 pages\r\n"
               "precopy ram: 19456 kbytes\r\n"
               "downtime ram: 1024 kbytes\r\n");

    fake_migration_set_status(MIG_STATUS_ACTIVE);
    g_autofree char *active = hmp(m, "info migrate");
    assert_non_null(strstr(active, "Migration status: active\r\ntotal time: 1234 ms\r\n"
                                   "expected downtime: 67 ms\r\nsetup: 12 ms\r\n"));
    assert_null(strstr(active, "\r\ndowntime:"));

    struct mig_stats quiet = sample_stats;
    quiet.dirty_pages_rate = quiet.precopy_bytes = quiet.downtime_bytes = 0;
    fake_migration_set_stats(&quiet);
    g_autofree char *q = hmp(m, "info migrate");
    assert_null(strstr(q, "dirty pages rate"));
    assert_null(strstr(q, "precopy ram"));
    assert_null(strstr(q, "downtime ram"));

    assert_qmp(m, "migrate-set-parameters", "{\"compress-level\": 1}", "{}");
    g_autofree char *comp = hmp(m, "info migrate");
    assert_non_null(strstr(comp, "\r\ncompression pages: 77 pages\r\n"));

    fake_migration_set_status(MIG_STATUS_FAILED);
    fake_migration_set_error_desc("target refused: RAM size differs");
    assert_hmp(m, "info migrate",
               "Migration status: failed\r\n"
               "error description: target refused: RAM size differs\r\n");
    fake_migration_set_status(MIG_STATUS_CANCELLED);
    fake_migration_set_error_desc(NULL);
    assert_hmp(m, "info migrate", "Migration status: cancelled\r\n");
}

/* ---- capabilities ---- */

static void test_capabilities(void **state)
{
    struct machine *m = *state;
    struct mig_params p;

    assert_qmp(m, "query-migrate-capabilities", NULL,
               "[{\"capability\":\"auto-converge\",\"state\":false},"
               "{\"capability\":\"xbzrle\",\"state\":false},"
               "{\"capability\":\"multifd\",\"state\":false}]");
    assert_qmp(m, "migrate-set-capabilities",
               "{\"capabilities\": [{\"capability\": \"auto-converge\", \"state\": true}]}", "{}");
    migration_get_params(test_mig, &p);
    assert_true(p.auto_converge);
    assert_hmp(m, "info migrate_capabilities",
               "auto-converge: on\r\nxbzrle: off\r\nmultifd: off\r\n");
    /* All or nothing: a bad entry after a good one changes nothing. */
    assert_qmp_error(m, "migrate-set-capabilities",
                     "{\"capabilities\": [{\"capability\": \"auto-converge\", \"state\": false},"
                     " {\"capability\": \"postcopy-ram\", \"state\": true}]}",
                     "Capability 'postcopy-ram' is not supported");
    assert_qmp_error(m, "migrate-set-capabilities", "{\"capabilities\": [{\"state\": true}]}",
                     "capabilities[0] must be {\"capability\": string, \"state\": bool}");
    migration_get_params(test_mig, &p);
    assert_true(p.auto_converge);
    assert_hmp(m, "migrate_set_capability auto-converge off", "");
    migration_get_params(test_mig, &p);
    assert_false(p.auto_converge);
    assert_hmp(m, "migrate_set_capability bogus on",
               "Error: Capability 'bogus' is not supported\r\n");
}

/* ---- parameters ---- */

#define DEFAULT_PARAMS_JSON \
    "{\"downtime-limit\":300,\"max-bandwidth\":0,\"compress-level\":0,\"cpu-throttle-initial\":" \
    "20,\"cpu-throttle-increment\":10,\"max-cpu-throttle\":99,\"x-passes\":0," \
    "\"x-checksum\":true,\"mode\":\"normal\",\"tls-creds\":\"\",\"tls-hostname\":\"\",\"tls-" \
    "authz\":\"\",\"xbzrle-cache-size\":67108864,\"multifd-channels\":2," \
    "\"multifd-compression\":\"none\",\"multifd-zlib-level\":1,\"multifd-zstd-level\":1}"

static void test_query_parameters(void **state)
{
    struct machine *m = *state;

    assert_qmp(m, "query-migrate-parameters", NULL, DEFAULT_PARAMS_JSON);
    assert_hmp(m, "info migrate_parameters",
               "downtime-limit: 300 ms\r\n"
               "max-bandwidth: 0 bytes/second\r\n"
               "compress-level: 0\r\n"
               "cpu-throttle-initial: 20 %\r\n"
               "cpu-throttle-increment: 10 %\r\n"
               "max-cpu-throttle: 99 %\r\n"
               "x-passes: 0\r\n"
               "x-checksum: on\r\n"
               "mode: normal\r\n"
               "tls-creds: ''\r\n"
               "tls-hostname: ''\r\n"
               "tls-authz: ''\r\n"
               "xbzrle-cache-size: 67108864 bytes\r\n"
               "multifd-channels: 2\r\n"
               "multifd-compression: none\r\n"
               "multifd-zlib-level: 1\r\n"
               "multifd-zstd-level: 1\r\n");

    /* Defaults match migration_params_default(). */
    struct mig_params p;
    migration_params_default(&p);
    assert_int_equal(p.downtime_limit_ms, 300);
    assert_int_equal(p.max_bandwidth, 0);
    assert_int_equal(p.compress_level, 0);
    assert_int_equal(p.x_passes, 0);
    assert_true(p.x_checksum);
}

/* mode: a string parameter with QEMU's values, over QMP and HMP. */
static void test_mode_parameter(void **state)
{
    struct machine *m = *state;
    g_autofree char *out = NULL;

    assert_qmp(m, "migrate-set-parameters", "{\"mode\": \"cpr-transfer\"}", "{}");
    out = qmp(m, "query-migrate-parameters", NULL, NULL);
    assert_non_null(strstr(out, "\"mode\":\"cpr-transfer\""));
    assert_qmp_error(m, "migrate-set-parameters", "{\"mode\": \"sideways\"}",
                     "Parameter 'mode' does not accept value 'sideways' (one of: normal, "
                     "cpr-transfer)");
    assert_qmp_error(m, "migrate-set-parameters", "{\"mode\": 1}",
                     "Invalid parameter type for 'mode', expected: string");
    assert_hmp(m, "migrate_set_parameter mode normal", "");
    g_autofree char *info = hmp(m, "info migrate_parameters");
    assert_non_null(strstr(info, "mode: normal\r\n"));
}

static void test_set_parameters(void **state)
{
    struct machine *m = *state;

    assert_qmp(m, "migrate-set-parameters", "{}", "{}");
    assert_qmp(m, "migrate-set-parameters",
               "{\"downtime-limit\": 100, \"max-bandwidth\": 125000000}", "{}");
    assert_qmp(
        m, "query-migrate-parameters", NULL,
        "{\"downtime-limit\":100,\"max-bandwidth\":125000000,\"compress-level\":0,\"cpu-"
        "throttle-initial\":20,\"cpu-throttle-increment\":10,\"max-cpu-throttle\":99,"
        "\"x-passes\":0,\"x-checksum\":true,\"mode\":\"normal\",\"tls-creds\":\"\",\"tls-"
        "hostname\":\"\",\"tls-authz\":\"\",\"xbzrle-cache-size\":67108864,\"multifd-channels\":2,"
        "\"multifd-compression\":\"none\",\"multifd-zlib-level\":1,\"multifd-zstd-level\":1}");
    assert_qmp(m, "migrate-set-parameters",
               "{\"x-checksum\": false, \"x-passes\": 3, \"compress-level\": 9}", "{}");
    assert_qmp(
        m, "query-migrate-parameters", NULL,
        "{\"downtime-limit\":100,\"max-bandwidth\":125000000,\"compress-level\":9,\"cpu-"
        "throttle-initial\":20,\"cpu-throttle-increment\":10,\"max-cpu-throttle\":99,"
        "\"x-passes\":3,\"x-checksum\":false,\"mode\":\"normal\",\"tls-creds\":\"\",\"tls-"
        "hostname\":\"\",\"tls-authz\":\"\",\"xbzrle-cache-size\":67108864,\"multifd-channels\":2,"
        "\"multifd-compression\":\"none\",\"multifd-zlib-level\":1,\"multifd-zstd-level\":1}");
    unsigned calls = fake_migration_set_params_calls();

    /* Every error leaves everything as it was: all or nothing. */
    static const struct {
        const char *json, *error;
    } bad[] = {
        { "{\"downtime-limit\": 1, \"compress-level\": 10}",
          "Parameter 'compress-level' expects an integer in the range of 0 to 9" },
        { "{\"downtime-limit\": 2000001}",
          "Parameter 'downtime-limit' expects an integer in the range of 0 to 2000000 ms" },
        { "{\"x-passes\": 1, \"downtime-limit\": -1}",
          "Parameter 'downtime-limit' expects an integer in the range of 0 to 2000000 ms" },
        { "{\"max-bandwidth\": -5}",
          "Parameter 'max-bandwidth' expects an integer in the range of 0 to "
          "9223372036854775807 bytes/second" },
        { "{\"x-passes\": 100001}",
          "Parameter 'x-passes' expects an integer in the range of 0 to 100000" },
        { "{\"downtime-limit\": 1, \"x-checksum\": 1}",
          "Invalid parameter type for 'x-checksum', expected: boolean" },
        { "{\"downtime-limit\": 1.5}",
          "Invalid parameter type for 'downtime-limit', expected: integer" },
        { "{\"downtime-limit\": \"1\"}",
          "Invalid parameter type for 'downtime-limit', expected: integer" },
        { "{\"downtime-limit\": 1, \"x-bogus\": 4}", "Parameter 'x-bogus' is unexpected" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        assert_qmp_error(m, "migrate-set-parameters", bad[i].json, bad[i].error);
    }
    assert_int_equal(fake_migration_set_params_calls(), calls);
    assert_qmp(
        m, "query-migrate-parameters", NULL,
        "{\"downtime-limit\":100,\"max-bandwidth\":125000000,\"compress-level\":9,\"cpu-"
        "throttle-initial\":20,\"cpu-throttle-increment\":10,\"max-cpu-throttle\":99,"
        "\"x-passes\":3,\"x-checksum\":false,\"mode\":\"normal\",\"tls-creds\":\"\",\"tls-"
        "hostname\":\"\",\"tls-authz\":\"\",\"xbzrle-cache-size\":67108864,\"multifd-channels\":2,"
        "\"multifd-compression\":\"none\",\"multifd-zlib-level\":1,\"multifd-zstd-level\":1}");
    /* Boundaries are inclusive. */
    assert_qmp(m, "migrate-set-parameters",
               "{\"downtime-limit\": 2000000, \"compress-level\": 0, "
               "\"max-bandwidth\": 9223372036854775807}",
               "{}");
    assert_qmp(
        m, "query-migrate-parameters", NULL,
        "{\"downtime-limit\":2000000,\"max-bandwidth\":9223372036854775807,"
        "\"compress-level\":0,\"cpu-throttle-initial\":20,\"cpu-throttle-increment\":10,"
        "\"max-cpu-throttle\":99,\"x-passes\":3,\"x-checksum\":false,\"mode\":\"normal\",\"tls-"
        "creds\":\"\",\"tls-hostname\":\"\",\"tls-authz\":\"\",\"xbzrle-"
        "cache-size\":67108864,\"multifd-channels\":2,"
        "\"multifd-compression\":\"none\",\"multifd-zlib-level\":1,\"multifd-zstd-level\":1}");
}

/* The table-level API the commands are built on. */
static void test_param_table(void **state)
{
    (void)state;
    size_t count;
    const struct mig_param_desc *t = mig_params_table(&count);
    struct mig_params p;

    assert_int_equal(count, 17);
    migration_params_default(&p);
    for (size_t i = 0; i < count; i++) {
        assert_ptr_equal(mig_param_find(t[i].name), &t[i]);
        /* Set and get round-trip through the right field and width. */
        struct mig_params q = p;
        uint64_t v = t[i].type == MIG_PARAM_BOOL ? !mig_param_get(&p, &t[i]) : t[i].max;
        mig_param_set(&q, &t[i], v);
        assert_int_equal(mig_param_get(&q, &t[i]), v);
        for (size_t j = 0; j < count; j++) {
            if (j != i) {
                assert_int_equal(mig_param_get(&q, &t[j]), mig_param_get(&p, &t[j]));
            }
        }
    }
    assert_null(mig_param_find("nope"));
    const struct mig_param_desc *dl = mig_param_find("downtime-limit");
    mig_param_set(&p, dl, 1234);
    assert_int_equal(p.downtime_limit_ms, 1234);
    mig_param_set(&p, mig_param_find("compress-level"), 7);
    assert_int_equal(p.compress_level, 7);
    mig_param_set(&p, mig_param_find("x-checksum"), 0);
    assert_false(p.x_checksum);
    /* NULL args apply nothing and succeed. */
    struct mig_params before = p;
    assert_true(mig_params_apply_json(&p, NULL, NULL));
    assert_memory_equal(&p, &before, sizeof(p));
}

static void test_hmp_set_parameter(void **state)
{
    struct machine *m = *state;
    struct mig_params p;

    assert_hmp(m, "migrate_set_parameter downtime-limit 500", "");
    /* max-bandwidth is a size: a bare number is MiB, as in QEMU. */
    assert_hmp(m, "migrate_set_parameter max-bandwidth 100", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.downtime_limit_ms, 500);
    assert_int_equal(p.max_bandwidth, 100 * 1024 * 1024);
    assert_hmp(m, "migrate_set_parameter max-bandwidth 32K", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.max_bandwidth, 32 * 1024);
    assert_hmp(m, "migrate_set_parameter max-bandwidth 1G", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.max_bandwidth, 1024 * 1024 * 1024);
    assert_hmp(m, "migrate_set_parameter max-bandwidth 4096B", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.max_bandwidth, 4096);
    assert_hmp(m, "migrate_set_parameter max-bandwidth 0M", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.max_bandwidth, 0);
    assert_hmp(m, "migrate_set_parameter max-bandwidth 7", "");
    assert_hmp(m, "migrate_set_parameter max-bandwidth 0", "");
    migration_get_params(test_mig, &p);
    assert_int_equal(p.max_bandwidth, 0);
    assert_hmp(m, "migrate_set_parameter x-checksum off", "");
    migration_get_params(test_mig, &p);
    assert_false(p.x_checksum);
    assert_hmp(m, "migrate_set_parameter x-checksum YES", "");
    assert_hmp(m, "migrate_set_parameter compress-level 4", "");
    assert_hmp(m, "migrate_set_parameter x-passes 2", "");
    assert_hmp(m, "info migrate_parameters",
               "downtime-limit: 500 ms\r\n"
               "max-bandwidth: 0 bytes/second\r\n"
               "compress-level: 4\r\n"
               "cpu-throttle-initial: 20 %\r\n"
               "cpu-throttle-increment: 10 %\r\n"
               "max-cpu-throttle: 99 %\r\n"
               "x-passes: 2\r\n"
               "x-checksum: on\r\n"
               "mode: normal\r\n"
               "tls-creds: ''\r\n"
               "tls-hostname: ''\r\n"
               "tls-authz: ''\r\n"
               "xbzrle-cache-size: 67108864 bytes\r\n"
               "multifd-channels: 2\r\n"
               "multifd-compression: none\r\n"
               "multifd-zlib-level: 1\r\n"
               "multifd-zstd-level: 1\r\n");

    unsigned calls = fake_migration_set_params_calls();
    assert_hmp(m, "migrate_set_parameter downtime-limit 2000001",
               "Error: Parameter 'downtime-limit' expects an integer in the range of 0 to "
               "2000000 ms\r\n");
    assert_hmp(m, "migrate_set_parameter downtime-limit -1",
               "Error: Parameter 'downtime-limit' expects an integer, not '-1'\r\n");
    assert_hmp(m, "migrate_set_parameter downtime-limit 10ms",
               "Error: Parameter 'downtime-limit' expects an integer, not '10ms'\r\n");
    assert_hmp(m, "migrate_set_parameter downtime-limit 99999999999999999999999",
               "Error: Parameter 'downtime-limit' expects an integer, not "
               "'99999999999999999999999'\r\n");
    assert_hmp(m, "migrate_set_parameter compress-level abc",
               "Error: Parameter 'compress-level' expects an integer, not 'abc'\r\n");
    assert_hmp(m, "migrate_set_parameter max-bandwidth lots",
               "Error: Parameter 'max-bandwidth' expects a size (a number of MiB, or with a "
               "K/M/G/T/B suffix), not 'lots'\r\n");
    assert_hmp(m, "migrate_set_parameter max-bandwidth 99999999999999",
               "Error: Parameter 'max-bandwidth' expects a size (a number of MiB, or with a "
               "K/M/G/T/B suffix), not '99999999999999'\r\n");
    assert_hmp(m, "migrate_set_parameter x-checksum maybe",
               "Error: Parameter 'x-checksum' expects on or off, not 'maybe'\r\n");
    assert_hmp(m, "migrate_set_parameter speed 5",
               "Error: Unknown migration parameter 'speed'\r\n");
    assert_hmp(m, "migrate_set_parameter x-passes", "Error: Parameter 'value' is missing\r\n");
    assert_int_equal(fake_migration_set_params_calls(), calls);
}

static void test_help(void **state)
{
    struct machine *m = *state;
    g_autofree char *all = hmp(m, "help");
    g_autofree char *info = hmp(m, "help info");

    assert_non_null(strstr(all, "migrate [-d] uri -- "));
    assert_non_null(strstr(all, "migrate_incoming uri -- "));
    assert_non_null(strstr(all, "migrate_cancel -- "));
    assert_non_null(strstr(all, "migrate_set_parameter parameter value -- "));
    assert_non_null(strstr(info, "info migrate -- "));
    assert_non_null(strstr(info, "info migrate_parameters -- "));
    for (const char *const *n =
             (const char *const[]){ "migrate", "migrate-incoming", "migrate_cancel",
                                    "query-migrate", "migrate-set-parameters",
                                    "query-migrate-parameters", NULL };
         *n; n++) {
        assert_non_null(commands_lookup(*n));
    }
}

/* ---- HMP migrate, blocking ---- */

struct console {
    GString *out;
    struct hmp_session *hs;
};

static void console_out(void *opaque, const char *text, size_t len)
{
    g_string_append_len(opaque, text, (gssize)len);
}

static void console_open(struct console *c, struct machine *m)
{
    c->out = g_string_new(NULL);
    c->hs = hmp_session_new(m, console_out, c->out, true);
    g_string_truncate(c->out, 0); /* the banner and first prompt */
}

static void console_close(struct console *c)
{
    if (c->hs) {
        hmp_session_free(c->hs);
    }
    g_string_free(c->out, TRUE);
}

static void console_type(struct console *c, const char *line)
{
    hmp_session_feed(c->hs, line, strlen(line));
}

/* Run the main loop until done(arg), for at most 5 s; on failure, name
 * (what) and show (shown) (NULL: nothing). */
static void run_until(bool (*done)(void *arg), void *arg, const char *what, const GString *shown)
{
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!done(arg)) {
        if (g_get_monotonic_time() > end) {
            fail_msg("timed out waiting for %s; output so far: '%s'", what,
                     shown ? shown->str : "");
        }
        g_main_context_iteration(NULL, FALSE);
        g_usleep(2000);
    }
}

static bool info_calls_reached(void *arg)
{
    return fake_migration_info_calls() >= *(unsigned *)arg;
}

/* Run the main loop until the HMP migrate watcher has looked at the migration
 * (n) more times (each look a migration_info() call): a "nothing was printed"
 * check after it judges what the watcher saw, not how long the host took. */
static void run_until_watched(unsigned n)
{
    unsigned want = fake_migration_info_calls() + n;
    run_until(info_calls_reached, &want, "the migrate watcher's looks", NULL);
}

struct output_wait {
    GString *out;
    const char *text;
    int pty_master; /* read this pseudo-terminal into (out) first; -1: none */
};

static void pty_read_all(int master, GString *out);

static bool output_has(void *arg)
{
    struct output_wait *w = arg;
    if (w->pty_master >= 0) {
        pty_read_all(w->pty_master, w->out);
    }
    return strstr(w->out->str, w->text) != NULL;
}

/* Run the main loop until (c)'s output contains (text), for at most 5 s. */
static void run_until_output(struct console *c, const char *text)
{
    struct output_wait w = { c->out, text, -1 };
    run_until(output_has, &w, text, c->out);
}

/* Run a blocking migrate on a console of its own, for a migration that ends
 * at once, until it prints its result. Every watcher started earlier has had
 * its look by then: all watchers tick at the same interval, so an earlier one
 * was due first. A "nothing happened" check after it judges what those
 * watchers did, not how long the host took. Counts one start and one look. */
static void run_until_earlier_watchers_looked(struct machine *m)
{
    struct console ref;

    fake_migration_set_status(MIG_STATUS_COMPLETED); /* so that a new one may start */
    console_open(&ref, m);
    console_type(&ref, "migrate tcp:reference:1\n");
    fake_migration_set_status(MIG_STATUS_COMPLETED); /* and ends before the first look */
    run_until_output(&ref, HMP_PROMPT);
    assert_non_null(strstr(ref.out->str, "migration completed"));
    console_close(&ref);
}

static void test_hmp_migrate_blocks(void **state)
{
    struct machine *m = *state;
    struct console c;

    console_open(&c, m);
    console_type(&c, "migrate tcp:127.0.0.1:4444\n");
    assert_int_equal(fake_migration_start_calls(), 1);
    assert_string_equal(fake_migration_last_uri(), "tcp:127.0.0.1:4444");
    /* Suspended: no prompt; typed lines wait. */
    assert_string_equal(c.out->str, "");
    console_type(&c, "info status\n");
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    run_until_watched(2);
    /* Not a terminal: no progress line either. */
    assert_string_equal(c.out->str, "");

    struct mig_stats st = sample_stats;
    st.transferred = 70 * 1024 * 1024 + 600 * 1024; /* rounds to 71 MiB */
    fake_migration_set_stats(&st);
    fake_migration_set_status(MIG_STATUS_COMPLETED);
    run_until_output(&c, "VM status");
    assert_string_equal(c.out->str,
                        "migration completed: total 1234 ms, downtime 45 ms, 71 MiB\r\n" HMP_PROMPT
                        "VM status: running\r\n" HMP_PROMPT);
    console_close(&c);
}

static void test_hmp_migrate_fails(void **state)
{
    struct machine *m = *state;
    struct console c;

    console_open(&c, m);
    console_type(&c, "migrate unix:/nowhere\n");
    fake_migration_set_error_desc("Failed to connect to 'unix:/nowhere': No such file");
    fake_migration_set_status(MIG_STATUS_FAILED);
    run_until_output(&c, HMP_PROMPT);
    assert_string_equal(c.out->str,
                        "Error: migration failed: Failed to connect to 'unix:/nowhere': No such "
                        "file\r\n" HMP_PROMPT);
    g_string_truncate(c.out, 0);

    /* A second one, cancelled from elsewhere (QMP). */
    console_type(&c, "migrate unix:/b\n");
    assert_int_equal(fake_migration_start_calls(), 2);
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    assert_qmp(m, "migrate_cancel", NULL, "{}");
    run_until_output(&c, HMP_PROMPT);
    assert_string_equal(c.out->str, "migration cancelled\r\n" HMP_PROMPT);
    g_string_truncate(c.out, 0);

    /* Refused at once: an error and the prompt, no waiting. */
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    console_type(&c, "migrate unix:/c\n");
    assert_string_equal(c.out->str,
                        "Error: There's a migration process in progress\r\n" HMP_PROMPT);
    g_string_truncate(c.out, 0);
    console_type(&c, "migrate\n");
    assert_string_equal(c.out->str, "Error: Parameter 'uri' is missing\r\n" HMP_PROMPT);
    console_close(&c);
}

static void test_hmp_migrate_detached(void **state)
{
    struct machine *m = *state;
    struct console c;

    console_open(&c, m);
    console_type(&c, "migrate -d tcp:h:1\n");
    assert_string_equal(c.out->str, HMP_PROMPT);
    assert_int_equal(fake_migration_start_calls(), 1);
    g_string_truncate(c.out, 0);

    /* human-monitor-command cannot block: it returns at once, like -d. */
    fake_migration_set_status(MIG_STATUS_COMPLETED);
    assert_qmp(m, "human-monitor-command", "{\"command-line\": \"migrate tcp:h:2\"}", "\"\"");
    assert_int_equal(fake_migration_start_calls(), 2);
    assert_string_equal(fake_migration_last_uri(), "tcp:h:2");

    /* Neither left a watcher behind: once a later one has looked at the
     * (completed) migration, that was the only look, and the -d console,
     * still open, got no result line. */
    run_until_earlier_watchers_looked(m);
    assert_int_equal(fake_migration_start_calls(), 3);
    assert_int_equal(fake_migration_info_calls(), 1);
    assert_string_equal(c.out->str, "");
    console_close(&c);
}

static void test_hmp_migrate_console_closes(void **state)
{
    struct machine *m = *state;
    struct console c;

    console_open(&c, m);
    console_type(&c, "migrate tcp:h:1\n");
    fake_migration_set_status(MIG_STATUS_ACTIVE);
    run_until_watched(1);
    hmp_session_free(c.hs);
    c.hs = NULL;
    /* The watcher notices and lets go of the session without another look at
     * the migration, so the completion prints nothing. */
    unsigned looks = fake_migration_info_calls();
    fake_migration_set_status(MIG_STATUS_COMPLETED);
    run_until_earlier_watchers_looked(m);
    assert_int_equal(fake_migration_info_calls(), looks + 1);
    assert_string_equal(c.out->str, "");
    console_close(&c);
}

/* On a terminal the blocking migrate rewrites one progress line with "\r". The
 * console is "stdio" on a pseudo-terminal standing in for fds 0 and 1. */
static void pty_read_all(int master, GString *out)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(master, buf, sizeof(buf))) > 0) {
        g_string_append_len(out, buf, n);
    }
}

static void run_until_pty(int master, GString *out, const char *text)
{
    struct output_wait w = { out, text, master };
    run_until(output_has, &w, text, out);
}

static bool migration_started(void *arg)
{
    (void)arg;
    return fake_migration_start_calls() > 0;
}

static void test_hmp_migrate_progress_tty(void **state)
{
    struct machine *m = *state;
    int master = posix_openpt(O_RDWR | O_NOCTTY);

    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
        skip();
    }
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(slave >= 0);
    fflush(stdout);
    int saved_in = dup(STDIN_FILENO), saved_out = dup(STDOUT_FILENO);
    assert_true(saved_in >= 0 && saved_out >= 0);
    dup2(slave, STDIN_FILENO);
    dup2(slave, STDOUT_FILENO);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

    GString *out = g_string_new(NULL);
    g_autoptr(GError) err = NULL;
    bool started = hmp_monitor_start(m, "stdio", &err);
    if (started) {
        run_until_pty(master, out, HMP_PROMPT);
        g_string_truncate(out, 0);
        const char *line = "migrate tcp:h:1\n";
        assert_int_equal(write(master, line, strlen(line)), (ssize_t)strlen(line));
        run_until_pty(master, out, "migrate tcp:h:1"); /* the echo */
        run_until(migration_started, NULL, "migrate to start", out);
        assert_int_equal(fake_migration_start_calls(), 1);
        struct mig_stats st = sample_stats;
        st.mbps = 941.7;
        fake_migration_set_stats(&st);
        fake_migration_set_status(MIG_STATUS_ACTIVE);
        run_until_pty(master, out,
                      "\ractive: pass 4, 20 MiB sent, 3 MiB remaining, 942 mbps, "
                      "expected downtime 67 ms");
        /* A shorter line is padded over the longer one. */
        st.dirty_sync_count = 5;
        st.transferred = st.remaining = 0;
        st.mbps = 5;
        st.expected_downtime_ms = 1;
        fake_migration_set_stats(&st);
        run_until_pty(master, out,
                      "\ractive: pass 5, 0 MiB sent, 0 MiB remaining, 5 mbps, "
                      "expected downtime 1 ms    ");
        /* An unchanged line is not rewritten. */
        run_until_watched(2);
        pty_read_all(master, out);
        assert_null(strstr(strstr(out->str, "pass 5"), "\ractive"));
        g_string_truncate(out, 0);
        fake_migration_set_status(MIG_STATUS_COMPLETED);
        run_until_pty(master, out, "migration completed: total 1234 ms, downtime 45 ms, 0 MiB");
        /* The progress line was blanked out first. */
        const char *done = strstr(out->str, "migration completed");
        assert_true(g_str_has_prefix(out->str, "\r     "));
        assert_true(done[-1] == '\r' && done[-2] == ' ');
        run_until_pty(master, out, HMP_PROMPT);
        hmp_monitor_stop_all();
    }
    dup2(saved_in, STDIN_FILENO);
    dup2(saved_out, STDOUT_FILENO);
    close(saved_in);
    close(saved_out);
    close(slave);
    close(master);
    g_string_free(out, TRUE);
    if (!started) {
        fail_msg("stdio console: %s", err->message);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_incoming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_incoming_hmp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_migrate_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_migrate_nan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_migrate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capabilities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode_parameter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_param_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_set_parameter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_migrate_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_migrate_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_migrate_detached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_migrate_console_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_migrate_progress_tty, setup, teardown),
    };
    hmp_commands_register(); /* as main.c does at start-up */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
