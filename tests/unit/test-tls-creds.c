/* test-tls-creds.c: -object parsing and loading (keys.psk, x509 files, errors), and a PSK
 * TLS channel over a socketpair: both directions on one session, plaintext detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tern/channel-tls.h"
#include "tern/channel.h"
#include "tern/tls-creds.h"
#include "tern/util.h"

static char *tmp_dir;

static int setup(void **state)
{
    (void)state;
    tmp_dir = g_dir_make_tmp("tern-tls-XXXXXX", NULL);
    return tmp_dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmp_dir);
    tls_objects_clear();
    if (system(cmd) != 0)
        return -1;
    g_clear_pointer(&tmp_dir, g_free);
    return 0;
}

/* (tmp_dir)/(sub)/(file) with (text); returns the directory. */
static char *write_file(const char *sub, const char *file, const char *text)
{
    char *dir = g_build_filename(tmp_dir, sub, NULL);
    g_autofree char *path = g_build_filename(dir, file, NULL);

    g_mkdir_with_parents(dir, 0700);
    assert_true(g_file_set_contents(path, text, -1, NULL));
    return dir;
}

/* tls_object_add(printf(fmt)); fails the test on an error. */
static void add_object(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void add_object(const char *fmt, ...)
{
    va_list ap;
    g_autoptr(GError) err = NULL;

    va_start(ap, fmt);
    g_autofree char *spec = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (!tls_object_add(spec, &err))
        fail_msg("'%s': %s", spec, err->message);
}

/* tls_object_add(printf(fmt)) fails with an error containing (expect). */
static void assert_object_error(const char *expect, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void assert_object_error(const char *expect, const char *fmt, ...)
{
    va_list ap;
    g_autoptr(GError) err = NULL;

    va_start(ap, fmt);
    g_autofree char *spec = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    assert_false(tls_object_add(spec, &err));
    assert_non_null(err);
    if (!strstr(err->message, expect))
        fail_msg("'%s': expected '%s' in '%s'", spec, expect, err->message);
}

static void test_psk_parse(void **state)
{
    (void)state;
    g_autoptr(GError) err = NULL;
    GArray *keys = tls_psk_parse("qemu:00ff10\n\n  other:DEADbeef  \n", "k.psk", &err);

    assert_non_null(keys);
    assert_int_equal(keys->len, 2);
    struct tls_psk_key *k = &g_array_index(keys, struct tls_psk_key, 0);
    assert_string_equal(k->name, "qemu");
    assert_int_equal(k->len, 3);
    assert_memory_equal(k->key, "\x00\xff\x10", 3);
    k = &g_array_index(keys, struct tls_psk_key, 1);
    assert_string_equal(k->name, "other");
    assert_memory_equal(k->key, "\xde\xad\xbe\xef", 4);
    tls_psk_keys_free(keys);

    static const struct {
        const char *text, *error;
    } bad[] = {
        { "qemu:zz\n", "k.psk:1: the key of 'qemu' is not an even number of hex digits" },
        { "a:00\nqemu:abc\n", "k.psk:2: the key of 'qemu'" },
        { "qemu:\n", "not an even number of hex digits" },
        { "nocolon\n", "k.psk:1: expected NAME:HEXKEY" },
        { ":00\n", "expected NAME:HEXKEY" },
        { "\n\n", "k.psk: no keys" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) e = NULL;
        assert_null(tls_psk_parse(bad[i].text, "k.psk", &e));
        if (!strstr(e->message, bad[i].error))
            fail_msg("'%s': expected '%s' in '%s'", bad[i].text, bad[i].error, e->message);
    }
}

static void test_psk_objects(void **state)
{
    (void)state;
    g_autofree char *dir = write_file("psk", "keys.psk", "qemu:0011223344\nalice:aabb\n");
    g_autoptr(GError) err = NULL;

    add_object("tls-creds-psk,id=c0,dir=%s", dir);
    struct tls_creds *c = tls_creds_find("c0");
    assert_non_null(c);
    assert_int_equal(tls_creds_type(c), TLS_CREDS_PSK);
    assert_int_equal(tls_creds_endpoint(c), TLS_ENDPOINT_CLIENT); /* QEMU's default */
    assert_false(tls_creds_verify_peer(c));
    add_object("qom-type=tls-creds-psk,id=s0,dir=%s,endpoint=server", dir);
    add_object("tls-creds-psk,id=a0,dir=%s,username=alice", dir);

    /* Lookup by side. */
    assert_ptr_equal(tls_creds_lookup("c0", TLS_ENDPOINT_CLIENT, NULL), c);
    assert_null(tls_creds_lookup("c0", TLS_ENDPOINT_SERVER, &err));
    assert_non_null(strstr(err->message, "endpoint=client, but this side of the migration is "
                                         "the target (the target needs endpoint=server)"));
    g_clear_error(&err);
    assert_null(tls_creds_lookup("nope", TLS_ENDPOINT_CLIENT, &err));
    assert_non_null(strstr(err->message, "no tls-creds object with id 'nope'"));

    assert_object_error("no key for username 'bob'", "tls-creds-psk,id=b0,dir=%s,username=bob",
                        dir);
    assert_object_error("username is for endpoint=client",
                        "tls-creds-psk,id=b1,dir=%s,endpoint=server,username=qemu", dir);
    assert_object_error("already exists", "tls-creds-psk,id=c0,dir=%s", dir);
    assert_object_error("keys.psk", "tls-creds-psk,id=b2,dir=%s/missing", tmp_dir);
    g_autofree char *bad = write_file("badpsk", "keys.psk", "qemu:xyz1\n");
    assert_object_error("keys.psk:1: the key of 'qemu'", "tls-creds-psk,id=b3,dir=%s", bad);
    assert_false(tls_object_exists("b3"));
}

static void test_object_errors(void **state)
{
    (void)state;
    assert_object_error("unknown object type 'memory-backend-ram'", "memory-backend-ram,id=m0");
    assert_object_error("id=ID is required", "tls-creds-x509,dir=/x");
    assert_object_error("no object type", "id=x");
    assert_object_error("dir is required", "tls-creds-x509,id=x0");
    assert_object_error("unknown property 'username'", "tls-creds-x509,id=x0,dir=/x,username=a");
    assert_object_error("unknown property 'verify-peer'",
                        "tls-creds-psk,id=x0,dir=/x,verify-peer=on");
    assert_object_error("endpoint must be client or server, not 'both'",
                        "tls-creds-x509,id=x0,dir=/x,endpoint=both");
    assert_object_error("verify-peer must be on or off",
                        "tls-creds-x509,id=x0,dir=/x,verify-peer=2");
    assert_object_error("expected PROPERTY=VALUE", "tls-creds-x509,id=x0,dir");
    assert_object_error("identity is required", "authz-simple,id=z0");

    /* QEMU's ",," is a comma inside a value. */
    assert_true(tls_object_add("authz-simple,id=z1,identity=CN=a,,O=b", NULL));
    assert_string_equal(tls_authz_identity("z1"), "CN=a,O=b");
    assert_null(tls_creds_find("z1"));
    g_autoptr(GError) err = NULL;
    assert_null(tls_creds_lookup("z1", TLS_ENDPOINT_CLIENT, &err));
    assert_non_null(strstr(err->message, "not a tls-creds object"));
}

static void test_x509_files(void **state)
{
    (void)state;
    /* ca-cert.pem is always required; the server's pair too. */
    g_autofree char *empty = g_build_filename(tmp_dir, "empty", NULL);
    g_mkdir_with_parents(empty, 0700);
    assert_object_error("ca-cert.pem", "tls-creds-x509,id=x1,dir=%s", empty);
    g_autofree char *junk = write_file("junk", "ca-cert.pem", "not a certificate\n");
    assert_object_error("CA certificate", "tls-creds-x509,id=x2,dir=%s", junk);
    assert_object_error("server-cert.pem", "tls-creds-x509,id=x3,dir=%s,endpoint=server", junk);
    assert_false(tls_object_exists("x1") || tls_object_exists("x2") || tls_object_exists("x3"));
}

/* ---- a PSK session over a socketpair ---- */

struct peer {
    int fd;
    struct tls_creds *creds;
    struct channel *ch;
    GError *err;
};

static gpointer client_thread(gpointer opaque)
{
    struct peer *p = opaque;
    char reply[6] = { 0 };

    p->ch = channel_tls_new_client(p->fd, p->creds, NULL, "client", &p->err);
    if (!p->ch)
        return NULL;
    struct channel *rp = channel_return_path(p->ch, &p->err);
    channel_put_bytes(p->ch, "hello", 5);
    if (channel_flush(p->ch, &p->err) && channel_read_exact(rp, reply, 5, &p->err) &&
        strcmp(reply, "world"))
        g_set_error(&p->err, TERN_ERROR, TERN_ERROR_FAILED, "got '%s'", reply);
    channel_close(rp);
    return NULL;
}

static void test_psk_channel(void **state)
{
    (void)state;
    g_autofree char *dir = write_file("pskch", "keys.psk", "qemu:000102030405060708090a0b\n");
    g_autofree char *wrong = write_file("pskwrong", "keys.psk", "qemu:ffff\n");
    int sv[2];

    add_object("tls-creds-psk,id=cc,dir=%s", dir);
    add_object("tls-creds-psk,id=ss,dir=%s,endpoint=server", dir);
    add_object("tls-creds-psk,id=ww,dir=%s", wrong);

    /* Forward direction client -> server, return path back, one session. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct peer client = { .fd = sv[0], .creds = tls_creds_find("cc") };
    GThread *t = g_thread_new("client", client_thread, &client);
    g_autoptr(GError) err = NULL;
    struct channel *ch = channel_tls_new_server(sv[1], tls_creds_find("ss"), NULL, &err);
    assert_non_null(ch);
    assert_non_null(strstr(channel_tls_describe(ch), "TLS1.3"));
    char buf[6] = { 0 };
    assert_true(channel_read_exact(ch, buf, 5, &err));
    assert_string_equal(buf, "hello");
    struct channel *rp = channel_return_path(ch, &err);
    assert_non_null(rp);
    assert_ptr_equal(channel_tls_describe(rp), channel_tls_describe(ch));
    channel_put_bytes(rp, "world", 5);
    assert_true(channel_flush(rp, &err));
    g_thread_join(t);
    if (client.err)
        fail_msg("client: %s", client.err->message);
    channel_close(rp);
    channel_close(ch);
    channel_close(client.ch);

    /* The wrong key: both sides fail the handshake and say so. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct peer bad = { .fd = sv[0], .creds = tls_creds_find("ww") };
    t = g_thread_new("client", client_thread, &bad);
    assert_null(channel_tls_new_server(sv[1], tls_creds_find("ss"), NULL, &err));
    assert_non_null(strstr(err->message, "TLS handshake with the source failed"));
    g_clear_error(&err);
    g_thread_join(t);
    assert_null(bad.ch);
    assert_non_null(strstr(bad.err->message, "TLS handshake with the target failed"));
    g_clear_error(&bad.err);

    /* A plaintext Tern source: refused by its magic, before any handshake. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[0], "TERNMIG", 8), 8);
    shutdown(sv[0], SHUT_WR); /* the target's linger ends at once */
    assert_null(channel_tls_new_server(sv[1], tls_creds_find("ss"), NULL, &err));
    assert_non_null(strstr(err->message, "a plaintext source connected, but tls-creds is set"));
    /* It told the source so on a plaintext return path: a header, then ERROR. */
    char answer[512] = { 0 };
    ssize_t got = 0, n;
    while ((n = read(sv[0], answer + got, sizeof(answer) - 1 - (size_t)got)) > 0)
        got += n;
    assert_memory_equal(answer, "TERNMIG", 8);
    assert_non_null(memmem(answer, (size_t)got, "a plaintext source connected", 28));
    close(sv[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psk_parse),
        cmocka_unit_test_setup_teardown(test_psk_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_object_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x509_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psk_channel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
