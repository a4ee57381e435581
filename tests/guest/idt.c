/* idt.c: IDT, per-CPU TSS and GDT descriptor, exception and interrupt dispatch. */
#include "guest.h"

struct idt_gate {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t reserved;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
static volatile uint64_t unexpected_irqs;

extern const uint8_t isr_stubs[];
extern uint64_t gdt[];

struct __attribute__((packed)) desc_ptr {
    uint16_t limit;
    uint64_t base;
};

void idt_init(void)
{
    for (int v = 0; v < 256; v++) {
        uint64_t h = (uint64_t)(isr_stubs + 16 * v);

        idt[v].off_lo = (uint16_t)h;
        idt[v].sel = SEL_CODE64;
        idt[v].ist = 0;
        idt[v].type = 0x8e; /* present, DPL 0, 64-bit interrupt gate */
        idt[v].off_mid = (uint16_t)(h >> 16);
        idt[v].off_hi = (uint32_t)(h >> 32);
        idt[v].reserved = 0;
    }
}

/* Load the full GDT, this CPU's TSS and the IDT. */
void cpu_tables_load(struct cpu *c)
{
    struct percpu_block *b = (struct percpu_block *)c;
    uint64_t tss = (uint64_t)&c->tss;
    uint32_t slot = (SEL_TSS0 >> 3) + 2 * c->index;
    uint16_t sel = (uint16_t)(SEL_TSS0 + 16 * c->index);
    struct desc_ptr gp = { (uint16_t)(SEL_TSS0 + 16 * MAX_CPUS - 1), (uint64_t)gdt };
    struct desc_ptr ip = { sizeof(idt) - 1, (uint64_t)idt };

    c->tss.rsp0 = (uint64_t)(b->irq_stack + IRQ_STACK_SIZE);
    c->tss.iomap_base = sizeof(struct tss64);
    gdt[slot] = (sizeof(struct tss64) - 1) | (tss & 0xffffff) << 16 | 0x89ull << 40 |
                ((tss >> 24) & 0xff) << 56;
    gdt[slot + 1] = tss >> 32;
    __asm__ volatile("lgdt %0" : : "m"(gp));
    __asm__ volatile("ltr %0" : : "r"(sel));
    __asm__ volatile("lidt %0" : : "m"(ip));
}

static const char *const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?",   "#TS",
    "#NP", "#SS", "#GP", "#PF", "?",   "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

static void note_delivery(struct cpu *c, struct irq_frame *f)
{
    struct percpu_block *b = (struct percpu_block *)c;
    uint64_t sp = (uint64_t)f;

    if (c->irq_count++ != 2) /* keep one sample, past start-up */
        return;
    if (c->vif) {
        c->irq_vif0 = c->vif[0];
        c->irq_vif1 = c->vif[1];
    }
    c->irq_frame_if = (f->rflags >> 9) & 1;
    c->irq_on_rsp0 = sp >= (uint64_t)b->irq_stack && sp < (uint64_t)b->irq_stack + IRQ_STACK_SIZE;
}

void isr_dispatch(struct irq_frame *f)
{
    struct cpu *c = this_cpu();

    if (f->vector == 13 && c->gp_skip) {
        f->rip += 2; /* skip the probing wrmsr/rdmsr */
        c->gp_hit = 1;
        return;
    }
    if (f->vector < 32) {
        uint64_t cr2;

        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        serial_printf("exception %s (%lu) cpu %u rip 0x%lx err 0x%lx cr2 0x%lx rsp 0x%lx\n",
                      exc_names[f->vector] ? exc_names[f->vector] : "?", f->vector, c->index,
                      f->rip, f->error, cr2, f->rsp);
        halt_forever();
    }
    if (f->vector == TIMER_VECTOR) {
        note_delivery(c, f);
        apic_timer_irq();
    } else if (f->vector != SPURIOUS_VECTOR) {
        unexpected_irqs++;
        apic_eoi();
    }
    pvm_irq_exit(f);
}
