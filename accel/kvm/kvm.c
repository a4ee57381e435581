/* kvm.c: placeholder, being written. */
