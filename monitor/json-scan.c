/* json-scan.c: QMP's framing lexer: JSON's lexical rules, one byte at a time,
 * so a bracket inside a string is not counted and an escaped quote does not
 * end one; what json-glib would read differently (comments, escapes in
 * single-quoted strings, lone surrogates) is refused here instead. */
#include "tern/json-scan.h"

#include <stdio.h>
#include <string.h>

void json_scan_init(struct json_scan *js, size_t max_depth, size_t max_token)
{
    js->max_depth = max_depth;
    js->max_token = max_token;
    json_scan_reset(js);
}

void json_scan_reset(struct json_scan *js)
{
    js->state = JS_START;
    js->depth = 0;
    js->token_len = 0;
    js->hex_left = 0;
    js->hex = 0;
    js->low = false;
    js->in_value = false;
}

bool json_scan_in_value(const struct json_scan *js)
{
    return js->in_value;
}

/* Numbers and the keywords true, false and null; json-glib reads any run of
 * these as one token, and none of them can start a string or a comment. */
static bool is_literal_char(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '+' || c == '.';
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static enum json_scan_event fail(const char **why, const char *text)
{
    *why = text;
    return JSON_SCAN_ERROR;
}

/* The closing quote of a string or the end of a literal at (depth). */
static enum json_scan_event token_done(struct json_scan *js)
{
    js->state = JS_START;
    if (js->depth == 0) {
        js->in_value = false;
        return JSON_SCAN_END;
    }
    return JSON_SCAN_PART;
}

/* A byte of a double-quoted string in its plain state. */
static enum json_scan_event dq_byte(struct json_scan *js, uint8_t c, const char **why)
{
    if (c == '"') {
        return token_done(js);
    }
    if (c == '\\') {
        js->state = JS_ESCAPE;
        return JSON_SCAN_PART;
    }
    if (c < 0x20) {
        return fail(why, "control character in a string");
    }
    return JSON_SCAN_PART;
}

/* The fourth hex digit of a \u escape is in (js->hex). */
static enum json_scan_event hex_done(struct json_scan *js, const char **why)
{
    unsigned u = js->hex;
    bool low = js->low;

    js->state = JS_STRING;
    js->low = false;
    if (low) {
        return u >= 0xdc00 && u <= 0xdfff ? JSON_SCAN_PART
                                          : fail(why, "invalid UTF-16 surrogate pair");
    }
    if (u >= 0xd800 && u <= 0xdbff) {
        js->state = JS_LOW_SLASH;
        return JSON_SCAN_PART;
    }
    if (u >= 0xdc00 && u <= 0xdfff) {
        return fail(why, "lone UTF-16 low surrogate");
    }
    if (u == 0) {
        return fail(why, "\\u0000 is not supported");
    }
    return JSON_SCAN_PART;
}

static enum json_scan_event string_state_byte(struct json_scan *js, uint8_t c, const char **why)
{
    enum json_scan_event ev;
    int h;

    switch (js->state) {
    case JS_STRING:
        return dq_byte(js, c, why);
    case JS_STRING_SQ:
        /* json-glib takes no escapes in '...', QEMU does: refuse the ambiguity. */
        if (c == '\'') {
            return token_done(js);
        }
        if (c == '\\') {
            return fail(why, "backslash in a single-quoted string");
        }
        return c < 0x20 ? fail(why, "control character in a string") : JSON_SCAN_PART;
    case JS_ESCAPE:
        js->state = JS_STRING;
        if (c == 'u') {
            js->state = JS_HEX;
            js->hex_left = 4;
            js->hex = 0;
            return JSON_SCAN_PART;
        }
        if (c && strchr("\"\\/bfnrt'", c)) {
            return JSON_SCAN_PART;
        }
        return fail(why, "invalid escape sequence in a string");
    case JS_HEX:
        h = hex_value(c);
        if (h < 0) {
            js->state = JS_STRING;
            js->low = false;
            ev = dq_byte(js, c, why);
            (void)ev;
            return fail(why, "invalid \\u escape in a string");
        }
        js->hex = js->hex * 16 + (unsigned)h;
        return --js->hex_left ? JSON_SCAN_PART : hex_done(js, why);
    case JS_LOW_SLASH:
        if (c == '\\') {
            js->state = JS_LOW_U;
            return JSON_SCAN_PART;
        }
        js->state = JS_STRING;
        ev = dq_byte(js, c, why);
        (void)ev;
        return fail(why, "lone UTF-16 high surrogate");
    case JS_LOW_U:
        js->state = JS_STRING;
        if (c == 'u') {
            js->state = JS_HEX;
            js->hex_left = 4;
            js->hex = 0;
            js->low = true;
            return JSON_SCAN_PART;
        }
        return fail(why, "lone UTF-16 high surrogate");
    default:
        return fail(why, "internal error");
    }
}

static enum json_scan_event string_byte(struct json_scan *js, uint8_t c, const char **why)
{
    enum json_scan_event ev = string_state_byte(js, c, why);

    /* Reported once; the string is still followed to its end. */
    if (++js->token_len == js->max_token + 1) {
        return fail(why, "token too long");
    }
    return ev;
}

static enum json_scan_event stray(struct json_scan *js, uint8_t c, const char **why)
{
    if (c >= 0x20 && c < 0x7f) {
        snprintf(js->why_buf, sizeof(js->why_buf), "stray '%c'", c);
    } else {
        snprintf(js->why_buf, sizeof(js->why_buf), "stray byte 0x%02x", c);
    }
    return fail(why, js->why_buf);
}

/* What ends a literal: whitespace, punctuation, a quote. */
static bool is_delimiter(uint8_t c)
{
    return c && strchr(" \t\r\n{}[],:\"'", c);
}

static enum json_scan_event start_byte(struct json_scan *js, uint8_t c, const char **why)
{
    switch (c) {
    case ' ':
    case '\t':
    case '\r':
    case '\n':
        return js->depth ? JSON_SCAN_PART : JSON_SCAN_SKIP;
    case '{':
    case '[':
        js->in_value = true;
        if (++js->depth > js->max_depth) {
            return fail(why, "too many nested levels");
        }
        return JSON_SCAN_PART;
    case '}':
    case ']':
        if (js->depth == 0) {
            return fail(why, c == '}' ? "unexpected '}'" : "unexpected ']'");
        }
        if (--js->depth == 0) {
            js->in_value = false;
            return JSON_SCAN_END;
        }
        return JSON_SCAN_PART;
    case ',':
    case ':':
        if (js->depth == 0) {
            return fail(why, c == ',' ? "unexpected ','" : "unexpected ':'");
        }
        return JSON_SCAN_PART;
    case '"':
    case '\'':
        js->state = c == '"' ? JS_STRING : JS_STRING_SQ;
        js->token_len = 1;
        js->in_value = true;
        return JSON_SCAN_PART;
    default:
        break;
    }
    if (is_literal_char(c)) {
        js->state = JS_LITERAL;
        js->token_len = 1;
        js->in_value = true;
        return JSON_SCAN_PART;
    }
    /* Anything else ('/' of a comment json-glib would skip, '#', a control
     * byte, non-ASCII outside a string) is refused. At the top level it opens
     * a bad literal, discarded up to the next delimiter. */
    if (js->depth == 0) {
        js->state = JS_LITERAL;
        js->token_len = 1;
        js->in_value = true;
    }
    return stray(js, c, why);
}

enum json_scan_event json_scan_byte(struct json_scan *js, uint8_t c, const char **why)
{
    switch (js->state) {
    case JS_START:
        return start_byte(js, c, why);
    case JS_LITERAL:
        if (is_delimiter(c)) {
            js->state = JS_START;
            if (js->depth == 0) {
                js->in_value = false;
                return JSON_SCAN_BEFORE;
            }
            return start_byte(js, c, why);
        }
        if (++js->token_len == js->max_token + 1) {
            return fail(why, "token too long");
        }
        return is_literal_char(c) ? JSON_SCAN_PART : stray(js, c, why);
    default:
        return string_byte(js, c, why);
    }
}
