/* qmp.c: the QMP server: splits the client byte stream into JSON values, parses
 * them with json-glib, dispatches through the command table, fans out events. */
#include "tern/qmp.h"

#include <errno.h>
#include <glib-unix.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tern/chardev.h"
#include "tern/commands.h"
#include "tern/events.h"
#include "tern/json-scan.h"

struct qmp_session {
    struct machine *m;
    qmp_output_fn *out;
    void *opaque;
    bool negotiated;
    bool wants_close;

    /* The splitter: json-scan finds where each JSON value ends by JSON's
     * lexical rules; json-glib then parses the value. */
    GString *buf;
    struct json_scan scan;
    bool discarding; /* skipping the rest of a refused value */
    size_t discarded;
};

static GList *qmp_sessions; /* every live session, for events */

/* ---- output ---- */

static void qmp_send_object(struct qmp_session *s, JsonObject *obj)
{
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    gsize len;

    json_node_set_object(root, obj);
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, &len);
    g_autofree char *line = g_strconcat(text, "\r\n", NULL);
    s->out(s->opaque, line, len + 2);
}

static void qmp_send_error(struct qmp_session *s, JsonNode *id, const char *klass, const char *desc)
{
    g_autoptr(JsonObject) reply = json_object_new();
    JsonObject *err = json_object_new();

    json_object_set_string_member(err, "class", klass);
    json_object_set_string_member(err, "desc", desc);
    json_object_set_object_member(reply, "error", err);
    if (id) {
        json_object_set_member(reply, "id", json_node_copy(id));
    }
    qmp_send_object(s, reply);
}

static void qmp_send_greeting(struct qmp_session *s)
{
    g_autoptr(JsonObject) greeting = json_object_new();
    JsonObject *qmp = json_object_new();
    JsonObject *version = json_object_new();
    JsonObject *qemu = json_object_new();

    json_object_set_int_member(qemu, "micro", TERN_VERSION_MICRO);
    json_object_set_int_member(qemu, "minor", TERN_VERSION_MINOR);
    json_object_set_int_member(qemu, "major", TERN_VERSION_MAJOR);
    json_object_set_object_member(version, "qemu", qemu);
    json_object_set_string_member(version, "package", commands_package());
    json_object_set_object_member(qmp, "version", version);
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    json_object_set_object_member(greeting, "QMP", qmp);
    qmp_send_object(s, greeting);
}

/* ---- events ---- */

