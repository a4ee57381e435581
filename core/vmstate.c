/* vmstate.c: table-driven save/load of objects to FDT nodes (one property per field). */
#include "tern/vmstate.h"

#include <libfdt.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "tern/util.h"

/* Nesting deeper than this is a table bug (or a cycle). */
#define VMSTATE_MAX_DEPTH 8
/* vmstate_fdt_grow() stops here. */
#define VMSTATE_FDT_MAX (64u << 20)
/* A single property value is never larger than this. */
#define VMSTATE_PROP_MAX (16u << 20)

#define VMS_ERR(errp, ...) g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, __VA_ARGS__)

static size_t type_size(enum vmstate_type type)
{
    switch (type) {
    case VMS_U8:
        return 1;
    case VMS_U16:
        return 2;
    case VMS_U32:
        return 4;
    case VMS_U64:
        return 8;
    default:
        return 0;
    }
}

/* Bytes of the property for a scalar, array or VMS_BYTES field. */
static size_t field_bytes(const struct vmstate_field *f)
{
    return f->size * f->count;
}

/* Copy field (f)'s elements from (src) to (dst), swapping between host order
 * and the FDT's big-endian cells. The swap is its own inverse, so one
 * function encodes (object to property) and decodes (property to object). */
static void field_copy(const struct vmstate_field *f, const uint8_t *src, uint8_t *dst)
{
    if (f->type == VMS_BYTES || f->size == 1) {
        memcpy(dst, src, field_bytes(f));
        return;
    }
    for (unsigned i = 0; i < f->count; i++, src += f->size, dst += f->size) {
        for (size_t b = 0; b < f->size; b++)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            dst[b] = src[f->size - 1 - b];
#else
            dst[b] = src[b];
#endif
    }
}

/* Encode (f) of the object at (obj) into (out). */
static void field_encode(const struct vmstate_field *f, const uint8_t *obj, uint8_t *out)
{
    field_copy(f, obj + f->offset, out);
}

/* Decode the property bytes (in) of field (f) into the object at (obj). */
static void field_decode(const struct vmstate_field *f, uint8_t *obj, const uint8_t *in)
{
    field_copy(f, in, obj + f->offset);
}

/* The child of (node) named exactly (name) (fdt_subnode_offset() would let
 * "in" match "in@1"), or a negative libfdt error. */
static int child_exact(const void *fdt, int node, const char *name)
{
    int child;

    fdt_for_each_subnode(child, fdt, node) {
        const char *n = fdt_get_name(fdt, child, NULL);

        if (n && strcmp(n, name) == 0)
            return child;
    }
    return child; /* -FDT_ERR_NOTFOUND, or a corrupt tree */
}

/* Turn a libfdt error (err) while writing (what) at (path) into (errp). */
static void save_error(GError **errp, int err, const char *path, const char *what)
{
    if (err == -FDT_ERR_NOSPACE)
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE,
                    "%s: no space left in the FDT for %s (grow it and retry)", path, what);
    else
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: cannot write %s: %s", path, what,
                    fdt_strerror(err));
}

static bool save_node(const struct vmstate_desc *desc, const void *opaque, void *fdt, int parent,
                      const char *node_name, const char *path, unsigned depth, GError **errp);

/* The node of element (i) of struct field (f): "name", or "name@i" in an array. */
static char *child_name(const struct vmstate_field *f, unsigned i)
{
    return f->count == 1 ? g_strdup(f->name) : g_strdup_printf("%s@%u", f->name, i);
}

static bool save_fields(const struct vmstate_desc *desc, const uint8_t *obj, void *fdt, int node,
                        const char *path, unsigned depth, GError **errp)
{
    int err = fdt_setprop_u32(fdt, node, "version", desc->version);

    if (err < 0) {
        save_error(errp, err, path, "property \"version\"");
        return false;
    }
    for (const struct vmstate_field *f = desc->fields; f && f->name; f++) {
        if (f->type == VMS_STRUCT) {
            for (unsigned i = 0; i < f->count; i++) {
                g_autofree char *child = child_name(f, i);
                g_autofree char *child_path = g_strdup_printf("%s/%s", path, child);

                if (!save_node(f->sub, obj + f->offset + (size_t)i * f->size, fdt, node, child,
                               child_path, depth + 1, errp))
                    return false;
            }
            continue;
        }
        {
            size_t n = field_bytes(f);
            g_autofree uint8_t *buf = g_malloc(n ? n : 1);

            field_encode(f, obj, buf);
            err = fdt_setprop(fdt, node, f->name, buf, (int)n);
            if (err < 0) {
                g_autofree char *what = g_strdup_printf("property \"%s\"", f->name);

                save_error(errp, err, path, what);
                return false;
            }
        }
    }
    return true;
}

