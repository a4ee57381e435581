/* blob.S: embeds the test guest ELF into tern (TESTGUEST_ELF is its path, set by meson). */
    .section .rodata
    .balign 16
    .globl testguest_elf_start
    .globl testguest_elf_end
testguest_elf_start:
    .incbin TESTGUEST_ELF
testguest_elf_end:
    .section .note.GNU-stack, "", @progbits
