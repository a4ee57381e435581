/* test-qmp.c: the QMP session parser, error replies, events and a socket round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "test-helpers.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fake-machine.h"
#include "tern/commands.h"
#include "tern/events.h"
#include "tern/memory.h"
#include "tern/hmp.h"
#include "tern/json-scan.h"
#include "tern/qmp.h"

struct capture {
    GPtrArray *msgs; /* char *, one per output call */
};

static void capture_out(void *opaque, const char *text, size_t len)
{
    struct capture *c = opaque;

    /* Every message is one JSON text followed by "\r\n". */
    assert_true(len >= 2);
    assert_int_equal(text[len - 2], '\r');
    assert_int_equal(text[len - 1], '\n');
    assert_int_equal(strlen(text), len);
    g_ptr_array_add(c->msgs, g_strndup(text, len - 2));
}

struct fixture {
    struct machine *m;
    struct capture cap;
    struct qmp_session *s;
};

static void drain_events(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

static int setup(void **state)
{
    struct fixture *f = g_new0(struct fixture, 1);

    hmp_commands_register(); /* human-monitor-command */
    f->m = fake_machine_new(1, RUNSTATE_RUNNING);
    f->cap.msgs = g_ptr_array_new_with_free_func(g_free);
    f->s = qmp_session_new(f->m, capture_out, &f->cap);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    drain_events();
    qmp_session_free(f->s);
    g_ptr_array_free(f->cap.msgs, TRUE);
    machine_destroy(f->m);
    g_free(f);
    return 0;
}

static void feed(struct fixture *f, const char *text)
{
    qmp_session_feed(f->s, text, strlen(text));
}

/* The (i)th message, parsed; the caller owns it. */
static JsonNode *msg(struct fixture *f, guint i)
{
    g_autoptr(JsonParser) p = json_parser_new();

    assert_true(i < f->cap.msgs->len);
    assert_true(json_parser_load_from_data(p, f->cap.msgs->pdata[i], -1, NULL));
    return json_node_copy(json_parser_get_root(p));
}

static JsonNode *last(struct fixture *f)
{
    assert_true(f->cap.msgs->len > 0);
    return msg(f, f->cap.msgs->len - 1);
}

static void assert_qmp_error(JsonNode *n, const char *klass, const char *desc)
{
    JsonObject *o = json_node_get_object(n);
    assert_true(json_object_has_member(o, "error"));
    JsonObject *e = json_object_get_object_member(o, "error");
    assert_string_equal(json_object_get_string_member(e, "class"), klass);
    if (desc) {
        assert_string_equal(json_object_get_string_member(e, "desc"), desc);
    }
}

static void assert_last_error(struct fixture *f, const char *klass, const char *desc)
{
    g_autoptr(JsonNode) n = last(f);
    assert_qmp_error(n, klass, desc);
}

static JsonNode *last_return(struct fixture *f)
{
    g_autoptr(JsonNode) n = last(f);
    JsonObject *o = json_node_get_object(n);
    if (!json_object_has_member(o, "return")) {
        fail_msg("expected a return, got %s", (char *)f->cap.msgs->pdata[f->cap.msgs->len - 1]);
    }
    return json_node_copy(json_object_get_member(o, "return"));
}

static void negotiate(struct fixture *f)
{
    feed(f, "{\"execute\": \"qmp_capabilities\"}");
    g_autoptr(JsonNode) r = last_return(f);
    assert_true(JSON_NODE_HOLDS_OBJECT(r));
    assert_int_equal(json_object_get_size(json_node_get_object(r)), 0);
    assert_true(qmp_session_negotiated(f->s));
}

static void test_greeting(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(f->cap.msgs->len, 1);
    g_autoptr(JsonNode) n = msg(f, 0);
    JsonObject *qmp = json_object_get_object_member(json_node_get_object(n), "QMP");
    assert_non_null(qmp);
    JsonObject *ver = json_object_get_object_member(qmp, "version");
    JsonObject *qemu = json_object_get_object_member(ver, "qemu");
    assert_int_equal(json_object_get_int_member(qemu, "major"), 0);
    assert_int_equal(json_object_get_int_member(qemu, "minor"), 1);
    assert_int_equal(json_object_get_int_member(qemu, "micro"), 0);
    assert_string_equal(json_object_get_string_member(ver, "package"), "tern");
    assert_int_equal(json_array_get_length(json_object_get_array_member(qmp, "capabilities")), 0);
}

static void test_negotiation(void **state)
{
    struct fixture *f = *state;
    const char *expect = "Expecting capabilities negotiation with 'qmp_capabilities'";

    feed(f, "{\"execute\": \"query-status\"}");
    assert_last_error(f, "CommandNotFound", expect);
    feed(f, "{\"execute\": \"no-such-thing\"}");
    assert_last_error(f, "CommandNotFound", expect);
    assert_false(qmp_session_negotiated(f->s));
    feed(f, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}");
    assert_last_error(f, "GenericError", "Capability 'oob' not available");
    assert_false(qmp_session_negotiated(f->s));
    negotiate(f);
    feed(f, "{\"execute\": \"qmp_capabilities\"}");
    assert_last_error(f, "CommandNotFound",
                      "Capabilities negotiation is already complete, command ignored");

    feed(f, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonNode) r = last_return(f);
    JsonObject *o = json_node_get_object(r);
    assert_string_equal(json_object_get_string_member(o, "status"), "running");
    assert_true(json_object_get_boolean_member(o, "running"));
    assert_false(json_object_get_boolean_member(o, "singlestep"));
}

static void test_malformed(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    feed(f, "{\"execute\": }");
    g_autoptr(JsonNode) n = last(f);
    assert_qmp_error(n, "GenericError", NULL);
    const char *desc = json_object_get_string_member(
        json_object_get_object_member(json_node_get_object(n), "error"), "desc");
    assert_true(g_str_has_prefix(desc, "JSON parse error, "));

    guint before = f->cap.msgs->len;
    feed(f, "}");
    assert_int_equal(f->cap.msgs->len, before + 1);
    assert_last_error(f, "GenericError", "JSON parse error, unexpected '}'");
    feed(f, "nonsense ");
    assert_int_equal(f->cap.msgs->len, before + 2);
    assert_last_error(f, "GenericError", NULL);

    /* Bytes json-glib must reject without crashing: NUL, invalid UTF-8. */
    static const char bad[] = "{\"execute\": \"q\0\xff\xfe\"}{\"a\":\"\xc3\x28\"}";
    qmp_session_feed(f->s, bad, sizeof(bad) - 1);
    assert_int_equal(f->cap.msgs->len, before + 4);

    /* The session still works. */
    feed(f, "{\"execute\": \"query-status\", \"id\": 7}");
    g_autoptr(JsonNode) r = last_return(f);
    assert_non_null(r);
}

static void test_not_object(void **state)
{
    struct fixture *f = *state;
    const char *expect = "QMP input must be a JSON object";

    negotiate(f);
    feed(f, "[1, 2, {\"execute\": \"stop\"}]");
    assert_last_error(f, "GenericError", expect);
    guint before = f->cap.msgs->len;
    feed(f, "42 ");
    assert_last_error(f, "GenericError", expect);
    feed(f, "\"execute\"");
    assert_last_error(f, "GenericError", expect);
    feed(f, "true\n");
    assert_last_error(f, "GenericError", expect);
    assert_int_equal(f->cap.msgs->len, before + 3);
    assert_int_equal(machine_runstate(f->m), RUNSTATE_RUNNING);
}

static void test_execute_member(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    feed(f, "{\"arguments\": {}}");
    assert_last_error(f, "GenericError", "QMP input lacks member 'execute'");
    feed(f, "{\"execute\": 1}");
    assert_last_error(f, "GenericError", "QMP input member 'execute' must be a string");
    feed(f, "{\"execute\": [\"stop\"]}");
    assert_last_error(f, "GenericError", "QMP input member 'execute' must be a string");
    feed(f, "{\"execute\": \"stop\", \"arguments\": []}");
    assert_last_error(f, "GenericError", "QMP input member 'arguments' must be an object");
    feed(f, "{\"execute\": \"stop\", \"bogus\": 1}");
    assert_last_error(f, "GenericError", "QMP input member 'bogus' is unexpected");
    assert_int_equal(machine_runstate(f->m), RUNSTATE_RUNNING);
}

static void test_unknown_command(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    feed(f, "{\"execute\": \"frobnicate\"}");
    assert_last_error(f, "CommandNotFound", "The command frobnicate has not been found");
}

static void test_arguments(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    feed(f, "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": 5}}");
    assert_last_error(f, "GenericError",
                      "Invalid parameter type for 'command-line', expected: string");
    feed(f, "{\"execute\": \"human-monitor-command\", \"arguments\": "
            "{\"command-line\": \"info status\", \"cpu-index\": \"0\"}}");
    assert_last_error(f, "GenericError",
                      "Invalid parameter type for 'cpu-index', expected: integer");
    feed(f, "{\"execute\": \"human-monitor-command\", \"arguments\": {}}");
    assert_last_error(f, "GenericError", "Parameter 'command-line' is missing");
    feed(f, "{\"execute\": \"human-monitor-command\"}");
    assert_last_error(f, "GenericError", "Parameter 'command-line' is missing");
    feed(f, "{\"execute\": \"query-status\", \"arguments\": {\"verbose\": true}}");
    assert_last_error(f, "GenericError", "Parameter 'verbose' is unexpected");
    feed(f, "{\"execute\": \"human-monitor-command\", \"arguments\": "
            "{\"command-line\": \"info status\", \"extra\": 1}}");
    assert_last_error(f, "GenericError", "Parameter 'extra' is unexpected");
}

