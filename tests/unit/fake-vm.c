/* fake-vm.c: what migration asks of a VM beyond machine.h (machine-state.h and
 * the accelerator's dirty log), without KVM: a scripted guest that writes a
 * few pages between dirty-log syncs, and state blobs that record what was
 * loaded. Pairs with fake-machine.c. */
#include "fake-vm.h"

#include <libfdt.h>
#include <string.h>

#include "tern/accel.h"
#include "tern/bitmap.h"
#include "tern/machine-state.h"
#include "tern/memory.h"
#include "tern/util.h"

static struct fake_guest guest;
static unsigned loaded_vcpus, loaded_vm, incoming_finished, incoming_failed;

void fake_vm_reset(const struct fake_guest *g)
{
    guest = *g;
    loaded_vcpus = loaded_vm = incoming_finished = incoming_failed = 0;
}

unsigned fake_vm_syncs(void)
{
    return guest.syncs;
}

unsigned fake_vm_loaded_vcpus(void)
{
    return loaded_vcpus;
}

unsigned fake_vm_loaded_vm(void)
{
    return loaded_vm;
}

bool fake_vm_incoming_done(bool *ok)
{
    *ok = incoming_finished > 0;
    return incoming_finished + incoming_failed > 0;
}

/* ---- the accelerator's dirty log: the scripted guest runs between syncs ---- */

bool accel_dirty_log_start(struct accel *a, GError **errp)
{
    (void)a, (void)errp;
    guest.logging = true;
    return true;
}

bool accel_dirty_log_stop(struct accel *a, GError **errp)
{
    (void)a, (void)errp;
    guest.logging = false;
    return true;
}

/* Each sync, the guest has written its hot pages again (with the sync number,
 * so the target can tell which pass's data it holds). */
bool accel_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp)
{
    (void)a, (void)errp;
    guest.syncs++;
    for (unsigned i = 0; i < guest.hot_pages; i++) {
        uint64_t gfn = guest.first_hot_gfn + i;
        uint8_t *page = guest_ram_ptr(guest.ram, gfn * GUEST_PAGE_SIZE, GUEST_PAGE_SIZE);
        memset(page, (int)(0x40 + guest.syncs), GUEST_PAGE_SIZE);
        bitmap_set_range(gfn_bitmap, gfn, 1);
    }
    return true;
}

const char *accel_dirty_log_mode(const struct accel *a)
{
    (void)a;
    return "fake";
}

void accel_cpuid_fingerprint(const struct accel *a, uint32_t *nr_entries, uint8_t sha256[32])
{
    (void)a;
    *nr_entries = 1;
    memset(sha256, 0x5a, 32);
}

struct accel *machine_accel(struct machine *m)
{
    (void)m;
    return NULL; /* only ever handed back to the fakes above */
}

/* ---- state blobs: an FDT with one node, as the real machine makes ---- */

static void *blob(const char *node, size_t *len)
{
    size_t size = 256;
    void *fdt = g_malloc0(size);
    if (fdt_create_empty_tree(fdt, (int)size) || fdt_add_subnode(fdt, 0, node) < 0)
        g_error("fake-vm: cannot build a state blob");
    fdt_pack(fdt);
    *len = fdt_totalsize(fdt);
    return fdt;
}

void *machine_save_vcpu(struct machine *m, unsigned index, size_t *len, GError **errp)
{
    (void)m, (void)errp;
    g_autofree char *node = g_strdup_printf("cpu@%u", index);
    return blob(node, len);
}

void *machine_save_vm(struct machine *m, size_t *len, GError **errp)
{
    (void)m, (void)errp;
    return blob("vm", len);
}

void *machine_save_device(struct machine *m, unsigned index, size_t *len, GError **errp)
{
    (void)m, (void)index, (void)len, (void)errp;
    g_error("fake-vm: the fake machine has no devices");
}

bool machine_load_vcpu(struct machine *m, unsigned index, const void *fdt, size_t len,
                       GError **errp)
{
    (void)m, (void)index, (void)fdt, (void)len, (void)errp;
    loaded_vcpus++;
    return true;
}

bool machine_load_vm(struct machine *m, const void *fdt, size_t len, GError **errp)
{
    (void)m, (void)fdt, (void)len, (void)errp;
    loaded_vm++;
    return true;
}

bool machine_load_device(struct machine *m, const char *id, const void *fdt, size_t len,
                         GError **errp)
{
    (void)m, (void)fdt, (void)len;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "no device '%s'", id);
    return false;
}

unsigned machine_device_count(struct machine *m)
{
    (void)m;
    return 0;
}

const struct device *machine_device(struct machine *m, unsigned index)
{
    (void)m, (void)index;
    return NULL;
}

void machine_migration_pause(struct machine *m, bool *was_running)
{
    *was_running = machine_runstate(m) == RUNSTATE_RUNNING;
    fake_machine_set_runstate(m, RUNSTATE_FINISH_MIGRATE);
}

void machine_migration_finish(struct machine *m, bool success, bool was_running)
{
    fake_machine_set_runstate(m, success       ? RUNSTATE_POSTMIGRATE
                                 : was_running ? RUNSTATE_RUNNING
                                               : RUNSTATE_PAUSED);
}

bool machine_incoming_finish(struct machine *m)
{
    fake_machine_set_runstate(m, RUNSTATE_RUNNING);
    g_atomic_int_inc(&incoming_finished);
    return true;
}

void machine_incoming_failed(struct machine *m)
{
    (void)m;
    g_atomic_int_inc(&incoming_failed);
}

bool machine_start_paused(struct machine *m)
{
    (void)m;
    return false;
}

void machine_set_throttle(struct machine *m, unsigned percent)
{
    (void)m, (void)percent;
}
