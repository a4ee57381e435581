/* testguest.h: the bundled test guest (tests/guest/), embedded in tern as a PVH ELF. */
#ifndef TERN_TESTGUEST_H
#define TERN_TESTGUEST_H

extern const unsigned char testguest_elf_start[];
extern const unsigned char testguest_elf_end[];

#endif
