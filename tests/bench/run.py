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
  tls      fill768 over TLS 1.3 (x509, verify-peer on) and in plaintext, back to
           back in each run: both throughputs, their ratio, and which TLS path ran
           (kTLS or GnuTLS in user space); its own section (migration-tls-ACCEL)

Each runs --runs times (default 3) on every accelerator there is (KVM where
/dev/kvm exists, and the software CPU); the table shows min - max. The results
replace each accelerator's section of docs/benchmarks.md (or are appended).
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
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


def one_tls_pair(binary, append, pki):
    """fill768 in plaintext, then over TLS (x509); returns both throughputs and the TLS line."""
    out = {}
    for tls in (False, True):
        with Lab(binary) as lab:
            objs = (["-object", "tls-creds-x509,id=tls0,dir=%s,endpoint=client"
                     % pki.path("client")] if tls else [])
            src = lab.source("-m", "1G", *objs, append=append)
            args = ["-m", "1G", "-incoming", "defer"]
            if tls:
                args += ["-object", "tls-creds-x509,id=tls0,dir=%s,endpoint=server"
                         % pki.path("server")]
            dst = lab.start("dst", args)
            if tls:
                dst.qmp.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
                src.qmp.cmd("migrate-set-parameters", **{"tls-creds": "tls0",
                                                         "tls-hostname": "target.example"})
            uri = ternlib.tcp_uri(ternlib.free_port())
            dst.qmp.cmd("migrate-incoming", uri=uri)
            src.wait_running(timeout=60)
            src.serial.wait_ticks(2, proc=src.proc)
            start_migration(src.qmp, uri)
            info = wait_migration(src.qmp, timeout=300)
            if info["status"] != "completed":
                raise RuntimeError("migration %s: %s" % (info["status"], info.get("error-desc")))
            secs = info["total-time"] / 1000
            out["gbps" if tls else "plain_gbps"] = info["ram"]["transferred"] / secs / 1e9
            if tls:
                out["total_ms"] = info["total-time"]
                lines = [l for l in src.stderr().splitlines() if "migration TLS:" in l]
                out["path"] = lines[0].split("migration TLS: ", 1)[1] if lines else "?"
    out["ratio"] = out["gbps"] / out["plain_gbps"]
    return out


TLS_METRICS = [("gbps", "TLS throughput (GB/s)", "%.2f"),
               ("plain_gbps", "plaintext throughput, same run (GB/s)", "%.2f"),
               ("ratio", "TLS / plaintext", "%.2f"), ("total_ms", "TLS total time (ms)", "%.0f")]


