/* monitor-hmp.c: the human monitor: line parsing, argument templates, help,
 * and consoles on chardevs. Commands come from the shared table (commands.h). */
#include "tern/hmp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tern/chardev.h"
#include "tern/commands.h"
#include "tern/machine.h"

#define HMP_MAX_PENDING_LINES 64

struct hmp_session {
    int refcount;
    bool closed;
    struct machine *m;
    hmp_output_fn *out;
    void *opaque;
    bool interactive;
    bool tty;
    bool suspended;
    GString *line; /* the line being typed */
    bool line_too_long;
    bool last_cr;   /* swallow the "\n" of "\r\n" */
    GQueue pending; /* complete lines not run yet (char *) */
    bool running;   /* inside hmp_session_process(): no re-entry */
};

/* ---- output ---- */

void hmp_session_puts(struct hmp_session *hs, const char *text)
{
    if (hs->closed || !hs->out) {
        return;
    }
    g_autoptr(GString) s = g_string_sized_new(strlen(text) + 16);
    for (const char *p = text; *p; p++) {
        if (*p == '\n' && (p == text || p[-1] != '\r')) {
            g_string_append_c(s, '\r');
        }
        g_string_append_c(s, *p);
    }
    if (s->len) {
        hs->out(hs->opaque, s->str, s->len);
    }
}

void hmp_session_printf(struct hmp_session *hs, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    hmp_session_puts(hs, text);
}

static void hmp_print_error(struct hmp_session *hs, const GError *err)
{
    hmp_session_printf(hs, "Error: %s\n", err->message);
}

/* ---- argument templates ---- */

static void skip_spaces(const char **p)
{
    while (**p == ' ' || **p == '\t') {
        (*p)++;
    }
}

/* One word at (*p), unquoting "..." with \" \\ \n \t escapes. */
static char *read_word(const char **p, GError **errp)
{
    const char *s = *p;
    GString *w = g_string_new(NULL);

    if (*s == '"') {
        s++;
        while (*s && *s != '"') {
            char c = *s++;
            if (c == '\\') {
                switch (*s) {
                case 'n':
                    c = '\n';
                    break;
                case 't':
                    c = '\t';
                    break;
                case '"':
                    c = '"';
                    break;
                case '\\':
                    c = '\\';
                    break;
                case '\0':
                    continue;
                default:
                    c = *s;
                    break;
                }
                s++;
            }
            g_string_append_c(w, c);
        }
        if (*s != '"') {
            g_string_free(w, TRUE);
            g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "unterminated string literal");
            return NULL;
        }
        s++;
    } else {
        while (*s && *s != ' ' && *s != '\t') {
            g_string_append_c(w, *s++);
        }
    }
    *p = s;
    return g_string_free(w, FALSE);
}

static bool parse_bool_word(const char *w, bool *out)
{
    static const char *const yes[] = { "on", "true", "yes", NULL };
    static const char *const no[] = { "off", "false", "no", NULL };

    for (unsigned i = 0; yes[i]; i++) {
        if (!g_ascii_strcasecmp(w, yes[i])) {
            *out = true;
            return true;
        }
        if (!g_ascii_strcasecmp(w, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Turn (text) into arguments as (tmpl) (see commands.h) describes. */
static JsonObject *hmp_parse_args(const char *tmpl, const char *text, GError **errp)
{
    g_autoptr(JsonObject) args = json_object_new();
    g_auto(GStrv) items = g_strsplit(tmpl ? tmpl : "", " ", -1);
    const char *p = text;
    unsigned first_pos = 0;

    /* Flags come first: "-d:detach". */
    for (;;) {
        skip_spaces(&p);
        if (*p != '-') {
            break;
        }
        size_t len = strcspn(p, " \t");
        bool matched = false;
        for (unsigned i = 0; items[i]; i++) {
            const char *colon = strchr(items[i], ':');
            if (items[i][0] == '-' && colon && (size_t)(colon - items[i]) == len &&
                !strncmp(items[i], p, len)) {
                json_object_set_boolean_member(args, colon + 1, true);
                matched = true;
                break;
            }
        }
        if (!matched) {
            break; /* maybe a negative number for a positional */
        }
        p += len;
    }
    while (items[first_pos] && items[first_pos][0] == '-') {
        first_pos++;
    }

    for (unsigned i = first_pos; items[i]; i++) {
        const char *item = items[i];
        const char *colon = strchr(item, ':');
        if (!item[0] || !colon || !colon[1] || item[0] == '-') {
            continue; /* empty (double space) or a misplaced flag: template bug */
        }
        g_autofree char *name = g_strndup(item, (gsize)(colon - item));
        char type = colon[1];
        bool optional = colon[2] == '?';

        skip_spaces(&p);
        if (!*p) {
            if (optional) {
                continue;
            }
            g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Parameter '%s' is missing",
                        name);
            return NULL;
        }
        if (type == 'S') {
            g_autofree char *rest = g_strchomp(g_strdup(p));
            json_object_set_string_member(args, name, rest);
            p += strlen(p);
            continue;
        }
        g_autofree char *word = read_word(&p, errp);
        if (!word) {
            return NULL;
        }
        switch (type) {
        case 's':
            json_object_set_string_member(args, name, word);
            break;
        case 'i': {
            char *end;
            errno = 0;
            gint64 v = g_ascii_strtoll(word, &end, 0);
            if (!word[0] || *end || errno) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "'%s' is not a valid integer for '%s'", word, name);
                return NULL;
            }
            json_object_set_int_member(args, name, v);
            break;
        }
        case 'n': {
            char *end;
            double v = g_ascii_strtod(word, &end);
            if (!word[0] || *end) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "'%s' is not a valid number for '%s'", word, name);
                return NULL;
            }
            json_object_set_double_member(args, name, v);
            break;
        }
        case 'b': {
            bool v;
            if (!parse_bool_word(word, &v)) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "'%s' is not on or off for '%s'", word, name);
                return NULL;
            }
            json_object_set_boolean_member(args, name, v);
            break;
        }
        default:
            g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "bad argument template '%s'",
                        item);
            return NULL;
        }
    }
    skip_spaces(&p);
    if (*p) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    "extraneous characters at the end of line");
        return NULL;
    }
    return g_steal_pointer(&args);
}

