#!/usr/bin/env python3
"""Fault injection: a migration that goes wrong at a chosen point must leave
exactly one copy of the guest running, healthy and continuing where it was.

Every trial runs a source and a target on 127.0.0.1 with a FaultProxy between
them (faultproxy.py) and does one thing at one phase of the migration:

  phases   header inside the 32-octet image header
           setup  inside VM_CONFIG (the target has not said READY yet)
           pass1  inside the first PAGE_DATA (first live pass)
           pass3  right after the 2nd ITERATION_END (a later live pass)
           final  right after the last live ITERATION_END (guest paused, final
                  pages; END not sent yet)
           pause  inside VCPU_STATE (guest paused, state on the wire)
           end    at the start of END (committed by the source, not delivered)
           after  on the return path, at RESUMED (END delivered)
  actions  the proxy's delay, cut, truncate, corrupt, duplicate;
           kill the target or the source (SIGKILL); migrate_cancel

Windows are made deterministic by holding the stream in the proxy (a delay)
at the phase's trigger and acting while it is held, and by x-passes 3.

The rule is "never run the guest twice" (docs/migration.md, "What happens on
failure"). The judge (settle()) checks, for every trial:
  - never both running: at the end exactly one of {source running, target
    running}, or, in the in-doubt case below, the target does not run and
    the source holds the guest paused;
  - in doubt: once the source has sent END and then hears neither RESUMED
    nor ERROR, it stays paused (query-status "paused", not "postmigrate") and
    reports failed with "lost contact with the target after it was sent the
    complete state (...)". If the target runs (its RESUMED was lost) the
    source must stay paused; if the target does not run, `cont` on the source
    must bring the guest back where it was, ticking with errors 0;
  - END decides: when the proxy read END whole from the source, the source may
    resume its guest only if the target's ERROR reached it; otherwise it
    completes or is in doubt. A source in doubt must have reached `device`
    and must not have been sent the target's ERROR;
  - when the test killed the source, the target runs if and only if the
    proxy had delivered END to it, and otherwise exits 1 without a tick;
  - the guest that runs keeps ticking with errors 0, and on the target it
    continues the source's tick numbers;
  - a failed target exits with status 1 and prints
    "tern: incoming migration failed: ..." naming the record; but a stream
    that fails in its header or VM_CONFIG (before the target chose it as its
    source) is dropped: the target prints "tern: incoming migration: dropped
    connection from ADDR: ..." naming the record, and waits for another
    source (test_strangers.py);
  - a source that keeps its guest reports failed/cancelled with error-desc
    and is running; one that handed over reports completed, postmigrate.
  - a source that kept its guest, or was continued with `cont` after being in
    doubt, then migrates again to a fresh target, successfully.

This module is also the engine of soak.py (randomised trials).
"""
import os
import re
import signal
import sys
import time

import ternlib
from faultproxy import Fault, FaultProxy, Trigger
from ternlib import (SLOW, Lab, QMPError, TICK_RE, last_tick, migration_statuses, run_tests,
                     start_migration, tcp_uri, wait_migration, quiet_for)

MEM = "256M"
TICK_MS = 100
X_PASSES = 3
HOLD_MS = 2500          # how long the proxy holds the stream while a test acts
# While the stream is held, what the source can still write is its socket send
# buffer plus the proxy's receive buffer and queue. Small proxy buffers keep
# that well under a pass, so a held source stays in the phase however late
# the test acts (the receive buffer would otherwise autotune up to 32 MiB).
HOLD_BUF = 256 << 10
# The record's type is named when its header was read whole ("record 16 at
# offset 9680424: truncated header: ..." cannot name it); a bad image header is
# "stream header: ...".
TARGET_RE = re.compile(r"tern: incoming migration failed: (record \d+( \(\w+\))? at offset \d+"
                       r"|stream header): ")
# A connection dropped while vetted (stream header, VM_CONFIG): the target waits on.
DROPPED_RE = re.compile(r"tern: incoming migration: dropped connection from \S+: ((record \d+"
                        r"( \(\w+\))? at offset \d+|stream header): .*)")
