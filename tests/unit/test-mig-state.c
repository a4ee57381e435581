/* test-mig-state.c: the migration status table, names, the compare-and-swap
 * and the MIGRATION events it emits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tern/events.h"
#include "tern/migration.h"

#define B(s) (1u << (s))

/* The expected table, written out independently of state.c. */
static unsigned expected_targets(enum mig_status from)
{
    switch (from) {
    case MIG_STATUS_NONE:
        return B(MIG_STATUS_SETUP);
    case MIG_STATUS_SETUP:
        return B(MIG_STATUS_ACTIVE) | B(MIG_STATUS_FAILED) | B(MIG_STATUS_CANCELLING);
    case MIG_STATUS_ACTIVE:
        return B(MIG_STATUS_DEVICE) | B(MIG_STATUS_FAILED) | B(MIG_STATUS_CANCELLING);
    case MIG_STATUS_DEVICE:
        return B(MIG_STATUS_COMPLETED) | B(MIG_STATUS_FAILED) | B(MIG_STATUS_CANCELLING);
    case MIG_STATUS_CANCELLING:
        return B(MIG_STATUS_CANCELLED) | B(MIG_STATUS_FAILED);
    case MIG_STATUS_COMPLETED:
    case MIG_STATUS_FAILED:
    case MIG_STATUS_CANCELLED:
        return B(MIG_STATUS_SETUP);
    case MIG_STATUS__MAX:
        break;
    }
    return 0;
}

struct sink {
    GPtrArray *statuses; /* char *: "status" of each MIGRATION event */
    unsigned other;      /* events with any other name */
};

static void sink_fn(const char *name, JsonObject *data, gint64 usec, void *opaque)
{
    struct sink *s = opaque;
    (void)usec;
    if (strcmp(name, "MIGRATION")) {
        s->other++;
        return;
    }
    assert_non_null(data);
    assert_int_equal(json_object_get_size(data), 1);
    g_ptr_array_add(s->statuses, g_strdup(json_object_get_string_member(data, "status")));
}

static unsigned warnings;

static void count_warning(const gchar *domain, GLogLevelFlags level, const gchar *message,
                          gpointer opaque)
{
    (void)domain;
    (void)level;
    (void)message;
    (void)opaque;
    warnings++;
}

static void drain(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

static void test_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "none", "setup", "active", "device", "completed", "failed", "cancelling", "cancelled",
    };
    assert_int_equal(G_N_ELEMENTS(names), MIG_STATUS__MAX);
    for (int s = 0; s < MIG_STATUS__MAX; s++) {
        assert_string_equal(mig_status_name(s), names[s]);
    }
    assert_string_equal(mig_status_name(MIG_STATUS__MAX), "unknown");
    assert_string_equal(mig_status_name((enum mig_status) - 1), "unknown");

    for (int s = 0; s < MIG_STATUS__MAX; s++) {
        bool terminal = s == MIG_STATUS_COMPLETED || s == MIG_STATUS_FAILED ||
                        s == MIG_STATUS_CANCELLED;
        assert_int_equal(mig_status_is_terminal(s), terminal);
    }
}

static void test_table(void **state)
{
    (void)state;
    unsigned allowed = 0;

    for (int from = 0; from < MIG_STATUS__MAX; from++) {
        for (int to = 0; to < MIG_STATUS__MAX; to++) {
            bool want = (expected_targets(from) & B(to)) != 0;
            if (mig_status_transition_allowed(from, to) != want) {
                fail_msg("%s -> %s: expected %s", mig_status_name(from), mig_status_name(to),
                         want ? "allowed" : "refused");
            }
            allowed += want;
        }
        /* Nothing stays where it is. */
        assert_false(mig_status_transition_allowed(from, from));
    }
    assert_int_equal(allowed, 1 + 3 + 3 + 3 + 2 + 3);
    /* Out-of-range values are never allowed, in either position. */
    assert_false(mig_status_transition_allowed(MIG_STATUS__MAX, MIG_STATUS_SETUP));
    assert_false(mig_status_transition_allowed(MIG_STATUS_NONE, MIG_STATUS__MAX));
    assert_false(mig_status_transition_allowed((enum mig_status) - 1, MIG_STATUS_SETUP));
}

