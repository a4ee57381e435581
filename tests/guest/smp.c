/* smp.c: start the secondary CPUs (INIT/SIPI to the real-mode trampoline) and their check-in. */
#include "guest.h"

#define WAIT_FIXED_US 300000ull /* without cpus=N: who checks in within this time */
#define WAIT_MAX_US 5000000ull  /* with cpus=N: give up after this */

struct cpu *cpu_list[MAX_CPUS];
volatile uint32_t cpus_online = 1;
volatile int smp_stage;

extern const uint8_t trampoline_start[], trampoline_end[];

static volatile int checkin_lock;
static volatile bool checkin_closed;
static uint32_t checkin_limit = MAX_CPUS;
static volatile uint64_t last_checkin_tsc;

void smp_wait_stage(int stage)
{
    while (__atomic_load_n(&smp_stage, __ATOMIC_ACQUIRE) < stage)
        cpu_relax();
}

/* Returns the number of CPUs (BSP included) that will run the workload. */
uint32_t smp_start_aps(uint32_t want, uint64_t *bringup_us)
{
    uint64_t t0, deadline;
    uint32_t n;

    cpu_list[0] = &percpu[0].u.cpu;
    *bringup_us = 0;
    if (want == 1)
        return 1;
    if (want)
        checkin_limit = want;
    memcpy((void *)TRAMPOLINE_PA, trampoline_start, (size_t)(trampoline_end - trampoline_start));
    t0 = rdtsc();
    apic_send_init_sipi(TRAMPOLINE_PA >> 12);
    deadline = t0 + (want ? WAIT_MAX_US : WAIT_FIXED_US) * tsc_hz / 1000000;
    while (rdtsc() < deadline && !(want && cpus_online >= want))
        cpu_relax();

    while (__atomic_exchange_n(&checkin_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
    checkin_closed = true;
    n = cpus_online;
    __atomic_store_n(&checkin_lock, 0, __ATOMIC_RELEASE);
    if (n > 1)
        *bringup_us = tsc_to_us(last_checkin_tsc - t0);
    if (want && n != want)
        serial_printf("warning: cpus=%u requested, %u checked in\n", want, n);
    return n;
}

void ap_main(uint32_t index)
{
    struct cpu *c = &percpu[index].u.cpu;
    bool accepted = false;

    c->index = index;
    cpu_tables_load(c);
    if (pvm)
        pvm_probe(c); /* from here on the AP runs natively */
    apic_enable();
    c->apic_id = apic_id();

    while (__atomic_exchange_n(&checkin_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
    if (!checkin_closed && cpus_online < checkin_limit) {
        c->slot = cpus_online;
        cpu_list[c->slot] = c;
        last_checkin_tsc = rdtsc();
        __atomic_store_n(&cpus_online, cpus_online + 1, __ATOMIC_RELEASE);
        accepted = true;
    }
    __atomic_store_n(&checkin_lock, 0, __ATOMIC_RELEASE);
    if (!accepted)
        halt_forever(); /* late, or more CPUs than cpus=N */

    smp_wait_stage(1);
    workload_fill(c);
    smp_wait_stage(2);
    apic_timer_start((uint32_t)params.timer_hz);
    irq_enable();
    workload_run(c);
}
