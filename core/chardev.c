/* chardev.c: character back-ends (stdio, file, unix socket, none) with a
 * non-blocking, thread-safe write path and main-loop input. */
#include "tern/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

enum chardev_kind {
    CHR_NONE,
    CHR_STDIO,
    CHR_FILE,
    CHR_UNIX_SERVER,
    CHR_UNIX_CLIENT,
};

#define CHARDEV_READ_CHUNK 4096
#define CHARDEV_WRITE_CHUNK (64 * 1024)

struct chardev {
    enum chardev_kind kind;
    char *path; /* file or socket path */

    /* Main thread only. */
    int listen_fd; /* unix server, -1 otherwise */
    guint listen_watch;
    int in_fd; /* stdin or the connected client, -1: none */
    guint in_watch;
    bool connected; /* output has a destination */
    chardev_input_fn *input;
    chardev_connect_fn *connect;
    void *opaque;

    /* Output path, shared with any writer thread: under (lock). */
    GMutex lock;
    GCond cond;
    int out_fd; /* -1: drop output */
    bool out_is_socket;
    bool out_broken; /* a write failed: drop until reconnect */
    bool writing;    /* the writer thread is inside write() on out_fd */
    bool quit;
    GByteArray *outbuf;
    uint64_t dropped;
    GThread *writer;
};

/* stdio is process-wide: one owner, and the terminal settings to restore. */
static struct chardev *stdio_owner;
static bool stdio_termios_saved;
static struct termios stdio_termios;

static void stdio_restore_terminal(void)
{
    if (stdio_termios_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &stdio_termios);
        stdio_termios_saved = false;
    }
}

/* Make sure the terminal echoes, edits lines and maps \n to \r\n (a crashed
 * program may have left it raw); change nothing if it already does. */
static void stdio_sane_terminal(void)
{
    static bool atexit_done;
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &t) < 0) {
        return;
    }
    tcflag_t lwant = ICANON | ECHO | ISIG;
    tcflag_t owant = OPOST | ONLCR;
    if ((t.c_lflag & lwant) == lwant && (t.c_oflag & owant) == owant) {
        return;
    }
    stdio_termios = t;
    stdio_termios_saved = true;
    if (!atexit_done) {
        atexit(stdio_restore_terminal);
        atexit_done = true;
    }
    t.c_lflag |= lwant;
    t.c_oflag |= owant;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
}

static bool write_all(int fd, bool is_socket, const uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t n = is_socket ? send(fd, buf, len, MSG_NOSIGNAL) : write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                /* A non-blocking fd we do not own (inherited stdout): wait a little. */
                g_usleep(1000);
                continue;
            }
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* The writer thread: the only place that may block on output. */
static gpointer chardev_writer_main(gpointer opaque)
{
    struct chardev *chr = opaque;
    uint8_t *chunk = g_malloc(CHARDEV_WRITE_CHUNK);

    g_mutex_lock(&chr->lock);
    while (!chr->quit) {
        if (chr->outbuf->len == 0 || chr->out_fd < 0 || chr->out_broken) {
            g_cond_wait(&chr->cond, &chr->lock);
            continue;
        }
        size_t n = MIN(chr->outbuf->len, CHARDEV_WRITE_CHUNK);
        memcpy(chunk, chr->outbuf->data, n);
        g_byte_array_remove_range(chr->outbuf, 0, (guint)n);
        int fd = chr->out_fd;
        bool is_socket = chr->out_is_socket;
        chr->writing = true;
        g_mutex_unlock(&chr->lock);

        bool ok = write_all(fd, is_socket, chunk, n);

        g_mutex_lock(&chr->lock);
        chr->writing = false;
        if (!ok && fd == chr->out_fd) {
            /* Sockets: the main loop notices the hang-up and reconnects. */
            chr->out_broken = true;
            g_byte_array_set_size(chr->outbuf, 0);
        }
        g_cond_broadcast(&chr->cond);
    }
    g_mutex_unlock(&chr->lock);
    g_free(chunk);
    return NULL;
}

/* Point the output path at (fd) (-1: nowhere), waiting out a write in flight
 * so the old fd can be closed safely afterwards. */
