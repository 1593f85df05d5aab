"""`loggers:` in a sweep file: Ray Tune's W&B and MLflow callbacks, validated before Ray starts
(a missing package is named with the extra that installs it), and run in their offline modes."""

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from spectral_ray.config import SweepError, parse_sweep

HAS = {name: importlib.util.find_spec(name) is not None for name in ("wandb", "mlflow")}


def _sweep(tmp_path, loggers):
    return {"name": "lg", "storage": str(tmp_path / "results"), "loggers": loggers,
            "params": {"degradation": {"grid": [0, 1]}}}


def test_missing_package_is_named_with_its_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    with pytest.raises(SweepError) as e:
        parse_sweep(_sweep(tmp_path, {"wandb": {}, "mlflow": {}}), "inline")
    msg = str(e.value)
    assert "2 problems" in msg and "`loggers.wandb`" in msg and "`loggers.mlflow`" in msg
    assert "pip install 'spectral-ray[wandb]'" in msg and "pip install 'spectral-ray[mlflow]'" in msg


def test_unknown_logger_and_mode_are_rejected(tmp_path):
    with pytest.raises(SweepError, match=r"unknown key `loggers.wanb`. Did you mean 'wandb'"):
        parse_sweep(_sweep(tmp_path, {"wanb": {}}), "inline")
    with pytest.raises(SweepError, match=r"loggers.wandb.mode"):
        parse_sweep(_sweep(tmp_path, {"wandb": {"mode": "sometimes"}}), "inline")


def test_no_loggers_key_keeps_old_experiments_resumable(tmp_path):
    """Experiments saved before the key existed compare equal (loggers absent = None)."""
    from trainables.tuning import changed_keys

    sweep = parse_sweep(_sweep(tmp_path, None) | {"loggers": None}, "inline")
    saved = {k: v for k, v in sweep.model_dump(mode="json").items() if k != "loggers"}
    assert changed_keys(saved, sweep.model_dump(mode="json")) == []


@pytest.mark.skipif(not all(HAS.values()), reason="wandb and mlflow not installed")
def test_callbacks_built_from_the_sweep(tmp_path):
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback

    from trainables.hparams import ecosystem_callbacks

    sweep = parse_sweep(_sweep(tmp_path, {"wandb": {"group": "g"}, "mlflow": {"tracking_uri": f"file://{tmp_path}/mlruns"}}),
                        "inline")
    wb, ml = ecosystem_callbacks(sweep)
    assert isinstance(wb, WandbLoggerCallback) and wb.project == "lg" and wb.kwargs["mode"] == "offline"
    assert "psd_finetuned" in wb.excludes
    assert isinstance(ml, MLflowLoggerCallback) and ml.experiment_name == "lg"


@pytest.mark.slow
@pytest.mark.skipif(not HAS["mlflow"], reason="mlflow not installed")
def test_mlflow_offline_run_records_each_trial(tmp_path):
    """A local SQLite MLflow store (no server): each trial a run with its params and final AUCs."""
    import mlflow

    tiny = {"size": 32, "source_n": 200, "target_n": 160, "psd_images": 32, "pretrain.epochs": 1, "finetune.epochs": 1}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    raw = _sweep(tmp_path, {"mlflow": {"tracking_uri": uri}})
    raw["params"].update(tiny)
    path = tmp_path / "lg.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, "-m", "spectral_ray.cli", "sweep", str(path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["lg"])
    assert len(runs) == 2
    assert sorted(runs["params.degradation"].astype(float)) == [0.0, 1.0]
    assert runs["metrics.ood_auc"].between(0, 1).all()


@pytest.mark.slow
@pytest.mark.skipif(not HAS["wandb"], reason="wandb not installed")
def test_wandb_offline_run_per_trial(tmp_path):
    """W&B in offline mode (no account, no network): an offline run folder per trial."""
    tiny = {"size": 32, "source_n": 200, "target_n": 160, "psd_images": 32, "pretrain.epochs": 1, "finetune.epochs": 1}
    raw = _sweep(tmp_path, {"wandb": {"mode": "offline", "dir": str(tmp_path / "wb")}})
    raw["params"].update(tiny)
    path = tmp_path / "lg.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "wb").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, "-m", "spectral_ray.cli", "sweep", str(path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, list((tmp_path / "wb").rglob("*"))[:20]
    assert all(any(r.glob("*.wandb")) for r in runs)
