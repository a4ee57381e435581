/* lapic.c: the local APIC of one vCPU (xAPIC MMIO, timer, priorities, MSRs, state). */
#include "emu-irq-internal.h"

#include <string.h>
#include <time.h>

#include "tern/vmstate.h"

/* Register offsets in the MMIO page (and in the KVM-layout regs page). */
#define APIC_ID 0x20
#define APIC_VERSION 0x30
#define APIC_TPR EMU_LAPIC_TPR
#define APIC_APR 0x90
#define APIC_PPR 0xa0
#define APIC_EOI 0xb0
#define APIC_LDR 0xd0
#define APIC_DFR 0xe0
#define APIC_SVR 0xf0
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_ESR 0x280
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LVT_THERM 0x330
#define APIC_LVT_PERF 0x340
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_LVT_ERROR 0x370
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR 0x3e0

#define APIC_VERSION_VALUE 0x50014 /* 6 LVT entries, integrated APIC */
#define SVR_ENABLE 0x100
#define LVT_MASKED 0x10000
#define LVT_TIMER_MODE(v) (((v) >> 17) & 3)
#define TIMER_ONESHOT 0
#define TIMER_PERIODIC 1
#define TIMER_TSC 2
#define ESR_ILLEGAL_VECTOR 0x40

#define MSR_APIC_BASE 0x1b
#define MSR_TSC_DEADLINE 0x6e0
#define APIC_BASE_BSP 0x100
#define APIC_BASE_X2APIC 0x400
#define APIC_BASE_ENABLE 0x800

/* A periodic timer never fires more often than this: a guest asking for a
 * 1-tick period would otherwise spend all its time in the interrupt (KVM
 * clamps the same way). */
#define MIN_PERIOD_NS 50000ull

_Static_assert(1000000000ull % EMU_APIC_BUS_HZ == 0, "the bus clock must divide 1 GHz");
#define NS_PER_BUS_TICK (1000000000ull / EMU_APIC_BUS_HZ)

struct emu_lapic {
    struct emu_apic_bus *bus;
    unsigned index;
    GMutex lock;              /* raise and IPIs come from other threads */
    struct emu_lapic_state s; /* timer_remaining_ns is only filled by save */
    uint64_t deadline_ns;     /* next timer expiry; UINT64_MAX: none */
    uint64_t period_ns;       /* one-shot/periodic: armed length; 0: stopped */
};

uint64_t emu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t reg_get(const struct emu_lapic *a, unsigned off)
{
    uint32_t v;

    memcpy(&v, &a->s.regs[off], 4);
    return v;
}

static void reg_set(struct emu_lapic *a, unsigned off, uint32_t v)
{
    memcpy(&a->s.regs[off], &v, 4);
}

/* The 256-bit vector arrays (ISR, TMR, IRR): bit (v) of the one at (base). */
static bool vec_test(const struct emu_lapic *a, unsigned base, uint8_t v)
{
    return reg_get(a, base + 0x10 * (v >> 5)) & (1u << (v & 31));
}

static void vec_set(struct emu_lapic *a, unsigned base, uint8_t v, bool on)
{
    unsigned off = base + 0x10 * (v >> 5);
    uint32_t w = reg_get(a, off);

    reg_set(a, off, on ? w | (1u << (v & 31)) : w & ~(1u << (v & 31)));
}

/* Highest set vector of the array at (base), -1 if none. */
static int vec_highest(const struct emu_lapic *a, unsigned base)
{
    for (int i = 7; i >= 0; i--) {
        uint32_t w = reg_get(a, base + 0x10 * (unsigned)i);

        if (w)
            return i * 32 + 31 - __builtin_clz(w);
    }
    return -1;
}

static bool hw_enabled(const struct emu_lapic *a)
{
    return a->s.apic_base & APIC_BASE_ENABLE;
}

static bool sw_enabled(const struct emu_lapic *a)
{
    return reg_get(a, APIC_SVR) & SVR_ENABLE;
}

