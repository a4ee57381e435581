/* machine-state.h: the whole non-RAM state of a paused machine as one FDT blob,
 * and a fresh KVM VM on the same RAM: what checkpoints, migration and tests use. */
#ifndef TERN_MACHINE_STATE_H
#define TERN_MACHINE_STATE_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>

struct machine;
struct kvm;

/* Blob with nodes cpu@N, vm, devices/<id>. The machine must be paused.
 * Returns a g_malloc'd packed FDT and its size in (len). */
void *machine_save_state(struct machine *m, size_t *len, GError **errp);
/* Load a blob made by machine_save_state() (validated first). Paused machine. */
bool machine_load_state(struct machine *m, const void *fdt, size_t len, GError **errp);
/* The accelerator, for migration's dirty log and for KVM tests. */
struct kvm *machine_kvm(struct machine *m);

/* Replace the KVM VM and vCPUs by new ones over the same RAM (paused). */
bool machine_rebuild_vm(struct machine *m, GError **errp);

#endif
