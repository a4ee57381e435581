/* test-policy.c: the default pre-copy policy, the expected-downtime formula,
 * and the pass loop that takes the decisions of the policy it is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tern/policy.h"

#define MS 1000000ULL /* ns */

static struct precopy_stats stats(uint32_t pass, uint64_t remaining, double bw)
{
    return (struct precopy_stats){
        .pass = pass,
        .remaining_bytes = remaining,
        .bandwidth = bw,
        .downtime_limit_ns = 300 * MS,
    };
}

static void test_expected_downtime(void **state)
{
    (void)state;
    /* 100 MB at 1 GB/s = 100 ms. */
    struct precopy_stats s = stats(1, 100000000, 1e9);
    assert_int_equal(precopy_expected_downtime_ns(&s), 100 * MS);
    /* Plus the fixed cost of the pause. */
    s.fixed_cost_ns = 7 * MS;
    assert_int_equal(precopy_expected_downtime_ns(&s), 107 * MS);
    /* Rounded up, never down: 1 byte at 3 B/s = 333333333.3 ns. */
    s = stats(1, 1, 3.0);
    assert_int_equal(precopy_expected_downtime_ns(&s), 333333334);
    /* Unknown bandwidth: unknowable cost. */
    s = stats(1, 4096, 0.0);
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
    s.bandwidth = -5.0;
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
    s.bandwidth = __builtin_nan("");
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
    s.bandwidth = __builtin_inf();
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
    /* Nothing left: only the fixed cost, bandwidth or not. */
    s = stats(1, 0, 0.0);
    s.fixed_cost_ns = 5 * MS;
    assert_int_equal(precopy_expected_downtime_ns(&s), 5 * MS);
    /* Saturation instead of wrapping. */
    s = stats(1, UINT64_MAX, 1e-3);
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
    s = stats(1, 1000000000, 1.0); /* 1e18 ns */
    s.fixed_cost_ns = UINT64_MAX - 10;
    assert_int_equal(precopy_expected_downtime_ns(&s), UINT64_MAX);
}

static void test_forced_passes(void **state)
{
    (void)state;
    for (uint32_t n = 1; n <= 5; n++) {
        unsigned passes = 0;
        /* Even with a downtime that would fit at once, exactly (n) passes. */
        for (uint32_t pass = 1; pass < 100; pass++) {
            struct precopy_stats s = stats(pass, 0, 1e9);
            s.forced_passes = n;
            passes = pass;
            if (precopy_default_policy(&s, NULL) == PRECOPY_STOP_AND_COPY) {
                break;
            }
        }
        assert_int_equal(passes, n);
        /* ...and even when it would never fit. */
        struct precopy_stats s = stats(n, 1ULL << 40, 0.0);
        s.forced_passes = n;
        assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
        s.pass = n - 1;
        assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    }
}

static void test_downtime_boundary(void **state)
{
    (void)state;
    /* 1 B/ns bandwidth: remaining bytes = ns. Limit 300 ms. */
    struct precopy_stats s = stats(1, 300 * MS, 1e9);
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
    s.remaining_bytes = 300 * MS + 1;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    s.remaining_bytes = 300 * MS - 1;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
    /* A zero limit stops only when nothing is left and there is no fixed cost. */
    s = stats(3, 1, 1e9);
    s.downtime_limit_ns = 0;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    s.remaining_bytes = 0;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
}

static void test_fixed_cost(void **state)
{
    (void)state;
    /* 200 ms of pages fits 300 ms, until the fixed cost pushes it over. */
    struct precopy_stats s = stats(2, 200 * MS, 1e9);
    s.fixed_cost_ns = 100 * MS;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
    s.fixed_cost_ns = 100 * MS + 1;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    /* The fixed cost alone can exceed the limit: then the pages alone must
     * fit it (QEMU's rule), and nothing left always does, so the loop never
     * spins through passes that cannot help. */
    s = stats(2, 300 * 1000000, 1e9); /* 300 ms of pages */
    s.fixed_cost_ns = 301 * MS;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
    s.remaining_bytes++;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    s.remaining_bytes = 0;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
    s = stats(2, 4096, 0.0); /* unknown bandwidth: never fits */
    s.fixed_cost_ns = 301 * MS;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
}

static void test_unknown_bandwidth(void **state)
{
    (void)state;
    struct precopy_stats s = stats(4, 4096, 0.0);
    s.downtime_limit_ns = UINT64_MAX - 1;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    /* The dirty rate does not enter the default rule. */
    s = stats(4, 4096, 1e9);
    s.dirty_rate = 1e12;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_STOP_AND_COPY);
}

static void test_first_pass(void **state)
{
    (void)state;
    /* Before any pass completed, always go on: the first pass sends all pages. */
    struct precopy_stats s = stats(0, 0, 1e9);
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
    s.forced_passes = 1;
    assert_int_equal(precopy_default_policy(&s, NULL), PRECOPY_CONTINUE);
}

