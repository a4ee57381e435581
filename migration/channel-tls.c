/* channel-tls.c: the TLS 1.3 channel backend: a GnuTLS session over a connected socket, the
 * handshake with a deadline, x509/PSK checks, and the return path on the same session. */
#include "tern/channel-tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/socket.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tern/stream-format.h"
#include "tern/stream.h"
#include "tern/util.h"

#define TLS_RECORD_MAX 16384 /* plaintext bytes of one TLS record */

/* One connection: the fd and the session, shared by the forward channel and
 * its return path (one sends, the other receives), freed with the last. */
struct tls_conn {
    int fd;
    gnutls_session_t session;
    gint refs;
    bool ktls_send, ktls_recv; /* the kernel does the record layer that way */
    char *describe;
};

struct tls_backend {
    struct tls_conn *conn;
    struct channel *ch; /* to record GnuTLS's own words for an error */
    char *name;
    uint8_t stage[TLS_RECORD_MAX]; /* small pieces gathered into one record */
};

static void conn_unref(struct tls_conn *c)
{
    if (!g_atomic_int_dec_and_test(&c->refs))
        return;
    gnutls_deinit(c->session);
    if (c->fd >= 0)
        close(c->fd);
    g_free(c->describe);
    g_free(c);
}

static ssize_t tls_failed(struct tls_backend *b, const char *what, ssize_t rc)
{
    bool alert = rc == GNUTLS_E_FATAL_ALERT_RECEIVED;

    /* What a target sends when tls-authz does not admit this source. */
    if (alert && gnutls_alert_get(b->conn->session) == GNUTLS_A_ACCESS_DENIED) {
        channel_set_errorf(b->ch, TERN_ERROR_FAILED,
                           "the peer refused this side's certificate (alert: Access was denied; "
                           "the target's tls-authz?)");
        return -EPROTO;
    }
    channel_set_errorf(b->ch, TERN_ERROR_FAILED, "%s: TLS %s: %s%s%s%s", b->name, what,
                       gnutls_strerror((int)rc), alert ? " (" : "",
                       alert ? gnutls_alert_get_name(gnutls_alert_get(b->conn->session)) : "",
                       alert ? ")" : "");
    return -EPROTO;
}

static ssize_t tls_send(struct tls_backend *b, const void *buf, size_t len)
{
    for (;;) {
        ssize_t n = gnutls_record_send(b->conn->session, buf, len);
        if (n >= 0)
            return n;
        if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED)
            return tls_failed(b, "send", n);
    }
}

static ssize_t tls_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct tls_backend *b = opaque;
    size_t used = 0;

    if (b->conn->ktls_send) {
        /* The kernel encrypts: hand it the pieces as they are. */
        struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t n;
        while ((n = sendmsg(b->conn->fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
            ;
        return n < 0 ? -errno : n;
    }
    /* A large piece goes as it is (GnuTLS cuts it into records); small ones
     * are gathered so that each does not cost a record of its own. */
    if (iov[0].iov_len >= TLS_RECORD_MAX)
        return tls_send(b, iov[0].iov_base, iov[0].iov_len);
    for (int i = 0; i < iovcnt && used < TLS_RECORD_MAX; i++) {
        size_t take = MIN(iov[i].iov_len, TLS_RECORD_MAX - used);
        memcpy(b->stage + used, iov[i].iov_base, take);
        used += take;
    }
    return tls_send(b, b->stage, used);
}

static ssize_t tls_read(void *opaque, void *buf, size_t len)
{
    struct tls_backend *b = opaque;

    if (b->conn->ktls_recv) {
        ssize_t n;
        while ((n = read(b->conn->fd, buf, len)) < 0 && errno == EINTR)
            ;
        if (n >= 0)
            return n;
        if (errno != EIO)
            return -errno;
        /* A record that is not data (an alert): GnuTLS reads its control message. */
    }
    for (;;) {
        ssize_t n = gnutls_record_recv(b->conn->session, buf, len);
        if (n >= 0)
            return n;
        /* The peer closed without close_notify, as a failing peer does: the
         * end of the stream, as on a plain socket. */
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED)
            return tls_failed(b, "receive", n);
    }
}

static void tls_shutdown(void *opaque)
{
    struct tls_backend *b = opaque;

    shutdown(b->conn->fd, SHUT_RDWR);
}

/* As the socket channel's linger: end our direction, drain the peer's bytes
 * (undecrypted: nothing reads this session afterwards) until it closes. */
/* The bytes still coming are TLS records nobody will decrypt: drain the
 * socket as a plain one would. */
static void tls_linger(void *opaque, unsigned timeout_ms)
{
    struct tls_backend *b = opaque;

    channel_socket_linger_fd(b->conn->fd, timeout_ms);
}

static void tls_close(void *opaque)
{
    struct tls_backend *b = opaque;

    conn_unref(b->conn);
    g_free(b->name);
    g_free(b);
}

static struct channel *tls_channel(struct tls_conn *conn, const char *name);

static struct channel *tls_return_path(void *opaque, GError **errp)
{
    struct tls_backend *b = opaque;
    g_autofree char *name = g_strdup_printf("%s (return path)", b->name);

    (void)errp;
    g_atomic_int_inc(&b->conn->refs);
    return tls_channel(b->conn, name);
}

static const struct channel_ops tls_ops = {
    .kind = "tls",
    .writev = tls_writev,
    .read = tls_read,
    .shutdown = tls_shutdown,
    .linger = tls_linger,
    .return_path = tls_return_path,
    .close = tls_close,
};

static struct channel *tls_channel(struct tls_conn *conn, const char *name)
{
    struct tls_backend *b = g_new0(struct tls_backend, 1);

    b->conn = conn;
    b->name = g_strdup(name);
    b->ch = channel_new(&tls_ops, b, b->name);
    return b->ch;
}

const char *channel_tls_describe(struct channel *ch)
{
    if (!ch || channel_get_ops(ch) != &tls_ops)
        return NULL;
    return ((struct tls_backend *)channel_opaque(ch))->conn->describe;
}

/* ---- the handshake ---- */

static int64_t ms_left(uint64_t deadline)
{
    uint64_t now = clock_ns();

    return now >= deadline ? 0 : (int64_t)((deadline - now + 999999) / 1000000);
}

/* Wait for (events) on (fd) until (deadline); false on timeout. */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = events };
        int64_t left = ms_left(deadline);
        if (left == 0)
            return false;
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return true;
        if (n == 0 || errno != EINTR)
            return n != 0;
    }
}

