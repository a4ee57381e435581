/* test-channel-file.c: the file channel: checkpoint round trips (O_DIRECT and buffered), atomic commit, aborts, full disks, truncated files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tern/channel-file.h"
#include "tern/util.h"

#define PAGE 4096u
#define RAM_OFF (1u << 20) /* where the test's "RAM area" starts */
#define SKIP_EXIT 77       /* a forked check that cannot run here */

static void *aligned_buf(size_t len)
{
    void *p = NULL;

    assert_int_equal(posix_memalign(&p, PAGE, len), 0);
    return p;
}

/* A fresh empty directory under (base); g_free the name. */
static char *make_dir(const char *base)
{
    char *dir = g_build_filename(base, "tern-cf-XXXXXX", NULL);

    assert_non_null(g_mkdtemp(dir));
    return dir;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Remove (dir) and the files in it (the tests make no subdirectories). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            g_autofree char *p = g_build_filename(dir, e->d_name, NULL);

            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static void set_direct(bool on)
{
    g_setenv("TERN_FILE_NO_DIRECT", on ? "0" : "1", TRUE);
}

static bool exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* ---- Round trip: head, positional pages, tail ---- */

#define NPAGES 512
#define HEAD_LEN 1000
#define TAIL_LEN 70001 /* unaligned, larger than the channel buffer */

/* Write a checkpoint at (path) with (ram) (NPAGES pages; some written,
 * see below), then read it back and compare. */
static void round_trip(const char *base, bool direct)
{
    g_autofree char *dir = make_dir(base);
    g_autofree char *path = g_build_filename(dir, "ckpt", NULL);
    uint8_t *ram = aligned_buf(NPAGES * PAGE);
    uint8_t *other = aligned_buf(4 * PAGE);
    uint8_t *back = aligned_buf(NPAGES * PAGE);
    uint8_t *head = g_malloc(HEAD_LEN), *tail = g_malloc(TAIL_LEN), *got = g_malloc(TAIL_LEN);
    bool written[NPAGES] = { false };
    uint64_t tail_off = ALIGN_UP((uint64_t)RAM_OFF + NPAGES * PAGE, (uint64_t)RAM_OFF);
    uint64_t requests, blocks, start, end, pos;
    g_autofree char *tmp = NULL;
    struct channel *ch;
    struct stat st;
    GError *err = NULL;

    fill(ram, NPAGES * PAGE, 1);
    fill(other, 4 * PAGE, 99);
    fill(head, HEAD_LEN, 2);
    fill(tail, TAIL_LEN, 3);
    set_direct(direct);

    ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    assert_true(channel_is_file(ch));
    print_message("%s: O_DIRECT %s\n", base, channel_file_is_direct(ch) ? "on" : "off");
    if (direct && !channel_file_is_direct(ch))
        print_message("%s: O_DIRECT not supported: the direct case runs buffered\n", base);
    if (!direct)
        assert_false(channel_file_is_direct(ch));
    tmp = g_strdup(channel_file_tmp_path(ch));
    assert_non_null(tmp);
    assert_true(g_str_has_prefix(tmp, path));
    assert_true(g_str_has_prefix(tmp + strlen(path), ".tmp-"));
    assert_int_equal(stat(tmp, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Head: sequential puts at offset 0. */
    channel_put_le32(ch, 0x12345678);
    channel_put_bytes(ch, head, HEAD_LEN);
    assert_true(channel_flush(ch, NULL));

    /* A merged run of 64 pages (adjacent in memory and in the file). */
    for (int i = 0; i < 64; i++) {
        assert_true(channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE, ram + i * PAGE, PAGE, &err));
        written[i] = true;
    }
    /* Adjacent in the file, not in memory: one request with several iovecs. */
    for (int i = 100; i < 104; i++) {
        memcpy(ram + i * PAGE, other + (i - 100) * PAGE, PAGE);
        assert_true(channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE, other + (i - 100) * PAGE,
                                     PAGE, &err));
        written[i] = true;
    }
    /* Scattered pages, backwards. */
    for (int i = NPAGES - 1; i >= 200; i -= 7) {
        assert_true(channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE, ram + i * PAGE, PAGE, &err));
        written[i] = true;
    }
    /* A multi-page call. */
    assert_true(channel_write_at(ch, RAM_OFF + 150ull * PAGE, ram + 150 * PAGE, 8 * PAGE, &err));
    for (int i = 150; i < 158; i++)
        written[i] = true;
    g_assert_no_error(err);
    assert_true(channel_drain(ch, &err));
    g_assert_no_error(err);
    channel_file_get_stats(ch, &requests, &blocks);
    assert_int_equal(blocks, 64 + 4 + 8 + (NPAGES - 1 - 200) / 7 + 1);
    /* The channel counts the positional bytes beside the stream's, once. */
    assert_int_equal(channel_bytes_written(ch), 4 + HEAD_LEN + blocks * PAGE);
    assert_int_equal(channel_write_pos(ch), 4 + HEAD_LEN);
    assert_true(requests < blocks / 2);

    /* Tail: jump, then sequential puts again. */
    assert_true(channel_file_seek(ch, tail_off, &err));
    channel_put_bytes(ch, tail, TAIL_LEN);
    /* Not visible under its name before the commit. */
    assert_false(exists(path));
    assert_int_equal(count_entries(dir), 1);
    assert_true(channel_file_commit(ch, &err));
    g_assert_no_error(err);
    assert_null(channel_file_tmp_path(ch));
    assert_false(exists(tmp));
    channel_close(ch);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, tail_off + TAIL_LEN); /* exact length */
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_entries(dir), 1);

    /* Read it back. */
    ch = channel_file_open(path, &err);
    g_assert_no_error(err);
    assert_int_equal(channel_file_size(ch), tail_off + TAIL_LEN);
    assert_int_equal(channel_get_le32(ch), 0x12345678);
    assert_true(channel_read_exact(ch, got, HEAD_LEN, &err));
    assert_memory_equal(got, head, HEAD_LEN);
    /* Positional reads: one large (several requests in flight), then page by page. */
    assert_true(channel_file_read_at(ch, RAM_OFF, back, NPAGES * PAGE, &err));
    g_assert_no_error(err);
    for (int i = 0; i < NPAGES; i++) {
        static const uint8_t zero[PAGE];

        if (written[i])
            assert_memory_equal(back + i * PAGE, ram + i * PAGE, PAGE);
        else
            assert_memory_equal(back + i * PAGE, zero, PAGE);
    }
    assert_true(channel_file_read_at(ch, RAM_OFF + 101ull * PAGE, back, PAGE, &err));
    assert_memory_equal(back, other + PAGE, PAGE);
    /* Unaligned positional read (through the page cache). */
    assert_true(channel_file_read_at(ch, RAM_OFF + 3, back + 1, 5000, &err));
    assert_memory_equal(back + 1, ram + 3, 5000);
    /* The sequential reads continue where they were; then the tail. */
    assert_true(channel_file_seek(ch, tail_off, &err));
    assert_true(channel_read_exact(ch, got, TAIL_LEN, &err));
    assert_memory_equal(got, tail, TAIL_LEN);
    assert_true(channel_at_eof(ch));
    /* Back to the head after reaching the end. */
    assert_true(channel_file_seek(ch, 4, &err));
    assert_false(channel_at_eof(ch));
    assert_true(channel_read_exact(ch, got, HEAD_LEN, &err));
    assert_memory_equal(got, head, HEAD_LEN);
    g_assert_no_error(err);

    /* Data ranges: everything written is inside one, the rest is a hole
     * where the filesystem has them. */
    pos = 0;
    while (channel_file_next_data(ch, pos, &start, &end)) {
        assert_true(end > start && start >= pos);
        pos = end;
    }
    assert_int_equal(pos, tail_off + TAIL_LEN);
    assert_true(channel_file_next_data(ch, 0, &start, &end));
    assert_int_equal(start, 0);
    channel_close(ch);

    remove_dir(dir);
    free(ram);
    free(other);
    free(back);
    g_free(head);
    g_free(tail);
    g_free(got);
}

