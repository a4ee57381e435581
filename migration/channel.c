/* channel.c: the buffered migration channel: write buffer + by-reference iovecs, read buffer, sticky error, rate limit. */
#include "tern/channel.h"
#include "tern/crc32.h"
#include "tern/stream-format.h"
#include "tern/util.h"

#include <errno.h>
#include <string.h>

#define RATE_WINDOW_US (100 * 1000) /* rate limit accounting window */

struct channel {
    const struct channel_ops *ops;
    void *opaque;
    char *name;

    /* The sticky error. (failed) is read without the lock on every put/get;
     * (err) is written once under (lock). (cond) wakes a rate-limited sleeper. */
    GMutex lock;
    GCond cond;
    gint failed;
    GError *err;

    /* Write side: (iov) lists pending pieces in order, each in (wbuf) or by reference. */
    uint8_t wbuf[CHANNEL_BUF_SIZE];
    size_t wbuf_used;
    struct iovec iov[CHANNEL_IOV_MAX];
    int iovcnt;
    uint64_t write_pos;
    uint64_t written;

    /* Rate limit: bytes put in the current window, which started at window_start_us. */
    const struct channel_clock *clock; /* NULL: g_get_monotonic_time() */
    uint64_t rate_limit;
    int64_t window_start_us;
    uint64_t window_used;

    /* Read side: unread bytes are rbuf[rpos, rlen). */
    uint8_t rbuf[CHANNEL_BUF_SIZE];
    size_t rpos;
    size_t rlen;
    bool eof;
    uint64_t read_pos;
};

struct channel *channel_new(const struct channel_ops *ops, void *opaque, const char *name)
{
    struct channel *ch = g_new0(struct channel, 1);

    ch->ops = ops;
    ch->opaque = opaque;
    ch->name = g_strdup(name ? name : ops->kind);
    g_mutex_init(&ch->lock);
    g_cond_init(&ch->cond);
    ch->window_start_us = g_get_monotonic_time();
    return ch;
}

void channel_close(struct channel *ch)
{
    if (!ch)
        return;
    if (ch->ops->close)
        ch->ops->close(ch->opaque);
    if (ch->err)
        g_error_free(ch->err);
    g_mutex_clear(&ch->lock);
    g_cond_clear(&ch->cond);
    g_free(ch->name);
    g_free(ch);
}

void *channel_opaque(struct channel *ch)
{
    return ch->opaque;
}

const struct channel_ops *channel_get_ops(struct channel *ch)
{
    return ch->ops;
}

const char *channel_name(struct channel *ch)
{
    return ch->name;
}

/* ---- Errors ---- */

void channel_set_error(struct channel *ch, GError *err)
{
    g_mutex_lock(&ch->lock);
    if (!ch->err) {
        ch->err = err;
        err = NULL;
        g_atomic_int_set(&ch->failed, 1);
        g_cond_broadcast(&ch->cond);
    }
    g_mutex_unlock(&ch->lock);
    if (err)
        g_error_free(err); /* not the first error: the first one stays */
}

void channel_set_error_literal(struct channel *ch, int code, const char *msg)
{
    channel_set_error(ch, g_error_new_literal(TERN_ERROR, code, msg));
}

void channel_set_errorf(struct channel *ch, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    channel_set_error(ch, g_error_new_literal(TERN_ERROR, code, msg));
    g_free(msg);
}

bool channel_has_error(struct channel *ch)
{
    return g_atomic_int_get(&ch->failed) != 0;
}

bool channel_check(struct channel *ch, GError **errp)
{
    if (!channel_has_error(ch))
        return true;
    g_mutex_lock(&ch->lock);
    if (errp && !*errp)
        *errp = g_error_copy(ch->err);
    g_mutex_unlock(&ch->lock);
    return false;
}