# The source's error-desc when END went out and neither RESUMED nor ERROR came back.
IN_DOUBT_RE = re.compile(r"^lost contact with the target after it was sent the complete state "
                         r"\((?P<why>.+)\): it may be running the guest, so this copy stays "
                         r"paused; 'cont' resumes it if the target is not running$")
# Outcomes of a trial.
KEPT, TOOK_OVER = "source kept", "target took over"
DOUBT_TARGET_RUNS = "in doubt, target runs"     # source paused in doubt; the target runs
DOUBT_CONT = "in doubt, cont"                   # source paused in doubt, target not; cont


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


# ---------------------------------------------------------------------------
# Phases: where in the stream, and the guest/parameters that make it exist.

# The bandwidth of the held live passes: slow enough that the guest rewrites
# its working set while a pass is sent. The software CPU's guest writes its
# pages (SLOW) times slower, so its passes get that much longer.
PASS_BANDWIDTH = 40 * 1000 * 1000 // SLOW

PHASES = {
    "header": dict(trigger=lambda: Trigger.offset(20), status="setup"),
    "setup": dict(trigger=lambda: Trigger.record("VM_CONFIG", where="inside"),
                  status="setup"),
    # A source held in a live pass must still be in it when the test acts (a
    # few ms later), not already past END: the whole stream (~17 MiB) fits in
    # the loopback socket buffers (tcp_rmem autotunes up to 32 MiB), so without
    # max-bandwidth the source can write everything, END included, while the
    # proxy holds the stream -- and then it is rightly in doubt.
    "pass1": dict(trigger=lambda: Trigger.record("PAGE_DATA", where="inside"),
                  status="active", max_bandwidth=PASS_BANDWIDTH),
    # max-bandwidth makes pass 3 last too, and a 16 MiB working set makes it
    # larger than what the source can buffer while it is held (see HOLD_BUF).
    "pass3": dict(trigger=lambda: Trigger.record("ITERATION_END", 2, "after"),
                  status="active", ws=16, max_bandwidth=PASS_BANDWIDTH),
    # The final pass must not fit in the socket buffers and the proxy's queue,
    # so that the source is still sending pages (END not committed) while it is
    # held: a 64 MiB working set rewritten during a bandwidth-limited pass 1.
    "final": dict(trigger=lambda: Trigger.record("ITERATION_END", 1, "after"),
                  status="device", ws=64, x_passes=1, max_bandwidth=PASS_BANDWIDTH),
    "pause": dict(trigger=lambda: Trigger.record("VCPU_STATE", where="inside"),
                  status="device"),
    # The source has committed END (cancel is refused) but it never arrives.
    "end": dict(trigger=lambda: Trigger.record("END"), status="device"),
    "after": dict(trigger=lambda: Trigger.record("RESUMED"), direction="ret",
                  status="device"),
}


class Result:
    """What a trial came to."""

    def __init__(self, name):
        self.name = name
        self.outcome = "?"          # KEPT | TOOK_OVER | DOUBT_* | BOTH RUNNING | ... lost
        self.problems = []          # invariant or semantic violations
        self.errors = 0             # guest errors seen on the survivor
        self.lost = False           # no copy of the guest runs
        self.gap_ms = 0
        self.src_info = None
        self.dst_exit = None
        self.detail = ""
        self.logs = ""
        self.status_before_cancel = None
        self.again = False
        self.in_doubt = False       # the source reported the in-doubt error, paused
        self.end_out = False        # the proxy read END whole from the source
        self.error_delivered = False    # the proxy handed the target's ERROR to the source

    def check(self, cond, msg):
        if not cond:
            self.problems.append(msg)
        return cond

    @property
    def ok(self):
        return not self.problems


def running_status(vm):
    try:
        return vm.qmp.cmd("query-status")["status"]
    except (OSError, ConnectionError, QMPError, ValueError) as e:
        return "unreachable (%s)" % e


