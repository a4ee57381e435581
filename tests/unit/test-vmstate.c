/* test-vmstate.c: unit tests of vmstate tables: FDT round trips, golden bytes, hostile blobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libfdt.h>
#include <string.h>

#include "tern/util.h"
#include "tern/vmstate.h"

struct inner {
    uint32_t a;
    uint16_t b;
    int post_loads; /* not saved */
};

struct seg {
    uint64_t base;
    uint32_t limit;
    uint8_t type;
};

struct obj {
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    uint8_t u8arr[5];
    uint16_t u16arr[3];
    uint32_t u32arr[4];
    uint64_t u64arr[2];
    uint8_t blob[7];
    struct inner in;
    struct seg segs[2];
    uint32_t opt;
    int pre_saves, post_loads; /* not saved */
    bool fail_post_load;
};

static bool inner_post_load(void *opaque, GError **errp)
{
    (void)errp;
    ((struct inner *)opaque)->post_loads++;
    return true;
}

static const struct vmstate_field inner_fields[] = {
    VMSTATE_U32(struct inner, a),
    VMSTATE_U16(struct inner, b),
    VMSTATE_END,
};

static const struct vmstate_desc inner_desc = {
    .name = "inner",
    .version = 1,
    .min_version = 1,
    .fields = inner_fields,
    .post_load = inner_post_load,
};

static const struct vmstate_field seg_fields[] = {
    VMSTATE_U64(struct seg, base),
    VMSTATE_U32(struct seg, limit),
    VMSTATE_U8(struct seg, type),
    VMSTATE_END,
};

static const struct vmstate_desc seg_desc = {
    .name = "seg",
    .version = 2,
    .min_version = 2,
    .fields = seg_fields,
};

static bool obj_pre_save(void *opaque, GError **errp)
{
    (void)errp;
    ((struct obj *)opaque)->pre_saves++;
    return true;
}

static bool obj_post_load(void *opaque, GError **errp)
{
    struct obj *o = opaque;

    if (o->fail_post_load) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID, "u8 %u is out of range", o->u8);
        return false;
    }
    o->post_loads++;
    return true;
}

static const struct vmstate_field obj_fields[] = {
    VMSTATE_U8(struct obj, u8),
    VMSTATE_U16(struct obj, u16),
    VMSTATE_U32(struct obj, u32),
    VMSTATE_U64(struct obj, u64),
    VMSTATE_U8_ARRAY(struct obj, u8arr, 5),
    VMSTATE_U16_ARRAY(struct obj, u16arr, 3),
    VMSTATE_U32_ARRAY(struct obj, u32arr, 4),
    VMSTATE_U64_ARRAY(struct obj, u64arr, 2),
    VMSTATE_BYTES(struct obj, blob),
    VMSTATE_STRUCT(struct obj, in, inner_desc),
    VMSTATE_STRUCT_ARRAY(struct obj, segs, 2, seg_desc),
    VMSTATE_U32_OPT(struct obj, opt),
    VMSTATE_END,
};

static const struct vmstate_desc obj_desc = {
    .name = "obj",
    .version = 3,
    .min_version = 1,
    .fields = obj_fields,
    .pre_save = obj_pre_save,
    .post_load = obj_post_load,
};

static void obj_fill(struct obj *o)
{
    memset(o, 0, sizeof(*o));
    o->u8 = 0xab;
    o->u16 = 0x1234;
    o->u32 = 0xdeadbeef;
    o->u64 = 0x0102030405060708ULL;
    for (unsigned i = 0; i < 5; i++)
        o->u8arr[i] = (uint8_t)(i + 1);
    for (unsigned i = 0; i < 3; i++)
        o->u16arr[i] = (uint16_t)(0x100 * (i + 1) + i);
    for (unsigned i = 0; i < 4; i++)
        o->u32arr[i] = 0x11111111u * (i + 1);
    o->u64arr[0] = UINT64_MAX;
    o->u64arr[1] = 0x8000000000000001ULL;
    memcpy(o->blob, "\x00\xffhello", 7);
    o->in.a = 42;
    o->in.b = 0xfffe;
    o->segs[0] = (struct seg){ 0x1000, 0xffff, 0x9b };
    o->segs[1] = (struct seg){ 0xffffffff00000000ULL, 0xfffff, 0x93 };
    o->opt = 77;
}

