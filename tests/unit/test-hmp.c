/* test-hmp.c: HMP line handling, argument templates, help, and the consoles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "test-helpers.h"

#include <string.h>
#include <unistd.h>

#include "fake-machine.h"
#include "tern/chardev.h"
#include "tern/commands.h"
#include "tern/hmp.h"

static void drain(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

static char *run(struct machine *m, const char *line)
{
    return hmp_execute_capture(m, line);
}

static void assert_run(struct machine *m, const char *line, const char *expect)
{
    g_autofree char *out = run(m, line);
    assert_string_equal(out, expect);
}

static void test_info_status(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    assert_run(m, "info status", "VM status: running\r\n");
    fake_machine_set_runstate(m, RUNSTATE_PAUSED);
    assert_run(m, "  info   status  ", "VM status: paused\r\n");
    fake_machine_set_runstate(m, RUNSTATE_POSTMIGRATE);
    assert_run(m, "info status", "VM status: paused (postmigrate)\r\n");
    fake_machine_set_runstate(m, RUNSTATE_INMIGRATE);
    assert_run(m, "info status", "VM status: paused (inmigrate)\r\n");
    fake_machine_set_runstate(m, RUNSTATE_PRELAUNCH);
    assert_run(m, "info status", "VM status: paused (prelaunch)\r\n");
    fake_machine_set_runstate(m, RUNSTATE_FINISH_MIGRATE);
    assert_run(m, "info status", "VM status: paused (finish-migrate)\r\n");
    fake_machine_set_runstate(m, RUNSTATE_INTERNAL_ERROR);
    assert_run(m, "info status", "VM status: paused (internal-error)\r\n");
    drain();
    machine_destroy(m);
}

static void test_unknown(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    assert_run(m, "foo", "unknown command: 'foo'\r\n");
    assert_run(m, "foo bar baz", "unknown command: 'foo'\r\n");
    assert_run(m, "info nothing", "unknown command: 'info nothing'\r\n");
    assert_run(m, "", "");
    assert_run(m, "stop now", "Error: extraneous characters at the end of line\r\n");
    assert_int_equal(machine_runstate(m), RUNSTATE_RUNNING);
    machine_destroy(m);
}

static void test_help(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    g_autofree char *all = run(m, "help");
    assert_non_null(strstr(all, "stop|s -- stop emulation\r\n"));
    assert_non_null(strstr(all, "cont|c -- resume emulation\r\n"));
    assert_non_null(strstr(all, "quit|q -- "));
    assert_non_null(strstr(all, "system_reset -- "));
    assert_non_null(strstr(all, "help|? [cmd] -- show the help\r\n"));
    assert_non_null(strstr(all, "info [subcommand] -- "));
    assert_null(strstr(all, "query-status")); /* QMP-only names stay out */

    g_autofree char *info = run(m, "help info");
    assert_non_null(strstr(info, "info status -- "));
    assert_non_null(strstr(info, "info cpus -- "));
    assert_non_null(strstr(info, "info version -- "));
    g_autofree char *bare = run(m, "info");
    assert_string_equal(bare, info);

    assert_run(m, "help stop", "stop|s -- stop emulation\r\n");
    assert_run(m, "? c", "cont|c -- resume emulation\r\n");
    assert_run(m, "help info status",
               "info status -- show the current VM status (running|paused)\r\n");
    assert_run(m, "help nope", "unknown command: 'nope'\r\n");
    machine_destroy(m);
}

static void test_info_cpus_version(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(3, RUNSTATE_RUNNING);

    assert_run(m, "info cpus",
               "* CPU #0: thread_id=1000\r\n  CPU #1: thread_id=1001\r\n"
               "  CPU #2: thread_id=1002\r\n");
    assert_run(m, "info version", "0.1.0 (tern)\r\n");
    machine_destroy(m);
}

static void test_state_commands(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    assert_run(m, "stop", "");
    assert_int_equal(machine_runstate(m), RUNSTATE_PAUSED);
    assert_run(m, "c", "");
    assert_int_equal(machine_runstate(m), RUNSTATE_RUNNING);
    assert_run(m, "s", "");
    assert_run(m, "cont", "");
    assert_run(m, "system_reset", "");
    assert_int_equal(fake_machine_reset_calls(m), 1);
    fake_machine_set_runstate(m, RUNSTATE_INMIGRATE);
    assert_run(m, "cont", "Error: Migration is not finalized yet\r\n");
    assert_run(m, "quit", "");
    assert_int_equal(fake_machine_quit_calls(m), 1);
    drain();
    machine_destroy(m);
}

