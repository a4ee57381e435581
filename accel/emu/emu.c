/* emu.c: the software accelerator's VM: RAM map, dirty log, CPUID, TSC, interrupt lines. */
#include <cpuid.h>
#include <string.h>
#include <x86intrin.h>

#include "emu-internal.h"
#include "tern/bitmap.h"
#include "tern/memory.h"
#include "tern/util.h"

/* The host TSC rate, which the guest's TSC runs at: from CPUID 0x15 where the
 * host reports it, else measured once against CLOCK_MONOTONIC over 20 ms. */
static uint32_t host_tsc_khz(void)
{
    static uint32_t khz;
    unsigned a, b, c, d;

    if (khz)
        return khz;
    if (__get_cpuid_max(0, NULL) >= 0x15) {
        __cpuid_count(0x15, 0, a, b, c, d);
        if (a && b && c)
            khz = (uint32_t)((uint64_t)c * b / a / 1000);
    }
    if (!khz) {
        uint64_t t0 = emu_now_ns(), c0 = __rdtsc(), t1;
        do {
            t1 = emu_now_ns();
        } while (t1 - t0 < 20000000);
        khz = (uint32_t)((__rdtsc() - c0) * 1000000 / (t1 - t0));
    }
    return khz;
}

static uint64_t scaled_host_tsc(const struct emu_vm *vm)
{
    return (uint64_t)(((unsigned __int128)__rdtsc() * vm->tsc_mult) >> 32);
}

uint64_t emu_guest_tsc(struct emu_vm *vm)
{
    return scaled_host_tsc(vm) + (uint64_t)__atomic_load_n(&vm->tsc_offset, __ATOMIC_RELAXED);
}

void emu_set_guest_tsc(struct emu_vm *vm, uint64_t tsc, uint32_t khz)
{
    if (khz && khz != vm->tsc_khz) {
        vm->tsc_khz = khz;
        vm->tsc_mult = ((uint64_t)khz << 32) / vm->host_khz;
        /* The guest read its rate here at boot; it stays what it was. */
        for (unsigned i = 0; i < vm->nr_cpuid; i++)
            if (vm->cpuid[i].function == 0x40000010)
                vm->cpuid[i].eax = khz;
    }
    __atomic_store_n(&vm->tsc_offset, (int64_t)(tsc - scaled_host_tsc(vm)), __ATOMIC_RELAXED);
    /* Deadlines armed against the old TSC (a vCPU loaded before the VM) move with it. */
    emu_vcpus_tsc_changed(vm);
}

/* ---- CPUID: what the interpreter implements, nothing more ---- */

#define CPUID_1_EDX \
    (1u << 0 /* FPU */ | 1u << 3 /* PSE */ | 1u << 4 /* TSC */ | 1u << 5 /* MSR */ | \
     1u << 6 /* PAE */ | 1u << 8 /* CX8 */ | 1u << 9 /* APIC */ | 1u << 11 /* SEP */ | \
     1u << 13 /* PGE */ | 1u << 15 /* CMOV */ | 1u << 16 /* PAT */)
#define CPUID_1_ECX \
    (1u << 13 /* CX16 */ | 1u << 23 /* POPCNT */ | 1u << 24 /* TSC-deadline */ | \
     1u << 31 /* hypervisor */)
#define CPUID_8001_EDX \
    (1u << 11 /* SYSCALL */ | 1u << 20 /* NX */ | 1u << 26 /* 1 GiB pages */ | \
     1u << 27 /* RDTSCP */ | 1u << 29 /* long mode */)
#define CPUID_8001_ECX (1u << 0 /* LAHF in 64-bit mode */ | 1u << 5 /* LZCNT */)

static void add_cpuid(struct emu_vm *vm, uint32_t function, uint32_t eax, uint32_t ebx,
                      uint32_t ecx, uint32_t edx)
{
    g_assert(vm->nr_cpuid < EMU_CPUID_MAX);
    vm->cpuid[vm->nr_cpuid++] = (struct emu_cpuid_entry){
        .function = function,
        .eax = eax,
        .ebx = ebx,
        .ecx = ecx,
        .edx = edx,
    };
}

static uint32_t str4(const char *s)
{
    uint32_t v;
    memcpy(&v, s, 4);
    return v;
}