static void assert_obj_equal(const struct obj *a, const struct obj *b)
{
    assert_int_equal(a->u8, b->u8);
    assert_int_equal(a->u16, b->u16);
    assert_int_equal(a->u32, b->u32);
    assert_int_equal(a->u64, b->u64);
    assert_memory_equal(a->u8arr, b->u8arr, sizeof(a->u8arr));
    assert_memory_equal(a->u16arr, b->u16arr, sizeof(a->u16arr));
    assert_memory_equal(a->u32arr, b->u32arr, sizeof(a->u32arr));
    assert_memory_equal(a->u64arr, b->u64arr, sizeof(a->u64arr));
    assert_memory_equal(a->blob, b->blob, sizeof(a->blob));
    assert_int_equal(a->in.a, b->in.a);
    assert_int_equal(a->in.b, b->in.b);
    for (unsigned i = 0; i < 2; i++) {
        assert_int_equal(a->segs[i].base, b->segs[i].base);
        assert_int_equal(a->segs[i].limit, b->segs[i].limit);
        assert_int_equal(a->segs[i].type, b->segs[i].type);
    }
    assert_int_equal(a->opt, b->opt);
}

/* Save a filled object as node "dev@0" under the root of a new, packed FDT. */
static void *save_blob(struct obj *o)
{
    void *fdt = vmstate_fdt_new(4096);
    GError *err = NULL;

    assert_non_null(fdt);
    obj_fill(o);
    assert_true(vmstate_save(&obj_desc, o, fdt, 0, "dev@0", &err));
    assert_null(err);
    assert_int_equal(fdt_pack(fdt), 0);
    return fdt;
}

static int dev_node(const void *fdt)
{
    int node = fdt_subnode_offset(fdt, 0, "dev@0");

    assert_true(node >= 0);
    return node;
}

/* Load "dev@0" into (o): the error message or NULL. */
static char *load_msg(const void *fdt, struct obj *o)
{
    GError *err = NULL;
    char *msg;

    if (vmstate_load(&obj_desc, o, fdt, dev_node(fdt), &err)) {
        assert_null(err);
        return NULL;
    }
    assert_non_null(err);
    msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

#define assert_load_fails(fdt, o, text) \
    do { \
        g_autofree char *m_ = load_msg(fdt, o); \
        if (!m_) \
            fail_msg("load succeeded; expected \"%s\"", text); \
        if (strcmp(m_, text) != 0) \
            fail_msg("error \"%s\", expected \"%s\"", m_, text); \
    } while (0)

static void test_desc_check(void **state)
{
    (void)state;
    GError *err = NULL;

    assert_true(vmstate_desc_check(&obj_desc, &err));
    assert_null(err);
    assert_true(vmstate_desc_check(&seg_desc, NULL));
}

static void test_round_trip(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);
    GError *err = NULL;

    assert_int_equal(o.pre_saves, 1);
    assert_true(vmstate_fdt_check(fdt, fdt_totalsize(fdt), &err));
    memset(&back, 0, sizeof(back));
    assert_true(vmstate_load(&obj_desc, &back, fdt, dev_node(fdt), &err));
    assert_null(err);
    assert_obj_equal(&o, &back);
    assert_int_equal(back.post_loads, 1);
    assert_int_equal(back.in.post_loads, 1);
    assert_int_equal(back.pre_saves, 0);
    g_free(fdt);
}

static void assert_prop(const void *fdt, int node, const char *name, const void *bytes, int len)
{
    int got;
    const void *p = fdt_getprop(fdt, node, name, &got);

    if (!p)
        fail_msg("property \"%s\" missing", name);
    assert_int_equal(got, len);
    assert_memory_equal(p, bytes, (size_t)len);
}