void channel_shutdown(struct channel *ch, const char *reason)
{
    /*
     * Order matters (as in QEMU's qemu_file_shutdown): record the error first,
     * then shut the socket down. shutdown(2) makes the owner thread's blocked
     * recv return 0 or a short count, and its send fail with EPIPE. If it saw
     * that before the error was set, a reader could take the end of stream for
     * a short but valid read (say, a page it zero-fills and installs), and a
     * writer would report "Broken pipe" instead of the real reason. With the
     * error already set, every put/get after the wake-up is a no-op and the
     * owner reports (reason).
     */
    channel_set_errorf(ch, TERN_ERROR_FAILED, "%s", reason ? reason : "channel shut down");
    if (ch->ops->shutdown)
        ch->ops->shutdown(ch->opaque);
}

/* ---- Writing ---- */

static void channel_drop_pending(struct channel *ch)
{
    ch->wbuf_used = 0;
    ch->iovcnt = 0;
}

/* Write every pending iovec; on failure set the channel error. */
static void channel_flush_pending(struct channel *ch)
{
    int idx = 0;

    if (channel_has_error(ch)) {
        channel_drop_pending(ch);
        return;
    }
    if (ch->iovcnt && !ch->ops->writev) {
        channel_set_errorf(ch, TERN_ERROR_FAILED, "%s: channel is not writable", ch->name);
        channel_drop_pending(ch);
        return;
    }
    while (idx < ch->iovcnt) {
        ssize_t n = ch->ops->writev(ch->opaque, &ch->iov[idx], ch->iovcnt - idx);

        if (n == -EINTR)
            continue;
        /* Bytes that went out count even if a shutdown came meanwhile: what
         * the peer may have received is a fact the caller needs. */
        if (n > 0)
            ch->written += (uint64_t)n;
        if (channel_has_error(ch))
            break; /* shut down meanwhile: keep that reason */
        if (n < 0) {
            channel_set_errorf(ch, TERN_ERROR_FAILED, "write to %s failed: %s", ch->name,
                               g_strerror((int)-n));
            break;
        }
        if (n == 0) {
            channel_set_errorf(ch, TERN_ERROR_FAILED, "write to %s made no progress", ch->name);
            break;
        }
        /* Partial write: go on from the first byte not sent. */
        struct iovec *left = ch->iov + idx;
        int cnt = ch->iovcnt - idx;
        iov_consume(&left, &cnt, (size_t)n);
        idx = (int)(left - ch->iov);
    }
    channel_drop_pending(ch);
}

static bool channel_can_merge(struct channel *ch, const void *data)
{
    const struct iovec *last;

    if (!ch->iovcnt)
        return false;
    last = &ch->iov[ch->iovcnt - 1];
    return (const uint8_t *)last->iov_base + last->iov_len == (const uint8_t *)data;
}

/* Append (data, len) to the iovec list; the caller made room for a new entry. */
static void channel_add_iov(struct channel *ch, const void *data, size_t len)
{
    if (channel_can_merge(ch, data)) {
        ch->iov[ch->iovcnt - 1].iov_len += len;
    } else {
        ch->iov[ch->iovcnt].iov_base = (void *)data;
        ch->iov[ch->iovcnt].iov_len = len;
        ch->iovcnt++;
    }
}

static void channel_account(struct channel *ch, size_t len)
{
    ch->write_pos += len;
    ch->window_used += len;
}

/* Copy (data, len) into the buffer; with (crc), fold the copy into it. */
static void channel_copy_in(struct channel *ch, const void *data, size_t len, uint32_t *crc)
{
    const uint8_t *src = data;

    while (len && !channel_has_error(ch)) {
        uint8_t *dst = ch->wbuf + ch->wbuf_used;
        size_t n;

        if (ch->wbuf_used == CHANNEL_BUF_SIZE ||
            (ch->iovcnt == CHANNEL_IOV_MAX && !channel_can_merge(ch, dst))) {
            channel_flush_pending(ch);
            continue;
        }
        n = MIN(len, CHANNEL_BUF_SIZE - ch->wbuf_used);
        memcpy(dst, src, n);
        if (crc)
            *crc = tern_crc32(*crc, dst, n);
        channel_add_iov(ch, dst, n);
        ch->wbuf_used += n;
        channel_account(ch, n);
        src += n;
        len -= n;
    }
}

