/* stream-config.c: VM_CONFIG: encode, decode and validate, and compare with the local VM. */
#include "tern/stream.h"
#include "tern/util.h"
#include "stream-internal.h"

#include <inttypes.h>
#include <string.h>

static bool vm_config_encode(const struct stream_vm_config *cfg, uint8_t *b, GError **errp)
{
    size_t o;

    if (cfg->nr_regions > MIG_VM_CONFIG_MAX_REGIONS || cfg->nr_devices > MIG_VM_CONFIG_MAX_DEVICES)
        return stream_fail(errp, "VM_CONFIG: too many regions or devices");
    if (!stream_name_ok(cfg->machine))
        return stream_fail(errp, "VM_CONFIG: bad machine name");
    mig_store_le64(b + offsetof(struct mig_rec_vm_config, ram_size), cfg->ram_size);
    mig_store_le64(b + offsetof(struct mig_rec_vm_config, nr_gfns), cfg->nr_gfns);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_vcpus), cfg->nr_vcpus);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_regions), cfg->nr_regions);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, nr_devices), cfg->nr_devices);
    mig_store_le32(b + offsetof(struct mig_rec_vm_config, cpuid_nr_entries), cfg->cpuid_nr_entries);
    memcpy(b + offsetof(struct mig_rec_vm_config, cpuid_sha256), cfg->cpuid_sha256, 32);
    stream_store_name(b + offsetof(struct mig_rec_vm_config, machine), cfg->machine);
    for (uint32_t i = 0; i < cfg->nr_regions; i++) {
        o = offsetof(struct mig_rec_vm_config, regions) + i * sizeof(struct mig_vm_config_region);
        mig_store_le64(b + o + offsetof(struct mig_vm_config_region, gpa), cfg->regions[i].gpa);
        mig_store_le64(b + o + offsetof(struct mig_vm_config_region, size), cfg->regions[i].size);
    }
    for (uint32_t i = 0; i < cfg->nr_devices; i++) {
        o = sizeof(struct mig_rec_vm_config) + i * sizeof(struct mig_vm_config_device);
        if (!stream_name_ok(cfg->devices[i].id))
            return stream_fail(errp, "VM_CONFIG: bad device id");
        stream_store_name(b + o + offsetof(struct mig_vm_config_device, id), cfg->devices[i].id);
        mig_store_le32(b + o + offsetof(struct mig_vm_config_device, instance),
                       cfg->devices[i].instance);
    }
    return true;
}

bool stream_write_vm_config(struct stream_writer *w, const struct stream_vm_config *cfg,
                            GError **errp)
{
    size_t len = sizeof(struct mig_rec_vm_config) +
                 (size_t)MIN(cfg->nr_devices, (uint32_t)MIG_VM_CONFIG_MAX_DEVICES) *
                     sizeof(struct mig_vm_config_device);
    g_autofree uint8_t *b = g_malloc0(len);
    struct stream_record self = { .type = MIG_REC_VM_CONFIG,
                                  .length = (uint32_t)len,
                                  .body = b,
                                  .index = w->records,
                                  .offset = channel_write_pos(w->ch) };
    struct stream_vm_config check;
    struct stream_part part = { b, len, STREAM_PART_COPY };

    if (!vm_config_encode(cfg, b, errp))
        return false;
    /* Never send what the target would refuse. */
    if (!stream_parse_vm_config(&self, &check, errp))
        return false;
    return stream_write_record(w, MIG_REC_VM_CONFIG, &part, 1, errp);
}

