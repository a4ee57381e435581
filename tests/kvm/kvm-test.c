/* kvm-test.c: helpers for the in-process VM tests (on KVM or the software CPU). */
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvm-test.h"
#include <stdio.h>

enum accel_kind test_accel = ACCEL_KVM;

void vm_test_setup(void)
{
    const char *name = getenv("TERN_TEST_ACCEL");

    if (name && strcmp(name, "emu") == 0) {
        test_accel = ACCEL_EMU;
        printf("# accelerator: emu (the software CPU)\n");
        return;
    }
    printf("# accelerator: kvm\n");
    if (access("/dev/kvm", F_OK) != 0) {
        fprintf(stderr, "\n======================================================================\n"
                        "SKIPPED: /dev/kvm is absent on this machine; this test needs KVM\n"
                        "and proves nothing here.\n"
                        "======================================================================\n");
        exit(77);
    }
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void serial_log_init(struct serial_log *log, char *spec, size_t spec_len)
{
    char *dir = g_dir_make_tmp("tern-kvm-test-XXXXXX", NULL);
    memset(log, 0, sizeof(*log));
    snprintf(log->path, sizeof(log->path), "%s/serial.log", dir);
    snprintf(spec, spec_len, "file:%s", log->path);
    g_free(dir);
}

void serial_log_cleanup(struct serial_log *log)
{
    unlink(log->path);
    char *dir = g_path_get_dirname(log->path);
    rmdir(dir);
    g_free(dir);
}

/* Next complete line, or false if none yet. */
static bool next_line(struct serial_log *log)
{
    FILE *f = fopen(log->path, "r");
    if (!f)
        return false;
    fseek(f, log->offset, SEEK_SET);
    int c;
    bool done = false;
    while ((c = fgetc(f)) != EOF) {
        log->offset++;
        if (c == '\n') {
            log->line[log->len] = 0;
            log->len = 0;
            done = true;
            break;
        }
        if (c != '\r' && log->len < sizeof(log->line) - 1)
            log->line[log->len++] = c;
    }
    fclose(f);
    return done;
}

bool serial_log_wait(struct serial_log *log, const char *needle, int timeout_ms, char *out,
                     size_t out_len)
{
    double deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        while (next_line(log)) {
            if (strstr(log->line, needle)) {
                if (out)
                    snprintf(out, out_len, "%s", log->line);
                return true;
            }
        }
        g_usleep(10000);
    }
    fprintf(stderr, "timed out waiting for '%s' in %s\n", needle, log->path);
    return false;
}

bool serial_log_wait_tick(struct serial_log *log, int timeout_ms, struct tick *t)
{
    char line[1024];
    if (!serial_log_wait(log, "tick ", timeout_ms, line, sizeof(line)))
        return false;
    return sscanf(line,
                  "tick %ld t_ms %ld dirtied_mib %ld passes %ld timer_ticks %ld "
                  "max_gap_us %ld errors %ld",
                  &t->tick, &t->t_ms, &t->dirtied_mib, &t->passes, &t->timer_ticks, &t->max_gap_us,
                  &t->errors) == 7;
}

int test_ms(int ms)
{
    /* The software CPU boots and runs the guest several times slower. */
    return test_accel == ACCEL_EMU ? ms * 6 : ms;
}
