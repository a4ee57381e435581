/* apic.c: TSC frequency, legacy PIC masking, local APIC (xAPIC MMIO): timer, EOI, INIT/SIPI. */
#include "guest.h"

#define APIC_ID 0x20
#define APIC_TPR 0x80
#define APIC_EOI 0xb0
#define APIC_SVR 0xf0
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_ERROR 0x370
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_CUR 0x390
#define APIC_TIMER_DIV 0x3e0
#define LVT_MASKED 0x10000
#define LVT_PERIODIC 0x20000
#define ICR_ALL_BUT_SELF 0xc0000
#define ICR_INIT 0x4500 /* INIT, level assert */
#define ICR_SIPI 0x4600

#define PIT_HZ 1193182u

uint64_t tsc_hz;
const char *tsc_source = "?";
volatile uint64_t timer_ticks;
static uint64_t lapic_hz; /* timer input after the divide-by-16 */

static uint32_t apic_read(uint32_t reg)
{
    return mmio_read32(LAPIC_BASE + reg);
}

static void apic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(LAPIC_BASE + reg, v);
}

/* TSC ticks during a PIT channel 2 one-shot of (ms), 0 if the PIT does not answer. */
static uint64_t pit_measure(uint32_t ms)
{
    uint32_t count = PIT_HZ / 1000 * ms;
    uint8_t gate = inb(0x61);
    uint64_t t0, n = 0;

    outb(0x61, (uint8_t)((gate & ~0x02) | 0x01)); /* gate on, speaker off */
    outb(0x43, 0xb0);                             /* ch2, lo/hi, mode 0 */
    outb(0x42, (uint8_t)count);
    outb(0x42, (uint8_t)(count >> 8));
    t0 = rdtsc();
    while (!(inb(0x61) & 0x20))
        if (++n > 10000000)
            return 0;
    return n ? rdtsc() - t0 : 0; /* high at once: no PIT behind the port */
}

void tsc_calibrate(void)
{
    uint32_t r[4];
    uint64_t best = 0;

    cpuid(0x40000000, 0, r);
    if (r[0] >= 0x40000010 && r[0] < 0x40000100) {
        cpuid(0x40000010, 0, r);
        if (r[0]) {
            tsc_hz = (uint64_t)r[0] * 1000;
            tsc_source = "cpuid-0x40000010";
            return;
        }
    }
    cpuid(0, 0, r);
    if (r[0] >= 0x15) {
        cpuid(0x15, 0, r);
        if (r[0] && r[1] && r[2]) {
            tsc_hz = (uint64_t)r[2] * r[1] / r[0];
            tsc_source = "cpuid-0x15";
            return;
        }
    }
    for (int i = 0; i < 2; i++) { /* the shorter run had fewer interruptions */
        uint64_t t = pit_measure(20);

        if (t && (!best || t < best))
            best = t;
    }
    if (best * 50 > 100000000ull) {
        tsc_hz = best * 50;
        tsc_source = "pit";
        return;
    }
    cpuid(0, 0, r);
    if (r[0] >= 0x16) {
        cpuid(0x16, 0, r);
        if (r[0]) {
            tsc_hz = (uint64_t)r[0] * 1000000;
            tsc_source = "cpuid-0x16";
            return;
        }
    }
    tsc_hz = 2000000000ull;
    tsc_source = "guess";
}

void tsc_delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_hz / 1000000;

    while (rdtsc() < end)
        cpu_relax();
}

/* Remap the 8259s away from the exception vectors and mask every line. */
void pic_disable(void)
{
    static const uint8_t seq[][2] = {
        { 0x20, 0x11 }, { 0xa0, 0x11 }, { 0x21, 0x30 }, { 0xa1, 0x38 }, { 0x21, 0x04 },
        { 0xa1, 0x02 }, { 0x21, 0x01 }, { 0xa1, 0x01 }, { 0x21, 0xff }, { 0xa1, 0xff },
    };

    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
        outb(seq[i][0], seq[i][1]);
}

void apic_enable(void)
{
    apic_write(APIC_SVR, 0x100 | SPURIOUS_VECTOR);
    apic_write(APIC_TPR, 0);
    apic_write(APIC_LVT_LINT0, LVT_MASKED);
    apic_write(APIC_LVT_ERROR, LVT_MASKED);
    apic_write(APIC_LVT_TIMER, LVT_MASKED);
}

uint32_t apic_id(void)
{
    return apic_read(APIC_ID) >> 24;
}

void apic_eoi(void)
{
    apic_write(APIC_EOI, 0);
}

/* Timer input frequency, measured against the TSC over 10 ms. */
void apic_timer_calibrate(void)
{
    uint64_t t0, dt;
    uint32_t left;

    apic_write(APIC_LVT_TIMER, LVT_MASKED);
    apic_write(APIC_TIMER_DIV, 0x3); /* divide by 16 */
    apic_write(APIC_TIMER_INIT, 0xffffffffu);
    t0 = rdtsc();
    tsc_delay_us(10000);
    left = apic_read(APIC_TIMER_CUR);
    dt = rdtsc() - t0;
    apic_write(APIC_TIMER_INIT, 0);
    lapic_hz = (uint64_t)(0xffffffffu - left) * tsc_hz / dt;
}

void apic_timer_start(uint32_t hz)
{
    uint64_t count;

    if (!hz || !lapic_hz)
        return;
    count = lapic_hz / hz;
    if (count == 0)
        count = 1;
    if (count > 0xffffffffu)
        count = 0xffffffffu;
    apic_write(APIC_LVT_TIMER, TIMER_VECTOR | LVT_PERIODIC);
    apic_write(APIC_TIMER_DIV, 0x3);
    apic_write(APIC_TIMER_INIT, (uint32_t)count);
}

void apic_timer_irq(void)
{
    __atomic_add_fetch(&timer_ticks, 1, __ATOMIC_RELAXED);
    apic_eoi();
}

/* Broadcast INIT, SIPI, SIPI to every other CPU; they start at vector << 12. */
void apic_send_init_sipi(uint8_t vector)
{
    apic_write(APIC_ICR_HI, 0);
    apic_write(APIC_ICR_LO, ICR_ALL_BUT_SELF | ICR_INIT);
    tsc_delay_us(10000);
    apic_write(APIC_ICR_LO, ICR_ALL_BUT_SELF | ICR_SIPI | vector);
    tsc_delay_us(200);
    apic_write(APIC_ICR_LO, ICR_ALL_BUT_SELF | ICR_SIPI | vector);
}

uint64_t apic_timer_hz(void)
{
    return lapic_hz;
}
