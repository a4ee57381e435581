/* channel-file.c: the file channel backend: checkpoints through libaio + O_DIRECT (buffered fallback), positional page I/O, atomic commit. */
#include "tern/channel-file.h"
#include "tern/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libaio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define ALIGN CHANNEL_FILE_ALIGN
#define QDEPTH CHANNEL_FILE_QUEUE_DEPTH
#define SEQ_BUF_SIZE (1u << 20)                     /* sequential bounce buffer */
#define SLOT_IOV_MAX (CHANNEL_FILE_RUN_MAX / ALIGN) /* pieces of one merged run */
#define READ_CHUNK (256u << 10)                     /* one positional read request */

/* One request: a run of positional writes (or one chunk of a positional read). */
struct file_slot {
    struct iocb iocb;
    uint64_t offset;
    size_t len;
    int iovcnt;
    struct iovec iov[SLOT_IOV_MAX];
};

struct file_backend {
    struct channel *ch;
    char *path;     /* the checkpoint's final name */
    char *tmp_path; /* writing: the temporary file, until commit or removal */
    bool writing;
    bool committed;
    bool direct; /* dfd is O_DIRECT */
    bool merge;  /* merge adjacent positional writes */
    int dfd;     /* O_DIRECT descriptor, or -1 */
    int bfd;     /* buffered descriptor of the same file */

    /* Sequential writes: sbuf[seq_start, seq_end) belongs at file offset
     * seq_base + seq_start; seq_base is block aligned, and so is sbuf. */
    uint8_t *sbuf;
    uint64_t seq_base;
    size_t seq_start;
    size_t seq_end;
    /* Sequential reads: the next offset. */
    uint64_t rpos;

    /* Asynchronous requests (only with O_DIRECT). */
    io_context_t ctx;
    bool have_ctx;
    struct file_slot *slots;
    struct file_slot *free_slots[QDEPTH];
    int nfree;
    int inflight;
    bool aio_broken;            /* io_getevents() failed: stop waiting */
    struct file_slot *open_run; /* positional writes being merged, not yet submitted */
    uint64_t requests;
    uint64_t blocks;
    bool buffered_pending; /* small runs written through the page cache since the last drain */
};

static const struct channel_ops file_ops;

/* ---- Helpers ---- */

static void remove_tmp(struct file_backend *fb)
{
    if (fb->tmp_path) {
        unlink(fb->tmp_path);
        g_clear_pointer(&fb->tmp_path, g_free);
    }
}

/* Fail the channel with "(path): (message)", remove an uncommitted temporary
 * file, and return false with the channel's (first) error in (errp). */
static bool fb_fail(struct file_backend *fb, GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static bool fb_fail(struct file_backend *fb, GError **errp, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    channel_set_errorf(fb->ch, TERN_ERROR_FAILED, "%s: %s", fb->path, msg);
    g_free(msg);
    if (fb->writing && !fb->committed)
        remove_tmp(fb);
    return channel_check(fb->ch, errp);
}

/* The backend of file channel (ch), or NULL with (errp) if (ch) is another kind. */
static struct file_backend *file_of(struct channel *ch, const char *what, GError **errp)
{
    if (channel_get_ops(ch) != &file_ops) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: %s channel %s is not a file", what,
                    channel_get_ops(ch)->kind, channel_name(ch));
        return NULL;
    }
    return channel_opaque(ch);
}

/* The descriptor for block-aligned data. */
static int aligned_fd(struct file_backend *fb)
{
    return fb->direct ? fb->dfd : fb->bfd;
}

/* Write (iov, iovcnt) (total (len) bytes) at (off) on (fd), looping over
 * partial writes and EINTR. Returns 0 or an errno; *done gets the bytes
 * written. A write that makes no progress is EIO. (iov) is consumed. */
static int pwritev_all(int fd, struct iovec *iov, int iovcnt, uint64_t off, size_t len,
                       size_t *done)
{
    *done = 0;
    while (*done < len) {
        ssize_t n = pwritev(fd, iov, MIN(iovcnt, IOV_MAX), (off_t)(off + *done));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        *done += (size_t)n;
        iov_consume(&iov, &iovcnt, (size_t)n);
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off, size_t *done)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return pwritev_all(fd, &iov, 1, off, len, done);
}

/* Write (len) bytes of (buf) at (off). With O_DIRECT, (buf) has the same
 * misalignment as (off): the whole blocks go direct, the partial first and
 * last blocks through the page cache (which the kernel keeps coherent). */
