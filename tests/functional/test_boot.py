#!/usr/bin/env python3
"""Boot the bundled test guest on the accelerator under test (KVM or the
software CPU) and drive it: speed, SMP and atomics, pause/resume, reset, power
off, QMP and HMP robustness, choosing the accelerator."""
import os
import re
import shutil
import socket
import subprocess
import time

from ternlib import (ACCEL, SLOW, QMPError, Tern, Hmp, assert_vcpus_busy, run_tests, TICK_RE,
                     quiet_for)

# ns per dec/jnz iteration the guest may measure. On KVM: native (kvm_pvm's
# instruction emulator costs ~1 us per instruction). On the software CPU: its
# decoded-instruction cache at work (decoding every instruction again costs
# several times more, even under ASan); its speed is measured by make bench.
MAX_NS_PER_LOOP_ITER = 5 if ACCEL == "kvm" else 150


def boot(binary, *args, **kw):
    return Tern(binary, list(args), **kw)


def test_boots_at_speed(binary):
    with boot(binary, "-m", "512M", "-append", "ws=16 tick_ms=200") as vm:
        t0 = time.time()
        info = vm.wait_running(timeout=10)
        boot_s = time.time() - t0
        assert boot_s < 10 * SLOW, "boot took %.1f s" % boot_s
        assert info["ns_per_loop_iter"] < MAX_NS_PER_LOOP_ITER, \
            "guest loop too slow on %s: %s" % (ACCEL, info)
        # kvm_pvm accepts the vIF page; hardware KVM and the software CPU raise #GP.
        if ACCEL == "emu":
            assert info["pvm"] == 0, info
        ticks = vm.serial.wait_ticks(3, proc=vm.proc)
        assert all(t["errors"] == 0 for t in ticks), ticks
        assert ticks[-1]["timer_ticks"] > ticks[0]["timer_ticks"], "LAPIC timer not ticking"
        assert ticks[-1]["dirtied_mib"] > ticks[0]["dirtied_mib"], "workload not running"
        assert vm.qmp.cmd("query-status")["status"] == "running"


def test_smp2_runs_on_both_vcpus(binary):
    with boot(binary, "-m", "512M", "-smp", "2", "-append", "ws=16 cpus=2 tick_ms=200") as vm:
        info = vm.wait_running()
        assert info["cpus"] == 2, info
        cpus = vm.qmp.cmd("query-cpus-fast")
        assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
        assert len(set(c["thread-id"] for c in cpus)) == 2
        # Both vCPU threads burn CPU: the workload runs on both.
        assert_vcpus_busy(vm, 0.2)


def test_smp_atomics(binary):
    """Spinlocks and lock-prefixed instructions are atomic across vCPU threads."""
    with boot(binary, "-m", "256M", "-smp", "2",
              "-append", "locktest=200000 cpus=2 tick_ms=200") as vm:
        m = vm.serial.wait_for(r"^testguest: locktest (.*)$", timeout=30, proc=vm.proc)
        assert m.group(1).endswith(" ok"), m.group(0)
        assert "cpus 2 " in m.group(0), m.group(0)
        ticks = vm.serial.wait_ticks(2, proc=vm.proc)
        assert ticks[-1]["errors"] == 0, ticks


def test_query_kvm(binary):
    with boot(binary, "-m", "256M", hmp=True) as vm:
        vm.wait_running()
        kvm = vm.qmp.cmd("query-kvm")
        assert kvm["enabled"] is (ACCEL == "kvm"), kvm
        assert kvm["present"] is os.path.exists("/dev/kvm"), kvm
        assert kvm["x-accelerator"] in (("kvm", "kvm_pvm") if ACCEL == "kvm" else ("emu",)), kvm
        out = Hmp(vm.hmp_path).run("info kvm")
        want = "kvm support: enabled" if ACCEL == "kvm" else "kvm support: disabled"
        assert want in out, out


def without_dev_kvm(cmd):
    """(cmd) as run where /dev/kvm does not exist: as is on such a host, else
    in a private mount namespace with an empty /dev (needs root and unshare)."""
    if not os.path.exists("/dev/kvm"):
        return cmd
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    script = 'mount -t tmpfs none /dev && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + cmd


def test_accel_choice_without_kvm(binary):
    if ACCEL != "emu":
        print("# (runs in the emu suite only)")
        return
    cmd = without_dev_kvm([binary, "-accel", "kvm", "-serial", "none", "-m", "64M"])
    if cmd is None:
        print("# not root: cannot hide /dev/kvm; left to the machines without it")
        return
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "/dev/kvm" in r.stderr, (r.returncode, r.stderr)
    # The default falls back to the software CPU and says so in one line.
    cmd = without_dev_kvm([binary, "-serial", "stdio", "-m", "64M",
                           "-append", "tick_ms=100 exit_after=2"])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    notes = [l for l in r.stderr.splitlines() if "software CPU" in l]
    assert len(notes) == 1 and "/dev/kvm" in notes[0], r.stderr
    assert re.search(r"^testguest: running .* pvm 0 ", r.stdout, re.M), r.stdout[-2000:]
    assert "testguest: exit errors 0" in r.stdout, r.stdout[-2000:]


def test_pause_resume(binary):
    with boot(binary, "-m", "512M", "-append", "ws=8 tick_ms=100") as vm:
        vm.wait_running()
        vm.serial.wait_ticks(2, proc=vm.proc)
        vm.qmp.cmd("stop")
        vm.qmp.wait_event("STOP")
        st = vm.qmp.cmd("query-status")
        assert st["status"] == "paused" and st["running"] is False, st
        vm.serial.poll()
        printed = quiet_for(1.0, vm.serial.poll)
        assert not printed, "guest printed while paused: %s" % printed
        vm.qmp.cmd("cont")
        vm.qmp.wait_event("RESUME")
        ticks = vm.serial.wait_ticks(2, proc=vm.proc)
        # The guest itself felt the pause.
        assert max(t["max_gap_us"] for t in ticks) > 900000, ticks
        assert ticks[-1]["errors"] == 0


