/* emu-vcpu.c: one vCPU of the software accelerator: its run loop (interpreter
 * slices, timers, hlt and INIT/SIPI waits), kicks, and how the interpreter
 * reaches the devices, the LAPIC and the chips. */
#include <string.h>

#include "emu-internal.h"
#include "emu-irq-internal.h"
#include "tern/ioport.h"
#include "tern/util.h"

/* Instructions per interpreter slice: timers and kicks are looked at between
 * slices (the interpreter itself stops at once on a kick), so this bounds
 * timer latency to well under a millisecond without costing speed. */
#define EMU_SLICE_INSNS 200000

/* ---- how the interpreter reaches the machine ---- */

static void wake_timer_owner(struct emu_vm *vm);

static void set_irq_request(struct emu_vcpu *v)
{
    __atomic_store_n(&v->cpu.irq_request, 1, __ATOMIC_SEQ_CST);
}

static void cpu_pio(void *opaque, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
    struct emu_vcpu *v = opaque;
    struct emu_vm *vm = v->vm;

    if (!emu_chips_pio(vm->chips, port, data, size, is_write)) {
        io_bus_dispatch(v->bus, IO_SPACE_PIO, port, data, size, is_write);
        return;
    }
    /* The boot vCPU drives the PIT: a new count must not wait for its next wake. */
    if (is_write && port >= 0x40 && port <= 0x43 && v->index != 0)
        wake_timer_owner(vm);
}

static void cpu_mmio(void *opaque, uint64_t gpa, uint8_t *data, unsigned size, bool is_write)
{
    struct emu_vcpu *v = opaque;
    struct emu_vm *vm = v->vm;

    if (gpa >= EMU_LAPIC_BASE && gpa < EMU_LAPIC_BASE + 0x1000) {
        emu_lapic_mmio(v->lapic, gpa - EMU_LAPIC_BASE, data, size, is_write);
        /* CR8 reads what the TPR register holds: only a TPR write changes it.
         * (What an EOI or TPR write unmasks, the LAPIC itself signals.) */
        if (is_write && ((gpa - EMU_LAPIC_BASE) & ~0xfull) == EMU_LAPIC_TPR)
            v->cpu.tpr = emu_lapic_get_cr8(v->lapic);
    } else if (gpa >= EMU_IOAPIC_BASE && gpa < EMU_IOAPIC_BASE + 0x1000) {
        emu_chips_ioapic_mmio(vm->chips, gpa - EMU_IOAPIC_BASE, data, size, is_write);
    } else {
        io_bus_dispatch(v->bus, IO_SPACE_MMIO, gpa, data, size, is_write);
    }
}

static bool cpu_rdmsr(void *opaque, uint32_t msr, uint64_t *value)
{
    struct emu_vcpu *v = opaque;
    bool ok = false;

    if (msr == MSR_IA32_TSC) {
        *value = emu_guest_tsc(v->vm);
        return true;
    }
    return emu_lapic_rdmsr(v->lapic, msr, value, &ok) && ok;
}

static bool cpu_wrmsr(void *opaque, uint32_t msr, uint64_t value)
{
    struct emu_vcpu *v = opaque;
    bool ok = false;

    if (msr == MSR_IA32_TSC) {
        /* One TSC for the whole VM, as guests that write it expect. */
        emu_set_guest_tsc(v->vm, value, 0);
        return true;
    }
    /* Anything else unknown (kvm_pvm's vIF page register among them) is a
     * #GP, as on hardware: that is how guests tell they are not on PVM. */
    bool handled = emu_lapic_wrmsr(v->lapic, msr, value, &ok) && ok;
    if (handled && emu_lapic_pending(v->lapic))
        set_irq_request(v);
    return handled;
}

static void cpu_cpuid(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    struct emu_vcpu *v = opaque;
    emu_cpuid_lookup(v->vm, v->index, leaf, subleaf, out);
}

static uint64_t cpu_rdtsc(void *opaque)
{
    struct emu_vcpu *v = opaque;
    return emu_guest_tsc(v->vm);
}

