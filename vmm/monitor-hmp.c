/* monitor-hmp.c: placeholder, being written. */
