/* tern-dump.h: tern-dump's walk over one input (tern-dump-lib.c), for its main and the fuzzer. */
#ifndef TERN_DUMP_H
#define TERN_DUMP_H

#include <stdbool.h>
#include <stdio.h>

struct channel;

struct dump_opts {
    bool verify; /* only the verdict (on (errf) when bad) */
    bool json;   /* one JSON document */
    bool quiet;  /* nothing unless bad */
};

/* Read, check and report the stream on (ch) (a file channel if (is_file):
 * checkpoints need one), named (path) in the report, which goes to (out);
 * a bad verdict goes to (errf) when the options say so. Does not close (ch).
 * Returns tern-dump's exit status: 0 the stream is OK, 1 it is not. */
int dump_channel(const struct dump_opts *o, const char *path, struct channel *ch, bool is_file,
                 FILE *out, FILE *errf);

#endif
