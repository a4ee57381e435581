/* workload.c: stamped working-set rewrites with a rate limit, the fill region and its slow check, gap measurement. */
#include "guest.h"

#define QWORDS (PAGE_SIZE / 8)
#define ERRORS_PRINTED_MAX 10
#define FILL_CHECK_SECONDS 10 /* the whole fill region is re-read this often */
#define FILL_BATCH_MAX 1024   /* pages verified per loop iteration at most */

struct params params;

static uint32_t ncpus;
static uint64_t ws_pages_total, fill_pages_total;
static uint64_t rate_pps_cpu; /* pages per second per CPU, 0 = unlimited */
static uint64_t rate_burst;   /* token bucket size, pages * tsc_hz */
static volatile uint32_t fill_done;
static volatile uint32_t errors_printed;
uint64_t locktest_failed; /* counts as one error in every report */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t page_check(uint64_t pfn, uint64_t pass)
{
    return mix64(pfn * 0x9e3779b97f4a7c15ull ^ mix64(pass + 0x7465726eull));
}

/* Page layout: pfn, pass, check word, then a xorshift stream seeded by the check word. */
/* The seed of a page's body: new every pass, or with wsdelta=1 the same in
 * every pass, so that a rewrite changes 16 bytes of the page (a counter
 * update rather than fresh data: what delta encodings such as XBZRLE are for). */
static uint64_t body_seed(uint64_t pfn, uint64_t pass)
{
    return page_check(pfn, params.wsdelta ? 0 : pass) | 1;
}

