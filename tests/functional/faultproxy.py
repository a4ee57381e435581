"""faultproxy: a loopback TCP proxy that injects faults into a Tern migration.

One connection, 127.0.0.1 only, Python 3 standard library only. The proxy
accepts the source's connection, connects to the target and forwards both
directions:

    forward (fwd): source -> target, the migration stream
    return  (ret): target -> source, the return path (READY, RESUMED, ERROR)

Both directions are parsed with the framing of docs/migration-stream.md: a
32-octet image header, then records of 8 + align8(length) octets, plus an
8-octet CRC trailer when bit 0 of the header's flags is set. That lets a fault
be placed at a record ("the middle of the first PAGE_DATA", "right after the
2nd ITERATION_END", "the start of RESUMED") as well as at a byte offset.

Actions, each fired once at its trigger point:

    delay      hold the stream for `ms` (the reader keeps reading up to
               `queue_limit` bytes, then the sender is held back by TCP)
    cut        close both connections (source side and target side)
    truncate   stop forwarding this direction (what follows is read and
               dropped), keep the sockets open, and cut after `ms`, or
               300 ms after the sender's END was read whole if that is sooner
               (the sender then waits for an answer that cannot come)
    corrupt    flip one octet (XOR 0xFF)
    duplicate  send the next `length` octets twice (fewer if END ends first:
               the copy then follows END, where the receiver no longer reads)

    proxy = FaultProxy(target_port, Fault("cut", Trigger.record("PAGE_DATA", where="inside")))
    ... migrate to tcp_uri(proxy.port) ...
    proxy.fault.fired.wait(10)
    proxy.close()

Several connections (multifd: the main stream, then one per channel):
FaultProxy(port, ..., connections=N) accepts N connections in turn and pairs
each with a new connection to the target, in the same order. A fault acts on
connection `conn` (0, the first, by default). On any other connection the
stream is not a Tern image (a channel header comes first), so only
Trigger.offset() applies there, and a cut, a reset or an end cuts that
connection alone; on connection 0 they cut everything, as with one connection.

Every thread is a daemon, every wait is bounded, and the proxy cuts itself
off after `lifetime` seconds whatever happens. Data the proxy has already
read from one side is still delivered to the other after that side closes
(as TCP delivers what was sent before a FIN or a reset), unless a fault cut
it; a target that resets the connection is cut off a second later, after
its last words have crossed.
"""
import socket
import struct
import threading
import time

HEADER_SIZE = 32
REC_HEADER = 8
CRC_TRAILER = 8
MAGIC = b"TERNMIG\0"

RECORD_TYPES = {
    1: "VM_CONFIG", 2: "STATIC_END", 3: "PAGE_DATA", 4: "ZERO_PAGES",
    5: "ITERATION_END", 6: "VCPU_STATE", 7: "VM_STATE", 8: "DEVICE_STATE", 9: "END",
    0x100: "READY", 0x101: "RESUMED", 0x102: "ERROR",
}
TYPE_BY_NAME = {v: k for k, v in RECORD_TYPES.items()}
ACTIONS = ("delay", "cut", "truncate", "corrupt", "duplicate")


def type_name(rtype):
    return RECORD_TYPES.get(rtype, "0x%x" % rtype)


