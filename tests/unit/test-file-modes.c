/* test-file-modes.c: what Tern creates is its user's only (mode 0600 under any umask) and it never follows a symlink: monitor and migration sockets, the file: chardev, checkpoint files; tcp::PORT listens on loopback only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/channel-file.h"
#include "tern/channel.h"
#include "tern/chardev.h"

struct dir {
    char *path;
};

static int setup(void **state)
{
    struct dir *d = g_new0(struct dir, 1);

    d->path = g_dir_make_tmp("tern-modes-XXXXXX", NULL);
    assert_non_null(d->path);
    umask(0); /* the worst case: nothing taken away */
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    struct dir *d = *state;
    g_autoptr(GDir) dir = g_dir_open(d->path, 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(d->path, name, NULL);
        g_unlink(p);
    }
    g_rmdir(d->path);
    g_free(d->path);
    g_free(d);
    umask(022);
    return 0;
}

static char *in_dir(void **state, const char *name)
{
    struct dir *d = *state;

    return g_build_filename(d->path, name, NULL);
}

static unsigned mode_of(const char *path)
{
    struct stat st;

    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void write_file(const char *path, const char *text)
{
    assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void assert_contents(const char *path, const char *text)
{
    g_autofree char *got = NULL;

    assert_true(g_file_get_contents(path, &got, NULL, NULL));
    assert_string_equal(got, text);
}

static void test_chardev_file(void **state)
{
    g_autofree char *path = in_dir(state, "serial.log");
    g_autofree char *spec = g_strconcat("file:", path, NULL);
    g_autofree char *victim = in_dir(state, "victim");
    g_autofree char *link = in_dir(state, "link");
    g_autofree char *link_spec = g_strconcat("file:", link, NULL);
    GError *err = NULL;

    struct chardev *chr = chardev_open(spec, &err);
    g_assert_no_error(err);
    assert_int_equal(mode_of(path), 0600);
    chardev_close(chr);

    /* An existing file is truncated and keeps its owner's mode. */
    write_file(path, "old");
    assert_int_equal(chmod(path, 0640), 0);
    chr = chardev_open(spec, &err);
    g_assert_no_error(err);
    chardev_close(chr);
    assert_int_equal(mode_of(path), 0640);
    assert_contents(path, "");

    /* A symlink is refused, and what it points to is untouched. */
    write_file(victim, "precious");
    assert_int_equal(symlink(victim, link), 0);
    assert_null(chardev_open(link_spec, &err));
    assert_error(err, "symbolic link");
    g_clear_error(&err);
    assert_contents(victim, "precious");
    /* A dangling one too: nothing is created at its target. */
    g_unlink(victim);
    assert_null(chardev_open(link_spec, &err));
    assert_error(err, "symbolic link");
    g_clear_error(&err);
    assert_false(g_file_test(victim, G_FILE_TEST_EXISTS));
}

static void test_monitor_socket(void **state)
{
    g_autofree char *path = in_dir(state, "qmp.sock");
    g_autofree char *plain = in_dir(state, "plain");
    g_autofree char *link = in_dir(state, "link.sock");
    GError *err = NULL;

    int fd = chardev_unix_listen(path, &err);
    g_assert_no_error(err);
    assert_int_equal(mode_of(path) & 0777, 0600);
    close(fd);
    /* A stale socket is replaced, again 0600. */
    fd = chardev_unix_listen(path, &err);
    g_assert_no_error(err);
    assert_int_equal(mode_of(path) & 0777, 0600);

    /* Neither a file nor a symlink (even to a socket) is removed. */
    write_file(plain, "keep");
    assert_int_equal(chardev_unix_listen(plain, &err), -1);
    assert_error(err, "not a socket");
    g_clear_error(&err);
    assert_contents(plain, "keep");
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(chardev_unix_listen(link, &err), -1);
    assert_error(err, "not a socket");
    g_clear_error(&err);
    assert_true(g_file_test(link, G_FILE_TEST_IS_SYMLINK));
    close(fd);
}

static void test_migration_socket(void **state)
{
    g_autofree char *path = in_dir(state, "mig.sock");
    g_autofree char *uri = g_strconcat("unix:", path, NULL);
    GError *err = NULL;

    int fd = channel_socket_listen(uri, &err);
    g_assert_no_error(err);
    assert_int_equal(mode_of(path) & 0777, 0600);
    close(fd);
}

static void test_tcp_no_host_is_loopback(void **state)
{
    GError *err = NULL;

    (void)state;
    int fd = channel_socket_listen("tcp::0", &err);
    g_assert_no_error(err);
    g_autofree char *uri = channel_socket_local_uri(fd, &err);
    g_assert_no_error(err);
    assert_true(g_str_has_prefix(uri, "tcp:127.0.0.1:"));
    close(fd);
}

static void test_checkpoint_file(void **state)
{
    g_autofree char *path = in_dir(state, "vm.ckpt");
    g_autofree char *victim = in_dir(state, "victim");
    g_autofree char *link = in_dir(state, "link.ckpt");
    GError *err = NULL;

    struct channel *ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    assert_int_equal(mode_of(channel_file_tmp_path(ch)), 0600);
    channel_put_le64(ch, 42);
    assert_true(channel_file_commit(ch, &err));
    g_assert_no_error(err);
    channel_close(ch);
    assert_int_equal(mode_of(path), 0600);

    write_file(victim, "precious");
    assert_int_equal(symlink(victim, link), 0);
    assert_null(channel_file_create(link, &err));
    assert_error(err, "symbolic link");
    g_clear_error(&err);
    assert_contents(victim, "precious");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chardev_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_monitor_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_file, setup, teardown),
        cmocka_unit_test(test_tcp_no_host_is_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
