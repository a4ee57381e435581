/* fake-machine.h: knobs of the fake machine (fake-machine.c) for monitor tests. */
#ifndef TERN_TESTS_FAKE_MACHINE_H
#define TERN_TESTS_FAKE_MACHINE_H

#include <stdbool.h>

#include "tern/machine.h"

/* A fake VM with (smp) vCPUs, a real 16 MiB guest_ram, starting in (state). */
struct machine *fake_machine_new(unsigned smp, enum runstate state);
void fake_machine_set_runstate(struct machine *m, enum runstate state);
/* How often machine_quit() / machine_system_reset() were called. */
unsigned fake_machine_quit_calls(struct machine *m);
unsigned fake_machine_reset_calls(struct machine *m);

#endif
