/* kvm-state.c: placeholder, being written. */
