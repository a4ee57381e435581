/* commands.c: the command registry and the built-in commands shared by QMP and HMP. */
#include "tern/commands.h"

#include <inttypes.h>
#include <string.h>

#include "tern/machine.h"
#include "tern/memory.h"
#include "tern/runstate.h"

G_DEFINE_QUARK(tern - command - error - quark, command_error)

const char *command_error_class(const GError *error)
{
    if (error && error->domain == COMMAND_ERROR) {
        switch ((enum command_error)error->code) {
        case COMMAND_ERROR_NOT_FOUND:
            return "CommandNotFound";
        case COMMAND_ERROR_DEVICE_NOT_ACTIVE:
            return "DeviceNotActive";
        case COMMAND_ERROR_GENERIC:
            break;
        }
    }
    return "GenericError";
}

/* ---- small JSON helpers ---- */

JsonNode *command_result_object(JsonObject *obj)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(node, obj);
    return node;
}

JsonNode *command_result_array(JsonArray *arr)
{
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(node, arr);
    return node;
}

JsonObject *command_result_as_object(JsonNode *result)
{
    return result && JSON_NODE_HOLDS_OBJECT(result) ? json_node_get_object(result) : NULL;
}

/* ---- the registry ---- */

static GPtrArray *command_list; /* const struct command *, registration order */

static void commands_ensure_builtin(void);

/* Does (word) match one of the '|'-separated names in (names)? */
static bool name_matches(const char *names, const char *word)
{
    size_t wlen = strlen(word);
    const char *p = names;

    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == wlen && !strncmp(p, word, len)) {
            return true;
        }
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

static bool hmp_names_clash(const char *a, const char *b)
{
    g_auto(GStrv) names = g_strsplit(a, "|", -1);
    for (unsigned i = 0; names[i]; i++) {
        if (name_matches(b, names[i])) {
            return true;
        }
    }
    return false;
}

void commands_register(const struct command *table, size_t count)
{
    commands_ensure_builtin();
    for (size_t i = 0; i < count; i++) {
        const struct command *c = &table[i];
        bool clash = false;
        for (guint j = 0; j < command_list->len; j++) {
            const struct command *o = command_list->pdata[j];
            if ((c->name && o->name && !strcmp(c->name, o->name)) ||
                (c->hmp_name && o->hmp_name && hmp_names_clash(c->hmp_name, o->hmp_name)) ||
                (c->hmp_info && o->hmp_info && !strcmp(c->hmp_info, o->hmp_info))) {
                clash = true;
                break;
            }
        }
        if (clash || (c->name && !c->handler) || (!c->name && !c->handler && !c->hmp_handler)) {
            g_critical("command '%s' is a duplicate or has no handler; skipped", c->name ? c->name
                                                                                 : c->hmp_name
                                                                                     ? c->hmp_name
                                                                                     : "?");
            continue;
        }
        g_ptr_array_add(command_list, (gpointer)c);
    }
}

const struct command *commands_lookup(const char *qmp_name)
{
    commands_ensure_builtin();
    for (guint i = 0; i < command_list->len; i++) {
        const struct command *c = command_list->pdata[i];
        if (c->name && !strcmp(c->name, qmp_name)) {
            return c;
        }
    }
    return NULL;
}

const struct command *commands_lookup_hmp(const char *word)
{
    commands_ensure_builtin();
    for (guint i = 0; i < command_list->len; i++) {
        const struct command *c = command_list->pdata[i];
        if (c->hmp_name && name_matches(c->hmp_name, word)) {
            return c;
        }
    }
    return NULL;
}

const struct command *commands_lookup_info(const char *word)
{
    commands_ensure_builtin();
    for (guint i = 0; i < command_list->len; i++) {
        const struct command *c = command_list->pdata[i];
        if (c->hmp_info && !strcmp(c->hmp_info, word)) {
            return c;
        }
    }
    return NULL;
}

void commands_foreach(void (*fn)(const struct command *cmd, void *opaque), void *opaque)
{
    commands_ensure_builtin();
    for (guint i = 0; i < command_list->len; i++) {
        fn(command_list->pdata[i], opaque);
    }
}

/* ---- argument checking ---- */

static const char *arg_type_name(enum cmd_arg_type t)
{
    switch (t) {
    case CMD_ARG_STRING:
        return "string";
    case CMD_ARG_INT:
        return "integer";
    case CMD_ARG_BOOL:
        return "boolean";
    case CMD_ARG_NUMBER:
        return "number";
    case CMD_ARG_OBJECT:
        return "object";
    case CMD_ARG_ARRAY:
        return "array";
    case CMD_ARG_ANY:
        return "any";
    }
    return "?";
}

