/* commands.c: placeholder, being written. */
