#!/usr/bin/env python3
"""Strangers at the incoming port: a target waiting for a migration vets every
connection (stream header, VM_CONFIG) and drops those that are not a source
for it -- a port scanner, garbage, a TLS client, a stalled peer, a source with
another VM's configuration -- logging each, and keeps listening until the real
source comes, or until migrate_cancel (docs/migration-stream.md, "Incoming
connections"). One target for all of it; a second, idle one for the cancel.
"""
import os
import re
import socket
import threading
import time

from ternlib import (assert_guest_moved, free_port, Lab, live_ticks, run_tests,
                     start_migration, stream_only_here, Tern, tcp_uri, wait_migration, wait_migration_status,
                     wait_until)

TICK = "tick_ms=200"
VET_TIMEOUT_MS = 2000
VET_MAX = 8  # INCOMING_VET_MAX, migration/incoming.c
DROPPED_RE = re.compile(r"^tern: incoming migration: dropped connection from "
                        r"(?P<peer>\S+): (?P<why>.*)$", re.M)


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


def waiting_target(lab, *args, name="dst"):
    """A target on -incoming tcp:127.0.0.1:PORT with a short vetting deadline."""
    port = free_port()
    vm = Tern(lab.binary, list(args) + ["-incoming", tcp_uri(port)], name=name,
              workdir=lab.dir, extra_env={"TERN_TEST_VET_TIMEOUT_MS": str(VET_TIMEOUT_MS)})
    lab.vms.append(vm)
    vm.port = port
    vm.uri = tcp_uri(port)
    return vm


def dropped(dst):
    """{local port of the stranger: why it was dropped} from the target's stderr."""
    out = {}
    for m in DROPPED_RE.finditer(dst.stderr()):
        out[int(m.group("peer").rsplit(":", 1)[1])] = m.group("why")
    return out


def connect(dst, data=b"", close=False):
    s = socket.create_connection(("127.0.0.1", dst.port), timeout=5)
    if data:
        s.sendall(data)
    if close:
        s.close()
    return s


def wait_dropped(dst, port, what):
    return wait_until(lambda: dropped(dst).get(port), 20, "target drops the %s" % what)


def assert_waiting(dst):
    assert dst.alive(), "target exited: %s" % dst.stderr()[-500:]
    info = dst.qmp.cmd("query-migrate")
    assert info["status"] == "setup", info
    assert dst.qmp.cmd("query-status")["status"] == "inmigrate"


def test_strangers_then_source(binary):
    with Lab(binary) as lab:
        dst = waiting_target(lab, "-m", "256M")
        src = lab.source("-m", "256M", append="ws=8 " + TICK)
        keep = []
        try:
            # A stalled peer first: it must not hold up anything, and its
            # deadline drops it.
            stall = connect(dst)
            keep.append(stall)
            # A port scanner, garbage, a TLS client, while it stalls.
            scan = connect(dst)
            scan_port = scan.getsockname()[1]
            scan.close()
            junk = connect(dst, os.urandom(4096))
            keep.append(junk)
            tls = connect(dst, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64))
            keep.append(tls)
            why = wait_dropped(dst, scan_port, "port scanner")
            assert "end of stream" in why, why
            why = wait_dropped(dst, junk.getsockname()[1], "garbage")
            assert "bad magic" in why, why
            why = wait_dropped(dst, tls.getsockname()[1], "TLS client")
            assert "TLS client connected, but tls-creds is not set" in why, why
            why = wait_dropped(dst, stall.getsockname()[1], "stalled peer")
            assert "within %d ms" % VET_TIMEOUT_MS in why, why
            assert_waiting(dst)

            # Eight stall at once (INCOMING_VET_MAX): a ninth evicts the oldest,
            # so a flood of silent strangers cannot keep the real source out.
            stalls = []
            for _ in range(VET_MAX):
                stalls.append(connect(dst))
                time.sleep(0.01)
            keep += stalls
            ninth = connect(dst)
            keep.append(ninth)
            why = wait_dropped(dst, stalls[0].getsockname()[1], "oldest of nine stallers")
            assert "evicted" in why, why
            gone = [s.getsockname()[1] for s in stalls[1:] + [ninth]]
            for s in stalls[1:] + [ninth]:
                s.close()
            for port in gone:
                wait_dropped(dst, port, "closed staller")

            # A source of another VM (other RAM size) hears why; the target waits on.
            other = lab.source("-m", "128M", append="ws=0", name="other")
            other.wait_running()
            start_migration(other.qmp, dst.uri)
            info = wait_migration(other.qmp, 30)
            assert info["status"] == "failed", info
            desc = info.get("error-desc", "")
            assert "refused" in desc and "RAM size differs" in desc, info
            assert_waiting(dst)
            other.close()

            # The real source, while a stranger stalls (within its deadline).
            src.wait_running()
            last = live_ticks(src, 1)[-1]
            held = connect(dst)
            keep.append(held)
            start_migration(src.qmp, dst.uri)
            info = wait_migration(src.qmp, 60)
            assert info["status"] == "completed", info
            wait_migration_status(dst.qmp, "completed", 10)
            ticks = assert_guest_moved(last, dst)
            why = wait_dropped(dst, held.getsockname()[1], "stranger held open")
            assert "another source" in why, why
            # Listening stopped with the winner.
            try:
                connect(dst, close=True)
            except OSError:
                pass
            else:
                raise AssertionError("the target still listens after the migration")
            note("dropped %d strangers; guest moved, tick %d -> %d", len(dropped(dst)),
                 last["tick"], ticks[0]["tick"])
        finally:
            for s in keep:
                s.close()