static void test_set_every_pair(void **state)
{
    (void)state;
    struct sink s = { g_ptr_array_new_with_free_func(g_free), 0 };
    unsigned moves = 0;

    warnings = 0;
    event_set_sink(sink_fn, &s);
    for (int from = 0; from < MIG_STATUS__MAX; from++) {
        for (int to = 0; to < MIG_STATUS__MAX; to++) {
            int status = from;
            bool want = (expected_targets(from) & B(to)) != 0;
            assert_int_equal(mig_status_set(&status, from, to), want);
            assert_int_equal(status, want ? to : from);
            moves += want;
        }
    }
    /* Every refused pair was a programming error, and said so. */
    assert_int_equal(warnings, MIG_STATUS__MAX * MIG_STATUS__MAX - moves);
    drain();
    /* One event per successful move, named after the new status, in order. */
    assert_int_equal(s.statuses->len, moves);
    assert_int_equal(s.other, 0);
    unsigned k = 0;
    for (int from = 0; from < MIG_STATUS__MAX; from++) {
        for (int to = 0; to < MIG_STATUS__MAX; to++) {
            if (expected_targets(from) & B(to)) {
                assert_string_equal(s.statuses->pdata[k++], mig_status_name(to));
            }
        }
    }
    event_set_sink(NULL, NULL);
    g_ptr_array_free(s.statuses, TRUE);
}

static void test_cas(void **state)
{
    (void)state;
    struct sink s = { g_ptr_array_new_with_free_func(g_free), 0 };
    int status = MIG_STATUS_ACTIVE;

    event_set_sink(sink_fn, &s);
    /* A legal move whose (from) is stale loses and changes nothing. */
    assert_false(mig_status_set(&status, MIG_STATUS_SETUP, MIG_STATUS_ACTIVE));
    assert_false(mig_status_set(&status, MIG_STATUS_DEVICE, MIG_STATUS_COMPLETED));
    assert_int_equal(status, MIG_STATUS_ACTIVE);
    /* Cancel racing the switch-over: whichever swaps first wins. */
    assert_true(mig_status_set(&status, MIG_STATUS_ACTIVE, MIG_STATUS_CANCELLING));
    assert_false(mig_status_set(&status, MIG_STATUS_ACTIVE, MIG_STATUS_DEVICE));
    assert_int_equal(status, MIG_STATUS_CANCELLING);
    /* An illegal move is refused even when (from) matches. */
    assert_false(mig_status_set(&status, MIG_STATUS_CANCELLING, MIG_STATUS_COMPLETED));
    assert_int_equal(status, MIG_STATUS_CANCELLING);
    assert_true(mig_status_set(&status, MIG_STATUS_CANCELLING, MIG_STATUS_CANCELLED));
    /* A new migration after a terminal status. */
    assert_true(mig_status_set(&status, MIG_STATUS_CANCELLED, MIG_STATUS_SETUP));
    drain();
    assert_int_equal(s.statuses->len, 3);
    assert_string_equal(s.statuses->pdata[0], "cancelling");
    assert_string_equal(s.statuses->pdata[1], "cancelled");
    assert_string_equal(s.statuses->pdata[2], "setup");
    event_set_sink(NULL, NULL);
    g_ptr_array_free(s.statuses, TRUE);
}

struct race {
    int *status;
    unsigned wins;
};

static gpointer race_thread(gpointer opaque)
{
    struct race *r = opaque;
    r->wins = mig_status_set(r->status, MIG_STATUS_ACTIVE, MIG_STATUS_CANCELLING) ? 1 : 0;
    return NULL;
}

static void test_cas_threads(void **state)
{
    (void)state;
    struct sink s = { g_ptr_array_new_with_free_func(g_free), 0 };

    event_set_sink(sink_fn, &s);
    for (unsigned round = 0; round < 50; round++) {
        int status = MIG_STATUS_ACTIVE;
        struct race r[4];
        GThread *t[4];
        for (unsigned i = 0; i < 4; i++) {
            r[i] = (struct race){ &status, 0 };
            t[i] = g_thread_new("race", race_thread, &r[i]);
        }
        unsigned wins = 0;
        for (unsigned i = 0; i < 4; i++) {
            g_thread_join(t[i]);
            wins += r[i].wins;
        }
        assert_int_equal(wins, 1);
        assert_int_equal(status, MIG_STATUS_CANCELLING);
    }
    drain();
    assert_int_equal(s.statuses->len, 50);
    event_set_sink(NULL, NULL);
    g_ptr_array_free(s.statuses, TRUE);
}

static void test_info_clear(void **state)
{
    (void)state;
    struct mig_info info = { .status = MIG_STATUS_FAILED, .error_desc = g_strdup("boom") };

    mig_info_clear(&info);
    assert_null(info.error_desc);
    mig_info_clear(&info);
    mig_info_clear(NULL);
}

int main(void)
{
    /* Illegal transitions log a warning by design: count them, quietly. */
    g_log_set_handler(NULL, G_LOG_LEVEL_WARNING, count_warning, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),          cmocka_unit_test(test_table),
        cmocka_unit_test(test_set_every_pair), cmocka_unit_test(test_cas),
        cmocka_unit_test(test_cas_threads),    cmocka_unit_test(test_info_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