static bool write_range(struct file_backend *fb, uint64_t off, const uint8_t *buf, size_t len,
                        GError **errp)
{
    while (len) {
        size_t n = len, done;
        int fd = fb->bfd, err;

        if (fb->direct && off % ALIGN) {
            n = MIN(len, ALIGN - off % ALIGN);
        } else if (fb->direct && len >= ALIGN) {
            n = ALIGN_DOWN(len, (size_t)ALIGN);
            fd = fb->dfd;
        }
        err = pwrite_all(fd, buf, n, off, &done);
        if (err)
            return fb_fail(fb, errp, "write of %zu bytes at offset %" PRIu64 " failed: %s",
                           n - done, off + done, g_strerror(err));
        off += n;
        buf += n;
        len -= n;
    }
    return true;
}

/* Write the sequential buffer out and continue right after it. */
static bool seq_flush(struct file_backend *fb, GError **errp)
{
    uint64_t next = fb->seq_base + fb->seq_end;

    if (fb->seq_end > fb->seq_start &&
        !write_range(fb, fb->seq_base + fb->seq_start, fb->sbuf + fb->seq_start,
                     fb->seq_end - fb->seq_start, errp))
        return false;
    fb->seq_base = ALIGN_DOWN(next, (uint64_t)ALIGN);
    fb->seq_start = fb->seq_end = (size_t)(next - fb->seq_base);
    return true;
}

/* ---- Asynchronous requests ---- */

static void put_slot(struct file_backend *fb, struct file_slot *s)
{
    fb->free_slots[fb->nfree++] = s;
}

/* Finish a write request that completed short after (done) bytes: write the
 * rest synchronously, which either completes it or tells why it stopped. */
static int finish_short_write(struct file_backend *fb, struct file_slot *s, size_t done)
{
    struct iovec iov[SLOT_IOV_MAX];
    size_t skip = done, more;
    int cnt = 0;

    for (int i = 0; i < s->iovcnt; i++) {
        if (skip >= s->iov[i].iov_len) {
            skip -= s->iov[i].iov_len;
            continue;
        }
        iov[cnt].iov_base = (uint8_t *)s->iov[i].iov_base + skip;
        iov[cnt].iov_len = s->iov[i].iov_len - skip;
        skip = 0;
        cnt++;
    }
    return pwritev_all(done % ALIGN ? fb->bfd : aligned_fd(fb), iov, cnt, s->offset + done,
                       s->len - done, &more);
}

/* Reap at least (min_nr) completed requests. Every completion is accounted
 * for even after an error; returns false if one failed (channel error set). */
static bool reap(struct file_backend *fb, int min_nr, GError **errp)
{
    struct io_event events[QDEPTH];
    bool ok = true;
    int n;

    do {
        n = io_getevents(fb->ctx, min_nr, QDEPTH, events, NULL);
    } while (n == -EINTR);
    if (n < 0) {
        fb->aio_broken = true;
        return fb_fail(fb, errp, "waiting for I/O failed: %s", g_strerror(-n));
    }
    for (int i = 0; i < n; i++) {
        struct file_slot *s = events[i].data;
        long res = (long)events[i].res;
        bool write = s->iocb.aio_lio_opcode == IO_CMD_PWRITE ||
                     s->iocb.aio_lio_opcode == IO_CMD_PWRITEV;
        int err = 0;

        fb->inflight--;
        if (res >= 0 && (size_t)res == s->len) {
            put_slot(fb, s);
            continue;
        }
        if (res < 0)
            err = (int)-res;
        else if (write)
            err = finish_short_write(fb, s, (size_t)res);
        if (err) {
            ok = fb_fail(fb, errp, "%s of %zu bytes at offset %" PRIu64 " failed: %s",
                         write ? "write" : "read", s->len, s->offset, g_strerror(err));
        } else if (!write) {
            ok = fb_fail(fb, errp,
                         "short read at offset %" PRIu64 ": the file ends there "
                         "(reading %zu bytes at offset %" PRIu64 ", file size %" PRIu64 ")",
                         s->offset + (uint64_t)res, s->len, s->offset, channel_file_size(fb->ch));
        }
        put_slot(fb, s);
    }
    return ok;
}

/* A free request slot, reaping completions while the queue is full. */
static struct file_slot *get_slot(struct file_backend *fb, GError **errp)
{
    if (!fb->nfree && !reap(fb, 1, errp))
        return NULL;
    return fb->free_slots[--fb->nfree];
}

/* Submit prepared slot (s). Returns false with the channel error set. */
static bool submit(struct file_backend *fb, struct file_slot *s, GError **errp)
{
    struct iocb *p = &s->iocb;

    s->iocb.data = s;
    for (;;) {
        int rc = io_submit(fb->ctx, 1, &p);

        if (rc == 1)
            break;
        if (rc == -EINTR)
            continue;
        if (rc == -EAGAIN && fb->inflight) {
            if (!reap(fb, 1, errp)) {
                put_slot(fb, s);
                return false;
            }
            continue;
        }
        put_slot(fb, s);
        return fb_fail(fb, errp, "submitting I/O of %zu bytes at offset %" PRIu64 " failed: %s",
                       s->len, s->offset, g_strerror(rc < 0 ? -rc : EIO));
    }
    fb->inflight++;
    return true;
}

