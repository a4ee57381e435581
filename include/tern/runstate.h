/* runstate.h: the VM's run states (QEMU's names) and the events that report them. */
#ifndef TERN_RUNSTATE_H
#define TERN_RUNSTATE_H

#include <stdbool.h>

enum runstate {
    RUNSTATE_PRELAUNCH, /* created, never run (-S) */
    RUNSTATE_RUNNING,
    RUNSTATE_PAUSED,         /* stop, or -S after load */
    RUNSTATE_INMIGRATE,      /* waiting for / loading an incoming migration */
    RUNSTATE_FINISH_MIGRATE, /* source paused inside the stop-and-copy phase */
    RUNSTATE_POSTMIGRATE,    /* source after a completed migration */
    RUNSTATE_SHUTDOWN,       /* the guest powered off */
    RUNSTATE_INTERNAL_ERROR, /* KVM failed or the guest triple-faulted */
    RUNSTATE__MAX,
};

/* QEMU's RunState spelling ("running", "paused", "inmigrate", ...). */
const char *runstate_name(enum runstate s);
/* Whether vCPUs execute in (s). */
bool runstate_is_running(enum runstate s);

#endif