static void test_round_trip_tmp_direct(void **state)
{
    (void)state;
    round_trip(g_get_tmp_dir(), true);
}

static void test_round_trip_tmp_buffered(void **state)
{
    (void)state;
    round_trip(g_get_tmp_dir(), false);
}

static void test_round_trip_var_tmp_direct(void **state)
{
    (void)state;
    round_trip("/var/tmp", true);
}

static void test_round_trip_var_tmp_buffered(void **state)
{
    (void)state;
    round_trip("/var/tmp", false);
}

static void test_round_trip_shm(void **state)
{
    (void)state;
    if (!g_file_test("/dev/shm", G_FILE_TEST_IS_DIR))
        skip();
    round_trip("/dev/shm", true);
}

/* ---- Sequential writes: seeks to unaligned offsets, buffers larger than the bounce buffer ---- */

static void test_sequential_seeks(void **state)
{
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *dir = make_dir(g_get_tmp_dir());
        g_autofree char *path = g_build_filename(dir, "seq", NULL);
        size_t big = (3u << 20) + 123;
        uint8_t *a = g_malloc(big + 16), *b = g_malloc(big + 16);
        struct channel *ch;
        GError *err = NULL;
        struct {
            uint64_t off;
            size_t len;
        } pieces[] = { { 0, 10 },      { 5000, 3 },     { 4093, 5 },
                       { 8192, 4096 }, { 12289, 9000 }, { 100000, 0 } };

        (void)state;
        set_direct(direct);
        fill(a, big + 16, 7);
        pieces[5].len = big;
        ch = channel_file_create(path, &err);
        g_assert_no_error(err);
        for (size_t i = 0; i < ARRAY_SIZE(pieces); i++) {
            assert_true(channel_file_seek(ch, pieces[i].off, &err));
            channel_put_bytes(ch, a + i, pieces[i].len);
        }
        /* An aligned page in between sequential data. */
        assert_true(channel_write_at(ch, 1u << 20 << 3, a, PAGE, &err));
        assert_true(channel_file_commit(ch, &err));
        g_assert_no_error(err);
        channel_close(ch);

        ch = channel_file_open(path, &err);
        g_assert_no_error(err);
        assert_int_equal(channel_file_size(ch), (1u << 20 << 3) + PAGE);
        for (size_t i = 0; i < ARRAY_SIZE(pieces); i++) {
            assert_true(channel_file_read_at(ch, pieces[i].off, b, pieces[i].len, &err));
            assert_memory_equal(b, a + i, pieces[i].len);
        }
        assert_true(channel_file_read_at(ch, 1u << 20 << 3, b, PAGE, &err));
        assert_memory_equal(b, a, PAGE);
        g_assert_no_error(err);
        channel_close(ch);
        remove_dir(dir);
        g_free(a);
        g_free(b);
    }
}

