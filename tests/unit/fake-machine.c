/* fake-machine.c: machine.h without KVM, so monitor tests link and run anywhere. */
#include "fake-machine.h"

#include "tern/events.h"
#include "tern/memory.h"

struct machine {
    enum runstate state;
    unsigned smp;
    struct guest_ram *ram;
    GMainLoop *loop;
    unsigned quit_calls;
    unsigned reset_calls;
};

struct machine *fake_machine_new(unsigned smp, enum runstate state)
{
    struct machine *m = g_new0(struct machine, 1);

    m->state = state;
    m->smp = smp;
    m->ram = guest_ram_create(GUEST_RAM_MIN, NULL);
    m->loop = g_main_loop_new(NULL, FALSE);
    return m;
}

void fake_machine_set_runstate(struct machine *m, enum runstate state)
{
    m->state = state;
}

unsigned fake_machine_quit_calls(struct machine *m)
{
    return m->quit_calls;
}

unsigned fake_machine_reset_calls(struct machine *m)
{
    return m->reset_calls;
}

struct machine *machine_create(const struct machine_config *cfg, GError **errp)
{
    (void)errp;
    return fake_machine_new(cfg->smp ? cfg->smp : 1,
                            cfg->start_paused ? RUNSTATE_PRELAUNCH : RUNSTATE_RUNNING);
}

void machine_destroy(struct machine *m)
{
    if (m->ram) {
        guest_ram_destroy(m->ram);
    }
    g_main_loop_unref(m->loop);
    g_free(m);
}

bool machine_start(struct machine *m, GError **errp)
{
    (void)errp;
    if (m->state == RUNSTATE_PRELAUNCH) {
        m->state = RUNSTATE_RUNNING;
    }
    return true;
}

enum runstate machine_runstate(struct machine *m)
{
    return m->state;
}

bool machine_stop(struct machine *m, GError **errp)
{
    (void)errp;
    if (m->state == RUNSTATE_RUNNING) {
        m->state = RUNSTATE_PAUSED;
        event_emit("STOP", NULL);
    }
    return true;
}

bool machine_cont(struct machine *m, GError **errp)
{
    if (m->state == RUNSTATE_INMIGRATE) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_FAILED, "Migration is not finalized yet");
        return false;
    }
    if (m->state != RUNSTATE_RUNNING) {
        m->state = RUNSTATE_RUNNING;
        event_emit("RESUME", NULL);
    }
    return true;
}

bool machine_system_reset(struct machine *m, GError **errp)
{
    (void)errp;
    m->reset_calls++;
    JsonObject *data = json_object_new();
    json_object_set_boolean_member(data, "guest", false);
    json_object_set_string_member(data, "reason", "host-qmp-system-reset");
    event_emit("RESET", data);
    return true;
}

void machine_quit(struct machine *m)
{
    m->quit_calls++;
    JsonObject *data = json_object_new();
    json_object_set_boolean_member(data, "guest", false);
    json_object_set_string_member(data, "reason", "host-qmp-quit");
    event_emit("SHUTDOWN", data);
}

void machine_request_poweroff(struct machine *m, int exit_code)
{
    (void)exit_code;
    m->state = RUNSTATE_SHUTDOWN;
}

void machine_request_reset(struct machine *m)
{
    m->reset_calls++;
}

int machine_exit_status(struct machine *m)
{
    (void)m;
    return 0;
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
    if (index >= m->smp) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "no vCPU %u", index);
        return false;
    }
    out->index = index;
    out->thread_id = 1000 + (int)index;
    out->rip = 0x100000;
    return true;
}

const char *machine_accel_name(struct machine *m)
{
    (void)m;
    return "emu";
}

bool machine_accel_is_kvm(struct machine *m)
{
    (void)m;
    return false;
}

bool machine_kvm_present(struct machine *m)
{
    (void)m;
    return true;
}

GMainLoop *machine_main_loop(struct machine *m)
{
    return m->loop;
}
