/* test-channel.c: the buffered migration channel: mem and socket backends, by-reference puts, sticky errors, rate limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test-helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "tern/channel.h"
#include "tern/stream-format.h"
#include "tern/util.h"

/* ---- mem backend ---- */

static void test_mem_round_trip(void **state)
{
    static const uint8_t want[] = {
        0xab, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 0xef, 0xcd,
        0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 'h',  'i',
    };
    struct channel *ch = channel_mem_new(NULL, 0);
    const uint8_t *data;
    size_t len;
    uint8_t buf[4];
    GError *err = NULL;

    (void)state;
    channel_put_u8(ch, 0xab);
    channel_put_le16(ch, 0x1234);
    channel_put_le32(ch, 0x12345678);
    channel_put_le64(ch, 0x0123456789abcdefULL);
    channel_put_bytes(ch, "hi", 2);
    assert_int_equal(channel_write_pos(ch), sizeof(want));
    assert_int_equal(channel_bytes_written(ch), 0); /* still buffered */
    assert_true(channel_flush(ch, NULL));
    assert_int_equal(channel_bytes_written(ch), sizeof(want));
    data = channel_mem_data(ch, &len);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(data, want, sizeof(want));
    channel_close(ch);

    ch = channel_mem_new(want, sizeof(want));
    assert_int_equal(channel_peek(ch, buf, 3), 3);
    assert_memory_equal(buf, want, 3);
    assert_int_equal(channel_get_u8(ch), 0xab);
    assert_int_equal(channel_get_le16(ch), 0x1234);
    assert_int_equal(channel_get_le32(ch), 0x12345678);
    assert_int_equal(channel_get_le64(ch), 0x0123456789abcdefULL);
    assert_int_equal(channel_read_pos(ch), 15);
    assert_false(channel_at_eof(ch));
    assert_int_equal(channel_skip(ch, 1), 1);
    assert_int_equal(channel_get_u8(ch), 'i');
    assert_true(channel_at_eof(ch));
    assert_int_equal(channel_peek(ch, buf, 4), 0);
    /* Reading past the end is a sticky error; gets return zeros. */
    memset(buf, 0xff, sizeof(buf));
    assert_int_equal(channel_get_bytes(ch, buf, 4), 0);
    assert_memory_equal(buf, "\0\0\0\0", 4);
    assert_true(channel_has_error(ch));
    assert_int_equal(channel_get_le32(ch), 0);
    assert_false(channel_read_exact(ch, buf, 1, &err));
    assert_error(err, "unexpected end of stream on memory");
    g_clear_error(&err);
    channel_close(ch);
}

static void test_mem_large_read(void **state)
{
    size_t n = 3 * CHANNEL_BUF_SIZE + 123;
    uint8_t *src = g_malloc(n), *dst = g_malloc(n);
    struct channel *ch;

    (void)state;
    fill(src, n, 7);
    ch = channel_mem_new(src, n);
    assert_int_equal(channel_get_u8(ch), src[0]);
    assert_int_equal(channel_get_bytes(ch, dst, n - 1), n - 1); /* bypasses the buffer */
    assert_memory_equal(dst, src + 1, n - 1);
    assert_true(channel_at_eof(ch));
    assert_false(channel_has_error(ch));
    channel_close(ch);
    g_free(src);
    g_free(dst);
}

/* ---- a recording backend: what writev was given ---- */

struct rec_backend {
    GByteArray *out;
    unsigned calls;
    int last_iovcnt;
    size_t iov_len[CHANNEL_IOV_MAX];
};

static ssize_t rec_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct rec_backend *r = opaque;
    size_t total = 0;

    r->calls++;
    r->last_iovcnt = iovcnt;
    for (int i = 0; i < iovcnt; i++) {
        r->iov_len[i] = iov[i].iov_len;
        g_byte_array_append(r->out, iov[i].iov_base, (guint)iov[i].iov_len);
        total += iov[i].iov_len;
    }
    return (ssize_t)total;
}

static const struct channel_ops rec_ops = { .kind = "record", .writev = rec_writev };

