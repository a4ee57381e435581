/* fake-migration.c: migration.h's backend without threads, sockets or KVM:
 * the status and statistics are whatever the test sets, so the monitor
 * commands can be checked in every status. */
#include "fake-migration.h"

#include <string.h>

#include "tern/util.h"

static struct {
    enum mig_status status;
    struct mig_stats stats;
    char *error_desc;
    struct mig_params params;
    char *fail_start;
    char *fail_cancel;
    char *last_uri;
    unsigned start_calls, cancel_calls, incoming_calls, set_params_calls, info_calls;
} fake;

void fake_migration_reset(void)
{
    g_free(fake.error_desc);
    g_free(fake.fail_start);
    g_free(fake.fail_cancel);
    g_free(fake.last_uri);
    memset(&fake, 0, sizeof(fake));
    migration_params_default(&fake.params);
}

void fake_migration_set_status(enum mig_status status)
{
    fake.status = status;
}

void fake_migration_set_stats(const struct mig_stats *stats)
{
    fake.stats = *stats;
}

void fake_migration_set_error_desc(const char *error_desc)
{
    g_free(fake.error_desc);
    fake.error_desc = g_strdup(error_desc);
}

void fake_migration_fail_start(const char *msg)
{
    g_free(fake.fail_start);
    fake.fail_start = g_strdup(msg);
}

void fake_migration_fail_cancel(const char *msg)
{
    g_free(fake.fail_cancel);
    fake.fail_cancel = g_strdup(msg);
}

unsigned fake_migration_start_calls(void)
{
    return fake.start_calls;
}

unsigned fake_migration_cancel_calls(void)
{
    return fake.cancel_calls;
}

unsigned fake_migration_incoming_calls(void)
{
    return fake.incoming_calls;
}

unsigned fake_migration_set_params_calls(void)
{
    return fake.set_params_calls;
}

unsigned fake_migration_info_calls(void)
{
    return fake.info_calls;
}

const char *fake_migration_last_uri(void)
{
    return fake.last_uri;
}

bool migration_start(struct migration *mig, const char *uri, GError **errp)
{
    (void)mig;
    fake.start_calls++;
    g_free(fake.last_uri);
    fake.last_uri = g_strdup(uri);
    if (fake.fail_start) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s", fake.fail_start);
        g_clear_pointer(&fake.fail_start, g_free);
        return false;
    }
    if (fake.status != MIG_STATUS_NONE && !mig_status_is_terminal(fake.status)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "There's a migration process in progress");
        return false;
    }
    fake.status = MIG_STATUS_SETUP;
    g_clear_pointer(&fake.error_desc, g_free);
    return true;
}

bool migration_cancel(struct migration *mig, GError **errp)
{
    (void)mig;
    fake.cancel_calls++;
    if (fake.fail_cancel) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s", fake.fail_cancel);
        return false;
    }
    fake.status = MIG_STATUS_CANCELLED;
    return true;
}

void migration_info(struct migration *mig, struct mig_info *out)
{
    (void)mig;
    fake.info_calls++;
    out->status = fake.status;
    out->stats = fake.stats;
    out->error_desc = g_strdup(fake.error_desc);
}

void migration_get_params(struct migration *mig, struct mig_params *out)
{
    (void)mig;
    *out = fake.params;
}

bool migration_set_params(struct migration *mig, const struct mig_params *p, GError **errp)
{
    (void)mig;
    (void)errp;
    fake.set_params_calls++;
    fake.params = *p;
    return true;
}

bool incoming_start(struct migration *mig, const char *uri, GError **errp)
{
    (void)mig;
    (void)errp;
    fake.incoming_calls++;
    g_free(fake.last_uri);
    fake.last_uri = g_strdup(uri);
    fake.status = MIG_STATUS_SETUP;
    return true;
}

/* The fake keeps its state in (fake); the object only identifies it. */
struct migration {
    struct machine *m;
};

struct migration *migration_new(struct machine *m)
{
    static struct migration the_migration;
    the_migration.m = m;
    return &the_migration;
}

void migration_free(struct migration *mig)
{
    (void)mig;
}