def test_flood(binary):
    """Silent connections pour in as a multifd source migrates: each new one
    evicts the oldest silent one being vetted (or waiting to join as a
    channel), so the real stream and its channels still get through."""
    with Lab(binary) as lab:
        src = lab.source("-m", "256M", append="ws=8 " + TICK)
        dst = lab.start("dst", ["-m", "256M", "-incoming", "defer"])
        for vm in (src, dst):
            vm.qmp.cmd("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
            vm.qmp.cmd("migrate-set-parameters", multifd_channels=2)
        port = free_port()
        dst.qmp.cmd("migrate-incoming", uri=tcp_uri(port))
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        stop, held, made = [False], [], [0]

        def flood():
            while not stop[0]:
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
                    made[0] += 1
                    if len(held) > 4 * VET_MAX:
                        held.pop(0).close()
                except OSError:
                    time.sleep(0.005)

        t = threading.Thread(target=flood)
        t.start()
        try:
            time.sleep(0.2)          # the slots are full of strangers already
            start_migration(src.qmp, tcp_uri(port))
            info = wait_migration(src.qmp, 90)
        finally:
            stop[0] = True
            t.join()
            for c in held:
                c.close()
        assert info["status"] == "completed", info
        assert_guest_moved(last, dst)
        evicted = dst.stderr().count("evicted")
        assert evicted > 0, dst.stderr()[-800:]
        note("%d silent connections, %d evicted while vetting; migration completed",
             made[0], evicted)


def test_cancel_waiting_target(binary):
    with Lab(binary) as lab:
        dst = waiting_target(lab, "-m", "64M")
        s = connect(dst)            # one connection in vetting when the cancel comes
        try:
            assert dst.qmp.cmd("migrate_cancel") == {}
            # Sent before the reply; the process ends right after it.
            dst.qmp.wait_event("MIGRATION", 10, match=lambda d: d.get("status") == "cancelled")
            code = dst.wait_exit(10)
            assert code == 1, "target exit status %s after a cancel" % code
            err = dst.stderr()
            assert "tern: incoming migration cancelled" in err, err
            assert "migration cancelled" in dropped(dst).get(s.getsockname()[1], ""), err
        finally:
            s.close()


if __name__ == "__main__":
    run_tests([
        ("strangers, a wrong source, then the source", test_strangers_then_source),
        ("migrate_cancel on a waiting target", test_cancel_waiting_target),
    ] + ([("a flood of silent connections during a multifd migration", test_flood)]
         if stream_only_here() else []))
