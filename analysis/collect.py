"""Read a Ray Tune experiment folder into tidy tables, without a running Ray cluster.

An experiment folder ``<storage>/<name>/`` as Ray Tune 2.x writes it holds one directory per trial
(``params.json``, ``result.json`` with one JSON line per ``tune.report``, ``progress.csv``,
``error.txt``/``error.pkl`` for failed trials) and experiment-level state files
(``experiment_state-<date>.json``, ``basic-variant-state-*.json``, ``tuner.pkl``). Only the JSON
files are read here, through ``pyarrow.fs``, so the same code reads a local path and any URI Ray
itself can store to (``s3://``, ``gs://``, ``hdfs://``, ``file://`` …). Trial status comes from
Ray's public ``tune.ExperimentAnalysis`` where Ray is installed, else (or with
``use_ray=False``, which unpickles nothing) from the newest experiment-state JSON directly.

``collect(path)`` returns a :class:`Collected` with

* ``trials``: one row per trial — every trial, including failed, unfinished and pending ones,
  which are marked in ``status`` (``TERMINATED`` / ``ERROR`` / ``RUNNING`` / ``PENDING``), never
  dropped. Columns: bookkeeping (``trial_id``, ``trial_dir``, ``trainable``, ``kind``,
  ``status``, ``status_from``, ``error``, ``n_reports``, ``training_iteration``,
  ``time_total_s``), the flattened config, and the final value of every reported metric (the
  last report that carries the key, so a final report that only adds spectra still leaves the
  last epoch's AUCs in place). Lists of numbers (``psd_*``) become float numpy arrays.
* ``history``: one row per report (per epoch) with the scalar metrics.

Nothing is filled from today's defaults: the launcher writes every TrialConfig key into
params.json, and the trial reports what it resolved (``source_label``, ``artifact_resolved``).
For experiments from before those reports, :func:`analysis.aggregate.with_identity` completes
the two from the trial's own params.json keys.

Status: the newest ``experiment_state-*.json`` is authoritative where present (Ray keeps the
trial status there; the ``done`` flag in ``result.json`` is usually ``false`` even for finished
function trainables; a trial retried under ``max_failures`` keeps the ``error.txt`` of its failed
attempt but ends ``TERMINATED``, noted in ``error``). Without a state file an ``error.txt`` means
``ERROR``, a last report with ``done: true`` means ``TERMINATED``, anything else ``RUNNING``
(unfinished or unknown), or ``PENDING`` if it never reported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import with_identity

__all__ = ["Collected", "collect", "TUNE_KEYS", "STATUSES"]

STATUSES = ("TERMINATED", "ERROR", "RUNNING", "PENDING")

# Keys Ray Tune adds to every result; kept out of the metric columns (a few are kept as bookkeeping).
TUNE_KEYS = {
    "config", "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "experiment_tag", "should_checkpoint", "episodes_total",
    "timesteps_total", "timesteps_since_restore", "experiment_id",
}
BOOKKEEPING = ["trial_id", "trial_dir", "experiment", "trainable", "kind", "status", "status_from", "error",
               "n_reports", "training_iteration", "time_total_s"]
from spectral_ray.config import TRAINABLES as KINDS  # noqa: E402  (trial kinds = trainable names)
_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


class NoTrialsError(ValueError):
    """The folder holds no Ray Tune trials (no trial folders with params.json/result.json)."""


@dataclass
class Collected:
    """What :func:`collect` read: per-trial table, per-report history and where they came from."""

    trials: pd.DataFrame
    history: pd.DataFrame
    path: str
    config_columns: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)
    state_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> pd.DataFrame:
        return self.trials[self.trials["kind"] == kind]


# ----------------------------------------------------------------------------- file system


class _FS:
    """A thin wrapper over a pyarrow file system rooted at the experiment folder."""

    def __init__(self, path: str | os.PathLike):
        import pyarrow.fs as pafs

        self._pafs = pafs
        text = os.fspath(path)
        if "://" in text:
            self.fs, self.root = pafs.FileSystem.from_uri(text)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())
        self.root = self.root.rstrip("/") or "/"

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if parts else self.root

    def kind(self, path: str):
        return self.fs.get_file_info(path).type

    def is_dir(self, path: str) -> bool:
        return self.kind(path) == self._pafs.FileType.Directory

    def exists(self, path: str) -> bool:
        return self.kind(path) != self._pafs.FileType.NotFound

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        infos = self.fs.get_file_info(self._pafs.FileSelector(path, recursive=False))
        return sorted((i.base_name, i.type == self._pafs.FileType.Directory) for i in infos)

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- parsing helpers


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _convert(v):
    """Lists of numbers -> float arrays (spectra); everything else unchanged."""
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return np.asarray(v, dtype=np.float64)
    return v


def _read_results(fs: _FS, path: str) -> tuple[list[dict], int]:
    """All parseable JSON lines of result.json (a half-written last line is skipped and counted)."""
    if not fs.exists(path):
        return [], 0
    rows, bad = [], 0
    for line in fs.read_text(path).splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    return rows, bad


def _error_line(text: str) -> str:
    """The most informative line of a Ray error.txt: the last 'SomethingError: message' line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b.*", ln):
            return ln[:300]
    return (lines[-1] if lines else "error (empty error.txt)")[:300]


