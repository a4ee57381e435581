/* kvm.c: /dev/kvm, the VM, capabilities, kvm_pvm detection, memory slots. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kvm-internal.h"
#include "tern/bitmap.h"
#include "tern/memory.h"
#include "tern/util.h"

struct kvm_required_cap {
    int cap;
    const char *name;
};

/* clang-format off */
#define CAP(c) { c, #c }
/* clang-format on */
/* What Tern cannot do without: state save/restore needs all of these. */
static const struct kvm_required_cap required_caps[] = {
    CAP(KVM_CAP_USER_MEMORY), CAP(KVM_CAP_IRQCHIP),      CAP(KVM_CAP_PIT2),
    CAP(KVM_CAP_PIT_STATE2),  CAP(KVM_CAP_EXT_CPUID),    CAP(KVM_CAP_MP_STATE),
    CAP(KVM_CAP_VCPU_EVENTS), CAP(KVM_CAP_DEBUGREGS),    CAP(KVM_CAP_XSAVE),
    CAP(KVM_CAP_XCRS),        CAP(KVM_CAP_ADJUST_CLOCK), CAP(KVM_CAP_IMMEDIATE_EXIT),
    CAP(KVM_CAP_GET_TSC_KHZ),
};
#undef CAP

static bool check_caps(struct kvm *k, GError **errp)
{
    for (size_t i = 0; i < ARRAY_SIZE(required_caps); i++) {
        if (ioctl(k->vm_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                        "KVM lacks capability %s, which Tern requires", required_caps[i].name);
            return false;
        }
    }
    return true;
}

/* kvm_pvm registers as its own module; hardware KVM is kvm_intel/kvm_amd. */
static bool detect_pvm(void)
{
    return access("/sys/module/kvm_pvm", F_OK) == 0;
}

static bool load_cpuid_template(struct kvm *k, GError **errp)
{
    for (unsigned nent = 128; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *c = g_malloc0(sizeof(*c) + nent * sizeof(c->entries[0]));
        c->nent = nent;
        if (ioctl(k->sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            k->cpuid = c;
            break;
        }
        g_free(c);
        if (errno != E2BIG) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_GET_SUPPORTED_CPUID: %s",
                        g_strerror(errno));
            return false;
        }
    }
    if (!k->cpuid) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED,
                    "KVM_GET_SUPPORTED_CPUID: too many entries");
        return false;
    }

    /* Tell guests the TSC frequency the way QEMU does: leaf 0x40000010 EAX in
     * kHz, with the hypervisor range raised to include it. Saves guests from
     * calibrating against a timer. */
    struct kvm_cpuid_entry2 *freq = NULL;
    for (unsigned i = 0; i < k->cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *e = &k->cpuid->entries[i];
        if (e->function == 0x40000000 && e->eax < 0x40000010)
            e->eax = 0x40000010;
        if (e->function == 0x40000010)
            freq = e;
    }
    if (!freq && k->tsc_khz) {
        k->cpuid = g_realloc(k->cpuid, sizeof(*k->cpuid) +
                                           (k->cpuid->nent + 1) * sizeof(k->cpuid->entries[0]));
        freq = &k->cpuid->entries[k->cpuid->nent++];
        memset(freq, 0, sizeof(*freq));
        freq->function = 0x40000010;
    }
    if (freq) {
        freq->eax = k->tsc_khz;
        freq->ebx = 1000000; /* LAPIC bus frequency in kHz: KVM's APIC timer runs at 1 GHz */
    }
    return true;
}

static bool load_msr_list(struct kvm *k, GError **errp)
{
    struct kvm_msr_list *list = g_malloc0(sizeof(*list) + KVM_MAX_MSRS * sizeof(uint32_t));
    list->nmsrs = KVM_MAX_MSRS - 1;
    if (ioctl(k->sys_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_GET_MSR_INDEX_LIST: %s",
                    g_strerror(errno));
        g_free(list);
        return false;
    }
    k->nr_msrs = 0;
    for (uint32_t i = 0; i < list->nmsrs; i++)
        k->msr_index[k->nr_msrs++] = list->indices[i];
    if (k->pvm)
        k->msr_index[k->nr_msrs++] = MSR_PVM_VIF;
    g_free(list);
    return true;
}

/* The ring must be enabled before any vCPU exists. Prefer the variant with
 * acquire/release ordering, which is what the harvest code relies on. */
