#!/usr/bin/env python3
"""Randomised fault-injection soak: migration trials with a random fault at a
random point, until the time is up. `make soak` runs it (SOAK_SECONDS, 300 by
default).

    python3 tests/functional/soak.py --tern build/tern --seconds 300 [--seed N]

Each trial draws one of:
  - a proxy action (delay, cut, truncate, corrupt, duplicate) at a phase
    (setup, pass1, pass3, final, pause; delay or cut of RESUMED on the return
    path) or at a random octet of the stream, with random hold times, chunk
    lengths and positions inside the record;
  - SIGKILL of the target or of the source, or migrate_cancel, while the
    proxy holds the stream at a phase, or at a random time after `migrate`.

and judges it with test_faults.settle(), by the rule "never run the guest
twice": never both running; exactly one copy runs, or -- when END went out and
neither RESUMED nor ERROR came back -- the source holds the guest paused "in
doubt" (and stays paused if the target runs; otherwise `cont` on it must bring
the guest back healthy, and it must migrate again). The VM is lost only when
the test killed the source before END was delivered (or killed the target
after it took over). The survivor ticks on with errors 0, and a failed target
exits 1 naming the record. The same seed gives the same sequence of trials.
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faultproxy import ACTIONS                          # noqa: E402
from ternlib import require_accel                      # noqa: E402
import test_faults                                      # noqa: E402

FWD_PHASES = ("setup", "pass1", "pass3", "final", "pause")
HOLD_PHASES = {"kill-target": ("setup", "pass1", "pass3", "final", "pause"),
               "kill-source": ("setup", "pass1", "pass3", "final", "pause", "after"),
               "cancel": ("setup", "pass1", "pass3", "final", "pause")}
STREAM_OCTETS = 12 << 20        # a ws=8, x-passes 3, 256M stream is ~9-17 MiB


def draw(rng):
    """One trial's description: (kind, phase, action, keyword arguments)."""
    r = rng.random()
    if r < 0.65:
        if rng.random() < 0.15:                         # the return path
            action = rng.choice(("cut", "delay"))
            return "proxy", "after", action, {"ms": rng.randint(0, 3000)}
        action = rng.choice(ACTIONS)
        kw = {}
        if action == "delay":
            kw["ms"] = rng.randint(0, 3000)
        elif action == "truncate":
            kw["ms"] = rng.randint(100, 2000)
        elif action == "duplicate":
            kw["length"] = rng.choice((rng.randint(1, 64), rng.randint(64, 65536), None))
        if rng.random() < 0.3:
            # A third in the image header and the first records (setup).
            kw["offset"] = rng.randrange(0, 512 if rng.random() < 0.33 else STREAM_OCTETS)
            if kw.get("length", 0) is None:
                kw["length"] = 4096
            return "proxy", None, action, kw
        kw["fraction"] = round(rng.random(), 3)
        phase = rng.choice(FWD_PHASES if kw.get("length", 0) is not None else ("pass1",))
        return "proxy", phase, action, kw
    kind = rng.choice(("kill-target", "kill-source", "cancel"))
    if rng.random() < 0.3:
        return kind, None, None, {"act_after": round(rng.uniform(0.0, 1.5), 2)}
    return kind, rng.choice(HOLD_PHASES[kind]), None, {"ms": rng.randint(1500, 3000)}


KEPT, TOOK_OVER = test_faults.KEPT, test_faults.TOOK_OVER
DOUBT_CONT, DOUBT_TARGET_RUNS = test_faults.DOUBT_CONT, test_faults.DOUBT_TARGET_RUNS