/* Auto-converge: two hot passes in a row step the throttle, a cool pass resets
 * the count, and the ceiling holds. */
static void test_throttle_steps(void **state)
{
    (void)state;
    struct throttle_state t = { 0 };
    const uint64_t sent = 100 << 20;

    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 0);     /* hot 1 */
    assert_int_equal(precopy_throttle_step(&t, sent / 4, sent, 20, 10, 45), 0); /* cool */
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 0);     /* hot 1 */
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 20);    /* hot 2 */
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 20);
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 30);
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 30);
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 40);
    precopy_throttle_step(&t, sent, sent, 20, 10, 45);
    assert_int_equal(precopy_throttle_step(&t, sent, sent, 20, 10, 45), 45); /* ceiling */
    /* Exactly half is not over the threshold. */
    struct throttle_state u = { 0 };
    precopy_throttle_step(&u, sent / 2, sent, 20, 10, 99);
    assert_int_equal(precopy_throttle_step(&u, sent / 2, sent, 20, 10, 99), 0);
}

/* A fake sender for precopy_run_passes(): every pass "sends" (per_pass)
 * bytes and reports a remaining size that the default policy would never
 * stop on (unknown bandwidth), and it gives up after (max_passes) so that a
 * loop ignoring the policy fails instead of hanging. */
struct fake_sender {
    uint32_t passes_run;
    uint64_t sent;
    uint64_t per_pass;
    uint32_t max_passes;
};

static bool fake_pass(void *opaque, uint32_t pass, struct precopy_stats *out, GError **errp)
{
    struct fake_sender *f = opaque;

    if (pass > f->max_passes) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_FAILED, "policy ignored");
        return false;
    }
    f->passes_run++;
    f->sent += f->per_pass;
    *out = stats(pass, 1ULL << 40, 0.0);
    return true;
}

/* A fake policy: stop and copy at pass (stop_at), recording what it saw. */
struct fake_policy {
    uint32_t stop_at;
    unsigned calls;
    uint32_t last_pass;
};

static enum precopy_decision stop_at_pass(const struct precopy_stats *s, void *opaque)
{
    struct fake_policy *p = opaque;

    p->calls++;
    p->last_pass = s->pass;
    return s->pass >= p->stop_at ? PRECOPY_STOP_AND_COPY : PRECOPY_CONTINUE;
}

/* The pass loop takes the decisions of the policy it is given: exactly
 * (stop_at) passes run and are sent, and the policy saw each of them. */
static void test_policy_decides(void **state)
{
    (void)state;
    for (uint32_t n = 1; n <= 7; n++) {
        struct fake_sender f = { .per_pass = 4096, .max_passes = 20 };
        struct fake_policy pol = { .stop_at = n };
        uint32_t passes = 0;
        g_autoptr(GError) err = NULL;

        assert_true(precopy_run_passes(stop_at_pass, &pol, fake_pass, &f, &passes, &err));
        assert_null(err);
        assert_int_equal(passes, n);
        assert_int_equal(f.passes_run, n);
        assert_int_equal(f.sent, (uint64_t)n * 4096);
        assert_int_equal(pol.calls, n);
        assert_int_equal(pol.last_pass, n);
    }
    /* The default policy under the same inputs never stops: the loop runs
     * until the sender fails, so it is the policy passed in that decided. */
    struct fake_sender f = { .per_pass = 4096, .max_passes = 20 };
    uint32_t passes = 0;
    g_autoptr(GError) err = NULL;
    assert_false(precopy_run_passes(precopy_default_policy, NULL, fake_pass, &f, &passes, &err));
    assert_non_null(err);
    assert_int_equal(f.passes_run, 20);
}

static void test_fixed_cost_inputs(void **state)
{
    (void)state;
    /* 1 ms of state save and load, plus twice the round trip to a target. */
    assert_int_equal(precopy_fixed_cost_ns(0, false), 1 * MS);
    assert_int_equal(precopy_fixed_cost_ns(3 * MS, false), 7 * MS);
    assert_int_equal(precopy_fixed_cost_ns(UINT64_MAX - 1, false), UINT64_MAX);
    /* A checkpoint file: the tail and an fsync, whatever the round trip. */
    assert_int_equal(precopy_fixed_cost_ns(0, true), 10 * MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_downtime), cmocka_unit_test(test_forced_passes),
        cmocka_unit_test(test_downtime_boundary), cmocka_unit_test(test_fixed_cost),
        cmocka_unit_test(test_unknown_bandwidth), cmocka_unit_test(test_first_pass),
        cmocka_unit_test(test_policy_decides),    cmocka_unit_test(test_fixed_cost_inputs),
        cmocka_unit_test(test_throttle_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
