/* cpus.c: vCPU threads. Pausing sets a flag and kicks; a vCPU parks only after
 * the guest returned from a kick, so any pending PIO/MMIO has completed. */
#include <sys/syscall.h>
#include <unistd.h>

#include "tern/cpus.h"
#include "tern/util.h"

struct vcpu_thread {
    struct cpus *cpus; /* fixed */
    struct accel_vcpu *vcpu;
    GThread *thread; /* set under cpus->lock by cpus_start() (main thread) */
    int tid;         /* atomic: set by the thread itself, read by monitors */
    /* Under cpus->lock: */
    bool parked;           /* out of the guest and waiting */
    bool stopped;          /* stopped itself on an event; waits for resume */
    gint64 throttle_until; /* monotonic µs: sleep until then (auto-converge) */
};

struct cpus {
    struct io_bus *bus; /* fixed after cpus_create() */
    cpus_event_fn *on_event;
    void *opaque;
    unsigned n;
    struct vcpu_thread *threads;
    GMutex lock; /* guards the fields below and each thread's */
    GCond cond;  /* parked count changed, or a request changed */
    bool pause_requested;
    bool quit;
    unsigned nr_parked;
    unsigned throttle_pct; /* share of time vCPUs are kept out of the guest */
    GThread *throttler;
};

/* Throttling works in slices: a vCPU runs one slice, then sleeps long enough
 * that sleeping is (throttle_pct)% of the period, as QEMU's cpu-throttle does. */
#define THROTTLE_SLICE_US 10000

/* Park until neither a pause nor a self-stop holds this vCPU. False on quit. */
static bool wait_until_runnable(struct vcpu_thread *t)
{
    struct cpus *c = t->cpus;
    bool run;

    g_mutex_lock(&c->lock);
    while (!c->quit) {
        if (c->pause_requested || t->stopped) {
            if (!t->parked) {
                t->parked = true;
                c->nr_parked++;
                g_cond_broadcast(&c->cond);
            }
            g_cond_wait(&c->cond, &c->lock);
        } else if (t->throttle_until > g_get_monotonic_time()) {
            /* Throttled: a pause or quit still wakes us (broadcast). */
            g_cond_wait_until(&c->cond, &c->lock, t->throttle_until);
        } else {
            break;
        }
    }
    if (t->parked) {
        t->parked = false;
        c->nr_parked--;
    }
    run = !c->quit;
    /* Cleared under the lock: a pause request made after this point kicks again. */
    if (run)
        accel_vcpu_clear_kick(t->vcpu);
    g_mutex_unlock(&c->lock);
    return run;
}

static gpointer vcpu_thread_main(gpointer opaque)
{
    struct vcpu_thread *t = opaque;
    struct cpus *c = t->cpus;
    enum vcpu_run_result r = VCPU_RUN_KICKED;

    accel_vcpu_bind_thread(t->vcpu);
    __atomic_store_n(&t->tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);

    for (;;) {
        if (r == VCPU_RUN_KICKED && !wait_until_runnable(t))
            break;
        g_autoptr(GError) err = NULL;
        r = accel_vcpu_run(t->vcpu, c->bus, &err);
        if (r == VCPU_RUN_OK || r == VCPU_RUN_KICKED)
            continue;
        g_mutex_lock(&c->lock);
        t->stopped = true;
        g_mutex_unlock(&c->lock);
        c->on_event(c->opaque, accel_vcpu_index(t->vcpu), r, err);
        r = VCPU_RUN_KICKED;
    }
    return NULL;
}

struct cpus *cpus_create(struct accel *accel, unsigned n, struct io_bus *bus,
                         cpus_event_fn *on_event, void *opaque, GError **errp)
{
    struct cpus *c = g_new0(struct cpus, 1);
    c->bus = bus;
    c->on_event = on_event;
    c->opaque = opaque;
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->threads = g_new0(struct vcpu_thread, n);
    for (unsigned i = 0; i < n; i++) {
        c->threads[i].cpus = c;
        c->threads[i].vcpu = accel_vcpu_create(accel, i, errp);
        if (!c->threads[i].vcpu) {
            cpus_destroy(c);
            return NULL;
        }
        c->n++;
    }
    return c;
}