static void test_buffer_ref(void **state)
{
    struct rec_backend r = { .out = g_byte_array_new() };
    struct channel *ch = channel_new(&rec_ops, &r, "rec");
    uint8_t *pages = g_malloc(4 * 4096);
    uint8_t other[100];
    GByteArray *want = g_byte_array_new();

    (void)state;
    fill(pages, 4 * 4096, 1);
    fill(other, sizeof(other), 2);

    /* header bytes, two adjacent pages (merged), a copy, a far buffer, two more adjacent */
    channel_put_le32(ch, 0xdeadbeef);
    channel_put_le32(ch, 2); /* merged with the previous copy */
    channel_put_buffer_ref(ch, pages, 4096);
    channel_put_buffer_ref(ch, pages + 4096, 4096);
    channel_put_le64(ch, 77);
    channel_put_buffer_ref(ch, other, sizeof(other));
    channel_put_buffer_ref(ch, pages + 2 * 4096, 4096);
    channel_put_buffer_ref(ch, pages + 3 * 4096, 4096);
    channel_put_buffer_ref(ch, pages, 0); /* nothing */
    assert_int_equal(r.calls, 0);
    assert_true(channel_flush(ch, NULL));
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.last_iovcnt, 5);
    assert_int_equal(r.iov_len[0], 8);
    assert_int_equal(r.iov_len[1], 8192);
    assert_int_equal(r.iov_len[2], 8);
    assert_int_equal(r.iov_len[3], 100);
    assert_int_equal(r.iov_len[4], 8192);

    {
        uint8_t b[8];

        mig_store_le32(b, 0xdeadbeef);
        mig_store_le32(b + 4, 2);
        g_byte_array_append(want, b, 8);
        g_byte_array_append(want, pages, 8192);
        mig_store_le64(b, 77);
        g_byte_array_append(want, b, 8);
        g_byte_array_append(want, other, sizeof(other));
        g_byte_array_append(want, pages + 8192, 8192);
    }
    assert_int_equal(r.out->len, want->len);
    assert_memory_equal(r.out->data, want->data, want->len);
    /* After the flush the referenced memory is free to change. */
    memset(pages, 0, 4096);
    assert_memory_equal(r.out->data + 8, want->data + 8, 4096);

    /* More separate references than iovec slots: flushed on the way, order kept. */
    g_byte_array_set_size(r.out, 0);
    g_byte_array_set_size(want, 0);
    r.calls = 0;
    for (unsigned i = 0; i < 3 * CHANNEL_IOV_MAX; i++) {
        uint8_t b = (uint8_t)i;

        channel_put_buffer_ref(ch, other + (i % 2) * 50, 10); /* never adjacent */
        channel_put_u8(ch, b);
        g_byte_array_append(want, other + (i % 2) * 50, 10);
        g_byte_array_append(want, &b, 1);
    }
    assert_true(r.calls >= 5);
    assert_true(channel_flush(ch, NULL));
    assert_int_equal(r.out->len, want->len);
    assert_memory_equal(r.out->data, want->data, want->len);

    /* A copy larger than the buffer goes out in pieces. */
    g_byte_array_set_size(r.out, 0);
    {
        size_t n = 2 * CHANNEL_BUF_SIZE + 5;
        uint8_t *big = g_malloc(n);

        fill(big, n, 9);
        channel_put_bytes(ch, big, n);
        assert_true(channel_flush(ch, NULL));
        assert_int_equal(r.out->len, n);
        assert_memory_equal(r.out->data, big, n);
        g_free(big);
    }
    assert_int_equal(channel_write_pos(ch), channel_bytes_written(ch));
    channel_close(ch);
    g_byte_array_unref(r.out);
    g_byte_array_unref(want);
    g_free(pages);
}

static void test_put_bytes_crc(void **state)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    size_t n = CHANNEL_BUF_SIZE + 1000;
    uint8_t *src = g_malloc(n);
    uint32_t crc = 0;
    const uint8_t *data;
    size_t len;

    (void)state;
    fill(src, n, 3);
    channel_put_u8(ch, 1);
    channel_put_bytes_crc(ch, src, n, &crc);
    assert_true(channel_flush(ch, NULL));
    data = channel_mem_data(ch, &len);
    assert_int_equal(len, n + 1);
    assert_memory_equal(data + 1, src, n);
    /* zlib's crc32 of the source bytes, computed independently in 2 steps. */
    assert_int_equal(crc, (uint32_t)crc32(crc32(0, src, 10), src + 10, (uInt)(n - 10)));
    channel_close(ch);
    g_free(src);
}