static void test_id_echo(void **state)
{
    struct fixture *f = *state;

    feed(f, "{\"execute\": \"query-status\", \"id\": \"early\"}");
    g_autoptr(JsonNode) e = last(f);
    assert_string_equal(json_object_get_string_member(json_node_get_object(e), "id"), "early");

    feed(f, "{\"execute\": \"qmp_capabilities\", \"id\": 1}");
    g_autoptr(JsonNode) a = last(f);
    assert_int_equal(json_object_get_int_member(json_node_get_object(a), "id"), 1);

    feed(f, "{\"id\": {\"tag\": [1, \"x\"]}, \"execute\": \"query-status\"}");
    g_autoptr(JsonNode) b = last(f);
    JsonObject *id = json_object_get_object_member(json_node_get_object(b), "id");
    assert_non_null(id);
    assert_int_equal(json_array_get_length(json_object_get_array_member(id, "tag")), 2);

    feed(f, "{\"execute\": \"nope\", \"id\": \"err-1\"}");
    g_autoptr(JsonNode) c = last(f);
    assert_qmp_error(c, "CommandNotFound", NULL);
    assert_string_equal(json_object_get_string_member(json_node_get_object(c), "id"), "err-1");

    feed(f, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonNode) d = last(f);
    assert_false(json_object_has_member(json_node_get_object(d), "id"));
}

