#!/usr/bin/env python3
"""cpr-transfer: a running VM handed to a new tern process on the same host,
its guest RAM passed as memfds over a UNIX socket instead of copied.

The fault-injection proxy cannot carry file descriptors, so the failures are
made by hand: a target that stalls after receiving the memfds, or after END,
and is killed (TERN_TEST_STALL_AFTER), a target refusing the configuration, a
cancel while the target does not answer (SIGSTOP), and both set-up
mismatches. In each, the source goes on running the same guest (its own
self-check stays clean) and the target never runs it.
"""
import os
import signal
import socket
import struct
import subprocess
import time
import zlib

import ternlib
from ternlib import (assert_guest_moved, assert_source_unharmed, assert_target_refused, Lab,
                     live_ticks, QMPError, run_tests, start_migration, status,
                     Tern, tcp_uri, wait_migration, wait_migration_status)

MiB = 1 << 20
TICK = "tick_ms=200"


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


def digest(vm):
    return vm.qmp.cmd("x-query-ram-digest")["digest"]


def handover_target(lab, *args, name="dst", binary=None, env=None, mode=True, paused=False):
    """A target on -incoming unix:PATH (with -migrate-mode cpr-transfer when (mode))."""
    sock = os.path.join(lab.dir, name + ".handover")
    vm_args = list(args) + (["-S"] if paused else []) + ["-incoming", "unix:" + sock]
    if mode:
        vm_args += ["-migrate-mode", "cpr-transfer"]
    vm = Tern(binary or lab.binary, vm_args, name=name, workdir=lab.dir, extra_env=env)
    lab.vms.append(vm)
    vm.uri = "unix:" + sock
    return vm


def hand_over(src, uri, timeout=60.0):
    src.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
    start_migration(src.qmp, uri)
    return wait_migration(src.qmp, timeout)


def assert_handed_over(info, src, dst):
    """Completed as a user sees it: no RAM bytes, a downtime, the source done for good."""
    assert info["status"] == "completed", info
    wait_migration_status(dst.qmp, "completed", 10)
    assert info["ram"]["transferred"] == 0, info
    assert 0 <= info["downtime"] <= info["total-time"], info
    assert status(src) == "postmigrate", src.qmp.cmd("query-status")
    # The source's RAM is gone: nothing may touch it again.
    for cmd, args in (("cont", {}), ("system_reset", {}), ("x-query-ram-digest", {}),
                      ("migrate", {"uri": "unix:" + os.path.join(src.dir, "again")})):
        try:
            src.qmp.cmd(cmd, **args)
        except QMPError as e:
            assert "handed over" in str(e), (cmd, e)
        else:
            raise AssertionError("%s accepted after the hand-over" % cmd)
    assert status(src) == "postmigrate"


def target_waits_then_kill(dst):
    ternlib.assert_target_waits(dst)
    dst.kill()


def failure_case(binary, make_target, provoke=None, src_mode="cpr-transfer", expect="failed",
                 vetting=False):
    """Hand over a running guest to the target (make_target)(lab) makes, which
    must fail; (provoke)(src, dst) runs while it is under way. Then the source
    runs on, and a paused copy of it keeps an unchanged digest through a second
    failing attempt. (vetting): the target refuses the source before loading
    anything, and waits on."""
    settle = target_waits_then_kill if vetting else assert_target_refused
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", "-smp", "2", append="ws=16 cpus=2 " + TICK)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        dst = make_target(lab, "dst")
        src.qmp.cmd("migrate-set-parameters", mode=src_mode)
        start_migration(src.qmp, dst.uri)
        if provoke:
            provoke(src, dst)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == expect, info
        assert info.get("error-desc"), info
        assert_source_unharmed(src, last)
        settle(dst)
        why = info["error-desc"]
        # Again with the source paused: its RAM must come back bit for bit.
        src.qmp.cmd("stop")
        before = digest(src)
        dst2 = make_target(lab, "dst2")
        start_migration(src.qmp, dst2.uri)
        if provoke:
            provoke(src, dst2)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == expect, info
        settle(dst2)
        assert status(src) == "paused", src.qmp.cmd("query-status")
        assert digest(src) == before, "source RAM changed by a failed hand-over"
        src.qmp.cmd("cont")
        live_ticks(src, 2)
        note("source says: %s", why)
        return why


# ---------------------------------------------------------------------------