/* ---- help ---- */

struct help_ctx {
    GPtrArray *lines;
    bool info; /* list "info" subcommands instead */
};

static void help_collect(const struct command *cmd, void *opaque)
{
    struct help_ctx *ctx = opaque;
    const char *name = ctx->info ? cmd->hmp_info : cmd->hmp_name;

    if (!name) {
        return;
    }
    g_ptr_array_add(ctx->lines,
                    g_strdup_printf("%s%s%s%s -- %s", ctx->info ? "info " : "", name,
                                    cmd->hmp_usage ? " " : "", cmd->hmp_usage ? cmd->hmp_usage : "",
                                    cmd->help ? cmd->help : ""));
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void hmp_print_help_list(struct hmp_session *hs, bool info)
{
    struct help_ctx ctx = { g_ptr_array_new_with_free_func(g_free), info };

    commands_foreach(help_collect, &ctx);
    if (!info) {
        g_ptr_array_add(ctx.lines, g_strdup("info [subcommand] -- show various information "
                                            "about the system state"));
    }
    g_ptr_array_sort(ctx.lines, compare_strings);
    for (guint i = 0; i < ctx.lines->len; i++) {
        hmp_session_printf(hs, "%s\n", (const char *)ctx.lines->pdata[i]);
    }
    g_ptr_array_free(ctx.lines, TRUE);
}

static bool hmp_cmd_help(struct hmp_session *hs, struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)errp;
    const char *name = json_object_get_string_member_with_default(args, "name", NULL);

    if (!name) {
        hmp_print_help_list(hs, false);
        return true;
    }
    if (!strcmp(name, "info")) {
        hmp_print_help_list(hs, true);
        return true;
    }
    const struct command *cmd = commands_lookup_hmp(name);
    if (!cmd && g_str_has_prefix(name, "info ")) {
        cmd = commands_lookup_info(name + 5);
    }
    if (!cmd) {
        hmp_session_printf(hs, "unknown command: '%s'\n", name);
        return true;
    }
    struct help_ctx ctx = { g_ptr_array_new_with_free_func(g_free), cmd->hmp_name == NULL };
    help_collect(cmd, &ctx);
    for (guint i = 0; i < ctx.lines->len; i++) {
        hmp_session_printf(hs, "%s\n", (const char *)ctx.lines->pdata[i]);
    }
    g_ptr_array_free(ctx.lines, TRUE);
    return true;
}

/* QMP's way into this monitor: registered from here, so the command table
 * does not depend on HMP. */
static JsonNode *cmd_human_monitor_command(struct machine *m, JsonObject *args, GError **errp)
{
    (void)errp;
    const char *line = json_object_get_string_member(args, "command-line");
    g_autofree char *text = hmp_execute_capture(m, line);
    JsonNode *node = json_node_new(JSON_NODE_VALUE);
    json_node_set_string(node, text);
    return node;
}

static const struct cmd_arg args_human_monitor_command[] = {
    { "command-line", CMD_ARG_STRING, false },
    { "cpu-index", CMD_ARG_INT, true },
    CMD_ARGS_END,
};

