/* pvm.c: kvm_pvm detection (the vIF MSR) and interrupt enable/disable/idle on kvm_pvm and hardware virt. */
#include "guest.h"

/*
 * Measured on kvm_pvm (debug=2 runs pvm_selftest):
 * - the guest may write the bare page address or address | 0x400; its rdmsr
 *   returns the bare address, the VMM's KVM_GET_MSRS returns address | 0x400;
 * - while byte 0 is 0 nothing is delivered and byte 1 becomes 1; the write of
 *   1 to byte 0 does not trap, so the pending interrupt waits for
 *   "out %al, $0x80" (or the next exit), which delivers it at once and clears
 *   byte 1;
 * - delivery works like hardware IF: the frame's RFLAGS.IF holds byte 0 (1),
 *   byte 0 is 0 inside the handler, and iretq sets byte 0 from the popped
 *   RFLAGS.IF (returning with IF = 0 leaves byte 0 at 0). So handlers need
 *   nothing special. The frame lands on the current stack (no switch to RSP0);
 * - pushfq inside the guest always shows IF = 1; KVM_GET_REGS shows RFLAGS.IF
 *   equal to byte 0;
 * - hlt with byte 0 = 1 sleeps until the next interrupt.
 */
#define VIF_ENABLED 0 /* byte 0: the guest's virtual interrupt flag */
#define VIF_PENDING 1 /* byte 1: set by the hypervisor while an interrupt waits */

bool pvm;

/* Register this CPU's vIF page. A #GP (hardware KVM refuses the MSR) or a
 * read-back that does not hold the address (TCG ignores unknown MSRs) means
 * no kvm_pvm. Interrupts stay disabled: byte 0 is 0. */
bool pvm_probe(struct cpu *c)
{
    struct percpu_block *b = (struct percpu_block *)c;
    uint64_t gpa = (uint64_t)b->vif_page, back;

    memset(b->vif_page, 0, PAGE_SIZE);
    c->gp_hit = 0;
    c->gp_skip = 1;
    barrier();
    wrmsr(MSR_PVM_VIF, gpa); /* bit 10 optional: read back without it */
    back = c->gp_hit ? 0 : rdmsr(MSR_PVM_VIF);
    barrier();
    c->gp_skip = 0;
    if (c->gp_hit || (back & ~0xfffull) != gpa)
        return false;
    c->vif = b->vif_page;
    return true;
}

void irq_enable(void)
{
    struct cpu *c = this_cpu();

    if (!c->vif) {
        __asm__ volatile("sti" ::: "memory");
        return;
    }
    barrier();
    c->vif[VIF_ENABLED] = 1;
    barrier();
    if (c->vif[VIF_PENDING])
        __asm__ volatile("outb %%al, $0x80" : : "a"(0) : "memory");
}

void irq_disable(void)
{
    struct cpu *c = this_cpu();

    if (!c->vif) {
        __asm__ volatile("cli" ::: "memory");
        return;
    }
    barrier();
    c->vif[VIF_ENABLED] = 0;
    barrier();
}

/* Wait for the next interrupt (the caller runs with interrupts enabled). */
void cpu_idle(void)
{
    struct cpu *c = this_cpu();

    if (!c->vif) {
        __asm__ volatile("sti; hlt" ::: "memory");
        return;
    }
    if (c->vif[VIF_PENDING]) {
        __asm__ volatile("outb %%al, $0x80" : : "a"(0) : "memory");
        return;
    }
    __asm__ volatile("hlt" ::: "memory");
}

/* Called last in every interrupt handler, before iretq: nothing to restore
 * (iretq restores the vIF byte); only pvm_selftest's IF = 0 return. */
void pvm_irq_exit(struct irq_frame *f)
{
    struct cpu *c = this_cpu();

    if (c->probe_clear_if) {
        c->probe_clear_if = 0;
        f->rflags &= ~0x200ull;
    }
}

static uint64_t read_flags(void)
{
    uint64_t f;

    __asm__ volatile("pushfq; popq %0" : "=r"(f) : : "memory");
    return f;
}

/* debug=2: how does kvm_pvm deliver interrupts against the vIF byte? Needs the timer. */
void pvm_selftest(void)
{
    struct cpu *c = this_cpu();
    uint64_t n0, n1, n2, n3, n4, f_off, f_on, t0, t_hlt;
    uint8_t pend, pend_after, vif_after_if0, vif_after_restore;

    if (!c->vif || !params.timer_hz)
        return;
    irq_disable();
    n0 = c->irq_count;
    f_off = read_flags();
    tsc_delay_us(3 * 1000000 / params.timer_hz);
    pend = c->vif[VIF_PENDING];
    n1 = c->irq_count;
    c->vif[VIF_ENABLED] = 1;
    barrier();
    if (c->vif[VIF_PENDING])
        __asm__ volatile("outb %%al, $0x80" : : "a"(0) : "memory");
    n2 = c->irq_count;
    pend_after = c->vif[VIF_PENDING];
    f_on = read_flags();

    c->probe_clear_if = 1; /* next handler returns with RFLAGS.IF = 0 */
    tsc_delay_us(3 * 1000000 / params.timer_hz);
    vif_after_if0 = c->vif[VIF_ENABLED];
    n3 = c->irq_count;
    irq_enable();
    vif_after_restore = c->vif[VIF_ENABLED];

    t0 = rdtsc();
    cpu_idle();
    t_hlt = rdtsc() - t0;
    n4 = c->irq_count;
    serial_printf("pvm-probe: msr 0x%lx disabled: irqs %lu pending %u rflags 0x%lx | "
                  "enabled+kick: irqs %lu pending %u rflags 0x%lx | iret IF=0: vif0 %u irqs %lu "
                  "| re-enabled vif0 %u | hlt %lu us irqs %lu\n",
                  rdmsr(MSR_PVM_VIF), n1 - n0, pend, f_off, n2 - n0, pend_after, f_on,
                  vif_after_if0, n3 - n0, vif_after_restore, tsc_to_us(t_hlt), n4 - n0);
}