static void chardev_set_out_fd(struct chardev *chr, int fd, bool is_socket)
{
    g_mutex_lock(&chr->lock);
    if (chr->out_fd >= 0 && chr->out_is_socket) {
        shutdown(chr->out_fd, SHUT_RDWR); /* unblocks a send() to a stuck peer */
    }
    while (chr->writing) {
        g_cond_wait(&chr->cond, &chr->lock);
    }
    chr->out_fd = fd;
    chr->out_is_socket = is_socket;
    chr->out_broken = false;
    g_byte_array_set_size(chr->outbuf, 0);
    g_cond_broadcast(&chr->cond);
    g_mutex_unlock(&chr->lock);
}

static gboolean chardev_listen_cb(gint fd, GIOCondition cond, gpointer opaque);
static gboolean chardev_read_cb(gint fd, GIOCondition cond, gpointer opaque);

static void chardev_watch_input(struct chardev *chr)
{
    if (chr->in_fd >= 0 && !chr->in_watch) {
        chr->in_watch = g_unix_fd_add(chr->in_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, chardev_read_cb,
                                      chr);
    }
}

static void chardev_watch_listen(struct chardev *chr)
{
    if (chr->listen_fd >= 0 && !chr->listen_watch) {
        chr->listen_watch = g_unix_fd_add(chr->listen_fd, G_IO_IN, chardev_listen_cb, chr);
    }
}

/* Drop the socket client (main thread); a server listens again. */
static void chardev_disconnect(struct chardev *chr, bool notify)
{
    if (chr->in_watch) {
        g_source_remove(chr->in_watch);
        chr->in_watch = 0;
    }
    if (chr->in_fd < 0) {
        return;
    }
    int fd = chr->in_fd;
    chardev_set_out_fd(chr, -1, false);
    close(fd);
    chr->in_fd = -1;
    chr->connected = false;
    chardev_watch_listen(chr);
    if (notify && chr->connect) {
        chr->connect(chr->opaque, false);
    }
}

static gboolean chardev_read_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    struct chardev *chr = opaque;
    uint8_t buf[CHARDEV_READ_CHUNK];
    ssize_t n;

    (void)cond;
    do {
        n = read(fd, buf, sizeof(buf));
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        chr->in_watch = 0; /* this source goes away on return */
        if (chr->kind == CHR_STDIO) {
            chr->in_fd = -1; /* end of stdin: output keeps working */
        } else {
            chardev_disconnect(chr, true);
        }
        return G_SOURCE_REMOVE;
    }
    if (chr->input) {
        chr->input(chr->opaque, buf, (size_t)n);
    }
    return G_SOURCE_CONTINUE;
}

static void chardev_attach_client(struct chardev *chr, int fd)
{
    chr->in_fd = fd;
    chr->connected = true;
    chardev_set_out_fd(chr, fd, true);
    chardev_watch_input(chr);
    if (chr->connect) {
        chr->connect(chr->opaque, true);
    }
}

static gboolean chardev_listen_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    struct chardev *chr = opaque;

    (void)cond;
    int client = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (client < 0) {
        return G_SOURCE_CONTINUE; /* EAGAIN, or the peer already gave up */
    }
    /* One client at a time, like QEMU: others wait in the backlog. */
    chr->listen_watch = 0;
    chardev_attach_client(chr, client);
    return G_SOURCE_REMOVE;
}

bool chardev_parse_unix(const char *spec, char **path, bool *server, GError **errp)
{
    if (!g_str_has_prefix(spec, "unix:")) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "'%s' is not a unix socket spec (unix:PATH[,server,nowait])", spec);
        return false;
    }
    g_auto(GStrv) parts = g_strsplit(spec + 5, ",", -1);
    if (!parts[0] || !parts[0][0]) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "'%s': missing socket path", spec);
        return false;
    }
    bool is_server = false;
    for (unsigned i = 1; parts[i]; i++) {
        const char *o = parts[i];
        if (!strcmp(o, "server") || !strcmp(o, "server=on")) {
            is_server = true;
        } else if (!strcmp(o, "server=off")) {
            is_server = false;
        } else if (!strcmp(o, "nowait") || !strcmp(o, "wait") || !strcmp(o, "wait=on") ||
                   !strcmp(o, "wait=off")) {
            /* Never wait for a client at start-up. */
        } else {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "'%s': unknown socket option '%s'",
                        spec, o);
            return false;
        }
    }
    if (strlen(parts[0]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "socket path '%s' is too long",
                    parts[0]);
        return false;
    }
    *path = g_strdup(parts[0]);
    *server = is_server;
    return true;
}