/* The wire encoding, byte for byte (docs/vmstate.md). */
static void test_golden(void **state)
{
    (void)state;
    struct obj o;
    void *fdt = save_blob(&o);
    int node = dev_node(fdt), sub;

    assert_prop(fdt, node, "version", "\x00\x00\x00\x03", 4);
    assert_prop(fdt, node, "u8", "\xab", 1);
    assert_prop(fdt, node, "u16", "\x12\x34", 2);
    assert_prop(fdt, node, "u32", "\xde\xad\xbe\xef", 4);
    assert_prop(fdt, node, "u64", "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_prop(fdt, node, "u8arr", "\x01\x02\x03\x04\x05", 5);
    assert_prop(fdt, node, "u16arr", "\x01\x00\x02\x01\x03\x02", 6);
    assert_prop(fdt, node, "u32arr",
                "\x11\x11\x11\x11\x22\x22\x22\x22\x33\x33\x33\x33\x44\x44\x44\x44", 16);
    assert_prop(fdt, node, "u64arr",
                "\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\x00\x00\x00\x00\x00\x01", 16);
    assert_prop(fdt, node, "blob", "\x00\xffhello", 7);
    assert_prop(fdt, node, "opt", "\x00\x00\x00\x4d", 4);
    /* A u64 reads back with libfdt's own accessors as two cells. */
    assert_int_equal(fdt64_ld(fdt_getprop(fdt, node, "u64", NULL)), o.u64);
    /* Nested objects are child nodes with their own version. */
    sub = fdt_subnode_offset(fdt, node, "in");
    assert_true(sub >= 0);
    assert_prop(fdt, sub, "version", "\x00\x00\x00\x01", 4);
    assert_prop(fdt, sub, "a", "\x00\x00\x00\x2a", 4);
    assert_prop(fdt, sub, "b", "\xff\xfe", 2);
    assert_int_equal(fdt_getprop(fdt, sub, "post_loads", NULL), NULL);
    assert_true(fdt_subnode_offset(fdt, node, "segs@0") >= 0);
    sub = fdt_subnode_offset(fdt, node, "segs@1");
    assert_true(sub >= 0);
    assert_prop(fdt, sub, "version", "\x00\x00\x00\x02", 4);
    assert_prop(fdt, sub, "base", "\xff\xff\xff\xff\x00\x00\x00\x00", 8);
    assert_prop(fdt, sub, "type", "\x93", 1);
    g_free(fdt);
}

static void test_missing_and_optional(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);

    /* Optional absent: the current value stays. */
    assert_int_equal(fdt_delprop(fdt, dev_node(fdt), "opt"), 0);
    memset(&back, 0, sizeof(back));
    back.opt = 1234;
    g_free(load_msg(fdt, &back));
    assert_int_equal(back.opt, 1234);
    assert_int_equal(back.u64, o.u64);

    /* Mandatory absent: an error naming node and property; nothing written. */
    assert_int_equal(fdt_delprop(fdt, dev_node(fdt), "u32"), 0);
    memset(&back, 0x5a, sizeof(back));
    back.fail_post_load = false;
    assert_load_fails(fdt, &back, "dev@0: missing property \"u32\"");
    assert_int_equal(back.u8, 0x5a); /* validated before any write */
    assert_int_equal(back.post_loads, 0x5a5a5a5a);
    g_free(fdt);

    /* A missing nested node, and a property missing inside one. */
    fdt = save_blob(&o);
    assert_int_equal(fdt_del_node(fdt, fdt_subnode_offset(fdt, dev_node(fdt), "segs@1")), 0);
    memset(&back, 0, sizeof(back));
    assert_load_fails(fdt, &back, "dev@0: missing node \"segs@1\"");
    g_free(fdt);
    fdt = save_blob(&o);
    assert_int_equal(fdt_delprop(fdt, fdt_subnode_offset(fdt, dev_node(fdt), "in"), "b"), 0);
    assert_load_fails(fdt, &back, "dev@0/in: missing property \"b\"");
    g_free(fdt);
    /* Names match exactly: "in@1" is not "in". */
    fdt = g_realloc(save_blob(&o), 8192);
    assert_int_equal(fdt_open_into(fdt, fdt, 8192), 0);
    assert_int_equal(fdt_set_name(fdt, fdt_subnode_offset(fdt, dev_node(fdt), "in"), "in@1"), 0);
    assert_load_fails(fdt, &back, "dev@0: missing node \"in\"");
    g_free(fdt);
}

static void test_unknown_ignored(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);

    assert_int_equal(fdt_open_into(fdt, fdt, 8192), 0);
    fdt = g_realloc(fdt, 8192);
    assert_int_equal(fdt_open_into(fdt, fdt, 8192), 0);
    assert_int_equal(fdt_setprop_u32(fdt, dev_node(fdt), "from-the-future", 1), 0);
    assert_true(fdt_add_subnode(fdt, dev_node(fdt), "future-node") >= 0);
    memset(&back, 0, sizeof(back));
    assert_null(load_msg(fdt, &back));
    assert_obj_equal(&o, &back);
    g_free(fdt);
}

static void test_wrong_length(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);
    uint64_t v = 1;

    fdt = g_realloc(fdt, 8192);
    assert_int_equal(fdt_open_into(fdt, fdt, 8192), 0);
    assert_int_equal(fdt_setprop(fdt, dev_node(fdt), "u32", &v, 8), 0);
    memset(&back, 0, sizeof(back));
    assert_load_fails(fdt, &back, "dev@0: property \"u32\" is 8 bytes, expected 4");
    assert_int_equal(fdt_setprop(fdt, dev_node(fdt), "u32", &v, 4), 0);
    assert_int_equal(fdt_setprop(fdt, dev_node(fdt), "u64arr", &v, 8), 0);
    assert_load_fails(fdt, &back, "dev@0: property \"u64arr\" is 8 bytes, expected 16");
    assert_int_equal(fdt_setprop(fdt, dev_node(fdt), "u64arr", &v, 0), 0);
    assert_load_fails(fdt, &back, "dev@0: property \"u64arr\" is 0 bytes, expected 16");
    g_free(fdt);
}

