/* power.c: placeholder, being written. */