static void qmp_event_sink(const char *name, JsonObject *data, gint64 usec, void *opaque)
{
    (void)opaque;
    g_autoptr(JsonObject) ev = json_object_new();
    JsonObject *ts = json_object_new();

    json_object_set_int_member(ts, "seconds", usec / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", usec % G_USEC_PER_SEC);
    json_object_set_object_member(ev, "timestamp", ts);
    json_object_set_string_member(ev, "event", name);
    if (data) {
        json_object_set_object_member(ev, "data", json_object_ref(data));
    }
    /* A session may be freed by its output callback's owner later, never
     * during this loop (closing is deferred to an idle callback). */
    for (GList *l = qmp_sessions; l; l = l->next) {
        struct qmp_session *s = l->data;
        if (s->negotiated && !s->wants_close) {
            qmp_send_object(s, ev);
        }
    }
}

/* ---- requests ---- */

static void qmp_handle_request(struct qmp_session *s, const char *text, size_t len)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;

    if (!json_parser_load_from_data(parser, text, (gssize)len, &err)) {
        /* json-glib names the input "<data>": not useful to a client. */
        const char *why = err->message;
        if (g_str_has_prefix(why, "<data>:")) {
            why += strlen("<data>:");
        }
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s", why);
        qmp_send_error(s, NULL, "GenericError", desc);
        return;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        qmp_send_error(s, NULL, "GenericError", "QMP input must be a JSON object");
        return;
    }
    JsonObject *req = json_node_get_object(root);
    JsonNode *id = json_object_get_member(req, "id");

    JsonNode *exec = json_object_get_member(req, "execute");
    if (!exec) {
        qmp_send_error(s, id, "GenericError", "QMP input lacks member 'execute'");
        return;
    }
    if (!JSON_NODE_HOLDS_VALUE(exec) || json_node_get_value_type(exec) != G_TYPE_STRING) {
        qmp_send_error(s, id, "GenericError", "QMP input member 'execute' must be a string");
        return;
    }
    JsonNode *args_node = json_object_get_member(req, "arguments");
    if (args_node && !JSON_NODE_HOLDS_OBJECT(args_node)) {
        qmp_send_error(s, id, "GenericError", "QMP input member 'arguments' must be an object");
        return;
    }
    GList *members = json_object_get_members(req);
    for (GList *l = members; l; l = l->next) {
        const char *k = l->data;
        if (strcmp(k, "execute") && strcmp(k, "arguments") && strcmp(k, "id") &&
            strcmp(k, "control")) {
            g_autofree char *desc = g_strdup_printf("QMP input member '%s' is unexpected", k);
            qmp_send_error(s, id, "GenericError", desc);
            g_list_free(members);
            return;
        }
    }
    g_list_free(members);

    const char *name = json_node_get_string(exec);
    const struct command *cmd = commands_lookup(name);
    if (!s->negotiated) {
        /* QEMU answers everything but qmp_capabilities this way, unknown names too. */
        if (!cmd || !(cmd->flags & CMD_ALLOW_PRECAPS)) {
            qmp_send_error(s, id, "CommandNotFound",
                           "Expecting capabilities negotiation with 'qmp_capabilities'");
            return;
        }
    } else if (cmd && !strcmp(cmd->name, "qmp_capabilities")) {
        qmp_send_error(s, id, "CommandNotFound",
                       "Capabilities negotiation is already complete, command ignored");
        return;
    }
    if (!cmd) {
        g_autofree char *desc = g_strdup_printf("The command %s has not been found", name);
        qmp_send_error(s, id, "CommandNotFound", desc);
        return;
    }

    JsonObject *args = args_node ? json_node_get_object(args_node) : NULL;
    g_autoptr(JsonNode) ret = commands_dispatch(cmd, s->m, args, &err);
    if (!ret) {
        qmp_send_error(s, id, command_error_class(err), err ? err->message : "failed");
        return;
    }
    if (!strcmp(cmd->name, "qmp_capabilities")) {
        s->negotiated = true;
    }
    g_autoptr(JsonObject) reply = json_object_new();
    json_object_set_member(reply, "return", g_steal_pointer(&ret));
    if (id) {
        json_object_set_member(reply, "id", json_node_copy(id));
    }
    qmp_send_object(s, reply);
}

/* ---- the splitter ---- */

static void qmp_drop_value(struct qmp_session *s)
{
    g_string_truncate(s->buf, 0);
    /* Give back the memory a huge request took. */
    if (s->buf->allocated_len > 64 * 1024) {
        g_string_free(s->buf, TRUE);
        s->buf = g_string_new(NULL);
    }
}

/* The value being read is refused: say why once, and skip the rest of it
 * (json-scan still follows its structure to find its end). */
static void qmp_refuse_value(struct qmp_session *s, const char *why)
{
    if (!s->discarding) {
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s", why);
        qmp_send_error(s, NULL, "GenericError", desc);
    }
    qmp_drop_value(s);
    s->discarding = json_scan_in_value(&s->scan);
    if (!s->discarding) {
        s->discarded = 0;
    }
}

static void qmp_keep(struct qmp_session *s, char c)
{
    if (s->discarding) {
        return;
    }
    if (s->buf->len >= QMP_MAX_REQUEST) {
        g_autofree char *why = g_strdup_printf("request larger than %d bytes", QMP_MAX_REQUEST);
        qmp_refuse_value(s, why);
        return;
    }
    g_string_append_c(s->buf, c);
}

/* A whole top-level value has been seen. */
static void qmp_value_done(struct qmp_session *s)
{
    if (s->discarding) {
        s->discarding = false;
        s->discarded = 0;
    } else if (s->buf->len) {
        qmp_handle_request(s, s->buf->str, s->buf->len);
    }
    qmp_drop_value(s);
}

