/* ioport.c: placeholder, being written. */