class Trigger:
    """Where a fault fires: a byte offset of one direction's stream, or a record.

    Trigger.offset(100)                          octet 100 (the header is 0-31)
    Trigger.record("PAGE_DATA")                  start of the first PAGE_DATA
    Trigger.record("VCPU_STATE", where="inside") middle of its body
    Trigger.record("ITERATION_END", 2, "after")  first octet after the 2nd one
    """

    def __init__(self, offset=None, rtype=None, nth=1, where="start", fraction=0.5):
        assert (offset is None) != (rtype is None)
        assert where in ("start", "inside", "after")
        self.fixed = offset
        self.rtype = TYPE_BY_NAME[rtype] if isinstance(rtype, str) else rtype
        self.nth = nth
        self.where = where
        self.fraction = fraction

    @classmethod
    def offset(cls, n):
        return cls(offset=n)

    @classmethod
    def record(cls, rtype, nth=1, where="start", fraction=0.5):
        return cls(rtype=rtype, nth=nth, where=where, fraction=fraction)

    def resolve(self, rtype, nth, start, length, size):
        """The stream offset this trigger means, if record (rtype, nth) is the one."""
        if self.rtype != rtype or self.nth != nth:
            return None
        if self.where == "start":
            return start
        if self.where == "after":
            return start + size
        # Inside the body (the header when the body is empty).
        return start + REC_HEADER + int(length * self.fraction) if length else start + 4

    def __str__(self):
        if self.fixed is not None:
            return "octet %d" % self.fixed
        nth = "" if self.nth == 1 else " #%d" % self.nth
        return "%s %s%s" % (self.where, type_name(self.rtype), nth)


class Fault:
    """One action at one trigger, in one direction ('fwd' or 'ret')."""

    def __init__(self, action, trigger, direction="fwd", ms=0, length=4096, conn=0):
        # length None (duplicate): the whole record the trigger starts.
        assert action in ACTIONS, action
        assert direction in ("fwd", "ret")
        self.conn = conn                # which accepted connection (0: the first)
        self.action = action
        self.trigger = trigger
        self.direction = direction
        self.ms = ms
        self.length = length
        self.offset = trigger.fixed     # resolved stream offset
        self.fired = threading.Event()  # set when the action took place
        self.fired_at = None            # time.time() then
        self.record = None              # (index, type name, offset, length) it fell in
        self.short = False              # duplicate: END came before (length) octets

    def __str__(self):
        extra = ""
        if self.action in ("delay", "truncate"):
            extra = " %d ms" % self.ms
        elif self.action == "duplicate":
            extra = " %s octets" % ("record" if self.length is None else self.length)
        return "%s%s at %s (%s)" % (self.action, extra, self.trigger, self.direction)


class _Framing:
    """Follows header and record boundaries of one direction."""

    def __init__(self):
        self.next = 0               # offset of the next header (image or record)
        self.need = HEADER_SIZE
        self.head = bytearray()
        self.crc = False
        self.bad = None             # why the framing was lost, if it was
        self.records = []           # (index, type name, offset, length)
        self.counts = {}

    def pending_from(self):
        """Offset of a header being assembled (its octets must not be forwarded yet)."""
        return self.next if self.head else None

    def feed(self, data, base, on_record):
        """(data) starts at stream offset (base)."""
        end = base + len(data)
        while self.bad is None:
            pos = self.next + len(self.head)
            if pos >= end:
                return
            if pos < base:          # the skipped part was in an earlier chunk
                return
            take = min(self.need - len(self.head), end - pos)
            self.head += data[pos - base:pos - base + take]
            if len(self.head) < self.need:
                return
            head, self.head = bytes(self.head), bytearray()
            if self.need == HEADER_SIZE:
                if head[:8] != MAGIC:
                    self.bad = "not a Tern stream: %r" % head[:8]
                    return
                self.crc = bool(struct.unpack_from("<I", head, 12)[0] & 1)
                self.next, self.need = HEADER_SIZE, REC_HEADER
                continue
            rtype, length = struct.unpack("<II", head)
            size = REC_HEADER + (length + 7) // 8 * 8 + (CRC_TRAILER if self.crc else 0)
            self.counts[rtype] = nth = self.counts.get(rtype, 0) + 1
            self.records.append((len(self.records), type_name(rtype), self.next, length))
            on_record(rtype, nth, self.next, length, size)
            self.next += size


_EOF = object()     # the reader saw the end of its side
_ERR = object()     # the reader's side failed (reset)