def _read_state(fs: _FS, exp_root: str, entries: list[tuple[str, bool]]) -> tuple[dict, str | None, list[str]]:
    """Trial status etc. from the newest experiment_state-*.json, keyed by trial dir name."""
    names = sorted(n for n, is_dir in entries if not is_dir and re.match(r"experiment_state.*\.json$", n))
    warnings: list[str] = []
    for name in reversed(names):
        try:
            state = json.loads(fs.read_text(f"{exp_root}/{name}"))
            out = {}
            for item in state.get("trial_data", []):
                js = json.loads(item[0]) if isinstance(item[0], str) else item[0]
                rt = json.loads(item[1]) if len(item) > 1 and isinstance(item[1], str) else (item[1] if len(item) > 1 else {})
                logdir = js.get("relative_logdir") or js.get("trial_id")
                config = js.get("config")
                out[str(logdir)] = {
                    "status": js.get("status"),
                    "trial_id": js.get("trial_id"),
                    "trainable": js.get("trainable_name"),
                    "config": config if isinstance(config, dict) else None,
                    "error_filename": (rt or {}).get("error_filename"),
                }
            return out, name, warnings
        except Exception as e:  # a corrupt or foreign-format state file: fall back to the files
            warnings.append(f"could not read {name}: {type(e).__name__}: {e}")
    return {}, None, warnings


def _read_state_ray(fs: _FS, exp_root: str, entries: list[tuple[str, bool]]) -> tuple[dict, str | None, list[str]]:
    """What :func:`_read_state` reads, through Ray's public ``tune.ExperimentAnalysis`` (on the
    experiment's own pyarrow file system, so bucket URIs too). Ray restores its trial objects from
    the experiment state, which unpickles parts of it: only for experiments one trusts."""
    from ray.tune import ExperimentAnalysis

    names = sorted(n for n, is_dir in entries if not is_dir and re.match(r"experiment_state.*\.json$", n))
    if not names:
        return {}, None, []
    try:
        analysis = ExperimentAnalysis(exp_root, storage_filesystem=fs.fs)
    except Exception as e:  # a foreign or damaged state: the JSON reader says what it can
        state, name, warnings = _read_state(fs, exp_root, entries)
        return state, name, [f"Ray's ExperimentAnalysis could not read {exp_root}: {type(e).__name__}: {e}"] + warnings
    out = {}
    for trial in analysis.trials:
        out[trial.storage.trial_dir_name] = {
            "status": trial.status, "trial_id": trial.trial_id, "trainable": trial.trainable_name,
            "config": trial.config if isinstance(trial.config, dict) else None,
            "error_filename": trial.run_metadata.error_filename,
        }
    return out, f"{names[-1]} (read with ray.tune.ExperimentAnalysis)", []


def _kind(trainable: str | None, metrics: dict) -> str:
    name = (trainable or "").lower()
    for k in KINDS:
        if k in name:
            return k
    if "ood_auc" in metrics or "iid_auc" in metrics:
        return "finetune"
    if "robustness" in metrics:
        return "robustness"
    if "psd_pretrained" in metrics:
        return "pretrain"
    return "unknown"


def _is_trial_dir(entries: list[tuple[str, bool]]) -> bool:
    names = {n for n, _ in entries}
    return bool(names & {"params.json", "result.json", "progress.csv", "error.txt"})


