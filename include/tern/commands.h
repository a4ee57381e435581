/* commands.h: the one table of monitor commands shared by QMP and HMP, and the
 * way other modules (migration, ...) add their own entries. */
#ifndef TERN_COMMANDS_H
#define TERN_COMMANDS_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>

struct machine;
struct hmp_session;

/* QMP argument types; the names in errors are QEMU's ("string", "integer",
 * "boolean", "number", "object", "array"). CMD_ARG_ANY accepts any value. */
enum cmd_arg_type {
    CMD_ARG_STRING,
    CMD_ARG_INT,
    CMD_ARG_BOOL,
    CMD_ARG_NUMBER,
    CMD_ARG_OBJECT,
    CMD_ARG_ARRAY,
    CMD_ARG_ANY,
};

struct cmd_arg {
    const char *name;
    enum cmd_arg_type type;
    bool optional;
};
/* clang-format off */
#define CMD_ARGS_END { NULL, CMD_ARG_ANY, false }
/* clang-format on */

/* Run the command on the main thread with validated (args) (never NULL; an
 * empty object when the client sent none). Return the QMP "return" value
 * (NULL means {}), or NULL with (errp) set. */
typedef JsonNode *cmd_handler_fn(struct machine *m, JsonObject *args, GError **errp);
/* Append the HMP text for (result) (a handler's return value) to (out), with
 * "\n" line ends (the monitor turns them into "\r\n"). */
typedef void cmd_format_fn(GString *out, JsonNode *result);
/* HMP behaviour that is more than "call the handler, format the result": runs
 * with the (args) parsed from the HMP template, may print to (hs) and may
 * suspend it (see hmp.h). Return false with (errp) set to print "Error: ...". */
typedef bool cmd_hmp_fn(struct hmp_session *hs, struct machine *m, JsonObject *args, GError **errp);

/* Flags. */
#define CMD_ALLOW_PRECAPS (1u << 0) /* QMP: allowed before qmp_capabilities */

/* One command. Fill what applies:
 *  - QMP: (name), (args), (handler).
 *  - HMP: (hmp_name) for a top-level command ("stop", aliases as "quit|q"),
 *    and/or (hmp_info) for "info NAME"; (hmp_args) says how to turn the words
 *    of the line into the handler's arguments; (hmp_format) prints the result.
 *    An HMP-only command (name NULL) uses (hmp_handler), or (handler) with the
 *    parsed arguments.
 *
 * HMP argument template (hmp_args): space-separated items, in order:
 *   -X:NAME    optional flag "-X" (before positional words): NAME = true
 *   NAME:s     one word (double quotes allowed) -> string
 *   NAME:S     the rest of the line -> string
 *   NAME:i     an integer -> int
 *   NAME:n     a number -> number
 *   NAME:b     on|off|true|false|yes|no -> bool
 * a '?' after the type makes the item optional ("name:s?"). */
struct command {
    const char *name;
    const struct cmd_arg *args; /* ends with CMD_ARGS_END; NULL: takes none */
    cmd_handler_fn *handler;
    unsigned flags;

    const char *hmp_name;
    const char *hmp_info;
    const char *hmp_args;
    const char *hmp_usage;     /* shown by help, e.g. "[-d] uri" */
    const char *help;          /* one line */
    cmd_format_fn *hmp_format; /* NULL: print nothing on success */
    cmd_hmp_fn *hmp_handler;   /* overrides handler + format for HMP */
};

/* Error classes: a GError in COMMAND_ERROR maps to the QMP class of its code;
 * any other GError is a GenericError. */
#define COMMAND_ERROR (command_error_quark())
GQuark command_error_quark(void);
enum command_error {
    COMMAND_ERROR_GENERIC,
    COMMAND_ERROR_NOT_FOUND,         /* "CommandNotFound" */
    COMMAND_ERROR_DEVICE_NOT_ACTIVE, /* "DeviceNotActive" */
};
/* The QMP "class" string for (error). */
const char *command_error_class(const GError *error);

/* Handler helpers: wrap (obj) / (arr) as a result node (ownership taken), and
 * the object inside a handler's (result), or NULL if it is not an object. */
JsonNode *command_result_object(JsonObject *obj);
JsonNode *command_result_array(JsonArray *arr);
JsonObject *command_result_as_object(JsonNode *result);

/* Add (count) entries of (table) (static storage; not copied). Call on the main
 * thread, before or after the servers start. A name already registered is a
 * programming error: it is reported with g_critical() and skipped. */
void commands_register(const struct command *table, size_t count);

/* Look up by QMP name, HMP name or alias, or "info" subcommand; NULL if none. */
const struct command *commands_lookup(const char *qmp_name);
const struct command *commands_lookup_hmp(const char *word);
const struct command *commands_lookup_info(const char *word);

/* Call (fn) with (opaque) for every registered command, in registration order. */
void commands_foreach(void (*fn)(const struct command *cmd, void *opaque), void *opaque);

/* Check (args) against (cmd)'s argument spec with QEMU's wording ("Parameter
 * 'x' is missing", "Invalid parameter type for 'x', expected: string",
 * "Parameter 'x' is unexpected"). */
bool commands_check_args(const struct command *cmd, JsonObject *args, GError **errp);

/* Validate (args) (NULL: none) and run (cmd) on (m). Returns the result ({} when
 * the handler returned NULL without error) or NULL with (errp) set. */
JsonNode *commands_dispatch(const struct command *cmd, struct machine *m, JsonObject *args,
                            GError **errp);

/* Version reported by the greeting, query-version and info version. */
#define TERN_VERSION_MAJOR 0
#define TERN_VERSION_MINOR 1
#define TERN_VERSION_MICRO 0
#define TERN_PACKAGE "tern"
/* The "package" string query-version and the QMP greeting report (default
 * TERN_PACKAGE): the program sets its build's version there. */
void commands_set_package(const char *package);
const char *commands_package(void);

#endif