static uint32_t ppr(const struct emu_lapic *a)
{
    uint32_t tpr = reg_get(a, APIC_TPR) & 0xff;
    int isrv = vec_highest(a, APIC_ISR);
    uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;

    return (tpr & 0xf0) >= isr_class ? tpr : isr_class;
}

/* The IRR vector the CPU would take now, -1 if none. */
static int deliverable(const struct emu_lapic *a)
{
    int v = vec_highest(a, APIC_IRR);

    if (v < 0 || !hw_enabled(a))
        return -1;
    return ((uint32_t)v & 0xf0) > (ppr(a) & 0xf0) ? v : -1;
}

/* ---- timer ---- */

static uint64_t tick_ns(const struct emu_lapic *a)
{
    uint32_t d = reg_get(a, APIC_TDCR);
    unsigned shift = ((d & 3) | ((d >> 1) & 4)) + 1; /* 1..8; 8 means divide by 1 */

    return (shift == 8 ? 1ull : 1ull << shift) * NS_PER_BUS_TICK;
}

static unsigned timer_mode(const struct emu_lapic *a)
{
    return LVT_TIMER_MODE(reg_get(a, APIC_LVT_TIMER));
}

static void timer_stop(struct emu_lapic *a)
{
    a->deadline_ns = UINT64_MAX;
    a->period_ns = 0;
}

/* Start the count in TMICT at (now), or stop if it is 0. */
static void timer_arm_count(struct emu_lapic *a, uint64_t now)
{
    uint64_t count = reg_get(a, APIC_TMICT);

    timer_stop(a);
    if (!count || timer_mode(a) == TIMER_TSC)
        return;
    a->period_ns = count * tick_ns(a);
    if (timer_mode(a) == TIMER_PERIODIC && a->period_ns < MIN_PERIOD_NS)
        a->period_ns = MIN_PERIOD_NS;
    a->deadline_ns = now + a->period_ns;
}

/* Time left in the current count at (now). */
static uint64_t timer_remaining(const struct emu_lapic *a, uint64_t now)
{
    if (!a->period_ns || a->deadline_ns == UINT64_MAX)
        return 0;
    if (a->deadline_ns > now)
        return a->deadline_ns - now;
    if (timer_mode(a) == TIMER_PERIODIC) /* a poll is late: the count wrapped */
        return a->period_ns - (now - a->deadline_ns) % a->period_ns;
    return 0;
}

static uint32_t timer_current(const struct emu_lapic *a, uint64_t now)
{
    uint64_t c = timer_remaining(a, now) / tick_ns(a);
    uint64_t init = reg_get(a, APIC_TMICT);

    return (uint32_t)MIN(c, init);
}

/* Raise the timer's LVT vector (lock held); true if something was raised. */
static bool timer_fire(struct emu_lapic *a)
{
    uint32_t lvt = reg_get(a, APIC_LVT_TIMER);
    uint8_t v = lvt & 0xff;

    if ((lvt & LVT_MASKED) || !sw_enabled(a) || !hw_enabled(a) || v < 16)
        return false;
    vec_set(a, APIC_IRR, v, true);
    vec_set(a, APIC_TMR, v, false);
    return true;
}

uint64_t emu_lapic_timer_poll(struct emu_lapic *apic, uint64_t now_ns)
{
    bool fired = false;
    uint64_t next;

    g_mutex_lock(&apic->lock);
    if (apic->deadline_ns != UINT64_MAX && now_ns >= apic->deadline_ns) {
        fired = timer_fire(apic);
        if (timer_mode(apic) == TIMER_TSC) {
            apic->s.tsc_deadline = 0;
            apic->deadline_ns = UINT64_MAX;
        } else if (timer_mode(apic) == TIMER_PERIODIC && apic->period_ns) {
            /* Keep the phase; after a long gap fire once and re-anchor. */
            apic->deadline_ns += apic->period_ns;
            if (apic->deadline_ns <= now_ns)
                apic->deadline_ns = now_ns + apic->period_ns;
        } else {
            apic->deadline_ns = UINT64_MAX; /* one-shot: TMCCT now reads 0 */
        }
    }
    next = apic->deadline_ns;
    g_mutex_unlock(&apic->lock);
    if (fired)
        apic->bus->ops->wake(apic->bus->opaque, apic->index);
    return next;
}

