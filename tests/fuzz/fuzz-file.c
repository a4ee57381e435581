/* fuzz-file.c: a fuzzer input as a file on tmpfs: raw, or a sparse file of extents (fuzz-file.h). */
#include "fuzz-file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/stream-format.h"

static void put_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);

        if (n <= 0)
            g_error("fuzz-file: pwrite: %s", g_strerror(errno));
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
}

void fuzz_file_write(int fd, const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) < 0)
        g_error("fuzz-file: ftruncate: %s", g_strerror(errno));
    if (size >= MIG_STREAM_MAGIC_LEN && !memcmp(data, MIG_STREAM_MAGIC, MIG_STREAM_MAGIC_LEN)) {
        put_all(fd, data, MIN(size, (size_t)FUZZ_FILE_MAX), 0);
        return;
    }
    while (size >= 8) {
        uint32_t off = mig_load_le32(data), len = mig_load_le32(data + 4);

        data += 8;
        size -= 8;
        len = (uint32_t)MIN((size_t)len, size);
        if (off < FUZZ_FILE_MAX && len <= FUZZ_FILE_MAX - off)
            put_all(fd, data, len, off);
        data += len;
        size -= len;
    }
}

static char *created;

static void remove_created(void)
{
    if (created)
        unlink(created);
}

char *fuzz_file_create(int *fd)
{
    char *path = g_strdup_printf("/dev/shm/tern-fuzz-%d-XXXXXX", (int)getpid());

    *fd = mkstemp(path);
    if (*fd < 0)
        g_error("fuzz-file: %s: %s", path, g_strerror(errno));
    created = g_strdup(path);
    atexit(remove_created);
    return path;
}

void fuzz_file_add_extent(GByteArray *out, uint32_t offset, const void *data, uint32_t len)
{
    uint8_t h[8];

    mig_store_le32(h, offset);
    mig_store_le32(h + 4, len);
    g_byte_array_append(out, h, sizeof(h));
    g_byte_array_append(out, data, len);
}