void channel_put_bytes(struct channel *ch, const void *data, size_t len)
{
    channel_copy_in(ch, data, len, NULL);
}

void channel_put_bytes_crc(struct channel *ch, const void *data, size_t len, uint32_t *crc)
{
    channel_copy_in(ch, data, len, crc);
}

void channel_put_u8(struct channel *ch, uint8_t v)
{
    channel_copy_in(ch, &v, 1, NULL);
}

void channel_put_le16(struct channel *ch, uint16_t v)
{
    uint8_t b[2];

    mig_store_le16(b, v);
    channel_copy_in(ch, b, sizeof(b), NULL);
}

void channel_put_le32(struct channel *ch, uint32_t v)
{
    uint8_t b[4];

    mig_store_le32(b, v);
    channel_copy_in(ch, b, sizeof(b), NULL);
}

void channel_put_le64(struct channel *ch, uint64_t v)
{
    uint8_t b[8];

    mig_store_le64(b, v);
    channel_copy_in(ch, b, sizeof(b), NULL);
}

void channel_put_buffer_ref(struct channel *ch, const void *data, size_t len)
{
    if (!len || channel_has_error(ch))
        return;
    if (ch->iovcnt == CHANNEL_IOV_MAX && !channel_can_merge(ch, data))
        channel_flush_pending(ch);
    if (channel_has_error(ch))
        return;
    channel_add_iov(ch, data, len);
    channel_account(ch, len);
}

bool channel_flush(struct channel *ch, GError **errp)
{
    channel_flush_pending(ch);
    return channel_check(ch, errp);
}

uint64_t channel_write_pos(struct channel *ch)
{
    return ch->write_pos;
}

uint64_t channel_bytes_written(struct channel *ch)
{
    return ch->written;
}

/* ---- Positional writes ---- */

static bool channel_refuse_positional(struct channel *ch, const char *what, GError **errp)
{
    channel_set_errorf(ch, TERN_ERROR_FAILED,
                       "%s: %s channel %s cannot do positional writes "
                       "(not a file)",
                       what, ch->ops->kind, ch->name);
    return channel_check(ch, errp);
}

bool channel_write_at(struct channel *ch, uint64_t offset, const void *buf, size_t len,
                      GError **errp)
{
    if (!channel_check(ch, errp))
        return false;
    if (!ch->ops->write_at)
        return channel_refuse_positional(ch, "positional write", errp);
    if (!ch->ops->write_at(ch->opaque, offset, buf, len, errp))
        return false;
    /* Counted once accepted, like a stream piece handed to writev: the one
     * byte count that query-migrate and the rate limit see. */
    ch->written += len;
    ch->window_used += len;
    return true;
}

bool channel_drain(struct channel *ch, GError **errp)
{
    if (!ch->ops->drain)
        return channel_refuse_positional(ch, "drain", errp);
    return ch->ops->drain(ch->opaque, errp);
}

/* ---- Rate limiting ---- */

static int64_t channel_now(struct channel *ch)
{
    return ch->clock ? ch->clock->now_us(ch->clock->opaque) : g_get_monotonic_time();
}

void channel_set_clock(struct channel *ch, const struct channel_clock *clock)
{
    ch->clock = clock;
    ch->window_start_us = channel_now(ch);
    ch->window_used = 0;
}

void channel_set_rate_limit(struct channel *ch, uint64_t bytes_per_sec)
{
    ch->rate_limit = bytes_per_sec;
    ch->window_start_us = channel_now(ch);
    ch->window_used = 0;
}

uint64_t channel_get_rate_limit(struct channel *ch)
{
    return ch->rate_limit;
}

