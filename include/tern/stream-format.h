/* stream-format.h: the migration stream v1 wire format (docs/migration-stream.md), C11 only. */
#ifndef TERN_STREAM_FORMAT_H
#define TERN_STREAM_FORMAT_H

/*
 * Shared by the writer, the reader and the dump tool. Every multi-byte field
 * is little-endian on the wire whatever the host: read and write fields only
 * through mig_load_le*() / mig_store_le*() at offsetof() positions, never by
 * casting a buffer to one of these structs. The structs document the layout;
 * their sizes and offsets are pinned below.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Image header --------------------------------------------------------- */

#define MIG_STREAM_MAGIC "TERNMIG" /* 8 bytes with the terminating NUL */
#define MIG_STREAM_MAGIC_LEN 8
#define MIG_STREAM_VERSION 1     /* emit 1; accept 1 */
#define MIG_STREAM_PAGE_SHIFT 12 /* the only page size v1 accepts */

#define MIG_HDR_F_CRC32 (1u << 0)      /* every record has a CRC-32 trailer */
#define MIG_HDR_F_MAPPED_RAM (1u << 1) /* a file: RAM at fixed offsets (below) */
#define MIG_HDR_F_RAM_FD (1u << 2)     /* cpr-transfer: RAM comes as memfds (RAM_FDS) */
#define MIG_HDR_F_MULTIFD (1u << 3)    /* pages on extra connections (MULTIFD record) */
#define MIG_HDR_F_KNOWN \
    (MIG_HDR_F_CRC32 | MIG_HDR_F_MAPPED_RAM | MIG_HDR_F_RAM_FD | MIG_HDR_F_MULTIFD)

struct mig_image_header {
    uint8_t magic[8];    /* "TERNMIG\0" */
    uint32_t version;    /* MIG_STREAM_VERSION */
    uint32_t flags;      /* MIG_HDR_F_*; an unknown bit is an error */
    uint32_t page_shift; /* log2 of the page size: 12 */
    uint8_t reserved[8]; /* zero */
    uint32_t header_crc; /* CRC-32 (zlib) of bytes 0..27, always present */
};

/* ---- Record framing ------------------------------------------------------- */

#define MIG_REC_ALIGN 8u
/* Largest body accepted: a full PAGE_DATA batch (MIG_PAGE_DATA_MAX_PAGES raw
 * pages, 16 MiB + descriptors) fits with room for larger batches later, while
 * bounding what one hostile header can make the reader allocate. */
#define MIG_REC_LENGTH_MAX (64u << 20)
#define MIG_REC_OPTIONAL (1u << 31) /* type bit: unknown => skip, not fail */

struct mig_rec_header {
    uint32_t type;   /* MIG_REC_* (| MIG_REC_OPTIONAL) */
    uint32_t length; /* body bytes, excluding padding and trailer */
};

/* Follows the zero padding when MIG_HDR_F_CRC32 is set. */
struct mig_rec_trailer {
    uint32_t crc;      /* CRC-32 (zlib) of header, body and padding */
    uint32_t reserved; /* zero */
};

/* Bytes of zero padding after a body of (length) bytes. */
static inline uint32_t mig_rec_padding(uint32_t length)
{
    return (MIG_REC_ALIGN - (length % MIG_REC_ALIGN)) % MIG_REC_ALIGN;
}

/* ---- Record types ----------------------------------------------------------- */

