/* fuzz-hmp.c: libFuzzer harness: HMP lines (monitor/monitor-hmp.c) on the fake
 * machine, the input being what a user types. Byte 0 picks the shape: bit 7 an
 * interactive session (banner, prompts, line editing) or not, bits 0-6 the
 * chunk size of the feed (0: all at once). Output is dropped. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../unit/fake-machine.h"
#include "tern/hmp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct machine *machine;

static void drop_output(void *opaque, const char *text, size_t len)
{
    (void)opaque;
    (void)text;
    (void)len;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    hmp_commands_register();
    machine = fake_machine_new(1, RUNSTATE_RUNNING);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    /* x-query-ram-digest / info ram-digest CRCs the fake machine's 16 MiB of
     * RAM (10 ms, a hundred inputs' worth) and reads nothing of the input:
     * keep such inputs out of the corpus (-1), or they set the pace. */
    if (memmem(data, size, "digest", 6)) {
        return -1;
    }
    uint8_t shape = data[0];
    size_t chunk = shape & 0x7f;
    data++;
    size--;
    if (!chunk) {
        chunk = size ? size : 1;
    }

    struct hmp_session *hs = hmp_session_new(machine, drop_output, NULL, shape & 0x80);
    for (size_t off = 0; off < size && !hmp_session_is_closed(hs); off += chunk) {
        hmp_session_feed(hs, data + off, size - off < chunk ? size - off : chunk);
    }
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    hmp_session_free(hs);
    fake_machine_set_runstate(machine, RUNSTATE_RUNNING);
    return 0;
}