/* ---- Many writes in flight, merged or not ---- */

static void test_many_in_flight(void **state)
{
    const int n = 8192; /* 32 MiB of pages */
    uint8_t *ram = aligned_buf((size_t)n * PAGE);
    uint8_t *back = aligned_buf((size_t)n * PAGE);

    (void)state;
    fill(ram, (size_t)n * PAGE, 5);
    for (int merge = 0; merge < 2; merge++) {
        g_autofree char *dir = make_dir("/var/tmp");
        g_autofree char *path = g_build_filename(dir, "many", NULL);
        uint64_t requests, blocks;
        struct channel *ch;
        GError *err = NULL;

        set_direct(true);
        ch = channel_file_create(path, &err);
        g_assert_no_error(err);
        channel_file_set_merge(ch, merge);
        /* Even pages first, then odd ones: nothing adjacent in the first half. */
        for (int pass = 0; pass < 2; pass++)
            for (int i = pass; i < n; i += 2)
                assert_true(channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE,
                                             ram + (size_t)i * PAGE, PAGE, &err));
        /* Then all again as one long run (a second pass rewriting every page). */
        assert_true(channel_drain(ch, &err));
        for (int i = 0; i < n; i++)
            assert_true(channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE, ram + (size_t)i * PAGE,
                                         PAGE, &err));
        assert_true(channel_drain(ch, &err));
        channel_file_get_stats(ch, &requests, &blocks);
        assert_int_equal(blocks, 2 * n);
        if (merge)
            assert_int_equal(requests, n + (uint64_t)n * PAGE / CHANNEL_FILE_RUN_MAX);
        else
            assert_int_equal(requests, 2 * n);
        assert_true(channel_file_commit(ch, &err));
        g_assert_no_error(err);
        channel_close(ch);

        ch = channel_file_open(path, &err);
        g_assert_no_error(err);
        assert_true(channel_file_read_at(ch, RAM_OFF, back, (size_t)n * PAGE, &err));
        g_assert_no_error(err);
        assert_memory_equal(back, ram, (size_t)n * PAGE);
        channel_close(ch);
        remove_dir(dir);
    }
    free(ram);
    free(back);
}

