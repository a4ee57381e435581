/* state.c: the migration status machine: names, the one table of legal
 * transitions, and the compare-and-swap that moves a status and reports it
 * with a MIGRATION event. Shared by the outgoing and incoming sides. */
#include "tern/migration.h"

#include "tern/events.h"

#define MIG_BIT(s) (1u << (s))

/* transitions[from] has bit (to) set when (from) -> (to) is legal. A terminal
 * status may only go back to setup: a new migration after the last one ended. */
static const unsigned mig_transitions[MIG_STATUS__MAX] = {
    [MIG_STATUS_NONE] = MIG_BIT(MIG_STATUS_SETUP),
    [MIG_STATUS_SETUP] = MIG_BIT(MIG_STATUS_ACTIVE) | MIG_BIT(MIG_STATUS_FAILED) |
                         MIG_BIT(MIG_STATUS_CANCELLING),
    [MIG_STATUS_ACTIVE] = MIG_BIT(MIG_STATUS_DEVICE) | MIG_BIT(MIG_STATUS_FAILED) |
                          MIG_BIT(MIG_STATUS_CANCELLING),
    [MIG_STATUS_DEVICE] = MIG_BIT(MIG_STATUS_COMPLETED) | MIG_BIT(MIG_STATUS_FAILED) |
                          MIG_BIT(MIG_STATUS_CANCELLING),
    [MIG_STATUS_CANCELLING] = MIG_BIT(MIG_STATUS_CANCELLED) | MIG_BIT(MIG_STATUS_FAILED),
    [MIG_STATUS_COMPLETED] = MIG_BIT(MIG_STATUS_SETUP),
    [MIG_STATUS_FAILED] = MIG_BIT(MIG_STATUS_SETUP),
    [MIG_STATUS_CANCELLED] = MIG_BIT(MIG_STATUS_SETUP),
};

static const char *const mig_status_names[MIG_STATUS__MAX] = {
    [MIG_STATUS_NONE] = "none",
    [MIG_STATUS_SETUP] = "setup",
    [MIG_STATUS_ACTIVE] = "active",
    [MIG_STATUS_DEVICE] = "device",
    [MIG_STATUS_COMPLETED] = "completed",
    [MIG_STATUS_FAILED] = "failed",
    [MIG_STATUS_CANCELLING] = "cancelling",
    [MIG_STATUS_CANCELLED] = "cancelled",
};

static bool mig_status_valid(enum mig_status s)
{
    return (unsigned)s < MIG_STATUS__MAX;
}

const char *mig_status_name(enum mig_status s)
{
    return mig_status_valid(s) ? mig_status_names[s] : "unknown";
}

bool mig_status_is_terminal(enum mig_status s)
{
    return s == MIG_STATUS_COMPLETED || s == MIG_STATUS_FAILED || s == MIG_STATUS_CANCELLED;
}

bool mig_status_transition_allowed(enum mig_status from, enum mig_status to)
{
    if (!mig_status_valid(from) || !mig_status_valid(to)) {
        return false;
    }
    return (mig_transitions[from] & MIG_BIT(to)) != 0;
}

bool mig_status_set(int *status, enum mig_status from, enum mig_status to)
{
    int expected = (int)from;

    if (!mig_status_transition_allowed(from, to)) {
        /* A caller asking for an illegal move is a bug; refuse it loudly. */
        g_warning("migration: illegal status transition %s -> %s", mig_status_name(from),
                  mig_status_name(to));
        return false;
    }
    if (!__atomic_compare_exchange_n(status, &expected, (int)to, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
        return false;
    }
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "status", mig_status_name(to));
    event_emit("MIGRATION", data);
    return true;
}

enum mig_status mig_status_get(const int *status)
{
    return (enum mig_status)__atomic_load_n(status, __ATOMIC_ACQUIRE);
}

void mig_info_clear(struct mig_info *info)
{
    if (!info) {
        return;
    }
    g_free(info->error_desc);
    info->error_desc = NULL;
}
