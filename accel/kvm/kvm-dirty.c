/* kvm-dirty.c: placeholder, being written. */