static bool arg_type_ok(enum cmd_arg_type t, JsonNode *v)
{
    GType vt = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;

    switch (t) {
    case CMD_ARG_STRING:
        return vt == G_TYPE_STRING;
    case CMD_ARG_INT:
        return vt == G_TYPE_INT64;
    case CMD_ARG_BOOL:
        return vt == G_TYPE_BOOLEAN;
    case CMD_ARG_NUMBER:
        return vt == G_TYPE_INT64 || vt == G_TYPE_DOUBLE;
    case CMD_ARG_OBJECT:
        return JSON_NODE_HOLDS_OBJECT(v);
    case CMD_ARG_ARRAY:
        return JSON_NODE_HOLDS_ARRAY(v);
    case CMD_ARG_ANY:
        return true;
    }
    return false;
}

static const struct cmd_arg *arg_find(const struct command *cmd, const char *name)
{
    for (const struct cmd_arg *a = cmd->args; a && a->name; a++) {
        if (!strcmp(a->name, name)) {
            return a;
        }
    }
    return NULL;
}

bool commands_check_args(const struct command *cmd, JsonObject *args, GError **errp)
{
    /* QEMU's order: declared members first (missing, type), then leftovers. */
    for (const struct cmd_arg *a = cmd->args; a && a->name; a++) {
        JsonNode *v = args ? json_object_get_member(args, a->name) : NULL;
        if (!v) {
            if (!a->optional) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC, "Parameter '%s' is missing",
                            a->name);
                return false;
            }
            continue;
        }
        if (!arg_type_ok(a->type, v)) {
            g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                        "Invalid parameter type for '%s', expected: %s", a->name,
                        arg_type_name(a->type));
            return false;
        }
    }
    if (args) {
        /* get_members keeps the client's order, so the first stray one is named. */
        GList *names = json_object_get_members(args);
        for (GList *l = names; l; l = l->next) {
            if (!arg_find(cmd, l->data)) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "Parameter '%s' is unexpected", (const char *)l->data);
                g_list_free(names);
                return false;
            }
        }
        g_list_free(names);
    }
    return true;
}

JsonNode *commands_dispatch(const struct command *cmd, struct machine *m, JsonObject *args,
                            GError **errp)
{
    g_autoptr(JsonObject) empty = NULL;
    GError *err = NULL;

    if (!cmd->handler) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_NOT_FOUND,
                    "The command %s has not been found", cmd->name ? cmd->name : "?");
        return NULL;
    }
    if (!args) {
        args = empty = json_object_new();
    }
    if (!commands_check_args(cmd, args, errp)) {
        return NULL;
    }
    JsonNode *ret = cmd->handler(m, args, &err);
    if (err) {
        if (ret) {
            json_node_unref(ret);
        }
        g_propagate_error(errp, err);
        return NULL;
    }
    return ret ? ret : command_result_object(json_object_new());
}

/* ---- built-in commands ---- */

static JsonNode *cmd_qmp_capabilities(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    /* The greeting advertises no capabilities, so none can be enabled. */
    if (json_object_has_member(args, "enable")) {
        JsonArray *en = json_object_get_array_member(args, "enable");
        for (guint i = 0; i < json_array_get_length(en); i++) {
            JsonNode *v = json_array_get_element(en, i);
            const char *cap = JSON_NODE_HOLDS_VALUE(v) &&
                                      json_node_get_value_type(v) == G_TYPE_STRING
                                  ? json_node_get_string(v)
                                  : NULL;
            if (!cap) {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "Invalid parameter type for 'enable[%u]', expected: string", i);
            } else {
                g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                            "Capability '%s' not available", cap);
            }
            return NULL;
        }
    }
    return NULL;
}

static JsonNode *cmd_query_status(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    (void)errp;
    enum runstate s = machine_runstate(m);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "status", runstate_name(s));
    json_object_set_boolean_member(o, "singlestep", false);
    json_object_set_boolean_member(o, "running", runstate_is_running(s));
    return command_result_object(o);
}

static void fmt_status(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);
    if (!o) {
        return;
    }
    const char *status = json_object_get_string_member_with_default(o, "status", "unknown");
    if (json_object_get_boolean_member_with_default(o, "running", false)) {
        g_string_append(out, "VM status: running\n");
    } else if (!strcmp(status, "paused")) {
        g_string_append(out, "VM status: paused\n");
    } else {
        g_string_append_printf(out, "VM status: paused (%s)\n", status);
    }
}

