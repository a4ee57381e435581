/* fuzz-stream.c: the fuzzer's bytes as what a source sends to a target,
 * through the real incoming loader (incoming_load_channel()) into the unit
 * tests' fake machine (16 MiB of RAM, one vCPU, no devices, no KVM). */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "../unit/fake-vm.h"
#include "../../migration/migration-internal.h"
#include "tern/channel.h"
#include "tern/memory.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct machine *vm;
static bool verbose; /* TERN_FUZZ_VERBOSE=1: print why each input was refused */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = g_getenv("TERN_FUZZ_VERBOSE") != NULL;
    vm = fake_machine_new(1, RUNSTATE_INMIGRATE);
    fake_vm_reset(&(struct fake_guest){ .ram = machine_ram(vm) });
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct migration *mig = migration_new(vm);
    struct channel *ch = channel_mem_new(data, size);
    struct channel *rp = channel_mem_new(NULL, 0); /* READY, ERROR...: dropped */
    GError *err = NULL;

    if (!incoming_load_channel(mig, ch, rp, &err)) {
        if (verbose)
            g_printerr("refused: %s\n", err->message);
        g_error_free(err);
    } else if (verbose) {
        g_printerr("loaded\n");
    }
    channel_close(rp);
    channel_close(ch);
    migration_free(mig);
    /* The MIGRATION events queued meanwhile, delivered to nobody. */
    while (g_main_context_iteration(NULL, FALSE))
        ;
    return 0;
}
