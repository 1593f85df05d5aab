"""`spectral-ray risk`: the O.O.D. loss a backbone's alignment predicts from a finished experiment's F4
relation (analysis/risk.py, spectral_ray/cli/risk.py, docs/RISK.md).

Simulated experiments (analysis/simulate.py) with a planted alignment → O.O.D.-drop relation or a
null, written in Ray Tune's layout so the command reads them as it reads a real run; a real tiny
backbone from the store measured end to end and compared with what a fine-tuning trial reports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import risk
from analysis.simulate import SEEDS, Design, Effects, simulate
from spectral_ray.cli import main

# 16 pretrained models, one band shortcut, d 0/1, 2 folds: 64 trials, one F4 stratum
SMALL = Design(seeds=(0, 1, 2, 3), shortcuts=((0.75, 0.1),), degradations=(0.0, 1.0), folds=(0, 1))
PLANTED = Effects(alignment_effect=0.15, drop_sd=0.03)
NULL = Effects(omega_drop=0.6)  # the drop depends on nothing about the model
BAND = {"omega": 0.75, "amplitude": 0.1, "bandwidth": 0.05}
TINY = dict(source_n=200, size=32, target_n=160, psd_images=32, pretrain={"epochs": 1}, finetune={"epochs": 1})


def _plain(v):
    if isinstance(v, np.ndarray):
        return [float(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


def write_experiment(table, folder, base: dict | None = None):
    """A simulated trials table as a Ray Tune experiment folder: params.json = ``base`` (a TrialConfig
    dump) with the row's config columns, result.json = one final report with its metrics."""
    config = set(table.attrs["config_columns"])
    skip = {"kind", "status", "trial_id"} | {c for c in table if c.startswith("artifact_resolved/")}
    folder.mkdir(parents=True)
    for i, (_, row) in enumerate(table.iterrows()):
        params = {**(base or {}), **{c: _plain(row[c]) for c in config}}
        metrics = {c: _plain(row[c]) for c in table if c not in config and c not in skip}
        metrics["artifact_resolved"] = {c.split("/", 1)[1]: _plain(row[c]) for c in table if c.startswith("artifact_resolved/")}
        tid = f"abcde_{i:05d}"
        d = folder / f"finetune_{tid}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params))
        (d / "result.json").write_text(json.dumps({**metrics, "trial_id": tid, "done": True, "training_iteration": 1}) + "\n")
    return folder


def _models(table):
    return table.drop_duplicates("pretrain_key")


def test_planted_relation_predicts_the_ranking_of_held_out_backbones():
    table = simulate(SEEDS, PLANTED, seed=1)  # 16 models × 3 ω × d 0.5/1 × 3 folds
    basis = risk.load_basis(table)
    assert basis.significant
    strata = risk.match_strata(basis, target="ct_lesion", family="band", params=BAND)["stratum"]
    assert len(strata) == 2  # d = 0.5 and 1 at ω = 0.75
    for stratum in strata:
        check = risk.held_out_check(basis, stratum, risk.artifact_row("band", BAND, table["psd_artifact"].iloc[0]),
                                    n_boot=300)
        assert check["n_models"] == 16 and check["n_predicted"] >= 14  # the rest lie far beyond the others
        assert check["rho"] > 0.7, check
        # each prediction came from the models outside its seed block (its pretraining seed's 4 backbones
        # left out together, F4's gate re-run without them): the held-out one's cost is not in its own fit
        (m,) = [m for m in check["models"] if m["predicted"] is not None][:1]
        per = basis.per_model.xs(stratum, level="stratum")
        mine = per.loc[m["backbone"]]
        fit = per[per["seed"] != mine["seed"]]
        x, y = fit["align_pretrained"].to_numpy(), fit["shortcut_cost"].to_numpy()
        assert m["predicted"] == pytest.approx(risk.predict_drop(x, y, m["alignment"], blocks=fit["block"].to_numpy(),
                                                                 block=mine["block"], n_boot=100)["drop"])
        assert check["n_blocks"] == 4 and 0.6 <= check["coverage"] <= 1.0  # intervals from held-out residuals


def test_null_says_not_significant_and_predicts_nothing():
    table = simulate(SEEDS, NULL, seed=1)
    basis = risk.load_basis(table)
    assert not basis.significant
    m = _models(table).iloc[0]
    stratum = risk.match_strata(basis, target="ct_lesion", family="band", params=BAND)["stratum"].iloc[0]
    a = risk.assess(basis, stratum, m["psd_probe"], risk.artifact_row("band", BAND, m["psd_artifact"]))
    assert a["prediction"] is None and "not significant" in a["reason"]
    assert a["n_models"] == 16 and np.isfinite(a["stratum_rho"])  # still says where the backbone ranks