static uint64_t channel_window_budget(struct channel *ch)
{
    uint64_t budget = ch->rate_limit / (G_USEC_PER_SEC / RATE_WINDOW_US);

    return budget ? budget : 1;
}

bool channel_rate_limit_exceeded(struct channel *ch)
{
    int64_t now;

    if (!ch->rate_limit)
        return false;
    now = channel_now(ch);
    if (now - ch->window_start_us >= RATE_WINDOW_US) {
        /* Carry an overshoot into the new window so the average holds. */
        uint64_t budget = channel_window_budget(ch);

        ch->window_used = ch->window_used > budget ? ch->window_used - budget : 0;
        ch->window_start_us = now;
    }
    return ch->window_used >= channel_window_budget(ch);
}

uint64_t channel_rate_limit_wait(struct channel *ch)
{
    int64_t start;

    if (!channel_rate_limit_exceeded(ch))
        return 0;
    start = channel_now(ch);
    while (channel_rate_limit_exceeded(ch) && !channel_has_error(ch)) {
        int64_t end = ch->window_start_us + RATE_WINDOW_US;

        if (ch->clock) {
            ch->clock->sleep_until(ch->clock->opaque, end);
            continue;
        }
        g_mutex_lock(&ch->lock);
        while (!ch->err && g_get_monotonic_time() < end) {
            if (!g_cond_wait_until(&ch->cond, &ch->lock, end))
                break;
        }
        g_mutex_unlock(&ch->lock);
    }
    return (uint64_t)(channel_now(ch) - start) * 1000;
}

/* ---- Reading ---- */

/* Read what the backend has into rbuf (after compacting it). Returns false at
 * end of stream (sets ch->eof) or on error (sets the channel error). */
static bool channel_fill(struct channel *ch)
{
    ssize_t n;

    if (channel_has_error(ch) || ch->eof)
        return false;
    if (!ch->ops->read) {
        channel_set_errorf(ch, TERN_ERROR_FAILED, "%s: channel is not readable", ch->name);
        return false;
    }
    if (ch->rpos) {
        memmove(ch->rbuf, ch->rbuf + ch->rpos, ch->rlen - ch->rpos);
        ch->rlen -= ch->rpos;
        ch->rpos = 0;
    }
    do {
        n = ch->ops->read(ch->opaque, ch->rbuf + ch->rlen, CHANNEL_BUF_SIZE - ch->rlen);
    } while (n == -EINTR);
    if (channel_has_error(ch))
        return false; /* shut down meanwhile */
    if (n < 0) {
        channel_set_errorf(ch, TERN_ERROR_FAILED, "read from %s failed: %s", ch->name,
                           g_strerror((int)-n));
        return false;
    }
    if (n == 0) {
        ch->eof = true;
        return false;
    }
    ch->rlen += (size_t)n;
    return true;
}

static void channel_set_eof_error(struct channel *ch)
{
    channel_set_errorf(ch, TERN_ERROR_INVALID, "unexpected end of stream on %s", ch->name);
}

size_t channel_get_bytes(struct channel *ch, void *buf, size_t len)
{
    uint8_t *dst = buf;
    size_t done = 0;

    while (done < len && !channel_has_error(ch)) {
        size_t avail = ch->rlen - ch->rpos;

        if (avail) {
            size_t n = MIN(avail, len - done);

            memcpy(dst + done, ch->rbuf + ch->rpos, n);
            ch->rpos += n;
            done += n;
        } else if (len - done >= CHANNEL_BUF_SIZE && ch->ops->read && !ch->eof) {
            /* Large read: straight into the caller's buffer. */
            ssize_t n = ch->ops->read(ch->opaque, dst + done, len - done);

            if (n == -EINTR || channel_has_error(ch))
                continue;
            if (n < 0) {
                channel_set_errorf(ch, TERN_ERROR_FAILED, "read from %s failed: %s", ch->name,
                                   g_strerror((int)-n));
            } else if (n == 0) {
                ch->eof = true;
            } else {
                done += (size_t)n;
            }
        } else if (!channel_fill(ch) && !channel_has_error(ch)) {
            channel_set_eof_error(ch);
        }
    }
    if (done < len) {
        memset(dst + done, 0, len - done);
        if (!channel_has_error(ch))
            channel_set_eof_error(ch);
    }
    ch->read_pos += done;
    return done;
}