/* Send the run being merged: asynchronously with libaio, else synchronously. */
static bool submit_run(struct file_backend *fb, GError **errp)
{
    struct file_slot *s = fb->open_run;

    if (!s)
        return true;
    fb->open_run = NULL;
    fb->requests++;
    fb->blocks += s->len / ALIGN;
    if (!fb->have_ctx || s->len <= CHANNEL_FILE_BUFFERED_MAX) {
        /* Small runs (a later pass's scattered pages) through the page cache:
         * a copy now, merged writeback later, fsynced by the commit. */
        bool buffered = s->len <= CHANNEL_FILE_BUFFERED_MAX;
        size_t done;
        int err = pwritev_all(buffered ? fb->bfd : aligned_fd(fb), s->iov, s->iovcnt, s->offset,
                              s->len, &done);

        fb->buffered_pending |= buffered;

        put_slot(fb, s);
        if (err)
            return fb_fail(fb, errp, "write of %zu bytes at offset %" PRIu64 " failed: %s", s->len,
                           s->offset, g_strerror(err));
        return true;
    }
    if (s->iovcnt == 1)
        io_prep_pwrite(&s->iocb, fb->dfd, s->iov[0].iov_base, s->len, (long long)s->offset);
    else
        io_prep_pwritev(&s->iocb, fb->dfd, s->iov, s->iovcnt, (long long)s->offset);
    return submit(fb, s, errp);
}

/* Wait for every request in flight. */
static bool wait_all(struct file_backend *fb, GError **errp)
{
    bool ok = true;

    while (fb->inflight && !fb->aio_broken)
        if (!reap(fb, fb->inflight, errp))
            ok = false;
    return ok;
}

/* ---- Channel ops ---- */

static ssize_t file_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct file_backend *fb = opaque;
    size_t total = 0;

    if (!fb->writing || fb->committed)
        return -EBADF;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *src = iov[i].iov_base;
        size_t len = iov[i].iov_len;

        while (len) {
            size_t n = MIN(len, SEQ_BUF_SIZE - fb->seq_end);

            memcpy(fb->sbuf + fb->seq_end, src, n);
            fb->seq_end += n;
            src += n;
            len -= n;
            total += n;
            if (fb->seq_end == SEQ_BUF_SIZE && !seq_flush(fb, NULL))
                return -EIO; /* the channel error, naming the cause, is set */
        }
    }
    return (ssize_t)total;
}

static ssize_t file_read(void *opaque, void *buf, size_t len)
{
    struct file_backend *fb = opaque;
    ssize_t n;

    if (fb->writing)
        return -EBADF;
    do {
        n = pread(fb->bfd, buf, len, (off_t)fb->rpos);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int err = errno;

        fb_fail(fb, NULL, "read at offset %" PRIu64 " failed: %s", fb->rpos, g_strerror(err));
        return -err;
    }
    fb->rpos += (uint64_t)n;
    return n;
}

static void file_close(void *opaque)
{
    struct file_backend *fb = opaque;

    if (fb->open_run) {
        put_slot(fb, fb->open_run); /* never submitted: nothing to wait for */
        fb->open_run = NULL;
    }
    /* Requests in flight read from or write to caller memory: wait for them. */
    if (fb->have_ctx) {
        while (fb->inflight) {
            struct io_event events[QDEPTH];
            int n = io_getevents(fb->ctx, 1, QDEPTH, events, NULL);

            if (n < 0 && n != -EINTR)
                break;
            if (n > 0)
                fb->inflight -= n;
        }
        io_destroy(fb->ctx);
    }
    if (fb->writing && !fb->committed)
        remove_tmp(fb);
    if (fb->dfd >= 0)
        close(fb->dfd);
    if (fb->bfd >= 0)
        close(fb->bfd);
    free(fb->sbuf);
    free(fb->slots);
    g_free(fb->tmp_path);
    g_free(fb->path);
    g_free(fb);
}

static bool file_write_at(void *opaque, uint64_t offset, const void *page, size_t len,
                          GError **errp);
static bool file_drain(void *opaque, GError **errp);

static const struct channel_ops file_ops = {
    .kind = "file",
    .writev = file_writev,
    .read = file_read,
    .write_at = file_write_at,
    .drain = file_drain,
    .close = file_close,
};

/* ---- Setup ---- */

static bool direct_disabled(void)
{
    const char *v = g_getenv("TERN_FILE_NO_DIRECT");

    return v && *v && strcmp(v, "0") != 0;
}

static void note_buffered(const char *path)
{
    g_printerr("tern: %s: O_DIRECT not supported here, using buffered I/O\n", path);
}

/* Allocate the request slots and the libaio context (O_DIRECT only). Without
 * a context (e.g. aio-max-nr reached), positional I/O is synchronous. */
static bool setup_aio(struct file_backend *fb, GError **errp)
{
    int rc;

    if (posix_memalign((void **)&fb->slots, 64, QDEPTH * sizeof(*fb->slots))) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: out of memory", fb->path);
        return false;
    }
    memset(fb->slots, 0, QDEPTH * sizeof(*fb->slots));
    for (int i = QDEPTH - 1; i >= 0; i--)
        put_slot(fb, &fb->slots[i]);
    if (!fb->direct)
        return true;
    rc = io_setup(QDEPTH, &fb->ctx);
    if (rc < 0) {
        g_printerr("tern: %s: libaio unavailable (%s), using synchronous I/O\n", fb->path,
                   g_strerror(-rc));
        return true;
    }
    fb->have_ctx = true;
    return true;
}

static struct file_backend *backend_new(const char *path, bool writing)
{
    struct file_backend *fb = g_new0(struct file_backend, 1);

    fb->path = g_strdup(path);
    fb->writing = writing;
    fb->merge = true;
    fb->dfd = -1;
    fb->bfd = -1;
    return fb;
}

/* Probe O_DIRECT on (fd) with one aligned block at offset 0 (some
 * filesystems accept the open flag and refuse the I/O). Returns 0 or the errno. */
static int direct_probe(int fd, bool writing)
{
    void *blk;
    ssize_t n;

    if (posix_memalign(&blk, ALIGN, ALIGN))
        return ENOMEM;
    memset(blk, 0, ALIGN);
    n = writing ? pwrite(fd, blk, ALIGN, 0) : pread(fd, blk, ALIGN, 0);
    free(blk);
    return n < 0 ? errno : 0;
}

/* Open (path) again with O_DIRECT (and (flags)) as fb->dfd if the filesystem
 * takes it; else note the fallback. False with (errp) on another error. */
static bool open_direct(struct file_backend *fb, const char *path, int flags, GError **errp)
{
    int err;

    if (direct_disabled())
        return true;
    fb->dfd = open(path, flags | O_DIRECT | O_CLOEXEC);
    err = fb->dfd < 0 ? errno : direct_probe(fb->dfd, flags != O_RDONLY);
    if (!err) {
        fb->direct = true;
        return true;
    }
    if (fb->dfd >= 0)
        close(fb->dfd);
    fb->dfd = -1;
    if (err != EINVAL && err != EOPNOTSUPP) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot %s: %s", fb->path,
                    flags == O_RDONLY ? "read" : "write", g_strerror(err));
        return false;
    }
    note_buffered(fb->path);
    return true;
}

/* The O_DIRECT descriptor, opened by name, is the file mkostemp() created,
 * not one put in its place meanwhile. */
static bool same_file(struct file_backend *fb, GError **errp)
{
    struct stat a, b;

    if (fb->dfd < 0)
        return true;
    if (fstat(fb->bfd, &a) == 0 && fstat(fb->dfd, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return true;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: %s was replaced while being opened",
                fb->path, fb->tmp_path ? fb->tmp_path : fb->path);
    return false;
}

struct channel *channel_file_create(const char *path, GError **errp)
{
    struct file_backend *fb;
    struct channel *ch;

    if (!*path) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "checkpoint: empty file name");
        return NULL;
    }
    /* A symlink in (path)'s place is refused rather than replaced: the
     * user meant the file it points to, which a checkpoint never writes
     * through (rename() would swap the link itself for the file). */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "%s: is a symbolic link, which is not followed: name the file itself", path);
        return NULL;
    }
    fb = backend_new(path, true);
    fb->tmp_path = g_strdup_printf("%s.tmp-XXXXXX", path);
    /* mkostemp: O_EXCL (never an existing file or symlink), mode 0600 less
     * the umask; fchmod makes it exactly 0600: the guest's RAM is in it. */
    fb->bfd = mkostemp(fb->tmp_path, O_CLOEXEC);
    if (fb->bfd < 0 || fchmod(fb->bfd, 0600) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot create a file: %s", path,
                    g_strerror(errno));
        if (fb->bfd >= 0)
            remove_tmp(fb);
        g_clear_pointer(&fb->tmp_path, g_free);
        file_close(fb);
        return NULL;
    }
    if (!open_direct(fb, fb->tmp_path, O_WRONLY | O_NOFOLLOW, errp) || !same_file(fb, errp)) {
        file_close(fb);
        return NULL;
    }
    if (fb->direct && ftruncate(fb->bfd, 0) < 0) { /* drop the probe's block */
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: truncate: %s", path,
                    g_strerror(errno));
        file_close(fb);
        return NULL;
    }
    if (posix_memalign((void **)&fb->sbuf, ALIGN, SEQ_BUF_SIZE)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: out of memory", path);
        file_close(fb);
        return NULL;
    }
    if (!setup_aio(fb, errp)) {
        file_close(fb);
        return NULL;
    }
    ch = channel_new(&file_ops, fb, path);
    fb->ch = ch;
    return ch;
}

