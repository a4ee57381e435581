/* machine.h: one VM: RAM, vCPUs, devices, run state. The API the monitors use. */
#ifndef TERN_MACHINE_H
#define TERN_MACHINE_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "tern/accel.h"
#include "tern/runstate.h"

struct machine;
struct guest_ram;

struct machine_config {
    uint64_t ram_size;        /* -m */
    unsigned smp;             /* -smp */
    const char *kernel;       /* -kernel PATH; NULL: the embedded test guest */
    const char *append;       /* -append */
    const char *serial;       /* -serial chardev spec */
    bool start_paused;        /* -S */
    const char *incoming;     /* -incoming URI or "defer"; NULL: boot normally */
    enum accel_kind accel;    /* -accel kvm|emu; default auto */
    uint32_t dirty_ring_size; /* -accel kvm,dirty-ring-size=N; 0: dirty bitmap */
};

struct machine *machine_create(const struct machine_config *cfg, GError **errp);
void machine_destroy(struct machine *m);

/* Start the vCPU threads (running, or paused with -S). */
bool machine_start(struct machine *m, GError **errp);

enum runstate machine_runstate(struct machine *m);
/* Pause every vCPU (returns once all are out of KVM_RUN); emits STOP. */
bool machine_stop(struct machine *m, GError **errp);
/* Resume; emits RESUME. Refused while an incoming migration is pending. */
bool machine_cont(struct machine *m, GError **errp);
/* Reset to the boot state (reloads the kernel); emits RESET. */
bool machine_system_reset(struct machine *m, GError **errp);
/* Ask the main loop to exit; emits SHUTDOWN (guest false, reason host-qmp-quit). */
void machine_quit(struct machine *m);
/* From devices (vCPU threads): the guest asked to power off (exit code) or reset. */
void machine_request_poweroff(struct machine *m, int exit_code);
void machine_request_reset(struct machine *m);

/* The process exit status once the main loop has finished. */
int machine_exit_status(struct machine *m);

struct guest_ram *machine_ram(struct machine *m);
unsigned machine_vcpu_count(struct machine *m);

struct vcpu_info {
    unsigned index;
    int thread_id; /* host TID of the vCPU thread */
    uint64_t rip;  /* at the vCPU's last exit */
};
bool machine_vcpu_info(struct machine *m, unsigned index, struct vcpu_info *out, GError **errp);

/* The accelerator running the vCPUs: "kvm", "kvm_pvm" or "emu" (info kvm,
 * query-kvm), and whether it is KVM. */
const char *machine_accel_name(struct machine *m);
bool machine_accel_is_kvm(struct machine *m);
/* Does this host offer /dev/kvm at all? */
bool machine_kvm_present(struct machine *m);

/* The GMainLoop the monitors run on. */
GMainLoop *machine_main_loop(struct machine *m);

#endif