static void build_cpuid(struct emu_vm *vm)
{
    unsigned vendor[3] = { 0 }, sig = 0, dummy;

    /* The host's vendor and family/model/stepping: guests key quirks on them. */
    __cpuid(0, dummy, vendor[0], vendor[1], vendor[2]);
    __cpuid(1, sig, dummy, dummy, dummy);
    add_cpuid(vm, 0, 1, vendor[0], vendor[1], vendor[2]);
    add_cpuid(vm, 1, sig, 1u << 16 /* one logical CPU per package */, CPUID_1_ECX, CPUID_1_EDX);
    /* Leaf 0x40000010 gives the TSC rate in kHz and the LAPIC timer's 1 GHz,
     * as QEMU and Tern's KVM backend do: guests need not calibrate. */
    add_cpuid(vm, 0x40000000, 0x40000010, str4("Tern"), str4("Emu\0"), 0);
    add_cpuid(vm, 0x40000010, vm->tsc_khz, EMU_APIC_BUS_HZ / 1000, 0, 0);
    add_cpuid(vm, 0x80000000, 0x80000008, vendor[0], vendor[1], vendor[2]);
    add_cpuid(vm, 0x80000001, sig, 0, CPUID_8001_ECX, CPUID_8001_EDX);
    add_cpuid(vm, 0x80000008, 0x3027 /* 39 physical, 48 virtual address bits */, 0, 0, 0);
}

void emu_cpuid_lookup(struct emu_vm *vm, unsigned cpu, uint32_t leaf, uint32_t subleaf,
                      uint32_t out[4])
{
    (void)subleaf;
    /* Past the highest basic or extended leaf, Intel CPUs answer the highest
     * basic leaf; unlisted leaves below it read as zero. */
    const struct emu_cpuid_entry *e = NULL;
    for (unsigned i = 0; i < vm->nr_cpuid; i++)
        if (vm->cpuid[i].function == leaf)
            e = &vm->cpuid[i];
    memset(out, 0, 4 * sizeof(out[0]));
    if (!e)
        return;
    out[0] = e->eax;
    out[1] = e->ebx;
    out[2] = e->ecx;
    out[3] = e->edx;
    if (leaf == 1)
        out[1] |= cpu << 24; /* initial APIC ID */
}

static void op_cpuid_fingerprint(const struct accel *a, uint32_t *nr_entries, uint8_t sha256[32])
{
    const struct emu_vm *vm = (const struct emu_vm *)a;
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = 32;

    /* The same words as the KVM backend hashes (docs/migration-stream.md),
     * but the TSC rate: a target adopts the source's with the VM state. */
    for (unsigned i = 0; i < vm->nr_cpuid; i++) {
        const struct emu_cpuid_entry *e = &vm->cpuid[i];
        uint32_t eax = e->function == 0x40000010 ? 0 : e->eax;
        uint32_t words[7] = { e->function, e->index, e->flags, eax, e->ebx, e->ecx, e->edx };
        g_checksum_update(sum, (const guchar *)words, sizeof(words));
    }
    *nr_entries = vm->nr_cpuid;
    g_checksum_get_digest(sum, sha256, &len);
}

/* ---- RAM and the dirty log ---- */

static bool op_map_ram(struct accel *a, unsigned slot, uint64_t gpa, uint64_t size, void *hva,
                       GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);
    struct x86_memory *mem = &vm->mem;

    (void)slot;
    if (mem->nr_ram == G_N_ELEMENTS(mem->ram)) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "too many RAM regions");
        return false;
    }
    mem->ram[mem->nr_ram++] = (struct x86_ram){ .gpa = gpa, .size = size, .hva = hva };
    uint64_t end_gfn = (gpa + size) >> GUEST_PAGE_SHIFT;
    if (end_gfn > mem->nr_gfns) {
        /* Regions are added before any vCPU runs. */
        g_free(vm->dirty);
        vm->dirty = g_new0(unsigned long, BITMAP_LONGS(end_gfn));
        mem->nr_gfns = end_gfn;
    }
    return true;
}

