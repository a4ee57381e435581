/* machine.c: placeholder, being written. */