/* Clear the request before looking, so a vector raised meanwhile sets it again. */
static int cpu_irq_ack(void *opaque)
{
    struct emu_vcpu *v = opaque;

    __atomic_store_n(&v->cpu.irq_request, 0, __ATOMIC_SEQ_CST);
    int vector = emu_lapic_ack(v->lapic);
    if (emu_lapic_pending(v->lapic))
        set_irq_request(v);
    return vector;
}

static void cpu_set_tpr(void *opaque, uint8_t tpr)
{
    struct emu_vcpu *v = opaque;
    emu_lapic_set_tpr(v->lapic, tpr);
    if (emu_lapic_pending(v->lapic))
        set_irq_request(v);
}

static const struct x86_cpu_ops cpu_ops = {
    .pio = cpu_pio,
    .mmio = cpu_mmio,
    .rdmsr = cpu_rdmsr,
    .wrmsr = cpu_wrmsr,
    .cpuid = cpu_cpuid,
    .rdtsc = cpu_rdtsc,
    .irq_ack = cpu_irq_ack,
    .set_tpr = cpu_set_tpr,
};

/* ---- how the interrupt controllers reach the vCPUs ---- */

static struct emu_vcpu *vcpu_at(struct emu_vm *vm, unsigned index)
{
    if (index >= EMU_MAX_CPUS)
        return NULL;
    g_mutex_lock(&vm->vcpus_lock);
    struct emu_vcpu *v = vm->vcpus[index];
    g_mutex_unlock(&vm->vcpus_lock);
    return v;
}

void emu_vcpus_tsc_changed(struct emu_vm *vm)
{
    for (unsigned i = 0; i < EMU_MAX_CPUS; i++) {
        struct emu_vcpu *v = vcpu_at(vm, i);
        if (v)
            emu_lapic_tsc_changed(v->lapic);
    }
}

static void wake_locked(struct emu_vcpu *v)
{
    v->woken = true;
    g_cond_broadcast(&v->cond);
}

static void vcpu_wake(struct emu_vcpu *v)
{
    g_mutex_lock(&v->lock);
    wake_locked(v);
    g_mutex_unlock(&v->lock);
}

static void glue_wake(void *opaque, unsigned cpu)
{
    struct emu_vcpu *v = vcpu_at(opaque, cpu);
    if (!v)
        return;
    set_irq_request(v);
    vcpu_wake(v);
}

static void wake_timer_owner(struct emu_vm *vm)
{
    struct emu_vcpu *v = vcpu_at(vm, 0);
    if (v)
        vcpu_wake(v);
}

static void glue_init(void *opaque, unsigned cpu)
{
    struct emu_vcpu *v = vcpu_at(opaque, cpu);
    if (!v)
        return;
    g_mutex_lock(&v->lock);
    v->init_pending = true;
    wake_locked(v);
    g_mutex_unlock(&v->lock);
    /* Out of the interpreter: INIT is handled between slices. */
    __atomic_store_n(&v->cpu.exit_request, 1, __ATOMIC_SEQ_CST);
}

static void glue_sipi(void *opaque, unsigned cpu, uint8_t vector)
{
    struct emu_vcpu *v = vcpu_at(opaque, cpu);
    if (!v)
        return;
    g_mutex_lock(&v->lock);
    v->sipi_vector = vector;
    wake_locked(v);
    g_mutex_unlock(&v->lock);
}

static uint64_t glue_tsc_now(void *opaque)
{
    return emu_guest_tsc(opaque);
}

static uint64_t glue_tsc_to_ns(void *opaque, uint64_t tsc)
{
    struct emu_vm *vm = opaque;
    uint64_t now_tsc = emu_guest_tsc(vm), now = emu_now_ns();
    if (tsc <= now_tsc)
        return now;
    return now + (uint64_t)((unsigned __int128)(tsc - now_tsc) * 1000000 / vm->tsc_khz);
}

const struct emu_irq_ops emu_irq_glue = {
    .wake = glue_wake,
    .init = glue_init,
    .sipi = glue_sipi,
    .tsc_now = glue_tsc_now,
    .tsc_to_ns = glue_tsc_to_ns,
};

