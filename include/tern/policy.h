/* policy.h: when pre-copy stops iterating and switches over. A replaceable
 * function over per-pass statistics (Xen's precopy_policy idea), so tests can
 * force an exact number of passes and nothing depends on timing. */
#ifndef TERN_POLICY_H
#define TERN_POLICY_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

struct precopy_stats {
    uint32_t pass;              /* passes completed so far (1 after the first) */
    uint64_t remaining_bytes;   /* dirty bytes to send if we stopped now */
    double bandwidth;           /* bytes/s measured while the channel was busy; 0 unknown */
    uint64_t fixed_cost_ns;     /* measured or estimated cost of the pause beyond
                                     * sending pages: saving state, the target's load, RESUMED */
    uint64_t downtime_limit_ns; /* downtime-limit */
    uint32_t forced_passes;     /* x-passes: 0 = decide by downtime */
    double dirty_rate;          /* bytes/s dirtied during the last pass */
};

enum precopy_decision {
    PRECOPY_CONTINUE,      /* another live pass */
    PRECOPY_STOP_AND_COPY, /* pause the guest and finish */
};

typedef enum precopy_decision precopy_policy_fn(const struct precopy_stats *s, void *opaque);

/* remaining / bandwidth + fixed cost: what pausing now would cost, in ns.
 * Unknown bandwidth (0) gives UINT64_MAX. */
uint64_t precopy_expected_downtime_ns(const struct precopy_stats *s);

/* Default: with forced_passes, stop after exactly that many passes; otherwise
 * stop when the expected downtime fits downtime_limit_ns. */
enum precopy_decision precopy_default_policy(const struct precopy_stats *s, void *opaque);

/* The fixed cost of the pause the default policy assumes: saving the state
 * (~0.4 ms a vCPU here) and loading it, plus twice the measured round trip
 * (rtt_ns) to a target; for a checkpoint file (no target), the tail and an fsync. */
uint64_t precopy_fixed_cost_ns(uint64_t rtt_ns, bool to_file);

/* One live pass (pass, from 1): send, sync the dirty log, and fill (*out)
 * with what the policy needs. False with (errp) set on failure. */
typedef bool precopy_pass_fn(void *opaque, uint32_t pass, struct precopy_stats *out, GError **errp);

/* The pre-copy loop: run passes until (policy) says stop and copy; (*passes)
 * is then the number of live passes run. False as soon as a pass fails. */
bool precopy_run_passes(precopy_policy_fn *policy, void *policy_opaque, precopy_pass_fn *do_pass,
                        void *opaque, uint32_t *passes, GError **errp);

/* Auto-converge (QEMU's rule): when the guest dirtied more than half of what
 * a pass sent, two passes in a row, take (initial)% of its vCPU time, then
 * (increment)% more each time it happens again, up to (max)%. */
struct throttle_state {
    unsigned percent;    /* current throttle, 0 = none */
    unsigned hot_passes; /* consecutive passes over the threshold */
};

/* Account one pass ((dirtied) bytes dirtied while (sent) bytes went out);
 * returns the throttle for the next pass. */
unsigned precopy_throttle_step(struct throttle_state *t, uint64_t dirtied, uint64_t sent,
                               unsigned initial, unsigned increment, unsigned max);

#endif
