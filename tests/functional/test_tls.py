#!/usr/bin/env python3
"""TLS 1.3 on the migration stream, set up as a QEMU user sets it up: -object
tls-creds-x509 / tls-creds-psk, then the tls-creds and tls-hostname parameters.
Certificates (a CA, the target's and the source's, and a CA nobody trusts) and
the PSK files are made with certtool in a temporary directory: nothing secret
is in the tree. One source serves every refused attempt, since a refused
migration leaves it running."""
import os
import secrets
import socket
import subprocess
import tempfile

import ternlib

from ternlib import (assert_guest_moved, assert_source_unharmed, assert_target_waits,
                     cleanup_dir, free_port, Hmp, Lab, live_ticks, run_tests, start_migration,
                     status, tcp_uri, tern_dump_binary, wait_migration, wait_migration_status,
                     wait_until)

MEM = "256M"
TICK = "tick_ms=200"
TLS_LINE = "tern: migration TLS: TLS1.3"


def note(fmt, *args):
    print("     " + (fmt % args if args else fmt), flush=True)


def certtool(*args):
    subprocess.run(["certtool", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    key, cert, tmpl = (os.path.join(d, name + s) for s in ("-key.pem", "-cert.pem", ".info"))
    with open(tmpl, "w") as f:
        f.write('cn = "%s"\nca\ncert_signing_key\nexpiration_days = 2\n' % name)
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
    certtool("--generate-self-signed", "--load-privkey", key, "--template", tmpl,
             "--outfile", cert)
    return key, cert


def make_cert(d, ca, role, template):
    """(role)-key.pem and (role)-cert.pem in (d), signed by (ca), and ca-cert.pem."""
    key, cert, tmpl = (os.path.join(d, role + s) for s in ("-key.pem", "-cert.pem", ".info"))
    with open(tmpl, "w") as f:
        f.write(template + "expiration_days = 2\n")
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
    certtool("--generate-certificate", "--load-privkey", key, "--load-ca-certificate", ca[1],
             "--load-ca-privkey", ca[0], "--template", tmpl, "--outfile", cert)
    os.unlink(tmpl)
    with open(ca[1]) as src, open(os.path.join(d, "ca-cert.pem"), "w") as dst:
        dst.write(src.read())


class Pki:
    """server/, client/, stranger/ (a client that trusts another CA), psk/, psk-wrong/."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tern-pki-")
        ca_dir = os.path.join(self.dir, "ca")
        os.mkdir(ca_dir)
        ca = make_ca(ca_dir, "tern-test-ca")
        other = make_ca(ca_dir, "untrusted-ca")
        for sub in ("server", "client", "stranger", "psk", "psk-wrong"):
            os.mkdir(self.path(sub))
        make_cert(self.path("server"), ca, "server",
                  'cn = "target.example"\ndns_name = "target.example"\n'
                  'ip_address = "127.0.0.1"\ntls_www_server\nsigning_key\nencryption_key\n')
        make_cert(self.path("client"), ca, "client",
                  'cn = "source.example"\ntls_www_client\nsigning_key\n')
        make_cert(self.path("stranger"), other, "client",
                  'cn = "stranger.example"\ntls_www_client\nsigning_key\n')
        for sub in ("psk", "psk-wrong"):
            with open(os.path.join(self.path(sub), "keys.psk"), "w") as f:
                f.write("qemu:%s\n" % secrets.token_hex(32))

    def path(self, sub):
        return os.path.join(self.dir, sub)

    def close(self):
        cleanup_dir(self.dir)


PKI = None


def pki():
    global PKI
    if PKI is None:
        PKI = Pki()
    return PKI


def source_objects():
    p = pki()
    return ["-object", "tls-creds-x509,id=tls0,dir=%s,endpoint=client" % p.path("client"),
            "-object", "tls-creds-x509,id=stranger0,dir=%s,endpoint=client" % p.path("stranger"),
            "-object", "tls-creds-psk,id=psk0,dir=%s,endpoint=client" % p.path("psk"),
            "-object", "tls-creds-psk,id=pskbad0,dir=%s,endpoint=client,username=qemu"
            % p.path("psk-wrong")]


def set_multifd(vm, channels):
    vm.qmp.cmd("migrate-set-capabilities",
               capabilities=[{"capability": "multifd", "state": True}])
    vm.qmp.cmd("migrate-set-parameters", multifd_channels=channels)


def tls_target(lab, name, creds="x509", paused=False, authz=None, multifd=0):
    """A target with -incoming defer, tls-creds set (creds: x509, psk or None), listening;
    (authz): the DN the source's certificate must have (tls-authz); (multifd): channels."""
    p = pki()
    args = ["-m", MEM, "-incoming", "defer"] + (["-S"] if paused else [])
    if authz:
        args += ["-object", "authz-simple,id=auth0,identity=" + authz.replace(",", ",,")]
    if creds == "x509":
        args += ["-object", "tls-creds-x509,id=tls0,dir=%s,endpoint=server,verify-peer=on"
                 % p.path("server")]
    elif creds == "psk":
        args += ["-object", "tls-creds-psk,id=tls0,dir=%s,endpoint=server" % p.path("psk")]
    vm = lab.start(name, args)
    if creds:
        vm.qmp.cmd("migrate-set-parameters", tls_creds="tls0")
    if authz:
        vm.qmp.cmd("migrate-set-parameters", tls_authz="auth0")
    if multifd:
        set_multifd(vm, multifd)
    vm.port = free_port()
    vm.uri = tcp_uri(vm.port)
    vm.qmp.cmd("migrate-incoming", uri=vm.uri)
    return vm


def refused(src, dst, last, **params):
    """Migrate (src) to (dst) with (params): it fails, the source runs on, the target gives up.
    Returns the source's error."""
    src.qmp.cmd("migrate-set-parameters", **params)
    start_migration(src.qmp, dst.uri)
    info = wait_migration(src.qmp, 40)
    assert info["status"] == "failed", info
    assert_target_waits(dst)
    assert_source_unharmed(src, last)
    dst.kill()
    return info["error-desc"]


# ---------------------------------------------------------------------------

def test_x509_migration(binary):
    """verify-peer=on on both sides, tls-hostname as in the docs; the target's RAM is the
    source's, bit for bit, and the guest runs on there."""
    with Lab(binary) as lab:
        src = lab.source("-m", MEM, *source_objects(), append="ws=16 " + TICK, hmp=True)
        dst = tls_target(lab, "dst", paused=True, authz="CN=source.example")
        src.wait_running()
        hmp = Hmp(src.hmp_path)
        assert hmp.run("migrate_set_parameter tls-creds tls0") == ""
        assert hmp.run("migrate_set_parameter tls-hostname target.example") == ""
        text = hmp.run("info migrate_parameters")
        assert "tls-creds: 'tls0'" in text and "tls-hostname: 'target.example'" in text, text
        last = live_ticks(src, 2)[-1]
        src.qmp.cmd("stop")
        before = src.qmp.cmd("x-query-ram-digest")
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == "completed", info
        wait_migration_status(dst.qmp, "completed", 10)
        assert status(dst) == "paused"
        assert dst.qmp.cmd("x-query-ram-digest") == before, "target RAM differs"
        dst.qmp.cmd("cont")
        assert_guest_moved(last, dst)
        lines = [l for vm in (src, dst) for l in vm.stderr().splitlines() if TLS_LINE in l]
        assert len(lines) == 2, "no TLS line on both sides: %s" % lines
        hmp.close()
        note("%s; %.0f Mbit/s", lines[0].split(": ", 2)[2], info["ram"]["mbps"])


def test_x509_multifd(binary):
    """Multifd with 2 channels under x509 TLS: every connection (the main one and each
    channel) does its own handshake on both sides, each logs its TLS line; equal RAM."""
    with Lab(binary) as lab:
        src = lab.source("-m", MEM, *source_objects(), append="ws=16 " + TICK)
        dst = tls_target(lab, "dst", paused=True, multifd=2)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        set_multifd(src, 2)
        src.qmp.cmd("migrate-set-parameters", tls_creds="tls0", tls_hostname="target.example")
        src.qmp.cmd("stop")
        before = src.qmp.cmd("x-query-ram-digest")
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == "completed", info
        per = [c["bytes"] for c in info["x-multifd"]["channel-stats"]]
        assert len(per) == 2 and all(b > 0 for b in per), info["x-multifd"]
        wait_migration_status(dst.qmp, "completed", 10)
        assert dst.qmp.cmd("query-migrate")["x-multifd"]["placed-bytes"] > 0
        assert dst.qmp.cmd("x-query-ram-digest") == before, "target RAM differs"
        dst.qmp.cmd("cont")
        assert_guest_moved(last, dst)
        for vm in (src, dst):
            lines = [l for l in vm.stderr().splitlines() if TLS_LINE in l]
            assert len(lines) == 3, "%s: not one TLS line per connection: %s" % (vm.name, lines)
        note("3 TLS sessions a side; %.1f MiB over the channels",
             sum(per) / (1 << 20))


def test_refused_and_psk(binary):
    """Each mismatch fails with an error that says which side wanted what, the source
    runs on; then a PSK migration from the same source completes."""
    with Lab(binary) as lab:
        src = lab.source("-m", MEM, *source_objects(), append="ws=8 " + TICK)
        src.wait_running()
        last = live_ticks(src, 2)[-1]
        whys = []

        # A checkpoint file has no peer: TLS is refused for file: as QEMU does.
        src.qmp.cmd("migrate-set-parameters", tls_creds="tls0")
        reply = src.qmp.execute("migrate", uri="file:" + os.path.join(lab.dir, "vm.tern"))
        assert "not supported for file:" in reply["error"]["desc"], reply
        # Parameters are checked when set.
        reply = src.qmp.execute("migrate-set-parameters", tls_creds="nope")
        assert "no tls-creds object 'nope'" in reply["error"]["desc"], reply
        reply = src.qmp.execute("migrate-set-parameters", tls_creds=5)
        assert "expected: string" in reply["error"]["desc"], reply
        src.qmp.cmd("migrate-set-parameters", tls_creds=None)   # QEMU's StrOrNull: off
        assert src.qmp.cmd("query-migrate-parameters")["tls-creds"] == ""

        # Plaintext source, TLS target: the target says so and closes.
        dst = tls_target(lab, "dst1")
        why = refused(src, dst, last, tls_creds="")
        assert "target: a plaintext source connected, but tls-creds is set" in why, why
        whys.append(why)
        assert "a plaintext source connected, but tls-creds is set" in dst.stderr(), \
            dst.stderr()[-500:]

        # TLS source, plaintext target.
        dst = tls_target(lab, "dst2", creds=None)
        why = refused(src, dst, last, tls_creds="tls0", tls_hostname="target.example")
        assert "TLS handshake with the target failed" in why and \
            "does the target have tls-creds set?" in why, why
        whys.append(why)

        # The source does not trust the target's CA.
        dst = tls_target(lab, "dst3")
        why = refused(src, dst, last, tls_creds="stranger0")
        assert "certificate failed verification" in why and "NOT trusted" in why, why
        whys.append(why)

        # The target's certificate does not carry the expected name.
        dst = tls_target(lab, "dst4")
        why = refused(src, dst, last, tls_creds="tls0", tls_hostname="wrong.example")
        assert "does not match" in why, why
        whys.append(why)

        # The source's certificate is not the one tls-authz allows.
        dst = tls_target(lab, "dst7", authz="CN=someone.else")
        why = refused(src, dst, last, tls_creds="tls0", tls_hostname="")
        assert "refused this side's certificate (alert: Access was denied; the target's " \
            "tls-authz?)" in why, why
        assert "not allowed by tls-authz 'auth0'" in dst.stderr(), dst.stderr()[-500:]
        whys.append(why)

        # A target that accepts and then says nothing: the handshake's 10 s deadline.
        # The same on every accelerator: run once (on kvm, or on emu without /dev/kvm).
        if ternlib.stream_only_here():
            with socket.socket() as silent:
                silent.bind(("127.0.0.1", 0))
                silent.listen(1)
                src.qmp.cmd("migrate-set-parameters", tls_creds="tls0",
                            tls_hostname="target.example")
                start_migration(src.qmp, tcp_uri(silent.getsockname()[1]))
                info = wait_migration(src.qmp, 30)
            assert info["status"] == "failed", info
            assert "TLS handshake with the target timed out after 10 s" in info["error-desc"], info
            assert_source_unharmed(src, last)

        # The wrong pre-shared key.
        dst = tls_target(lab, "dst5", creds="psk")
        why = refused(src, dst, last, tls_creds="pskbad0", tls_hostname="")
        assert "TLS handshake with the target failed" in why and "same key" in why, why
        assert "TLS handshake with the source failed" in dst.stderr(), dst.stderr()[-500:]
        whys.append(why)
        whys += [l for l in dst.stderr().splitlines() if "incoming migration failed" in l]

        # The right one: the guest moves.
        dst = tls_target(lab, "dst6", creds="psk")
        src.qmp.cmd("migrate-set-parameters", tls_creds="psk0")
        last = live_ticks(src, 1)[-1]
        start_migration(src.qmp, dst.uri)
        info = wait_migration(src.qmp, 60)
        assert info["status"] == "completed", info
        assert_guest_moved(last, dst)
        wait_until(lambda: TLS_LINE in dst.stderr(), 5, "the target's TLS line")
        for why in whys:
            note("source says: %s", why)


def test_object_errors(binary):
    """A bad -object stops tern at start-up with a message naming what is wrong."""
    p = pki()
    cases = [("tls-creds-nope,id=x", "unknown object type 'tls-creds-nope'"),
             ("tls-creds-x509,id=x,dir=/nonexistent,endpoint=server", "ca-cert.pem"),
             ("tls-creds-psk,id=x,dir=%s,username=nobody" % p.path("psk"),
              "no key for username 'nobody'")]
    for spec, expect in cases:
        r = subprocess.run([binary, "-object", spec], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and expect in r.stderr, (spec, r.returncode, r.stderr)
    # tern-dump on a capture of a TLS migration: a handshake record, not the magic.
    capture = os.path.join(p.dir, "capture.bin")
    with open(capture, "wb") as f:
        f.write(bytes([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]))
    r = subprocess.run([tern_dump_binary(), capture], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "a TLS stream" in r.stdout + r.stderr, r


if __name__ == "__main__":
    try:
        run_tests([
            ("object errors", test_object_errors),
            ("x509 migration, RAM digest", test_x509_migration),
            ("x509 multifd, 2 channels", test_x509_multifd),
            ("refused mismatches, then PSK", test_refused_and_psk),
        ])
    finally:
        if PKI:
            PKI.close()