struct channel *channel_file_open(const char *path, GError **errp)
{
    struct file_backend *fb = backend_new(path, false);
    struct channel *ch;
    struct stat st;

    /* O_NONBLOCK: a FIFO at (path) must not block the main loop in open(). */
    fb->bfd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fb->bfd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot open: %s", path,
                    g_strerror(errno));
        file_close(fb);
        return NULL;
    }
    if (fstat(fb->bfd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "%s: not a regular file", path);
        file_close(fb);
        return NULL;
    }
    fcntl(fb->bfd, F_SETFL, fcntl(fb->bfd, F_GETFL) & ~O_NONBLOCK);
    /* The O_DIRECT descriptor reopens the path: it must be the file checked. */
    if (!open_direct(fb, path, O_RDONLY, errp) || !same_file(fb, errp) || !setup_aio(fb, errp)) {
        file_close(fb);
        return NULL;
    }
    ch = channel_new(&file_ops, fb, path);
    fb->ch = ch;
    return ch;
}

/* ---- Positional writes ---- */

/* channel_write_at(), which checked the channel error and counts the bytes. */
static bool file_write_at(void *opaque, uint64_t offset, const void *page, size_t len,
                          GError **errp)
{
    struct file_backend *fb = opaque;
    struct file_slot *s;

    if (!fb->writing || fb->committed)
        return fb_fail(fb, errp, "positional write on a channel that is not writing");
    if (!len || len % ALIGN || offset % ALIGN)
        return fb_fail(fb, errp,
                       "positional write of %zu bytes at offset %" PRIu64 " is not %u-byte aligned",
                       len, offset, ALIGN);
    if (fb->direct && (uintptr_t)page % ALIGN) {
        /* Not usable by O_DIRECT: through the page cache, at once. */
        size_t done;
        int err;

        if (!submit_run(fb, errp))
            return false;
        err = pwrite_all(fb->bfd, page, len, offset, &done);
        if (err)
            return fb_fail(fb, errp, "write of %zu bytes at offset %" PRIu64 " failed: %s",
                           len - done, offset + done, g_strerror(err));
        return true;
    }
    s = fb->open_run;
    if (s && fb->merge && offset == s->offset + s->len && s->len + len <= CHANNEL_FILE_RUN_MAX) {
        struct iovec *last = &s->iov[s->iovcnt - 1];

        if ((const uint8_t *)last->iov_base + last->iov_len == (const uint8_t *)page) {
            last->iov_len += len;
            s->len += len;
            return true;
        }
        if (s->iovcnt < (int)SLOT_IOV_MAX) {
            s->iov[s->iovcnt].iov_base = (void *)page;
            s->iov[s->iovcnt].iov_len = len;
            s->iovcnt++;
            s->len += len;
            return true;
        }
    }
    if (!submit_run(fb, errp))
        return false;
    s = get_slot(fb, errp);
    if (!s)
        return false;
    s->offset = offset;
    s->len = len;
    s->iov[0].iov_base = (void *)page;
    s->iov[0].iov_len = len;
    s->iovcnt = 1;
    fb->open_run = s;
    if (!fb->merge)
        return submit_run(fb, errp);
    return true;
}

/* channel_drain(). */
static bool file_drain(void *opaque, GError **errp)
{
    struct file_backend *fb = opaque;
    struct channel *ch = fb->ch;
    bool ok;

    ok = channel_has_error(ch) ? true : submit_run(fb, errp);
    if (fb->open_run) {
        put_slot(fb, fb->open_run);
        fb->open_run = NULL;
    }
    if (fb->have_ctx && !wait_all(fb, errp))
        ok = false;
    if (fb->buffered_pending) {
        /* Start their writeback now, so the commit's fsync waits less. */
        sync_file_range(fb->bfd, 0, 0, SYNC_FILE_RANGE_WRITE);
        fb->buffered_pending = false;
    }
    return ok && channel_check(ch, errp);
}

/* ---- Positional reads ---- */

/* Read (len) bytes at (offset) through the page cache. */
static bool read_buffered(struct file_backend *fb, uint64_t offset, uint8_t *buf, size_t len,
                          GError **errp)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fb->bfd, buf + done, len - done, (off_t)(offset + done));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fb_fail(fb, errp, "read of %zu bytes at offset %" PRIu64 " failed: %s",
                           len - done, offset + done, g_strerror(errno));
        if (n == 0)
            return fb_fail(fb, errp,
                           "short read at offset %" PRIu64 ": the file ends there "
                           "(reading %zu bytes at offset %" PRIu64 ", file size %" PRIu64 ")",
                           offset + done, len, offset, channel_file_size(fb->ch));
        done += (size_t)n;
    }
    return true;
}