static void test_several_in_one_read(void **state)
{
    struct fixture *f = *state;

    feed(f, "{\"execute\":\"qmp_capabilities\",\"id\":1}\n{\"execute\":\"stop\",\"id\":2}"
            "{\"execute\":\"query-status\",\"id\":3}  \r\n{\"execute\":\"cont\",\"id\":4}");
    assert_int_equal(f->cap.msgs->len, 5);
    for (guint i = 1; i < 5; i++) {
        g_autoptr(JsonNode) n = msg(f, i);
        JsonObject *o = json_node_get_object(n);
        assert_int_equal(json_object_get_int_member(o, "id"), i);
        assert_true(json_object_has_member(o, "return"));
    }
    g_autoptr(JsonNode) st = msg(f, 3);
    JsonObject *ret = json_object_get_object_member(json_node_get_object(st), "return");
    assert_string_equal(json_object_get_string_member(ret, "status"), "paused");
    assert_int_equal(machine_runstate(f->m), RUNSTATE_RUNNING);
}

static void test_split_across_reads(void **state)
{
    struct fixture *f = *state;
    /* Braces and escapes inside strings must not confuse the splitter. */
    const char *req = "{\"execute\": \"qmp_capabilities\", \"id\": \"a}\\\"{b\\\\\"}"
                      "{\"execute\": \"human-monitor-command\", \"id\": 2, \"arguments\": "
                      "{\"command-line\": \"info status\"}}";
    size_t len = strlen(req);

    for (size_t i = 0; i < len; i++) {
        qmp_session_feed(f->s, req + i, 1);
    }
    assert_int_equal(f->cap.msgs->len, 3);
    g_autoptr(JsonNode) a = msg(f, 1);
    assert_string_equal(json_object_get_string_member(json_node_get_object(a), "id"), "a}\"{b\\");
    g_autoptr(JsonNode) r = last_return(f);
    assert_string_equal(json_node_get_string(r), "VM status: running\r\n");

    /* QEMU also takes single-quoted strings; a '}' inside one is not the end. */
    feed(f, "{'execute': 'human-monitor-command', 'arguments': {'command-line': 'x}\"{'}}");
    g_autoptr(JsonNode) q = last_return(f);
    assert_string_equal(json_node_get_string(q), "unknown command: 'x}\"{'\r\n");
}

