"""Timing helpers shared by the benchmark scripts: medians of repeated runs."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int = 15, warmup: int = 3) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_seconds(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 15, warmup: int = 3
) -> tuple[float, float, float]:
    """Time two functions alternately: (median ours, median theirs, median of the ratios).

    On a shared machine the speed drifts from second to second; timing the two side by
    side, run after run, and taking the median of the per-pair ratios cancels most of it.
    """
    for _ in range(warmup):
        ours()
        theirs()
    ours_times, theirs_times, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        middle = time.perf_counter()
        theirs()
        end = time.perf_counter()
        ours_times.append(middle - start)
        theirs_times.append(end - middle)
        ratios.append((middle - start) / (end - middle))
    return (statistics.median(ours_times), statistics.median(theirs_times),
            statistics.median(ratios))


def blockwise_seconds(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int = 7, blocks: int = 3
) -> tuple[float, float, float]:
    """Like :func:`paired_seconds`, but in blocks: ``repeats`` runs of ours, then of
    theirs, ``blocks`` times over; returns the medians and the median of the block ratios.

    For multi-threaded work: a library's idle threads keep spinning for a moment after a
    call, so running the two strictly in turn would slow each one down by the other.
    """
    ours_times, theirs_times, ratios = [], [], []
    for _ in range(blocks):
        a = median_seconds(ours, repeats, warmup=1)
        b = median_seconds(theirs, repeats, warmup=1)
        ours_times.append(a)
        theirs_times.append(b)
        ratios.append(a / b)
    return (statistics.median(ours_times), statistics.median(theirs_times),
            statistics.median(ratios))


def add_malloc_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (by default both libraries run "
                             "with freed memory kept for reuse, as minitransformer's command "
                             "line and trainers set it)")


def apply_malloc_option(args: argparse.Namespace) -> str:
    """Keep freed memory for reuse unless --default-malloc; says which setting is in use.

    With --default-malloc, the library's trainers are told so too
    (``MINITRANSFORMER_MALLOC=default``), so that both libraries run on glibc's defaults."""
    import os

    from minitransformer import tuning

    if args.default_malloc:
        os.environ[tuning.MALLOC_SETTING] = "default"
        return "glibc defaults"
    if tuning.tune_for_training():
        return "freed memory kept for reuse"
    return "glibc defaults"


def machine_description() -> str:
    """CPU model, core count and library versions, for the record in docs/benchmarks.md."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    parts = [cpu, f"{os.cpu_count()} cores", f"Python {platform.python_version()}",
             f"NumPy {np.__version__}"]
    try:
        import torch

        parts.append(f"PyTorch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)