/* QEMU's query-kvm: "enabled" when KVM runs the guest, "present" when the
 * host has it; Tern adds which accelerator runs instead. */
static JsonNode *cmd_query_kvm(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    (void)errp;
    JsonObject *o = json_object_new();
    json_object_set_boolean_member(o, "enabled", machine_accel_is_kvm(m));
    json_object_set_boolean_member(o, "present", machine_kvm_present(m));
    json_object_set_string_member(o, "x-accelerator", machine_accel_name(m));
    return command_result_object(o);
}

static void fmt_kvm(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);
    if (!o)
        return;
    bool enabled = json_object_get_boolean_member_with_default(o, "enabled", false);
    bool present = json_object_get_boolean_member_with_default(o, "present", false);
    const char *accel = json_object_get_string_member_with_default(o, "x-accelerator", "?");
    if (enabled)
        g_string_append_printf(out, "kvm support: enabled (%s)\n", accel);
    else
        g_string_append_printf(out, "kvm support: disabled (%s; running on the software CPU)\n",
                               present ? "/dev/kvm present" : "no /dev/kvm on this host");
}

static JsonNode *cmd_stop(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    machine_stop(m, errp);
    return NULL;
}

static JsonNode *cmd_cont(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    machine_cont(m, errp);
    return NULL;
}

static JsonNode *cmd_quit(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    (void)errp;
    machine_quit(m);
    return NULL;
}

static JsonNode *cmd_system_reset(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    machine_system_reset(m, errp);
    return NULL;
}

static JsonNode *cmd_query_cpus_fast(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    unsigned n = machine_vcpu_count(m);
    JsonArray *arr = json_array_new();

    for (unsigned i = 0; i < n; i++) {
        struct vcpu_info info;
        if (!machine_vcpu_info(m, i, &info, errp)) {
            json_array_unref(arr);
            return NULL;
        }
        JsonObject *props = json_object_new();
        /* One socket, one thread per core: the vCPUs are cores, as in QEMU's pc. */
        json_object_set_int_member(props, "core-id", i);
        json_object_set_int_member(props, "thread-id", 0);
        json_object_set_int_member(props, "socket-id", 0);
        JsonObject *cpu = json_object_new();
        json_object_set_int_member(cpu, "cpu-index", info.index);
        g_autofree char *qom = g_strdup_printf("/machine/unattached/device[%u]", info.index);
        json_object_set_string_member(cpu, "qom-path", qom);
        json_object_set_int_member(cpu, "thread-id", info.thread_id);
        json_object_set_object_member(cpu, "props", props);
        json_object_set_string_member(cpu, "target", "x86_64");
        json_array_add_object_element(arr, cpu);
    }
    return command_result_array(arr);
}

static void fmt_cpus(GString *out, JsonNode *result)
{
    if (!result || !JSON_NODE_HOLDS_ARRAY(result)) {
        return;
    }
    JsonArray *arr = json_node_get_array(result);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonObject *cpu = json_array_get_object_element(arr, i);
        if (!cpu) {
            continue;
        }
        /* '*' marks the monitor's current CPU, the first one. */
        g_string_append_printf(out,
                               "%c CPU #%" G_GINT64_FORMAT ": thread_id=%" G_GINT64_FORMAT "\n",
                               i == 0 ? '*' : ' ',
                               json_object_get_int_member_with_default(cpu, "cpu-index", i),
                               json_object_get_int_member_with_default(cpu, "thread-id", 0));
    }
}

static const char *package_name = TERN_PACKAGE;

void commands_set_package(const char *package)
{
    package_name = package;
}

const char *commands_package(void)
{
    return package_name;
}

static JsonNode *cmd_query_version(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    JsonObject *q = json_object_new();
    json_object_set_int_member(q, "micro", TERN_VERSION_MICRO);
    json_object_set_int_member(q, "minor", TERN_VERSION_MINOR);
    json_object_set_int_member(q, "major", TERN_VERSION_MAJOR);
    JsonObject *o = json_object_new();
    json_object_set_object_member(o, "qemu", q);
    json_object_set_string_member(o, "package", commands_package());
    return command_result_object(o);
}