/* ---- reset ---- */

static void regs_reset(struct emu_lapic *a, uint32_t id)
{
    static const unsigned lvts[] = {
        APIC_LVT_TIMER, APIC_LVT_THERM, APIC_LVT_PERF,
        APIC_LVT_LINT0, APIC_LVT_LINT1, APIC_LVT_ERROR,
    };

    memset(a->s.regs, 0, sizeof(a->s.regs));
    reg_set(a, APIC_ID, id);
    reg_set(a, APIC_VERSION, APIC_VERSION_VALUE);
    reg_set(a, APIC_DFR, 0xffffffffu);
    reg_set(a, APIC_SVR, 0xff);
    for (size_t i = 0; i < G_N_ELEMENTS(lvts); i++)
        reg_set(a, lvts[i], LVT_MASKED);
    a->s.tsc_deadline = 0;
    a->s.timer_remaining_ns = 0;
    timer_stop(a);
}

void emu_lapic_reset(struct emu_lapic *apic)
{
    g_mutex_lock(&apic->lock);
    regs_reset(apic, (uint32_t)apic->index << 24);
    apic->s.apic_base = EMU_LAPIC_BASE | APIC_BASE_ENABLE | (apic->index == 0 ? APIC_BASE_BSP : 0);
    g_mutex_unlock(&apic->lock);
}

void emu_lapic_init_signal(struct emu_lapic *apic)
{
    g_mutex_lock(&apic->lock);
    regs_reset(apic, reg_get(apic, APIC_ID));
    g_mutex_unlock(&apic->lock);
}

struct emu_lapic *emu_lapic_create(struct emu_apic_bus *bus, unsigned index)
{
    struct emu_lapic *a;

    if (index >= EMU_MAX_CPUS)
        return NULL;
    a = g_new0(struct emu_lapic, 1);
    a->bus = bus;
    a->index = index;
    g_mutex_init(&a->lock);
    emu_lapic_reset(a);
    g_atomic_pointer_set(&bus->lapics[index], a);
    return a;
}

void emu_lapic_destroy(struct emu_lapic *apic)
{
    if (!apic)
        return;
    g_atomic_pointer_compare_and_exchange(&apic->bus->lapics[apic->index], apic, NULL);
    g_mutex_clear(&apic->lock);
    g_free(apic);
}

unsigned emu_lapic_index(struct emu_lapic *apic)
{
    return apic->index;
}

/* ---- interrupts in ---- */

bool emu_lapic_accept(struct emu_lapic *apic, uint8_t vector, bool level)
{
    g_mutex_lock(&apic->lock);
    if (!hw_enabled(apic)) {
        g_mutex_unlock(&apic->lock);
        return false;
    }
    if (vector < 16) {
        reg_set(apic, APIC_ESR, reg_get(apic, APIC_ESR) | ESR_ILLEGAL_VECTOR);
        g_mutex_unlock(&apic->lock);
        return true;
    }
    vec_set(apic, APIC_IRR, vector, true);
    vec_set(apic, APIC_TMR, vector, level);
    g_mutex_unlock(&apic->lock);
    apic->bus->ops->wake(apic->bus->opaque, apic->index);
    return true;
}

void emu_lapic_raise(struct emu_lapic *apic, uint8_t vector)
{
    emu_lapic_accept(apic, vector, false);
}

bool emu_lapic_match(struct emu_lapic *apic, uint8_t dest, bool logical)
{
    uint32_t id, ldr, dfr;

    g_mutex_lock(&apic->lock);
    id = reg_get(apic, APIC_ID) >> 24;
    ldr = reg_get(apic, APIC_LDR) >> 24;
    dfr = reg_get(apic, APIC_DFR) >> 28;
    g_mutex_unlock(&apic->lock);
    if (dest == 0xff)
        return true;
    if (!logical)
        return dest == id;
    if (dfr == 0xf) /* flat: a bitmap of 8 CPUs */
        return (ldr & dest) != 0;
    return (ldr >> 4) == (uint32_t)(dest >> 4) && (ldr & dest & 0xf); /* cluster */
}

