/* test-state.c: save every vCPU and VM state of a running guest and restore it,
 * into the same VM and into a fresh one; the guest must carry on unharmed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvm-test.h"
#include "tern/machine.h"
#include "tern/machine-state.h"

struct fixture {
    struct machine *m;
    struct serial_log log;
};

static int setup(void **state)
{
    static struct fixture f;
    char spec[300];
    serial_log_init(&f.log, spec, sizeof(spec));
    struct machine_config cfg = {
        .accel = test_accel,
        .ram_size = 256 << 20,
        .smp = 2,
        .append = "ws=8 cpus=2 tick_ms=100",
        .serial = spec,
    };
    g_autoptr(GError) err = NULL;
    f.m = machine_create(&cfg, &err);
    if (!f.m)
        fail_msg("machine_create: %s", err->message);
    assert_true(machine_start(f.m, NULL));
    assert_true(serial_log_wait(&f.log, "testguest: running", test_ms(10000), NULL, 0));
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    machine_destroy(f->m);
    serial_log_cleanup(&f->log);
    return 0;
}

/* Two more ticks, clean, with the LAPIC timer still counting. */
static void expect_guest_continues(struct fixture *f)
{
    struct tick a, b;
    assert_true(serial_log_wait_tick(&f->log, test_ms(5000), &a));
    assert_true(serial_log_wait_tick(&f->log, test_ms(5000), &b));
    assert_int_equal(a.errors, 0);
    assert_int_equal(b.errors, 0);
    assert_int_equal(b.tick, a.tick + 1);
    assert_true(b.timer_ticks > a.timer_ticks);
    assert_true(b.dirtied_mib >= a.dirtied_mib);
}

static void *save(struct fixture *f, size_t *len)
{
    g_autoptr(GError) err = NULL;
    double t0 = now_ms();
    void *blob = machine_save_state(f->m, len, &err);
    if (!blob)
        fail_msg("save: %s", err->message);
    printf("# saved 2 vCPUs + VM + devices: %zu bytes in %.2f ms\n", *len, now_ms() - t0);
    return blob;
}

static void load(struct fixture *f, const void *blob, size_t len)
{
    g_autoptr(GError) err = NULL;
    double t0 = now_ms();
    if (!machine_load_state(f->m, blob, len, &err))
        fail_msg("load: %s", err->message);
    printf("# restored in %.2f ms\n", now_ms() - t0);
}

static void test_roundtrip_same_vm(void **state)
{
    struct fixture *f = *state;
    size_t len;
    assert_true(machine_stop(f->m, NULL));
    g_autofree void *blob = save(f, &len);
    load(f, blob, len);
    assert_true(machine_cont(f->m, NULL));
    expect_guest_continues(f);
}

static void test_roundtrip_fresh_vm(void **state)
{
    struct fixture *f = *state;
    size_t len;
    g_autoptr(GError) err = NULL;
    assert_true(machine_stop(f->m, NULL));
    g_autofree void *blob = save(f, &len);
    double t0 = now_ms();
    if (!machine_rebuild_vm(f->m, &err))
        fail_msg("rebuild: %s", err->message);
    printf("# new KVM VM with 2 vCPUs in %.2f ms\n", now_ms() - t0);
    load(f, blob, len);
    assert_true(machine_cont(f->m, NULL));
    expect_guest_continues(f);
}

static void test_corrupt_state_rejected(void **state)
{
    struct fixture *f = *state;
    size_t len;
    assert_true(machine_stop(f->m, NULL));
    g_autofree void *blob = save(f, &len);
    g_autofree uint8_t *bad = g_memdup2(blob, len);

    /* A truncated blob and a blob with a wrecked header are refused with an
     * error; the machine then still takes the good state and runs. */
    g_autoptr(GError) e1 = NULL, e2 = NULL;
    assert_false(machine_load_state(f->m, bad, len / 2, &e1));
    assert_non_null(e1);
    memset(bad, 0xff, 16);
    assert_false(machine_load_state(f->m, bad, len, &e2));
    assert_non_null(e2);
    printf("# rejected: '%s' / '%s'\n", e1->message, e2->message);
    load(f, blob, len);
    assert_true(machine_cont(f->m, NULL));
    expect_guest_continues(f);
}

int main(void)
{
    vm_test_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_same_vm),
        cmocka_unit_test(test_roundtrip_fresh_vm),
        cmocka_unit_test(test_corrupt_state_rejected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
