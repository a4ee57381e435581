/* bitmap.c: placeholder, being written. */