void cpus_destroy(struct cpus *c)
{
    if (!c)
        return;
    cpus_set_throttle(c, 0);
    g_mutex_lock(&c->lock);
    c->quit = true;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->n; i++)
        if (c->threads[i].thread)
            accel_vcpu_kick(c->threads[i].vcpu);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->threads[i].thread)
            g_thread_join(c->threads[i].thread);
        accel_vcpu_destroy(c->threads[i].vcpu);
    }
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_free(c->threads);
    g_free(c);
}

void cpus_start(struct cpus *c, bool paused)
{
    /* Under the lock like every other access to these: a new thread blocks
     * on it in wait_until_runnable() until all are started. */
    g_mutex_lock(&c->lock);
    c->pause_requested = paused;
    for (unsigned i = 0; i < c->n; i++) {
        g_autofree char *name = g_strdup_printf("vcpu%u", i);
        c->threads[i].thread = g_thread_new(name, vcpu_thread_main, &c->threads[i]);
    }
    g_mutex_unlock(&c->lock);
}

void cpus_pause_all(struct cpus *c)
{
    g_mutex_lock(&c->lock);
    c->pause_requested = true;
    g_cond_broadcast(&c->cond); /* throttled sleepers park at once */
    g_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->n; i++)
        accel_vcpu_kick(c->threads[i].vcpu);
    g_mutex_lock(&c->lock);
    while (c->nr_parked < c->n && c->threads[0].thread)
        g_cond_wait(&c->cond, &c->lock);
    g_mutex_unlock(&c->lock);
}

void cpus_resume_all(struct cpus *c)
{
    g_mutex_lock(&c->lock);
    c->pause_requested = false;
    for (unsigned i = 0; i < c->n; i++)
        c->threads[i].stopped = false;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

bool cpus_paused(struct cpus *c)
{
    g_mutex_lock(&c->lock);
    bool paused = c->pause_requested;
    g_mutex_unlock(&c->lock);
    return paused;
}

unsigned cpus_count(const struct cpus *c)
{
    return c->n;
}

struct accel_vcpu *cpus_vcpu(struct cpus *c, unsigned index)
{
    return index < c->n ? c->threads[index].vcpu : NULL;
}

int cpus_thread_id(struct cpus *c, unsigned index)
{
    return index < c->n ? __atomic_load_n(&c->threads[index].tid, __ATOMIC_ACQUIRE) : 0;
}

static gpointer throttler_main(gpointer opaque)
{
    struct cpus *c = opaque;

    g_mutex_lock(&c->lock);
    while (!c->quit && c->throttle_pct) {
        gint64 now = g_get_monotonic_time();
        gint64 sleep = (gint64)THROTTLE_SLICE_US * c->throttle_pct / (100 - c->throttle_pct);
        for (unsigned i = 0; i < c->n; i++)
            c->threads[i].throttle_until = now + sleep;
        g_mutex_unlock(&c->lock);
        for (unsigned i = 0; i < c->n; i++)
            accel_vcpu_kick(c->threads[i].vcpu);
        g_mutex_lock(&c->lock);
        gint64 next = now + sleep + THROTTLE_SLICE_US;
        while (!c->quit && c->throttle_pct && g_get_monotonic_time() < next)
            g_cond_wait_until(&c->cond, &c->lock, next);
    }
    g_mutex_unlock(&c->lock);
    return NULL;
}

void cpus_set_throttle(struct cpus *c, unsigned percent)
{
    GThread *stop = NULL;

    percent = MIN(percent, 99);
    g_mutex_lock(&c->lock);
    c->throttle_pct = percent;
    if (!percent) {
        for (unsigned i = 0; i < c->n; i++)
            c->threads[i].throttle_until = 0;
        stop = c->throttler;
        c->throttler = NULL;
    } else if (!c->throttler) {
        c->throttler = g_thread_new("throttle", throttler_main, c);
    }
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    if (stop)
        g_thread_join(stop);
}

unsigned cpus_throttle(struct cpus *c)
{
    g_mutex_lock(&c->lock);
    unsigned pct = c->throttle_pct;
    g_mutex_unlock(&c->lock);
    return pct;
}
