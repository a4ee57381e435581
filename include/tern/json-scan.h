/* json-scan.h: QMP's framing lexer: splits a client's byte stream into JSON
 * values by JSON's real lexical rules, so that the nesting depth and token
 * sizes it counts are the ones json-glib will see, and rejects whatever it
 * cannot classify before json-glib does. */
#ifndef TERN_JSON_SCAN_H
#define TERN_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one byte did. */
enum json_scan_event {
    JSON_SCAN_SKIP,   /* whitespace between values: not part of any */
    JSON_SCAN_PART,   /* part of the current value */
    JSON_SCAN_END,    /* the last byte of the current value */
    JSON_SCAN_BEFORE, /* the current value (a bare literal) ended just before
                       * this byte: take the value, then scan the byte again */
    JSON_SCAN_ERROR,  /* a lexical or limit error, described by (why); if a
                       * value is still open (json_scan_in_value()), the rest of
                       * it follows, best effort, and must be discarded */
};

enum json_scan_state {
    JS_START,     /* between tokens */
    JS_LITERAL,   /* a number or keyword */
    JS_STRING,    /* inside "..." */
    JS_STRING_SQ, /* inside '...' (QEMU's extension; json-glib takes it) */
    JS_ESCAPE,    /* after a backslash in "..." */
    JS_HEX,       /* inside \uXXXX: (hex_left) digits to go */
    JS_LOW_SLASH, /* after a high surrogate: expecting '\' */
    JS_LOW_U,     /* ... then 'u' */
};

struct json_scan {
    size_t max_depth; /* deepest nesting of [ and { accepted */
    size_t max_token; /* longest string or literal accepted, quotes included */

    enum json_scan_state state;
    size_t depth;     /* open [ and {; may pass max_depth while discarding */
    size_t token_len; /* bytes of the current string or literal so far */
    unsigned hex_left;
    unsigned hex;     /* the \u code unit being read */
    bool low;         /* reading the low half of a surrogate pair */
    bool in_value;    /* a top-level value has started and not ended */
    char why_buf[48]; /* the description of a stray byte */
};

/* A scanner in its start state with the given limits. */
void json_scan_init(struct json_scan *js, size_t max_depth, size_t max_token);
/* Back to the start state (limits kept). */
void json_scan_reset(struct json_scan *js);
/* Classify byte (c); on JSON_SCAN_ERROR, (*why) is a static description. */
enum json_scan_event json_scan_byte(struct json_scan *js, uint8_t c, const char **why);
/* True while a top-level value is open (bytes of it have been seen). */
bool json_scan_in_value(const struct json_scan *js);

#endif