bool stream_parse_vm_config(const struct stream_record *rec, struct stream_vm_config *out,
                            GError **errp)
{
    const uint8_t *b = rec->body;
    const uint64_t page_size = 1ULL << MIG_STREAM_PAGE_SHIFT;
    uint64_t total = 0, prev_end = 0;
    size_t want;

    if (!stream_rec_expect(rec, MIG_REC_VM_CONFIG, errp))
        return false;
    memset(out, 0, sizeof(*out));
    if (rec->length < sizeof(struct mig_rec_vm_config))
        return stream_rec_fail(rec, errp, "body of %u bytes is shorter than %zu", rec->length,
                               sizeof(struct mig_rec_vm_config));
    out->ram_size = mig_load_le64(b + offsetof(struct mig_rec_vm_config, ram_size));
    out->nr_gfns = mig_load_le64(b + offsetof(struct mig_rec_vm_config, nr_gfns));
    out->nr_vcpus = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_vcpus));
    out->nr_regions = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_regions));
    out->nr_devices = mig_load_le32(b + offsetof(struct mig_rec_vm_config, nr_devices));
    out->cpuid_nr_entries = mig_load_le32(b + offsetof(struct mig_rec_vm_config, cpuid_nr_entries));
    memcpy(out->cpuid_sha256, b + offsetof(struct mig_rec_vm_config, cpuid_sha256), 32);

    if (out->nr_devices > MIG_VM_CONFIG_MAX_DEVICES)
        return stream_rec_fail(rec, errp, "%u devices (at most %d)", out->nr_devices,
                               MIG_VM_CONFIG_MAX_DEVICES);
    want = sizeof(struct mig_rec_vm_config) +
           (size_t)out->nr_devices * sizeof(struct mig_vm_config_device);
    if (rec->length != want)
        return stream_rec_fail(rec, errp, "length %u, but %u devices need %zu", rec->length,
                               out->nr_devices, want);
    if (out->nr_vcpus < 1 || out->nr_vcpus > MIG_VM_CONFIG_MAX_VCPUS)
        return stream_rec_fail(rec, errp, "%u vCPUs (1 to %d)", out->nr_vcpus,
                               MIG_VM_CONFIG_MAX_VCPUS);
    if (out->nr_regions < 1 || out->nr_regions > MIG_VM_CONFIG_MAX_REGIONS)
        return stream_rec_fail(rec, errp, "%u RAM regions (1 to %d)", out->nr_regions,
                               MIG_VM_CONFIG_MAX_REGIONS);
    if (out->nr_gfns > (UINT64_MAX >> MIG_STREAM_PAGE_SHIFT))
        return stream_rec_fail(rec, errp, "nr_gfns 0x%" PRIx64 " is too large", out->nr_gfns);
    for (uint32_t i = 0; i < MIG_VM_CONFIG_MAX_REGIONS; i++) {
        size_t o = offsetof(struct mig_rec_vm_config, regions) +
                   i * sizeof(struct mig_vm_config_region);
        uint64_t gpa = mig_load_le64(b + o + offsetof(struct mig_vm_config_region, gpa));
        uint64_t size = mig_load_le64(b + o + offsetof(struct mig_vm_config_region, size));

        if (i >= out->nr_regions) {
            if (gpa || size)
                return stream_rec_fail(rec, errp, "unused region %u is not zero", i);
            continue;
        }
        if (!size || gpa % page_size || size % page_size)
            return stream_rec_fail(rec, errp,
                                   "region %u (0x%" PRIx64 "+0x%" PRIx64
                                   ") is empty or not page aligned",
                                   i, gpa, size);
        if (gpa < prev_end || size > (out->nr_gfns << MIG_STREAM_PAGE_SHIFT) ||
            gpa > (out->nr_gfns << MIG_STREAM_PAGE_SHIFT) - size)
            return stream_rec_fail(rec, errp,
                                   "region %u (0x%" PRIx64 "+0x%" PRIx64
                                   ") overlaps, is out of order or lies beyond nr_gfns",
                                   i, gpa, size);
        prev_end = gpa + size;
        total += size;
        out->regions[i].gpa = gpa;
        out->regions[i].size = size;
    }
    if (total != out->ram_size)
        return stream_rec_fail(rec, errp,
                               "regions sum to 0x%" PRIx64 " bytes, ram_size is 0x%" PRIx64, total,
                               out->ram_size);
    if (!stream_check_name(rec, b + offsetof(struct mig_rec_vm_config, machine), "machine name",
                           out->machine, errp))
        return false;
    for (uint32_t i = 0; i < out->nr_devices; i++) {
        const uint8_t *d = b + sizeof(struct mig_rec_vm_config) +
                           i * sizeof(struct mig_vm_config_device);

        if (!stream_check_name(rec, d + offsetof(struct mig_vm_config_device, id), "device id",
                               out->devices[i].id, errp))
            return false;
        out->devices[i].instance = mig_load_le32(d +
                                                 offsetof(struct mig_vm_config_device, instance));
        if (mig_load_le32(d + offsetof(struct mig_vm_config_device, reserved)))
            return stream_rec_fail(rec, errp, "device %u: reserved field is not zero", i);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(out->devices[j].id, out->devices[i].id) &&
                out->devices[j].instance == out->devices[i].instance)
                return stream_rec_fail(rec, errp, "device %s instance %u is listed twice",
                                       out->devices[i].id, out->devices[i].instance);
    }
    return true;
}