bool channel_file_read_at(struct channel *ch, uint64_t offset, void *buf, size_t len, GError **errp)
{
    struct file_backend *fb = file_of(ch, "positional read", errp);
    uint8_t *dst = buf;
    size_t done = 0;
    bool ok = true;

    if (!fb)
        return false;
    if (!channel_check(ch, errp))
        return false;
    if (!fb->have_ctx || offset % ALIGN || len % ALIGN || (uintptr_t)buf % ALIGN)
        return read_buffered(fb, offset, dst, len, errp);
    /* O_DIRECT: chunks with several in flight. */
    while (ok && done < len) {
        struct file_slot *s = get_slot(fb, errp);

        if (!s) {
            ok = false;
            break;
        }
        s->offset = offset + done;
        s->len = MIN(len - done, (size_t)READ_CHUNK);
        s->iovcnt = 1;
        io_prep_pread(&s->iocb, fb->dfd, dst + done, s->len, (long long)s->offset);
        ok = submit(fb, s, errp);
        done += s->len;
    }
    if (!wait_all(fb, errp))
        ok = false;
    return ok && channel_check(ch, errp);
}

/* ---- Read-ahead batches (restore) ---- */

/* One batch shared by its threads. */
struct read_batch {
    struct file_backend *fb;
    const struct channel_file_read *reqs;
    size_t nreqs;
    channel_file_read_done_fn done;
    void *opaque;
    size_t bounce_len; /* the largest request without a buffer: each thread's bounce size */
    size_t next;       /* the next request to claim (atomic) */
    int stop;          /* a request failed: claim no more (atomic) */
    GMutex lock;       /* guards the three below */
    GError *err;       /* the failure of the first failed request */
    size_t err_index;
    bool err_io; /* (err) is a read error: it fails the channel */
};

/* Record the failure (err) of request (index), keeping the first in order. */
static void batch_fail(struct read_batch *b, size_t index, GError *err, bool io)
{
    g_mutex_lock(&b->lock);
    if (!b->err || index < b->err_index) {
        if (b->err)
            g_error_free(b->err);
        b->err = err;
        b->err_index = index;
        b->err_io = io;
    } else {
        g_error_free(err);
    }
    g_mutex_unlock(&b->lock);
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
}

static bool batch_claim(struct read_batch *b, size_t *index)
{
    if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
        return false;
    *index = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
    return *index < b->nreqs;
}

/* Read request (index) from byte (done) on through the page cache: all of an
 * unaligned request, or the rest of a short O_DIRECT read (the end of the
 * file, or a filesystem's partial read), which also tells which it was. */
static bool batch_read_rest(struct read_batch *b, size_t index, uint8_t *dst, size_t done)
{
    const struct channel_file_read *r = &b->reqs[index];
    struct file_backend *fb = b->fb;

    while (done < r->len) {
        ssize_t n = pread(fb->bfd, dst + done, r->len - done, (off_t)(r->offset + done));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            batch_fail(b, index,
                       g_error_new(TERN_ERROR, TERN_ERROR_FAILED,
                                   "read of %zu bytes at offset %" PRIu64 " failed: %s",
                                   r->len - done, r->offset + done, g_strerror(errno)),
                       true);
            return false;
        }
        if (n == 0) {
            batch_fail(b, index,
                       g_error_new(TERN_ERROR, TERN_ERROR_FAILED,
                                   "short read at offset %" PRIu64 ": the file ends there "
                                   "(reading %zu bytes at offset %" PRIu64 ", file size %" PRIu64
                                   ")",
                                   r->offset + done, r->len, r->offset, channel_file_size(fb->ch)),
                       true);
            return false;
        }
        done += (size_t)n;
    }
    return true;
}

/* Request (index) landed: hand it to the callback, unless the batch stopped. */
static void batch_landed(struct read_batch *b, size_t index, const uint8_t *data)
{
    GError *err = NULL;

    if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
        return;
    if (!b->done(b->opaque, index, data, &err))
        batch_fail(b, index,
                   err ? err
                       : g_error_new(TERN_ERROR, TERN_ERROR_FAILED, "request %zu failed", index),
                   false);
}

static bool batch_aligned(const struct channel_file_read *r, const uint8_t *dst)
{
    return r->offset % ALIGN == 0 && r->len % ALIGN == 0 && (uintptr_t)dst % ALIGN == 0;
}

/* Submit (iocb) for request (index); false if the kernel refused it. */
static bool batch_submit(io_context_t ctx, struct iocb *iocb)
{
    int rc;

    do {
        rc = io_submit(ctx, 1, &iocb);
    } while (rc == -EINTR);
    return rc == 1;
}

/* One thread's share: claim requests, keep up to CHANNEL_FILE_READ_DEPTH in
 * flight, hand each to the callback as it lands; wait for its own reads
 * before returning. Slot i is iocbs[i] and, for requests without a buffer,
 * bounce + i * bounce_len. */
