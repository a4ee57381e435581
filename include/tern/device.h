/* device.h: what the machine knows of every device: a name and its migratable state. */
#ifndef TERN_DEVICE_H
#define TERN_DEVICE_H

struct vmstate_desc;

struct device {
    const char *id;                  /* unique; names the DEVICE_STATE record */
    const struct vmstate_desc *vmsd; /* NULL: nothing to migrate */
    void *state;                     /* the object (vmsd) describes */
};

#endif
