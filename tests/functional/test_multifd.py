#!/usr/bin/env python3
"""Multifd: guest pages over several connections at once, as a user sets it up
(QEMU's capability multifd, multifd-channels, multifd-compression on both
sides, the target with -incoming defer). Judged by the RAM digest of both
sides, the guest's own ticks on the target, and the source's health when the
migration is refused or a channel breaks.
"""
import gzip
import json
import os
import shutil
import time

import ternlib
from faultproxy import Fault, FaultProxy, Trigger
from ternlib import (assert_guest_moved, assert_source_unharmed, assert_target_refused, Lab,
                     live_ticks, run_tests, start_migration, status, wait_migration,
                     wait_migration_status, wait_until)

MiB = 1 << 20
TICK = "tick_ms=200"
BANDWIDTH = 20 * 1000 * 1000    # bytes/s: keeps a 32 MiB fill in flight for seconds


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


def set_multifd(vm, channels, compression="none", **params):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": "multifd", "state": True}])
    vm.qmp.cmd("migrate-set-parameters", multifd_channels=channels,
               multifd_compression=compression, **params)




def incoming(dst, channels, compression="none"):
    set_multifd(dst, channels, compression)
    dst.qmp.cmd("migrate-incoming", uri=dst.uri)


def digest(vm):
    return vm.qmp.cmd("x-query-ram-digest")


def round_trip(binary, channels, compression="none", append="ws=16", mem="256M", **params):
    """A rewriting 2-vCPU guest over (channels) channels; equal RAM, guest moved."""
    with Lab(binary) as lab:
        src = lab.source("-m", mem, "-smp", "2", append="%s cpus=2 %s" % (append, TICK))
        dst = lab.start("dst", ["-m", mem, "-smp", "2", "-S", "-incoming", "defer"])
        port = ternlib.free_port()
        dst.uri = ternlib.tcp_uri(port)
        incoming(dst, channels, compression)
        src.wait_running(timeout=60)
        last = live_ticks(src, 2)[-1]
        set_multifd(src, channels, compression, **params)
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 120)
        assert info["status"] == "completed", info
        wait_migration_status(dst.qmp, "completed", 10)
        d_src, d_dst = digest(src), digest(dst)
        assert d_src["digest"] == d_dst["digest"], "RAM differs: %s, %s" % (d_src, d_dst)
        mf = info["x-multifd"]
        assert mf["channels"] == channels, mf
        per = [c["bytes"] for c in mf["channel-stats"]]
        assert len(per) == channels and all(b > 0 for b in per), mf
        assert info["ram"]["multifd-bytes"] == sum(per), info["ram"]
        dinfo = dst.qmp.cmd("query-migrate")
        dmf = dinfo["x-multifd"]
        assert dmf["placed-bytes"] > 0, dinfo
        hmp = src.qmp.hmp("info migrate")
        assert "multifd channel %d" % (channels - 1) in hmp, hmp
        dst.qmp.cmd("cont")
        ticks = assert_guest_moved(last, dst)
        assert status(src) == "postmigrate"
        rate = dmf["placement-rate"] / 1e9
        note("%d channels, %s: %.1f MiB over the channels %s, %d passes, downtime %d ms, "
             "placement %.2f GB/s%s", channels, compression, sum(per) / MiB,
             [round(b / MiB, 1) for b in per], info["ram"]["dirty-sync-count"],
             info["downtime"], rate,
             (", compression rate %.2f" % info["compression"]["compression-rate"])
             if "compression" in info else "")
        return info, ticks


def test_two_channels(binary):
    round_trip(binary, 2, x_passes=2)


def test_four_channels(binary):
    round_trip(binary, 4, x_passes=2)


def test_zstd(binary):
    # fill=8: 8 MiB of random (incompressible) data, sent raw in its batches.
    info, _ = round_trip(binary, 2, "zstd", append="ws=4 fill=8", x_passes=2)
    c = info["compression"]
    assert c["compression-rate"] > 1.0, c


def test_zlib(binary):
    info, _ = round_trip(binary, 2, "zlib", append="ws=4 fill=4", x_passes=2)
    assert info["compression"]["pages"] > 0, info["compression"]