def wait_target_settled(dst, timeout=20.0):
    """Until the target exits, or runs (status running/paused after completed), or
    dropped the connection and waits for another source ("waiting")."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not dst.alive():
            return "exited"
        st = running_status(dst)
        if st == "running":
            return st
        if st == "inmigrate" and DROPPED_RE.search(dst.stderr()):
            return "waiting"
        if st.startswith("unreachable") and not dst.alive():
            return "exited"
        time.sleep(0.05)
    return running_status(dst)


def check_ticks(vm, start, last_tick, res, label, follows=None):
    """(vm) prints 3 healthy ticks from serial line (start) on, after (last_tick);
    with (follows), the first of them is exactly the tick after that one."""
    ticks, why = vm.serial.ticks_since(start, alive=vm.alive)
    if not res.check(ticks is not None, "%s runs but does not tick: %s" % (label, why)):
        return False
    res.errors = max(res.errors, max(t["errors"] for t in ticks))
    res.gap_ms = max(res.gap_ms, max(t["max_gap_us"] for t in ticks) // 1000)
    numbers = [t["tick"] for t in ticks]
    ok = res.check(all(t["errors"] == 0 for t in ticks), "%s guest errors: %s" % (label, ticks))
    ok &= res.check(numbers[0] > last_tick["tick"], "%s tick numbers restarted: %d then %s"
                    % (label, last_tick["tick"], numbers))
    ok &= res.check(numbers == list(range(numbers[0], numbers[0] + len(numbers))),
                    "%s ticks not consecutive: %s" % (label, numbers))
    if follows is not None:
        ok &= res.check(numbers[0] == follows["tick"] + 1, "%s does not continue where it "
                        "was: tick %d, then %s" % (label, follows["tick"], numbers))
    return ok


def source_stays_paused(src, res, why, quiet_s=0.5):
    """The source in doubt neither runs nor ticks, for (quiet_s) at least."""
    src.serial.poll()
    start = len(src.serial.lines)

    def ran():
        src.serial.poll()
        ticked = [l for l in src.serial.lines[start:] if TICK_RE.match(l)]
        st = running_status(src)
        return (st, ticked) if st != "paused" or ticked else None
    st, ticked = quiet_for(quiet_s, ran, interval=0.1) or ("paused", [])
    return res.check(st == "paused" and not ticked, "source in doubt (%s) is %s, ticked %s"
                     % (why, st, ticked[:2]))


def cont_in_doubt(src, res):
    """`cont` on a source in doubt whose target does not run: the guest goes on
    exactly where it was, healthy."""
    before = last_tick(src)
    src.serial.poll()
    start = len(src.serial.lines)
    reply = src.qmp.execute("cont")
    if not res.check(reply.get("return") == {}, "cont on the source in doubt: %s" % reply):
        return False
    ok = res.check(running_status(src) == "running", "source after cont is %s"
                   % running_status(src))
    return check_ticks(src, start, before, res, "source after cont", follows=before) and ok


def settle(src, dst, proxy, last_tick, res, src_killed=False, dst_killed=False,
           timeout=75.0):
    """Wait for both sides to finish and judge the result against the semantics
    (the module's docstring). (timeout) covers the source's 60 s wait for RESUMED."""
    info = None
    if not src_killed:
        try:
            info = wait_migration(src.qmp, timeout)
        except TimeoutError as e:
            res.check(False, "source: %s" % e)
        res.src_info = info
    dst_state = "killed" if dst_killed else wait_target_settled(dst)
    if dst_state == "exited":
        res.dst_exit = dst.proc.returncode

    # Who runs the guest now?
    src_state = running_status(src) if not src_killed and src.alive() else "gone"
    src_running = src_state == "running"
    dst_running = dst_state == "running"
    desc = (info or {}).get("error-desc") or ""
    res.in_doubt = info is not None and info["status"] == "failed" and \
        IN_DOUBT_RE.match(desc) is not None
    if res.in_doubt:
        res.check(src_state == "paused", "source in doubt but its guest is %s (expected "
                  "paused, not postmigrate)" % src_state)

    # The runner(s) must tick on from where the source was, with no errors.
    if src_running:
        src.serial.poll()
        check_ticks(src, len(src.serial.lines), last_tick, res, "source")
    if dst_running:
        check_ticks(dst, 0, last_tick, res, "target")       # all the target printed

    # A target that did not take over never ran a tick and exited 1, saying why,
    # or dropped a stream that failed its vetting and waits on.
    if not dst_running and not dst_killed and dst_state == "waiting":
        dst.serial.poll()
        ran = [l for l in dst.serial.lines if TICK_RE.match(l)]
        res.check(not ran, "waiting target ran a guest: %s" % ran[:2])
        res.check(dst.qmp.cmd("query-migrate")["status"] == "setup",
                  "waiting target's status: %s" % dst.qmp.cmd("query-migrate"))
        m = DROPPED_RE.search(dst.stderr())
        res.detail = "dropped, waits: " + m.group(1)
        dst.kill()
    elif not dst_running and not dst_killed:
        res.check(dst_state == "exited", "target neither runs nor exited: %s" % dst_state)
        if dst_state == "exited":
            res.check(dst.proc.returncode == 1, "target exit status %s, expected 1"
                      % dst.proc.returncode)
            dst.serial.poll()
            ran = [l for l in dst.serial.lines if TICK_RE.match(l)]
            res.check(not ran, "target ran a partial guest: %s" % ran[:2])
            err = dst.stderr()
            res.check(TARGET_RE.search(err) is not None,
                      "target's message does not name the record: %r" % err.strip()[-300:])
            m = re.search(r"tern: incoming migration failed: .*", err)
            res.detail = m.group(0)[len("tern: incoming migration failed: "):] if m else ""

    # The source's own account.
    if info is not None:
        if src_running:
            res.check(info["status"] in ("failed", "cancelled"),
                      "source runs its guest but says %s" % info["status"])
            res.check(bool(desc), "source %s without error-desc: %s" % (info["status"], info))
            res.check(not IN_DOUBT_RE.match(desc), "source runs its guest but says it is "
                      "in doubt: %s" % desc)
        elif info["status"] == "completed":
            res.check(src_state == "postmigrate", "source completed but is %s" % src_state)
        elif not res.in_doubt:
            res.check(False, "source %s (%s) but its guest is %s" % (info["status"], desc,
                                                                     src_state))

    # END decides (the proxy saw what went each way).
    res.end_out = proxy.received("END")
    res.error_delivered = proxy.delivered("ERROR", "ret")
    if info is not None and info["status"] != "completed" and res.end_out:
        if res.error_delivered:
            res.check(not res.in_doubt, "the target's ERROR reached the source, yet it "
                      "stays in doubt")
        else:
            res.check(res.in_doubt, "END went out whole (the proxy read all of it from the "
                      "source) and no ERROR came back, yet the source is not in doubt: %s "
                      "'%s', guest %s" % (info["status"], desc, src_state))
    if res.in_doubt:
        res.check("device" in migration_statuses(src.qmp), "source in doubt without having "
                  "reached device: %s" % migration_statuses(src.qmp))
        res.check(not res.error_delivered, "source in doubt although the target's ERROR "
                  "was delivered to it")

    # The invariant: never both running; the VM is never lost unless the
    # source was killed (or the target after it had taken over).
    if src_running and dst_running:
        res.outcome = "BOTH RUNNING"
        res.check(False, "invariant: both the source and the target run the guest")
    elif src_running:
        res.outcome = KEPT
    elif dst_running and res.in_doubt:
        res.outcome = DOUBT_TARGET_RUNS
        source_stays_paused(src, res, "its target runs")
    elif dst_running:
        res.outcome = TOOK_OVER
    elif res.in_doubt:
        res.outcome = DOUBT_CONT
        if source_stays_paused(src, res, "target %s" % dst_state):
            cont_in_doubt(src, res)
    else:
        res.outcome = "VM lost"
        res.lost = True
    if dst_killed and info is not None and info["status"] == "completed":
        res.outcome = "lost with target"        # killed after the hand-over
        res.lost = True
    if src_killed:
        end = proxy.delivered("END")
        if end:
            res.check(dst_running, "source killed after END was delivered, target does "
                      "not run (%s)" % dst_state)
        else:
            res.check(not dst_running, "source killed before END was delivered, "
                      "yet the target runs")
            if not dst_running:
                res.outcome = "lost with source"
    elif res.outcome == "VM lost":
        res.check(False, "invariant: no copy of the guest runs (source %s, %s; target %s)"
                  % (src_state, (info or {}).get("status"), dst_state))
    return res


# ---------------------------------------------------------------------------
# One trial.

def trial(binary, kind, phase, action=None, ms=HOLD_MS, length=4096, fraction=0.5,
          offset=None, act_after=None, again=True, verbose=False):
    """One migration with one fault; returns a Result (never raises for a Tern failure).

    kind 'proxy': the proxy does (action) = delay|cut|truncate|corrupt|duplicate at the
    phase's trigger, or at stream octet (offset) when given (phase is then ignored).
    kind 'kill-target' | 'kill-source' | 'cancel': the proxy holds the stream at the
    phase's trigger for (ms) and the test acts while it is held; or, with (act_after)
    seconds, the test acts that long after `migrate` with nothing held.
    (again): when the source kept its guest, or was in doubt and continued with
    `cont`, migrate it once more, straight to a fresh target, and check that this
    one completes."""
    if offset is not None or act_after is not None:
        ph = dict(status=None, max_bandwidth=40 * 1000 * 1000 if act_after is not None else 0)
    else:
        ph = PHASES[phase]
    where = "octet %d" % offset if offset is not None else \
        "+%.2f s" % act_after if act_after is not None else phase
    res = Result("%s %s@%s" % (kind, action + " " if kind == "proxy" else "", where))
    res.where = where
    res.kind, res.action = kind, action
    res.cancel_reply = None
    ws = ph.get("ws", 8)
    x_passes = ph.get("x_passes", X_PASSES)
    direction = ph.get("direction", "fwd")
    fault = None
    if offset is not None:
        trig = Trigger.offset(offset)
    elif act_after is None:
        trig = ph["trigger"]()
        trig.fraction = fraction
        if action == "duplicate" and length is None:
            trig = Trigger.record("PAGE_DATA")      # the whole record, from its start
    if kind == "proxy":
        fault = Fault(action, trig, direction, ms=ms, length=length)
    elif act_after is None:
        fault = Fault("delay", trig, direction, ms=ms)
    res.fault = fault
    with Lab(binary, keep_logs_on_error=True) as lab:
        src = lab.source("-m", MEM, append="ws=%d tick_ms=%d" % (ws, TICK_MS))
        dst = lab.target("-m", MEM)
        held = kind != "proxy" and act_after is None
        with FaultProxy(dst.port, fault, lifetime=90, verbose=verbose,
                        rcvbuf=HOLD_BUF if held else None,
                        queue_limit=HOLD_BUF if held else 1 << 20) as proxy:
            src.wait_running(timeout=30)
            last = src.serial.wait_ticks(2, proc=src.proc)[-1]
            params = dict(x_passes=x_passes, max_bandwidth=ph.get("max_bandwidth", 0))
            src.qmp.cmd("migrate-set-parameters", **params)
            start_migration(src.qmp, tcp_uri(proxy.port))
            src_killed = dst_killed = False
            if kind != "proxy":
                if act_after is not None:
                    # soak.py's random moment: a point in time is the fault
                    # itself here, not a wait for something to finish.
                    time.sleep(act_after)
                elif not fault.fired.wait(30):
                    res.check(False, "the stream never reached %s: %s" % (
                        trig, [r[1] for r in proxy.records()][-5:]))
                    res.logs = lab.logs()
                    return res
                else:
                    st = src.qmp.cmd("query-migrate")["status"]
                    res.check(st == ph["status"], "source status %s while held at %s, "
                              "expected %s" % (st, trig, ph["status"]))
                last = last_tick(src) or last
                if kind == "kill-target" and phase == "pause" and act_after is None:
                    # END committed: the source has written it into the proxy's
                    # queue (the state records are small). Make sure.
                    res.check(proxy.wait_seen("END", 10), "END not sent while held inside "
                              "the pause")
                if kind == "kill-target":
                    dst.kill(signal.SIGKILL)
                    dst_killed = True
                elif kind == "kill-source":
                    src.kill(signal.SIGKILL)
                    src_killed = True
                elif kind == "cancel":
                    if act_after is not None:
                        res.status_before_cancel = src.qmp.cmd("query-migrate").get("status")
                        res.cancel_reply = src.qmp.execute("migrate_cancel")
                    else:
                        cancel_check(src, proxy, phase, res)
            settle(src, dst, proxy, last, res, src_killed=src_killed, dst_killed=dst_killed)
            if fault is not None and offset is None:
                res.check(fault.fired.is_set(), "the fault never fired (%s); records %s"
                          % (fault, [r[1] for r in proxy.records()][-4:]))
            if res.src_info and res.outcome == KEPT:
                accepted = res.cancel_reply is not None and "error" not in res.cancel_reply
                want = "cancelled" if accepted else "failed"
                res.check(res.src_info["status"] == want, "source kept its guest with "
                          "status %s, expected %s" % (res.src_info["status"], want))
            res.end_delivered = proxy.delivered("END")
            res.resumed_sent = proxy.seen("RESUMED", "ret")
            res.proxy_records = proxy.records()
            if kind == "proxy" and action == "delay" and phase == "pause" and \
                    offset is None and res.src_info and res.src_info["status"] == "completed":
                res.check(res.src_info["downtime"] >= ms,
                          "held %d ms inside the pause, downtime %d ms" % (
                              ms, res.src_info["downtime"]))
            if again and res.ok and res.outcome in (KEPT, DOUBT_CONT):
                migrate_again(lab, src, res)
        if not res.ok:
            res.logs = lab.logs()
            if verbose:
                sys.stderr.write(res.logs)
    return res


def migrate_again(lab, src, res):
    """The source that kept its guest (or was continued with `cont` after being
    in doubt) can migrate again (no proxy, fresh target)."""
    dst2 = lab.target("-m", MEM, name="dst2")
    last = last_tick(src)
    src.qmp.cmd("migrate-set-parameters", x_passes=0, max_bandwidth=0)
    start_migration(src.qmp, dst2.uri)
    info = wait_migration(src.qmp, 60)
    if not res.check(info["status"] == "completed", "migrating again after the failed "
                     "attempt: %s" % info):
        return
    ticks, why = dst2.serial.ticks_since(0, alive=dst2.alive)
    if res.check(ticks is not None, "after migrating again: %s" % why):
        res.check(ticks[0]["tick"] > last["tick"] and all(t["errors"] == 0 for t in ticks),
                  "after migrating again: %s then %s" % (last, ticks))
    res.again = True


def cancel_check(src, proxy, phase, res):
    """migrate_cancel while the stream is held; before END it is accepted, after
    END (the source has committed) it is refused with 'too late to cancel'."""
    if phase in ("pause", "after"):
        # The state records are small: the source has written END into the
        # proxy's queue by now. Make sure, then expect the refusal.
        res.check(proxy.wait_seen("END", 10), "END not sent while held inside the pause")
        reply = src.qmp.execute("migrate_cancel")
        res.check("error" in reply and "too late to cancel" in reply["error"]["desc"],
                  "migrate_cancel after END: %s" % reply)
        res.cancel_reply = reply
    else:
        end_sent = proxy.seen("END")
        res.check(not end_sent, "END was already sent at %s: the window is gone" % phase)
        reply = src.qmp.execute("migrate_cancel")
        res.check(reply.get("return") == {}, "migrate_cancel in %s: %s" % (phase, reply))
        res.cancel_reply = reply


# ---------------------------------------------------------------------------
# Expectations.

def expected(kind, phase, action=None, length=4096):
    """The outcome the semantics demand (a set when more than one is right).
    settle() checks on top that it agrees with what the proxy saw (END, ERROR)."""
    if kind == "proxy":
        if action == "delay":
            return {TOOK_OVER}
        if action == "duplicate" and length is None:
            # A whole PAGE_DATA record twice: legal ("the last copy wins").
            return {TOOK_OVER}
        if phase == "after":                    # cut: see test_resumed_cut
            return {DOUBT_TARGET_RUNS}
        if action in ("cut", "truncate") and phase in ("pause", "end"):
            # END went out (the proxy read it); the target gets no END, exits 1
            # and cannot say ERROR over the cut connection: the source is in doubt.
            return {DOUBT_CONT}
        if action == "truncate" and phase in ("pass1", "pass3"):
            # The proxy drops what follows but keeps the connection (up to
            # ms): the source sends the rest, END included, into the void and
            # then loses the connection: in doubt, like a target that died.
            return {DOUBT_CONT}
        # Before END (the source's writes fail, or the target's ERROR stops
        # it), or a corrupt record the target reads and reports with ERROR
        # over the intact return path (pause: inside VCPU_STATE; end: END's
        # type): the source resumes.
        return {KEPT}
    if kind == "kill-target":
        if phase == "pause":
            return {DOUBT_CONT}                 # trial() waits until END went out
        return {KEPT}
    if kind == "kill-source":
        if phase == "after":
            return {TOOK_OVER}
        if phase == "pause":
            # END is in the proxy (or the source's kernel buffers) when the
            # source dies: whether it gets through decides; settle() checks
            # that the target runs exactly when END was delivered.
            return {TOOK_OVER, "lost with source"}
        return {"lost with source"}
    if kind == "cancel":
        if phase in ("pause", "after"):
            return {TOOK_OVER}               # refused; completes
        return {KEPT}
    raise ValueError(kind)


def run_trial(binary, kind, phase, action=None, **kw):
    res = trial(binary, kind, phase, action, **kw)
    want = expected(kind, phase, action, kw.get("length", 4096))
    # Pin the reason for the outcome to what the proxy saw.
    if kind == "proxy" and phase in ("pause", "end") and action in ("corrupt", "duplicate"):
        res.check(res.end_out and res.error_delivered, "a corrupt record after END was "
                  "sent: END sent whole %s, the target's ERROR delivered %s (expected both)"
                  % (res.end_out, res.error_delivered))
    if want == {DOUBT_CONT}:
        res.check(res.end_out and not res.error_delivered, "in doubt expected: END sent "
                  "whole %s, ERROR delivered %s (expected END and no ERROR)"
                  % (res.end_out, res.error_delivered))
    res.check(res.outcome in want, "outcome %r, expected %s" % (res.outcome, " or ".join(
        sorted(want))))
    info = res.src_info or {}
    note("%-28s %-21s src %-9s dst exit %-4s errors %d%s%s", res.name, res.outcome,
         info.get("status", "killed"), res.dst_exit if res.dst_exit is not None else "-",
         res.errors, (", cont" if res.outcome == DOUBT_CONT else "") +
         (", migrated again" if res.again else ""),
         ("  target: " + res.detail[:110]) if res.detail else "")
    if not res.ok:
        raise AssertionError("; ".join(res.problems))
    return res


# ---------------------------------------------------------------------------
# The tests: one per (action, phase) cell, grouped so a failure names the cell.

def make(kind, phase, action=None, **kw):
    return lambda binary: run_trial(binary, kind, phase, action, **kw)


def test_resumed_cut(binary):
    """The return path is cut at RESUMED: the target has loaded everything, sent
    RESUMED and runs; the source never hears RESUMED.

    From the source's side this is the same as "the target died after END,
    before it could resume". Resuming would run the guest twice, the outcome
    that cannot be undone, so the source stays paused in doubt (query-status
    paused, not postmigrate) and says so: exactly one copy runs, the target's.
    No `cont` here: the target runs, so the source must stay paused."""
    res = run_trial(binary, "proxy", "after", "cut")
    info = res.src_info
    m = IN_DOUBT_RE.match(info.get("error-desc") or "")
    assert info["status"] == "failed" and m, info
    assert res.resumed_sent, "the target did not send RESUMED"
    note("source in doubt, paused: %s", info["error-desc"])


STREAM_ONLY_RE = re.compile(r"^proxy \S+ @(header|setup|pass1|pass3)$")
TESTS = []
for _action in ("cut", "corrupt"):
    TESTS.append(("proxy %s @header" % _action, make("proxy", "header", _action)))
for _phase in ("setup", "pass1", "pass3", "pause"):
    for _action in ("delay", "cut", "truncate", "corrupt", "duplicate"):
        _kw = {"ms": 1000} if _action == "delay" else {}
        if _action == "truncate":
            # Live passes: long enough for the source to send the rest, END
            # included (the proxy cuts 300 ms after it has read END).
            _kw["ms"] = 8000 if _phase in ("pass1", "pass3") else 2000
        TESTS.append(("proxy %s @%s" % (_action, _phase), make("proxy", _phase, _action, **_kw)))
for _action in ("cut", "corrupt"):
    TESTS.append(("proxy %s @END" % _action, make("proxy", "end", _action)))
TESTS.append(("proxy duplicate whole PAGE_DATA", None))       # filled in below
TESTS.append(("proxy delay RESUMED", make("proxy", "after", "delay", ms=1500)))
TESTS.append(("proxy cut RESUMED (in doubt)", test_resumed_cut))
for _phase in ("setup", "pass1", "pass3", "pause"):
    TESTS.append(("kill target @%s" % _phase, make("kill-target", _phase)))
for _phase in ("setup", "pass1", "pass3", "pause", "after"):
    TESTS.append(("kill source @%s" % _phase, make("kill-source", _phase)))
for _phase, _label in (("setup", "setup"), ("pass1", "active"), ("final", "device, before END"),
                       ("pause", "device, after END")):
    TESTS.append(("migrate_cancel in %s" % _label, make("cancel", _phase)))


def test_duplicate_whole_record(binary):
    """A whole PAGE_DATA record sent twice is legal (a gfn may appear again; the
    last copy wins): the migration completes and the guest is intact."""
    res = run_trial(binary, "proxy", "pass1", "duplicate", length=None)
    assert res.fault.fired.is_set(), "the record was not duplicated"


TESTS[[n for n, _ in TESTS].index("proxy duplicate whole PAGE_DATA")] = (
    "proxy duplicate whole PAGE_DATA", test_duplicate_whole_record)


if __name__ == "__main__":
    # Optional name filters after the binary: `test_faults.py ./tern @pass1 cancel`.
    # (meson passes more binaries after tern: those are paths, not filters.)
    only = [a for a in sys.argv[2:] if not os.path.exists(a)]
    t0 = time.time()
    sel = [(n, f) for n, f in TESTS if not only or any(o in n for o in only)]
    # The proxy's faults before the guest pauses touch only the stream: they
    # run in one suite per host (ternlib.stream_only_here()); the pause,
    # kill and cancel trials involve the accelerator and run in both.
    if not ternlib.stream_only_here():
        kept = [(n, f) for n, f in sel if not STREAM_ONLY_RE.search(n)]
        print("# %d stream-only trials run in the kvm suite on this host, not here"
              % (len(sel) - len(kept)), flush=True)
        sel = kept
    try:
        run_tests(sel)
    finally:
        print("total %.0f s" % (time.time() - t0), flush=True)