/* ---- Abort, replace, cancel ---- */

static void test_abort_and_replace(void **state)
{
    g_autofree char *dir = make_dir(g_get_tmp_dir());
    g_autofree char *path = g_build_filename(dir, "ckpt", NULL);
    uint8_t *page = aligned_buf(PAGE);
    g_autofree char *contents = NULL;
    g_autofree char *tmp = NULL;
    struct channel *ch;
    GError *err = NULL;
    gsize len;

    (void)state;
    fill(page, PAGE, 4);
    set_direct(true);
    /* Close without commit: nothing is left. */
    ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    channel_put_bytes(ch, "head", 4);
    assert_true(channel_write_at(ch, RAM_OFF, page, PAGE, &err));
    assert_int_equal(count_entries(dir), 1);
    channel_close(ch); /* a write still in flight is waited for */
    assert_int_equal(count_entries(dir), 0);

    /* An older checkpoint stays until the new one is committed, then is replaced. */
    assert_true(g_file_set_contents(path, "old", 3, NULL));
    ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    channel_put_bytes(ch, "new!", 4);
    assert_true(channel_file_seek(ch, 10, &err));
    assert_true(g_file_get_contents(path, &contents, &len, NULL));
    assert_int_equal(len, 3);
    g_clear_pointer(&contents, g_free);
    assert_true(channel_file_commit(ch, &err));
    channel_close(ch);
    assert_true(g_file_get_contents(path, &contents, &len, NULL));
    assert_int_equal(len, 4);
    assert_memory_equal(contents, "new!", 4);
    assert_int_equal(count_entries(dir), 1);

    /* A cancel (channel_shutdown from another thread) fails the commit. */
    ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    tmp = g_strdup(channel_file_tmp_path(ch));
    channel_put_bytes(ch, "x", 1);
    channel_shutdown(ch, "migration cancelled");
    assert_false(channel_write_at(ch, RAM_OFF, page, PAGE, &err));
    assert_error(err, "migration cancelled");
    g_clear_error(&err);
    assert_false(channel_file_commit(ch, &err));
    assert_error(err, "migration cancelled");
    g_clear_error(&err);
    assert_false(exists(tmp));
    channel_close(ch);
    g_clear_pointer(&contents, g_free);
    assert_true(g_file_get_contents(path, &contents, &len, NULL) && len == 4);
    assert_int_equal(count_entries(dir), 1);
    remove_dir(dir);
    free(page);
}

/* ---- Misuse and open errors ---- */

static void test_bad_calls(void **state)
{
    g_autofree char *dir = make_dir(g_get_tmp_dir());
    g_autofree char *path = g_build_filename(dir, "ckpt", NULL);
    g_autofree char *nodir = g_build_filename(dir, "no", "such", NULL);
    uint8_t *page = aligned_buf(2 * PAGE);
    struct channel *ch;
    GError *err = NULL;

    (void)state;
    assert_null(channel_file_create(nodir, &err));
    assert_error(err, nodir);
    assert_error(err, "No such file or directory");
    g_clear_error(&err);
    assert_null(channel_file_open(nodir, &err));
    assert_error(err, "No such file or directory");
    g_clear_error(&err);
    assert_null(channel_file_open(dir, &err));
    assert_error(err, "not a regular file");
    g_clear_error(&err);

    /* Not a file channel. */
    ch = channel_mem_new(NULL, 0);
    assert_false(channel_is_file(ch));
    assert_false(channel_write_at(ch, 0, page, PAGE, &err));
    assert_error(err, "not a file");
    g_clear_error(&err);
    assert_false(channel_file_seek(ch, 0, &err));
    assert_error(err, "not a file");
    g_clear_error(&err);
    channel_close(ch);

    /* Unaligned positional writes fail the channel, which removes the file. */
    for (int direct = 0; direct < 2; direct++) {
        set_direct(direct);
        ch = channel_file_create(path, &err);
        g_assert_no_error(err);
        /* An unaligned buffer is fine (written through the page cache). */
        assert_true(channel_write_at(ch, 0, page + 1, PAGE, &err));
        assert_false(channel_write_at(ch, 100, page, PAGE, &err));
        assert_error(err, "is not 4096-byte aligned");
        assert_error(err, path);
        g_clear_error(&err);
        assert_null(channel_file_tmp_path(ch));
        assert_int_equal(count_entries(dir), 0);
        assert_false(channel_file_commit(ch, &err));
        assert_error(err, "not 4096-byte aligned"); /* the first error sticks */
        g_clear_error(&err);
        channel_close(ch);
        assert_int_equal(count_entries(dir), 0);
    }

    /* A read channel cannot write. */
    assert_true(g_file_set_contents(path, "abc", 3, NULL));
    ch = channel_file_open(path, &err);
    g_assert_no_error(err);
    assert_false(channel_write_at(ch, 0, page, PAGE, &err));
    assert_error(err, "not writing");
    g_clear_error(&err);
    channel_close(ch);

    /* URIs. */
    {
        struct channel_uri u;

        assert_true(channel_uri_parse("file:/some/where.tern", &u, &err));
        assert_int_equal(u.kind, CHANNEL_URI_FILE);
        assert_string_equal(u.path, "/some/where.tern");
        channel_uri_clear(&u);
        assert_false(channel_uri_parse("file:", &u, &err));
        assert_error(err, "expected file:PATH");
        g_clear_error(&err);
        assert_true(channel_socket_connect("file:/x", &err) < 0);
        assert_error(err, "not a socket");
        g_clear_error(&err);
    }
    remove_dir(dir);
    free(page);
}

