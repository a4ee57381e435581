/* channel-mem.c: the in-memory channel backend: reads from a buffer, writes append to a GByteArray. */
#include "tern/channel.h"
#include "tern/util.h"

#include <errno.h>
#include <string.h>

struct mem_backend {
    GByteArray *out;
    uint8_t *in;
    size_t in_len;
    size_t in_pos;
    size_t max_io; /* 0: no limit */
    gint shut;
};

static ssize_t mem_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct mem_backend *m = opaque;
    size_t limit = m->max_io ? m->max_io : SIZE_MAX;
    size_t done = 0;

    if (g_atomic_int_get(&m->shut))
        return -EPIPE;
    for (int i = 0; i < iovcnt && done < limit; i++) {
        size_t n = MIN(iov[i].iov_len, limit - done);

        g_byte_array_append(m->out, iov[i].iov_base, (guint)n);
        done += n;
    }
    return (ssize_t)done;
}

static ssize_t mem_read(void *opaque, void *buf, size_t len)
{
    struct mem_backend *m = opaque;
    size_t n = MIN(len, m->in_len - m->in_pos);

    if (g_atomic_int_get(&m->shut))
        return 0;
    if (m->max_io)
        n = MIN(n, m->max_io);
    if (!n)
        return 0;
    memcpy(buf, m->in + m->in_pos, n);
    m->in_pos += n;
    return (ssize_t)n;
}

static void mem_shutdown(void *opaque)
{
    struct mem_backend *m = opaque;

    g_atomic_int_set(&m->shut, 1);
}

static void mem_close(void *opaque)
{
    struct mem_backend *m = opaque;

    g_byte_array_unref(m->out);
    g_free(m->in);
    g_free(m);
}

static const struct channel_ops mem_ops = {
    .kind = "mem",
    .writev = mem_writev,
    .read = mem_read,
    .shutdown = mem_shutdown,
    .close = mem_close,
};

struct channel *channel_mem_new(const void *data, size_t len)
{
    struct mem_backend *m = g_new0(struct mem_backend, 1);

    m->out = g_byte_array_new();
    m->in = len ? g_memdup2(data, len) : NULL;
    m->in_len = len;
    return channel_new(&mem_ops, m, "memory");
}

const uint8_t *channel_mem_data(struct channel *ch, size_t *len)
{
    struct mem_backend *m = channel_opaque(ch);

    g_assert(channel_get_ops(ch) == &mem_ops);
    if (len)
        *len = m->out->len;
    return m->out->data;
}

void channel_mem_set_max_io(struct channel *ch, size_t max)
{
    struct mem_backend *m = channel_opaque(ch);

    g_assert(channel_get_ops(ch) == &mem_ops);
    m->max_io = max;
}
