/* channel-socket.c: the fd/socket channel backend, and tcp:/unix: URI parsing, connect, listen, accept. */
#include "tern/channel.h"
#include "tern/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* Socket buffers asked for (the kernel caps them at net.core.{w,r}mem_max):
 * large enough to keep a fast link busy while the sender prepares a batch. */
#define SOCKET_BUF_BYTES (4 << 20)

struct sock_backend {
    int fd;
    bool is_socket;
    char *name;
    int send_fds[CHANNEL_MAX_FDS]; /* to attach to the next sendmsg */
    unsigned nr_send_fds;
    int recv_fds[CHANNEL_MAX_FDS]; /* arrived, not yet taken */
    unsigned nr_recv_fds;
};

/* Fill (msg)'s control data in (buf) with the descriptors to send. */
static void sock_put_fds(struct sock_backend *s, struct msghdr *msg, char *buf, size_t size)
{
    struct cmsghdr *c;

    memset(buf, 0, size);
    msg->msg_control = buf;
    msg->msg_controllen = CMSG_SPACE(sizeof(int) * s->nr_send_fds);
    c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * s->nr_send_fds);
    memcpy(CMSG_DATA(c), s->send_fds, sizeof(int) * s->nr_send_fds);
}

/* recvmsg, keeping descriptors that arrive (beyond CHANNEL_MAX_FDS: an error). */
static ssize_t sock_recv(struct sock_backend *s, void *buf, size_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union {
        char buf[CMSG_SPACE(sizeof(int) * CHANNEL_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)
    };
    ssize_t n = recvmsg(s->fd, &msg, MSG_CMSG_CLOEXEC);

    if (n < 0)
        return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
            if (s->nr_recv_fds < CHANNEL_MAX_FDS)
                s->recv_fds[s->nr_recv_fds++] = fd;
            else
                close(fd);
        }
    }
    /* The kernel dropped descriptors that did not fit: a stream never sends
     * that many, and a short count would only surface later, misleadingly. */
    if (msg.msg_flags & MSG_CTRUNC) {
        errno = EMSGSIZE;
        return -1;
    }
    return n;
}

static bool sock_send_fds(void *opaque, const int *fds, unsigned nfds, GError **errp)
{
    struct sock_backend *s = opaque;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (!s->is_socket || getsockname(s->fd, (struct sockaddr *)&ss, &len) < 0 ||
        ss.ss_family != AF_UNIX) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s: file descriptors pass only over a unix: socket", s->name);
        return false;
    }
    if (nfds == 0 || nfds > CHANNEL_MAX_FDS) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %u file descriptors (1 to %d)",
                    s->name, nfds, CHANNEL_MAX_FDS);
        return false;
    }
    memcpy(s->send_fds, fds, sizeof(int) * nfds);
    s->nr_send_fds = nfds;
    return true;
}

static unsigned sock_take_fds(void *opaque, int *fds, unsigned max)
{
    struct sock_backend *s = opaque;
    unsigned n = MIN(max, s->nr_recv_fds);

    memcpy(fds, s->recv_fds, sizeof(int) * n);
    memmove(s->recv_fds, s->recv_fds + n, sizeof(int) * (s->nr_recv_fds - n));
    s->nr_recv_fds -= n;
    return n;
}

/* Wait until (fd) is ready for (events); for fds someone made non-blocking. */
static void sock_wait(int fd, short events)
{
    struct pollfd pfd = { .fd = fd, .events = events };

    while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
        ;
}

static ssize_t sock_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct sock_backend *s = opaque;

    for (;;) {
        ssize_t n;

        if (s->is_socket) {
            /* MSG_NOSIGNAL: a peer that went away is EPIPE, not SIGPIPE. */
            struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
            union {
                char buf[CMSG_SPACE(sizeof(int) * CHANNEL_MAX_FDS)];
                struct cmsghdr align;
            } ctl;

            if (s->nr_send_fds)
                sock_put_fds(s, &msg, ctl.buf, sizeof(ctl.buf));
            n = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
            if (n > 0)
                s->nr_send_fds = 0; /* they went with these bytes */
        } else {
            n = writev(s->fd, iov, iovcnt);
        }
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            sock_wait(s->fd, POLLOUT);
            continue;
        }
        return -errno;
    }
}

static ssize_t sock_read(void *opaque, void *buf, size_t len)
{
    struct sock_backend *s = opaque;

    for (;;) {
        ssize_t n = s->is_socket ? sock_recv(s, buf, len) : read(s->fd, buf, len);

        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            sock_wait(s->fd, POLLIN);
            continue;
        }
        return -errno;
    }
}

static void sock_shutdown(void *opaque)
{
    struct sock_backend *s = opaque;

    if (s->is_socket)
        shutdown(s->fd, SHUT_RDWR);
}