/* ---- Read errors: a truncated file ---- */

static void test_truncated(void **state)
{
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *dir = make_dir("/var/tmp");
        g_autofree char *path = g_build_filename(dir, "ckpt", NULL);
        uint8_t *ram = aligned_buf(16 * PAGE);
        struct channel *ch;
        GError *err = NULL;
        uint8_t b[64];

        (void)state;
        set_direct(direct);
        fill(ram, 16 * PAGE, 8);
        ch = channel_file_create(path, &err);
        g_assert_no_error(err);
        channel_put_bytes(ch, ram, 64);
        assert_true(channel_write_at(ch, RAM_OFF, ram, 16 * PAGE, &err));
        assert_true(channel_file_commit(ch, &err));
        channel_close(ch);
        /* Cut in the middle of page 10. */
        assert_int_equal(truncate(path, RAM_OFF + 10 * PAGE + 100), 0);

        ch = channel_file_open(path, &err);
        g_assert_no_error(err);
        assert_true(channel_file_read_at(ch, RAM_OFF, ram, 10 * PAGE, &err));
        assert_false(channel_file_read_at(ch, RAM_OFF, ram, 16 * PAGE, &err));
        assert_error(err, path);
        assert_error(err, "short read at offset 1089636"); /* RAM_OFF + 10 pages + 100 */
        assert_error(err, "file size 1089636");
        g_clear_error(&err);
        channel_close(ch);

        /* Unaligned (buffered) reads say the same. */
        ch = channel_file_open(path, &err);
        assert_false(channel_file_read_at(ch, RAM_OFF + 1, ram, 12 * PAGE, &err));
        assert_error(err, "short read at offset 1089636");
        g_clear_error(&err);
        channel_close(ch);

        /* Sequential reads past the end. */
        ch = channel_file_open(path, &err);
        assert_true(channel_file_seek(ch, RAM_OFF + 10 * PAGE + 50, &err));
        assert_false(channel_read_exact(ch, b, sizeof(b), &err));
        assert_error(err, "unexpected end of stream");
        assert_error(err, path);
        g_clear_error(&err);
        channel_close(ch);
        remove_dir(dir);
        free(ram);
    }
}

/* ---- Full disks: forked children ---- */

#define CHILD_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            _exit(1); \
        } \
    } while (0)

static void child_check_error(GError *err, const char *a, const char *b)
{
    CHILD_CHECK(err != NULL);
    fprintf(stderr, "    error: %s\n", err->message);
    CHILD_CHECK(strstr(err->message, a) != NULL);
    CHILD_CHECK(strstr(err->message, b) != NULL);
}

/* In a child: write (npages) pages (and a tail after them) to a checkpoint in
 * (dir); expect an error containing (errtext) and no file left. (mode): 0
 * positional writes fail, 1 the sequential tail fails. */
