/* machine-state.h: the non-RAM state of a paused machine (vCPUs, VM, devices)
 * as FDT blobs, a fresh accelerator VM on the same RAM, and the run-state hooks that
 * checkpoints, migration and tests need. */
#ifndef TERN_MACHINE_STATE_H
#define TERN_MACHINE_STATE_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>

#include "tern/device.h"

struct machine;
struct accel;

/* One blob with nodes cpu@N, vm, devices/<id>. The machine must be paused.
 * Returns a g_malloc'd packed FDT and its size in (len). */
void *machine_save_state(struct machine *m, size_t *len, GError **errp);
/* Load a blob made by machine_save_state() (validated first). Paused machine. */
bool machine_load_state(struct machine *m, const void *fdt, size_t len, GError **errp);

/* The same, one piece at a time (what the migration stream carries): a packed
 * FDT whose root holds the one node. Loading validates the blob first. Load
 * every vCPU before the VM state (PLATFORM.md's order). */
void *machine_save_vcpu(struct machine *m, unsigned index, size_t *len, GError **errp);
void *machine_save_vm(struct machine *m, size_t *len, GError **errp);
void *machine_save_device(struct machine *m, unsigned index, size_t *len, GError **errp);
bool machine_load_vcpu(struct machine *m, unsigned index, const void *fdt, size_t len,
                       GError **errp);
bool machine_load_vm(struct machine *m, const void *fdt, size_t len, GError **errp);
bool machine_load_device(struct machine *m, const char *id, const void *fdt, size_t len,
                         GError **errp);

unsigned machine_device_count(struct machine *m);
const struct device *machine_device(struct machine *m, unsigned index);

/* The accelerator, for migration's dirty log and for in-process VM tests. */
struct accel *machine_accel(struct machine *m);

/* Replace the accelerator VM and vCPUs by new ones over the same RAM (paused). */
bool machine_rebuild_vm(struct machine *m, GError **errp);

/* Outgoing migration: pause the guest for the final phase (state
 * finish-migrate, STOP event); (was_running) says whether to resume on failure. */
void machine_migration_pause(struct machine *m, bool *was_running);
/* End of an outgoing migration: success -> postmigrate; failure -> back to
 * running (RESUME event) if (was_running), else paused. */
void machine_migration_finish(struct machine *m, bool success, bool was_running);
/* Incoming migration loaded: run (RESUME), or stay paused with -S. Returns
 * whether the guest now runs. */
bool machine_incoming_finish(struct machine *m);
/* Incoming migration failed: the process exits with status 1 on the main loop. */
void machine_incoming_failed(struct machine *m);
/* Whether the machine was started with -S (the target then waits for cont). */
bool machine_start_paused(struct machine *m);

/* Auto-converge: keep vCPUs out of the guest (percent)% of the time (0: off). */
void machine_set_throttle(struct machine *m, unsigned percent);

#endif
