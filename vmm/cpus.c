/* cpus.c: placeholder, being written. */
