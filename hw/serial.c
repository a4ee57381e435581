/* serial.c: 16550A UART. Transmit is immediate (THR empty at once); receive
 * has the 16-byte FIFO, fed from the character back-end on the main loop. */
#include <string.h>

#include "tern/chardev.h"
#include "tern/ioport.h"
#include "tern/serial.h"
#include "tern/vmstate.h"

#define UART_FIFO_SIZE 16

enum {
    UART_RBR_THR = 0,
    UART_IER = 1,
    UART_IIR_FCR = 2,
    UART_LCR = 3,
    UART_MCR = 4,
    UART_LSR = 5,
    UART_MSR = 6,
    UART_SCR = 7,
};
#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB 0x80
#define MCR_OUT2 0x08
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MSR_CTS_DSR_DCD 0xb0

/* The architectural registers: what migrates. */
struct uart_regs {
    uint8_t ier, fcr, lcr, mcr, scr, dll, dlm;
    uint8_t thr_pending; /* THR-empty interrupt latched, until IIR read or THR write */
    uint8_t rx_count, rx_head;
    uint8_t rx_fifo[UART_FIFO_SIZE];
};

struct serial {
    struct uart_regs regs;
    GMutex *lock; /* the I/O bus lock: vCPU accesses and input agree */
    struct chardev *chr;
    unsigned irq;
    serial_irq_fn *raise;
    void *opaque;
    bool irq_level;
};

#define U(f) VMSTATE_U8(struct uart_regs, f)
static const struct vmstate_field uart_fields[] = {
    U(ier),
    U(fcr),
    U(lcr),
    U(mcr),
    U(scr),
    U(dll),
    U(dlm),
    U(thr_pending),
    U(rx_count),
    U(rx_head),
    VMSTATE_U8_ARRAY(struct uart_regs, rx_fifo, UART_FIFO_SIZE),
    VMSTATE_END,
};
#undef U

static bool uart_post_load(void *opaque, GError **errp)
{
    struct uart_regs *r = opaque;
    if (r->rx_count > UART_FIFO_SIZE || r->rx_head >= UART_FIFO_SIZE) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "serial: bad FIFO state");
        return false;
    }
    return true;
}

static const struct vmstate_desc uart_desc = {
    .name = "serial",
    .version = 1,
    .min_version = 1,
    .fields = uart_fields,
    .post_load = uart_post_load,
};

static uint8_t uart_iir(const struct uart_regs *r)
{
    uint8_t fifo = (r->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
    if ((r->ier & IER_RDI) && r->rx_count)
        return IIR_RDI | fifo;
    if ((r->ier & IER_THRI) && r->thr_pending)
        return IIR_THRI | fifo;
    return IIR_NONE | fifo;
}

/* Drive the line when it changes (or always, with (force)). OUT2 gates it, as on a PC. */
static void update_irq(struct serial *s, bool force)
{
    bool level = !(uart_iir(&s->regs) & IIR_NONE) && (s->regs.mcr & MCR_OUT2);
    if ((force || level != s->irq_level) && s->raise)
        s->raise(s->opaque, s->irq, level);
    s->irq_level = level;
}

static uint8_t uart_read(struct serial *s, unsigned reg)
{
    struct uart_regs *r = &s->regs;
    uint8_t v;

    switch (reg) {
    case UART_RBR_THR:
        if (r->lcr & LCR_DLAB)
            return r->dll;
        if (!r->rx_count)
            return 0;
        v = r->rx_fifo[r->rx_head];
        r->rx_head = (r->rx_head + 1) % UART_FIFO_SIZE;
        r->rx_count--;
        return v;
    case UART_IER:
        return (r->lcr & LCR_DLAB) ? r->dlm : r->ier;
    case UART_IIR_FCR:
        v = uart_iir(r);
        if ((v & 0x0f) == IIR_THRI)
            r->thr_pending = 0; /* reading IIR acknowledges THR empty */
        return v;
    case UART_LCR:
        return r->lcr;
    case UART_MCR:
        return r->mcr;
    case UART_LSR:
        return LSR_THRE | LSR_TEMT | (r->rx_count ? LSR_DR : 0);
    case UART_MSR:
        return MSR_CTS_DSR_DCD;
    default:
        return r->scr;
    }
}

static void uart_write(struct serial *s, unsigned reg, uint8_t v)
{
    struct uart_regs *r = &s->regs;

    switch (reg) {
    case UART_RBR_THR:
        if (r->lcr & LCR_DLAB) {
            r->dll = v;
            return;
        }
        if (s->chr)
            chardev_write(s->chr, &v, 1);
        r->thr_pending = 1;
        return;
    case UART_IER:
        if (r->lcr & LCR_DLAB) {
            r->dlm = v;
            return;
        }
        /* Enabling the THR interrupt with THR empty raises it at once. */
        if ((v & IER_THRI) && !(r->ier & IER_THRI))
            r->thr_pending = 1;
        r->ier = v & 0x0f;
        return;
    case UART_IIR_FCR:
        r->fcr = v & 0xc9;
        if (v & FCR_CLEAR_RX)
            r->rx_count = r->rx_head = 0;
        return;
    case UART_LCR:
        r->lcr = v;
        return;
    case UART_MCR:
        r->mcr = v & 0x1f;
        return;
    case UART_SCR:
        r->scr = v;
        return;
    default:
        return; /* LSR and MSR are read-only */
    }
}

static void serial_io(void *opaque, uint64_t offset, uint8_t *data, unsigned size, bool is_write)
{
    struct serial *s = opaque;
    if (is_write)
        uart_write(s, offset, data[0]);
    else
        data[0] = uart_read(s, offset);
    if (size > 1 && !is_write)
        memset(data + 1, 0, size - 1);
    update_irq(s, false);
}

static void serial_input(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial *s = opaque;
    struct uart_regs *r = &s->regs;

    g_mutex_lock(s->lock);
    for (size_t i = 0; i < len && r->rx_count < UART_FIFO_SIZE; i++) {
        r->rx_fifo[(r->rx_head + r->rx_count) % UART_FIFO_SIZE] = buf[i];
        r->rx_count++;
    }
    update_irq(s, false);
    g_mutex_unlock(s->lock);
}

struct serial *serial_create(struct io_bus *bus, uint16_t base, unsigned irq, struct chardev *chr,
                             serial_irq_fn *raise, void *opaque, GError **errp)
{
    struct serial *s = g_new0(struct serial, 1);
    s->lock = &bus->lock;
    s->chr = chr;
    s->irq = irq;
    s->raise = raise;
    s->opaque = opaque;
    serial_reset(s);
    if (!io_bus_register(bus, IO_SPACE_PIO, base, 8, serial_io, s, errp)) {
        g_free(s);
        return NULL;
    }
    if (chr)
        chardev_set_handlers(chr, serial_input, NULL, s);
    return s;
}

void serial_destroy(struct serial *s)
{
    if (s && s->chr)
        chardev_set_handlers(s->chr, NULL, NULL, NULL);
    g_free(s);
}

void serial_reset(struct serial *s)
{
    memset(&s->regs, 0, sizeof(s->regs));
    s->regs.dll = 12; /* 9600 baud, as after power-on */
    s->irq_level = false;
}

void serial_sync_irq(struct serial *s)
{
    g_mutex_lock(s->lock);
    update_irq(s, true);
    g_mutex_unlock(s->lock);
}

const struct vmstate_desc *serial_vmstate(void)
{
    return &uart_desc;
}

struct device serial_device(struct serial *s)
{
    return (struct device){ .id = "serial0", .vmsd = &uart_desc, .state = &s->regs };
}
