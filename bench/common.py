"""Timing helpers shared by the benchmarks: medians of repeated runs, printed side by side."""

from __future__ import annotations

import platform
import statistics
import time
from datetime import date


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def header(title: str) -> None:
    import os

    import torch

    print(f"# {title}")
    print(f"# {date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
          f"torch {torch.__version__} · {torch.get_num_threads()} torch threads")


def row(name: str, baseline_s: float, ours_s: float, target: float | None = None) -> float:
    ratio = baseline_s / ours_s
    verdict = "" if target is None else ("  target ≥ %.1f×: %s" % (target, "met" if ratio >= target else "NOT met"))
    print(f"{name:<44} baseline {baseline_s * 1e3:9.2f} ms   ours {ours_s * 1e3:9.2f} ms   ratio {ratio:7.1f}×{verdict}")
    return ratio
