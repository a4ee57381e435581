/* replay.c: runs a libFuzzer harness over files without libFuzzer, so the
 * normal (gcc, ASan/UBSan) build replays every corpus and past crash in
 * `make check`. Arguments: files or directories (a missing one is skipped). */
#include <dirent.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned replayed;

static void replay_file(const char *path)
{
    gchar *data;
    gsize len;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        fprintf(stderr, "replay: %s\n", err->message);
        exit(1);
    }
    /* Exactly the input's bytes, in a buffer of their own size: ASan then
     * catches a read one past the end, as under libFuzzer. */
    uint8_t *copy = g_memdup2(data, len);
    g_free(data);
    LLVMFuzzerTestOneInput(copy, len);
    g_free(copy);
    replayed++;
}

static void replay_path(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        replay_file(path);
        return;
    }
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
        if (name[0] == '.' || strcmp(name, "README.md") == 0)
            continue;
        g_autofree char *child = g_build_filename(path, name, NULL);
        replay_path(child);
    }
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++)
        replay_path(argv[i]);
    printf("replayed %u inputs without a crash\n", replayed);
    return 0;
}
