/* events.h: asynchronous monitor events (QMP "event" messages). */
#ifndef TERN_EVENTS_H
#define TERN_EVENTS_H

#include <json-glib/json-glib.h>

/* Emit event (name) with (data) (a JSON object; may be NULL; ownership is
 * taken) to every QMP client that finished negotiation. Callable from any
 * thread: delivery happens on the main loop, in emission order, each event
 * stamped with the time of this call. */
void event_emit(const char *name, JsonObject *data);

/* Delivery hook installed by the QMP server (NULL: events are dropped). The
 * sink runs on the main loop; (data) may be NULL and stays owned by the caller
 * (ref it to keep it). */
typedef void event_sink_fn(const char *name, JsonObject *data, gint64 usec_since_epoch,
                           void *opaque);
void event_set_sink(event_sink_fn *sink, void *opaque);

/* Deliver every queued event now, on the calling (main) thread; for use
 * before the main loop exits so SHUTDOWN reaches the clients. */
void event_flush(void);

#endif