void qmp_session_feed(struct qmp_session *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    const char *why = NULL;

    for (size_t i = 0; i < len && !s->wants_close; i++) {
        uint8_t c = p[i];

        if (s->discarding && ++s->discarded > QMP_MAX_DISCARD) {
            s->wants_close = true;
            break;
        }
        enum json_scan_event ev = json_scan_byte(&s->scan, c, &why);
        if (ev == JSON_SCAN_BEFORE) {
            /* A bare literal ended at (c), which starts something new. */
            qmp_value_done(s);
            ev = json_scan_byte(&s->scan, c, &why);
        }
        switch (ev) {
        case JSON_SCAN_PART:
            qmp_keep(s, (char)c);
            break;
        case JSON_SCAN_END:
            qmp_keep(s, (char)c);
            qmp_value_done(s);
            break;
        case JSON_SCAN_ERROR:
            qmp_refuse_value(s, why);
            break;
        case JSON_SCAN_SKIP:
        case JSON_SCAN_BEFORE:
            break;
        }
    }
}

bool qmp_session_partial(const struct qmp_session *s)
{
    return json_scan_in_value(&s->scan) || s->discarding;
}

size_t qmp_session_buffered(const struct qmp_session *s)
{
    return s->buf->allocated_len;
}

/* ---- sessions ---- */

struct qmp_session *qmp_session_new(struct machine *m, qmp_output_fn *out, void *opaque)
{
    struct qmp_session *s = g_new0(struct qmp_session, 1);

    s->m = m;
    s->out = out;
    s->opaque = opaque;
    s->buf = g_string_new(NULL);
    json_scan_init(&s->scan, QMP_MAX_DEPTH, QMP_MAX_TOKEN);
    qmp_sessions = g_list_append(qmp_sessions, s);
    event_set_sink(qmp_event_sink, NULL);
    qmp_send_greeting(s);
    return s;
}

void qmp_session_free(struct qmp_session *s)
{
    if (!s) {
        return;
    }
    qmp_sessions = g_list_remove(qmp_sessions, s);
    g_string_free(s->buf, TRUE);
    g_free(s);
}

bool qmp_session_wants_close(const struct qmp_session *s)
{
    return s->wants_close;
}

bool qmp_session_negotiated(const struct qmp_session *s)
{
    return s->negotiated;
}

/* ---- unix socket server: many clients ---- */

struct qmp_server;

struct qmp_client {
    struct qmp_server *srv;
    int fd;
    guint in_watch;
    guint out_watch;
    guint close_idle;
    guint stall_timer;
    gint64 last_input; /* monotonic usec of the last byte received */
    bool closing;
    GByteArray *out;
    struct qmp_session *session;
};

struct qmp_server {
    struct machine *m;
    char *path;
    int listen_fd;
    guint listen_watch;
    GList *clients;
    /* chardev-backed servers (stdio): one session at a time */
    struct chardev *chr;
    struct qmp_session *chr_session;
};

static GList *qmp_servers;

static void qmp_client_destroy(struct qmp_client *c)
{
    if (c->in_watch) {
        g_source_remove(c->in_watch);
    }
    if (c->out_watch) {
        g_source_remove(c->out_watch);
    }
    if (c->close_idle) {
        g_source_remove(c->close_idle);
    }
    if (c->stall_timer) {
        g_source_remove(c->stall_timer);
    }
    c->srv->clients = g_list_remove(c->srv->clients, c);
    qmp_session_free(c->session);
    close(c->fd);
    g_byte_array_unref(c->out);
    g_free(c);
}

static gboolean qmp_client_close_idle(gpointer opaque)
{
    struct qmp_client *c = opaque;

    c->close_idle = 0;
    qmp_client_destroy(c);
    return G_SOURCE_REMOVE;
}

/* Closing waits for the main loop: the caller may be deep inside the session. */
static void qmp_client_close_later(struct qmp_client *c)
{
    if (!c->closing) {
        c->closing = true;
        c->close_idle = g_idle_add(qmp_client_close_idle, c);
    }
}

/* Send what the socket takes now; false on a hard error. */
static bool qmp_client_flush(struct qmp_client *c)
{
    while (c->out->len) {
        ssize_t n = send(c->fd, c->out->data, c->out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN;
        }
        g_byte_array_remove_range(c->out, 0, (guint)n);
    }
    return true;
}

