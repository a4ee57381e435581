/* fake-migration.h: knobs of the fake migration backend (fake-migration.c)
 * that the migration command tests drive instead of a real migration. */
#ifndef TERN_TESTS_FAKE_MIGRATION_H
#define TERN_TESTS_FAKE_MIGRATION_H

#include "tern/migration.h"

/* Back to no migration, default parameters, no scripted errors, zero counters. */
void fake_migration_reset(void);
/* What migration_info() reports from now on: (status), (stats), and
 * (error_desc) (copied; NULL for none). */
void fake_migration_set_status(enum mig_status status);
void fake_migration_set_stats(const struct mig_stats *stats);
void fake_migration_set_error_desc(const char *error_desc);
/* Make the next migration_start() / every migration_cancel() fail with (msg)
 * (NULL: succeed). */
void fake_migration_fail_start(const char *msg);
void fake_migration_fail_cancel(const char *msg);
/* Calls seen so far, and the last URI given to migration_start() or incoming_start(). */
unsigned fake_migration_start_calls(void);
unsigned fake_migration_cancel_calls(void);
unsigned fake_migration_incoming_calls(void);
unsigned fake_migration_set_params_calls(void);
/* migration_info() calls: each look of the HMP migrate watcher is one. */
unsigned fake_migration_info_calls(void);
const char *fake_migration_last_uri(void);

#endif
