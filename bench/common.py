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


# ------------------------------------------------------------------ shared by the sweep benchmarks

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def load_now() -> float:
    """The 1-minute load average."""
    import os

    return os.getloadavg()[0]


def wait_for_quiet(max_load: float = 1.5, timeout_s: float | None = None, poll_s: float = 15) -> float:
    """Wait (up to ``timeout_s``) until the 1-minute load average is below ``max_load``, so that
    other jobs on this shared machine do not pollute a measurement. Returns the load then; prints
    a warning when it gave up waiting. ``max_load <= 0`` disables the wait; ``$BENCH_WAIT_S`` sets
    the default timeout."""
    import os
    import sys

    if timeout_s is None:
        timeout_s = float(os.environ.get("BENCH_WAIT_S", 1200))
    t0 = time.time()
    load = load_now()
    while max_load > 0 and load >= max_load and time.time() - t0 < timeout_s:
        print(f"# waiting for load < {max_load} (now {load:.2f})", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        load = load_now()
    if max_load > 0 and load >= max_load:
        print(f"# WARNING: load still {load:.2f} after {timeout_s:.0f} s; measuring anyway", flush=True)
    print(f"# load average (1 min) at start: {load:.2f}", flush=True)
    return load


def median(values) -> float:
    return statistics.median(values)


def write_sweep(path, name: str, params: dict, *, max_concurrent: int = 2, cpu: float = 1) -> None:
    """A finetune grid sweep file (``params`` as in a sweep file's ``params``)."""
    import yaml

    sweep = {"name": name, "trainable": "finetune", "storage": "results", "resources": {"cpu": cpu},
             "max_concurrent": max_concurrent, "max_failures": 0, "params": params}
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))


def run_sweep_cli(sweep_file, storage, cache_dir, *, name: str | None = None, extra_env: dict | None = None,
                  timeout: float = 1800) -> tuple[float, str]:
    """``spectral-ray sweep FILE --storage DIR`` in a subprocess with ``$SPECTRAL_RAY_CACHE``
    set; returns (wall-clock seconds, stdout). Raises on failure with the output's tail."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, RAY_AUTH_MODE="disabled", SPECTRAL_RAY_CACHE=str(cache_dir), **(extra_env or {}))
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "spectral_ray.cli", "sweep", str(sweep_file), "--storage", str(storage)]
    if name:
        cmd += ["--name", name]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def trial_results(exp_dir) -> list[dict]:
    """[{"trial": folder name, "config": params.json, "final": last result line ({} when the
    trial reported nothing), "epochs": [...]}, …] of an experiment folder."""
    import json
    from pathlib import Path

    out = []
    for trial in sorted(p for p in Path(exp_dir).iterdir() if p.is_dir() and (p / "result.json").exists()):
        lines = [json.loads(x) for x in (trial / "result.json").read_text().splitlines() if x.strip()]
        out.append({"trial": trial.name, "config": json.loads((trial / "params.json").read_text()),
                    "final": lines[-1] if lines else {}, "epochs": lines[:-1]})
    return out