static void fmt_version(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);
    JsonObject *q = o ? json_object_get_object_member(o, "qemu") : NULL;
    if (!q) {
        return;
    }
    g_string_append_printf(out,
                           "%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT " (%s)\n",
                           json_object_get_int_member(q, "major"),
                           json_object_get_int_member(q, "minor"),
                           json_object_get_int_member(q, "micro"),
                           json_object_get_string_member_with_default(o, "package", ""));
}

static void add_command_name(const struct command *cmd, void *opaque)
{
    if (cmd->name) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", cmd->name);
        json_array_add_object_element(opaque, o);
    }
}

static JsonNode *cmd_query_commands(struct machine *m, JsonObject *args, GError **errp)
{
    (void)m;
    (void)args;
    (void)errp;
    JsonArray *arr = json_array_new();
    commands_foreach(add_command_name, arr);
    return command_result_array(arr);
}

static JsonNode *cmd_ram_digest(struct machine *m, JsonObject *args, GError **errp)
{
    (void)args;
    struct guest_ram *ram = machine_ram(m);
    if (!ram || guest_ram_released(ram)) {
        g_set_error(errp, COMMAND_ERROR, COMMAND_ERROR_GENERIC,
                    ram ? "guest RAM was handed over to another process (cpr-transfer)"
                        : "guest RAM is not available");
        return NULL;
    }
    /* Runs on the main thread and reads all of RAM: slow for big guests, but
     * it is a test aid. */
    g_autofree char *digest = g_strdup_printf("%08" PRIx32, guest_ram_crc32(ram));
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "algorithm", "crc32");
    json_object_set_string_member(o, "digest", digest);
    json_object_set_int_member(o, "bytes", (gint64)ram->size);
    return command_result_object(o);
}

static void fmt_ram_digest(GString *out, JsonNode *result)
{
    JsonObject *o = command_result_as_object(result);
    if (o) {
        g_string_append_printf(out, "%s %s (%" G_GINT64_FORMAT " bytes)\n",
                               json_object_get_string_member_with_default(o, "algorithm", ""),
                               json_object_get_string_member_with_default(o, "digest", ""),
                               json_object_get_int_member_with_default(o, "bytes", 0));
    }
}

static const struct cmd_arg args_qmp_capabilities[] = {
    { "enable", CMD_ARG_ARRAY, true },
    CMD_ARGS_END,
};

static const struct command builtin_commands[] = {
    {
        .name = "qmp_capabilities",
        .args = args_qmp_capabilities,
        .handler = cmd_qmp_capabilities,
        .flags = CMD_ALLOW_PRECAPS,
    },
    {
        .name = "query-status",
        .handler = cmd_query_status,
        .hmp_info = "status",
        .help = "show the current VM status (running|paused)",
        .hmp_format = fmt_status,
    },
    {
        .name = "query-kvm",
        .handler = cmd_query_kvm,
        .hmp_info = "kvm",
        .help = "show KVM information",
        .hmp_format = fmt_kvm,
    },
    {
        .name = "stop",
        .handler = cmd_stop,
        .hmp_name = "stop|s",
        .help = "stop emulation",
    },
    {
        .name = "cont",
        .handler = cmd_cont,
        .hmp_name = "cont|c",
        .help = "resume emulation",
    },
    {
        .name = "quit",
        .handler = cmd_quit,
        .hmp_name = "quit|q",
        .help = "quit the emulator",
    },
    {
        .name = "system_reset",
        .handler = cmd_system_reset,
        .hmp_name = "system_reset",
        .help = "reset the system",
    },
    {
        .name = "query-cpus-fast",
        .handler = cmd_query_cpus_fast,
        .hmp_info = "cpus",
        .help = "show infos for each CPU",
        .hmp_format = fmt_cpus,
    },
    {
        .name = "query-version",
        .handler = cmd_query_version,
        .hmp_info = "version",
        .help = "show the version of tern",
        .hmp_format = fmt_version,
    },
    {
        .name = "query-commands",
        .handler = cmd_query_commands,
    },
    {
        .name = "x-query-ram-digest",
        .handler = cmd_ram_digest,
        .hmp_info = "ram-digest",
        .help = "show a CRC-32 of all guest RAM",
        .hmp_format = fmt_ram_digest,
    },
};

/* The built-in table goes in on first use, so other modules may register theirs
 * at any time. */
static void commands_ensure_builtin(void)
{
    if (!command_list) {
        command_list = g_ptr_array_new();
        commands_register(builtin_commands, G_N_ELEMENTS(builtin_commands));
    }
}
