/* tern-dump.c: print and verify a Tern migration stream or checkpoint file with the stream's own reader. */
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tern/channel-file.h"
#include "tern/channel.h"
#include "tern/util.h"
#include "tern-dump.h"

/* The walk itself, and what it checks: tern-dump-lib.c. */

/* ---- Opening the input ---- */

static struct channel *open_input(const char *path, bool *is_file, GError **errp)
{
    GError *err = NULL;
    struct channel *ch;
    int fd;

    if (strcmp(path, "-")) {
        ch = channel_file_open(path, &err);
        if (ch) {
            *is_file = true;
            return ch;
        }
        if (!g_error_matches(err, TERN_ERROR, TERN_ERROR_INVALID)) {
            g_propagate_error(errp, err);
            return NULL;
        }
        g_clear_error(&err); /* not a regular file: read it as a pipe */
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: %s", path, g_strerror(errno));
            return NULL;
        }
    } else {
        fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "stdin: %s", g_strerror(errno));
            return NULL;
        }
    }
    return channel_socket_new(fd, strcmp(path, "-") ? path : "stdin");
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: tern-dump [--verify] [--json] [--quiet] FILE\n"
               "Print and check a Tern migration stream: a checkpoint file (migrate file:PATH)\n"
               "or the source-to-target bytes of a live migration; FILE '-' is stdin\n"
               "(not for checkpoints, which are read at fixed offsets).\n"
               "\n"
               "  --verify  print only the verdict (on stderr when bad); exit 0 only if\n"
               "            the stream is complete through END and intact: framing, every\n"
               "            CRC (records and checkpoint pages), order, bodies, FDT blobs,\n"
               "            no trailing bytes\n"
               "  --json    one JSON document: header, records, passes, verdict\n"
               "  --quiet   no output unless the stream is bad\n"
               "\n"
               "Exit status: 0 the stream is OK, 1 it is not (the verdict says why),\n"
               "2 usage error or the file cannot be opened.\n");
}

int main(int argc, char **argv)
{
    struct dump_opts o = { 0 };
    struct channel *ch;
    GError *err = NULL;
    bool is_file = false;
    int i, rc;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verify")) {
            o.verify = true;
        } else if (!strcmp(argv[i], "--json")) {
            o.json = true;
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            o.quiet = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tern-dump: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (argc - i != 1) {
        usage(stderr);
        return 2;
    }
    ch = open_input(argv[i], &is_file, &err);
    if (!ch) {
        fprintf(stderr, "tern-dump: %s\n", err->message);
        g_error_free(err);
        return 2;
    }
    rc = dump_channel(&o, argv[i], ch, is_file, stdout, stderr);
    channel_close(ch);
    return rc;
}
