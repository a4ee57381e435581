/* kvm-dirty.c: the KVM dirty log, harvested into one bitmap indexed by guest frame number. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kvm-internal.h"
#include "tern/bitmap.h"
#include "tern/memory.h"
#include "tern/util.h"

static bool set_logging(struct kvm *k, bool on, GError **errp)
{
    for (unsigned i = 0; i < k->nr_slots; i++) {
        struct kvm_slot *s = &k->slots[i];
        if (on)
            s->flags |= KVM_MEM_LOG_DIRTY_PAGES;
        else
            s->flags &= ~KVM_MEM_LOG_DIRTY_PAGES;
        if (on && !s->log)
            s->log = bitmap_new(s->size >> GUEST_PAGE_SHIFT);
        if (!kvm_slot_update(k, s, errp))
            return false;
    }
    k->dirty_logging = on;
    return true;
}

bool kvm_dirty_log_start(struct kvm *k, GError **errp)
{
    return set_logging(k, true, errp);
}

bool kvm_dirty_log_stop(struct kvm *k, GError **errp)
{
    return set_logging(k, false, errp);
}

const char *kvm_dirty_log_mode(const struct kvm *k)
{
    return k->manual_protect ? "dirty-bitmap+clear" : "dirty-bitmap";
}

/* OR (nbits) bits of (src) into (dst) starting at bit (offset) (a multiple of
 * the word size: slots are at least 2 MiB aligned). */
static void or_into(unsigned long *dst, uint64_t offset, const unsigned long *src,
                    uint64_t nbits)
{
    unsigned long *d = dst + offset / BITS_PER_LONG;
    for (uint64_t w = 0; w < BITMAP_LONGS(nbits); w++)
        if (src[w])
            __atomic_fetch_or(&d[w], src[w], __ATOMIC_RELAXED);
}

static bool sync_slot(struct kvm *k, struct kvm_slot *s, unsigned long *gfn_bitmap,
                      GError **errp)
{
    uint64_t npages = s->size >> GUEST_PAGE_SHIFT;
    struct kvm_dirty_log log = { .slot = s->id, .dirty_bitmap = s->log };

    memset(s->log, 0, BITMAP_LONGS(npages) * sizeof(unsigned long));
    if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_GET_DIRTY_LOG slot %u: %s", s->id,
                    g_strerror(errno));
        return false;
    }
    /* With manual protect, GET only reports; clearing exactly what we saw
     * re-arms write protection for those pages and nothing else. */
    if (k->manual_protect && bitmap_next_set(s->log, npages, 0) < npages) {
        struct kvm_clear_dirty_log clear = {
            .slot = s->id, .first_page = 0, .num_pages = (uint32_t)npages,
            .dirty_bitmap = s->log,
        };
        if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CLEAR_DIRTY_LOG slot %u: %s", s->id,
                        g_strerror(errno));
            return false;
        }
    }
    or_into(gfn_bitmap, s->gpa >> GUEST_PAGE_SHIFT, s->log, npages);
    return true;
}

bool kvm_dirty_log_sync(struct kvm *k, unsigned long *gfn_bitmap, GError **errp)
{
    if (!k->dirty_logging) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "dirty logging is not enabled");
        return false;
    }
    for (unsigned i = 0; i < k->nr_slots; i++)
        if (!sync_slot(k, &k->slots[i], gfn_bitmap, errp))
            return false;
    return true;
}
