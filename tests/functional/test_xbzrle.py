#!/usr/bin/env python3
"""XBZRLE delta pages and zstd page compression on the migration stream, driven
as a user drives them: capability xbzrle, xbzrle-cache-size, multifd-compression;
the target's RAM digest equals the source's and the guest keeps running.
"""
from ternlib import (assert_guest_moved, Hmp, Lab, live_ticks, run_tests, start_migration,
                     status, wait_migration, wait_migration_status, warm_up)

MiB = 1 << 20
TICK = "tick_ms=200"
XBZRLE_KEYS = ("cache-size", "bytes", "pages", "cache-miss", "cache-miss-rate", "encoding-rate",
               "overflow")


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


def digest(vm):
    d = vm.qmp.cmd("x-query-ram-digest")
    assert d["algorithm"] == "crc32" and len(d["digest"]) > 0, d
    return d


def migrate_checked(src, dst, last, mem_mib, caps=(), **params):
    """Migrate to a paused (-S) target, compare RAM digests, resume the target
    and check the guest moved. Returns query-migrate."""
    if caps:
        src.qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": c, "state": True} for c in caps])
    if params:
        src.qmp.cmd("migrate-set-parameters", **params)
    start_migration(src.qmp, dst.uri)
    info = wait_migration(src.qmp, 60)
    assert info["status"] == "completed", info
    wait_migration_status(dst.qmp, "completed", 10)
    assert status(dst) == "paused", dst.qmp.cmd("query-status")
    d_src, d_dst = digest(src), digest(dst)
    assert d_src["bytes"] == d_dst["bytes"] == mem_mib * MiB, (d_src, d_dst)
    assert d_src["digest"] == d_dst["digest"], "RAM differs: source %s, target %s" % (d_src, d_dst)
    dst.qmp.cmd("cont")
    dst.qmp.wait_event("RESUME", 10)
    assert_guest_moved(last, dst, n=3)
    return info


def test_xbzrle_rewriting_guest(binary):
    """A guest rewriting 32 MiB, 3 live passes: pages of passes 2+ are found in
    the cache (the guest rewrites them whole, so most overflow to full pages)."""
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=32 " + TICK)
        dst = lab.target("-m", "512M", paused=True)
        src.wait_running()
        last = warm_up(src, 32)
        info = migrate_checked(src, dst, last, 512, caps=["xbzrle"], x_passes=3,
                               xbzrle_cache_size=64 * MiB)
        x = info.get("xbzrle-cache")
        assert x, "query-migrate lacks xbzrle-cache with the capability on: %s" % info
        missing = [k for k in XBZRLE_KEYS if k not in x]
        assert not missing, "xbzrle-cache lacks %s: %s" % (missing, x)
        assert x["cache-size"] == 64 * MiB, x
        assert x["cache-hits"] > 0, "no page found in the cache over 3 passes: %s" % x
        assert x["pages"] + x["overflow"] <= x["cache-hits"], x
        assert 0 <= x["cache-miss-rate"] <= 1, x
        note("ws=32: %.1f MiB sent; xbzrle %s", info["ram"]["transferred"] / MiB, x)


def test_xbzrle_idle_guest_deltas(binary):
    """An idle guest: the few pages it dirties change by a few bytes, so they
    go as small deltas; HMP info migrate shows QEMU's xbzrle lines."""
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=0 fill=40 " + TICK, hmp=True)
        dst = lab.target("-m", "256M", paused=True)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        h = Hmp(src.hmp_path)
        try:
            h.run("migrate_set_capability xbzrle on")
            h.run("migrate_set_parameter xbzrle-cache-size 64M")
            # The fill (written once, before the guest runs) makes pass 1 take
            # ~2 s at 20 MiB/s: the guest's clock and report pages change by a
            # few bytes meanwhile, and go again in pass 2 as deltas. The cache
            # holds every page of the fill and the guest's own.
            info = migrate_checked(src, dst, last, 256, x_passes=3, max_bandwidth=20 * MiB)
            text = h.run("info migrate")
        finally:
            h.close()
        x = info["xbzrle-cache"]
        assert x["cache-size"] == 64 * MiB, x
        assert x["pages"] > 0 and x["bytes"] > 0, "no delta page sent: %s" % x
        assert x["encoding-rate"] > 1, x
        for line in ("cache size: 67108864 bytes", "xbzrle pages:", "xbzrle cache miss:",
                     "xbzrle overflow:", "xbzrle encoding rate:", "xbzrle cache hits:"):
            assert line in text, "info migrate lacks %r:\n%s" % (line, text)
        note("idle: xbzrle %s", x)


def test_zstd_compression(binary):
    """multifd-compression zstd on the single stream: pages arrive intact."""
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=8 fill=16 " + TICK)
        dst = lab.target("-m", "256M", paused=True)
        src.wait_running()
        last = warm_up(src, 8)
        info = migrate_checked(src, dst, last, 256, multifd_compression="zstd",
                               multifd_zstd_level=1, x_passes=2)
        p = src.qmp.cmd("query-migrate-parameters")
        assert p["multifd-compression"] == "zstd", p
        assert "xbzrle-cache" not in info, info
        note("zstd: %.1f MiB sent, %d pages", info["ram"]["transferred"] / MiB,
             info["ram"]["normal"])


if __name__ == "__main__":
    run_tests([
        ("xbzrle, ws=32, x-passes 3", test_xbzrle_rewriting_guest),
        ("xbzrle, idle guest, HMP", test_xbzrle_idle_guest_deltas),
        ("zstd page compression", test_zstd_compression),
    ])