static void test_oversized(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    guint before = f->cap.msgs->len;
    feed(f, "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"");
    g_autofree char *chunk = g_malloc(64 * 1024);
    memset(chunk, 'a', 64 * 1024);
    for (int i = 0; i < 32; i++) { /* 2 MiB in one string */
        qmp_session_feed(f->s, chunk, 64 * 1024);
    }
    feed(f, "\"}}");
    assert_int_equal(f->cap.msgs->len, before + 1);
    g_autoptr(JsonNode) n = last(f);
    assert_qmp_error(n, "GenericError", NULL);
    const char *desc = json_object_get_string_member(
        json_object_get_object_member(json_node_get_object(n), "error"), "desc");
    assert_true(g_str_has_prefix(desc, "JSON parse error, "));
    assert_false(qmp_session_wants_close(f->s));

    /* Next request is fine. */
    feed(f, "{\"execute\": \"query-status\", \"id\": 9}");
    g_autoptr(JsonNode) r = last_return(f);
    assert_non_null(r);

    /* Too deep nesting, then recovery. */
    before = f->cap.msgs->len;
    for (int i = 0; i < QMP_MAX_DEPTH + 10; i++) {
        feed(f, "[");
    }
    for (int i = 0; i < QMP_MAX_DEPTH + 10; i++) {
        feed(f, "]");
    }
    assert_int_equal(f->cap.msgs->len, before + 1);
    assert_last_error(f, "GenericError", "JSON parse error, too many nested levels");
    feed(f, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonNode) r2 = last_return(f);
    assert_non_null(r2);

    /* An endless request: reply once, then ask to be closed. */
    before = f->cap.msgs->len;
    feed(f, "{\"x\": \"");
    for (int i = 0; i < (QMP_MAX_REQUEST + QMP_MAX_DISCARD) / (64 * 1024) + 2; i++) {
        qmp_session_feed(f->s, chunk, 64 * 1024);
    }
    assert_int_equal(f->cap.msgs->len, before + 1);
    assert_true(qmp_session_wants_close(f->s));
}

static void test_events(void **state)
{
    struct fixture *f = *state;
    struct capture cap2 = { g_ptr_array_new_with_free_func(g_free) };
    struct qmp_session *s2 = qmp_session_new(f->m, capture_out, &cap2);

    negotiate(f); /* f->s negotiated, s2 not */
    guint before = f->cap.msgs->len;
    gint64 t0 = g_get_real_time();
    event_emit("STOP", NULL);
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "status", "active");
    event_emit("MIGRATION", data);
    assert_int_equal(f->cap.msgs->len, before); /* delivered on the main loop only */
    drain_events();
    assert_int_equal(f->cap.msgs->len, before + 2);
    assert_int_equal(cap2.msgs->len, 1); /* just the greeting */

    g_autoptr(JsonNode) e1 = msg(f, before);
    JsonObject *o1 = json_node_get_object(e1);
    assert_string_equal(json_object_get_string_member(o1, "event"), "STOP");
    assert_false(json_object_has_member(o1, "data"));
    JsonObject *ts = json_object_get_object_member(o1, "timestamp");
    gint64 usec = json_object_get_int_member(ts, "seconds") * G_USEC_PER_SEC +
                  json_object_get_int_member(ts, "microseconds");
    assert_true(usec >= t0 && usec <= g_get_real_time());
    assert_true(json_object_get_int_member(ts, "microseconds") < G_USEC_PER_SEC);

    g_autoptr(JsonNode) e2 = msg(f, before + 1);
    JsonObject *o2 = json_node_get_object(e2);
    assert_string_equal(json_object_get_string_member(o2, "event"), "MIGRATION");
    assert_string_equal(json_object_get_string_member(json_object_get_object_member(o2, "data"),
                                                      "status"),
                        "active");

    /* Commands that change state emit through machine.c (the fake here). */
    feed(f, "{\"execute\": \"stop\"}");
    drain_events();
    g_autoptr(JsonNode) e3 = last(f);
    assert_string_equal(json_object_get_string_member(json_node_get_object(e3), "event"), "STOP");

    qmp_session_free(s2);
    g_ptr_array_free(cap2.msgs, TRUE);
}

static gpointer emit_thread(gpointer opaque)
{
    (void)opaque;
    for (int i = 0; i < 100; i++) {
        JsonObject *d = json_object_new();
        json_object_set_int_member(d, "n", i);
        event_emit("X", d);
    }
    return NULL;
}

static void test_events_from_thread_in_order(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    guint before = f->cap.msgs->len;
    GThread *t = g_thread_new("emit", emit_thread, NULL);
    g_thread_join(t);
    drain_events();
    assert_int_equal(f->cap.msgs->len, before + 100);
    gint64 prev = 0;
    for (int i = 0; i < 100; i++) {
        g_autoptr(JsonNode) e = msg(f, before + (guint)i);
        JsonObject *o = json_node_get_object(e);
        assert_int_equal(json_object_get_int_member(json_object_get_object_member(o, "data"), "n"),
                         i);
        JsonObject *ts = json_object_get_object_member(o, "timestamp");
        gint64 usec = json_object_get_int_member(ts, "seconds") * G_USEC_PER_SEC +
                      json_object_get_int_member(ts, "microseconds");
        assert_true(usec >= prev);
        prev = usec;
    }
}