def test_start_paused(binary):
    with boot(binary, "-m", "256M", "-S", "-append", "tick_ms=100") as vm:
        st = vm.qmp.cmd("query-status")
        assert st["status"] == "prelaunch" and not st["running"], st
        assert not quiet_for(0.5, vm.serial.poll), "guest ran under -S"
        vm.qmp.cmd("cont")
        vm.wait_running()


def test_system_reset(binary):
    with boot(binary, "-m", "256M", "-append", "ws=4 tick_ms=100") as vm:
        vm.wait_running()
        vm.serial.wait_ticks(1, proc=vm.proc)
        vm.qmp.cmd("system_reset")
        ev = vm.qmp.wait_event("RESET")
        assert ev["data"]["guest"] is False
        vm.wait_running()
        # The first tick of the fresh boot (the old boot's lines came before "running").
        tick = vm.serial.wait_ticks(1, proc=vm.proc)[0]
        assert tick["tick"] == 1 and tick["errors"] == 0, tick


def test_guest_power_off(binary):
    with boot(binary, "-m", "256M", "-append", "tick_ms=100 exit_after=2") as vm:
        status = vm.wait_exit(timeout=20)
        assert status % 2 == 1, "exit status %d is not a debug-exit status" % status
        vm.serial.poll()
        ticks = [l for l in vm.serial.lines if TICK_RE.match(l)]
        assert len(ticks) == 2, "exit_after=2 printed %d ticks: %s" % (len(ticks), ticks)


def test_quit(binary):
    with boot(binary, "-m", "256M") as vm:
        vm.wait_running()
        vm.qmp.cmd("quit")
        ev = vm.qmp.wait_event("SHUTDOWN")
        assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, ev
        assert vm.wait_exit() == 0


def test_qmp_bad_input(binary):
    with boot(binary, "-m", "256M") as vm:
        q = vm.qmp
        bad = [
            b'{"execute": "query-status"',          # completed by the next line
            b'}\n',
            b'{"execute": 42}\n',
            b'[1, 2, 3]\n',
            b'{"arguments": {}}\n',
            b'{"execute": "no-such-command"}\n',
            b'{"execute": "human-monitor-command", "arguments": {"command-line": 7}}\n',
            b'{"execute": "stop", "arguments": {"bogus": 1}}\n',
            b'{"execute": "query-status" garbage}\n',
        ]
        for chunk in bad:
            q.send_raw(chunk)
        replies = [q.read_reply() for _ in range(8)]
        assert "return" in replies[0], replies[0]
        assert all("error" in r for r in replies[1:]), replies
        classes = [r["error"]["class"] for r in replies[1:]]
        assert "CommandNotFound" in classes, classes
        # Oversized input gets an error, not a crash.
        q.send_raw(b'{"execute": "query-status", "arguments": {"x": "' + b"A" * (2 << 20) + b'"}}\n')
        r = q.read_reply()
        assert "error" in r, r
        # Still alive, still answering, on this and on a new connection.
        assert vm.alive()
        assert q.cmd("query-status")["status"] == "running"
        from ternlib import QMP
        q2 = QMP(vm.qmp_path)
        assert q2.cmd("query-status")["running"] is True
        q2.close()
        # A client vanishing mid-request is harmless.
        s = socket.socket(socket.AF_UNIX)
        s.connect(vm.qmp_path)
        s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-st')
        s.close()
        assert q.cmd("query-status")["running"] is True


def test_hmp(binary):
    with boot(binary, "-m", "256M", "-smp", "2", hmp=True) as vm:
        vm.wait_running()
        h = Hmp(vm.hmp_path)
        assert "VM status: running" in h.run("info status")
        h.run("stop")
        assert "VM status: paused" in h.run("info status")
        h.run("cont")
        assert "VM status: running" in h.run("info status")
        cpus = h.run("info cpus")
        assert "CPU #0" in cpus and "CPU #1" in cpus, cpus
        assert "stop" in h.run("help") and "info" in h.run("help")
        assert "status" in h.run("help info")
        assert "unknown command" in h.run("frobnicate")
        out = vm.qmp.hmp("info status")
        assert "VM status: running" in out, out
        h.close()


def test_bad_command_lines(binary):
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".elf") as f:
        f.write(b"this is not an ELF file")
        f.flush()
        r = subprocess.run([binary, "-kernel", f.name, "-serial", "none"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "ELF" in r.stderr, (r.returncode, r.stderr)
    r = subprocess.run([binary, "-m", "64T", "-serial", "none"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "RAM" in r.stderr, r.stderr
    r = subprocess.run([binary, "-m", "lots"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not a size" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests([
        ("boots at speed", test_boots_at_speed),
        ("smp atomics (locktest)", test_smp_atomics),
        ("query-kvm and info kvm", test_query_kvm),
        ("accelerator choice without /dev/kvm", test_accel_choice_without_kvm),
        ("smp 2 runs on both vCPUs", test_smp2_runs_on_both_vcpus),
        ("pause and resume", test_pause_resume),
        ("start paused (-S)", test_start_paused),
        ("system_reset", test_system_reset),
        ("guest powers off", test_guest_power_off),
        ("quit", test_quit),
        ("QMP bad input", test_qmp_bad_input),
        ("HMP console", test_hmp),
        ("bad command lines", test_bad_command_lines),
    ])