/* ---- argument templates, through a table registered like migration's ---- */

static JsonNode *cmd_echo(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)errp;
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(n, args);
    return n;
}

static void fmt_echo(GString *out, JsonNode *result)
{
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_root(gen, result);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    g_string_append_printf(out, "%s\n", text);
}

static const struct cmd_arg echo_args[] = {
    { "detach", CMD_ARG_BOOL, true },
    { "uri", CMD_ARG_STRING, false },
    { "count", CMD_ARG_INT, true },
    { "rest", CMD_ARG_STRING, true },
    CMD_ARGS_END,
};

static struct hmp_session *held;

static bool hmp_block(struct hmp_session *hs, struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    if (hmp_session_suspend(hs)) {
        held = hmp_session_ref(hs);
        hmp_session_puts(hs, "blocking\n");
    } else {
        hmp_session_puts(hs, "cannot block, detached\n");
    }
    return true;
}

static bool hmp_fail(struct hmp_session *hs, struct machine *m, JsonObject *args, GError **errp)
{
    (void)hs;
    (void)m;
    g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "value %s rejected",
                json_object_get_string_member(args, "value"));
    return false;
}

static const struct command test_commands[] = {
    {
        .name = "x-echo",
        .args = echo_args,
        .handler = cmd_echo,
        .hmp_name = "echo",
        .hmp_args = "-d:detach uri:s count:i? rest:S?",
        .hmp_usage = "[-d] uri [count [text]]",
        .help = "echo arguments",
        .hmp_format = fmt_echo,
    },
    {
        .hmp_name = "x_block",
        .help = "block the monitor",
        .hmp_handler = hmp_block,
    },
    {
        .hmp_name = "x_set",
        .hmp_args = "parameter:s value:s",
        .help = "set",
        .hmp_handler = hmp_fail,
    },
    {
        .hmp_info = "x-echo",
        .handler = cmd_echo,
        .hmp_args = "n:n? on:b?",
        .help = "info echo",
        .hmp_format = fmt_echo,
    },
};

static void test_templates(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);

    commands_register(test_commands, G_N_ELEMENTS(test_commands));
    assert_run(m, "echo tcp:host:4444", "{\"uri\":\"tcp:host:4444\"}\r\n");
    assert_run(m, "echo -d unix:/tmp/s", "{\"detach\":true,\"uri\":\"unix:/tmp/s\"}\r\n");
    assert_run(m, "echo \"a b\\\"c\" 0x10 the rest  here  ",
               "{\"uri\":\"a b\\\"c\",\"count\":16,\"rest\":\"the rest  here\"}\r\n");
    assert_run(m, "echo u -5", "{\"uri\":\"u\",\"count\":-5}\r\n");
    assert_run(m, "echo", "Error: Parameter 'uri' is missing\r\n");
    assert_run(m, "echo -d", "Error: Parameter 'uri' is missing\r\n");
    assert_run(m, "echo u 12x", "Error: '12x' is not a valid integer for 'count'\r\n");
    assert_run(m, "echo \"open", "Error: unterminated string literal\r\n");
    assert_run(m, "x_set downtime-limit 300", "Error: value 300 rejected\r\n");
    assert_run(m, "x_set downtime-limit", "Error: Parameter 'value' is missing\r\n");
    assert_run(m, "info x-echo 2.5 off", "{\"n\":2.5,\"on\":false}\r\n");
    assert_run(m, "info x-echo 1 maybe", "Error: 'maybe' is not on or off for 'on'\r\n");
    assert_run(m, "x_block", "cannot block, detached\r\n");
    g_autofree char *help = run(m, "help echo");
    assert_string_equal(help, "echo [-d] uri [count [text]] -- echo arguments\r\n");

    /* The same entry through QMP's human-monitor-command. */
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "command-line", "echo -d x");
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode)
        ret = commands_dispatch(commands_lookup("human-monitor-command"), m, args, &err);
    assert_non_null(ret);
    assert_string_equal(json_node_get_string(ret), "{\"detach\":true,\"uri\":\"x\"}\r\n");
    machine_destroy(m);
}