static void test_queries(void **state)
{
    (void)state;
    struct machine *m2 = fake_machine_new(2, RUNSTATE_PAUSED);
    struct capture cap2 = { g_ptr_array_new_with_free_func(g_free) };
    struct qmp_session *s2 = qmp_session_new(m2, capture_out, &cap2);
    struct fixture f2 = { m2, cap2, s2 };

    negotiate(&f2);
    feed(&f2, "{\"execute\": \"query-cpus-fast\"}");
    g_autoptr(JsonNode) cpus = last_return(&f2);
    JsonArray *arr = json_node_get_array(cpus);
    assert_int_equal(json_array_get_length(arr), 2);
    JsonObject *c1 = json_array_get_object_element(arr, 1);
    assert_int_equal(json_object_get_int_member(c1, "cpu-index"), 1);
    assert_int_equal(json_object_get_int_member(c1, "thread-id"), 1001);
    assert_string_equal(json_object_get_string_member(c1, "qom-path"),
                        "/machine/unattached/device[1]");
    assert_string_equal(json_object_get_string_member(c1, "target"), "x86_64");
    JsonObject *props = json_object_get_object_member(c1, "props");
    assert_int_equal(json_object_get_int_member(props, "core-id"), 1);
    assert_int_equal(json_object_get_int_member(props, "socket-id"), 0);
    assert_int_equal(json_object_get_int_member(props, "thread-id"), 0);

    feed(&f2, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonNode) st = last_return(&f2);
    assert_string_equal(json_object_get_string_member(json_node_get_object(st), "status"),
                        "paused");
    assert_false(json_object_get_boolean_member(json_node_get_object(st), "running"));

    feed(&f2, "{\"execute\": \"query-version\"}");
    g_autoptr(JsonNode) v = last_return(&f2);
    assert_string_equal(json_object_get_string_member(json_node_get_object(v), "package"), "tern");

    feed(&f2, "{\"execute\": \"query-commands\"}");
    g_autoptr(JsonNode) cmds = last_return(&f2);
    bool found = false;
    JsonArray *ca = json_node_get_array(cmds);
    for (guint i = 0; i < json_array_get_length(ca); i++) {
        const char *name = json_object_get_string_member(json_array_get_object_element(ca, i),
                                                         "name");
        found |= !strcmp(name, "x-query-ram-digest");
    }
    assert_true(found);

    feed(&f2, "{\"execute\": \"x-query-ram-digest\"}");
    g_autoptr(JsonNode) dg = last_return(&f2);
    JsonObject *d = json_node_get_object(dg);
    assert_string_equal(json_object_get_string_member(d, "algorithm"), "crc32");
    g_autofree char *expect = g_strdup_printf("%08x", guest_ram_crc32(machine_ram(m2)));
    assert_string_equal(json_object_get_string_member(d, "digest"), expect);
    assert_int_equal(json_object_get_int_member(d, "bytes"), GUEST_RAM_MIN);

    feed(&f2, "{\"execute\": \"cont\"}");
    assert_int_equal(machine_runstate(m2), RUNSTATE_RUNNING);
    feed(&f2, "{\"execute\": \"system_reset\"}");
    assert_int_equal(fake_machine_reset_calls(m2), 1);
    feed(&f2, "{\"execute\": \"quit\"}");
    assert_int_equal(fake_machine_quit_calls(m2), 1);
    g_autoptr(JsonNode) q = last_return(&f2);
    assert_non_null(q);

    fake_machine_set_runstate(m2, RUNSTATE_INMIGRATE);
    feed(&f2, "{\"execute\": \"cont\"}");
    assert_last_error(&f2, "GenericError", "Migration is not finalized yet");

    feed(&f2, "{\"execute\": \"human-monitor-command\", \"arguments\": "
              "{\"command-line\": \"info cpus\"}}");
    g_autoptr(JsonNode) h = last_return(&f2);
    assert_string_equal(json_node_get_string(h),
                        "* CPU #0: thread_id=1000\r\n  CPU #1: thread_id=1001\r\n");

    drain_events();
    qmp_session_free(s2);
    g_ptr_array_free(cap2.msgs, TRUE);
    machine_destroy(m2);
}

/* Another module's table: how migration will add its commands. */
static JsonNode *cmd_test_echo(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    if (json_object_has_member(args, "fail")) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_DEVICE_NOT_ACTIVE, "asked to fail");
        return NULL;
    }
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(n, args);
    return n;
}

static const struct cmd_arg test_echo_args[] = {
    { "uri", CMD_ARG_STRING, false },
    { "detach", CMD_ARG_BOOL, true },
    { "level", CMD_ARG_NUMBER, true },
    { "fail", CMD_ARG_ANY, true },
    CMD_ARGS_END,
};

static const struct command test_commands[] = {
    { .name = "x-test-echo", .args = test_echo_args, .handler = cmd_test_echo },
};

