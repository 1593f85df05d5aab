"""Sweep-file schema: good files load, and every malformed file in tests/bad_sweeps is rejected
before Ray starts with a message naming the key (the file's `# expect:` line)."""

from pathlib import Path

import pytest

from spectral_ray.cli import main
from spectral_ray.config import SweepError, TrialConfig, load_sweep, nest, parse_sweep

BAD = sorted((Path(__file__).parent / "bad_sweeps").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), path
    return first.removeprefix("# expect:").strip()


def test_corpus_is_large_enough():
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_sweep_rejected_with_key(path):
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    msg = str(e.value)
    assert expected(path) in msg, msg
    assert "\n" not in msg.strip()  # one paragraph


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_validate_and_sweep_commands_reject_before_ray(path, capsys):
    import ray

    for command in ("validate", "sweep"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert expected(path) in err and "Traceback" not in err
    assert not ray.is_initialized()


def test_missing_file_names_the_path(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_good_sweep_counts_trials(tmp_path):
    raw = {
        "name": "ok",
        "storage": str(tmp_path),
        "params": {
            "source": {"grid": ["natural", "medical"]},
            "degradation": {"grid": [0, 0.5, 1]},
            "fold": {"grid": [0, 1]},
            "finetune.lr": 0.002,
        },
    }
    sweep = parse_sweep(raw)
    assert sweep.num_trials() == 12
    assert len(sweep.trials()) == 12
    cfg = TrialConfig.model_validate(nest(sweep.trials()[0]))
    assert cfg.finetune["lr"] == 0.002 and cfg.finetune["epochs"] > 0  # merged over the defaults


def test_artifact_kwargs_only_where_the_family_has_them():
    cfg = TrialConfig(artifact="nlm", artifact_omega=0.5, artifact_amplitude=0.1)
    assert cfg.artifact_kwargs() == {}
    cfg = TrialConfig(artifact="band", artifact_omega=0.25, artifact_amplitude=0.05)
    assert cfg.artifact_kwargs() == {"omega": 0.25, "amplitude": 0.05}


def test_cli_set_overrides(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\nstorage: {tmp_path}\nparams:\n  fold: {{grid: [0, 1]}}\n")
    assert main(["validate", str(f), "--set", "degradation={grid: [0, 1]}"]) == 0
    assert "4 trial(s)" in capsys.readouterr().out
    assert main(["validate", str(f), "--set", "degradation=2"]) == 2
    assert "params.degradation" in capsys.readouterr().err


def test_cases_pair_values_and_ignored_keys_do_not_duplicate(tmp_path):
    raw = {
        "name": "paired",
        "storage": str(tmp_path),
        "params": {
            "shortcut": {"cases": [
                {"target": "ct_lesion", "artifact": "photon_noise"},
                {"target": "mri_knee", "artifact": "nlm"},
                {"target": "ct_lesion", "artifact": "band"},
            ]},
            "artifact_omega": {"grid": [0.25, 0.75]},  # only `band` has a frequency
            "edit": "band_gain",
            "edit_strength": {"grid": [0, 1.0]},
            "fold": {"grid": [0, 1]},
        },
    }
    sweep = parse_sweep(raw)
    trials = sweep.trials()
    # (photon_noise + nlm + band×2 omegas) × (unedited + edited) × 2 folds
    assert len(trials) == (1 + 1 + 2) * 2 * 2 == sweep.num_trials()
    assert {(t["target"], t["artifact"]) for t in trials} == {("ct_lesion", "photon_noise"), ("mri_knee", "nlm"),
                                                              ("ct_lesion", "band")}
    assert all(t["artifact_omega"] is None for t in trials if t["artifact"] != "band")
    unedited = [t for t in trials if t["edit_strength"] == 0]
    assert unedited and all(t["edit"] == "none" for t in unedited)
    assert all(set(t) == set(trials[0]) for t in trials)  # every trial carries every key
    # the first axis varies fastest
    assert [t["artifact"] for t in trials[:3]] == ["photon_noise", "nlm", "band"]
    assert {t["fold"] for t in trials[:4]} == {0}


def test_family_keys_come_from_the_registries():
    """artifact/edit kwargs, normalisation and the key named in an error follow each family's
    declared trial keys, with no family names in the config."""
    from spectral_ray.config import normalize_trial

    cfg = TrialConfig(artifact="lowpass", artifact_omega=0.3, artifact_amplitude=0.2, edit="blend_lowpass",
                      edit_strength=0.5, edit_omega=0.4, edit_params={"order": 3})
    assert cfg.artifact_kwargs() == {"omega": 0.3}
    assert cfg.edit_kwargs() == {"order": 3, "omega": 0.4}
    flat = normalize_trial({"artifact": "lowpass", "artifact_omega": 0.3, "artifact_amplitude": 0.2,
                            "edit": "inoculate", "edit_strength": 0.5, "edit_omega": 0.4})
    assert flat["artifact_omega"] == 0.3 and flat["artifact_amplitude"] is None and flat["edit_omega"] is None
    for kwargs, key in (({"artifact": "band", "artifact_omega": 0.9, "artifact_params": {"bandwidth": 5}}, "artifact_params"),
                        ({"artifact": "band", "artifact_params": {"omega": 2.0}}, "artifact_params"),
                        ({"artifact": "band", "artifact_params": {"freq": 0.1}}, "artifact_params"),
                        ({"artifact": "lowpass", "artifact_omega": 1.0, "artifact_params": {"order": 0}}, "artifact_params"),
                        ({"artifact": "photon_noise", "artifact_params": {"mu_air": 1.0}}, "artifact_params"),
                        ({"artifact": "jpeg"}, "artifact"),
                        ({"edit": "band_gain", "edit_strength": 1.0, "edit_omega": 1.5}, "edit_omega"),
                        ({"edit": "band_gain", "edit_strength": 11.0}, "edit_strength"),
                        ({"edit": "band_gain", "edit_strength": 1.0, "edit_params": {"bandwidth": 0}}, "edit_params"),
                        ({"edit": "sharpen", "edit_strength": 1.0}, "edit")):
        with pytest.raises(ValueError) as e:
            TrialConfig(**kwargs)
        assert f"[{key}]" in str(e.value), (kwargs, str(e.value))


def test_a_later_case_is_validated_without_the_first_cases_keys(tmp_path):
    """Keys that only the first case sets (here its artifact_params) must not be merged into the
    other cases when each value is validated on its own."""
    raw = {"name": "cases", "storage": str(tmp_path), "params": {"shortcut": {"cases": [
        {"target": "ct_lesion", "artifact": "photon_noise", "artifact_params": {"photons_per_pixel": 500000}},
        {"target": "mri_knee", "artifact": "nlm"}]}}}
    trials = parse_sweep(raw).trials()
    assert [(t["artifact"], t["artifact_params"]) for t in trials] == [
        ("photon_noise", {"photons_per_pixel": 500000}), ("nlm", {})]


def test_sweep_settings_from_the_command_line(repo, capsys):
    """--set reaches the sweep's own keys (resources, max_concurrent, checkpoint) as well as params."""
    from spectral_ray.cli import main

    assert main(["validate", str(repo / "sweeps/embedded-quick.yaml"), "--set", "resources.gpu=0.125",
                 "--set", "max_concurrent=8", "--set", "checkpoint=none"]) == 0
    from spectral_ray.config import load_sweep

    sweep = load_sweep(repo / "sweeps/embedded-quick.yaml", overrides={"resources": {"gpu": 0.125}, "max_concurrent": 8})
    assert (sweep.resources.cpu, sweep.resources.gpu, sweep.max_concurrent) == (1, 0.125, 8)  # cpu kept from the file
    assert sweep.checkpoint == "head"  # the default: the small head, not the backbone


def test_bad_sweep_settings_from_the_command_line_name_the_key(repo, capsys):
    from spectral_ray.cli import main

    assert main(["validate", str(repo / "sweeps/embedded-quick.yaml"), "--set", "resources.tpu=1"]) != 0
    err = capsys.readouterr().err
    assert "resources.tpu" in err and "cpu, gpu" in err
    assert main(["validate", str(repo / "sweeps/embedded-quick.yaml"), "--set", "checkpoint=backbone"]) != 0
    err = capsys.readouterr().err
    assert "checkpoint" in err and "'none', 'head' or 'full'" in err
