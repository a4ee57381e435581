/* x86-placeholder.c: keeps the emu libraries non-empty while their sources are written. */
int emu_placeholder_unused;