static bool unix_addr(const char *path, struct sockaddr_un *sa, GError **errp)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "socket path '%s' is too long", path);
        return false;
    }
    strcpy(sa->sun_path, path);
    return true;
}

int chardev_unix_listen(const char *path, GError **errp)
{
    struct sockaddr_un sa;
    struct stat st;

    if (!unix_addr(path, &sa, errp)) {
        return -1;
    }
    /* Replace a socket left behind, never an ordinary file nor a symlink
     * (lstat: whatever it points to is not ours to remove). */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST, "'%s' exists and is not a socket",
                        path);
            return -1;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno), "socket: %s",
                    g_strerror(errno));
        return -1;
    }
    /* The monitor is the whole VM: only its user may connect, whatever the
     * umask. Linux creates the socket's node at bind() with the socket
     * inode's mode less the umask (af_unix.c, unix_bind_bsd), so an fchmod()
     * before bind() makes it 0600 or stricter from its first instant: no
     * chmod() after bind() (a window, and it follows symlinks), no umask()
     * (process-wide, and threads run already), no private directory. */
    if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 8) < 0) {
        int e = errno;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(e), "cannot listen on '%s': %s",
                    path, g_strerror(e));
        close(fd);
        return -1;
    }
    return fd;
}

static int unix_connect(const char *path, GError **errp)
{
    struct sockaddr_un sa;

    if (!unix_addr(path, &sa, errp)) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(e), "cannot connect to '%s': %s",
                    path, g_strerror(e));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static struct chardev *chardev_new(enum chardev_kind kind)
{
    struct chardev *chr = g_new0(struct chardev, 1);

    chr->kind = kind;
    chr->listen_fd = -1;
    chr->in_fd = -1;
    chr->out_fd = -1;
    g_mutex_init(&chr->lock);
    g_cond_init(&chr->cond);
    chr->outbuf = g_byte_array_new();
    return chr;
}

static void chardev_start_writer(struct chardev *chr)
{
    chr->writer = g_thread_new("chardev-out", chardev_writer_main, chr);
}

/* The file: back-end's output: a new file is created 0600 whatever the
 * umask (a guest's console may show secrets); an existing one is truncated
 * and keeps the mode its owner gave it. A symlink is never followed: in a
 * shared directory it could point anywhere the user may write. */
static int file_open(const char *path, GError **errp)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd >= 0 && fchmod(fd, 0600) < 0) {
        close(fd);
        fd = -1;
    } else if (fd < 0 && errno == EEXIST) {
        fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        int e = errno;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(e), "cannot open '%s': %s", path,
                    e == ELOOP ? "it is a symbolic link, which is not followed: name the file "
                                 "itself"
                               : g_strerror(e));
    }
    return fd;
}

struct chardev *chardev_open(const char *spec, GError **errp)
{
    struct chardev *chr;

    if (!spec || !strcmp(spec, "none") || !strcmp(spec, "null")) {
        return chardev_new(CHR_NONE);
    }
    if (!strcmp(spec, "stdio")) {
        if (stdio_owner) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                        "stdio is already used by another back-end");
            return NULL;
        }
        chr = chardev_new(CHR_STDIO);
        stdio_sane_terminal();
        chr->in_fd = STDIN_FILENO;
        chr->out_fd = STDOUT_FILENO;
        chr->connected = true;
        stdio_owner = chr;
        chardev_start_writer(chr);
        return chr;
    }
    if (g_str_has_prefix(spec, "file:")) {
        const char *path = spec + 5;
        int fd = file_open(path, errp);
        if (fd < 0) {
            return NULL;
        }
        chr = chardev_new(CHR_FILE);
        chr->path = g_strdup(path);
        chr->out_fd = fd;
        chr->connected = true;
        chardev_start_writer(chr);
        return chr;
    }
    if (g_str_has_prefix(spec, "unix:")) {
        g_autofree char *path = NULL;
        bool server;
        if (!chardev_parse_unix(spec, &path, &server, errp)) {
            return NULL;
        }
        if (server) {
            int fd = chardev_unix_listen(path, errp);
            if (fd < 0) {
                return NULL;
            }
            chr = chardev_new(CHR_UNIX_SERVER);
            chr->listen_fd = fd;
            chr->path = g_steal_pointer(&path);
            chardev_start_writer(chr);
            chardev_watch_listen(chr);
            return chr;
        }
        int fd = unix_connect(path, errp);
        if (fd < 0) {
            return NULL;
        }
        chr = chardev_new(CHR_UNIX_CLIENT);
        chr->path = g_steal_pointer(&path);
        chardev_start_writer(chr);
        chardev_attach_client(chr, fd);
        return chr;
    }
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "unknown character back-end '%s' (stdio, file:PATH, "
                "unix:PATH,server,nowait, none)",
                spec);
    return NULL;
}

