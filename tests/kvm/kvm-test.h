/* kvm-test.h: what the in-process VM tests share: the accelerator, the skip rule and serial log polling. */
#ifndef TERN_KVM_TEST_H
#define TERN_KVM_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tern/accel.h"

/* The accelerator under test: TERN_TEST_ACCEL=emu or kvm (the default). For
 * kvm, exit 77 (meson's skip), loudly, only when /dev/kvm does not exist. */
extern enum accel_kind test_accel;
void vm_test_setup(void);
/* A timeout of (ms) on KVM, scaled for the accelerator under test. */
int test_ms(int ms);

struct serial_log {
    char path[256];
    long offset;
    char line[1024];
    size_t len;
};

/* A fresh serial log file in a temporary directory; (spec) gets "file:PATH". */
void serial_log_init(struct serial_log *log, char *spec, size_t spec_len);
void serial_log_cleanup(struct serial_log *log);
/* Wait up to (timeout_ms) for a new line containing (needle); copies it to (out). */
bool serial_log_wait(struct serial_log *log, const char *needle, int timeout_ms, char *out,
                     size_t out_len);

struct tick {
    long tick, t_ms, dirtied_mib, passes, timer_ticks, max_gap_us, errors;
};
/* Wait for the next "tick ..." line and parse it. */
bool serial_log_wait_tick(struct serial_log *log, int timeout_ms, struct tick *t);

double now_ms(void);

#endif