static bool op_dirty_log_start(struct accel *a, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);
    (void)errp;
    /* Atomic like every other access to the log: a vCPU that read the
     * pointer before the last stop may still be setting a bit. */
    for (size_t i = 0; i < BITMAP_LONGS(vm->mem.nr_gfns); i++)
        __atomic_store_n(&vm->dirty[i], 0UL, __ATOMIC_RELAXED);
    /* From here every vCPU write marks its page (the interpreter's write path). */
    __atomic_store_n(&vm->mem.dirty, vm->dirty, __ATOMIC_SEQ_CST);
    vm->dirty_logging = true;
    return true;
}

static bool op_dirty_log_stop(struct accel *a, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);
    (void)errp;
    __atomic_store_n(&vm->mem.dirty, NULL, __ATOMIC_SEQ_CST);
    vm->dirty_logging = false;
    return true;
}

/* Get and clear, word by word: a page written after its word was taken is
 * left for the next sync, exactly KVM's manual-protect semantics. */
static bool op_dirty_log_sync(struct accel *a, unsigned long *gfn_bitmap, GError **errp)
{
    struct emu_vm *vm = EMU_OF(a);

    if (!vm->dirty_logging) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_FAILED, "dirty logging is not enabled");
        return false;
    }
    bitmap_steal_into(gfn_bitmap, vm->dirty, vm->mem.nr_gfns);
    return true;
}

static const char *op_dirty_log_mode(const struct accel *a)
{
    (void)a;
    return "emu-bitmap";
}

/* ---- the rest of the table ---- */

static const char *op_name(const struct accel *a)
{
    (void)a;
    return "emu";
}

static uint32_t op_tsc_khz(const struct accel *a)
{
    return ((const struct emu_vm *)a)->tsc_khz;
}

static bool op_set_irq_line(struct accel *a, unsigned irq, bool level)
{
    struct emu_vm *vm = EMU_OF(a);
    if (irq >= EMU_IOAPIC_PINS)
        return false;
    emu_chips_set_irq(vm->chips, irq, level);
    return true;
}

static void op_close(struct accel *a)
{
    struct emu_vm *vm = EMU_OF(a);
    emu_chips_destroy(vm->chips);
    emu_apic_bus_destroy(vm->apic_bus);
    g_mutex_clear(&vm->vcpus_lock);
    g_free(vm->dirty);
    g_free(vm);
}

static const struct accel_ops emu_accel_ops = {
    .name = op_name,
    .is_kvm = false,
    .close = op_close,
    .tsc_khz = op_tsc_khz,
    .cpuid_fingerprint = op_cpuid_fingerprint,
    .set_irq_line = op_set_irq_line,
    .map_ram = op_map_ram,
    .dirty_log_start = op_dirty_log_start,
    .dirty_log_stop = op_dirty_log_stop,
    .dirty_log_sync = op_dirty_log_sync,
    .dirty_log_mode = op_dirty_log_mode,
    .vcpu_create = emu_vcpu_create,
    .vcpu_destroy = emu_vcpu_destroy,
    .vcpu_set_pvh_entry = emu_vcpu_set_pvh_entry,
    .vcpu_run = emu_vcpu_run,
    .vcpu_bind_thread = emu_vcpu_bind_thread,
    .vcpu_kick = emu_vcpu_kick,
    .vcpu_clear_kick = emu_vcpu_clear_kick,
    .vcpu_save_state = emu_vcpu_save_state,
    .vcpu_load_state = emu_vcpu_load_state,
    .vm_save_state = emu_vm_save_state,
    .vm_load_state = emu_vm_load_state,
    .vcpu_summary = emu_vcpu_summary,
};

struct accel *emu_accel_open(const struct accel_options *opts, GError **errp)
{
    struct emu_vm *vm = g_new0(struct emu_vm, 1);

    if (opts->dirty_ring_size) {
        g_set_error(errp, TERN_ERROR, TERN_ERROR_INVALID,
                    "dirty-ring-size is a KVM property; the software CPU logs to a bitmap");
        g_free(vm);
        return NULL;
    }
    vm->base.ops = &emu_accel_ops;
    vm->bus = opts->bus;
    vm->host_khz = vm->tsc_khz = host_tsc_khz();
    vm->tsc_mult = 1ull << 32;
    vm->tsc_offset = 0;
    g_mutex_init(&vm->vcpus_lock);
    build_cpuid(vm);
    vm->apic_bus = emu_apic_bus_create(&emu_irq_glue, vm);
    vm->chips = emu_chips_create(vm->apic_bus);
    return &vm->base;
}