static void child_fill_disk(const char *dir, int npages, int mode, const char *errtext)
{
    g_autofree char *path = g_build_filename(dir, "ckpt", NULL);
    uint8_t *ram = aligned_buf((size_t)npages * PAGE);
    uint8_t *big = g_malloc0(8u << 20);
    g_autofree char *tmp = NULL;
    struct channel *ch;
    GError *err = NULL;
    bool ok = true;

    fill(ram, (size_t)npages * PAGE, 9);
    ch = channel_file_create(path, &err);
    CHILD_CHECK(ch != NULL);
    tmp = g_strdup(channel_file_tmp_path(ch));
    channel_put_bytes(ch, ram, 100);
    if (mode == 0) {
        for (int i = 0; ok && i < npages; i++)
            ok = channel_write_at(ch, RAM_OFF + (uint64_t)i * PAGE, ram + (size_t)i * PAGE, PAGE,
                                  &err);
        if (ok)
            ok = channel_drain(ch, &err);
    } else {
        ok = channel_file_seek(ch, RAM_OFF, &err);
        for (int i = 0; ok && i < 4; i++) {
            channel_put_bytes(ch, big, 8u << 20);
            ok = channel_flush(ch, &err);
        }
    }
    if (ok)
        ok = channel_file_commit(ch, &err);
    CHILD_CHECK(!ok);
    child_check_error(err, path, errtext);
    CHILD_CHECK(!exists(tmp)); /* removed at the error, before the close */
    g_clear_error(&err);
    CHILD_CHECK(!channel_file_commit(ch, &err));
    g_clear_error(&err);
    channel_close(ch);
    CHILD_CHECK(!exists(path));
    CHILD_CHECK(count_entries(dir) == 0);
    free(ram);
    g_free(big);
}

/* Run (fn)(arg) in a child; returns its exit status (0 = passed). */
static int run_child(void (*fn)(void *), void *arg)
{
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

struct fsize_case {
    const char *dir;
    bool direct;
    int mode;
};

static void fsize_child(void *opaque)
{
    struct fsize_case *c = opaque;
    struct rlimit rl = { .rlim_cur = 2u << 20, .rlim_max = 2u << 20 };

    signal(SIGXFSZ, SIG_IGN);
    CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    set_direct(c->direct);
    /* RAM_OFF + 512 pages = 3 MiB > 2 MiB. */
    child_fill_disk(c->dir, 512, c->mode, "File too large");
}

static void test_file_size_limit(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        for (int mode = 0; mode < 2; mode++) {
            g_autofree char *dir = make_dir("/var/tmp");
            struct fsize_case c = { .dir = dir, .direct = direct, .mode = mode };

            assert_int_equal(run_child(fsize_child, &c), 0);
            remove_dir(dir);
        }
    }
}

static void tmpfs_child(void *opaque)
{
    struct fsize_case *c = opaque;

    /* A private mount namespace, so the mount vanishes with the child. */
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tern-test", c->dir, "tmpfs", 0, "size=2m") < 0) {
        fprintf(stderr, "    cannot mount a tmpfs here (%s): skipped\n", g_strerror(errno));
        _exit(SKIP_EXIT);
    }
    set_direct(c->direct);
    child_fill_disk(c->dir, 1024, c->mode, "No space left on device");
    umount(c->dir);
}

static void test_tmpfs_full(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        for (int mode = 0; mode < 2; mode++) {
            g_autofree char *dir = make_dir(g_get_tmp_dir());
            struct fsize_case c = { .dir = dir, .direct = direct, .mode = mode };
            int rc = run_child(tmpfs_child, &c);

            remove_dir(dir);
            if (rc == SKIP_EXIT)
                skip();
            assert_int_equal(rc, 0);
        }
    }
}

/* ---- Read-ahead batches ---- */

#define BATCH_REQS 96 /* far more than CHANNEL_FILE_READ_DEPTH per thread */
#define BATCH_PAGES 16

struct batch_check {
    uint8_t *want; /* what the file holds from RAM_OFF on */
    struct channel_file_read *reqs;
    size_t fail_at; /* the request whose callback fails, or BATCH_REQS */
    GThread *main_thread;
    bool fail_on_worker; /* the first request a second thread reads fails */
    int worker_failed;   /* atomic */
    GMutex lock;
    GThread *seen[CHANNEL_FILE_READ_THREADS_MAX];
    unsigned nseen;
    int calls;
};