# ----------------------------------------------------------------------------- collect


def _collect_experiment(fs: _FS, exp_root: str, exp_name: str, use_ray: bool = False):
    entries = fs.listdir(exp_root)
    state, state_file, warnings = (_read_state_ray if use_ray else _read_state)(fs, exp_root, entries)
    rows, history = [], []
    seen = set()
    trial_dirs = [n for n, is_dir in entries if is_dir and _is_trial_dir(fs.listdir(f"{exp_root}/{n}"))]
    for name in trial_dirs:
        seen.add(name)
        tdir = f"{exp_root}/{name}"
        files = {n for n, _ in fs.listdir(tdir)}
        results, bad = _read_results(fs, f"{tdir}/result.json")
        if bad:
            warnings.append(f"{name}: skipped {bad} unreadable line(s) in result.json")
        st = state.get(name, {})
        config = None
        if "params.json" in files:
            try:
                config = json.loads(fs.read_text(f"{tdir}/params.json"))
            except json.JSONDecodeError:
                warnings.append(f"{name}: unreadable params.json")
        if config is None:
            config = st.get("config") or next((r["config"] for r in results if isinstance(r.get("config"), dict)), {})
        metrics: dict = {}
        for r in results:  # last report carrying each key wins
            for k, v in _flatten({k: v for k, v in r.items() if k not in TUNE_KEYS}).items():
                metrics[k] = v
            history.append({"trial_dir": name, "training_iteration": r.get("training_iteration"),
                            **{k: v for k, v in _flatten({k: v for k, v in r.items() if k not in TUNE_KEYS}).items()
                               if isinstance(v, (int, float, str, bool)) or v is None},
                            "time_total_s": r.get("time_total_s")})
        last = results[-1] if results else {}
        error = None
        if "error.txt" in files:
            error = _error_line(fs.read_text(f"{tdir}/error.txt"))
        elif "error.pkl" in files:
            error = "error.pkl present (not unpickled)"
        if st.get("status"):
            # The state is authoritative: with max_failures > 0 a trial that failed once and was
            # retried keeps its error.txt but finishes TERMINATED (or is RUNNING again).
            status, status_from = str(st["status"]), "experiment_state"
            if status == "ERROR" and error is None:
                error = "marked ERROR in experiment state (no error.txt)"
            elif status != "ERROR" and error is not None:
                error = f"recovered after a failed attempt: {error}"
        elif error is not None:
            status, status_from = "ERROR", "error.txt"
        elif last.get("done") is True:
            status, status_from = "TERMINATED", "result.json done"
        else:
            status, status_from = ("RUNNING" if results else "PENDING"), "files"
        if status == "PAUSED" or (status == "PENDING" and results):
            status = "RUNNING"  # unfinished: Ray's ExperimentAnalysis restores a RUNNING trial as PENDING
        trial_id = st.get("trial_id") or last.get("trial_id")
        if not trial_id:
            m = _TRIAL_ID.search(name)
            trial_id = m.group(1) if m else name
        trainable = st.get("trainable") or (name.split(f"_{trial_id}")[0] if trial_id in name else None)
        row = {
            "trial_id": trial_id, "trial_dir": name, "experiment": exp_name, "trainable": trainable,
            "kind": _kind(trainable, metrics), "status": status, "status_from": status_from, "error": error,
            "n_reports": len(results), "training_iteration": last.get("training_iteration"),
            "time_total_s": last.get("time_total_s"),
        }
        rows.append((row, _flatten(config), {k: _convert(v) for k, v in metrics.items()}))
    # Trials the state knows about but that never got a folder (pending when the run stopped).
    for logdir, st in state.items():
        if logdir in seen:
            continue
        row = {
            "trial_id": st.get("trial_id"), "trial_dir": None, "experiment": exp_name, "trainable": st.get("trainable"),
            "kind": _kind(st.get("trainable"), {}), "status": str(st.get("status") or "PENDING"),
            "status_from": "experiment_state", "error": None, "n_reports": 0, "training_iteration": None,
            "time_total_s": None,
        }
        rows.append((row, _flatten(st.get("config") or {}), {}))
    return rows, history, ([state_file] if state_file else []), warnings


