/* locktest.c: locktest=N: every CPU adds 1 to shared counters N times, under a
 * spinlock (a plain read-modify-write inside), with `lock incq` and with
 * `lock xaddq`; the totals show whether the CPU's atomics are atomic. */
#include "guest.h"

static volatile int lock_word;
static volatile uint64_t under_lock, locked_inc, locked_xadd;

void locktest_run(uint64_t iterations)
{
    for (uint64_t i = 0; i < iterations; i++) {
        while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
            cpu_relax();
        under_lock = under_lock + 1; /* not atomic: the lock must make it so */
        __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE);

        __asm__ volatile("lock incq %0" : "+m"(locked_inc) : : "memory");
        uint64_t one = 1;
        __asm__ volatile("lock xaddq %0, %1" : "+r"(one), "+m"(locked_xadd) : : "memory");
    }
}

/* After every CPU ran locktest_run(): one line, and true if all totals are exact. */
bool locktest_report(uint32_t ncpus, uint64_t iterations)
{
    uint64_t expected = iterations * ncpus;
    bool ok = under_lock == expected && locked_inc == expected && locked_xadd == expected;

    serial_printf("testguest: locktest cpus %u iterations %lu spinlock %lu lock_inc %lu "
                  "lock_xadd %lu expected %lu %s\n",
                  ncpus, iterations, under_lock, locked_inc, locked_xadd, expected,
                  ok ? "ok" : "BAD");
    return ok;
}