static void test_registered_table(void **state)
{
    struct fixture *f = *state;

    commands_register(test_commands, G_N_ELEMENTS(test_commands));
    negotiate(f);
    feed(f, "{\"execute\": \"x-test-echo\", \"arguments\": {\"uri\": \"tcp:h:1\", "
            "\"detach\": true, \"level\": 2.5}}");
    g_autoptr(JsonNode) r = last_return(f);
    JsonObject *o = json_node_get_object(r);
    assert_string_equal(json_object_get_string_member(o, "uri"), "tcp:h:1");
    assert_true(json_object_get_boolean_member(o, "detach"));
    feed(f, "{\"execute\": \"x-test-echo\", \"arguments\": {\"uri\": \"u\", \"level\": 3}}");
    g_autoptr(JsonNode) r2 = last_return(f);
    assert_non_null(r2);
    feed(f, "{\"execute\": \"x-test-echo\", \"arguments\": {\"uri\": \"u\", \"detach\": 1}}");
    assert_last_error(f, "GenericError", "Invalid parameter type for 'detach', expected: boolean");
    feed(f, "{\"execute\": \"x-test-echo\", \"arguments\": {\"uri\": \"u\", \"fail\": null}}");
    assert_last_error(f, "DeviceNotActive", "asked to fail");
}

/* ---- the framing lexer ---- */

static const char *desc_of(JsonNode *n)
{
    return json_object_get_string_member(json_object_get_object_member(json_node_get_object(n),
                                                                       "error"),
                                         "desc");
}

static void test_scanner_strings(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    /* Brackets in strings are not nesting; an escaped quote ends nothing. */
    feed(f, "{\"execute\": \"query-status\", \"id\": \"[[[{\\\"]]}}\\\\\"}");
    g_autoptr(JsonNode) a = last(f);
    assert_string_equal(json_object_get_string_member(json_node_get_object(a), "id"),
                        "[[[{\"]]}}\\");
    feed(f, "{'execute': 'query-status', 'id': '\"}]'}");
    g_autoptr(JsonNode) b = last(f);
    assert_string_equal(json_object_get_string_member(json_node_get_object(b), "id"), "\"}]");
    feed(f, "{\"execute\": \"query-status\", \"id\": \"\\u00e9\\ud83d\\ude00\\/\"}");
    g_autoptr(JsonNode) c = last(f);
    assert_string_equal(json_object_get_string_member(json_node_get_object(c), "id"),
                        "\xc3\xa9\xf0\x9f\x98\x80/");

    /* What json-glib would read otherwise is refused, once per request. */
    static const struct {
        const char *in, *why;
    } bad[] = {
        /* json-glib takes no escapes in '...': "['\\', [[..." nests for it. */
        { "['\\', [[[1]]]]", "backslash in a single-quoted string" },
        /* json-glib skips comments: a quote inside one hid the nesting. */
        { "[/* \" */ [[[1]]] /* \" */]", "stray '/'" },
        { "{\"a\": \"\\q\"}", "invalid escape sequence in a string" },
        { "{\"a\": \"\\u12\"}", "invalid \\u escape in a string" },
        { "{\"a\": \"\\ud800\"}", "lone UTF-16 high surrogate" },
        { "{\"a\": \"\\udc00\"}", "lone UTF-16 low surrogate" },
        { "{\"a\": \"\\ud800\\u0041\"}", "invalid UTF-16 surrogate pair" },
        { "{\"a\": \"\\u0000\"}", "\\u0000 is not supported" },
        { "{\"a\": \"x\ty\"}", "control character in a string" },
        { "{\"a\": #1}", "stray '#'" },
        { "@nonsense ", "stray '@'" },
        { ",", "unexpected ','" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint before = f->cap.msgs->len;
        feed(f, bad[i].in);
        assert_int_equal(f->cap.msgs->len, before + 1);
        g_autofree char *want = g_strdup_printf("JSON parse error, %s", bad[i].why);
        assert_last_error(f, "GenericError", want);
        feed(f, "{\"execute\": \"query-status\"}");
        g_autoptr(JsonNode) r = last_return(f);
        assert_non_null(r);
    }
}

/* A request whose "id" nests (depth - 1) arrays: depth levels in all. */
static char *nested_request(unsigned depth)
{
    GString *s = g_string_new("{\"execute\": \"query-status\", \"id\": ");
    for (unsigned i = 1; i < depth; i++) {
        g_string_append_c(s, '[');
    }
    for (unsigned i = 1; i < depth; i++) {
        g_string_append_c(s, ']');
    }
    g_string_append_c(s, '}');
    return g_string_free(s, FALSE);
}

static void test_scanner_limits(void **state)
{
    struct fixture *f = *state;

    negotiate(f);
    /* Nesting: exactly QMP_MAX_DEPTH is served, one more is refused. */
    g_autofree char *ok = nested_request(QMP_MAX_DEPTH);
    feed(f, ok);
    g_autoptr(JsonNode) r = last_return(f);
    assert_non_null(r);
    guint before = f->cap.msgs->len;
    g_autofree char *deep = nested_request(QMP_MAX_DEPTH + 1);
    feed(f, deep);
    assert_int_equal(f->cap.msgs->len, before + 1);
    assert_last_error(f, "GenericError", "JSON parse error, too many nested levels");

    /* A token: exactly QMP_MAX_TOKEN bytes (quotes included), then one more. */
    for (int extra = 0; extra < 2; extra++) {
        GString *s = g_string_new("{\"execute\": \"query-status\", \"id\": \"");
        for (int i = 0; i < QMP_MAX_TOKEN - 2 + extra; i++) {
            g_string_append_c(s, 'a');
        }
        g_string_append(s, "\"}");
        before = f->cap.msgs->len;
        feed(f, s->str);
        g_string_free(s, TRUE);
        assert_int_equal(f->cap.msgs->len, before + 1);
        g_autoptr(JsonNode) n = last(f);
        if (extra) {
            assert_string_equal(desc_of(n), "JSON parse error, token too long");
        } else {
            assert_true(json_object_has_member(json_node_get_object(n), "return"));
        }
    }

    /* A request over QMP_MAX_REQUEST made of small tokens: refused, skipped. */
    GString *big = g_string_new("{\"execute\": \"query-status\", \"id\": [");
    while (big->len <= QMP_MAX_REQUEST) {
        g_string_append(big, "\"0123456789abcdef\", ");
    }
    g_string_append(big, "0]}");
    before = f->cap.msgs->len;
    qmp_session_feed(f->s, big->str, big->len);
    g_string_free(big, TRUE);
    assert_int_equal(f->cap.msgs->len, before + 1);
    g_autofree char *want = g_strdup_printf("JSON parse error, request larger than %d bytes",
                                            QMP_MAX_REQUEST);
    assert_last_error(f, "GenericError", want);
    assert_false(qmp_session_wants_close(f->s));
    assert_false(qmp_session_partial(f->s));
    assert_true(qmp_session_buffered(f->s) <= 64 * 1024);
    feed(f, "{\"execute\": \"query-status\"}");
    g_autoptr(JsonNode) r2 = last_return(f);
    assert_non_null(r2);
}

/* The lexer alone: events byte by byte. */
static void test_scanner_events(void **state)
{
    (void)state;
    struct json_scan js;
    const char *why = NULL;
    const char *in = " [\"]\\\"\", 'x', -1.5e3 ] true{}";
    /* S skip, P part, E end, B before (the byte is scanned again). */
    json_scan_init(&js, 4, 16);
    GString *got = g_string_new(NULL);
    for (const char *p = in; *p; p++) {
        enum json_scan_event ev = json_scan_byte(&js, (uint8_t)*p, &why);
        g_string_append_c(got, "SPEBX"[ev]);
        if (ev == JSON_SCAN_BEFORE) {
            ev = json_scan_byte(&js, (uint8_t)*p, &why);
            g_string_append_c(got, "SPEBX"[ev]);
        }
    }
    assert_false(json_scan_in_value(&js));
    assert_string_equal(got->str, "SPPPPPPPPPPPPPPPPPPPPESPPPPBPE");
    g_string_free(got, TRUE);

    /* Depth: 4 levels pass, the 5th is refused; the structure is still followed. */
    json_scan_reset(&js);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(json_scan_byte(&js, '[', &why), JSON_SCAN_PART);
    }
    assert_int_equal(json_scan_byte(&js, '[', &why), JSON_SCAN_ERROR);
    assert_string_equal(why, "too many nested levels");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(json_scan_byte(&js, ']', &why), JSON_SCAN_PART);
    }
    assert_int_equal(json_scan_byte(&js, ']', &why), JSON_SCAN_END);
    assert_false(json_scan_in_value(&js));
}

