#!/usr/bin/env python3
"""make bench: live-migration benchmarks between two local Tern processes.

Scenarios (1 GiB guest, TCP on 127.0.0.1, default parameters):
  idle     ws=0: total time, downtime, bytes on the wire
  ws64     the guest rewrites 64 MiB without pause: passes, downtime, and the
           longest pause the guest itself measured around the switchover
  fill768  768 MiB of random data written once: throughput
  ck-idle, ck-fill768   the same guests checkpointed to a file (migrate file:PATH):
           checkpoint time, downtime, file size (apparent and allocated), restore time
  cpr      a guest rewriting 64 MiB handed over to a new process on the same host
           (mode cpr-transfer, RAM passed as memfds) at 1, 4 and 16 GiB (sparse):
           the pause (source STOP to target RESUME), downtime, guest max gap,
           RAM bytes on the wire; its own section (migration-cpr-ACCEL)

Each runs --runs times (default 3) on every accelerator there is (KVM where
/dev/kvm exists, and the software CPU); the table shows min - max. The results
replace each accelerator's section of docs/benchmarks.md (or are appended).
"""
import argparse
import datetime
import os
import platform
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "functional"))
import ternlib  # noqa: E402
from ternlib import Lab, start_migration, wait_migration  # noqa: E402

MiB = 1 << 20
BEGIN = "<!-- bench/run.py: migration-%s: begin -->"
END = "<!-- bench/run.py: migration-%s: end -->"

def platform_run(binary):
    """The guest's own view of the platform under Tern: loop speed and exit costs."""
    with Lab(binary) as lab:
        vm = lab.source("-m", "256M", append="exitbench=20000 tick_ms=200")
        vm.serial.wait_ticks(1, timeout=60, proc=vm.proc)
        text = "\n".join(vm.serial.lines)
        m = re.search(r"exitbench \d+ ns_per_pio_exit (\d+) ns_per_cpuid_exit (\d+)", text)
        loop = re.search(r"ns_per_loop_iter ([0-9.]+)", text)
        return {"loop_ns": float(loop.group(1)), "pio_us": int(m.group(1)) / 1000,
                "cpuid_us": int(m.group(2)) / 1000}


def dirty_run(binary):
    """Page dirtying with dirty logging on: a 64 MiB writer while a migration
    throttled to 32 MiB/s and held to 1000 passes keeps pre-copying (then cancelled)."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=64 tick_ms=200")
        dst = lab.target("-m", "1G")
        src.wait_running(timeout=60)
        src.serial.wait_ticks(1, proc=src.proc)
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 32 * MiB, "x-passes": 1000})
        start_migration(src.qmp, dst.uri)
        ticks = src.serial.wait_ticks(6, proc=src.proc)[1:]
        src.qmp.cmd("migrate_cancel")
        mib = ticks[-1]["dirtied_mib"] - ticks[0]["dirtied_mib"]
        secs = (ticks[-1]["t_ms"] - ticks[0]["t_ms"]) / 1000
        return {"dirty_gbps": mib * MiB / secs / 1e9}


PLATFORM_METRICS = [("loop_ns", "guest dec/jnz loop (ns per iteration)", "%.2f"),
                    ("pio_us", "OUT to the VMM and back (us)", "%.1f"),
                    ("cpuid_us", "CPUID (us)", "%.1f"),
                    ("dirty_gbps", "guest page dirtying, dirty logging on (GB/s)", "%.2f")]

SCENARIOS = [
    # name, guest command line, what it shows
    ("idle", "ws=0 tick_ms=200", "1 GiB idle guest"),
    ("ws64", "ws=64 tick_ms=200", "1 GiB guest rewriting 64 MiB"),
    ("fill768", "fill=768 tick_ms=200", "1 GiB guest with 768 MiB of random data"),
    ("ck-idle", "ws=0 tick_ms=200", "checkpoint: 1 GiB idle guest"),
    ("ck-fill768", "fill=768 tick_ms=200", "checkpoint: 1 GiB guest, 768 MiB of random data"),
]

CK_METRICS = [("total_ms", "checkpoint time (ms)", "%.0f"), ("downtime_ms", "downtime (ms)", "%.0f"),
              ("size_mib", "file size (MiB)", "%.1f"), ("alloc_mib", "allocated on disk (MiB)", "%.1f"),
              ("restore_ms", "restore, load to running (ms)", "%.0f"),
              ("restore_gbps", "restore throughput (GB/s)", "%.2f")]

# (key, label, format) per scenario: what the table shows.
METRICS = {
    "idle": [("total_ms", "total time (ms)", "%.0f"), ("downtime_ms", "downtime (ms)", "%.0f"),
             ("mib", "transferred (MiB)", "%.1f")],
    "ws64": [("passes", "passes (dirty syncs)", "%.0f"), ("downtime_ms", "downtime (ms)", "%.0f"),
             ("gap_ms", "guest max gap (ms)", "%.1f"),
             ("gap_ratio", "guest gap / downtime", "%.2f"),
             ("total_ms", "total time (ms)", "%.0f"), ("mib", "transferred (MiB)", "%.1f")],
    "fill768": [("gbps", "throughput (GB/s)", "%.2f"), ("total_ms", "total time (ms)", "%.0f"),
                ("downtime_ms", "downtime (ms)", "%.0f"), ("mib", "transferred (MiB)", "%.1f")],
    "ck-idle": CK_METRICS,
    "ck-fill768": CK_METRICS,
}


def one_run(binary, append):
    """One migration; returns the measurements of it."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append=append)
        dst = lab.target("-m", "1G")
        src.wait_running(timeout=60)
        last = src.serial.wait_ticks(2, proc=src.proc)[-1]
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, timeout=300)
        if info["status"] != "completed":
            raise RuntimeError("migration %s: %s" % (info["status"], info.get("error-desc")))
        ticks = dst.serial.wait_ticks(3, timeout=20, proc=dst.proc)
        if any(t["errors"] for t in ticks) or ticks[0]["tick"] <= last["tick"]:
            raise RuntimeError("guest unhealthy after migration: %s" % ticks)
        ram = info["ram"]
        gap_ms = max(t["max_gap_us"] for t in ticks[:2]) / 1000
        secs = info["total-time"] / 1000
        return {
            "total_ms": info["total-time"],
            "downtime_ms": info["downtime"],
            "mib": ram["transferred"] / MiB,
            "passes": ram["dirty-sync-count"],
            "gap_ms": gap_ms,
            "gap_ratio": gap_ms / info["downtime"] if info["downtime"] else float("nan"),
            "gbps": ram["transferred"] / secs / 1e9 if secs else float("nan"),
        }