static bool save_node(const struct vmstate_desc *desc, const void *opaque, void *fdt, int parent,
                      const char *node_name, const char *path, unsigned depth, GError **errp)
{
    int node;

    if (depth > VMSTATE_MAX_DEPTH) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: nested too deeply", path);
        return false;
    }
    /* The hooks take a mutable object: pre_save may refresh derived fields. */
    if (desc->pre_save && !desc->pre_save((void *)opaque, errp)) {
        g_prefix_error(errp, "%s: pre_save: ", path);
        return false;
    }
    node = fdt_add_subnode(fdt, parent, node_name);
    if (node < 0) {
        g_autofree char *what = g_strdup_printf("node \"%s\"", node_name);

        save_error(errp, node, path, what);
        return false;
    }
    return save_fields(desc, opaque, fdt, node, path, depth, errp);
}

bool vmstate_save(const struct vmstate_desc *desc, const void *opaque, void *fdt, int parent,
                  const char *node_name, GError **errp)
{
    if (child_exact(fdt, parent, node_name) >= 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "%s: node already exists", node_name);
        return false;
    }
    if (!save_node(desc, opaque, fdt, parent, node_name, node_name, 0, errp)) {
        /* Leave (fdt) as it was, so the caller can grow it and retry. */
        int node = child_exact(fdt, parent, node_name);

        if (node >= 0)
            fdt_del_node(fdt, node);
        return false;
    }
    return true;
}

bool vmstate_fdt_grow(void **fdt, GError **errp)
{
    size_t size = fdt_totalsize(*fdt);
    void *bigger;
    int err;

    if (size >= VMSTATE_FDT_MAX) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "state FDT would exceed %u MiB",
                    VMSTATE_FDT_MAX >> 20);
        return false;
    }
    size = MIN(size * 2, (size_t)VMSTATE_FDT_MAX);
    bigger = g_malloc0(size);
    err = fdt_open_into(*fdt, bigger, (int)size);
    if (err < 0) {
        g_free(bigger);
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "cannot grow the state FDT: %s",
                    fdt_strerror(err));
        return false;
    }
    g_free(*fdt);
    *fdt = bigger;
    return true;
}

bool vmstate_save_grow(const struct vmstate_desc *desc, const void *opaque, void **fdt, int parent,
                       const char *node_name, GError **errp)
{
    for (;;) {
        GError *err = NULL;

        if (vmstate_save(desc, opaque, *fdt, parent, node_name, &err))
            return true;
        if (!g_error_matches(err, TERN_ERROR, TERN_ERROR_NOSPACE)) {
            g_propagate_error(errp, err);
            return false;
        }
        g_error_free(err);
        if (!vmstate_fdt_grow(fdt, errp))
            return false;
    }
}

/* Validate (apply false) or load (apply true) node (node) into (obj). The
 * validation pass writes nothing, so a bad blob leaves the object untouched. */
static bool load_node(const struct vmstate_desc *desc, uint8_t *obj, const void *fdt, int node,
                      const char *path, unsigned depth, bool apply, GError **errp)
{
    const fdt32_t *ver;
    int len;

    if (depth > VMSTATE_MAX_DEPTH) {
        VMS_ERR(errp, "%s: nested too deeply", path);
        return false;
    }
    ver = fdt_getprop(fdt, node, "version", &len);
    if (!ver) {
        VMS_ERR(errp, "%s: missing property \"version\"", path);
        return false;
    }
    if (len != 4) {
        VMS_ERR(errp, "%s: property \"version\" is %d bytes, expected 4", path, len);
        return false;
    }
    if (fdt32_ld(ver) < desc->min_version || fdt32_ld(ver) > desc->version) {
        VMS_ERR(errp, "%s: version %u not in [%u, %u]", path, fdt32_ld(ver), desc->min_version,
                desc->version);
        return false;
    }
    for (const struct vmstate_field *f = desc->fields; f && f->name; f++) {
        if (f->type == VMS_STRUCT) {
            for (unsigned i = 0; i < f->count; i++) {
                g_autofree char *child = child_name(f, i);
                g_autofree char *child_path = g_strdup_printf("%s/%s", path, child);
                int sub = child_exact(fdt, node, child);

                if (sub < 0) {
                    if (f->optional && sub == -FDT_ERR_NOTFOUND)
                        continue;
                    VMS_ERR(errp, "%s: missing node \"%s\"", path, child);
                    return false;
                }
                if (!load_node(f->sub, obj + f->offset + (size_t)i * f->size, fdt, sub, child_path,
                               depth + 1, apply, errp))
                    return false;
            }
            continue;
        }
        {
            const uint8_t *val = fdt_getprop(fdt, node, f->name, &len);

            if (!val) {
                if (f->optional && len == -FDT_ERR_NOTFOUND)
                    continue;
                VMS_ERR(errp, "%s: missing property \"%s\"", path, f->name);
                return false;
            }
            if ((size_t)len != field_bytes(f)) {
                VMS_ERR(errp, "%s: property \"%s\" is %d bytes, expected %zu", path, f->name, len,
                        field_bytes(f));
                return false;
            }
            if (apply)
                field_decode(f, obj, val);
        }
    }
    if (apply && desc->post_load && !desc->post_load(obj, errp)) {
        g_prefix_error(errp, "%s: post_load: ", path);
        return false;
    }
    return true;
}

