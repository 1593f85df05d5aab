"""The command line a researcher meets first: nested --set, every validation error at once, the
estimate, the JSON Schema (every shipped sweep file validates against it), --version, the resume
guard naming the changed key, did-you-mean for dataset names."""

import json
from pathlib import Path

import pytest
import yaml

from spectral_ray.cli import main

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))


def _write(tmp_path, raw: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_nested_set_reaches_the_scheduler(tmp_path, capsys):
    from spectral_ray.config import load_sweep

    path = _write(tmp_path, {"name": "s", "storage": str(tmp_path), "search": {"algorithm": "random", "num_samples": 2,
                                                                              "metric": "ood_auc"},
                             "params": {"finetune.lr": {"loguniform": [1e-4, 1e-2]}}})
    assert main(["validate", str(path), "--set", "search.scheduler.grace_period=2",
                 "--set", "search.scheduler.max_t=4"]) == 0
    from spectral_ray.cli.sweep import _load

    class Args:
        file, storage, name = path, None, None
        set = ["search.scheduler.grace_period=2", "search.num_samples=3"]

    sweep = _load(Args)
    assert sweep.search.scheduler.grace_period == 2 and sweep.search.num_samples == 3
    assert sweep.search.metric == "ood_auc"  # the rest of `search` kept
    assert load_sweep(path).search.scheduler is None
    capsys.readouterr()
    assert main(["validate", str(path), "--set", "search.scheduler.type=hyperband"]) == 2
    err = capsys.readouterr().err
    assert "search.scheduler.type" in err and "asha" in err and "Did you mean 'scheduler'" not in err


def test_validate_lists_every_error(tmp_path, capsys):
    path = _write(tmp_path, {"name": "s", "storage": str(tmp_path),
                             "params": {"degradation": {"grid": [0, 2]}, "sorce": "natural", "fold": -1,
                                        "finetune.learning_rate": 0.1}})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "4 problems" in err, err
    for key in ("params.degradation", "params.sorce", "params.fold", "params.finetune.learning_rate"):
        assert key in err, (key, err)
    assert "Did you mean 'source'" in err and "Did you mean 'finetune.lr'" in err


def test_validate_prints_trials_pretrainings_and_time(tmp_path, capsys):
    from spectral_ray.cli.estimate import MEASURED

    path = _write(tmp_path, {"name": "s", "storage": str(tmp_path), "max_concurrent": 1,
                             "params": {"source": {"grid": ["natural", "medical"]}, "degradation": {"grid": [0, 0.5, 1]},
                                        "fold": {"grid": [0, 1]}, "finetune.epochs": 4, "size": 64}})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "12 trial(s), 2 distinct pretraining(s)" in out, out
    # 12 measured trials one at a time + 2 pretrainings at 3 000 images × 3 epochs + Ray's start-up
    minutes = (MEASURED["ray_startup_s"] + 12 * MEASURED["finetune_trial_s"] + 2 * MEASURED["pretrain_s"]) / 60
    assert f"≈ {int(-(-minutes // 1))} min" in out and "1 trial(s) side by side" in out, out


def test_validate_embedded_paper_estimate(capsys):
    assert main(["validate", str(REPO / "sweeps/embedded-paper.yaml"), "--storage", "/tmp"]) == 0
    out = capsys.readouterr().out
    assert "3840 trial(s), 16 distinct pretraining(s)" in out and "projected wall-clock" in out


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_sweep_validates_against_the_schema(path):
    import jsonschema

    from spectral_ray.cli.schema import sweep_schema

    schema = sweep_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_rejects_what_validate_rejects(capsys):
    import jsonschema

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for bad in ({"name": "s", "trainable": "finetun"}, {"name": "s", "resources": {"cpus": 1}},
                {"name": "s", "params": {"sorce": "natural"}}, {"name": "s", "search": {"algorithm": "bayes"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("spectral-ray ")


def test_unknown_dataset_gets_did_you_mean(capsys):
    assert main(["data", "preview", "natral"]) == 2
    assert "Did you mean 'natural'" in capsys.readouterr().err  # 'natural_real' may follow


def test_resume_guard_names_the_changed_key(tmp_path):
    from spectral_ray.config import parse_sweep
    from trainables.launcher import check_same_sweep, save_sweep

    raw = {"name": "s", "storage": str(tmp_path), "params": {"fold": {"grid": [0, 1]}, "finetune.epochs": 2}}
    save_sweep(parse_sweep(raw, "inline"))
    changed = parse_sweep({**raw, "params": {**raw["params"], "finetune.epochs": 1}}, "inline")
    assert "params.finetune.epochs (was 2, now 1)" in check_same_sweep(changed)


def test_collect_through_ray_and_without_agree():
    """Ray's ExperimentAnalysis and the JSON-only reader give the same trials and statuses."""
    from analysis.collect import collect

    fixture = REPO / "tests" / "fixtures" / "experiment"
    with_ray, without = collect(fixture, use_ray=True), collect(fixture, use_ray=False)
    assert "ExperimentAnalysis" in with_ray.state_files[0] and "ExperimentAnalysis" not in without.state_files[0]
    cols = ["trial_id", "trial_dir", "status", "trainable", "kind", "ood_auc"]
    assert with_ray.trials[cols].equals(without.trials[cols])
    assert (with_ray.trials["status_from"] == "experiment_state").all()


def test_estimate_of_a_search_that_samples_the_edit(capsys):
    """Each sampled edit strength is a backbone of its own: one pretraining per trial."""
    assert main(["validate", str(REPO / "sweeps/search-edit.yaml"), "--storage", "/tmp",
                 "--set", "search.num_samples=5"]) == 0
    assert "5 trial(s), 5 distinct pretraining(s)" in capsys.readouterr().out


def test_every_top_level_error_at_once(tmp_path, capsys):
    path = _write(tmp_path, {"name": "a b", "trainable": "finetun", "resources": {"cpus": 1}})
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "`name`" in err and "`trainable`" in err and "Did you mean 'cpu'?" in err