/* ---- interactive sessions ---- */

static void capture(void *opaque, const char *text, size_t len)
{
    g_string_append_len(opaque, text, (gssize)len);
}

static void test_session_lines(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);
    GString *out = g_string_new(NULL);
    struct hmp_session *hs = hmp_session_new(m, capture, out, true);

    assert_true(g_str_has_prefix(out->str, "Tern 0.1.0 monitor - type 'help'"));
    assert_true(g_str_has_suffix(out->str, "\r\n(tern) "));
    g_string_truncate(out, 0);

    hmp_session_feed(hs, "info st", 7);
    assert_string_equal(out->str, "");
    hmp_session_feed(hs, "atus\r\n", 6);
    assert_string_equal(out->str, "VM status: running\r\n(tern) ");
    g_string_truncate(out, 0);

    /* Several lines at once, bare \r, \n, backspace and DEL, empty lines. */
    const char *in = "stop\rinfo statsx\x7f\x08us\n\ninfo\tstatus\r\n";
    hmp_session_feed(hs, in, strlen(in));
    assert_string_equal(out->str, "(tern) VM status: paused\r\n(tern) (tern) "
                                  "VM status: paused\r\n(tern) ");
    g_string_truncate(out, 0);

    /* An over-long line is refused, the next one works. */
    g_autofree char *lng = g_strnfill(HMP_MAX_LINE + 10, 'x');
    hmp_session_feed(hs, lng, strlen(lng));
    hmp_session_feed(hs, "\ncont\n", 6);
    assert_non_null(strstr(out->str, "Error: line longer than"));
    assert_int_equal(machine_runstate(m), RUNSTATE_RUNNING);
    g_string_truncate(out, 0);

    /* A blocking command holds later lines until it resumes the session. */
    held = NULL;
    hmp_session_feed(hs, "x_block\ninfo status\n", 20);
    assert_string_equal(out->str, "blocking\r\n");
    assert_non_null(held);
    g_string_truncate(out, 0);
    hmp_session_resume(held);
    assert_string_equal(out->str, "(tern) VM status: running\r\n(tern) ");
    hmp_session_unref(held);
    held = NULL;

    /* A session freed while a command holds it is safe to resume. */
    hmp_session_feed(hs, "x_block\n", 8);
    assert_non_null(held);
    hmp_session_free(hs);
    assert_true(hmp_session_is_closed(held));
    hmp_session_resume(held);
    hmp_session_unref(held);
    held = NULL;

    drain();
    g_string_free(out, TRUE);
    machine_destroy(m);
}

/* ---- chardevs and the socket console ---- */

/* Run the main loop until (fd) has sent something ending in (suffix). */
static char *read_until(int fd, const char *suffix)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (!g_str_has_suffix(s->str, suffix)) {
        assert_true(g_get_monotonic_time() < deadline);
        if (!pump_and_recv(fd, s)) {
            break;
        }
    }
    return g_string_free(s, FALSE);
}

