/* qmp.h: the QMP server: QEMU's JSON wire protocol over unix sockets (several
 * clients at once) or any chardev, and sessions that tests can drive directly. */
#ifndef TERN_QMP_H
#define TERN_QMP_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>

struct machine;
struct qmp_session;

/* Where a session's output goes: one complete JSON message per call (text),
 * ending in "\r\n". */
typedef void qmp_output_fn(void *opaque, const char *text, size_t len);

/* Limits on hostile clients, all here (docs/security-limits.md lists them).
 * Per request: its size (or bytes buffered without completing one), nesting
 * depth of [ and {, one string or literal; a refused request is answered
 * once and the rest of it skipped, but a client that keeps sending one for
 * QMP_MAX_DISCARD more bytes is closed. */
#define QMP_MAX_REQUEST (1024 * 1024)
#define QMP_MAX_DEPTH 1024
#define QMP_MAX_TOKEN (64 * 1024)
#define QMP_MAX_DISCARD (16 * 1024 * 1024)
/* Per socket server and client: clients at once (one more gets an error and
 * is closed), replies queued for a client that does not read (it is closed),
 * and the input and output held for all clients together (the biggest user
 * is closed). */
#define QMP_MAX_CLIENTS 16
#define QMP_MAX_OUTPUT (4 * 1024 * 1024)
#define QMP_MAX_MEMORY (32 * 1024 * 1024)
/* A socket client that stops in the middle of a request for this long is
 * closed; the environment variable TERN_QMP_STALL_MS overrides it (tests). */
#define QMP_STALL_TIMEOUT_MS 60000

/* A new session on (m) writing through (out) with (opaque); the greeting is
 * written at once. Events reach it once capabilities are negotiated. */
struct qmp_session *qmp_session_new(struct machine *m, qmp_output_fn *out, void *opaque);
void qmp_session_free(struct qmp_session *s);
/* Feed (len) bytes (buf) from the client: any number of requests, or parts of
 * one; every complete request is answered before this returns. */
void qmp_session_feed(struct qmp_session *s, const void *buf, size_t len);
/* True once the client kept sending an oversized request: close it. */
bool qmp_session_wants_close(const struct qmp_session *s);
/* True while part of a request is held (or being skipped). */
bool qmp_session_partial(const struct qmp_session *s);
/* Bytes of input the session holds. */
size_t qmp_session_buffered(const struct qmp_session *s);
/* True after a successful qmp_capabilities. */
bool qmp_session_negotiated(const struct qmp_session *s);

/* The -qmp option: "unix:PATH,server[,nowait]" listens and accepts any number
 * of clients, each its own session; other chardev specs ("stdio") serve one
 * session at a time. May be called several times. */
bool qmp_server_start(struct machine *m, const char *spec, GError **errp);
/* Deliver queued events, flush what clients can take, close every server and
 * client, remove socket files. Call before exit (main thread). */
void qmp_server_stop_all(void);

#endif
