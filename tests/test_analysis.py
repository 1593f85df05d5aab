"""analysis/: collect, aggregate, findings, figures and the report command on a committed fixture.

The fixture (tests/fixtures/experiment) is a real Ray Tune experiment folder written by
scripts/make_analysis_fixture.py: 48 fake fine-tuning trials (2 sources × 2 edit strengths × 3
degradations × 4 folds, seed = fold), one of which raised after its first epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import aggregate as agg_mod
from analysis.aggregate import RESOLVED, SOURCE
from analysis.collect import collect
from analysis.findings import (FINDINGS, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, check_all, check_f1, check_f3, check_f4,
                               check_f5)

FIXTURE = Path(__file__).parent / "fixtures" / "experiment"
TRIAL_DIRS = sorted(p for p in FIXTURE.iterdir() if p.is_dir())


def _raw_trials() -> list[dict]:
    """The fixture read with plain json, independently of analysis.collect."""
    out = []
    for d in TRIAL_DIRS:
        params = json.loads((d / "params.json").read_text())
        lines = [json.loads(x) for x in (d / "result.json").read_text().splitlines() if x.strip()]
        out.append({"dir": d.name, "params": params, "last": lines[-1], "n": len(lines),
                    "failed": (d / "error.txt").exists()})
    return out


@pytest.fixture(scope="module")
def collected():
    return collect(FIXTURE)


@pytest.fixture(scope="module")
def trials(collected):
    return collected.trials


def test_fixture_is_small_and_real():
    size = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert size < 2e6
    assert list(FIXTURE.glob("experiment_state-*.json")), "Ray's experiment state file is part of the fixture"
    assert len(TRIAL_DIRS) == 48


def test_one_row_per_trial_failed_one_marked(trials):
    assert len(trials) == len(TRIAL_DIRS) == trials["trial_dir"].nunique()
    assert (trials["status"] == "ERROR").sum() == 1
    assert (trials["status"] == "TERMINATED").sum() == 47
    bad = trials[trials["status"] == "ERROR"].iloc[0]
    assert "simulated failure" in bad["error"]
    assert bad["n_reports"] == 1 and not np.isnan(bad["ood_auc"])  # partial metrics are kept
    assert not isinstance(bad["psd_pretrained"], np.ndarray)  # never reached the final report
    assert set(trials["kind"]) == {"finetune"}


def test_config_metrics_and_spectra(trials):
    for col in ["source", "edit", "edit_strength", "target", "artifact", "artifact_omega", "degradation", "fold", "seed",
                SOURCE, f"{RESOLVED}omega", f"{RESOLVED}bandwidth", f"{RESOLVED}amplitude"]:
        assert col in trials
    done = trials[trials["status"] == "TERMINATED"]
    assert (done[f"{RESOLVED}bandwidth"] == 0.1).all()  # reported by the trial, not today's 0.05 default
    for col in ["psd_pretrained", "psd_probe", "psd_finetuned", "psd_artifact"]:
        vecs = done[col]
        assert all(isinstance(v, np.ndarray) and v.shape == (17,) for v in vecs)
        assert np.allclose([v.sum() for v in vecs], 1.0)
    raw = {r["dir"]: r for r in _raw_trials()}
    for _, row in done.head(5).iterrows():
        assert row["ood_auc"] == raw[row["trial_dir"]]["last"]["ood_auc"]


def test_history_has_every_report(collected, trials):
    h = collected.history
    assert len(h) == trials["n_reports"].sum() == 47 * 3 + 1
    assert {"epoch", "train_loss", "val_loss", "val_auc", "iid_auc", "ood_auc"} <= set(h.columns)
    assert (h[h["status"] == "ERROR"]["epoch"] == 1).all()


def test_remote_style_uri(trials):
    other = collect("file://" + str(FIXTURE.resolve()))
    assert len(other.trials) == len(trials)
    assert (other.trials["status"].value_counts() == trials["status"].value_counts()).all()


def test_fold_aggregation_matches_hand_computed(trials):
    agg = agg_mod.aggregate(trials)
    assert len(agg) == 12  # 2 sources × 2 strengths × 3 degradations
    raw = _raw_trials()
    for source, strength, d in [("natural", 0.0, 0.5), ("medical", 0.5, 1.0), ("medical", 0.5, 0.5)]:
        vals = [r["last"]["ood_auc"] for r in raw if not r["failed"] and r["params"]["source"] == source
                and r["params"]["edit_strength"] == strength and r["params"]["degradation"] == d]
        row = agg[(agg[SOURCE] == source) & (agg["edit_strength"] == strength) & (agg["degradation"] == d)].iloc[0]
        assert row["ood_auc_n"] == len(vals)
        assert row["ood_auc_mean"] == pytest.approx(sum(vals) / len(vals))
        mean = sum(vals) / len(vals)
        assert row["ood_auc_std"] == pytest.approx((sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5)
    failed_group = agg[(agg[SOURCE] == "medical") & (agg["edit_strength"] == 0.5) & (agg["degradation"] == 0.5)].iloc[0]
    assert failed_group["n_trials"] == 4 and failed_group["n_excluded"] == 1 and failed_group["folds"] == "0,1,2"


def test_robustness_is_mean_over_degradation(trials):
    agg = agg_mod.aggregate(trials)
    rob = agg_mod.robustness(trials)
    assert len(rob) == 4
    for _, r in rob.iterrows():
        g = agg[(agg[SOURCE] == r[SOURCE]) & (agg["edit_strength"] == r["edit_strength"])]
        assert r["robustness"] == pytest.approx(g["ood_auc_mean"].mean())
        assert r["n_degradations"] == 3
    broken = rob[(rob[SOURCE] == "medical") & (rob["edit_strength"] == 0.5)].iloc[0]
    assert broken["n_folds_complete"] == 3  # fold 3 lost its degradation-0.5 trial


def test_recipe_keys_that_vary_become_group_keys(trials):
    t = trials.copy()
    t["lr"] = np.where(t["fold"] % 2 == 0, 1e-3, 1e-4)
    assert "lr" in agg_mod.group_keys(t, list(trials.attrs["config_columns"]))
    assert "lr" not in agg_mod.group_keys(trials)


def test_findings_return_verdicts(trials):
    findings = check_all(trials)
    assert [f.id for f in findings] == list(FINDINGS) == ["F1", "F2", "F3", "F4", "F5"]
    for f in findings:
        assert f.verdict in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE) or f.verdict.startswith("not testable in this experiment: needs")
        assert f.statistic and f.data and f.n and f.unit and f.n_units
        assert f.p_value is not None and 0 <= f.p_value <= 1
    by = {f.id: f for f in findings}
    # The fixture is built so that these hold (see scripts/make_analysis_fixture.py).
    assert by["F1"].verdict == SUPPORTED
    assert by["F2"].verdict == SUPPORTED
    assert by["F3"].verdict == SUPPORTED and by["F3"].value < 0
    # the fixture's O.O.D. loss follows the band mass mostly between sources (the seeds barely differ
    # within one): the within-source test sees little, the confounded pooled association is descriptive
    assert by["F4"].testable and "within-source ρ(alignment of the pretrained priority" in by["F4"].statistic
    assert "confounded by the source, descriptive" in by["F4"].statistic
    assert by["F5"].testable
    # priorities on the shared probe set, said so; 16 pretrained models (2 sources × 2 edits × 4 seeds)
    for fid in ("F1", "F2", "F5"):
        assert "probe set" in by[fid].priority, fid
    assert by["F1"].n == 8 and by["F4"].n == 15  # F4: the model that lost its d = 0.5 trial is left out


def _d0_trials(gaps_by_artifact: dict, iid: float = 0.8) -> pd.DataFrame:
    rows = []
    for artifact, gaps in gaps_by_artifact.items():
        for fold, gap in enumerate(gaps):
            for d in (0.0, 1.0):  # d = 1 trials must not enter the check
                rows.append({"kind": "finetune", "status": "TERMINATED", "source": "natural", "target": "ct_lesion",
                             "artifact": artifact, "degradation": d, "fold": fold, "iid_auc": iid,
                             "ood_auc": iid + gap if d == 0 else 0.0})
    rows.append({**rows[0], "status": "ERROR", "ood_auc": 0.0})  # unfinished: ignored
    return pd.DataFrame(rows)


def test_artifact_at_d0_flags_an_artifact_that_reads_as_a_class():
    t = _d0_trials({"band": [-0.10, -0.06, -0.08], "nlm": [0.01, -0.02, 0.0], "none": [0.0, 0.0, 0.0]})
    d0 = agg_mod.artifact_at_d0(t).set_index("artifact")
    assert set(d0.index) == {"band", "nlm"}  # clean runs (artifact none) have nothing to check
    assert d0.loc["band", "gap_mean"] == pytest.approx(-0.08)
    assert d0.loc["band", "gap_std"] == pytest.approx(0.02)
    assert d0.loc["band", "gap_n"] == 3
    assert bool(d0.loc["band", "mimics"]) and not bool(d0.loc["nlm", "mimics"])
    assert agg_mod.artifact_at_d0(t, tolerance=0.1)["mimics"].sum() == 0
    assert agg_mod.artifact_at_d0(t[t["degradation"] > 0]).empty


def test_report_has_the_d0_check(report_dir):
    text = (report_dir / "report.md").read_text()
    assert "## Does the artifact alone read as a class? (d = 0)" in text
    d0 = pd.read_csv(report_dir / "artifact_d0.csv")
    assert len(d0) > 0 and {"gap_mean", "gap_std", "gap_n", "mimics"} <= set(d0.columns)
    assert ("fail this check" in text) == bool(d0["mimics"].any())


def test_pinned_aucs_are_kept_and_flagged(trials):
    done = trials[trials["status"] == "TERMINATED"]
    n_pinned = int(agg_mod.pinned(done["ood_auc"]).sum())
    assert n_pinned > 0, "fixture should contain O.O.D. AUCs pinned at 0"
    f3 = check_f3(trials)
    assert any(f"{n_pinned} O.O.D. AUC" in n and "pinned" in n and "kept" in n for n in f3.notes)
    f4 = check_f4(trials)
    assert f4.details["pinned"].sum() == n_pinned and any("pinned" in n for n in f4.notes)
    # every O.O.D. AUC at the highest degradation pinned at 0: still testable (ties are midranks)
    worst = trials.assign(ood_auc=np.where(trials["degradation"] == 1.0, 0.0, trials["ood_auc"]))
    f3 = check_f3(worst)
    assert f3.verdict == SUPPORTED and f3.value < 0


def test_missing_trials_are_not_testable(trials):
    natural = trials[trials["source"] == "natural"]
    findings = {f.id: f for f in check_all(natural)}
    assert findings["F1"].verdict.startswith("not testable in this experiment: needs")
    assert findings["F2"].verdict.startswith("not testable in this experiment: needs")
    unedited = trials[trials["edit_strength"] == 0]
    assert check_f5(unedited).verdict.startswith("not testable")
    clean = trials[trials["degradation"] == 0]
    assert check_f3(clean).verdict.startswith("not testable")
    assert check_f4(clean).verdict.startswith("not testable")
    # 3 seeds per source cannot reach p < 0.05 in an exact permutation test (1/C(6,3) = 0.05).
    three = check_f1(trials[trials["fold"] < 3])
    assert three.verdict.startswith("not testable") and "seeds per source" in three.verdict


def test_no_finetuning_trials_is_not_testable_not_a_failed_check(trials):
    # a robustness search has no finished fine-tuning trials: every check must say what is
    # missing (F5 used to fail: `&` on the empty string-dtype `edit` column)
    robustness_only = trials.assign(kind="robustness")
    empty = trials.iloc[:0]
    assert not agg_mod.is_edited(empty).any() and agg_mod.is_edited(empty).dtype == bool
    findings = {f.id: f for f in check_all(robustness_only)}
    assert not [f.verdict for f in findings.values() if "failed" in f.verdict]
    for fid in ("F2", "F3", "F4", "F5"):  # F1 reads pretrained priorities, which these rows carry
        assert findings[fid].verdict.startswith("not testable in this experiment: needs"), findings[fid].verdict


def test_unfinished_and_pending_trials_are_kept(tmp_path):
    exp = tmp_path / "experiment"
    shutil.copytree(FIXTURE, exp)
    state_file = next(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    running, pending = TRIAL_DIRS[0].name, TRIAL_DIRS[1].name
    for item in state["trial_data"]:
        js = json.loads(item[0])
        if js["relative_logdir"] == running:
            js["status"] = "RUNNING"
        if js["relative_logdir"] == pending:
            js["status"] = "PENDING"
        item[0] = json.dumps(js)
    state_file.write_text(json.dumps(state))
    lines = (exp / running / "result.json").read_text().splitlines()
    (exp / running / "result.json").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # half-written line
    shutil.rmtree(exp / pending)
    c = collect(exp)
    t = c.trials.set_index("trial_dir", drop=False)
    assert len(c.trials) == 48
    assert t.loc[running, "status"] == "RUNNING" and t.loc[running, "n_reports"] == 1
    assert any("unreadable line" in w for w in c.warnings)
    row = c.trials[c.trials["trial_dir"].isna()]
    assert len(row) == 1 and row.iloc[0]["status"] == "PENDING"
    agg = agg_mod.aggregate(c.trials)
    assert agg["n_excluded"].sum() == 3  # ERROR + RUNNING + PENDING


def test_without_state_file_status_comes_from_files(tmp_path):
    exp = tmp_path / "experiment"
    shutil.copytree(FIXTURE, exp, ignore=shutil.ignore_patterns("experiment_state-*.json"))
    t = collect(exp).trials
    assert len(t) == 48
    assert (t["status"] == "ERROR").sum() == 1
    assert set(t["status"]) <= {"ERROR", "RUNNING", "TERMINATED"}


def test_collect_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Ray Tune trials"):
        collect(tmp_path / "empty")


# ----------------------------------------------------------------------------- report + figures


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from spectral_ray.cli import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(FIXTURE), "--out", str(out)]) == 0
    return out


def test_cli_writes_report(report_dir):
    text = (report_dir / "report.md").read_text()
    for section in ("## Setup", "## Findings", "## Figures", "## Aggregate tables", "## Keys this report relies on"):
        assert section in text
    for fid in ("F1", "F2", "F3", "F4", "F5"):
        assert f"| {fid} |" in text
    assert "1 trial(s) did not finish" in text and "simulated failure" in text
    for csv in ("trials.csv", "history.csv", "aggregate.csv", "robustness.csv", "findings.csv", "f4_points.csv"):
        assert (report_dir / csv).stat().st_size > 0
    assert len(pd.read_csv(report_dir / "trials.csv")) == 48


def test_figures_written_and_embedded(report_dir):
    text = (report_dir / "report.md").read_text()
    for name in ("auc_vs_degradation", "priorities", "priority_heatmaps", "editing_effect", "alignment_vs_drop"):
        png, pdf = report_dir / f"{name}.png", report_dir / f"{name}.pdf"
        assert png.stat().st_size > 10_000, name
        assert pdf.stat().st_size > 1_000, name
        assert f"]({name}.png)" in text


def test_cli_missing_folder_is_a_user_error(tmp_path, capsys):
    from spectral_ray.cli import main

    missing = tmp_path / "no-such-experiment"
    assert main(["report", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_real_trainable_shape_nested_config_and_separate_final_report(tmp_path):
    """The real finetune trainable nests recipe dicts in its config and sends a separate final
    report (best-epoch AUCs, spectra, ``done: True``) after the per-epoch ones."""
    exp = tmp_path / "exp"
    trial = exp / "finetune_abcde_00000_0_source=natural"
    trial.mkdir(parents=True)
    config = {"source": "natural", "edit": "none", "edit_strength": 0.0, "target": "ct_lesion", "artifact": "band",
              "artifact_omega": None, "artifact_params": {"bandwidth": 0.1}, "degradation": 0.5, "fold": 0,
              "seed": 0, "finetune": {"lr": 5e-4, "epochs": 2}, "degradations": [0.0, 0.5]}
    (trial / "params.json").write_text(json.dumps(config))
    psd = (np.ones(9) / 9).tolist()
    lines = [{"epoch": 1, "ood_auc": 0.6, "iid_auc": 0.7, "training_iteration": 1, "done": False},
             {"epoch": 2, "ood_auc": 0.5, "iid_auc": 0.8, "training_iteration": 2, "done": False},
             {"ood_auc": 0.6, "iid_auc": 0.7, "psd_pretrained": psd, "psd_finetuned": psd, "psd_artifact": psd,
              "extra_key": "kept", "training_iteration": 3, "done": True}]
    (trial / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    c = collect(exp)
    row = c.trials.iloc[0]
    assert not hasattr(c, "filled_defaults")  # nothing is refilled from today's defaults
    assert pd.isna(row[f"{RESOLVED}omega"]) and row[f"{RESOLVED}bandwidth"] == 0.1  # params.json, as recorded
    assert row["status"] == "TERMINATED" and row["status_from"] == "result.json done" and row["kind"] == "finetune"
    assert row["finetune/lr"] == 5e-4 and row["artifact_params/bandwidth"] == 0.1
    assert row["ood_auc"] == 0.6 and row["epoch"] == 2 and row["extra_key"] == "kept"
    assert isinstance(row["psd_artifact"], np.ndarray) and len(c.history) == 3
    assert "degradations" not in agg_mod.group_keys(c.trials)  # list-valued config keys never group
    # A key absent from params.json (an experiment from before the launcher wrote every key) stays
    # absent: analysis never re-derives a default, and the trial's own report wins.
    config.pop("target")
    (trial / "params.json").write_text(json.dumps(config))
    lines[-1]["artifact_resolved"] = {"omega": 0.5, "bandwidth": 0.1, "amplitude": 0.1}
    (trial / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    c = collect(exp)
    row = c.trials.iloc[0]
    assert "target" not in c.trials and row[f"{RESOLVED}omega"] == 0.5
    findings = check_all(c.trials)  # one trial: every check says what it needs, none raises
    assert all(f.verdict.startswith("not testable") for f in findings)


def test_missing_spectra_degrade_gracefully(trials, tmp_path):
    from analysis.figures import draw_all

    bare = trials.drop(columns=[c for c in trials.columns if c.startswith(("psd_", "band_alignment", "centroid"))])
    bare.attrs = trials.attrs
    by = {f.id: f for f in check_all(bare)}
    assert by["F3"].verdict == SUPPORTED
    for fid in ("F1", "F2", "F4", "F5"):
        assert by[fid].verdict.startswith("not testable"), fid
    figs = draw_all(bare, tmp_path)
    assert isinstance(figs["auc_vs_degradation"], list)
    assert isinstance(figs["priorities"], str) and figs["priorities"].startswith("not drawn")


def test_f4_alignment_without_artifact_frequency_uses_the_signature_band(trials):
    from analysis.findings import artifact_alignment

    row = trials[trials["status"] == "TERMINATED"].iloc[0].copy()
    p = row["psd_pretrained"]
    with_omega, how = artifact_alignment(row, p)
    assert "ω_a" in how
    row[f"{RESOLVED}omega"] = np.nan
    sig_band, how = artifact_alignment(row, p)
    assert "signature" in how
    band = row["psd_artifact"] >= 0.1 * row["psd_artifact"].max()
    assert sig_band >= p[band].sum() / p.sum() - 1e-12


def test_storage_folder_with_several_experiments(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "storage" / "quick")
    c = collect(tmp_path / "storage")
    assert len(c.trials) == 48 and set(c.trials["experiment"]) == {"quick"}


def test_trial_retried_after_a_failure_is_terminated_not_error(tmp_path):
    exp = tmp_path / "experiment"
    shutil.copytree(FIXTURE, exp)
    retried = TRIAL_DIRS[2].name
    (exp / retried / "error.txt").write_text("Failure # 1\nTraceback ...\nRuntimeError: transient\n")
    t = collect(exp).trials.set_index("trial_dir")
    assert t.loc[retried, "status"] == "TERMINATED"
    assert t.loc[retried, "error"] == "recovered after a failed attempt: RuntimeError: transient"
    assert (t["status"] == "ERROR").sum() == 1


def test_a_restarted_trial_counts_once(tmp_path):
    """Tune restarts an errored trial into a new folder beside the failed attempt's, under the
    same trial id (docs/CLUSTER.md): the report must see one trial, the attempt that finished."""
    exp = tmp_path / "exp"
    config = {"source": "natural", "target": "ct_lesion", "artifact": "band", "degradation": 0.5, "fold": 0}
    for name, lines, error in (
            ("natural-d0.5-f0", [{"epoch": 1, "ood_auc": 0.6, "trial_id": "abc12_00000", "training_iteration": 1}], True),
            ("natural-d0.5-f0_1a2b", [{"epoch": 1, "ood_auc": 0.6, "trial_id": "abc12_00000", "training_iteration": 1},
                                      {"ood_auc": 0.55, "iid_auc": 0.7, "trial_id": "abc12_00000", "done": True,
                                       "training_iteration": 2}], False)):
        d = exp / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(config))
        (d / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        if error:
            (d / "error.txt").write_text("RuntimeError: worker died\n")
    c = collect(exp)
    assert len(c.trials) == 1
    row = c.trials.iloc[0]
    assert row["status"] == "TERMINATED" and row["trial_dir"] == "natural-d0.5-f0_1a2b" and row["ood_auc"] == 0.55
    assert any("restarted" in w for w in c.warnings)


def test_f4_panel_titles_name_d_and_only_set_parameters():
    from analysis.figures import _stratum_title

    base = ("target=ct_lesion · artifact=band · artifact_resolved/amplitude=0.1 · artifact_resolved/h=nan"
            " · artifact_resolved/omega=0.25 · degradation=")
    titles = {_stratum_title(base + d) for d in ("0.5", "1.0")}
    assert len(titles) == 2  # two panels that differ only in d never look alike
    assert all("d=" in t and "h=" not in t and t.startswith("ct_lesion · band\n") for t in titles)
    long = _stratum_title("target=ct_lesion · artifact=photon_noise · artifact_resolved/baseline_photons_per_pixel"
                          "=20000000.0 · artifact_resolved/mode=image · artifact_resolved/mu_air=0.1662 · degradation=0.5")
    assert "2e+07" in long and max(len(line) for line in long.splitlines()) <= 40
