"""`spectral-ray report` on a search experiment: Optuna's views rebuilt from the trials and the best
setting named. The experiment is written here in Ray Tune's layout (params.json, result.json one
line per report, sweep.yaml beside them, as the launcher saves it) with a known objective surface;
tests/test_tune.py runs a real Optuna search and reports it."""

import json
import math

import numpy as np
import pytest
import yaml

LEVELS = [1.0, 0.5, 0.2, 0.0]


def objective(strength: float, omega: float) -> float:
    """Peak at strength 1.2, band 0.6."""
    return 0.4 + 0.3 * math.exp(-((strength - 1.2) ** 2) - 4 * (omega - 0.6) ** 2)


def write_search(root, stopped_best: bool = True):
    exp = root / "search-edit"
    exp.mkdir(parents=True)
    (exp / "sweep.yaml").write_text(yaml.safe_dump({"name": "search-edit", "trainable": "robustness",
                                                    "search": {"algorithm": "optuna", "metric": "objective", "mode": "max"}}))
    rng = np.random.default_rng(0)
    settings = [(float(s), float(w)) for s, w in zip(rng.uniform(-0.9, 3.0, 10), rng.uniform(0.1, 0.9, 10))]
    settings.append((1.25, 0.62))  # the best finished one
    if stopped_best:
        settings.append((1.2, 0.6))  # stopped after two levels: not ranked, however good it looks
    for i, (s, w) in enumerate(settings):
        tid = f"ab12c_{i:05d}"
        d = exp / f"s{s:.4g}-e{w:.4g}_{tid}"
        d.mkdir()
        params = {"trainable": "robustness", "source": "natural", "edit": "band_gain", "edit_strength": s,
                  "edit_omega": w, "degradations": LEVELS, "folds": [0], "iid_floor": 0.7}
        (d / "params.json").write_text(json.dumps(params))
        n = 2 if (stopped_best and i == len(settings) - 1) else len(LEVELS)
        rows = []
        for k in range(1, n + 1):
            value = objective(s, w) + (0.2 if n == 2 else 0.0)
            rows.append({"robustness": value, "iid_mean": 0.8, "objective": value, "levels_done": k,
                         f"ood_auc_d{LEVELS[k - 1]:g}": value, "training_iteration": k, "trial_id": tid,
                         "done": k == len(LEVELS), "time_total_s": 10.0 * k})
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return exp, settings


def test_search_report_names_the_best_finished_setting(tmp_path):
    from analysis.report import build_report

    exp, settings = write_search(tmp_path)
    report = build_report(exp, tmp_path / "out").read_text()
    assert "## Search" in report
    assert "12 search trials (optuna), objective `objective` (max); 11 ran every degradation level, 1 were stopped" in report
    # the stopped trial at (1.2, 0.6) scores higher but is not ranked; the best finished one is (1.25, 0.62)
    assert "**Best setting:** `edit_strength` = 1.25, `edit_omega` = 0.62" in report
    assert f"objective {objective(1.25, 0.62):.3f}" in report and "I.I.D. AUC 0.800" in report
    for name in ("optimization_history", "objective_contour", "param_importances"):
        png = tmp_path / "out" / f"search_{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, name
        assert f"](search_{name}.png)" in report


def test_study_rebuilt_from_the_trials(tmp_path):
    import optuna

    from analysis.collect import collect
    from analysis.search import build_study, sampled_params, search_trials

    exp, settings = write_search(tmp_path)
    c = collect(exp)
    t = search_trials(c.trials)
    params = sampled_params(t, c.config_columns)
    assert params == ["edit_strength", "edit_omega"]
    study = build_study(t, params, "objective", "max")
    states = [tr.state for tr in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 1 and len(states) == len(settings)
    assert study.best_params == pytest.approx({"edit_strength": 1.25, "edit_omega": 0.62})
    # in the order the sampler proposed them (Tune's trial counter), not by folder name
    assert [tr.params["edit_strength"] for tr in study.trials] == pytest.approx([s for s, _ in settings])
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) == {"edit_strength", "edit_omega"}


def test_grid_experiments_get_no_search_section(tmp_path):
    from pathlib import Path

    from analysis.report import build_report

    fixture = Path(__file__).parent / "fixtures" / "experiment"
    assert "## Search" not in build_report(fixture, tmp_path / "out").read_text()


def test_search_report_is_search_first(tmp_path):
    from analysis.report import build_report

    exp, _ = write_search(tmp_path)
    report = build_report(exp, tmp_path / "out").read_text()
    assert report.index("## Search") < report.index("## Keys this report relies on")
    assert "## Findings" not in report.split("## Search")[0]
    body = report.split("## Keys this report relies on")[0]
    assert "not testable" not in body and "not drawn" not in body  # no stubs that cannot apply
    setup = report.split("## Setup")[1].split("## Search")[0]
    assert "`degradation`" not in setup and "`fold`" not in setup  # looped inside each trial, not fixed
    assert "Looped inside every trial: `degradations` = [1.0, 0.5, 0.2, 0.0]; `folds` = [0]" in report


def test_too_few_complete_trials_get_no_surface(tmp_path):
    import shutil

    from analysis.report import build_report
    from analysis.search import MIN_COMPLETE_FOR_SURFACE

    exp, settings = write_search(tmp_path)
    trials = sorted(p for p in exp.iterdir() if p.is_dir())
    for d in trials[: len(trials) - 3]:  # keep 3 finished trials
        shutil.rmtree(d)
    report = build_report(exp, tmp_path / "out").read_text()
    assert "![optimization_history]" in report
    assert "![objective_contour]" not in report and "![param_importances]" not in report
    assert f"3 complete trial(s), fewer than the {MIN_COMPLETE_FOR_SURFACE}" in report