static void page_write(uint64_t *p, uint64_t pfn, uint64_t pass)
{
    uint64_t chk = page_check(pfn, pass), x = body_seed(pfn, pass);

    p[0] = pfn;
    p[1] = pass;
    p[2] = chk;
    for (unsigned i = 3; i < QWORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
}

/* Check a page against (pass); count and report a mismatch. Returns true if intact. */
static bool page_verify(struct cpu *c, const uint64_t *p, uint64_t pfn, uint64_t pass)
{
    uint64_t chk = page_check(pfn, pass), x = body_seed(pfn, pass);
    unsigned bad = 0;

    if (p[0] != pfn || p[1] != pass || p[2] != chk) {
        bad = p[0] != pfn ? 0 : p[1] != pass ? 1 : 2;
    } else {
        for (unsigned i = 3; i < QWORDS; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (p[i] != x) {
                bad = i;
                break;
            }
        }
        if (!bad)
            return true;
    }
    __atomic_add_fetch(&c->errors, 1, __ATOMIC_RELAXED);
    if (__atomic_fetch_add(&errors_printed, 1, __ATOMIC_RELAXED) < ERRORS_PRINTED_MAX) {
        serial_printf("error: page %lu expected pass %lu got pass %lu pfn %lu check %s, "
                      "first bad byte %u (cpu %u)\n",
                      pfn, pass, p[1], p[0], p[2] == page_check(p[0], p[1]) ? "ok" : "bad", bad * 8,
                      c->slot);
        c->last_tsc = rdtsc(); /* printing is not a pause */
    }
    return false;
}

void workload_setup(uint32_t n)
{
    uint64_t avail = boot_usable_pages();
    uint64_t wake_hz = params.timer_hz ? params.timer_hz : 1000;

    ncpus = n;
    ws_pages_total = params.ws_mib * 256;
    fill_pages_total = params.fill_mib * 256;
    if (ws_pages_total > avail) {
        serial_printf("warning: ws=%lu MiB does not fit, using %lu MiB\n", params.ws_mib,
                      avail / 256);
        ws_pages_total = avail / 256 * 256;
    }
    if (fill_pages_total > avail - ws_pages_total) {
        serial_printf("warning: fill=%lu MiB does not fit, using %lu MiB\n", params.fill_mib,
                      (avail - ws_pages_total) / 256);
        fill_pages_total = (avail - ws_pages_total) / 256 * 256;
    }
    params.ws_mib = ws_pages_total / 256;
    params.fill_mib = fill_pages_total / 256;
    rate_pps_cpu = params.rate_mib * 256 / n;
    if (params.rate_mib && !rate_pps_cpu)
        rate_pps_cpu = 1;
    /* enough for two wake-ups, and for 100 ms of host preemption */
    rate_burst = rate_pps_cpu * tsc_hz * 2 / wake_hz;
    if (rate_burst < rate_pps_cpu * tsc_hz / 10)
        rate_burst = rate_pps_cpu * tsc_hz / 10;
    rate_burst += tsc_hz;

    for (uint32_t i = 0; i < n; i++) {
        struct cpu *c = cpu_list[i];
        uint64_t ws = ws_pages_total / n, fill = fill_pages_total / n;

        c->ws_first = i * ws + (i < ws_pages_total % n ? i : ws_pages_total % n);
        c->ws_pages = ws + (i < ws_pages_total % n);
        c->fill_first = ws_pages_total + i * fill +
                        (i < fill_pages_total % n ? i : fill_pages_total % n);
        c->fill_pages = fill + (i < fill_pages_total % n);
        c->pass = 1;
    }
}

void workload_fill(struct cpu *c)
{
    for (uint64_t i = 0; i < c->fill_pages; i++) {
        uint64_t a = boot_page_addr(c->fill_first + i);

        page_write((uint64_t *)a, a / PAGE_SIZE, 0);
    }
    if (params.locktest)
        locktest_run(params.locktest);
    __atomic_add_fetch(&fill_done, 1, __ATOMIC_RELEASE);
}

void workload_wait_filled(void)
{
    while (__atomic_load_n(&fill_done, __ATOMIC_ACQUIRE) < ncpus)
        cpu_relax();
}

/* Re-read a few fill pages: the whole region every FILL_CHECK_SECONDS. */
static void fill_check(struct cpu *c, uint64_t dt)
{
    uint64_t pps = c->fill_pages / FILL_CHECK_SECONDS + 1;
    unsigned n = 0;

    if (!c->fill_pages)
        return;
    c->fill_due += dt * pps;
    if (c->fill_due > FILL_BATCH_MAX * tsc_hz)
        c->fill_due = FILL_BATCH_MAX * tsc_hz;
    while (c->fill_due >= tsc_hz && n++ < FILL_BATCH_MAX) {
        uint64_t a = boot_page_addr(c->fill_first + c->fill_pos);

        if (!page_verify(c, (const uint64_t *)a, a / PAGE_SIZE, 0))
            page_write((uint64_t *)a, a / PAGE_SIZE, 0); /* count it once */
        c->fill_due -= tsc_hz;
        if (++c->fill_pos == c->fill_pages)
            c->fill_pos = 0;
    }
}

/* Verify the previous stamp of the next working-set page, then rewrite it. */
static void ws_rewrite_one(struct cpu *c)
{
    uint64_t a = boot_page_addr(c->ws_first + c->ws_pos);
    uint64_t *p = (uint64_t *)a;

    if (c->pass > 1)
        page_verify(c, p, a / PAGE_SIZE, c->pass - 1);
    page_write(p, a / PAGE_SIZE, c->pass);
    __atomic_store_n(&c->pages_written, c->pages_written + 1, __ATOMIC_RELAXED);
    if (++c->ws_pos == c->ws_pages) {
        c->ws_pos = 0;
        __atomic_store_n(&c->passes_done, c->pass, __ATOMIC_RELAXED);
        c->pass++;
    }
}

static void note_gap(struct cpu *c, uint64_t gap)
{
    uint64_t cur = __atomic_load_n(&c->max_gap_tsc, __ATOMIC_RELAXED);

    while (gap > cur && !__atomic_compare_exchange_n(&c->max_gap_tsc, &cur, gap, false,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

void workload_run(struct cpu *c)
{
    c->last_tsc = rdtsc();
    for (;;) {
        uint64_t now = rdtsc(), dt = now - c->last_tsc;
        uint64_t from = __atomic_load_n(&c->gap_cut, __ATOMIC_RELAXED);
        bool wait = true;

        if (from < c->last_tsc)
            from = c->last_tsc;
        note_gap(c, now > from ? now - from : 0);
        __atomic_store_n(&c->last_tsc, now, __ATOMIC_RELAXED);
        if (dt > tsc_hz)
            dt = tsc_hz; /* after a pause: no catching up */
        if (c->vif && c->irq_count > 3 && !c->after_vif0)
            c->after_vif0 = (uint8_t)(0x10 | c->vif[0]);
        if (c->slot == 0)
            report_poll(c, now);
        fill_check(c, dt);
        if (c->ws_pages) {
            if (!rate_pps_cpu) {
                ws_rewrite_one(c);
                wait = false;
            } else {
                c->tokens += dt * rate_pps_cpu;
                if (c->tokens > rate_burst)
                    c->tokens = rate_burst;
                if (c->tokens >= tsc_hz) {
                    c->tokens -= tsc_hz;
                    ws_rewrite_one(c);
                    wait = false;
                }
            }
        }
        if (wait) {
            if (params.timer_hz)
                cpu_idle();
            else
                cpu_relax();
        }
    }
}

/* One report line. A gap still going on in another CPU (it has not run since
 * a pause) is counted now, and only its remainder in the next report. */
void workload_report(uint64_t tick, uint64_t t_ms, uint64_t now)
{
    uint64_t pages = 0, passes = ~0ull, gap = 0, errors = locktest_failed;

    for (uint32_t i = 0; i < ncpus; i++) {
        struct cpu *c = cpu_list[i];
        uint64_t last = __atomic_load_n(&c->last_tsc, __ATOMIC_RELAXED), g;

        __atomic_store_n(&c->gap_cut, now, __ATOMIC_RELAXED);
        g = __atomic_exchange_n(&c->max_gap_tsc, 0, __ATOMIC_RELAXED);
        if (now > last && now - last > g)
            g = now - last;

        pages += c->pages_written;
        errors += c->errors;
        if (c->ws_pages && c->passes_done < passes)
            passes = c->passes_done;
        if (g > gap)
            gap = g;
    }
    if (passes == ~0ull)
        passes = 0;
    serial_printf("tick %lu t_ms %lu dirtied_mib %lu passes %lu timer_ticks %lu "
                  "max_gap_us %lu errors %lu\n",
                  tick, t_ms, pages / 256, passes, timer_ticks, tsc_to_us(gap), errors);
}

uint64_t workload_errors(void)
{
    uint64_t errors = locktest_failed;

    for (uint32_t i = 0; i < ncpus; i++)
        errors += cpu_list[i]->errors;
    return errors;
}