/* ---- a failing backend ---- */

struct fail_backend {
    unsigned calls;
    size_t ok_bytes; /* accept this many bytes, then fail */
};

static ssize_t fail_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct fail_backend *f = opaque;

    (void)iov;
    (void)iovcnt;
    f->calls++;
    if (f->ok_bytes) {
        size_t n = MIN(f->ok_bytes, iov[0].iov_len);

        f->ok_bytes -= n;
        return (ssize_t)n;
    }
    return -EIO;
}

static ssize_t fail_read(void *opaque, void *buf, size_t len)
{
    (void)opaque;
    (void)buf;
    (void)len;
    return -ECONNRESET;
}

static const struct channel_ops fail_ops = {
    .kind = "fail",
    .writev = fail_writev,
    .read = fail_read,
};

static void test_sticky_error(void **state)
{
    struct fail_backend f = { .ok_bytes = 10 };
    struct channel *ch = channel_new(&fail_ops, &f, "failing");
    uint8_t big[CHANNEL_BUF_SIZE + 1] = { 0 };
    uint8_t buf[8];
    GError *err = NULL;
    unsigned calls;

    (void)state;
    assert_true(channel_check(ch, NULL));
    channel_put_le32(ch, 1);
    assert_false(channel_has_error(ch));
    channel_put_bytes(ch, big, sizeof(big)); /* forces a flush: 10 bytes, then EIO */
    assert_true(channel_has_error(ch));
    assert_int_equal(channel_bytes_written(ch), 10);
    calls = f.calls;

    /* Every later operation is a no-op, and the first message survives. */
    channel_put_le64(ch, 5);
    channel_put_buffer_ref(ch, big, 100);
    channel_put_bytes(ch, big, sizeof(big));
    channel_set_errorf(ch, TERN_ERROR_FAILED, "a later error");
    channel_shutdown(ch, "cancelled later");
    assert_false(channel_flush(ch, &err));
    assert_int_equal(f.calls, calls);
    assert_error(err, "write to failing failed: Input/output error");
    g_clear_error(&err);
    assert_int_equal(channel_get_bytes(ch, buf, sizeof(buf)), 0);
    assert_false(channel_check(ch, &err));
    assert_error(err, "Input/output error");
    g_clear_error(&err);
    channel_close(ch);

    /* Read errors too. */
    ch = channel_new(&fail_ops, &f, "failing");
    assert_int_equal(channel_get_le32(ch), 0);
    assert_false(channel_check(ch, &err));
    assert_error(err, "read from failing failed: Connection reset by peer");
    g_clear_error(&err);
    channel_close(ch);

    /* A shutdown before anything else: its reason is the error. */
    ch = channel_mem_new("abc", 3);
    channel_shutdown(ch, "migration cancelled");
    assert_int_equal(channel_get_u8(ch), 0);
    channel_put_u8(ch, 1);
    assert_false(channel_flush(ch, &err));
    assert_error(err, "migration cancelled");
    g_clear_error(&err);
    channel_close(ch);
}