void channel_socket_linger_fd(int fd, unsigned timeout_ms)
{
    uint64_t deadline = clock_ns() + (uint64_t)timeout_ms * 1000000;
    char sink[64 * 1024];

    if (shutdown(fd, SHUT_WR) < 0)
        return;
    for (;;) {
        uint64_t now = clock_ns();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (now >= deadline)
            return;
        int n = poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        ssize_t got = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}

static void sock_linger(void *opaque, unsigned timeout_ms)
{
    struct sock_backend *s = opaque;

    if (s->is_socket)
        channel_socket_linger_fd(s->fd, timeout_ms);
}

static struct channel *sock_return_path(void *opaque, GError **errp)
{
    struct sock_backend *s = opaque;
    g_autofree char *name = NULL;
    int fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);

    if (fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: return path: dup: %s", s->name,
                    g_strerror(errno));
        return NULL;
    }
    name = g_strdup_printf("%s (return path)", s->name);
    return channel_socket_new(fd, name);
}

static void sock_close(void *opaque)
{
    struct sock_backend *s = opaque;

    close(s->fd);
    for (unsigned i = 0; i < s->nr_recv_fds; i++)
        close(s->recv_fds[i]);
    g_free(s->name);
    g_free(s);
}

static const struct channel_ops sock_ops = {
    .kind = "socket",
    .writev = sock_writev,
    .read = sock_read,
    .shutdown = sock_shutdown,
    .linger = sock_linger,
    .return_path = sock_return_path,
    .send_fds = sock_send_fds,
    .take_fds = sock_take_fds,
    .close = sock_close,
};

struct channel *channel_socket_new(int fd, const char *name)
{
    struct sock_backend *s = g_new0(struct sock_backend, 1);
    struct stat st;

    s->fd = fd;
    s->is_socket = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    s->name = g_strdup(name ? name : "fd");
    return channel_new(&sock_ops, s, s->name);
}

/* ---- URIs ---- */

static bool uri_error(GError **errp, const char *uri, const char *why)
{
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "invalid migration URI '%s': %s", uri, why);
    return false;
}

bool channel_uri_parse(const char *uri, struct channel_uri *out, GError **errp)
{
    memset(out, 0, sizeof(*out));
    if (g_str_has_prefix(uri, "tcp:")) {
        const char *rest = uri + 4;
        const char *colon;
        char *end;
        unsigned long port;

        if (rest[0] == '[') {
            const char *close = strchr(rest, ']');

            if (!close)
                return uri_error(errp, uri, "missing ']' after an IPv6 address");
            if (close[1] != ':')
                return uri_error(errp, uri, "expected ':PORT' after ']'");
            out->host = g_strndup(rest + 1, (gsize)(close - rest - 1));
            colon = close + 1;
        } else {
            colon = strrchr(rest, ':');
            if (!colon)
                return uri_error(errp, uri, "expected tcp:HOST:PORT");
            if (memchr(rest, ':', (size_t)(colon - rest)))
                return uri_error(errp, uri, "put an IPv6 address in brackets: tcp:[ADDR]:PORT");
            out->host = g_strndup(rest, (gsize)(colon - rest));
        }
        out->kind = CHANNEL_URI_TCP;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (!g_ascii_isdigit(colon[1]) || *end || errno || port > 65535) {
            channel_uri_clear(out);
            return uri_error(errp, uri, "the port must be a number from 0 to 65535");
        }
        out->port = g_strdup(colon + 1);
        return true;
    }
    if (g_str_has_prefix(uri, "unix:")) {
        const char *path = uri + 5;
        struct sockaddr_un sun;

        if (!*path)
            return uri_error(errp, uri, "expected unix:PATH");
        if (strlen(path) >= sizeof(sun.sun_path)) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "invalid migration URI '%s': socket path too long (%zu bytes, max %zu)",
                        uri, strlen(path), sizeof(sun.sun_path) - 1);
            return false;
        }
        out->kind = CHANNEL_URI_UNIX;
        out->path = g_strdup(path);
        return true;
    }
    if (g_str_has_prefix(uri, "file:")) {
        if (!uri[5])
            return uri_error(errp, uri, "expected file:PATH");
        out->kind = CHANNEL_URI_FILE;
        out->path = g_strdup(uri + 5);
        return true;
    }
    return uri_error(errp, uri, "expected tcp:HOST:PORT, unix:PATH or file:PATH");
}

void channel_uri_clear(struct channel_uri *uri)
{
    g_clear_pointer(&uri->host, g_free);
    g_clear_pointer(&uri->port, g_free);
    g_clear_pointer(&uri->path, g_free);
}

/* ---- Sockets ---- */

static void socket_tune(int fd, bool tcp)
{
    int one = 1;
    int size = SOCKET_BUF_BYTES;

    /* Best effort. Tern batches in user space, so Nagle only delays the last
     * partial segment and the small return-path records. */
    if (tcp)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

static void unix_addr(struct sockaddr_un *sun, const char *path)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, strlen(path) + 1); /* length checked by the parser */
}