def test_running_smp2(binary):
    """A running -smp 2 guest, both vCPUs busy, handed over on the issue's command line."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", "-smp", "2", append="ws=64 cpus=2 " + TICK)
        dst = handover_target(lab, "-m", "1G", "-smp", "2")
        assert src.wait_running()["cpus"] == 2
        assert status(dst) == "inmigrate"
        last = live_ticks(src, 2)[-1]
        info = hand_over(src, dst.uri)
        assert_handed_over(info, src, dst)
        ticks = assert_guest_moved(last, dst, n=4)
        assert ticks[-1]["dirtied_mib"] > ticks[0]["dirtied_mib"], ticks
        assert [c["cpu-index"] for c in dst.qmp.cmd("query-cpus-fast")] == [0, 1]
        assert status(dst) == "running"
        params = src.qmp.cmd("query-migrate-parameters")
        assert params["mode"] == "cpr-transfer", params
        note("downtime %d ms, total %d ms, guest max gap %.1f ms", info["downtime"],
             info["total-time"], max(t["max_gap_us"] for t in ticks) / 1000)


def test_digest_and_hmp(binary):
    """HMP on the source, -S on the target: the target's RAM is the source's."""
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=32 " + TICK, hmp=True)
        dst = handover_target(lab, "-m", "512M", paused=True)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        hmp = ternlib.Hmp(src.hmp_path)
        assert hmp.run("migrate_set_parameter mode cpr-transfer") == ""
        assert "mode: cpr-transfer" in hmp.run("info migrate_parameters")
        assert "does not accept" in hmp.run("migrate_set_parameter mode sideways")
        src.qmp.cmd("stop")
        before = digest(src)
        out = hmp.run("migrate unix:" + dst.uri[len("unix:"):])
        assert "rror" not in out, out
        info = wait_migration(src.qmp, 30) if src.qmp.cmd("query-migrate")["status"] != \
            "completed" else src.qmp.cmd("query-migrate")
        assert info["status"] == "completed", info
        text = hmp.run("info migrate")
        assert "completed" in text, text
        wait_migration_status(dst.qmp, "completed", 10)
        assert status(dst) == "paused"
        assert digest(dst) == before, "target RAM differs from the source's"
        dst.qmp.cmd("cont")
        assert_guest_moved(last, dst)
        hmp.close()


def killed_after(binary, record):
    def make(lab, name):
        return handover_target(lab, "-m", "512M", "-smp", "2", name=name,
                               env={"TERN_TEST_STALL_AFTER": record})

    def kill_when_stalled(src, dst):
        ternlib.wait_until(lambda: "stalling after " + record in dst.stderr(), 30,
                           "the target stalling after " + record)
        dst.kill()

    return failure_case(binary, make, kill_when_stalled)


def test_target_killed_after_fds(binary):
    """Killed with the memfds mapped, before READY: the source never paused."""
    killed_after(binary, "RAM_FDS")


def test_target_killed_after_end(binary):
    """Killed holding the complete state, before RESUMED: on one host the source
    sees the target process gone (a pidfd), so it may resume, not stay in doubt."""
    why = killed_after(binary, "END")
    assert "target process exited" in why, why


def test_target_refuses_config(binary):
    def make(lab, name):
        return handover_target(lab, "-m", "1G", "-smp", "2", name=name)

    why = failure_case(binary, make, vetting=True)
    assert "RAM size differs" in why, why


def test_cancel(binary):
    def make(lab, name):
        vm = handover_target(lab, "-m", "512M", "-smp", "2", name=name)
        vm.qmp.close()
        vm.qmp = None
        vm.proc.send_signal(signal.SIGSTOP)     # listens (the kernel accepts), never answers
        return vm

    def cancel(src, dst):
        wait_migration_status(src.qmp, "setup", 10)
        time.sleep(0.2)
        src.qmp.cmd("migrate_cancel")
        dst.proc.send_signal(signal.SIGCONT)

    failure_case(binary, make, cancel, expect="cancelled")


def test_normal_target_offered_handover(binary):
    def make(lab, name):
        return handover_target(lab, "-m", "512M", "-smp", "2", name=name, mode=False)

    why = failure_case(binary, make, vetting=True)
    assert "mode is normal" in why, why


def test_handover_target_offered_normal(binary):
    def make(lab, name):
        return handover_target(lab, "-m", "512M", "-smp", "2", name=name)

    why = failure_case(binary, make, src_mode="normal", vetting=True)
    assert "set up for a cpr-transfer" in why, why


def test_then_tcp_to_third(binary):
    """Hand over, then migrate the target over TCP to a third process: every
    populated page goes (the dirty log started clean), digests equal."""
    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=32 fill=64 " + TICK)
        dst = handover_target(lab, "-m", "1G")
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        assert_handed_over(hand_over(src, dst.uri), src, dst)
        last = assert_guest_moved(last, dst)[-1]
        third = lab.target("-m", "1G", name="third", paused=True)
        dst.qmp.cmd("stop")
        before = digest(dst)
        dst.qmp.cmd("migrate-set-parameters", mode="normal")
        start_migration(dst.qmp, third.uri)
        info = wait_migration(dst.qmp, 90)
        assert info["status"] == "completed", info
        wait_migration_status(third.qmp, "completed", 10)
        assert digest(third) == before, "third process's RAM differs"
        assert info["ram"]["normal"] * 4096 >= 64 * MiB, info["ram"]
        third.qmp.cmd("cont")
        assert_guest_moved(last, third)
        note("TCP after hand-over: %d pages with data, %d MiB sent",
             info["ram"]["normal"], info["ram"]["transferred"] // MiB)


def test_newer_build_deferred(binary):
    """To tern-next (another version string), set up QEMU's way: -incoming
    defer, migrate-set-parameters mode, migrate-incoming unix:PATH."""
    nxt = os.path.join(os.path.dirname(binary), "tern-next")
    with Lab(binary) as lab:
        src = lab.source("-m", "512M", append="ws=16 " + TICK)
        dst = Tern(nxt, ["-m", "512M", "-incoming", "defer"], name="next", workdir=lab.dir)
        lab.vms.append(dst)
        v_src = src.qmp.cmd("query-version")["package"]
        v_dst = dst.qmp.cmd("query-version")["package"]
        assert v_src != v_dst and v_dst.endswith("-next"), (v_src, v_dst)
        try:
            dst.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
            dst.qmp.cmd("migrate-incoming", uri=tcp_uri(ternlib.free_port()))
        except QMPError as e:
            assert "unix:" in str(e), e
        else:
            raise AssertionError("cpr-transfer target accepted a tcp: URI")
        uri = "unix:" + os.path.join(lab.dir, "next.sock")
        dst.qmp.cmd("migrate-incoming", uri=uri)
        src.wait_running()
        src.serial.wait_ticks(2, proc=src.proc)     # past the first ticks after boot
        last = live_ticks(src, 2)[-1]
        # A tcp: URI in cpr-transfer mode is refused before anything pauses.
        src.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
        try:
            src.qmp.cmd("migrate", uri=tcp_uri(ternlib.free_port()))
        except QMPError as e:
            assert "unix:" in str(e), e
        else:
            raise AssertionError("cpr-transfer over tcp: accepted")
        assert status(src) == "running"
        info = hand_over(src, uri)
        assert_handed_over(info, src, dst)
        assert_guest_moved(last, dst)
        note("%s -> %s, downtime %d ms", v_src, v_dst, info["downtime"])


def rp_record(rtype, body=b""):
    """A return-path record with its CRC trailer."""
    pad = b"\0" * ((8 - len(body) % 8) % 8)
    head = struct.pack("<II", rtype, len(body))
    crc = zlib.crc32(head + body + pad)
    return head + body + pad + struct.pack("<II", crc, 0)


def test_dump_captured_handover(binary):
    """A hand-over stream captured by a stand-in target (which takes the memfds,
    answers READY, then ERROR) is shown by tern-dump; the source resumes."""
    dump = ternlib.tern_dump_binary()
    with Lab(binary) as lab:
        path = os.path.join(lab.dir, "capture.sock")
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        src = lab.source("-m", "512M", append="ws=8 " + TICK)
        src.wait_running()
        last = live_ticks(src, 1)[-1]
        src.qmp.cmd("migrate-set-parameters", mode="cpr-transfer")
        start_migration(src.qmp, "unix:" + path)
        conn, _ = lst.accept()
        conn.settimeout(30)
        head = struct.pack("<8sIIII4x", b"TERNMIG\0", 1, 1, 12, 0)
        rp_header = head + struct.pack("<I", zlib.crc32(head))
        data, fds, ready = b"", [], False
        while True:
            msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(64))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += list(struct.unpack("<%di" % (len(payload) // 4), payload))
            if not msg:
                break
            data += msg
            if not ready and len(data) > 200:
                conn.sendall(rp_header + rp_record(0x100))     # READY after the head
                ready = True
            if fds and data[-16:-8] == struct.pack("<II", 9, 0):
                # END (type 9, empty, CRC trailer) is the last record: say ERROR, stop.
                conn.sendall(rp_record(0x102, b"capture only"))
                break
        info = wait_migration(src.qmp, 30)
        assert info["status"] == "failed" and "capture only" in info["error-desc"], info
        assert len(fds) == 1, fds
        assert os.fstat(fds[0]).st_size == 512 * MiB
        for fd in fds:
            os.close(fd)
        conn.close()
        lst.close()
        assert_source_unharmed(src, last)
        cap = os.path.join(lab.dir, "handover.bin")
        with open(cap, "wb") as f:
            f.write(data)
        out = subprocess.run([dump, cap], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "RAM_FD" in out.stdout and "RAM_FDS" in out.stdout, out.stdout
        assert "PAGE_DATA" not in out.stdout, out.stdout
        note([l for l in out.stdout.splitlines() if "RAM_FDS" in l][0].strip())


if __name__ == "__main__":
    run_tests([
        ("hand-over of a running -smp 2 guest", test_running_smp2),
        ("HMP, -S target, digest equal", test_digest_and_hmp),
        ("target killed after the memfds", test_target_killed_after_fds),
        ("target killed after END", test_target_killed_after_end),
        ("target refuses the config", test_target_refuses_config),
        ("cancel", test_cancel),
        ("normal target offered a hand-over", test_normal_target_offered_handover),
        ("hand-over target offered a normal stream", test_handover_target_offered_normal),
        ("hand-over, then TCP to a third", test_then_tcp_to_third),
        ("to a newer build, deferred incoming", test_newer_build_deferred),
        ("tern-dump of a captured hand-over", test_dump_captured_handover),
    ])
