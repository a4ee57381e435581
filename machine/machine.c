/* machine.c: one VM: RAM, the accelerator's VM and its vCPUs, devices, run state, events. */
#include <errno.h>
#include <libfdt.h>
#include <stdio.h>
#include <string.h>

#include "tern/chardev.h"
#include "tern/cpus.h"
#include "tern/events.h"
#include "tern/ioport.h"
#include "tern/accel.h"
#include "tern/loader.h"
#include "tern/machine.h"
#include "tern/machine-state.h"
#include "tern/memory.h"
#include "tern/power.h"
#include "tern/serial.h"
#include "tern/testguest.h"
#include "tern/util.h"
#include "tern/vmstate.h"

#define MACHINE_MAX_DEVICES 8

struct machine {
    uint64_t ram_size;
    unsigned smp;
    char *append;
    bool start_paused;
    bool incoming;
    uint32_t dirty_ring_size;
    GBytes *kernel;   /* the PVH ELF, reloaded on reset */
    void *boot_state; /* vCPU/VM/device state right after loading, for reset */
    size_t boot_state_len;

    struct guest_ram *ram;
    struct accel *accel;
    enum accel_kind accel_kind;
    struct cpus *cpus;
    struct io_bus bus;
    struct chardev *serial_chr;
    struct serial *serial;
    struct power *power;
    struct device devices[MACHINE_MAX_DEVICES];
    unsigned nr_devices;

    GMainLoop *loop;
    GMutex lock; /* run state transitions */
    enum runstate state;
    int exit_status;
};

static void emit_simple(const char *event, bool guest, const char *reason)
{
    JsonObject *data = json_object_new();
    json_object_set_boolean_member(data, "guest", guest);
    json_object_set_string_member(data, "reason", reason);
    event_emit(event, data);
}

static void on_serial_irq(void *opaque, unsigned irq, bool level)
{
    struct machine *m = opaque;
    accel_set_irq_line(m->accel, irq, level);
}

/* ---- guest-initiated events arrive on vCPU threads; act on the main loop ---- */

struct deferred {
    struct machine *m;
    enum { DEFER_POWEROFF, DEFER_RESET, DEFER_ERROR } what;
    int code;
    char *message;
};

static gboolean quit_main_loop(gpointer opaque)
{
    g_main_loop_quit(opaque);
    return G_SOURCE_REMOVE;
}

static void machine_shutdown(struct machine *m, bool guest, const char *reason, int status)
{
    g_mutex_lock(&m->lock);
    if (m->cpus)
        cpus_pause_all(m->cpus);
    m->state = RUNSTATE_SHUTDOWN;
    m->exit_status = status;
    g_mutex_unlock(&m->lock);
    emit_simple("SHUTDOWN", guest, reason);
    /* Low priority: replies and events already queued go out first. */
    g_idle_add_full(G_PRIORITY_LOW, quit_main_loop, m->loop, NULL);
}

static bool machine_reset(struct machine *m, bool guest, GError **errp);

static gboolean run_deferred(gpointer opaque)
{
    struct deferred *d = opaque;
    g_autoptr(GError) err = NULL;

    switch (d->what) {
    case DEFER_POWEROFF:
        machine_shutdown(d->m, true, "guest-shutdown", d->code);
        break;
    case DEFER_RESET:
        if (!machine_reset(d->m, true, &err))
            fprintf(stderr, "tern: reset failed: %s\n", err->message);
        break;
    case DEFER_ERROR:
        fprintf(stderr, "tern: %s\n", d->message);
        g_mutex_lock(&d->m->lock);
        cpus_pause_all(d->m->cpus);
        d->m->state = RUNSTATE_INTERNAL_ERROR;
        g_mutex_unlock(&d->m->lock);
        event_emit("STOP", NULL);
        break;
    }
    g_free(d->message);
    g_free(d);
    return G_SOURCE_REMOVE;
}

