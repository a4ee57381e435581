/* migration-cmds.h: the monitor commands of migration (QMP and HMP). */
#ifndef TERN_MIGRATION_CMDS_H
#define TERN_MIGRATION_CMDS_H

/* Add migrate, migrate-incoming, migrate_cancel, query-migrate,
 * migrate-set-parameters, query-migrate-parameters and their HMP forms
 * (migrate [-d], migrate_incoming, migrate_cancel, info migrate,
 * migrate_set_parameter, info migrate_parameters) to the command table.
 * They act on (mig). Call on the main thread; later calls only replace (mig). */
struct migration;
void migration_commands_register(struct migration *mig);

#endif