static void batch_run(struct read_batch *b)
{
    struct iocb iocbs[CHANNEL_FILE_READ_DEPTH];
    int free_slots[CHANNEL_FILE_READ_DEPTH];
    struct io_event events[CHANNEL_FILE_READ_DEPTH];
    struct file_backend *fb = b->fb;
    io_context_t ctx = 0;
    uint8_t *bounce = NULL;
    int nfree = 0, inflight = 0;
    bool aio = fb->direct && io_setup(CHANNEL_FILE_READ_DEPTH, &ctx) == 0;
    size_t index;

    if (b->bounce_len &&
        posix_memalign((void **)&bounce, ALIGN, CHANNEL_FILE_READ_DEPTH * b->bounce_len)) {
        batch_fail(b, 0, g_error_new(TERN_ERROR, TERN_ERROR_FAILED, "out of memory"), true);
        bounce = NULL;
    }
    for (int i = CHANNEL_FILE_READ_DEPTH - 1; i >= 0; i--)
        free_slots[nfree++] = i;
    for (;;) {
        while (inflight < CHANNEL_FILE_READ_DEPTH && batch_claim(b, &index)) {
            const struct channel_file_read *r = &b->reqs[index];
            int slot = free_slots[--nfree];
            uint8_t *dst = r->buf ? r->buf : bounce + (size_t)slot * b->bounce_len;
            struct iocb *iocb = &iocbs[slot];

            if (aio && batch_aligned(r, dst)) {
                io_prep_pread(iocb, fb->dfd, dst, r->len, (long long)r->offset);
                iocb->data = (void *)(uintptr_t)index;
                if (batch_submit(ctx, iocb)) {
                    inflight++;
                    continue;
                }
            }
            /* Unaligned, no libaio, or refused (EAGAIN): synchronously. */
            if (batch_read_rest(b, index, dst, 0))
                batch_landed(b, index, dst);
            free_slots[nfree++] = slot;
        }
        if (!inflight)
            break;
        int n = io_getevents(ctx, 1, CHANNEL_FILE_READ_DEPTH, events, NULL);

        if (n == -EINTR)
            continue;
        if (n < 0) {
            /* Reads may still land in the buffers: nothing safe to do but stop. */
            batch_fail(b, b->nreqs,
                       g_error_new(TERN_ERROR, TERN_ERROR_FAILED, "waiting for I/O failed: %s",
                                   g_strerror(-n)),
                       true);
            return;
        }
        for (int i = 0; i < n; i++) {
            long res = (long)events[i].res;
            struct iocb *iocb = events[i].obj;
            uint8_t *dst = iocb->u.c.buf;

            index = (size_t)(uintptr_t)events[i].data;
            inflight--;
            if (res < 0) {
                const struct channel_file_read *r = &b->reqs[index];

                batch_fail(b, index,
                           g_error_new(TERN_ERROR, TERN_ERROR_FAILED,
                                       "read of %zu bytes at offset %" PRIu64 " failed: %s", r->len,
                                       r->offset, g_strerror((int)-res)),
                           true);
            } else if (batch_read_rest(b, index, dst, (size_t)res)) {
                batch_landed(b, index, dst);
            }
            free_slots[nfree++] = (int)(iocb - iocbs);
        }
    }
    if (aio)
        io_destroy(ctx);
    free(bounce);
}

static gpointer batch_thread(gpointer opaque)
{
    batch_run(opaque);
    return NULL;
}

/* Threads for a batch: (threads), or automatic for 0. */
static unsigned batch_threads(unsigned threads)
{
    if (!threads) {
        const char *v = g_getenv("TERN_FILE_READ_THREADS");

        threads = v && *v ? (unsigned)strtoul(v, NULL, 10) : (unsigned)g_get_num_processors();
    }
    return CLAMP(threads, 1u, (unsigned)CHANNEL_FILE_READ_THREADS_MAX);
}

bool channel_file_read_batch(struct channel *ch, const struct channel_file_read *reqs, size_t nreqs,
                             unsigned threads, channel_file_read_done_fn done, void *opaque,
                             GError **errp)
{
    struct file_backend *fb = file_of(ch, "positional read", errp);
    struct read_batch b = {
        .fb = fb, .reqs = reqs, .nreqs = nreqs, .done = done, .opaque = opaque
    };
    GThread *tids[CHANNEL_FILE_READ_THREADS_MAX];
    unsigned n = 0;
    bool ok = true;

    if (!fb || !channel_check(ch, errp))
        return false;
    if (fb->writing)
        return fb_fail(fb, errp, "positional read on a channel that is writing");
    for (size_t i = 0; i < nreqs; i++)
        if (!reqs[i].buf)
            b.bounce_len = MAX(b.bounce_len, ALIGN_UP(reqs[i].len, (size_t)ALIGN));
    threads = (unsigned)MIN((size_t)batch_threads(threads), MAX(nreqs, (size_t)1));
    g_mutex_init(&b.lock);
    /* The calling thread is one of them; without more threads it reads alone. */
    while (n + 1 < threads) {
        tids[n] = g_thread_try_new("file-read", batch_thread, &b, NULL);
        if (!tids[n])
            break;
        n++;
    }
    batch_run(&b);
    for (unsigned i = 0; i < n; i++)
        g_thread_join(tids[i]);
    g_mutex_clear(&b.lock);
    if (b.err && b.err_io) {
        ok = fb_fail(fb, errp, "%s", b.err->message);
        g_error_free(b.err);
    } else if (b.err) {
        g_propagate_error(errp, b.err);
        ok = false;
    }
    return ok;
}

