#!/usr/bin/env python3
"""tern-dump on real streams: a live migration captured on the wire by a tee
proxy between source and target (loopback only), and a checkpoint file written
by `migrate file:PATH`. Each must verify as OK and list its records; every
corrupted copy (a flipped byte in the header, a page, a CRC, a vCPU's state, a
checkpoint page; a truncation; appended garbage) must fail --verify, naming a
record or offset.

Usage: test_dump.py PATH/TO/tern PATH/TO/tern-dump
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from ternlib import (free_port, Lab, run_tests, start_migration, tcp_uri, tern_dump_binary,
                     wait_migration)

MiB = 1 << 20
PAGE = 4096
HDR_SIZE = 32
HDR_F_CRC32 = 1


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


class TeeProxy:
    """Listens on 127.0.0.1, forwards one connection to (port) both ways, and
    saves the client-to-server bytes (the migration stream) to (path); then
    forwards (extra) more (multifd channels) without saving them."""

    def __init__(self, port, path, extra=0):
        self.port = port
        self.path = path
        self.extra = extra
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1 + extra)
        self.uri = "tcp:127.0.0.1:%d" % self.listener.getsockname()[1]
        self.threads = []
        self.error = None
        self.done = threading.Event()
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        try:
            self.listener.settimeout(60)
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            client.settimeout(None)
            server.settimeout(None)
            back = threading.Thread(target=self._pump, args=(server, client, None), daemon=True)
            back.start()
            self.threads.append(back)
            if self.extra:
                more = threading.Thread(target=self._forward_extra, daemon=True)
                more.start()
                self.threads.append(more)
            with open(self.path, "wb") as out:
                self._pump(client, server, out)
        except Exception as e:  # reported by wait()
            self.error = e
        finally:
            self.done.set()

    def _forward_extra(self):
        try:
            for _ in range(self.extra):
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                client.settimeout(None)
                server.settimeout(None)
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(a, b, None), daemon=True).start()
        except OSError as e:
            self.error = e

    @staticmethod
    def _pump(src, dst, out):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                if out:
                    out.write(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def wait(self, timeout=60):
        if not self.done.wait(timeout):
            raise TimeoutError("the proxied migration stream did not end")
        if self.error:
            raise self.error
        self.listener.close()


def dump(*args, stdin=None):
    return subprocess.run([tern_dump_binary()] + list(args), capture_output=True, text=True,
                          timeout=300, stdin=stdin)


def verify_ok(path):
    r = dump("--verify", path)
    assert r.returncode == 0, "tern-dump --verify %s: %d\n%s%s" % (path, r.returncode, r.stdout,
                                                                  r.stderr)
    assert r.stdout.startswith("verdict: OK"), r.stdout
    return r.stdout.strip()


def records_of(path):
    r = dump("--json", path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"]["ok"], doc["verdict"]
    return doc


def expect_bad(path, data, what, must_name=("record ",)):
    """Write (data) to (path); --verify must fail naming one of (must_name)."""
    with open(path, "wb") as f:
        f.write(data)
    r = dump("--verify", path)
    assert r.returncode == 1, "%s: tern-dump --verify exited %d: %s%s" % (
        what, r.returncode, r.stdout, r.stderr)
    line = [l for l in r.stderr.splitlines() if l.startswith("verdict: BAD")]
    assert line, "%s: no BAD verdict on stderr: %r" % (what, r.stderr)
    assert any(n in line[0] for n in must_name), "%s: verdict names none of %s: %s" % (
        what, must_name, line[0])
    assert "offset" in line[0] or "stream header" in line[0], line[0]
    # The JSON form says the same, and parses.
    j = dump("--json", path)
    doc = json.loads(j.stdout)
    assert doc["verdict"]["ok"] is False and doc["verdict"]["error"], doc["verdict"]
    return line[0]


def trailer_offset(rec):
    """Offset of a record's CRC trailer (header + body + padding)."""
    return rec["offset"] + 8 + (rec["length"] + 7) // 8 * 8


def first(doc, rtype):
    return next(r for r in doc["records"] if r["type"] == rtype)


# ---------------------------------------------------------------------------

def capture_live(binary, workdir):
    path = os.path.join(workdir, "live.capture")
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=32 tick_ms=200")
        src.wait_running()
        dst = lab.target("-m", "256M")
        proxy = TeeProxy(dst.port, path)
        start_migration(src.qmp, proxy.uri)
        info = wait_migration(src.qmp, 120)
        assert info["status"] == "completed", info
        proxy.wait()
        dst.serial.wait_ticks(2, timeout=20, proc=dst.proc)
    return path


