/* policy.c: the default pre-copy policy: stop iterating after exactly
 * x-passes passes when that is set, otherwise as soon as pausing now would
 * fit the downtime limit. The formula is documented in docs/migration.md. */
#include "tern/policy.h"

#include <math.h>
#include <stddef.h>

#define NS_PER_SEC 1e9

/* a + b, saturating at UINT64_MAX. */
static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t precopy_expected_downtime_ns(const struct precopy_stats *s)
{
    /* Nothing left to send: the pause costs only the fixed part, whatever
     * the bandwidth (which is unknown when nothing was sent at all). */
    if (s->remaining_bytes == 0) {
        return s->fixed_cost_ns;
    }
    /* Unknown (0), negative or NaN bandwidth: the cost is unknowable. */
    if (!(s->bandwidth > 0) || !isfinite(s->bandwidth)) {
        return UINT64_MAX;
    }
    double send_ns = (double)s->remaining_bytes * NS_PER_SEC / s->bandwidth;
    /* 2^64 as a double; anything at or above it does not fit a uint64_t. */
    if (send_ns >= 18446744073709551616.0) {
        return UINT64_MAX;
    }
    uint64_t ns = (uint64_t)send_ns;
    if ((double)ns < send_ns) {
        ns++; /* round up: never promise less than it costs */
    }
    return add_saturating(ns, s->fixed_cost_ns);
}

enum precopy_decision precopy_default_policy(const struct precopy_stats *s, void *opaque)
{
    (void)opaque;

    /* At least one full pass always runs: it sends every populated page. */
    if (s->pass == 0) {
        return PRECOPY_CONTINUE;
    }
    if (s->forced_passes) {
        return s->pass >= s->forced_passes ? PRECOPY_STOP_AND_COPY : PRECOPY_CONTINUE;
    }
    uint64_t expected = precopy_expected_downtime_ns(s);
    if (expected <= s->downtime_limit_ns) {
        return PRECOPY_STOP_AND_COPY;
    }
    /* When the fixed part alone exceeds the limit, no pass can meet it: aim
     * for the pages alone fitting the limit (QEMU's rule), instead of
     * spinning through passes that cannot help. Nothing left always fits. */
    if (s->fixed_cost_ns >= s->downtime_limit_ns && expected != UINT64_MAX &&
        expected - s->fixed_cost_ns <= s->downtime_limit_ns) {
        return PRECOPY_STOP_AND_COPY;
    }
    return PRECOPY_CONTINUE;
}

/* What pausing costs beyond sending pages, to a target: state save and load. */
#define FIXED_COST_BASE_NS (1000 * 1000ULL)

uint64_t precopy_fixed_cost_ns(uint64_t rtt_ns, bool to_file)
{
    if (to_file) {
        return 10 * FIXED_COST_BASE_NS;
    }
    return add_saturating(FIXED_COST_BASE_NS, rtt_ns > UINT64_MAX / 2 ? UINT64_MAX : 2 * rtt_ns);
}

bool precopy_run_passes(precopy_policy_fn *policy, void *policy_opaque, precopy_pass_fn *do_pass,
                        void *opaque, uint32_t *passes, GError **errp)
{
    for (uint32_t pass = 1;; pass++) {
        struct precopy_stats ps = { 0 };
        if (!do_pass(opaque, pass, &ps, errp)) {
            return false;
        }
        if (policy(&ps, policy_opaque) == PRECOPY_STOP_AND_COPY) {
            *passes = pass;
            return true;
        }
    }
}

unsigned precopy_throttle_step(struct throttle_state *t, uint64_t dirtied, uint64_t sent,
                               unsigned initial, unsigned increment, unsigned max)
{
    t->hot_passes = dirtied > sent / 2 ? t->hot_passes + 1 : 0;
    if (t->hot_passes >= 2) {
        t->hot_passes = 0;
        unsigned next = t->percent ? t->percent + increment : initial;
        t->percent = next < max ? next : max;
    }
    return t->percent;
}
