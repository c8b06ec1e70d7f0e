"""Timing helper shared by the benchmark scripts (run as scripts: this directory is on sys.path)."""

from __future__ import annotations

import time


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` wall-clock runs of ``fn()`` (least disturbed by a noisy VM)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def progress(items, desc: str):
    """``items`` with a tqdm bar on stderr (count, rate, time left) when stderr is a terminal;
    the items themselves otherwise (logs, CI, --json pipelines: stdout is never touched)."""
    import sys

    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="run", file=sys.stderr, leave=False)
