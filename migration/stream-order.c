/* stream-order.c: the record order check: the grammar of socket streams and mapped-RAM files. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <string.h>

enum {
    ORDER_CONFIG,     /* expect VM_CONFIG */
    ORDER_STATIC_END, /* expect STATIC_END */
    ORDER_MAPPED_RAM, /* mapped: expect MAPPED_RAM (the head's last record) */
    ORDER_RAM_INDEX,  /* mapped: expect RAM_INDEX (the tail's first) */
    ORDER_RAM_FDS,    /* hand-over: expect RAM_FDS, then the state */
    ORDER_PASSES,     /* PAGE_DATA, ZERO_PAGES, ITERATION_END (mapped: ITERATION_END) */
    ORDER_VCPUS,      /* VCPU_STATE x nr_vcpus, then VM_STATE */
    ORDER_DEVICES,    /* DEVICE_STATE*, END */
    ORDER_DONE,
};

/* (rec) has its type's fixed part (head_length bytes), which the check reads. */
static bool head_ok(const struct stream_record *rec)
{
    const struct stream_record_type *t = stream_record_type_find(rec->type);

    return t && rec->length >= t->head_length;
}

void stream_order_init(struct stream_order *o)
{
    memset(o, 0, sizeof(*o));
    o->state = ORDER_CONFIG;
}

void stream_order_init_flags(struct stream_order *o, uint32_t stream_flags)
{
    stream_order_init(o);
    o->mapped = stream_flags & MIG_HDR_F_MAPPED_RAM;
    o->handover = stream_flags & MIG_HDR_F_RAM_FD;
}

bool stream_order_done(const struct stream_order *o)
{
    return o->state == ORDER_DONE;
}

bool stream_order_check(struct stream_order *o, const struct stream_record *rec, GError **errp)
{
    const struct stream_record_type *t;

    if (rec->skip && o->state != ORDER_DONE)
        return true;
    t = stream_record_type_find(rec->type);
    if (o->mapped && t && t->where == STREAM_REC_SOCKET)
        return stream_rec_fail(rec, errp,
                               "out of order: no %s records in a mapped-RAM file "
                               "(pages live in the RAM area)",
                               mig_rec_type_name(rec->type));
    if (!o->mapped && t && t->where == STREAM_REC_MAPPED)
        return stream_rec_fail(rec, errp, "out of order: %s only appears in a mapped-RAM file",
                               mig_rec_type_name(rec->type));
    if (!o->handover && t && t->where == STREAM_REC_HANDOVER)
        return stream_rec_fail(rec, errp,
                               "out of order: %s only appears in a cpr-transfer "
                               "stream",
                               mig_rec_type_name(rec->type));
    if (o->handover && t && (t->where == STREAM_REC_SOCKET || rec->type == MIG_REC_ITERATION_END))
        return stream_rec_fail(rec, errp,
                               "out of order: no %s records in a cpr-transfer "
                               "stream (RAM comes as memfds)",
                               mig_rec_type_name(rec->type));
    switch (o->state) {
    case ORDER_CONFIG:
        if (rec->type != MIG_REC_VM_CONFIG)
            return stream_rec_fail(rec, errp, "out of order: the stream must start with VM_CONFIG");
        if (head_ok(rec))
            o->nr_vcpus = mig_load_le32(rec->body + offsetof(struct mig_rec_vm_config, nr_vcpus));
        o->state = o->handover ? ORDER_RAM_FDS : ORDER_STATIC_END;
        return true;
    case ORDER_STATIC_END:
        if (rec->type != MIG_REC_STATIC_END)
            return stream_rec_fail(rec, errp, "out of order: expected STATIC_END after %s",
                                   o->handover ? "RAM_FDS" : "VM_CONFIG");
        o->state = o->mapped ? ORDER_MAPPED_RAM : o->handover ? ORDER_VCPUS : ORDER_PASSES;
        return true;
    case ORDER_RAM_FDS:
        if (rec->type != MIG_REC_RAM_FDS)
            return stream_rec_fail(rec, errp, "out of order: expected RAM_FDS after VM_CONFIG");
        o->state = ORDER_STATIC_END;
        return true;
    case ORDER_MAPPED_RAM:
        if (rec->type != MIG_REC_MAPPED_RAM)
            return stream_rec_fail(rec, errp, "out of order: expected MAPPED_RAM after STATIC_END");
        o->state = ORDER_RAM_INDEX;
        return true;
    case ORDER_RAM_INDEX:
        if (rec->type != MIG_REC_RAM_INDEX)
            return stream_rec_fail(rec, errp,
                                   "out of order: expected RAM_INDEX at the tail offset");
        o->state = ORDER_PASSES;
        return true;
    case ORDER_PASSES:
        if (rec->type == MIG_REC_PAGE_DATA || rec->type == MIG_REC_ZERO_PAGES)
            return true;
        if (rec->type == MIG_REC_ITERATION_END) {
            uint32_t pass, flags;

            if (!head_ok(rec))
                return stream_rec_fail(rec, errp, "body too short");
            pass = mig_load_le32(rec->body + offsetof(struct mig_rec_iteration_end, pass));
            flags = mig_load_le32(rec->body + offsetof(struct mig_rec_iteration_end, flags));
            if (pass != o->passes + 1)
                return stream_rec_fail(rec, errp, "out of order: pass %u after pass %u", pass,
                                       o->passes);
            o->passes = pass;
            if (flags & MIG_ITER_F_FINAL)
                o->state = ORDER_VCPUS;
            return true;
        }
        return stream_rec_fail(rec, errp, "out of order: expected %s%s",
                               o->mapped ? "ITERATION_END" : "page records or ITERATION_END",
                               o->passes ? " (the last pass must be flagged final)" : "");
    case ORDER_VCPUS:
        if (rec->type == MIG_REC_VCPU_STATE && o->next_vcpu < o->nr_vcpus) {
            uint32_t index;

            if (!head_ok(rec))
                return stream_rec_fail(rec, errp, "body too short");
            index = mig_load_le32(rec->body + offsetof(struct mig_rec_vcpu_state, index));
            if (index != o->next_vcpu)
                return stream_rec_fail(rec, errp, "out of order: vCPU %u, expected vCPU %u", index,
                                       o->next_vcpu);
            o->next_vcpu++;
            return true;
        }
        if (rec->type == MIG_REC_VM_STATE && o->next_vcpu == o->nr_vcpus) {
            o->state = ORDER_DEVICES;
            return true;
        }
        if (o->next_vcpu < o->nr_vcpus)
            return stream_rec_fail(rec, errp, "out of order: expected VCPU_STATE for vCPU %u of %u",
                                   o->next_vcpu, o->nr_vcpus);
        return stream_rec_fail(rec, errp,
                               "out of order: expected VM_STATE after %u VCPU_STATE records",
                               o->nr_vcpus);
    case ORDER_DEVICES:
        if (rec->type == MIG_REC_DEVICE_STATE)
            return true;
        if (rec->type == MIG_REC_END) {
            o->state = ORDER_DONE;
            return true;
        }
        return stream_rec_fail(rec, errp, "out of order: expected DEVICE_STATE or END");
    default:
        return stream_rec_fail(rec, errp, "out of order: a record after END");
    }
}
