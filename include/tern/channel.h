/* channel.h: buffered byte channels for migration (socket, memory), with a sticky error. */
#ifndef TERN_CHANNEL_H
#define TERN_CHANNEL_H

/*
 * A channel is a buffered, one-direction-at-a-time byte pipe in the style of
 * QEMU's QEMUFile:
 *  - puts go to a fixed buffer, or by reference (no copy) for guest pages;
 *    adjacent pieces are merged into one iovec, and channel_flush() hands them
 *    to the backend with writev, handling partial writes and EINTR;
 *  - gets come from a read buffer; large reads bypass it;
 *  - the first error is sticky: it is recorded with a message, and every
 *    later put/get is a no-op (gets return zeros), so a caller writes or reads
 *    a whole record and checks channel_get_error() once.
 * A channel is used by one thread at a time; only channel_shutdown() (and the
 * error queries) may be called from another thread, to unblock it.
 */
#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define CHANNEL_BUF_SIZE (32 * 1024) /* write buffer and read buffer, each */
#define CHANNEL_IOV_MAX 64           /* iovecs gathered before a flush */

struct channel;

/* A backend. Returns are bytes (>= 0) or a negative errno; never set errno. */
struct channel_ops {
    const char *kind; /* "socket", "mem", ... */
    /* Write some of (iov, iovcnt); may be partial. NULL: read-only channel. */
    ssize_t (*writev)(void *opaque, const struct iovec *iov, int iovcnt);
    /* Read up to (len) bytes into (buf); 0 means end of stream. NULL: write-only. */
    ssize_t (*read)(void *opaque, void *buf, size_t len);
    /* Make blocked and future reads/writes return at once (e.g. shutdown(2)). Optional. */
    void (*shutdown)(void *opaque);
    /* A new channel for the other direction of the same connection. Optional. */
    struct channel *(*return_path)(void *opaque, GError **errp);
    /* Close the sending direction, then read and drop what the peer still
     * sends until it closes or (timeout_ms) pass. Optional. */
    void (*linger)(void *opaque, unsigned timeout_ms);
    /* Write (len) bytes of (buf) at byte (offset) of the backend, beside the
     * sequential stream; may complete later: (buf) must stay valid until
     * drain. False with (errp) on failure. Optional: only a seekable backend
     * (a file) has it. */
    bool (*write_at)(void *opaque, uint64_t offset, const void *buf, size_t len, GError **errp);
    /* Wait until every write_at has landed (or failed). With write_at. */
    bool (*drain)(void *opaque, GError **errp);
    /* Attach (fds) (SCM_RIGHTS) to the first byte the next writev sends; the
     * caller keeps its copies. Optional: only a UNIX socket has it. */
    bool (*send_fds)(void *opaque, const int *fds, unsigned nfds, GError **errp);
    /* Move up to (max) file descriptors received so far into (fds); returns
     * how many. Optional. */
    unsigned (*take_fds)(void *opaque, int *fds, unsigned max);
    /* Release (opaque) (close the fd). Optional. */
    void (*close)(void *opaque);
};

/* A channel over backend (ops, opaque); (name) appears in error messages. */
struct channel *channel_new(const struct channel_ops *ops, void *opaque, const char *name);
/* Flush nothing, release the backend and the channel. NULL is fine. */
void channel_close(struct channel *ch);
/* The backend's opaque pointer of (ch) (for backend helpers). */
void *channel_opaque(struct channel *ch);
const struct channel_ops *channel_get_ops(struct channel *ch);
const char *channel_name(struct channel *ch);

/* ---- Errors ---- */

