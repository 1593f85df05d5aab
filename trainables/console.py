"""What the sweep prints while it runs: a Tune ``ProgressReporter`` with one table of the trials
(name, status, the sweep's varying keys, the latest AUCs), printed when a trial starts, ends or
fails and at most every :data:`HEARTBEAT_S` seconds otherwise; no per-trial config tables and no
TensorBoard hint (Ray's points to the driver's staging folder; ``spectral-ray sweep`` prints the
experiment folder TensorBoard should read).

Ray 2.60's newer console output (``RAY_AIR_NEW_OUTPUT``, on by default) ignores a passed
reporter and prints each trial's config at its start, so the launcher switches it off
(:data:`CLASSIC_OUTPUT`) and passes :func:`progress_reporter` instead.
"""

from __future__ import annotations

import sys
import time

from ray.tune import ProgressReporter

from spectral_ray.config import SweepFile

CLASSIC_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0"}
HEARTBEAT_S = 60
MAX_ROWS = 40  # of the final table (errored trials first); the report tabulates every trial
# Metric columns per trainable: what a person watches (the first present ones are shown).
METRIC_COLUMNS = {
    "finetune": {"val_auc": "val AUC", "iid_auc": "I.I.D. AUC", "ood_auc": "O.O.D. AUC", "train_loss": "loss"},
    "robustness": {"levels_done": "levels", "robustness": "robustness", "iid_mean": "I.I.D. mean",
                   "objective": "objective"},
    "pretrain": {"val_accuracy": "val acc", "train_loss": "loss"},
}


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class SweepReporter(ProgressReporter):
    """``keys``: the sweep's varying (dotted) config keys; ``metrics``: {result key: column title}."""

    def __init__(self, keys: list[str], metrics: dict[str, str], out=None):
        self.keys, self.metrics = list(keys), dict(metrics)
        self.out = out
        self._last_states: tuple = ()
        self._last_time = 0.0
        self._start = time.time()
        self._total: int | None = None

    def setup(self, start_time=None, total_samples=None, metric=None, mode=None, **kwargs):
        self._start = start_time or time.time()
        self._total = total_samples

    def should_report(self, trials, done: bool = False) -> bool:
        states = tuple(sorted((str(t), t.status) for t in trials))
        return done or states != self._last_states or time.time() - self._last_time >= HEARTBEAT_S

    def report(self, trials, done: bool, *sys_info: str) -> None:
        """The full table at the end; meanwhile the status line and the rows of the trials whose
        status changed since the last report (a heartbeat: the status line alone)."""
        before = dict(self._last_states)
        self._last_states = tuple(sorted((str(t), t.status) for t in trials))
        self._last_time = time.time()
        if done:
            shown = sorted(trials, key=lambda t: t.status != "ERROR")[:MAX_ROWS]
        else:
            shown = [t for t in trials if before.get(str(t)) != t.status and t.status != "PENDING"]
        print(self.table(trials, done, shown), file=self.out or sys.stdout, flush=True)

    def table(self, trials, done: bool = False, rows_of=None) -> str:
        """The status line and a table of ``rows_of`` (default: all trials) as text."""
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        total = f"/{self._total}" if self._total and self._total < sys.maxsize else ""
        head = (f"{'finished' if done else 'running'} {time.time() - self._start:.0f} s — trials {len(trials)}{total}: "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        columns = ["trial", "status"] + self.keys + list(self.metrics.values())
        rows = []
        for t in trials if rows_of is None else rows_of:
            result = t.last_result or {}
            rows.append([str(t), t.status] + [_cell(_lookup(t.config, k)) for k in self.keys]
                        + [_cell(result.get(k)) for k in self.metrics])
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
        if not rows:
            return head
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        if rows_of is not None and done and len(rows_of) < len(trials):
            lines.append(f"… {len(trials) - len(rows_of)} more (every trial: spectral-ray report)")
        return "\n".join(lines) + ("\n" if done else "")


def progress_reporter(sweep: SweepFile, keys: list[str]) -> SweepReporter:
    return SweepReporter(keys, METRIC_COLUMNS.get(sweep.trainable, {}))