static void test_versions(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);
    int node = dev_node(fdt);

    memset(&back, 0, sizeof(back));
    assert_int_equal(fdt_setprop_inplace_u32(fdt, node, "version", 7), 0);
    assert_load_fails(fdt, &back, "dev@0: version 7 not in [1, 3]");
    assert_int_equal(fdt_setprop_inplace_u32(fdt, node, "version", 0), 0);
    assert_load_fails(fdt, &back, "dev@0: version 0 not in [1, 3]");
    assert_int_equal(fdt_setprop_inplace_u32(fdt, node, "version", 1), 0);
    assert_null(load_msg(fdt, &back)); /* an older, accepted version */
    /* The nested seg desc accepts only version 2. */
    assert_int_equal(fdt_setprop_inplace_u32(fdt, fdt_subnode_offset(fdt, node, "segs@0"),
                                             "version", 1),
                     0);
    assert_load_fails(fdt, &back, "dev@0/segs@0: version 1 not in [2, 2]");
    assert_int_equal(fdt_delprop(fdt, node, "version"), 0);
    assert_load_fails(fdt, &back, "dev@0: missing property \"version\"");
    g_free(fdt);
}

static void test_post_load_error(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = save_blob(&o);

    memset(&back, 0, sizeof(back));
    back.fail_post_load = true;
    assert_load_fails(fdt, &back, "dev@0: post_load: u8 171 is out of range");
    g_free(fdt);
}

static void test_fdt_check(void **state)
{
    (void)state;
    struct obj o;
    void *fdt = save_blob(&o);
    size_t len = fdt_totalsize(fdt);
    GError *err = NULL;
    const size_t cuts[] = { 0, 1, 39, 40, len / 2, len - 2, len - 1 };
    GRand *rand = g_rand_new_with_seed(99);

    assert_true(vmstate_fdt_check(fdt, len, NULL));
    assert_true(vmstate_fdt_check(fdt, len + 100, NULL)); /* a longer buffer is fine */
    assert_false(vmstate_fdt_check(NULL, 0, &err));
    g_clear_error(&err);
    /* Truncated blobs (the buffer holds only the first bytes). */
    for (size_t i = 0; i < G_N_ELEMENTS(cuts); i++) {
        void *copy = g_memdup2(fdt, cuts[i] ? cuts[i] : 1);

        assert_false(vmstate_fdt_check(copy, cuts[i], &err));
        assert_non_null(err);
        g_clear_error(&err);
        g_free(copy);
    }
    /* The second half alone. */
    {
        void *copy = g_memdup2((uint8_t *)fdt + len / 2, len - len / 2);

        assert_false(vmstate_fdt_check(copy, len - len / 2, &err));
        g_clear_error(&err);
        g_free(copy);
    }
    /* Bad magic. */
    {
        uint8_t *copy = g_memdup2(fdt, len);

        copy[0] ^= 0xff;
        assert_false(vmstate_fdt_check(copy, len, &err));
        assert_non_null(strstr(err->message, "bad magic"));
        g_clear_error(&err);
        g_free(copy);
    }
    /* Random corruption: rejected, or accepted and then loaded without a crash. */
    for (int round = 0; round < 3000; round++) {
        uint8_t *copy = g_memdup2(fdt, len);
        int flips = g_rand_int_range(rand, 1, 4);

        for (int i = 0; i < flips; i++)
            copy[g_rand_int_range(rand, 0, (gint32)len)] ^= (uint8_t)(1u << g_rand_int_range(rand,
                                                                                             0, 8));
        if (vmstate_fdt_check(copy, len, NULL)) {
            int node = fdt_subnode_offset(copy, 0, "dev@0");
            struct obj back;

            memset(&back, 0, sizeof(back));
            if (node >= 0)
                vmstate_load(&obj_desc, &back, copy, node, NULL);
        }
        g_free(copy);
    }
    g_rand_free(rand);
    g_free(fdt);
}