def bench_tls(binary, accel, runs):
    """TLS against plaintext on the fill768 guest; returns the doc section."""
    from test_tls import Pki  # the test's certtool-made CA and certificates
    ternlib.ACCEL = accel
    ternlib.SLOW = 4 if accel == "emu" else 1
    pki = Pki()
    rs = []
    try:
        for i in range(runs):
            try:
                rs.append(one_tls_pair(binary, "fill=768 tick_ms=200", pki))
            except Exception as e:
                sys.exit("bench: %s tls run %d failed: %s: %s" % (accel, i + 1,
                                                                 type(e).__name__, e))
            print("bench: %-4s tls run %d: %s; %s" % (accel, i + 1, ", ".join(
                "%s %s" % (k, fmt % rs[-1][k]) for k, _, fmt in TLS_METRICS), rs[-1]["path"]),
                flush=True)
    finally:
        pki.close()
    lines = ["| scenario | metric | min – max, %d runs |" % runs, "|---|---|---|"]
    for key, label, fmt in TLS_METRICS:
        lines.append("| 1 GiB guest, 768 MiB of random data | %s | %s |"
                     % (label, span([r[key] for r in rs], fmt)))
    who = ("KVM (%s)" % machine_kvm_flavour() if accel == "kvm"
           else "the software CPU (-accel emu)")
    return "\n".join([
        "## Migration over TLS on %s" % who,
        "",
        "Produced by `python3 tests/bench/run.py --only tls --runs %d` on %s."
        % (runs, datetime.date.today().isoformat()),
        "",
        "Machine: %s." % machine_notes(),
        "",
        "The fill768 guest migrated in plaintext, then over TLS 1.3 (`tls-creds-x509`, "
        "verify-peer on), back to back in each run. TLS path: %s."
        % "; ".join(sorted(set(r["path"] for r in rs))),
        "",
        "\n".join(lines),
    ])


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
    ceil_md = ceilings_section(binary, accel, results)  # right after the rows it judges
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
    ratios = [r["gap_ratio"] for r in results.get("ws64", []) if r["gap_ratio"] == r["gap_ratio"]]
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
        "",
        ceil_md,
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
    results, ceil = LAST_RUN.get(accel) or ({}, None)
    if ceil is None:
        ceil = measure_ceilings(binary)
        LAST_RUN[accel] = (results, ceil)
    lines = ["| transport | GB/s on the wire | total (ms) | downtime (ms) | "
             "target placement (GB/s) | ÷ %s, same threads |" % MIGRATION_CEILING,
             "|---|---|---|---|---|---|"]
    for title, channels in MULTIFD_ROWS:
        rs = []
        for i in range(runs):
            r = one_multifd(binary, channels)
            rs.append(r)
            print("bench: %-4s %-13s run %d: %.2f GB/s, total %d ms, placement %.2f GB/s"
                  % (accel, title, i + 1, r["gbps"], r["total_ms"], r["place_gbps"]),
                  flush=True)
        # The plot's points: channels against GB/s (plot.points_from_results).
        if channels:
            results["multifd %d" % channels] = rs
        c = ceil.get((MIGRATION_CEILING, channels or 1))
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            title, span([r["gbps"] for r in rs], "%.2f"), span([r["total_ms"] for r in rs], "%d"),
            span([r["downtime_ms"] for r in rs], "%d"),
            span([r["place_gbps"] for r in rs], "%.2f") if channels else "n/a",
            span([r["gbps"] / c for r in rs], "%.2f") if c else "–"))
    return "\n".join([
        "## Multifd on %s" % accel,
        "",
        "Produced by `python3 tests/bench/run.py --only multifd --runs %d` on %s: a 1 GiB "
        "guest that wrote 768 MiB of random data (`ws=0 fill=768`), TCP over 127.0.0.1, "
        "record CRCs on, no compression; both sides with the same channel count. "
        "Machine: %s." % (runs, datetime.date.today().isoformat(), machine_notes()),
        "",
    ] + lines)


XBZRLE_METRICS = [("mib", "transferred (MiB)", "%.1f"),
                  ("paused_mib", "sent while paused, the last pass (MiB)", "%.2f"),
                  ("downtime_ms", "downtime (ms)", "%.0f"),
                  ("passes", "passes (dirty syncs)", "%.0f"), ("total_ms", "total time (ms)", "%.0f")]


# The two 64 MiB writers: whole pages of fresh data, and counter updates
# (wsdelta=1: 16 bytes of each page change per rewrite).
XBZRLE_GUESTS = [("ws64", "ws=64 tick_ms=200", "rewrites each page whole with new pseudo-random "
                  "data: a page found in the cache overflows, and what XBZRLE saves is pages "
                  "dirtied but unchanged since they were sent"),
                 ("ws64-delta", "ws=64 wsdelta=1 tick_ms=200", "rewrites each page whole "
                  "but changes only its 16-byte pass stamp (`wsdelta=1`), as counters and "
                  "headers change: what XBZRLE is for")]


