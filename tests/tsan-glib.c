/* tsan-glib.c: ThreadSanitizer builds only (-Dtsan=true, linked whole into
 * everything that links core). GLib is not built with TSan: its GMutex and
 * GCond are futexes and atomics TSan cannot see, so every lock in Tern would
 * look like no lock, and work handed to the main loop (g_idle_add from a
 * vCPU or migration thread) like a race. These wrappers call GLib's own
 * functions (dlsym RTLD_NEXT) and tell TSan what they did, with its mutex and
 * acquire/release annotations: lock-order inversions are reported too. */
#include <dlfcn.h>
#include <glib.h>
#include <sanitizer/tsan_interface.h>

/* GLib's own (name), looked up once; a benign race between two first calls
 * stores the same pointer twice. */
#define REAL(type, name) \
    static type real; \
    type fn = __atomic_load_n(&real, __ATOMIC_ACQUIRE); \
    if (!fn) { \
        fn = (type)dlsym(RTLD_NEXT, #name); \
        if (!fn) \
            g_error("tsan-glib: %s not found", #name); \
        __atomic_store_n(&real, fn, __ATOMIC_RELEASE); \
    }

typedef void mutex_fn(GMutex *);
typedef gboolean trylock_fn(GMutex *);
typedef void cond_wait_fn(GCond *, GMutex *);
typedef gboolean cond_wait_until_fn(GCond *, GMutex *, gint64);
typedef guint idle_add_full_fn(gint, GSourceFunc, gpointer, GDestroyNotify);
typedef guint timeout_add_full_fn(gint, guint, GSourceFunc, gpointer, GDestroyNotify);
typedef void invoke_full_fn(GMainContext *, gint, GSourceFunc, gpointer, GDestroyNotify);

void g_mutex_init(GMutex *mutex)
{
    REAL(mutex_fn *, g_mutex_init);
    fn(mutex);
    __tsan_mutex_create(mutex, 0);
}

void g_mutex_clear(GMutex *mutex)
{
    REAL(mutex_fn *, g_mutex_clear);
    __tsan_mutex_destroy(mutex, 0);
    fn(mutex);
}

void g_mutex_lock(GMutex *mutex)
{
    REAL(mutex_fn *, g_mutex_lock);
    __tsan_mutex_pre_lock(mutex, 0);
    fn(mutex);
    __tsan_mutex_post_lock(mutex, 0, 0);
}

gboolean g_mutex_trylock(GMutex *mutex)
{
    REAL(trylock_fn *, g_mutex_trylock);
    __tsan_mutex_pre_lock(mutex, __tsan_mutex_try_lock);
    gboolean ok = fn(mutex);
    __tsan_mutex_post_lock(mutex, __tsan_mutex_try_lock | (ok ? 0 : __tsan_mutex_try_lock_failed),
                           0);
    return ok;
}

void g_mutex_unlock(GMutex *mutex)
{
    REAL(mutex_fn *, g_mutex_unlock);
    __tsan_mutex_pre_unlock(mutex, 0);
    fn(mutex);
    __tsan_mutex_post_unlock(mutex, 0);
}

/* A wait unlocks (mutex) and locks it again before returning. */
static void cond_wait_unlocked(GMutex *mutex)
{
    __tsan_mutex_pre_unlock(mutex, 0);
    __tsan_mutex_post_unlock(mutex, 0);
}

static void cond_wait_relocked(GMutex *mutex)
{
    __tsan_mutex_pre_lock(mutex, 0);
    __tsan_mutex_post_lock(mutex, 0, 0);
}

void g_cond_wait(GCond *cond, GMutex *mutex)
{
    REAL(cond_wait_fn *, g_cond_wait);
    cond_wait_unlocked(mutex);
    fn(cond, mutex);
    cond_wait_relocked(mutex);
}

gboolean g_cond_wait_until(GCond *cond, GMutex *mutex, gint64 end_time)
{
    REAL(cond_wait_until_fn *, g_cond_wait_until);
    cond_wait_unlocked(mutex);
    gboolean ok = fn(cond, mutex, end_time);
    cond_wait_relocked(mutex);
    return ok;
}

/* ---- main-loop hand-offs: what the poster wrote before posting, the
 * callback sees (GLib's context lock makes it so; TSan cannot see it) ---- */

struct hop {
    GSourceFunc fn;
    gpointer data;
    GDestroyNotify notify;
};

static gboolean hop_run(gpointer opaque)
{
    struct hop *h = opaque;
    __tsan_acquire(h);
    return h->fn(h->data);
}

static void hop_free(gpointer opaque)
{
    struct hop *h = opaque;
    __tsan_acquire(h);
    if (h->notify)
        h->notify(h->data);
    g_free(h);
}

static struct hop *hop_new(GSourceFunc fn, gpointer data, GDestroyNotify notify)
{
    struct hop *h = g_new(struct hop, 1);
    h->fn = fn;
    h->data = data;
    h->notify = notify;
    __tsan_release(h);
    return h;
}

guint g_idle_add_full(gint priority, GSourceFunc function, gpointer data, GDestroyNotify notify)
{
    REAL(idle_add_full_fn *, g_idle_add_full);
    return fn(priority, hop_run, hop_new(function, data, notify), hop_free);
}

guint g_idle_add(GSourceFunc function, gpointer data)
{
    return g_idle_add_full(G_PRIORITY_DEFAULT_IDLE, function, data, NULL);
}

guint g_timeout_add_full(gint priority, guint interval, GSourceFunc function, gpointer data,
                         GDestroyNotify notify)
{
    REAL(timeout_add_full_fn *, g_timeout_add_full);
    return fn(priority, interval, hop_run, hop_new(function, data, notify), hop_free);
}

void g_main_context_invoke(GMainContext *context, GSourceFunc function, gpointer data)
{
    REAL(invoke_full_fn *, g_main_context_invoke_full);
    fn(context, G_PRIORITY_DEFAULT, hop_run, hop_new(function, data, NULL), hop_free);
}
