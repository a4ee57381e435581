/* guest.h: shared declarations of the freestanding test guest (per-CPU data, helpers). */
#ifndef TESTGUEST_GUEST_H
#define TESTGUEST_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define PAGE_SIZE 4096u
#define MSR_EFER 0xc0000080u
#define MSR_PVM_VIF 0x4b564d10u

#define TIMER_VECTOR 0x40
#define SPURIOUS_VECTOR 0xff

/* 64-bit TSS (only RSP0 matters). */
struct tss64 {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2;
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

/* What isr.S pushes, lowest address first. */
struct irq_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

/* One vCPU. Lives at the base of its PERCPU_SIZE-aligned block, so the
 * current CPU is found from %rsp (the block also holds its stacks). */
struct cpu {
    uint32_t index; /* per-CPU block number (arrival order) */
    uint32_t slot;  /* position in cpu_list */
    uint32_t apic_id;
    volatile uint8_t *vif; /* kvm_pvm vIF page; NULL on hardware virt */
    struct tss64 tss __attribute__((aligned(16)));
    volatile int gp_skip; /* #GP handler skips a 2-byte wrmsr/rdmsr */
    volatile int gp_hit;

    /* workload (written by the owner, read by the BSP for reports) */
    uint64_t ws_first, ws_pages, ws_pos;
    uint64_t pass; /* pass being written, 1-based */
    volatile uint64_t passes_done;
    volatile uint64_t pages_written;
    volatile uint64_t max_gap_tsc;
    volatile uint64_t errors;
    uint64_t fill_first, fill_pages, fill_pos;
    uint64_t fill_due;          /* fill pages verified, scaled by tsc_hz */
    uint64_t tokens;            /* rate limit bucket: pages * tsc_hz */
    volatile uint64_t last_tsc; /* last loop iteration */
    volatile uint64_t gap_cut;  /* the BSP reported our gap up to here */

    /* what interrupt delivery looked like (for the debug report) */
    volatile uint64_t irq_count;
    volatile uint8_t irq_vif0, irq_vif1, irq_frame_if, irq_on_rsp0;
    volatile uint8_t after_vif0;
    volatile uint8_t probe_clear_if; /* pvm_selftest: return with IF=0 once */
};

struct percpu_block {
    union {
        struct cpu cpu;
        uint8_t pad[PAGE_SIZE];
    } u;
    uint8_t vif_page[PAGE_SIZE];
    uint8_t irq_stack[IRQ_STACK_SIZE];
    uint8_t stack[PERCPU_SIZE - 2 * PAGE_SIZE - IRQ_STACK_SIZE];
};

extern struct percpu_block percpu[MAX_CPUS];

static inline struct cpu *this_cpu(void)
{
    uint64_t sp;

    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return (struct cpu *)(sp & ~(uint64_t)(PERCPU_SIZE - 1));
}

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;

    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo = 0, hi = 0;

    __asm__ volatile("rdmsr" : "+a"(lo), "+d"(hi) : "c"(msr) : "memory");
    return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

static inline void barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

static inline uint32_t mmio_read32(uint64_t addr)
{
    return *(volatile uint32_t *)addr;
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
    *(volatile uint32_t *)addr = v;
}

/* serial.c */
void serial_init(void);
void serial_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* boot.c: what the boot loader told us, copied out of low memory early */
struct ram_extent {
    uint64_t base, pages;
};
#define RAM_EXTENTS_MAX 16
extern char boot_cmdline[1024];
extern struct ram_extent boot_ram[RAM_EXTENTS_MAX];
extern int boot_ram_count;
extern uint32_t boot_start_info_pa; /* saved by entry.S */
void boot_copy_start_info(void);
void boot_map_high_ram(void);
uint64_t boot_usable_pages(void);
uint64_t boot_page_addr(uint64_t idx);

/* cmdline.c */
struct params {
    uint64_t ws_mib, rate_mib, fill_mib, tick_ms, timer_hz, cpus, exit_after, debug, exitbench;
    uint64_t locktest;
    uint64_t wsdelta; /* 1: a rewrite changes only a page's pass and check words */
};
void cmdline_parse(const char *s, struct params *p);

/* idt.c */
void idt_init(void);
void cpu_tables_load(struct cpu *c);
void isr_dispatch(struct irq_frame *f);

/* pvm.c: interrupt enable/disable that works on kvm_pvm and hardware virt */
extern bool pvm;
bool pvm_probe(struct cpu *c);
void irq_enable(void);
void irq_disable(void);
void cpu_idle(void);
void pvm_irq_exit(struct irq_frame *f);
void pvm_selftest(void);

/* apic.c */
#define LAPIC_BASE 0xfee00000ull
extern uint64_t tsc_hz;
extern const char *tsc_source;
void tsc_calibrate(void);
void pic_disable(void);
void apic_enable(void);
uint32_t apic_id(void);
void apic_eoi(void);
void apic_timer_calibrate(void);
void apic_timer_start(uint32_t hz);
void apic_send_init_sipi(uint8_t vector);
void apic_timer_irq(void);
uint64_t apic_timer_hz(void);
extern volatile uint64_t timer_ticks;
void tsc_delay_us(uint64_t us);

/* smp.c */
extern struct cpu *cpu_list[MAX_CPUS]; /* the CPUs that run the workload, BSP first */
extern volatile uint32_t cpus_online;
extern volatile int smp_stage; /* 1: fill memory, 2: run */
uint32_t smp_start_aps(uint32_t want, uint64_t *bringup_us);
void ap_main(uint32_t index);
void smp_wait_stage(int stage);

/* workload.c */
extern struct params params;
void workload_setup(uint32_t ncpus);
void workload_fill(struct cpu *c);
void workload_wait_filled(void);
void workload_run(struct cpu *c) __attribute__((noreturn));
void workload_report(uint64_t tick, uint64_t t_ms, uint64_t now);
uint64_t workload_errors(void);
extern uint64_t locktest_failed;

/* locktest.c */
void locktest_run(uint64_t iterations);
bool locktest_report(uint32_t ncpus, uint64_t iterations);

/* main.c */
extern uint64_t boot_tsc;
void cpu_start(uint32_t index);
void report_poll(struct cpu *c, uint64_t now);
void poweroff(uint8_t code) __attribute__((noreturn));
void halt_forever(void) __attribute__((noreturn));
uint64_t tsc_to_us(uint64_t d);

/* string helpers (the compiler may emit calls to these) */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif
