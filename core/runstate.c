/* runstate.c: run-state names (QEMU's RunState spelling) and predicates. */
#include "tern/runstate.h"

#include <stddef.h>

static const char *const runstate_names[RUNSTATE__MAX] = {
    [RUNSTATE_PRELAUNCH] = "prelaunch",
    [RUNSTATE_RUNNING] = "running",
    [RUNSTATE_PAUSED] = "paused",
    [RUNSTATE_INMIGRATE] = "inmigrate",
    [RUNSTATE_FINISH_MIGRATE] = "finish-migrate",
    [RUNSTATE_POSTMIGRATE] = "postmigrate",
    [RUNSTATE_SHUTDOWN] = "shutdown",
    [RUNSTATE_INTERNAL_ERROR] = "internal-error",
};

const char *runstate_name(enum runstate s)
{
    if ((unsigned)s >= RUNSTATE__MAX || !runstate_names[s]) {
        return "unknown";
    }
    return runstate_names[s];
}

bool runstate_is_running(enum runstate s)
{
    return s == RUNSTATE_RUNNING;
}