static bool extint_on(const struct emu_lapic *a)
{
    uint32_t lint0 = reg_get(a, APIC_LVT_LINT0);

    return hw_enabled(a) && sw_enabled(a) && !(lint0 & LVT_MASKED) &&
           ((lint0 >> 8) & 7) == EMU_APIC_DM_EXTINT;
}

bool emu_lapic_extint_enabled(struct emu_lapic *apic)
{
    bool on;

    g_mutex_lock(&apic->lock);
    on = extint_on(apic);
    g_mutex_unlock(&apic->lock);
    return on;
}

/* The PICs have an interrupt for this LAPIC (LAPIC lock not held). */
static bool extint_pending(struct emu_lapic *a)
{
    struct emu_apic_bus *bus = a->bus;

    return bus->extint_pending && emu_lapic_extint_enabled(a) &&
           bus->extint_pending(bus->extint_opaque);
}

int emu_lapic_ack(struct emu_lapic *apic)
{
    int v;

    /* ExtINT bypasses IRR, ISR and the priorities: the PIC supplies the vector. */
    if (extint_pending(apic))
        return apic->bus->extint_ack(apic->bus->extint_opaque);
    g_mutex_lock(&apic->lock);
    v = deliverable(apic);
    if (v >= 0) {
        vec_set(apic, APIC_IRR, (uint8_t)v, false);
        vec_set(apic, APIC_ISR, (uint8_t)v, true);
    }
    g_mutex_unlock(&apic->lock);
    return v;
}

bool emu_lapic_pending(struct emu_lapic *apic)
{
    bool p;

    g_mutex_lock(&apic->lock);
    p = deliverable(apic) >= 0;
    g_mutex_unlock(&apic->lock);
    return p || extint_pending(apic);
}

void emu_lapic_set_tpr(struct emu_lapic *apic, uint8_t cr8)
{
    g_mutex_lock(&apic->lock);
    reg_set(apic, APIC_TPR, (uint32_t)(cr8 & 0xf) << 4);
    g_mutex_unlock(&apic->lock);
}

uint8_t emu_lapic_get_cr8(struct emu_lapic *apic)
{
    uint8_t v;

    g_mutex_lock(&apic->lock);
    v = (uint8_t)((reg_get(apic, APIC_TPR) >> 4) & 0xf);
    g_mutex_unlock(&apic->lock);
    return v;
}

/* ---- MMIO ---- */

/* What a register write asks of the bus once the lock is dropped. */
struct lapic_effects {
    int eoi_vector; /* level-triggered EOI for the listener, or -1 */
    bool ipi;
    uint32_t icr_lo, icr_hi;
};

static void mask_lvts(struct emu_lapic *a)
{
    for (unsigned off = APIC_LVT_TIMER; off <= APIC_LVT_ERROR; off += 0x10)
        reg_set(a, off, reg_get(a, off) | LVT_MASKED);
}

static uint32_t reg_read(struct emu_lapic *a, unsigned off, uint64_t now)
{
    switch (off) {
    case APIC_APR:
        return 0;
    case APIC_PPR:
        return ppr(a);
    case APIC_TMCCT:
        return timer_mode(a) == TIMER_TSC ? 0 : timer_current(a, now);
    case APIC_ICR_LO:
        return reg_get(a, off) & ~(1u << 12); /* delivery status: always idle */
    default:
        return off < sizeof(a->s.regs) ? reg_get(a, off) : 0;
    }
}

static void eoi(struct emu_lapic *a, struct lapic_effects *fx)
{
    int v = vec_highest(a, APIC_ISR);

    if (v < 0)
        return;
    vec_set(a, APIC_ISR, (uint8_t)v, false);
    if (vec_test(a, APIC_TMR, (uint8_t)v)) {
        vec_set(a, APIC_TMR, (uint8_t)v, false);
        fx->eoi_vector = v;
    }
}