/* ---- Both directions ---- */

bool channel_file_seek(struct channel *ch, uint64_t offset, GError **errp)
{
    struct file_backend *fb = file_of(ch, "seek", errp);

    if (!fb)
        return false;
    if (!fb->writing) {
        if (!channel_check(ch, errp))
            return false;
        channel_discard_read_ahead(ch);
        channel_set_pos(ch, offset);
        fb->rpos = offset;
        return true;
    }
    if (fb->committed)
        return fb_fail(fb, errp, "seek after commit");
    if (!channel_flush(ch, errp) || !seq_flush(fb, errp))
        return false;
    fb->seq_base = ALIGN_DOWN(offset, (uint64_t)ALIGN);
    fb->seq_start = fb->seq_end = (size_t)(offset - fb->seq_base);
    channel_set_pos(ch, offset);
    return true;
}

bool channel_file_commit(struct channel *ch, GError **errp)
{
    struct file_backend *fb = file_of(ch, "commit", errp);
    g_autofree char *dir = NULL;
    int dir_fd;

    if (!fb)
        return false;
    if (!fb->writing || fb->committed)
        return fb_fail(fb, errp, "commit of a channel that is not writing a checkpoint");
    if (!channel_flush(ch, errp) || !channel_drain(ch, errp) || !seq_flush(fb, errp)) {
        remove_tmp(fb);
        return false;
    }
    if (fsync(fb->bfd) < 0)
        return fb_fail(fb, errp, "fsync failed: %s", g_strerror(errno));
    /* The last moment to give up: a cancel that came meanwhile wins. */
    if (!channel_check(ch, errp)) {
        remove_tmp(fb);
        return false;
    }
    if (rename(fb->tmp_path, fb->path) < 0)
        return fb_fail(fb, errp, "cannot rename %s into place: %s", fb->tmp_path,
                       g_strerror(errno));
    fb->committed = true;
    g_clear_pointer(&fb->tmp_path, g_free);
    dir = g_path_get_dirname(fb->path);
    dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0 || fsync(dir_fd) < 0) {
        int err = errno;

        if (dir_fd >= 0)
            close(dir_fd);
        return fb_fail(fb, errp, "fsync of directory %s failed: %s", dir, g_strerror(err));
    }
    close(dir_fd);
    return true;
}

uint64_t channel_file_size(struct channel *ch)
{
    struct file_backend *fb = file_of(ch, "size", NULL);
    struct stat st;

    if (!fb || fstat(fb->bfd, &st) < 0)
        return 0;
    return (uint64_t)st.st_size;
}

bool channel_file_next_data(struct channel *ch, uint64_t from, uint64_t *start, uint64_t *end)
{
    struct file_backend *fb = file_of(ch, "next data", NULL);
    off_t data, hole;

    if (!fb)
        return false;
    data = lseek(fb->bfd, (off_t)from, SEEK_DATA);
    if (data < 0)
        return false; /* ENXIO: only a hole (or nothing) after (from) */
    hole = lseek(fb->bfd, data, SEEK_HOLE);
    if (hole < 0)
        hole = (off_t)channel_file_size(ch);
    if (hole <= data)
        return false;
    *start = (uint64_t)data;
    *end = (uint64_t)hole;
    return true;
}

bool channel_is_file(struct channel *ch)
{
    return channel_get_ops(ch) == &file_ops;
}

bool channel_file_is_direct(struct channel *ch)
{
    struct file_backend *fb = file_of(ch, "is direct", NULL);

    return fb && fb->direct;
}

const char *channel_file_tmp_path(struct channel *ch)
{
    struct file_backend *fb = file_of(ch, "temporary path", NULL);

    return fb ? fb->tmp_path : NULL;
}

void channel_file_set_merge(struct channel *ch, bool merge)
{
    struct file_backend *fb = file_of(ch, "merge", NULL);

    if (fb)
        fb->merge = merge;
}

void channel_file_get_stats(struct channel *ch, uint64_t *requests, uint64_t *blocks)
{
    struct file_backend *fb = file_of(ch, "stats", NULL);

    *requests = fb ? fb->requests : 0;
    *blocks = fb ? fb->blocks : 0;
}
