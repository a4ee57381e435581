/* kvm-vcpu.c: one vCPU: creation, CPUID, the PVH entry state, KVM_RUN and its exits, kicks. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvm-internal.h"
#include "tern/ioport.h"
#include "tern/util.h"
#include "tern/x86-state.h"

/* The kick signal only has to interrupt KVM_RUN; its handler does nothing.
 * SA_RESTART keeps every other syscall of a vCPU thread unaffected (KVM_RUN
 * returns EINTR regardless). */
#define SIG_KICK SIGUSR1

static void kick_handler(int sig)
{
    (void)sig;
}

void kvm_kick_signal_init(void)
{
    struct sigaction sa = { .sa_handler = kick_handler, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);
}

bool kvm_vcpu_set_cpuid(struct kvm_vcpu *vcpu, GError **errp)
{
    const struct kvm_cpuid2 *tmpl = vcpu->kvm->cpuid;
    size_t len = sizeof(*tmpl) + tmpl->nent * sizeof(tmpl->entries[0]);
    g_autofree struct kvm_cpuid2 *c = g_memdup2(tmpl, len);

    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 1)
            e->ebx = (e->ebx & 0x00ffffff) | (vcpu->index << 24);
        if (e->function == 0xb || e->function == 0x1f)
            e->edx = vcpu->index;
    }
    if (ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: KVM_SET_CPUID2: %s", vcpu->index,
                    g_strerror(errno));
        return false;
    }
    return true;
}

struct accel_vcpu *kvm_vcpu_create(struct accel *base, unsigned index, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    struct kvm_vcpu *vcpu = g_new0(struct kvm_vcpu, 1);
    vcpu->kvm = k;
    vcpu->index = index;
    vcpu->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (vcpu->fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CREATE_VCPU %u: %s", index,
                    g_strerror(errno));
        g_free(vcpu);
        return NULL;
    }
    vcpu->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "mmap kvm_run: %s", g_strerror(errno));
        close(vcpu->fd);
        g_free(vcpu);
        return NULL;
    }
    /* Registers come back with every exit: monitors read them without an
     * ioctl that would wait for a running vCPU. */
    if (k->sync_regs)
        vcpu->run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    if (index >= KVM_MAX_VCPUS || !kvm_vcpu_set_cpuid(vcpu, errp) ||
        (k->ring_entries && !kvm_dirty_ring_map(vcpu, errp))) {
        if (index >= KVM_MAX_VCPUS)
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "vCPU index %u too large", index);
        kvm_vcpu_destroy(&vcpu->base);
        return NULL;
    }
    pthread_mutex_lock(&k->ring_lock);
    k->vcpus[index] = vcpu;
    pthread_mutex_unlock(&k->ring_lock);
    return &vcpu->base;
}

void kvm_vcpu_destroy(struct accel_vcpu *base)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    struct kvm *k = vcpu->kvm;
    pthread_mutex_lock(&k->ring_lock);
    if (vcpu->index < KVM_MAX_VCPUS && k->vcpus[vcpu->index] == vcpu)
        k->vcpus[vcpu->index] = NULL;
    pthread_mutex_unlock(&k->ring_lock);
    if (vcpu->ring)
        munmap(vcpu->ring, k->ring_entries * sizeof(struct kvm_dirty_gfn));
    munmap(vcpu->run, vcpu->kvm->run_size);
    close(vcpu->fd);
    g_free(vcpu);
}

bool kvm_vcpu_set_pvh_entry(struct accel_vcpu *base, uint32_t entry, uint32_t start_info,
                            GError **errp)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    struct x86_sregs sregs; /* struct kvm_sregs's layout (kvm-state.c checks) */
    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_GET_SREGS: %s", g_strerror(errno));
        return false;
    }
    /* PVH: protected mode, paging off, flat 4 GiB code and data. TR keeps
     * KVM's reset value (a made-up TR makes kvm_pvm's emulator fault). */
    sregs.cr0 |= 1;
    sregs.cr4 = 0;
    sregs.efer = 0;
    x86_pvh_segments(&sregs.cs, &sregs.ds);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_SET_SREGS: %s", g_strerror(errno));
        return false;
    }
    struct kvm_regs regs = { .rip = entry, .rbx = start_info, .rflags = 2 };
    if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_SET_REGS: %s", g_strerror(errno));
        return false;
    }
    return true;
}

