/* x86-state.c: the vmstate tables of a vCPU's state, shared by both accelerators,
 * the "msrs" node, and the PVH entry's flat segments. */
#include <libfdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accel-backend.h"
#include "tern/util.h"
#include "tern/vmstate.h"
#include "tern/x86-state.h"

#define R(f) VMSTATE_U64(struct x86_regs, f)
static const struct vmstate_field regs_fields[] = {
    R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rsp), R(rbp),    R(r8),       R(r9),
    R(r10), R(r11), R(r12), R(r13), R(r14), R(r15), R(rip), R(rflags), VMSTATE_END,
};
#undef R
static const struct vmstate_desc regs_desc = {
    .name = "regs",
    .version = 1,
    .min_version = 1,
    .fields = regs_fields,
};

#define S(ty, f) VMSTATE_##ty(struct x86_segment, f)
static const struct vmstate_field segment_fields[] = {
    S(U64, base), S(U32, limit),   S(U16, selector), S(U8, type), S(U8, present),
    S(U8, dpl),   S(U8, db),       S(U8, s),         S(U8, l),    S(U8, g),
    S(U8, avl),   S(U8, unusable), VMSTATE_END,
};
#undef S
static const struct vmstate_desc segment_desc = {
    .name = "segment",
    .version = 1,
    .min_version = 1,
    .fields = segment_fields,
};

static const struct vmstate_field dtable_fields[] = {
    VMSTATE_U64(struct x86_dtable, base),
    VMSTATE_U16(struct x86_dtable, limit),
    VMSTATE_END,
};
static const struct vmstate_desc dtable_desc = {
    .name = "dtable",
    .version = 1,
    .min_version = 1,
    .fields = dtable_fields,
};

#define SEG(f) VMSTATE_STRUCT(struct x86_sregs, f, segment_desc)
#define CR(f) VMSTATE_U64(struct x86_sregs, f)
static const struct vmstate_field sregs_fields[] = {
    SEG(cs),
    SEG(ds),
    SEG(es),
    SEG(fs),
    SEG(gs),
    SEG(ss),
    SEG(tr),
    SEG(ldt),
    VMSTATE_STRUCT(struct x86_sregs, gdt, dtable_desc),
    VMSTATE_STRUCT(struct x86_sregs, idt, dtable_desc),
    CR(cr0),
    CR(cr2),
    CR(cr3),
    CR(cr4),
    CR(cr8),
    CR(efer),
    CR(apic_base),
    VMSTATE_U64_ARRAY(struct x86_sregs, interrupt_bitmap, 4),
    VMSTATE_END,
};
#undef SEG
#undef CR
static const struct vmstate_desc sregs_desc = {
    .name = "sregs",
    .version = 1,
    .min_version = 1,
    .fields = sregs_fields,
};

static const struct vmstate_field fpu_fields[] = {
    VMSTATE_BYTES(struct x86_fpu, fpr),       VMSTATE_U16(struct x86_fpu, fcw),
    VMSTATE_U16(struct x86_fpu, fsw),         VMSTATE_U8(struct x86_fpu, ftwx),
    VMSTATE_U16(struct x86_fpu, last_opcode), VMSTATE_U64(struct x86_fpu, last_ip),
    VMSTATE_U64(struct x86_fpu, last_dp),     VMSTATE_BYTES(struct x86_fpu, xmm),
    VMSTATE_U32(struct x86_fpu, mxcsr),       VMSTATE_END,
};
static const struct vmstate_desc fpu_desc = {
    .name = "fpu",
    .version = 1,
    .min_version = 1,
    .fields = fpu_fields,
};

static const struct vmstate_field xcrs_fields[] = {
    VMSTATE_U32(struct x86_xcrs, nr_xcrs),
    VMSTATE_U32(struct x86_xcrs, flags),
    VMSTATE_BYTES(struct x86_xcrs, xcrs),
    VMSTATE_END,
};
static const struct vmstate_desc xcrs_desc = {
    .name = "xcrs",
    .version = 1,
    .min_version = 1,
    .fields = xcrs_fields,
};

static const struct vmstate_field lapic_fields[] = {
    VMSTATE_BYTES(struct x86_lapic, regs),
    VMSTATE_END,
};
static const struct vmstate_desc lapic_desc = {
    .name = "lapic",
    .version = 1,
    .min_version = 1,
    .fields = lapic_fields,
};