/* ---- life cycle ---- */

struct accel_vcpu *emu_vcpu_create(struct accel *a, unsigned index, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);

    if (index >= EMU_MAX_CPUS) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "vCPU index %u too large", index);
        return NULL;
    }
    struct emu_vcpu *v = g_new0(struct emu_vcpu, 1);
    v->vm = vm;
    v->index = index;
    v->sipi_vector = -1;
    g_mutex_init(&v->lock);
    g_cond_init(&v->cond);
    x86_cpu_init(&v->cpu, &vm->mem, &cpu_ops, v, index);
    /* The boot processor runs; the others wait for INIT and SIPI. */
    v->mp_state = index == 0 ? X86_MP_RUNNABLE : X86_MP_UNINITIALIZED;
    v->lapic = emu_lapic_create(vm->apic_bus, index);
    g_mutex_lock(&vm->vcpus_lock);
    vm->vcpus[index] = v;
    g_mutex_unlock(&vm->vcpus_lock);
    return &v->base;
}

void emu_vcpu_destroy(struct accel_vcpu *base)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);
    struct emu_vm *vm = v->vm;

    g_mutex_lock(&vm->vcpus_lock);
    vm->vcpus[v->index] = NULL;
    g_mutex_unlock(&vm->vcpus_lock);
    emu_lapic_destroy(v->lapic);
    x86_cpu_destroy(&v->cpu);
    g_mutex_clear(&v->lock);
    g_cond_clear(&v->cond);
    g_free(v);
}

bool emu_vcpu_set_pvh_entry(struct accel_vcpu *base, uint32_t entry, uint32_t start_info,
                            GError **errp)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);
    struct x86_cpu *cpu = &v->cpu;

    (void)errp;
    /* PVH: protected mode, paging off, flat 4 GiB code and data. */
    cpu->cr0 = CR0_PE | CR0_ET;
    cpu->cr4 = 0;
    cpu->efer = 0;
    x86_pvh_segments(&cpu->seg[X86_CS], &cpu->seg[X86_DS]);
    cpu->seg[X86_ES] = cpu->seg[X86_FS] = cpu->seg[X86_GS] = cpu->seg[X86_SS] = cpu->seg[X86_DS];
    memset(cpu->regs, 0, sizeof(cpu->regs));
    cpu->regs[X86_RBX] = start_info;
    cpu->rip = entry;
    x86_cpu_set_rflags(cpu, 2);
    cpu->halted = false;
    v->mp_state = X86_MP_RUNNABLE;
    x86_cpu_state_changed(cpu);
    return true;
}

void emu_vcpu_bind_thread(struct accel_vcpu *base)
{
    (void)base; /* kicks need no thread: they set flags and signal (cond) */
}

void emu_vcpu_kick(struct accel_vcpu *base)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);

    __atomic_store_n(&v->kicked, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&v->cpu.exit_request, 1, __ATOMIC_SEQ_CST);
    g_mutex_lock(&v->lock);
    wake_locked(v);
    g_mutex_unlock(&v->lock);
}

void emu_vcpu_clear_kick(struct accel_vcpu *base)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);

    __atomic_store_n(&v->kicked, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&v->cpu.exit_request, 0, __ATOMIC_SEQ_CST);
}

bool emu_vcpu_summary(struct accel_vcpu *base, struct vcpu_summary *out, GError **errp)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);

    (void)errp;
    out->rip = __atomic_load_n(&v->summary_rip, __ATOMIC_RELAXED);
    out->rsp = __atomic_load_n(&v->summary_rsp, __ATOMIC_RELAXED);
    out->cr3 = __atomic_load_n(&v->summary_cr3, __ATOMIC_RELAXED);
    return true;
}

/* ---- running ---- */

static bool kicked(struct emu_vcpu *v)
{
    return __atomic_load_n(&v->kicked, __ATOMIC_SEQ_CST);
}

/* INIT and SIPI, on the vCPU's own thread. */
static void take_init_sipi(struct emu_vcpu *v)
{
    g_mutex_lock(&v->lock);
    bool init = v->init_pending;
    int sipi = v->sipi_vector;
    v->init_pending = false;
    v->sipi_vector = -1;
    g_mutex_unlock(&v->lock);

    if (init && v->index != 0) {
        /* INIT puts an AP back to waiting for a SIPI (the BSP ignores it here,
         * as nothing in Tern's machines sends it one). */
        x86_cpu_reset(&v->cpu);
        v->mp_state = X86_MP_INIT_RECEIVED;
    }
    if (sipi >= 0 && v->mp_state == X86_MP_INIT_RECEIVED) {
        x86_cpu_sipi(&v->cpu, (uint8_t)sipi);
        v->mp_state = X86_MP_RUNNABLE;
    }
}

/* Sleep until woken, kicked, or (deadline_ns) (UINT64_MAX: no deadline). */
static void sleep_until(struct emu_vcpu *v, uint64_t deadline_ns)
{
    g_mutex_lock(&v->lock);
    while (!v->woken && !kicked(v) && !v->init_pending && v->sipi_vector < 0) {
        if (deadline_ns == UINT64_MAX) {
            g_cond_wait(&v->cond, &v->lock);
        } else {
            uint64_t now = emu_now_ns();
            if (now >= deadline_ns)
                break;
            gint64 until = g_get_monotonic_time() + (gint64)((deadline_ns - now + 999) / 1000);
            g_cond_wait_until(&v->cond, &v->lock, until);
        }
    }
    v->woken = false;
    g_mutex_unlock(&v->lock);
}

/* Fire what is due; the earliest next expiry of this vCPU's timers. */
static uint64_t poll_timers(struct emu_vcpu *v)
{
    uint64_t now = emu_now_ns();
    uint64_t next = emu_lapic_timer_poll(v->lapic, now);

    if (v->index == 0) {
        /* The boot vCPU drives the PIT (its interrupt may go to any LAPIC). */
        next = MIN(next, emu_chips_timer_poll(v->vm->chips, now));
    }
    if (emu_lapic_pending(v->lapic))
        set_irq_request(v);
    return next;
}

static void publish_summary(struct emu_vcpu *v)
{
    __atomic_store_n(&v->summary_rip, v->cpu.rip, __ATOMIC_RELAXED);
    __atomic_store_n(&v->summary_rsp, v->cpu.regs[X86_RSP], __ATOMIC_RELAXED);
    __atomic_store_n(&v->summary_cr3, v->cpu.cr3, __ATOMIC_RELAXED);
}

enum vcpu_run_result emu_vcpu_run(struct accel_vcpu *base, struct io_bus *bus, GError **errp)
{
    struct emu_vcpu *v = EMU_VCPU_OF(base);

    (void)errp;
    v->bus = bus;
    if (kicked(v))
        return VCPU_RUN_KICKED;
    take_init_sipi(v);
    if (v->mp_state != X86_MP_RUNNABLE) {
        sleep_until(v, UINT64_MAX);
        return kicked(v) ? VCPU_RUN_KICKED : VCPU_RUN_OK;
    }

    poll_timers(v);
    enum x86_exit exit = x86_cpu_run(&v->cpu, EMU_SLICE_INSNS);
    publish_summary(v);

    switch (exit) {
    case X86_EXIT_HLT:
        /* Asleep until an interrupt: a timer of ours (armed perhaps during the
         * slice just run, so asked again), or a wake from another thread. */
        sleep_until(v, poll_timers(v));
        break;
    case X86_EXIT_TRIPLE_FAULT:
        return VCPU_RUN_SHUTDOWN;
    case X86_EXIT_KICK:
    case X86_EXIT_BUDGET:
        break;
    }
    if (kicked(v))
        return VCPU_RUN_KICKED;
    /* An INIT's exit_request (not a kick): clear it and go on. */
    __atomic_store_n(&v->cpu.exit_request, 0, __ATOMIC_SEQ_CST);
    if (kicked(v))
        __atomic_store_n(&v->cpu.exit_request, 1, __ATOMIC_SEQ_CST);
    return VCPU_RUN_OK;
}