static bool set_blocking(int fd, bool blocking)
{
    int fl = fcntl(fd, F_GETFL);

    return fl >= 0 && fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) == 0;
}

/* Answer a plaintext source in its own language, an ERROR on a plaintext
 * return path, so that it reports why rather than a reset connection; then
 * drain its stream until it closes, as a failed target does. */
static void tell_plaintext_source(int fd, const char *why)
{
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    struct stream_writer w;

    if (dup < 0)
        return;
    struct channel *plain = channel_socket_new(dup, "incoming");
    stream_writer_init(&w, plain, MIG_HDR_F_CRC32);
    if (stream_write_header(&w, NULL) && stream_write_rp_error(&w, why, NULL) &&
        channel_flush(plain, NULL))
        channel_linger(plain, 2000);
    channel_close(plain);
}

/* The target's first look at the peer: a plaintext Tern source starts with
 * the stream magic where a TLS client starts with a handshake record. */
static bool check_not_plaintext(int fd, uint64_t deadline, GError **errp)
{
    uint8_t head[4];
    ssize_t n;

    if (!wait_fd(fd, POLLIN, deadline))
        return true; /* the handshake reports the timeout */
    while ((n = recv(fd, head, sizeof(head), MSG_PEEK | MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (n >= 1 && head[0] == (uint8_t)MIG_STREAM_MAGIC[0] &&
        !memcmp(head, MIG_STREAM_MAGIC, (size_t)n)) {
        const char *why = "a plaintext source connected, but tls-creds is set (set tls-creds "
                          "on the source too)";
        g_set_error_literal(errp, TERN_ERROR, TERN_ERROR_FAILED, why);
        set_blocking(fd, true);
        tell_plaintext_source(fd, why);
        return false;
    }
    return true;
}

/* Why the handshake failed, in GnuTLS's words plus what they mean here. */
static char *handshake_error(gnutls_session_t s, int rc, bool server)
{
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = { 0 };
        unsigned status = gnutls_session_get_verify_cert_status(s);
        char *msg;

        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
            return g_strdup_printf("the %s's certificate failed verification",
                                   server ? "source" : "target");
        msg = g_strdup_printf("the %s's certificate failed verification: %s",
                              server ? "source" : "target", g_strstrip((char *)out.data));
        gnutls_free(out.data);
        return msg;
    }
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
        return g_strdup_printf("the %s refused it: %s (alert: %s)", server ? "source" : "target",
                               gnutls_strerror(rc), gnutls_alert_get_name(gnutls_alert_get(s)));
    return g_strdup(gnutls_strerror(rc));
}

/* A fatal error that a non-TLS peer causes (it answered with something else). */
static bool looks_plaintext(int rc)
{
    return rc == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || rc == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
           rc == GNUTLS_E_UNEXPECTED_PACKET || rc == GNUTLS_E_PREMATURE_TERMINATION ||
           rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PUSH_ERROR;
}

static bool check_authz(gnutls_session_t s, const char *authz, GError **errp)
{
    const char *identity = tls_authz_identity(authz);
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    char dn[1024];
    size_t dn_len = sizeof(dn);

    if (!identity) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "tls-authz '%s': no authz-simple object",
                    authz);
        return false;
    }
    if (!certs || n == 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "the source sent no certificate, but tls-authz '%s' is set", authz);
        return false;
    }
    if (gnutls_x509_crt_init(&crt) < 0)
        return false;
    int rc = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
    if (rc >= 0)
        rc = gnutls_x509_crt_get_dn(crt, dn, &dn_len);
    gnutls_x509_crt_deinit(crt);
    if (rc < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "the source's certificate: %s",
                    gnutls_strerror(rc));
        return false;
    }
    if (strcmp(dn, identity)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "the source's certificate '%s' is not allowed by tls-authz '%s' (identity "
                    "'%s')",
                    dn, authz, identity);
        return false;
    }
    return true;
}