/* Record (err) as the channel error unless one is set already (takes ownership). */
void channel_set_error(struct channel *ch, GError *err);
/* printf-style channel_set_error() with TERN_ERROR / (code). */
void channel_set_error_literal(struct channel *ch, int code, const char *msg);
void channel_set_errorf(struct channel *ch, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* True if (ch) has failed; any thread may ask. */
bool channel_has_error(struct channel *ch);
/* If (ch) has failed: copy its error into (errp) and return false; else true. */
bool channel_check(struct channel *ch, GError **errp);
/* Set a "cancelled" error, then shut the backend down so a blocked thread
 * returns. Any thread; (reason) becomes the error message if none is set. */
void channel_shutdown(struct channel *ch, const char *reason);

/* A lingering close, before channel_close() of a failed receiver: send the
 * peer end of stream after what was written (the return path's ERROR), then
 * drain its data for at most (timeout_ms). Closing a socket with unread data
 * would reset the connection instead, and a reset can overtake the ERROR the
 * peer needs to hear. No-op for backends without it. */
void channel_linger(struct channel *ch, unsigned timeout_ms);

/* ---- Writing ---- */

void channel_put_u8(struct channel *ch, uint8_t v);
void channel_put_le16(struct channel *ch, uint16_t v);
void channel_put_le32(struct channel *ch, uint32_t v);
void channel_put_le64(struct channel *ch, uint64_t v);
/* Copy (len) bytes of (data) into the channel. */
void channel_put_bytes(struct channel *ch, const void *data, size_t len);
/* Copy like channel_put_bytes() and fold the copied bytes into (*crc) (zlib
 * CRC-32), computed from the copy while it is in cache: the CRC then matches
 * what is sent even if (data) changes concurrently (guest RAM of running vCPUs). */
void channel_put_bytes_crc(struct channel *ch, const void *data, size_t len, uint32_t *crc);
/* Send (len) bytes at (data) by reference, without copying. (data) must stay
 * valid until channel_flush() (or channel_close()) returns; it is merged with
 * the previous piece when adjacent to it. */
void channel_put_buffer_ref(struct channel *ch, const void *data, size_t len);
/* Write everything pending to the backend; false with (errp) if (ch) has failed. */
bool channel_flush(struct channel *ch, GError **errp);
/* Bytes accepted by puts since the channel was created (stream write offset). */
uint64_t channel_write_pos(struct channel *ch);
/* Bytes handed to the backend so far: the stream's (<= channel_write_pos())
 * plus those of positional writes. */
uint64_t channel_bytes_written(struct channel *ch);

/* ---- Positional writes (seekable backends: the file channel) ---- */

/* Write (len) bytes of (buf) at byte (offset) of the backend, beside the
 * sequential stream, maybe asynchronously: (buf) must stay valid until
 * channel_drain(). The bytes count in channel_bytes_written() and against the
 * rate limit, not in channel_write_pos(). The backend's rules apply (the file
 * channel's: channel-file.h). A backend without positional writes (socket,
 * memory) refuses: a sticky channel error. False with (errp) if (ch) has
 * failed, now or earlier. */
bool channel_write_at(struct channel *ch, uint64_t offset, const void *buf, size_t len,
                      GError **errp);
/* Wait until every channel_write_at() of (ch) has landed (or failed). A
 * backend without positional writes refuses, like channel_write_at(). False
 * with (errp) if (ch) has failed. */
bool channel_drain(struct channel *ch, GError **errp);

/* ---- Rate limiting (sender thread only) ---- */

/* The rate limit's clock: now_us() in microseconds, and sleep_until(), which
 * returns once now_us() >= (deadline_us). A test passes a fake that advances
 * when it sleeps, so the limit's arithmetic is checked without real time. */
struct channel_clock {
    int64_t (*now_us)(void *opaque);
    void (*sleep_until)(void *opaque, int64_t deadline_us);
    void *opaque;
};

/* Use (clock) (kept by reference) for (ch)'s rate limit; NULL: the monotonic
 * clock, sleeping on the channel so that a channel_shutdown() wakes a sender.
 * Starts a new window. */
void channel_set_clock(struct channel *ch, const struct channel_clock *clock);
/* Limit puts to (bytes_per_sec) on average, in 100 ms windows; 0 = no limit. */
void channel_set_rate_limit(struct channel *ch, uint64_t bytes_per_sec);
uint64_t channel_get_rate_limit(struct channel *ch);
/* True if this window's budget is used up (the caller should stop putting). */
bool channel_rate_limit_exceeded(struct channel *ch);
/* Sleep until the budget allows more, or until the channel fails (e.g. a
 * channel_shutdown() from another thread). Only a sender thread may call this,
 * never the main loop. Returns the nanoseconds slept. */
uint64_t channel_rate_limit_wait(struct channel *ch);

/* ---- File descriptors (cpr-transfer over a UNIX socket) ---- */

/* The most descriptors one message may carry (more on receipt: a read error). */
#define CHANNEL_MAX_FDS 8
/* Flush what is pending, then make (fds) travel with the next bytes put and
 * flushed (SCM_RIGHTS; the kernel duplicates them, the caller keeps its
 * copies). False with (errp) on a backend that cannot pass descriptors. */
bool channel_send_fds(struct channel *ch, const int *fds, unsigned nfds, GError **errp);
/* Move up to (max) descriptors that arrived with the bytes read so far into
 * (fds) (close-on-exec, the caller owns them); returns how many. */
unsigned channel_take_fds(struct channel *ch, int *fds, unsigned max);

/* ---- Reading ---- */

/* Read exactly (len) bytes into (buf); returns the bytes read, (len) unless
 * the channel failed (then the rest of (buf) is zeroed; end of stream is an
 * error "unexpected end of stream"). */
size_t channel_get_bytes(struct channel *ch, void *buf, size_t len);
uint8_t channel_get_u8(struct channel *ch);
uint16_t channel_get_le16(struct channel *ch);
uint32_t channel_get_le32(struct channel *ch);
uint64_t channel_get_le64(struct channel *ch);
/* Like channel_get_bytes() but returns false with (errp) on any failure. */
bool channel_read_exact(struct channel *ch, void *buf, size_t len, GError **errp);
/* Copy up to (len) (<= CHANNEL_BUF_SIZE) upcoming bytes to (buf) without
 * consuming them; returns how many are available (fewer at end of stream). */
size_t channel_peek(struct channel *ch, void *buf, size_t len);
/* Discard (len) bytes; returns the bytes skipped. */
size_t channel_skip(struct channel *ch, size_t len);
/* True if the stream ended cleanly here: nothing buffered and the backend
 * reports end of stream (reads ahead if needed). */
bool channel_at_eof(struct channel *ch);
/* Forget bytes read ahead but not yet consumed, and an end-of-stream mark: for
 * a backend that seeks (the file channel). channel_read_pos() is unchanged. */
void channel_discard_read_ahead(struct channel *ch);
/* For seekable backends: the stream now continues at (pos) — read_pos and
 * write_pos report file offsets, so records are named by where they are. */
void channel_set_pos(struct channel *ch, uint64_t pos);
/* Bytes consumed by gets/skips so far (stream read offset). */
uint64_t channel_read_pos(struct channel *ch);

/* The other direction of (ch)'s connection as a new channel (the return path). */
struct channel *channel_return_path(struct channel *ch, GError **errp);

/* ---- In-memory backend (migration/channel-mem.c) ---- */

/* A channel reading a copy of (data, len) and appending writes to a buffer.
 * For unit tests and for building records in memory. */
struct channel *channel_mem_new(const void *data, size_t len);
/* Bytes written so far (flush first); valid until the next put or close. */
const uint8_t *channel_mem_data(struct channel *ch, size_t *len);
/* Move at most (max) bytes per backend read or write (0 = no limit), to
 * exercise partial reads and writes. */
void channel_mem_set_max_io(struct channel *ch, size_t max);

/* ---- Socket / fd backend (migration/channel-socket.c) ---- */

enum channel_uri_kind { CHANNEL_URI_TCP, CHANNEL_URI_UNIX, CHANNEL_URI_FILE };

struct channel_uri {
    enum channel_uri_kind kind;
    char *host; /* TCP: name or address ("[::1]" brackets removed) */
    char *port; /* TCP: decimal 0..65535 */
    char *path; /* UNIX: socket path; FILE: the file (channel-file.h) */
};

/* Parse (uri) "tcp:HOST:PORT", "unix:PATH" or "file:PATH" into (out) (free with
 * channel_uri_clear()). The socket functions below refuse a file: URI. */
bool channel_uri_parse(const char *uri, struct channel_uri *out, GError **errp);
void channel_uri_clear(struct channel_uri *uri);
/* Connect to (uri); returns a connected, blocking fd or -1 with (errp). */
int channel_socket_connect(const char *uri, GError **errp);
/* Listen on (uri) (a stale UNIX socket file is replaced); returns the fd or -1. */
int channel_socket_listen(const char *uri, GError **errp);
/* The URI (listen_fd) actually listens on (TCP port 0 resolved); g_free it. */
char *channel_socket_local_uri(int listen_fd, GError **errp);
/* Accept one connection on (listen_fd); returns the tuned fd or -1 with (errp). */
int channel_socket_accept(int listen_fd, GError **errp);
/* Who is at the other end of connected socket (fd), for messages:
 * "ADDR:PORT", "[ADDR]:PORT" or "local process PID"; g_free it. */
char *channel_socket_peer_name(int fd);
/* A lingering close of connected socket (fd) (channel_linger()): shut its
 * sending side, then read and drop what the peer sends until it closes or
 * (timeout_ms) pass. The fd stays open. */
void channel_socket_linger_fd(int fd, unsigned timeout_ms);
/* Whether bytes are waiting to be read on socket (fd) (a peek that never
 * blocks): a peer that has spoken, whether or not anyone read it yet. */
bool channel_socket_has_input(int fd);
/* A channel over connected socket or other fd (fd), which it takes over and
 * closes. Its return path is a second channel on a dup of (fd). */
struct channel *channel_socket_new(int fd, const char *name);
/* A pidfd of the process at the other end of UNIX socket channel (ch) (the
 * one that connected or accepted), or -1 (not a UNIX socket, no pidfds). */
int channel_socket_peer_pidfd(struct channel *ch);

#endif
