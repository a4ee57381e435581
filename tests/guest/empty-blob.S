	.section .rodata
	.globl testguest_elf_start
	.globl testguest_elf_end
testguest_elf_start:
testguest_elf_end:
	.section .note.GNU-stack,"",@progbits
