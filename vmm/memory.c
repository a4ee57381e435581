/* memory.c: placeholder, being written. */