static const struct command hmp_builtin_commands[] = {
    {
        .hmp_name = "help|?",
        .hmp_args = "name:S?",
        .hmp_usage = "[cmd]",
        .help = "show the help",
        .hmp_handler = hmp_cmd_help,
    },
    {
        .name = "human-monitor-command",
        .args = args_human_monitor_command,
        .handler = cmd_human_monitor_command,
    },
};

void hmp_commands_register(void)
{
    static bool done;

    if (!done) {
        done = true;
        commands_register(hmp_builtin_commands, G_N_ELEMENTS(hmp_builtin_commands));
    }
}

/* ---- running one line ---- */

static void hmp_run_command(struct hmp_session *hs, const struct command *cmd, const char *rest)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) args = hmp_parse_args(cmd->hmp_args, rest, &err);

    if (!args) {
        hmp_print_error(hs, err);
        return;
    }
    if (cmd->hmp_handler) {
        if (!cmd->hmp_handler(hs, hs->m, args, &err)) {
            if (err) {
                hmp_print_error(hs, err);
            } else {
                hmp_session_puts(hs, "Error: command failed\n");
            }
        }
        return;
    }
    /* Same handler as QMP: HMP template names are the QMP argument names. */
    g_autoptr(JsonNode) ret = NULL;
    if (cmd->name) {
        ret = commands_dispatch(cmd, hs->m, args, &err);
    } else {
        ret = cmd->handler(hs->m, args, &err);
    }
    if (err) {
        hmp_print_error(hs, err);
        return;
    }
    if (cmd->hmp_format) {
        g_autoptr(GString) text = g_string_new(NULL);
        cmd->hmp_format(text, ret);
        hmp_session_puts(hs, text->str);
    }
}

void hmp_session_execute(struct hmp_session *hs, const char *line)
{
    const char *p = line;

    skip_spaces(&p);
    if (!*p) {
        return;
    }
    size_t len = strcspn(p, " \t");
    g_autofree char *word = g_strndup(p, len);
    p += len;

    const struct command *cmd;
    if (!strcmp(word, "info")) {
        skip_spaces(&p);
        if (!*p) {
            hmp_print_help_list(hs, true);
            return;
        }
        size_t slen = strcspn(p, " \t");
        g_autofree char *sub = g_strndup(p, slen);
        p += slen;
        cmd = commands_lookup_info(sub);
        if (!cmd) {
            hmp_session_printf(hs, "unknown command: 'info %s'\n", sub);
            return;
        }
    } else {
        cmd = commands_lookup_hmp(word);
        if (!cmd) {
            hmp_session_printf(hs, "unknown command: '%s'\n", word);
            return;
        }
    }
    hmp_run_command(hs, cmd, p);
}

/* ---- sessions ---- */

static void hmp_print_prompt(struct hmp_session *hs)
{
    if (hs->interactive && !hs->closed) {
        hmp_session_puts(hs, HMP_PROMPT);
    }
}

/* Run queued lines until none are left or a command suspends the session. */
static void hmp_session_process(struct hmp_session *hs)
{
    if (hs->running) {
        return; /* a command resumed its own session: the outer loop goes on */
    }
    hs->running = true;
    hmp_session_ref(hs);
    char *line;
    while (!hs->suspended && !hs->closed && (line = g_queue_pop_head(&hs->pending))) {
        hmp_session_execute(hs, line);
        g_free(line);
        if (!hs->suspended) {
            hmp_print_prompt(hs);
        }
    }
    hs->running = false;
    hmp_session_unref(hs);
}

struct hmp_session *hmp_session_new(struct machine *m, hmp_output_fn *out, void *opaque,
                                    bool interactive)
{
    struct hmp_session *hs = g_new0(struct hmp_session, 1);

    hs->refcount = 1;
    hs->m = m;
    hs->out = out;
    hs->opaque = opaque;
    hs->interactive = interactive;
    hs->line = g_string_new(NULL);
    g_queue_init(&hs->pending);
    if (interactive) {
        hmp_session_printf(hs, "Tern %d.%d.%d monitor - type 'help' for more information\n",
                           TERN_VERSION_MAJOR, TERN_VERSION_MINOR, TERN_VERSION_MICRO);
        hmp_print_prompt(hs);
    }
    return hs;
}

struct hmp_session *hmp_session_ref(struct hmp_session *hs)
{
    hs->refcount++;
    return hs;
}

void hmp_session_unref(struct hmp_session *hs)
{
    if (--hs->refcount > 0) {
        return;
    }
    g_queue_clear_full(&hs->pending, g_free);
    g_string_free(hs->line, TRUE);
    g_free(hs);
}

void hmp_session_free(struct hmp_session *hs)
{
    if (!hs) {
        return;
    }
    hs->closed = true;
    hs->out = NULL;
    hmp_session_unref(hs);
}