static bool enable_dirty_ring(struct kvm *k, uint32_t entries, GError **errp)
{
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    int caps[] = { KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_DIRTY_LOG_RING };

    if (entries & (entries - 1)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "dirty-ring-size %u is not a power of two", entries);
        return false;
    }
    for (size_t i = 0; i < ARRAY_SIZE(caps); i++) {
        int max = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, caps[i]);
        if (max <= 0)
            continue;
        if (bytes > (uint64_t)max) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                        "dirty-ring-size %u exceeds KVM's maximum of %zu entries", entries,
                        max / sizeof(struct kvm_dirty_gfn));
            return false;
        }
        struct kvm_enable_cap cap = { .cap = caps[i], .args[0] = bytes };
        if (ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap) == 0) {
            k->ring_entries = entries;
            return true;
        }
    }
    g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM has no usable dirty ring");
    return false;
}

/* Open /dev/kvm, check every capability Tern needs (the error names the
 * missing one), create the VM with an in-kernel irqchip and PIT, detect kvm_pvm. */
static struct kvm *kvm_open(const struct accel_options *opts, GError **errp)
{
    struct kvm *k = g_new0(struct kvm, 1);
    k->vm_fd = -1;
    pthread_mutex_init(&k->ring_lock, NULL);

    k->sys_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (k->sys_fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "cannot open /dev/kvm: %s",
                    g_strerror(errno));
        goto fail;
    }
    if (ioctl(k->sys_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "unsupported KVM API version");
        goto fail;
    }
    k->vm_fd = ioctl(k->sys_fd, KVM_CREATE_VM, 0);
    if (k->vm_fd < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CREATE_VM: %s", g_strerror(errno));
        goto fail;
    }
    if (!check_caps(k, errp))
        goto fail;

    k->pvm = detect_pvm();
    k->run_size = ioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    k->sync_regs = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS) > 0;
    int xsave2 = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    k->xsave_size = xsave2 > (int)sizeof(struct kvm_xsave) ? (size_t)xsave2
                                                           : sizeof(struct kvm_xsave);
    int tsc = ioctl(k->vm_fd, KVM_GET_TSC_KHZ, 0);
    k->tsc_khz = tsc > 0 ? (uint32_t)tsc : 0;

    if (opts->dirty_ring_size && !enable_dirty_ring(k, opts->dirty_ring_size, errp))
        goto fail;

    /* Manual protect: harvesting the log does not write-protect; a separate
     * clear does, so sync costs only what was dirtied (PLATFORM.md). */
    int manual = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (manual > 0 && !k->ring_entries) {
        struct kvm_enable_cap cap = {
            .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            .args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
        };
        k->manual_protect = ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap) == 0;
    }

    if (ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CREATE_IRQCHIP: %s",
                    g_strerror(errno));
        goto fail;
    }
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CREATE_PIT2: %s", g_strerror(errno));
        goto fail;
    }
    if (!load_cpuid_template(k, errp) || !load_msr_list(k, errp))
        goto fail;
    return k;

fail:
    kvm_close(&k->base);
    return NULL;
}

void kvm_close(struct accel *base)
{
    struct kvm *k = KVM_OF(base);
    for (unsigned i = 0; i < k->nr_slots; i++)
        g_free(k->slots[i].log);
    if (k->vm_fd >= 0)
        close(k->vm_fd);
    if (k->sys_fd >= 0)
        close(k->sys_fd);
    g_free(k->cpuid);
    g_free(k->ring_dirty);
    pthread_mutex_destroy(&k->ring_lock);
    g_free(k);
}

const char *kvm_flavour(const struct accel *base)
{
    return ((const struct kvm *)base)->pvm ? "kvm_pvm" : "kvm";
}

uint32_t kvm_tsc_khz(const struct accel *base)
{
    const struct kvm *k = (const struct kvm *)base;
    return k->tsc_khz;
}

bool kvm_slot_update(struct kvm *k, struct kvm_slot *s, GError **errp)
{
    struct kvm_userspace_memory_region r = {
        .slot = s->id,
        .flags = s->flags,
        .guest_phys_addr = s->gpa,
        .memory_size = s->size,
        .userspace_addr = (uintptr_t)s->hva,
    };
    if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_SET_USER_MEMORY_REGION slot %u: %s",
                    s->id, g_strerror(errno));
        return false;
    }
    return true;
}