def one_checkpoint(binary, append):
    """Checkpoint a guest to a file in /var/tmp, then restore it; returns the measurements."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append=append)
        src.wait_running(timeout=60)
        last = src.serial.wait_ticks(2, proc=src.proc)[-1]
        path = os.path.join("/var/tmp", "tern-bench-%d.tern" % os.getpid())
        try:
            start_migration(src.qmp, "file:" + path)
            info = wait_migration(src.qmp, timeout=300)
            if info["status"] != "completed":
                raise RuntimeError("checkpoint %s: %s" % (info["status"], info.get("error-desc")))
            st = os.stat(path)
            dst = lab.start("restore", ["-m", "1G", "-incoming", "file:" + path])
            # A restore may finish before QMP is up (no event to wait for): poll.
            deadline = time.time() + 300
            while dst.qmp.cmd("query-migrate").get("status") not in ("completed", "failed"):
                if time.time() > deadline or not dst.alive():
                    break
                time.sleep(0.05)
            rinfo = dst.qmp.cmd("query-migrate")
            if rinfo["status"] != "completed":
                raise RuntimeError("restore %s: %s" % (rinfo["status"], rinfo.get("error-desc")))
            ticks = dst.serial.wait_ticks(2, timeout=20, proc=dst.proc)
            if any(t["errors"] for t in ticks) or ticks[0]["tick"] <= last["tick"]:
                raise RuntimeError("guest unhealthy after restore: %s" % ticks)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        restore_s = rinfo["total-time"] / 1000
        return {
            "total_ms": info["total-time"],
            "downtime_ms": info["downtime"],
            "size_mib": st.st_size / MiB,
            "alloc_mib": st.st_blocks * 512 / MiB,
            "restore_ms": rinfo["total-time"],
            "restore_gbps": st.st_blocks * 512 / restore_s / 1e9 if restore_s else float("nan"),
        }


CPR_SIZES_GIB = (1, 4, 16)
CPR_METRICS = [("pause_ms", "pause: source STOP to target RESUME (ms)", "%.2f"),
               ("downtime_ms", "downtime, query-migrate (ms)", "%.0f"),
               ("gap_ms", "guest max gap (ms)", "%.1f"),
               ("ram_bytes", "RAM bytes on the wire", "%.0f")]


def event_time(qmp, name):
    """The timestamp (s) of the last event (name) seen on (qmp)."""
    qmp.poll_events()
    evs = [e for e in qmp.history if e["event"] == name]
    if not evs:
        raise RuntimeError("no %s event" % name)
    ts = evs[-1]["timestamp"]
    return ts["seconds"] + ts["microseconds"] / 1e6


def one_cpr(binary, gib):
    """Hand a running guest over to a new process (cpr-transfer); returns the measurements."""
    with Lab(binary) as lab:
        size = "%dG" % gib
        src = lab.source("-m", size, append="ws=64 tick_ms=200")
        sock = os.path.join(lab.dir, "handover.sock")
        dst = lab.start("dst", ["-m", size, "-incoming", "unix:" + sock,
                                "-migrate-mode", "cpr-transfer"])
        src.wait_running(timeout=60)
        last = src.serial.wait_ticks(2, proc=src.proc)[-1]
        src.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
        start_migration(src.qmp, "unix:" + sock)
        info = wait_migration(src.qmp, timeout=120)
        if info["status"] != "completed":
            raise RuntimeError("hand-over %s: %s" % (info["status"], info.get("error-desc")))
        ticks = dst.serial.wait_ticks(3, timeout=20, proc=dst.proc)
        if any(t["errors"] for t in ticks) or ticks[0]["tick"] <= last["tick"]:
            raise RuntimeError("guest unhealthy after the hand-over: %s" % ticks)
        dst.qmp.wait_event("RESUME", 10)
        pause = event_time(dst.qmp, "RESUME") - event_time(src.qmp, "STOP")
        return {
            "pause_ms": pause * 1000,
            "downtime_ms": info["downtime"],
            "gap_ms": max(t["max_gap_us"] for t in ticks[:2]) / 1000,
            "ram_bytes": info["ram"]["transferred"],
        }


def bench_cpr(binary, accel, runs):
    """The hand-over pause at each size; returns the doc section."""
    ternlib.ACCEL = accel
    ternlib.SLOW = 4 if accel == "emu" else 1
    lines = ["| guest RAM | metric | min – max, %d runs |" % runs, "|---|---|---|"]
    for gib in CPR_SIZES_GIB:
        rs = []
        for i in range(runs):
            try:
                rs.append(one_cpr(binary, gib))
            except Exception as e:
                sys.exit("bench: %s cpr %d GiB run %d failed: %s: %s" % (accel, gib, i + 1,
                                                                        type(e).__name__, e))
            print("bench: %-4s cpr %2d GiB run %d: %s" % (accel, gib, i + 1, ", ".join(
                "%s %s" % (k, fmt % rs[-1][k]) for k, _, fmt in CPR_METRICS)), flush=True)
        for key, label, fmt in CPR_METRICS:
            lines.append("| %d GiB | %s | %s |" % (gib, label, span([r[key] for r in rs], fmt)))
    who = ("KVM (%s)" % machine_kvm_flavour() if accel == "kvm"
           else "the software CPU (-accel emu)")
    return "\n".join([
        "## Local hand-over (cpr-transfer) on %s" % who,
        "",
        "Produced by `make bench  (python3 tests/bench/run.py --runs %d)` on %s."
        % (runs, datetime.date.today().isoformat()),
        "",
        "Machine: %s." % machine_notes(),
        "",
        "A guest rewriting 64 MiB (`ws=64`) handed to a new process on the same host "
        "(`migrate_set_parameter mode cpr-transfer`, `migrate unix:PATH`; target "
        "`-incoming unix:PATH -migrate-mode cpr-transfer`). The pause is the source's "
        "STOP event to the target's RESUME event (QMP timestamps, microseconds); the "
        "guest max gap is the longest pause the guest measured in its first two ticks "
        "on the target. RAM is sparse: only what the guest touched is backed.",
        "",
        "\n".join(lines),
    ])


def span(values, fmt):
    lo, hi = min(values), max(values)
    return fmt % lo if fmt % lo == fmt % hi else "%s – %s" % (fmt % lo, fmt % hi)


def table(results, runs):
    runs_s = "%d run%s" % (runs, "" if runs == 1 else "s")
    lines = ["| scenario | metric | min – max, %s |" % runs_s, "|---|---|---|"]
    for name, _, title in SCENARIOS:
        for key, label, fmt in METRICS[name]:
            lines.append("| %s | %s | %s |" % (title, label,
                                               span([r[key] for r in results[name]], fmt)))
    return "\n".join(lines)


def machine_notes():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    if os.path.exists("/sys/module/kvm_pvm"):
        flavour = "kvm_pvm (software hypervisor, no VT-x/AMD-V)"
    elif os.path.exists("/sys/module/kvm_intel"):
        flavour = "kvm_intel (hardware VT-x)"
    elif os.path.exists("/sys/module/kvm_amd"):
        flavour = "kvm_amd (hardware AMD-V)"
    else:
        flavour = "unknown"
    return "%d CPUs (nproc), %s; Linux %s; KVM: %s" % (os.cpu_count(), cpu, platform.release(),
                                                       flavour)


def write_doc(path, section, accel):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    begin, end = BEGIN % accel, END % accel
    block = begin + "\n" + section.rstrip() + "\n" + end
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def baseline_rows(binary, baseline, runs):
    """The exit round trip of (binary) against an older build's, interleaved in one
    run: what the accelerator interface costs on KVM."""
    new, old = [], []
    for _ in range(runs):
        new.append(platform_run(binary)["pio_us"])
        old.append(platform_run(baseline)["pio_us"])
        print("bench: kvm  exit round trip: this build %.1f us, baseline %.1f us"
              % (new[-1], old[-1]), flush=True)
    ratios = [n / o for n, o in zip(new, old)]
    return ["| OUT to the VMM and back, this build (us) | %s |" % span(new, "%.1f"),
            "| the same, baseline build `%s` (us) | %s |" % (baseline, span(old, "%.1f")),
            "| ratio this / baseline, run by run | %s |" % span(ratios, "%.2f")]


def bench_accel(binary, accel, runs, baseline=None):
    """Every scenario on one accelerator; returns the doc section."""
    ternlib.ACCEL = accel
    ternlib.SLOW = 4 if accel == "emu" else 1
    results = {}
    for name, append, title in SCENARIOS:
        results[name] = []
        for i in range(runs):
            try:
                r = (one_checkpoint if name.startswith("ck-") else one_run)(binary, append)
            except Exception as e:
                sys.exit("bench: %s %s run %d failed: %s: %s" % (accel, name, i + 1,
                                                                type(e).__name__, e))
            results[name].append(r)
            print("bench: %-4s %-8s run %d: %s" % (accel, name, i + 1, ", ".join(
                "%s %s" % (k, fmt % r[k]) for k, _, fmt in METRICS[name])), flush=True)
    md = table(results, runs)
    plat = []
    for _ in range(runs):
        p = platform_run(binary)
        p.update(dirty_run(binary))
        plat.append(p)
        print("bench: %-4s platform: %s" % (accel, ", ".join(
            "%s %s" % (k, fmt % p[k]) for k, _, fmt in PLATFORM_METRICS)), flush=True)
    plat_md = "\n".join(["| metric | min – max, %d runs |" % runs, "|---|---|"] +
                         ["| %s | %s |" % (label, span([p[k] for p in plat], fmt))
                          for k, label, fmt in PLATFORM_METRICS] +
                         (baseline_rows(binary, baseline, runs) if baseline else []))
    ratios = [r["gap_ratio"] for r in results["ws64"] if r["gap_ratio"] == r["gap_ratio"]]
    command = "make bench  (python3 tests/bench/run.py --runs %d)" % runs
    who = ("KVM (%s)" % machine_kvm_flavour() if accel == "kvm"
           else "the software CPU (-accel emu)")
    return "\n".join([
        "## Live migration on %s" % who,
        "",
        "Produced by `%s` on %s." % (command, datetime.date.today().isoformat()),
        "",
        "Machine: %s." % machine_notes(),
        "",
        "Two Tern processes on one host, TCP over 127.0.0.1, default parameters "
        "(downtime-limit 300 ms, no bandwidth limit, record CRCs on); source "
        "`tern -accel %s -m 1G -append \"...\"`, target `tern -accel %s -m 1G -incoming "
        "tcp:127.0.0.1:PORT`. Throughput is bytes on the wire divided by total time. The "
        "guest's max gap is the longest pause the guest's own loop measured in the first "
        "two ticks after the switchover (TSC-based)." % (accel, accel),
        "",
        md,
        "",
        "Guest-observed max gap / reported downtime (64 MiB writer): %s."
        % (span(ratios, "%.2f") if ratios else "n/a (downtime reported as 0)"),
        "",
        "### The platform, seen from the guest (%s)" % accel,
        "",
        "The bundled guest's `exitbench=20000`: a tight loop timed with the TSC, "
        "OUTs to an unclaimed port (a full exit to Tern's vCPU thread and back), "
        "and CPUIDs (on KVM answered by the kernel; kvm_pvm emulates the instruction). "
        "Page dirtying: the `ws=64` writer's own count of rewritten pages while a "
        "migration throttled to 32 MiB/s keeps dirty logging on.",
        "",
        plat_md,
    ])


# ---- multifd: the same 768 MiB random fill over 1, 2 and 4 channels ----

MULTIFD_ROWS = [("single stream", None), ("multifd 1", 1), ("multifd 2", 2), ("multifd 4", 4)]


def one_multifd(binary, channels, append="ws=0 fill=768"):
    """One migration of a 1 GiB guest with (channels) multifd channels (None: the
    single stream); returns GB/s on the wire and the target's placement rate."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append=append)
        dst = lab.start("dst", ["-m", "1G", "-incoming", "defer"])
        dst.uri = ternlib.tcp_uri(ternlib.free_port())
        for vm in (src, dst) if channels else ():
            vm.qmp.cmd("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
            vm.qmp.cmd("migrate-set-parameters", multifd_channels=channels)
        dst.qmp.cmd("migrate-incoming", uri=dst.uri)
        src.wait_running(timeout=120)
        src.serial.wait_ticks(2, proc=src.proc)
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, timeout=300)
        if info["status"] != "completed":
            raise RuntimeError("migration %s: %s" % (info["status"], info.get("error-desc")))
        dst.serial.wait_ticks(2, timeout=20, proc=dst.proc)
        secs = info["total-time"] / 1000
        place = dst.qmp.cmd("query-migrate").get("x-multifd", {}).get("placement-rate", 0)
        return {"gbps": info["ram"]["transferred"] / secs / 1e9 if secs else float("nan"),
                "total_ms": info["total-time"], "downtime_ms": info["downtime"],
                "place_gbps": place / 1e9}