static void test_socket_monitor(void **state)
{
    (void)state;
    struct machine *m = fake_machine_new(1, RUNSTATE_RUNNING);
    g_autofree char *dir = g_dir_make_tmp("tern-hmp-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "mon.sock", NULL);
    g_autofree char *spec = g_strdup_printf("unix:%s,server,nowait", path);
    g_autoptr(GError) err = NULL;

    assert_true(hmp_monitor_start(m, spec, &err));
    for (int round = 0; round < 2; round++) { /* a second client after the first left */
        int fd = connect_unix(path);
        g_autofree char *banner = read_until(fd, "(tern) ");
        assert_non_null(strstr(banner, "monitor - type 'help'"));
        assert_true(send(fd, "info status\r\n", 13, MSG_NOSIGNAL) == 13);
        g_autofree char *reply = read_until(fd, "(tern) ");
        assert_string_equal(reply, "VM status: running\r\n(tern) ");
        /* Leave, and wait until the server has dropped us (it closes its end):
         * the next client is then served by a console that saw this one go. */
        assert_int_equal(shutdown(fd, SHUT_WR), 0);
        g_autofree char *rest = read_until(fd, "\n(never)");
        assert_string_equal(rest, "");
        close(fd);
    }
    hmp_monitor_stop_all();
    assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    rmdir(dir);
    machine_destroy(m);
}

struct writer_arg {
    struct chardev *chr;
    int id;
};

static gpointer writer_thread(gpointer opaque)
{
    struct writer_arg *a = opaque;

    for (int i = 0; i < 1000; i++) {
        chardev_printf(a->chr, "t%d line %04d\n", a->id, i);
    }
    return NULL;
}

static void test_chardev_file_threads(void **state)
{
    (void)state;
    g_autofree char *dir = g_dir_make_tmp("tern-chr-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "out.txt", NULL);
    g_autofree char *spec = g_strdup_printf("file:%s", path);
    g_autoptr(GError) err = NULL;
    struct chardev *chr = chardev_open(spec, &err);

    assert_non_null(chr);
    assert_true(chardev_is_connected(chr));
    assert_false(chardev_is_tty(chr));
    struct writer_arg a = { chr, 1 }, b = { chr, 2 };
    GThread *ta = g_thread_new("wa", writer_thread, &a);
    GThread *tb = g_thread_new("wb", writer_thread, &b);
    g_thread_join(ta);
    g_thread_join(tb);
    uint64_t dropped = chardev_dropped_bytes(chr);
    chardev_close(chr);

    g_autofree char *text = NULL;
    gsize len;
    assert_true(g_file_get_contents(path, &text, &len, NULL));
    /* 2 x 1000 lines of 13 bytes, whole lines, unless some were dropped. */
    assert_int_equal(len + dropped, 2 * 1000 * 13);
    assert_non_null(strstr(text, "t1 line 0000\n"));
    unlink(path);
    rmdir(dir);
}

static void test_chardev_specs(void **state)
{
    (void)state;
    g_autoptr(GError) err = NULL;

    struct chardev *none = chardev_open("none", &err);
    assert_non_null(none);
    chardev_write(none, "x", 1);
    chardev_close(none);

    assert_null(chardev_open("bogus:thing", &err));
    assert_non_null(err);
    g_clear_error(&err);
    assert_null(chardev_open("unix:/tmp/x,sever", &err));
    assert_non_null(strstr(err->message, "unknown socket option"));
    g_clear_error(&err);
    assert_null(chardev_open("file:/nonexistent-dir/x", &err));
    g_clear_error(&err);

    struct chardev *s1 = chardev_open("stdio", &err);
    assert_non_null(s1);
    assert_null(chardev_open("stdio", &err));
    g_clear_error(&err);
    chardev_close(s1);

    /* A server with no client drops output instead of blocking. */
    g_autofree char *dir = g_dir_make_tmp("tern-chr-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s.sock", NULL);
    g_autofree char *spec = g_strdup_printf("unix:%s,server=on,wait=off", path);
    struct chardev *srv = chardev_open(spec, &err);
    assert_non_null(srv);
    assert_false(chardev_is_connected(srv));
    chardev_write(srv, "hello", 5);
    assert_int_equal(chardev_dropped_bytes(srv), 5);

    /* A client that never reads: writes stay bounded and never block. */
    int fd = connect_unix(path);
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!chardev_is_connected(srv)) {
        assert_true(g_get_monotonic_time() < deadline);
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    /* 4 MiB to a client that reads nothing: a write that waited for the
     * reader would hang here for good. What is kept is at most the buffer,
     * the chunk the writer thread has in hand and what the socket holds. */
    int sndbuf = 0, rcvbuf = 0;
    socklen_t optlen = sizeof(int);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &optlen), 0);
    optlen = sizeof(int);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &optlen), 0);
    g_autofree char *big = g_malloc0(64 * 1024);
    for (int i = 0; i < 64; i++) {
        chardev_write(srv, big, 64 * 1024);
    }
    uint64_t kept = 5 + 64 * 64 * 1024 - chardev_dropped_bytes(srv);
    assert_true(kept <= CHARDEV_OUT_MAX + 64 * 1024 + (uint64_t)sndbuf + (uint64_t)rcvbuf);
    chardev_close(srv);
    close(fd);
    assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_status),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_info_cpus_version),
        cmocka_unit_test(test_state_commands),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_session_lines),
        cmocka_unit_test(test_socket_monitor),
        cmocka_unit_test(test_chardev_file_threads),
        cmocka_unit_test(test_chardev_specs),
    };
    hmp_commands_register(); /* as main.c does at start-up */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
