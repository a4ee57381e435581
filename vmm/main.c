/* main.c: the tern command line (QEMU-style single-dash options) and the main loop. */
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/commands.h"
#include "tern/hmp.h"
#include "tern/machine.h"
#include "tern/migration-cmds.h"
#include "tern/migration.h"
#include "tern/migration-params.h"
#include "tern/qmp.h"
#include "tern/tls-creds.h"
#include "tern/util.h"

/* The build's version: meson's project version and its option version_suffix
 * (tern-next, the second build for hand-over tests, adds "-next"). */
#ifndef TERN_VERSION_SUFFIX
#define TERN_VERSION_SUFFIX ""
#endif
#define TERN_VERSION_STRING "0.1.0" TERN_VERSION_SUFFIX
#define TERN_PACKAGE_STRING TERN_PACKAGE TERN_VERSION_SUFFIX

static gchar *opt_mem = NULL;
static gint opt_smp = 1;
static gchar *opt_kernel = NULL;
static gchar *opt_append = NULL;
static gchar *opt_serial = NULL;
static gchar *opt_monitor = NULL;
static gchar **opt_qmp = NULL;
static gboolean opt_paused = FALSE;
static gchar *opt_incoming = NULL;
static gchar *opt_accel = NULL;
static gchar *opt_migrate_mode = NULL;
static gchar **opt_object = NULL;
static gboolean opt_version = FALSE;

static const GOptionEntry options[] = {
    { "m", 0, 0, G_OPTION_ARG_STRING, &opt_mem, "guest RAM size (512M, 1G, 16G ...; default 512M)",
      "SIZE" },
    { "smp", 0, 0, G_OPTION_ARG_INT, &opt_smp, "number of vCPUs (default 1)", "N" },
    { "kernel", 0, 0, G_OPTION_ARG_FILENAME, &opt_kernel,
      "PVH ELF kernel (default: the embedded test guest)", "PATH" },
    { "append", 0, 0, G_OPTION_ARG_STRING, &opt_append, "kernel command line", "STRING" },
    { "serial", 0, 0, G_OPTION_ARG_STRING, &opt_serial,
      "COM1: stdio | file:PATH | unix:PATH,server,nowait | none", "DEV" },
    { "monitor", 0, 0, G_OPTION_ARG_STRING, &opt_monitor,
      "HMP console: stdio | unix:PATH,server,nowait", "DEV" },
    { "qmp", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_qmp,
      "QMP server: unix:PATH,server,nowait (repeatable)", "DEV" },
    { "S", 0, 0, G_OPTION_ARG_NONE, &opt_paused, "start paused (resume with cont)", NULL },
    { "incoming", 0, 0, G_OPTION_ARG_STRING, &opt_incoming,
      "wait for an incoming migration (tcp:HOST:PORT, unix:PATH, file:PATH, defer)", "URI" },
    { "migrate-mode", 0, 0, G_OPTION_ARG_STRING, &opt_migrate_mode,
      "the migration parameter mode before anything starts: normal | cpr-transfer (a target for a "
      "local hand-over)",
      "MODE" },
    { "accel", 0, 0, G_OPTION_ARG_STRING, &opt_accel,
      "kvm[,dirty-ring-size=N] | emu (the software CPU) | auto (default: KVM if /dev/kvm opens, "
      "else emu)",
      "ACCEL" },
    { "object", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_object,
      "tls-creds-x509,id=ID,dir=DIR[,endpoint=client|server][,verify-peer=on|off] | "
      "tls-creds-psk,id=ID,dir=DIR[,endpoint=...][,username=NAME] | "
      "authz-simple,id=ID,identity=DN (repeatable; see docs/tls.md)",
      "TYPE,..." },
    { "version", 0, 0, G_OPTION_ARG_NONE, &opt_version, "print the version", NULL },
    { NULL },
};

static bool option_takes_value(const char *name)
{
    for (const GOptionEntry *e = options; e->long_name; e++)
        if (!strcmp(e->long_name, name))
            return e->arg != G_OPTION_ARG_NONE;
    return false;
}

/* QEMU users type -m, -smp, -S: GOption wants --m, --smp, --S. Rewrite option
 * words (never option values) from one dash to two. */
static char **qemu_style_argv(int argc, char **argv)
{
    char **out = g_new0(char *, argc + 1);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool is_option = i > 0 && a[0] == '-' && a[1] && a[1] != '-';
        out[i] = is_option ? g_strconcat("-", a, NULL) : g_strdup(a);
        if (is_option && option_takes_value(a + 1) && !strchr(a, '=') && i + 1 < argc) {
            i++;
            out[i] = g_strdup(argv[i]);
        }
    }
    return out;
}

/* -accel kvm[,dirty-ring-size=N] | emu | auto, QEMU's spelling ("tcg" means emu). */
static bool parse_accel(const char *spec, struct machine_config *cfg, GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(spec, ",", -1);
    if (!parts[0] || !accel_kind_parse(parts[0], &cfg->accel)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "-accel %s: unknown accelerator (kvm, emu or auto)", spec);
        return false;
    }
    for (gchar **p = parts + 1; *p; p++) {
        char *end;
        if (cfg->accel == ACCEL_KVM && g_str_has_prefix(*p, "dirty-ring-size=")) {
            unsigned long n = strtoul(*p + strlen("dirty-ring-size="), &end, 0);
            if (!*end && n <= UINT32_MAX) {
                cfg->dirty_ring_size = n;
                continue;
            }
        }
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "-accel: bad property '%s'", *p);
        return false;
    }
    return true;
}

