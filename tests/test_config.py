"""Sweep-file schema: good files load, and every malformed file in tests/bad_sweeps is rejected
before Ray starts with a message naming the key (the file's `# expect:` line)."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from spectral_ray.cli import main
from spectral_ray.config import SweepError, TrialConfig, TrialError, load_sweep, nest, parse_sweep, trial_error

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
        with pytest.raises(ValidationError) as e:
            TrialConfig(**kwargs)
        problem = trial_error(e.value)  # the key at fault travels as data, not in the message text
        assert isinstance(problem, TrialError) and problem.field == key, (kwargs, problem.field, problem.message)
        assert problem.message and not problem.message.startswith("["), problem.message


def test_trial_error_names_a_single_fields_key():
    """A check of one field (pydantic's own or a field validator) gives that field and its message."""
    for kwargs, key, text in (({"size": 63}, "size", "even"), ({"source_n": 0}, "source_n", "greater than 0"),
                              ({"finetune_seed": 1.5}, "finetune_seed", "integer")):
        with pytest.raises(ValidationError) as e:
            TrialConfig(**kwargs)
        problem = trial_error(e.value)
        assert problem.field == key and text in problem.message, (kwargs, problem.field, problem.message)
        assert not problem.message.startswith("Value error"), problem.message


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


# ----------------------------------------------------------------------------- derived seeds


def test_backbones_that_differ_only_in_source_or_edit_get_unrelated_seeds():
    natural, medical = TrialConfig(source="natural", seed=0), TrialConfig(source="medical", seed=0)
    edited = TrialConfig(source="natural", seed=0, edit="band_gain", edit_strength=1.0, edit_omega=0.5)
    for stream in ("finetune_seed", "artifact_seed"):
        seeds = {getattr(c, f"effective_{stream}") for c in (natural, medical, edited)}
        assert len(seeds) == 3, stream
    # the two streams of one backbone are unrelated too, and neither is the pretraining seed
    assert natural.effective_finetune_seed != natural.effective_artifact_seed
    assert 0 not in (natural.effective_finetune_seed, natural.effective_artifact_seed)
    # strength 0 of any edit is the unedited source: the same backbone, the same seeds
    same = TrialConfig(source="natural", seed=0, edit="band_gain", edit_strength=0.0, edit_omega=0.75)
    assert same.effective_finetune_seed == natural.effective_finetune_seed


def test_one_backbone_keeps_its_seeds_across_degradations_artifacts_and_targets():
    base = TrialConfig(seed=3)
    others = [base.model_copy(update=u) for u in (
        {"degradation": 0.5}, {"degradation": 1.0, "artifact_omega": 0.75, "artifact_amplitude": 0.2},
        {"artifact": "photon_noise"}, {"artifact": "nlm", "artifact_params": {"h": 0.05}},
        {"target": "mri_knee"}, {"finetune": {**base.finetune, "lr": 0.01}})]
    for cfg in others:
        assert (cfg.effective_finetune_seed, cfg.effective_artifact_seed) == (
            base.effective_finetune_seed, base.effective_artifact_seed)
    # nor across folds (a random-init backbone, drawn with it, stays one backbone over its folds)
    assert base.model_copy(update={"fold": 1}).effective_finetune_seed == base.effective_finetune_seed
    # another pretraining seed, architecture, source size or data seed is another backbone
    for update in ({"seed": 4}, {"model": "resnet18"}, {"source_n": 2000}, {"data_seed": 1}):
        assert base.model_copy(update=update).effective_finetune_seed != base.effective_finetune_seed, update


def test_explicit_seeds_override_and_are_validated():
    cfg = TrialConfig(finetune_seed=5, artifact_seed=9)
    assert (cfg.effective_finetune_seed, cfg.effective_artifact_seed) == (5, 9)
    assert TrialConfig(finetune_seed=5.0).finetune_seed == 5  # as a table with missing values holds it
    only = TrialConfig(finetune_seed=5)
    assert only.effective_artifact_seed == TrialConfig().effective_artifact_seed
    for key, bad in (("finetune_seed", -1), ("artifact_seed", -2), ("artifact_seed", 1.5), ("artifact_seed", True),
                     ("finetune_seed", "3")):
        with pytest.raises(SweepError, match=rf"params.{key}"):
            parse_sweep({"name": "s", "params": {key: bad}}, check_storage=False)
    sweep = parse_sweep({"name": "s", "params": {"artifact_seed": {"grid": [0, 1]}}}, check_storage=False)
    assert [t["artifact_seed"] for t in sweep.trials()] == [0, 1]
    with pytest.raises(ValueError, match="unknown seed stream 'pretrain'.*'finetune', 'artifact'"):
        cfg.derived_seed("pretrain")


def test_derived_seeds_are_stable_across_processes_and_number_spellings():
    import os
    import subprocess
    import sys

    code = ("from spectral_ray.config import TrialConfig as T; c = T(source='medical', seed=2, fold=1, "
            "source_params={'a': 1}); print(c.effective_finetune_seed, c.effective_artifact_seed)")
    env = dict(os.environ)
    runs = set()
    for hash_seed in ("12345",):  # a hash() unlike this process's (randomised unless PYTHONHASHSEED is set)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**env, "PYTHONHASHSEED": hash_seed}).stdout
        runs.add(tuple(out.split()[-2:]))
    here = TrialConfig(source="medical", seed=2, fold=1, source_params={"a": 1.0})  # YAML's 1 and 1.0 are one value
    assert runs == {(str(here.effective_finetune_seed), str(here.effective_artifact_seed))}
    # pinned: a change of the derivation changes every trial's seeds, so it must be deliberate
    assert TrialConfig().effective_finetune_seed == TrialConfig().derived_seed("finetune") == 1186451820