def test_hmp_parameters(binary):
    """The user's HMP lines (QEMU's names) land in query-migrate-parameters/-capabilities."""
    with Lab(binary) as lab:
        vm = lab.start("vm", ["-m", "64M", "-incoming", "defer"])
        for line in ("migrate_set_capability multifd on",
                     "migrate_set_parameter multifd-channels 4",
                     "migrate_set_parameter multifd-compression zstd",
                     "migrate_set_parameter multifd-zstd-level 3",
                     "migrate_set_parameter multifd-zlib-level 6"):
            out = vm.qmp.hmp(line)
            assert not out.strip(), (line, out)
        p = vm.qmp.cmd("query-migrate-parameters")
        assert (p["multifd-channels"], p["multifd-compression"], p["multifd-zstd-level"],
                p["multifd-zlib-level"]) == (4, "zstd", 3, 6), p
        caps = vm.qmp.cmd("query-migrate-capabilities")
        assert {"capability": "multifd", "state": True} in caps, caps
        out = vm.qmp.hmp("migrate_set_parameter multifd-channels 17")
        assert "multifd-channels" in out, out
        out = vm.qmp.hmp("migrate_set_parameter multifd-compression lz4")
        assert "multifd-compression" in out, out


def test_channel_count_mismatch(binary):
    """A target set up for 2 channels refuses a 4-channel stream; the source runs on."""
    with Lab(binary) as lab:
        src = lab.source("-m", "64M", append="ws=2 " + TICK)
        dst = lab.start("dst", ["-m", "64M", "-incoming", "defer"])
        dst.uri = ternlib.tcp_uri(ternlib.free_port())
        incoming(dst, 2)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        set_multifd(src, 4)
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == "failed", info
        err = info.get("error-desc", "")
        assert "4 channel(s)" in err and "2 channel(s)" in err, err
        assert_target_refused(dst)
        assert_source_unharmed(src, last)
        note("refused: %s", err)


def test_single_stream_to_multifd_target(binary):
    """Multifd on the target only: refused with a clear message, the source runs on,
    the target waits on."""
    with Lab(binary) as lab:
        src = lab.source("-m", "64M", append="ws=2 " + TICK)
        dst = lab.start("dst", ["-m", "64M", "-incoming", "defer"])
        dst.uri = ternlib.tcp_uri(ternlib.free_port())
        incoming(dst, 2)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == "failed", info
        assert "multifd" in info.get("error-desc", ""), info
        # Refused at its stream header: dropped, the target waits for a source
        # set up like itself.
        assert "multifd" in ternlib.assert_target_waits(dst)
        assert_source_unharmed(src, last)


def faulty_channel(binary, action, offset, conn, channels=2):
    """(action) at octet (offset) of multifd connection (conn) (1..channels; 0 is
    the main stream) through faultproxy: the migration fails, the source runs on,
    the target never runs the guest."""
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", "-smp", "2", append="ws=16 cpus=2 " + TICK)
        dst = lab.start("dst", ["-m", "256M", "-smp", "2", "-incoming", "defer"])
        port = ternlib.free_port()
        dst.uri = ternlib.tcp_uri(port)
        incoming(dst, channels)
        src.wait_running(timeout=60)
        last = live_ticks(src, 2)[-1]
        with FaultProxy(port, Fault(action, Trigger.offset(offset), conn=conn),
                        connections=1 + channels) as proxy:
            set_multifd(src, channels, x_passes=2)
            start_migration(src.qmp, ternlib.tcp_uri(proxy.port))
            info = wait_migration(src.qmp, 60)
            assert proxy.fault.fired.is_set(), "the fault never fired: %s" % proxy.log
        assert info["status"] == "failed", info
        assert_target_refused(dst)
        assert_source_unharmed(src, last)
        err = [l for l in dst.stderr().splitlines() if "failed" in l]
        note("%s on channel %d: source: %s; target: %s", action, conn - 1,
             info.get("error-desc"), err[-1] if err else "?")
        return info, dst.stderr()


def test_cut_one_channel(binary):
    faulty_channel(binary, "cut", 300000, conn=2)


def test_corrupt_one_channel(binary):
    _, err = faulty_channel(binary, "corrupt", 400000, conn=1)
    assert "CRC mismatch" in err, err[-500:]