static int tcp_open(const struct channel_uri *u, const char *uri, bool listening, GError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
    struct addrinfo *res, *ai;
    const char *host = u->host;
    int rc, fd = -1, err = 0;

    if (listening) {
        hints.ai_flags = AI_PASSIVE;
        /* No host: loopback only, not every address (QEMU's tcp::PORT means
         * all of them); a listener open to the network must be asked for. */
        if (!*u->host) {
            static int said;

            if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
                fprintf(stderr, "tern: incoming migration: no host given, listening on "
                                "127.0.0.1 only; use tcp:0.0.0.0:PORT to listen on all "
                                "addresses\n");
            host = "127.0.0.1";
        }
    } else if (!*u->host) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "invalid migration URI '%s': no host to connect to", uri);
        return -1;
    }
    rc = getaddrinfo(host, u->port, &hints, &res);
    if (rc) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot resolve '%s': %s", uri,
                    u->host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (listening) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
                break;
        } else {
            socket_tune(fd, true);
            while ((rc = connect(fd, ai->ai_addr, ai->ai_addrlen)) < 0 && errno == EINTR)
                ;
            if (rc == 0)
                break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot %s: %s", uri,
                    listening ? "listen" : "connect", g_strerror(err));
    return fd;
}

static int unix_open(const struct channel_uri *u, const char *uri, bool listening, GError **errp)
{
    struct sockaddr_un sun;
    int fd, rc;

    unix_addr(&sun, u->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: socket: %s", uri, g_strerror(errno));
        return -1;
    }
    if (listening) {
        struct stat st;

        /* Replace a stale socket left by an earlier run, never another file. */
        if (lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(u->path);
        /* Only this user may connect, whatever the umask: Linux creates the
         * node with the socket inode's mode (less the umask) at bind(), so
         * no window (core/chardev.c, chardev_unix_listen()). */
        rc = fchmod(fd, 0600);
        if (rc == 0)
            rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
        if (rc == 0)
            rc = listen(fd, 16);
    } else {
        socket_tune(fd, false);
        while ((rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun))) < 0 && errno == EINTR)
            ;
    }
    if (rc < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot %s: %s", uri,
                    listening ? "listen" : "connect", g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int socket_open(const char *uri, bool listening, GError **errp)
{
    struct channel_uri u;
    int fd;

    if (!channel_uri_parse(uri, &u, errp))
        return -1;
    if (u.kind == CHANNEL_URI_FILE) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "'%s' is a file, not a socket: use the file channel", uri);
        fd = -1;
    } else if (u.kind == CHANNEL_URI_TCP) {
        fd = tcp_open(&u, uri, listening, errp);
    } else {
        fd = unix_open(&u, uri, listening, errp);
    }
    channel_uri_clear(&u);
    return fd;
}

int channel_socket_connect(const char *uri, GError **errp)
{
    return socket_open(uri, false, errp);
}

int channel_socket_listen(const char *uri, GError **errp)
{
    return socket_open(uri, true, errp);
}

char *channel_socket_local_uri(int listen_fd, GError **errp)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getsockname(listen_fd, (struct sockaddr *)&ss, &len) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "getsockname: %s", g_strerror(errno));
        return NULL;
    }
    switch (ss.ss_family) {
    case AF_INET: {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        return g_strdup_printf("tcp:%s:%u", host, ntohs(in->sin_port));
    }
    case AF_INET6: {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        return g_strdup_printf("tcp:[%s]:%u", host, ntohs(in6->sin6_port));
    }
    case AF_UNIX:
        return g_strdup_printf("unix:%s", ((struct sockaddr_un *)&ss)->sun_path);
    default:
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "unknown socket family %d", ss.ss_family);
        return NULL;
    }
}

int channel_socket_accept(int listen_fd, GError **errp)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd;

    while ((fd = accept4(listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC)) < 0 &&
           errno == EINTR)
        len = sizeof(ss);
    if (fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "accept: %s", g_strerror(errno));
        return -1;
    }
    socket_tune(fd, ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    return fd;
}

char *channel_socket_peer_name(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return g_strdup("an unknown peer");
    switch (ss.ss_family) {
    case AF_INET: {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        return g_strdup_printf("%s:%u", host, ntohs(in->sin_port));
    }
    case AF_INET6: {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        return g_strdup_printf("[%s]:%u", host, ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
        struct ucred cred;

        len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0)
            return g_strdup_printf("local process %d", (int)cred.pid);
        return g_strdup("a local process");
    }
    default:
        return g_strdup("an unknown peer");
    }
}

int channel_socket_peer_pidfd(struct channel *ch)
{
    struct sock_backend *s;
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (channel_get_ops(ch) != &sock_ops)
        return -1;
    s = channel_opaque(ch);
    if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0)
        return -1;
    return (int)syscall(SYS_pidfd_open, cred.pid, 0);
}

bool channel_socket_has_input(int fd)
{
    char b;

    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}
