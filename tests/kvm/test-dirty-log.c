/* test-dirty-log.c: the KVM dirty log never misses a write. Oracle (in the
 * spirit of the kernel's dirty_log_test): between two pauses, every page whose
 * contents changed must be in the union of the bitmaps harvested meanwhile,
 * including harvests made while the guest kept writing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvm-test.h"
#include "tern/bitmap.h"
#include "tern/accel.h"
#include "tern/machine.h"
#include "tern/machine-state.h"
#include "tern/memory.h"

#define RAM_SIZE (128ULL << 20)

static void sync_or_fail(struct accel *kvm, unsigned long *map)
{
    g_autoptr(GError) err = NULL;
    if (!accel_dirty_log_sync(kvm, map, &err))
        fail_msg("sync: %s", err->message);
}

/* One run per log mode, as dirty_log_test does: the bitmap and the ring. */
static void dirty_log_complete(uint32_t ring_size)
{
    char spec[300];
    struct serial_log log;
    serial_log_init(&log, spec, sizeof(spec));
    struct machine_config cfg = {
        .accel = test_accel,
        .ram_size = RAM_SIZE,
        .smp = 1,
        .append = "ws=16 tick_ms=100",
        .serial = spec,
        .dirty_ring_size = ring_size,
    };
    g_autoptr(GError) err = NULL;
    struct machine *m = machine_create(&cfg, &err);
    if (!m)
        fail_msg("machine_create: %s", err->message);
    assert_true(machine_start(m, NULL));
    assert_true(serial_log_wait(&log, "testguest: running", test_ms(10000), NULL, 0));

    struct accel *kvm = machine_accel(m);
    struct guest_ram *ram = machine_ram(m);
    const struct ram_region *r = &ram->regions[0];
    uint64_t npages = r->size >> GUEST_PAGE_SHIFT;
    unsigned long *seen = bitmap_new(ram->nr_gfns);
    uint8_t *copy = g_malloc(r->size);

    if (!accel_dirty_log_start(kvm, &err))
        fail_msg("start: %s", err->message);
    printf("# dirty log mode: %s\n", accel_dirty_log_mode(kvm));

    assert_true(machine_stop(m, NULL));
    sync_or_fail(kvm, seen);
    memcpy(copy, r->hva, r->size);

    for (int round = 0; round < 6; round++) {
        memset(seen, 0, BITMAP_LONGS(ram->nr_gfns) * sizeof(unsigned long));
        assert_true(machine_cont(m, NULL));
        /* Harvest while the guest writes on: after each of its next ticks, so
         * that it has run (and written) between two harvests, however slowly
         * the host lets it. */
        for (int k = 0; k < 4; k++) {
            struct tick t;
            assert_true(serial_log_wait_tick(&log, test_ms(5000), &t));
            sync_or_fail(kvm, seen);
        }
        assert_true(machine_stop(m, NULL));
        sync_or_fail(kvm, seen);
        bitmap_steal_into(seen, ram->vmm_dirty, ram->nr_gfns);

        uint64_t changed = 0, missed = 0;
        for (uint64_t p = 0; p < npages; p++) {
            uint64_t off = p << GUEST_PAGE_SHIFT;
            if (memcmp(copy + off, r->hva + off, GUEST_PAGE_SIZE) == 0)
                continue;
            changed++;
            if (!bitmap_test(seen, p)) {
                if (missed++ < 5)
                    printf("# round %d: page %#llx changed but not logged\n", round,
                           (unsigned long long)p);
            }
            memcpy(copy + off, r->hva + off, GUEST_PAGE_SIZE);
        }
        printf("# round %d: %llu pages changed, %llu logged, %llu missed\n", round,
               (unsigned long long)changed, (unsigned long long)bitmap_count(seen, npages),
               (unsigned long long)missed);
        assert_true(changed > 0);
        assert_int_equal(missed, 0);
    }
    assert_true(accel_dirty_log_stop(kvm, NULL));
    g_free(copy);
    g_free(seen);
    machine_destroy(m);
    serial_log_cleanup(&log);
}

static void test_dirty_bitmap(void **state)
{
    (void)state;
    dirty_log_complete(0);
}

static void test_dirty_ring(void **state)
{
    (void)state;
    if (test_accel != ACCEL_KVM)
        skip();               /* a KVM feature: the software CPU logs to a bitmap */
    dirty_log_complete(1024); /* small: the ring fills, and the vCPU harvests too */
}

int main(void)
{
    vm_test_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirty_bitmap),
        cmocka_unit_test(test_dirty_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
