"""Real Ray Tune runs through the command line (slow): result columns, PSD vectors, TensorBoard
event files read back, the store training each backbone once, and a 2-sample Optuna search."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "spectral_ray.cli"]
TINY = {"size": 32, "source_n": 200, "target_n": 160, "psd_images": 32, "pretrain.epochs": 1, "finetune.epochs": 1}


def run_cli(*args, env_extra=None, timeout=900):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **(env_extra or {}))
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def final_results(exp: Path) -> list[dict]:
    out = []
    for trial in sorted(p for p in exp.iterdir() if p.is_dir() and (p / "result.json").exists()):
        lines = (trial / "result.json").read_text().splitlines()
        out.append({"dir": trial, "final": json.loads(lines[-1]), "epochs": [json.loads(x) for x in lines[:-1]]})
    return out


@pytest.fixture(scope="module")
def grid_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    sweep = {"name": "grid", "storage": str(root / "results"), "resources": {"cpu": 1}, "max_concurrent": 2,
             "params": {**TINY, "source": {"grid": ["natural", "medical"]}, "degradation": {"grid": [0, 1]}}}
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep))
    proc = run_cli("sweep", path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "results" / "grid", proc


def test_all_trials_terminated_with_metrics_and_psds(grid_experiment):
    exp, proc = grid_experiment
    results = final_results(exp)
    assert len(results) == 4
    assert "trials: 4 TERMINATED" in proc.stdout
    for r in results:
        f = r["final"]
        for key in ("iid_auc", "ood_auc", "val_auc", "alignment_finetuned", "centroid_pretrained"):
            assert isinstance(f[key], float), key
        for key in ("psd_pretrained", "psd_finetuned", "psd_artifact"):
            assert len(f[key]) == 17
        assert {"train_loss", "val_loss", "val_auc"} <= set(r["epochs"][0])  # test sets: once, in the final report
        assert (r["dir"] / "checkpoint_000000").is_dir()


def test_store_trained_each_backbone_once(grid_experiment):
    exp, proc = grid_experiment
    assert "2 backbone(s); pretrainings in this run: 2; retrained keys: 0" in proc.stdout
    keys = {r["final"]["pretrain_key"] for r in final_results(exp)}
    assert len(keys) == 2


def test_tensorboard_event_files_read_back(grid_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = grid_experiment
    for result in final_results(exp):  # every trial, also those run by a reused worker process
        ea = EventAccumulator(str(result["dir"]), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        ea.Reload()
        tags = ea.Tags()
        assert {"final/iid_auc", "final/ood_auc", "epoch/val_loss", "epoch/train_loss"} <= set(tags["scalars"])
        assert not any(t.startswith("ray/") for t in tags["scalars"])
        assert {"priority/probe_set", "priority/probe_set_over_epochs"} <= set(tags["images"]), result["dir"].name
        image = ea.Images("priority/probe_set")[0]
        assert image.width > 100 and len(image.encoded_image_string) > 1000
        assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")


def test_rerun_resumes_without_retraining(grid_experiment):
    exp, _ = grid_experiment
    before = {r["dir"].name: r["final"]["iid_auc"] for r in final_results(exp)}
    proc = run_cli("sweep", exp.parent.parent / "grid.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout
    assert "pretrainings in this run: 0" in proc.stdout
    after = {r["dir"].name: r["final"]["iid_auc"] for r in final_results(exp)}
    assert after == before


def test_optuna_search_over_edit_strength(tmp_path):
    sweep = {
        "name": "search", "trainable": "robustness", "storage": str(tmp_path / "results"),
        "resources": {"cpu": 1}, "max_concurrent": 2,
        "search": {"algorithm": "optuna", "metric": "robustness", "mode": "max", "num_samples": 2},
        "params": {**TINY, "source": "natural", "edit": "band_gain", "edit_strength": {"uniform": [0.0, 1.0]},
                   "degradations": [0.0, 1.0]},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(sweep))
    proc = run_cli("sweep", path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "best robustness = " in proc.stdout and "edit_strength" in proc.stdout
    results = final_results(tmp_path / "results" / "search")
    assert len(results) == 2
    strengths = {json.loads((r["dir"] / "params.json").read_text())["edit_strength"] for r in results}
    assert len(strengths) == 2 and all(0 <= s <= 1 for s in strengths)
    for r in results:
        assert 0 <= r["final"]["robustness"] <= 1
    # the report draws the search (analysis/search.py) and names its best setting
    proc = run_cli("report", tmp_path / "results" / "search")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "results" / "search" / "report" / "report.md").read_text()
    assert "## Search" in report and "**Best setting:** `edit_strength` = " in report
    assert (tmp_path / "results" / "search" / "report" / "search_optimization_history.png").exists()