static void test_partial_io(void **state)
{
    size_t n = 3 * CHANNEL_BUF_SIZE + 17;
    uint8_t *src = g_malloc(n), *dst = g_malloc(n);
    struct channel *ch = channel_mem_new(NULL, 0);
    const uint8_t *data;
    size_t len;
    struct channel *rd;

    (void)state;
    fill(src, n, 5);
    channel_mem_set_max_io(ch, 1); /* every write moves one byte */
    channel_put_le32(ch, 0x01020304);
    channel_put_buffer_ref(ch, src, 5000);
    channel_put_bytes(ch, src + 5000, 40000);
    channel_put_buffer_ref(ch, src + 45000, n - 45000);
    assert_true(channel_flush(ch, NULL));
    data = channel_mem_data(ch, &len);
    assert_int_equal(len, n + 4);
    assert_int_equal(mig_load_le32(data), 0x01020304);
    assert_memory_equal(data + 4, src, n);

    /* And reads of 1 and 7 bytes at a time. */
    for (size_t max = 1; max <= 7; max += 6) {
        rd = channel_mem_new(data, len);
        channel_mem_set_max_io(rd, max);
        assert_int_equal(channel_get_le32(rd), 0x01020304);
        assert_int_equal(channel_peek(rd, dst, 100), 100);
        assert_memory_equal(dst, src, 100);
        assert_int_equal(channel_skip(rd, 3), 3);
        assert_int_equal(channel_get_bytes(rd, dst, n - 3), n - 3);
        assert_memory_equal(dst, src + 3, n - 3);
        assert_true(channel_at_eof(rd));
        channel_close(rd);
    }
    channel_close(ch);
    g_free(src);
    g_free(dst);
}

/* ---- sockets ---- */

#define SOCK_BYTES (8u << 20)

struct sock_writer_arg {
    struct channel *ch;
    uint8_t *data;
    uint32_t ack;
    bool ok;
};

static gpointer sock_writer(gpointer opaque)
{
    struct sock_writer_arg *a = opaque;
    GError *err = NULL;
    struct channel *rp;

    for (size_t off = 0; off < SOCK_BYTES; off += 64 * 1024) {
        channel_put_le64(a->ch, off);
        channel_put_buffer_ref(a->ch, a->data + off, 64 * 1024);
    }
    a->ok = channel_flush(a->ch, &err);
    g_assert_no_error(err);
    /* The acknowledgement comes back on the return path. */
    rp = channel_return_path(a->ch, &err);
    g_assert_no_error(err);
    a->ack = channel_get_le32(rp);
    a->ok = a->ok && channel_check(rp, NULL);
    channel_close(rp);
    return NULL;
}

static void test_socketpair(void **state)
{
    int sv[2];
    struct sock_writer_arg a;
    struct channel *rd, *rp;
    uint8_t *got = g_malloc(64 * 1024);
    GThread *t;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.ch = channel_socket_new(sv[0], "src");
    a.data = g_malloc(SOCK_BYTES);
    fill(a.data, SOCK_BYTES, 11);
    a.ok = false;
    rd = channel_socket_new(sv[1], "dst");
    t = g_thread_new("writer", sock_writer, &a);
    for (size_t off = 0; off < SOCK_BYTES; off += 64 * 1024) {
        assert_int_equal(channel_get_le64(rd), off);
        assert_int_equal(channel_get_bytes(rd, got, 64 * 1024), 64 * 1024);
        assert_memory_equal(got, a.data + off, 64 * 1024);
    }
    assert_true(channel_check(rd, NULL));
    rp = channel_return_path(rd, NULL);
    assert_non_null(rp);
    channel_put_le32(rp, 0x600dbeef);
    assert_true(channel_flush(rp, NULL));
    g_thread_join(t);
    assert_true(a.ok);
    assert_int_equal(a.ack, 0x600dbeef);
    assert_int_equal(channel_bytes_written(a.ch), SOCK_BYTES + SOCK_BYTES / 8192);

    /* The peer closes: the reader sees a clean end of stream. */
    channel_close(a.ch);
    assert_true(channel_at_eof(rd));
    channel_close(rp);
    channel_close(rd);
    g_free(a.data);
    g_free(got);
}

static gint reader_tid;

static gpointer blocked_reader(gpointer opaque)
{
    struct channel *ch = opaque;

    g_atomic_int_set(&reader_tid, (gint)gettid());
    channel_get_le32(ch); /* blocks until the shutdown */
    return NULL;
}

/* Until thread (tid) of this process sleeps in the kernel (state S), for at most 5 s. */
static void wait_thread_sleeping(gint tid)
{
    g_autofree char *path = g_strdup_printf("/proc/self/task/%d/stat", tid);
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    for (;;) {
        g_autofree char *stat = NULL;
        const char *paren;

        if (g_file_get_contents(path, &stat, NULL, NULL) && (paren = strrchr(stat, ')')) &&
            paren[1] == ' ' && paren[2] == 'S')
            return;
        if (g_get_monotonic_time() > end)
            fail_msg("thread %d never blocked: %s", tid, stat ? stat : "(gone)");
        g_usleep(1000);
    }
}