static gboolean qmp_client_out_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    struct qmp_client *c = opaque;

    (void)fd;
    (void)cond;
    if (c->closing || !qmp_client_flush(c)) {
        qmp_client_close_later(c);
        c->out_watch = 0;
        return G_SOURCE_REMOVE;
    }
    if (!c->out->len) {
        c->out_watch = 0;
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static size_t qmp_client_memory(const struct qmp_client *c)
{
    /* (session) is NULL while the greeting of a new client is written. */
    return c->out->len + (c->session ? qmp_session_buffered(c->session) : 0);
}

/* Over QMP_MAX_MEMORY for all clients together: close the biggest user. */
static void qmp_enforce_memory(void)
{
    struct qmp_client *biggest = NULL;
    size_t total = 0;

    for (GList *l = qmp_servers; l; l = l->next) {
        struct qmp_server *srv = l->data;
        for (GList *k = srv->clients; k; k = k->next) {
            struct qmp_client *c = k->data;
            if (c->closing) {
                continue;
            }
            size_t n = qmp_client_memory(c);
            total += n;
            if (!biggest || n > qmp_client_memory(biggest)) {
                biggest = c;
            }
        }
    }
    if (total > QMP_MAX_MEMORY && biggest) {
        qmp_client_close_later(biggest);
    }
}

static void qmp_client_output(void *opaque, const char *text, size_t len)
{
    struct qmp_client *c = opaque;

    if (c->closing) {
        return;
    }
    g_byte_array_append(c->out, (const guint8 *)text, (guint)len);
    if (!qmp_client_flush(c)) {
        qmp_client_close_later(c);
        return;
    }
    if (c->out->len > QMP_MAX_OUTPUT) {
        /* The client stopped reading: drop it rather than grow forever. */
        qmp_client_close_later(c);
        return;
    }
    if (c->out->len && !c->out_watch) {
        c->out_watch = g_unix_fd_add(c->fd, G_IO_OUT, qmp_client_out_cb, c);
    }
    qmp_enforce_memory();
}

static guint qmp_stall_timeout_ms(void)
{
    static guint ms;

    if (!ms) {
        const char *env = getenv("TERN_QMP_STALL_MS");
        guint64 v = env ? g_ascii_strtoull(env, NULL, 10) : 0;
        ms = v > 0 && v <= G_MAXUINT ? (guint)v : QMP_STALL_TIMEOUT_MS;
    }
    return ms;
}

/* Say why, as an error object, and close; best effort, never blocks. */
static void qmp_client_refuse(struct qmp_client *c, const char *desc)
{
    qmp_send_error(c->session, NULL, "GenericError", desc);
    qmp_client_flush(c);
    qmp_client_close_later(c);
}

static gboolean qmp_client_stall_cb(gpointer opaque)
{
    struct qmp_client *c = opaque;
    gint64 idle_ms = (g_get_monotonic_time() - c->last_input) / 1000;
    guint limit = qmp_stall_timeout_ms();

    c->stall_timer = 0;
    if (c->closing || !qmp_session_partial(c->session)) {
        return G_SOURCE_REMOVE;
    }
    if (idle_ms >= limit) {
        g_autofree char *desc = g_strdup_printf(
            "QMP client sent part of a request and nothing for %u ms: closed", limit);
        qmp_client_refuse(c, desc);
        return G_SOURCE_REMOVE;
    }
    c->stall_timer = g_timeout_add(limit - (guint)idle_ms, qmp_client_stall_cb, c);
    return G_SOURCE_REMOVE;
}

static gboolean qmp_client_in_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    struct qmp_client *c = opaque;
    char buf[65536];
    ssize_t n;

    (void)cond;
    if (c->closing) {
        c->in_watch = 0;
        return G_SOURCE_REMOVE;
    }
    do {
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        c->in_watch = 0;
        qmp_client_close_later(c);
        return G_SOURCE_REMOVE;
    }
    c->last_input = g_get_monotonic_time();
    qmp_session_feed(c->session, buf, (size_t)n);
    if (qmp_session_wants_close(c->session) || c->closing) {
        c->in_watch = 0;
        qmp_client_close_later(c);
        return G_SOURCE_REMOVE;
    }
    if (qmp_session_partial(c->session) && !c->stall_timer) {
        c->stall_timer = g_timeout_add(qmp_stall_timeout_ms(), qmp_client_stall_cb, c);
    }
    qmp_enforce_memory();
    return G_SOURCE_CONTINUE;
}

