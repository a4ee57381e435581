/* events.c: queue events from any thread and deliver them in order on the main loop. */
#include "tern/events.h"

#include <stdbool.h>

struct pending_event {
    char *name;
    JsonObject *data;
    gint64 usec;
};

/* One queue and at most one idle source: delivery order is emission order. */
static GMutex event_lock;
static GQueue event_queue = G_QUEUE_INIT;
static bool event_idle_scheduled;
static event_sink_fn *event_sink;
static void *event_sink_opaque;

static void pending_event_free(struct pending_event *ev)
{
    if (ev->data) {
        json_object_unref(ev->data);
    }
    g_free(ev->name);
    g_free(ev);
}

static void event_deliver_all(void)
{
    GQueue batch = G_QUEUE_INIT;

    g_mutex_lock(&event_lock);
    batch = event_queue;
    g_queue_init(&event_queue);
    event_idle_scheduled = false;
    g_mutex_unlock(&event_lock);

    struct pending_event *ev;
    while ((ev = g_queue_pop_head(&batch))) {
        if (event_sink) {
            event_sink(ev->name, ev->data, ev->usec, event_sink_opaque);
        }
        pending_event_free(ev);
    }
}

static gboolean event_idle_cb(gpointer opaque)
{
    (void)opaque;
    event_deliver_all();
    return G_SOURCE_REMOVE;
}

void event_emit(const char *name, JsonObject *data)
{
    struct pending_event *ev = g_new0(struct pending_event, 1);

    ev->name = g_strdup(name);
    ev->data = data;
    g_mutex_lock(&event_lock);
    /* Stamped under the lock so timestamps never go backwards in the queue. */
    ev->usec = g_get_real_time();
    g_queue_push_tail(&event_queue, ev);
    if (!event_idle_scheduled) {
        event_idle_scheduled = true;
        g_idle_add_full(G_PRIORITY_DEFAULT, event_idle_cb, NULL, NULL);
    }
    g_mutex_unlock(&event_lock);
}

void event_set_sink(event_sink_fn *sink, void *opaque)
{
    event_sink = sink;
    event_sink_opaque = opaque;
}

void event_flush(void)
{
    /* A stale idle source may still fire later; it then finds an empty queue. */
    event_deliver_all();
}