bool vmstate_load(const struct vmstate_desc *desc, void *opaque, const void *fdt, int node,
                  GError **errp)
{
    const char *name = fdt_get_name(fdt, node, NULL);

    if (!name) {
        VMS_ERR(errp, "%s: no such node (offset %d)", desc->name, node);
        return false;
    }
    if (!*name)
        name = "/";
    return load_node(desc, opaque, fdt, node, name, 0, false, errp) &&
           load_node(desc, opaque, fdt, node, name, 0, true, errp);
}

void *vmstate_fdt_new(size_t size)
{
    void *fdt;

    size = MAX(size, (size_t)VMSTATE_FDT_MIN);
    if (size > INT_MAX)
        return NULL;
    fdt = g_malloc0(size);
    if (fdt_create_empty_tree(fdt, (int)size) < 0) {
        g_free(fdt);
        return NULL;
    }
    return fdt;
}

/* Big-endian u32 at byte (off) of (b): FDT header fields, read by hand. */
static uint32_t be32_at(const uint8_t *b, size_t off)
{
    return (uint32_t)b[off] << 24 | (uint32_t)b[off + 1] << 16 | (uint32_t)b[off + 2] << 8 |
           b[off + 3];
}

/* [off, off + size) lies inside (total) bytes, without overflow. */
static bool block_inside(uint32_t off, uint32_t size, uint32_t total)
{
    return off <= total && size <= total - off;
}

/*
 * What libfdt is trusted with only after it holds. fdt_check_full() is not
 * enough on hostile input: libfdt 1.6.1's dereferences a NULL name when the
 * root node of a blob older than version 16 has none (docs/fuzzing.md, crash
 * state-1), and libfdt is not built with the sanitizers, so a read past the
 * blob inside it goes unseen. So the header is checked here by hand first:
 * version 17 only (what vmstate_fdt_new() makes), every block inside the
 * blob, no memory reservations, the structure block opening with the root
 * node and its empty name.
 */
static bool fdt_preflight(const uint8_t *b, size_t len, GError **errp)
{
    uint32_t total = be32_at(b, offsetof(struct fdt_header, totalsize));
    uint32_t off_struct = be32_at(b, offsetof(struct fdt_header, off_dt_struct));
    uint32_t off_strings = be32_at(b, offsetof(struct fdt_header, off_dt_strings));
    uint32_t off_rsv = be32_at(b, offsetof(struct fdt_header, off_mem_rsvmap));
    uint32_t version = be32_at(b, offsetof(struct fdt_header, version));
    uint32_t last_comp = be32_at(b, offsetof(struct fdt_header, last_comp_version));
    uint32_t size_strings = be32_at(b, offsetof(struct fdt_header, size_dt_strings));
    uint32_t size_struct = be32_at(b, offsetof(struct fdt_header, size_dt_struct));
    const uint32_t hdr = sizeof(struct fdt_header);

    if (be32_at(b, 0) != FDT_MAGIC) {
        VMS_ERR(errp, "state blob is not an FDT (bad magic 0x%08x)", be32_at(b, 0));
        return false;
    }
    if (total > len || total < hdr) {
        VMS_ERR(errp, "state FDT claims %u bytes but %zu were received", total, len);
        return false;
    }
    if (version != 17 || last_comp < 16 || last_comp > 17) {
        VMS_ERR(errp, "state FDT has version %u (last compatible %u); only version 17 is read",
                version, last_comp);
        return false;
    }
    /* The reservation map: 8-aligned, inside, and empty (one zero entry). */
    if (off_rsv < hdr || off_rsv % 8 || !block_inside(off_rsv, 16, total) ||
        memcmp(b + off_rsv, (const uint8_t[16]){ 0 }, 16)) {
        VMS_ERR(errp, "state FDT: bad or non-empty memory reservation map at %u", off_rsv);
        return false;
    }
    /* The structure block: the root node (an empty name) up to FDT_END. */
    if (off_struct < hdr || off_struct % 4 || size_struct % 4 || size_struct < 16 ||
        !block_inside(off_struct, size_struct, total) || off_strings < hdr ||
        !block_inside(off_strings, size_strings, total)) {
        VMS_ERR(errp, "state FDT: structure or strings block outside the blob");
        return false;
    }
    if (be32_at(b, off_struct) != FDT_BEGIN_NODE || b[off_struct + 4] != 0) {
        VMS_ERR(errp, "state FDT does not open with the root node");
        return false;
    }
    return true;
}

