/* qmp.c: placeholder, being written. */
