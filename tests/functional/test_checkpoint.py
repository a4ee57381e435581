#!/usr/bin/env python3
"""Checkpoints: the migration stream written to a file (`migrate file:PATH`) and
restored by a new process (`-incoming file:PATH`), driven as a user drives it:
QMP on the source, the file on disk, the restoring process's exit status and
stderr, and the guest's own serial reports as the judge of whether it survived.

The file layout (docs/migration-stream.md, mapped-RAM files) is parsed here with
the standard library only, to aim corruptions at known places: the head (image
header, VM_CONFIG, STATIC_END, MAPPED_RAM), the RAM area (page gfn at
ram_offset + gfn * 4096) and the tail (RAM_INDEX, ITERATION_END..., VCPU_STATE...,
VM_STATE, DEVICE_STATE..., END).

Every test starts its own processes in a fresh temporary directory and removes
it (and any tmpfs it mounted) whatever happens.
"""
import atexit
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import ternlib
from ternlib import (ACCEL, assert_events_ordered, assert_source_unharmed, cleanup_dir, Lab,
                     live_ticks, QMPError, run_tests, RUNNING_RE, start_migration, status, TICK_RE, wait_migration,
                     wait_migration_status, wait_until, warm_up, quiet_for)

MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096
TICK = "tick_ms=200"
SLOW_BANDWIDTH = 20 * 1000 * 1000      # bytes/s: keeps a 256 MiB fill in flight for ~13 s


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


# ---------------------------------------------------------------------------
# The file, as docs/migration-stream.md describes it.

REC_NAMES = {1: "VM_CONFIG", 2: "STATIC_END", 3: "PAGE_DATA", 4: "ZERO_PAGES",
             5: "ITERATION_END", 6: "VCPU_STATE", 7: "VM_STATE", 8: "DEVICE_STATE",
             9: "END", 10: "MAPPED_RAM", 11: "RAM_INDEX"}
HDR_F_CRC32, HDR_F_MAPPED_RAM = 1, 2