bool vmstate_fdt_check(const void *fdt, size_t len, GError **errp)
{
    int err;

    if (!fdt || len < sizeof(struct fdt_header)) {
        VMS_ERR(errp, "state blob of %zu bytes is too short for an FDT header", len);
        return false;
    }
    if ((uintptr_t)fdt % 8) {
        VMS_ERR(errp, "state blob is not 8-byte aligned");
        return false;
    }
    if (!fdt_preflight(fdt, len, errp))
        return false;
    /* Every libfdt call on the blob comes after this one. */
    err = fdt_check_full(fdt, len);
    if (err < 0) {
        VMS_ERR(errp, "state FDT is corrupt: %s", fdt_strerror(err));
        return false;
    }
    return true;
}

/* A name FDT accepts for both a node and a property: [0-9a-zA-Z,._+-], at most 31. */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 31)
        return false;
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr(",._+-", *p))
            return false;
    }
    return true;
}

static bool desc_check(const struct vmstate_desc *desc, unsigned depth, GError **errp)
{
    const char *dname = desc->name ? desc->name : "(unnamed)";

    if (depth > VMSTATE_MAX_DEPTH) {
        VMS_ERR(errp, "%s: structs nested too deeply (a cycle?)", dname);
        return false;
    }
    if (!desc->name || !*desc->name) {
        VMS_ERR(errp, "vmstate description without a name");
        return false;
    }
    if (desc->min_version > desc->version) {
        VMS_ERR(errp, "%s: min_version %u above version %u", dname, desc->min_version,
                desc->version);
        return false;
    }
    if (!desc->fields) {
        VMS_ERR(errp, "%s: no field table", dname);
        return false;
    }
    for (const struct vmstate_field *f = desc->fields; f->name; f++) {
        size_t ts = type_size(f->type);

        if (!name_ok(f->name) || strcmp(f->name, "version") == 0) {
            VMS_ERR(errp, "%s: bad field name \"%s\"", dname, f->name);
            return false;
        }
        for (const struct vmstate_field *g = desc->fields; g < f; g++) {
            if (strcmp(f->name, g->name) == 0) {
                VMS_ERR(errp, "%s: duplicate field name \"%s\"", dname, f->name);
                return false;
            }
        }
        if (f->count < 1) {
            VMS_ERR(errp, "%s.%s: count must be at least 1", dname, f->name);
            return false;
        }
        if (f->size == 0 || f->size > VMSTATE_PROP_MAX / f->count) {
            VMS_ERR(errp, "%s.%s: size %zu x %u out of range", dname, f->name, f->size, f->count);
            return false;
        }
        switch (f->type) {
        case VMS_U8:
        case VMS_U16:
        case VMS_U32:
        case VMS_U64:
            if (f->size != ts) {
                VMS_ERR(errp, "%s.%s: element size %zu does not match its type (%zu)", dname,
                        f->name, f->size, ts);
                return false;
            }
            break;
        case VMS_BYTES:
            break;
        case VMS_STRUCT:
            if (!f->sub) {
                VMS_ERR(errp, "%s.%s: struct field without a description", dname, f->name);
                return false;
            }
            if (!desc_check(f->sub, depth + 1, errp))
                return false;
            break;
        default:
            VMS_ERR(errp, "%s.%s: unknown type %d", dname, f->name, (int)f->type);
            return false;
        }
    }
    return true;
}

bool vmstate_desc_check(const struct vmstate_desc *desc, GError **errp)
{
    return desc_check(desc, 0, errp);
}
