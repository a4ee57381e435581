/* fuzz-dump.c: tern-dump's walk (tools/tern-dump-lib.c) on the fuzzer's bytes:
 * as a file on tmpfs (fuzz-file.h: raw or sparse extents), reported as text,
 * and as a pipe would deliver them (a memory channel), reported as JSON;
 * all output goes to /dev/null. */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fuzz-file.h"
#include "../../tools/tern-dump.h"
#include "tern/channel-file.h"
#include "tern/channel.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *path;
static int fd = -1;
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_setenv("TERN_FILE_NO_DIRECT", "1", TRUE);
    path = fuzz_file_create(&fd);
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        g_error("fuzz-dump: cannot open /dev/null");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct dump_opts text = { 0 }, json = { .json = true, .verify = true };
    struct channel *ch;
    GError *err = NULL;

    fuzz_file_write(fd, data, size);
    ch = channel_file_open(path, &err);
    if (!ch)
        g_error("fuzz-dump: %s", err->message);
    dump_channel(&text, path, ch, true, devnull, devnull);
    channel_close(ch);

    ch = channel_mem_new(data, size);
    dump_channel(&json, "-", ch, false, devnull, devnull);
    channel_close(ch);
    return 0;
}
