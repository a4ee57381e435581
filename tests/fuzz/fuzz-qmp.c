/* fuzz-qmp.c: libFuzzer harness: a whole QMP session (monitor/qmp.c) on the
 * fake machine, the input being what a client sends. Byte 0 picks the shape:
 * bit 7 negotiates capabilities first, bits 0-6 the chunk size of the feed (0:
 * all at once), so the splitter meets requests cut anywhere. Replies are
 * dropped. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../unit/fake-machine.h"
#include "tern/hmp.h"
#include "tern/qmp.h"

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
    hmp_commands_register(); /* human-monitor-command, as in vmm/main.c */
    machine = fake_machine_new(1, RUNSTATE_RUNNING);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char caps[] = "{\"execute\": \"qmp_capabilities\"}";

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

    struct qmp_session *s = qmp_session_new(machine, drop_output, NULL);
    if (shape & 0x80) {
        qmp_session_feed(s, caps, sizeof(caps) - 1);
    }
    for (size_t off = 0; off < size && !qmp_session_wants_close(s); off += chunk) {
        qmp_session_feed(s, data + off, size - off < chunk ? size - off : chunk);
    }
    /* Events and deferred work of this input, before the next one. */
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    qmp_session_free(s);
    /* Commands may have stopped or reset the machine: start each input alike. */
    fake_machine_set_runstate(machine, RUNSTATE_RUNNING);
    return 0;
}