void chardev_close(struct chardev *chr)
{
    if (!chr) {
        return;
    }
    chr->connect = NULL;
    chr->input = NULL;
    if (chr->kind == CHR_UNIX_SERVER || chr->kind == CHR_UNIX_CLIENT) {
        chardev_disconnect(chr, false);
    } else if (chr->in_watch) {
        g_source_remove(chr->in_watch);
        chr->in_watch = 0;
    }
    if (chr->listen_watch) {
        g_source_remove(chr->listen_watch);
        chr->listen_watch = 0;
    }
    if (chr->writer) {
        /* Let the writer drain what is queued for stdio and files. */
        g_mutex_lock(&chr->lock);
        while ((chr->outbuf->len && chr->out_fd >= 0 && !chr->out_broken) || chr->writing) {
            g_cond_wait(&chr->cond, &chr->lock);
        }
        chr->quit = true;
        g_cond_broadcast(&chr->cond);
        g_mutex_unlock(&chr->lock);
        g_thread_join(chr->writer);
    }
    if (chr->kind == CHR_FILE && chr->out_fd >= 0) {
        close(chr->out_fd);
    }
    if (chr->listen_fd >= 0) {
        close(chr->listen_fd);
        if (chr->path) {
            unlink(chr->path);
        }
    }
    if (chr->kind == CHR_STDIO) {
        stdio_restore_terminal();
        stdio_owner = NULL;
    }
    g_byte_array_unref(chr->outbuf);
    g_mutex_clear(&chr->lock);
    g_cond_clear(&chr->cond);
    g_free(chr->path);
    g_free(chr);
}

void chardev_write(struct chardev *chr, const void *buf, size_t len)
{
    if (!chr || !len) {
        return;
    }
    g_mutex_lock(&chr->lock);
    if (chr->out_fd < 0 || chr->out_broken || chr->quit) {
        chr->dropped += len;
    } else {
        size_t room = CHARDEV_OUT_MAX - MIN(chr->outbuf->len, CHARDEV_OUT_MAX);
        size_t n = MIN(len, room);
        g_byte_array_append(chr->outbuf, buf, (guint)n);
        chr->dropped += len - n;
        g_cond_broadcast(&chr->cond);
    }
    g_mutex_unlock(&chr->lock);
}

void chardev_printf(struct chardev *chr, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    chardev_write(chr, text, strlen(text));
}

void chardev_set_handlers(struct chardev *chr, chardev_input_fn *input, chardev_connect_fn *connect,
                          void *opaque)
{
    chr->input = input;
    chr->connect = connect;
    chr->opaque = opaque;
    /* stdin is read only when someone wants it; sockets are always watched
     * (to notice hang-ups). */
    if (chr->kind == CHR_STDIO && !input && chr->in_watch) {
        g_source_remove(chr->in_watch);
        chr->in_watch = 0;
    } else if (chr->kind != CHR_STDIO || input) {
        chardev_watch_input(chr);
    }
}

bool chardev_is_connected(const struct chardev *chr)
{
    return chr && chr->connected;
}

uint64_t chardev_dropped_bytes(struct chardev *chr)
{
    g_mutex_lock(&chr->lock);
    uint64_t n = chr->dropped;
    g_mutex_unlock(&chr->lock);
    return n;
}

bool chardev_is_tty(const struct chardev *chr)
{
    return chr && chr->kind == CHR_STDIO && isatty(STDOUT_FILENO);
}
