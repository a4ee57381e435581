#!/usr/bin/env python3
"""How much of the source's CPU a migration spends on CRC-32: `perf record` on
the source process while it migrates the 1 GiB guest holding 768 MiB of random
data (the fill768 scenario), then the share of samples in the CRC functions
(ISA-L's, which Tern uses; zlib's) and in memcpy. Runs a few times; prints ranges.

    python3 tests/bench/crc_share.py [--tern build/tern] [--runs 3] [--accel kvm]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "functional"))
import ternlib  # noqa: E402
from ternlib import Lab, start_migration, wait_migration  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
# CRC-32 by symbol (ISA-L's crc32_gzip_refl_by*, zlib's crc32) or, for a
# library without symbols, by the library; memcpy by symbol.
GROUPS = {"crc32": re.compile(r"libisal|crc32", re.I), "memcpy": re.compile(r"memcpy|memmove")}


def one(binary, multifd):
    """One fill768 migration with perf on the source; {group: share of samples}."""
    with Lab(binary) as lab, tempfile.TemporaryDirectory() as tmp:
        src = lab.source("-m", "1G", append="fill=768 tick_ms=200")
        dst = lab.start("dst", ["-m", "1G", "-incoming", "defer"])
        dst.uri = ternlib.tcp_uri(ternlib.free_port())
        for vm in (src, dst) if multifd else ():
            vm.qmp.cmd("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
            vm.qmp.cmd("migrate-set-parameters", multifd_channels=multifd)
        dst.qmp.cmd("migrate-incoming", uri=dst.uri)
        src.wait_running(timeout=60)
        src.serial.wait_ticks(2, proc=src.proc)
        data = os.path.join(tmp, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "-g", "-o", data,
                                 "-p", str(src.proc.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, timeout=300)
        perf.send_signal(2)
        perf.wait(timeout=30)
        if info["status"] != "completed":
            raise RuntimeError("migration %s" % info)
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort",
                              "dso,symbol", "--stdio", "-q"], capture_output=True, text=True).stdout
    shares = {g: 0.0 for g in GROUPS}
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if not m:
            continue
        for g, rx in GROUPS.items():
            if rx.search(m.group(2)):
                shares[g] += float(m.group(1))
    shares["gbps"] = info["ram"]["transferred"] / (info["total-time"] / 1000) / 1e9
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tern", default=os.path.join(ROOT, "build", "tern"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accel", default="kvm" if os.path.exists("/dev/kvm") else "emu")
    args = ap.parse_args()
    ternlib.ACCEL = args.accel
    ternlib.SLOW = 4 if args.accel == "emu" else 1
    for label, multifd in (("single stream", None), ("multifd 2", 2)):
        runs = [one(os.path.abspath(args.tern), multifd) for _ in range(args.runs)]
        print("%s on %s, %d runs: CRC-32 %.1f-%.1f %% of the source's samples, memcpy "
              "%.1f-%.1f %%, %.2f-%.2f GB/s" % (
                  label, args.accel, args.runs,
                  min(r["crc32"] for r in runs), max(r["crc32"] for r in runs),
                  min(r["memcpy"] for r in runs), max(r["memcpy"] for r in runs),
                  min(r["gbps"] for r in runs), max(r["gbps"] for r in runs)), flush=True)


if __name__ == "__main__":
    main()
