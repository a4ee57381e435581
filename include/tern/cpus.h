/* cpus.h: one thread per vCPU running the guest, and the pause/resume protocol. */
#ifndef TERN_CPUS_H
#define TERN_CPUS_H

#include <glib.h>
#include <stdbool.h>

#include "tern/accel.h"

struct cpus;
struct io_bus;

/* Called on a vCPU thread when its vCPU stops on its own: (result) is SHUTDOWN,
 * RESET, POWEROFF or ERROR ((error) set for ERROR; borrowed). The vCPU stays
 * parked until cpus_resume_all() or cpus_destroy(). */
typedef void cpus_event_fn(void *opaque, unsigned index, enum vcpu_run_result result,
                           const GError *error);

/* Create (n) vCPUs on (accel); exits go to (bus), events to (on_event). */
struct cpus *cpus_create(struct accel *accel, unsigned n, struct io_bus *bus,
                         cpus_event_fn *on_event, void *opaque, GError **errp);
/* Stop and join every thread, then destroy the vCPUs. */
void cpus_destroy(struct cpus *cpus);

/* Start the threads; with (paused) they park before their first the guest. */
void cpus_start(struct cpus *cpus, bool paused);
/* Returns only when every vCPU is out of the guest with its pending I/O completed. */
void cpus_pause_all(struct cpus *cpus);
void cpus_resume_all(struct cpus *cpus);
bool cpus_paused(struct cpus *cpus);

/* Keep every vCPU out of the guest (percent)% of the time (0: off, at most
 * 99), to slow a guest that dirties memory faster than migration sends it. */
void cpus_set_throttle(struct cpus *cpus, unsigned percent);
unsigned cpus_throttle(struct cpus *cpus);

unsigned cpus_count(const struct cpus *cpus);
struct accel_vcpu *cpus_vcpu(struct cpus *cpus, unsigned index);
/* Host thread id of vCPU (index) (0 before it started). */
int cpus_thread_id(struct cpus *cpus, unsigned index);

#endif