static void defer(struct machine *m, int what, int code, char *message)
{
    struct deferred *d = g_new0(struct deferred, 1);
    d->m = m;
    d->what = what;
    d->code = code;
    d->message = message;
    g_main_context_invoke(NULL, run_deferred, d);
}

static void on_power_request(void *opaque, enum power_request req, int code)
{
    if (req == POWER_REQUEST_OFF)
        machine_request_poweroff(opaque, code);
    else
        machine_request_reset(opaque);
}

void machine_request_poweroff(struct machine *m, int exit_code)
{
    defer(m, DEFER_POWEROFF, exit_code, NULL);
}

void machine_request_reset(struct machine *m)
{
    defer(m, DEFER_RESET, 0, NULL);
}

static void on_vcpu_event(void *opaque, unsigned index, enum vcpu_run_result r, const GError *error)
{
    struct machine *m = opaque;

    switch (r) {
    case VCPU_RUN_SHUTDOWN:
        /* A triple fault resets the machine, as on a PC (and in QEMU). */
        fprintf(stderr, "tern: vCPU %u triple fault: resetting\n", index);
        machine_request_reset(m);
        break;
    case VCPU_RUN_RESET:
        machine_request_reset(m);
        break;
    case VCPU_RUN_POWEROFF:
        machine_request_poweroff(m, 0);
        break;
    default:
        defer(m, DEFER_ERROR, 0, g_strdup(error ? error->message : "vCPU failed"));
        break;
    }
}

/* ---- building ---- */

static bool build_vm(struct machine *m, GError **errp)
{
    struct accel_options opts = {
        .kind = m->accel_kind,
        .dirty_ring_size = m->dirty_ring_size,
        .bus = &m->bus,
    };
    m->accel = accel_open(&opts, errp);
    if (!m->accel)
        return false;
    /* A rebuilt VM (restore into a fresh VM) must not fall back differently. */
    m->accel_kind = accel_is_kvm(m->accel) ? ACCEL_KVM : ACCEL_EMU;
    for (unsigned i = 0; i < m->ram->nr_regions; i++) {
        const struct ram_region *r = &m->ram->regions[i];
        if (!accel_map_ram(m->accel, i, r->gpa, r->size, r->hva, errp))
            return false;
    }
    m->cpus = cpus_create(m->accel, m->smp, &m->bus, on_vcpu_event, m, errp);
    return m->cpus != NULL;
}

static void destroy_vm(struct machine *m)
{
    cpus_destroy(m->cpus);
    m->cpus = NULL;
    accel_close(m->accel);
    m->accel = NULL;
}

static bool load_kernel(struct machine *m, GError **errp)
{
    struct boot_info bi;
    size_t len;
    const void *image = g_bytes_get_data(m->kernel, &len);

    if (!loader_load_pvh(m->ram, image, len, m->append, &bi, errp))
        return false;
    return accel_vcpu_set_pvh_entry(cpus_vcpu(m->cpus, 0), bi.entry, bi.start_info, errp);
}

static bool read_kernel(struct machine *m, const char *path, GError **errp)
{
    if (!path) {
        size_t len = testguest_elf_end - testguest_elf_start;
        if (!len) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                        "this build has no embedded test guest: give -kernel");
            return false;
        }
        m->kernel = g_bytes_new_static(testguest_elf_start, len);
        return true;
    }
    gchar *data;
    gsize len;
    if (!g_file_get_contents(path, &data, &len, errp))
        return false;
    m->kernel = g_bytes_new_take(data, len);
    return true;
}

static bool add_devices(struct machine *m, const char *serial_spec, GError **errp)
{
    m->serial_chr = chardev_open(serial_spec ? serial_spec : "none", errp);
    if (!m->serial_chr)
        return false;
    m->serial = serial_create(&m->bus, SERIAL_COM1_BASE, SERIAL_COM1_IRQ, m->serial_chr,
                              on_serial_irq, m, errp);
    if (!m->serial)
        return false;
    m->devices[m->nr_devices++] = serial_device(m->serial);
    m->power = power_create(&m->bus, on_power_request, m, errp);
    return m->power != NULL;
}