static void test_shutdown_unblocks(void **state)
{
    int sv[2];
    struct channel *ch;
    GThread *t;
    GError *err = NULL;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ch = channel_socket_new(sv[0], "blocked");
    g_atomic_int_set(&reader_tid, 0);
    t = g_thread_new("reader", blocked_reader, ch);
    while (!g_atomic_int_get(&reader_tid))
        g_thread_yield();
    wait_thread_sleeping(g_atomic_int_get(&reader_tid)); /* in recv, not before it */
    channel_shutdown(ch, "migration cancelled");
    g_thread_join(t);
    assert_false(channel_check(ch, &err));
    assert_error(err, "migration cancelled"); /* not "end of stream" */
    g_clear_error(&err);
    channel_close(ch);
    close(sv[1]);
}

static void test_tcp_and_unix(void **state)
{
    g_autofree char *dir = g_dir_make_tmp("tern-chan-XXXXXX", NULL);
    g_autofree char *unix_uri = g_strdup_printf("unix:%s/mig.sock", dir);
    const char *listen_uris[] = { "tcp:127.0.0.1:0", unix_uri };

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(listen_uris); i++) {
        GError *err = NULL;
        int lfd = channel_socket_listen(listen_uris[i], &err);
        g_autofree char *uri = NULL;
        int cfd, afd;
        struct channel *c, *s;

        g_assert_no_error(err);
        assert_true(lfd >= 0);
        uri = channel_socket_local_uri(lfd, &err);
        g_assert_no_error(err);
        if (i == 0)
            assert_true(g_str_has_prefix(uri, "tcp:127.0.0.1:") && strcmp(uri, listen_uris[0]));
        else
            assert_string_equal(uri, unix_uri);
        cfd = channel_socket_connect(uri, &err); /* the backlog holds it */
        g_assert_no_error(err);
        afd = channel_socket_accept(lfd, &err);
        g_assert_no_error(err);
        c = channel_socket_new(cfd, "client");
        s = channel_socket_new(afd, "server");
        channel_put_le32(c, 42);
        assert_true(channel_flush(c, NULL));
        assert_int_equal(channel_get_le32(s), 42);
        channel_close(c);
        channel_close(s);
        close(lfd);
    }
    /* Listening again on the same UNIX path replaces the stale socket. */
    {
        int lfd = channel_socket_listen(unix_uri, NULL);

        assert_true(lfd >= 0);
        close(lfd);
    }
    g_autofree char *path = g_strdup_printf("%s/mig.sock", dir);
    unlink(path);
    rmdir(dir);
}

/* A pair of connected TCP channels on loopback: (*src) connected to (*dst). */
static void tcp_pair(struct channel **src, struct channel **dst)
{
    GError *err = NULL;
    int lfd = channel_socket_listen("tcp:127.0.0.1:0", &err);
    g_autofree char *uri = channel_socket_local_uri(lfd, &err);
    int cfd = channel_socket_connect(uri, &err);
    int afd = channel_socket_accept(lfd, &err);

    g_assert_no_error(err);
    close(lfd);
    *src = channel_socket_new(cfd, "src");
    *dst = channel_socket_new(afd, "dst");
}

static gpointer linger_thread(gpointer opaque)
{
    channel_linger(opaque, 5000);
    return NULL;
}

/* A receiver that fails with the sender's data unread says ERROR and lingers:
 * the sender reads ERROR and then a clean end of stream, not a reset, and the
 * linger ends as soon as the sender closes. */
