#!/usr/bin/env python3
"""Closing line of make check: 'N passed, N failed, N skipped', read from
meson's test log, with every skipped test named so a skip never goes unseen."""
import json
import sys


def main(path):
    passed, failed, skipped = [], [], []
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            result = t.get("result")
            (passed if result == "OK" else skipped if result == "SKIP" else failed).append(t["name"])
    for name in skipped:
        print("SKIPPED: %s (see its log: it says why)" % name)
    for name in failed:
        print("FAILED: %s" % name)
    print("%d passed, %d failed, %d skipped" % (len(passed), len(failed), len(skipped)))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