static void test_nospace_and_grow(void **state)
{
    (void)state;
    struct obj o, back;
    void *fdt = vmstate_fdt_new(256);
    GError *err = NULL;
    int before;

    obj_fill(&o);
    assert_non_null(fdt);
    before = fdt_totalsize(fdt);
    assert_false(vmstate_save(&obj_desc, &o, fdt, 0, "dev@0", &err));
    assert_true(g_error_matches(err, TERN_ERROR, TERN_ERROR_NOSPACE));
    assert_non_null(strstr(err->message, "no space"));
    g_clear_error(&err);
    /* Left as it was: no half-written node. */
    assert_true(fdt_subnode_offset(fdt, 0, "dev@0") < 0);
    assert_int_equal(fdt_totalsize(fdt), before);
    assert_int_equal(fdt_check_full(fdt, (size_t)before), 0);

    assert_true(vmstate_save_grow(&obj_desc, &o, &fdt, 0, "dev@0", &err));
    assert_null(err);
    assert_true(fdt_totalsize(fdt) > 256);
    /* A second object next to the first, and a duplicate name refused. */
    assert_true(vmstate_save_grow(&obj_desc, &o, &fdt, 0, "dev@1", NULL));
    assert_false(vmstate_save(&obj_desc, &o, fdt, 0, "dev@1", &err));
    assert_non_null(strstr(err->message, "already exists"));
    g_clear_error(&err);
    assert_true(vmstate_fdt_check(fdt, fdt_totalsize(fdt), NULL));
    memset(&back, 0, sizeof(back));
    assert_null(load_msg(fdt, &back));
    assert_obj_equal(&o, &back);
    g_free(fdt);

    assert_null(vmstate_fdt_new((size_t)INT_MAX + 1));
}

/* Bad tables, each caught by vmstate_desc_check(). */
struct flat {
    uint32_t x, y;
    uint64_t z;
};

static void check_bad_desc(const struct vmstate_field *fields, uint32_t ver, uint32_t min,
                           const char *text)
{
    struct vmstate_desc d = {
        .name = "flat", .version = ver, .min_version = min, .fields = fields
    };
    GError *err = NULL;

    assert_false(vmstate_desc_check(&d, &err));
    assert_non_null(err);
    if (!strstr(err->message, text))
        fail_msg("error \"%s\" lacks \"%s\"", err->message, text);
    g_error_free(err);
}

static void test_desc_check_bad(void **state)
{
    (void)state;
    const struct vmstate_field dup[] = {
        VMSTATE_U32(struct flat, x),
        VMSTATE_U32(struct flat, y),
        { .name = "x", .offset = offsetof(struct flat, y), .size = 4, .count = 1, .type = VMS_U32 },
        VMSTATE_END,
    };
    const struct vmstate_field badsize[] = {
        { .name = "z", .offset = offsetof(struct flat, z), .size = 4, .count = 1, .type = VMS_U64 },
        VMSTATE_END,
    };
    const struct vmstate_field zero_count[] = {
        { .name = "x", .offset = 0, .size = 4, .count = 0, .type = VMS_U32 },
        VMSTATE_END,
    };
    const struct vmstate_field no_sub[] = {
        { .name = "x", .offset = 0, .size = 8, .count = 1, .type = VMS_STRUCT },
        VMSTATE_END,
    };
    const struct vmstate_field reserved[] = {
        { .name = "version", .offset = 0, .size = 4, .count = 1, .type = VMS_U32 },
        VMSTATE_END,
    };
    const struct vmstate_field empty_name[] = {
        { .name = "", .offset = 0, .size = 4, .count = 1, .type = VMS_U32 },
        VMSTATE_END,
    };
    const struct vmstate_field bad_char[] = {
        { .name = "a/b", .offset = 0, .size = 4, .count = 1, .type = VMS_U32 },
        VMSTATE_END,
    };
    const struct vmstate_field ok[] = { VMSTATE_U32(struct flat, x), VMSTATE_END };

    check_bad_desc(dup, 1, 1, "duplicate field name \"x\"");
    check_bad_desc(badsize, 1, 1, "flat.z: element size 4 does not match its type (8)");
    check_bad_desc(zero_count, 1, 1, "count must be at least 1");
    check_bad_desc(no_sub, 1, 1, "struct field without a description");
    check_bad_desc(reserved, 1, 1, "bad field name \"version\"");
    check_bad_desc(empty_name, 1, 1, "bad field name");
    check_bad_desc(bad_char, 1, 1, "bad field name \"a/b\"");
    check_bad_desc(ok, 1, 2, "min_version 2 above version 1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_desc_check),      cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_golden),          cmocka_unit_test(test_missing_and_optional),
        cmocka_unit_test(test_unknown_ignored), cmocka_unit_test(test_wrong_length),
        cmocka_unit_test(test_versions),        cmocka_unit_test(test_post_load_error),
        cmocka_unit_test(test_fdt_check),       cmocka_unit_test(test_nospace_and_grow),
        cmocka_unit_test(test_desc_check_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
