/* cmdline.c: parse "key=value" words of the kernel command line into the workload parameters. */
#include "guest.h"

static bool word_is(const char *w, size_t n, const char *key)
{
    size_t k = 0;

    while (key[k] && k < n && w[k] == key[k])
        k++;
    return !key[k] && k == n;
}

void cmdline_parse(const char *s, struct params *p)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        { "ws", offsetof(struct params, ws_mib) },
        { "rate", offsetof(struct params, rate_mib) },
        { "fill", offsetof(struct params, fill_mib) },
        { "tick_ms", offsetof(struct params, tick_ms) },
        { "timer_hz", offsetof(struct params, timer_hz) },
        { "cpus", offsetof(struct params, cpus) },
        { "exit_after", offsetof(struct params, exit_after) },
        { "debug", offsetof(struct params, debug) },
        { "exitbench", offsetof(struct params, exitbench) },
        { "locktest", offsetof(struct params, locktest) },
        { "wsdelta", offsetof(struct params, wsdelta) },
    };

    p->ws_mib = 0;
    p->rate_mib = 0;
    p->fill_mib = 0;
    p->tick_ms = 1000;
    p->timer_hz = 100;
    p->cpus = 0;
    p->exit_after = 0;
    p->debug = 0;
    p->exitbench = 0;
    p->locktest = 0;
    p->wsdelta = 0;
    while (*s) {
        const char *w = s, *eq = NULL;
        uint64_t v = 0;
        bool ok = false;

        while (*s && *s != ' ')
            s++;
        for (const char *q = w; q < s; q++)
            if (*q == '=' && !eq)
                eq = q;
        if (eq) {
            ok = eq + 1 < s;
            for (const char *q = eq + 1; q < s; q++) {
                if (*q < '0' || *q > '9') {
                    ok = false;
                    break;
                }
                v = v * 10 + (uint64_t)(*q - '0');
            }
        }
        for (size_t i = 0; ok && i < sizeof(keys) / sizeof(keys[0]); i++)
            if (word_is(w, (size_t)(eq - w), keys[i].key))
                *(uint64_t *)((uint8_t *)p + keys[i].off) = v;
        while (*s == ' ')
            s++;
    }
    if (p->tick_ms == 0)
        p->tick_ms = 1000;
}
