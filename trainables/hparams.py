"""The sweep's one TensorBoard writer on the driver: a Ray Tune ``LoggerCallback`` in place of
Ray's ``TBXLoggerCallback`` (which logs every result key under ``ray/tune/``, vectors as
histograms, and all 40-odd config keys as hyper-parameters without domains).

It writes, into each trial's folder, the HParams session (the swept keys' values), the per-epoch
scalars of :data:`spectral_ray.tensorboard.EPOCH_SCALARS` as ``epoch/<key>`` and, when the trial
ends, the final metrics as ``final/<key>``; into the experiment folder, once, the HParams
experiment with the swept keys' domains. The protos are built in :mod:`spectral_ray.tensorboard`.

:func:`logger_callbacks` is what the launcher passes to ``RunConfig(callbacks=...)``, with Ray's
own automatic loggers switched off (:data:`DISABLE_RAY_LOGGERS`); the CSV and JSON loggers, which
the report and resume rely on, are passed explicitly.
"""

from __future__ import annotations

import math

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

from spectral_ray import tensorboard as tb
from spectral_ray.config import SweepFile

# Ray 2.60 adds CSV, JSON and TBX loggers unless this is "1" (ray.tune.utils.callback._create_default_callbacks)
DISABLE_RAY_LOGGERS = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
# The HParams metrics per trainable (keys of spectral_ray.tensorboard.HPARAM_METRICS).
TRAINABLE_METRICS = {
    "finetune": [k for k in tb.HPARAM_METRICS if k not in ("robustness", "iid_mean", "objective")],
    "robustness": ["robustness", "iid_mean", "objective"],
    "pretrain": ["centroid_pretrained"],
}


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def hparam_domains(sweep: SweepFile, points: list[dict] | None = None) -> dict[str, list | tuple]:
    """{swept key: its domain}: the values a grid axis takes (after the grid is expanded into
    ``points``, the launcher's ``grid_points``, so a ``cases`` axis names each key it sets), a
    ``choice`` list, or a sampled range (lo, hi)."""
    from trainables import tuning

    if sweep.search.algorithm == "grid":
        if points is None:
            raise ValueError("a grid search's hparam domains need its expanded points (launcher.grid_points)")
        return {key: list(dict.fromkeys(_lookup(p, key) for p in points)) for key in tuning.varying_keys(points)}
    out: dict[str, list | tuple] = {}
    for key, (kind, value) in sweep.axes().items():
        if kind in ("grid", "choice"):
            out[key] = list(value)
        elif kind in ("uniform", "loguniform"):
            out[key] = (float(value[0]), float(value[1]))
    return out


class HParamsCallback(LoggerCallback):
    """Writes the HParams view and the curated scalars (see the module docstring). Holds only plain
    data between calls (Tune pickles the run config with its callbacks into ``tuner.pkl``); the
    event-file writers open when a trial starts."""

    _SAVED_FILE_TEMPLATES = ["events.out.tfevents.*"]

    def __init__(self, domains: dict[str, list | tuple], metrics: list[str]):
        self.domains = domains
        self.metrics = list(metrics)
        self._writers: dict = {}
        self._experiment_written = False

    def __getstate__(self):
        return {"domains": self.domains, "metrics": self.metrics}

    def __setstate__(self, state):
        self.__init__(state["domains"], state["metrics"])

    @staticmethod
    def _writer(path: str):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(path, filename_suffix=".hparams", flush_secs=10)

    def log_trial_start(self, trial) -> None:
        if not self._experiment_written:
            root = self._writer(trial.local_experiment_path)
            root.file_writer.add_summary(tb.experiment_summary(self.domains, self.metrics))
            root.close()
            self._experiment_written = True
        if trial in self._writers:
            self._writers[trial].close()
        trial.init_local_path()
        writer = self._writers[trial] = self._writer(trial.local_path)
        values = {key: _lookup(trial.config, key) for key in self.domains}
        writer.file_writer.add_summary(tb.session_start_summary(values, str(trial), self.domains))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._writers:
            self.log_trial_start(trial)
        writer = self._writers[trial]
        step = result.get("training_iteration", iteration)
        final = bool(result.get("done"))
        # a fine-tuning trial's final report is a summary after its epochs, not one more epoch
        if "epoch" in result or "levels_done" in result:
            for key in tb.EPOCH_SCALARS:
                if _is_number(result.get(key)):
                    writer.add_scalar(f"epoch/{key}", float(result[key]), global_step=step)
        if final:
            self._final(writer, result, step)
        writer.flush()

    def _final(self, writer, result: dict, step: int) -> None:
        for key in self.metrics:
            if _is_number(result.get(key)):
                writer.add_scalar(f"final/{key}", float(result[key]), global_step=step)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial, None)
        if writer is None:
            return
        result = trial.last_result or {}
        if not result.get("done") and result:  # stopped early (ASHA): its last values are its final ones
            self._final(writer, result, result.get("training_iteration", 0))
        writer.file_writer.add_summary(tb.session_end_summary(failed))
        writer.close()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def logger_callbacks(sweep: SweepFile, points: list[dict] | None = None) -> list:
    """Ray Tune's CSV and JSON loggers, :class:`HParamsCallback` for the sweep (``points``: a
    grid's expanded trials) and the W&B / MLflow callbacks its ``loggers`` key asks for."""
    metrics = TRAINABLE_METRICS.get(sweep.trainable, [])
    return [CSVLoggerCallback(), JsonLoggerCallback(), HParamsCallback(hparam_domains(sweep, points), metrics),
            *ecosystem_callbacks(sweep)]


def ecosystem_callbacks(sweep: SweepFile) -> list:
    """Ray Tune's own ``WandbLoggerCallback`` / ``MLflowLoggerCallback`` from ``loggers``; vectors
    (``psd_*``) and the config's long lists are left out of W&B's per-step logging."""
    loggers, out = sweep.loggers, []
    if loggers is None:
        return out
    if loggers.wandb is not None:
        import os

        from ray.air.integrations.wandb import WandbLoggerCallback

        w = loggers.wandb
        os.environ.setdefault("WANDB_MODE", w.mode)  # Ray asks for an API key unless the mode says offline
        extra = {"dir": w.dir} if w.dir else {}
        out.append(WandbLoggerCallback(project=w.project or sweep.name, group=w.group, mode=w.mode,
                                       excludes=[k for k in tb.PRIORITY_LABELS], **extra))
    if loggers.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        m = loggers.mlflow
        out.append(MLflowLoggerCallback(tracking_uri=m.tracking_uri, experiment_name=m.experiment_name or sweep.name))
    return out