uint8_t channel_get_u8(struct channel *ch)
{
    uint8_t v = 0;

    channel_get_bytes(ch, &v, 1);
    return v;
}

uint16_t channel_get_le16(struct channel *ch)
{
    uint8_t b[2];

    channel_get_bytes(ch, b, sizeof(b));
    return mig_load_le16(b);
}

uint32_t channel_get_le32(struct channel *ch)
{
    uint8_t b[4];

    channel_get_bytes(ch, b, sizeof(b));
    return mig_load_le32(b);
}

uint64_t channel_get_le64(struct channel *ch)
{
    uint8_t b[8];

    channel_get_bytes(ch, b, sizeof(b));
    return mig_load_le64(b);
}

bool channel_read_exact(struct channel *ch, void *buf, size_t len, GError **errp)
{
    channel_get_bytes(ch, buf, len);
    return channel_check(ch, errp);
}

size_t channel_peek(struct channel *ch, void *buf, size_t len)
{
    size_t n;

    len = MIN(len, (size_t)CHANNEL_BUF_SIZE);
    while (ch->rlen - ch->rpos < len && channel_fill(ch))
        ;
    if (channel_has_error(ch))
        return 0;
    n = MIN(len, ch->rlen - ch->rpos);
    memcpy(buf, ch->rbuf + ch->rpos, n);
    return n;
}

size_t channel_skip(struct channel *ch, size_t len)
{
    size_t done = 0;

    while (done < len && !channel_has_error(ch)) {
        size_t avail = ch->rlen - ch->rpos;

        if (avail) {
            size_t n = MIN(avail, len - done);

            ch->rpos += n;
            done += n;
        } else if (!channel_fill(ch) && !channel_has_error(ch)) {
            channel_set_eof_error(ch);
        }
    }
    ch->read_pos += done;
    return done;
}

bool channel_at_eof(struct channel *ch)
{
    if (channel_has_error(ch) || ch->rpos < ch->rlen)
        return false;
    if (!ch->eof)
        channel_fill(ch);
    return !channel_has_error(ch) && ch->rpos == ch->rlen && ch->eof;
}

void channel_discard_read_ahead(struct channel *ch)
{
    ch->rpos = 0;
    ch->rlen = 0;
    ch->eof = false;
}

void channel_set_pos(struct channel *ch, uint64_t pos)
{
    ch->read_pos = pos;
    ch->write_pos = pos;
}

uint64_t channel_read_pos(struct channel *ch)
{
    return ch->read_pos;
}

void channel_linger(struct channel *ch, unsigned timeout_ms)
{
    if (ch->ops->linger)
        ch->ops->linger(ch->opaque, timeout_ms);
}

struct channel *channel_return_path(struct channel *ch, GError **errp)
{
    if (!ch->ops->return_path) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s channel %s has no return path",
                    ch->ops->kind, ch->name);
        return NULL;
    }
    return ch->ops->return_path(ch->opaque, errp);
}

bool channel_send_fds(struct channel *ch, const int *fds, unsigned nfds, GError **errp)
{
    if (!channel_flush(ch, errp))
        return false;
    if (!ch->ops->send_fds) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "%s channel %s cannot pass file descriptors (a unix: socket can)",
                    ch->ops->kind, ch->name);
        return false;
    }
    return ch->ops->send_fds(ch->opaque, fds, nfds, errp);
}

unsigned channel_take_fds(struct channel *ch, int *fds, unsigned max)
{
    return ch->ops->take_fds ? ch->ops->take_fds(ch->opaque, fds, max) : 0;
}
