/* fuzz-file.h: the file inputs of the checkpoint and dump harnesses: a raw
 * file, or a sparse file given as extents (fuzz-file.c). */
#ifndef TERN_FUZZ_FILE_H
#define TERN_FUZZ_FILE_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An input that starts with the stream magic ("TERNMIG\0") is the file
 * itself. Anything else is a sparse file as extents, so that a few hundred
 * bytes reach a checkpoint's tail (at 17 MiB for the fuzzers' 16 MiB guest):
 *   extent := u32 le offset, u32 le length, (length) bytes
 * A short last extent is cut to the bytes present; extents past
 * FUZZ_FILE_MAX are dropped (the file stays small and sparse on tmpfs).
 */
#define FUZZ_FILE_MAX (64u << 20)

/* Write (data, size) as above to (fd) (truncated first). */
void fuzz_file_write(int fd, const uint8_t *data, size_t size);
/* A temporary file on tmpfs (/dev/shm) open read-write in (*fd), its path
 * returned (g_free it); the path is unlinked at exit. */
char *fuzz_file_create(int *fd);
/* Append the extent (offset, data, len) to (out): for the seed generator. */
void fuzz_file_add_extent(GByteArray *out, uint32_t offset, const void *data, uint32_t len);

#endif