static void lvt_timer_write(struct emu_lapic *a, uint32_t v)
{
    unsigned old_mode = timer_mode(a);

    v &= 0x600ff | LVT_MASKED;
    if (LVT_TIMER_MODE(v) == 3) /* reserved: keep it one-shot */
        v &= ~0x40000u;
    reg_set(a, APIC_LVT_TIMER, v);
    if ((LVT_TIMER_MODE(v) == TIMER_TSC) != (old_mode == TIMER_TSC)) {
        /* As KVM: entering or leaving TSC-deadline mode disarms both counters. */
        timer_stop(a);
        reg_set(a, APIC_TMICT, 0);
        a->s.tsc_deadline = 0;
    } else if (LVT_TIMER_MODE(v) == TIMER_PERIODIC && a->period_ns &&
               a->period_ns < MIN_PERIOD_NS) {
        a->period_ns = MIN_PERIOD_NS; /* a running one-shot became periodic */
    }
}

static void reg_write(struct emu_lapic *a, unsigned off, uint32_t v, uint64_t now,
                      struct lapic_effects *fx)
{
    switch (off) {
    case APIC_ID:
        reg_set(a, off, v & 0xff000000u);
        break;
    case APIC_TPR:
        reg_set(a, off, v & 0xff);
        break;
    case APIC_EOI:
        eoi(a, fx);
        break;
    case APIC_LDR:
        reg_set(a, off, v & 0xff000000u);
        break;
    case APIC_DFR:
        reg_set(a, off, v | 0x0fffffffu);
        break;
    case APIC_SVR:
        reg_set(a, off, v & 0x11ff);
        if (!(v & SVR_ENABLE))
            mask_lvts(a);
        break;
    case APIC_ESR:
        reg_set(a, off, 0);
        break;
    case APIC_ICR_LO:
        reg_set(a, off, v & ~(1u << 12));
        fx->ipi = true;
        fx->icr_lo = v;
        fx->icr_hi = reg_get(a, APIC_ICR_HI);
        break;
    case APIC_ICR_HI:
        reg_set(a, off, v & 0xff000000u);
        break;
    case APIC_LVT_TIMER:
        lvt_timer_write(a, sw_enabled(a) ? v : v | LVT_MASKED);
        break;
    case APIC_LVT_THERM:
    case APIC_LVT_PERF:
    case APIC_LVT_LINT0:
    case APIC_LVT_LINT1:
    case APIC_LVT_ERROR: {
        bool lint = off == APIC_LVT_LINT0 || off == APIC_LVT_LINT1;
        uint32_t writable = lint ? 0x1a7ff : off == APIC_LVT_ERROR ? 0x100ff : 0x107ff;
        uint32_t remote_irr = lint ? reg_get(a, off) & 0x4000 : 0; /* read-only */

        reg_set(a, off, (v & writable) | remote_irr | (sw_enabled(a) ? 0 : LVT_MASKED));
        break;
    }
    case APIC_TMICT:
        if (timer_mode(a) == TIMER_TSC)
            break;
        reg_set(a, off, v);
        timer_arm_count(a, now);
        break;
    case APIC_TDCR: {
        uint64_t left = timer_remaining(a, now);

        reg_set(a, off, v & 0xb);
        if (a->period_ns && left) {
            /* The running count goes on at the new rate. */
            uint64_t count = reg_get(a, APIC_TMICT);

            a->period_ns = MAX(count * tick_ns(a),
                               timer_mode(a) == TIMER_PERIODIC ? MIN_PERIOD_NS : 0);
            a->deadline_ns = now + MIN(left, a->period_ns);
        }
        break;
    }
    default:
        break; /* read-only or reserved */
    }
}

