"""ternlib: start tern processes and drive them over QMP, HMP and the serial log.

Python 3 standard library only. Used by the functional tests, the demo and
the benchmarks.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77

# The accelerator under test (meson runs every functional test twice: suites
# 'kvm' and 'emu'). Waits for guest progress scale with it: the software CPU
# boots and runs the guest several times slower. Assertions do not.
# Run by hand without TERN_TEST_ACCEL: KVM where /dev/kvm exists, else emu.
ACCEL = os.environ.get("TERN_TEST_ACCEL") or ("kvm" if os.path.exists("/dev/kvm") else "emu")
SLOW = 4 if ACCEL == "emu" else 1

TICK_RE = re.compile(
    r"^tick (?P<tick>\d+) t_ms (?P<t_ms>\d+) dirtied_mib (?P<dirtied_mib>\d+) "
    r"passes (?P<passes>\d+) timer_ticks (?P<timer_ticks>\d+) "
    r"max_gap_us (?P<max_gap_us>\d+) errors (?P<errors>\d+)")
RUNNING_RE = re.compile(r"^testguest: running (?P<rest>.*)$")


def require_kvm():
    """Exit with the skip code, loudly, only when /dev/kvm does not exist."""
    if not os.path.exists("/dev/kvm"):
        sys.stderr.write("\n" + "=" * 70 + "\nSKIPPED: /dev/kvm is absent on this machine; "
                         "this test needs KVM and proves nothing here.\n" + "=" * 70 + "\n")
        sys.exit(SKIP)


def stream_only_here():
    """Whether checks that exercise only the stream (proxy faults in the live
    passes, TLS timeouts: nothing of the accelerator) run in this suite. They
    run once per host: in the kvm suite where /dev/kvm exists, else in the emu
    suite, so a host without KVM still runs every one of them."""
    return ACCEL == "kvm" or not os.path.exists("/dev/kvm")


def require_accel():
    """Skip (77) only where the accelerator under test cannot exist: KVM without /dev/kvm."""
    print("# accelerator: %s" % ACCEL, flush=True)
    if ACCEL == "kvm":
        require_kvm()


def tern_binary():
    path = os.environ.get("TERN") or (sys.argv[1] if len(sys.argv) > 1 else None)
    if not path or not os.path.exists(path):
        raise SystemExit("usage: test.py PATH/TO/tern (or TERN=...)")
    return os.path.abspath(path)


def tern_dump_binary():
    """tern-dump: $TERN_DUMP, argv[2], or next to the tern binary."""
    path = os.environ.get("TERN_DUMP") or (sys.argv[2] if len(sys.argv) > 2 else None)
    if not path:
        path = os.path.join(os.path.dirname(tern_binary()), "tern-dump")
    if not os.path.exists(path):
        raise SystemExit("usage: test.py PATH/TO/tern PATH/TO/tern-dump (or TERN_DUMP=...)")
    return os.path.abspath(path)


class QMPError(Exception):
    def __init__(self, error):
        super().__init__("%s: %s" % (error.get("class"), error.get("desc")))
        self.error = error


def _poll(seconds, fn, interval):
    """fn()'s first truthy value within (seconds), else None."""
    deadline = time.time() + seconds
    while True:
        got = fn()
        if got:
            return got
        if time.time() >= deadline:
            return None
        time.sleep(min(interval, max(deadline - time.time(), 0)))


def quiet_for(seconds, happened, interval=0.05):
    """Poll happened() for (seconds): return its first truthy value at once
    (something happened that should not have), else None once the whole time
    passed quietly. For "nothing happens for T" checks: the failure shows as
    soon as it occurs, and a quiet run still lasts the full T."""
    return _poll(seconds, happened, interval)


def wait_until(ready, timeout, what, interval=0.05):
    """Poll ready() until it returns something truthy, and return that; raise
    TimeoutError naming (what) once (timeout) seconds passed without it. For
    waiting on something observable instead of sleeping and hoping."""
    got = _poll(timeout, ready, interval)
    if not got:
        raise TimeoutError("%s: not within %.0f s" % (what, timeout))
    return got


def connect_unix(path, timeout, alive=None):
    """A socket connected to unix socket (path), retried until the server
    listens, for (timeout) seconds or while alive() holds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.time() + timeout
    while True:
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            if time.time() > deadline or (alive is not None and not alive()):
                sock.close()
                raise
            time.sleep(0.02)


class QMP:
    """A QMP client on a unix socket: negotiates, runs commands, collects events."""

    def __init__(self, path, timeout=30.0, negotiate=True, alive=None):
        self.sock = connect_unix(path, timeout, alive)
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []        # not yet consumed by wait_event()
        self.history = []       # every event ever received, in order
        self.greeting = self._read_message()
        if negotiate:
            self.cmd("qmp_capabilities")

    def _read_message(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def read_reply(self):
        """The next non-event message."""
        while True:
            msg = self._read_message()
            if "event" in msg:
                self._got_event(msg)
                continue
            return msg

    def _got_event(self, msg):
        self.events.append(msg)
        self.history.append(msg)

    def execute(self, name, **arguments):
        req = {"execute": name}
        if arguments:
            req["arguments"] = {k.replace("_", "-") if k != "command_line" else "command-line": v
                                for k, v in arguments.items()}
        self.send_raw(json.dumps(req) + "\n")
        return self.read_reply()

    def cmd(self, name, **arguments):
        reply = self.execute(name, **arguments)
        if "error" in reply:
            raise QMPError(reply["error"])
        return reply["return"]

    def hmp(self, command_line):
        return self.cmd("human-monitor-command", command_line=command_line)

    def wait_event(self, name, timeout=30.0, match=None):
        timeout *= SLOW
        deadline = time.time() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and (match is None or match(ev.get("data", {}))):
                    return self.events.pop(i)
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError("no %s event within %.0f s" % (name, timeout))
            self.sock.settimeout(remaining)
            try:
                self._got_event(self._read_message())
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(self.timeout)

    def poll_events(self, timeout=0.0):
        """Read whatever events arrive within (timeout) s; returns how many."""
        n = 0
        deadline = time.time() + timeout
        while True:
            remaining = max(deadline - time.time(), 0.001)
            self.sock.settimeout(remaining)
            try:
                self._got_event(self._read_message())
                n += 1
            except socket.timeout:
                return n
            finally:
                self.sock.settimeout(self.timeout)

    def close(self):
        self.sock.close()


class Serial:
    """Reads the guest's serial log (a file) line by line.

    (lines) holds every line read so far. poll() reads what is new, returns
    it and counts it as seen; wait_for() reads and looks at unseen lines one
    at a time, so lines that arrive together (two ticks in one read) are each
    found in turn."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = ""
        self.lines = []
        self.seen = 0               # lines[:seen] were returned or scanned

    def _read(self):
        try:
            with open(self.path, "r", errors="replace") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        data = self.partial + data
        parts = data.split("\n")
        self.partial = parts.pop()
        self.lines.extend(p.rstrip("\r") for p in parts)

    def poll(self):
        """The lines not seen yet; from now on they are."""
        self._read()
        new, self.seen = self.lines[self.seen:], len(self.lines)
        return new

    def wait_for(self, regex, timeout=20.0, proc=None):
        """Wait for an unseen line matching (regex); returns the match."""
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        timeout *= SLOW
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._read()
            while self.seen < len(self.lines):
                self.seen += 1
                m = pattern.search(self.lines[self.seen - 1])
                if m:
                    return m
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("tern exited with %s while waiting for %r"
                                   % (proc.returncode, pattern.pattern))
            time.sleep(0.02)
        raise TimeoutError("no line matching %r within %.0f s; last lines: %s"
                           % (pattern.pattern, timeout, self.lines[-5:]))

    def wait_ticks(self, n, timeout=20.0, proc=None):
        ticks = []
        while len(ticks) < n:
            m = self.wait_for(TICK_RE, timeout, proc)
            ticks.append({k: int(v) for k, v in m.groupdict().items()})
        return ticks

    def ticks_since(self, start, n=3, timeout=10.0, alive=lambda: True):
        """(n) tick lines from line index (start) on, or None and why not."""
        timeout *= SLOW
        deadline = time.time() + timeout
        while True:
            self.poll()
            ticks = [{k: int(v) for k, v in m.groupdict().items()}
                     for m in (TICK_RE.match(l) for l in self.lines[start:]) if m]
            if len(ticks) >= n:
                return ticks[:n], None
            if time.time() > deadline or not alive():
                return None, "%d of %d ticks within %.0f s (alive %s); last lines %s" % (
                    len(ticks), n, timeout, alive(), self.lines[-3:])
            time.sleep(0.05)


def parse_running(line_match):
    """'testguest: running ws_mib 64 ... ns_per_loop_iter 0.31' -> dict."""
    words = line_match.group("rest").split()
    out = {}
    for key, value in zip(words[0::2], words[1::2]):
        try:
            out[key] = float(value) if "." in value else int(value)
        except ValueError:
            out[key] = value
    return out