def one_xbzrle(binary, xbzrle, append):
    """A ws64 migration, with or without XBZRLE (64 MiB cache), once the guest
    has rewritten its working set twice (all of it populated: the steady state)."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append=append)
        dst = lab.target("-m", "1G")
        src.wait_running(timeout=60)
        last = ternlib.warm_up(src, 64)
        if xbzrle:
            src.qmp.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": "xbzrle", "state": True}])
            src.qmp.cmd("migrate-set-parameters", **{"xbzrle-cache-size": 64 * MiB})
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, timeout=300)
        if info["status"] != "completed":
            raise RuntimeError("migration %s: %s" % (info["status"], info.get("error-desc")))
        ticks = dst.serial.wait_ticks(3, timeout=20, proc=dst.proc)
        if any(t["errors"] for t in ticks) or ticks[0]["tick"] <= last["tick"]:
            raise RuntimeError("guest unhealthy after migration: %s" % ticks)
        r = {"mib": info["ram"]["transferred"] / MiB, "downtime_ms": info["downtime"],
             "paused_mib": info["ram"]["downtime-bytes"] / MiB,
             "passes": info["ram"]["dirty-sync-count"], "total_ms": info["total-time"]}
        r["xbzrle"] = info.get("xbzrle-cache", {})
        return r


def bench_xbzrle(binary, accel, runs):
    """Each XBZRLE_GUESTS writer with and without XBZRLE, interleaved run by run;
    returns the doc section."""
    ternlib.ACCEL = accel
    ternlib.SLOW = 4 if accel == "emu" else 1
    out = ["## XBZRLE on %s" % ("KVM (%s)" % machine_kvm_flavour() if accel == "kvm"
                                else "the software CPU (-accel emu)"),
           "",
           "Produced by `python3 tests/bench/run.py --only xbzrle --runs %d` on %s."
           % (runs, datetime.date.today().isoformat()),
           "",
           "A 1 GiB guest rewriting 64 MiB (all of it rewritten twice first), default "
           "parameters, migrated without and with `migrate_set_capability xbzrle on` "
           "(cache 64 MiB), alternately."]
    for name, append, what in XBZRLE_GUESTS:
        res = {False: [], True: []}
        for i in range(runs):
            for on in (False, True):
                try:
                    r = one_xbzrle(binary, on, append)
                except Exception as e:
                    sys.exit("bench: %s %s xbzrle=%s run %d failed: %s: %s" % (
                        accel, name, on, i + 1, type(e).__name__, e))
                res[on].append(r)
                print("bench: %-4s %s xbzrle %-3s run %d: %s %s" % (
                    accel, name, "on" if on else "off", i + 1, ", ".join(
                        "%s %s" % (k, fmt % r[k]) for k, _, fmt in XBZRLE_METRICS),
                    r["xbzrle"] or ""), flush=True)
        lines = ["| XBZRLE | metric | min – max, %d runs |" % runs, "|---|---|---|"]
        for on in (False, True):
            for key, label, fmt in XBZRLE_METRICS:
                lines.append("| %s | %s | %s |" % ("on" if on else "off", label,
                                                   span([r[key] for r in res[on]], fmt)))
        ratios = [a["mib"] / b["mib"] for a, b in zip(res[False], res[True]) if b["mib"]]
        paused = [a["paused_mib"] / b["paused_mib"] for a, b in zip(res[False], res[True])
                  if b["paused_mib"]]
        out += ["", "### `%s` (`%s`)" % (name, append), "",
                "The guest %s." % what, "", "\n".join(lines), "",
                "Bytes without / with XBZRLE, run by run: %s in all (the first pass sends "
                "every page whole either way); %s of those sent while paused." % (
                    span(ratios, "%.2f") if ratios else "n/a",
                    span(paused, "%.1f") if paused else "n/a")]
    return "\n".join(out)


# ---- Ceilings: the host's best, measured in the same run (tests/bench/ceilings) ----

CEILING_MIB = 768
# A migration's ceiling: RAM -> loopback TCP -> a never-touched memfd, the
# receiver writing through the memfd (faster here than receiving straight
# into the fresh mapping, ram-tcp-fresh-ram, which faults and zeroes each
# page first): the best any VMM could do on this host.
MIGRATION_CEILING = "ram-tcp-memfd"
CEILING_THREADS = (1, 2, 4)
# Threads a restore reads with (channel_file_read_batch(): the CPUs, at most 8).
RESTORE_THREADS = max(1, min(os.cpu_count() or 1, 8))
PLOT_NAME = "bench-channels.png"
# Per accelerator: (results, ceilings) of the last bench_accel(), for the plot.
LAST_RUN = {}


CEILING_REPEATS = 3


def measure_ceilings(binary):
    """Run tests/bench/ceilings beside (binary) CEILING_REPEATS times; the best
    of each, as a ceiling is what the host can do at best (a shared host's
    noise only ever lowers a measurement). {(name, threads): GB/s}."""
    tool = os.path.join(os.path.dirname(binary), "tests", "bench", "ceilings")
    if not os.path.exists(tool):
        print("bench: %s missing: no ceilings" % tool, flush=True)
        return {}
    ceil = {}
    for _ in range(CEILING_REPEATS):
        out = subprocess.run([tool, str(CEILING_MIB)] + [str(t) for t in CEILING_THREADS],
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            print("bench: ceilings failed: %s" % out.stderr.strip(), flush=True)
        for line in out.stdout.splitlines():
            row = json.loads(line)
            key = (row["ceiling"], row["threads"])
            ceil[key] = max(ceil.get(key, 0.0), row["gb_per_s"])
    print("bench: ceilings: %s" % ", ".join("%s/%d %.2f" % (n, t, v)
                                             for (n, t), v in sorted(ceil.items())), flush=True)
    return ceil


def ceilings_table(ceil):
    names = []
    for name, _ in ceil:
        if name not in names:
            names.append(name)
    lines = ["| ceiling (GB/s) | %s |" % " | ".join("%d thread%s" % (t, "" if t == 1 else "s")
                                                   for t in CEILING_THREADS),
             "|---|%s" % ("---|" * len(CEILING_THREADS))]
    for name in names:
        lines.append("| %s | %s |" % (name, " | ".join(
            "%.2f" % ceil[(name, t)] if (name, t) in ceil else "–" for t in CEILING_THREADS)))
    return "\n".join(lines)


def checkpoint_save_gbps(r):
    """A checkpoint's write rate: the bytes it allocated on disk over its total time."""
    return r["alloc_mib"] * MiB / (r["total_ms"] / 1000) / 1e9 if r["total_ms"] else float("nan")