/* Source to target (the migration stream). Type 0 is never valid. */
#define MIG_REC_VM_CONFIG 0x00000001u
#define MIG_REC_STATIC_END 0x00000002u
#define MIG_REC_PAGE_DATA 0x00000003u
#define MIG_REC_ZERO_PAGES 0x00000004u
#define MIG_REC_ITERATION_END 0x00000005u
#define MIG_REC_VCPU_STATE 0x00000006u
#define MIG_REC_VM_STATE 0x00000007u
#define MIG_REC_DEVICE_STATE 0x00000008u
#define MIG_REC_END 0x00000009u
#define MIG_REC_MAPPED_RAM 0x0000000Au  /* mapped-RAM files: where RAM lives */
#define MIG_REC_RAM_INDEX 0x0000000Bu   /* mapped-RAM files: which pages hold data */
#define MIG_REC_RAM_FDS 0x0000000Cu     /* cpr-transfer: the RAM memfds (SCM_RIGHTS) */
#define MIG_REC_STREAM_MAX_ 0x0000000Du /* one past the last stream type */
/* Multifd: channel count, compression and session id, before STATIC_END. An
 * optional type: the header flag MIG_HDR_F_MULTIFD is what old readers refuse. */
#define MIG_REC_MULTIFD (MIG_REC_OPTIONAL | 0x0000000Du)

/* Target to source (the return path, same framing). */
#define MIG_RP_READY 0x00000100u
#define MIG_RP_RESUMED 0x00000101u
#define MIG_RP_ERROR 0x00000102u
#define MIG_RP_BASE_ 0x00000100u
#define MIG_RP_MAX_ 0x00000103u

/* Names, size rules and decoders of these types: the table of record
 * descriptors, stream_record_types[] in tern/stream.h. */

/* ---- Record bodies -------------------------------------------------------- */

/* VM_CONFIG: this fixed part, then nr_devices x struct mig_vm_config_device. */
#define MIG_VM_CONFIG_MAX_REGIONS 4
#define MIG_VM_CONFIG_MAX_DEVICES 64
#define MIG_VM_CONFIG_MAX_VCPUS 1024
#define MIG_NAME_LEN 32 /* NUL-padded names: machine, device id */

struct mig_vm_config_region {
    uint64_t gpa;  /* first guest-physical byte, page aligned */
    uint64_t size; /* bytes, page aligned, non-zero */
};

struct mig_vm_config_device {
    char id[MIG_NAME_LEN]; /* e.g. "serial"; printable ASCII, NUL-padded */
    uint32_t instance;     /* 0 for the first device with this id */
    uint32_t reserved;     /* zero */
};

struct mig_rec_vm_config {
    uint64_t ram_size;          /* total RAM bytes (sum of the regions) */
    uint64_t nr_gfns;           /* highest guest frame number + 1 (holes included) */
    uint32_t nr_vcpus;          /* 1..MIG_VM_CONFIG_MAX_VCPUS */
    uint32_t nr_regions;        /* 1..MIG_VM_CONFIG_MAX_REGIONS */
    uint32_t nr_devices;        /* 0..MIG_VM_CONFIG_MAX_DEVICES */
    uint32_t cpuid_nr_entries;  /* CPUID entries hashed into cpuid_sha256 */
    uint8_t cpuid_sha256[32];   /* SHA-256 of the CPUID table (see the spec) */
    char machine[MIG_NAME_LEN]; /* machine type name, NUL-padded */
    struct mig_vm_config_region regions[MIG_VM_CONFIG_MAX_REGIONS]; /* unused: zero */
};

/* PAGE_DATA: this header, count descriptors, then the payloads in descriptor order. */
#define MIG_PAGE_DATA_MAX_PAGES 4096
#define MIG_PAGE_ENC_RAW 0u   /* page_size bytes as they are */
#define MIG_PAGE_ENC_ZLIB 1u  /* zlib stream inflating to page_size bytes */
#define MIG_PAGE_ENC_DELTA 2u /* reserved, never written; refused (XBZRLE is 3) */
/* Later additions within v1: a reader that predates them refuses the record
 * ("unknown encoding"); writers use them only when asked to. */
#define MIG_PAGE_ENC_XBZRLE 3u /* QEMU's XBZRLE delta against the page as last sent */
#define MIG_PAGE_ENC_ZSTD 4u   /* one zstd frame decompressing to page_size bytes */

struct mig_rec_page_data {
    uint32_t count;    /* 1..MIG_PAGE_DATA_MAX_PAGES */
    uint32_t reserved; /* zero */
};