bool stream_vm_config_compare(const struct stream_vm_config *in,
                              const struct stream_vm_config *local, GError **errp)
{
    if (strcmp(in->machine, local->machine))
        return stream_fail(errp, "machine type differs: stream '%s', this VM '%s'", in->machine,
                           local->machine);
    if (in->ram_size != local->ram_size)
        return stream_fail(errp,
                           "RAM size differs: stream %" PRIu64 " MiB, this VM %" PRIu64 " MiB",
                           in->ram_size >> 20, local->ram_size >> 20);
    if (in->nr_regions != local->nr_regions || in->nr_gfns != local->nr_gfns)
        return stream_fail(errp,
                           "RAM layout differs: stream %u regions / %" PRIu64
                           " frames, this VM %u / %" PRIu64,
                           in->nr_regions, in->nr_gfns, local->nr_regions, local->nr_gfns);
    for (uint32_t i = 0; i < in->nr_regions; i++)
        if (in->regions[i].gpa != local->regions[i].gpa ||
            in->regions[i].size != local->regions[i].size)
            return stream_fail(errp,
                               "RAM region %u differs: stream 0x%" PRIx64 "+0x%" PRIx64
                               ", this VM 0x%" PRIx64 "+0x%" PRIx64,
                               i, in->regions[i].gpa, in->regions[i].size, local->regions[i].gpa,
                               local->regions[i].size);
    if (in->nr_vcpus != local->nr_vcpus)
        return stream_fail(errp, "vCPU count differs: stream %u, this VM %u", in->nr_vcpus,
                           local->nr_vcpus);
    if (in->cpuid_nr_entries != local->cpuid_nr_entries ||
        memcmp(in->cpuid_sha256, local->cpuid_sha256, 32))
        return stream_fail(errp,
                           "CPUID differs: stream %u entries, this VM %u entries%s "
                           "(a VM moves between Tern processes on the same accelerator, "
                           "kvm or emu, and the same host CPU)",
                           in->cpuid_nr_entries, local->cpuid_nr_entries,
                           in->cpuid_nr_entries == local->cpuid_nr_entries ? " with other values"
                                                                           : "");
    for (uint32_t i = 0; i < MAX(in->nr_devices, local->nr_devices); i++) {
        if (i >= in->nr_devices)
            return stream_fail(errp, "device %s.%u of this VM is not in the stream",
                               local->devices[i].id, local->devices[i].instance);
        if (i >= local->nr_devices)
            return stream_fail(errp, "stream device %s.%u does not exist in this VM",
                               in->devices[i].id, in->devices[i].instance);
        if (strcmp(in->devices[i].id, local->devices[i].id) ||
            in->devices[i].instance != local->devices[i].instance)
            return stream_fail(errp, "device %u differs: stream %s.%u, this VM %s.%u", i,
                               in->devices[i].id, in->devices[i].instance, local->devices[i].id,
                               local->devices[i].instance);
    }
    return true;
}

bool stream_body_vm_config(const struct stream_record *rec, const struct stream_parse_ctx *ctx,
                           struct stream_body *out, GError **errp)
{
    (void)ctx;
    return stream_parse_vm_config(rec, &out->vm_config, errp);
}
