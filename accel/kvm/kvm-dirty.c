/* kvm-dirty.c: the KVM dirty log, harvested into one bitmap indexed by guest frame number. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

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
        if (on && !s->log && !k->ring_entries)
            s->log = bitmap_new(s->size >> GUEST_PAGE_SHIFT);
        if (!kvm_slot_update(k, s, errp))
            return false;
    }
    k->dirty_logging = on;
    return true;
}

bool kvm_dirty_log_start(struct accel *base, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    /* A new log starts with every page to send: an old reset failure no
     * longer hides anything. */
    pthread_mutex_lock(&k->ring_lock);
    k->ring_reset_errno = 0;
    pthread_mutex_unlock(&k->ring_lock);
    return set_logging(k, true, errp);
}

bool kvm_dirty_log_stop(struct accel *base, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    return set_logging(k, false, errp);
}

const char *kvm_dirty_log_mode(const struct accel *base)
{
    const struct kvm *k = (const struct kvm *)base;
    if (k->ring_entries)
        return "dirty-ring";
    return k->manual_protect ? "dirty-bitmap+clear" : "dirty-bitmap";
}

/* ---- dirty ring ---- */

bool kvm_dirty_ring_map(struct kvm_vcpu *vcpu, GError **errp)
{
    size_t bytes = vcpu->kvm->ring_entries * sizeof(struct kvm_dirty_gfn);
    void *ring = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd,
                      KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
    if (ring == MAP_FAILED) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "vCPU %u: mmap dirty ring: %s",
                    vcpu->index, g_strerror(errno));
        return false;
    }
    vcpu->ring = ring;
    return true;
}

/* Collect the entries (vcpu) published, marking each for reset. Returns the count. */
static uint32_t harvest_ring(struct kvm *k, struct kvm_vcpu *vcpu)
{
    uint32_t count = 0;

    for (;;) {
        struct kvm_dirty_gfn *e = &vcpu->ring[vcpu->ring_next & (k->ring_entries - 1)];
        /* Acquire: the slot and offset are valid once DIRTY is seen. */
        if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
            break;
        uint32_t slot_id = e->slot & 0xffff;
        for (unsigned i = 0; i < k->nr_slots; i++) {
            const struct kvm_slot *s = &k->slots[i];
            if (s->id == slot_id && e->offset < (s->size >> GUEST_PAGE_SHIFT))
                bitmap_set_atomic(k->ring_dirty, (s->gpa >> GUEST_PAGE_SHIFT) + e->offset);
        }
        /* Release: KVM may reuse the entry only after we read it. */
        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        vcpu->ring_next++;
        count++;
    }
    return count;
}

void kvm_dirty_ring_harvest(struct kvm *k)
{
    uint32_t count = 0;

    pthread_mutex_lock(&k->ring_lock);
    for (unsigned i = 0; i < KVM_MAX_VCPUS; i++)
        if (k->vcpus[i])
            count += harvest_ring(k, k->vcpus[i]);
    /* Re-protects the harvested pages so their next write is logged again.
     * Should that fail, later writes to them would go unlogged: remembered,
     * and the next sync fails, so a migration fails (and the source keeps its
     * guest) instead of missing them, whichever thread harvested. */
    if (count && ioctl(k->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0 && !k->ring_reset_errno)
        k->ring_reset_errno = errno;
    pthread_mutex_unlock(&k->ring_lock);
}

/* OR (nbits) bits of (src) into (dst) starting at bit (offset) (a multiple of
 * the word size: slots are at least 2 MiB aligned). */
static void or_into(unsigned long *dst, uint64_t offset, const unsigned long *src, uint64_t nbits)
{
    unsigned long *d = dst + offset / BITS_PER_LONG;
    for (uint64_t w = 0; w < BITMAP_LONGS(nbits); w++)
        if (src[w])
            __atomic_fetch_or(&d[w], src[w], __ATOMIC_RELAXED);
}

static bool sync_slot(struct kvm *k, struct kvm_slot *s, unsigned long *gfn_bitmap, GError **errp)
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
            .slot = s->id,
            .first_page = 0,
            .num_pages = (uint32_t)npages,
            .dirty_bitmap = s->log,
        };
        if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_CLEAR_DIRTY_LOG slot %u: %s",
                        s->id, g_strerror(errno));
            return false;
        }
    }
    or_into(gfn_bitmap, s->gpa >> GUEST_PAGE_SHIFT, s->log, npages);
    return true;
}

bool kvm_dirty_log_sync(struct accel *base, unsigned long *gfn_bitmap, GError **errp)
{
    struct kvm *k = KVM_OF(base);
    if (!k->dirty_logging) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "dirty logging is not enabled");
        return false;
    }
    if (k->ring_entries) {
        /* Entries of a running vCPU appear as it writes; those of a paused
         * one are all published, so the final sync (paused) misses nothing. */
        kvm_dirty_ring_harvest(k);
        pthread_mutex_lock(&k->ring_lock);
        int err = k->ring_reset_errno;
        pthread_mutex_unlock(&k->ring_lock);
        if (err) {
            g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "KVM_RESET_DIRTY_RINGS: %s",
                        g_strerror(err));
            return false;
        }
        bitmap_steal_into(gfn_bitmap, k->ring_dirty, k->ring_nr_gfns);
        return true;
    }
    for (unsigned i = 0; i < k->nr_slots; i++)
        if (!sync_slot(k, &k->slots[i], gfn_bitmap, errp))
            return false;
    return true;
}