static char *describe_session(struct tls_conn *c)
{
    gnutls_session_t s = c->session;
    int k = (int)gnutls_transport_is_ktls_enabled(s);
    const char *why = NULL;

    c->ktls_send = k & GNUTLS_KTLS_SEND;
    c->ktls_recv = k & GNUTLS_KTLS_RECV;
    if (!k)
        why = access("/sys/module/tls", F_OK) != 0
                  ? "the kernel has no tls module loaded (CONFIG_TLS, modprobe tls)"
                  : "GnuTLS did not enable it (ktls = true in [global] of /etc/gnutls/config)";
    return g_strdup_printf("%s %s, kTLS %s%s%s%s",
                           gnutls_protocol_get_name(gnutls_protocol_get_version(s)),
                           gnutls_cipher_get_name(gnutls_cipher_get(s)),
                           k == GNUTLS_KTLS_DUPLEX ? "on"
                           : k                     ? (c->ktls_send ? "send only" : "receive only")
                                                   : "off",
                           why ? " (" : "", why ? why : "", why ? ")" : "");
}

static struct channel *tls_start(int fd, struct tls_creds *creds, bool server, const char *hostname,
                                 const char *authz, const char *name, GError **errp)
{
    uint64_t deadline = clock_ns() + (uint64_t)CHANNEL_TLS_HANDSHAKE_TIMEOUT_MS * 1000000;
    const char *peer = server ? "source" : "target";
    struct tls_conn *c = g_new0(struct tls_conn, 1);
    int rc;

    c->fd = fd;
    c->refs = 1;
    rc = gnutls_init(&c->session, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL |
                                      GNUTLS_NO_TICKETS);
    if (rc < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS: %s", gnutls_strerror(rc));
        g_free(c);
        return NULL;
    }
    if (!tls_creds_apply(creds, c->session, errp))
        goto fail;
    if (tls_creds_verify_peer(creds)) {
        if (!server && (!hostname || !*hostname)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "no hostname to check the target's certificate against: set "
                        "tls-hostname");
            goto fail;
        }
        /* The handshake fails unless the peer's chain is trusted (and, for
         * the source, names (hostname)); the server checks no name. */
        gnutls_session_set_verify_cert(c->session, server ? NULL : hostname, 0);
    }
    gnutls_transport_set_int(c->session, fd);
    if (!set_blocking(fd, false)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS: fcntl: %s", g_strerror(errno));
        goto fail;
    }
    if (server && !check_not_plaintext(fd, deadline, errp))
        goto fail;
    for (;;) {
        rc = gnutls_handshake(c->session);
        if (rc == GNUTLS_E_SUCCESS)
            break;
        if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
            short ev = gnutls_record_get_direction(c->session) ? POLLOUT : POLLIN;
            if (wait_fd(fd, ev, deadline))
                continue;
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                        "TLS handshake with the %s timed out after %d s", peer,
                        CHANNEL_TLS_HANDSHAKE_TIMEOUT_MS / 1000);
            goto fail;
        }
        if (!gnutls_error_is_fatal(rc))
            continue;
        /* Tell the peer why (GnuTLS leaves the alert to us), so that it
         * reports more than a closed connection; best effort. */
        if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED && !looks_plaintext(rc))
            gnutls_alert_send_appropriate(c->session, rc);
        g_autofree char *why = handshake_error(c->session, rc, server);
        const char *hint = "";
        if (looks_plaintext(rc))
            hint = server ? " (does the source have tls-creds set?)"
                          : " (does the target have tls-creds set?)";
        else if (tls_creds_type(creds) == TLS_CREDS_PSK)
            hint = " (do both sides have the same key for the username in keys.psk?)";
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS handshake with the %s failed: %s%s",
                    peer, why, hint);
        goto fail;
    }
    if (server && authz && *authz && !check_authz(c->session, authz, errp)) {
        /* The source learns it from the alert, not just a closed connection. */
        gnutls_alert_send(c->session, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
        goto fail;
    }
    if (!set_blocking(fd, true)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "TLS: fcntl: %s", g_strerror(errno));
        goto fail;
    }
    c->describe = describe_session(c);
    fprintf(stderr, "tern: migration TLS: %s\n", c->describe);
    return tls_channel(c, name);
fail:
    c->refs = 1;
    c->fd = -1; /* the caller's again */
    conn_unref(c);
    return NULL;
}

struct channel *channel_tls_new_client(int fd, struct tls_creds *creds, const char *hostname,
                                       const char *name, GError **errp)
{
    return tls_start(fd, creds, false, hostname, NULL, name ? name : "tls", errp);
}

struct channel *channel_tls_new_server(int fd, struct tls_creds *creds, const char *authz,
                                       GError **errp)
{
    return tls_start(fd, creds, true, NULL, authz, "incoming", errp);
}
