#!/usr/bin/env python3
"""QMP against hostile clients, on one VM: one client more than the server
takes gets an error object and is closed; an oversized request, a too-deep
one and the inputs that once overflowed json-glib's stack get a clear error
and the client is served again; a client stalled in the middle of a request
is closed after the (shortened) timeout; and all along the first client and
the VM carry on.

Usage: test_qmp_limits.py PATH/TO/tern [PATH/TO/tern-dump]
"""
import atexit
import json
import socket
import time

from ternlib import QMP, Tern, run_tests, wait_until

MAX_CLIENTS = 16          # QMP_MAX_CLIENTS
MAX_REQUEST = 1 << 20     # QMP_MAX_REQUEST
STALL_MS = 500            # TERN_QMP_STALL_MS, for this test

_vm = None


def vm_of(binary):
    """The one VM of this file, started on first use."""
    global _vm
    if _vm is None:
        _vm = Tern(binary, extra_env={"TERN_QMP_STALL_MS": str(STALL_MS)})
        atexit.register(lambda: _vm.__exit__(None, None, None))
    return _vm


def read_all(sock, timeout=10.0):
    """Everything (sock) receives until the server closes it."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def assert_error(reply, desc):
    assert "error" in reply, reply
    assert reply["error"]["class"] == "GenericError", reply
    assert reply["error"]["desc"] == desc, reply


def assert_serving(vm):
    assert vm.alive(), vm.stderr()[-2000:]
    assert vm.qmp.cmd("query-status")["status"] == "running"


def new_client(vm):
    """A negotiated client; waits for a free place (closed ones are reaped
    by the server's main loop)."""
    def attempt():
        try:
            return QMP(vm.qmp_path, timeout=10.0)
        except (ConnectionError, KeyError, json.JSONDecodeError):
            return None
    return wait_until(attempt, 10.0, "a QMP client place")


def test_too_many_clients(binary):
    vm = vm_of(binary)
    others = [QMP(vm.qmp_path, negotiate=False) for _ in range(MAX_CLIENTS - 1)]
    for c in others:
        assert "QMP" in c.greeting
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.connect(vm.qmp_path)
    got = read_all(extra)
    extra.close()
    assert_error(json.loads(got), "too many QMP clients (at most %d)" % MAX_CLIENTS)
    assert got.endswith(b"\r\n") and got.count(b"\n") == 1, got
    assert_serving(vm)
    for c in others:
        c.close()
    new_client(vm).close()


def test_oversized_request(binary):
    vm = vm_of(binary)
    c = new_client(vm)
    # One string longer than a token may be.
    c.send_raw('{"execute": "query-status", "id": "' + "a" * (2 * MAX_REQUEST) + '"}\n')
    assert_error(c.read_reply(), "JSON parse error, token too long")
    # Small tokens, more than a request may hold.
    item = '"0123456789abcdef", '
    c.send_raw('{"execute": "query-status", "id": [' + item * (MAX_REQUEST // len(item) + 10)
               + '0]}\n')
    assert_error(c.read_reply(), "JSON parse error, request larger than %d bytes" % MAX_REQUEST)
    # The request was skipped, the client is served again; so are the others.
    assert c.cmd("query-status")["status"] == "running"
    assert_serving(vm)
    c.close()


def test_too_deep_request(binary):
    vm = vm_of(binary)
    c = new_client(vm)
    c.send_raw("[" * 2000 + "]" * 2000 + "\n")
    assert_error(c.read_reply(), "JSON parse error, too many nested levels")
    # What used to reach json-glib 200000 levels deep: nesting hidden from
    # the old splitter by a quote in a comment, or by a backslash in '...'.
    deep = "[" * 200000
    c.send_raw('[/* " */' + deep + '/* " */]\n')
    assert_error(c.read_reply(), "JSON parse error, stray '/'")
    c.send_raw("['\\'," + deep + "']\n")
    assert_error(c.read_reply(), "JSON parse error, backslash in a single-quoted string")
    # The rest of that value (200000 unclosed levels) is still being skipped:
    # a new client gets a clean start.
    c.close()
    c = new_client(vm)
    assert c.cmd("query-status")["status"] == "running"
    assert_serving(vm)
    c.close()


def test_stalled_client(binary):
    vm = vm_of(binary)
    c = new_client(vm)
    c.send_raw('{"execute": "query-')
    t0 = time.time()
    assert_serving(vm)  # others are served meanwhile
    got = read_all(c.sock)
    waited = time.time() - t0
    assert waited >= STALL_MS / 1000.0 * 0.8, waited
    assert_error(json.loads(got),
                 "QMP client sent part of a request and nothing for %d ms: closed" % STALL_MS)
    c.close()
    # A client that is merely idle between requests stays.
    d = new_client(vm)
    time.sleep(STALL_MS / 1000.0 * 2)
    assert d.cmd("query-status")["status"] == "running"
    d.close()
    assert_serving(vm)


if __name__ == "__main__":
    run_tests([
        ("too_many_clients", test_too_many_clients),
        ("oversized_request", test_oversized_request),
        ("too_deep_request", test_too_deep_request),
        ("stalled_client", test_stalled_client),
    ])
