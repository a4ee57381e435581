#!/usr/bin/env python3
"""make demo: boot the bundled test guest on KVM, show it running, pause and
resume it over QMP, and print what the guest itself measured."""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "functional"))
from ternlib import Tern, cleanup_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tern", default="build/tern")
    args = ap.parse_args()
    if not os.path.exists("/dev/kvm"):
        sys.exit("demo: /dev/kvm is absent: Tern needs KVM")

    guest_args = "ws=64 tick_ms=500"
    print("demo: booting the bundled test guest: tern -m 1G -smp 2 -append '%s'" % guest_args)
    vm = Tern(args.tern, ["-m", "1G", "-smp", "2", "-append", guest_args + " cpus=2"])
    try:
        t0 = time.time()
        m = vm.wait_running(timeout=20)
        print("demo: guest up in %.2f s: %s" % (time.time() - t0, vm.serial.lines[-1]))
        for t in vm.serial.wait_ticks(3, proc=vm.proc):
            print("  guest:", " ".join("%s %s" % kv for kv in t.items()))
        print("demo: QMP query-status ->", vm.qmp.cmd("query-status"))
        print("demo: QMP stop; waiting 1 s")
        vm.qmp.cmd("stop")
        time.sleep(1)
        print("demo: QMP cont")
        vm.qmp.cmd("cont")
        t = vm.serial.wait_ticks(2, proc=vm.proc)[-1]
        print("  guest:", " ".join("%s %s" % kv for kv in t.items()))
        print("demo: the guest felt the 1 s pause as a %.3f s gap in its loop; errors %d"
              % (max(t["max_gap_us"], 0) / 1e6, t["errors"]))
        print("demo: native speed: %.2f ns per loop iteration (kvm_pvm emulation would be ~1000)"
              % m["ns_per_loop_iter"])
        vm.qmp.cmd("quit")
        vm.wait_exit()
        print("demo: done")
    finally:
        vm.close()
        cleanup_dir(vm.dir)


if __name__ == "__main__":
    main()