struct machine *machine_create(const struct machine_config *cfg, GError **errp)
{
    struct machine *m = g_new0(struct machine, 1);
    m->ram_size = cfg->ram_size;
    m->smp = cfg->smp ? cfg->smp : 1;
    m->append = g_strdup(cfg->append ? cfg->append : "");
    m->start_paused = cfg->start_paused;
    m->incoming = cfg->incoming != NULL;
    m->dirty_ring_size = cfg->dirty_ring_size;
    m->accel_kind = cfg->accel;
    m->loop = g_main_loop_new(NULL, FALSE);
    g_mutex_init(&m->lock);
    io_bus_init(&m->bus);

    if (m->smp > 64) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "-smp %u: at most 64 vCPUs", m->smp);
        goto fail;
    }
    m->ram = guest_ram_create(cfg->ram_size, errp);
    if (!m->ram || !add_devices(m, cfg->serial, errp) || !build_vm(m, errp))
        goto fail;
    if (!read_kernel(m, cfg->kernel, errp) || !load_kernel(m, errp))
        goto fail;
    /* Reset returns to exactly this: every register, LAPIC, PIC, PIT. */
    m->boot_state = machine_save_state(m, &m->boot_state_len, errp);
    if (!m->boot_state)
        goto fail;
    m->state = RUNSTATE_PRELAUNCH;
    if (m->incoming) {
        /* RAM comes from the stream; start from never-touched memory so what
         * the source never sent reads as zero, as it does there. */
        guest_ram_discard(m->ram);
        m->state = RUNSTATE_INMIGRATE;
    }
    return m;

fail:
    machine_destroy(m);
    return NULL;
}

void machine_destroy(struct machine *m)
{
    if (!m)
        return;
    destroy_vm(m);
    serial_destroy(m->serial);
    power_destroy(m->power);
    chardev_close(m->serial_chr);
    io_bus_destroy(&m->bus);
    guest_ram_destroy(m->ram);
    if (m->kernel)
        g_bytes_unref(m->kernel);
    g_free(m->boot_state);
    g_main_loop_unref(m->loop);
    g_mutex_clear(&m->lock);
    g_free(m->append);
    g_free(m);
}

bool machine_start(struct machine *m, GError **errp)
{
    (void)errp;
    bool run = m->state == RUNSTATE_PRELAUNCH && !m->start_paused;
    if (run)
        m->state = RUNSTATE_RUNNING;
    cpus_start(m->cpus, !run);
    return true;
}

/* ---- run state ---- */

enum runstate machine_runstate(struct machine *m)
{
    g_mutex_lock(&m->lock);
    enum runstate s = m->state;
    g_mutex_unlock(&m->lock);
    return s;
}

bool machine_stop(struct machine *m, GError **errp)
{
    (void)errp;
    g_mutex_lock(&m->lock);
    bool was_running = m->state == RUNSTATE_RUNNING;
    if (was_running) {
        cpus_pause_all(m->cpus);
        m->state = RUNSTATE_PAUSED;
    }
    g_mutex_unlock(&m->lock);
    if (was_running)
        event_emit("STOP", NULL);
    return true;
}

/* After a cpr-transfer hand-over another process runs the guest on its RAM. */
static bool refuse_if_handed_over(struct machine *m, GError **errp)
{
    if (!guest_ram_released(m->ram))
        return false;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                "this VM's guest RAM was handed over to another process (cpr-transfer): "
                "it cannot run here again; quit this process");
    return true;
}