def test_alignment_is_f4s_and_the_fit_reads_f4s_table():
    table = simulate(SMALL, PLANTED, seed=2)
    basis = risk.load_basis(table)
    stratum = basis.per_model.index.get_level_values("stratum")[0]
    for _, m in _models(table).iterrows():
        a = risk.assess(basis, stratum, m["psd_probe"], risk.artifact_row("band", BAND, m["psd_artifact"]),
                        backbone=f"store:{m['pretrain_key']}", n_boot=200)
        assert a["alignment"] == pytest.approx(a["measured"]["alignment"], abs=1e-12)


def test_theil_sen_is_scipys_and_the_interval_covers_the_line():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 20)
    y = 0.3 * x + 0.05 * rng.standard_normal(20)
    slope, intercept = risk.theil_sen(x, y)
    ref = stats.theilslopes(y, x)
    assert slope[0] == pytest.approx(ref.slope) and intercept[0] == pytest.approx(ref.intercept)
    p = risk.predict_drop(x, y, 0.5, n_boot=500)
    assert p["ci"][0] < 0.15 < p["ci"][1] and p["pi"][0] < p["ci"][0] and p["pi"][1] > p["ci"][1]
    assert not p["extrapolated"] and risk.predict_drop(x, y, 2.0, n_boot=100)["extrapolated"]
    assert np.isnan(risk.theil_sen([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])[0][0])


def test_unknown_stratum_lists_the_experiments():
    basis = risk.load_basis(simulate(SMALL, PLANTED, seed=2))
    with pytest.raises(risk.RiskError, match=r"omega=0.75 \[1\]"):
        risk.match_strata(basis, target="ct_lesion", family="band", params={**BAND, "omega": 0.5})
    with pytest.raises(risk.RiskError, match="Its strata"):
        risk.match_strata(basis, target="ct_lesion", family="band", params=BAND, degradation=0.5)


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return write_experiment(simulate(SMALL, PLANTED, seed=2), tmp_path_factory.mktemp("exp") / "planted")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["risk", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "/nonexistent/exp", "--store", "ab", "--artifact", "band"], "experiment folder not found"),
    (["--store", "ab", "--artifact", "bnad"], "unknown artifact family 'bnad'. Did you mean 'band'? Allowed: 'none', 'band'"),
    (["--store", "ab", "--artifact", "band", "--artifact-param", "omgea=0.5"], "unknown parameter(s) ['omgea']"),
    (["--store", "ab", "--artifact", "nlm", "--artifact-omega", "0.5"], "nlm has no parameter set by --artifact-omega"),
    (["--artifact", "band"], "name a backbone: --store KEY"),
    (["--store", "ab", "--seed", "1", "--artifact", "band"], "--store names a finished backbone; --seed"),
    (["--validate", "--edit-strength", "1", "--artifact", "band"], "--edit-strength describe a backbone to pretrain"),
    (["--store", "0123456789", "--artifact", "band", "--artifact-omega", "0.75"], "no backbone with key '0123456789'"),
    (["--source", "natural", "--set", "target_n=10", "--artifact", "band", "--artifact-omega", "0.75"],
     "--set target_n: not a backbone key; allowed: source, source_n"),
    (["--source", "natral", "--artifact", "band", "--artifact-omega", "0.75"], "unknown source 'natral'"),
    (["--store", "ab", "--artifact", "band", "--artifact-omega", "0.5"], "Its strata (degradation levels in brackets)"),
    (["--store", "ab", "--artifact", "band", "--artifact-omega", "0.75", "--target", "mri_knee"],
     "target 'mri_knee' is not in the experiment; its targets: ct_lesion"),
])
def test_cli_errors_name_the_allowed_values(planted_dir, tmp_path, capsys, argv, message):
    if "--experiment" not in argv:
        argv = ["--experiment", planted_dir, "--store-root", tmp_path / "empty-store", *argv]
    rc, out, err = _cli(capsys, *argv)
    assert rc == 2 and not out
    assert message in err, err


def test_cli_validate_ranks_the_experiments_own_models(planted_dir, capsys):
    rc, out, _ = _cli(capsys, "--experiment", planted_dir, "--validate", "--artifact", "band", "--artifact-omega", "0.75",
                      "--json", "--bootstrap", "200")
    assert rc == 0
    (check,) = json.loads(out)["held_out"]
    assert check["n_models"] == 16 and check["rho"] > 0.7, check
    rc, text, _ = _cli(capsys, "--experiment", planted_dir, "--validate", "--artifact", "band", "--artifact-omega", "0.75",
                       "--bootstrap", "200")
    assert "held-out check" in text and f"{check['rho']:+.2f}" in text