void kvm_vcpu_bind_thread(struct accel_vcpu *base)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    vcpu->thread = pthread_self();
    __atomic_store_n(&vcpu->thread_bound, true, __ATOMIC_RELEASE);
}

void kvm_vcpu_kick(struct accel_vcpu *base)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    /* immediate_exit covers a vCPU about to enter KVM_RUN; the signal one inside it. */
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&vcpu->thread_bound, __ATOMIC_ACQUIRE))
        pthread_kill(vcpu->thread, SIG_KICK);
}

void kvm_vcpu_clear_kick(struct accel_vcpu *base)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

static void handle_io(struct kvm_vcpu *vcpu, struct io_bus *bus)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

    /* String I/O (rep outsb) arrives as (count) back-to-back accesses. */
    for (uint32_t i = 0; i < run->io.count; i++) {
        io_bus_dispatch(bus, IO_SPACE_PIO, run->io.port, data, run->io.size, is_write);
        data += run->io.size;
    }
}

static enum vcpu_run_result fail(struct kvm_vcpu *vcpu, GError **errp, const char *what)
{
    struct kvm_run *run = vcpu->run;
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: %s (exit reason %u, rip 0x%llx)",
                vcpu->index, what, run->exit_reason, (unsigned long long)run->s.regs.regs.rip);
    return VCPU_RUN_ERROR;
}

enum vcpu_run_result kvm_vcpu_run(struct accel_vcpu *base, struct io_bus *bus, GError **errp)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    struct kvm_run *run = vcpu->run;

    if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return VCPU_RUN_KICKED;
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: KVM_RUN: %s", vcpu->index,
                    g_strerror(errno));
        return VCPU_RUN_ERROR;
    }

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(vcpu, bus);
        return VCPU_RUN_OK;
    case KVM_EXIT_MMIO:
        io_bus_dispatch(bus, IO_SPACE_MMIO, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                        run->mmio.is_write);
        return VCPU_RUN_OK;
    case KVM_EXIT_INTR:
        return VCPU_RUN_KICKED;
    case KVM_EXIT_DIRTY_RING_FULL:
        /* Make room ourselves rather than wait for the next sync; a failure
         * fails that sync (the migration), never the guest. */
        kvm_dirty_ring_harvest(vcpu->kvm);
        return VCPU_RUN_OK;
    case KVM_EXIT_HLT: /* not with an in-kernel LAPIC, but harmless */
        return VCPU_RUN_OK;
    case KVM_EXIT_SHUTDOWN:
        return VCPU_RUN_SHUTDOWN;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
            return VCPU_RUN_RESET;
        return VCPU_RUN_POWEROFF;
    case KVM_EXIT_INTERNAL_ERROR: {
        g_autofree char *what = g_strdup_printf("KVM internal error, suberror %u",
                                                run->internal.suberror);
        return fail(vcpu, errp, what);
    }
    case KVM_EXIT_FAIL_ENTRY: {
        g_autofree char *what = g_strdup_printf("VM entry failed, reason 0x%llx",
                                                (unsigned long long)
                                                    run->fail_entry.hardware_entry_failure_reason);
        return fail(vcpu, errp, what);
    }
    default:
        return fail(vcpu, errp, "unexpected exit");
    }
}

bool kvm_vcpu_summary(struct accel_vcpu *base, struct vcpu_summary *out, GError **errp)
{
    struct kvm_vcpu *vcpu = VCPU_OF(base);
    (void)errp;
    /* From the last exit (sync regs): never waits for a running vCPU. */
    out->rip = vcpu->run->s.regs.regs.rip;
    out->rsp = vcpu->run->s.regs.regs.rsp;
    out->cr3 = vcpu->run->s.regs.sregs.cr3;
    return true;
}