bool machine_cont(struct machine *m, GError **errp)
{
    if (refuse_if_handed_over(m, errp))
        return false;
    g_mutex_lock(&m->lock);
    enum runstate s = m->state;
    switch (s) {
    case RUNSTATE_INMIGRATE:
        g_mutex_unlock(&m->lock);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "Migration is not finalized yet");
        return false;
    case RUNSTATE_SHUTDOWN:
    case RUNSTATE_INTERNAL_ERROR:
        g_mutex_unlock(&m->lock);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "Resetting the Virtual Machine is required");
        return false;
    case RUNSTATE_RUNNING:
        g_mutex_unlock(&m->lock);
        return true;
    case RUNSTATE_FINISH_MIGRATE:
        g_mutex_unlock(&m->lock);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "a migration is completing: wait for it to finish or fail");
        return false;
    default:
        m->state = RUNSTATE_RUNNING;
        cpus_resume_all(m->cpus);
        g_mutex_unlock(&m->lock);
        event_emit("RESUME", NULL);
        return true;
    }
}

/* Zero RAM (without touching it), reload the kernel and the boot-time state.
 * The accelerator's VM itself stays, so memory slots and a running dirty log survive
 * (the discarded and reloaded pages are marked in Tern's own dirty bitmap). */
static bool machine_reset(struct machine *m, bool guest, GError **errp)
{
    if (refuse_if_handed_over(m, errp))
        return false;
    g_mutex_lock(&m->lock);
    bool ok = false;
    bool was_running = m->state == RUNSTATE_RUNNING;

    if (!m->boot_state) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "no kernel to reset into");
        goto out;
    }
    if (m->state == RUNSTATE_FINISH_MIGRATE) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "cannot reset while a migration is pausing the guest");
        goto out;
    }
    cpus_pause_all(m->cpus);
    guest_ram_discard(m->ram);
    serial_reset(m->serial);
    if (!load_kernel(m, errp) || !machine_load_state(m, m->boot_state, m->boot_state_len, errp)) {
        m->state = RUNSTATE_INTERNAL_ERROR;
        goto out;
    }
    if (m->state == RUNSTATE_SHUTDOWN || m->state == RUNSTATE_INTERNAL_ERROR)
        m->state = RUNSTATE_PAUSED;
    if (was_running)
        cpus_resume_all(m->cpus);
    ok = true;
out:
    g_mutex_unlock(&m->lock);
    if (ok)
        emit_simple("RESET", guest, guest ? "guest-reset" : "host-qmp-system-reset");
    return ok;
}

bool machine_system_reset(struct machine *m, GError **errp)
{
    return machine_reset(m, false, errp);
}

void machine_quit(struct machine *m)
{
    machine_shutdown(m, false, "host-qmp-quit", 0);
}

int machine_exit_status(struct machine *m)
{
    return m->exit_status;
}

struct guest_ram *machine_ram(struct machine *m)
{
    return m->ram;
}

unsigned machine_vcpu_count(struct machine *m)
{
    return m->smp;
}

bool machine_vcpu_info(struct machine *m, unsigned index, struct vcpu_info *out, GError **errp)
{
    struct vcpu_summary sum;
    if (index >= m->smp) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "no vCPU %u", index);
        return false;
    }
    if (!accel_vcpu_summary(cpus_vcpu(m->cpus, index), &sum, errp))
        return false;
    *out = (struct vcpu_info){
        .index = index,
        .thread_id = cpus_thread_id(m->cpus, index),
        .rip = sum.rip,
    };
    return true;
}

const char *machine_accel_name(struct machine *m)
{
    return accel_name(m->accel);
}

bool machine_accel_is_kvm(struct machine *m)
{
    return accel_is_kvm(m->accel);
}

bool machine_kvm_present(struct machine *m)
{
    (void)m;
    return accel_kvm_present();
}

GMainLoop *machine_main_loop(struct machine *m)
{
    return m->loop;
}

/* ---- state (machine-state.h) ---- */

typedef bool save_fn(struct machine *m, unsigned index, void *fdt, int parent, GError **errp);