struct mig_page_desc {
    uint64_t gfn;      /* guest frame number (gpa >> page_shift); no flag bits */
    uint32_t encoding; /* MIG_PAGE_ENC_* */
    uint32_t length;   /* payload bytes: page size for RAW; 1..page size otherwise */
};

/* ZERO_PAGES: this header, then count x struct mig_gfn_range. */
struct mig_rec_zero_pages {
    uint32_t count;    /* >= 1 */
    uint32_t reserved; /* zero */
};

struct mig_gfn_range {
    uint64_t first_gfn;
    uint64_t npages; /* >= 1; first_gfn + npages <= nr_gfns */
};

/* ITERATION_END: closes one pass; statistics are informative only. */
#define MIG_ITER_F_FINAL (1u << 0) /* the stop-and-copy pass (vCPUs paused) */

struct mig_rec_iteration_end {
    uint32_t pass;        /* 1, 2, 3, ... */
    uint32_t flags;       /* MIG_ITER_F_* */
    uint64_t pages_sent;  /* pages in this pass's PAGE_DATA records */
    uint64_t zero_pages;  /* pages in this pass's ZERO_PAGES ranges */
    uint64_t bytes_sent;  /* stream bytes of this pass, this record excluded */
    uint64_t dirty_pages; /* pages found dirty when the pass started */
    uint64_t duration_ns; /* wall time of the pass */
};

/* VCPU_STATE: this header, then an FDT blob to the end of the body. */
struct mig_rec_vcpu_state {
    uint32_t index;    /* vCPU index, 0..nr_vcpus-1, in order */
    uint32_t reserved; /* zero */
};

/* VM_STATE: the body is one FDT blob. */

/* DEVICE_STATE: this header, then an FDT blob to the end of the body. */
struct mig_rec_device_state {
    char id[MIG_NAME_LEN]; /* as in VM_CONFIG's device list */
    uint32_t instance;
    uint32_t reserved; /* zero */
};

/* ---- Mapped-RAM files (checkpoints) --------------------------------------- */

/* A stream with MIG_HDR_F_MAPPED_RAM keeps each page at a fixed file offset,
 * so a page sent in several passes is stored once and never-touched memory is
 * a hole in a sparse file. Layout:
 *   [0, ram_offset)            head: image header, VM_CONFIG, STATIC_END, MAPPED_RAM
 *   [ram_offset, +nr_gfns*ps)  the RAM area: page gfn at ram_offset + gfn * page size
 *   [tail_offset, EOF)         tail: RAM_INDEX, ITERATION_END..., VCPU_STATE...,
 *                              VM_STATE, DEVICE_STATE..., END
 * Offsets are multiples of MIG_MAPPED_ALIGN (O_DIRECT friendly). */
#define MIG_MAPPED_ALIGN (1u << 20)

struct mig_rec_mapped_ram {
    uint64_t ram_offset;  /* file offset of gfn 0; multiple of MIG_MAPPED_ALIGN */
    uint64_t nr_gfns;     /* = VM_CONFIG nr_gfns */
    uint64_t tail_offset; /* ALIGN_UP(ram_offset + nr_gfns * page size, MIG_MAPPED_ALIGN) */
};

/* RAM_INDEX: this header, a bitmap of pages present in the RAM area (bit gfn
 * of little-endian u64 word gfn / 64; pages not present are zero), then, if
 * the header has MIG_HDR_F_CRC32, one u32 CRC-32 per present page in gfn order. */
struct mig_rec_ram_index {
    uint64_t nr_gfns;    /* bits in the bitmap */
    uint64_t nr_present; /* set bits = CRC entries */
};

/* ---- cpr-transfer (MIG_HDR_F_RAM_FD) ---------------------------------------- */

/* RAM_FDS: this header, then nr_regions x struct mig_vm_config_region, the
 * layout of the memfds that travel with the record's first byte (SCM_RIGHTS),
 * one per region in this order. No page records in such a stream. */