class Checkpoint:
    """A parsed checkpoint file: header flags, records (index, name, offset, length),
    the MAPPED_RAM layout and the gfns RAM_INDEX lists as present."""

    def __init__(self, path):
        self.path = path
        st = os.stat(path)
        self.size, self.allocated = st.st_size, st.st_blocks * 512
        self.records = []
        with open(path, "rb") as f:
            head = f.read(32)
            assert head[:8] == b"TERNMIG\0", "%s: magic %r" % (path, head[:8])
            self.version, self.flags, self.page_shift = struct.unpack_from("<III", head, 8)
            crc = self.flags & HDR_F_CRC32
            off, index = 32, 0
            self.layout = None
            while True:
                f.seek(off)
                h = f.read(8)
                assert len(h) == 8, "%s: no record header at %d" % (path, off)
                rtype, length = struct.unpack("<II", h)
                body = f.read(length)
                name = REC_NAMES.get(rtype, "0x%x" % rtype)
                self.records.append({"index": index, "name": name, "offset": off,
                                     "length": length})
                index += 1
                if name == "MAPPED_RAM":
                    self.layout = dict(zip(("ram_offset", "nr_gfns", "tail_offset"),
                                           struct.unpack_from("<QQQ", body)))
                if name == "RAM_INDEX":
                    nr_gfns, self.nr_present = struct.unpack_from("<QQ", body)
                    bitmap = body[16:16 + (nr_gfns + 63) // 64 * 8]
                    self.present = [g for g in range(nr_gfns) if bitmap[g >> 3] >> (g & 7) & 1]
                    assert len(self.present) == self.nr_present, "RAM_INDEX count"
                off += 8 + (length + 7) // 8 * 8 + (8 if crc else 0)
                if name == "MAPPED_RAM":
                    off = self.layout["tail_offset"]
                if name == "END":
                    break
        self.end = off
        assert self.flags & HDR_F_MAPPED_RAM, "%s: not a mapped-RAM file" % path
        assert self.end == self.size, "%s: END at %d, file size %d" % (path, off, self.size)

    def record(self, name, nth=0):
        return [r for r in self.records if r["name"] == name][nth]

    def page_offset(self, gfn):
        return self.layout["ram_offset"] + (gfn << self.page_shift)

    def names(self):
        return [r["name"] for r in self.records]


def sparse_copy(src, dst):
    """Copy (src) to (dst) keeping its holes (a 1 GiB checkpoint holds a few MiB)."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            f.seek(data)
            g.seek(data)
            left = hole - data
            while left:
                chunk = f.read(min(left, 8 * MiB))
                g.write(chunk)
                left -= len(chunk)
            off = hole
        g.truncate(size)


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, "offset %d beyond %s" % (offset, path)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def leftovers(directory, name):
    """PATH and PATH.tmp-* in (directory)."""
    if not os.path.isdir(directory):
        return []
    return sorted(f for f in os.listdir(directory) if f == name or f.startswith(name + ".tmp-"))


# ---------------------------------------------------------------------------
# What a user would look at.



def digest(vm):
    d = vm.qmp.cmd("x-query-ram-digest")
    assert d["algorithm"] == "crc32" and d["digest"], d
    return d


def last_tick(vm):
    """The last tick line (vm)'s guest printed so far; there must be one."""
    t = ternlib.last_tick(vm)
    assert t, "no tick line yet: %s" % vm.serial.lines[-5:]
    return t


def checkpoint(src, path, timeout=120.0, **params):
    """`migrate file:PATH` with (params); returns query-migrate at the end."""
    if params:
        src.qmp.cmd("migrate-set-parameters", **params)
    start_migration(src.qmp, "file:" + path)
    return wait_migration(src.qmp, timeout)


def assert_checkpointed(info, src, path):
    """A checkpoint that completed, as a user sees it: query-migrate, the paused source,
    the file in place and no temporary file beside it."""
    assert info["status"] == "completed", info
    assert_events_ordered(src.qmp, "completed")
    for key in ("total-time", "downtime", "setup-time", "ram"):
        assert key in info, "query-migrate lacks %s: %s" % (key, info)
    assert 0 <= info["downtime"] <= info["total-time"], info
    assert info["ram"]["remaining"] == 0, info["ram"]
    assert status(src) == "postmigrate", src.qmp.cmd("query-status")
    d, name = os.path.split(path)
    assert leftovers(d, name) == [name], "files beside the checkpoint: %s" % leftovers(d, name)
    cp = Checkpoint(path)
    assert cp.names()[:3] == ["VM_CONFIG", "STATIC_END", "MAPPED_RAM"], cp.names()
    assert cp.names()[-1] == "END" and "VCPU_STATE" in cp.names(), cp.names()
    return cp


def restore(lab, path, *args, name="dst", paused=True, timeout=60.0):
    """`tern -incoming file:PATH` (with -S unless paused=False); waits until loaded.
    Returns (vm, seconds from process start to loaded)."""
    t0 = time.time()
    vm = lab.start(name, list(args) + (["-S"] if paused else []) + ["-incoming", "file:" + path])

    def loaded():
        st = status(vm)
        return st if st != "inmigrate" else None
    st = wait_until(loaded, t0 + timeout - time.time(), "restore leaves inmigrate", 0.01)
    elapsed = time.time() - t0
    assert st == ("paused" if paused else "running"), vm.qmp.cmd("query-status")
    info = vm.qmp.cmd("query-migrate")
    assert info["status"] == "completed", info
    return vm, elapsed


def assert_guest_continues(src_last, dst, n=3, busy=True):
    """The restored guest is the source's (ticks go on from its numbers, no new boot)
    and healthy (errors 0, timer and workload advancing)."""
    ticks = live_ticks(dst, n, skip_old=False)
    # The source may have paused in the middle of a tick line: the restored guest
    # finishes it, and the next complete line is one further on.
    assert src_last["tick"] < ticks[0]["tick"] <= src_last["tick"] + 2, \
        "tick numbers do not continue: source's last %s, restored %s" % (src_last, ticks)
    assert ticks[0]["timer_ticks"] >= src_last["timer_ticks"], (src_last, ticks)
    booted = [l for l in dst.serial.lines if RUNNING_RE.match(l)]
    assert not booted, "the restored VM booted a guest of its own: %s" % booted
    if busy:
        assert ticks[-1]["dirtied_mib"] > ticks[0]["dirtied_mib"] >= src_last["dirtied_mib"], \
            "workload does not go on: source's last %s, restored %s" % (src_last, ticks)
    assert status(dst) == "running"
    return ticks


def describe(info, cp=None):
    s = "total %d ms, downtime %d ms, %.1f MiB written, passes %d" % (
        info["total-time"], info["downtime"], info["ram"]["transferred"] / MiB,
        info["ram"]["dirty-sync-count"])
    if cp:
        s += ", file %.1f MiB (allocated %.1f MiB)" % (cp.size / MiB, cp.allocated / MiB)
    return s


# ---------------------------------------------------------------------------
# Round trips.

def round_trip(binary, mem, append, smp=1):
    """Checkpoint a running guest, restore it paused, compare RAM, run it; then take
    the guest back on the source with `cont`. Returns (query-migrate, Checkpoint)."""
    busy = not re.search(r"\bws=0\b", append)
    smp_args = ["-smp", str(smp)] if smp > 1 else []
    with Lab(binary) as lab:
        src = lab.source("-m", mem, *smp_args, append=append + " " + TICK)
        running = src.wait_running(60)
        assert running["cpus"] == smp, running
        live_ticks(src, 2)
        if busy:
            # Every page of the working set written at least once (how soon
            # depends on the accelerator), so the file must hold all of it.
            warm_up(src, running["ws_mib"] / 2)
        path = os.path.join(lab.dir, "vm.tern")
        info = checkpoint(src, path)
        cp = assert_checkpointed(info, src, path)
        src_last = last_tick(src)
        d_src = digest(src)
        # A second look: the paused source stays silent and its RAM does not change.
        assert not quiet_for(0.5, lambda: last_tick(src) != src_last), \
            "source guest ran in postmigrate"
        assert digest(src) == d_src, "source RAM changed while paused"

        dst, secs = restore(lab, path, "-m", mem, *smp_args)
        d_dst = digest(dst)
        assert d_dst == d_src, "RAM differs: source %s, restored %s" % (d_src, d_dst)
        if smp > 1:
            cpus = dst.qmp.cmd("query-cpus-fast")
            assert [c["cpu-index"] for c in cpus] == list(range(smp)), cpus
        dst.qmp.cmd("cont")
        dst.qmp.wait_event("RESUME", 10)
        ticks = assert_guest_continues(src_last, dst, busy=busy)

        # The original VM is still there: `cont` resumes it (a snapshot, not a move).
        src.qmp.cmd("cont")
        assert_source_unharmed(src, src_last)
        note("%s; restored (-S) in %.2f s; digest %s over %d MiB; restored ticks %d..%d",
             describe(info, cp), secs, d_src["digest"], d_src["bytes"] // MiB,
             ticks[0]["tick"], ticks[-1]["tick"])
        return info, cp


def test_round_trip_idle(binary):
    info, cp = round_trip(binary, "1G", "ws=0")
    # Never-touched memory costs nothing: a sparse file of RAM size holding a few MiB.
    assert GiB <= cp.size <= GiB + 4 * MiB, "st_size %d for a 1 GiB guest" % cp.size
    assert cp.allocated < 8 * MiB, "idle 1 GiB guest: %d bytes allocated" % cp.allocated


def test_round_trip_working_set(binary):
    info, cp = round_trip(binary, "512M", "ws=32")
    # The working set is in the file (all of it: warmed up), each page once.
    assert cp.nr_present * PAGE >= 32 * MiB, "RAM_INDEX lists %d pages" % cp.nr_present
    assert cp.nr_present * PAGE <= cp.allocated <= cp.nr_present * PAGE + 2 * MiB, \
        "%d pages present, %d bytes allocated" % (cp.nr_present, cp.allocated)


def test_round_trip_smp2(binary):
    round_trip(binary, "512M", "ws=32 cpus=2", smp=2)


# ---------------------------------------------------------------------------
# Compactness: a page is stored once, however many passes sent it.

def test_compact_after_passes(binary):
    """x-passes 3 over a guest rewriting its working set, each pass slowed by
    max-bandwidth so that the guest rewrites all of it meanwhile: every pass writes
    the working set again, to the same place in the file."""
    ws, passes, bw = 16, 3, 8 * 1000 * 1000     # ~2 s per pass
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=%d %s" % (ws, TICK))
        src.wait_running(60)
        warm_up(src, ws)
        path = os.path.join(lab.dir, "vm.tern")
        info = checkpoint(src, path, x_passes=passes, max_bandwidth=bw)
        cp = assert_checkpointed(info, src, path)
        ram = info["ram"]
        assert ram["dirty-sync-count"] == passes + 1, ram      # the live passes, then the final one
        written = ram["normal-bytes"]           # page data the passes wrote
        populated = cp.nr_present * PAGE        # distinct non-zero pages in the file
        touched = ram["total"] - ram["skipped"] * PAGE
        resent = written - populated
        note("x-passes %d at %d MB/s: %.1f MiB written (%.1f MiB of it again), %.1f MiB "
             "populated, file %.1f MiB allocated (st_size %.1f MiB); %s", passes, bw // 10**6,
             written / MiB, resent / MiB, populated / MiB, cp.allocated / MiB, cp.size / MiB,
             describe(info))
        assert ws * MiB <= populated <= touched, (populated, touched, ram)
        overhead = 2 * MiB
        assert cp.allocated <= populated + overhead, \
            "allocated %d bytes for %d populated bytes (+%d allowed)" % (
                cp.allocated, populated, overhead)
        assert cp.allocated + resent <= written + overhead, \
            "allocated %d bytes after writing %d: pages stored more than once" % (
                cp.allocated, written)
        # The pages rewritten in place hold the latest data.
        src_last = last_tick(src)
        d_src = digest(src)
        dst, _ = restore(lab, path, "-m", "512M")
        assert digest(dst) == d_src, "RAM differs after a %d-pass checkpoint" % passes
        dst.qmp.cmd("cont")
        assert_guest_continues(src_last, dst)
        # Several passes each wrote the working set, yet the file holds it once.
        assert resent >= 2 * ws * MiB, \
            "x-passes %d over a rewritten %d MiB at max-bandwidth %d B/s wrote only %.1f MiB " \
            "again (%.0f ms in all): the passes were not slowed, so this proves little" % (
                passes, ws, bw, resent / MiB, info["total-time"])
        assert cp.allocated < passes * ws * MiB * 0.6, (cp.allocated, passes, ws)


# ---------------------------------------------------------------------------
# Restore failures. One good checkpoint is made once and copied (sparse) into
# each test's own directory before it is damaged.

_pristine = {}


def pristine(binary, mem="256M"):
    """A good checkpoint of a -m (mem) guest rewriting 8 MiB: (path, Checkpoint, last tick)."""
    if mem not in _pristine:
        d = tempfile.mkdtemp(prefix="tern-cp-pristine-")
        atexit.register(cleanup_dir, d)
        with Lab(binary) as lab:
            src = lab.source("-m", mem, append="ws=8 " + TICK)
            src.wait_running()
            live_ticks(src, 2)
            path = os.path.join(d, "vm.tern")
            cp = assert_checkpointed(checkpoint(src, path), src, path)
            assert cp.nr_present > 0, "no page in the RAM area"
            _pristine[mem] = (path, cp, last_tick(src))
    return _pristine[mem]


def restore_fails(binary, directory, path, mem="256M", timeout=20.0):
    """Run `tern -m MEM -incoming file:PATH` (not paused: a wrongly accepted file would
    run the guest). It must exit with status 1 without running the guest. Returns stderr."""
    serial = os.path.join(directory, "restore.serial")
    cmd = [binary, "-accel", ACCEL, "-m", mem, "-serial", "file:" + serial,
           "-incoming", "file:" + path]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("restore of a bad file still runs after %.0f s: %r" % (
            timeout, out.decode(errors="replace")[-500:]))
    out = out.decode(errors="replace")
    try:
        with open(serial, errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    ran = [l for l in lines if TICK_RE.match(l) or RUNNING_RE.match(l)]
    assert not ran, "the guest ran from a bad file: %s" % ran[:3]
    assert proc.returncode == 1, "exit status %d (expected 1): %r" % (proc.returncode, out)
    assert out.strip(), "no message on stderr"
    return out


def names_offset(err, *offsets):
    """True if (err) gives one of (offsets) in decimal or hex."""
    return any(re.search(r"(?<![0-9a-fx])(%d|0x%x)(?![0-9a-f])" % (o, o), err.lower())
               for o in offsets)


def assert_names(err, words=(), offsets=()):
    for w in words:
        assert w.lower() in err.lower(), "message lacks %r: %r" % (w, err)
    if offsets:
        assert names_offset(err, *offsets), "message names none of the file offsets %s: %r" % (
            list(offsets), err)


def damaged_copy(binary, lab, how):
    """A copy of the pristine checkpoint in (lab)'s directory, damaged by how(path, cp)."""
    src, cp, _ = pristine(binary)
    path = os.path.join(lab.dir, "bad.tern")
    sparse_copy(src, path)
    how(path, cp)
    return path, cp


def test_truncated_head(binary):
    with Lab(binary) as lab:
        _, cp, _ = pristine(binary)
        vmc, mr = cp.record("VM_CONFIG"), cp.record("MAPPED_RAM")
        cases = [("inside the image header", 20, ("header",), ()),
                 ("inside VM_CONFIG", vmc["offset"] + 8 + 100, ("VM_CONFIG",), (vmc["offset"],)),
                 ("inside MAPPED_RAM", mr["offset"] + 8 + 12, ("MAPPED_RAM",), (mr["offset"],))]
        for what, cut, words, offsets in cases:
            path, _ = damaged_copy(binary, lab, lambda p, c: os.truncate(p, cut))
            err = restore_fails(binary, lab.dir, path)
            assert_names(err, words, offsets)
            note("cut at %d (%s): %s", cut, what, err.strip().splitlines()[-1])


def test_truncated_ram_area(binary):
    with Lab(binary) as lab:
        _, cp, _ = pristine(binary)
        gfn = cp.present[len(cp.present) // 2]
        cut = cp.page_offset(gfn) + 100
        path, _ = damaged_copy(binary, lab, lambda p, c: os.truncate(p, cut))
        err = restore_fails(binary, lab.dir, path)
        # The file ends before its tail: the message must point into the file where it
        # is short (the tail's offset, the cut, or the page), not somewhere else.
        assert_names(err, ("end",), (cp.layout["tail_offset"], cut, cp.page_offset(gfn)))
        note("cut at %d (page of gfn 0x%x): %s", cut, gfn, err.strip().splitlines()[-1])


def test_truncated_tail(binary):
    with Lab(binary) as lab:
        _, cp, _ = pristine(binary)
        idx, vcpu, end = cp.record("RAM_INDEX"), cp.record("VCPU_STATE"), cp.record("END")
        cases = [("RAM_INDEX", idx["offset"] + 8 + idx["length"] // 2, idx),
                 ("VCPU_STATE", vcpu["offset"] + 8 + vcpu["length"] // 2, vcpu),
                 ("END", cp.size - 4, end)]
        failures = []
        for what, cut, rec in cases:
            path, _ = damaged_copy(binary, lab, lambda p, c: os.truncate(p, cut))
            err = restore_fails(binary, lab.dir, path)
            note("cut at %d (inside %s at %d): %s", cut, what, rec["offset"],
                 err.strip().splitlines()[-1])
            try:
                assert_names(err, (what,), (rec["offset"],))
            except AssertionError as e:
                failures.append(str(e))
        assert not failures, "; ".join(failures)


def test_flipped_page_byte(binary):
    with Lab(binary) as lab:
        _, cp, _ = pristine(binary)
        gfn = cp.present[len(cp.present) // 2]
        page = cp.page_offset(gfn)
        path, _ = damaged_copy(binary, lab, lambda p, c: flip_byte(p, page + 1234))
        err = restore_fails(binary, lab.dir, path)
        assert_names(err, ("gfn", "CRC"), (page, page + 1234))
        assert names_offset(err.replace(str(page), ""), gfn), "message lacks gfn %d/0x%x: %r" % (
            gfn, gfn, err)
        note("flipped octet %d (gfn 0x%x): %s", page + 1234, gfn, err.strip().splitlines()[-1])


def test_flipped_vcpu_state_byte(binary):
    with Lab(binary) as lab:
        _, cp, _ = pristine(binary)
        rec = cp.record("VCPU_STATE")
        at = rec["offset"] + 8 + rec["length"] // 2
        path, _ = damaged_copy(binary, lab, lambda p, c: flip_byte(p, at))
        err = restore_fails(binary, lab.dir, path)
        note("flipped octet %d (VCPU_STATE at %d): %s", at, rec["offset"],
             err.strip().splitlines()[-1])
        assert_names(err, ("VCPU_STATE", "CRC"), (rec["offset"],))


def test_wrong_ram_size(binary):
    with Lab(binary) as lab:
        src, _, _ = pristine(binary, "256M")
        err = restore_fails(binary, lab.dir, src, mem="512M")
        assert_names(err, ("RAM size",))
        assert "256" in err and "512" in err, "sizes not given: %r" % err
        note("-m 512M from a 256M checkpoint: %s", err.strip().splitlines()[-1])


def test_not_a_checkpoint(binary):
    with Lab(binary) as lab:
        path = os.path.join(lab.dir, "random.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(2 * MiB))
        err = restore_fails(binary, lab.dir, path)
        assert re.search(r"magic|not a tern", err, re.I), "unclear message: %r" % err
        note("random bytes: %s", err.strip().splitlines()[-1])
        missing = os.path.join(lab.dir, "no-such.tern")
        err = restore_fails(binary, lab.dir, missing)
        assert_names(err, (missing,))
        assert re.search(r"no such file", err, re.I), "unclear message: %r" % err
        note("missing file: %s", err.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Failures while writing: the source keeps its guest, no file is left.

def mount_tmpfs(mountpoint, options):
    """Mount a tmpfs; False (with a note) where mounting is refused."""
    os.makedirs(mountpoint, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mountpoint],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        note("cannot mount a tmpfs here (%s): %s", options, r.stdout.decode().strip())
        return False
    return True


def umount(mountpoint):
    if subprocess.run(["umount", mountpoint], stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["umount", "-l", mountpoint], stderr=subprocess.DEVNULL)


def assert_failed_cleanly(src, info, path, last, words=(), events=True):
    assert info["status"] == "failed", info
    desc = info.get("error-desc", "")
    assert desc, "failed without error-desc: %s" % info
    for w in words:
        assert w.lower() in desc.lower(), "error-desc lacks %r: %r" % (w, desc)
    if events:
        assert_events_ordered(src.qmp, "failed")
    assert_source_unharmed(src, last)
    d, name = os.path.split(path)
    assert leftovers(d, name) == [], "left behind: %s" % leftovers(d, name)
    return desc


def test_disk_full(binary):
    """A 64 MiB tmpfs and a guest with 128 MiB of data: ENOSPC half way."""
    with Lab(binary) as lab:
        small = os.path.join(lab.dir, "small")
        if not mount_tmpfs(small, "size=64m"):
            raise AssertionError("no tmpfs: disk full is covered only by the RLIMIT_FSIZE test")
        try:
            src = lab.source("-m", "512M", append="ws=8 fill=128 " + TICK)
            src.wait_running(60)
            last = live_ticks(src, 1)[-1]
            path = os.path.join(small, "vm.tern")
            info = checkpoint(src, path)
            desc = assert_failed_cleanly(src, info, path, last, ("No space left", "vm.tern"))
            # The space is free again, and a checkpoint elsewhere still works.
            st = os.statvfs(small)
            assert st.f_bfree == st.f_blocks, "tmpfs still holds %d blocks" % (
                st.f_blocks - st.f_bfree)
            good = os.path.join(lab.dir, "vm.tern")
            assert_checkpointed(checkpoint(src, good), src, good)
            note("error-desc: %s", desc)
        finally:
            umount(small)


def test_file_size_limit(binary):
    """RLIMIT_FSIZE below the checkpoint's size (but above the guest RAM's memfd):
    the write fails (EFBIG, or tern must not die of SIGXFSZ)."""
    mem = 256 * MiB
    limit = mem + 512 * 1024
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=8 " + TICK, preexec_fn=lambda:
                         resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        src.wait_running()
        last = live_ticks(src, 1)[-1]
        path = os.path.join(lab.dir, "vm.tern")
        start_migration(src.qmp, "file:" + path)
        try:
            info = wait_migration(src.qmp, 60)
        except (ConnectionError, OSError):
            code = src.proc.wait(10)
            raise AssertionError(
                "tern died (exit %s%s) during a checkpoint over RLIMIT_FSIZE, killing the "
                "guest and leaving %s" % (code, " = SIGXFSZ" if code == -signal.SIGXFSZ else "",
                                          leftovers(lab.dir, "vm.tern")))
        desc = assert_failed_cleanly(src, info, path, last, ("too large",))
        note("error-desc: %s", desc)


def test_unwritable_directory(binary):
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=8 " + TICK)
        src.wait_running()
        targets = [os.path.join(lab.dir, "no-such-dir", "vm.tern")]
        ro = os.path.join(lab.dir, "ro")
        mounted = mount_tmpfs(ro, "ro,size=1m")
        if mounted:
            targets.append(os.path.join(ro, "vm.tern"))
        try:
            for path in targets:
                last = live_ticks(src, 1)[-1]
                refused = False
                try:
                    info = checkpoint(src, path, timeout=30)
                except QMPError as e:       # refused at once: as good, if it says why
                    info, refused = {"status": "failed", "error-desc": str(e)}, True
                words = [os.path.dirname(path)]
                desc = assert_failed_cleanly(src, info, path, last, words, events=not refused)
                assert re.search(r"no such file|read-only", desc, re.I), "reason? %r" % desc
                note("%s: %s", path, desc)
        finally:
            if mounted:
                umount(ro)


def test_cancel(binary):
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=8 fill=256 " + TICK)
        src.wait_running(60)
        last = live_ticks(src, 1)[-1]
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=SLOW_BANDWIDTH)
        path = os.path.join(lab.dir, "vm.tern")
        start_migration(src.qmp, "file:" + path)
        wait_migration_status(src.qmp, "active", 30)
        info = src.qmp.cmd("query-migrate")
        assert info["status"] == "active", "checkpoint did not stay active: %s" % info
        files = leftovers(lab.dir, "vm.tern")
        assert len(files) == 1 and files[0].startswith("vm.tern.tmp-"), \
            "while writing: %s (expected only vm.tern.tmp-*)" % files
        assert src.qmp.cmd("migrate_cancel") == {}
        info = wait_migration(src.qmp, 30)
        assert info["status"] == "cancelled", info
        assert_events_ordered(src.qmp, "cancelled")
        assert_source_unharmed(src, last)
        assert leftovers(lab.dir, "vm.tern") == [], "left behind: %s" % leftovers(
            lab.dir, "vm.tern")
        # The same guest checkpoints again at full speed.
        info = checkpoint(src, path, max_bandwidth=0)
        assert_checkpointed(info, src, path)
        note("after cancel: %s", describe(info))


def test_bandwidth_limit(binary):
    """max-bandwidth limits a checkpoint's live passes as it limits a migration."""
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=8 fill=256 " + TICK)
        src.wait_running(60)
        src.qmp.cmd("migrate-set-parameters", max_bandwidth=SLOW_BANDWIDTH)
        path = os.path.join(lab.dir, "vm.tern")
        start_migration(src.qmp, "file:" + path)
        wait_migration_status(src.qmp, "active", 30)
        first = src.qmp.cmd("query-migrate")

        def a_second_later():
            """query-migrate once a second of the checkpoint's own clock
            (total-time) has passed, or once it ended (too fast: asserted below)."""
            q = src.qmp.cmd("query-migrate")
            done = q["status"] != "active" or q.get("total-time", 0) - first["total-time"] >= 1000
            return q if done else None
        then = wait_until(a_second_later, 30, "a second of checkpoint time")
        if then["status"] == "active":
            live_ticks(src, 2)      # the guest runs while its RAM is written
            src.qmp.cmd("migrate_cancel")
        final = wait_migration(src.qmp, 30)
        secs = max((then.get("total-time", 0) - first["total-time"]) / 1000, 0.001)
        rate = (then["ram"]["transferred"] - first["ram"]["transferred"]) / secs
        note("max-bandwidth %.0f MB/s: %.0f MB/s measured over %.2f s; ended %s",
             SLOW_BANDWIDTH / 1e6, rate / 1e6, secs, final["status"])
        assert then["status"] == "active", \
            "a 256 MiB checkpoint at max-bandwidth %d B/s finished within %.1f s: %s" % (
                SLOW_BANDWIDTH, secs, describe(then))
        assert rate < 2 * SLOW_BANDWIDTH, "%.1f MB/s under a %.0f MB/s limit" % (
            rate / 1e6, SLOW_BANDWIDTH / 1e6)


# ---------------------------------------------------------------------------
# The pause a live checkpoint costs.

def event_time(ev):
    return ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6


def test_live_downtime(binary):
    ws, limit = 64, 300
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=%d %s" % (ws, TICK))
        src.wait_running()
        warm_up(src, ws)
        path = os.path.join(lab.dir, "vm.tern")
        src.qmp.cmd("migrate-set-parameters", downtime_limit=limit)
        start_migration(src.qmp, "file:" + path)
        src.qmp.wait_event("MIGRATION", 120, match=lambda d: d.get("status") in (
            "completed", "failed", "cancelled"))
        before = last_tick(src)         # the last tick from before the pause
        start = len(src.serial.lines)
        # A pause that fell while the guest was printing a tick line is one
        # the guest cannot see: it does not count its own printing as a gap.
        paused_mid_line = bool(src.serial.partial)
        src.qmp.cmd("cont")             # at once: the guest's gap is the pause plus this
        src.qmp.wait_event("RESUME", 10)
        info = src.qmp.cmd("query-migrate")
        cp = assert_checkpointed_running(info, src, path)
        stop = [e for e in src.qmp.history if e["event"] == "STOP"]
        resume = [e for e in src.qmp.history if e["event"] == "RESUME"]
        assert len(stop) == 1 and len(resume) == 1, src.qmp.history
        paused_ms = (event_time(resume[0]) - event_time(stop[0])) * 1000
        # The first tick after the pause spans it (however late the test reads it).
        ticks, why = src.serial.ticks_since(start, 3, timeout=20, alive=src.alive)
        assert ticks, why
        assert [t["tick"] for t in ticks] == list(range(before["tick"] + 1, before["tick"] + 4)) \
            and all(t["errors"] == 0 for t in ticks), (before, ticks)
        gap_ms = ticks[0]["max_gap_us"] / 1000
        note("downtime %d ms (limit %d), paused %.0f ms until cont, guest max_gap %.0f ms; %s",
             info["downtime"], limit, paused_ms, gap_ms, describe(info, cp))
        # The limit is a target, not a guarantee (the pause ends with an fsync
        # on a shared disk); three times it means the policy is broken.
        assert info["downtime"] <= 3 * limit, "downtime %d ms over 3 x %d ms: %s" % (
            info["downtime"], limit, describe(info))
        # The guest felt the pause: at least the downtime, at most the whole stop..cont.
        assert info["downtime"] <= paused_ms + 1, (info["downtime"], paused_ms)
        if paused_mid_line:
            note("the pause fell inside a tick line: the guest's gap is not compared")
        else:
            assert gap_ms >= info["downtime"] * 0.9 - 5, \
                "guest max_gap %.0f ms shorter than the reported downtime %d ms (paused " \
                "%.0f ms from STOP to RESUME); ticks %s then %s" % (
                    gap_ms, info["downtime"], paused_ms, before, ticks)
        assert gap_ms <= paused_ms + 100, \
            "guest max_gap %.0f ms, but it was paused %.0f ms; ticks %s then %s" % (
                gap_ms, paused_ms, before, ticks)


def assert_checkpointed_running(info, src, path):
    """assert_checkpointed() for a source already resumed with `cont`."""
    assert info["status"] == "completed", info
    assert_events_ordered(src.qmp, "completed")
    assert "downtime" in info, info
    assert status(src) == "running"
    d, name = os.path.split(path)
    assert leftovers(d, name) == [name], leftovers(d, name)
    return Checkpoint(path)


# ---------------------------------------------------------------------------
# Measured, not asserted.

def test_measure(binary):
    for fill in (0, 768):
        with Lab(binary) as lab:
            src = lab.source("-m", "1G", append="ws=0 fill=%d %s" % (fill, TICK))
            t0 = time.time()
            src.wait_running(120)
            fill_s = time.time() - t0
            live_ticks(src, 1)
            path = os.path.join(lab.dir, "vm.tern")
            t0 = time.time()
            info = checkpoint(src, path)
            wall = time.time() - t0
            cp = assert_checkpointed(info, src, path)
            src_last = last_tick(src)
            d_src = digest(src)
            src.close()                 # free its memory before the restore
            dst, secs = restore(lab, path, "-m", "1G")
            assert digest(dst) == d_src
            restore_ms = dst.qmp.cmd("query-migrate").get("total-time")
            dst.qmp.cmd("cont")
            assert_guest_continues(src_last, dst, n=2, busy=False)
            note("1 GiB, fill=%d (guest ready in %.1f s): checkpoint %.2f s wall, total-time %d "
                 "ms, downtime %d ms; file st_size %.1f MiB, allocated %.1f MiB; restore %.2f s "
                 "from exec to paused (total-time %s ms)", fill, fill_s, wall,
                 info["total-time"], info["downtime"], cp.size / MiB, cp.allocated / MiB, secs,
                 restore_ms)


if __name__ == "__main__":
    run_tests([
        ("round trip, idle 1 GiB", test_round_trip_idle),
        ("round trip, ws=32", test_round_trip_working_set),
        ("round trip, -smp 2 cpus=2", test_round_trip_smp2),
        ("compact after x-passes 3", test_compact_after_passes),
        ("restore: truncated head", test_truncated_head),
        ("restore: truncated RAM area", test_truncated_ram_area),
        ("restore: truncated tail", test_truncated_tail),
        ("restore: flipped byte in a page", test_flipped_page_byte),
        ("restore: flipped byte in VCPU_STATE", test_flipped_vcpu_state_byte),
        ("restore: different -m", test_wrong_ram_size),
        ("restore: random bytes, missing file", test_not_a_checkpoint),
        ("write: disk full (tmpfs)", test_disk_full),
        ("write: RLIMIT_FSIZE", test_file_size_limit),
        ("write: unwritable directory", test_unwritable_directory),
        ("migrate_cancel during a checkpoint", test_cancel),
        ("max-bandwidth during a checkpoint", test_bandwidth_limit),
        ("live checkpoint downtime", test_live_downtime),
        ("measure: 1 GiB idle and fill=768", test_measure),
    ])