def test_cli_validate_under_a_null(tmp_path, capsys):
    exp = write_experiment(simulate(SMALL, NULL, seed=2), tmp_path / "null")
    rc, text, _ = _cli(capsys, "--experiment", exp, "--validate", "--artifact", "band", "--artifact-omega", "0.75",
                       "--bootstrap", "200")
    assert rc == 0 and "NOT SIGNIFICANT" in text and "Spearman" not in text


def test_cli_on_an_experiment_with_no_trials(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = _cli(capsys, "--experiment", tmp_path / "empty", "--store", "ab", "--artifact", "band")
    assert rc == 2 and "no Ray Tune trials" in err


# ----------------------------------------------------------------------------- end to end, a real backbone


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    """A real tiny backbone in a fresh store, and the psd_probe a fine-tuning trial of it reports."""
    from spectral_ray.config import TrialConfig
    from spectral_ray.experiment import run_finetune

    store = tmp_path_factory.mktemp("store")
    cfg = TrialConfig(**TINY, store=str(store), artifact_omega=0.75, degradation=1.0)
    final = run_finetune(cfg)
    return store, cfg, final


def _band_bins(n_bins: int) -> np.ndarray:
    """The bins F4's alignment with BAND sums at this resolution (artifact_alignment of unit vectors)."""
    from analysis.findings import artifact_alignment

    row = risk.artifact_row("band", BAND, np.ones(n_bins))
    return np.array([artifact_alignment(row, np.eye(n_bins)[k])[0] > 0 for k in range(n_bins)])


def _tiny_experiment(folder, cfg, effects, final: dict, replace: bool = False):
    """SMALL simulated on the tiny protocol: 32 px (17 bins: every other of simulate's 33), the
    models' band mass scaled by one factor so the real backbone's alignment (``final``: its trial's
    report) is their median's (monotone: F4's ranks are unchanged). ``replace``: the real backbone
    stands in for the simulated model ``key-natural-0-0``."""
    # an experiment from before the trials reported artifact weights (band-mass alignment, rescaled below)
    table = simulate(dataclasses.replace(SMALL, legacy_columns=True), effects, seed=2)
    table["size"], table["psd_images"] = cfg.size, cfg.psd_images  # simulate's are 64 px, 128 images
    band = _band_bins(17)
    real = np.asarray(final["psd_probe"])
    med = np.median([p[::2][band].sum() / p[::2].sum() for p in _models(table)["psd_probe"]])
    gain = real[band].sum() * (1 - med) / (med * (1 - real[band].sum()))
    for c in ("psd_probe", "psd_pretrained", "psd_finetuned", "psd_artifact"):
        cut = [np.asarray(p)[::2] * (np.where(band, gain, 1.0) if c == "psd_probe" else 1.0) for p in table[c]]
        table[c] = [p / p.sum() for p in cut]
    table["psd_pretrained"] = table["psd_probe"]
    if replace:
        mine = table["pretrain_key"] == "key-natural-0-0"
        table.loc[mine, "pretrain_key"] = final["pretrain_key"]
        table.loc[mine, "psd_probe"] = table.loc[mine, "psd_pretrained"] = pd.Series([real] * int(mine.sum()),
                                                                                     index=table.index[mine])
    return write_experiment(table, folder, base=cfg.model_dump(mode="json"))


def test_real_backbone_end_to_end(tiny_backbone, tmp_path, capsys):
    store, cfg, final = tiny_backbone
    exp = _tiny_experiment(tmp_path / "planted", cfg, PLANTED, final)
    key = final["pretrain_key"]
    args = ["--experiment", exp, "--store", key[:12], "--store-root", store, "--artifact", "band",
            "--artifact-omega", "0.75", "--artifact-amplitude", "0.1"]
    rc, out, _ = _cli(capsys, *args, "--json", "--bootstrap", "200")
    assert rc == 0
    rep = json.loads(out)
    # the priority is the one a trial of this backbone reports as psd_probe, to float rounding
    np.testing.assert_allclose(rep["priority"], final["psd_probe"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rep["artifact"]["signature"], final["psd_artifact"], rtol=1e-6, atol=1e-9)
    assert rep["significant"] and rep["backbone"]["id"] == f"store:{key}" and not rep["backbone"]["in_experiment"]
    (row,) = rep["strata"]
    assert row["n_models"] == 16 and not row["prediction"]["extrapolated"]
    assert row["prediction"]["ci"][0] <= row["prediction"]["drop"] <= row["prediction"]["ci"][1]
    assert row["min_drop"] < row["prediction"]["drop"] < row["max_drop"]
    rc, text, _ = _cli(capsys, *args, "--bootstrap", "200")
    assert rc == 0 and "supported" in text and "95% CI (fit)" in text and key[:16] in text
    # the same backbone named by its pretraining config: the store's entry is reused (same key, no training)
    rc, out, err = _cli(capsys, "--experiment", exp, "--source", "natural", "--store-root", store, "--artifact", "band",
                        "--artifact-omega", "0.75", "--artifact-amplitude", "0.1", "--json", "--bootstrap", "200")
    assert rc == 0 and "pretraining" not in err
    again = json.loads(out)
    assert again["backbone"]["id"] == f"store:{key}" and again["priority"] == rep["priority"]


def test_real_backbone_under_a_null_says_not_significant(tiny_backbone, tmp_path, capsys):
    store, cfg, final = tiny_backbone
    exp = _tiny_experiment(tmp_path / "null", cfg, NULL, final)
    rc, text, _ = _cli(capsys, "--experiment", exp, "--store", final["pretrain_key"], "--store-root", store,
                       "--artifact", "band", "--artifact-omega", "0.75", "--artifact-amplitude", "0.1", "--bootstrap", "200")
    assert rc == 0 and "NOT SIGNIFICANT" in text
    assert "pred. drop" in text and "—" in text


def test_real_backbone_of_the_experiment_is_held_out_and_reproduced(tiny_backbone, tmp_path, capsys):
    store, cfg, final = tiny_backbone
    exp = _tiny_experiment(tmp_path / "with-mine", cfg, PLANTED, final, replace=True)
    rc, out, _ = _cli(capsys, "--experiment", exp, "--store", final["pretrain_key"][:10], "--store-root", store,
                      "--artifact", "band", "--artifact-omega", "0.75", "--artifact-amplitude", "0.1", "--json",
                      "--bootstrap", "200")
    assert rc == 0
    rep = json.loads(out)
    (row,) = rep["strata"]
    assert rep["backbone"]["in_experiment"] and row["held_out"] and row["n_models"] == 15
    assert row["measured"]["priority_tv"] < 1e-5  # the trials' psd_probe, measured again
    assert row["alignment"] == pytest.approx(row["measured"]["alignment"], rel=1e-4)
    assert row["prediction"] is not None  # held out: predicted from the other 15


def test_published_weights_file_as_the_backbone(tiny_backbone, tmp_path, capsys):
    import timm
    import torch

    store, cfg, final = tiny_backbone
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "w.pth")
    exp = _tiny_experiment(tmp_path / "exp", cfg, PLANTED, final)
    rc, out, _ = _cli(capsys, "--experiment", exp, "--weights", f"file:{tmp_path / 'w.pth'}", "--store-root", store,
                      "--artifact", "band", "--artifact-omega", "0.75", "--artifact-amplitude", "0.1", "--json",
                      "--bootstrap", "200")
    assert rc == 0
    rep = json.loads(out)
    assert "from file:" in rep["backbone"]["description"] and len(rep["priority"]) == 17


def test_a_backbone_outside_the_fitted_sources_or_edits_gets_no_prediction():
    """F4's relation is within (source × edit arm) blocks: it gives a new seed of a fitted block a
    level, not a third source or a new edit; the fit's slope comes from pairs within one block."""
    table = simulate(SEEDS, PLANTED, seed=1)
    basis = risk.load_basis(table)
    stratum = risk.match_strata(basis, target="ct_lesion", family="band", params=BAND)["stratum"].iloc[0]
    m = _models(table).iloc[0]
    art = risk.artifact_row("band", BAND, m["psd_artifact"])
    known = risk.assess(basis, stratum, m["psd_probe"], art, block=risk.block_of_config({"source": "natural"}), n_boot=100)
    assert known["prediction"] is not None and not known["outside"]
    for block in ("radimagenet · unedited", "natural · blur s=1", None):
        a = risk.assess(basis, stratum, m["psd_probe"], art, block=block, n_boot=100)
        assert a["prediction"] is None and a["outside"] and "lies outside the sources/edits" in a["reason"]
    # a pure between-block difference has no within-block slope: two blocks, flat inside each
    x, y = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8]), np.array([0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    assert risk.theil_sen(x, y, blocks=np.array([0, 0, 0, 1, 1, 1]))[0][0] == 0.0
    assert risk.theil_sen(x, y)[0][0] > 0  # pooled, the blocks' difference reads as a slope