def fraction_rows(results, ceil):
    """Each throughput row of (results) as a fraction of its ceiling."""
    rows = []  # (label, [GB/s per run], ceiling name, threads)
    if "fill768" in results:
        rows.append(("live migration, 768 MiB, single stream",
                     [r["gbps"] for r in results["fill768"]], MIGRATION_CEILING, 1))
    for name, runs in results.items():
        m = re.search(r"multifd\D*(\d+)", name)
        if m and runs and "gbps" in runs[0]:
            n = int(m.group(1))
            rows.append(("live migration, %s (%d channels)" % (name, n),
                         [r["gbps"] for r in runs], MIGRATION_CEILING, n))
    if "ck-fill768" in results:
        ck = results["ck-fill768"]
        rows.append(("checkpoint save, 768 MiB (allocated bytes / total time)",
                     [checkpoint_save_gbps(r) for r in ck], "file-write-direct", RESTORE_THREADS))
        rows.append(("checkpoint restore, 768 MiB (%d reading threads)" % RESTORE_THREADS,
                     [r["restore_gbps"] for r in ck], "first-touch", RESTORE_THREADS))
    lines = ["| row | GB/s | ceiling | ceiling GB/s | fraction |", "|---|---|---|---|---|"]
    for label, vals, cname, threads in rows:
        c = ceil.get((cname, threads))
        frac = span([v / c for v in vals], "%.2f") if c else "–"
        lines.append("| %s | %s | %s, %d thread%s | %s | %s |" % (
            label, span(vals, "%.2f"), cname, threads, "" if threads == 1 else "s",
            "%.2f" % c if c else "not measured", frac))
    return "\n".join(lines)


