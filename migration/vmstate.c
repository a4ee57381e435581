/* vmstate.c: placeholder, being written. */