/* Run (fn) into a fresh FDT, growing it while it says NOSPACE. */
static void *save_blob(struct machine *m, unsigned index, save_fn *fn, size_t *len, GError **errp)
{
    for (size_t size = 64 * KiB; size <= 64 * MiB; size *= 2) {
        g_autoptr(GError) err = NULL;
        void *fdt = vmstate_fdt_new(size);
        if (fn(m, index, fdt, 0, &err)) {
            fdt_pack(fdt);
            *len = fdt_totalsize(fdt);
            return fdt;
        }
        g_free(fdt);
        if (!g_error_matches(err, TERN_ERROR, TERN_ERROR_NOSPACE)) {
            g_propagate_error(errp, g_steal_pointer(&err));
            return NULL;
        }
    }
    g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "state does not fit 64 MiB");
    return NULL;
}

static bool save_vcpu(struct machine *m, unsigned index, void *fdt, int parent, GError **errp)
{
    return accel_vcpu_save_state(cpus_vcpu(m->cpus, index), fdt, parent, errp);
}

static bool save_vm(struct machine *m, unsigned index, void *fdt, int parent, GError **errp)
{
    (void)index;
    return accel_vm_save_state(m->accel, fdt, parent, errp);
}

static bool save_device(struct machine *m, unsigned index, void *fdt, int parent, GError **errp)
{
    const struct device *d = &m->devices[index];
    return vmstate_save(d->vmsd, d->state, fdt, parent, d->id, errp);
}

static bool save_all(struct machine *m, unsigned index, void *fdt, int parent, GError **errp)
{
    (void)index;
    for (unsigned i = 0; i < m->smp; i++)
        if (!save_vcpu(m, i, fdt, parent, errp))
            return false;
    if (!save_vm(m, 0, fdt, parent, errp))
        return false;
    int devs = fdt_add_subnode(fdt, parent, "devices");
    if (devs < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "no room for devices");
        return false;
    }
    for (unsigned i = 0; i < m->nr_devices; i++)
        if (!save_device(m, i, fdt, devs, errp))
            return false;
    return true;
}

void *machine_save_state(struct machine *m, size_t *len, GError **errp)
{
    return save_blob(m, 0, save_all, len, errp);
}

void *machine_save_vcpu(struct machine *m, unsigned index, size_t *len, GError **errp)
{
    return save_blob(m, index, save_vcpu, len, errp);
}

void *machine_save_vm(struct machine *m, size_t *len, GError **errp)
{
    return save_blob(m, 0, save_vm, len, errp);
}

void *machine_save_device(struct machine *m, unsigned index, size_t *len, GError **errp)
{
    return save_blob(m, index, save_device, len, errp);
}

static int require_node(const void *fdt, int parent, const char *name, GError **errp)
{
    int node = fdt_subnode_offset(fdt, parent, name);
    if (node < 0)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "state has no node '%s'", name);
    return node;
}

static bool load_vcpu_node(struct machine *m, unsigned index, const void *fdt, int parent,
                           GError **errp)
{
    char name[16];
    snprintf(name, sizeof(name), "cpu@%u", index);
    int node = require_node(fdt, parent, name, errp);
    return node >= 0 && accel_vcpu_load_state(cpus_vcpu(m->cpus, index), fdt, node, errp);
}

static bool load_vm_node(struct machine *m, const void *fdt, int parent, GError **errp)
{
    int node = require_node(fdt, parent, "vm", errp);
    return node >= 0 && accel_vm_load_state(m->accel, fdt, node, errp);
}

static bool load_device_node(struct machine *m, const char *id, const void *fdt, int parent,
                             GError **errp)
{
    for (unsigned i = 0; i < m->nr_devices; i++) {
        const struct device *d = &m->devices[i];
        if (strcmp(d->id, id) != 0)
            continue;
        int node = require_node(fdt, parent, id, errp);
        if (node < 0 || !vmstate_load(d->vmsd, d->state, fdt, node, errp))
            return false;
        return true;
    }
    g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "no device '%s' in this machine", id);
    return false;
}