static void test_linger(void **state)
{
    struct channel *src, *dst, *rp;
    uint8_t *data = g_malloc(256 * 1024);
    GError *err = NULL;

    (void)state;
    tcp_pair(&src, &dst);
    fill(data, 256 * 1024, 5);
    channel_put_bytes(src, data, 256 * 1024); /* never read by dst */
    assert_true(channel_flush(src, NULL));
    rp = channel_return_path(dst, NULL);
    channel_put_le32(rp, 0xe44042);
    assert_true(channel_flush(rp, NULL));

    uint64_t t0 = clock_ns();
    GThread *t = g_thread_new("linger", linger_thread, dst);
    struct channel *src_rp = channel_return_path(src, NULL);
    assert_int_equal(channel_get_le32(src_rp), 0xe44042);
    assert_true(channel_at_eof(src_rp));
    assert_true(channel_check(src_rp, &err));
    channel_put_bytes(src, data, 1024); /* still drained, no reset */
    assert_true(channel_flush(src, NULL));
    channel_close(src_rp);
    channel_close(src);
    g_thread_join(t);
    assert_true(clock_ns() - t0 < 4000ull * 1000000);
    channel_close(rp);
    channel_close(dst);

    /* A peer that neither sends nor closes: the linger gives up at its deadline. */
    tcp_pair(&src, &dst);
    t0 = clock_ns();
    channel_linger(dst, 100);
    uint64_t waited_ms = (clock_ns() - t0) / 1000000;
    assert_true(waited_ms >= 90 && waited_ms < 3000);
    channel_close(src);
    channel_close(dst);
    g_free(data);
}

static void test_uri_parse(void **state)
{
    static const struct {
        const char *uri;
        const char *host, *port, *path, *error;
    } cases[] = {
        { "tcp:localhost:4444", "localhost", "4444", NULL, NULL },
        { "tcp:10.0.0.1:0", "10.0.0.1", "0", NULL, NULL },
        { "tcp:[::1]:4444", "::1", "4444", NULL, NULL },
        { "tcp::4444", "", "4444", NULL, NULL },
        { "unix:/tmp/x.sock", NULL, NULL, "/tmp/x.sock", NULL },
        { "tcp:localhost", NULL, NULL, NULL, "expected tcp:HOST:PORT" },
        { "tcp:localhost:", NULL, NULL, NULL, "port must be a number" },
        { "tcp:localhost:65536", NULL, NULL, NULL, "port must be a number" },
        { "tcp:localhost:-1", NULL, NULL, NULL, "port must be a number" },
        { "tcp:localhost:44x", NULL, NULL, NULL, "port must be a number" },
        { "tcp:::1:4444", NULL, NULL, NULL, "IPv6 address in brackets" },
        { "tcp:[::1:4444", NULL, NULL, NULL, "missing ']'" },
        { "tcp:[::1]4444", NULL, NULL, NULL, "expected ':PORT'" },
        { "unix:", NULL, NULL, NULL, "expected unix:PATH" },
        { "ftp:/tmp/x", NULL, NULL, NULL,
          "invalid migration URI 'ftp:/tmp/x': expected tcp:HOST:PORT, unix:PATH or file:PATH" },
        { "file:", NULL, NULL, NULL, "expected file:PATH" },
        { "", NULL, NULL, NULL, "expected tcp:HOST:PORT, unix:PATH or file:PATH" },
    };
    char long_path[200];

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct channel_uri u;
        GError *err = NULL;
        bool ok = channel_uri_parse(cases[i].uri, &u, &err);

        if (cases[i].error) {
            assert_false(ok);
            assert_error(err, cases[i].error);
            g_clear_error(&err);
            continue;
        }
        g_assert_no_error(err);
        assert_true(ok);
        if (cases[i].path) {
            assert_int_equal(u.kind, CHANNEL_URI_UNIX);
            assert_string_equal(u.path, cases[i].path);
        } else {
            assert_int_equal(u.kind, CHANNEL_URI_TCP);
            assert_string_equal(u.host, cases[i].host);
            assert_string_equal(u.port, cases[i].port);
        }
        channel_uri_clear(&u);
    }
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = 0;
    {
        g_autofree char *uri = g_strdup_printf("unix:/%s", long_path);
        struct channel_uri u;
        GError *err = NULL;

        assert_false(channel_uri_parse(uri, &u, &err));
        assert_error(err, "socket path too long");
        g_clear_error(&err);
        assert_true(channel_socket_connect("tcp::1", &err) < 0);
        assert_error(err, "no host to connect to");
        g_clear_error(&err);
        assert_true(channel_socket_connect("unix:/nonexistent/dir/sock", &err) < 0);
        assert_error(err, "cannot connect");
        g_clear_error(&err);
    }
}