class Tern:
    """One tern process with a QMP socket, a serial log and (optionally) an HMP socket."""

    def __init__(self, binary, args=(), name="vm", workdir=None, hmp=False, qmp=True,
                 extra_env=None, preexec_fn=None):
        self.binary = binary
        self.dir = workdir or tempfile.mkdtemp(prefix="tern-test-")
        self.owns_dir = workdir is None
        self.name = name
        self.serial_path = os.path.join(self.dir, name + ".serial")
        self.qmp_path = os.path.join(self.dir, name + ".qmp")
        self.hmp_path = os.path.join(self.dir, name + ".hmp") if hmp else None
        self.stderr_path = os.path.join(self.dir, name + ".stderr")
        cmd = [binary, "-accel", ACCEL, "-serial", "file:" + self.serial_path]
        if qmp:
            cmd += ["-qmp", "unix:%s,server,nowait" % self.qmp_path]
        if hmp:
            cmd += ["-monitor", "unix:%s,server,nowait" % self.hmp_path]
        cmd += list(args)
        self.cmdline = cmd
        env = dict(os.environ)
        env.update(extra_env or {})
        self.stderr_file = open(self.stderr_path, "w")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.stderr_file,
                                         stderr=self.stderr_file, env=env,
                                         preexec_fn=preexec_fn)
        except OSError:
            self.stderr_file.close()
            if workdir is None:
                cleanup_dir(self.dir)
            raise
        self.serial = Serial(self.serial_path)
        try:
            self.qmp = QMP(self.qmp_path, alive=self.alive) if qmp else None
        except Exception as e:
            self.qmp = None
            self.close()
            raise RuntimeError("tern did not start (%s; exit %s): %s"
                               % (e, self.proc.returncode, self.stderr().strip()[-2000:]))

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def wait_running(self, timeout=20.0):
        return parse_running(self.serial.wait_for(RUNNING_RE, timeout, self.proc))

    def wait_exit(self, timeout=20.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("tern did not exit within %.0f s" % timeout)

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Stop the process; remove its directory if it made it."""
        self.close()
        if self.owns_dir:
            cleanup_dir(self.dir)
        return False

    def close(self):
        if self.qmp:
            try:
                self.qmp.close()
            except OSError:
                pass
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr_file.close()


class Hmp:
    """A client of the HMP console on a unix socket."""

    def __init__(self, path, timeout=20.0):
        self.sock = connect_unix(path, timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.read_until_prompt()

    def read_until_prompt(self):
        while not self.buf.endswith(b"(tern) "):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("HMP connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:-len(b"(tern) ")], b""
        return out.decode(errors="replace")

    def run(self, line):
        self.sock.sendall(line.encode() + b"\n")
        out = self.read_until_prompt()
        # Drop the echoed command line, if the console echoes.
        lines = [l for l in out.replace("\r", "").split("\n") if l.strip() != line.strip()]
        return "\n".join(lines).strip()

    def close(self):
        self.sock.close()


def live_ticks(vm, n=3, timeout=20.0, skip_old=True):
    """(n) new tick lines from (vm)'s guest: consecutive, errors 0, LAPIC timer running."""
    if skip_old:
        vm.serial.poll()                # skip what was printed before
    ticks = vm.serial.wait_ticks(n, timeout=timeout, proc=vm.proc)
    assert all(t["errors"] == 0 for t in ticks), "guest found corrupted memory: %s" % ticks
    numbers = [t["tick"] for t in ticks]
    assert numbers == list(range(numbers[0], numbers[0] + n)), "ticks not consecutive: %s" % ticks
    assert n < 2 or ticks[-1]["timer_ticks"] > ticks[0]["timer_ticks"], \
        "LAPIC timer stopped: %s" % ticks
    return ticks


def last_tick(vm):
    """The last tick line (vm)'s guest printed so far, parsed; None before the first."""
    vm.serial.poll()
    for line in reversed(vm.serial.lines):
        m = TICK_RE.match(line)
        if m:
            return {k: int(v) for k, v in m.groupdict().items()}
    return None


def warm_up(vm, ws):
    """Wait until the guest has rewritten its whole working set twice (pages populated)."""
    for _ in range(100):
        t = live_ticks(vm, 1)[-1]
        if t["dirtied_mib"] >= 2 * ws:
            return t
    raise AssertionError("guest dirtied only %d MiB in 100 ticks" % t["dirtied_mib"])


def vcpu_cpu_seconds(pid, tid):
    """CPU time (user + system) thread (tid) of process (pid) has used."""
    with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_vcpus_busy(vm, min_s, min_ticks=4, max_ticks=20):
    """Every vCPU thread of (vm) burns at least (min_s) of CPU while the guest
    prints (min_ticks) ticks, watched for up to (max_ticks): a busy host may
    lend each thread little at a time. Returns the ticks seen."""
    tids = [c["thread-id"] for c in vm.qmp.cmd("query-cpus-fast")]
    before = [vcpu_cpu_seconds(vm.proc.pid, t) for t in tids]
    ticks = []
    while len(ticks) < max_ticks:
        ticks += vm.serial.wait_ticks(1, proc=vm.proc)
        after = [vcpu_cpu_seconds(vm.proc.pid, t) for t in tids]
        if len(ticks) >= min_ticks and all(a - b > min_s for a, b in zip(after, before)):
            break
    for i, (b, a) in enumerate(zip(before, after)):
        assert a - b > min_s, "vCPU %d idle over %d ticks: %s -> %s" % (i, len(ticks), before,
                                                                         after)
    assert all(t["errors"] == 0 for t in ticks), ticks
    return ticks


def status(vm):
    return vm.qmp.cmd("query-status")["status"]


def cleanup_dir(path):
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------
# What a user sees of a migration's outcome, on either side.

def assert_source_unharmed(src, last_tick):
    """After a failed or cancelled migration or checkpoint the source still runs the same guest."""
    assert src.alive(), "source exited (%s): %s" % (src.proc.returncode, src.stderr()[-500:])
    assert status(src) == "running", src.qmp.cmd("query-status")
    ticks = live_ticks(src, 3)
    assert ticks[0]["tick"] > last_tick["tick"], (last_tick, ticks)
    return ticks


def assert_target_refused(dst, timeout=30.0):
    """The target gave up: it exits non-zero and never ran the guest."""
    code = dst.wait_exit(timeout)
    assert code != 0, "target exited with status 0 after a failed migration"
    dst.serial.poll()
    ran = [l for l in dst.serial.lines if TICK_RE.match(l)]
    assert not ran, "target ran a partial guest: %s" % ran[:3]
    return code


def assert_target_waits(dst):
    """A source refused before loading (its handshake, stream header or VM_CONFIG):
    the target logs why, never ran the guest and keeps waiting for the right
    source (test_strangers.py). Returns its last message."""
    err = wait_until(lambda: "dropped connection" in dst.stderr() and dst.stderr(), 10,
                     "the target logs the refused source")
    assert dst.alive(), "target exited: %r" % err
    assert dst.qmp.cmd("query-migrate")["status"] == "setup", dst.qmp.cmd("query-migrate")
    dst.serial.poll()
    assert not [l for l in dst.serial.lines if TICK_RE.match(l)], "target ran"
    return err.strip().splitlines()[-1]


def assert_guest_moved(src_last, dst, n=3):
    """The target runs the source's guest (not a fresh boot) and it is healthy.
    Its first ticks are the first the guest printed there: they cover the switchover."""
    ticks = live_ticks(dst, n, skip_old=False)
    assert ticks[0]["tick"] > src_last["tick"], "tick counter restarted: %s then %s" % (
        src_last, ticks)
    booted = [l for l in dst.serial.lines if RUNNING_RE.match(l)]
    assert not booted, "the target booted a guest of its own: %s" % booted
    assert status(dst) == "running"
    return ticks


def run_tests(tests):
    """Run (name, function) pairs; print a result line each and a closing summary."""
    require_accel()
    binary = tern_binary()
    passed = failed = 0
    for name, fn in tests:
        t0 = time.time()
        try:
            fn(binary)
            passed += 1
            print("ok   %-40s %.1fs" % (name, time.time() - t0), flush=True)
        except Exception as e:  # report and go on: one failure must not hide others
            failed += 1
            print("FAIL %-40s %s: %s" % (name, type(e).__name__, e), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


# ---------------------------------------------------------------------------
# Migration helpers: two (or more) tern processes on 127.0.0.1.

MIG_TERMINAL = ("completed", "failed", "cancelled")


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_uri(port):
    return "tcp:127.0.0.1:%d" % port


def migration_statuses(qmp):
    """The MIGRATION event statuses received so far, in order."""
    return [ev["data"]["status"] for ev in qmp.history if ev["event"] == "MIGRATION"]


# How far along each MIGRATION status is: events only ever move forward.
STATUS_RANK = {"setup": 0, "active": 1, "device": 2, "completed": 3,
               "cancelling": 3, "cancelled": 4, "failed": 4}


def assert_events_ordered(qmp, last):
    """MIGRATION events: start with setup, move forward only, end with (last)."""
    seen = migration_statuses(qmp)
    assert seen and seen[0] == "setup" and seen[-1] == last, "MIGRATION events %s" % seen
    ranks = [STATUS_RANK[s] for s in seen]
    assert ranks == sorted(ranks) and len(set(seen)) == len(seen), "MIGRATION events %s" % seen
    return seen


def start_migration(qmp, uri):
    """QMP migrate to (uri), after dropping earlier events (an incoming migration's, a
    previous attempt's) so that waits and migration_statuses() see only this one."""
    qmp.poll_events()
    qmp.events.clear()
    qmp.history.clear()
    reply = qmp.cmd("migrate", uri=uri)
    if reply != {}:
        raise QMPError({"class": "Unexpected", "desc": "migrate returned %r" % (reply,)})


def wait_migration_status(qmp, statuses, timeout=60.0):
    """Wait for a MIGRATION event whose status is in (statuses); returns query-migrate."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    try:
        qmp.wait_event("MIGRATION", timeout, match=lambda d: d.get("status") in statuses)
    except TimeoutError:
        raise TimeoutError("no MIGRATION event with status in %s within %.0f s; "
                           "events %s; query-migrate %s"
                           % (statuses, timeout, migration_statuses(qmp),
                              qmp.cmd("query-migrate")))
    return qmp.cmd("query-migrate")


def wait_migration(qmp, timeout=60.0):
    """Wait until the migration ends (completed, failed or cancelled); returns query-migrate."""
    return wait_migration_status(qmp, MIG_TERMINAL, timeout)


class Lab:
    """A temporary directory and the tern processes started in it; closes them all at exit.

    with Lab(binary) as lab:
        src = lab.source("-m", "1G", append="ws=64")
        dst = lab.target("-m", "1G")
        src.qmp.cmd("migrate", uri=dst.uri)
    """

    def __init__(self, binary, keep_logs_on_error=True):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="tern-mig-")
        self.vms = []
        self.keep_logs_on_error = keep_logs_on_error

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.keep_logs_on_error:
            sys.stderr.write(self.logs())
        reports = self.close()
        if reports and exc_type is None:
            raise AssertionError("sanitizer reports from tern:\n" + "\n".join(reports))
        return False

    def start(self, name, args, hmp=False, preexec_fn=None):
        """(preexec_fn): run in the child before exec, e.g. to set a resource limit."""
        vm = Tern(self.binary, list(args), name=name, workdir=self.dir, hmp=hmp,
                  preexec_fn=preexec_fn)
        self.vms.append(vm)
        return vm

    def source(self, *args, append="ws=0", name="src", hmp=False, preexec_fn=None):
        """A VM running the bundled guest with (append)."""
        return self.start(name, list(args) + ["-append", append], hmp=hmp,
                          preexec_fn=preexec_fn)

    def target(self, *args, name="dst", hmp=False, defer=False, paused=False):
        """A VM waiting for an incoming migration; vm.uri is where to send it."""
        vm_args = list(args) + (["-S"] if paused else [])
        port = free_port()
        vm_args += ["-incoming", "defer" if defer else tcp_uri(port)]
        vm = self.start(name, vm_args, hmp=hmp)
        vm.port = port
        vm.uri = tcp_uri(port)
        if defer:
            vm.qmp.cmd("migrate-incoming", uri=vm.uri)
        return vm

    def logs(self, tail=15):
        out = []
        for vm in self.vms:
            out.append("---- %s: %s (exit %s)" % (vm.name, " ".join(vm.cmdline),
                                                  vm.proc.poll()))
            for label, path in (("stderr", vm.stderr_path), ("serial", vm.serial_path)):
                try:
                    with open(path, errors="replace") as f:
                        lines = f.read().splitlines()[-tail:]
                except OSError:
                    lines = []
                out += ["  %s| %s" % (label, l) for l in lines]
        return "\n".join(out) + "\n"

    SANITIZER_RE = re.compile(r"runtime error:|ERROR: (Address|Leak|Undefined)Sanitizer")

    def close(self):
        """Stop every process, remove the directory; returns sanitizer (ASan/UBSan) lines
        found in the processes' stderr."""
        reports = []
        for vm in self.vms:
            try:
                vm.close()
            except Exception:  # close the others whatever happens to one
                vm.kill()
            try:
                with open(vm.stderr_path, errors="replace") as f:
                    reports += ["%s: %s" % (vm.name, l.rstrip()) for l in f
                                if self.SANITIZER_RE.search(l)]
            except OSError:
                pass
        cleanup_dir(self.dir)
        return reports
