/* fake-vm.h: knobs of the fake VM state and dirty log (fake-vm.c). */
#ifndef TERN_TESTS_FAKE_VM_H
#define TERN_TESTS_FAKE_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "fake-machine.h"

/* The scripted guest: at every dirty-log sync it has rewritten (hot_pages)
 * pages from (first_hot_gfn) of (ram) with the byte 0x40 + sync number. */
struct fake_guest {
    struct guest_ram *ram;
    uint64_t first_hot_gfn;
    unsigned hot_pages;
    unsigned syncs; /* out: dirty-log syncs so far */
    bool logging;   /* out: between dirty_log_start and stop */
};

void fake_vm_reset(const struct fake_guest *g);
unsigned fake_vm_syncs(void);
/* How many vCPU and VM state blobs the target loaded. */
unsigned fake_vm_loaded_vcpus(void);
unsigned fake_vm_loaded_vm(void);
/* Whether the incoming side has finished; (ok) says whether it succeeded. */
bool fake_vm_incoming_done(bool *ok);

#endif
