"""Ray Tune pieces the launcher plugs in: the sweep's explicit grid as a ``Searcher`` (so Tune's
``max_concurrent_trials`` applies), a scheduler cap that also holds for restored trials, the
progress table's columns and trial names that say the grid point.

Imports Ray; only the launcher (``trainables/launcher.py``) uses it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import re

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

from spectral_ray.config import name_labels

# --------------------------------------------------------------------------------- searcher


class GridPoints(Searcher):
    """Suggests an explicit list of trial configs, in order, then ``FINISHED``: the sweep's grid
    as the schema expands it (paired ``cases``, no duplicate trials), which ``tune.grid_search``
    cannot express. A ``Searcher``, so Tune wraps it in a ``ConcurrencyLimiter`` when
    ``max_concurrent_trials`` is set (``BasicVariantGenerator(points_to_evaluate=…)`` is a
    ``SearchGenerator``, for which Tune ignores the limit). Its position is saved with the
    experiment, so a resumed sweep does not suggest a point twice."""

    def __init__(self, points: list[dict]):
        super().__init__()
        self._points = points
        self._next = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the param space only names the table's columns; the points are complete

    def suggest(self, trial_id: str):
        if self._next >= len(self._points):
            return Searcher.FINISHED
        self._next += 1
        return copy.deepcopy(self._points[self._next - 1])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"next": self._next, "n": len(self._points)}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if state["n"] != len(self._points):
            raise ValueError(f"the saved grid has {state['n']} points, this sweep {len(self._points)}")
        self._next = state["next"]


# ---------------------------------------------------------------------------- concurrency


class _ConcurrencyCap:
    """At most ``max_concurrent`` trials PENDING or RUNNING, restored ones included.

    Tune's ``ConcurrencyLimiter`` only gates the searcher's new trials: trials restored by
    ``Tuner.restore`` (unfinished ones, and errored ones with ``restart_errored``, Ray issue
    #40652) are queued PENDING directly and all start as far as resources allow. Here a trial
    added beyond the cap is parked as PAUSED (it has no checkpoint, so it starts afresh) and
    handed back, one at a time, when a slot frees; the controller starts PAUSED trials only
    through :meth:`choose_trial_to_run`."""

    max_concurrent: int | None = None

    def _busy(self, tune_controller, exclude=None) -> int:
        return sum(1 for t in tune_controller.get_trials()
                   if t is not exclude and t.status in (Trial.PENDING, Trial.RUNNING))

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self.max_concurrent and trial.status == Trial.PENDING and \
                self._busy(tune_controller, exclude=trial) >= self.max_concurrent:
            trial.set_status(Trial.PAUSED)

    def choose_trial_to_run(self, tune_controller):
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING:
                return trial
        if self.max_concurrent and self._busy(tune_controller) >= self.max_concurrent:
            return None
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PAUSED:
                return trial
        return None


class CappedFIFO(_ConcurrencyCap, FIFOScheduler):
    def __init__(self, max_concurrent: int | None):
        super().__init__()
        self.max_concurrent = max_concurrent


class CappedASHA(_ConcurrencyCap, AsyncHyperBandScheduler):
    def __init__(self, max_concurrent: int | None, **asha):
        super().__init__(**asha)
        self.max_concurrent = max_concurrent


# ------------------------------------------------------------------------- names, columns

# How a grid key reads in a trial name (natural-s1-w0.75-d0.5-f0): prefix per key, in this order
# (each TrialConfig field that has a ``label`` declares it; spectral_ray.config.name_labels).
NAME_PARTS = name_labels()
# Columns of Tune's progress table after the varying parameters: the latest AUCs first.
PROGRESS_METRICS = ("iid_auc", "ood_auc", "val_auc", "train_loss", "robustness", "objective")


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _token(key: str, value, prefix: str | None) -> str | None:
    if isinstance(value, (dict, list)) or value is None:
        return None
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    if "/" in text or len(text) > 24:  # a path or a long spec: not a name
        return None
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
    return f"{key.rsplit('.', 1)[-1]}{text}" if prefix is None else f"{prefix}{text}"


def trial_label(config: dict, varying: list[str]) -> str:
    """The varying keys of a trial as a short name, e.g. ``natural-s1-w0.75-d0.5-f0``."""
    known = dict(NAME_PARTS)
    ordered = [k for k, _ in NAME_PARTS if k in varying] + sorted(k for k in varying if k not in known)
    tokens = [_token(k, _lookup(config, k), known.get(k)) for k in ordered]
    return "-".join(t for t in tokens if t) or "trial"


def varying_keys(points: list[dict]) -> list[str]:
    """Dotted keys whose value differs between the points (recipe dicts looked into)."""
    out = []
    for key in points[0]:
        values = [p.get(key) for p in points]
        if all(v == values[0] for v in values):
            continue
        if all(isinstance(v, dict) for v in values) and key in ("pretrain", "finetune"):
            out += [f"{key}.{k}" for k in varying_keys([v for v in values])]
        else:
            out.append(key)
    return out


class TrialNames:
    """Tune's ``trial_name_creator`` and ``trial_dirname_creator``: the grid point's label. Grid
    labels are made unique up front (``-2``, ``-3`` … on a clash), so a folder name is the point
    itself (an errored trial restarted on resume gets Tune's ``_<hex>`` suffix beside the failed
    attempt's folder); sampled searches add the trial id (two samples may round to one label).

    Tune pickles this object into every trial's entry of the experiment state, which it rewrites
    every few seconds: it keeps only the renamed clashes (usually none), never a table of all
    points, so the state grows linearly with the trials (a full table made it 1.6 MB per trial
    of a 360-point grid, 300 MB rewritten every 2 s)."""

    def __init__(self, varying: list[str], points: list[dict] | None = None):
        self.varying = varying
        self.grid = points is not None
        self.renamed: dict[str, str] = {}  # short hash of a config → its suffixed label
        seen: dict[str, int] = {}
        for p in points or []:
            label = trial_label(p, varying)
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                self.renamed[self._ident(p)] = f"{label}-{seen[label]}"

    @staticmethod
    def _ident(config: dict) -> str:
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def name(self, trial) -> str:
        """The trial's one name: its folder's (the progress table, TensorBoard's runs and the
        report all show it)."""
        return self.dirname(trial)

    def label(self, config: dict) -> str:
        """The grid point's unique label (or, off the grid, the plain label)."""
        return self.renamed.get(self._ident(config)) or trial_label(config, self.varying)

    def dirname(self, trial) -> str:
        if self.grid:
            return self.label(trial.config)
        return f"{trial_label(trial.config, self.varying)}_{trial.trial_id}"


def table_space(points: list[dict], varying: list[str]) -> dict:
    """A param_space whose varying keys are ``tune.choice`` over the values the points take: Tune's
    progress table shows exactly those as columns. The searcher's points replace every entry."""
    from ray import tune

    space = copy.deepcopy(points[0])
    for key in varying:
        values = []
        for p in points:
            v = _lookup(p, key)
            if v not in values:
                values.append(v)
        head, _, rest = key.partition(".")
        if rest:
            space[head][rest] = tune.choice(values)
        else:
            space[head] = tune.choice(values)
    return space


def progress_first(metrics: dict) -> dict:
    """``metrics`` with :data:`PROGRESS_METRICS` first: Tune's table shows the first four metric
    keys of the first result it sees (``ray.tune.experimental.output._infer_user_metrics``)."""
    first = {k: metrics[k] for k in PROGRESS_METRICS if k in metrics}
    return {**first, **{k: v for k, v in metrics.items() if k not in first}}


def changed_keys(before: dict, now: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose value differs between two sweep files (as ``model_dump(mode="json")``
    writes them), each as ``key (was X, now Y)``; mappings are compared key by key."""
    out = []
    for key in sorted(set(before) | set(now), key=str):
        a, b = before.get(key), now.get(key)
        if a == b or (not prefix and key == "description"):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key} (was {a!r}, now {b!r})")
    return out