class _Pipe:
    """One direction: a reader thread (parse, queue) and a writer thread (faults, send)."""

    def __init__(self, proxy, name, src, dst, faults, queue_limit, conn=0):
        self.proxy = proxy
        self.conn = conn
        self.name = name if not conn else "%s%d" % (name, conn)
        self.src, self.dst = src, dst
        self.faults = sorted(faults, key=lambda f: f.offset if f.offset is not None else 1 << 62)
        self.queue_limit = queue_limit
        self.framing = _Framing()
        self.cond = threading.Condition()
        self.queue = []             # [(base, bytes) | _EOF | _ERR]
        self.queued = 0
        self.read_pos = 0           # octets read from src
        self.sent_pos = 0           # octets handed to dst (sendall returned)
        self.dropping = False       # after truncate
        self.record_seen = {}       # type name -> threading.Event (reader saw its header)
        self.ends = {}              # type name -> end offset of its first instance
        self.delivered = {}         # type name -> threading.Event (fully sent to dst)
        for n in RECORD_TYPES.values():
            self.record_seen[n] = threading.Event()
            self.delivered[n] = threading.Event()
        self.eof = False            # the src side ended
        self.end_cut = False        # a cut after a truncated END is scheduled
        self.threads = [threading.Thread(target=self._reader, daemon=True, name=name + "-rd"),
                        threading.Thread(target=self._writer, daemon=True, name=name + "-wr")]

    def start(self):
        for t in self.threads:
            t.start()

    # -- reader --

    def _on_record(self, rtype, nth, start, length, size):
        name = type_name(rtype)
        if name in self.record_seen:
            if name not in self.ends:
                self.ends[name] = start + size
            self.record_seen[name].set()
        for f in self.faults:
            if f.offset is None:
                off = f.trigger.resolve(rtype, nth, start, length, size)
                if off is not None:
                    if f.action == "duplicate" and f.length is None:
                        f.length = size     # the whole record
                    f.offset = off
                    f.record = (len(self.framing.records) - 1, name, start, length)

    def _cut_after_end(self):
        """After a truncate: once the sender's END is read whole, cut soon."""
        with self.cond:
            if not self.dropping or self.end_cut or "END" not in self.ends \
                    or self.read_pos < self.ends["END"]:
                return
            self.end_cut = True
        self.proxy._later(300, "%s: END read after truncate" % self.name)

    def _put(self, item, size=0):
        with self.cond:
            while self.queued > self.queue_limit and not self.proxy.closing:
                self.cond.wait(0.1)
            self.queue.append(item)
            self.queued += size
            self.cond.notify_all()

    def _reader(self):
        pending = b""               # octets held back while a header is incomplete
        held_from = 0
        try:
            while not self.proxy.closing:
                data = self.src.recv(1 << 18)
                if not data:
                    break
                base = self.read_pos
                self.read_pos += len(data)
                self.framing.feed(data, base, self._on_record)
                self._cut_after_end()
                buf = pending + data
                start = held_from if pending else base
                cut_at = self.framing.pending_from()
                if cut_at is not None and cut_at < start + len(buf):
                    keep = max(cut_at - start, 0)
                    out, pending, held_from = buf[:keep], buf[keep:], start + keep
                else:
                    out, pending = buf, b""
                if out:
                    self._put((start, out), len(out))
            if pending:
                self._put((held_from, pending), len(pending))
            self._put(_EOF)
        except OSError:
            if pending:
                self._put((held_from, pending), len(pending))
            self._put(_ERR)

    # -- writer --

    def _get(self):
        with self.cond:
            while not self.queue:
                if self.proxy.closing:
                    return None
                self.cond.wait(0.1)
            item = self.queue.pop(0)
            if isinstance(item, tuple):
                self.queued -= len(item[1])
            self.cond.notify_all()
            return item

    def _send(self, data):
        if self.dropping or not data:
            return
        try:
            self.dst.sendall(data)
        except OSError as e:
            if self.name != "fwd":
                raise
            # The target reset the connection. What it wrote before (an
            # ERROR) is still on its way back, and TCP would deliver it ahead
            # of the reset: let the return direction finish, then cut.
            self.dropping = True
            self.proxy._later(1000, "fwd: %s" % e)
            return
        self.sent_pos += len(data)
        for name, end in self.ends.items():
            if self.sent_pos >= end:
                self.delivered[name].set()

    def _sleep(self, ms):
        deadline = time.time() + ms / 1000.0
        while not self.proxy.closing and time.time() < deadline:
            time.sleep(min(0.02, max(deadline - time.time(), 0)))

    def _fire(self, f):
        f.fired_at = time.time()
        f.fired.set()
        self.proxy._log("%s: %s fired at octet %d%s" % (
            self.name, f.action, f.offset, "" if f.record is None else
            " (record %d %s at %d, length %d)" % f.record))

    def _writer(self):
        dup = None                  # [fault, remaining, bytearray] while recording a duplicate
        try:
            while True:
                item = self._get()
                if item is None:
                    return
                if item is _EOF or item is _ERR:
                    self.eof = True
                    if item is _ERR or self.dropping:
                        self._cut("%s: %s" % (self.name, "reset" if item is _ERR else
                                              "end after truncate"))
                    else:
                        try:
                            self.dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            self._cut("%s: shutdown failed" % self.name)
                    return
                base, data = item
                data = bytearray(data)
                pos = base
                while data:
                    if dup is not None:
                        # The copy goes out when (length) octets have passed,
                        # or at the end of END: nothing follows it to wait for.
                        end = self.ends.get("END")
                        room = dup[1] if end is None or pos >= end else min(dup[1], end - pos)
                        take = min(room, len(data))
                        dup[2] += data[:take]
                        self._send(bytes(data[:take]))
                        data, pos, dup[1] = data[take:], pos + take, dup[1] - take
                        if dup[1] == 0 or pos == end:
                            dup[0].short = dup[1] > 0
                            self._send(bytes(dup[2]))
                            self._fire(dup[0])
                            dup = None
                        continue
                    f = next((f for f in self.faults if not f.fired.is_set()
                              and f.offset is not None and pos <= f.offset < pos + len(data)),
                             None)
                    if f is None:
                        self._send(bytes(data))
                        break
                    k = f.offset - pos
                    self._send(bytes(data[:k]))
                    data, pos = data[k:], f.offset
                    if f.action == "delay":
                        self._fire(f)
                        self._sleep(f.ms)
                    elif f.action == "cut":
                        self._fire(f)
                        self._cut("%s: cut" % self.name)
                        return
                    elif f.action == "truncate":
                        self._fire(f)
                        self.dropping = True
                        self.proxy._later(f.ms, "%s: truncate time is up" % self.name)
                        self._cut_after_end()
                    elif f.action == "corrupt":
                        data[0] ^= 0xFF
                        self._fire(f)
                    elif f.action == "duplicate":
                        dup = [f, max(f.length or 0, 1), bytearray()]
        except OSError as e:
            self._cut("%s: %s" % (self.name, e))

    def _cut(self, why):
        """Connection 0 takes everything down with it; another only itself."""
        if self.conn:
            self.proxy.cut_conn(self.conn, why)
        else:
            self.proxy.cut(why)


