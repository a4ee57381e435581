#!/usr/bin/env python3
"""make demo: live-migrate a running guest between two Tern processes.

The bundled test guest boots in one Tern (1 GiB, 2 vCPUs; on KVM where /dev/kvm
exists, else on Tern's software CPU) and rewrites 64 MiB
of its memory without pause; a second Tern waits with -incoming; QMP `migrate`
moves the guest over TCP on 127.0.0.1 while it writes. The guest's own serial
reports, now coming from the second process, say how long it felt paused and
whether any of its pages came back wrong. A second hop to a paused third Tern
then compares the RAM of source and target byte for byte (CRC-32 digests).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "functional"))
from ternlib import ACCEL, Lab, migration_statuses, start_migration, wait_migration  # noqa: E402

MiB = 1 << 20
VM_ARGS = ["-m", "1G", "-smp", "2"]
GUEST = "ws=64 cpus=2 tick_ms=250"


class DemoError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise DemoError(msg)


def say(fmt, *args):
    print(fmt % args if args else fmt, flush=True)


def show_tick(who, t):
    say("  %-7s tick %d: dirtied %d MiB, timer_ticks %d, max_gap %.2f ms, errors %d", who,
        t["tick"], t["dirtied_mib"], t["timer_ticks"], t["max_gap_us"] / 1000, t["errors"])


def migrate(src, dst):
    start_migration(src.qmp, dst.uri)
    info = wait_migration(src.qmp, timeout=120)
    check(info["status"] == "completed",
          "migration %s: %s" % (info["status"], info.get("error-desc", info)))
    return info


def live_hop(lab):
    src = lab.source(*VM_ARGS, append=GUEST, name="source")
    dst = lab.target(*VM_ARGS, name="target")
    say("demo: source  pid %d: tern %s -append '%s'", src.proc.pid, " ".join(VM_ARGS), GUEST)
    say("demo: target  pid %d: tern %s -incoming %s", dst.proc.pid, " ".join(VM_ARGS), dst.uri)
    booted = src.wait_running(timeout=30)
    say("demo: guest up on %d vCPUs, %s (%.2f ns per loop iteration)", booted["cpus"],
        "KVM" if ACCEL == "kvm" else "the software CPU (no /dev/kvm here)",
        booted["ns_per_loop_iter"])
    ticks = src.serial.wait_ticks(2, proc=src.proc)
    show_tick("source", ticks[-1])

    say("demo: migrate %s   (the guest keeps rewriting 64 MiB meanwhile)", dst.uri)
    info = migrate(src, dst)
    ram = info["ram"]
    status = dst.qmp.cmd("query-status")["status"]
    check(status == "running", "target is %s after the migration" % status)
    after = dst.serial.wait_ticks(3, timeout=20, proc=dst.proc)
    check(after[0]["tick"] > ticks[-1]["tick"], "the target's guest restarted its ticks")
    check(all(t["errors"] == 0 for t in after), "the guest found corrupted memory: %s" % after)
    # The first ticks on the target cover the switchover: the longest pause the guest felt.
    gap_ms = max(t["max_gap_us"] for t in after[:2]) / 1000
    secs = info["total-time"] / 1000
    say("  states        %s", " -> ".join(migration_statuses(src.qmp)))
    say("  total time    %8d ms", info["total-time"])
    say("  downtime      %8d ms   (reported by the source: pause to target running)",
        info["downtime"])
    say("  guest pause   %8.1f ms   (the guest's own longest gap, from the target's serial)",
        gap_ms)
    say("  transferred   %8.1f MiB in %d passes (%d pages with data, %d zero)",
        ram["transferred"] / MiB, ram["dirty-sync-count"], ram["normal"], ram["duplicate"])
    say("  throughput    %8.2f GB/s  (bytes / total time; query-migrate says %.0f Mbit/s)",
        ram["transferred"] / secs / 1e9 if secs else 0, ram.get("mbps", 0))
    for t in after:
        show_tick("target", t)
    src_status = src.qmp.cmd("query-status")["status"]
    check(src_status == "postmigrate", "source is %s, not postmigrate" % src_status)
    say("  source        %s (paused; it gave up the guest after the target confirmed)",
        src_status)
    return dst


def digest_hop(lab, vm):
    """vm -> a paused third Tern: equal RAM digests, then the guest runs on there."""
    third = lab.target(*VM_ARGS, name="third", paused=True)
    say("demo: second hop to a paused Tern (-S), to compare RAM: migrate %s", third.uri)
    migrate(vm, third)
    a, b = vm.qmp.cmd("x-query-ram-digest"), third.qmp.cmd("x-query-ram-digest")
    check(a == b, "RAM digests differ: %s vs %s" % (a, b))
    say("  RAM digest    %s = %s over %d MiB (crc32): equal", a["digest"], b["digest"],
        a["bytes"] // MiB)
    third.qmp.cmd("cont")
    ticks = third.serial.wait_ticks(2, timeout=20, proc=third.proc)
    check(all(t["errors"] == 0 for t in ticks), "the guest found corrupted memory: %s" % ticks)
    show_tick("third", ticks[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tern", default="build/tern")
    args = ap.parse_args()
    say("demo: accelerator %s", ACCEL)
    t0 = time.time()
    try:
        with Lab(os.path.abspath(args.tern)) as lab:
            vm = live_hop(lab)
            digest_hop(lab, vm)
    except Exception as e:  # any failure: processes are gone (Lab), say why, exit 1
        say("demo: FAILED: %s: %s", type(e).__name__, e)
        sys.exit(1)
    say("demo: OK: the guest moved twice while running, errors 0 (%.1f s)", time.time() - t0)


if __name__ == "__main__":
    main()