bool hmp_session_is_closed(const struct hmp_session *hs)
{
    return hs->closed;
}

void hmp_session_feed(struct hmp_session *hs, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    for (size_t i = 0; i < len && !hs->closed; i++) {
        uint8_t c = p[i];
        if (hs->last_cr && c == '\n') {
            hs->last_cr = false;
            continue;
        }
        hs->last_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            if (hs->line_too_long) {
                hmp_session_printf(hs, "Error: line longer than %d bytes ignored\n", HMP_MAX_LINE);
                hmp_print_prompt(hs);
            } else if (g_queue_get_length(&hs->pending) >= HMP_MAX_PENDING_LINES) {
                /* Suspended and flooded: drop rather than grow without bound. */
            } else {
                g_queue_push_tail(&hs->pending, g_strdup(hs->line->str));
            }
            g_string_truncate(hs->line, 0);
            hs->line_too_long = false;
        } else if (c == 0x08 || c == 0x7f) {
            if (hs->line->len) {
                g_string_truncate(hs->line, hs->line->len - 1);
            }
        } else if (c == '\t') {
            g_string_append_c(hs->line, ' ');
        } else if (c < 0x20) {
            /* other control bytes (telnet NULs, escape sequences) are ignored */
        } else if (hs->line->len >= HMP_MAX_LINE) {
            hs->line_too_long = true;
        } else {
            g_string_append_c(hs->line, (char)c);
        }
    }
    hmp_session_process(hs);
}

bool hmp_session_suspend(struct hmp_session *hs)
{
    if (!hs->interactive || hs->closed) {
        return false;
    }
    hs->suspended = true;
    return true;
}

void hmp_session_resume(struct hmp_session *hs)
{
    if (!hs->suspended) {
        return;
    }
    hs->suspended = false;
    if (hs->closed) {
        return;
    }
    hmp_print_prompt(hs);
    hmp_session_process(hs);
}

bool hmp_session_is_tty(const struct hmp_session *hs)
{
    return hs->tty && !hs->closed;
}

static void capture_output(void *opaque, const char *text, size_t len)
{
    g_string_append_len(opaque, text, (gssize)len);
}

char *hmp_execute_capture(struct machine *m, const char *line)
{
    GString *text = g_string_new(NULL);
    struct hmp_session *hs = hmp_session_new(m, capture_output, text, false);

    hmp_session_execute(hs, line);
    hmp_session_free(hs);
    return g_string_free(text, FALSE);
}

/* ---- consoles on chardevs (-monitor) ---- */

struct hmp_monitor {
    struct machine *m;
    struct chardev *chr;
    struct hmp_session *session;
};

static GPtrArray *hmp_monitors;

static void hmp_monitor_output(void *opaque, const char *text, size_t len)
{
    struct hmp_monitor *mon = opaque;
    chardev_write(mon->chr, text, len);
}

static void hmp_monitor_connect(void *opaque, bool connected)
{
    struct hmp_monitor *mon = opaque;

    if (mon->session) {
        hmp_session_free(mon->session);
        mon->session = NULL;
    }
    if (connected) {
        mon->session = hmp_session_new(mon->m, hmp_monitor_output, mon, true);
        mon->session->tty = chardev_is_tty(mon->chr);
    }
}

static void hmp_monitor_input(void *opaque, const uint8_t *buf, size_t len)
{
    struct hmp_monitor *mon = opaque;

    if (mon->session) {
        hmp_session_feed(mon->session, buf, len);
    }
}

bool hmp_monitor_start(struct machine *m, const char *spec, GError **errp)
{
    struct chardev *chr = chardev_open(spec, errp);

    if (!chr) {
        return false;
    }
    struct hmp_monitor *mon = g_new0(struct hmp_monitor, 1);
    mon->m = m;
    mon->chr = chr;
    if (!hmp_monitors) {
        hmp_monitors = g_ptr_array_new();
    }
    g_ptr_array_add(hmp_monitors, mon);
    chardev_set_handlers(chr, hmp_monitor_input, hmp_monitor_connect, mon);
    if (chardev_is_connected(chr)) {
        hmp_monitor_connect(mon, true);
    }
    return true;
}

void hmp_monitor_stop_all(void)
{
    if (!hmp_monitors) {
        return;
    }
    for (guint i = 0; i < hmp_monitors->len; i++) {
        struct hmp_monitor *mon = hmp_monitors->pdata[i];
        hmp_session_free(mon->session);
        mon->session = NULL;
        chardev_close(mon->chr);
        g_free(mon);
    }
    g_ptr_array_free(hmp_monitors, TRUE);
    hmp_monitors = NULL;
}