struct mig_rec_ram_fds {
    uint32_t nr_regions; /* 1..MIG_VM_CONFIG_MAX_REGIONS, = VM_CONFIG's */
    uint32_t reserved;   /* zero */
};

/* Smallest FDT blob (its header) and the alignment every FDT starts at. */
#define MIG_FDT_MIN_SIZE 40u

/* RP_ERROR: the body is a UTF-8 message without NUL, 1..MIG_RP_ERROR_MAX bytes. */
#define MIG_RP_ERROR_MAX 4096u

/* ---- Size pins ---------------------------------------------------------------- */

static_assert(sizeof(struct mig_image_header) == 32, "image header");
static_assert(offsetof(struct mig_image_header, version) == 8, "image header");
static_assert(offsetof(struct mig_image_header, flags) == 12, "image header");
static_assert(offsetof(struct mig_image_header, page_shift) == 16, "image header");
static_assert(offsetof(struct mig_image_header, reserved) == 20, "image header");
static_assert(offsetof(struct mig_image_header, header_crc) == 28, "image header");
static_assert(sizeof(struct mig_rec_header) == 8, "record header");
static_assert(sizeof(struct mig_rec_trailer) == 8, "record trailer");
static_assert(sizeof(struct mig_vm_config_region) == 16, "vm config region");
static_assert(sizeof(struct mig_vm_config_device) == 40, "vm config device");
static_assert(sizeof(struct mig_rec_vm_config) == 160, "vm config");
static_assert(offsetof(struct mig_rec_vm_config, cpuid_sha256) == 32, "vm config");
static_assert(offsetof(struct mig_rec_vm_config, machine) == 64, "vm config");
static_assert(offsetof(struct mig_rec_vm_config, regions) == 96, "vm config");
static_assert(sizeof(struct mig_rec_page_data) == 8, "page data");
static_assert(sizeof(struct mig_page_desc) == 16, "page desc");
static_assert(sizeof(struct mig_rec_zero_pages) == 8, "zero pages");
static_assert(sizeof(struct mig_gfn_range) == 16, "gfn range");
static_assert(sizeof(struct mig_rec_iteration_end) == 48, "iteration end");
static_assert(sizeof(struct mig_rec_vcpu_state) == 8, "vcpu state");
static_assert(sizeof(struct mig_rec_device_state) == 40, "device state");
static_assert(MIG_REC_LENGTH_MAX % MIG_REC_ALIGN == 0, "max length aligned");
static_assert(sizeof(struct mig_rec_mapped_ram) == 24, "MAPPED_RAM body");
static_assert(sizeof(struct mig_rec_ram_index) == 16, "RAM_INDEX header");
static_assert(sizeof(struct mig_rec_ram_fds) == 8, "RAM_FDS header");
static_assert(8 + MIG_PAGE_DATA_MAX_PAGES * (16 + (1u << MIG_STREAM_PAGE_SHIFT)) <=
                  MIG_REC_LENGTH_MAX,
              "a full page batch fits in one record");

/* ---- Little-endian access ------------------------------------------------------ */

/* Load a little-endian value from (p), any alignment, any host byte order. */
static inline uint16_t mig_load_le16(const void *p)
{
    const uint8_t *b = p;

    return (uint16_t)(b[0] | (b[1] << 8));
}

static inline uint32_t mig_load_le32(const void *p)
{
    const uint8_t *b = p;

    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t mig_load_le64(const void *p)
{
    const uint8_t *b = p;

    return (uint64_t)mig_load_le32(b) | (uint64_t)mig_load_le32(b + 4) << 32;
}

/* Store (v) little-endian at (p), any alignment, any host byte order. */
static inline void mig_store_le16(void *p, uint16_t v)
{
    uint8_t *b = p;

    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static inline void mig_store_le32(void *p, uint32_t v)
{
    uint8_t *b = p;

    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

static inline void mig_store_le64(void *p, uint64_t v)
{
    uint8_t *b = p;

    mig_store_le32(b, (uint32_t)v);
    mig_store_le32(b + 4, (uint32_t)(v >> 32));
}

#endif