static gboolean qmp_listen_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    struct qmp_server *srv = opaque;

    (void)cond;
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0) {
        return G_SOURCE_CONTINUE;
    }
    if (g_list_length(srv->clients) >= QMP_MAX_CLIENTS) {
        /* What QEMU's QMP would say to a client it cannot serve. */
        g_autofree char *line = g_strdup_printf(
            "{\"error\": {\"class\": \"GenericError\", \"desc\": "
            "\"too many QMP clients (at most %d)\"}}\r\n",
            QMP_MAX_CLIENTS);
        ssize_t sent = send(cfd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent;
        close(cfd);
        return G_SOURCE_CONTINUE;
    }
    struct qmp_client *c = g_new0(struct qmp_client, 1);
    c->srv = srv;
    c->fd = cfd;
    c->out = g_byte_array_new();
    srv->clients = g_list_append(srv->clients, c);
    c->session = qmp_session_new(srv->m, qmp_client_output, c);
    c->in_watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, qmp_client_in_cb, c);
    return G_SOURCE_CONTINUE;
}

/* ---- chardev-backed server (stdio, unix client) ---- */

static void qmp_chr_output(void *opaque, const char *text, size_t len)
{
    struct qmp_server *srv = opaque;
    chardev_write(srv->chr, text, len);
}

static void qmp_chr_connect(void *opaque, bool connected)
{
    struct qmp_server *srv = opaque;

    qmp_session_free(srv->chr_session);
    srv->chr_session = connected ? qmp_session_new(srv->m, qmp_chr_output, srv) : NULL;
}

static void qmp_chr_input(void *opaque, const uint8_t *buf, size_t len)
{
    struct qmp_server *srv = opaque;

    if (!srv->chr_session) {
        return;
    }
    qmp_session_feed(srv->chr_session, buf, len);
    if (qmp_session_wants_close(srv->chr_session)) {
        /* Cannot hang up on stdio: start over with a fresh session. */
        qmp_chr_connect(srv, true);
    }
}

bool qmp_server_start(struct machine *m, const char *spec, GError **errp)
{
    struct qmp_server *srv = g_new0(struct qmp_server, 1);
    g_autofree char *path = NULL;
    bool server = false;

    srv->m = m;
    srv->listen_fd = -1;
    if (g_str_has_prefix(spec, "unix:")) {
        if (!chardev_parse_unix(spec, &path, &server, errp)) {
            g_free(srv);
            return false;
        }
    }
    if (server) {
        srv->listen_fd = chardev_unix_listen(path, errp);
        if (srv->listen_fd < 0) {
            g_free(srv);
            return false;
        }
        srv->path = g_steal_pointer(&path);
        srv->listen_watch = g_unix_fd_add(srv->listen_fd, G_IO_IN, qmp_listen_cb, srv);
    } else {
        srv->chr = chardev_open(spec, errp);
        if (!srv->chr) {
            g_free(srv);
            return false;
        }
        chardev_set_handlers(srv->chr, qmp_chr_input, qmp_chr_connect, srv);
        if (chardev_is_connected(srv->chr)) {
            qmp_chr_connect(srv, true);
        }
    }
    event_set_sink(qmp_event_sink, NULL);
    qmp_servers = g_list_append(qmp_servers, srv);
    return true;
}

/* Best effort at exit: give a client up to (ms) to take its pending output. */
static void qmp_client_drain(struct qmp_client *c, int ms)
{
    gint64 deadline = g_get_monotonic_time() + ms * 1000;

    while (c->out->len && qmp_client_flush(c)) {
        gint64 left = (deadline - g_get_monotonic_time()) / 1000;
        if (left <= 0) {
            break;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
        poll(&pfd, 1, (int)left);
    }
}

void qmp_server_stop_all(void)
{
    event_flush();
    for (GList *l = qmp_servers; l; l = l->next) {
        struct qmp_server *srv = l->data;
        while (srv->clients) {
            struct qmp_client *c = srv->clients->data;
            if (!c->closing) {
                qmp_client_drain(c, 200);
            }
            qmp_client_destroy(c);
        }
        if (srv->listen_watch) {
            g_source_remove(srv->listen_watch);
        }
        if (srv->listen_fd >= 0) {
            close(srv->listen_fd);
            unlink(srv->path);
        }
        if (srv->chr) {
            qmp_session_free(srv->chr_session);
            chardev_close(srv->chr);
        }
        g_free(srv->path);
        g_free(srv);
    }
    g_list_free(qmp_servers);
    qmp_servers = NULL;
}