_STATUS_RANK = {"TERMINATED": 3, "RUNNING": 2, "ERROR": 1, "PENDING": 0}


def _one_row_per_trial(rows: list, warnings: list[str]) -> list:
    """One row per (experiment, trial_id). A trial restarted on resume (an errored trial run
    again) gets a new folder beside its failed attempt's, under the same trial id: keep the
    attempt that got furthest (status, then reports) and say how many were superseded."""
    best: dict = {}
    for i, (row, _, _) in enumerate(rows):
        key = (row["experiment"], row["trial_id"])
        rank = (_STATUS_RANK.get(row["status"], 0), row["n_reports"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, i)
    keep = sorted(i for _, i in best.values())
    if len(keep) < len(rows):
        warnings.append(f"{len(rows) - len(keep)} earlier attempt folder(s) of restarted trials left out "
                        "(the attempt that got furthest is kept)")
    return [rows[i] for i in keep]


def ray_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def collect(path: str | os.PathLike, *, use_ray: bool | None = None) -> Collected:
    """Read an experiment folder (or a storage folder holding several experiments) into tables.

    ``use_ray``: read trial status through Ray's public ``tune.ExperimentAnalysis`` (default:
    where Ray is installed); False reads the state's JSON directly and unpickles nothing (for a
    folder copied from elsewhere, or without Ray). The trial files are read the same either way.
    Raises FileNotFoundError if ``path`` is not a directory and ValueError if it holds no trials.
    """
    use_ray = ray_importable() if use_ray is None else use_ray
    fs = _FS(path)
    if not fs.is_dir(fs.root):
        raise FileNotFoundError(f"experiment folder not found: {path}")
    entries = fs.listdir(fs.root)
    exp_name = fs.root.rstrip("/").rsplit("/", 1)[-1]
    experiments = [(fs.root, exp_name)]
    if not any(is_dir and _is_trial_dir(fs.listdir(fs.join(n))) for n, is_dir in entries):
        # A storage folder: collect every experiment folder inside it.
        experiments = [(fs.join(n), n) for n, is_dir in entries if is_dir]
    all_rows, history, state_files, warnings = [], [], [], []
    for root, name in experiments:
        r, h, s, w = _collect_experiment(fs, root, name, use_ray)
        for hrow in h:
            hrow["experiment"] = name
        all_rows += r
        history += h
        state_files += s
        warnings += w
    if not all_rows:
        raise NoTrialsError(f"no Ray Tune trials found in {path} (expected trial folders with params.json/result.json)")
    all_rows = _one_row_per_trial(all_rows, warnings)

    config_cols: list[str] = []
    metric_cols: list[str] = []
    for _, cfg, met in all_rows:
        config_cols += [k for k in cfg if k not in config_cols]
        metric_cols += [k for k in met if k not in metric_cols]
    records = []
    for row, cfg, met in all_rows:
        rec = dict(row)
        for k in config_cols:
            rec[k if k not in BOOKKEEPING else f"config/{k}"] = cfg.get(k, np.nan)
        for k in metric_cols:
            col = k if (k not in rec and k not in BOOKKEEPING) else f"metric/{k}"
            rec[col] = met.get(k, np.nan)
        records.append(rec)
    trials = pd.DataFrame.from_records(records)
    trials = trials.sort_values(["experiment", "trial_id"], kind="stable", na_position="last").reset_index(drop=True)
    cfg_names = [k if k not in BOOKKEEPING else f"config/{k}" for k in config_cols]
    met_names = [k if (k not in cfg_names and k not in BOOKKEEPING) else f"metric/{k}" for k in metric_cols]
    hist = pd.DataFrame.from_records(history)
    if not hist.empty:
        ids = trials.set_index(["experiment", "trial_dir"])[["trial_id", "status"]]
        hist = hist.join(ids, on=["experiment", "trial_dir"])
        front = ["experiment", "trial_id", "trial_dir", "status", "training_iteration"]
        hist = hist[front + [c for c in hist.columns if c not in front]]
    trials = with_identity(trials)
    trials.attrs["config_columns"] = cfg_names
    trials.attrs["metric_columns"] = met_names
    return Collected(trials=trials, history=hist, path=os.fspath(path), config_columns=cfg_names,
                     metric_columns=met_names, state_files=state_files, warnings=warnings)