class FaultProxy:
    """Accepts (connections) connections on 127.0.0.1:(self.port), forwards each to
    target_port."""

    def __init__(self, target_port, *faults, lifetime=120.0, queue_limit=1 << 20,
                 rcvbuf=None, verbose=False, connections=1):
        self.target_port = target_port
        self.connections = connections
        self.pipes = []                     # [(fwd, ret)] per connection, in accept order
        self.conn_socks = {}                # connection index -> [a, b]
        self.faults = [f for f in faults if f is not None]
        self.lifetime = lifetime
        self.queue_limit = queue_limit
        self.verbose = verbose
        self.closing = False
        self.cut_reason = None
        self.cut_at = None
        self.error = None
        self.log = []
        self.lock = threading.Lock()
        self.socks = []
        self.fwd = self.ret = None
        self.connected = threading.Event()
        self.finished = threading.Event()   # cut, or both directions ended
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(connections)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.deadline = time.time() + lifetime
        self.threads = [threading.Thread(target=self._serve, daemon=True, name="proxy-accept"),
                        threading.Thread(target=self._watchdog, daemon=True, name="proxy-dog")]
        for t in self.threads:
            t.start()

    @property
    def fault(self):
        return self.faults[0] if self.faults else None

    def _log(self, msg):
        line = "%.3f %s" % (time.time(), msg)
        self.log.append(line)
        if self.verbose:
            print("     proxy " + line, flush=True)

    def _serve(self):
        for i in range(self.connections):
            if not self._serve_one(i):
                break
        self.listener.close()

    def _serve_one(self, i):
        a = None
        while not self.closing and time.time() < self.deadline:
            try:
                a, _ = self.listener.accept()
                break
            except socket.timeout:
                continue
            except OSError as e:
                self.error = e
                return False
        if a is None:
            return False
        try:
            b = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError as e:
            self.error = e
            a.close()
            return False
        # Blocking sockets: cut() wakes a blocked recv or send with shutdown().
        for s in (a, b):
            s.settimeout(None)
        with self.lock:
            if self.closing:
                a.close()
                b.close()
                return False
            self.socks += [a, b]
            self.conn_socks[i] = [a, b]
        mine = [f for f in self.faults if f.conn == i]
        fwd = _Pipe(self, "fwd", a, b, [f for f in mine if f.direction == "fwd"],
                    self.queue_limit, conn=i)
        ret = _Pipe(self, "ret", b, a, [f for f in mine if f.direction == "ret"],
                    self.queue_limit, conn=i)
        self.pipes.append((fwd, ret))
        if i == 0:
            self.fwd, self.ret = fwd, ret
        self._log("connected #%d: source -> :%d -> target :%d" % (i, self.port,
                                                                 self.target_port))
        if i == 0:
            self.connected.set()
        fwd.start()
        ret.start()
        return True

    def _watchdog(self):
        while not self.closing:
            if time.time() > self.deadline:
                self.cut("lifetime of %.0f s is over" % self.lifetime)
                return
            if self.fwd and self.ret and all(not t.is_alive() for pair in self.pipes
                                             for p in pair for t in p.threads):
                self.finished.set()
                return
            time.sleep(0.05)

    def _later(self, ms, why):
        t = threading.Timer(ms / 1000.0, self.cut, args=(why,))
        t.daemon = True
        t.start()

    def cut(self, why="cut"):
        """Shut both connections down (both directions, both sides)."""
        with self.lock:
            if self.cut_reason is None:
                self.cut_reason = why
                self.cut_at = time.time()
                self._log("cut: %s" % why)
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.finished.set()

    def cut_conn(self, i, why="cut"):
        """Shut connection (i) alone down (both directions, both sides)."""
        with self.lock:
            socks = list(self.conn_socks.get(i, []))
        self._log("cut #%d: %s" % (i, why))
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- what happened --

    def records(self, direction="fwd"):
        pipe = self.fwd if direction == "fwd" else self.ret
        return list(pipe.framing.records) if pipe else []

    def seen(self, name, direction="fwd"):
        """True when the proxy has read the header of record (name) from its sender."""
        pipe = self.fwd if direction == "fwd" else self.ret
        return bool(pipe) and pipe.record_seen[name].is_set()

    def received(self, name, direction="fwd"):
        """True when the proxy has read every octet of the first (name) record
        (CRC trailer included) from its sender: the sender wrote it whole."""
        pipe = self.fwd if direction == "fwd" else self.ret
        return bool(pipe) and name in pipe.ends and pipe.read_pos >= pipe.ends[name]

    def delivered(self, name, direction="fwd"):
        """True when the first (name) record was handed whole to the receiver."""
        pipe = self.fwd if direction == "fwd" else self.ret
        return bool(pipe) and pipe.delivered[name].is_set()

    def wait_seen(self, name, timeout, direction="fwd"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.seen(name, direction):
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.closing = True
        self.cut("closed")
        for t in self.threads:
            t.join(2)
        for pair in self.pipes:
            for p in pair:
                for t in p.threads:
                    t.join(2)
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            s.close()
        try:
            self.listener.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
