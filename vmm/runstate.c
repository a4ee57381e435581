/* runstate.c: placeholder, being written. */