/* ---- rate limiting ---- */

/* A fake clock for the rate limit: time moves only when the channel sleeps. */
static int64_t fake_now_us;

static int64_t fake_clock_now(void *opaque)
{
    (void)opaque;
    return fake_now_us;
}

static void fake_clock_sleep_until(void *opaque, int64_t deadline_us)
{
    (void)opaque;
    assert_true(deadline_us > fake_now_us); /* never asked to sleep for nothing */
    fake_now_us = deadline_us;
}

static const struct channel_clock fake_clock = {
    .now_us = fake_clock_now,
    .sleep_until = fake_clock_sleep_until,
};

static void test_rate_limit(void **state)
{
    struct channel *ch = channel_mem_new(NULL, 0);
    static uint8_t chunk[50000];
    uint64_t start, slept, elapsed;
    uint64_t sent = 0;

    (void)state;
    fake_now_us = 1000 * G_USEC_PER_SEC;
    channel_set_clock(ch, &fake_clock);
    assert_false(channel_rate_limit_exceeded(ch)); /* no limit */
    assert_int_equal(channel_rate_limit_wait(ch), 0);
    channel_set_rate_limit(ch, 1000000); /* 1 MB/s: 100 kB per 100 ms */
    assert_int_equal(channel_get_rate_limit(ch), 1000000);
    channel_put_bytes(ch, chunk, 50000);
    assert_false(channel_rate_limit_exceeded(ch));
    channel_put_buffer_ref(ch, chunk, 10000);
    channel_put_bytes(ch, chunk, 40000);
    assert_true(channel_rate_limit_exceeded(ch)); /* the window is used up */

    /* Send 400 kB more as a sender thread would: 4 more windows, 0.4 s. */
    start = (uint64_t)fake_now_us * 1000;
    slept = 0;
    while (sent < 400000) {
        slept += channel_rate_limit_wait(ch);
        channel_put_bytes(ch, chunk, 10000);
        sent += 10000;
        assert_true(channel_flush(ch, NULL));
    }
    elapsed = (uint64_t)fake_now_us * 1000 - start;
    assert_true(elapsed >= 300 * 1000000ULL);
    assert_true(elapsed < 2000 * 1000000ULL);
    assert_true(slept > 250 * 1000000ULL);
    assert_int_equal(elapsed, 400 * 1000000ULL); /* exactly 4 windows */
    assert_int_equal(slept, elapsed);
    assert_int_equal(channel_write_pos(ch), 500000);
    assert_int_equal(channel_bytes_written(ch), 500000);

    /* An overshoot carries into the next windows: a window that took 250 kB
     * is paid for by two more before the budget allows more. */
    assert_true(channel_rate_limit_exceeded(ch));
    channel_put_bytes(ch, chunk, 50000);
    channel_put_bytes(ch, chunk, 50000);
    channel_put_bytes(ch, chunk, 50000);
    assert_int_equal(channel_rate_limit_wait(ch), 200 * 1000000ULL);
    assert_false(channel_rate_limit_exceeded(ch));

    /* A shutdown wakes a waiting sender at once (on the real clock). */
    channel_set_clock(ch, NULL);
    channel_set_rate_limit(ch, 10); /* 1 byte per window */
    channel_put_bytes(ch, chunk, 100);
    assert_true(channel_rate_limit_exceeded(ch));
    channel_shutdown(ch, "cancelled");
    start = clock_ns();
    channel_rate_limit_wait(ch);
    assert_true(clock_ns() - start < 1000 * 1000000ULL); /* the budget: 10 s */
    channel_set_rate_limit(ch, 0);
    assert_false(channel_rate_limit_exceeded(ch));
    channel_close(ch);
}

/* ---- positional writes ---- */

/* A backend with positional writes that records them; (fail) makes the next one fail. */
struct pos_backend {
    uint64_t offset;
    size_t len;
    unsigned writes;
    unsigned drains;
    bool fail;
};