def ceilings_section(binary, accel, results):
    """bench_accel()'s hook: measure the ceilings now, return their tables."""
    ceil = measure_ceilings(binary)
    LAST_RUN[accel] = (results, ceil)
    return "\n".join([
        "### Against this host's ceilings (%s)" % accel,
        "",
        "`tests/bench/ceilings %d %s`, run %d times right after the rows above, the best "
        "of each: memcpy, CRC-32, first-touch writes into a fresh memfd (a target's RAM), "
        "loopback TCP, RAM -> TCP -> fresh RAM (received straight into a fresh mapping, or "
        "into a hot buffer and written into a fresh memfd: the latter, faster, is the "
        "migration ceiling), and O_DIRECT writes and reads of a file in /var/tmp (a "
        "checkpoint's disk). Each throughput row as a fraction of its ceiling, run by run."
        % (CEILING_MIB, " ".join(str(t) for t in CEILING_THREADS), CEILING_REPEATS),
        "",
        ceilings_table(ceil) if ceil else "(ceilings not measured)",
        "",
        fraction_rows(results, ceil),
    ] + ([] if accel != plot_accel() else [
        "",
        "![Migration throughput against channel count, beside the ceilings](%s)" % PLOT_NAME,
        "",
        "The plot (`tests/bench/plot.py`): migration throughput against the number of "
        "channels, 1 (the single stream, `fill768`, and multifd with one channel) and 2 and "
        "4 (multifd-channels, from the multifd section), beside the ceilings measured in the "
        "same run.",
    ]))


def plot_accel():
    """The accelerator whose run the plot shows: KVM where there is one."""
    return "kvm" if os.path.exists("/dev/kvm") else "emu"


def write_plot(doc):
    """main()'s hook: the throughput-against-channels plot beside (doc), from the
    first accelerator measured (KVM where there is one)."""
    # One plot, of the accelerator the doc shows it with (KVM where there is
    # one): a run of the other alone leaves it as it is.
    accel = plot_accel()
    if accel not in LAST_RUN:
        return
    results, ceil = LAST_RUN[accel]
    try:
        import plot
    except ImportError as e:
        print("bench: no plot (%s)" % e, flush=True)
        return
    path = os.path.join(os.path.dirname(doc), PLOT_NAME)
    try:
        missing = plot.plot_channels(plot.points_from_results(results), ceil, path,
                                     "Migration of 768 MiB on %s, %s" % (
                                         accel, datetime.date.today().isoformat()))
    except ImportError as e:
        print("bench: no plot: %s (make bench installs python3-matplotlib)" % e, flush=True)
        return
    print("bench: wrote %s%s" % (os.path.relpath(path), "; channel counts not measured: %s"
                                 % ", ".join(map(str, missing)) if missing else ""), flush=True)


def select_scenarios(names):
    """--scenarios: keep only these of SCENARIOS (e.g. fill768,ck-fill768)."""
    if not names:
        return
    want = names.split(",")
    unknown = [n for n in want if n not in [s[0] for s in SCENARIOS]]
    if unknown:
        sys.exit("bench: unknown scenarios: %s" % ", ".join(unknown))
    SCENARIOS[:] = [s for s in SCENARIOS if s[0] in want]


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
    ap.add_argument("--only", choices=["migration", "cpr", "tls", "xbzrle", "multifd"],
                    help="only one scenario: the migrations, the cpr-transfer hand-over, TLS, "
                    "XBZRLE or multifd")
    ap.add_argument("--scenarios", help="comma-separated migration scenarios to run (default all)")
    args = ap.parse_args()
    select_scenarios(args.scenarios)
    accels = args.accel or (["kvm"] if os.path.exists("/dev/kvm") else []) + ["emu"]
    binary = os.path.abspath(args.tern)
    for accel in accels:
        print("bench: measuring on accelerator %s" % accel, flush=True)
        sections = []
        if args.only in (None, "migration"):
            sections.append((accel, bench_accel(
                binary, accel, args.runs,
                os.path.abspath(args.baseline) if args.baseline and accel == "kvm" else None)))
        if args.only in (None, "multifd"):
            sections.append(("multifd-" + accel, bench_multifd(binary, accel, args.runs)))
        if args.only in (None, "xbzrle"):
            sections.append(("xbzrle-" + accel, bench_xbzrle(binary, accel, args.runs)))
        if args.only in (None, "cpr"):
            sections.append(("cpr-" + accel, bench_cpr(binary, accel, args.runs)))
        if args.only in (None, "tls"):
            sections.append(("tls-" + accel, bench_tls(binary, accel, args.runs)))
        for key, section in sections:
            print()
            print(section)
            if not args.no_doc:
                write_doc(args.doc, section, key)
                print("\nbench: wrote %s" % os.path.relpath(args.doc))
    if not args.no_doc:
        write_plot(args.doc)


if __name__ == "__main__":
    main()
