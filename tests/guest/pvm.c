/* pvm.c: kvm_pvm detection (the vIF MSR) and interrupt enable/disable/idle on kvm_pvm and hardware virt. */
#include "guest.h"

#define VIF_ENABLED 0       /* byte 0: the guest's virtual interrupt flag */
#define VIF_PENDING 1       /* byte 1: set by the hypervisor while an interrupt waits */

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
    wrmsr(MSR_PVM_VIF, gpa);
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

/* Called last in every interrupt handler, before iretq. */
void pvm_irq_exit(struct irq_frame *f)
{
    (void)f;
}