def bench_multifd(binary, accel, runs):
    """Multifd rows next to the single stream, in the same run; returns the doc section."""
    ternlib.ACCEL = accel
    ternlib.SLOW = 4 if accel == "emu" else 1
    lines = ["| transport | GB/s on the wire | total (ms) | downtime (ms) | "
             "target placement (GB/s) |", "|---|---|---|---|---|"]
    for title, channels in MULTIFD_ROWS:
        rs = []
        for i in range(runs):
            r = one_multifd(binary, channels)
            rs.append(r)
            print("bench: %-4s %-13s run %d: %.2f GB/s, total %d ms, placement %.2f GB/s"
                  % (accel, title, i + 1, r["gbps"], r["total_ms"], r["place_gbps"]),
                  flush=True)
        lines.append("| %s | %s | %s | %s | %s |" % (
            title, span([r["gbps"] for r in rs], "%.2f"), span([r["total_ms"] for r in rs], "%d"),
            span([r["downtime_ms"] for r in rs], "%d"),
            span([r["place_gbps"] for r in rs], "%.2f") if channels else "n/a"))
    return "\n".join([
        "## Multifd on %s" % accel,
        "",
        "Produced by `python3 tests/bench/run.py --only multifd --runs %d` on %s: a 1 GiB "
        "guest that wrote 768 MiB of random data (`ws=0 fill=768`), TCP over 127.0.0.1, "
        "record CRCs on, no compression; both sides with the same channel count. "
        "Machine: %s." % (runs, datetime.date.today().isoformat(), machine_notes()),
        "",
    ] + lines)