static bool pos_write_at(void *opaque, uint64_t offset, const void *buf, size_t len, GError **errp)
{
    struct pos_backend *pb = opaque;

    (void)buf;
    if (pb->fail) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "disk on fire");
        return false;
    }
    pb->offset = offset;
    pb->len = len;
    pb->writes++;
    return true;
}

static bool pos_drain(void *opaque, GError **errp)
{
    struct pos_backend *pb = opaque;

    (void)errp;
    pb->drains++;
    return true;
}

static const struct channel_ops pos_ops = {
    .kind = "pos",
    .write_at = pos_write_at,
    .drain = pos_drain,
};

static void test_write_at(void **state)
{
    static uint8_t page[4096];
    struct pos_backend pb = { 0 };
    struct channel *ch = channel_new(&pos_ops, &pb, "fake");
    GError *err = NULL;
    int sv[2];

    (void)state;
    /* Accepted writes count in the byte counter, not in the stream position. */
    assert_true(channel_write_at(ch, 8192, page, sizeof(page), &err));
    g_assert_no_error(err);
    assert_int_equal(pb.writes, 1);
    assert_int_equal(pb.offset, 8192);
    assert_int_equal(pb.len, sizeof(page));
    assert_int_equal(channel_bytes_written(ch), sizeof(page));
    assert_int_equal(channel_write_pos(ch), 0);
    assert_true(channel_drain(ch, &err));
    assert_int_equal(pb.drains, 1);

    /* And against the rate limit: 10 kB/s is 1000 bytes a window. */
    fake_now_us = 1000 * G_USEC_PER_SEC;
    channel_set_clock(ch, &fake_clock);
    channel_set_rate_limit(ch, 10000);
    assert_false(channel_rate_limit_exceeded(ch));
    assert_true(channel_write_at(ch, 0, page, sizeof(page), &err));
    assert_true(channel_rate_limit_exceeded(ch));
    /* 4096 bytes in a 1000-byte window: four windows pass before more may go. */
    assert_int_equal(channel_rate_limit_wait(ch), 400 * 1000000ULL);
    channel_set_rate_limit(ch, 0);

    /* A backend failure is returned; a failed channel writes nothing more. */
    pb.fail = true;
    assert_false(channel_write_at(ch, 0, page, sizeof(page), &err));
    assert_error(err, "disk on fire");
    g_clear_error(&err);
    assert_int_equal(channel_bytes_written(ch), 2 * sizeof(page));
    pb.fail = false;
    channel_shutdown(ch, "cancelled");
    assert_false(channel_write_at(ch, 0, page, sizeof(page), &err));
    assert_error(err, "cancelled");
    g_clear_error(&err);
    assert_int_equal(pb.writes, 2);
    channel_close(ch);

    /* Memory and socket channels refuse, with a sticky error naming them. */
    ch = channel_mem_new(NULL, 0);
    assert_false(channel_drain(ch, &err));
    assert_error(err, "mem channel");
    assert_error(err, "cannot do positional writes");
    g_clear_error(&err);
    assert_true(channel_has_error(ch));
    channel_close(ch);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ch = channel_socket_new(sv[0], "peer");
    assert_false(channel_write_at(ch, 0, page, sizeof(page), &err));
    assert_error(err, "socket channel peer cannot do positional writes");
    g_clear_error(&err);
    assert_int_equal(channel_bytes_written(ch), 0);
    channel_put_u8(ch, 1); /* the error sticks */
    assert_false(channel_flush(ch, &err));
    assert_error(err, "positional write");
    g_clear_error(&err);
    channel_close(ch);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_round_trip), cmocka_unit_test(test_mem_large_read),
        cmocka_unit_test(test_buffer_ref),     cmocka_unit_test(test_put_bytes_crc),
        cmocka_unit_test(test_sticky_error),   cmocka_unit_test(test_partial_io),
        cmocka_unit_test(test_socketpair),     cmocka_unit_test(test_shutdown_unblocks),
        cmocka_unit_test(test_tcp_and_unix),   cmocka_unit_test(test_linger),
        cmocka_unit_test(test_uri_parse),      cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_write_at),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