void emu_lapic_mmio_at(struct emu_lapic *apic, uint64_t offset, uint8_t *data, unsigned size,
                       bool is_write, uint64_t now_ns)
{
    struct lapic_effects fx = { .eoi_vector = -1 };
    unsigned off = (unsigned)(offset & 0xff0);
    unsigned byte = (unsigned)(offset & 0xf);

    if (offset >= 0x1000 || size == 0 || size > 8) {
        if (!is_write)
            memset(data, 0, size);
        return;
    }
    g_mutex_lock(&apic->lock);
    if (is_write) {
        /* Registers take aligned 32-bit writes; others are dropped (as KVM). */
        if (byte == 0 && size == 4 && off < sizeof(apic->s.regs)) {
            uint32_t v;

            memcpy(&v, data, 4);
            reg_write(apic, off, v, now_ns, &fx);
        }
    } else {
        uint32_t v = byte < 4 ? reg_read(apic, off, now_ns) : 0;
        uint64_t wide = byte < 4 ? (uint64_t)v >> (8 * byte) : 0;

        memcpy(data, &wide, size);
    }
    g_mutex_unlock(&apic->lock);

    if (fx.eoi_vector >= 0 && apic->bus->eoi_listener)
        apic->bus->eoi_listener(apic->bus->eoi_opaque, (uint8_t)fx.eoi_vector);
    if (fx.ipi)
        emu_apic_bus_ipi(apic->bus, apic, fx.icr_lo, fx.icr_hi);
    if (is_write && emu_lapic_pending(apic)) /* an EOI or TPR write unmasked one */
        apic->bus->ops->wake(apic->bus->opaque, apic->index);
}

void emu_lapic_mmio(struct emu_lapic *apic, uint64_t offset, uint8_t *data, unsigned size,
                    bool is_write)
{
    emu_lapic_mmio_at(apic, offset, data, size, is_write, emu_now_ns());
}

/* ---- MSRs ---- */

bool emu_lapic_rdmsr(struct emu_lapic *apic, uint32_t msr, uint64_t *value, bool *ok)
{
    switch (msr) {
    case MSR_APIC_BASE:
        g_mutex_lock(&apic->lock);
        *value = apic->s.apic_base;
        g_mutex_unlock(&apic->lock);
        *ok = true;
        return true;
    case MSR_TSC_DEADLINE:
        g_mutex_lock(&apic->lock);
        *value = timer_mode(apic) == TIMER_TSC ? apic->s.tsc_deadline : 0;
        g_mutex_unlock(&apic->lock);
        *ok = true;
        return true;
    default:
        return false; /* x2APIC (0x800-0x8ff) included: #GP */
    }
}

bool emu_lapic_wrmsr(struct emu_lapic *apic, uint32_t msr, uint64_t value, bool *ok)
{
    const struct emu_irq_ops *ops = apic->bus->ops;

    switch (msr) {
    case MSR_APIC_BASE: {
        uint64_t keep = APIC_BASE_BSP;

        /* No x2APIC, no reserved bits, no relocation (the MMIO page is fixed). */
        if ((value & ~(0xfffff000ull | APIC_BASE_ENABLE | APIC_BASE_BSP)) ||
            (value & 0xfffff000ull) != EMU_LAPIC_BASE) {
            *ok = false;
            return true;
        }
        g_mutex_lock(&apic->lock);
        if (hw_enabled(apic) && !(value & APIC_BASE_ENABLE))
            regs_reset(apic, reg_get(apic, APIC_ID)); /* disabling loses the state */
        apic->s.apic_base = (value & ~keep) | (apic->s.apic_base & keep);
        g_mutex_unlock(&apic->lock);
        *ok = true;
        return true;
    }
    case MSR_TSC_DEADLINE:
        *ok = true;
        g_mutex_lock(&apic->lock);
        if (timer_mode(apic) == TIMER_TSC) {
            apic->s.tsc_deadline = value;
            apic->deadline_ns = value ? ops->tsc_to_ns(apic->bus->opaque, value) : UINT64_MAX;
        }
        g_mutex_unlock(&apic->lock);
        return true;
    default:
        return false;
    }
}

/* ---- state ---- */