static bool batch_done(void *opaque, size_t index, const uint8_t *data, GError **errp)
{
    struct batch_check *c = opaque;
    const struct channel_file_read *r = &c->reqs[index];
    bool known = false;

    g_mutex_lock(&c->lock);
    c->calls++;
    for (unsigned i = 0; i < c->nseen; i++)
        known |= c->seen[i] == g_thread_self();
    if (!known && c->nseen < CHANNEL_FILE_READ_THREADS_MAX)
        c->seen[c->nseen++] = g_thread_self();
    g_mutex_unlock(&c->lock);
    /* The bytes are there when the callback runs. */
    if ((r->buf && data != r->buf) || memcmp(data, c->want + (r->offset - RAM_OFF), r->len) != 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "request %zu: wrong bytes", index);
        return false;
    }
    if (index == c->fail_at) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "request %zu: bad CRC", index);
        return false;
    }
    if (c->fail_on_worker && g_thread_self() != c->main_thread) {
        __atomic_store_n(&c->worker_failed, 1, __ATOMIC_RELEASE);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "bad CRC on a second thread");
        return false;
    }
    /* The calling thread waits (5 s at most) until the other one failed. */
    for (int i = 0; c->fail_on_worker && i < 5000; i++) {
        if (__atomic_load_n(&c->worker_failed, __ATOMIC_ACQUIRE))
            break;
        g_usleep(1000);
    }
    return true;
}

/* A file of BATCH_REQS * BATCH_PAGES pages at RAM_OFF; (*want) gets its bytes. */
static char *batch_file(const char *dir, uint8_t **want)
{
    char *path = g_build_filename(dir, "ckpt", NULL);
    size_t len = (size_t)BATCH_REQS * BATCH_PAGES * PAGE;
    struct channel *ch;
    GError *err = NULL;

    *want = aligned_buf(len);
    fill(*want, len, 17);
    ch = channel_file_create(path, &err);
    g_assert_no_error(err);
    channel_put_bytes(ch, *want, 64);
    assert_true(channel_write_at(ch, RAM_OFF, *want, len, &err));
    assert_true(channel_file_commit(ch, &err));
    channel_close(ch);
    return path;
}

/* Requests over the file: (mode) 0 into (dst), 1 every other one unaligned
 * in memory, 2 every third one into the thread's buffer. */
static void batch_reqs(struct channel_file_read *reqs, uint8_t *dst, int mode)
{
    for (size_t i = 0; i < BATCH_REQS; i++) {
        reqs[i].offset = RAM_OFF + (uint64_t)i * BATCH_PAGES * PAGE;
        reqs[i].len = BATCH_PAGES * PAGE;
        reqs[i].buf = dst + i * (BATCH_PAGES * PAGE + PAGE) + (mode == 1 && i % 2 ? 8 : 0);
        if (mode == 2 && i % 3 == 0)
            reqs[i].buf = NULL;
    }
}

static void test_read_batch(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        for (unsigned threads = 1; threads <= 3; threads++) {
            g_autofree char *dir = make_dir("/var/tmp");
            uint8_t *want;
            g_autofree char *path = batch_file(dir, &want);
            uint8_t *dst = aligned_buf((size_t)BATCH_REQS * (BATCH_PAGES + 1) * PAGE);
            struct channel_file_read reqs[BATCH_REQS];
            struct batch_check c = { .want = want, .reqs = reqs, .fail_at = BATCH_REQS };
            struct channel *ch;
            GError *err = NULL;

            set_direct(direct);
            g_mutex_init(&c.lock);
            batch_reqs(reqs, dst, (int)threads - 1);
            ch = channel_file_open(path, &err);
            g_assert_no_error(err);
            assert_true(
                channel_file_read_batch(ch, reqs, BATCH_REQS, threads, batch_done, &c, &err));
            g_assert_no_error(err);
            assert_int_equal(c.calls, BATCH_REQS);
            assert_true(c.nseen <= threads);
            if (threads > 1)
                print_message("read batch: %u threads asked, callbacks ran on %u\n", threads,
                              c.nseen);
            /* An empty batch is fine too. */
            assert_true(channel_file_read_batch(ch, reqs, 0, threads, batch_done, &c, &err));
            channel_close(ch);
            g_mutex_clear(&c.lock);
            remove_dir(dir);
            free(dst);
            free(want);
        }
    }
}

