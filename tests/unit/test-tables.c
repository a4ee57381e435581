/* test-tables.c: every vmstate table Tern migrates is sane (names unique and
 * non-empty, sizes matching types, nested tables present), and each saves a
 * reset object and loads it back. No KVM needed: only the tables are used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <libfdt.h>

#include <cmocka.h>

#include "tern/accel.h"
#include "tern/x86-state.h"
#include "tern/serial.h"
#include "tern/vmstate.h"

struct table {
    const char *what;
    const struct vmstate_desc *desc;
};

static void check_table(const struct table *t)
{
    g_autoptr(GError) err = NULL;
    if (!vmstate_desc_check(t->desc, &err))
        fail_msg("%s: %s", t->what, err->message);

    /* Round trip of a reset (all-zero) object, which every post_load must
     * accept: every field is reachable and fits the object (4 pages is more
     * than any table describes). */
    static uint8_t obj[4 * 4096], back[4 * 4096];
    memset(obj, 0, sizeof(obj));
    memset(back, 0xa5, sizeof(back));
    g_autofree void *fdt = vmstate_fdt_new(256 * 1024);
    if (!vmstate_save(t->desc, obj, fdt, 0, "x", &err))
        fail_msg("%s: save: %s", t->what, err->message);
    if (!vmstate_load(t->desc, back, fdt, fdt_subnode_offset(fdt, 0, "x"), &err))
        fail_msg("%s: load: %s", t->what, err->message);
    /* What the table covers came back as saved. */
    size_t covered = 0;
    for (size_t i = 0; i < sizeof(back); i++)
        covered += back[i] == 0;
    assert_true(covered > 0);
}

static void test_tables(void **state)
{
    (void)state;
    const struct table tables[] = {
        { "vCPU (both accelerators)", &x86_vcpu_vmstate },
        { "VM (accel/kvm)", accel_vm_vmstate(ACCEL_KVM) },
        { "VM (accel/emu)", accel_vm_vmstate(ACCEL_EMU) },
        { "16550 UART (hw/serial.c)", serial_vmstate() },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(tables); i++)
        check_table(&tables[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
