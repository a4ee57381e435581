/* fuzz-checkpoint.c: the fuzzer's bytes as a checkpoint file on tmpfs
 * (fuzz-file.h: raw, or sparse extents to reach the tail), restored through
 * the file channel and the real incoming loader, as `-incoming file:PATH`
 * does, into the unit tests' fake machine (16 MiB of RAM, one vCPU). */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "../unit/fake-vm.h"
#include "fuzz-file.h"
#include "../../migration/migration-internal.h"
#include "tern/channel-file.h"
#include "tern/channel.h"
#include "tern/memory.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct machine *vm;
static bool verbose; /* TERN_FUZZ_VERBOSE=1: print why each input was refused */
static char *path;
static int fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* tmpfs refuses O_DIRECT: buffered I/O, without the note per run. */
    g_setenv("TERN_FILE_NO_DIRECT", "1", TRUE);
    verbose = g_getenv("TERN_FUZZ_VERBOSE") != NULL;
    vm = fake_machine_new(1, RUNSTATE_INMIGRATE);
    fake_vm_reset(&(struct fake_guest){ .ram = machine_ram(vm) });
    path = fuzz_file_create(&fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct migration *mig;
    struct channel *ch;
    GError *err = NULL;

    fuzz_file_write(fd, data, size);
    ch = channel_file_open(path, &err);
    if (!ch)
        g_error("fuzz-checkpoint: %s", err->message);
    mig = migration_new(vm);
    if (!incoming_load_channel(mig, ch, NULL, &err)) {
        if (verbose)
            g_printerr("refused: %s\n", err->message);
        g_error_free(err);
    } else if (verbose) {
        g_printerr("loaded\n");
    }
    channel_close(ch);
    migration_free(mig);
    while (g_main_context_iteration(NULL, FALSE))
        ;
    return 0;
}
