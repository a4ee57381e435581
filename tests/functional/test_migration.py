#!/usr/bin/env python3
"""Live migration between two tern processes on 127.0.0.1, driven as a user
drives it: QMP and HMP on the source, -incoming on the target, the guest's own
serial reports as the judge of whether it survived.

Every test starts its own processes in a fresh temporary directory, on free
ports, and closes them whatever happens (ternlib.Lab).
"""
import re
import socket
import struct
import threading

import ternlib
from ternlib import (assert_events_ordered, assert_guest_moved, assert_source_unharmed,
                     assert_target_waits,
                     assert_target_refused, assert_vcpus_busy, Hmp, Lab, live_ticks, QMPError,
                     run_tests, start_migration, status, tcp_uri, wait_migration,
                     wait_migration_status, wait_until, warm_up)

MiB = 1 << 20
GiB = 1 << 30
TICK = "tick_ms=200"
# Order in which the outgoing side may pass through the states (QEMU's names).
RAM_KEYS = ("transferred", "remaining", "total", "duplicate", "normal", "normal-bytes",
            "dirty-pages-rate", "dirty-sync-count", "mbps", "pages-per-second", "precopy-bytes",
            "downtime-bytes", "skipped")
SLOW_BANDWIDTH = 20 * 1000 * 1000      # bytes/s: keeps a 256 MiB fill in flight for ~13 s


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


# ---------------------------------------------------------------------------
# What a user would look at.



def migrate(src, dst_uri, timeout=90.0, **params):
    """Set parameters, start the migration, wait for its end; returns query-migrate."""
    if params:
        src.qmp.cmd("migrate-set-parameters", **params)
    start_migration(src.qmp, dst_uri)
    return wait_migration(src.qmp, timeout)


def assert_completed(info, src, dst):
    """A successful migration as a user sees it, on both sides."""
    assert info["status"] == "completed", info
    assert_events_ordered(src.qmp, "completed")
    wait_migration_status(dst.qmp, "completed", 10)
    assert status(src) == "postmigrate", src.qmp.cmd("query-status")
    for key in ("total-time", "downtime", "setup-time"):
        assert key in info, "query-migrate lacks %s: %s" % (key, info)
    # Whole milliseconds: an idle guest's switchover can take less than one.
    assert 0 <= info["downtime"] <= info["total-time"], info
    ram = info["ram"]
    missing = [k for k in RAM_KEYS if k not in ram]
    assert not missing, "query-migrate ram lacks %s: %s" % (missing, ram)
    assert ram["transferred"] > 0 and ram["remaining"] == 0, ram
    assert ram["dirty-sync-count"] >= 2, ram      # a first full pass, then the final one
    assert ram["precopy-bytes"] + ram["downtime-bytes"] <= ram["transferred"], ram


def describe(info, ticks=None):
    ram = info["ram"]
    s = ("total %d ms, downtime %d ms, setup %d ms, %.1f MiB sent, passes %d, %.0f Mbit/s"
         % (info["total-time"], info["downtime"], info.get("setup-time", 0),
            ram["transferred"] / MiB, ram["dirty-sync-count"], ram.get("mbps", 0)))
    if ticks:
        s += ", guest max gap %.1f ms" % (max(t["max_gap_us"] for t in ticks) / 1000)
    return s


# ---------------------------------------------------------------------------
# Successful migrations.

def test_idle_guest(binary):
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=0 " + TICK)
        dst = lab.target("-m", "1G")
        src.wait_running()
        assert status(dst) == "inmigrate", dst.qmp.cmd("query-status")
        last = live_ticks(src, 2)[-1]
        info = migrate(src, dst.uri)
        assert_completed(info, src, dst)
        ram = info["ram"]
        assert ram["total"] == GiB, ram
        # An idle guest touched a few MiB: holes and zero pages are not sent as pages.
        assert ram["transferred"] < 64 * MiB, "idle 1 GiB guest sent %d bytes" % ram["transferred"]
        ticks = assert_guest_moved(last, dst)
        # A user may take the guest back on the source (QEMU's `cont` after postmigrate).
        src.qmp.cmd("cont")
        assert status(src) == "running"
        live_ticks(src, 2)
        note(describe(info, ticks))


def rate_mib_per_tick(ticks):
    """MiB the guest rewrote per tick over (ticks)."""
    return (ticks[-1]["dirtied_mib"] - ticks[0]["dirtied_mib"]) / (len(ticks) - 1)