def judge(res, kind, phase, action, kw):
    """The outcomes allowed for this draw (a set), beyond settle()'s invariant.

    Where a random time or offset decides whether END had left the source when
    the fault struck, both "source kept" and "in doubt" are allowed here, and
    settle() holds the trial to what the proxy saw: END read from the source
    and no ERROR back means in doubt; the target's ERROR delivered means the
    source resumes; in doubt needs the source to have reached `device`. (END
    can also sit in the loopback socket buffers, unseen by the proxy, when the
    connection breaks: then either answer is one the source could give.)"""
    completed = res.src_info is not None and res.src_info.get("status") == "completed"
    if kw.get("offset") is not None:
        f = res.fault
        if not f.fired.is_set() or action == "delay":
            return {TOOK_OVER}
        if action == "duplicate":
            # A chunk that happens to be whole records is legal.
            return {KEPT, DOUBT_CONT, TOOK_OVER}
        return {KEPT, DOUBT_CONT}
    if kw.get("act_after") is not None:
        if kind == "kill-source":
            return {TOOK_OVER, "lost with source"}              # settle() checks END
        if kind == "kill-target":
            # Killed after the source heard RESUMED: the target was the runner.
            return {"lost with target"} if completed else {KEPT, DOUBT_CONT}
        reply = res.cancel_reply or {}
        if "error" in reply:
            return {TOOK_OVER}                                   # too late: refused
        if res.status_before_cancel in ("setup", "active"):
            return {KEPT}                                        # accepted: must cancel
        return {KEPT, TOOK_OVER}                                 # device, or after the end
    if kind == "kill-source" and phase == "final":
        return {"lost with source", TOOK_OVER}
    if kind == "proxy" and action == "duplicate" and (kw.get("length") is None
                                                      or res.fault.short):
        # A whole record twice is legal; a copy that follows END is never read.
        return {TOOK_OVER}
    if kind == "proxy" and action == "truncate" and phase in ("pass1", "pass3", "final"):
        # Whether the source gets END out before the connection is cut
        # (after a random 100-2000 ms) is a matter of timing.
        return {KEPT, DOUBT_CONT}
    return test_faults.expected(kind, phase or "", action, kw.get("length", 4096))


def short(kind, phase, action, kw):
    what = action if kind == "proxy" else kind
    if kind == "proxy" and action in ("delay", "truncate"):
        what += " %dms" % kw["ms"]
    elif kind == "proxy" and action == "duplicate":
        what += " %s" % ("record" if kw.get("length") is None else "%dB" % kw["length"])
    elif kind != "proxy" and "ms" in kw:
        what += " (held %dms)" % kw["ms"]
    if kw.get("offset") is not None:
        where = "octet %d" % kw["offset"]
    elif kw.get("act_after") is not None:
        where = "+%.2fs" % kw["act_after"]
    else:
        where = phase + (" RESUMED" if phase == "after" else "")
        if "fraction" in kw and kind == "proxy":
            where += " @%.2f" % kw["fraction"]
    return what, where


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tern", required=True, help="path to the tern binary")
    ap.add_argument("--seconds", type=float, default=300, help="run trials this long")
    ap.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    ap.add_argument("--trials", type=int, default=0, help="stop after this many (0: no limit)")
    ap.add_argument("--verbose", action="store_true", help="log proxy events and failures")
    args = ap.parse_args()
    require_accel()
    binary = os.path.abspath(args.tern)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    print("soak: seed %d, %.0f s, %s (reproduce: --seed %d)" % (seed, args.seconds, binary, seed),
          flush=True)
    fmt = "%4s  %-26s %-20s %-26s %-9s %6s  %-4s"
    print(fmt % ("#", "action", "phase/offset", "outcome", "invariant", "errors", "lost"))
    t_end = time.time() + args.seconds
    passed = failed = 0
    counts = {}
    n = 0
    while time.time() < t_end and (not args.trials or n < args.trials):
        n += 1
        kind, phase, action, kw = draw(rng)
        what, where = short(kind, phase, action, kw)
        t0 = time.time()
        try:
            res = test_faults.trial(binary, kind, phase, action, verbose=args.verbose, **kw)
            allowed = judge(res, kind, phase, action, kw)
            res.check(res.outcome in allowed, "outcome %r, allowed %s" % (
                res.outcome, " or ".join(sorted(allowed))))
            outcome, ok, errors, lost = res.outcome, res.ok, res.errors, res.lost
            if kind == "cancel" and res.cancel_reply and "error" in res.cancel_reply:
                outcome = "refused, " + outcome
            problems = res.problems
        except Exception as e:          # a harness failure counts as a failed trial
            outcome, ok, errors, lost, problems = "harness error", False, 0, False, [
                "%s: %s" % (type(e).__name__, e)]
            res = None
        counts[outcome] = counts.get(outcome, 0) + 1
        passed += ok
        failed += not ok
        print(fmt % (n, what, where, outcome, "ok" if ok else "FAILED", errors,
                     "yes" if lost else "no") + "  %.1fs" % (time.time() - t0), flush=True)
        for p in problems:
            print("        problem: %s" % p, flush=True)
        if not ok and res is not None and res.logs:
            print("        " + res.logs.rstrip().replace("\n", "\n        "), flush=True)
    print("outcomes: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    print("seed %d" % seed)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