/* -migrate-mode MODE: the parameter "mode", as migrate-set-parameters sets it. */
static bool set_migrate_mode(struct migration *mig, const char *text, GError **errp)
{
    const struct mig_param_desc *d = mig_param_find("mode");
    struct mig_params p;
    uint64_t value;

    if (!mig_param_parse_text(d, text, &value, errp))
        return false;
    migration_get_params(mig, &p);
    mig_param_set(&p, d, value);
    return migration_set_params(mig, &p, errp);
}

static gboolean on_signal(gpointer opaque)
{
    machine_quit(opaque);
    return G_SOURCE_REMOVE;
}

static bool start_monitors(struct machine *m, struct migration *mig, GError **errp)
{
    migration_commands_register(mig);
    hmp_commands_register();
    for (gchar **q = opt_qmp; q && *q; q++)
        if (!qmp_server_start(m, *q, errp))
            return false;
    if (opt_monitor && !hmp_monitor_start(m, opt_monitor, errp))
        return false;
    return true;
}

int main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) args = qemu_style_argv(argc, argv);
    g_autoptr(GOptionContext) ctx = g_option_context_new("- a KVM VMM built for live migration");

    /* A reader of stdout or a log that goes away must not kill the VM. */
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit must fail the write (EFBIG), not kill the VM. */
    signal(SIGXFSZ, SIG_IGN);
    g_option_context_add_main_entries(ctx, options, NULL);
    /* The strv variant frees the words it consumes; the argc/argv one drops them. */
    if (!g_option_context_parse_strv(ctx, &args, &err)) {
        fprintf(stderr, "tern: %s\n", err->message);
        return 1;
    }
    if (opt_version) {
        printf("tern %s\n", TERN_VERSION_STRING);
        return 0;
    }
    if (g_strv_length(args) > 1) {
        fprintf(stderr, "tern: unexpected argument '%s'\n", args[1]);
        return 1;
    }

    for (guint i = 0; opt_object && opt_object[i]; i++) {
        if (!tls_object_add(opt_object[i], &err)) {
            fprintf(stderr, "tern: -object: %s\n", err->message);
            return 1;
        }
    }

    struct machine_config cfg = {
        .smp = opt_smp > 0 ? (unsigned)opt_smp : 0,
        .kernel = opt_kernel,
        .append = opt_append,
        .start_paused = opt_paused,
        .incoming = opt_incoming,
    };
    if (parse_size(opt_mem ? opt_mem : "512M", &cfg.ram_size) < 0) {
        fprintf(stderr, "tern: -m %s: not a size (try 512M, 1G, 16G)\n", opt_mem);
        return 1;
    }
    if (opt_smp < 1) {
        fprintf(stderr, "tern: -smp %d: need at least one vCPU\n", opt_smp);
        return 1;
    }
    if (opt_accel && !parse_accel(opt_accel, &cfg, &err)) {
        fprintf(stderr, "tern: %s\n", err->message);
        return 1;
    }
    /* Like QEMU -nographic: the serial port is the terminal unless the monitor is. */
    bool monitor_on_stdio = opt_monitor && !strcmp(opt_monitor, "stdio");
    cfg.serial = opt_serial ? opt_serial : monitor_on_stdio ? "none" : "stdio";

    struct machine *m = machine_create(&cfg, &err);
    if (!m) {
        fprintf(stderr, "tern: %s\n", err->message);
        return 1;
    }
    /* The migration object is ours, handed to its commands: the machine
     * knows nothing of migration. */
    struct migration *mig = migration_new(m);
    if (opt_migrate_mode && !set_migrate_mode(mig, opt_migrate_mode, &err)) {
        fprintf(stderr, "tern: -migrate-mode: %s\n", err->message);
        migration_free(mig);
        machine_destroy(m);
        return 1;
    }
    commands_set_package(TERN_PACKAGE_STRING);
    bool listen = opt_incoming && strcmp(opt_incoming, "defer") != 0;
    if (!start_monitors(m, mig, &err) || !machine_start(m, &err) ||
        (listen && !incoming_start(mig, opt_incoming, &err))) {
        fprintf(stderr, "tern: %s\n", err->message);
        migration_free(mig);
        machine_destroy(m);
        return 1;
    }
    g_unix_signal_add(SIGINT, on_signal, m);
    g_unix_signal_add(SIGTERM, on_signal, m);
    g_main_loop_run(machine_main_loop(m));

    /* Deliver what is queued (the SHUTDOWN event), then remove the sockets. */
    qmp_server_stop_all();
    hmp_monitor_stop_all();
    migration_free(mig);
    int status = machine_exit_status(m);
    machine_destroy(m);
    tls_objects_clear();
    return status;
}