def test_rewriting_guest_forced_passes(binary):
    """x-passes 3: the migration provably sends the working set more than once."""
    ws = 64
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=%d %s" % (ws, TICK))
        dst = lab.target("-m", "1G")
        src.wait_running()
        last = warm_up(src, ws)
        src.qmp.cmd("migrate-set-parameters", x_passes=3)
        assert src.qmp.cmd("query-migrate-parameters")["x-passes"] == 3
        info = migrate(src, dst.uri)
        assert_completed(info, src, dst)
        passes = [ev["data"]["pass"] for ev in src.qmp.history if ev["event"] == "MIGRATION_PASS"]
        assert passes == list(range(1, len(passes) + 1)), "MIGRATION_PASS %s" % passes
        # Exactly 3 live passes, then the final sync of the paused guest.
        assert passes == [1, 2, 3, 4], "x-passes 3 gave MIGRATION_PASS %s" % passes
        assert info["ram"]["dirty-sync-count"] == 4, info["ram"]
        # Every page of RAM is accounted once as sent, zero or skipped (never touched);
        # the excess is pages the guest rewrote after they were sent, sent again.
        ram = info["ram"]
        resent = ram["normal"] + ram["duplicate"] + ram["skipped"] - ram["total"] // 4096
        assert resent * 4096 >= 1 * MiB, "only %d pages sent twice while the guest rewrote " \
            "%d MiB during 3 passes: %s" % (resent, ws, ram)
        ticks = assert_guest_moved(last, dst)
        assert ticks[-1]["dirtied_mib"] > last["dirtied_mib"], (last, ticks)
        note("x-passes 3: MIGRATION_PASS %s, %.1f MiB sent again; %s", passes,
             resent * 4096 / MiB, describe(info, ticks))


def test_rewriting_guest_default_policy(binary):
    """The default policy converges by itself under downtime-limit 300 ms."""
    limit = 300
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=64 " + TICK)
        dst = lab.target("-m", "1G")
        src.wait_running()
        last = warm_up(src, 64)
        info = migrate(src, dst.uri, downtime_limit=limit)
        assert_completed(info, src, dst)
        assert src.qmp.cmd("query-migrate-parameters")["downtime-limit"] == limit
        ticks = assert_guest_moved(last, dst)
        # The limit is a target, not a guarantee; three times it means the policy is broken.
        assert info["downtime"] <= 3 * limit, describe(info)
        note("downtime-limit %d: %s", limit, describe(info, ticks))


def test_auto_converge(binary):
    """Auto-converge: a guest rewriting 32 MiB against a 10 ms downtime limit at
    16 MiB/s cannot converge; its vCPUs get throttled step by step; once the
    link is opened up it completes, and the throttle ends with the migration.
    (The throttling rule itself is unit-tested in test-policy.)"""
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=32 " + TICK)
        dst = lab.target("-m", "512M")
        src.wait_running()
        warm_up(src, 32)
        before = live_ticks(src, 3)
        free_rate = rate_mib_per_tick(before)
        src.qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": "auto-converge", "state": True}])
        caps = src.qmp.cmd("query-migrate-capabilities")
        assert {"capability": "auto-converge", "state": True} in caps, caps
        # 32 MiB dirty needs ~25 ms in the pause: more than the 10 ms limit.
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=16 * MiB, downtime_limit=10,
                    cpu_throttle_initial=50, cpu_throttle_increment=25)
        start_migration(src.qmp, dst.uri)

        def throttled():
            info = src.qmp.cmd("query-migrate")
            assert info["status"] in ("setup", "active"), "ended before throttling: %s" % info
            return info if info.get("cpu-throttle-percentage", 0) >= 50 else None
        info = wait_until(throttled, 60, "a throttle of 50%", interval=0.1)
        note("throttled to %d%% after %d passes", info["cpu-throttle-percentage"],
             info["ram"]["dirty-sync-count"])
        last = src.serial.poll() and src.serial.lines[-1]
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=0)
        info = wait_migration(src.qmp, 120)
        assert_completed(info, src, dst)
        assert info.get("cpu-throttle-percentage", 0) >= 50, describe(info)
        ticks = live_ticks(dst, 3)
        assert all(t["errors"] == 0 for t in ticks), ticks
        # The target is not throttled: the guest writes there at least half as
        # fast as on the source before any throttling (on either accelerator).
        assert rate_mib_per_tick(ticks) >= free_rate / 2, (free_rate, ticks)
        note("auto-converge: throttle %d%%, %s (last source line: %s)",
             info["cpu-throttle-percentage"], describe(info, ticks), last)