def test_live_capture(binary):
    workdir = tempfile.mkdtemp(prefix="tern-dump-")
    try:
        path = capture_live(binary, workdir)
        data = open(path, "rb").read()
        note("captured %d bytes: %s", len(data), verify_ok(path))
        doc = records_of(path)
        types = [r["type"] for r in doc["records"]]
        assert types[:2] == ["VM_CONFIG", "STATIC_END"], types
        assert types[-1] == "END" and "PAGE_DATA" in types and "VCPU_STATE" in types, types
        assert doc["header"]["crc32"] and not doc["header"]["mapped_ram"], doc["header"]
        assert doc["passes"] and doc["passes"][-1]["final"], doc["passes"]
        assert doc["verdict"]["pages"] > 0 and doc["verdict"]["records"] == len(types)
        for r in doc["records"]:
            assert r["summary"] and r["offset"] % 8 == 0, r
        text = dump(path)
        assert text.returncode == 0 and "PAGE_DATA" in text.stdout and \
            "verdict: OK" in text.stdout, text.stdout[-2000:]
        with open(path, "rb") as f:
            r = dump("--verify", "-", stdin=f)
        assert r.returncode == 0, r.stderr

        bad = os.path.join(workdir, "bad")
        pd = first(doc, "PAGE_DATA")
        vcpu = first(doc, "VCPU_STATE")

        def flip(off, mask=0x01):
            b = bytearray(data)
            b[off] ^= mask
            return bytes(b)

        expect_bad(bad, flip(5), "header magic", ("stream header",))
        expect_bad(bad, flip(12), "header flags", ("stream header",))
        expect_bad(bad, flip(pd["offset"] + 8 + 100), "PAGE_DATA body", ("(PAGE_DATA)",))
        expect_bad(bad, flip(pd["offset"] + pd["length"] - 1, 0x80), "PAGE_DATA payload",
                   ("(PAGE_DATA)",))
        expect_bad(bad, flip(trailer_offset(pd)), "PAGE_DATA CRC", ("(PAGE_DATA)",))
        expect_bad(bad, flip(vcpu["offset"] + 8 + 20), "VCPU_STATE body", ("(VCPU_STATE)",))
        expect_bad(bad, flip(trailer_offset(vcpu) + 2), "VCPU_STATE CRC", ("(VCPU_STATE)",))
        expect_bad(bad, flip(pd["offset"] + 4, 0x40), "PAGE_DATA length", ("(PAGE_DATA)",
                                                                           "record "))
        for cut in (10, HDR_SIZE + 4, pd["offset"] + 8 + 1000, vcpu["offset"] + 30,
                    len(data) - 8, len(data) - 1):
            msg = expect_bad(bad, data[:cut], "cut at %d" % cut, ("record ", "stream header"))
        note("last truncation: %s", msg)
        msg = expect_bad(bad, data + b"\0garbage", "garbage after END", ("trailing bytes",))
        note("garbage: %s", msg)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_multifd_capture(binary):
    """The main stream of a multifd migration (2 channels, zstd): the MULTIFD record
    is described, not skipped as an unknown optional record."""
    workdir = tempfile.mkdtemp(prefix="tern-dump-")
    try:
        path = os.path.join(workdir, "multifd.capture")
        with Lab(binary) as lab:
            src = lab.source("-m", "256M", append="ws=8 tick_ms=200")
            dst = lab.start("dst", ["-m", "256M", "-incoming", "defer"])
            dst.port = free_port()
            dst.uri = tcp_uri(dst.port)
            for vm in (src, dst):
                vm.qmp.cmd("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
                vm.qmp.cmd("migrate-set-parameters", multifd_channels=2,
                           multifd_compression="zstd")
            dst.qmp.cmd("migrate-incoming", uri=dst.uri)
            src.wait_running()
            proxy = TeeProxy(dst.port, path, extra=2)
            start_migration(src.qmp, proxy.uri)
            info = wait_migration(src.qmp, 120)
            assert info["status"] == "completed", info
            proxy.wait()
        doc = records_of(path)
        assert doc["header"]["multifd"], doc["header"]
        mf = first(doc, "MULTIFD")
        assert (mf["channels"], mf["compression"]) == (2, "zstd"), mf
        assert mf["session"].startswith("0x") and int(mf["session"], 16) != 0, mf
        text = dump(path).stdout
        assert "(CRC32 MULTIFD)" in text and \
            "pages on 2 more connections, compression zstd" in text, text[:1000]
        note("%s", mf["summary"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_checkpoint(binary, path, mem="256M", append="ws=32 tick_ms=200"):
    with Lab(binary) as lab:
        src = lab.source("-m", mem, append=append)
        src.wait_running(timeout=120)
        src.serial.wait_ticks(1, timeout=30, proc=src.proc)
        try:
            start_migration(src.qmp, "file:" + path)
        except Exception as e:
            raise AssertionError("migrate to file: not supported by this tern: %s" % e)
        info = wait_migration(src.qmp, 300)
        assert info["status"] == "completed", info


def test_checkpoint_file(binary):
    workdir = tempfile.mkdtemp(prefix="tern-dump-")
    try:
        path = os.path.join(workdir, "vm.tern")
        write_checkpoint(binary, path)
        data = open(path, "rb").read()
        note("checkpoint of %d bytes: %s", len(data), verify_ok(path))
        doc = records_of(path)
        types = [r["type"] for r in doc["records"]]
        assert types[:4] == ["VM_CONFIG", "STATIC_END", "MAPPED_RAM", "RAM_INDEX"], types
        assert "PAGE_DATA" not in types and types[-1] == "END", types
        m = doc["mapped"]
        assert doc["header"]["mapped_ram"] and m["ram_offset"] % MiB == 0, doc["header"]
        assert m["present"] > 0, m
        idx = first(doc, "RAM_INDEX")
        assert idx["offset"] == m["tail_offset"], (idx, m)

        # The first present page, from the index itself.
        body = idx["offset"] + 8
        nr_gfns, present = struct.unpack_from("<QQ", data, body)
        bitmap = data[body + 16:body + 16 + (nr_gfns + 63) // 64 * 8]
        gfns = [g for g in range(nr_gfns) if bitmap[g // 8] >> (g % 8) & 1]
        assert len(gfns) == present
        bad = os.path.join(workdir, "bad.tern")

        def flip(off, mask=0x01):
            b = bytearray(data)
            b[off] ^= mask
            return bytes(b)

        for g in (gfns[0], gfns[len(gfns) // 2], gfns[-1]):
            off = m["ram_offset"] + g * PAGE + 1234
            msg = expect_bad(bad, flip(off), "page gfn %#x" % g, ("gfn %#x at file offset" % g,))
        note("page flip: %s", msg)
        expect_bad(bad, flip(3), "header", ("stream header",))
        expect_bad(bad, flip(body + 16 + 3), "RAM_INDEX bitmap", ("(RAM_INDEX)",))
        expect_bad(bad, flip(trailer_offset(idx) - 1), "RAM_INDEX page CRC", ("(RAM_INDEX)",))
        mr = first(doc, "MAPPED_RAM")
        expect_bad(bad, flip(mr["offset"] + 8 + 2), "MAPPED_RAM", ("(MAPPED_RAM)",))
        vcpu = first(doc, "VCPU_STATE")
        expect_bad(bad, flip(vcpu["offset"] + 8 + 40), "VCPU_STATE", ("(VCPU_STATE)",))
        expect_bad(bad, flip(mr["offset"] + 48), "head padding", ("padding",))
        cuts = (100, m["ram_offset"] + gfns[0] * PAGE + 10, m["tail_offset"] - 1,
                m["tail_offset"] + 20, len(data) - 1)
        for cut in cuts:
            msg = expect_bad(bad, data[:cut], "cut at %d" % cut, ("record ",))
            note("cut at %d: %s", cut, msg)
        expect_bad(bad, data + b"junk", "garbage after END", ("trailing bytes",))
        with open(path, "rb") as f:
            r = dump("--verify", "-", stdin=f)
        assert r.returncode == 1 and "regular file" in r.stderr, r.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_checkpoint_1g_fast(binary):
    """Verifying a 1 GiB guest's checkpoint reads every present page: in seconds."""
    workdir = tempfile.mkdtemp(prefix="tern-dump-", dir="/var/tmp")
    try:
        path = os.path.join(workdir, "big.tern")
        write_checkpoint(binary, path, mem="1G", append="ws=16 fill=768 tick_ms=200")
        t0 = time.time()
        out = verify_ok(path)
        elapsed = time.time() - t0
        note("%s in %.2f s (%d MiB allocated on disk)", out, elapsed,
             os.stat(path).st_blocks * 512 // MiB)
        present = records_of(path)["mapped"]["present"]
        assert present * PAGE >= 700 * MiB, present
        assert elapsed < 30, elapsed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    tern_dump_binary()      # fail early on a missing tool
    run_tests([
        ("live migration capture", test_live_capture),
        ("multifd capture: the MULTIFD record", test_multifd_capture),
        ("checkpoint file", test_checkpoint_file),
        ("checkpoint of 1 GiB verifies fast", test_checkpoint_1g_fast),
    ])