/* ---- a real socket ---- */

/* Run the main context until (n) "\r\n"-terminated lines arrived on (fd). */
static char *read_lines(int fd, unsigned n)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    for (;;) {
        unsigned lines = 0;
        for (const char *p = s->str; (p = strstr(p, "\r\n")); p += 2) {
            lines++;
        }
        if (lines >= n) {
            break;
        }
        assert_true(g_get_monotonic_time() < deadline);
        if (!pump_and_recv(fd, s)) {
            break;
        }
    }
    return g_string_free(s, FALSE);
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void test_socket_round_trip(void **state)
{
    struct fixture *f = *state;
    g_autofree char *dir = g_dir_make_tmp("tern-qmp-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "qmp.sock", NULL);
    g_autofree char *spec = g_strdup_printf("unix:%s,server,nowait", path);
    g_autoptr(GError) err = NULL;

    assert_true(qmp_server_start(f->m, spec, &err));
    int a = connect_unix(path);
    int b = connect_unix(path);

    g_autofree char *ga = read_lines(a, 1);
    assert_true(g_str_has_prefix(ga, "{\"QMP\""));
    g_autofree char *gb = read_lines(b, 1);
    assert_true(g_str_has_prefix(gb, "{\"QMP\""));

    send_str(a, "{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-st");
    send_str(b, "{\"execute\": \"query-status\", \"id\": \"b1\"}");
    g_autofree char *rb = read_lines(b, 1);
    assert_non_null(strstr(rb, "CommandNotFound"));
    assert_non_null(strstr(rb, "\"b1\""));
    send_str(a, "atus\", \"id\": \"a1\"}");
    g_autofree char *ra = read_lines(a, 2);
    assert_non_null(strstr(ra, "\"return\":{}"));
    assert_non_null(strstr(ra, "\"running\":true"));
    assert_non_null(strstr(ra, "\"a1\""));

    /* A client that goes away mid-request is harmless. */
    send_str(b, "{\"execute\": \"query-");
    close(b);
    for (int i = 0; i < 20; i++) {
        g_main_context_iteration(NULL, FALSE);
    }

    /* Events reach the negotiated client. */
    send_str(a, "{\"execute\": \"stop\"}");
    g_autofree char *rs = read_lines(a, 2);
    assert_non_null(strstr(rs, "\"event\":\"STOP\""));

    qmp_server_stop_all();
    close(a);
    assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    rmdir(dir);
}

/* Run the main loop until the server closes (fd); what came before is returned. */
static char *read_until_closed(int fd)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (pump_and_recv(fd, s)) {
        assert_true(g_get_monotonic_time() < deadline);
    }
    return g_string_free(s, FALSE);
}