def test_smp2_deferred_incoming(binary):
    """-smp 2, both vCPUs busy, target started with -incoming defer + migrate-incoming."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", "-smp", "2", append="ws=32 cpus=2 " + TICK)
        dst = lab.target("-m", "1G", "-smp", "2", defer=True)
        assert src.wait_running()["cpus"] == 2
        assert status(dst) == "inmigrate"
        last = live_ticks(src, 2)[-1]
        info = migrate(src, dst.uri)
        assert_completed(info, src, dst)
        ticks = assert_guest_moved(last, dst)
        cpus = dst.qmp.cmd("query-cpus-fast")
        assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
        # Both vCPU threads of the target run guest code (an idle vCPU halts
        # and burns ~nothing).
        assert_vcpus_busy(dst, 0.1)
        note(describe(info, ticks))


def digest(vm):
    d = vm.qmp.cmd("x-query-ram-digest")
    assert d["algorithm"] == "crc32" and len(d["digest"]) > 0, d
    return d


def check_ram_digest(binary, ws=32, **params):
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=%d %s" % (ws, TICK))
        dst = lab.target("-m", "512M", paused=True)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        info = migrate(src, dst.uri, **params)
        assert_completed(info, src, dst)
        assert status(dst) == "paused", dst.qmp.cmd("query-status")
        d_src, d_dst = digest(src), digest(dst)
        assert d_src["bytes"] == d_dst["bytes"] == 512 * MiB, (d_src, d_dst)
        assert d_src["digest"] == d_dst["digest"], "RAM differs: source %s, target %s" % (
            d_src, d_dst)
        src.serial.poll()
        src_lines = len(src.serial.lines)
        dst.qmp.cmd("cont")
        dst.qmp.wait_event("RESUME", 10)
        ticks = assert_guest_moved(last, dst, n=4)
        assert ticks[-1]["dirtied_mib"] > ticks[0]["dirtied_mib"], "workload stopped: %s" % ticks
        # The source gave up its copy: it stays paused and silent.
        assert status(src) == "postmigrate"
        src.serial.poll()
        assert len(src.serial.lines) == src_lines, "source guest ran after handing over: %s" % (
            src.serial.lines[src_lines:])
        note("digest %s over %d MiB; %s", d_src["digest"], d_src["bytes"] // MiB,
             describe(info, ticks))


def test_ram_digest(binary):
    check_ram_digest(binary)


def test_ram_digest_compressed_no_crc(binary):
    # zlib is slow next to the guest's dirty rate: switch over after 2 passes.
    check_ram_digest(binary, ws=8, compress_level=1, x_checksum=False, x_passes=2)


# ---------------------------------------------------------------------------
# Failures: the source keeps its guest, the target never runs a partial one.

def slow_source(lab, mem="512M", fill=256, hmp=False):
    """A source whose migration stays active for many seconds (random fill, 20 MB/s)."""
    src = lab.source("-m", mem, append="ws=8 fill=%d %s" % (fill, TICK), hmp=hmp)
    src.wait_running(timeout=60)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=SLOW_BANDWIDTH)
    return src


def start_and_wait_active(src, uri):
    start_migration(src.qmp, uri)
    wait_migration_status(src.qmp, "active", 30)
    # Live: the guest keeps printing while its RAM is being sent.
    live_ticks(src, 2)
    info = src.qmp.cmd("query-migrate")
    assert info["status"] == "active", "migration did not stay active: %s" % info
    return info


def test_cancel(binary):
    with Lab(binary) as lab:
        src = slow_source(lab)
        dst = lab.target("-m", "512M")
        start_and_wait_active(src, dst.uri)
        last = src.serial.wait_ticks(1, proc=src.proc)[-1]
        assert src.qmp.cmd("migrate_cancel") == {}
        info = wait_migration(src.qmp, 30)
        assert info["status"] == "cancelled", info
        assert_events_ordered(src.qmp, "cancelled")
        assert_source_unharmed(src, last)
        assert_target_refused(dst)
        # A second migration of the same guest, to a fresh target, at full speed.
        dst2 = lab.target("-m", "512M", name="dst2")
        last = src.serial.wait_ticks(1, proc=src.proc)[-1]
        info = migrate(src, dst2.uri, max_bandwidth=0)
        assert_completed(info, src, dst2)
        ticks = assert_guest_moved(last, dst2)
        note("after cancel: %s", describe(info, ticks))


def test_target_killed(binary):
    with Lab(binary) as lab:
        src = slow_source(lab)
        dst = lab.target("-m", "512M")
        start_and_wait_active(src, dst.uri)
        last = src.serial.wait_ticks(1, proc=src.proc)[-1]
        dst.kill()
        info = wait_migration(src.qmp, 30)
        assert info["status"] == "failed", info
        assert info.get("error-desc"), "failed without error-desc: %s" % info
        assert_events_ordered(src.qmp, "failed")
        assert_source_unharmed(src, last)
        note("source says: %s", info["error-desc"])


def test_mismatched_target(binary):
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=8 " + TICK)
        dst = lab.target("-m", "512M")
        src.wait_running()
        last = live_ticks(src, 1)[-1]
        info = migrate(src, dst.uri, timeout=30)
        assert info["status"] == "failed", info
        assert info.get("error-desc"), "failed without error-desc: %s" % info
        err = assert_target_waits(dst)
        assert "RAM" in err, "target's message does not mention RAM: %r" % err
        assert_source_unharmed(src, last)
        note("target: %s; source: %s", err.strip().splitlines()[-1], info["error-desc"])


def test_other_accelerator_refused(binary):
    """A VM running on KVM cannot move to the software CPU (nor back): the
    target refuses at VM_CONFIG, naming the accelerators, and the source runs on."""
    if ternlib.ACCEL != "kvm":
        print("# (runs in the kvm suite: it needs both accelerators)")
        return
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=8 " + TICK)
        ternlib.ACCEL = "emu"
        try:
            dst = lab.target("-m", "512M")
        finally:
            ternlib.ACCEL = "kvm"
        src.wait_running()
        last = live_ticks(src, 1)[-1]
        info = migrate(src, dst.uri, timeout=30)
        assert info["status"] == "failed", info
        assert "CPUID differs" in info.get("error-desc", "") and \
            "kvm or emu" in info["error-desc"], info
        assert_target_waits(dst)
        assert_source_unharmed(src, last)
        note("refused: %s", info["error-desc"])


class FlipProxy:
    """Forwards one TCP connection on 127.0.0.1 to the target, flipping one byte
    inside the body of the first PAGE_DATA record (source -> target only).

    It follows the record framing of docs/migration-stream.md (32-octet image
    header; records of 8 + align8(length) [+ 8 CRC trailer] octets) only until
    it has found that record; the rest is forwarded untouched."""

    PAGE_DATA = 3

    def __init__(self, target_port, timeout=120.0):
        self.target_port = target_port
        self.timeout = timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(timeout)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        self.lock = threading.Lock()
        # Parser state: stream offset of the next header, bytes of it so far, its size.
        self.offset = 0
        self.next = 0
        self.need = 32
        self.head = bytearray()
        self.crc = None
        self.index = 0
        self.flip_at = None
        self.flipped_at = None
        self.record = None          # (index, offset, length) of the record flipped
        self.error = None
        self.returned = threading.Event()   # the target -> source direction ended
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            a, _ = self.listener.accept()
            b = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError as e:
            self.error = e
            return
        finally:
            self.listener.close()
        for s in (a, b):
            s.settimeout(self.timeout)
        with self.lock:
            self.socks = [a, b]
        threading.Thread(target=self._pump, args=(a, b, self._scan), daemon=True).start()
        threading.Thread(target=self._pump, args=(b, a, None), daemon=True).start()

    def _pump(self, src, dst, scan):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(scan(data) if scan else data)
        except (OSError, ValueError) as e:
            if scan and self.error is None and not isinstance(e, OSError):
                self.error = e
            if scan and isinstance(e, OSError):
                # The target reset the connection: what it wrote before (its
                # ERROR) crosses first, as TCP would deliver it.
                self.returned.wait(1.0)
            self.close()
        finally:
            if not scan:
                self.returned.set()

    def _scan(self, data):
        data = bytearray(data)
        base, self.offset = self.offset, self.offset + len(data)
        while self.flip_at is None:
            pos = self.next + len(self.head) - base
            if pos >= len(data):
                break
            take = min(self.need - len(self.head), len(data) - pos)
            self.head += data[pos:pos + take]
            if len(self.head) < self.need:
                break
            self._header(bytes(self.head))
            self.head = bytearray()
        if self.flip_at is not None and self.flipped_at is None and \
                base <= self.flip_at < self.offset:
            data[self.flip_at - base] ^= 0xFF
            self.flipped_at = self.flip_at
        return data

    def _header(self, head):
        if self.need == 32:                         # the image header
            if head[:8] != b"TERNMIG\0":
                raise ValueError("not a Tern stream: %r" % head[:8])
            self.crc = bool(struct.unpack_from("<I", head, 12)[0] & 1)
            self.next, self.need = 32, 8
            return
        rtype, length = struct.unpack("<II", head)
        if rtype == self.PAGE_DATA:
            # Three quarters into the body: page payload, past the descriptors.
            self.flip_at = self.next + 8 + length * 3 // 4
            self.record = (self.index, self.next, length)
            return
        self.next += 8 + (length + 7) // 8 * 8 + (8 if self.crc else 0)
        self.index += 1

    def close(self):
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        try:
            self.listener.close()
        except OSError:
            pass


def test_flipped_byte(binary):
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=8 " + TICK)
        dst = lab.target("-m", "256M")
        proxy = FlipProxy(dst.port)
        try:
            src.wait_running()
            last = live_ticks(src, 1)[-1]
            info = migrate(src, tcp_uri(proxy.port), timeout=30)
            assert proxy.error is None, proxy.error
            assert proxy.crc, "stream header does not announce record CRCs"
            assert proxy.flipped_at is not None, "the proxy never saw PAGE_DATA: %s" % (
                proxy.record,)
            assert info["status"] == "failed", "corrupted stream: %s" % info
            assert info.get("error-desc"), info
            assert_target_refused(dst)
            err = dst.stderr()
            for word in ("record", "PAGE_DATA", "CRC"):
                assert word.lower() in err.lower(), "target's message lacks %r: %r" % (word, err)
            assert_source_unharmed(src, last)
            note("flipped stream octet %d in record #%d at offset %d; target: %s",
                 proxy.flipped_at, proxy.record[0], proxy.record[1],
                 err.strip().splitlines()[-1])
        finally:
            proxy.close()


def test_progress_while_active(binary):
    """query-migrate shows the migration moving: transferred grows, remaining shrinks."""
    with Lab(binary) as lab:
        src = slow_source(lab)
        dst = lab.target("-m", "512M")
        first = start_and_wait_active(src, dst.uri)
        src.serial.wait_ticks(3, proc=src.proc)         # 0.6 s at 20 MB/s: ~12 MB more
        then = src.qmp.cmd("query-migrate")
        assert then["status"] == "active", then
        assert "expected-downtime" in then, then
        a, b = first["ram"], then["ram"]
        assert b["transferred"] > a["transferred"] + 4 * MiB, \
            "transferred does not grow during pass 1: %s then %s" % (a, b)
        assert b["remaining"] > 100 * MiB, "remaining does not show what is left: %s" % b
        assert a["remaining"] == 0 or b["remaining"] < a["remaining"], (a, b)
        # The bandwidth limit holds (20 MB/s, with slack for bursts).
        rate = (b["transferred"] - a["transferred"]) / max(
            (then["total-time"] - first["total-time"]) / 1000, 0.001)
        assert rate < 2 * SLOW_BANDWIDTH, "%.1f MB/s under a 20 MB/s limit" % (rate / 1e6)
        src.qmp.cmd("migrate_cancel")
        assert wait_migration(src.qmp, 30)["status"] == "cancelled"


# ---------------------------------------------------------------------------
# HMP: the console a person types into.

def hmp_wait_completed(h, timeout=60.0):
    def completed():
        out = h.run("info migrate")
        assert not re.search(r"Migration status: (failed|cancelled)", out), out
        return out if "Migration status: completed" in out else None
    return wait_until(completed, timeout, "info migrate says completed", interval=0.1)


def test_hmp_detached(binary):
    """`migrate -d`, then `info migrate` until it says completed."""
    with Lab(binary) as lab:
        a = lab.source("-m", "256M", append="ws=4 " + TICK, hmp=True)
        b = lab.target("-m", "256M")
        a.wait_running()
        last = live_ticks(a, 1)[-1]
        h = Hmp(a.hmp_path)
        try:
            h.run("migrate_set_parameter downtime-limit 50")
            params = h.run("info migrate_parameters")
            assert any("downtime-limit" in l and "50" in l for l in params.splitlines()), params
            assert a.qmp.cmd("query-migrate-parameters")["downtime-limit"] == 50
            out = h.run("migrate -d " + b.uri)
            assert "error" not in out.lower(), out
            out = hmp_wait_completed(h)
            assert status(a) == "postmigrate"
            assert "postmigrate" in h.run("info status"), h.run("info status")
            assert_guest_moved(last, b)
            note("info migrate:\n       %s", "\n       ".join(out.splitlines()[:6]))
        finally:
            h.close()


def test_hmp_blocking(binary):
    """A blocking `migrate` returns when the migration has ended, saying so."""
    with Lab(binary) as lab:
        a = lab.source("-m", "256M", append="ws=4 " + TICK, hmp=True)
        b = lab.target("-m", "256M")
        a.wait_running()
        last = live_ticks(a, 1)[-1]
        h = Hmp(a.hmp_path, timeout=90)
        try:
            done = h.run("migrate " + b.uri)        # blocks until the migration ends
            assert "completed" in done.lower(), "blocking migrate said %r" % done
            # It returned after the end, not before: nothing left to wait for.
            assert a.qmp.cmd("query-migrate")["status"] == "completed"
            assert "Migration status: completed" in h.run("info migrate")
            assert_guest_moved(last, b)
            note("migrate printed: %r", done[-200:])
        finally:
            h.close()


def test_chained(binary):
    """A -> B -> C: a VM that arrived by migration can leave by migration."""
    with Lab(binary) as lab:
        a = lab.source("-m", "256M", append="ws=4 " + TICK, name="a")
        b = lab.target("-m", "256M", name="b")
        c = lab.target("-m", "256M", name="c")
        a.wait_running()
        last = live_ticks(a, 1)[-1]
        assert_completed(migrate(a, b.uri), a, b)
        last = assert_guest_moved(last, b, n=2)[-1]
        assert_completed(migrate(b, c.uri), b, c)
        assert_guest_moved(last, c)


# ---------------------------------------------------------------------------
# Refusals that must not disturb anything.

def test_migrate_refusals(binary):
    """Bad URIs and a second migrate while one runs get errors; HMP migrate_cancel;
    the guest runs on."""
    with Lab(binary) as lab:
        src = slow_source(lab, mem="256M", fill=128, hmp=True)
        last = live_ticks(src, 1)[-1]
        for uri in ("bogus:1", "tcp:127.0.0.1"):
            try:
                start_migration(src.qmp, uri)
                info = wait_migration(src.qmp, 15)
                assert info["status"] == "failed", (uri, info)
            except QMPError:
                pass
        dst = lab.target("-m", "256M")
        start_and_wait_active(src, dst.uri)
        try:
            src.qmp.cmd("migrate", uri=dst.uri)
            raise AssertionError("a second migrate was accepted while one is active")
        except QMPError:
            pass
        h = Hmp(src.hmp_path)
        try:
            h.run("migrate_cancel")
        finally:
            h.close()
        assert wait_migration(src.qmp, 30)["status"] == "cancelled"
        assert_source_unharmed(src, last)


if __name__ == "__main__":
    run_tests([
        ("idle guest", test_idle_guest),
        ("ws=64, x-passes 3", test_rewriting_guest_forced_passes),
        ("ws=64, default policy", test_rewriting_guest_default_policy),
        ("auto-converge", test_auto_converge),
        ("smp 2, -incoming defer", test_smp2_deferred_incoming),
        ("RAM digest equal (-S target)", test_ram_digest),
        ("RAM digest, zlib, no CRC", test_ram_digest_compressed_no_crc),
        ("migrate_cancel", test_cancel),
        ("target killed", test_target_killed),
        ("mismatched target RAM", test_mismatched_target),
        ("KVM -> emu refused", test_other_accelerator_refused),
        ("flipped byte in PAGE_DATA", test_flipped_byte),
        ("query-migrate progress while active", test_progress_while_active),
        ("HMP migrate -d, info migrate", test_hmp_detached),
        ("HMP blocking migrate", test_hmp_blocking),
        ("chained A -> B -> C", test_chained),
        ("refused migrate commands", test_migrate_refusals),
    ])