/* A callback failing on one request (any thread): the batch stops with its
 * error, which is not a channel error. */
static void test_read_batch_callback_fails(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *dir = make_dir("/var/tmp");
        uint8_t *want;
        g_autofree char *path = batch_file(dir, &want);
        uint8_t *dst = aligned_buf((size_t)BATCH_REQS * (BATCH_PAGES + 1) * PAGE);
        struct channel_file_read reqs[BATCH_REQS];
        struct batch_check c = { .want = want, .reqs = reqs, .fail_at = 41 };
        struct channel *ch;
        GError *err = NULL;

        set_direct(direct);
        g_mutex_init(&c.lock);
        batch_reqs(reqs, dst, 2);
        ch = channel_file_open(path, &err);
        assert_false(channel_file_read_batch(ch, reqs, BATCH_REQS, 2, batch_done, &c, &err));
        assert_error(err, "request 41: bad CRC");
        g_clear_error(&err);
        assert_true(c.calls <= BATCH_REQS);
        /* The channel itself is fine: positional reads still work. */
        assert_true(channel_file_read_at(ch, RAM_OFF, dst, PAGE, &err));
        g_assert_no_error(err);

        /* A failure on the second thread stops the first one too. */
        g_mutex_clear(&c.lock);
        c = (struct batch_check){ .want = want,
                                  .reqs = reqs,
                                  .fail_at = BATCH_REQS,
                                  .main_thread = g_thread_self(),
                                  .fail_on_worker = true };
        g_mutex_init(&c.lock);
        assert_false(channel_file_read_batch(ch, reqs, BATCH_REQS, 2, batch_done, &c, &err));
        assert_error(err, "bad CRC on a second thread");
        g_clear_error(&err);
        assert_int_equal(c.worker_failed, 1);
        assert_true(c.calls < BATCH_REQS);
        channel_close(ch);
        g_mutex_clear(&c.lock);
        remove_dir(dir);
        free(dst);
        free(want);
    }
}

/* The file ends inside request 70 (mid-page): the first short request is
 * named with the file's size, as channel_file_read_at() names it, and the
 * channel has failed. */
static void test_read_batch_short(void **state)
{
    (void)state;
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *dir = make_dir("/var/tmp");
        uint8_t *want;
        g_autofree char *path = batch_file(dir, &want);
        uint8_t *dst = aligned_buf((size_t)BATCH_REQS * (BATCH_PAGES + 1) * PAGE);
        struct channel_file_read reqs[BATCH_REQS];
        struct batch_check c = { .want = want, .reqs = reqs, .fail_at = BATCH_REQS };
        uint64_t cut = RAM_OFF + (70ull * BATCH_PAGES + 3) * PAGE + 100;
        char msg[96];
        struct channel *ch;
        GError *err = NULL;

        set_direct(direct);
        g_mutex_init(&c.lock);
        batch_reqs(reqs, dst, 2);
        assert_int_equal(truncate(path, (off_t)cut), 0);
        ch = channel_file_open(path, &err);
        assert_false(channel_file_read_batch(ch, reqs, BATCH_REQS, 2, batch_done, &c, &err));
        assert_error(err, path);
        snprintf(msg, sizeof(msg), "short read at offset %" PRIu64, cut);
        assert_error(err, msg);
        snprintf(msg, sizeof(msg), "file size %" PRIu64, cut);
        assert_error(err, msg);
        g_clear_error(&err);
        assert_true(c.calls <= 70);
        /* Sticky: the channel has failed. */
        assert_false(channel_file_read_at(ch, RAM_OFF, dst, PAGE, &err));
        g_clear_error(&err);
        channel_close(ch);
        g_mutex_clear(&c.lock);
        remove_dir(dir);
        free(dst);
        free(want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_tmp_direct),
        cmocka_unit_test(test_round_trip_tmp_buffered),
        cmocka_unit_test(test_round_trip_var_tmp_direct),
        cmocka_unit_test(test_round_trip_var_tmp_buffered),
        cmocka_unit_test(test_round_trip_shm),
        cmocka_unit_test(test_sequential_seeks),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_abort_and_replace),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_file_size_limit),
        cmocka_unit_test(test_tmpfs_full),
        cmocka_unit_test(test_read_batch),
        cmocka_unit_test(test_read_batch_callback_fails),
        cmocka_unit_test(test_read_batch_short),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
