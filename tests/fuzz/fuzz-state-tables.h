/* fuzz-state-tables.h: a vmstate table of the shapes of a VM's and a device's
 * state, which fuzz-state.c loads and make-seeds.c saves. */
#ifndef TERN_FUZZ_STATE_TABLES_H
#define TERN_FUZZ_STATE_TABLES_H

#include <stdint.h>

#include "tern/vmstate.h"

/* The shapes of a VM's and a device's state: arrays of structs, bytes,
 * optional fields. */
struct fz_chan {
    uint16_t count;
    uint8_t mode, latch[3];
    uint64_t deadline;
};
struct fz_state {
    uint8_t regs[16];
    uint32_t irr[8];
    uint64_t tsc, opt;
    struct fz_chan ch[3];
    uint8_t fifo[64];
};

static const struct vmstate_field fz_chan_fields[] = {
    VMSTATE_U16(struct fz_chan, count),
    VMSTATE_U8(struct fz_chan, mode),
    VMSTATE_U8_ARRAY(struct fz_chan, latch, 3),
    VMSTATE_U64_OPT(struct fz_chan, deadline),
    VMSTATE_END,
};
static const struct vmstate_desc fz_chan_desc = {
    .name = "ch", .version = 2, .min_version = 1, .fields = fz_chan_fields
};
static const struct vmstate_field fz_state_fields[] = {
    VMSTATE_BYTES(struct fz_state, regs),
    VMSTATE_U32_ARRAY(struct fz_state, irr, 8),
    VMSTATE_U64(struct fz_state, tsc),
    VMSTATE_U64_OPT(struct fz_state, opt),
    VMSTATE_STRUCT_ARRAY(struct fz_state, ch, 3, fz_chan_desc),
    VMSTATE_U8_ARRAY(struct fz_state, fifo, 64),
    VMSTATE_END,
};
static const struct vmstate_desc fz_state_desc = {
    .name = "state", .version = 1, .min_version = 1, .fields = fz_state_fields
};

#endif