static void test_socket_limits(void **state)
{
    struct fixture *f = *state;
    g_autofree char *dir = g_dir_make_tmp("tern-qmp-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "qmp.sock", NULL);
    g_autofree char *spec = g_strdup_printf("unix:%s,server,nowait", path);
    g_autoptr(GError) err = NULL;
    int fds[QMP_MAX_CLIENTS];

    assert_true(qmp_server_start(f->m, spec, &err));
    for (int i = 0; i < QMP_MAX_CLIENTS; i++) {
        fds[i] = connect_unix(path);
        g_autofree char *g = read_lines(fds[i], 1);
        assert_true(g_str_has_prefix(g, "{\"QMP\""));
    }
    /* One client too many: an error object, then the connection closes. */
    int extra = connect_unix(path);
    g_autofree char *e = read_until_closed(extra);
    g_autofree char *want = g_strdup_printf("{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                            "\"too many QMP clients (at most %d)\"}}\r\n",
                                            QMP_MAX_CLIENTS);
    assert_string_equal(e, want);
    close(extra);

    /* A client stalled mid-request is closed after TERN_QMP_STALL_MS (main). */
    send_str(fds[1], "{\"execute\": \"query-");
    gint64 t0 = g_get_monotonic_time();
    g_autofree char *st = read_until_closed(fds[1]);
    assert_true(g_get_monotonic_time() - t0 >= 200 * 1000);
    assert_non_null(strstr(st, "sent part of a request and nothing for 200 ms"));
    close(fds[1]);
    /* ... which frees a place. */
    fds[1] = connect_unix(path);
    g_autofree char *g1 = read_lines(fds[1], 1);
    assert_true(g_str_has_prefix(g1, "{\"QMP\""));

    /* A client that never reads its replies is closed once QMP_MAX_OUTPUT is
     * queued; the others are still served. */
    int rcvbuf = 4096;
    assert_int_equal(setsockopt(fds[2], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    send_str(fds[2], "{\"execute\": \"qmp_capabilities\"}");
    GString *flood = g_string_new(NULL);
    for (int i = 0; i < 2000; i++) {
        g_string_append(flood, "{\"execute\": \"query-commands\"}");
    }
    bool closed = false;
    for (int round = 0; round < 200 && !closed; round++) {
        ssize_t n = send(fds[2], flood->str, flood->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        closed = n < 0 && errno != EAGAIN;
        for (int i = 0; i < 50; i++) {
            g_main_context_iteration(NULL, FALSE);
        }
    }
    g_string_free(flood, TRUE);
    assert_true(closed);
    close(fds[2]);

    send_str(fds[0], "{\"execute\": \"qmp_capabilities\"}{\"execute\": \"query-status\"}");
    g_autofree char *r0 = read_lines(fds[0], 2);
    assert_non_null(strstr(r0, "\"running\":true"));

    qmp_server_stop_all();
    for (int i = 0; i < QMP_MAX_CLIENTS; i++) {
        close(fds[i]);
    }
    rmdir(dir);
}

int main(void)
{
    /* The stalled-client timeout, shortened for test_socket_limits. */
    g_setenv("TERN_QMP_STALL_MS", "200", TRUE);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_execute_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_in_one_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_across_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_from_thread_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registered_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scanner_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scanner_limits, setup, teardown),
        cmocka_unit_test(test_scanner_events),
        cmocka_unit_test_setup_teardown(test_socket_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