bool kvm_map_ram(struct accel *base, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                 GError **errp)
{
    struct kvm *k = KVM_OF(base);
    if (k->nr_slots == KVM_MAX_SLOTS) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "too many memory slots");
        return false;
    }
    struct kvm_slot *s = &k->slots[k->nr_slots];
    *s = (struct kvm_slot){ .id = slot, .gpa = gpa, .size = size, .hva = hva };
    if (k->dirty_logging)
        s->flags |= KVM_MEM_LOG_DIRTY_PAGES;
    if (!kvm_slot_update(k, s, errp))
        return false;
    k->nr_slots++;
    uint64_t end_gfn = (gpa + size) >> GUEST_PAGE_SHIFT;
    if (k->ring_entries && end_gfn > k->ring_nr_gfns) {
        /* Slots are added before any vCPU runs: no harvest can race this. */
        k->ring_nr_gfns = end_gfn;
        g_free(k->ring_dirty);
        k->ring_dirty = bitmap_new(end_gfn);
    }
    return true;
}

bool kvm_set_irq_line(struct accel *base, unsigned irq, bool level)
{
    struct kvm *k = KVM_OF(base);
    struct kvm_irq_level line = { .irq = irq, .level = level };
    return ioctl(k->vm_fd, KVM_IRQ_LINE, &line) == 0;
}

static int cpuid_entry_cmp(const void *a, const void *b)
{
    const struct kvm_cpuid_entry2 *x = a, *y = b;
    if (x->function != y->function)
        return x->function < y->function ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* As docs/migration-stream.md says: vCPU 0's table sorted by (function,
 * index), each entry as 7 little-endian u32 (x86 is little-endian). */
void kvm_cpuid_fingerprint(const struct accel *base, uint32_t *nr_entries, uint8_t sha256[32])
{
    const struct kvm *k = (const struct kvm *)base;
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree struct kvm_cpuid_entry2 *e = g_memdup2(k->cpuid->entries,
                                                      k->cpuid->nent * sizeof(*e));
    gsize len = 32;

    qsort(e, k->cpuid->nent, sizeof(*e), cpuid_entry_cmp);
    for (uint32_t i = 0; i < k->cpuid->nent; i++) {
        uint32_t ebx = e[i].function == 1 ? e[i].ebx & 0x00ffffff : e[i].ebx;
        uint32_t edx = (e[i].function == 0xb || e[i].function == 0x1f) ? 0 : e[i].edx;
        uint32_t words[7] = { e[i].function, e[i].index, e[i].flags, e[i].eax, ebx, e[i].ecx, edx };
        g_checksum_update(sum, (const guchar *)words, sizeof(words));
    }
    *nr_entries = k->cpuid->nent;
    g_checksum_get_digest(sum, sha256, &len);
}

static const struct accel_ops kvm_accel_ops = {
    .name = kvm_flavour,
    .is_kvm = true,
    .close = kvm_close,
    .tsc_khz = kvm_tsc_khz,
    .cpuid_fingerprint = kvm_cpuid_fingerprint,
    .set_irq_line = kvm_set_irq_line,
    .map_ram = kvm_map_ram,
    .dirty_log_start = kvm_dirty_log_start,
    .dirty_log_stop = kvm_dirty_log_stop,
    .dirty_log_sync = kvm_dirty_log_sync,
    .dirty_log_mode = kvm_dirty_log_mode,
    .vcpu_create = kvm_vcpu_create,
    .vcpu_destroy = kvm_vcpu_destroy,
    .vcpu_set_pvh_entry = kvm_vcpu_set_pvh_entry,
    .vcpu_run = kvm_vcpu_run,
    .vcpu_bind_thread = kvm_vcpu_bind_thread,
    .vcpu_kick = kvm_vcpu_kick,
    .vcpu_clear_kick = kvm_vcpu_clear_kick,
    .vcpu_save_state = kvm_vcpu_save_state,
    .vcpu_load_state = kvm_vcpu_load_state,
    .vm_save_state = kvm_vm_save_state,
    .vm_load_state = kvm_vm_load_state,
    .vcpu_summary = kvm_vcpu_summary,
};

struct accel *kvm_accel_open(const struct accel_options *opts, GError **errp)
{
    kvm_kick_signal_init();
    struct kvm *k = kvm_open(opts, errp);
    if (!k)
        return NULL;
    k->base.ops = &kvm_accel_ops;
    return &k->base;
}
