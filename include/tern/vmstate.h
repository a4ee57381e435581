/* vmstate.h: declarative state tables, saved to and loaded from flattened
 * device tree (FDT) nodes: one node per object, one property per field. */
#ifndef TERN_VMSTATE_H
#define TERN_VMSTATE_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vmstate_type {
    VMS_U8,
    VMS_U16,
    VMS_U32,
    VMS_U64,    /* scalars; with count > 1 a fixed array */
    VMS_BYTES,  /* opaque bytes, (size) long */
    VMS_STRUCT, /* nested object: a child node, (sub) describes it */
};

struct vmstate_desc;

struct vmstate_field {
    const char *name; /* property (or child node) name */
    size_t offset;    /* offset in the object */
    size_t size;      /* element size in bytes */
    unsigned count;   /* array length; 1 for a single value */
    enum vmstate_type type;
    const struct vmstate_desc *sub; /* VMS_STRUCT only */
    bool optional;                  /* absent on load: keep the object's current value */
};

struct vmstate_desc {
    const char *name;
    uint32_t version;                   /* written as property "version" */
    uint32_t min_version;               /* oldest version load accepts */
    const struct vmstate_field *fields; /* ends with VMSTATE_END */
    bool (*pre_save)(void *opaque, GError **errp);
    bool (*post_load)(void *opaque, GError **errp);
};

/* Compile-time check that (T).(f) has (sz) bytes; evaluates to 0. */
#define VMSTATE_CHECK_SIZE(T, f, sz) (0 * sizeof(char[(sizeof(((T *)0)->f) == (sz)) ? 1 : -1]))

/* clang-format off */
#define VMSTATE_SCALAR_(T, f, ty, sz, opt) \
    { .name = #f, .offset = offsetof(T, f) + VMSTATE_CHECK_SIZE(T, f, sz), .size = (sz), \
      .count = 1, .type = (ty), .optional = (opt) }
#define VMSTATE_U8(T, f)  VMSTATE_SCALAR_(T, f, VMS_U8, 1, false)
#define VMSTATE_U16(T, f) VMSTATE_SCALAR_(T, f, VMS_U16, 2, false)
#define VMSTATE_U32(T, f) VMSTATE_SCALAR_(T, f, VMS_U32, 4, false)
#define VMSTATE_U64(T, f) VMSTATE_SCALAR_(T, f, VMS_U64, 8, false)
#define VMSTATE_U8_OPT(T, f)  VMSTATE_SCALAR_(T, f, VMS_U8, 1, true)
#define VMSTATE_U16_OPT(T, f) VMSTATE_SCALAR_(T, f, VMS_U16, 2, true)
#define VMSTATE_U32_OPT(T, f) VMSTATE_SCALAR_(T, f, VMS_U32, 4, true)
#define VMSTATE_U64_OPT(T, f) VMSTATE_SCALAR_(T, f, VMS_U64, 8, true)
/* Fixed arrays of scalars: (f) is an array of (n) elements of (sz) bytes. */
#define VMSTATE_ARRAY_(T, f, ty, sz, n) \
    { .name = #f, .offset = offsetof(T, f) + VMSTATE_CHECK_SIZE(T, f, (sz) * (n)), \
      .size = (sz), .count = (n), .type = (ty) }
#define VMSTATE_U8_ARRAY(T, f, n)  VMSTATE_ARRAY_(T, f, VMS_U8, 1, n)
#define VMSTATE_U16_ARRAY(T, f, n) VMSTATE_ARRAY_(T, f, VMS_U16, 2, n)
#define VMSTATE_U32_ARRAY(T, f, n) VMSTATE_ARRAY_(T, f, VMS_U32, 4, n)
#define VMSTATE_U64_ARRAY(T, f, n) VMSTATE_ARRAY_(T, f, VMS_U64, 8, n)
/* Opaque bytes: the whole member (f). */
#define VMSTATE_BYTES(T, f) \
    { .name = #f, .offset = offsetof(T, f), .size = sizeof(((T *)0)->f), .count = 1, \
      .type = VMS_BYTES }
/* A nested struct member described by (desc). */
#define VMSTATE_STRUCT(T, f, desc) \
    { .name = #f, .offset = offsetof(T, f), .size = sizeof(((T *)0)->f), .count = 1, \
      .type = VMS_STRUCT, .sub = &(desc) }
/* A fixed array (f) of (n) structs, each described by (desc): child nodes
 * "f@0" ... "f@<n-1>". */
#define VMSTATE_STRUCT_ARRAY(T, f, n, desc) \
    { .name = #f, .offset = offsetof(T, f) + VMSTATE_CHECK_SIZE(T, f, \
          sizeof(((T *)0)->f[0]) * (n)), \
      .size = sizeof(((T *)0)->f[0]), .count = (n), .type = VMS_STRUCT, .sub = &(desc) }
#define VMSTATE_END { .name = NULL }
/* clang-format on */

/* Smallest FDT vmstate_fdt_new() makes. */
#define VMSTATE_FDT_MIN 256

/* Add node (node_name) under (parent) of (fdt) holding (opaque) as (desc) says
 * (encoding: docs/vmstate.md). Calls each level's pre_save first (it may run
 * more than once if the caller retries: keep it idempotent). On failure (fdt)
 * is left as it was; when it is only too small the error is TERN_ERROR_NOSPACE:
 * grow it with vmstate_fdt_grow() and retry, or use vmstate_save_grow(). */
bool vmstate_save(const struct vmstate_desc *desc, const void *opaque, void *fdt, int parent,
                  const char *node_name, GError **errp);
/* Load node (node) of (fdt) into (opaque). Missing mandatory properties, wrong
 * sizes and unsupported versions are errors naming the node and property;
 * unknown properties are ignored (a newer writer's optional fields). */
bool vmstate_load(const struct vmstate_desc *desc, void *opaque, const void *fdt, int node,
                  GError **errp);

/* vmstate_save() into (*fdt), growing (reallocating) it as needed. (parent)
 * stays valid across growth (node offsets do not move). */
bool vmstate_save_grow(const struct vmstate_desc *desc, const void *opaque, void **fdt, int parent,
                       const char *node_name, GError **errp);
/* Double the buffer of (*fdt) (an FDT from vmstate_fdt_new(); the old one is
 * freed), up to 64 MiB. Node offsets are preserved. */
bool vmstate_fdt_grow(void **fdt, GError **errp);

/* A new empty FDT of (size) bytes (at least VMSTATE_FDT_MIN; g_free it), ready
 * for vmstate_save(); NULL if (size) exceeds INT_MAX. Before sending it, callers
 * may fdt_pack() it and send fdt_totalsize() bytes. */
void *vmstate_fdt_new(size_t size);
/* Validate an FDT of (len) received bytes at (fdt) (8-byte aligned) before
 * anything reads it: header, claimed size <= (len), then fdt_check_full(). */
bool vmstate_fdt_check(const void *fdt, size_t len, GError **errp);
/* Sanity of a table (names unique and non-empty, sizes sane): for unit tests. */
bool vmstate_desc_check(const struct vmstate_desc *desc, GError **errp);

#endif