#define E(ty, f) VMSTATE_##ty(struct x86_events, f)
static const struct vmstate_field events_fields[] = {
    E(U8, exception.injected),
    E(U8, exception.nr),
    E(U8, exception.has_error_code),
    E(U8, exception.pending),
    E(U32, exception.error_code),
    E(U8, interrupt.injected),
    E(U8, interrupt.nr),
    E(U8, interrupt.soft),
    E(U8, interrupt.shadow),
    E(U8, nmi.injected),
    E(U8, nmi.pending),
    E(U8, nmi.masked),
    E(U32, sipi_vector),
    E(U32, flags),
    E(U8, smi.smm),
    E(U8, smi.pending),
    E(U8, smi.smm_inside_nmi),
    E(U8, smi.latched_init),
    E(U8, triple_fault.pending),
    E(U8, exception_has_payload),
    E(U64, exception_payload),
    VMSTATE_END,
};
#undef E
static const struct vmstate_desc events_desc = {
    .name = "events",
    .version = 1,
    .min_version = 1,
    .fields = events_fields,
};

static const struct vmstate_field mp_state_fields[] = {
    VMSTATE_U32(struct x86_mp_state, mp_state),
    VMSTATE_END,
};
static const struct vmstate_desc mp_state_desc = {
    .name = "mp-state",
    .version = 1,
    .min_version = 1,
    .fields = mp_state_fields,
};

static const struct vmstate_field debugregs_fields[] = {
    VMSTATE_U64_ARRAY(struct x86_debugregs, db, 4),
    VMSTATE_U64(struct x86_debugregs, dr6),
    VMSTATE_U64(struct x86_debugregs, dr7),
    VMSTATE_U64(struct x86_debugregs, flags),
    VMSTATE_END,
};
static const struct vmstate_desc debugregs_desc = {
    .name = "debugregs",
    .version = 1,
    .min_version = 1,
    .fields = debugregs_fields,
};

#define V(f, d) VMSTATE_STRUCT(struct x86_vcpu_state, f, d)
static const struct vmstate_field vcpu_fields[] = {
    V(mp_state, mp_state_desc), V(regs, regs_desc),           V(sregs, sregs_desc),
    V(fpu, fpu_desc),           V(xcrs, xcrs_desc),           V(lapic, lapic_desc),
    V(events, events_desc),     V(debugregs, debugregs_desc), VMSTATE_END,
};
#undef V
const struct vmstate_desc x86_vcpu_vmstate = {
    .name = "cpu",
    .version = 1,
    .min_version = 1,
    .fields = vcpu_fields,
};

/* FDT properties are only 4-byte aligned: read 64-bit cells by copy. */
static uint64_t prop_u64(const void *p)
{
    fdt64_t v;
    memcpy(&v, p, sizeof(v));
    return fdt64_to_cpu(v);
}

bool x86_msrs_save(const struct x86_msr *msrs, unsigned n, void *fdt, int node, GError **errp)
{
    int sub = fdt_add_subnode(fdt, node, X86_MSR_NODE);
    for (unsigned i = 0; sub >= 0 && i < n; i++) {
        char name[16];
        snprintf(name, sizeof(name), "0x%x", msrs[i].index);
        sub = fdt_setprop_u64(fdt, sub, name, msrs[i].value) < 0 ? -1 : sub;
    }
    if (sub < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_NOSPACE, "no room for MSRs");
        return false;
    }
    return true;
}

int x86_msrs_load(struct x86_msr *out, unsigned max, const void *fdt, int node, GError **errp)
{
    int sub = fdt_subnode_offset(fdt, node, X86_MSR_NODE);
    unsigned n = 0;
    int prop;

    if (sub < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "state has no msrs node");
        return -1;
    }
    fdt_for_each_property_offset(prop, fdt, sub) {
        const char *name = NULL;
        int len;
        const void *val = fdt_getprop_by_offset(fdt, prop, &name, &len);
        char *end = NULL;
        unsigned long index = name ? strtoul(name, &end, 16) : 0;
        if (!val || len != 8 || !end || *end || index > UINT32_MAX || n == max) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "bad MSR property '%s'",
                        name ? name : "?");
            return -1;
        }
        out[n].index = (uint32_t)index;
        out[n++].value = prop_u64(val);
    }
    return (int)n;
}

static void flat_segment(struct x86_segment *seg, uint16_t selector, uint8_t type)
{
    *seg = (struct x86_segment){
        .base = 0,
        .limit = 0xffffffff,
        .selector = selector,
        .type = type,
        .present = 1,
        .dpl = 0,
        .db = 1,
        .s = 1,
        .l = 0,
        .g = 1,
    };
}

void x86_pvh_segments(struct x86_segment *code, struct x86_segment *data)
{
    flat_segment(code, 0x8, 0xb);  /* execute/read, accessed */
    flat_segment(data, 0x10, 0x3); /* read/write, accessed */
}
