#!/usr/bin/env python3
"""plot.py: docs/benchmarks.md's plot: migration throughput against the number
of channels (1 = the single stream, 2 and 4 = multifd-channels), beside the
host's ceilings measured in the same run (tests/bench/ceilings).

The plot takes the rows it finds: until a count has its scenario it is marked
"not measured" at the bottom of the axis. A scenario counts for N channels if
its name is "fill768" (N = 1) or contains "multifd" and a number (e.g.
"multifd2", "fill768-multifd-4"), or its results carry a "channels" key.
"""
import re

CHANNELS = (1, 2, 4)
# (ceiling name, label, line style): drawn where measured at 1, 2, 4 threads.
CEILING_LINES = [
    ("ram-tcp-memfd", "ceiling: RAM -> loopback TCP -> fresh memfd (pwrite)", "-"),
    ("ram-tcp-fresh-ram", "ceiling: RAM -> loopback TCP -> fresh RAM (recv into it)", "--"),
    ("first-touch", "ceiling: first-touch writes into a fresh memfd", ":"),
    ("tcp-loopback", "ceiling: loopback TCP, hot buffers", "-."),
]


def channels_of(name, runs):
    """The channel count scenario (name) measured, or None if it is no migration row."""
    if runs and all(isinstance(r, dict) and "channels" in r for r in runs):
        return int(runs[0]["channels"])
    if name == "fill768":
        return 1
    m = re.search(r"multifd\D*(\d+)", name)
    return int(m.group(1)) if m else None


def points_from_results(results, key="gbps"):
    """{channels: [GB/s per run]} from bench results {scenario: [run dicts]}."""
    points = {}
    for name, runs in results.items():
        n = channels_of(name, runs)
        vals = [r[key] for r in runs if isinstance(r, dict) and key in r and r[key] == r[key]]
        if n is not None and vals:
            points.setdefault(n, []).extend(vals)
    return points


def plot_channels(points, ceilings, path, title):
    """Draw (points) {channels: [GB/s]} with min-max bars and the (ceilings)
    {(name, threads): GB/s} lines to PNG (path). Returns the counts missing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(set(CHANNELS) | set(points))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    top = 0.0
    for name, label, style in CEILING_LINES:
        pts = [(x, ceilings[(name, x)]) for x in xs if (name, x) in ceilings]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=".", label=label)
            top = max(top, max(p[1] for p in pts))
    have = [x for x in xs if x in points]
    if have:
        lo = [min(points[x]) for x in have]
        hi = [max(points[x]) for x in have]
        mid = [(a + b) / 2 for a, b in zip(lo, hi)]
        ax.errorbar(have, mid, yerr=[[m - a for m, a in zip(mid, lo)],
                                     [b - m for m, b in zip(mid, hi)]],
                    fmt="o-", capsize=4, color="black", label="migration, 768 MiB (min - max)")
        top = max(top, max(hi))
    missing = [x for x in xs if x not in points]
    for x in missing:
        ax.plot([x], [0], marker="x", color="gray", markersize=9)
        ax.annotate("not measured", (x, 0), textcoords="offset points", xytext=(0, 8),
                    ha="center", color="gray", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xlabel("channels (1 = single stream; 2, 4 = multifd-channels)")
    ax.set_ylabel("GB/s")
    ax.set_ylim(0, top * 1.15 if top else 1)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return missing
