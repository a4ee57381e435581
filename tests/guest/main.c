/* main.c: boot CPU start-up sequence, the start line, periodic reports and power-off. */
#include "guest.h"

#define LOOP_ITERS 100000000ull

struct percpu_block percpu[MAX_CPUS] __attribute__((aligned(PERCPU_SIZE)));
uint64_t boot_tsc;

static uint64_t next_report_tsc, report_period_tsc, report_count;

uint64_t tsc_to_us(uint64_t d)
{
    return d / (tsc_hz / 1000000 ? tsc_hz / 1000000 : 1);
}

void halt_forever(void)
{
    irq_disable();
    for (;;)
        __asm__ volatile("hlt");
}

void poweroff(uint8_t code)
{
    outb(DEBUG_EXIT_PORT, code); /* exit status (code << 1) | 1 */
    halt_forever();
}

/* Cost of one dec/jnz iteration, in 1/100 ns: shows whether we run natively. */
static uint64_t loop_cost_centi_ns(void)
{
    uint64_t n = LOOP_ITERS, t0 = rdtsc(), dt;

    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n));
    dt = rdtsc() - t0;
    return dt * 1000000 / (tsc_hz / 1000) / (LOOP_ITERS / 100);
}

static void debug_report(void)
{
    serial_printf("debug: boot_tsc %lu\n", boot_tsc);
    for (uint32_t i = 0; i < cpus_online; i++) {
        struct cpu *c = cpu_list[i];

        serial_printf("debug: cpu %u apic %u irqs %lu in_irq vif0 %u vif1 %u frame_if %u "
                      "on_rsp0 %u after_irq vif0 0x%x\n",
                      c->slot, c->apic_id, c->irq_count, c->irq_vif0, c->irq_vif1, c->irq_frame_if,
                      c->irq_on_rsp0, c->after_vif0);
    }
}

void report_poll(struct cpu *c, uint64_t now)
{
    if (now < next_report_tsc)
        return;
    next_report_tsc += report_period_tsc;
    if (next_report_tsc <= now)
        next_report_tsc = now + report_period_tsc; /* after a pause: one line, no burst */
    report_count++;
    workload_report(report_count, tsc_to_us(now - boot_tsc) / 1000, now);
    if (params.debug && report_count == 1)
        debug_report();
    if (params.exit_after && report_count >= params.exit_after) {
        uint64_t errors = workload_errors();

        serial_printf("testguest: exit errors %lu\n", errors);
        poweroff(errors ? 1 : 0);
    }
    c->last_tsc = rdtsc(); /* our own printing is not a pause */
}

/* exitbench=N: what a VM exit costs, seen from inside. An OUT to an unclaimed
 * port goes out to the VMM and back; CPUID is answered inside the kernel. */
static void exit_bench(uint64_t n)
{
    uint64_t t0 = rdtsc();
    for (uint64_t i = 0; i < n; i++)
        outb(EXIT_BENCH_PORT, 0);
    uint64_t t1 = rdtsc();
    for (uint64_t i = 0; i < n; i++) {
        uint32_t a = 0, b, c2 = 0, d;
        __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c2), "=d"(d));
    }
    uint64_t t2 = rdtsc();
    uint64_t khz = tsc_hz / 1000;
    serial_printf("testguest: exitbench %lu ns_per_pio_exit %lu ns_per_cpuid_exit %lu\n", n,
                  (t1 - t0) * 1000000 / khz / n, (t2 - t1) * 1000000 / khz / n);
}

static void bsp_main(void)
{
    struct cpu *c = &percpu[0].u.cpu;
    uint64_t ns100, bringup_us;
    uint32_t n;

    boot_tsc = rdtsc();
    c->index = 0;
    boot_copy_start_info(); /* before anything reuses low memory */
    serial_init();
    idt_init();
    cpu_tables_load(c);
    pvm = pvm_probe(c);
    boot_map_high_ram();
    cmdline_parse(boot_cmdline, &params);
    pic_disable();
    apic_enable();
    c->apic_id = apic_id();
    tsc_calibrate();
    apic_timer_calibrate();
    ns100 = loop_cost_centi_ns();
    n = smp_start_aps((uint32_t)params.cpus, &bringup_us);
    serial_printf("testguest: tsc_khz %lu (%s) lapic_timer_khz %lu ram_mib %lu cpus %u "
                  "ap_bringup_us %lu\n",
                  tsc_hz / 1000, tsc_source, apic_timer_hz() / 1000, boot_usable_pages() / 256, n,
                  bringup_us);
    if (params.exitbench)
        exit_bench(params.exitbench);
    workload_setup(n);
    __atomic_store_n(&smp_stage, 1, __ATOMIC_RELEASE);
    workload_fill(c);
    workload_wait_filled();
    if (params.locktest && !locktest_report(n, params.locktest))
        locktest_failed = 1;
    serial_printf("testguest: running ws_mib %lu rate_mib %lu fill_mib %lu tick_ms %lu "
                  "timer_hz %lu cpus %u pvm %d ns_per_loop_iter %lu.%02lu\n",
                  params.ws_mib, params.rate_mib, params.fill_mib, params.tick_ms, params.timer_hz,
                  n, pvm ? 1 : 0, ns100 / 100, ns100 % 100);
    report_period_tsc = params.tick_ms * (tsc_hz / 1000);
    next_report_tsc = rdtsc() + report_period_tsc;
    __atomic_store_n(&smp_stage, 2, __ATOMIC_RELEASE);
    apic_timer_start((uint32_t)params.timer_hz);
    irq_enable();
    if (params.debug >= 2)
        pvm_selftest();
    workload_run(c);
}

void cpu_start(uint32_t index)
{
    if (index == 0)
        bsp_main();
    else
        ap_main(index);
    halt_forever();
}