def machine_kvm_flavour():
    return "kvm_pvm" if os.path.exists("/sys/module/kvm_pvm") else "hardware KVM"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tern", default=os.path.join(ROOT, "build", "tern"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accel", action="append", choices=["kvm", "emu"],
                    help="accelerator(s) to measure (default: kvm where /dev/kvm exists, and emu)")
    ap.add_argument("--baseline", help="an older tern binary: compare KVM exit round trips")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-doc", action="store_true", help="print only, do not touch the doc")
    ap.add_argument("--only", choices=["migration", "cpr", "multifd"],
                    help="only the migration scenarios, or only the cpr-transfer hand-over")
    args = ap.parse_args()
    accels = args.accel or (["kvm"] if os.path.exists("/dev/kvm") else []) + ["emu"]
    binary = os.path.abspath(args.tern)
    for accel in accels:
        print("bench: measuring on accelerator %s" % accel, flush=True)
        sections = []
        if args.only == "multifd":
            sections.append(("multifd-" + accel, bench_multifd(binary, accel, args.runs)))
        elif args.only != "cpr":
            sections.append((accel, bench_accel(
                binary, accel, args.runs,
                os.path.abspath(args.baseline) if args.baseline and accel == "kvm" else None)))
        if args.only not in ("migration", "multifd"):
            sections.append(("cpr-" + accel, bench_cpr(binary, accel, args.runs)))
        for key, section in sections:
            print()
            print(section)
            if not args.no_doc:
                write_doc(args.doc, section, key)
                print("\nbench: wrote %s" % os.path.relpath(args.doc))


if __name__ == "__main__":
    main()
