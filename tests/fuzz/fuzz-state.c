/* fuzz-state.c: each record body's decoder on its own. The first input byte
 * picks a record type of the table (stream_record_types[]), the second gives
 * the stream header flags, the rest is the body: it goes through the type's
 * parse and describe functions, and a state blob (VCPU_STATE, VM_STATE,
 * DEVICE_STATE) on through the vmstate loader as the machine loads it (the
 * vCPU table of accel/x86-state.c and its MSR node; tables of the same shapes
 * as the VM's and devices'). */
#include <glib.h>
#include <libfdt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../accel/accel-backend.h"
#include "fuzz-state-tables.h"
#include "tern/stream.h"
#include "tern/vmstate.h"
#include "tern/x86-state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NR_GFNS 4096u /* the fuzzers' 16 MiB guest */

static uint8_t scratch[1u << MIG_STREAM_PAGE_SHIFT];

static bool on_page(void *opaque, const struct stream_page *page, GError **errp)
{
    (void)opaque;
    return stream_page_decode(page, scratch, sizeof(scratch), errp);
}

static bool on_range(void *opaque, uint64_t first, uint64_t n, GError **errp)
{
    (void)opaque, (void)first, (void)n, (void)errp;
    return true;
}

static bool on_run(void *opaque, uint64_t first_gfn, uint64_t npages, uint64_t first_crc,
                   GError **errp)
{
    const struct stream_ram_index *idx = opaque;

    (void)errp;
    for (uint64_t i = 0; i < npages; i++)
        if (!stream_ram_index_test(idx, first_gfn + i))
            g_error("fuzz-state: a run holds an absent page");
    (void)stream_ram_index_crc(idx, first_crc + npages - 1);
    return true;
}

static void field_u64(void *o, const char *n, uint64_t v)
{
    (void)o, (void)n, (void)v;
}

static void field_str(void *o, const char *n, const char *v)
{
    (void)o, (void)n;
    if (strlen(v) >= 4096)
        g_error("fuzz-state: field string too long");
}

static void field_flag(void *o, const char *n, bool v)
{
    (void)o, (void)n, (void)v;
}

static void field_list(void *o, const char *n, const char *const *v, size_t k)
{
    (void)o, (void)n;
    for (size_t i = 0; i < k; i++)
        field_str(o, n, v[i]);
}

/* libfdt is not built with the sanitizers: a read past the blob inside it
 * would go unseen in a heap buffer. So the blob is loaded from the end of a
 * mapping followed by an inaccessible page (8-aligned: at most 7 bytes of
 * slack), where such a read faults. */
#define GUARDED_MAX (STREAM_STATE_FDT_MAX + 4096)
static uint8_t *guarded_end;

static const void *guarded_copy(const void *p, size_t len)
{
    if (!guarded_end) {
        long pg = sysconf(_SC_PAGESIZE);
        uint8_t *m = mmap(NULL, GUARDED_MAX + (size_t)pg, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (m == MAP_FAILED || mprotect(m + GUARDED_MAX, (size_t)pg, PROT_NONE))
            g_error("fuzz-state: cannot map the guard page");
        guarded_end = m + GUARDED_MAX;
    }
    g_assert(len <= GUARDED_MAX - 8);
    if (!len)
        return guarded_end;
    return memcpy(guarded_end - ((len + 7) & ~(size_t)7), p, len);
}

/* A state blob the way machine_load_*() takes it: checked, then its node. */
static void load_state(const struct stream_body *body, const char *node_name, bool vcpu)
{
    struct stream_body copy = *body, *b = &copy;
    GError *err = NULL;
    int node;

    b->state.fdt = guarded_copy(body->state.fdt, body->state.fdt_len);
    if (!vmstate_fdt_check(b->state.fdt, b->state.fdt_len, &err)) {
        g_error_free(err);
        return;
    }
    node = fdt_subnode_offset(b->state.fdt, 0, node_name);
    if (node < 0)
        return;
    if (vcpu) {
        struct x86_vcpu_state st;
        struct x86_msr msrs[64];

        memset(&st, 0, sizeof(st));
        if (vmstate_load(&x86_vcpu_vmstate, &st, b->state.fdt, node, &err) &&
            x86_msrs_load(msrs, G_N_ELEMENTS(msrs), b->state.fdt, node, &err) >= 0)
            return;
    } else {
        struct fz_state st;

        memset(&st, 0, sizeof(st));
        if (vmstate_load(&fz_state_desc, &st, b->state.fdt, node, &err))
            return;
    }
    g_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct stream_record_type *t;
    const struct stream_fields f = { NULL, field_u64, field_str, field_flag, field_list };
    struct stream_parse_ctx ctx = { .nr_gfns = NR_GFNS, .page_fn = on_page, .range_fn = on_range };
    struct stream_record rec = { 0 };
    struct stream_body b;
    GError *err = NULL;
    uint8_t *body;

    if (size < 2 || size - 2 > MIG_REC_LENGTH_MAX)
        return 0;
    t = &stream_record_types[data[0] % stream_record_types_count];
    ctx.stream_flags = data[1] & MIG_HDR_F_KNOWN;
    /* The body in a buffer of its own size (8-aligned, as the reader's). */
    body = g_memdup2(data + 2, size - 2);
    rec.type = t->type;
    rec.length = (uint32_t)(size - 2);
    rec.body = body;
    /* Once against the guard page (for libfdt), once in the heap (for ASan). */
    if (rec.length <= GUARDED_MAX - 8) {
        rec.body = guarded_copy(body, rec.length);
        if (!stream_record_parse(&rec, &ctx, &b, &err))
            g_clear_error(&err);
        rec.body = body;
    }
    if (!stream_record_parse(&rec, &ctx, &b, &err)) {
        g_error_free(err);
        g_free(body);
        return 0;
    }
    if (t->describe)
        g_free(t->describe(&b, 1, &f));
    switch (t->type) {
    case MIG_REC_VCPU_STATE: {
        char name[16];

        snprintf(name, sizeof(name), "cpu@%u", b.state.index);
        load_state(&b, name, true);
        break;
    }
    case MIG_REC_VM_STATE:
        load_state(&b, "vm", false);
        break;
    case MIG_REC_DEVICE_STATE:
        load_state(&b, b.state.id, false);
        break;
    case MIG_REC_RAM_INDEX:
        if (!stream_ram_index_for_each_run(&b.ram_index, data[1] >> 4, on_run, &b.ram_index, &err))
            g_error_free(err);
        break;
    default:
        break;
    }
    g_free(body);
    return 0;
}