void emu_lapic_save(struct emu_lapic *apic, struct emu_lapic_state *out, uint64_t now_ns)
{
    g_mutex_lock(&apic->lock);
    *out = apic->s;
    if (timer_mode(apic) == TIMER_TSC) {
        out->timer_remaining_ns = 0;
        memset(&out->regs[APIC_TMCCT], 0, 4);
    } else {
        uint32_t cur = timer_current(apic, now_ns);

        /* Overdue (not polled yet): fire right after load. */
        out->timer_remaining_ns = apic->deadline_ns == UINT64_MAX ? 0
                                  : apic->deadline_ns > now_ns    ? apic->deadline_ns - now_ns
                                                                  : 1;
        memcpy(&out->regs[APIC_TMCCT], &cur, 4);
    }
    g_mutex_unlock(&apic->lock);
}

void emu_lapic_tsc_changed(struct emu_lapic *apic)
{
    const struct emu_irq_ops *ops = apic->bus->ops;
    bool armed;

    g_mutex_lock(&apic->lock);
    armed = timer_mode(apic) == TIMER_TSC && apic->s.tsc_deadline;
    if (armed)
        apic->deadline_ns = ops->tsc_to_ns(apic->bus->opaque, apic->s.tsc_deadline);
    g_mutex_unlock(&apic->lock);
    if (armed)
        ops->wake(apic->bus->opaque, apic->index); /* a sleeper re-reads its deadline */
}

void emu_lapic_load(struct emu_lapic *apic, const struct emu_lapic_state *in, uint64_t now_ns)
{
    const struct emu_irq_ops *ops = apic->bus->ops;
    bool pending;

    g_mutex_lock(&apic->lock);
    memcpy(apic->s.regs, in->regs, sizeof(apic->s.regs));
    /* Absent (0, e.g. a KVM "lapic" node without it) or malformed: keep ours. */
    if ((in->apic_base & ~(APIC_BASE_ENABLE | APIC_BASE_BSP)) == EMU_LAPIC_BASE)
        apic->s.apic_base = (in->apic_base & ~APIC_BASE_BSP) | (apic->s.apic_base & APIC_BASE_BSP);
    apic->s.tsc_deadline = in->tsc_deadline;
    apic->s.timer_remaining_ns = 0;
    reg_set(apic, APIC_VERSION, APIC_VERSION_VALUE);
    timer_stop(apic);
    if (timer_mode(apic) == TIMER_TSC) {
        reg_set(apic, APIC_TMICT, 0);
        if (apic->s.tsc_deadline)
            apic->deadline_ns = ops->tsc_to_ns(apic->bus->opaque, apic->s.tsc_deadline);
    } else if (reg_get(apic, APIC_TMICT)) {
        /* Without timer_remaining_ns (a KVM source), TMCCT says how much was left. */
        uint64_t left = in->timer_remaining_ns
                            ? in->timer_remaining_ns
                            : (uint64_t)reg_get(apic, APIC_TMCCT) * tick_ns(apic);

        timer_arm_count(apic, now_ns);
        if (left)
            apic->deadline_ns = now_ns + MIN(left, apic->period_ns);
        else if (timer_mode(apic) != TIMER_PERIODIC)
            timer_stop(apic); /* an expired one-shot */
    }
    memset(&apic->s.regs[APIC_TMCCT], 0, 4);
    pending = deliverable(apic) >= 0;
    g_mutex_unlock(&apic->lock);
    if (pending)
        ops->wake(apic->bus->opaque, apic->index);
}

static const struct vmstate_field lapic_fields[] = {
    VMSTATE_BYTES(struct emu_lapic_state, regs),
    VMSTATE_U64_OPT(struct emu_lapic_state, apic_base),
    VMSTATE_U64_OPT(struct emu_lapic_state, tsc_deadline),
    VMSTATE_U64_OPT(struct emu_lapic_state, timer_remaining_ns),
    VMSTATE_END,
};

const struct vmstate_desc emu_lapic_vmstate = {
    .name = "lapic",
    .version = 1,
    .min_version = 1,
    .fields = lapic_fields,
};