bool machine_load_state(struct machine *m, const void *fdt, size_t len, GError **errp)
{
    if (!vmstate_fdt_check(fdt, len, errp))
        return false;
    for (unsigned i = 0; i < m->smp; i++)
        if (!load_vcpu_node(m, i, fdt, 0, errp))
            return false;
    if (!load_vm_node(m, fdt, 0, errp))
        return false;
    int devs = require_node(fdt, 0, "devices", errp);
    if (devs < 0)
        return false;
    for (unsigned i = 0; i < m->nr_devices; i++)
        if (!load_device_node(m, m->devices[i].id, fdt, devs, errp))
            return false;
    serial_sync_irq(m->serial);
    return true;
}

bool machine_load_vcpu(struct machine *m, unsigned index, const void *fdt, size_t len,
                       GError **errp)
{
    if (index >= m->smp) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "no vCPU %u", index);
        return false;
    }
    return vmstate_fdt_check(fdt, len, errp) && load_vcpu_node(m, index, fdt, 0, errp);
}

bool machine_load_vm(struct machine *m, const void *fdt, size_t len, GError **errp)
{
    return vmstate_fdt_check(fdt, len, errp) && load_vm_node(m, fdt, 0, errp);
}

bool machine_load_device(struct machine *m, const char *id, const void *fdt, size_t len,
                         GError **errp)
{
    if (!vmstate_fdt_check(fdt, len, errp) || !load_device_node(m, id, fdt, 0, errp))
        return false;
    serial_sync_irq(m->serial);
    return true;
}

unsigned machine_device_count(struct machine *m)
{
    return m->nr_devices;
}

const struct device *machine_device(struct machine *m, unsigned index)
{
    return index < m->nr_devices ? &m->devices[index] : NULL;
}

struct accel *machine_accel(struct machine *m)
{
    return m->accel;
}

bool machine_rebuild_vm(struct machine *m, GError **errp)
{
    g_mutex_lock(&m->lock);
    destroy_vm(m);
    bool ok = build_vm(m, errp);
    if (ok)
        cpus_start(m->cpus, true);
    g_mutex_unlock(&m->lock);
    return ok;
}

/* ---- migration hooks (machine-state.h) ---- */

void machine_migration_pause(struct machine *m, bool *was_running)
{
    g_mutex_lock(&m->lock);
    *was_running = m->state == RUNSTATE_RUNNING;
    cpus_pause_all(m->cpus);
    m->state = RUNSTATE_FINISH_MIGRATE;
    g_mutex_unlock(&m->lock);
    if (*was_running)
        event_emit("STOP", NULL);
}

void machine_migration_finish(struct machine *m, bool success, bool was_running)
{
    g_mutex_lock(&m->lock);
    bool resume = !success && was_running && m->state == RUNSTATE_FINISH_MIGRATE;
    if (m->state == RUNSTATE_FINISH_MIGRATE)
        m->state = success       ? RUNSTATE_POSTMIGRATE
                   : was_running ? RUNSTATE_RUNNING
                                 : RUNSTATE_PAUSED;
    if (resume)
        cpus_resume_all(m->cpus);
    g_mutex_unlock(&m->lock);
    if (resume)
        event_emit("RESUME", NULL);
}

bool machine_incoming_finish(struct machine *m)
{
    g_mutex_lock(&m->lock);
    bool run = !m->start_paused;
    m->state = run ? RUNSTATE_RUNNING : RUNSTATE_PAUSED;
    if (run)
        cpus_resume_all(m->cpus);
    g_mutex_unlock(&m->lock);
    if (run)
        event_emit("RESUME", NULL);
    return run;
}

static gboolean exit_failed(gpointer opaque)
{
    struct machine *m = opaque;
    m->exit_status = 1;
    g_idle_add_full(G_PRIORITY_LOW, quit_main_loop, m->loop, NULL);
    return G_SOURCE_REMOVE;
}

void machine_incoming_failed(struct machine *m)
{
    g_main_context_invoke(NULL, exit_failed, m);
}

bool machine_start_paused(struct machine *m)
{
    return m->start_paused;
}

void machine_set_throttle(struct machine *m, unsigned percent)
{
    cpus_set_throttle(m->cpus, percent);
}
