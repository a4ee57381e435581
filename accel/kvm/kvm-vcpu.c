/* kvm-vcpu.c: placeholder, being written. */
