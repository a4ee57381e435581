/* chardev.c: placeholder, being written. */
