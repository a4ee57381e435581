/* hmp.h: the human monitor: line-oriented sessions over a chardev, or captured
 * into a string for QMP's human-monitor-command. */
#ifndef TERN_HMP_H
#define TERN_HMP_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>

struct machine;
struct hmp_session;

/* Where a session's text goes; (text) uses "\r\n" line ends, like QEMU. */
typedef void hmp_output_fn(void *opaque, const char *text, size_t len);

#define HMP_PROMPT "(tern) "
#define HMP_MAX_LINE 4096

/* A session on (m) that writes through (out) with (opaque). An (interactive)
 * session prints a banner and the prompt now and after every command. */
struct hmp_session *hmp_session_new(struct machine *m, hmp_output_fn *out, void *opaque,
                                    bool interactive);
/* Close (hs): no more output; the memory goes with the last reference. */
void hmp_session_free(struct hmp_session *hs);
/* Extra references for code that keeps (hs) across main-loop iterations
 * (a suspended command); check hmp_session_is_closed() before using it. */
struct hmp_session *hmp_session_ref(struct hmp_session *hs);
void hmp_session_unref(struct hmp_session *hs);
bool hmp_session_is_closed(const struct hmp_session *hs);

/* Feed (len) bytes of input (buf): complete lines ("\n", "\r" or "\r\n") run
 * as commands, backspace/DEL edit the pending line, over-long lines are refused. */
void hmp_session_feed(struct hmp_session *hs, const void *buf, size_t len);
/* Run one command (line) without printing a prompt. */
void hmp_session_execute(struct hmp_session *hs, const char *line);
/* Print (fmt) to (hs); "\n" becomes "\r\n". */
void hmp_session_printf(struct hmp_session *hs, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
void hmp_session_puts(struct hmp_session *hs, const char *text);

/* Hold further input of (hs) (a blocking command such as "migrate" without -d):
 * lines queue up and no prompt is printed until hmp_session_resume(). Returns
 * false when (hs) cannot block (not interactive: human-monitor-command); the
 * command should then carry on detached. */
bool hmp_session_suspend(struct hmp_session *hs);
void hmp_session_resume(struct hmp_session *hs);
/* True when (hs) is the console on a terminal (live progress lines). */
bool hmp_session_is_tty(const struct hmp_session *hs);

/* Register HMP's own commands (help, QMP's human-monitor-command), once, at
 * start-up (vmm/main.c), before any session runs a line. */
void hmp_commands_register(void);
/* Run (line) on (m) and return everything it printed ("\r\n" line ends). */
char *hmp_execute_capture(struct machine *m, const char *line);

/* The -monitor option: an HMP console on chardev (spec) ("stdio",
 * "unix:PATH,server,nowait"); each socket client gets a fresh session. */
bool hmp_monitor_start(struct machine *m, const char *spec, GError **errp);
/* Close every monitor started by hmp_monitor_start() (before exit). */
void hmp_monitor_stop_all(void);

#endif