def test_kill_target(binary):
    """The target dies while 2 channels carry pages: the source runs on."""
    slow_then(binary, lambda src, dst: dst.kill(), "failed")


def test_cancel(binary):
    """migrate_cancel while 2 channels carry pages under max-bandwidth (which they
    share, and keep to): the source runs on."""
    def measure_then_cancel(src, dst):
        def sent():
            return src.qmp.cmd("query-migrate")["ram"]["multifd-bytes"]
        b0, t0 = sent(), time.time()
        time.sleep(1.0)
        rate = (sent() - b0) / (time.time() - t0)
        assert rate < 1.5 * BANDWIDTH, "%.1f MB/s over a %.0f MB/s limit" % (
            rate / 1e6, BANDWIDTH / 1e6)
        note("2 channels under max-bandwidth %.0f MB/s: %.1f MB/s", BANDWIDTH / 1e6, rate / 1e6)
        src.qmp.cmd("migrate_cancel")
    slow_then(binary, measure_then_cancel, "cancelled")


def slow_then(binary, act, outcome):
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", "-smp", "2", append="ws=8 fill=32 cpus=2 " + TICK)
        dst = lab.start("dst", ["-m", "256M", "-smp", "2", "-incoming", "defer"])
        dst.uri = ternlib.tcp_uri(ternlib.free_port())
        incoming(dst, 2)
        src.wait_running(timeout=60)
        last = live_ticks(src, 2)[-1]
        set_multifd(src, 2, max_bandwidth=BANDWIDTH)
        start_migration(src.qmp, dst.uri)

        def both_busy():
            mf = src.qmp.cmd("query-migrate").get("x-multifd")
            return mf and all(c["bytes"] > (1 << 20) for c in mf["channel-stats"])
        wait_until(both_busy, 30, "both channels carrying pages")
        act(src, dst)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == outcome, info
        assert_source_unharmed(src, last)
        note("%s: %s", outcome, info.get("error-desc"))


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def test_v1_checkpoint_loads(binary):
    """A checkpoint written by Tern before multifd (tests/data, software CPU: its
    CPUID is the same on every host) restores: same RAM digest, the guest ticks on."""
    meta = json.load(open(os.path.join(DATA, "v1-checkpoint-16M-emu.json")))
    saved, ternlib.ACCEL = ternlib.ACCEL, meta["accel"]
    try:
        with Lab(binary) as lab:
            path = os.path.join(lab.dir, "v1.tern")
            with gzip.open(os.path.join(DATA, "v1-checkpoint-16M-emu.tern.gz")) as g, \
                    open(path, "wb") as f:
                shutil.copyfileobj(g, f)
            vm = lab.start("dst", ["-m", meta["mem"], "-S", "-incoming", "file:" + path])
            wait_until(lambda: vm.qmp.cmd("query-migrate").get("status") == "completed", 30,
                       "the restore")
            d = digest(vm)
            assert d == meta["digest"], "RAM differs from the file's source: %s, %s" % (
                d, meta["digest"])
            vm.qmp.cmd("cont")
            ticks = live_ticks(vm, 2, skip_old=False)
            first = int(meta["last_tick_line"].split()[1])
            assert ticks[0]["tick"] > first, (meta["last_tick_line"], ticks)
            note("v1 checkpoint: digest %s, ticks on from %d", d["digest"], ticks[0]["tick"])
    finally:
        ternlib.ACCEL = saved


if __name__ == "__main__":
    run_tests([
        ("2 channels, rewriting guest", test_two_channels),
        ("4 channels, rewriting guest", test_four_channels),
        ("zstd, incompressible data", test_zstd),
        ("zlib, incompressible data", test_zlib),
        ("HMP parameters and capability", test_hmp_parameters),
        ("channel count mismatch", test_channel_count_mismatch),
        ("single stream to multifd target", test_single_stream_to_multifd_target),
        ("v1 checkpoint (before multifd) loads", test_v1_checkpoint_loads),
        ("cut one channel of 2", test_cut_one_channel),
        ("corrupt one channel of 2", test_corrupt_one_channel),
        ("kill the target", test_kill_target),
        ("cancel", test_cancel),
    ])
